//! `sitelog schema migrate`: bring the ClickHouse database to this binary's schema version.

use std::process::ExitCode;

use anyhow::Context;
use sitelog_processor::store::migrate;

use super::ProcessorOpts;

#[derive(clap::Args, Debug)]
pub struct SchemaArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Apply pending migrations in order, then bring every TTL to `[retention]` (altered,
    /// materialized and recorded in `retention_changes`; each change is printed). A second run
    /// does nothing. Refuses, changing nothing, if the database is newer than this binary or
    /// an applied file changed.
    Migrate {
        #[command(flatten)]
        opts: ProcessorOpts,
    },
}

pub fn run(args: SchemaArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Migrate { opts } => {
            let cfg = opts.load()?;
            let server = cfg.clickhouse.server_client()?;
            let rt = super::runtime()?;
            let report =
                rt.block_on(migrate::migrate(&server, &cfg.clickhouse.database, &cfg.retention)).with_context(
                    || format!("migrating database '{}' at {}", cfg.clickhouse.database, cfg.clickhouse.url),
                )?;
            if report.applied.is_empty() {
                println!("schema is up to date (version {})", report.current_version);
            }
            for (v, name) in &report.applied {
                println!("applied migration {v:04} {name}");
            }
            for change in &report.retention_changes {
                println!("retention changed: {change}");
            }
            if report.retention_changes.is_empty() {
                println!("retention is as configured");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
