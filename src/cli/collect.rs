//! `sitelog collect`: the collector on a web host (see `ingest::collect`).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sitelog_ingest::collect::deliver::KafkaSink;
use sitelog_ingest::collect::sink::Event;
use sitelog_ingest::collect::{Collector, CollectorConfig, Mode, Stats};

/// Tail access logs through rotations into Kafka, checkpointing only what Kafka acknowledged.
///
/// Without `--once` or `--backfill` it runs until SIGTERM/SIGINT, then flushes, waits for
/// acknowledgements (`collector.shutdown_timeout_ms`), writes checkpoints and exits 0.
#[derive(clap::Args, Debug)]
pub struct CollectArgs {
    /// Collector config (TOML); `deploy/collector.example.toml` documents every key.
    #[arg(long, short = 'c', default_value = "/etc/sitelog/collector.toml", env = "SITELOG_COLLECTOR_CONFIG")]
    config: PathBuf,
    /// Read everything present now, wait until Kafka acknowledged all of it, write the
    /// checkpoints and exit. A partial last line of a live file waits for the next run.
    #[arg(long, conflicts_with = "backfill")]
    once: bool,
    /// Read these files (plain or .gz, multi-member) once and exit; files already sent
    /// (same fingerprint) are skipped. Can run beside the service (separate checkpoint role).
    #[arg(long, num_args = 1.., value_name = "PATH")]
    backfill: Vec<PathBuf>,
    /// The source the backfill files belong to (default: matched by path, allowing rotation
    /// suffixes such as `.1` or `-20250101.gz`).
    #[arg(long, requires = "backfill")]
    source: Option<String>,
    /// Serve Prometheus metrics (overrides `collector.metrics_addr`): alone 127.0.0.1:10471;
    /// `PORT` on loopback; `HOST:PORT` where given.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:10471",
          value_parser = super::metrics_addr)]
    metrics_addr: Option<SocketAddr>,
    /// Overrides `[kafka] brokers`.
    #[arg(long, env = "SITELOG_KAFKA_BROKERS")]
    brokers: Option<String>,
    /// Overrides `[kafka] topic`.
    #[arg(long, env = "SITELOG_ACCESS_TOPIC")]
    topic: Option<String>,
    /// Overrides `[kafka] rejects_topic`.
    #[arg(long, env = "SITELOG_REJECTS_TOPIC")]
    rejects_topic: Option<String>,
    /// Overrides `[collector] checkpoint_dir`.
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
}

pub fn run(args: CollectArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = CollectorConfig::load(&args.config)?;
    if let Some(b) = args.brokers {
        cfg.kafka.brokers = b;
    }
    if let Some(t) = args.topic {
        cfg.kafka.topic = t;
    }
    if let Some(t) = args.rejects_topic {
        cfg.kafka.rejects_topic = t;
    }
    if let Some(d) = args.checkpoint_dir {
        cfg.collector.checkpoint_dir = d;
    }
    cfg.validate().map_err(|(key, msg)| anyhow::anyhow!("{}: {key}: {msg}", args.config.display()))?;

    let rt = super::runtime()?;
    let metrics_addr = match (args.metrics_addr, &cfg.collector.metrics_addr) {
        (Some(a), _) => Some(a),
        (None, Some(s)) => Some(super::metrics_addr(s).map_err(|e| anyhow::anyhow!("collector.metrics_addr: {e}"))?),
        (None, None) => None,
    };
    if let Some(addr) = metrics_addr {
        super::serve_metrics(&rt, addr)?;
    }

    let mode = if !args.backfill.is_empty() {
        Mode::Backfill { paths: args.backfill, source: args.source }
    } else if args.once {
        Mode::Once
    } else {
        Mode::Follow
    };
    let (tx, rx) = mpsc::channel();
    let sink = KafkaSink::new(&cfg.kafka, tx.clone()).context("creating the Kafka producer")?;
    let brokers = cfg.kafka.brokers.clone();
    // `--once` and `--backfill` end: they show progress and end with one summary line.
    let finite = !matches!(mode, Mode::Follow);
    let mut collector = Collector::new(cfg, mode, sink, (tx, rx))?;
    // Heartbeats carry the time they were sent: from `SITELOG_NOW` when set (tests, replays),
    // running on from there.
    collector.set_clock(sitelog::clock::now()?.timestamp_micros());
    forward_signals(&rt, collector.events());
    tracing::info!(config = %args.config.display(), brokers, "collector started");

    let stats = collector.stats();
    let started = Instant::now();
    let progress = finite.then(|| Progress::start(stats.clone()));
    let result = collector.run();
    if let Some(p) = progress {
        p.stop();
    }
    result?;
    let secs = started.elapsed().as_secs_f64();
    if finite {
        eprintln!("{}", summary(&stats, secs));
        return Ok(ExitCode::SUCCESS);
    }
    tracing::info!(
        lines = stats.lines.load(Ordering::Relaxed),
        records_acked = stats.records_acked.load(Ordering::Relaxed),
        rejects_acked = stats.rejects_acked.load(Ordering::Relaxed),
        bytes = stats.bytes_read.load(Ordering::Relaxed),
        files_completed = stats.files_completed.load(Ordering::Relaxed),
        files_skipped = stats.files_skipped.load(Ordering::Relaxed),
        seconds = format!("{secs:.1}"),
        "collector done; checkpoints written"
    );
    Ok(ExitCode::SUCCESS)
}

/// The one line `--once` and `--backfill` end with.
fn summary(stats: &Stats, secs: f64) -> String {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let lines = get(&stats.lines);
    format!(
        "collected {lines} lines ({} records, {} rejects acknowledged by Kafka), {:.1} MB in {secs:.1} s ({:.0} \
         lines/s); {} files completed, {} already sent and skipped; checkpoints written",
        get(&stats.records_acked),
        get(&stats.rejects_acked),
        get(&stats.bytes_read) as f64 / 1e6,
        lines as f64 / secs.max(0.001),
        get(&stats.files_completed),
        get(&stats.files_skipped),
    )
}

/// SIGTERM/SIGINT → an orderly shutdown; a second signal exits at once (the checkpoints on
/// disk are still valid, unacknowledged lines are re-sent next start).
fn forward_signals(rt: &tokio::runtime::Runtime, events: mpsc::Sender<Event>) {
    rt.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        for n in 0.. {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            if n > 0 {
                tracing::warn!("second signal: exiting without waiting for acknowledgements");
                std::process::exit(130);
            }
            tracing::info!("signal received: flushing, waiting for acknowledgements, checkpointing");
            let _ = events.send(Event::Shutdown);
        }
    });
}

/// `--once` / `--backfill` progress: a bar on stderr when it is a terminal, a log line every
/// 10 s otherwise.
struct Progress {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

impl Progress {
    fn start(stats: Arc<Stats>) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let tty = std::io::stderr().is_terminal();
            let total = stats.backfill_total_bytes.load(Ordering::Relaxed);
            let bar = tty.then(|| {
                let bar = indicatif::ProgressBar::new(total);
                let style = indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg} ETA {eta}",
                )
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
                bar.set_style(style);
                bar
            });
            let started = Instant::now();
            let mut last_log = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let done = stats.backfill_done_bytes.load(Ordering::Relaxed);
                let lines = stats.lines.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64().max(0.001);
                let rate = lines as f64 / secs;
                match &bar {
                    Some(bar) => {
                        bar.set_position(done);
                        bar.set_message(format!("{lines} lines, {rate:.0} lines/s"));
                    }
                    None if last_log.elapsed() >= Duration::from_secs(10) => {
                        last_log = Instant::now();
                        let eta =
                            if done > 0 { (total.saturating_sub(done)) as f64 * secs / done as f64 } else { f64::NAN };
                        tracing::info!(
                            done_bytes = done,
                            total_bytes = total,
                            lines,
                            lines_per_sec = format!("{rate:.0}"),
                            eta_secs = format!("{eta:.0}"),
                            "collect progress"
                        );
                    }
                    None => {}
                }
            }
            if let Some(bar) = bar {
                bar.set_position(stats.backfill_done_bytes.load(Ordering::Relaxed));
                bar.finish();
            }
        });
        Progress { stop, handle }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_one_line_with_the_counts() {
        let stats = Stats::default();
        stats.lines.store(1000, Ordering::Relaxed);
        stats.records_acked.store(990, Ordering::Relaxed);
        stats.rejects_acked.store(10, Ordering::Relaxed);
        stats.files_completed.store(3, Ordering::Relaxed);
        stats.files_skipped.store(2, Ordering::Relaxed);
        stats.bytes_read.store(2_500_000, Ordering::Relaxed);
        assert_eq!(
            summary(&stats, 2.0),
            "collected 1000 lines (990 records, 10 rejects acknowledged by Kafka), 2.5 MB in 2.0 s (500 lines/s); \
             3 files completed, 2 already sent and skipped; checkpoints written"
        );
    }
}
