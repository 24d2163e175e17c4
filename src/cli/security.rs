//! `sitelog security events`: what the detectors found — per-site events and platform-level
//! cross-tenant events — for ops investigating an incident. Every call that reveals client
//! addresses takes `--reason` and is recorded in `access_audit` first.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use sitelog_processor::security::query::{self, EventQuery};

use super::ProcessorOpts;

#[derive(clap::Args, Debug)]
pub struct SecurityArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Security events overlapping a time range (default: the last 24 hours), oldest first.
    Events {
        #[command(flatten)]
        opts: ProcessorOpts,
        #[command(flatten)]
        period: super::Period,
        /// Only this customer's sites (platform events are left out).
        #[arg(long)]
        customer: Option<String>,
        /// Only this site host (platform events are left out).
        #[arg(long)]
        site: Option<String>,
        /// Only this scenario (e.g. wp-login-bruteforce, cross-tenant).
        #[arg(long)]
        scenario: Option<String>,
        /// `table` for people; `json` (one object per line) or `csv` for tools.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Why you look (a ticket id): required, recorded with your query in access_audit.
        #[arg(long)]
        reason: String,
    },
    /// Sources of recent events as a blocklist for the edge, each with its expiry (the event's
    /// last request plus 6 h / 1 d / 3 d / 7 d by severity low … critical). Known good
    /// crawlers are never listed.
    Blocklist {
        #[command(flatten)]
        opts: ProcessorOpts,
        #[arg(long, value_enum, default_value = "nginx")]
        format: BlockFormat,
        /// Only events of at least this severity: low, medium, high, critical.
        #[arg(long, default_value = "medium")]
        min_severity: String,
        /// Events whose last request is at most this old.
        #[arg(long, default_value = "7d")]
        since: String,
        /// The ipset set name (`--format ipset`).
        #[arg(long, default_value = "sitelog-block")]
        set: String,
    },
}

/// What `security blocklist` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum BlockFormat {
    /// `deny ADDR;` lines for an nginx `include` (reload nginx after writing).
    Nginx,
    /// `add SET ADDR timeout SECS` lines for `ipset restore` (set type hash:net with timeout).
    Ipset,
    /// `source,scenario,severity,last_seen,expires` for other tools.
    Csv,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    Table,
    Json,
    Csv,
}

/// `30m`, `24h`, `7d`, `90s` → seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<i64> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = num.parse().with_context(|| format!("'{text}' is not a duration: use e.g. 30m, 24h, 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("'{text}' is not a duration: use e.g. 30m, 24h, 7d"),
    };
    Ok(n * mult)
}

/// RFC 3339, or a bare day (its UTC midnight).
pub fn parse_time(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .with_context(|| format!("'{text}' is not a time: use RFC 3339 (2026-11-02T14:00:00Z) or YYYY-MM-DD"))?;
    Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
}

/// Writes the audit record of a command that reveals client addresses.
pub async fn audit(
    client: &clickhouse::Client,
    db_user: &str,
    command: &str,
    arguments: &str,
    reason: &str,
) -> anyhow::Result<()> {
    anyhow::ensure!(!reason.trim().is_empty(), "--reason must say why (e.g. a ticket id)");
    let os_user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    client
        .query(
            "INSERT INTO access_audit (ts, os_user, db_user, command, arguments, reason) \
             VALUES (now64(3), ?, ?, ?, ?, ?)",
        )
        .bind(os_user)
        .bind(db_user)
        .bind(command)
        .bind(arguments)
        .bind(reason)
        .execute()
        .await
        .context("writing the access_audit record (nothing was shown)")
}

pub fn run(a: SecurityArgs) -> anyhow::Result<ExitCode> {
    match a.action {
        Action::Events { opts, period, customer, site, scenario, format, reason } => {
            events(opts, period, customer, site, scenario, format, reason)
        }
        Action::Blocklist { opts, format, min_severity, since, set } => {
            blocklist(opts, format, &min_severity, &since, &set)
        }
    }
}

fn blocklist(
    opts: ProcessorOpts,
    format: BlockFormat,
    min_severity: &str,
    since: &str,
    set: &str,
) -> anyhow::Result<ExitCode> {
    use sitelog_processor::security::investigate::{block_secs, is_good_bot, severity_rank};
    anyhow::ensure!(
        ["low", "medium", "high", "critical"].contains(&min_severity),
        "--min-severity must be low, medium, high or critical"
    );
    let cfg = opts.load()?;
    let now = sitelog::clock::now()?;
    let q = EventQuery {
        from_us: (now - chrono::Duration::seconds(parse_duration(since)?)).timestamp_micros(),
        to_us: now.timestamp_micros() + 1,
        cross_tenant_customers: cfg.security.cross_tenant_customers,
        window_secs: cfg.security.cross_tenant_window_secs,
        ..Default::default()
    };
    let client = cfg.clickhouse.client()?;
    let events = super::runtime()?.block_on(query::events(&client, &q)).context("reading security events")?;
    // One entry per source: its most severe event decides, the latest expiry wins.
    let mut entries: std::collections::BTreeMap<String, (String, String, i64, i64)> = Default::default();
    for e in events {
        if severity_rank(&e.severity) < severity_rank(min_severity)
            || e.sample_user_agents.iter().any(|ua| is_good_bot(ua))
        {
            continue;
        }
        let last = parse_time(&e.last_seen)?.timestamp();
        let expires = last + block_secs(&e.severity);
        if expires <= now.timestamp() {
            continue;
        }
        let entry = entries.entry(e.source.clone()).or_insert((e.scenario.clone(), e.severity.clone(), last, expires));
        if severity_rank(&e.severity) > severity_rank(&entry.1) {
            (entry.0, entry.1) = (e.scenario.clone(), e.severity.clone());
        }
        entry.2 = entry.2.max(last);
        entry.3 = entry.3.max(expires);
    }
    let ts = |s: i64| {
        chrono::DateTime::from_timestamp(s, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    let mut out = std::io::stdout().lock();
    match format {
        BlockFormat::Nginx => {
            writeln!(out, "# sitelog security blocklist, {} entries, made {}", entries.len(), ts(now.timestamp()))?;
            for (src, (scenario, sev, _, exp)) in &entries {
                writeln!(out, "deny {src}; # {scenario} {sev}, expires {}", ts(*exp))?;
            }
        }
        BlockFormat::Ipset => {
            for (src, (_, _, _, exp)) in &entries {
                writeln!(out, "add {set} {src} timeout {}", exp - now.timestamp())?;
            }
        }
        BlockFormat::Csv => {
            writeln!(out, "source,scenario,severity,last_seen,expires")?;
            for (src, (scenario, sev, last, exp)) in &entries {
                writeln!(out, "{src},{scenario},{sev},{},{}", ts(*last), ts(*exp))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn events(
    opts: ProcessorOpts,
    period: super::Period,
    customer: Option<String>,
    site: Option<String>,
    scenario: Option<String>,
    format: Format,
    reason: String,
) -> anyhow::Result<ExitCode> {
    let cfg = opts.load()?;
    let (from_t, to_t) = period.bounds("24h")?;
    let q = EventQuery {
        from_us: from_t.timestamp_micros(),
        to_us: to_t.timestamp_micros(),
        customer: customer.clone(),
        site_host: site.clone(),
        scenario: scenario.clone(),
        cross_tenant_customers: cfg.security.cross_tenant_customers,
        window_secs: cfg.security.cross_tenant_window_secs,
    };
    let client = cfg.clickhouse.client()?;
    let rt = super::runtime()?;
    let args = format!(
        "from={} to={} customer={} site={} scenario={}",
        from_t.to_rfc3339(),
        to_t.to_rfc3339(),
        customer.unwrap_or_default(),
        site.unwrap_or_default(),
        scenario.unwrap_or_default()
    );
    let events = rt.block_on(async {
        audit(&client, &cfg.clickhouse.user, "security events", &args, &reason).await?;
        query::events(&client, &q).await.context("reading security events")
    })?;
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            for e in &events {
                writeln!(out, "{}", serde_json::to_string(e)?)?;
            }
        }
        Format::Csv => {
            writeln!(out, "scenario,source,customer_id,site_host,first_seen,last_seen,count,severity")?;
            for e in &events {
                writeln!(
                    out,
                    "{},{},{},{},{},{},{},{}",
                    e.scenario, e.source, e.customer_id, e.site_host, e.first_seen, e.last_seen, e.count, e.severity
                )?;
            }
        }
        Format::Table => {
            writeln!(out, "{} security events {} .. {}", events.len(), from_t.to_rfc3339(), to_t.to_rfc3339())?;
            writeln!(
                out,
                "{:<22} {:<20} {:<8} {:<28} {:<20} {:<20} {:>7} severity",
                "scenario", "source", "customer", "site", "first seen", "last seen", "count"
            )?;
            for e in &events {
                let site = if e.site_host.is_empty() {
                    format!("{} customers", e.customers.len())
                } else {
                    e.site_host.clone()
                };
                writeln!(
                    out,
                    "{:<22} {:<20} {:<8} {:<28} {:<20} {:<20} {:>7} {}",
                    e.scenario, e.source, e.customer_id, site, e.first_seen, e.last_seen, e.count, e.severity
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times() {
        assert_eq!(parse_duration("7d").unwrap(), 604_800);
        assert_eq!(parse_duration("30m").unwrap(), 1800);
        assert!(parse_duration("7 weeks").is_err());
        assert_eq!(parse_time("2026-11-02").unwrap().to_rfc3339(), "2026-11-02T00:00:00+00:00");
        assert!(parse_time("yesterday").is_err());
    }
}
