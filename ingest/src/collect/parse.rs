//! The parse step as the collector sees it: bytes of one line in, a record or a reason out.
//! A small seam so the tailer is tested with a trivial parser and runs with the real formats.

use std::sync::Arc;

use sitelog_schema::AccessRecord;

use crate::format::LogFormat;

/// Parses one line (without its newline).
pub trait LineParser: Send + Sync {
    fn parse<'a>(&self, line: &'a [u8]) -> Result<AccessRecord<'a>, String>;
}

impl LineParser for LogFormat {
    fn parse<'a>(&self, line: &'a [u8]) -> Result<AccessRecord<'a>, String> {
        self.parse_line(line).map_err(|e| e.to_string())
    }
}

/// Resolves a config `format` (a known name or a pasted `log_format`/`LogFormat`).
pub fn resolve(spec: &str) -> Result<Arc<dyn LineParser>, String> {
    LogFormat::resolve(spec).map(|f| Arc::new(f) as Arc<dyn LineParser>).map_err(|e| e.to_string())
}
