//! Collector heartbeats: how far one collector source has delivered, so the billing run can
//! judge completeness per collector source instead of per site host (issue 12, part 4).
//!
//! One JSON object per Kafka message on `sitelog.heartbeats` ([`crate::wire::HEARTBEAT_TOPIC`]),
//! key = `server/source`. Version 1:
//!
//! ```json
//! {"version":1,"server":"web1","source":"sites","sent_at_us":1767225600123456,
//!  "delivered_through_us":1767225599000000,"position":123456789,"idle":false,"files":12}
//! ```
//!
//! - `server`: the collector's `[collector] server` (default: the machine's host name);
//! - `source`: the `[[source]] name` of the collector's config;
//! - `sent_at_us`: when the collector computed it (µs since the Unix epoch, UTC);
//! - `delivered_through_us`: event time (µs, UTC) up to which every record of this source
//!   that the collector has read is acknowledged by the broker; with `idle` the newest event
//!   time delivered. 0 when nothing was delivered yet;
//! - `position`: the acknowledged byte position summed over the source's tracked files;
//! - `idle`: every file of the source was read to its end and everything read is
//!   acknowledged, at `sent_at_us`;
//! - `files`: files of the source being tracked.
//!
//! A heartbeat is built from acknowledged state only, so it never claims undelivered data.

use serde::{Deserialize, Serialize};

/// The only version this build writes and reads.
pub const HEARTBEAT_VERSION: u32 = 1;

/// Longest `server` or `source` accepted.
pub const MAX_NAME: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub version: u32,
    pub server: String,
    pub source: String,
    pub sent_at_us: i64,
    pub delivered_through_us: i64,
    pub position: u64,
    pub idle: bool,
    pub files: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeartbeatError {
    #[error("heartbeat version {0} is not supported (this build reads version {HEARTBEAT_VERSION})")]
    Version(u32),
    #[error("heartbeat {0} must be 1 to {MAX_NAME} bytes")]
    Name(&'static str),
    #[error("heartbeat {0} is out of range")]
    Time(&'static str),
}

impl Heartbeat {
    /// The Kafka message key: `server/source`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.server, self.source)
    }

    /// Checks what the JSON shape cannot: version, name lengths, sane times (years
    /// 1970–2200; `delivered_through_us` may be 0 = nothing delivered yet).
    pub fn validate(&self) -> Result<(), HeartbeatError> {
        const MAX_US: i64 = 7_258_118_400_000_000; // 2200-01-01
        if self.version != HEARTBEAT_VERSION {
            return Err(HeartbeatError::Version(self.version));
        }
        for (what, v) in [("server", &self.server), ("source", &self.source)] {
            if v.is_empty() || v.len() > MAX_NAME {
                return Err(HeartbeatError::Name(what));
            }
        }
        if !(1..MAX_US).contains(&self.sent_at_us) {
            return Err(HeartbeatError::Time("sent_at_us"));
        }
        if !(0..MAX_US).contains(&self.delivered_through_us) {
            return Err(HeartbeatError::Time("delivered_through_us"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let h = Heartbeat {
            version: 1,
            server: "web1".into(),
            source: "sites".into(),
            sent_at_us: 1_767_225_600_000_000,
            delivered_through_us: 0,
            position: 0,
            idle: true,
            files: 0,
        };
        assert_eq!(h.validate(), Ok(()));
        assert_eq!(h.key(), "web1/sites");
        assert_eq!(Heartbeat { version: 2, ..h.clone() }.validate(), Err(HeartbeatError::Version(2)));
        assert_eq!(Heartbeat { server: String::new(), ..h.clone() }.validate(), Err(HeartbeatError::Name("server")));
        assert_eq!(Heartbeat { sent_at_us: 0, ..h.clone() }.validate(), Err(HeartbeatError::Time("sent_at_us")));
        assert_eq!(
            Heartbeat { delivered_through_us: -1, ..h }.validate(),
            Err(HeartbeatError::Time("delivered_through_us"))
        );
    }
}
