//! nginx line parsers: `main`, a 20-field custom format (its `main` part read by the fused
//! parser when no proxy is trusted), and `escape=none`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sitelog_ingest::format::{Escape, Extras, LogFormat};

const CUSTOM: &str = concat!(
    r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "#,
    r#""$http_user_agent" "$http_x_forwarded_for" $host rt=$request_time urt=$upstream_response_time "#,
    r#"ua=$upstream_addr us=$upstream_status cs=$upstream_cache_status $scheme://$http_host$uri$is_args$args "#,
    r#"$msec $time_iso8601 $request_length $connection $pipe"#
);

fn formats() -> &'static [LogFormat] {
    static F: OnceLock<Vec<LogFormat>> = OnceLock::new();
    F.get_or_init(|| {
        let trusted = vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        vec![
            LogFormat::builtin("main")
                .unwrap()
                .with_trusted_proxies(trusted.clone()),
            LogFormat::nginx(CUSTOM, Escape::Default)
                .unwrap()
                .with_trusted_proxies(trusted),
            LogFormat::nginx(CUSTOM, Escape::Default).unwrap(),
            LogFormat::nginx(CUSTOM, Escape::None).unwrap(),
        ]
    })
}

fuzz_target!(|line: &[u8]| {
    let mut extras = Extras::new();
    for f in formats() {
        let plain = f.parse_line(line);
        let with = f.parse_line_with_extras(line, &mut extras);
        assert_eq!(plain, with, "extras must not change the record");
        if let Err(e) = plain {
            let _ = e.to_string();
        }
    }
});
