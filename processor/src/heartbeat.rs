//! Collector heartbeats into ClickHouse: consumes `[kafka] heartbeat_topic`
//! (`sitelog.heartbeats`) and stores each heartbeat as a row of `collector_heartbeats`, where
//! the billing run reads the latest one per (server, source) (`billing::complete`).
//!
//! Same rules as the access topic: offsets are committed only after ClickHouse acknowledged
//! the rows (and, for a message that is not a valid heartbeat, after the dead-letter topic
//! acknowledged its quarantine entry); a re-delivered heartbeat is the same row of a
//! ReplacingMergeTree keyed by (server, source, sent_at) and collapses, and each insert
//! carries a dedup token of the Kafka positions it holds. A bad message never stops the
//! loop. The consumer group is its own: `[kafka] group_id` + `.heartbeats`, so heartbeats
//! never take part in the access topic's assignment or lag.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clickhouse::Client;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sitelog_schema::heartbeat::Heartbeat;

use crate::config::ProcessorConfig;
use crate::quarantine::{Poison, Quarantine};

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("heartbeat consumer: {0}")]
    Kafka(#[from] KafkaError),
    #[error("heartbeat store: {0}")]
    Config(#[from] crate::store::ConfigError),
}

/// One row of `collector_heartbeats`.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct HeartbeatRow {
    pub server: String,
    pub source: String,
    /// Milliseconds since the epoch (DateTime64(3)).
    pub sent_at: i64,
    /// Microseconds since the epoch (DateTime64(6)).
    pub delivered_through: i64,
    pub position: u64,
    pub idle: u8,
    pub files: u32,
}

impl HeartbeatRow {
    pub fn of(h: &Heartbeat) -> Self {
        HeartbeatRow {
            server: h.server.clone(),
            source: h.source.clone(),
            sent_at: h.sent_at_us.div_euclid(1000),
            delivered_through: h.delivered_through_us,
            position: h.position,
            idle: u8::from(h.idle),
            files: h.files,
        }
    }
}

/// Decodes one message: a JSON heartbeat of a supported version, or why not (`kind`, reason).
pub fn decode(payload: &[u8]) -> Result<Heartbeat, (&'static str, String)> {
    let h: Heartbeat = serde_json::from_slice(payload).map_err(|e| ("bad_heartbeat", e.to_string()))?;
    h.validate().map_err(|e| ("bad_heartbeat", e.to_string()))?;
    Ok(h)
}

/// Stores heartbeat rows as one deduplicated insert.
pub async fn store(client: &Client, token: &str, rows: &[HeartbeatRow]) -> Result<(), clickhouse::error::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let c = client.clone().with_setting("insert_deduplicate", "1").with_setting("insert_deduplication_token", token);
    let mut ins = c.insert::<HeartbeatRow>("collector_heartbeats").await?;
    for r in rows {
        ins.write(r).await?;
    }
    ins.end().await
}

/// Counts for the log line at exit.
#[derive(Debug, Default, Clone, Copy)]
pub struct HeartbeatStats {
    pub stored: u64,
    pub quarantined: u64,
}

/// The consumer group of the heartbeat consumer.
pub fn group_id(cfg: &ProcessorConfig) -> String {
    format!("{}.heartbeats", cfg.kafka.group_id)
}

/// Consumes heartbeats until `stop`; once `drain` is set, until the group's committed
/// offsets reach the topic's end (at most `drain_limit` after `drain` was set).
pub fn run(
    cfg: &ProcessorConfig,
    rt: &tokio::runtime::Handle,
    stop: &AtomicBool,
    drain: &AtomicBool,
    drain_limit: Duration,
) -> Result<HeartbeatStats, HeartbeatError> {
    let client = cfg.clickhouse.client()?;
    let topic = cfg.kafka.heartbeat_topic.clone();
    let consumer: BaseConsumer = cfg
        .kafka
        .client_config()?
        .set("group.id", group_id(cfg))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("max.poll.interval.ms", "300000")
        .create()?;
    consumer.subscribe(&[&topic])?;
    let quarantine = Quarantine::new(&cfg.kafka)?;
    let mut stats = HeartbeatStats::default();
    let mut drain_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(stats);
        }
        if drain.load(Ordering::Relaxed) {
            let since = *drain_since.get_or_insert_with(Instant::now);
            if caught_up(&consumer, &topic).unwrap_or(false) {
                return Ok(stats);
            }
            if since.elapsed() > drain_limit {
                tracing::warn!(topic, "heartbeats not caught up when the processor exits; the next run stores them");
                return Ok(stats);
            }
        }
        // One round: up to 1000 messages or 300 ms.
        let mut rows = Vec::new();
        let mut poison = Vec::new();
        let mut next: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        let round = Instant::now();
        while rows.len() + poison.len() < 1000 && round.elapsed() < Duration::from_millis(300) {
            let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat consumer");
                    continue;
                }
            };
            let (p, o) = (m.partition(), m.offset());
            next.entry(p).and_modify(|r| r.1 = o).or_insert((o, o));
            let payload = m.payload().unwrap_or_default();
            match decode(payload) {
                Ok(h) => rows.push(HeartbeatRow::of(&h)),
                Err((kind, reason)) => poison.push((p, o, m.key().map(<[u8]>::to_vec), payload.to_vec(), kind, reason)),
            }
        }
        if next.is_empty() {
            continue;
        }
        let token = next.iter().map(|(p, (a, b))| format!("{p}:{a}-{b}")).collect::<Vec<_>>().join(",");
        let token = format!("heartbeats/{topic}/{token}");
        // Rows first, then quarantine entries, then the commit; a failure retries the whole
        // round from the committed offsets (the same rows collapse).
        let stored = rt.block_on(store(&client, &token, &rows));
        let quarantined = stored.is_ok().then(|| {
            rt.block_on(async {
                for (p, o, key, payload, kind, reason) in &poison {
                    let entry =
                        Poison { topic: &topic, partition: *p, offset: *o, key: key.as_deref(), payload, kind, reason };
                    quarantine.send(&entry).await?;
                    metrics::counter!("sitelog_process_quarantined_total", "kind" => *kind).increment(1);
                    tracing::warn!(topic, partition = p, offset = o, reason, "heartbeat quarantined");
                }
                Ok::<(), KafkaError>(())
            })
        });
        let failure = match (stored, quarantined) {
            (Err(e), _) => Some(format!("storing heartbeats: {e}")),
            (Ok(()), Some(Err(e))) => Some(format!("quarantining a heartbeat: {e}")),
            _ => None,
        };
        if let Some(why) = failure {
            tracing::warn!(error = why, retry_in = ?backoff, "heartbeats not stored; retrying from the committed offsets");
            rewind(&consumer, &topic, &next);
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(10));
            continue;
        }
        backoff = Duration::from_millis(200);
        let mut tpl = TopicPartitionList::new();
        for (p, (_, last)) in &next {
            tpl.add_partition_offset(&topic, *p, Offset::Offset(last + 1))?;
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            // Stored already: a re-delivery after a restart collapses. Not a reason to stop.
            tracing::warn!(error = %e, "committing heartbeat offsets failed");
        }
        stats.stored += rows.len() as u64;
        stats.quarantined += poison.len() as u64;
        metrics::counter!("sitelog_process_heartbeats_stored_total").increment(rows.len() as u64);
    }
}

/// Seeks each partition of a failed round back to its first message.
fn rewind(consumer: &BaseConsumer, topic: &str, next: &BTreeMap<i32, (i64, i64)>) {
    for (p, (first, _)) in next {
        if let Err(e) = consumer.seek(topic, *p, Offset::Offset(*first), Duration::from_secs(5)) {
            tracing::warn!(error = %e, partition = p, "rewinding the heartbeat consumer");
        }
    }
}

/// Whether the group's committed offset is at the end of every partition of the topic.
fn caught_up(consumer: &BaseConsumer, topic: &str) -> Result<bool, KafkaError> {
    let timeout = Duration::from_secs(5);
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else { return Ok(true) };
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        tpl.add_partition(topic, p.id());
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    for p in t.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
        let at = match committed.find_partition(topic, p.id()).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => low,
        };
        if at < high {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_refuses_what_is_not_a_heartbeat() {
        let good = br#"{"version":1,"server":"web1","source":"sites","sent_at_us":1767225600123456,"delivered_through_us":1767225599000000,"position":10,"idle":false,"files":2}"#;
        let h = decode(good).unwrap();
        let row = HeartbeatRow::of(&h);
        assert_eq!((row.sent_at, row.delivered_through, row.idle), (1_767_225_600_123, 1_767_225_599_000_000, 0));
        for bad in [
            &b"\xff\xfe"[..],
            b"{}",
            b"not json",
            br#"{"version":2,"server":"web1","source":"s","sent_at_us":1,"delivered_through_us":0,"position":0,"idle":true,"files":0}"#,
            br#"{"version":1,"server":"","source":"s","sent_at_us":1,"delivered_through_us":0,"position":0,"idle":true,"files":0}"#,
        ] {
            assert_eq!(decode(bad).unwrap_err().0, "bad_heartbeat");
        }
    }
}
