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
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse::Client;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sitelog_schema::wire::{self, BatchReader};

use crate::attribute::SiteMap;
use crate::config::ProcessorConfig;
use crate::derive::Deriver;
use crate::quarantine::{self, Poison, Quarantine};
use crate::register;
use crate::store::rows::AccessLogRow;
use crate::store::sink::{self, batch_token, StreamProgress};
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
    /// A quarantine that cannot succeed (no such dead-letter topic, not allowed): what, where, why.
    #[error("{0}")]
    DeadLetter(String),
    /// Kafka refuses this configuration (credentials, TLS): retrying cannot help.
    #[error("{0}")]
    Refused(String),
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
    /// Set when an intent for `start` exists: the batch must end exactly there.
    planned_end: Option<i64>,
}

/// Routes librdkafka's errors to `tracing`, minus the end-of-partition notices this loop
/// asks for (`enable.partition.eof`) to know when it has caught up. Errors no retry can fix
/// (the broker refuses the credentials or the TLS set-up) are kept for the loop, which stops.
#[derive(Default)]
pub struct Context {
    refused: Arc<std::sync::Mutex<Option<String>>>,
    /// The protocol, when it is not TLS: then dropped first requests are counted.
    plaintext: Option<String>,
    dropped: std::sync::atomic::AtomicU32,
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

impl ConsumerContext for Context {}

pub struct Processor {
    cfg: ProcessorConfig,
    client: Client,
    consumer: BaseConsumer<Context>,
    rt: tokio::runtime::Handle,
    parts: BTreeMap<i32, PartBuf>,
    assigned: BTreeSet<i32>,
    eof: HashSet<i32>,
    progress: HashMap<(u64, String), StreamProgress>,
    map: Arc<SiteMap>,
    map_version: u64,
    last_register_check: Instant,
    deriver: Deriver,
    /// Gives each row its keyed visitor identities (the keys stay in this process).
    visitors: VisitorStamper,
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
    pub stats: Stats,
}

/// One batch being stored by a task on the runtime.
struct InFlight {
    /// Taken when the task is joined.
    task: Option<tokio::task::JoinHandle<Result<(), sink::SinkError>>>,
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
        let consumer: BaseConsumer<Context> = cfg
            .kafka
            .client_config()?
            .set("group.id", &cfg.kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            .set("max.poll.interval.ms", cfg.sink.max_poll_interval_ms.to_string())
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .create_with_context(Context {
                plaintext: (!cfg.kafka.security.uses_tls()).then(|| cfg.kafka.security.security_protocol.clone()),
                ..Context::default()
            })?;
        consumer.subscribe(&[&cfg.kafka.topic])?;
        let quarantine = Quarantine::new(&cfg.kafka)?;
        let visitors = VisitorStamper::new(KeyStore::open(&cfg.privacy.key_dir())?);
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
            committed: HashMap::new(),
            last_lag_report: Instant::now(),
            ever_assigned: false,
            stash: Default::default(),
            quarantine,
            sealed: BTreeMap::new(),
            inflight: BTreeMap::new(),
            held: BTreeSet::new(),
            give_up: Arc::new(AtomicBool::new(false)),
            stats: Stats::default(),
            cfg,
        };
        p.reload_register()?;
        p.progress = p.rt.block_on(sink::load_progress(&p.client))?;
        Ok(p)
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

    /// Runs until `stop` is set (SIGTERM) or, with `exit_when_idle`, until every assigned
    /// partition is consumed to its end and nothing is pending for that long.
    pub fn run(&mut self, stop: &AtomicBool, exit_when_idle: Option<Duration>) -> Result<Stats, ProcessError> {
        let mut idle_since = Instant::now();
        let mut last_assignment_check = Instant::now() - Duration::from_secs(1);
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
            let wait = if self.inflight.is_empty() { 100 } else { 5 };
            match self.consumer.poll(Duration::from_millis(wait)) {
                Some(Ok(m)) => {
                    idle_since = Instant::now();
                    self.eof.remove(&m.partition());
                    let f = Fetched::of(&m);
                    drop(m);
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
            if let Some(idle) = exit_when_idle {
                // Caught up = every assigned partition reported its end. A replica without
                // partitions (or one that just lost them in a rebalance) waits longer, so a
                // rebalance in progress is not mistaken for the end of the topic.
                let caught_up = !self.assigned.is_empty() && self.assigned.iter().all(|p| self.eof.contains(p));
                let wait = match (self.assigned.is_empty(), self.ever_assigned) {
                    (false, _) => idle,
                    (true, true) => idle * 3,
                    // Still joining the group: a broker may hold the join for a whole
                    // rebalance timeout when a previous member left uncleanly.
                    (true, false) => idle.max(Duration::from_secs(60)),
                };
                let settled = self.parts.is_empty() && self.sealed.is_empty() && self.inflight.is_empty();
                if (caught_up || self.assigned.is_empty()) && settled && idle_since.elapsed() >= wait {
                    break;
                }
            }
        }
        // SIGTERM or done: store what is buffered, commit, and leave the group. An insert
        // that fails from now on gives up (nothing of it is committed; it is re-read later).
        self.give_up.store(stop.load(Ordering::Relaxed), Ordering::Relaxed);
        let pending: Vec<i32> = self.parts.keys().copied().collect();
        for p in pending {
            if self.parts.get(&p).is_some_and(|b| b.planned_end.is_none_or(|e| b.end >= e)) {
                self.seal(p)?;
            }
        }
        while !self.inflight.is_empty() {
            self.reap(true)?;
        }
        self.consumer.unsubscribe();
        Ok(self.stats.clone())
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
        let result = loop {
            match self.rt.block_on(step()) {
                Ok(v) => break Ok(v),
                Err(e) if stop.load(Ordering::Relaxed) => break Err(e.into()),
                Err(e) => {
                    let delay = backoff.failed(what, "consumption paused, retrying", &e);
                    if paused.is_none() {
                        if let Ok(tpl) = self.consumer.assignment() {
                            let _ = self.consumer.pause(&tpl);
                            paused = Some(tpl);
                        }
                    }
                    let until = Instant::now() + delay;
                    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                        if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) {
                            self.stash.push_back(Fetched::of(&m));
                        }
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
        match b.planned_end {
            Some(end) => b.end >= end,
            None => {
                b.records >= self.cfg.sink.batch_max_records
                    || b.since.elapsed() >= Duration::from_millis(self.cfg.sink.linger_ms)
            }
        }
    }

    /// Drops buffers of revoked partitions (their new owner re-reads them) and reloads the
    /// progress another replica may have advanced for newly assigned ones.
    /// Returns whether the assignment changed.
    fn check_assignment(&mut self) -> Result<bool, ProcessError> {
        let now: BTreeSet<i32> = self.consumer.assignment()?.elements().iter().map(|e| e.partition()).collect();
        if now == self.assigned {
            return Ok(false);
        }
        // Batches in flight for a revoked partition finish (their token makes a repeat by the
        // new owner harmless); buffered and sealed ones are dropped and re-read by the owner.
        self.parts.retain(|p, _| now.contains(p));
        self.sealed.retain(|p, _| now.contains(p));
        self.held.retain(|p| now.contains(p));
        self.eof.retain(|p| now.contains(p));
        tracing::info!(partitions = ?now, "assignment changed");
        self.ever_assigned |= !now.is_empty();
        self.assigned = now;
        let client = self.client.clone();
        self.progress =
            self.storage("reading source progress", &AtomicBool::new(false), || sink::load_progress(&client))?;
        Ok(true)
    }

    /// Adds one message to its partition's open batch. A message that is not exactly one
    /// valid batch is quarantined first (acknowledged by Kafka) and then counts as consumed:
    /// its offset is inside the batch's range but it adds no rows. Nothing is ever allocated
    /// from a header's claims: `wire::check` decodes within the message's own bytes.
    fn push(&mut self, f: Fetched, stop: &AtomicBool) -> Result<(), ProcessError> {
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
            let (client, topic) = (self.client.clone(), self.cfg.kafka.topic.clone());
            let planned =
                self.storage("reading batch intents", stop, || sink::planned_end(&client, &topic, p, offset))?;
            self.parts.insert(
                p,
                PartBuf {
                    start: offset,
                    end: offset,
                    payloads: Vec::new(),
                    records: 0,
                    since: Instant::now(),
                    planned_end: planned,
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
        let done: Vec<i32> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.task.as_ref().is_none_or(|t| t.is_finished()))
            .map(|(p, _)| *p)
            .collect();
        let done = match (done.is_empty(), wait) {
            (true, true) => self.inflight.keys().next().copied().into_iter().collect(),
            (true, false) => return Ok(false),
            _ => done,
        };
        for p in done {
            let mut f = self.inflight.remove(&p).expect("listed");
            let task = f.task.take().expect("joined once");
            self.rt.block_on(task).expect("insert task panicked")?;
            self.finish(p, f);
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

    /// A stored batch: remember its progress, commit its offsets, count it.
    fn finish(&mut self, p: i32, f: InFlight) {
        self.progress.extend(f.advanced);
        let mut tpl = TopicPartitionList::new();
        let committed = tpl
            .add_partition_offset(&self.cfg.kafka.topic, p, Offset::Offset(f.end + 1))
            .and_then(|()| self.consumer.commit(&tpl, CommitMode::Sync));
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
        let topic = self.cfg.kafka.topic.clone();
        let token = batch_token(&topic, p, b.start, b.end);
        let started = Instant::now();

        let mut rows: Vec<AccessLogRow> = Vec::with_capacity(b.records);
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
                if row.customer_id.is_empty() {
                    unattributed += 1;
                }
                rows.push(row);
            }
        }
        drop(b.payloads);
        self.stats.unattributed += unattributed;

        let changed: Vec<((u64, String), StreamProgress)> = advanced.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let (client, give_up) = (self.client.clone(), self.give_up.clone());
        let (planned, start, end, n) = (b.planned_end.is_some(), b.start, b.end, rows.len() as u64);
        let task = self.rt.spawn(async move {
            if !planned {
                retrying(&give_up, "writing a batch intent", || sink::write_intent(&client, &topic, p, start, end))
                    .await?;
            }
            retrying(&give_up, "inserting access_log rows", || sink::insert_rows(&client, &token, &rows)).await?;
            retrying(&give_up, "writing source progress", || sink::write_progress(&client, &changed)).await
        });
        self.inflight.insert(p, InFlight { task: Some(task), end, rows: n, unattributed, advanced, started });
        metrics::gauge!("sitelog_process_inserts_in_flight").set(self.inflight.len() as f64);
        Ok(())
    }
}

/// Runs one ClickHouse step until it succeeds, with backoff; gives up on an error once
/// `give_up` is set (shutdown). Nothing is committed for a batch that gave up.
async fn retrying<F, Fut>(give_up: &AtomicBool, what: &str, mut step: F) -> Result<(), sink::SinkError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), sink::SinkError>>,
{
    let mut backoff = Backoff::default();
    loop {
        match step().await {
            Ok(()) => return Ok(()),
            Err(e) if give_up.load(Ordering::Relaxed) => return Err(e),
            Err(e) => tokio::time::sleep(backoff.failed(what, "retrying", &e)).await,
        }
    }
}

/// The retry schedule of a step that failed transiently (a ClickHouse write of an insert task
/// or of the consumer loop, a dead-letter write): 200 ms doubling to 10 s, each wait drawn
/// from its upper half ("equal jitter") so replicas that failed together do not retry in
/// lockstep; every failure is counted and logged.
struct Backoff {
    next: Duration,
    seed: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded randomly per process: enough to spread replicas apart.
        let seed = std::collections::hash_map::RandomState::new().build_hasher().finish();
        Backoff { next: Duration::from_millis(200), seed }
    }
}

impl Backoff {
    /// Records that `what` failed (`meanwhile`: what happens until the retry) and returns how
    /// long to wait before trying again.
    fn failed(&mut self, what: &str, meanwhile: &str, e: &dyn std::fmt::Display) -> Duration {
        let delay = jittered(self.next, &mut self.seed);
        metrics::counter!("sitelog_process_retries_total", "step" => what.to_owned()).increment(1);
        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what} failed; {meanwhile}");
        self.next = (self.next * 2).min(Duration::from_secs(10));
        delay
    }
}

/// `base / 2 + random(0 ..= base / 2)`, from a SplitMix64 step of `state`.
fn jittered(base: Duration, state: &mut u64) -> Duration {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let half = base / 2;
    half + Duration::from_nanos(z % (half.as_nanos() as u64 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_ten_seconds_with_jitter_in_the_upper_half() {
        let mut b = Backoff::default();
        let mut seen = std::collections::HashSet::new();
        for step in 0..12u32 {
            let base = (Duration::from_millis(200) * 2u32.pow(step.min(6))).min(Duration::from_secs(10));
            let d = b.failed("test", "retrying", &"e");
            assert!(d >= base / 2 && d <= base, "step {step}: {d:?} outside {:?}..={base:?}", base / 2);
            seen.insert(d);
        }
        assert!(seen.len() > 6, "jitter varies: {seen:?}");
    }
}
