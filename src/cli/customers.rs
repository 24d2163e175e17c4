//! `sitelog customers …`: the customer register in ClickHouse.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use sha2::{Digest, Sha256};
use sitelog_processor::register;
use sitelog_schema::register::RegisterExport;

use super::ProcessorOpts;

#[derive(clap::Args, Debug)]
pub struct CustomersArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Import a register export (JSON, as `sitelog generate` writes) as the new current
    /// version: validated first, applied as a whole or not at all; superseded personal data
    /// is deleted at once. Running processors pick it up without a restart.
    Import {
        file: PathBuf,
        /// Who runs the import (recorded in register_imports).
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
        #[command(flatten)]
        opts: ProcessorOpts,
    },
    /// List hosts whose requests no site owned, with request counts (from usage rollups).
    Unattributed {
        #[command(flatten)]
        opts: ProcessorOpts,
    },
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct HostCount {
    site_host: String,
    requests: u64,
    first_day: u16,
    last_day: u16,
}

pub fn run(a: CustomersArgs) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    match a.action {
        Action::Import { file, by, opts } => {
            let cfg = opts.load()?;
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let export: RegisterExport =
                serde_json::from_slice(&bytes).with_context(|| format!("{}: not a register export", file.display()))?;
            let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
            let client = cfg.clickhouse.client()?;
            let r = rt.block_on(register::import(&client, &export, &by, &file.display().to_string(), &sha))?;
            println!(
                "imported register version {}: {} customers, {} sites, {} contacts",
                r.version, r.customers, r.sites, r.contacts
            );
        }
        Action::Unattributed { opts } => {
            let cfg = opts.load()?;
            let client = cfg.clickhouse.client()?;
            let rows: Vec<HostCount> = rt.block_on(
                client
                    .query(
                        "SELECT site_host, sum(requests) AS requests, min(day) AS first_day, max(day) AS last_day \
                         FROM usage_daily WHERE customer_id = '' GROUP BY site_host ORDER BY requests DESC",
                    )
                    .fetch_all(),
            )?;
            println!("{:<40} {:>12}  {:<10}  {:<10}", "host", "requests", "first day", "last day");
            let day =
                |d: u16| chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Days::new(d as u64);
            let mut total = 0;
            for r in &rows {
                total += r.requests;
                println!("{:<40} {:>12}  {:<10}  {:<10}", r.site_host, r.requests, day(r.first_day), day(r.last_day));
            }
            println!("{:<40} {:>12}", "total", total);
        }
    }
    Ok(ExitCode::SUCCESS)
}
