//! The collector's loop: discover files, follow them through rotations, read, batch, send,
//! advance checkpoints on acknowledgement.
//!
//! One thread owns all file state; the Kafka client and the inotify watcher talk to it
//! through one event channel (acknowledgements, wake-ups, shutdown). Each [`Collector::step`]
//! handles events, rescans the globs when due, reads what is new (while the in-flight
//! budget allows), sends full or lingering batches, finishes rotated files whose every line
//! is acknowledged, and writes checkpoints.
//!
//! The phases, one file each: [`discover`] (globs, watches, identification, backfill
//! planning), [`read`] (reading, truncation, deletion, moved files), [`finish`] (completing
//! fully acknowledged files), [`deliver`] (sending, acknowledgements, producer restarts,
//! heartbeats, checkpoints). This file holds the state and the loop.
//!
//! File identity is the content fingerprint ([`super::fingerprint`]); `(dev, inode)` says
//! which open file is which between scans. A tracked file is one of:
//! - `Live`: at a path the globs match; its unterminated last line waits indefinitely;
//! - `Rotated`: renamed away or deleted; read to the end through the still-open descriptor
//!   (or found again by fingerprint next to its old path, also as `.gz`), finished once it
//!   has been quiet for `rotate_wait_ms`, its last partial line sent as a line;
//! - `Final`: an archive or a `copytruncate` copy; finished at its end.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use flate2::read::MultiGzDecoder;
use tracing::{debug, error, info, warn};

use super::batch::{BatchLimits, FileOut, Outbox, SourceRt};
use super::checkpoint::{now_unix, ActiveEntry, CheckpointError, CheckpointStore, DoneEntry, Lookup, Role};
use super::config::CollectorConfig;
use super::fingerprint;
use super::metrics::{self as m, SourceMetrics};
use super::parse::LineParser;
use super::reader::Reader;
use super::sink::{Ack, Event, Sink, Token, Topic};
use super::split::LineSplitter;
use sitelog_schema::heartbeat::{Heartbeat, HEARTBEAT_VERSION};

mod deliver;
mod discover;
mod finish;
mod read;

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("source {source_name:?}: format: {msg}")]
    Format { source_name: String, msg: String },
    #[error("--backfill {path}: {msg}")]
    Backfill { path: PathBuf, msg: String },
    #[error("{0}")]
    Refused(String),
}

/// What the collector is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Tail forever (until shutdown).
    Follow,
    /// Read everything present now, wait for every acknowledgement, exit.
    Once,
    /// Read these files once (plain or gzip), skipping what was already sent, exit.
    Backfill { paths: Vec<PathBuf>, source: Option<String> },
}

/// Counters for the binary's progress display.
#[derive(Debug, Default)]
pub struct Stats {
    pub lines: AtomicU64,
    pub records_acked: AtomicU64,
    pub rejects_acked: AtomicU64,
    pub bytes_read: AtomicU64,
    pub files_completed: AtomicU64,
    pub files_skipped: AtomicU64,
    /// `--backfill` and `--once`: the bytes of the files to read, and how far reading got.
    pub backfill_total_bytes: AtomicU64,
    pub backfill_done_bytes: AtomicU64,
    pub inflight_bytes: AtomicU64,
    /// Producer sessions restarted (failures, fatal errors, `message_timeout_ms`).
    pub producer_restarts: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Live,
    Rotated,
    Final,
}

type Key = (u64, u64);

struct Tracked {
    source: usize,
    site: Option<String>,
    path: PathBuf,
    key: Key,
    kind: Kind,
    reader: Option<Reader>,
    split: LineSplitter,
    /// Set once identified.
    out: Option<FileOut>,
    /// Last size seen (plain files).
    size: u64,
    /// The last read hit the end of the file.
    eof: bool,
    last_read: Instant,
    /// The final partial line was flushed; completes when every unit is acknowledged.
    finishing: bool,
    /// The file vanished before it was read to the end.
    lost: bool,
    retry_at: Option<Instant>,
    /// On-disk size and read position (compressed for gzip), for backfill progress.
    disk_size: u64,
    disk_pos: u64,
}

impl Tracked {
    fn fp(&self) -> Option<u64> {
        self.out.as_ref().map(|o| o.fp)
    }

    fn ack_position(&self) -> (u64, u64) {
        let (r, l) = (self.split.read_pos(), self.split.lines());
        self.out.as_ref().map_or((r, l), |o| o.ack_position(r, l))
    }

    /// Nothing left to read right now.
    fn idle(&self) -> bool {
        if self.finishing || self.lost || self.out.is_none() {
            return true;
        }
        match &self.reader {
            Some(_) => self.eof,
            None => self.kind == Kind::Live && self.size <= self.split.scan_pos(),
        }
    }
}

/// The collector. Generic over the sink so tests run it without Kafka.
pub struct Collector<S: Sink> {
    cfg: CollectorConfig,
    mode: Mode,
    sources: Vec<SourceRt>,
    files: BTreeMap<u64, Tracked>,
    by_key: HashMap<Key, u64>,
    by_fp: HashMap<u64, u64>,
    /// Paths found by the globs that are not to be read (completed, duplicates), by size.
    skip: HashMap<Key, u64>,
    next_id: u64,
    store: CheckpointStore,
    sink: S,
    gen: u32,
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    outbox: Outbox,
    inflight_bytes: usize,
    inflight_msgs: usize,
    /// Send time of each unacknowledged message of this session, by [`Token::seq`].
    inflight_sent: BTreeMap<u64, Instant>,
    next_seq: u64,
    limits: BatchLimits,
    buf: Vec<u8>,
    open_count: usize,
    backfill_queue: VecDeque<(usize, Option<String>, PathBuf)>,
    backfill_completed_bytes: u64,
    last_scan: Option<Instant>,
    last_poll: Option<Instant>,
    last_checkpoint: Instant,
    last_checkpoint_ok: Instant,
    restart_at: Option<Instant>,
    restart_backoff: Duration,
    shutdown_deadline: Option<Instant>,
    /// Kafka refused the configuration ([`Event::Refused`]): `step` returns it as an error.
    refused: Option<String>,
    wake: bool,
    rescan: bool,
    more_to_read: bool,
    started: bool,
    done: bool,
    stats: Arc<Stats>,
    watcher: Option<super::watch::DirWatcher>,
    /// Heartbeat clock: `sent_at` = origin (µs since the epoch) + time since `Instant`.
    clock_origin: (i64, Instant),
    last_heartbeat: Option<Instant>,
    /// The final heartbeat of a `--once` run or a shutdown was sent.
    final_heartbeat: bool,
    /// Per source: the newest event time among acknowledged records (files come and go).
    delivered_max: Vec<Option<i64>>,
}

const MAX_ACTIVE_BACKFILL: usize = 4;

impl<S: Sink> Collector<S> {
    /// A collector whose parsers come from the config's `format` specs. `events` is the
    /// channel the sink acknowledges on (create it first, give the sender to the sink).
    pub fn new(
        cfg: CollectorConfig,
        mode: Mode,
        sink: S,
        events: (Sender<Event>, Receiver<Event>),
    ) -> Result<Self, CollectError> {
        let mut parsers = Vec::new();
        for s in &cfg.sources {
            let p = super::parse::resolve(&s.format)
                .map_err(|msg| CollectError::Format { source_name: s.name.clone(), msg })?;
            parsers.push(p);
        }
        Self::with_parsers(cfg, mode, sink, events, parsers)
    }

    /// Like [`new`](Self::new) with one parser per source given.
    pub fn with_parsers(
        cfg: CollectorConfig,
        mode: Mode,
        sink: S,
        events: (Sender<Event>, Receiver<Event>),
        parsers: Vec<Arc<dyn LineParser>>,
    ) -> Result<Self, CollectError> {
        m::describe();
        let role = match mode {
            Mode::Backfill { .. } => Role::Backfill,
            _ => Role::Collect,
        };
        let store = CheckpointStore::open(&cfg.collector.checkpoint_dir, role)?;
        let sources = cfg
            .sources
            .iter()
            .zip(parsers)
            .enumerate()
            .map(|(i, (s, parser))| SourceRt {
                name: s.name.clone(),
                patterns: cfg.patterns(i),
                parser,
                host_from: s.host_from(),
                server: s.server(&cfg.collector).to_owned(),
                metrics: SourceMetrics::new(&s.name),
            })
            .collect();
        let limits = BatchLimits {
            max_records: cfg.limits.batch_max_records,
            max_bytes: cfg.limits.batch_max_bytes.as_usize(),
            max_line: cfg.limits.max_line_bytes.as_usize(),
            max_hosts: cfg.limits.max_hosts,
        };
        let now = Instant::now();
        let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
        let n_sources = cfg.sources.len();
        Ok(Collector {
            clock_origin: (wall, now),
            last_heartbeat: None,
            final_heartbeat: false,
            delivered_max: vec![None; n_sources],
            buf: vec![0u8; cfg.limits.read_chunk_bytes.as_usize()],
            cfg,
            mode,
            sources,
            files: BTreeMap::new(),
            by_key: HashMap::new(),
            by_fp: HashMap::new(),
            skip: HashMap::new(),
            next_id: 1,
            store,
            sink,
            gen: 1,
            events_tx: events.0,
            events_rx: events.1,
            outbox: Outbox::default(),
            inflight_bytes: 0,
            inflight_msgs: 0,
            inflight_sent: BTreeMap::new(),
            next_seq: 0,
            limits,
            open_count: 0,
            backfill_queue: VecDeque::new(),
            backfill_completed_bytes: 0,
            last_scan: None,
            last_poll: None,
            last_checkpoint: now,
            last_checkpoint_ok: now,
            restart_at: None,
            restart_backoff: Duration::ZERO,
            shutdown_deadline: None,
            refused: None,
            wake: true,
            rescan: false,
            more_to_read: false,
            started: false,
            done: false,
            stats: Arc::new(Stats::default()),
            watcher: None,
        })
    }

    /// A sender for [`Event::Shutdown`] (signal handlers) and acknowledgements.
    pub fn events(&self) -> Sender<Event> {
        self.events_tx.clone()
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Sets the heartbeat clock: `sent_at` is `origin_us` now and runs on from there (the
    /// binary passes `SITELOG_NOW` when set, for tests and replays; else the system clock).
    pub fn set_clock(&mut self, origin_us: i64) {
        self.clock_origin = (origin_us, Instant::now());
    }

    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// True once a `--once`/`--backfill` run is complete or a shutdown finished.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Runs until done (`Once`, `Backfill`) or until [`Event::Shutdown`] (`Follow`).
    pub fn run(&mut self) -> Result<(), CollectError> {
        while !self.done {
            let wait = self.next_wait();
            self.step(wait)?;
        }
        Ok(())
    }

    fn next_wait(&self) -> Duration {
        if !self.started || (self.more_to_read && self.budget_left() > 0 && self.restart_at.is_none()) {
            return Duration::ZERO;
        }
        let mut wait = Duration::from_millis(self.cfg.tail.poll_interval_ms);
        if self.outbox.buffered > 0 {
            wait = wait.min(Duration::from_millis(self.cfg.limits.linger_ms / 2 + 1));
        }
        wait
    }

    fn budget_left(&self) -> usize {
        self.cfg.limits.max_inflight_bytes.as_usize().saturating_sub(self.inflight_bytes + self.outbox.buffered)
    }

    /// One round of the loop; waits up to `wait` for an event first.
    pub fn step(&mut self, wait: Duration) -> Result<(), CollectError> {
        if !self.started {
            self.start()?;
        }
        self.wait_events(wait);
        if let Some(msg) = self.refused.take() {
            // Nothing unacknowledged is checkpointed; the next start re-sends it.
            return Err(CollectError::Refused(msg));
        }
        let now = Instant::now();
        self.check_deadline(now);
        if let Some(at) = self.restart_at {
            if now >= at {
                self.restart(now);
            }
        }
        let stopping = self.shutdown_deadline.is_some();
        // Files are discovered and watched for rotations even while the producer restarts;
        // only reading waits (in `poll_file`).
        if !stopping {
            if self.mode == Mode::Follow {
                let scan_every = Duration::from_millis(self.cfg.tail.scan_interval_ms);
                // inotify asks for a rescan on creations and renames; at most every 20 ms.
                let every = if self.rescan { scan_every.min(Duration::from_millis(20)) } else { scan_every };
                if self.last_scan.is_none_or(|t| now.duration_since(t) >= every) {
                    self.rescan = false;
                    self.discover(now);
                    self.close_idle(now);
                    self.last_scan = Some(now);
                }
            }
            self.activate_backfill();
            let poll_every = Duration::from_millis(self.cfg.tail.poll_interval_ms);
            if self.wake || self.more_to_read || self.last_poll.is_none_or(|t| now.duration_since(t) >= poll_every) {
                self.wake = false;
                self.last_poll = Some(now);
                self.poll_files(now);
            }
        }
        let all_idle = self.files.values().all(Tracked::idle) && self.backfill_queue.is_empty();
        let force = stopping || (self.mode != Mode::Follow && all_idle);
        self.seal_lingering(now, force);
        self.send_ready();
        self.finish_files(now);
        self.send_ready();
        self.update_gauges(now);
        let mut finished_run = match &self.mode {
            Mode::Follow => false,
            Mode::Once | Mode::Backfill { .. } => {
                all_idle && self.inflight_msgs == 0 && self.outbox.buffered == 0 && self.restart_at.is_none()
            }
        };
        let drained = self.inflight_msgs == 0 && self.outbox.buffered == 0 && self.restart_at.is_none();
        // A `--once` run and a clean shutdown end with one last heartbeat per source, sent
        // once everything else is acknowledged, and wait for its acknowledgement too.
        let ending = finished_run || (stopping && drained);
        if ending && !self.final_heartbeat && self.heartbeats_on() {
            self.final_heartbeat = true;
            self.heartbeat(now);
            finished_run = false;
        } else if !stopping && !finished_run {
            self.heartbeat_due(now);
        }
        let stop_now = match self.shutdown_deadline {
            Some(deadline) => self.inflight_msgs == 0 && self.outbox.buffered == 0 || now >= deadline,
            None => false,
        };
        if finished_run || stop_now {
            if stop_now && self.inflight_msgs > 0 {
                warn!(
                    messages = self.inflight_msgs,
                    "shutdown timeout: leaving unacknowledged messages; they are re-sent from the checkpoint next start"
                );
            }
            self.checkpoint(now, true);
            self.done = true;
            return Ok(());
        }
        self.checkpoint(now, false);
        Ok(())
    }

    fn start(&mut self) -> Result<(), CollectError> {
        self.started = true;
        match self.mode.clone() {
            Mode::Follow | Mode::Once => {
                let now = Instant::now();
                self.discover(now);
                self.last_scan = Some(now);
                self.locate_missing();
                if self.mode == Mode::Once {
                    // The progress display's whole: the files as found now (a file already
                    // sent counts as done when it is skipped).
                    let total = self.files.values().map(|f| f.disk_size).sum();
                    self.stats.backfill_total_bytes.store(total, Ordering::Relaxed);
                }
                if self.mode == Mode::Follow && self.cfg.tail.inotify {
                    self.watcher = super::watch::DirWatcher::new(self.events_tx.clone());
                    self.watch_dirs();
                }
            }
            Mode::Backfill { paths, source } => self.plan_backfill(&paths, source.as_deref())?,
        }
        Ok(())
    }

    fn wait_events(&mut self, wait: Duration) {
        let first = if wait.is_zero() {
            self.events_rx.try_recv().ok()
        } else {
            match self.events_rx.recv_timeout(wait) {
                Ok(e) => Some(e),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
            }
        };
        let Some(first) = first else { return };
        self.handle_event(first);
        while let Ok(e) = self.events_rx.try_recv() {
            self.handle_event(e);
        }
    }

    fn handle_event(&mut self, e: Event) {
        match e {
            Event::Ack(ack) => self.handle_ack(ack),
            Event::Wake => {
                self.wake = true;
                if let Some(w) = &self.watcher {
                    w.rearm();
                }
            }
            Event::Rescan => {
                self.wake = true;
                self.rescan = true;
            }
            Event::Refused(msg) => {
                error!(error = %msg, "stopping: Kafka refuses this configuration");
                self.refused.get_or_insert(msg);
            }
            Event::Fatal(msg) => {
                error!(error = %msg, "fatal producer error; restarting the producer from the checkpoints");
                self.schedule_restart();
            }
            Event::Shutdown => {
                if self.shutdown_deadline.is_none() {
                    info!("shutting down: flushing batches and waiting for acknowledgements");
                    let timeout = Duration::from_millis(self.cfg.collector.shutdown_timeout_ms);
                    self.shutdown_deadline = Some(Instant::now() + timeout);
                }
            }
        }
    }

    // ---------------------------------------------------------------- discovery

    // ---------------------------------------------------------------- reading

    // ---------------------------------------------------------------- sending

    // ---------------------------------------------------------------- finishing

    // ---------------------------------------------------------------- heartbeats

    // ---------------------------------------------------------------- checkpoints

    fn update_gauges(&mut self, now: Instant) {
        debug_assert_eq!(
            self.open_count,
            self.files.values().filter(|f| f.reader.is_some()).count(),
            "open descriptor count out of step"
        );
        let inflight = self.inflight_bytes + self.outbox.buffered;
        metrics::gauge!(m::INFLIGHT_BYTES).set(inflight as f64);
        metrics::gauge!(m::INFLIGHT_MESSAGES).set(self.inflight_msgs as f64);
        metrics::gauge!(m::FILES_TRACKED).set(self.files.len() as f64);
        metrics::gauge!(m::FILES_OPEN).set(self.open_count as f64);
        metrics::gauge!(m::CHECKPOINT_AGE).set(now.duration_since(self.last_checkpoint_ok).as_secs_f64());
        self.stats.inflight_bytes.store(inflight as u64, Ordering::Relaxed);
        if matches!(self.mode, Mode::Backfill { .. } | Mode::Once) {
            let active: u64 = self.files.values().map(|f| f.disk_pos.min(f.disk_size)).sum();
            self.stats.backfill_done_bytes.store(self.backfill_completed_bytes + active, Ordering::Relaxed);
        }
    }

    /// Test hook: the most open batches (distinct hosts) any file has now.
    #[doc(hidden)]
    pub fn debug_max_open_batches(&self) -> usize {
        self.files.values().filter_map(|f| f.out.as_ref()).map(FileOut::open_batches).max().unwrap_or(0)
    }

    /// Test hook: the sum of tracked files and open descriptors.
    #[doc(hidden)]
    pub fn debug_counts(&self) -> (usize, usize) {
        (self.files.len(), self.open_count)
    }

    /// Nothing to read, nothing unacknowledged, no rotated file left to finish.
    #[doc(hidden)]
    pub fn settled(&self) -> bool {
        self.restart_at.is_none()
            && self.inflight_msgs == 0
            && self.outbox.buffered == 0
            && self.backfill_queue.is_empty()
            && self.files.values().all(|f| f.idle() && (f.kind == Kind::Live || f.out.is_none() && !f.lost))
    }

    /// Test hook: why the collector is not settled.
    #[doc(hidden)]
    pub fn debug_state(&self) -> String {
        format!(
            "restart_at {:?} inflight {} buffered {} backfill {} files {:?}",
            self.restart_at,
            self.inflight_msgs,
            self.outbox.buffered,
            self.backfill_queue.len(),
            self.files.values().map(|f| (f.idle(), f.kind == Kind::Live, f.out.is_none(), f.lost)).collect::<Vec<_>>()
        )
    }

    /// Test hook: makes the next step rescan the globs and poll every file.
    #[doc(hidden)]
    pub fn rescan_now(&mut self) {
        self.last_scan = None;
        self.wake = true;
    }

    /// Test hook: runs discovery only (opens new files without reading them).
    #[doc(hidden)]
    pub fn discover_now(&mut self) -> Result<(), CollectError> {
        if !self.started {
            self.start()?;
        }
        self.discover(Instant::now());
        Ok(())
    }

    /// Paths of tracked files (diagnostics and tests).
    #[doc(hidden)]
    pub fn tracked_paths(&self) -> HashSet<PathBuf> {
        self.files.values().map(|f| f.path.clone()).collect()
    }
}

/// True when the file has not been modified for `wait`.
fn quiet(f: &Tracked, wait: Duration) -> bool {
    let Some(r) = &f.reader else { return true };
    let Ok(md) = r.file().metadata() else {
        return true;
    };
    let Ok(mtime) = md.modified() else {
        return true;
    };
    SystemTime::now().duration_since(mtime).unwrap_or(Duration::ZERO) >= wait
}

/// Decompressed head of a gzip file, read without moving any shared file cursor.
fn gz_head(file: &File, max: usize) -> Vec<u8> {
    struct At<'a> {
        file: &'a File,
        pos: u64,
    }
    impl io::Read for At<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            use std::os::unix::fs::FileExt;
            let n = self.file.read_at(buf, self.pos)?;
            self.pos += n as u64;
            Ok(n)
        }
    }
    fingerprint::head_of_reader(MultiGzDecoder::new(At { file, pos: 0 }), max)
}
