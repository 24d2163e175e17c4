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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse::Client;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sitelog_schema::wire::BatchReader;

use crate::attribute::SiteMap;
use crate::config::ProcessorConfig;
use crate::derive::Deriver;
use crate::register;
use crate::store::rows::AccessLogRow;
use crate::store::sink::{self, batch_token, StreamProgress};

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
    pub batches: u64,
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
/// asks for (`enable.partition.eof`) to know when it has caught up.
pub struct Context;

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF));
        if !eof {
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
    /// Next offset to read per partition, as last committed here (for the lag gauge).
    committed: HashMap<i32, i64>,
    last_lag_report: Instant,
    ever_assigned: bool,
    /// Messages fetched while partitions were paused during a ClickHouse outage.
    stash: std::collections::VecDeque<(i32, i64, Vec<u8>)>,
    pub stats: Stats,
}

impl Processor {
    /// Connects, loads the register and the source progress, and subscribes.
    pub fn new(cfg: ProcessorConfig, rt: tokio::runtime::Handle) -> Result<Processor, ProcessError> {
        let client = cfg.clickhouse.client()?;
        let consumer: BaseConsumer<Context> = cfg
            .kafka
            .client_config()
            .set("group.id", &cfg.kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            .set("max.poll.interval.ms", cfg.sink.max_poll_interval_ms.to_string())
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .create_with_context(Context)?;
        consumer.subscribe(&[&cfg.kafka.topic])?;
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
            committed: HashMap::new(),
            last_lag_report: Instant::now(),
            ever_assigned: false,
            stash: Default::default(),
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
            if let Some((p, offset, payload)) = self.stash.pop_front() {
                if self.assigned.contains(&p) {
                    self.push(p, offset, payload, stop)?;
                }
                continue;
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    idle_since = Instant::now();
                    let p = m.partition();
                    self.eof.remove(&p);
                    let payload = m.payload().unwrap_or_default().to_vec();
                    self.push(p, m.offset(), payload, stop)?;
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
            // One batch per turn, so the consumer is polled between inserts and stays in the
            // group (max.poll.interval.ms) even when several partitions are due at once.
            if let Some(p) = self.parts.iter().find(|(_, b)| self.is_due(b)).map(|(p, _)| *p) {
                self.flush(p, stop)?;
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
                if (caught_up || self.assigned.is_empty()) && self.parts.is_empty() && idle_since.elapsed() >= wait {
                    break;
                }
            }
        }
        // SIGTERM or done: drain what is buffered, commit, and leave the group.
        let pending: Vec<i32> = self.parts.keys().copied().collect();
        for p in pending {
            if self.parts.get(&p).is_some_and(|b| b.planned_end.is_none_or(|e| b.end >= e)) {
                self.flush(p, &AtomicBool::new(false))?;
            }
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
        let mut delay = Duration::from_millis(200);
        let mut paused: Option<TopicPartitionList> = None;
        let result = loop {
            match self.rt.block_on(step()) {
                Ok(v) => break Ok(v),
                Err(e) if stop.load(Ordering::Relaxed) => break Err(e.into()),
                Err(e) => {
                    metrics::counter!("sitelog_process_clickhouse_errors_total").increment(1);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what} failed; consumption paused, retrying");
                    if paused.is_none() {
                        if let Ok(tpl) = self.consumer.assignment() {
                            let _ = self.consumer.pause(&tpl);
                            paused = Some(tpl);
                        }
                    }
                    let until = Instant::now() + delay;
                    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                        if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) {
                            self.stash.push_back((m.partition(), m.offset(), m.payload().unwrap_or_default().to_vec()));
                        }
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        };
        if let Some(tpl) = paused {
            let _ = self.consumer.resume(&tpl);
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
        self.parts.retain(|p, _| now.contains(p));
        self.eof.retain(|p| now.contains(p));
        tracing::info!(partitions = ?now, "assignment changed");
        self.ever_assigned |= !now.is_empty();
        self.assigned = now;
        let client = self.client.clone();
        self.progress =
            self.storage("reading source progress", &AtomicBool::new(false), || sink::load_progress(&client))?;
        Ok(true)
    }

    fn push(&mut self, p: i32, offset: i64, payload: Vec<u8>, stop: &AtomicBool) -> Result<(), ProcessError> {
        self.stats.messages += 1;
        let n = BatchReader::new(&payload).map(|r| r.header().count as usize).unwrap_or(0);
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
        b.records += n;
        b.payloads.push((offset, payload));
        if self.is_due(self.parts.get(&p).expect("present")) {
            self.flush(p, stop)?;
        }
        Ok(())
    }

    /// Inserts one partition's batch exactly once, then commits its offsets.
    fn flush(&mut self, p: i32, stop: &AtomicBool) -> Result<(), ProcessError> {
        let Some(b) = self.parts.remove(&p) else { return Ok(()) };
        let topic = self.cfg.kafka.topic.clone();
        let token = batch_token(&topic, p, b.start, b.end);
        let started = Instant::now();

        // Rows: decode, drop re-sent records by source identity, attribute, classify.
        let mut rows: Vec<AccessLogRow> = Vec::with_capacity(b.records);
        let mut advanced: HashMap<(u64, String), StreamProgress> = HashMap::new();
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
                let row = self.deriver.row(&rec, &self.map);
                if row.customer_id.is_empty() {
                    self.stats.unattributed += 1;
                }
                rows.push(row);
            }
        }

        let client = self.client.clone();
        let changed: Vec<((u64, String), StreamProgress)> = advanced.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let planned = b.planned_end.is_some();
        let (start, end) = (b.start, b.end);
        if !planned {
            self.storage("writing a batch intent", stop, || sink::write_intent(&client, &topic, p, start, end))?;
        }
        self.storage("inserting access_log rows", stop, || sink::insert_rows(&client, &token, &rows))?;
        self.storage("writing source progress", stop, || sink::write_progress(&client, &changed))?;
        self.progress.extend(advanced);

        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, p, Offset::Offset(end + 1))?;
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
            // Safe: the batch is stored; a re-read repeats it with the same token.
            tracing::warn!(partition = p, error = %e, "offset commit failed; the batch will be re-read and deduplicated");
        }
        let unattributed = rows.iter().filter(|r| r.customer_id.is_empty()).count() as u64;
        self.stats.inserted += rows.len() as u64;
        self.stats.batches += 1;
        metrics::counter!("sitelog_process_records_total", "outcome" => "inserted").increment(rows.len() as u64);
        metrics::counter!("sitelog_process_records_total", "outcome" => "unattributed").increment(unattributed);
        metrics::histogram!("sitelog_process_insert_seconds").record(started.elapsed().as_secs_f64());
        self.committed.insert(p, end + 1);
        tracing::debug!(
            partition = p,
            start,
            end,
            rows = rows.len(),
            ms = started.elapsed().as_millis() as u64,
            "batch stored"
        );
        Ok(())
    }
}
