//! The collector's loop: discover files, follow them through rotations, read, batch, send,
//! advance checkpoints on acknowledgement.
//!
//! One thread owns all file state; the Kafka client and the inotify watcher talk to it
//! through one event channel (acknowledgements, wake-ups, shutdown). Each [`Collector::step`]
//! handles events, rescans the globs when due, reads what is new (while the in-flight
//! budget allows), sends full or lingering batches, finishes rotated files whose every line
//! is acknowledged, and writes checkpoints.
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

    // INVARIANT: a file's pending unit is removed only here, on a successful acknowledgement
    // from the current producer session; checkpoints are computed from what remains pending.
    fn handle_ack(&mut self, ack: Ack) {
        let t = ack.token;
        if t.gen != self.gen {
            return;
        }
        self.inflight_bytes = self.inflight_bytes.saturating_sub(t.bytes as usize);
        self.inflight_msgs = self.inflight_msgs.saturating_sub(1);
        self.inflight_sent.remove(&t.seq);
        match ack.result {
            Ok(()) => {
                self.restart_backoff = Duration::ZERO;
                let topic = match t.topic {
                    Topic::Records => "records",
                    Topic::Rejects => "rejects",
                    Topic::Heartbeats => "heartbeats",
                };
                metrics::counter!(m::MESSAGES_ACKED, "topic" => topic).increment(1);
                if t.topic == Topic::Heartbeats {
                    return;
                }
                if let Some(f) = self.files.get_mut(&t.file) {
                    if let Some(out) = &mut f.out {
                        if let Some(ts) = out.acked(t.offset) {
                            let d = &mut self.delivered_max[f.source];
                            *d = Some(d.map_or(ts, |m| m.max(ts)));
                        }
                    }
                    if t.topic == Topic::Records {
                        self.sources[f.source].metrics.records_acked.increment(t.lines as u64);
                        self.stats.records_acked.fetch_add(t.lines as u64, Ordering::Relaxed);
                    } else {
                        self.stats.rejects_acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(e) if t.topic == Topic::Heartbeats => {
                // Heartbeats have their own producer: a lost one is followed by the next.
                metrics::counter!(m::HEARTBEAT_ERRORS).increment(1);
                warn!(error = %e, topic = %self.cfg.kafka.heartbeat_topic, "heartbeat not delivered");
            }
            Err(e) => {
                metrics::counter!(m::DELIVERY_ERRORS).increment(1);
                warn!(error = %e, "delivery failed; restarting the producer from the checkpoints");
                self.schedule_restart();
            }
        }
    }

    /// `[kafka] message_timeout_ms`: a message unacknowledged this long ends the session. The
    /// restart stops sending at once and drops the producer (purging its queue), so nothing
    /// after the late message is written by this session once it is given up; librdkafka's
    /// own timeout stays infinite because it would skip the message and go on (`deliver.rs`).
    fn check_deadline(&mut self, now: Instant) {
        let timeout = self.cfg.kafka.message_timeout_ms;
        if timeout == 0 || self.restart_at.is_some() {
            return;
        }
        let Some((_, &sent)) = self.inflight_sent.first_key_value() else { return };
        if now.duration_since(sent) >= Duration::from_millis(timeout) {
            metrics::counter!(m::DELIVERY_ERRORS).increment(1);
            warn!(
                timeout_ms = timeout,
                messages = self.inflight_msgs,
                "message unacknowledged past kafka.message_timeout_ms; starting a new producer session from the checkpoints"
            );
            self.schedule_restart();
        }
    }

    /// The first restart is immediate; repeated failures without a success in between
    /// back off up to 30 s.
    fn schedule_restart(&mut self) {
        if self.restart_at.is_none() {
            self.restart_at = Some(Instant::now() + self.restart_backoff);
            self.restart_backoff =
                (self.restart_backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
        }
    }

    /// A new producer session: everything not acknowledged is read and sent again.
    fn restart(&mut self, now: Instant) {
        self.gen = self.gen.wrapping_add(1);
        metrics::counter!(m::PRODUCER_RESTARTS).increment(1);
        if let Err(e) = self.sink.restart() {
            warn!(error = %e, "producer restart failed; retrying");
            self.restart_backoff =
                (self.restart_backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
            self.restart_at = Some(now + self.restart_backoff);
            return;
        }
        self.restart_at = None;
        self.stats.producer_restarts.fetch_add(1, Ordering::Relaxed);
        self.inflight_bytes = 0;
        self.inflight_msgs = 0;
        self.inflight_sent.clear();
        self.outbox.ready.clear();
        for f in self.files.values_mut() {
            let (off, line) = f.ack_position();
            if let Some(out) = &mut f.out {
                out.clear(&mut self.outbox);
            }
            f.split.reset(off, line);
            f.finishing = false;
            f.eof = false;
            if let Some(r) = &mut f.reader {
                if let Err(e) = r.skip_to(off) {
                    warn!(path = %f.path.display(), error = %e, "cannot rewind; reopening");
                    f.reader = None;
                    self.open_count -= 1;
                }
            } else if f.lost {
                warn!(path = %f.path.display(), offset = off, "file is gone: unacknowledged lines after this offset cannot be re-sent");
            }
        }
        self.outbox.buffered = 0;
        self.more_to_read = true;
    }

    // ---------------------------------------------------------------- discovery

    /// Matches the globs: new files are tracked, live files no longer at their path rotated.
    fn discover(&mut self, _now: Instant) {
        let mut seen: HashMap<PathBuf, Key> = HashMap::new();
        let mut new_dirs = Vec::new();
        for si in 0..self.sources.len() {
            for pi in 0..self.sources[si].patterns.len() {
                let found = self.sources[si].patterns[pi].discover();
                for path in found {
                    let Ok(md) = fs::metadata(&path) else {
                        continue;
                    };
                    let key = (md.dev(), md.ino());
                    seen.insert(path.clone(), key);
                    if let Some(&id) = self.by_key.get(&key) {
                        if let Some(f) = self.files.get_mut(&id) {
                            if f.path != path && f.kind != Kind::Final {
                                debug!(from = %f.path.display(), to = %path.display(), "file renamed within the globs");
                                f.path = path;
                            }
                            // An open file's shrinking is the poll's to notice (truncation).
                            f.size = if f.reader.is_some() { f.size.max(md.len()) } else { md.len() };
                        }
                        continue;
                    }
                    if self.skip.get(&key) == Some(&md.len()) {
                        continue;
                    }
                    let site = self.sources[si].patterns[pi].matches(&path).and_then(|m| m.site);
                    if let Some(parent) = path.parent() {
                        new_dirs.push(parent.to_path_buf());
                    }
                    self.add_file(si, site, path, Kind::Live, None);
                }
            }
        }
        for f in self.files.values_mut() {
            if f.kind == Kind::Live && seen.get(&f.path) != Some(&f.key) {
                let gone = !seen.contains_key(&f.path);
                let kind = if gone { "delete" } else { "rename" };
                info!(path = %f.path.display(), kind, "file rotated away; reading it to the end");
                self.sources[f.source].metrics.rotation(kind);
                f.kind = Kind::Rotated;
            }
        }
        if !new_dirs.is_empty() {
            self.watch_dirs();
        }
    }

    fn watch_dirs(&mut self) {
        let Some(w) = &mut self.watcher else { return };
        for s in &self.sources {
            for p in &s.patterns {
                w.watch(&p.root());
            }
        }
        for f in self.files.values() {
            if let Some(parent) = f.path.parent() {
                w.watch(parent);
            }
        }
    }

    /// Starts tracking a file; identifies it when its first line is there.
    fn add_file(&mut self, source: usize, site: Option<String>, path: PathBuf, kind: Kind, start: Option<(u64, u64)>) {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                debug!(path = %path.display(), error = %e, "cannot open");
                return;
            }
        };
        self.track_open(file, source, site, path, kind, start);
    }

    fn track_open(
        &mut self,
        file: File,
        source: usize,
        site: Option<String>,
        path: PathBuf,
        kind: Kind,
        start: Option<(u64, u64)>,
    ) {
        let Ok(md) = file.metadata() else { return };
        let key = (md.dev(), md.ino());
        if self.by_key.contains_key(&key) {
            return;
        }
        let reader = match Reader::open(file, 0) {
            Ok(r) => r,
            Err(e) => {
                debug!(path = %path.display(), error = %e, "cannot read");
                return;
            }
        };
        let kind = if reader.is_gzip() { Kind::Final } else { kind };
        let id = self.next_id;
        self.next_id += 1;
        let f = Tracked {
            source,
            site,
            path,
            key,
            kind,
            reader: Some(reader),
            split: LineSplitter::new(0, 0, self.limits.max_line),
            out: None,
            size: md.len(),
            eof: false,
            last_read: Instant::now(),
            finishing: false,
            lost: false,
            retry_at: None,
            disk_size: md.len(),
            disk_pos: 0,
        };
        self.files.insert(id, f);
        self.by_key.insert(key, id);
        self.open_count += 1;
        self.identify(id, start);
        let close = self.open_count > self.cfg.limits.max_open_files;
        if let Some(f) = self.files.get_mut(&id) {
            if close && f.kind == Kind::Live && f.reader.is_some() {
                f.reader = None;
                self.open_count -= 1;
            }
        }
    }

    /// Computes the fingerprint and decides where reading starts; drops the file when it is
    /// complete already, owned by another process, or a copy of a tracked file.
    fn identify(&mut self, id: u64, start: Option<(u64, u64)>) {
        let fp_bytes = self.cfg.tail.fingerprint_bytes;
        let Some(f) = self.files.get_mut(&id) else {
            return;
        };
        if f.out.is_some() {
            return;
        }
        let Some(reader) = &f.reader else { return };
        let is_final = f.kind != Kind::Live;
        let head = match reader {
            Reader::Plain(file) => match fingerprint::head_of_file(file, fp_bytes) {
                Ok(h) => h,
                Err(_) => return,
            },
            Reader::Gz { .. } => gz_head(reader.file(), fp_bytes),
        };
        let Some(fp) = fingerprint::of_head(&head, fp_bytes, is_final, f.site.as_deref()) else {
            if is_final && head.is_empty() {
                // An empty final file: nothing to send, nothing to remember.
                self.forget(id);
            }
            return;
        };
        let key = f.key;
        let size = f.size;
        let path = f.path.clone();
        if let Some(&other) = self.by_fp.get(&fp) {
            if other != id {
                debug!(path = %path.display(), fingerprint = %fingerprint::hex(fp), "same content as a tracked file; ignoring the copy");
                self.skip.insert(key, size);
                self.forget(id);
                return;
            }
        }
        let (offset, line) = match (start, self.store.lookup(fp)) {
            (_, Lookup::Completed(_)) => {
                // Debug, like every per-file line: `collect` prints one summary line.
                debug!(path = %path.display(), "already sent completely; skipping");
                self.skip.insert(key, size);
                self.stats.files_skipped.fetch_add(1, Ordering::Relaxed);
                // Skipped counts as read for the progress display.
                self.backfill_completed_bytes += self.files.get(&id).map_or(0, |f| f.disk_size);
                self.forget(id);
                return;
            }
            (_, Lookup::OwnedElsewhere) => {
                info!(path = %path.display(), "being collected by the other checkpoint role; skipping");
                self.skip.insert(key, size);
                self.stats.files_skipped.fetch_add(1, Ordering::Relaxed);
                self.forget(id);
                return;
            }
            (Some(s), _) => s,
            (None, Lookup::Active(e)) => {
                let Some(f) = self.files.get(&id) else { return };
                if f.kind == Kind::Live && e.offset > f.size {
                    warn!(path = %path.display(), checkpoint = e.offset, size = f.size, "file is shorter than its checkpoint; reading it from the start");
                    (0, 0)
                } else {
                    (e.offset, e.line)
                }
            }
            (None, Lookup::New) => (0, 0),
        };
        let Some(f) = self.files.get_mut(&id) else {
            return;
        };
        f.split.reset(offset, line);
        if let Some(r) = &mut f.reader {
            if let Err(e) = r.skip_to(offset) {
                warn!(path = %path.display(), error = %e, "cannot seek");
                f.reader = None;
                self.open_count -= 1;
            }
        }
        let path_str = path.display().to_string();
        f.out = Some(FileOut::new(id, fp, path_str, f.site.clone()));
        self.by_fp.insert(fp, id);
        debug!(path = %path.display(), fingerprint = %fingerprint::hex(fp), offset, "tracking");
    }

    /// Stops tracking without recording anything.
    fn forget(&mut self, id: u64) {
        if let Some(f) = self.files.remove(&id) {
            if self.by_key.get(&f.key) == Some(&id) {
                self.by_key.remove(&f.key);
            }
            if let Some(fp) = f.fp() {
                if self.by_fp.get(&fp) == Some(&id) {
                    self.by_fp.remove(&fp);
                }
            }
            if f.reader.is_some() {
                self.open_count -= 1;
            }
        }
    }

    /// Checkpointed files that the globs did not find (rotated while the collector was
    /// down): look for them next to their old path, by fingerprint.
    fn locate_missing(&mut self) {
        let missing: Vec<ActiveEntry> =
            self.store.active().filter(|e| !self.by_fp.contains_key(&e.fingerprint)).cloned().collect();
        for e in missing {
            let Some(si) = self.sources.iter().position(|s| s.name == e.source) else {
                continue;
            };
            if let Some((path, _)) = self.locate(e.fingerprint, e.site.as_deref(), &e.path, None) {
                info!(path = %path.display(), was = %e.path.display(), offset = e.offset, "found a rotated file by fingerprint; finishing it");
                self.add_file(si, e.site.clone(), path, Kind::Rotated, Some((e.offset, e.line)));
            }
        }
    }

    /// Finds the file with fingerprint `fp` next to `near` (same directory, name starting
    /// with `near`'s name: `access.log.1`, `access.log-20250101.gz`). Plain files first.
    fn locate(&self, fp: u64, site: Option<&str>, near: &Path, exclude: Option<Key>) -> Option<(PathBuf, Key)> {
        let dir = near.parent()?;
        let base = near.file_name()?.to_str()?;
        let mut cands: Vec<(bool, PathBuf, Key)> = Vec::new();
        for e in fs::read_dir(dir).ok()?.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(base) {
                continue;
            }
            let path = e.path();
            let Ok(md) = fs::metadata(&path) else {
                continue;
            };
            if !md.is_file() {
                continue;
            }
            let key = (md.dev(), md.ino());
            if Some(key) == exclude || self.by_key.contains_key(&key) {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            cands.push((super::reader::is_gzip(&file), path, key));
        }
        cands.sort_by(|a, b| (a.0, a.1.as_os_str().len(), &a.1).cmp(&(b.0, b.1.as_os_str().len(), &b.1)));
        let fp_bytes = self.cfg.tail.fingerprint_bytes;
        for (gz, path, key) in cands {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let head = if gz {
                gz_head(&file, fp_bytes)
            } else {
                fingerprint::head_of_file(&file, fp_bytes).unwrap_or_default()
            };
            if fingerprint::of_head(&head, fp_bytes, true, site) == Some(fp) {
                return Some((path, key));
            }
        }
        None
    }

    fn plan_backfill(&mut self, paths: &[PathBuf], source: Option<&str>) -> Result<(), CollectError> {
        let forced = match source {
            Some(name) => {
                Some(self.sources.iter().position(|s| s.name == name).ok_or_else(|| CollectError::Backfill {
                    path: PathBuf::from(name),
                    msg: "no source with this name in the config".into(),
                })?)
            }
            None => None,
        };
        let mut total = 0;
        for p in paths {
            let abs = if p.is_absolute() {
                p.clone()
            } else {
                std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.clone())
            };
            let md = fs::metadata(&abs).map_err(|e| CollectError::Backfill { path: p.clone(), msg: e.to_string() })?;
            if !md.is_file() {
                return Err(CollectError::Backfill { path: p.clone(), msg: "not a regular file".into() });
            }
            let mut hit = None;
            for (si, s) in self.sources.iter().enumerate() {
                if forced.is_some_and(|f| f != si) {
                    continue;
                }
                if let Some(m) = s.patterns.iter().find_map(|pat| pat.matches_rotated(&abs)) {
                    hit = Some((si, m.site));
                    break;
                }
            }
            let (si, site) = match (hit, forced) {
                (Some(h), _) => h,
                (None, Some(si)) if self.sources[si].host_from == super::config::HostFrom::Field => (si, None),
                (None, Some(_)) => {
                    return Err(CollectError::Backfill {
                        path: p.clone(),
                        msg: "the source takes the host from the path, but the path does not match its patterns".into(),
                    })
                }
                (None, None) => {
                    return Err(CollectError::Backfill {
                        path: p.clone(),
                        msg: "matches no source's paths (also allowing rotation suffixes); name one with --source"
                            .into(),
                    })
                }
            };
            total += md.len();
            self.backfill_queue.push_back((si, site, abs));
        }
        self.stats.backfill_total_bytes.store(total, Ordering::Relaxed);
        Ok(())
    }

    fn activate_backfill(&mut self) {
        while !self.backfill_queue.is_empty() && self.files.len() < MAX_ACTIVE_BACKFILL {
            let Some((si, site, path)) = self.backfill_queue.pop_front() else {
                break;
            };
            let before = self.next_id;
            self.add_file(si, site, path.clone(), Kind::Final, None);
            if self.next_id == before || !self.files.contains_key(&before) {
                // Skipped (already sent) or unreadable: count its bytes as done.
                self.backfill_completed_bytes += fs::metadata(&path).map_or(0, |m| m.len());
            }
        }
    }

    // ---------------------------------------------------------------- reading

    fn poll_files(&mut self, now: Instant) {
        let mut buf = std::mem::take(&mut self.buf);
        self.more_to_read = false;
        let ids: Vec<u64> = self.files.keys().copied().collect();
        // Every file is looked at even without budget: rotations and truncations are noticed
        // while the broker is down; only reading waits.
        for id in ids {
            self.poll_file(id, now, &mut buf);
            self.send_ready();
        }
        self.buf = buf;
    }

    fn poll_file(&mut self, id: u64, now: Instant, buf: &mut [u8]) {
        let Some(f) = self.files.get(&id) else { return };
        if f.finishing || f.lost || f.retry_at.is_some_and(|t| now < t) {
            return;
        }
        if f.out.is_none() {
            self.identify(id, None);
        }
        let Some(f) = self.files.get(&id) else { return };
        let Some(fp) = f.fp() else { return };
        if f.reader.is_none() {
            let wants = match f.kind {
                Kind::Live => f.size != f.split.scan_pos(),
                Kind::Rotated | Kind::Final => true,
            };
            if !wants || !self.ensure_fd_slot(id) {
                return;
            }
            self.reopen(id, fp);
        }
        let Some(f) = self.files.get_mut(&id) else {
            return;
        };
        let Some(reader) = &mut f.reader else { return };
        if let Reader::Plain(file) = reader {
            let Ok(md) = file.metadata() else { return };
            // A log only shrinks when truncated (even before we read what it had).
            let shrunk = md.len() < f.size || md.len() < f.split.scan_pos();
            f.size = md.len();
            if shrunk && f.kind != Kind::Final {
                self.truncated(id);
                return;
            }
            // Truncated and written again up to or past our position before we looked: the
            // size alone cannot tell, the first line can. Checked before every read.
            // (Sizes and timestamps cannot tell a same-size rewrite within one clock tick;
            // reading the first line costs one small pread from the page cache.)
            if f.kind != Kind::Final {
                let fp_bytes = self.cfg.tail.fingerprint_bytes;
                let head = fingerprint::head_of_file(file, fp_bytes).unwrap_or_default();
                let changed = match fingerprint::of_head(&head, fp_bytes, false, f.site.as_deref()) {
                    Some(now_fp) => now_fp != fp,
                    // No complete first line: changed, unless the file was identified by
                    // its whole (final) content.
                    None => f.kind == Kind::Live,
                };
                if changed {
                    self.truncated(id);
                    return;
                }
            }
            if md.nlink() == 0 && f.kind == Kind::Live {
                info!(path = %f.path.display(), "file deleted; reading it to the end");
                self.sources[f.source].metrics.rotation("delete");
                f.kind = Kind::Rotated;
            }
            if md.len() == f.split.scan_pos() {
                f.eof = true;
                return;
            }
            // It grew since the last read. Said here, not only after a read: while reading
            // waits for the broker (backpressure), a stale `eof` would let a rotated file be
            // finished before its last lines were read (found by the model test).
            f.eof = false;
        }
        let quota = 4 * buf.len();
        let mut done = 0;
        let src = &self.sources[f.source];
        while done < quota {
            if self.restart_at.is_some() {
                break;
            }
            if self.cfg.limits.max_inflight_bytes.as_usize() <= self.inflight_bytes + self.outbox.buffered {
                self.more_to_read = true;
                break;
            }
            let Some(reader) = &mut f.reader else { break };
            // Read no more than the budget allows, so memory stays bounded (approximately:
            // one read's lines may encode a little larger than they were).
            let budget = self.cfg.limits.max_inflight_bytes.as_usize() - self.inflight_bytes - self.outbox.buffered;
            let want = buf.len().min(budget);
            let n = match reader.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) => {
                    warn!(path = %f.path.display(), error = %e, "read failed; retrying in a second");
                    f.reader = None;
                    self.open_count -= 1;
                    f.retry_at = Some(now + Duration::from_secs(1));
                    break;
                }
            };
            if n == 0 {
                f.eof = true;
                break;
            }
            f.eof = false;
            f.last_read = now;
            done += n;
            src.metrics.bytes_read.increment(n as u64);
            self.stats.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
            let Some(out) = f.out.as_mut() else { break };
            let mut lines = 0u64;
            let outbox = &mut self.outbox;
            let lim = &self.limits;
            f.split.feed(&buf[..n], &mut |piece| {
                lines += 1;
                out.take(piece, src, lim, outbox, now);
            });
            self.stats.lines.fetch_add(lines, Ordering::Relaxed);
        }
        if done >= quota {
            self.more_to_read = true;
        }
        if let Some(r) = &mut f.reader {
            f.disk_pos = r.disk_pos();
        }
    }

    /// Makes room for one more open file by closing the longest-idle live file at EOF.
    fn ensure_fd_slot(&mut self, want: u64) -> bool {
        if self.open_count < self.cfg.limits.max_open_files {
            return true;
        }
        let victim = self
            .files
            .iter()
            .filter(|(id, f)| **id != want && f.reader.is_some() && f.kind == Kind::Live && f.eof && !f.finishing)
            .min_by_key(|(_, f)| f.last_read)
            .map(|(id, _)| *id);
        match victim {
            Some(v) => {
                if let Some(f) = self.files.get_mut(&v) {
                    f.reader = None;
                    self.open_count -= 1;
                }
                true
            }
            None => false,
        }
    }

    fn close_idle(&mut self, now: Instant) {
        let idle = Duration::from_millis(self.cfg.tail.idle_close_ms);
        for f in self.files.values_mut() {
            if f.reader.is_some() && f.kind == Kind::Live && f.eof && now.duration_since(f.last_read) >= idle {
                f.reader = None;
                self.open_count -= 1;
            }
        }
    }

    /// Reopens a closed file by path, checking it is still the same content; otherwise the
    /// file moved (rotation, truncation) while closed and is looked up by fingerprint.
    fn reopen(&mut self, id: u64, fp: u64) {
        let fp_bytes = self.cfg.tail.fingerprint_bytes;
        let Some(f) = self.files.get_mut(&id) else {
            return;
        };
        let same = File::open(&f.path).ok().and_then(|file| {
            let md = file.metadata().ok()?;
            if (md.dev(), md.ino()) != f.key || md.len() < f.split.scan_pos() {
                return None;
            }
            let head = fingerprint::head_of_file(&file, fp_bytes).ok()?;
            (fingerprint::of_head(&head, fp_bytes, f.kind != Kind::Live, f.site.as_deref()) == Some(fp)).then_some(file)
        });
        match same.map(|file| Reader::open(file, f.split.scan_pos())) {
            Some(Ok(r)) => {
                f.reader = Some(r);
                f.eof = false;
                self.open_count += 1;
            }
            _ => {
                let key = f.key;
                self.relocate(id, Some(key), "moved while closed");
            }
        }
    }

    /// The file was truncated in place (`copytruncate`): finish its old content from the copy.
    fn truncated(&mut self, id: u64) {
        let Some(f) = self.files.get(&id) else { return };
        info!(path = %f.path.display(), "file truncated (copytruncate); finishing the old content from its copy");
        self.sources[f.source].metrics.rotation("truncate");
        let (key, kind, source, site, path) = (f.key, f.kind, f.source, f.site.clone(), f.path.clone());
        // The truncated file holds new content now: keep its descriptor for that (it may
        // have been renamed already, out of the globs' sight).
        let again = f.reader.as_ref().and_then(|r| r.file().try_clone().ok());
        self.relocate(id, Some(key), "truncated");
        if let Some(file) = again {
            self.track_open(file, source, site, path, kind, None);
        }
        self.last_scan = None;
    }

    /// Continues a file from wherever its content is now (found by fingerprint), or gives it
    /// up as lost. The old `(dev, inode)` no longer belongs to it.
    fn relocate(&mut self, id: u64, exclude: Option<Key>, why: &str) {
        let Some(f) = self.files.get(&id) else { return };
        let Some(fp) = f.fp() else { return };
        let found = self.locate(fp, f.site.as_deref(), &f.path, exclude);
        let Some(f) = self.files.get_mut(&id) else {
            return;
        };
        if self.by_key.get(&f.key) == Some(&id) {
            self.by_key.remove(&f.key);
        }
        if f.reader.take().is_some() {
            self.open_count -= 1;
        }
        let opened = found.and_then(|(path, key)| {
            let file = File::open(&path).ok()?;
            let r = Reader::open(file, f.split.scan_pos()).ok()?;
            Some((path, key, r))
        });
        match opened {
            Some((path, key, r)) => {
                info!(from = %f.path.display(), to = %path.display(), why, "continuing the file from its new place");
                f.kind = if r.is_gzip() || why == "truncated" { Kind::Final } else { Kind::Rotated };
                f.size = r.file().metadata().map_or(0, |m| m.len());
                f.path = path;
                f.key = key;
                f.reader = Some(r);
                f.eof = false;
                self.by_key.insert(key, id);
                self.open_count += 1;
            }
            None => {
                warn!(
                    path = %f.path.display(),
                    offset = f.split.scan_pos(),
                    why,
                    "file content not found by fingerprint; lines after this offset that were not read are lost"
                );
                self.sources[f.source].metrics.lost.increment(1);
                f.lost = true;
                f.kind = Kind::Final;
                f.eof = true;
            }
        }
    }

    // ---------------------------------------------------------------- sending

    fn seal_lingering(&mut self, now: Instant, force: bool) {
        if self.outbox.buffered == 0 {
            return;
        }
        let linger = if force { None } else { Some(Duration::from_millis(self.cfg.limits.linger_ms)) };
        for f in self.files.values_mut() {
            if let Some(out) = &mut f.out {
                if !out.batches.is_empty() {
                    out.seal_lingering(linger, now, &mut self.outbox);
                }
            }
        }
    }

    fn send_ready(&mut self) {
        if self.outbox.ready.is_empty() {
            return;
        }
        let ready = std::mem::take(&mut self.outbox.ready);
        let now = Instant::now();
        for r in ready {
            if self.restart_at.is_some() {
                break; // everything unacknowledged is re-read after the restart
            }
            self.next_seq += 1;
            let token = Token {
                gen: self.gen,
                seq: self.next_seq,
                file: r.file,
                offset: r.offset,
                bytes: r.payload.len() as u32,
                lines: r.lines,
                topic: r.topic,
            };
            match self.sink.send(r.topic, &r.key, &r.payload, token) {
                Ok(()) => {
                    self.outbox.buffered = self.outbox.buffered.saturating_sub(r.payload.len());
                    self.inflight_bytes += r.payload.len();
                    self.inflight_msgs += 1;
                    self.inflight_sent.insert(token.seq, now);
                }
                Err(e) => {
                    metrics::counter!(m::DELIVERY_ERRORS).increment(1);
                    warn!(error = %e, "send failed; restarting the producer from the checkpoints");
                    self.schedule_restart();
                }
            }
        }
    }

    // ---------------------------------------------------------------- finishing

    fn finish_files(&mut self, now: Instant) {
        let rotate_wait = Duration::from_millis(self.cfg.tail.rotate_wait_ms);
        let ids: Vec<u64> = self.files.keys().copied().collect();
        for id in ids {
            let Some(f) = self.files.get_mut(&id) else {
                continue;
            };
            if !f.finishing {
                let ready = match f.kind {
                    Kind::Live => false,
                    Kind::Final => f.eof,
                    Kind::Rotated => f.eof && quiet(f, rotate_wait),
                };
                if !ready || self.restart_at.is_some() {
                    continue;
                }
                if f.out.is_none() {
                    // Never identified (its first line never completed): final now.
                    self.identify(id, None);
                }
                let Some(f) = self.files.get_mut(&id) else {
                    continue;
                };
                let Some(out) = f.out.as_mut() else {
                    if f.reader.is_some() {
                        self.open_count -= 1;
                    }
                    let key = f.key;
                    self.files.remove(&id);
                    self.by_key.remove(&key);
                    continue;
                };
                let src = &self.sources[f.source];
                let outbox = &mut self.outbox;
                let lim = &self.limits;
                f.split.flush(&mut |piece| out.take(piece, src, lim, outbox, now));
                out.seal_lingering(None, now, outbox);
                f.finishing = true;
            }
            let Some(f) = self.files.get(&id) else {
                continue;
            };
            let Some(out) = &f.out else { continue };
            if !(f.finishing && out.pending.is_empty() && out.batches.is_empty()) {
                continue;
            }
            let done = DoneEntry {
                fingerprint: out.fp,
                path: f.path.clone(),
                offset: f.split.read_pos(),
                line: f.split.lines(),
                finished: now_unix(),
            };
            // Debug: a backfill completes hundreds of files; `collect` prints one summary line.
            debug!(path = %f.path.display(), lines = done.line, bytes = done.offset, "file complete");
            self.sources[f.source].metrics.completed.increment(1);
            self.stats.files_completed.fetch_add(1, Ordering::Relaxed);
            self.backfill_completed_bytes += f.disk_size;
            self.store.complete(done);
            self.forget(id);
        }
    }

    // ---------------------------------------------------------------- heartbeats

    fn heartbeats_on(&self) -> bool {
        // A backfill reads archives of a source that a tailing collector may be following:
        // only the tailing collector speaks for the source.
        self.cfg.collector.heartbeat_interval_ms > 0 && !matches!(self.mode, Mode::Backfill { .. })
    }

    fn heartbeat_due(&mut self, now: Instant) {
        if !self.heartbeats_on() || self.restart_at.is_some() {
            return;
        }
        let every = Duration::from_millis(self.cfg.collector.heartbeat_interval_ms);
        if self.last_heartbeat.is_none_or(|t| now.duration_since(t) >= every) {
            self.heartbeat(now);
        }
    }

    /// The heartbeats of every source as they stand now, from acknowledged state only.
    pub fn heartbeats(&self, now: Instant) -> Vec<Heartbeat> {
        let sent_at_us = self.clock_origin.0 + now.saturating_duration_since(self.clock_origin.1).as_micros() as i64;
        let mut out: Vec<Heartbeat> = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| Heartbeat {
                version: HEARTBEAT_VERSION,
                server: self.cfg.collector.server.clone(),
                source: s.name.clone(),
                sent_at_us,
                delivered_through_us: self.delivered_max[i].unwrap_or(0).max(0),
                position: 0,
                idle: true,
                files: 0,
            })
            .collect();
        let mut through: Vec<Option<i64>> = vec![None; self.sources.len()];
        for f in self.files.values() {
            let h = &mut out[f.source];
            h.files += 1;
            h.position += f.ack_position().0;
            let Some(o) = &f.out else { continue };
            // A file constrains its source unless it is read to its end with everything read
            // acknowledged. Then: just before its oldest unacknowledged record, but never
            // past the newest acknowledged one of the source (a heartbeat claims acknowledged
            // data only); lines not read yet are taken to be no older than the file's newest
            // acknowledged record, and with none acknowledged nothing is claimed.
            if f.idle() && o.pending.is_empty() && o.batches.is_empty() {
                continue;
            }
            let acked = self.delivered_max[f.source].unwrap_or(0);
            let t = match o.undelivered_min_ts() {
                Some(min) => min.saturating_sub(1).min(acked),
                None => o.acked_max_ts.unwrap_or(0).min(acked),
            };
            let cur = &mut through[f.source];
            *cur = Some(cur.map_or(t, |c| c.min(t)));
        }
        for (h, t) in out.iter_mut().zip(through) {
            if let Some(t) = t {
                h.idle = false;
                h.delivered_through_us = t.max(0);
            }
        }
        out
    }

    /// Sends one heartbeat per source (acknowledged like any message; not re-sent).
    fn heartbeat(&mut self, now: Instant) {
        self.last_heartbeat = Some(now);
        for h in self.heartbeats(now) {
            // Strings and integers always serialize.
            let payload = serde_json::to_vec(&h).unwrap_or_default();
            self.next_seq += 1;
            let token = Token {
                gen: self.gen,
                seq: self.next_seq,
                file: 0,
                offset: 0,
                bytes: payload.len() as u32,
                lines: 0,
                topic: Topic::Heartbeats,
            };
            match self.sink.send(Topic::Heartbeats, h.key().as_bytes(), &payload, token) {
                Ok(()) => {
                    metrics::counter!(m::HEARTBEATS_SENT, "source" => h.source.clone()).increment(1);
                    metrics::gauge!(m::DELIVERED_THROUGH, "source" => h.source.clone())
                        .set(h.delivered_through_us as f64 / 1e6);
                    self.inflight_bytes += payload.len();
                    self.inflight_msgs += 1;
                }
                Err(e) => {
                    metrics::counter!(m::HEARTBEAT_ERRORS).increment(1);
                    warn!(error = %e, "sending a heartbeat failed");
                    return;
                }
            }
        }
    }

    // ---------------------------------------------------------------- checkpoints

    fn checkpoint(&mut self, now: Instant, force: bool) {
        let every = Duration::from_millis(self.cfg.tail.checkpoint_interval_ms);
        if !force && now.duration_since(self.last_checkpoint) < every {
            return;
        }
        self.last_checkpoint = now;
        let mut lag: Vec<u64> = vec![0; self.sources.len()];
        for f in self.files.values() {
            let Some(fp) = f.fp() else { continue };
            let (offset, line) = f.ack_position();
            lag[f.source] += f.size.saturating_sub(offset);
            self.store.update(ActiveEntry {
                fingerprint: fp,
                source: self.sources[f.source].name.clone(),
                site: f.site.clone(),
                path: f.path.clone(),
                dev: f.key.0,
                inode: f.key.1,
                offset,
                line,
                size: f.size,
                updated: 0,
            });
        }
        for (s, l) in self.sources.iter().zip(lag) {
            s.metrics.lag.set(l as f64);
        }
        let by_fp = &self.by_fp;
        self.store.prune(self.cfg.tail.completed_retention_days, |fp| by_fp.contains_key(&fp));
        match self.store.flush() {
            Ok(()) => self.last_checkpoint_ok = now,
            Err(e) => {
                metrics::counter!(m::CHECKPOINT_ERRORS).increment(1);
                error!(error = %e, "writing checkpoints failed; retrying");
            }
        }
    }

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
