//! Round trip: random records rendered through a format (as the server would log them) parse
//! back to the same record, for every built-in and two custom formats.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr};

use proptest::prelude::*;
use sitelog_ingest::format::{Escape, LogFormat};
use sitelog_schema::AccessRecord;

/// Which record fields a format carries (the rest parse as defaults).
#[derive(Clone, Copy)]
struct Carries {
    agent: bool,
    host: bool,
    request_time: bool,
    upstream: bool,
    cache: bool,
    /// `$upstream_status` (custom nginx only).
    upstream_status: bool,
}

const CUSTOM_NGINX: &str = concat!(
    r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "#,
    r#""$http_user_agent" "$http_x_forwarded_for" $host rt=$request_time urt="$upstream_response_time" "#,
    r#"ua="$upstream_addr" us="$upstream_status" cs=$upstream_cache_status $scheme $ssl_protocol "#,
    r#"$request_length $connection $pipe"#
);
const CUSTOM_APACHE: &str = r#"%V %a %u %t "%r" %>s %B %D "%{Referer}i" "%{User-Agent}i""#;

fn formats() -> Vec<(&'static str, LogFormat, Carries)> {
    let c = |agent, host, request_time, upstream, cache| Carries {
        agent,
        host,
        request_time,
        upstream,
        cache,
        upstream_status: false,
    };
    vec![
        ("combined", LogFormat::builtin("combined").unwrap(), c(true, false, false, false, false)),
        ("common", LogFormat::builtin("common").unwrap(), c(false, false, false, false, false)),
        ("vhost_combined", LogFormat::builtin("vhost_combined").unwrap(), c(true, true, false, false, false)),
        ("main", LogFormat::builtin("main").unwrap(), c(true, false, false, false, false)),
        ("json", LogFormat::builtin("json").unwrap(), c(true, true, true, true, true)),
        (
            "custom nginx",
            LogFormat::nginx(CUSTOM_NGINX, Escape::Default).unwrap(),
            Carries { upstream_status: true, ..c(true, true, true, true, true) },
        ),
        ("custom apache", LogFormat::apache(CUSTOM_APACHE).unwrap(), c(true, true, true, false, false)),
    ]
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn text(re: &'static str) -> impl Strategy<Value = String> {
    re.prop_filter("`-` means empty in logs", |s| s != "-")
}

prop_compose! {
    fn record()(
        secs in 946_684_800i64..4_102_444_800,
        tz in prop::sample::select(vec![0, 3 * 3600, 2 * 3600, -7 * 3600, 5 * 3600 + 1800, -(3 * 3600 + 1800), 14 * 3600]),
        v4 in any::<bool>(),
        a in any::<u32>(),
        b in any::<u128>(),
        user in text("|[a-z]{1,8}"),
        method in prop::sample::select(vec!["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PROPFIND"]),
        path in text("/[a-zA-Z0-9/._~%\"\\\\äö€-]{0,30}"),
        query in text("|[a-z0-9=&%+\"]{1,20}"),
        protocol in prop::sample::select(vec!["HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/3.0"]),
        status in 100u16..600,
        bytes in any::<u64>(),
        referer in text("|https://[a-z.]{3,20}/[a-z/?=]{0,20}"),
        agent in text("[ -~äöü€☃\t\"\\\\]{0,80}"),
        host in text("[a-z0-9-]{1,20}(\\.[a-z]{2,5}){1,2}"),
        rt_ms in 0u64..10_000_000,
        rt_us in 0u64..10_000_000_000,
        up in prop::option::of((0u64..1_000_000, 1u8..4)),
        cache in prop::sample::select(vec!["", "HIT", "MISS", "BYPASS", "EXPIRED"]),
        upstream_status in prop::sample::select(vec![0u16, 200, 404, 502, 503, 504]),
    ) -> (AccessRecord<'static>, u64) {
        let ip = if v4 { IpAddr::from(a.to_be_bytes()) } else { canonical(IpAddr::V6(Ipv6Addr::from(b))) };
        let rec = AccessRecord {
            ts_micros: secs * 1_000_000,
            tz_offset_secs: tz,
            host: host.into(),
            client_ip: Some(ip),
            remote_user: user.into(),
            method: Cow::Borrowed(method),
            path: path.into(),
            query: query.into(),
            protocol: Cow::Borrowed(protocol),
            status,
            bytes_sent: bytes,
            referer: referer.into(),
            user_agent: agent.into(),
            request_time_us: Some(rt_ms * 1000),
            upstream_time_us: up.map(|(ms, _)| ms * 1000),
            upstream_count: up.map_or(0, |(_, n)| n),
            cache_status: Cow::Borrowed(cache),
            upstream_status,
            ..Default::default()
        };
        (rec, rt_us)
    }
}

/// The record as the format can carry it.
fn project(name: &str, r: &AccessRecord<'static>, rt_us: u64, c: Carries) -> AccessRecord<'static> {
    let mut want = r.clone();
    if !c.agent {
        want.referer = "".into();
        want.user_agent = "".into();
    }
    if !c.host {
        want.host = "".into();
    }
    if !c.request_time {
        want.request_time_us = None;
    } else if name == "custom apache" {
        want.request_time_us = Some(rt_us);
    }
    if !c.upstream {
        want.upstream_time_us = None;
        want.upstream_count = 0;
    }
    if !c.cache {
        want.cache_status = "".into();
    }
    if !c.upstream_status {
        want.upstream_status = 0;
    }
    want
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn render_then_parse_is_identity((rec, rt_us) in record()) {
        for (name, fmt, carries) in formats() {
            let mut input = rec.clone();
            if name == "custom apache" {
                input.request_time_us = Some(rt_us);
            }
            let mut line = Vec::new();
            fmt.render(&input, &[], &mut line);
            let got = fmt.parse_line(&line);
            let want = project(name, &rec, rt_us, carries);
            prop_assert_eq!(got.as_ref().map_err(|e| e.to_string()), Ok(&want), "{} line: {}", name, String::from_utf8_lossy(&line));
        }
    }
}
