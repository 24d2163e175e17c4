//! `sitelog health`: the worst sites and web servers in the window ending now (the clock:
//! `SITELOG_NOW` or the system clock), from the `health_minute` rollup. No client data is
//! read, so no `--reason` is asked for.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use sitelog_processor::diagnosis::health::{self, Filter, Health, Window};
use sitelog_processor::security::query::rfc3339 as t;

use super::security::parse_duration;
use super::ProcessorOpts;

#[derive(clap::Args, Debug)]
pub struct HealthArgs {
    #[command(flatten)]
    opts: ProcessorOpts,
    /// Only this site host (lower case, as stored).
    #[arg(long)]
    site: Option<String>,
    /// Only this web server (the records' `server`).
    #[arg(long)]
    server: Option<String>,
    /// How far back from now: `15m`, `1h`, `7d` (whole minutes).
    #[arg(long, default_value = "1h")]
    since: String,
    /// At most this many sites (worst first); servers are all listed.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    Table,
    Json,
}

pub fn run(a: HealthArgs) -> anyhow::Result<ExitCode> {
    let cfg = a.opts.load()?;
    let client = cfg.clickhouse.client()?;
    let now = sitelog::clock::now()?;
    let from = now - chrono::Duration::seconds(parse_duration(&a.since)?);
    let w = Window { from_us: from.timestamp_micros(), to_us: now.timestamp_micros() };
    let objective = cfg.health.objective;
    let filter = Filter { site: a.site.clone(), server: a.server.clone() };
    let rt = super::runtime()?;
    let (mut sites, servers) = rt.block_on(async {
        let sites = health::sites(&client, w, &filter, objective).await.context("reading health_minute")?;
        // With --site: the servers that served it (all of each server); with --server: that one.
        let wanted: Vec<String> = match (&a.server, &a.site) {
            (Some(s), _) => vec![s.clone()],
            (None, Some(_)) => sites.iter().map(|h| h.server.clone()).collect(),
            (None, None) => Vec::new(),
        };
        let servers = if a.site.is_some() && wanted.is_empty() {
            Vec::new()
        } else {
            health::servers(&client, w, &wanted, objective).await.context("reading health_minute")?
        };
        anyhow::Ok((sites, servers))
    })?;
    let total_sites = sites.len();
    sites.truncate(a.limit);
    let mut out = std::io::stdout().lock();
    match a.format {
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::json!({
                "from": t(w.from_us),
                "to": t(w.to_us),
                "objective": objective,
                "sites_total": total_sites,
                "sites": sites,
                "servers": servers,
            })
        )?,
        Format::Table => {
            writeln!(
                out,
                "health {} .. {} (objective {} % of requests not 5xx); worst first",
                t(w.from_us),
                t(w.to_us),
                objective * 100.0
            )?;
            writeln!(out, "servers:")?;
            header(&mut out, "server")?;
            for s in &servers {
                row(&mut out, &format!("{} ({}/{} sites failing)", s.server, s.failing_sites, s.sites), s)?;
            }
            writeln!(out, "sites ({} of {total_sites}):", sites.len())?;
            header(&mut out, "site @ server")?;
            for s in &sites {
                row(&mut out, &format!("{} @ {}", s.site_host, s.server), s)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn header(out: &mut impl Write, what: &str) -> std::io::Result<()> {
    writeln!(
        out,
        "  {what:<44} {:>9} {:>7} {:>7} {:>8} {:>8} {:>9} {:>9}",
        "requests", "5xx", "upfail", "avail%", "burn", "p95 ms", "up p95"
    )
}

fn row(out: &mut impl Write, name: &str, h: &Health) -> std::io::Result<()> {
    let p95 = |q: Option<health::Quantiles>| q.map_or("-".to_owned(), |q| format!("{:.0}", q.p95));
    writeln!(
        out,
        "  {name:<44} {:>9} {:>7} {:>7} {:>8.3} {:>8.1} {:>9} {:>9}",
        h.requests,
        h.status_5xx,
        h.upstream_failures,
        h.assessment.availability * 100.0,
        h.assessment.burn_rate,
        p95(h.request_time_ms),
        p95(h.upstream_time_ms)
    )
}
