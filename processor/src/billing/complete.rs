//! Is a month complete? Judged per collector source (issue 12, part 4), never per site host:
//! a parked site, a domain that moved away or one junk `Host` header sends nothing more, and
//! must not keep a month open for ever.
//!
//! Every collector publishes per `[[source]]` a heartbeat (`sitelog_schema::heartbeat`,
//! stored in `collector_heartbeats` by the processor): the event time up to which the
//! source's records are acknowledged by Kafka (`delivered_through`), or that it is `idle`
//! (every file read to its end and acknowledged) at the time it was sent. A month is complete
//! once it is over plus the grace period (`needed` = end + `grace_hours`, time for the
//! processor to store what Kafka holds) and the latest heartbeat of every active collector
//! source either has `delivered_through >= needed` or is idle and was sent at or after
//! `needed`. A source whose latest heartbeat is older than `source_idle_days` before the
//! month's start is retired (a decommissioned web server) and not waited for; every other
//! source counts, so a collector that stopped or lags blocks the month and is named.
//! No heartbeat at all: nothing to wait for (as with a database without collectors).

use chrono::{DateTime, Duration, Utc};
use clickhouse::Client;
use serde::{Deserialize, Serialize};

use super::month::Month;
use super::{ch, sql, BillingConfig, BillingError};

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
struct LatestRow {
    server: String,
    source: String,
    sent_at_ms: i64,
    delivered_through_us: i64,
    idle: u8,
}

/// The latest heartbeat of one collector source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceMark {
    pub server: String,
    pub source: String,
    pub sent_at: DateTime<Utc>,
    pub delivered_through: DateTime<Utc>,
    pub idle: bool,
}

/// A collector source that has not delivered up to the month's end plus grace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lagging {
    /// `[collector] server` of the collector.
    pub server: String,
    /// Its `[[source]]` name.
    pub source: String,
    /// Event time up to which its records are delivered, RFC 3339 UTC.
    pub delivered_through: String,
    /// Whether it was idle (everything read and delivered) when it last reported.
    pub idle: bool,
    /// When its latest heartbeat was sent, RFC 3339 UTC.
    pub last_heartbeat: String,
    /// How far it is behind `needed`: the newer of delivered_through and (if idle) the
    /// heartbeat's time.
    pub behind_hours: f64,
}

impl Lagging {
    /// `server/source`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.server, self.source)
    }

    /// One line for people: name, how far it delivered, its last heartbeat.
    pub fn describe(&self) -> String {
        format!(
            "{} delivered through {}, last heartbeat {}{}, {:.1} h behind",
            self.name(),
            self.delivered_through,
            self.last_heartbeat,
            if self.idle { " (idle)" } else { "" },
            self.behind_hours
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completeness {
    pub complete: bool,
    /// The month's end plus the grace period: every active source must have delivered past it.
    pub needed: String,
    pub grace_hours: u32,
    /// Collector sources (server, source) that count for this month.
    pub active_sources: usize,
    pub lagging: Vec<Lagging>,
    /// Why the month is not complete, in words.
    pub reasons: Vec<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Reads the latest heartbeat of every collector source.
pub async fn latest(client: &Client) -> Result<Vec<SourceMark>, BillingError> {
    let rows: Vec<LatestRow> =
        client.query(sql::HEARTBEATS.sql).fetch_all().await.map_err(ch("reading collector_heartbeats"))?;
    Ok(rows
        .into_iter()
        .map(|r| SourceMark {
            server: r.server,
            source: r.source,
            sent_at: DateTime::from_timestamp_millis(r.sent_at_ms).unwrap_or_default(),
            delivered_through: DateTime::from_timestamp_micros(r.delivered_through_us).unwrap_or_default(),
            idle: r.idle != 0,
        })
        .collect())
}

pub async fn check(
    client: &Client,
    month: Month,
    cfg: &BillingConfig,
    now: DateTime<Utc>,
) -> Result<Completeness, BillingError> {
    Ok(evaluate(month, cfg, now, &latest(client).await?))
}

/// The rule itself, over the latest heartbeat of each collector source.
pub fn evaluate(month: Month, cfg: &BillingConfig, now: DateTime<Utc>, marks: &[SourceMark]) -> Completeness {
    let (start, end) = month.utc_bounds();
    let needed = end + Duration::hours(cfg.grace_hours as i64);
    let retired_before = start - Duration::days(cfg.source_idle_days as i64);
    let active: Vec<&SourceMark> = marks.iter().filter(|m| m.sent_at >= retired_before).collect();
    let lagging: Vec<Lagging> = active
        .iter()
        .filter(|m| !(m.delivered_through >= needed || m.idle && m.sent_at >= needed))
        .map(|m| {
            let reached = if m.idle { m.delivered_through.max(m.sent_at) } else { m.delivered_through };
            Lagging {
                server: m.server.clone(),
                source: m.source.clone(),
                delivered_through: rfc3339(m.delivered_through),
                idle: m.idle,
                last_heartbeat: rfc3339(m.sent_at),
                behind_hours: ((needed - reached).num_seconds() as f64 / 3600.0 * 10.0).round() / 10.0,
            }
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
        let names: Vec<String> = lagging.iter().map(Lagging::name).collect();
        reasons.push(format!(
            "{} of {} collector sources have not delivered up to {}: {}",
            lagging.len(),
            active.len(),
            rfc3339(needed),
            names.join(", ")
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

    fn mark(server: &str, sent: &str, through: &str, idle: bool) -> SourceMark {
        SourceMark {
            server: server.into(),
            source: "sites".into(),
            sent_at: t(sent),
            delivered_through: t(through),
            idle,
        }
    }

    #[test]
    fn complete_when_every_active_collector_source_delivered_past_end_plus_grace() {
        let m: Month = "2026-10".parse().unwrap();
        let cfg = BillingConfig::default();
        let now = t("2026-11-25T00:00:00Z");
        // October ends 2026-10-31T22:00Z; with 2 h grace sources must reach 2026-11-01T00:00Z.
        let marks = vec![
            // Busy: delivered past it.
            mark("web1", "2026-11-24T00:00:00Z", "2026-11-24T00:00:00Z", false),
            // Quiet (only parked sites): newest record in September, but idle after `needed`.
            mark("web2", "2026-11-24T00:00:00Z", "2026-09-03T00:00:00Z", true),
            // Decommissioned before October minus 7 days: retired.
            mark("old", "2026-09-20T00:00:00Z", "2026-09-20T00:00:00Z", true),
        ];
        let c = evaluate(m, &cfg, now, &marks);
        assert!(c.complete, "{c:?}");
        assert_eq!(c.active_sources, 2);

        // A collector that stopped mid-month: its last heartbeat stays behind.
        let mut stopped = marks.clone();
        stopped[1] = mark("web2", "2026-10-15T00:00:00Z", "2026-10-15T00:00:00Z", true);
        let c = evaluate(m, &cfg, now, &stopped);
        assert!(!c.complete);
        assert_eq!(c.lagging.len(), 1);
        assert_eq!(c.lagging[0].name(), "web2/sites");
        assert!(c.reasons[0].contains("1 of 2 collector sources") && c.reasons[0].contains("web2/sites"), "{c:?}");
        assert!(c.lagging[0].describe().contains("(idle)"), "{:?}", c.lagging[0]);

        // Lagging while running (backlog): heartbeats are current but delivered_through is not.
        let mut behind = marks.clone();
        behind[0] = mark("web1", "2026-11-24T00:00:00Z", "2026-10-31T23:59:59Z", false);
        let c = evaluate(m, &cfg, now, &behind);
        assert_eq!(c.lagging.iter().map(Lagging::name).collect::<Vec<_>>(), ["web1/sites"]);
        // Idle, but it said so before `needed`: not enough.
        let mut early = marks.clone();
        early[1] = mark("web2", "2026-10-31T23:00:00Z", "2026-10-31T23:00:00Z", true);
        assert!(!evaluate(m, &cfg, now, &early).complete);

        // Not over yet: incomplete even if every source is ahead of the clock.
        let c = evaluate(m, &cfg, t("2026-10-31T23:00:00Z"), &marks);
        assert!(!c.complete && c.reasons[0].contains("grace period ends at 2026-11-01T00:00:00Z"), "{c:?}");
        // No collectors at all: nothing to wait for.
        assert!(evaluate(m, &cfg, now, &[]).complete);
    }
}
