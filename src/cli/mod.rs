//! One module per subcommand. The binary edge: `anyhow` errors with context, nothing else.

pub mod alerts;
pub mod audit;
pub mod collect;
pub mod customers;
pub mod deadletter;
pub mod generate;
pub mod health;
pub mod incidents;
pub mod investigate;
pub mod kafka;
pub mod parse;
pub mod process;
pub mod report;
pub mod schema;
pub mod security;
pub mod serve;
pub mod stack;
pub mod visitor_keys;

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sitelog_processor::config::ProcessorConfig;

/// `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
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

/// A metrics listen address: `PORT` (loopback), `HOST:PORT` or `[V6]:PORT`. Metrics listen on
/// loopback unless an address says otherwise. Default ports (`--metrics-addr` alone): 10471
/// `collect`, 10472 `process` — outside 9100–9999, which the Prometheus exporters' port list
/// has fully allocated (node_exporter 9100, statsd_exporter 9102, postgres_exporter 9187, …):
/// a web host runs several exporters, and sitelog must not take their ports.
pub fn metrics_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| format!("'{text}' is not PORT or HOST:PORT"))
}

/// `--since DURATION` or `--from T --to T`: the period a listing covers (each command states
/// its default `--since`).
#[derive(clap::Args, Debug, Clone)]
pub struct Period {
    /// How far back from now: `30m`, `24h`, `7d`.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub since: Option<String>,
    /// Start (RFC 3339 or YYYY-MM-DD, UTC); with --to.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// End, exclusive (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long, requires = "from")]
    pub to: Option<String>,
}

impl Period {
    /// `[from, to)`: the given times, or `since` (default `default_since`) back from the clock
    /// to just after now.
    pub fn bounds(&self, default_since: &str) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
        let (from, to) = match (&self.from, &self.to) {
            (Some(f), Some(t)) => (security::parse_time(f)?, security::parse_time(t)?),
            _ => {
                let now = sitelog::clock::now()?;
                let secs = security::parse_duration(self.since.as_deref().unwrap_or(default_since))?;
                (now - chrono::Duration::seconds(secs), now + chrono::Duration::seconds(1))
            }
        };
        anyhow::ensure!(from < to, "--from must be before --to");
        Ok((from, to))
    }
}

/// Serves Prometheus `/metrics` for everything recorded through the `metrics` facade.
pub fn serve_metrics(rt: &tokio::runtime::Runtime, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let _guard = rt.enter();
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .with_context(|| format!("serving metrics on {addr}"))
}

/// Sets `stop` on SIGTERM or SIGINT, so loops can drain, checkpoint/commit and exit 0.
pub fn stop_on_signals(rt: &tokio::runtime::Runtime, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    rt.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("signal received: draining");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_listen_on_loopback_unless_an_address_is_given() {
        assert_eq!(super::metrics_addr("10472").unwrap().to_string(), "127.0.0.1:10472");
        assert_eq!(super::metrics_addr("0.0.0.0:10472").unwrap().to_string(), "0.0.0.0:10472");
        assert_eq!(super::metrics_addr("[::1]:10471").unwrap().to_string(), "[::1]:10471");
        assert!(super::metrics_addr("localhost").is_err());
    }
}
