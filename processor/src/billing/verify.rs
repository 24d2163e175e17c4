//! `--verify`: reconcile the usage rollup with what it was built from.
//!
//! 1. **raw**: per customer, site and Helsinki day still fully inside the raw retention,
//!    `usage_daily` requests, bytes and bot requests against a recount of `access_log`. (Unique
//!    visitors cannot be recounted: that needs client addresses, which billing never reads.)
//! 2. **progress**: per site host, requests in `usage_daily` against the records the
//!    processor acknowledged per source (`source_progress.records`, latest row per file),
//!    both as far back as the usage TTL keeps them.
//! 3. **closed**: a closed month's stored lines against a fresh computation.
//!
//! Every difference is one [`Mismatch`]; the CLI prints them and exits non-zero.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Days, NaiveDate, Utc};
use clickhouse::Client;
use serde::{Deserialize, Serialize};

use super::figures::SiteLine;
use super::month::{day_utc_bounds, Month};
use super::{ch, sql, BillingError};
use crate::attribute::normalize_host;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// `raw`, `progress` or `closed`.
    pub check: &'static str,
    /// What was compared: `C0001 S0001 2026-11-02` (raw), `host example.fi` (progress),
    /// `2026-10 C0001 S0001` (closed).
    pub place: String,
    pub field: &'static str,
    pub expected: i128,
    pub expected_from: &'static str,
    pub found: i128,
    pub found_from: &'static str,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MISMATCH {} {} {}: expected {} ({}), found {} ({})",
            self.check, self.place, self.field, self.expected, self.expected_from, self.found, self.found_from
        )
    }
}

/// What a verification covered, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// The raw retention the `raw` check used, in days, and where it was read.
    pub raw_retention_days: u32,
    /// `access_log TTL` (the retention in force) or `[retention] raw_days` (fallback).
    pub raw_retention_from: &'static str,
    /// Set when the retention in force and the config disagree, or the TTL could not be read.
    pub raw_retention_note: Option<String>,
    /// Helsinki days recounted from raw records (first..=last), if any.
    pub raw_days: Option<(String, String)>,
    pub raw_rows_compared: usize,
    pub hosts_compared: usize,
    pub closed_lines_compared: usize,
    pub mismatches: Vec<Mismatch>,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct DailyRow {
    customer_id: String,
    site_id: String,
    d: String,
    requests: u64,
    bytes_sent: u64,
    bot_requests: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct ProgressRow {
    site_host: String,
    records: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct HostRow {
    site_host: String,
    owners: Vec<String>,
    requests: u64,
}

/// Sets the raw retention the `raw` check uses: the `access_log` table TTL in force in
/// `database` (what ClickHouse actually keeps), not the config's `raw_days`, which may not
/// have been migrated yet; a difference is noted. Falls back to `configured` (noted) when the
/// TTL is missing or not of the form the migrations write.
pub async fn raw_retention(
    client: &Client,
    database: &str,
    configured: u32,
    out: &mut Verification,
) -> Result<(), BillingError> {
    let ddl: Vec<String> = client
        .query(sql::RAW_TTL.sql)
        .bind(database)
        .fetch_all()
        .await
        .map_err(ch("reading the access_log TTL from system.tables"))?;
    let ttl = ddl.first().and_then(|q| sitelog_schema::ttl::in_force(q).table);
    match ttl.as_deref().and_then(|e| sitelog_schema::ttl::days_after(e, "ts")) {
        Some(days) => {
            out.raw_retention_days = days;
            out.raw_retention_from = "access_log TTL";
            if days != configured {
                out.raw_retention_note = Some(format!(
                    "raw retention in force is {days} days (access_log TTL), the config says raw_days = {configured}; \
                     verified with the retention in force (`sitelog schema migrate` applies the config)"
                ));
            }
        }
        None => {
            out.raw_retention_days = configured;
            out.raw_retention_from = "[retention] raw_days";
            out.raw_retention_note = Some(format!(
                "cannot read the raw retention in force (access_log TTL: {}); verified with raw_days = {configured} \
                 from the config",
                ttl.as_deref().unwrap_or("none")
            ));
        }
    }
    Ok(())
}

/// The days of `month` whose every record is still in raw retention: the day ended before
/// `now`, and began at least `raw_days - 1` days ago (one day of margin for TTL merges).
pub fn raw_days(month: Month, raw_retention_days: u32, now: DateTime<Utc>) -> Vec<NaiveDate> {
    let oldest = now - chrono::Duration::days(raw_retention_days.saturating_sub(1) as i64);
    month
        .days()
        .filter(|d| {
            let (a, b) = day_utc_bounds(*d);
            a >= oldest && b <= now
        })
        .collect()
}

type DayKey = (String, String, String);

async fn daily(
    query: clickhouse::query::Query,
    what: &'static str,
) -> Result<BTreeMap<DayKey, [u64; 3]>, BillingError> {
    let rows: Vec<DailyRow> = query.fetch_all().await.map_err(ch(what))?;
    Ok(rows
        .into_iter()
        .map(|r| ((r.customer_id, r.site_id, r.d), [r.requests, r.bytes_sent, r.bot_requests]))
        .collect())
}

/// Check 1: rollup against raw records for `days` (consecutive Helsinki days).
pub async fn raw(
    client: &Client,
    days: &[NaiveDate],
    customer: Option<&str>,
    out: &mut Verification,
) -> Result<(), BillingError> {
    let (Some(first), Some(last)) = (days.first(), days.last()) else {
        return Ok(());
    };
    let (from, _) = day_utc_bounds(*first);
    let (_, to) = day_utc_bounds(*last);
    let c = customer.unwrap_or("");
    let raw_q =
        client.query(sql::RAW_DAILY.sql).bind(from.timestamp_micros()).bind(to.timestamp_micros()).bind(c).bind(c);
    let raw = daily(raw_q, "recounting access_log").await?;
    let next = *last + Days::new(1);
    let rollup_q = client.query(sql::USAGE_DAILY.sql).bind(first.to_string()).bind(next.to_string()).bind(c).bind(c);
    let rollup = daily(rollup_q, "reading usage_daily per day").await?;
    out.raw_days = Some((first.to_string(), last.to_string()));
    let keys: BTreeSet<&DayKey> = raw.keys().chain(rollup.keys()).collect();
    out.raw_rows_compared = keys.len();
    for k in keys {
        let e = raw.get(k).copied().unwrap_or_default();
        let f = rollup.get(k).copied().unwrap_or_default();
        for (i, field) in ["requests", "bytes_sent", "bot_requests"].into_iter().enumerate() {
            if e[i] != f[i] {
                let customer = if k.0.is_empty() { "(unattributed)" } else { &k.0 };
                let site = if k.1.is_empty() { "-" } else { &k.1 };
                out.mismatches.push(Mismatch {
                    check: "raw",
                    place: format!("{customer} {site} {}", k.2),
                    field,
                    expected: e[i] as i128,
                    expected_from: "access_log",
                    found: f[i] as i128,
                    found_from: "usage_daily",
                });
            }
        }
    }
    Ok(())
}

/// Check 2: rollup requests per host against the processor's per-source record counts,
/// leaving out what the usage TTL (`usage_years`) has removed or is about to: a stream whose
/// newest record is older than the horizon, and the rollup's days before it. (A single file
/// whose records straddle the horizon would show as a difference; files rotate long before.)
/// Hosts are compared in the processor's normalised form.
pub async fn progress(
    client: &Client,
    customer: Option<&str>,
    usage_years: u32,
    out: &mut Verification,
) -> Result<(), BillingError> {
    let delivered: Vec<ProgressRow> = client
        .query(sql::PROGRESS_RECORDS.sql)
        .bind(usage_years)
        .fetch_all()
        .await
        .map_err(ch("reading source_progress"))?;
    let stored: Vec<HostRow> = client
        .query(sql::USAGE_BY_HOST.sql)
        .bind(usage_years)
        .fetch_all()
        .await
        .map_err(ch("reading usage_daily per host"))?;
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for p in delivered {
        let host = normalize_host(&p.site_host).unwrap_or_else(|| p.site_host.to_ascii_lowercase());
        *expected.entry(host).or_default() += p.records;
    }
    let owners: BTreeMap<&str, &[String]> =
        stored.iter().map(|h| (h.site_host.as_str(), h.owners.as_slice())).collect();
    let found: BTreeMap<&str, u64> = stored.iter().map(|h| (h.site_host.as_str(), h.requests)).collect();
    let hosts: BTreeSet<&str> = expected.keys().map(String::as_str).chain(found.keys().copied()).collect();
    for host in hosts {
        let own = owners.get(host).copied().unwrap_or_default();
        if let Some(c) = customer {
            if !own.iter().any(|o| o.split('/').next() == Some(c)) {
                continue;
            }
        }
        out.hosts_compared += 1;
        let e = expected.get(host).copied().unwrap_or(0);
        let f = found.get(host).copied().unwrap_or(0);
        if e != f {
            let who = if own.is_empty() { String::new() } else { format!(" ({})", own.join(", ")) };
            out.mismatches.push(Mismatch {
                check: "progress",
                place: format!("host {host}{who}"),
                field: "requests",
                expected: e as i128,
                expected_from: "source_progress",
                found: f as i128,
                found_from: "usage_daily",
            });
        }
    }
    Ok(())
}

/// Check 3: a closed month's stored site lines against a fresh computation.
pub fn closed(month: Month, stored: &[SiteLine], fresh: &[SiteLine], out: &mut Verification) {
    let key = |l: &SiteLine| (l.customer_id.clone(), l.site_id.clone());
    let s: BTreeMap<_, _> = stored.iter().map(|l| (key(l), l)).collect();
    let f: BTreeMap<_, _> = fresh.iter().map(|l| (key(l), l)).collect();
    let keys: BTreeSet<_> = s.keys().chain(f.keys()).cloned().collect();
    out.closed_lines_compared = keys.len();
    let zero = SiteLine::new("", "", "", None, 0, Default::default());
    for k in keys {
        let a = s.get(&k).copied().unwrap_or(&zero);
        let b = f.get(&k).copied().unwrap_or(&zero);
        let fields: [(&'static str, u64, u64); 5] = [
            ("requests", a.measures.requests, b.measures.requests),
            ("bytes_sent", a.measures.bytes_sent, b.measures.bytes_sent),
            ("bot_requests", a.measures.bot_requests, b.measures.bot_requests),
            ("visits_ip", a.measures.visits_ip, b.measures.visits_ip),
            ("visits_ip_ua", a.measures.visits_ip_ua, b.measures.visits_ip_ua),
        ];
        for (field, x, y) in fields {
            if x != y {
                out.mismatches.push(Mismatch {
                    check: "closed",
                    place: format!("{month} {} {}", k.0, k.1),
                    field,
                    expected: x as i128,
                    expected_from: "closed run",
                    found: y as i128,
                    found_from: "fresh computation",
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_days_are_the_fully_retained_past_days() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T09:30:00Z").unwrap().with_timezone(&Utc);
        let oct: Month = "2026-10".parse().unwrap();
        let days = raw_days(oct, 30, now);
        // 29 days back is 2026-10-27T09:30Z; Helsinki 27 October starts 2026-10-26T22:00Z.
        assert_eq!(days.first().unwrap().to_string(), "2026-10-28");
        assert_eq!(days.last().unwrap().to_string(), "2026-10-31");
        let nov: Month = "2026-11".parse().unwrap();
        let days = raw_days(nov, 30, now);
        assert_eq!(
            (days.first().unwrap().to_string(), days.last().unwrap().to_string()),
            ("2026-11-01".into(), "2026-11-24".into())
        );
        let m = Mismatch {
            check: "raw",
            place: "C1 S1 2026-11-02".into(),
            field: "requests",
            expected: 5,
            expected_from: "access_log",
            found: 3,
            found_from: "usage_daily",
        };
        assert_eq!(
            m.to_string(),
            "MISMATCH raw C1 S1 2026-11-02 requests: expected 5 (access_log), found 3 (usage_daily)"
        );
    }
}
