//! `sitelog report …`: what ops and the billing run read out of ClickHouse.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use sitelog::sample::truth::{self, DayUsage, UsageTable};

use super::ProcessorOpts;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Totals per customer (requests, bytes, bots, unique visitors), unattributed traffic,
    /// and the loudest security and error signals. With --truth, compares every customer /
    /// site / day with a generated data set's ground truth and exits 1 on any difference.
    Summary {
        #[command(flatten)]
        opts: ProcessorOpts,
        /// `truth/` directory written by `sitelog generate`.
        #[arg(long)]
        truth: Option<PathBuf>,
    },
    /// The month-end billing run: per customer and site the usage billed under the plan's
    /// metering rule, the allowance and the overage, plus requests, bytes and the human/bot
    /// split, for a Europe/Helsinki calendar month. Connects as `[billing] user`.
    ///
    /// Exit codes: 0 report written; 2 refused (--strict or --final on an incomplete month:
    /// the lagging collector sources are listed on stderr); 3 --verify found differences (each printed
    /// as a MISMATCH line on stderr); 1 any other error.
    Billing(BillingArgs),
}

#[derive(clap::Args, Debug)]
struct BillingArgs {
    #[command(flatten)]
    opts: ProcessorOpts,
    /// The month, YYYY-MM (Europe/Helsinki calendar month).
    #[arg(long)]
    month: String,
    /// Only this customer (the month cannot be closed for one customer).
    #[arg(long)]
    customer: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Write the report here (atomically) instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Refuse (exit 2) unless the month is complete: every active collector source (its latest
    /// heartbeat) delivered past the month's end plus `[billing] grace_hours`, or idle after it.
    #[arg(long)]
    strict: bool,
    /// Reconcile the rollup with raw records (days still in raw retention), with the
    /// processor's per-source record counts and, for a closed month, the stored run with a
    /// fresh computation. Differences exit 3.
    #[arg(long)]
    verify: bool,
    /// Close the month: store its figures, register version and content hash in
    /// `billing_runs`. Refused (exit 2) unless the month is complete. A closed month is
    /// never recomputed: re-running prints the stored figures.
    #[arg(long = "final")]
    finalize: bool,
    /// Who closes the month (recorded with a --final run). Default: $USER.
    #[arg(long)]
    closed_by: Option<String>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct UsageRow {
    customer_id: String,
    site_id: String,
    day: String,
    requests: u64,
    bytes_sent: u64,
    bot_requests: u64,
    visitors_ip: u64,
    visitors_ip_ua: u64,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Signal {
    site_host: String,
    what: String,
    n: u64,
}

pub fn run(a: ReportArgs) -> anyhow::Result<ExitCode> {
    match a.action {
        Action::Summary { opts, truth } => summary(opts, truth),
        Action::Billing(b) => billing(b),
    }
}

fn billing(a: BillingArgs) -> anyhow::Result<ExitCode> {
    use sitelog_processor::billing::{self, render, Month, RunOptions};

    let month: Month = a.month.parse()?;
    let cfg = a.opts.load()?;
    let client = cfg.billing.client(&cfg.clickhouse).context("connecting as the billing user")?;
    let options = RunOptions {
        month,
        customer: a.customer.clone(),
        strict: a.strict,
        verify: a.verify,
        finalize: a.finalize,
        closed_by: a.closed_by.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into()),
        now: sitelog::clock::now()?,
        database: cfg.clickhouse.database.clone(),
        raw_retention_days: cfg.retention.raw_days,
        usage_years: cfg.retention.usage_years,
    };
    let rt = super::runtime()?;
    let result = rt.block_on(billing::run(&client, &cfg.billing, &options)).with_context(|| {
        format!("billing {month} in database '{}' at {}", cfg.clickhouse.database, cfg.clickhouse.url)
    })?;
    let report = &result.report;
    if let Some(why) = &result.refused {
        eprintln!("refused: {month} is not complete: {why}");
        for l in &report.completeness.lagging {
            eprintln!("lagging source: {} {}", l.describe(), report.completeness.needed);
        }
        return Ok(ExitCode::from(2));
    }
    let text = match a.format {
        Format::Table => render::table(report),
        Format::Csv => render::csv(report),
        Format::Json => render::json(report),
    };
    match &a.output {
        Some(path) => write_atomically(path, &text)?,
        None => print!("{text}"),
    }
    // The table already shows status, lagging sources and mismatches on stdout.
    let table_on_stdout = a.format == Format::Table && a.output.is_none();
    if report.status == billing::Status::Provisional && !table_on_stdout {
        eprintln!(
            "note: {month} is PROVISIONAL: {}",
            report.completeness.reasons.iter().chain(&report.problems).cloned().collect::<Vec<_>>().join("; ")
        );
        for l in &report.completeness.lagging {
            eprintln!("lagging source: {} {}", l.describe(), report.completeness.needed);
        }
    }
    if let Some(v) = &report.verification {
        if let (Some(note), false) = (&v.raw_retention_note, table_on_stdout) {
            eprintln!("note: {note}");
        }
        if !table_on_stdout {
            for m in &v.mismatches {
                eprintln!("{m}");
            }
            eprintln!("verification: {} differences", v.mismatches.len());
        }
        if !v.mismatches.is_empty() {
            return Ok(ExitCode::from(3));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to a temporary file beside `path` and renames it into place.
fn write_atomically(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

fn summary(opts: ProcessorOpts, truth_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let cfg = opts.load()?;
    let client = cfg.clickhouse.client()?;
    let rt = super::runtime()?;
    let usage: Vec<UsageRow> = rt
        .block_on(
            client
                .query(
                    "SELECT customer_id, site_id, toString(day) AS day, sum(requests) AS requests, \
                     sum(bytes_sent) AS bytes_sent, sum(bot_requests) AS bot_requests, \
                     uniqExactMerge(visitors_ip) AS visitors_ip, uniqExactMerge(visitors_ip_ua) AS visitors_ip_ua \
                     FROM usage_daily GROUP BY customer_id, site_id, day ORDER BY customer_id, site_id, day",
                )
                .fetch_all(),
        )
        .context("reading usage_daily")?;

    let mut per_customer: std::collections::BTreeMap<&str, DayUsage> = Default::default();
    let mut found = UsageTable::new();
    let mut unattributed = 0;
    for u in &usage {
        if u.customer_id.is_empty() {
            unattributed += u.requests;
            continue;
        }
        let d = DayUsage {
            requests: u.requests,
            bytes_sent: u.bytes_sent,
            bot_requests: u.bot_requests,
            visitors_ip: u.visitors_ip,
            visitors_ip_ua: u.visitors_ip_ua,
        };
        let c = per_customer.entry(&u.customer_id).or_default();
        c.requests += d.requests;
        c.bytes_sent += d.bytes_sent;
        c.bot_requests += d.bot_requests;
        c.visitors_ip += d.visitors_ip;
        c.visitors_ip_ua += d.visitors_ip_ua;
        found.insert((u.customer_id.clone(), u.site_id.clone(), u.day.clone()), d);
    }
    println!(
        "{:<8} {:>12} {:>14} {:>7} {:>12} {:>14}",
        "customer", "requests", "bytes", "bots%", "visits_ip", "visits_ip_ua"
    );
    for (c, d) in &per_customer {
        println!(
            "{c:<8} {:>12} {:>14} {:>6.1}% {:>12} {:>14}",
            d.requests,
            d.bytes_sent,
            100.0 * d.bot_requests as f64 / d.requests.max(1) as f64,
            d.visitors_ip,
            d.visitors_ip_ua
        );
    }
    println!("unattributed requests: {unattributed}");

    // Security and diagnosis signals from the raw records still in retention.
    let signals: Vec<Signal> = rt
        .block_on(
            client
                .query(
                    "SELECT site_host, what, n FROM ( \
                       SELECT site_host, concat('wp-login.php POSTs from ', toString(client_net)) AS what, count() AS n \
                       FROM access_log WHERE request_class = 'wp-login' AND method = 'POST' GROUP BY site_host, client_net \
                       UNION ALL SELECT site_host, 'xmlrpc.php requests' AS what, count() AS n \
                       FROM access_log WHERE request_class = 'xmlrpc' GROUP BY site_host \
                       UNION ALL SELECT site_host, concat('5xx in the minute ', toString(toStartOfMinute(toDateTime(ts)))) AS what, count() AS n \
                       FROM access_log WHERE status >= 500 GROUP BY site_host, toStartOfMinute(toDateTime(ts)) \
                     ) ORDER BY n DESC LIMIT 5",
                )
                .fetch_all(),
        )
        .context("reading access_log signals")?;
    if !signals.is_empty() {
        println!("loudest signals in raw records:");
        for s in &signals {
            println!("  {:>6}  {:<32} {}", s.n, s.site_host, s.what);
        }
    }

    if let Some(dir) = truth_dir {
        let expected = truth::read_usage(&dir).with_context(|| format!("reading ground truth in {}", dir.display()))?;
        let summary = truth::read_summary(&dir)?;
        let mut problems = truth::diff(&expected, &found);
        let want_unattr = summary["unattributed_requests"].as_u64().unwrap_or(0);
        if want_unattr != unattributed {
            problems.push(format!("unattributed requests: expected {want_unattr}, found {unattributed}"));
        }
        if problems.is_empty() {
            println!(
                "ground truth: all {} customer/site/day rows and the unattributed count match exactly",
                expected.len()
            );
        } else {
            for p in &problems {
                println!("MISMATCH {p}");
            }
            println!("ground truth: {} mismatches", problems.len());
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}
