//! `sitelog investigate ip|site`: one address or network across every customer, or one
//! site's attackers and request mix — for ops in an incident. Both reveal client addresses:
//! `--reason` is required and recorded in `access_audit` before anything is shown.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
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
    }
    Ok(ExitCode::SUCCESS)
}
