//! The nginx `escape=json` JSON-lines parser.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sitelog_ingest::format::{Extras, LogFormat};

fuzz_target!(|line: &[u8]| {
    static F: OnceLock<LogFormat> = OnceLock::new();
    let f = F.get_or_init(|| LogFormat::builtin("json").unwrap());
    let mut extras = Extras::new();
    let plain = f.parse_line(line);
    assert_eq!(plain, f.parse_line_with_extras(line, &mut extras));
    if let Err(e) = plain {
        let _ = e.to_string();
    }
});
