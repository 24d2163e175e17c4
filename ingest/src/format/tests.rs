//! Unit tests of the compiled formats; golden files and round trips are in `ingest/tests/`.

use std::borrow::Cow;
use std::net::IpAddr;

use proptest::prelude::*;
use sitelog_schema::record::flags;

use super::*;

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

const COMBINED_LINE: &[u8] = br#"2001:db8:85a3::8a2e:370:7334 - alice [10/Oct/2026:13:55:36 +0300] "GET /wp-content/uploads/2026/10/a.jpg?ver=6.6 HTTP/2.0" 200 48213 "https://example.fi/blog/" "Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0""#;

#[test]
fn combined_all_fields() {
    let fmt = LogFormat::builtin("combined").unwrap();
    let r = fmt.parse_line(COMBINED_LINE).unwrap();
    assert_eq!(r.client_ip, ip("2001:db8:85a3::8a2e:370:7334"));
    assert_eq!(r.remote_user, "alice");
    assert_eq!(r.ts_micros, 1_791_629_736_000_000);
    assert_eq!(r.tz_offset_secs, 10_800);
    assert_eq!(
        (&*r.method, &*r.path, &*r.query, &*r.protocol),
        ("GET", "/wp-content/uploads/2026/10/a.jpg", "ver=6.6", "HTTP/2.0")
    );
    assert_eq!((r.status, r.bytes_sent), (200, 48213));
    assert_eq!(r.referer, "https://example.fi/blog/");
    assert_eq!(r.user_agent, "Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0");
    assert_eq!(r.flags, 0);
    assert_eq!(r.host, "");
    assert_eq!(r.request_time_us, None);
    for c in [&r.remote_user, &r.method, &r.path, &r.query, &r.protocol, &r.referer, &r.user_agent] {
        assert!(matches!(c, Cow::Borrowed(_)), "{c:?} should borrow from the line");
    }
}

#[test]
fn combined_errors_name_field_and_column() {
    let fmt = LogFormat::builtin("combined").unwrap();
    let truncated = &COMBINED_LINE[..COMBINED_LINE.len() - 20];
    let e = fmt.parse_line(truncated).unwrap_err();
    assert_eq!(e.to_string(), format!("expected '\"' at column {} (field %{{User-Agent}}i)", truncated.len() + 1));
    assert_eq!(e.reason_key(), "expected '\"' (field %{User-Agent}i)");
    assert_eq!(e.field(), Some("%{User-Agent}i"));

    let e = fmt.parse_line(br#"1.2.3.4 - - [10/Oct/2026:13:55:36 +0300] "GET / HTTP/1.1" 2x0 1 "-" "-""#).unwrap_err();
    assert_eq!(e.to_string(), "invalid status at column 59 (field %>s)");

    let e = fmt.parse_line(br#"1.2.3.4 - - [10/Oct/2026:13:55:36 +0300] "GET / HTTP/1.1"#).unwrap_err();
    assert_eq!(e.to_string(), "expected '\" ' at column 57 (field %r)");

    let e = fmt.parse_line(b"").unwrap_err();
    assert_eq!(e.to_string(), "empty line");
    let e = fmt.parse_line(b"garbage").unwrap_err();
    assert_eq!(e.to_string(), "expected ' ' at column 8 (field %h)");

    let e = LogFormat::builtin("json").unwrap().parse_line(b"[]").unwrap_err();
    assert_eq!(e.to_string(), "expected '{\"time\":\"' at column 1 (start of line)");
}

#[test]
fn escapes_are_decoded() {
    let fmt = LogFormat::builtin("combined").unwrap();
    // nginx writes `"` as \x22 and UTF-8 as \xHH; apache writes \" and \\.
    let nginx = br#"192.0.2.1 - - [10/Oct/2026:13:55:36 +0000] "GET /caf\xC3\xA9 HTTP/1.1" 200 1 "-" "Bot \x22quoted\x22 \x5C""#;
    let r = fmt.parse_line(nginx).unwrap();
    assert_eq!(r.path, "/café");
    assert_eq!(r.user_agent, r#"Bot "quoted" \"#);
    let apache = br#"192.0.2.1 - - [10/Oct/2026:13:55:36 +0000] "GET /x HTTP/1.1" 200 - "-" "Bot \"quoted\" \\ \"""#;
    let r = fmt.parse_line(apache).unwrap();
    assert_eq!(r.user_agent, r#"Bot "quoted" \ ""#);
    assert_eq!(r.bytes_sent, 0);
    // A user agent ending in an escaped quote is truncated, not parsed wrong.
    let cut = br#"192.0.2.1 - - [10/Oct/2026:13:55:36 +0000] "GET /x HTTP/1.1" 200 - "-" "Bot \""#;
    assert!(fmt.parse_line(cut).is_err());
}

#[test]
fn garbage_request_is_kept_raw() {
    let fmt = LogFormat::builtin("main").unwrap();
    let line = br#"198.51.100.9 - - [10/Oct/2026:13:55:36 +0300] "\x16\x03\x01\x00\xF1\x01" 400 157 "-" "-" "-""#;
    let r = fmt.parse_line(line).unwrap();
    assert_eq!(r.flags, flags::RAW_REQUEST);
    assert_eq!(r.method, "");
    assert_eq!(r.path, r"\x16\x03\x01\x00\xF1\x01", "kept as logged");
    let dash = br#"198.51.100.9 - - [10/Oct/2026:13:55:36 +0300] "-" 400 0 "-" "-" "-""#;
    let r = fmt.parse_line(dash).unwrap();
    assert_eq!((r.flags, &*r.path), (flags::RAW_REQUEST, "-"));
}

#[test]
fn non_utf8_is_kept_reversibly_and_flagged() {
    let fmt = LogFormat::nginx(r#"$remote_addr "$http_user_agent""#, Escape::None).unwrap();
    let r = fmt.parse_line(b"192.0.2.1 \"caf\xe9 \"quoted\" agent\"").unwrap();
    assert_eq!(r.user_agent, r#"caf\xE9 "quoted" agent"#);
    assert_eq!(r.flags, flags::NON_UTF8);
    assert_eq!(super::escape::unescape_invalid_utf8(&r.user_agent), b"caf\xe9 \"quoted\" agent");
}

#[test]
fn hostname_instead_of_address() {
    let fmt = LogFormat::builtin("common").unwrap();
    let line = br#"crawl-66-249-66-1.googlebot.com - - [10/Oct/2026:13:55:36 +0300] "GET / HTTP/1.1" 200 512"#;
    let mut ex = Extras::new();
    let r = fmt.parse_line_with_extras(line, &mut ex).unwrap();
    assert_eq!(r.client_ip, None);
    assert_eq!(r.flags, flags::NO_CLIENT_IP);
    assert_eq!(ex.get("%h"), Some("crawl-66-249-66-1.googlebot.com"));
}

#[test]
fn vhost_combined_host_and_extras() {
    let fmt = LogFormat::builtin("vhost_combined").unwrap();
    assert_eq!(fmt.host_field(), Some("%v"));
    let line = br#"www.example.fi:443 203.0.113.5 - - [10/Oct/2026:13:55:36 +0300] "POST /xmlrpc.php HTTP/1.1" 403 2413 "-" "python-requests/2.31.0""#;
    let mut ex = Extras::new();
    let r = fmt.parse_line_with_extras(line, &mut ex).unwrap();
    assert_eq!(r.host, "www.example.fi");
    assert_eq!(r.bytes_sent, 2413);
    assert_eq!(ex.iter().collect::<Vec<_>>(), [("%p", "443"), ("%l", "")]);
    assert_eq!(fmt.parse_line(line).unwrap(), r, "records do not depend on extras");
}

#[test]
fn main_with_trusted_proxies() {
    let fmt = LogFormat::builtin("main").unwrap();
    assert!(fmt.has_forwarded_for());
    let line = br#"10.0.0.5 - - [10/Oct/2026:13:55:36 +0300] "GET / HTTP/1.1" 200 5 "-" "curl/8.5.0" "198.51.100.1, 203.0.113.9, 10.0.0.7""#;
    assert_eq!(fmt.parse_line(line).unwrap().client_ip, ip("10.0.0.5"));
    let fmt = fmt.with_trusted_proxies(vec!["10.0.0.0/8".parse().unwrap()]);
    let mut ex = Extras::new();
    let r = fmt.parse_line_with_extras(line, &mut ex).unwrap();
    assert_eq!(r.client_ip, ip("203.0.113.9"));
    assert_eq!(ex.get("$http_x_forwarded_for"), Some("198.51.100.1, 203.0.113.9, 10.0.0.7"));
}

const CUSTOM_NGINX: &str = concat!(
    r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "#,
    r#""$http_user_agent" "$http_x_forwarded_for" host=$host rt=$request_time uct=$upstream_connect_time "#,
    r#"urt=$upstream_response_time ua=$upstream_addr us=$upstream_status cs=$upstream_cache_status "#,
    r#"$scheme $ssl_protocol $request_length $connection $pipe"#
);

#[test]
fn custom_nginx_with_unquoted_lists() {
    let fmt = LogFormat::nginx(CUSTOM_NGINX, Escape::Default).unwrap();
    assert_eq!(fmt.fields().count(), 21);
    let line = br#"192.0.2.10 - - [10/Oct/2026:13:55:36 +0300] "GET /shop/?add-to-cart=12 HTTP/3.0" 502 552 "-" "Mozilla/5.0" "-" host=shop.example.fi rt=1.204 uct=0.000, 0.001 urt=1.000, 0.200 : 0.003 ua=10.1.0.1:9000, 10.1.0.2:9000 us=502, 200 cs=MISS https TLSv1.3 812 41235 p"#;
    let mut ex = Extras::new();
    let r = fmt.parse_line_with_extras(line, &mut ex).unwrap();
    assert_eq!(r.protocol, "HTTP/3.0");
    assert_eq!(r.host, "shop.example.fi");
    assert_eq!(r.request_time_us, Some(1_204_000));
    assert_eq!((r.upstream_time_us, r.upstream_count), (Some(1_203_000), 3));
    assert_eq!(r.cache_status, "MISS");
    assert_eq!(ex.get("$upstream_addr"), Some("10.1.0.1:9000, 10.1.0.2:9000"));
    assert_eq!(ex.get("$upstream_connect_time"), Some("0.000, 0.001"));
    assert_eq!(r.upstream_status, 200, "the last upstream's status: the answer the client got");
    assert_eq!(ex.get("$upstream_status"), None, "a record field, not an extra");
    assert_eq!(ex.get("$pipe"), Some("p"));
    assert_eq!(ex.get("$ssl_protocol"), Some("TLSv1.3"));
}

#[test]
fn upstream_status_keeps_the_last_answer() {
    let fmt = LogFormat::nginx("$status $upstream_status|$request_time", Escape::Default).unwrap();
    for (v, want) in [
        ("502", Some(502)),
        ("502, 200", Some(200)),
        ("502 : 200", Some(200)),
        ("504, 502 : 503", Some(503)),
        ("200, -", Some(0)),
        ("-", Some(0)),
        ("-, 502", Some(502)),
        ("abc", None),
        ("502, x", None),
        ("1000", None),
    ] {
        let line = format!("200 {v}|0.001");
        let got = fmt.parse_line(line.as_bytes()).map(|r| r.upstream_status).ok();
        assert_eq!(got, want, "{v:?}");
    }
}

#[test]
fn json_builtin() {
    let fmt = LogFormat::builtin("json").unwrap();
    assert_eq!(fmt.host_field(), Some("$host"));
    let line = br#"{"time":"2026-10-10T13:55:36+03:00","remote_addr":"2001:db8::7","remote_user":"","host":"example.fi","request":"GET /?q=\"x\" HTTP/2.0","status":200,"body_bytes_sent":1234,"request_time":0.051,"upstream_response_time":"0.050","upstream_cache_status":"","http_referer":"","http_user_agent":"Mozilla/5.0 \u00e9 \\o/","http_x_forwarded_for":""}"#;
    let r = fmt.parse_line(line).unwrap();
    assert_eq!(r.ts_micros, 1_791_629_736_000_000);
    assert_eq!(r.client_ip, ip("2001:db8::7"));
    assert_eq!((&*r.path, &*r.query), ("/", "q=\"x\""));
    assert_eq!(r.request_time_us, Some(51_000));
    assert_eq!((r.upstream_time_us, r.upstream_count), (Some(50_000), 1));
    assert_eq!(r.user_agent, "Mozilla/5.0 é \\o/");
}

#[test]
fn apache_time_and_duration_directives() {
    let fmt = LogFormat::apache(r#"%a %{%Y-%m-%d %H:%M:%S}t.%{msec_frac}t %D %{ms}T "%r" %>s %s %B"#).unwrap();
    let r = fmt.parse_line(br#"192.0.2.1 2026-10-10 10:55:36.250 1534 1 "GET / HTTP/1.1" 200 302 10"#).unwrap();
    assert_eq!(r.ts_micros, 1_791_629_736_250_000);
    assert_eq!(r.request_time_us, Some(1534), "%D (µs) beats %{{ms}}T");
    assert_eq!(r.status, 200, "%>s beats %s");
    assert_eq!(r.bytes_sent, 10);
}

#[test]
fn separate_request_parts() {
    let fmt = LogFormat::nginx("$request_method $uri $args $server_protocol $status", Escape::Default).unwrap();
    let r = fmt.parse_line(b"PUT /a/b x=1 HTTP/1.1 201").unwrap();
    assert_eq!((&*r.method, &*r.path, &*r.query, &*r.protocol, r.status), ("PUT", "/a/b", "x=1", "HTTP/1.1", 201));
    let fmt = LogFormat::nginx("$request_method $scheme://$host$request_uri $status", Escape::Default).unwrap();
    let r = fmt.parse_line(b"GET https://example.fi/p?q=1 200").unwrap();
    assert_eq!((&*r.host, &*r.path, &*r.query), ("example.fi", "/p", "q=1"));
    let fmt = LogFormat::nginx("$uri$is_args$args $status", Escape::Default).unwrap();
    let r = fmt.parse_line(b"/p?q=1 200").unwrap();
    assert_eq!((&*r.path, &*r.query), ("/p", "q=1"));
    let fmt = LogFormat::apache("%m %U%q %H %>s").unwrap();
    let r = fmt.parse_line(b"GET /p?q=1 HTTP/1.1 200").unwrap();
    assert_eq!((&*r.path, &*r.query), ("/p", "q=1"));
    let r = fmt.parse_line(b"GET /p HTTP/1.1 200").unwrap();
    assert_eq!((&*r.path, &*r.query), ("/p", ""));
}

#[test]
fn compile_errors() {
    assert_eq!(LogFormat::nginx("just text", Escape::Default).unwrap_err(), FormatError::NoFields);
    assert!(matches!(
        LogFormat::nginx("$remote_user$http_referer", Escape::Default),
        Err(FormatError::Adjacent { .. })
    ));
    assert!(matches!(LogFormat::apache("%h %{Referer"), Err(FormatError::Syntax { .. })));
    assert!(matches!(LogFormat::resolve("combinde"), Err(FormatError::UnknownBuiltin(_))));
    assert!(matches!(LogFormat::resolve("no fields here"), Err(FormatError::Unrecognized(_))));
    assert_eq!("yaml".parse::<Escape>().unwrap_err(), FormatError::Escape("yaml".into()));
}

#[test]
fn resolve_accepts_names_strings_and_directives() {
    assert_eq!(LogFormat::resolve("main").unwrap().source(), LogFormat::MAIN);
    assert_eq!(LogFormat::resolve("$remote_addr $status").unwrap().family(), Family::Nginx);
    assert_eq!(LogFormat::resolve("%h %>s").unwrap().family(), Family::Apache);
    let d = LogFormat::resolve(r#"log_format j escape=json '{"s":$status}'"#).unwrap();
    assert_eq!((d.family(), d.escape(), d.source()), (Family::Nginx, Escape::Json, r#"{"s":$status}"#));
    let a = LogFormat::resolve(r#"LogFormat "%h %l %u %t \"%r\" %>s %b" common"#).unwrap();
    assert_eq!(a.fields().collect::<Vec<_>>(), LogFormat::builtin("common").unwrap().fields().collect::<Vec<_>>());
    let line = br#"192.0.2.1 - - [10/Oct/2026:13:55:36 +0300] "GET / HTTP/1.1" 200 512"#;
    assert_eq!(a.parse_line(line).unwrap(), LogFormat::builtin("common").unwrap().parse_line(line).unwrap());
}

#[test]
fn nginx_config_lookup() {
    let conf = "log_format a '$remote_addr $status';\nlog_format b escape=none '$status';";
    assert_eq!(LogFormat::nginx_config_names(conf).unwrap(), ["a", "b"]);
    assert_eq!(LogFormat::from_nginx_config(conf, "b").unwrap().escape(), Escape::None);
    let e = LogFormat::from_nginx_config(conf, "main").unwrap_err();
    assert_eq!(e.to_string(), "no `log_format main` in the nginx configuration (found: a, b)");
    let combined = LogFormat::from_nginx_config(conf, "combined").unwrap();
    assert_eq!(combined.family(), Family::Nginx);
}

proptest! {
    /// No input makes any built-in parser panic.
    #[test]
    fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..300)) {
        for name in LogFormat::BUILTIN_NAMES {
            let fmt = LogFormat::builtin(name).unwrap();
            let _ = fmt.parse_line(&line);
        }
    }

    /// Mutating a valid line never panics either (random bytes rarely get past the first field).
    #[test]
    fn mutations_never_panic(at in 0usize..COMBINED_LINE.len(), byte: u8, cut in 0usize..COMBINED_LINE.len()) {
        let mut line = COMBINED_LINE.to_vec();
        line[at] = byte;
        line.truncate(cut.max(at + 1));
        for name in LogFormat::BUILTIN_NAMES {
            let _ = LogFormat::builtin(name).unwrap().parse_line(&line);
        }
    }
}

/// The formats with a fused parser, as `(name, format)`; nginx's `combined` spells the same
/// layout differently from apache's.
fn fast_formats() -> Vec<(&'static str, LogFormat)> {
    let mut v: Vec<_> = ["combined", "common", "vhost_combined", "main"]
        .into_iter()
        .map(|n| (n, LogFormat::builtin(n).unwrap()))
        .collect();
    v.push(("nginx combined", LogFormat::from_nginx_config("", "combined").unwrap()));
    v.push((
        "lower-case header names",
        LogFormat::apache(r#"%h %l %u %t "%r" %>s %b "%{referer}i" "%{user-agent}i""#).unwrap(),
    ));
    // A layout and more fields after it: the fused parser, then the plan.
    v.push(("main + 13 fields", LogFormat::nginx(CUSTOM_NGINX, Escape::Default).unwrap()));
    v.push((
        "combined + %D",
        LogFormat::apache(r#"%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" %D"#).unwrap(),
    ));
    v.push((
        "vhost_combined + request id, %D",
        LogFormat::apache(r#"%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i" "%{X-Request-Id}i" %D"#)
            .unwrap(),
    ));
    // `$bytes_sent` after the layout: `$body_bytes_sent` outranks it, the layout stays whole.
    v.push((
        "combined + $bytes_sent",
        LogFormat::nginx(r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $bytes_sent"#, Escape::Default).unwrap(),
    ));
    // A fraction of a second for the layout's whole-second time.
    v.push((
        "combined + %{usec_frac}t",
        LogFormat::apache(r#"%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" %{usec_frac}t"#).unwrap(),
    ));
    v
}

/// Formats of a covered layout followed by more fields.
const LAYOUT_AND_MORE: [&str; 5] = [
    "main + 13 fields",
    "combined + %D",
    "vhost_combined + request id, %D",
    "combined + $bytes_sent",
    "combined + %{usec_frac}t",
];

/// The generic plan alone, without the fused parser.
fn generic<'a>(fmt: &LogFormat, line: &'a [u8]) -> Result<AccessRecord<'a>, LineError> {
    let mut rec = AccessRecord::default();
    fmt.plan.run(line, &mut rec, &fmt.trusted, None)?;
    Ok(rec)
}

#[test]
fn fused_parsers_cover_the_common_layouts() {
    let fast: Vec<_> = fast_formats().into_iter().map(|(n, f)| (n, f.fast.map(|f| f.has_rest()))).collect();
    assert!(fast.iter().all(|(n, f)| *f == Some(LAYOUT_AND_MORE.contains(n))), "{fast:?}");
    for (name, fmt) in [
        ("json", LogFormat::builtin("json").unwrap()),
        ("escape=none", LogFormat::from_nginx_config("log_format c escape=none '$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\"';", "c").unwrap()),
        ("common + %D", LogFormat::apache(r#"%h %l %u %t "%r" %>s %b %D"#).unwrap()),
        ("combined, agent unquoted", LogFormat::apache(r#"%h %l %u %t "%r" %>s %b "%{Referer}i" %{User-Agent}i %D"#).unwrap()),
        ("vhost_combined + %{Host}i (outranks %v)", LogFormat::apache(r#"%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i" "%{Host}i""#).unwrap()),
        ("combined with %{Host}i before", LogFormat::apache(r#"%{Host}i %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i""#).unwrap()),
        ("vhost_combined + %b (outranks %O)", LogFormat::apache(r#"%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i" %b"#).unwrap()),
    ] {
        assert!(fmt.fast.is_none(), "{name}");
    }
    // Trusted proxies make the client depend on X-Forwarded-For: the plan decides.
    let trusted = vec!["10.0.0.0/8".parse().unwrap()];
    assert!(LogFormat::builtin("main").unwrap().with_trusted_proxies(trusted.clone()).fast.is_none());
    assert!(LogFormat::builtin("combined").unwrap().with_trusted_proxies(trusted).fast.is_some());

    // Plain lines do take the fused path.
    let lines: [(&str, &[u8]); 4] = [
        ("combined", COMBINED_LINE),
        ("common", br#"192.0.2.1 - - [10/Oct/2026:13:55:36 +0300] "GET / HTTP/1.1" 200 512"#),
        ("vhost_combined", br#"www.example.fi:443 203.0.113.5 - - [10/Oct/2026:13:55:36 +0300] "POST /xmlrpc.php HTTP/1.1" 403 2413 "-" "python-requests/2.31.0""#),
        ("main", br#"10.0.0.5 - bob [10/Oct/2026:13:55:36 -0700] "GET /?a=1 HTTP/2" 200 - "-" "curl/8.5.0" "198.51.100.1, 10.0.0.7""#),
    ];
    for (name, line) in lines {
        let fmt = LogFormat::builtin(name).unwrap();
        let fast = fmt.fast.unwrap().parse(line, &fmt);
        assert!(matches!(fast, Some(Ok(_))), "{name}");
        assert_eq!(fmt.fast.unwrap().narrow().parse(line, &fmt), fast, "{name}");
        assert_eq!(fast, Some(generic(&fmt, line)), "{name}");
    }
    // And a layout with more fields: the fused parser reads the layout, the plan the rest.
    let fmt = LogFormat::nginx(CUSTOM_NGINX, Escape::Default).unwrap();
    let line = br#"192.0.2.10 - - [10/Oct/2026:13:55:36 +0300] "GET /shop/?add-to-cart=12 HTTP/3.0" 502 552 "-" "Mozilla/5.0" "-" host=shop.example.fi rt=1.204 uct=0.000, 0.001 urt=1.000, 0.200 : 0.003 ua=10.1.0.1:9000, 10.1.0.2:9000 us=502, 200 cs=MISS https TLSv1.3 812 41235 p"#;
    let fast = fmt.fast.unwrap().parse(line, &fmt).expect("fused");
    assert_eq!(fast, generic(&fmt, line));
    let r = fast.unwrap();
    assert_eq!((r.host.as_ref(), r.request_time_us, r.upstream_count), ("shop.example.fi", Some(1_204_000), 3));
}

/// Mostly one of `good`, sometimes one of `odd`: lines with one or two odd pieces are what
/// tells the fused parsers' checks apart.
fn piece(good: &'static [&'static str], odd: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop_oneof![8 => prop::sample::select(good), 1 => prop::sample::select(odd)]
}

prop_compose! {
    /// A line of the covered layouts' shape, built from pieces that are mostly fine and
    /// sometimes each of the things the fused parsers must leave to the plan.
    fn layout_line()(
        host in piece(&["www.example.fi", "-"], &["", "[2001:db8::1]", "h\\x41", "a b"]),
        port in piece(&["443", "80"], &["", "-", "4 43"]),
        addr in piece(
            &["192.0.2.1", "10.0.0.255", "255.255.255.255", "0.0.0.0", "2001:db8::1", "1.22.133.4"],
            &["01.2.3.4", "1.2.3.256", "1.2.3", "1.2.3.4.5", "::ffff:192.0.2.1", "::1", "fe80::1%eth0",
              "crawl.example.com", "-", "1.2.3.4-", "", "1.2.3.4:80", "1111.2.3.4", "1.2.3.04", "1.2.3.2555"],
        ),
        ident in piece(&["-"], &["x", "", "- -"]),
        user in piece(&["-", "alice"], &["", "a b", "[x", "\\x41", "a[b"]),
        time in piece(
            &["10/Oct/2026:13:55:36 +0300", "31/Dec/1999:23:59:59 -0700", "29/Feb/2024:00:00:00 +0000"],
            &["29/Feb/2025:00:00:00 +0000", "10/oct/2026:13:55:36 +0300", "10/Oct/2026:13:55:36 +03:00",
              "1/Oct/2026:13:55:36 +0300", "10/Oct/2026:24:55:36 +0300", "10/Xyz/2026:13:55:36 +0300"],
        ),
        method in piece(
            &["GET", "POST", "M-SEARCH"],
            &["-", "", "G\"ET", "A2345678901234567890123456789012", "A23456789012345678901234567890123", "G?T"],
        ),
        sep in piece(&[" "], &["  ", ""]),
        target in piece(
            &["/", "/a?b=1&c", "/wp-login.php"],
            &["?x", "/a b", "/a?b?c", "/\"x", "", "/a\\x22", "/?", "/caf\u{e9}", "HTTP/1.1", "/a\" b"],
        ),
        proto in piece(
            &[" HTTP/1.1", " HTTP/2", " HTTP/2.0"],
            &[" HTTP/1.1.1", " FOO/1.0", "", " HTTP/", " HTTP/11", "  HTTP/1.1", " HTTP/1.x", " http/1.1", " HTTP/1.10"],
        ),
        status in piece(&["200", "404", "000"], &["-", "2000", "20", "2x0", "200.0"]),
        bytes in piece(
            &["0", "-", "123", "1234567890123456789"],
            &["18446744073709551615", "12345678901234567890", "99999999999999999999", "-5", "1.5", "", "007", "12-"],
        ),
        referer in piece(&["-", "https://x.example/"], &["", "a\"b", "a\" \"b", "\\\"", "caf\u{e9}", "\""]),
        agent in piece(&["curl/8.5.0", "-", "Mozilla/5.0 (X11) \"q\""], &["", "x\" \"y", "\\x22", "\""]),
        xff in prop::sample::select(vec![None, None, Some("-"), Some("1.2.3.4, 5.6.7.8"), Some("\""), Some("")]),
        vhost in any::<bool>(),
        tail in 0u8..4,
        // What the formats with more fields log after the layout (and the rest must not).
        more in prop_oneof![
            4 => Just(""),
            2 => prop::sample::select(&[
                " 1234",
                " \"www.example.fi\" 12",
                " host=shop.example.fi rt=1.204 uct=0.000, 0.001 urt=1.000, 0.200 : 0.003 ua=10.1.0.1:9000 us=502, 200 cs=MISS https TLSv1.3 812 41235 p",
                " host=- rt=0.000 uct=- urt=- ua=- us=- cs=- http - 0 1 .",
            ][..]),
            1 => prop::sample::select(&[" ", "\"", " \"", " \"x\" 1", "x", " rt=", " 1.5", "\" 12", " -"][..]),
        ],
    ) -> Vec<u8> {
        let mut s = String::new();
        if vhost {
            s.push_str(&format!("{host}:{port} "));
        }
        s.push_str(&format!("{addr} {ident} {user} [{time}] \"{method}{sep}{target}{proto}\" {status} {bytes}"));
        if tail > 0 {
            s.push_str(&format!(" \"{referer}\" \"{agent}\""));
        }
        if let Some(x) = xff.filter(|_| tail > 1) {
            s.push_str(&format!(" \"{x}\""));
        }
        s.push_str(more);
        s.into_bytes()
    }
}

/// Bytes that delimit or change how a value parses.
const SPECIAL: &[u8] = b" \"\\-[]:?./0123456789aAxHT\t\x80\xc3\xa9\xff";

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// The fused parsers and the generic plan agree on every line: the same record, or the
    /// fused parser declines and the plan gives the same error as always.
    #[test]
    fn fused_parsers_match_the_plan(
        line in layout_line(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..5, prop::sample::select(SPECIAL.to_vec()), any::<u8>()), 0..2),
    ) {
        let mut line = line;
        for (at, op, special, random) in edits {
            let i = at.index(line.len() + 1);
            match op {
                0 if i < line.len() => line[i] = special,
                1 => line.insert(i, special),
                2 if i < line.len() => line[i] = random,
                3 => line.truncate(i),
                4 => line.truncate(line.len().saturating_sub(random as usize % 4)),
                _ => {}
            }
        }
        for (name, fmt) in fast_formats() {
            let want = generic(&fmt, &line);
            // The 16-byte build (CPUs without AVX2) and the build this CPU runs agree.
            let fused = fmt.fast.unwrap();
            let fast = fused.parse(&line, &fmt);
            prop_assert_eq!(&fused.narrow().parse(&line, &fmt), &fast, "{}: {}", name, String::from_utf8_lossy(&line));
            if let Some(fast) = fast {
                prop_assert_eq!(&fast, &want, "{}: {}", name, String::from_utf8_lossy(&line));
            }
            prop_assert_eq!(fmt.parse_line(&line), want, "{}: {}", name, String::from_utf8_lossy(&line));
        }
    }
}

#[test]
fn fused_parsers_match_the_plan_on_golden_lines() {
    let files: [(&str, &[u8]); 4] = [
        ("combined", include_bytes!("../../tests/golden/combined.log")),
        ("common", include_bytes!("../../tests/golden/common.log")),
        ("vhost_combined", include_bytes!("../../tests/golden/vhost_combined.log")),
        ("main", include_bytes!("../../tests/golden/main.log")),
    ];
    for (name, log) in files {
        let fmt = LogFormat::builtin(name).unwrap();
        for line in log.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert_eq!(fmt.parse_line(line), generic(&fmt, line), "{name}: {}", String::from_utf8_lossy(line));
        }
    }
}
