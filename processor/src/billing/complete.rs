//! Is a month complete? Every source has a watermark: the newest request time the processor
//! stored for it (`source_progress.max_ts`). A month is complete once it is over and every
//! active source's watermark has passed its end plus the grace period.
//!
//! A source here is a site host's stream: its watermark is the newest of its files'. Log
//! rotation ends one file and starts the next, so a finished file is superseded by its
//! successor rather than lagging for ever. A host whose watermark is older than
//! `source_idle_days` before the month's start is retired and not waited for.

use chrono::{DateTime, Duration, Utc};
use clickhouse::Client;
use serde::{Deserialize, Serialize};

use super::month::Month;
use super::{ch, sql, BillingConfig, BillingError};

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
struct WatermarkRow {
    site_host: String,
    fingerprint: u64,
    watermark_us: i64,
}

/// A source that has not delivered up to the month's end plus grace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lagging {
    pub site_host: String,
    /// The file holding the newest record, as 16 hex digits (the collector's fingerprint).
    pub fingerprint: String,
    /// Newest request time stored, RFC 3339 UTC.
    pub watermark: String,
    /// How far the watermark is behind `needed`.
    pub behind_hours: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completeness {
    pub complete: bool,
    /// The month's end plus the grace period: every active watermark must be past it.
    pub needed: String,
    pub grace_hours: u32,
    pub active_sources: usize,
    pub lagging: Vec<Lagging>,
    /// Why the month is not complete, in words.
    pub reasons: Vec<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub async fn check(
    client: &Client,
    month: Month,
    cfg: &BillingConfig,
    now: DateTime<Utc>,
) -> Result<Completeness, BillingError> {
    let rows: Vec<WatermarkRow> =
        client.query(sql::WATERMARKS.sql).fetch_all().await.map_err(ch("reading source_progress"))?;
    let marks: Vec<(String, u64, DateTime<Utc>)> = rows
        .into_iter()
        .map(|r| (r.site_host, r.fingerprint, DateTime::from_timestamp_micros(r.watermark_us).unwrap_or_default()))
        .collect();
    Ok(evaluate(month, cfg, now, &marks))
}

/// The rule itself, over (host, fingerprint, watermark) triples.
pub fn evaluate(
    month: Month,
    cfg: &BillingConfig,
    now: DateTime<Utc>,
    marks: &[(String, u64, DateTime<Utc>)],
) -> Completeness {
    let (start, end) = month.utc_bounds();
    let needed = end + Duration::hours(cfg.grace_hours as i64);
    let retired_before = start - Duration::days(cfg.source_idle_days as i64);
    let active: Vec<_> = marks.iter().filter(|(_, _, w)| *w >= retired_before).collect();
    let lagging: Vec<Lagging> = active
        .iter()
        .filter(|(_, _, w)| *w < needed)
        .map(|(host, fp, w)| Lagging {
            site_host: host.clone(),
            fingerprint: format!("{fp:016x}"),
            watermark: rfc3339(*w),
            behind_hours: ((needed - *w).num_seconds() as f64 / 3600.0 * 10.0).round() / 10.0,
        })
        .collect();
    let mut reasons = Vec::new();
    if now < needed {
        reasons.push(format!(
            "the month plus its {} h grace period ends at {}, it is now {}",
            cfg.grace_hours,
            rfc3339(needed),
            rfc3339(now)
        ));
    }
    if !lagging.is_empty() {
        reasons.push(format!(
            "{} of {} active sources have not delivered up to {}",
            lagging.len(),
            active.len(),
            rfc3339(needed)
        ));
    }
    Completeness {
        complete: reasons.is_empty(),
        needed: rfc3339(needed),
        grace_hours: cfg.grace_hours,
        active_sources: active.len(),
        lagging,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn complete_only_when_every_active_source_passed_end_plus_grace() {
        let m: Month = "2026-10".parse().unwrap();
        let cfg = BillingConfig::default();
        let now = t("2026-11-25T00:00:00Z");
        // October ends 2026-10-31T22:00Z; with 2 h grace sources must reach 2026-11-01T00:00Z.
        let marks = vec![
            ("a.fi".to_string(), 1, t("2026-11-01T00:00:00Z")),
            ("b.fi".to_string(), 2, t("2026-11-20T00:00:00Z")),
            ("retired.fi".to_string(), 3, t("2026-09-20T00:00:00Z")),
        ];
        let c = evaluate(m, &cfg, now, &marks);
        assert!(c.complete, "{c:?}");
        assert_eq!(c.active_sources, 2);
        let mut lag = marks.clone();
        lag[0].2 = t("2026-10-31T23:59:59Z");
        let c = evaluate(m, &cfg, now, &lag);
        assert!(!c.complete);
        assert_eq!(c.lagging.len(), 1);
        assert_eq!(c.lagging[0].site_host, "a.fi");
        assert_eq!(c.lagging[0].fingerprint, "0000000000000001");
        // Not over yet: incomplete even if every source is ahead of the clock.
        let c = evaluate(m, &cfg, t("2026-10-31T23:00:00Z"), &marks);
        assert!(!c.complete && c.reasons[0].contains("grace period ends at 2026-11-01T00:00:00Z"), "{c:?}");
    }
}
