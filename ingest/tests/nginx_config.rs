//! A `log_format` read from an nginx configuration gives the same records as the built-in.

use sitelog_ingest::format::{Extras, LogFormat};

const CONF: &str = include_str!("golden/nginx.conf");

fn golden(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/golden/{name}.log", env!("CARGO_MANIFEST_DIR"))).expect("golden input")
}

/// Both formats give equal records (and extras) or both reject, on every line of `input`.
fn same_records(a: &LogFormat, b: &LogFormat, input: &[u8], compare_extras: bool) -> usize {
    let (mut ea, mut eb) = (Extras::new(), Extras::new());
    let mut parsed = 0;
    for line in input.split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match (a.parse_line_with_extras(line, &mut ea), b.parse_line_with_extras(line, &mut eb)) {
            (Ok(ra), Ok(rb)) => {
                assert_eq!(ra, rb, "{}", String::from_utf8_lossy(line));
                if compare_extras {
                    assert_eq!(ea.iter().collect::<Vec<_>>(), eb.iter().collect::<Vec<_>>());
                }
                parsed += 1;
            }
            (Err(_), Err(_)) => {}
            (ra, rb) => panic!("{}: {ra:?} vs {rb:?}", String::from_utf8_lossy(line)),
        }
    }
    parsed
}

#[test]
fn main_from_config_is_the_builtin() {
    let from_conf = LogFormat::from_nginx_config(CONF, "main").expect("main in nginx.conf");
    let builtin = LogFormat::builtin("main").expect("built-in");
    assert_eq!(from_conf.source(), builtin.source());
    assert!(same_records(&from_conf, &builtin, &golden("main"), true) >= 5);
}

#[test]
fn json_from_config_is_the_builtin() {
    let from_conf = LogFormat::from_nginx_config(CONF, "json").expect("json in nginx.conf");
    let builtin = LogFormat::builtin("json").expect("built-in");
    assert_eq!(from_conf.escape(), builtin.escape());
    assert!(same_records(&from_conf, &builtin, &golden("json"), true) >= 5);
}

#[test]
fn nginx_combined_matches_the_builtin_combined() {
    let builtin = LogFormat::builtin("combined").expect("built-in");
    // nginx's predefined `combined` (not in the file) and the same layout defined in the file.
    for name in ["combined", "mycombined"] {
        let nginx = LogFormat::from_nginx_config(CONF, name).expect("combined");
        assert!(same_records(&nginx, &builtin, &golden("combined"), false) >= 15, "{name}");
    }
}

#[test]
fn lists_and_missing_names() {
    assert_eq!(LogFormat::nginx_config_names(CONF).expect("reads"), ["main", "mycombined", "json", "timing"]);
    let err = LogFormat::from_nginx_config(CONF, "upstream").expect_err("not defined");
    assert!(err.to_string().contains("found: main, mycombined, json, timing"), "{err}");
    let timing = LogFormat::from_nginx_config(CONF, "timing").expect("timing");
    let r = timing
        .parse_line(br#"192.0.2.1 [10/Oct/2026:13:55:36 +0300] "GET / HTTP/1.1" 200 rt=0.120 urt="0.100, 0.015" host=example.fi"#)
        .expect("parses");
    assert_eq!((r.request_time_us, r.upstream_time_us, r.upstream_count), (Some(120_000), Some(115_000), 2));
    assert_eq!(r.host, "example.fi");
}
