//! `sitelog kafka topics`: topic retention that follows `[retention] client_ip_days`.

use std::process::ExitCode;

use anyhow::Context;
use sitelog_processor::topics;

use super::ProcessorOpts;

#[derive(clap::Args, Debug)]
pub struct KafkaArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Set `cleanup.policy=delete`, `retention.ms` = `[retention] client_ip_days` and an hourly
    /// `segment.ms` on the topics that hold whole lines (access, rejects, dead-letter), where
    /// they keep them longer; prints each change. A second run changes nothing. With
    /// `--check`, only lists what would change and exits 3 if anything would.
    Topics {
        #[command(flatten)]
        opts: ProcessorOpts,
        #[arg(long)]
        check: bool,
    },
}

pub fn run(args: KafkaArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Topics { opts, check } => {
            let cfg = opts.load()?;
            let rt = super::runtime()?;
            let changes = rt
                .block_on(topics::plan(&cfg.kafka, &cfg.retention))
                .with_context(|| format!("reading topic configs at {}", cfg.kafka.brokers))?;
            if changes.is_empty() {
                println!("topic retention is as configured ({} days)", cfg.retention.client_ip_days);
                return Ok(ExitCode::SUCCESS);
            }
            if check {
                for c in &changes {
                    println!("would change: {c}");
                }
                return Ok(ExitCode::from(3));
            }
            topics::apply(&cfg.kafka, &changes)
                .with_context(|| format!("setting topic configs at {}", cfg.kafka.brokers))?;
            for c in &changes {
                println!("topic retention changed: {c}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
