//! The loop of `sitelog alerts run`: feed health minutes to the engine in event-time order,
//! store what changed, notify, remember progress.
//!
//! A backfill (`--from/--to`) and a live run evaluate the same minutes the same way: minute by
//! minute, every minute (empty ones too, so incidents resolve when traffic stops failing),
//! with the rules' history loaded first. A live run evaluates a minute once data
//! `lateness_minutes` after it has arrived, and stores its progress after each step; a
//! restart resumes from there with the incidents then open.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clickhouse::Client;

use super::alerts::{Change, Engine, MinuteCounts};
use super::incidents::{self, IncidentError, IncidentRow};
use super::notify::{Notifier, NotifyError};
use super::AlertsConfig;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] IncidentError),
    #[error(transparent)]
    Notify(#[from] NotifyError),
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunReport {
    pub evaluated_minutes: u64,
    /// Opened and resolved, in order (the incident's state at that minute).
    pub transitions: Vec<(Change, IncidentRow)>,
    pub notified: usize,
}

/// Minutes of health read per query (bounds memory on long backfills).
const CHUNK_MINUTES: i64 = 360;

/// Feeds `[from, to)` (minute starts, unix seconds) to the engine; evaluates minutes at or
/// after `eval_from`. Returns the transitions and the final state of every incident touched.
async fn feed(
    client: &Client,
    cfg: &AlertsConfig,
    engine: &mut Engine,
    from: i64,
    to: i64,
    eval_from: i64,
    report: &mut RunReport,
) -> Result<BTreeMap<String, IncidentRow>, RunError> {
    let bucket = cfg.rules.latency_bucket();
    let mut touched: BTreeMap<String, IncidentRow> = BTreeMap::new();
    let mut start = from;
    while start < to {
        let end = (start + CHUNK_MINUTES * 60).min(to);
        let rows = incidents::health_minutes(client, start, end, bucket).await?;
        let mut by_minute: BTreeMap<i64, Vec<MinuteCounts>> = BTreeMap::new();
        for (m, mut r) in rows {
            // www.X and X are one site (their minutes add up in the engine).
            let site = super::site_key(&r.site_host, cfg.strip_www);
            if site.len() != r.site_host.len() {
                r.site_host = site.to_owned();
            }
            by_minute.entry(m).or_default().push(r);
        }
        let mut m = start;
        while m < end {
            let rows = by_minute.remove(&m).unwrap_or_default();
            engine.add_minute(m, &rows);
            if m >= eval_from {
                report.evaluated_minutes += 1;
                for t in engine.evaluate() {
                    let row = IncidentRow::from_incident(&t.incident, m + 60);
                    if t.change != Change::Updated {
                        report.transitions.push((t.change, row.clone()));
                    }
                    touched.insert(row.id.clone(), row);
                }
            }
            m += 60;
        }
        start = end;
    }
    // Open incidents carry counts that grow every minute: store their state at the end.
    if to > eval_from {
        for inc in engine.open_incidents() {
            touched.insert(inc.id.clone(), IncidentRow::from_incident(inc, to));
        }
    }
    Ok(touched)
}

fn floor_minute(t: i64) -> i64 {
    t.div_euclid(60) * 60
}

/// Evaluates `[from, to)` in event time as if live (`objective`: `[health] objective`). Writes the incidents unless `dry_run`;
/// notifies only through `notifier`.
pub async fn backfill(
    client: &Client,
    cfg: &AlertsConfig,
    objective: f64,
    from: i64,
    to: i64,
    dry_run: bool,
    notifier: Option<&Notifier>,
) -> Result<RunReport, RunError> {
    let (from, to) = (floor_minute(from), floor_minute(to + 59));
    let mut engine = Engine::new(cfg.rules.clone(), objective);
    let history = i64::from(cfg.rules.history_minutes()) * 60;
    let mut report = RunReport::default();
    let touched = feed(client, cfg, &mut engine, from - history, to, from, &mut report).await?;
    if !dry_run {
        incidents::write(client, &touched.into_values().collect::<Vec<_>>()).await?;
    }
    if let Some(n) = notifier {
        report.notified = n.deliver(client, &report.transitions).await?;
    }
    Ok(report)
}

/// How a live run runs.
pub struct LiveOptions {
    /// The name progress is kept under.
    pub evaluator: String,
    /// Where the first run of this evaluator begins (default: the newest complete minute);
    /// later runs resume from progress.
    pub start: Option<i64>,
    /// Stop once every minute with complete data is evaluated.
    pub exit_when_caught_up: bool,
    pub stop: Arc<AtomicBool>,
}

/// Evaluates continuously as data arrives, until `opts.stop` (or caught up, see
/// [`LiveOptions`]).
pub async fn live(
    client: &Client,
    cfg: &AlertsConfig,
    objective: f64,
    notifier: Option<&Notifier>,
    opts: &LiveOptions,
) -> Result<RunReport, RunError> {
    let (evaluator, start, stop) = (opts.evaluator.as_str(), opts.start, &opts.stop);
    let lateness = i64::from(cfg.lateness_minutes) * 60;
    let history = i64::from(cfg.rules.history_minutes()) * 60;
    let mut report = RunReport::default();
    let mut engine = Engine::new(cfg.rules.clone(), objective);
    let mut next: Option<i64> = incidents::progress(client, evaluator).await?;
    if let Some(p) = next {
        let open = incidents::open_at(client, p).await?;
        tracing::info!(evaluator, through = %super::notify::rfc3339(p), open = open.len(), "resuming");
        engine.resume(open.iter().map(IncidentRow::to_incident).collect());
        // History: these minutes were evaluated before. The last `group_wait` of them are
        // evaluated again (what they change was stored already and is dropped) so that sites
        // firing but not yet open are pending again as they were.
        let wait = i64::from(cfg.rules.group_wait_minutes) * 60;
        feed(client, cfg, &mut engine, p - history, p, p - wait, &mut RunReport::default()).await?;
    }
    let mut pending: Vec<(Change, IncidentRow)> = Vec::new();
    loop {
        let latest = incidents::latest_minute(client).await?;
        // Minutes before `ready` have complete data (the newest minute + lateness passed them).
        let ready = latest.map(|l| l - lateness + 60);
        match (next, ready) {
            (None, Some(r)) => {
                // First run of this evaluator: from `start` or the present, with history.
                let s = start.map(floor_minute).unwrap_or(r);
                tracing::info!(evaluator, from = %super::notify::rfc3339(s), "first run of this evaluator");
                feed(client, cfg, &mut engine, s - history, s, s, &mut report).await?;
                incidents::set_progress(client, evaluator, s).await?;
                next = Some(s);
            }
            (Some(n), Some(r)) if r > n => {
                let r = r.min(n + i64::from(cfg.max_step_minutes) * 60);
                let mut step = RunReport::default();
                let touched = feed(client, cfg, &mut engine, n, r, n, &mut step).await?;
                incidents::write(client, &touched.into_values().collect::<Vec<_>>()).await?;
                for (c, row) in &step.transitions {
                    tracing::info!(incident = %row.id, kind = %row.kind, site = %row.site_host, server = %row.server,
                        "incident {}", super::notify::transition_name(*c));
                }
                pending.extend(step.transitions.iter().cloned());
                report.evaluated_minutes += step.evaluated_minutes;
                report.transitions.extend(step.transitions);
                if let Some(nf) = notifier {
                    match nf.deliver(client, &pending).await {
                        Ok(sent) => {
                            report.notified += sent;
                            pending.clear();
                        }
                        // Kept for the next step; the store knows what was delivered.
                        Err(e) => tracing::warn!(error = %e, "notifications pending"),
                    }
                }
                incidents::set_progress(client, evaluator, r).await?;
                metrics::gauge!("sitelog_alerts_evaluated_through_seconds").set(r as f64);
                metrics::gauge!("sitelog_alerts_open_incidents").set(engine.open_incidents().count() as f64);
                next = Some(r);
                continue; // more may be ready already
            }
            _ => {
                if opts.exit_when_caught_up && pending.is_empty() {
                    return Ok(report);
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(report);
        }
        let mut waited = 0;
        while waited < cfg.poll_interval_ms && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            waited += 100;
        }
    }
}
