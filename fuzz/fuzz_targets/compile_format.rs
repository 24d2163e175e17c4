//! The format-string compilers (nginx, apache, `resolve`), then the compiled plan over a
//! rendered line and over the input itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitelog_ingest::format::{Escape, LogFormat};
use sitelog_schema::AccessRecord;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    let compiled = [
        LogFormat::nginx(spec, Escape::Default),
        LogFormat::nginx(spec, Escape::Json),
        LogFormat::nginx(spec, Escape::None),
        LogFormat::apache(spec),
        LogFormat::resolve(spec),
    ];
    let record = AccessRecord {
        ts_micros: 1_791_629_736_000_000,
        tz_offset_secs: 10_800,
        host: "example.fi".into(),
        client_ip: Some([192, 0, 2, 1].into()),
        method: "GET".into(),
        path: "/a\"b\\c".into(),
        query: "x=1".into(),
        protocol: "HTTP/2.0".into(),
        status: 200,
        bytes_sent: 1234,
        user_agent: "Mozilla/5.0 \"q\"".into(),
        request_time_us: Some(51_000),
        ..Default::default()
    };
    for f in compiled.into_iter().flatten() {
        let _ = f.host_field();
        let _ = f.fields().count();
        let mut line = Vec::new();
        f.render(&record, &[], &mut line);
        let _ = f.parse_line(&line);
        let _ = f.parse_line(data);
    }
});
