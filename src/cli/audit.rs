//! `sitelog audit list`: who looked at client addresses, when, what they asked and why
//! (`access_audit`, written by `security events` and `investigate` before they show anything).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use sitelog_processor::security::investigate::audit_list;

use super::security::parse_duration;
use super::ProcessorOpts;

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// The audit records of a period, oldest first.
    List {
        #[command(flatten)]
        opts: ProcessorOpts,
        #[arg(long, default_value = "30d")]
        since: String,
        /// `table` or `json` (one object per line).
        #[arg(long, default_value = "table")]
        format: String,
    },
}

pub fn run(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let Action::List { opts, since, format } = a.action;
    anyhow::ensure!(format == "table" || format == "json", "--format must be table or json");
    let cfg = opts.load()?;
    let from = sitelog::clock::now()? - chrono::Duration::seconds(parse_duration(&since)?);
    let client = cfg.clickhouse.client()?;
    let rows =
        super::runtime()?.block_on(audit_list(&client, from.timestamp_micros())).context("reading access_audit")?;
    let mut out = std::io::stdout().lock();
    for r in &rows {
        let ts = chrono::DateTime::from_timestamp_micros(r.ts_us)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        if format == "json" {
            writeln!(
                out,
                "{}",
                serde_json::json!({"ts": ts, "os_user": r.os_user, "db_user": r.db_user, "command": r.command, "arguments": r.arguments, "reason": r.reason})
            )?;
        } else {
            writeln!(out, "{ts}  {}@{}  {}  [{}]  reason: {}", r.os_user, r.db_user, r.command, r.arguments, r.reason)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
