//! One module per subcommand. The binary edge: `anyhow` errors with context, nothing else.

pub mod generate;
pub mod parse;
pub mod schema;
pub mod stack;

use std::path::PathBuf;

use anyhow::Context;
use sitelog_processor::config::ProcessorConfig;

/// `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")
}

/// Options shared by every command that talks to ClickHouse or reads the access topic.
#[derive(clap::Args, Debug, Clone)]
pub struct ProcessorOpts {
    /// Processor config (TOML). Without it, built-in defaults apply.
    #[arg(long, short = 'c', env = "SITELOG_PROCESSOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Overrides `[clickhouse] url`.
    #[arg(long, env = "SITELOG_CLICKHOUSE_URL")]
    pub clickhouse_url: Option<String>,
    /// Overrides `[clickhouse] database`.
    #[arg(long, env = "SITELOG_DATABASE")]
    pub database: Option<String>,
    /// Overrides `[kafka] brokers`.
    #[arg(long, env = "SITELOG_KAFKA_BROKERS")]
    pub brokers: Option<String>,
}

impl ProcessorOpts {
    pub fn load(&self) -> anyhow::Result<ProcessorConfig> {
        let mut cfg = match &self.config {
            Some(p) => ProcessorConfig::load(p)?,
            None => ProcessorConfig::default(),
        };
        if let Some(u) = &self.clickhouse_url {
            cfg.clickhouse.url = u.clone();
        }
        if let Some(d) = &self.database {
            cfg.clickhouse.database = d.clone();
        }
        if let Some(b) = &self.brokers {
            cfg.kafka.brokers = b.clone();
        }
        cfg.validate().map_err(|(key, msg)| anyhow::anyhow!("{key}: {msg}"))?;
        Ok(cfg)
    }
}
