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
        /// How far back from now: `30m`, `24h`, `7d`.
        #[arg(long, conflicts_with_all = ["from", "to"])]
        since: Option<String>,
        /// Start (RFC 3339 or YYYY-MM-DD, UTC); with --to.
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// End, exclusive (RFC 3339 or YYYY-MM-DD, UTC).
        #[arg(long, requires = "from")]
        to: Option<String>,
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
    let Action::Events { opts, since, from, to, customer, site, scenario, format, reason } = a.action;
    let cfg = opts.load()?;
    let now = sitelog::clock::now()?;
    let (from_t, to_t) = match (&from, &to) {
        (Some(f), Some(t)) => (parse_time(f)?, parse_time(t)?),
        _ => {
            let secs = parse_duration(since.as_deref().unwrap_or("24h"))?;
            (now - chrono::Duration::seconds(secs), now + chrono::Duration::seconds(1))
        }
    };
    anyhow::ensure!(from_t < to_t, "--from must be before --to");
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
