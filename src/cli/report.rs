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
    let Action::Summary { opts, truth: truth_dir } = a.action;
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
        let d = DayUsage { requests: u.requests, bytes_sent: u.bytes_sent, bot_requests: u.bot_requests, visitors_ip: u.visitors_ip, visitors_ip_ua: u.visitors_ip_ua };
        let c = per_customer.entry(&u.customer_id).or_default();
        c.requests += d.requests;
        c.bytes_sent += d.bytes_sent;
        c.bot_requests += d.bot_requests;
        c.visitors_ip += d.visitors_ip;
        c.visitors_ip_ua += d.visitors_ip_ua;
        found.insert((u.customer_id.clone(), u.site_id.clone(), u.day.clone()), d);
    }
    println!("{:<8} {:>12} {:>14} {:>7} {:>12} {:>14}", "customer", "requests", "bytes", "bots%", "visits_ip", "visits_ip_ua");
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
            println!("ground truth: all {} customer/site/day rows and the unattributed count match exactly", expected.len());
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
