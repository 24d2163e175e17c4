//! `sitelog investigate ip|site|errors`: one address or network across every customer, one
//! site's attackers and request mix, or one site's errors — for ops in an incident. They read
//! raw request data (addresses, paths): `--reason` is required and recorded in
//! `access_audit` before anything is shown.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use sitelog_processor::diagnosis::health::{self, Window};
use sitelog_processor::security::investigate as inv;
use sitelog_processor::security::query::rfc3339 as t;

use super::security::{audit, parse_duration};
use super::ProcessorOpts;

#[derive(clap::Args, Debug)]
pub struct InvestigateArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// One address or network (ADDR or CIDR) across all customers: requests per site and
    /// status class, login attempts, scenarios hit, first and last seen.
    Ip {
        #[command(flatten)]
        opts: ProcessorOpts,
        /// An IPv4/IPv6 address or a CIDR network.
        address: String,
        /// How far back: `24h`, `7d` (full addresses are kept `client_ip_days`; older
        /// requests are found by network for /24 (/48) or wider queries).
        #[arg(long, default_value = "7d")]
        since: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Why you look (a ticket id): required, recorded in access_audit.
        #[arg(long)]
        reason: String,
    },
    /// One site: its attacking sources and scenarios, request mix, bot and attack shares.
    Site {
        #[command(flatten)]
        opts: ProcessorOpts,
        /// The site host, as stored (lower case, e.g. kahvilaaroma.fi).
        host: String,
        #[arg(long, default_value = "24h")]
        since: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Why you look (a ticket id): required, recorded in access_audit.
        #[arg(long)]
        reason: String,
    },
    /// One site's errors: top failing paths, status and upstream-status breakdown, latency
    /// distribution, first error in the window, and how the other sites of its servers fare.
    Errors {
        #[command(flatten)]
        opts: ProcessorOpts,
        /// The site host, as stored (lower case, e.g. kahvilaaroma.fi).
        #[arg(long)]
        site: String,
        /// How far back from now: `15m`, `1h`, `7d`.
        #[arg(long, default_value = "1h")]
        since: String,
        /// How many failing paths to list.
        #[arg(long, default_value_t = 10)]
        top: u64,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Why you look (a ticket id), recorded in access_audit. Optional here: the command
        /// shows paths, not client addresses (the issue's `investigate errors --site HOST`);
        /// without it the record says "investigate errors".
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    Table,
    Json,
}

pub fn run(a: InvestigateArgs) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    let now = sitelog::clock::now()?;
    let mut out = std::io::stdout().lock();
    match a.action {
        Action::Ip { opts, address, since, format, reason } => {
            let cfg = opts.load()?;
            let client = cfg.clickhouse.client()?;
            let cidr6 = inv::to_cidr6(&address).map_err(anyhow::Error::msg)?;
            let prefix: u32 = cidr6.rsplit('/').next().and_then(|b| b.parse().ok()).unwrap_or(128);
            let (from, to) = (
                (now - chrono::Duration::seconds(parse_duration(&since)?)).timestamp_micros(),
                now.timestamp_micros() + 1,
            );
            let started = std::time::Instant::now();
            let (sites, events) = rt.block_on(async {
                audit(&client, &cfg.clickhouse.user, "investigate ip", &format!("{address} since={since}"), &reason)
                    .await?;
                let sites = inv::ip_sites(&client, &cidr6, prefix, from, to).await.context("reading access_log")?;
                let events = inv::ip_events(&client, &cidr6, from, to).await.context("reading security_events")?;
                anyhow::Ok((sites, events))
            })?;
            match format {
                Format::Json => {
                    writeln!(out, "{}", serde_json::json!({ "address": address, "sites": sites, "events": events }))?
                }
                Format::Table => {
                    let total: u64 = sites.iter().map(|s| s.requests).sum();
                    let first = sites.iter().map(|s| s.first_seen).min();
                    let last = sites.iter().map(|s| s.last_seen).max();
                    writeln!(
                        out,
                        "{address}: {total} requests on {} sites of {} customers, first {} last {} (last {since}; {} ms)",
                        sites.len(),
                        sites.iter().map(|s| &s.customer_id).collect::<std::collections::BTreeSet<_>>().len(),
                        first.map(t).unwrap_or_default(),
                        last.map(t).unwrap_or_default(),
                        started.elapsed().as_millis()
                    )?;
                    writeln!(
                        out,
                        "{:<32} {:<8} {:>8} {:>6} {:>6} {:>6} {:>6} {:>7}  first .. last",
                        "site", "customer", "requests", "2xx", "3xx", "4xx", "5xx", "logins"
                    )?;
                    for s in &sites {
                        writeln!(
                            out,
                            "{:<32} {:<8} {:>8} {:>6} {:>6} {:>6} {:>6} {:>7}  {} .. {}",
                            s.site_host,
                            s.customer_id,
                            s.requests,
                            s.s2xx,
                            s.s3xx,
                            s.s4xx,
                            s.s5xx,
                            s.logins,
                            t(s.first_seen),
                            t(s.last_seen)
                        )?;
                    }
                    writeln!(out, "scenarios hit: {}", events.len())?;
                    for e in &events {
                        writeln!(
                            out,
                            "  {} {} on {} ({}) {} .. {}, {} requests, {}",
                            e.scenario,
                            e.source,
                            e.site_host,
                            e.customer_id,
                            t(e.first_seen_us),
                            t(e.last_seen_us),
                            e.count,
                            e.severity
                        )?;
                    }
                }
            }
        }
        Action::Site { opts, host, since, format, reason } => {
            let cfg = opts.load()?;
            let client = cfg.clickhouse.client()?;
            let host = host.to_ascii_lowercase();
            let (from, to) = (
                (now - chrono::Duration::seconds(parse_duration(&since)?)).timestamp_micros(),
                now.timestamp_micros() + 1,
            );
            let (events, mix) = rt.block_on(async {
                audit(&client, &cfg.clickhouse.user, "investigate site", &format!("{host} since={since}"), &reason)
                    .await?;
                let events = inv::site_events(&client, &host, from, to).await.context("reading security_events")?;
                let mix = inv::site_mix(&client, &host, from, to).await.context("reading access_log")?;
                anyhow::Ok((events, mix))
            })?;
            match format {
                Format::Json => {
                    writeln!(out, "{}", serde_json::json!({ "site_host": host, "mix": mix, "events": events }))?
                }
                Format::Table => {
                    let pct = |n: u64| if mix.requests == 0 { 0.0 } else { 100.0 * n as f64 / mix.requests as f64 };
                    writeln!(
                        out,
                        "{host}: {} requests in the last {since}; bots {:.1} %, from attacking sources {:.1} %",
                        mix.requests,
                        pct(mix.bot_requests),
                        pct(mix.from_event_sources)
                    )?;
                    writeln!(out, "status: 2xx {} 3xx {} 4xx {} 5xx {}", mix.s2xx, mix.s3xx, mix.s4xx, mix.s5xx)?;
                    writeln!(out, "top attacking sources:")?;
                    for e in &events {
                        writeln!(
                            out,
                            "  {:<40} {:<22} {:>7} requests  {} .. {}  {}",
                            e.source,
                            e.scenario,
                            e.count,
                            t(e.first_seen_us),
                            t(e.last_seen_us),
                            e.severity
                        )?;
                    }
                }
            }
        }
        Action::Errors { opts, site, since, top, format, reason } => {
            let cfg = opts.load()?;
            let client = cfg.clickhouse.client()?;
            let host = site.to_ascii_lowercase();
            let w = Window {
                from_us: (now - chrono::Duration::seconds(parse_duration(&since)?)).timestamp_micros(),
                to_us: now.timestamp_micros(),
            };
            let e = rt.block_on(async {
                let reason = reason.unwrap_or_else(|| "investigate errors".into());
                audit(&client, &cfg.clickhouse.user, "investigate errors", &format!("{host} since={since}"), &reason)
                    .await?;
                health::errors(&client, &host, w, cfg.health.objective, top).await.context("reading access_log")
            })?;
            let failing_others: Vec<&health::Health> = e.server_sites.iter().filter(|h| h.failing()).collect();
            match format {
                Format::Json => {
                    let mut v = serde_json::to_value(&e)?;
                    v["from"] = t(w.from_us).into();
                    v["to"] = t(w.to_us).into();
                    v["first_error"] = e.first_error_us.map(t).into();
                    v["last_error"] = e.last_error_us.map(t).into();
                    v["other_sites_failing"] = failing_others.len().into();
                    v["server_wide"] = (!failing_others.is_empty()).into();
                    if let Some(o) = v.as_object_mut() {
                        o.remove("first_error_us");
                        o.remove("last_error_us");
                    }
                    writeln!(out, "{v}")?
                }
                Format::Table => {
                    writeln!(
                        out,
                        "{host} on {} ({}): {} requests {} .. {}, {} 5xx, {} upstream failures; first error {}",
                        if e.servers.is_empty() { "-".to_owned() } else { e.servers.join(", ") },
                        if e.customer_id.is_empty() { "unattributed" } else { &e.customer_id },
                        e.requests,
                        t(w.from_us),
                        t(w.to_us),
                        e.status_5xx,
                        e.upstream_failures,
                        e.first_error_us.map(t).unwrap_or_else(|| "none".into())
                    )?;
                    let list = |v: &[health::StatusCount]| {
                        v.iter().map(|s| format!("{}:{}", s.status, s.requests)).collect::<Vec<_>>().join(" ")
                    };
                    writeln!(out, "status: {}", list(&e.statuses))?;
                    writeln!(out, "upstream status (0 = none): {}", list(&e.upstream_statuses))?;
                    let q = |q: Option<health::Quantiles>| {
                        q.map_or("-".to_owned(), |q| format!("p50 {} p95 {} p99 {} ms", q.p50, q.p95, q.p99))
                    };
                    writeln!(
                        out,
                        "request time: {}; upstream time: {}",
                        q(e.latency.request_time_ms),
                        q(e.latency.upstream_time_ms)
                    )?;
                    writeln!(
                        out,
                        "request time buckets: {}",
                        e.latency
                            .request_time_buckets
                            .iter()
                            .map(|b| format!("{} {}", b.bucket, b.requests))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )?;
                    writeln!(out, "top failing paths:")?;
                    for p in &e.top_failing_paths {
                        writeln!(
                            out,
                            "  {:>7} of {:>7}  (upstream {:>6})  {}",
                            p.errors, p.requests, p.upstream_failures, p.path
                        )?;
                    }
                    writeln!(
                        out,
                        "other sites of {}: {} of {} failing{}",
                        e.servers.join(", "),
                        failing_others.len(),
                        e.server_sites.len(),
                        if failing_others.is_empty() {
                            " — looks like this site alone"
                        } else {
                            " — the server too?"
                        }
                    )?;
                    for h in &e.server_sites {
                        writeln!(
                            out,
                            "  {:<40} {:>8} requests {:>6} 5xx {:>6} upstream  burn {:.1}",
                            h.site_host, h.requests, h.status_5xx, h.upstream_failures, h.assessment.burn_rate
                        )?;
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
