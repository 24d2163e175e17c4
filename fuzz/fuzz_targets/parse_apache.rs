//! apache-family line parsers (built-ins and a custom format with every kind of directive).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sitelog_ingest::format::{Extras, LogFormat};

fn formats() -> &'static [LogFormat] {
    static F: OnceLock<Vec<LogFormat>> = OnceLock::new();
    F.get_or_init(|| {
        vec![
            LogFormat::builtin("combined").unwrap(),
            LogFormat::builtin("common").unwrap(),
            LogFormat::builtin("vhost_combined").unwrap(),
            // `combined` and more fields: the fused parser, then the plan.
            LogFormat::apache(r#"%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" %D "%{X-Request-Id}i" %{usec_frac}t"#).unwrap(),
            LogFormat::apache(r#"%V %a %{c}a %u [%{%d/%b/%Y %T}t.%{msec_frac}t] %{sec}t "%m %U%q %H" %>s %s %B %O %I %D %T %{ms}T %p %X "%{Referer}i" "%{X-Forwarded-For}i" %{Host}i "%{User-Agent}i""#).unwrap()
                .with_trusted_proxies(vec!["10.0.0.0/8".parse().unwrap(), "::/0".parse().unwrap()]),
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
            let _ = (e.to_string(), e.reason_key());
        }
    }
});
