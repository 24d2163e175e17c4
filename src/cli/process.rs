//! `sitelog process`: consume access records, attribute, store in ClickHouse exactly once.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sitelog_processor::consume::Processor;

use super::ProcessorOpts;

#[derive(clap::Args, Debug)]
pub struct ProcessArgs {
    #[command(flatten)]
    opts: ProcessorOpts,
    /// Exit once every assigned partition is consumed to its end and nothing arrived for
    /// this many seconds (batch jobs, demos, tests). Without it, run until SIGTERM.
    #[arg(long, value_name = "SECS")]
    exit_when_idle: Option<u64>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9102).
    #[arg(long, env = "SITELOG_PROCESS_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
}

pub fn run(a: ProcessArgs) -> anyhow::Result<ExitCode> {
    let cfg = a.opts.load()?;
    let rt = super::runtime()?;
    if let Some(addr) = a.metrics_addr {
        super::serve_metrics(&rt, addr)?;
    }
    // Topics that keep whole lines longer than the full address may be kept: say so at start.
    match rt.block_on(sitelog_processor::topics::plan(&cfg.kafka, &cfg.retention)) {
        Ok(changes) => {
            for c in &changes {
                tracing::warn!(
                    "{c} needed: topics holding whole lines must not keep them longer than \
                     retention.client_ip_days ({} days); run `sitelog kafka topics`",
                    cfg.retention.client_ip_days
                );
            }
        }
        Err(e) => tracing::warn!("cannot check topic retention: {e}"),
    }
    let stop = Arc::new(AtomicBool::new(false));
    super::stop_on_signals(&rt, stop.clone());
    let started = Instant::now();
    let mut p = Processor::new(cfg.clone(), rt.handle().clone()).with_context(|| {
        format!("starting the processor (kafka {}, clickhouse {})", cfg.kafka.brokers, cfg.clickhouse.url)
    })?;
    let stats = p.run(&stop, a.exit_when_idle.map(Duration::from_secs)).context("processing")?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "processed {} records in {} messages ({:.0} records/s): {} stored, {} duplicates dropped, {} unattributed, {} quarantined messages (sitelog deadletter list){}",
        stats.records,
        stats.messages,
        stats.records as f64 / secs.max(1e-9),
        stats.inserted,
        stats.duplicates,
        stats.unattributed,
        stats.quarantined + stats.corrupt_messages,
        if stop.load(Ordering::Relaxed) { " (stopped by signal)" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}
