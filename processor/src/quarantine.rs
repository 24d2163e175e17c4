//! Dead-letter quarantine for messages on the access topic that are not valid batches.
//!
//! One bad message must never stop the pipeline (it would be re-read and crash every replica
//! forever) and must never vanish: it is written, with where it came from and why it was
//! refused, to the dead-letter topic (`[kafka] deadletter_topic`, default
//! `sitelog.deadletter`), and only once Kafka acknowledged that write does the consumer treat
//! its offset as consumed — the same as a message whose rows are stored. A processor that
//! dies between the two writes the entry again after restart (at least once); entries are
//! identified by their source position, and `sitelog deadletter list` shows each once.
//!
//! Entry layout: key = the original key; payload = the original bytes, cut to
//! `[kafka] deadletter_max_bytes`; headers (UTF-8 text) name the source and the reason.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::KafkaConfig;

pub const H_TOPIC: &str = "sitelog-source-topic";
pub const H_PARTITION: &str = "sitelog-source-partition";
pub const H_OFFSET: &str = "sitelog-source-offset";
pub const H_KIND: &str = "sitelog-reason-kind";
pub const H_REASON: &str = "sitelog-reason";
pub const H_SIZE: &str = "sitelog-original-bytes";

/// A message refused by the consumer, and why.
#[derive(Debug, Clone, Copy)]
pub struct Poison<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// Stable short name (`bad_magic`, `truncated`, …), also the metrics label.
    pub kind: &'static str,
    pub reason: &'a str,
}

/// Writes poison messages to the dead-letter topic and waits for the broker's acknowledgement.
pub struct Quarantine {
    producer: FutureProducer,
    topic: String,
    max_bytes: usize,
}

/// Whether a dead-letter write failed in a way retrying cannot fix.
pub fn is_permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::MessageSizeTooLarge
        )
    )
}

impl Quarantine {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, KafkaError> {
        let producer: FutureProducer = cfg
            .client_config()?
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            .set("topic.metadata.refresh.interval.ms", "5000")
            .create()?;
        Ok(Quarantine { producer, topic: cfg.deadletter_topic.clone(), max_bytes: cfg.deadletter_max_bytes })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes one entry; returns its (partition, offset) in the dead-letter topic.
    pub async fn send(&self, p: &Poison<'_>) -> Result<(i32, i64), KafkaError> {
        let (partition, offset, size) = (p.partition.to_string(), p.offset.to_string(), p.payload.len().to_string());
        let headers = OwnedHeaders::new()
            .insert(Header { key: H_TOPIC, value: Some(p.topic) })
            .insert(Header { key: H_PARTITION, value: Some(&partition) })
            .insert(Header { key: H_OFFSET, value: Some(&offset) })
            .insert(Header { key: H_KIND, value: Some(p.kind) })
            .insert(Header { key: H_REASON, value: Some(p.reason) })
            .insert(Header { key: H_SIZE, value: Some(&size) });
        let body = &p.payload[..p.payload.len().min(self.max_bytes)];
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).payload(body).headers(headers);
        if let Some(k) = p.key {
            record = record.key(k);
        }
        self.producer.send(record, Duration::from_secs(30)).await.map(|d| (d.partition, d.offset)).map_err(|(e, _)| e)
    }
}

/// One dead-letter entry as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Where the entry is in the dead-letter topic.
    pub deadletter_partition: i32,
    pub deadletter_offset: i64,
    /// When it was quarantined (the entry's Kafka timestamp, RFC 3339 UTC).
    pub quarantined_at: String,
    /// Where the refused message is in the source topic.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The message key (the site host for access batches), lossy UTF-8.
    pub key: Option<String>,
    pub kind: String,
    pub reason: String,
    /// The original size; `payload` holds at most `deadletter_max_bytes` of it.
    pub original_bytes: u64,
    #[serde(skip)]
    pub payload: Vec<u8>,
}

impl Entry {
    /// `TOPIC/PARTITION/OFFSET` of the refused message: how `deadletter show` names it.
    pub fn source_position(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// Reads every entry of the dead-letter topic (from its start to its current end), one per
/// source position (a re-written duplicate is dropped), in source order.
pub fn read_all(cfg: &KafkaConfig, timeout: Duration) -> Result<Vec<Entry>, KafkaError> {
    let consumer: BaseConsumer = cfg
        .client_config()?
        .set("group.id", "sitelog-deadletter-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let topic = &cfg.deadletter_topic;
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else { return Ok(Vec::new()) };
    if t.error().is_some() || t.partitions().is_empty() {
        return Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition));
    }
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in t.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
        if high > low {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
            ends.insert(p.id(), high);
        }
    }
    let mut out: BTreeMap<(String, i32, i64), Entry> = BTreeMap::new();
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    while ends.iter().any(|(p, end)| next.get(p).copied().unwrap_or(0) < *end) {
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut));
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = m?;
        next.insert(m.partition(), m.offset() + 1);
        let mut h: BTreeMap<&str, String> = BTreeMap::new();
        if let Some(hs) = m.headers() {
            for hd in hs.iter() {
                h.insert(hd.key, hd.value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default());
            }
        }
        let num = |k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
        let e = Entry {
            deadletter_partition: m.partition(),
            deadletter_offset: m.offset(),
            quarantined_at: m
                .timestamp()
                .to_millis()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default(),
            topic: h.get(H_TOPIC).cloned().unwrap_or_default(),
            partition: num(H_PARTITION) as i32,
            offset: num(H_OFFSET),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            kind: h.get(H_KIND).cloned().unwrap_or_default(),
            reason: h.get(H_REASON).cloned().unwrap_or_default(),
            original_bytes: num(H_SIZE).max(0) as u64,
            payload: m.payload().unwrap_or_default().to_vec(),
        };
        out.entry((e.topic.clone(), e.partition, e.offset)).or_insert(e);
    }
    Ok(out.into_values().collect())
}
