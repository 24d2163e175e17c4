//! A line that could not be parsed, kept with everything needed to find and replay it.

use serde::{Deserialize, Serialize};

/// Raw bytes kept per reject; longer lines are cut (the length field keeps the true size).
pub const REJECT_RAW_CAP: usize = 4096;

/// An unparseable line. Serialized as one JSON object per Kafka message on the rejects topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// Path of the file the line was read from (informational; identity is the fingerprint).
    pub source_path: String,
    pub fingerprint: u64,
    /// Byte offset of the line's first byte.
    pub offset: u64,
    /// 1-based line number within the file, when known.
    pub line: u64,
    /// Short machine-readable reason, e.g. `expected '"' at column 57 (field request)`.
    pub reason: String,
    /// True length of the line in bytes.
    pub len: u64,
    /// The line's bytes, lossily decoded and capped at [`REJECT_RAW_CAP`].
    pub raw: String,
}

impl Reject {
    /// Builds a reject, capping the stored raw bytes.
    pub fn new(source_path: &str, fingerprint: u64, offset: u64, line: u64, reason: String, raw: &[u8]) -> Self {
        let kept = &raw[..raw.len().min(REJECT_RAW_CAP)];
        Reject {
            source_path: source_path.to_owned(),
            fingerprint,
            offset,
            line,
            reason,
            len: raw.len() as u64,
            raw: String::from_utf8_lossy(kept).into_owned(),
        }
    }
}
