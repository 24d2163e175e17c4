//! The billing run: exact monthly usage per customer and site in Europe/Helsinki months,
//! priced by each plan's metering rule, with completeness (collector heartbeats), closed runs and
//! reconciliation.
//!
//! - `month`: Helsinki months and days as exact UTC bounds (DST included);
//! - `sql`: every statement billing sends (audited against the `sitelog_billing` grants);
//! - `compute`: register billing fields + `usage_daily` → site lines;
//! - `figures`: metering rules, site lines, customer totals, adjustments (pure);
//! - `complete`: collector heartbeats and the grace period → complete or provisional;
//! - `runs`: closed runs (`billing_runs`, `billing_run_lines`), content hash, adjustments;
//! - `verify`: rollup vs raw records, vs source progress, vs a closed run;
//! - `render`: table, CSV (stable header) and JSON.
//!
//! Invariant: billing reads through the billing user (`[billing] user`), whose role can read
//! usage and the register's billing fields only — never client addresses, user agents or
//! paths. A closed month's figures are never rewritten.

pub mod complete;
pub mod compute;
pub mod config;
pub mod figures;
pub mod month;
pub mod render;
pub mod runs;
pub mod sql;
pub mod verify;

use chrono::{DateTime, Utc};
use clickhouse::Client;
use serde::Serialize;

pub use complete::Completeness;
pub use config::BillingConfig;
pub use figures::{Adjustment, CustomerBlock, Measures, Metering, SiteLine};
pub use month::Month;
pub use runs::ClosedRun;
pub use verify::{Mismatch, Verification};

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("'{0}' is not a month: use YYYY-MM (a Europe/Helsinki calendar month)")]
    BadMonth(String),
    #[error("{what}: {source}")]
    ClickHouse { what: &'static str, source: clickhouse::error::Error },
    #[error("clickhouse config: {0}")]
    ClickHouseConfig(#[from] crate::store::ConfigError),
    #[error("{0}")]
    Config(String),
    #[error("billing.password_file {path}: {source}")]
    PasswordFile { path: String, source: std::io::Error },
    #[error("no customer register has been imported yet (`sitelog customers import`)")]
    NoRegister,
    #[error("the closed run of {month} does not match its content hash (stored {stored}, lines hash to {computed}): refusing to use tampered figures")]
    CorruptRun { month: String, stored: String, computed: String },
    #[error("closing {month}: the run was written but its header cannot be read back")]
    CloseLost { month: String },
    #[error(
        "{month} was closed concurrently by another run (content hash {hash}); run the report again to see its figures"
    )]
    ClosedConcurrently { month: String, hash: String },
    #[error("--final closes the whole month; it cannot be combined with --customer")]
    FinalForOneCustomer,
}

pub(crate) fn ch(what: &'static str) -> impl FnOnce(clickhouse::error::Error) -> BillingError {
    move |source| BillingError::ClickHouse { what, source }
}

/// How the month's figures stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every active source delivered past the month's end plus grace; not closed yet.
    Complete,
    /// Sources lag, the month is not over, or a site has no plan: figures may still change.
    Provisional,
    /// A final run froze the figures; these are the stored ones.
    Closed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Complete => "complete",
            Status::Provisional => "provisional",
            Status::Closed => "closed",
        }
    }
}

/// A billing report, in every output format.
#[derive(Debug, Clone, Serialize)]
pub struct BillingReport {
    pub month: Month,
    pub timezone: &'static str,
    /// The month's bounds in UTC, `[from, to)`, and its length.
    pub from_utc: String,
    pub to_utc: String,
    pub hours: i64,
    pub status: Status,
    /// Register version the plan terms come from (the closed run's, for a closed month).
    pub register_version: u64,
    pub generated_at: String,
    pub customer_filter: Option<String>,
    pub completeness: Completeness,
    pub closed: Option<ClosedRun>,
    pub customers: Vec<CustomerBlock>,
    /// Traffic of hosts no site owned at the time: counted, never billed.
    pub unattributed: Measures,
    /// Sites without valid plan terms (they make the month provisional).
    pub problems: Vec<String>,
    /// Open month: adjustments still to bill for earlier closed months (late records).
    /// Closed month: the adjustments its run recorded.
    pub adjustments: Vec<Adjustment>,
    pub verification: Option<Verification>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub month: Month,
    pub customer: Option<String>,
    /// Refuse an incomplete month.
    pub strict: bool,
    pub verify: bool,
    /// Close the month (refused unless complete).
    pub finalize: bool,
    pub closed_by: String,
    pub now: DateTime<Utc>,
    /// Database whose `access_log` TTL is the raw retention in force (`[clickhouse] database`).
    pub database: String,
    /// `[retention] raw_days`, as configured. `--verify` recounts the days inside the raw
    /// retention *in force* (the `access_log` table TTL); this is only compared with it, and
    /// used if the TTL cannot be read.
    pub raw_retention_days: u32,
    /// `[retention] usage_years`: the `progress` check leaves out what the usage TTL removed.
    pub usage_years: u32,
}

/// A report, or a refusal (`--strict`/`--final` on an incomplete month) with the report that
/// explains it.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub report: BillingReport,
    pub refused: Option<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Runs the billing of one month. Reads (and with `finalize` writes) through `client`, which
/// should be the billing user's ([`BillingConfig::client`]).
pub async fn run(client: &Client, cfg: &BillingConfig, o: &RunOptions) -> Result<RunResult, BillingError> {
    if o.finalize && o.customer.is_some() {
        return Err(BillingError::FinalForOneCustomer);
    }
    let customer = o.customer.as_deref();
    let register = compute::load_register(client).await?;
    let completeness = complete::check(client, o.month, cfg, o.now).await?;
    let usage = compute::load_usage(client, o.month, customer).await?;
    let (fresh, problems) = compute::site_lines(&usage, &register, o.month, customer);
    let snapshot = runs::load(client, o.month).await?;
    let (from, to) = o.month.utc_bounds();
    let mut report = BillingReport {
        month: o.month,
        timezone: "Europe/Helsinki",
        from_utc: rfc3339(from),
        to_utc: rfc3339(to),
        hours: o.month.hours(),
        status: Status::Provisional,
        register_version: register.version,
        generated_at: rfc3339(o.now),
        customer_filter: o.customer.clone(),
        completeness,
        closed: None,
        customers: Vec::new(),
        unattributed: if customer.is_none() { usage.unattributed } else { Measures::default() },
        problems,
        adjustments: Vec::new(),
        verification: o.verify.then(Verification::default),
    };
    let mine = |c: &str| customer.is_none_or(|f| f == c);
    let mut refused = None;
    let lines: Vec<SiteLine> = match snapshot {
        Some(snap) => {
            let stored: Vec<SiteLine> = snap.sites.into_iter().filter(|l| mine(&l.customer_id)).collect();
            if let Some(v) = report.verification.as_mut() {
                verify::closed(o.month, &stored, &fresh, v);
            }
            report.status = Status::Closed;
            report.register_version = snap.run.register_version;
            report.closed = Some(snap.run);
            report.problems.clear();
            report.adjustments = snap.adjustments.into_iter().filter(|a| mine(&a.customer_id)).collect();
            stored
        }
        None => {
            let mut pending = Vec::new();
            for closed in runs::closed_before(client, o.month).await? {
                let Some(snap) = runs::load(client, closed).await? else {
                    continue;
                };
                let recorded = runs::recorded_adjustments(client, closed).await?;
                let usage_then = compute::load_usage(client, closed, None).await?;
                let (fresh_then, _) = compute::site_lines(&usage_then, &register, closed, None);
                pending.extend(runs::pending_adjustments(closed, &snap.sites, &recorded, &fresh_then));
            }
            report.adjustments = pending.into_iter().filter(|a| mine(&a.customer_id)).collect();
            let complete = report.completeness.complete && report.problems.is_empty();
            report.status = if complete { Status::Complete } else { Status::Provisional };
            if (o.strict || o.finalize) && !complete {
                let mut why = report.completeness.reasons.clone();
                why.extend(report.problems.iter().cloned());
                refused = Some(why.join("; "));
            } else if o.finalize {
                let run =
                    runs::close(client, o.month, register.version, &fresh, &report.adjustments, &o.closed_by).await?;
                report.status = Status::Closed;
                report.closed = Some(run);
            }
            fresh
        }
    };
    report.customers = figures::group(&lines, &register.customers);
    if let Some(mut v) = report.verification.take() {
        verify::raw_retention(client, &o.database, o.raw_retention_days, &mut v).await?;
        let days = verify::raw_days(o.month, v.raw_retention_days, o.now);
        verify::raw(client, &days, customer, &mut v).await?;
        verify::progress(client, customer, o.usage_years, &mut v).await?;
        report.verification = Some(v);
    }
    Ok(RunResult { report, refused })
}
