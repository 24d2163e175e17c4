//! ClickHouse DDL as ordered, versioned migration files (`schema/migrations/NNNN_name.sql`).
//!
//! The files are templates: `{{db}}` and the retention placeholders are filled from config,
//! so retention is configuration with safe defaults ([`Retention::default`]). A migration's
//! checksum is taken over the *template*, so changing retention does not look like tampering,
//! while editing an applied file does. Applying them (I/O) is the processor's job.

use sha2::{Digest, Sha256};

/// One migration file, embedded at build time.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub template: &'static str,
}

/// All migrations, in the order they apply. Append only: never edit or reorder a released one.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "access_log", template: include_str!("../migrations/0001_access_log.sql") },
    Migration { version: 2, name: "register", template: include_str!("../migrations/0002_register.sql") },
    Migration { version: 3, name: "sink_state", template: include_str!("../migrations/0003_sink_state.sql") },
    Migration { version: 4, name: "billing_runs", template: include_str!("../migrations/0004_billing_runs.sql") },
    Migration { version: 5, name: "billing_access", template: include_str!("../migrations/0005_billing_access.sql") },
    Migration { version: 6, name: "keyed_visitors", template: include_str!("../migrations/0006_keyed_visitors.sql") },
    Migration { version: 7, name: "security_events", template: include_str!("../migrations/0007_security_events.sql") },
    Migration {
        version: 8,
        name: "retention_changes",
        template: include_str!("../migrations/0008_retention_changes.sql"),
    },
    Migration { version: 9, name: "health", template: include_str!("../migrations/0009_health.sql") },
    Migration {
        version: 10,
        name: "collector_heartbeats",
        template: include_str!("../migrations/0010_collector_heartbeats.sql"),
    },
    Migration { version: 11, name: "incidents", template: include_str!("../migrations/0011_incidents.sql") },
    Migration {
        version: 12,
        name: "source_progress_ttl",
        template: include_str!("../migrations/0012_source_progress_ttl.sql"),
    },
];

/// Retention per purpose of the privacy notice. Defaults are the safe ones of DESIGN.md.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Raw access records (diagnosis, security).
    pub raw_days: u32,
    /// The full client address inside raw records; afterwards only the /24 or /48 remains.
    pub client_ip_days: u32,
    /// Per-minute site health (diagnosis, disruption alerts).
    pub site_health_days: u32,
    /// Security events. Validated, but no table uses it yet: it is the TTL of the
    /// `security_events` table that is still to come.
    pub security_days: u32,
    /// Billing usage (Finnish bookkeeping period).
    pub usage_years: u32,
    /// Collector heartbeats (`collector_heartbeats`: billing completeness per collector source).
    pub heartbeat_days: u32,
    /// Per-source progress (`source_progress`: the re-send filter and the billing run's
    /// per-source counts), kept this long after a source was last written. Must exceed every
    /// collector's `tail.completed_retention_days` (a collector reads no file it has not
    /// remembered and that is older than that, except with `--backfill`) and `raw_days`.
    pub progress_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw_days: 30,
            client_ip_days: 7,
            site_health_days: 90,
            security_days: 365,
            usage_years: 10,
            heartbeat_days: 90,
            progress_days: 400,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RetentionError {
    #[error("retention.{key} must be at least 1")]
    Zero { key: &'static str },
    #[error("retention.client_ip_days ({ip}) must not exceed retention.raw_days ({raw})")]
    IpOutlivesRaw { ip: u32, raw: u32 },
    #[error("retention.progress_days ({progress}) must be at least retention.raw_days ({raw}): the billing run's --verify reads the per-source counts of every month it can recount from raw records")]
    ProgressShorterThanRaw { progress: u32, raw: u32 },
}

impl Retention {
    pub fn validate(&self) -> Result<(), RetentionError> {
        for (key, v) in [
            ("raw_days", self.raw_days),
            ("client_ip_days", self.client_ip_days),
            ("site_health_days", self.site_health_days),
            ("security_days", self.security_days),
            ("usage_years", self.usage_years),
            ("heartbeat_days", self.heartbeat_days),
            ("progress_days", self.progress_days),
        ] {
            if v == 0 {
                return Err(RetentionError::Zero { key });
            }
        }
        if self.client_ip_days > self.raw_days {
            return Err(RetentionError::IpOutlivesRaw { ip: self.client_ip_days, raw: self.raw_days });
        }
        if self.progress_days < self.raw_days {
            return Err(RetentionError::ProgressShorterThanRaw { progress: self.progress_days, raw: self.raw_days });
        }
        Ok(())
    }
}

impl Migration {
    /// Hex SHA-256 of the template text.
    pub fn checksum(&self) -> String {
        Sha256::digest(self.template.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The statements of this migration for `db`, with retention filled in.
    pub fn statements(&self, db: &str, r: &Retention) -> Vec<String> {
        let sql = self
            .template
            .replace("{{db}}", db)
            .replace("{{raw_days}}", &r.raw_days.to_string())
            .replace("{{client_ip_days}}", &r.client_ip_days.to_string())
            .replace("{{site_health_days}}", &r.site_health_days.to_string())
            .replace("{{security_days}}", &r.security_days.to_string())
            .replace("{{usage_years}}", &r.usage_years.to_string())
            .replace("{{heartbeat_days}}", &r.heartbeat_days.to_string())
            .replace("{{progress_days}}", &r.progress_days.to_string());
        split_statements(&sql)
    }
}

/// Splits on `;` at the end of a line, dropping comment-only chunks. Statements in these files
/// never contain `;` at a line end inside a string literal.
fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        let trimmed = line.trim_end();
        if trimmed.trim_start().starts_with("--") {
            continue;
        }
        cur.push_str(trimmed);
        cur.push('\n');
        if trimmed.ends_with(';') {
            let stmt = cur.trim().trim_end_matches(';').trim().to_owned();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            cur.clear();
        }
    }
    let rest = cur.trim();
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_dense_and_ordered() {
        for (want, m) in (1..).zip(MIGRATIONS) {
            assert_eq!(m.version, want, "migration {} out of order", m.name);
        }
    }

    #[test]
    fn templates_render_without_leftover_placeholders() {
        let r = Retention::default();
        for m in MIGRATIONS {
            for s in m.statements("sitelog", &r) {
                assert!(!s.contains("{{"), "unfilled placeholder in {}: {s}", m.name);
                assert!(!s.ends_with(';'));
            }
        }
        let first = MIGRATIONS[0].statements("db1", &r);
        assert!(first[0].contains("INTERVAL 7 DAY"), "client ip ttl default 7 days");
        assert!(first[0].contains("INTERVAL 30 DAY"), "raw ttl default 30 days");
        assert!(first.iter().any(|s| s.contains("INTERVAL 10 YEAR")));
    }

    #[test]
    fn retention_validation_names_the_key() {
        let r = Retention { raw_days: 0, ..Default::default() };
        assert_eq!(r.validate().unwrap_err().to_string(), "retention.raw_days must be at least 1");
        let r = Retention { client_ip_days: 40, ..Default::default() };
        assert!(r.validate().unwrap_err().to_string().contains("client_ip_days"));
    }
}
