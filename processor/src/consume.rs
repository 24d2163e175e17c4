//! `sitelog process`: the consumer-group loop, Kafka → attribution → ClickHouse.
//!
//! At-least-once from Kafka, made exactly-once by ClickHouse: see `store::sink` for the
//! order of writes. This loop adds the Kafka side of the invariant:
//!
//! > a partition's offset is committed only after its batch's rows and progress were
//! > acknowledged by ClickHouse.
//!
//! Batches are per partition, so their boundaries and dedup tokens depend only on Kafka
//! offsets and the recorded intents, never on timing, replica count or rebalances.
//!
//! Inserts run concurrently on the tokio runtime (up to `sink.max_inflight_batches`, at most
//! one per partition) while this loop keeps polling and preparing the next batches: a
//! partition's batches are stored and committed in offset order, and its next batch is
//! built only after the previous one is stored, so the re-send filter sees its progress.
//! A partition with a sealed batch waiting is paused (bounded memory during slow inserts).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickhouse::Client;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sitelog_schema::wire::{self, BatchReader};

use crate::attribute::SiteMap;
use crate::config::ProcessorConfig;
use crate::derive::Deriver;
use crate::quarantine::{self, Poison, Quarantine};
use crate::register;
use crate::retry::Backoff;
use crate::security::detector::{Detector, Scenarios};
use crate::store::rows::AccessLogRow;
use crate::store::sink::{self, batch_token, StreamProgress};
use crate::topics::TopicIdentity;
use crate::visitors::{KeyError, KeyStore, VisitorStamper};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("clickhouse: {0}")]
    Sink(#[from] sink::SinkError),
    #[error("register: {0}")]
    Register(#[from] register::RegisterError),
    #[error("register: {0}")]
    Map(#[from] crate::attribute::MapError),
    #[error("clickhouse config: {0}")]
    Config(#[from] crate::store::ConfigError),
    #[error("visitor keys: {0}")]
    Keys(#[from] KeyError),
    #[error("security scenarios: {0}")]
    Scenarios(#[from] crate::security::scenario::ScenarioError),
    /// A quarantine that cannot succeed (no such dead-letter topic, not allowed): what, where, why.
    #[error("{0}")]
    DeadLetter(String),
    /// `--exit-when-idle` gave up: the group has not caught up and this replica cannot help
    /// (group, topic, lag and the likely cause).
    #[error("{0}")]
    NotCaughtUp(String),
    /// Kafka refuses this configuration (credentials, TLS): retrying cannot help.
    #[error("{0}")]
    Refused(String),
    /// The topic's id or partition count cannot be read (see [`crate::topics::describe`]).
    #[error("{0}")]
    Topic(#[from] crate::topics::TopicsError),
    /// The topic's partition count changed while this replica ran (hosts map to other
    /// partitions from then on): old, new and what to do.
    #[error("{0}")]
    PartitionsChanged(String),
}

/// How [`Processor::run`] ends besides SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// Exit once nothing arrived for this long and the group has caught up on the whole topic
    /// (batch jobs, demos, tests). `None`: run until SIGTERM.
    pub exit_when_idle: Option<Duration>,
    /// With `exit_when_idle`: how long this replica may wait with nothing to do (no partition
    /// assigned, or its own partitions done) while the group lags and makes no progress,
    /// before it gives up with [`ProcessError::NotCaughtUp`].
    pub max_wait_unassigned: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { exit_when_idle: None, max_wait_unassigned: Duration::from_secs(300) }
    }
}

/// One partition's position for the group, as the broker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: i32,
    /// The group's committed offset (the next to read); `None` when nothing was committed.
    pub committed: Option<i64>,
    /// The partition's end offset (high watermark).
    pub end: i64,
    /// Messages between the committed offset (or the partition's start) and the end.
    pub lag: u64,
}

/// The group's lag on every partition of the topic (from the broker's metadata, the group's
/// committed offsets and the high watermarks). Zero everywhere is what "caught up" means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupLag {
    pub partitions: Vec<PartitionLag>,
}

impl GroupLag {
    pub fn total(&self) -> u64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }

    /// Sum of the committed offsets: grows when any member stores and commits a batch.
    fn committed_sum(&self) -> i64 {
        self.partitions.iter().filter_map(|p| p.committed).sum()
    }

    /// `p0: 120, p3: 40` for the partitions that lag.
    fn lagging(&self) -> String {
        let parts: Vec<String> =
            self.partitions.iter().filter(|p| p.lag > 0).map(|p| format!("p{}: {}", p.partition, p.lag)).collect();
        parts.join(", ")
    }
}

/// The waiting state of `--exit-when-idle` once this replica has nothing to do: when the
/// broker was last asked, since when the group has lagged without progress, when it was logged.
struct GroupWait {
    limit: Duration,
    last_check: Option<Instant>,
    last_log: Option<Instant>,
    /// Since when the group has lagged, without any committed offset moving, while this
    /// replica had nothing to do; with the committed-offset sum seen then.
    stalled: Option<(Instant, i64)>,
}

impl GroupWait {
    fn new(limit: Duration) -> Self {
        GroupWait { limit, last_check: None, last_log: None, stalled: None }
    }

    /// This replica has work (or had news): not stalled.
    fn busy(&mut self) {
        self.stalled = None;
        self.last_log = None;
    }

    /// Whether to ask the broker now (at most once a second: a few round trips each).
    fn due(&mut self) -> bool {
        if self.last_check.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return false;
        }
        self.last_check = Some(Instant::now());
        true
    }

    /// Records a lagging answer (`None`: the broker could not be asked); returns how long
    /// the group has been stalled once that exceeds the limit. Any committed offset moving
    /// (another member storing) restarts the clock.
    fn lagging(&mut self, lag: Option<&GroupLag>) -> Option<Duration> {
        let sum = lag.map(GroupLag::committed_sum);
        match (self.stalled, sum) {
            (Some((_, before)), Some(now)) if now > before => self.stalled = Some((Instant::now(), now)),
            (Some(_), _) => {}
            (None, s) => self.stalled = Some((Instant::now(), s.unwrap_or(0))),
        }
        let waited = self.stalled.map_or(Duration::ZERO, |(t, _)| t.elapsed());
        (waited >= self.limit).then_some(waited)
    }

    /// Every 10 s while waiting.
    fn should_log(&mut self) -> bool {
        if self.last_log.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return false;
        }
        self.last_log = Some(Instant::now());
        true
    }
}

/// Totals of one run, for the CLI's summary and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub messages: u64,
    pub records: u64,
    pub inserted: u64,
    pub duplicates: u64,
    pub unattributed: u64,
    pub corrupt_messages: u64,
    /// Messages that were not valid batches, written to the dead-letter topic and passed.
    pub quarantined: u64,
    /// Security event states written (an event that grows is written again).
    pub security_events: u64,
    pub batches: u64,
}

/// A message as fetched: where it is, its key and its bytes.
struct Fetched {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

impl Fetched {
    fn of<M: Message>(m: &M) -> Self {
        Fetched {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
        }
    }
}

struct PartBuf {
    start: i64,
    end: i64,
    payloads: Vec<(i64, Vec<u8>)>,
    records: usize,
    since: Instant,
    /// Set when an intent for `start` exists: the batch must end exactly there, and its token
    /// names the topic as that intent does.
    planned: Option<sink::Planned>,
}

/// Routes librdkafka's errors to `tracing`, minus the end-of-partition notices this loop
/// asks for (`enable.partition.eof`) to know when it has caught up; and handles revocations
/// (see [`Context::revoke`]). Errors no retry can fix (the broker refuses the credentials
/// or the TLS set-up) are kept for the loop, which stops.
pub struct Context {
    rt: tokio::runtime::Handle,
    topic: String,
    state: Mutex<Rebalancing>,
    refused: Arc<std::sync::Mutex<Option<String>>>,
    /// The protocol, when it is not TLS: then dropped first requests are counted.
    plaintext: Option<String>,
    dropped: std::sync::atomic::AtomicU32,
}

/// What the rebalance callbacks share with the loop. The callbacks run inside `poll()` on the
/// loop's own thread, so the lock is never contended; it only makes the sharing explicit.
#[derive(Default)]
struct Rebalancing {
    /// The insert task in flight per partition.
    tasks: BTreeMap<i32, Task>,
    /// Revoked since the loop last looked: their buffers are dropped.
    revoked: BTreeSet<i32>,
    /// Assigned since the loop last looked: progress is re-read before their first batch.
    assigned: BTreeSet<i32>,
    /// Tasks joined during a revocation, with their outcome.
    joined: Vec<(i32, Result<Outcome, sink::SinkError>)>,
}

struct Task {
    handle: tokio::task::JoinHandle<Result<Outcome, sink::SinkError>>,
    /// Set when the partition is revoked: the task starts no further write.
    revoked: Arc<AtomicBool>,
    end: i64,
}

/// How an insert task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Intent, rows and progress acknowledged: the offset may be committed.
    Stored,
    /// Its partition was revoked between two writes: nothing more was written, nothing is
    /// committed; the new owner repeats the batch (same range if the intent was written).
    Abandoned,
}

impl Context {
    fn new(rt: tokio::runtime::Handle, topic: String, plaintext: Option<String>) -> Self {
        Context {
            rt,
            topic,
            state: Mutex::new(Rebalancing::default()),
            refused: Default::default(),
            plaintext,
            dropped: Default::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Rebalancing> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A revocation (eager protocol: before this member rejoins, so before any other member
    /// can be given these partitions). Why a range cannot be stored twice:
    ///
    /// A batch's rows reach ClickHouse only after its intent was acknowledged, and a new
    /// owner reads the intent at its first offset before it cuts its first batch. The one
    /// danger is an intent (or rows of a batch cut without the intent the new owner saw)
    /// landing *after* the new owner looked: the old owner keeps inserting while the group
    /// has already moved on (issue 12; `tests/process_rebalance.rs` reproduces it: A's
    /// intent 0-15 landed after B cut 0-1, 2-3, ...; both were kept). So here, before
    /// returning (and so before this member rejoins and the group can hand the partitions
    /// on), every insert task of a revoked partition is told to stop and is waited for: the
    /// write in progress completes (it may already be on its way and cannot be recalled),
    /// no further one starts. Whatever the task wrote is then in ClickHouse before the new
    /// owner reads intents and progress, so it cuts the same range and its token matches; a
    /// task that finished everything is committed here. The loop drops the partitions'
    /// buffers and sealed batches before it seals or starts anything again.
    ///
    /// What this relies on: the group protocol (no partition is assigned elsewhere before
    /// its old owner rejoined, or was expelled after `max.poll.interval.ms` / the session
    /// timeout). A write hanging for longer than that is not covered.
    fn revoke(&self, consumer: &BaseConsumer<Context>, tpl: &TopicPartitionList) {
        let mut st = self.state();
        let revoked: Vec<i32> =
            tpl.elements().iter().filter(|e| e.topic() == self.topic).map(|e| e.partition()).collect();
        let mut tasks = Vec::new();
        for &p in &revoked {
            st.revoked.insert(p);
            st.assigned.remove(&p);
            if let Some(t) = st.tasks.remove(&p) {
                t.revoked.store(true, Ordering::Relaxed);
                tasks.push((p, t));
            }
        }
        let waited = Instant::now();
        let mut commit = TopicPartitionList::new();
        for (p, t) in tasks {
            let outcome = self.rt.block_on(t.handle).expect("insert task panicked");
            if matches!(outcome, Ok(Outcome::Stored)) {
                let _ = commit.add_partition_offset(&self.topic, p, Offset::Offset(t.end + 1));
            }
            st.joined.push((p, outcome));
        }
        if commit.count() > 0 {
            if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                tracing::warn!(error = %e, "offset commit on revocation failed; the new owner repeats the batch with the same token");
            }
        }
        tracing::info!(partitions = ?revoked, waited_ms = waited.elapsed().as_millis() as u64, "partitions revoked");
    }
}

impl ClientContext for Context {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use sitelog_schema::kafka;
        if let Some(protocol) = &self.plaintext {
            if kafka::dropped_in_first_request(log_message) {
                if self.dropped.fetch_add(1, Ordering::Relaxed) + 1 == kafka::PLAINTEXT_TO_TLS_LIMIT {
                    let msg = kafka::plaintext_to_tls_message(protocol, log_message);
                    self.refused.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(msg);
                }
            } else if log_message.contains("ApiVersion") || fac == "AUTH" {
                self.dropped.store(0, Ordering::Relaxed);
            }
        }
        rdkafka::client::DefaultClientContext.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF));
        if let Some(msg) = crate::config::kafka_refusal(&error, reason) {
            tracing::error!("{msg}");
            self.refused.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(msg);
        } else if !eof {
            tracing::error!(error = %error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.revoke(consumer, tpl);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut st = self.state();
            st.assigned.extend(tpl.elements().iter().filter(|e| e.topic() == self.topic).map(|e| e.partition()));
        }
    }
}

pub struct Processor {
    cfg: ProcessorConfig,
    client: Client,
    consumer: BaseConsumer<Context>,
    rt: tokio::runtime::Handle,
    parts: BTreeMap<i32, PartBuf>,
    assigned: BTreeSet<i32>,
    eof: HashSet<i32>,
    /// Source progress of the streams recent batches used: a cache of `source_progress`,
    /// filled per batch with just the streams it names (never the whole table, which has a
    /// row for every file and host ever read), cleared when a partition is assigned (another
    /// replica may have advanced its streams) and when it exceeds [`PROGRESS_CACHE_MAX`].
    progress: HashMap<(u64, String), StreamProgress>,
    map: Arc<SiteMap>,
    map_version: u64,
    last_register_check: Instant,
    deriver: Deriver,
    /// Gives each row its keyed visitor identities (the keys stay in this process).
    visitors: VisitorStamper,
    /// The security scenarios (None: `[security] enabled = false`) and one event-time
    /// detector per partition (see `security::detector`), with the offset it expects next. A
    /// detector is kept across a revocation: if the partition comes back and its next batch
    /// starts where the detector stopped, it continues (a rebalance changes no event);
    /// otherwise another replica processed records in between, and it starts afresh.
    scenarios: Option<Arc<Scenarios>>,
    detectors: HashMap<i32, (Detector, i64)>,
    /// Next offset to read per partition, as last committed here (for the lag gauge).
    committed: HashMap<i32, i64>,
    last_lag_report: Instant,
    ever_assigned: bool,
    /// Messages fetched while partitions were paused during a ClickHouse outage.
    stash: VecDeque<Fetched>,
    /// Where messages that are not valid batches go.
    quarantine: Quarantine,
    /// Complete batches per partition, waiting for that partition's insert in flight.
    sealed: BTreeMap<i32, VecDeque<PartBuf>>,
    /// The insert in flight per partition.
    inflight: BTreeMap<i32, InFlight>,
    /// Partitions paused because a sealed batch waits (backpressure).
    held: BTreeSet<i32>,
    /// Set on shutdown: an insert that fails from then on gives up instead of retrying.
    give_up: Arc<AtomicBool>,
    /// Assigned partitions whose source progress must be re-read before their first batch
    /// (another replica may have advanced it).
    fresh: BTreeSet<i32>,
    /// The topic's id and partition count (re-read after every assignment, see
    /// `identity_stale`): intents and dedup tokens name the topic by [`TopicIdentity::key`].
    identity: TopicIdentity,
    /// Set when partitions were assigned: the first batch after re-reads the topic's identity
    /// (once per assignment, however many partitions it brought).
    identity_stale: bool,
    pub stats: Stats,
}

/// One batch being stored by a task on the runtime (the task itself is in [`Rebalancing`]).
struct InFlight {
    end: i64,
    rows: u64,
    unattributed: u64,
    advanced: HashMap<(u64, String), StreamProgress>,
    started: Instant,
}

impl Processor {
    /// Connects, loads the register and the source progress, and subscribes.
    pub fn new(cfg: ProcessorConfig, rt: tokio::runtime::Handle) -> Result<Processor, ProcessError> {
        let client = cfg.clickhouse.client()?;
        let mut kafka = cfg.kafka.client_config()?;
        kafka
            .set("group.id", &cfg.kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            .set("max.poll.interval.ms", cfg.sink.max_poll_interval_ms.to_string())
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000");
        // Static membership (`[kafka] group_instance_id`, optional, default unset). Apache
        // Kafka (KIP-345, 2.3+): a member restarted with the same `group.instance.id` within
        // `session.timeout.ms` takes its old member id and gets its previous assignment back
        // without a rebalance, and a static member does not send LeaveGroup on close, so a
        // restart or a SIGKILL does not make the others wait for a session timeout.
        // tansu 0.6.0 (tried, `tests/process_caught_up.rs` with CAUGHT_UP_INSTANCE=replica-1):
        // it accepts the id and maps it to the old member id, but a replica restarted after
        // SIGKILL with the same id stored nothing for 30 s (the same restart without it
        // resumes after the 6 s session timeout). Its coordinator also keeps a leader that
        // left with LeaveGroup as the leader, so members joining later wait for a sync that
        // never comes. So: only for Apache Kafka; leave it unset on the local tansu stack.
        if let Some(id) = &cfg.kafka.group_instance_id {
            kafka.set("group.instance.id", id);
        }
        let consumer: BaseConsumer<Context> = kafka.create_with_context(Context::new(
            rt.clone(),
            cfg.kafka.topic.clone(),
            (!cfg.kafka.security.uses_tls()).then(|| cfg.kafka.security.security_protocol.clone()),
        ))?;
        // Before subscribing: until then `poll` serves only errors (a refused login ends the
        // wait at once), never a message.
        let identity = describe_topic(&consumer, &cfg.kafka.topic, true)?;
        consumer.subscribe(&[&cfg.kafka.topic])?;
        tracing::info!(topic = %identity.name, topic_id = %identity.id, partitions = identity.partitions, "consuming");
        let quarantine = Quarantine::new(&cfg.kafka)?;
        let visitors = VisitorStamper::new(KeyStore::open(&cfg.privacy.key_dir())?);
        let scenarios = if cfg.security.enabled {
            Some(Scenarios::new(crate::security::scenario::load(&cfg.security.scenarios)?)?)
        } else {
            None
        };
        let mut p = Processor {
            client,
            consumer,
            rt,
            parts: BTreeMap::new(),
            assigned: BTreeSet::new(),
            eof: HashSet::new(),
            progress: HashMap::new(),
            map: Arc::new(SiteMap::default()),
            map_version: 0,
            last_register_check: Instant::now(),
            deriver: Deriver::new(),
            visitors,
            scenarios,
            detectors: HashMap::new(),
            committed: HashMap::new(),
            last_lag_report: Instant::now(),
            ever_assigned: false,
            stash: Default::default(),
            quarantine,
            sealed: BTreeMap::new(),
            inflight: BTreeMap::new(),
            held: BTreeSet::new(),
            give_up: Arc::new(AtomicBool::new(false)),
            fresh: BTreeSet::new(),
            identity,
            identity_stale: false,
            stats: Stats::default(),
            cfg,
        };
        p.first_register_load()?;
        p.check_partition_count()?;
        Ok(p)
    }

    /// The register at start: a ClickHouse that is down or restarting (a deploy, an outage
    /// beside a restart of this replica) is waited for with backoff, up to
    /// [`START_UNREACHABLE_LIMIT`]; anything else ends the start at once.
    fn first_register_load(&mut self) -> Result<(), ProcessError> {
        let started = Instant::now();
        let mut backoff = crate::retry::Backoff::default();
        loop {
            match self.reload_register() {
                Err(ProcessError::Register(e)) if e.is_unreachable() && started.elapsed() < START_UNREACHABLE_LIMIT => {
                    std::thread::sleep(backoff.failed("loading the register at start", "waiting for ClickHouse", &e));
                }
                other => return other,
            }
        }
    }

    fn reload_register(&mut self) -> Result<(), ProcessError> {
        let (version, spans) = self.rt.block_on(register::load_sites(&self.client))?;
        if version != self.map_version || self.map.is_empty() {
            self.map = Arc::new(SiteMap::new(&spans, self.cfg.attribution.strip_www)?);
            if version != self.map_version {
                tracing::info!(version, sites = spans.len(), "loaded customer register");
            }
            self.map_version = version;
            metrics::gauge!("sitelog_process_register_version").set(version as f64);
        }
        self.last_register_check = Instant::now();
        Ok(())
    }

    /// Runs until `stop` is set (SIGTERM) or, with `opts.exit_when_idle`, until the group has
    /// caught up: nothing arrived for that long, nothing is pending here, and the broker says
    /// the group's committed offset equals the end offset on every partition of the topic
    /// (see [`GroupLag`]). Silence alone is never taken for the end: a replica without
    /// partitions (a rebalance in progress, a killed member's session not yet expired, another
    /// member holding them) keeps waiting and says why every 10 s; when the group has not
    /// caught up and makes no progress for `opts.max_wait_unassigned` while this replica has
    /// nothing to do, it ends with [`ProcessError::NotCaughtUp`] naming group, topic and lag.
    pub fn run(&mut self, stop: &AtomicBool, opts: RunOptions) -> Result<Stats, ProcessError> {
        let mut idle_since = Instant::now();
        let mut last_assignment_check = Instant::now() - Duration::from_secs(1);
        let mut wait = GroupWait::new(opts.max_wait_unassigned);
        let mut last_unassigned_log = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if let Some(msg) = self.consumer.context().refused.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return Err(ProcessError::Refused(msg));
            }
            if last_assignment_check.elapsed() >= Duration::from_millis(250) {
                if self.check_assignment()? {
                    idle_since = Instant::now();
                }
                last_assignment_check = Instant::now();
            }
            if self.last_register_check.elapsed() >= Duration::from_secs(self.cfg.attribution.register_poll_secs) {
                if let Err(e) = self.reload_register() {
                    tracing::warn!(error = %e, "register reload failed; keeping the current map");
                    self.last_register_check = Instant::now();
                }
            }
            if let Some(f) = self.stash.pop_front() {
                if self.assigned.contains(&f.partition) {
                    self.push(f, stop)?;
                }
                continue;
            }
            // Short waits while inserts are in flight, so a finished one is committed promptly.
            let poll_wait = if self.inflight.is_empty() { 100 } else { 5 };
            let polled = self.consumer.poll(Duration::from_millis(poll_wait)).map(|r| r.map(|m| Fetched::of(&m)));
            // Revocations and assignments that happened inside `poll()`, before anything else.
            self.apply_rebalance()?;
            match polled {
                Some(Ok(f)) => {
                    idle_since = Instant::now();
                    self.eof.remove(&f.partition);
                    self.push(f, stop)?;
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.eof.insert(p);
                }
                Some(Err(e)) => {
                    metrics::counter!("sitelog_process_kafka_errors_total").increment(1);
                    tracing::warn!(error = %e, "kafka consumer error");
                }
                None => {}
            }
            if self.last_lag_report.elapsed() >= Duration::from_secs(15) {
                self.report_lag();
            }
            if self.reap(false)? {
                idle_since = Instant::now();
            }
            // Batches whose linger ran out: one per turn, so the consumer is polled between
            // the (CPU-bound) preparations and stays in the group (max.poll.interval.ms).
            if let Some(p) = self.parts.iter().find(|(_, b)| self.is_due(b)).map(|(p, _)| *p) {
                self.seal(p)?;
                idle_since = Instant::now();
            }
            if let Some(idle) = opts.exit_when_idle {
                // Nothing left to do here: every assigned partition reported its end (or none
                // is assigned), nothing is buffered or in flight, and no news for `idle`.
                let settled = self.parts.is_empty() && self.sealed.is_empty() && self.inflight.is_empty();
                let local_done =
                    settled && self.assigned.iter().all(|p| self.eof.contains(p)) && idle_since.elapsed() >= idle;
                if !local_done {
                    wait.busy();
                } else if wait.due() {
                    // Only the broker knows whether the group is done: ask it.
                    match self.group_lag() {
                        Ok(lag) if lag.total() == 0 => {
                            tracing::info!(group = %self.cfg.kafka.group_id, topic = %self.cfg.kafka.topic, "caught up: the group's committed offsets are at the end of every partition");
                            break;
                        }
                        Ok(lag) => {
                            if let Some(waited) = wait.lagging(Some(&lag)) {
                                return Err(self.not_caught_up(Ok(&lag), waited));
                            }
                            if wait.should_log() {
                                self.log_waiting(&lag);
                            }
                        }
                        Err(e) => {
                            if let Some(waited) = wait.lagging(None) {
                                return Err(self.not_caught_up(Err(&e), waited));
                            }
                            if wait.should_log() {
                                tracing::warn!(error = %e, "cannot read the group's committed offsets or the end offsets; retrying");
                            }
                        }
                    }
                }
            } else if self.assigned.is_empty() && last_unassigned_log.elapsed() >= Duration::from_secs(60) {
                last_unassigned_log = Instant::now();
                tracing::info!(group = %self.cfg.kafka.group_id, topic = %self.cfg.kafka.topic, "no partitions assigned; waiting (group rebalance in progress, or more replicas than partitions)");
            }
        }
        // SIGTERM or done: store what is buffered, commit, and leave the group. An insert
        // that fails from now on gives up (nothing of it is committed; it is re-read later).
        self.give_up.store(stop.load(Ordering::Relaxed), Ordering::Relaxed);
        let pending: Vec<i32> = self.parts.keys().copied().collect();
        for p in pending {
            if self.parts.get(&p).is_some_and(|b| b.planned.as_ref().is_none_or(|pl| b.end >= pl.end)) {
                self.seal(p)?;
            }
        }
        while !self.inflight.is_empty() {
            self.reap(true)?;
        }
        self.consumer.unsubscribe();
        Ok(self.stats.clone())
    }

    /// The group's lag on every partition of the topic, from the broker: the partitions from
    /// the topic's metadata, the group's committed offsets (OffsetFetch, so other members'
    /// commits count too) and each partition's watermarks. A partition without a committed
    /// offset lags by everything from its start (`auto.offset.reset = earliest`).
    pub fn group_lag(&self) -> Result<GroupLag, KafkaError> {
        let timeout = Duration::from_secs(5);
        let topic = self.cfg.kafka.topic.as_str();
        let md = self.consumer.fetch_metadata(Some(topic), timeout)?;
        let t = md.topics().iter().find(|t| t.name() == topic);
        let mut tpl = TopicPartitionList::new();
        match t {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                for p in t.partitions() {
                    tpl.add_partition(topic, p.id());
                }
            }
            Some(t) if t.error().is_some() => {
                return Err(KafkaError::MetadataFetch(t.error().expect("checked").into()));
            }
            _ => return Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition)),
        }
        let committed = self.consumer.committed_offsets(tpl, timeout)?;
        let mut partitions = Vec::new();
        for e in committed.elements() {
            let committed = match e.offset() {
                Offset::Offset(n) => Some(n),
                _ => None,
            };
            let (low, end) = self.consumer.fetch_watermarks(topic, e.partition(), timeout)?;
            let from = committed.unwrap_or(low).max(low);
            partitions.push(PartitionLag { partition: e.partition(), committed, end, lag: (end - from).max(0) as u64 });
        }
        partitions.sort_by_key(|p| p.partition);
        Ok(GroupLag { partitions })
    }

    /// Why `--exit-when-idle` is still waiting, every 10 s.
    fn log_waiting(&self, lag: &GroupLag) {
        let (group, topic) = (&self.cfg.kafka.group_id, &self.cfg.kafka.topic);
        if self.assigned.is_empty() {
            tracing::info!(
                group = %group, topic = %topic, lag = lag.total(), lagging = %lag.lagging(),
                "no partitions assigned yet; group rebalance in progress (or another member holds them); lag {} messages",
                lag.total()
            );
        } else {
            tracing::info!(
                group = %group, topic = %topic, lag = lag.total(), lagging = %lag.lagging(), assigned = ?self.assigned,
                "caught up on the assigned partitions; waiting for the group to catch up on the others; lag {} messages",
                lag.total()
            );
        }
    }

    /// The error `--exit-when-idle` ends with when the group does not catch up.
    fn not_caught_up(&self, lag: Result<&GroupLag, &KafkaError>, waited: Duration) -> ProcessError {
        let (group, topic) = (&self.cfg.kafka.group_id, &self.cfg.kafka.topic);
        let here = if self.assigned.is_empty() {
            "no partition is assigned to this replica".to_owned()
        } else {
            format!("this replica is done with its partitions {:?}", self.assigned)
        };
        ProcessError::NotCaughtUp(match lag {
            Ok(lag) => format!(
                "not caught up: group '{group}' lags {} messages on topic '{topic}' ({}); {here} and no \
                 committed offset moved for {}s (--max-wait-unassigned): another member holds the lagging \
                 partitions without progress, or the group still waits for a killed member's session to \
                 expire. Nothing is lost; run again (or stop the other member)",
                lag.total(),
                lag.lagging(),
                waited.as_secs()
            ),
            Err(e) => format!(
                "cannot tell whether group '{group}' caught up on topic '{topic}': reading its committed \
                 offsets and the end offsets failed for {}s (--max-wait-unassigned): {e}; {here}",
                waited.as_secs()
            ),
        })
    }

    /// Consumer lag per partition. A broker round trip, so every 15 s, never per batch (a
    /// fetch in flight can hold the answer back for its whole wait time).
    fn report_lag(&mut self) {
        self.last_lag_report = Instant::now();
        for &p in &self.assigned {
            if let (Some(next), Ok((_, high))) = (
                self.committed.get(&p),
                self.consumer.fetch_watermarks(&self.cfg.kafka.topic, p, Duration::from_millis(500)),
            ) {
                metrics::gauge!("sitelog_process_consumer_lag_messages", "partition" => p.to_string())
                    .set((high - next).max(0) as f64);
            }
        }
    }

    /// Runs one ClickHouse step until it succeeds. While ClickHouse is unreachable the
    /// assigned partitions are paused and the consumer keeps being polled, so the group
    /// membership survives an outage of any length; messages that were already fetched are
    /// stashed and handled after. Gives up only when `stop` is set (nothing was committed).
    fn storage<T, F, Fut>(&mut self, what: &str, stop: &AtomicBool, mut step: F) -> Result<T, ProcessError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, sink::SinkError>>,
    {
        let mut backoff = Backoff::default();
        let mut paused: Option<TopicPartitionList> = None;
        let mut permanent = 0;
        let result = loop {
            match self.rt.block_on(step()) {
                Ok(v) => break Ok(v),
                Err(e) if stop.load(Ordering::Relaxed) => break Err(e.into()),
                Err(e) if e.is_permanent() && permanent + 1 >= PERMANENT_TRIES => break Err(e.into()),
                Err(e) => {
                    permanent = if e.is_permanent() { permanent + 1 } else { 0 };
                    let delay = backoff.failed(what, "consumption paused, retrying", &e);
                    if paused.is_none() {
                        if let Ok(tpl) = self.consumer.assignment() {
                            let _ = self.consumer.pause(&tpl);
                            paused = Some(tpl);
                        }
                    }
                    let until = Instant::now() + delay;
                    let mut failed = None;
                    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                        let polled = self
                            .consumer
                            .poll(Duration::from_millis(100))
                            .and_then(Result::ok)
                            .map(|m| Fetched::of(&m));
                        if let Err(e) = self.apply_rebalance() {
                            failed = Some(e);
                            break;
                        }
                        self.stash.extend(polled);
                    }
                    if let Some(e) = failed {
                        break Err(e);
                    }
                }
            }
        };
        if let Some(tpl) = paused {
            let _ = self.consumer.resume(&tpl);
            self.pause_held();
        }
        result
    }

    fn is_due(&self, b: &PartBuf) -> bool {
        match &b.planned {
            Some(pl) => b.end >= pl.end,
            None => {
                b.records >= self.cfg.sink.batch_max_records
                    || b.since.elapsed() >= Duration::from_millis(self.cfg.sink.linger_ms)
            }
        }
    }

    /// Takes in what the rebalance callbacks did inside `poll()` (see [`Context::revoke`]),
    /// before anything is sealed or started again: revoked partitions lose their buffers,
    /// sealed batches, detectors and stashed messages (the new owner re-reads them from the
    /// committed offset); tasks joined on revocation are counted (and were committed there
    /// if stored); newly assigned partitions re-read the source progress before their first
    /// batch.
    fn apply_rebalance(&mut self) -> Result<(), ProcessError> {
        let (revoked, assigned, joined) = {
            let mut st = self.consumer.context().state();
            if st.revoked.is_empty() && st.assigned.is_empty() && st.joined.is_empty() {
                return Ok(());
            }
            (std::mem::take(&mut st.revoked), std::mem::take(&mut st.assigned), std::mem::take(&mut st.joined))
        };
        for p in &revoked {
            self.parts.remove(p);
            // The detector is kept: if the partition comes back at the offset it stopped at,
            // it continues (see `detectors`).
            self.sealed.remove(p);
            self.held.remove(p);
            self.eof.remove(p);
            self.fresh.remove(p);
            self.assigned.remove(p);
        }
        self.stash.retain(|f| !revoked.contains(&f.partition));
        for (p, outcome) in joined {
            let f = self.inflight.remove(&p).expect("a joined task was in flight");
            match outcome? {
                Outcome::Stored => self.finish(p, f, false),
                Outcome::Abandoned => {
                    tracing::info!(
                        partition = p,
                        end = f.end,
                        "insert of a revoked partition stopped; its new owner repeats it"
                    )
                }
            }
        }
        metrics::gauge!("sitelog_process_inserts_in_flight").set(self.inflight.len() as f64);
        // Held (paused) partitions lost their sealed batches above; librdkafka may keep a
        // partition paused across an unassign and assign, so newly assigned ones are resumed
        // (their batches are re-read from the committed offset).
        let mut resume = TopicPartitionList::new();
        self.identity_stale |= !assigned.is_empty();
        for p in assigned {
            self.fresh.insert(p);
            self.assigned.insert(p);
            if !self.held.contains(&p) {
                resume.add_partition(&self.cfg.kafka.topic, p);
            }
        }
        if resume.count() > 0 {
            if let Err(e) = self.consumer.resume(&resume) {
                tracing::warn!(error = %e, "resuming assigned partitions failed");
            }
        }
        self.ever_assigned |= !self.assigned.is_empty();
        tracing::info!(partitions = ?self.assigned, "assignment changed");
        Ok(())
    }

    /// Whether the assignment changed (the callbacks keep it; this also notices a change
    /// librdkafka made without them).
    fn check_assignment(&mut self) -> Result<bool, ProcessError> {
        let before = self.assigned.clone();
        self.apply_rebalance()?;
        let now: BTreeSet<i32> = self.consumer.assignment()?.elements().iter().map(|e| e.partition()).collect();
        if now != self.assigned {
            let gone: BTreeSet<i32> = self.assigned.difference(&now).copied().collect();
            {
                let mut st = self.consumer.context().state();
                st.revoked.extend(gone);
                st.assigned.extend(now.difference(&self.assigned));
            }
            self.apply_rebalance()?;
        }
        Ok(before != self.assigned)
    }

    /// Adds one message to its partition's open batch. A message that is not exactly one
    /// valid batch is quarantined first (acknowledged by Kafka) and then counts as consumed:
    /// its offset is inside the batch's range but it adds no rows. Nothing is ever allocated
    /// from a header's claims: `wire::check` decodes within the message's own bytes.
    fn push(&mut self, f: Fetched, stop: &AtomicBool) -> Result<(), ProcessError> {
        if !self.assigned.contains(&f.partition) {
            return Ok(()); // revoked: its new owner reads it
        }
        self.stats.messages += 1;
        let (p, offset) = (f.partition, f.offset);
        let valid = match wire::check(&f.payload) {
            Ok(n) => Some(n as usize),
            Err(e) => {
                self.quarantine(&f, e.kind(), &e.to_string(), stop)?;
                None
            }
        };
        if !self.parts.contains_key(&p) {
            if self.identity_stale {
                self.identity_stale = false;
                self.refresh_identity()?;
            }
            let (client, key, name) = (self.client.clone(), self.identity.key(), self.identity.name.clone());
            // First batch since the partition was assigned: the previous owner stored and
            // committed up to this offset (or its intent is there). The progress cache may
            // predate what it stored, so it is dropped; `start_insert` re-reads from ClickHouse
            // the progress of each batch's streams, which includes everything stored.
            if self.fresh.remove(&p) {
                self.progress.clear();
            }
            let planned =
                self.storage("reading batch intents", stop, || sink::planned_end(&client, &key, &name, p, offset))?;
            if !self.assigned.contains(&p) {
                return Ok(());
            }
            self.parts.insert(
                p,
                PartBuf {
                    start: offset,
                    end: offset,
                    payloads: Vec::new(),
                    records: 0,
                    since: Instant::now(),
                    planned,
                },
            );
        }
        let b = self.parts.get_mut(&p).expect("just inserted");
        b.end = offset;
        if let Some(n) = valid {
            b.records += n;
            b.payloads.push((offset, f.payload));
        }
        if self.is_due(self.parts.get(&p).expect("present")) {
            self.seal(p)?;
        }
        Ok(())
    }

    /// Compares the topic's partition count with the one the processors last recorded for this
    /// topic (see [`sink::recorded_partitions`]): a processor started after partitions were
    /// added would otherwise not know. A different count is accepted only when the group has
    /// caught up on every partition (nothing produced under the old count waits anywhere);
    /// otherwise this ends with [`ProcessError::PartitionsChanged`]. Then records the count.
    fn check_partition_count(&mut self) -> Result<(), ProcessError> {
        let (client, key) = (self.client.clone(), self.identity.key());
        let now = self.identity.partitions as i32;
        let stop = self.give_up.clone();
        let recorded =
            self.storage("reading the recorded partition count", &stop, || sink::recorded_partitions(&client, &key))?;
        if let Some(old) = recorded.filter(|&n| n != now) {
            let lag = self.group_lag()?;
            if lag.total() > 0 {
                metrics::counter!("sitelog_process_partition_count_changes_total").increment(1);
                let old_identity = TopicIdentity { partitions: old.max(0) as usize, ..self.identity.clone() };
                return Err(ProcessError::PartitionsChanged(format!(
                    "{} (found at start; the group lags {} messages: {})",
                    partitions_changed(&old_identity, &self.identity),
                    lag.total(),
                    lag.lagging()
                )));
            }
            tracing::warn!(topic = %self.identity.name, old, new = now, "the partition count changed while the group had caught up: accepted");
        }
        self.storage("recording the partition count", &stop, || sink::record_partitions(&client, &key, now))
    }

    /// Re-reads the topic's id and partition count (partitions were just assigned). A new id:
    /// the topic was deleted and created again, its offsets start afresh, so the detectors'
    /// expected offsets no longer mean anything. A new partition count: hosts map to other
    /// partitions from now on, and a host's older records may still wait in its old partition
    /// (or on another replica) while its newer ones arrive here: the per-(source, host)
    /// max-offset rule would drop the older ones. This replica stops with a message instead.
    fn refresh_identity(&mut self) -> Result<(), ProcessError> {
        let now = match describe_topic(&self.consumer, &self.cfg.kafka.topic, false) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-read the topic's id and partition count; keeping the known ones");
                return Ok(());
            }
        };
        if now.id != self.identity.id {
            tracing::warn!(topic = %now.name, old_id = %self.identity.id, new_id = %now.id, "the topic was deleted and created again: new intents and tokens");
            metrics::counter!("sitelog_process_topic_recreated_total").increment(1);
            self.detectors.clear();
            self.identity = now;
            return self.check_partition_count();
        } else if now.partitions != self.identity.partitions {
            metrics::counter!("sitelog_process_partition_count_changes_total").increment(1);
            return Err(ProcessError::PartitionsChanged(partitions_changed(&self.identity, &now)));
        }
        self.identity = now;
        // Kept fresh against the intents' TTL; best effort (the start-up check reads it).
        let (client, key, n) = (self.client.clone(), self.identity.key(), self.identity.partitions as i32);
        if let Err(e) = self.rt.block_on(sink::record_partitions(&client, &key, n)) {
            tracing::warn!(error = %e, "recording the partition count failed; next assignment tries again");
        }
        Ok(())
    }

    /// Writes a refused message to the dead-letter topic and waits for Kafka's acknowledgement,
    /// retrying transient failures with backoff; a permanent one (no such topic, not allowed)
    /// ends the process with a message that names it. Until it is acknowledged the message's
    /// offset cannot be committed, so a crash here loses nothing.
    fn quarantine(
        &mut self,
        f: &Fetched,
        kind: &'static str,
        reason: &str,
        stop: &AtomicBool,
    ) -> Result<(), ProcessError> {
        let poison = Poison {
            topic: &self.cfg.kafka.topic,
            partition: f.partition,
            offset: f.offset,
            key: f.key.as_deref(),
            payload: &f.payload,
            kind,
            reason,
        };
        let mut backoff = Backoff::default();
        loop {
            match self.rt.block_on(self.quarantine.send(&poison)) {
                Ok((dp, doff)) => {
                    self.stats.quarantined += 1;
                    metrics::counter!("sitelog_process_quarantined_messages_total", "reason" => kind).increment(1);
                    tracing::error!(
                        partition = f.partition,
                        offset = f.offset,
                        reason,
                        deadletter = %format!("{}/{dp}/{doff}", self.quarantine.topic()),
                        "message is not a valid batch: quarantined in the dead-letter topic and passed"
                    );
                    return Ok(());
                }
                Err(e) if stop.load(Ordering::Relaxed) || quarantine::is_permanent(&e) => {
                    return Err(ProcessError::DeadLetter(format!(
                        "cannot quarantine the message at {}/{}/{} in dead-letter topic '{}': {e} \
                         (create the topic, or fix [kafka] deadletter_topic)",
                        poison.topic,
                        f.partition,
                        f.offset,
                        self.quarantine.topic()
                    )))
                }
                Err(e) => {
                    // Not polled meanwhile: a long outage of the dead-letter write makes this
                    // replica leave the group, which is safe (nothing past it was committed).
                    std::thread::sleep(backoff.failed("writing a dead-letter entry", "retrying", &e));
                }
            }
        }
    }

    /// Closes partition `p`'s open batch and starts its insert if the partition and the
    /// in-flight limit allow; otherwise it waits and the partition is paused.
    fn seal(&mut self, p: i32) -> Result<(), ProcessError> {
        if let Some(b) = self.parts.remove(&p) {
            self.sealed.entry(p).or_default().push_back(b);
        }
        self.dispatch(p)?;
        if self.sealed.contains_key(&p) && self.held.insert(p) {
            self.pause_held();
        }
        Ok(())
    }

    /// Starts the next sealed batch of `p` when nothing of `p` is in flight and the limit allows.
    fn dispatch(&mut self, p: i32) -> Result<(), ProcessError> {
        if !self.assigned.contains(&p) {
            self.sealed.remove(&p);
            return Ok(());
        }
        if self.inflight.contains_key(&p) || self.inflight.len() >= self.cfg.sink.max_inflight_batches {
            return Ok(());
        }
        let Some(queue) = self.sealed.get_mut(&p) else { return Ok(()) };
        let b = queue.pop_front().expect("sealed queues are never empty");
        if queue.is_empty() {
            self.sealed.remove(&p);
        }
        self.start_insert(p, b)
    }

    fn pause_held(&self) {
        let mut tpl = TopicPartitionList::new();
        for &p in &self.held {
            tpl.add_partition(&self.cfg.kafka.topic, p);
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.pause(&tpl) {
                tracing::warn!(error = %e, "pausing partitions failed");
            }
        }
    }

    /// Collects finished inserts (waiting for one when `wait`): commits their offsets and
    /// starts what they held back. Returns whether anything finished.
    fn reap(&mut self, wait: bool) -> Result<bool, ProcessError> {
        self.apply_rebalance()?;
        let (done, any) = {
            let st = self.consumer.context().state();
            let done: Vec<i32> = st.tasks.iter().filter(|(_, t)| t.handle.is_finished()).map(|(p, _)| *p).collect();
            (done, st.tasks.keys().next().copied())
        };
        let done = match (done.is_empty(), wait) {
            (true, true) => any.into_iter().collect(),
            (true, false) => return Ok(false),
            _ => done,
        };
        for p in done {
            let task = self.consumer.context().state().tasks.remove(&p).expect("listed");
            let f = self.inflight.remove(&p).expect("a task is in flight");
            match self.rt.block_on(task.handle).expect("insert task panicked")? {
                Outcome::Stored => self.finish(p, f, true),
                Outcome::Abandoned => unreachable!("only a revocation stops a task, and it joins the task itself"),
            }
        }
        // Freed slots: start waiting batches (lowest partition first), resume drained partitions.
        let waiting: Vec<i32> = self.sealed.keys().copied().collect();
        for p in waiting {
            self.dispatch(p)?;
        }
        let drained: Vec<i32> = self.held.iter().copied().filter(|p| !self.sealed.contains_key(p)).collect();
        if !drained.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for p in drained {
                self.held.remove(&p);
                tpl.add_partition(&self.cfg.kafka.topic, p);
            }
            if let Err(e) = self.consumer.resume(&tpl) {
                tracing::warn!(error = %e, "resuming partitions failed");
            }
        }
        Ok(true)
    }

    /// A stored batch: remember its progress, commit its offsets (unless the revocation
    /// already did), count it.
    fn finish(&mut self, p: i32, f: InFlight, commit: bool) {
        if self.progress.len() + f.advanced.len() > PROGRESS_CACHE_MAX {
            self.progress.clear(); // re-read per batch; ClickHouse has every stored batch's progress
        }
        self.progress.extend(f.advanced);
        metrics::gauge!("sitelog_process_progress_cache_streams").set(self.progress.len() as f64);
        let mut tpl = TopicPartitionList::new();
        let committed = if commit {
            tpl.add_partition_offset(&self.cfg.kafka.topic, p, Offset::Offset(f.end + 1))
                .and_then(|()| self.consumer.commit(&tpl, CommitMode::Sync))
        } else {
            Ok(())
        };
        if let Err(e) = committed {
            // Safe: the batch is stored; a re-read repeats it with the same token.
            tracing::warn!(partition = p, error = %e, "offset commit failed; the batch will be re-read and deduplicated");
        }
        self.stats.inserted += f.rows;
        self.stats.batches += 1;
        metrics::counter!("sitelog_process_records_total", "outcome" => "inserted").increment(f.rows);
        metrics::counter!("sitelog_process_records_total", "outcome" => "unattributed").increment(f.unattributed);
        metrics::histogram!("sitelog_process_insert_seconds").record(f.started.elapsed().as_secs_f64());
        metrics::gauge!("sitelog_process_inserts_in_flight").set(self.inflight.len() as f64);
        self.committed.insert(p, f.end + 1);
        tracing::debug!(
            partition = p,
            end = f.end,
            rows = f.rows,
            ms = f.started.elapsed().as_millis() as u64,
            "batch stored"
        );
    }

    /// Prepares one partition's batch (decode, drop re-sent records, attribute, classify) and
    /// hands it to a task that stores it exactly once; `reap` commits it.
    fn start_insert(&mut self, p: i32, b: PartBuf) -> Result<(), ProcessError> {
        // The progress of the batch's streams that are not cached yet. ClickHouse holds at
        // least what the cache would (progress is written before a batch counts as stored).
        let mut missing: Vec<(u64, String)> = b
            .payloads
            .iter()
            .filter_map(|(_, payload)| BatchReader::new(payload).ok())
            .map(|r| (r.header().fingerprint, r.header().host.to_owned()))
            .filter(|k| !self.progress.contains_key(k))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let (client, stop) = (self.client.clone(), self.give_up.clone());
            let found = self.storage("reading source progress", &stop, || sink::load_progress_of(&client, &missing))?;
            if !self.assigned.contains(&p) {
                return Ok(()); // revoked meanwhile: its new owner reads the batch again
            }
            self.progress.extend(found);
        }
        let topic = b.planned.as_ref().map_or_else(|| self.identity.key(), |pl| pl.key.clone());
        let token = batch_token(&topic, p, b.start, b.end);
        let started = Instant::now();

        let mut rows: Vec<AccessLogRow> = Vec::with_capacity(b.records);
        let max_buckets = self.cfg.security.max_buckets;
        let mut detector = self.scenarios.as_ref().map(|s| match self.detectors.remove(&p) {
            Some((d, next)) if next == b.start => d,
            _ => Detector::new(s.clone(), max_buckets),
        });
        let mut advanced: HashMap<(u64, String), StreamProgress> = HashMap::new();
        let mut unattributed = 0u64;
        for (offset, payload) in &b.payloads {
            let reader = match BatchReader::new(payload) {
                Ok(r) => r,
                Err(e) => {
                    self.stats.corrupt_messages += 1;
                    metrics::counter!("sitelog_process_corrupt_messages_total").increment(1);
                    tracing::error!(partition = p, offset, error = %e, "undecodable message kept in Kafka, skipped");
                    continue;
                }
            };
            let key_host = reader.header().host.to_owned();
            let fp = reader.header().fingerprint;
            for rec in reader {
                let rec = match rec {
                    Ok(r) => r,
                    Err(e) => {
                        self.stats.corrupt_messages += 1;
                        tracing::error!(partition = p, offset, error = %e, "corrupt record; rest of message skipped");
                        break;
                    }
                };
                self.stats.records += 1;
                let key = (fp, key_host.clone());
                let seen = advanced.get(&key).or_else(|| self.progress.get(&key)).copied();
                if seen.is_some_and(|s| rec.source.offset <= s.max_offset) {
                    self.stats.duplicates += 1;
                    metrics::counter!("sitelog_process_records_total", "outcome" => "duplicate").increment(1);
                    continue;
                }
                let mut s = seen.unwrap_or_default();
                s.max_offset = rec.source.offset;
                s.max_ts = s.max_ts.max(rec.ts_micros);
                s.records += 1;
                advanced.insert(key, s);
                let mut row = self.deriver.row(&rec, &self.map);
                self.visitors.stamp(&mut row)?;
                if let Some(d) = &mut detector {
                    d.observe(&row);
                }
                if row.customer_id.is_empty() {
                    unattributed += 1;
                }
                rows.push(row);
            }
        }
        drop(b.payloads);
        self.stats.unattributed += unattributed;
        let (events, signals) = match detector {
            Some(mut d) => {
                let out = d.drain();
                self.detectors.insert(p, (d, b.end + 1));
                out
            }
            None => Default::default(),
        };
        self.stats.security_events += events.len() as u64;

        let changed: Vec<((u64, String), StreamProgress)> = advanced.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let (client, give_up) = (self.client.clone(), self.give_up.clone());
        let revoked = Arc::new(AtomicBool::new(false));
        let stop = revoked.clone();
        let (planned, start, end, n) = (b.planned.is_some(), b.start, b.end, rows.len() as u64);
        let handle = self.rt.spawn(async move {
            // Each write starts only while the partition is still ours (`Context::revoke`).
            if !planned
                && !retrying(&give_up, &stop, "writing a batch intent", || {
                    sink::write_intent(&client, &topic, p, start, end)
                })
                .await?
            {
                return Ok(Outcome::Abandoned);
            }
            if !retrying(&give_up, &stop, "inserting access_log rows", || sink::insert_rows(&client, &token, &rows))
                .await?
            {
                return Ok(Outcome::Abandoned);
            }
            if (!events.is_empty() || !signals.is_empty())
                && !retrying(&give_up, &stop, "inserting security events", || {
                    sink::insert_security(&client, &token, &events, &signals)
                })
                .await?
            {
                return Ok(Outcome::Abandoned);
            }
            let stored =
                retrying(&give_up, &stop, "writing source progress", || sink::write_progress(&client, &changed))
                    .await?;
            Ok(if stored { Outcome::Stored } else { Outcome::Abandoned })
        });
        self.consumer.context().state().tasks.insert(p, Task { handle, revoked, end });
        self.inflight.insert(p, InFlight { end, rows: n, unattributed, advanced, started });
        metrics::gauge!("sitelog_process_inserts_in_flight").set(self.inflight.len() as f64);
        Ok(())
    }
}

/// How long a start waits for an unreachable ClickHouse before it gives up (non-zero exit).
const START_UNREACHABLE_LIMIT: Duration = Duration::from_secs(120);

/// At most this many (source, host) progress entries are kept in memory (~100 B each).
const PROGRESS_CACHE_MAX: usize = 100_000;

/// The topic's identity, retried for up to a minute (a broker that is starting may not answer
/// yet). With `serve`, the consumer is polled between tries (only before it subscribed: then
/// nothing but errors can come) so that a refused login or TLS set-up ends it at once.
fn describe_topic(consumer: &BaseConsumer<Context>, topic: &str, serve: bool) -> Result<TopicIdentity, ProcessError> {
    let started = Instant::now();
    loop {
        let e = match crate::topics::describe(consumer.client(), topic, Duration::from_secs(3)) {
            Ok(id) => return Ok(id),
            Err(e) => e,
        };
        if serve {
            let _ = consumer.poll(Duration::from_millis(200));
            if let Some(msg) = consumer.context().refused.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return Err(ProcessError::Refused(msg));
            }
        }
        if !serve || started.elapsed() >= Duration::from_secs(60) {
            return Err(e.into());
        }
        tracing::warn!(error = %e, "describing the topic failed; retrying");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn partitions_changed(old: &TopicIdentity, new: &TopicIdentity) -> String {
    format!(
        "the partition count of topic '{}' changed from {} to {} while this processor ran: hosts now map to \
         other partitions, and a host's older records in its old partition must be stored before its newer \
         ones or the per-source max-offset rule drops them. Stop the collectors, run `sitelog process \
         --exit-when-idle` until the group has caught up, then restart the collectors and the processors \
         (README: 'Changing the partition count')",
        new.name, old.partitions, new.partitions
    )
}

/// Runs one ClickHouse step until it succeeds, with backoff; gives up on an error once
/// `give_up` is set (shutdown). Nothing is committed for a batch that gave up. Returns
/// `Ok(false)` without trying (again) once `revoked` is set: the partition was revoked.
async fn retrying<F, Fut>(
    give_up: &AtomicBool,
    revoked: &AtomicBool,
    what: &str,
    mut step: F,
) -> Result<bool, sink::SinkError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), sink::SinkError>>,
{
    let mut backoff = Backoff::default();
    let mut permanent = 0;
    loop {
        if revoked.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match step().await {
            Ok(()) => return Ok(true),
            Err(e) if give_up.load(Ordering::Relaxed) => return Err(e),
            // Retrying cannot fix it (missing table, refused user): stop after a few tries
            // so systemd and ops see it, instead of retrying forever.
            Err(e) if e.is_permanent() && permanent + 1 >= PERMANENT_TRIES => return Err(e),
            Err(e) => {
                permanent = if e.is_permanent() { permanent + 1 } else { 0 };
                tokio::time::sleep(backoff.failed(what, "retrying", &e)).await
            }
        }
    }
}

/// Consecutive failures that retrying cannot fix (`SinkError::is_permanent`) before a step
/// gives up and the process ends with the error.
const PERMANENT_TRIES: u32 = 5;
