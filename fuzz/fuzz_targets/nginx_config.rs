//! Reading `log_format` directives out of an nginx configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitelog_ingest::format::LogFormat;

fuzz_target!(|data: &[u8]| {
    let Ok(conf) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(names) = LogFormat::nginx_config_names(conf) {
        for name in names.iter().take(4) {
            let _ = LogFormat::from_nginx_config(conf, name);
        }
    }
    let _ = LogFormat::from_nginx_config(conf, "main");
    let _ = LogFormat::from_nginx_config(conf, "combined");
});
