//! Closed billing runs: a final run freezes the month's site and customer figures, the
//! register version and a content hash in `billing_runs` / `billing_run_lines`. A closed month
//! is never rewritten: records that arrive later show up as adjustments — the difference
//! between a fresh computation and the closed figures plus the adjustments already recorded —
//! which the next final run records as its own lines.
//!
//! Write order (as for register imports): lines first, header last. The header is the commit
//! marker; lines whose hash has no header are leftovers of a crash and are ignored. The first
//! committed header of a month wins.

use std::collections::BTreeMap;

use clickhouse::Client;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::figures::{customer_total, Adjustment, Metering, SiteLine};
use super::month::Month;
use super::{ch, sql, BillingError};

#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
struct HeaderRow {
    month: String,
    closed_at: i64,
    closed_by: String,
    register_version: u64,
    from_utc: u32,
    to_utc: u32,
    content_hash: String,
    site_lines: u32,
    adjustment_lines: u32,
    requests: u64,
    bytes_sent: u64,
}

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
struct HeaderRead {
    month: String,
    content_hash: String,
    closed_at_ms: i64,
    closed_by: String,
    register_version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
struct LineRow {
    month: String,
    content_hash: String,
    kind: String,
    applies_to: String,
    customer_id: String,
    site_id: String,
    plan: String,
    metering: String,
    included: u64,
    billed_usage: i64,
    overage: i64,
    requests: i64,
    bytes_sent: i64,
    bot_requests: i64,
    visits_ip: i64,
    visits_ip_ua: i64,
    /// Milliseconds since the epoch (`DateTime64(3)`); not part of the content hash.
    #[serde(rename = "closed_at")]
    closed_at_ms: i64,
}

/// The header of a closed month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClosedRun {
    pub month: String,
    /// RFC 3339 UTC.
    pub closed_at: String,
    pub closed_by: String,
    pub register_version: u64,
    pub content_hash: String,
}

/// A closed month's frozen figures.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub run: ClosedRun,
    pub sites: Vec<SiteLine>,
    /// Adjustments to earlier months recorded by this run.
    pub adjustments: Vec<Adjustment>,
}

fn metering_of(s: &str) -> Option<Metering> {
    s.parse().ok()
}

fn site_row(month: &str, l: &SiteLine, kind: &str) -> LineRow {
    LineRow {
        month: month.into(),
        content_hash: String::new(),
        kind: kind.into(),
        applies_to: month.into(),
        customer_id: l.customer_id.clone(),
        site_id: l.site_id.clone(),
        plan: l.plan.clone(),
        metering: l.metering.map(|m| m.as_str().to_owned()).unwrap_or_default(),
        included: l.included,
        billed_usage: l.billed_usage as i64,
        overage: l.overage as i64,
        requests: l.measures.requests as i64,
        bytes_sent: l.measures.bytes_sent as i64,
        bot_requests: l.measures.bot_requests as i64,
        visits_ip: l.measures.visits_ip as i64,
        visits_ip_ua: l.measures.visits_ip_ua as i64,
        closed_at_ms: 0,
    }
}

fn customer_rows(month: &str, sites: &[SiteLine]) -> Vec<LineRow> {
    let mut by: BTreeMap<&str, Vec<SiteLine>> = BTreeMap::new();
    for s in sites {
        by.entry(&s.customer_id).or_default().push(s.clone());
    }
    by.into_iter()
        .map(|(c, lines)| {
            let t = customer_total(&lines);
            LineRow {
                month: month.into(),
                content_hash: String::new(),
                kind: "customer".into(),
                applies_to: month.into(),
                customer_id: c.into(),
                site_id: String::new(),
                plan: String::new(),
                metering: t.metering,
                included: t.included.unwrap_or(0),
                billed_usage: t.billed_usage.unwrap_or(0) as i64,
                overage: t.overage.unwrap_or(0) as i64,
                requests: t.measures.requests as i64,
                bytes_sent: t.measures.bytes_sent as i64,
                bot_requests: t.measures.bot_requests as i64,
                visits_ip: t.measures.visits_ip as i64,
                visits_ip_ua: t.measures.visits_ip_ua as i64,
                closed_at_ms: 0,
            }
        })
        .collect()
}

fn adjustment_row(month: &str, a: &Adjustment) -> LineRow {
    LineRow {
        month: month.into(),
        content_hash: String::new(),
        kind: "adjustment".into(),
        applies_to: a.applies_to.clone(),
        customer_id: a.customer_id.clone(),
        site_id: a.site_id.clone(),
        plan: a.plan.clone(),
        metering: a.metering.map(|m| m.as_str().to_owned()).unwrap_or_default(),
        included: a.included,
        billed_usage: a.billed_usage,
        overage: a.overage,
        requests: a.requests,
        bytes_sent: a.bytes_sent,
        bot_requests: a.bot_requests,
        visits_ip: a.visits_ip,
        visits_ip_ua: a.visits_ip_ua,
        closed_at_ms: 0,
    }
}

fn line_of(r: &LineRow) -> SiteLine {
    let u = |v: i64| v.max(0) as u64;
    SiteLine {
        customer_id: r.customer_id.clone(),
        site_id: r.site_id.clone(),
        plan: r.plan.clone(),
        metering: metering_of(&r.metering),
        included: r.included,
        billed_usage: u(r.billed_usage),
        overage: u(r.overage),
        measures: super::figures::Measures::new(
            u(r.requests),
            u(r.bytes_sent),
            u(r.bot_requests),
            u(r.visits_ip),
            u(r.visits_ip_ua),
        ),
    }
}

fn adjustment_of(r: &LineRow) -> Adjustment {
    Adjustment {
        applies_to: r.applies_to.clone(),
        customer_id: r.customer_id.clone(),
        site_id: r.site_id.clone(),
        plan: r.plan.clone(),
        metering: metering_of(&r.metering),
        included: r.included,
        billed_usage: r.billed_usage,
        overage: r.overage,
        requests: r.requests,
        bytes_sent: r.bytes_sent,
        human_requests: r.requests - r.bot_requests,
        bot_requests: r.bot_requests,
        visits_ip: r.visits_ip,
        visits_ip_ua: r.visits_ip_ua,
    }
}

/// SHA-256 over a canonical text of the run: format version, month, register version and
/// every line (sorted), so the same figures always give the same hash and any edit shows.
fn content_hash(month: &str, register_version: u64, rows: &[LineRow]) -> String {
    let mut sorted: Vec<&LineRow> = rows.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.kind, &a.applies_to, &a.customer_id, &a.site_id).cmp(&(&b.kind, &b.applies_to, &b.customer_id, &b.site_id))
    });
    let mut h = Sha256::new();
    h.update(format!("sitelog billing run v1\nmonth={month}\nregister_version={register_version}\n"));
    for r in sorted {
        h.update(format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.kind,
            r.applies_to,
            r.customer_id,
            r.site_id,
            r.plan,
            r.metering,
            r.included,
            r.billed_usage,
            r.overage,
            r.requests,
            r.bytes_sent,
            r.bot_requests,
            r.visits_ip,
            r.visits_ip_ua
        ));
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn closed_run(h: &HeaderRead) -> ClosedRun {
    ClosedRun {
        month: h.month.clone(),
        closed_at: chrono::DateTime::from_timestamp_millis(h.closed_at_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        closed_by: h.closed_by.clone(),
        register_version: h.register_version,
        content_hash: h.content_hash.clone(),
    }
}

/// The committed run of every closed month (the first header per month).
async fn headers(client: &Client) -> Result<BTreeMap<String, HeaderRead>, BillingError> {
    let rows: Vec<HeaderRead> =
        client.query(sql::RUN_HEADERS.sql).fetch_all().await.map_err(ch("reading billing_runs"))?;
    let mut out = BTreeMap::new();
    for r in rows {
        out.entry(r.month.clone()).or_insert(r);
    }
    Ok(out)
}

/// The closed figures of `month`, if it was closed. Their hash is checked.
pub async fn load(client: &Client, month: Month) -> Result<Option<Snapshot>, BillingError> {
    let hs = headers(client).await?;
    let Some(h) = hs.get(&month.to_string()) else {
        return Ok(None);
    };
    let rows: Vec<LineRow> = client
        .query(sql::RUN_LINES.sql)
        .bind(&h.month)
        .bind(&h.content_hash)
        .fetch_all()
        .await
        .map_err(ch("reading billing_run_lines"))?;
    let unhashed: Vec<LineRow> =
        rows.iter().map(|r| LineRow { content_hash: String::new(), closed_at_ms: 0, ..r.clone() }).collect();
    let computed = content_hash(&h.month, h.register_version, &unhashed);
    if computed != h.content_hash {
        return Err(BillingError::CorruptRun { month: h.month.clone(), stored: h.content_hash.clone(), computed });
    }
    Ok(Some(Snapshot {
        run: closed_run(h),
        sites: rows.iter().filter(|r| r.kind == "site").map(line_of).collect(),
        adjustments: rows.iter().filter(|r| r.kind == "adjustment").map(adjustment_of).collect(),
    }))
}

/// Closed months before `month`, oldest first.
pub async fn closed_before(client: &Client, month: Month) -> Result<Vec<Month>, BillingError> {
    let hs = headers(client).await?;
    Ok(hs.keys().filter_map(|m| m.parse::<Month>().ok()).filter(|m| *m < month).collect())
}

/// Adjustments to `applies_to` recorded by committed runs.
pub async fn recorded_adjustments(client: &Client, applies_to: Month) -> Result<Vec<Adjustment>, BillingError> {
    let hs = headers(client).await?;
    let rows: Vec<LineRow> = client
        .query(sql::ADJUSTMENT_LINES.sql)
        .bind(applies_to.to_string())
        .fetch_all()
        .await
        .map_err(ch("reading billing_run_lines"))?;
    Ok(rows
        .iter()
        .filter(|r| hs.get(&r.month).is_some_and(|h| h.content_hash == r.content_hash))
        .map(adjustment_of)
        .collect())
}

/// What is still to be billed for a closed month: `fresh` minus the closed site lines and the
/// adjustments already recorded. Sites are matched by (customer, site); the closed month's
/// plan terms apply to late usage too.
pub fn pending_adjustments(
    applies_to: Month,
    closed: &[SiteLine],
    recorded: &[Adjustment],
    fresh: &[SiteLine],
) -> Vec<Adjustment> {
    let key = |c: &str, s: &str| (c.to_owned(), s.to_owned());
    let mut billed: BTreeMap<(String, String), SiteLine> =
        closed.iter().map(|l| (key(&l.customer_id, &l.site_id), l.clone())).collect();
    for a in recorded {
        let line = billed.entry(key(&a.customer_id, &a.site_id)).or_insert_with(|| {
            SiteLine::new(&a.customer_id, &a.site_id, &a.plan, a.metering, a.included, Default::default())
        });
        a.apply(line);
    }
    let mut out = Vec::new();
    for f in fresh {
        let before = billed.remove(&key(&f.customer_id, &f.site_id));
        let before = before.unwrap_or_else(|| {
            SiteLine::new(&f.customer_id, &f.site_id, &f.plan, f.metering, f.included, Default::default())
        });
        // Late usage is billed on the terms of the closed month.
        let now = SiteLine::new(&f.customer_id, &f.site_id, &before.plan, before.metering, before.included, f.measures);
        out.extend(Adjustment::between(&applies_to.to_string(), &before, &now));
    }
    for (_, before) in billed {
        let now = SiteLine::new(
            &before.customer_id,
            &before.site_id,
            &before.plan,
            before.metering,
            before.included,
            Default::default(),
        );
        out.extend(Adjustment::between(&applies_to.to_string(), &before, &now));
    }
    out
}

/// Freezes `month`: its site lines, customer totals and the pending adjustments to earlier
/// months. Returns the committed run (an identical concurrent close is deduplicated).
pub async fn close(
    client: &Client,
    month: Month,
    register_version: u64,
    sites: &[SiteLine],
    adjustments: &[Adjustment],
    closed_by: &str,
) -> Result<ClosedRun, BillingError> {
    let m = month.to_string();
    let mut rows: Vec<LineRow> = sites.iter().map(|l| site_row(&m, l, "site")).collect();
    rows.extend(customer_rows(&m, sites));
    rows.extend(adjustments.iter().map(|a| adjustment_row(&m, a)));
    let hash = content_hash(&m, register_version, &rows);
    let closed_at = chrono::Utc::now().timestamp_millis();
    // Same figures → same token → a repeated or concurrent close inserts nothing new.
    let token = format!("billing/{m}/{hash}");
    let dedup = client
        .clone()
        .with_setting("insert_deduplicate", "1")
        .with_setting("insert_deduplication_token", token.as_str());
    let mut ins = dedup.insert::<LineRow>("billing_run_lines").await.map_err(ch("writing billing_run_lines"))?;
    for r in &rows {
        ins.write(&LineRow { content_hash: hash.clone(), closed_at_ms: closed_at, ..r.clone() })
            .await
            .map_err(ch("writing billing_run_lines"))?;
    }
    ins.end().await.map_err(ch("writing billing_run_lines"))?;

    let (from, to) = month.utc_bounds();
    let header = HeaderRow {
        month: m.clone(),
        closed_at,
        closed_by: closed_by.into(),
        register_version,
        from_utc: from.timestamp() as u32,
        to_utc: to.timestamp() as u32,
        content_hash: hash.clone(),
        site_lines: sites.len() as u32,
        adjustment_lines: adjustments.len() as u32,
        requests: sites.iter().map(|s| s.measures.requests).sum(),
        bytes_sent: sites.iter().map(|s| s.measures.bytes_sent).sum(),
    };
    let mut ins = dedup.insert::<HeaderRow>("billing_runs").await.map_err(ch("writing billing_runs"))?;
    ins.write(&header).await.map_err(ch("writing billing_runs"))?;
    ins.end().await.map_err(ch("writing billing_runs"))?;
    let hs = headers(client).await?;
    let committed = hs.get(&m).map(closed_run).ok_or_else(|| BillingError::CloseLost { month: m.clone() })?;
    if committed.content_hash != hash {
        // Another run closed the month first, with other figures: it wins, ours is ignored.
        return Err(BillingError::ClosedConcurrently { month: m, hash: committed.content_hash });
    }
    Ok(committed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::figures::Measures;

    fn line(c: &str, s: &str, requests: u64) -> SiteLine {
        SiteLine::new(c, s, "start", Some(Metering::Requests), 100, Measures::new(requests, requests * 10, 0, 1, 1))
    }

    #[test]
    fn hash_is_stable_and_order_independent() {
        let a = site_row("2026-10", &line("C1", "S1", 5), "site");
        let b = site_row("2026-10", &line("C2", "S2", 7), "site");
        let h1 = content_hash("2026-10", 3, &[a.clone(), b.clone()]);
        assert_eq!(h1, content_hash("2026-10", 3, &[b.clone(), a.clone()]));
        assert_ne!(h1, content_hash("2026-10", 4, &[a.clone(), b.clone()]));
        let mut b2 = b;
        b2.requests += 1;
        assert_ne!(h1, content_hash("2026-10", 3, &[a, b2]));
        assert_eq!(h1.len(), 64);
    }

    #[test]
    fn pending_adjustments_subtract_what_was_already_billed() {
        let closed = vec![line("C1", "S1", 90), line("C2", "S2", 10)];
        // 40 late records for S1, a site with no usage at closing gets 3.
        let fresh = vec![line("C1", "S1", 130), line("C2", "S2", 10), line("C3", "S3", 3)];
        let m: Month = "2026-10".parse().unwrap();
        let first = pending_adjustments(m, &closed, &[], &fresh);
        assert_eq!(first.len(), 2);
        assert_eq!((first[0].site_id.as_str(), first[0].requests, first[0].overage), ("S1", 40, 30));
        assert_eq!((first[1].site_id.as_str(), first[1].requests), ("S3", 3));
        // Once recorded, nothing is pending until more records arrive.
        assert!(pending_adjustments(m, &closed, &first, &fresh).is_empty());
        let later = vec![line("C1", "S1", 131), line("C2", "S2", 10), line("C3", "S3", 3)];
        let again = pending_adjustments(m, &closed, &first, &later);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].requests, again[0].overage), (1, 1));
    }
}
