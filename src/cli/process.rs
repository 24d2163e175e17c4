//! `sitelog process`: consume access records, attribute, store in ClickHouse exactly once.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sitelog_processor::consume::{Processor, RunOptions};

use super::ProcessorOpts;

#[derive(clap::Args, Debug)]
pub struct ProcessArgs {
    #[command(flatten)]
    opts: ProcessorOpts,
    /// Exit 0 once nothing arrived for this many seconds AND the group has caught up: its
    /// committed offset equals the end offset on every partition of the topic, as the broker
    /// reports them (batch jobs, backfills, demos, tests). Silence alone is not enough: a
    /// replica without partitions (rebalance in progress, a killed member's session not yet
    /// expired, another member holding them) keeps waiting and logs why every 10 s. Without
    /// this flag, run until SIGTERM.
    #[arg(long, value_name = "SECS")]
    exit_when_idle: Option<u64>,
    /// With --exit-when-idle: give up with a non-zero exit, naming group, topic and lag, when
    /// the group still lags after this replica had nothing to do (no partition assigned, or
    /// its own partitions done) for this many seconds while no committed offset of the group
    /// moved. Any progress by another member restarts the clock.
    #[arg(long, value_name = "SECS", default_value_t = 300, requires = "exit_when_idle")]
    max_wait_unassigned: u64,
    /// Serve Prometheus metrics: `--metrics-addr` alone listens on 127.0.0.1:10472; `PORT`
    /// on loopback; `HOST:PORT` where given (e.g. 0.0.0.0:10472 in a container). Off without it.
    #[arg(long, env = "SITELOG_PROCESS_METRICS_ADDR", value_name = "ADDR", num_args = 0..=1,
          default_missing_value = "127.0.0.1:10472", value_parser = super::metrics_addr)]
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
    let opts = RunOptions {
        exit_when_idle: a.exit_when_idle.map(Duration::from_secs),
        max_wait_unassigned: Duration::from_secs(a.max_wait_unassigned),
    };
    // Heartbeats have their own consumer (group `<group_id>.heartbeats`) beside the records.
    let drain = Arc::new(AtomicBool::new(false));
    let heartbeats = {
        let (cfg, rt, stop, drain) = (cfg.clone(), rt.handle().clone(), stop.clone(), drain.clone());
        std::thread::Builder::new()
            .name("heartbeats".into())
            .spawn(move || sitelog_processor::heartbeat::run(&cfg, &rt, &stop, &drain, Duration::from_secs(60)))?
    };
    let result = p.run(&stop, opts);
    // Exit when idle: the heartbeats sent up to now are stored first; a signal stops both.
    drain.store(true, Ordering::Relaxed);
    if result.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    // Everything is stored and committed by now; leaving the group happens when the consumers
    // are dropped, and librdkafka can block there for ever (the unassign of a close waits on
    // its main thread: confluentinc/librdkafka#4884; seen with tansu while members come and
    // go). So the close gets a bounded time; past it the process exits anyway and the group
    // notices this member's absence after session.timeout.ms, as after a crash.
    let deadline = Instant::now() + CLOSE_LIMIT;
    close_within(p, CLOSE_LIMIT, "the records consumer");
    while !heartbeats.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if heartbeats.is_finished() {
        match heartbeats.join() {
            Ok(Ok(h)) => tracing::info!(stored = h.stored, quarantined = h.quarantined, "heartbeats"),
            Ok(Err(e)) => tracing::error!(error = %e, "the heartbeat consumer stopped"),
            Err(_) => tracing::error!("the heartbeat consumer panicked"),
        }
    } else {
        tracing::warn!(limit_s = CLOSE_LIMIT.as_secs(), "the heartbeat consumer did not close in time; exiting anyway");
    }
    let stats = result.context("processing")?;
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

/// How long closing the Kafka consumers may take at exit.
const CLOSE_LIMIT: Duration = Duration::from_secs(15);

/// Drops `consumer` (leaving its group) on a thread of its own and waits at most `limit`.
fn close_within<T: Send + 'static>(consumer: T, limit: Duration, what: &'static str) {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("kafka-close".into()).spawn(move || {
        drop(consumer);
        let _ = tx.send(());
    });
    if spawned.is_ok() && rx.recv_timeout(limit).is_err() {
        tracing::warn!(consumer = what, limit_s = limit.as_secs(), "closing the Kafka consumer did not finish in time (librdkafka#4884); exiting anyway, the group lets this member go after session.timeout.ms");
    }
}
