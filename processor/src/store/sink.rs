//! The exactly-once ClickHouse sink for one batch of one Kafka partition.
//!
//! Order of writes per batch (the invariant the whole billing chain rests on):
//! 1. the batch's intent `(topic, partition, start, end)` — so a restart cuts it again the same,
//!    where `topic` is the topic's name *and id* (`name@id`, [`crate::topics::TopicIdentity::key`]),
//!    so a topic deleted and created again, whose offsets start at 0 again, never meets the old
//!    topic's intents or tokens within the dedup window,
//! 2. the rows, with `insert_deduplication_token = name@id/partition/start-end` — a repeat of the
//!    same batch is dropped by ClickHouse in `access_log` and in every materialized view target,
//! 3. the per-source progress (highest byte offset stored per file fingerprint and host),
//! 4. and only then does the caller commit the Kafka offset `end + 1`.
//!
//! A crash between any two steps repeats the later steps with identical content and token.

use std::collections::HashMap;

use clickhouse::Client;
use serde::{Deserialize, Serialize};

use super::rows::AccessLogRow;

#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct SinkError {
    pub what: &'static str,
    #[source]
    pub source: clickhouse::error::Error,
}

impl SinkError {
    /// Whether retrying cannot fix this: the server refuses the user, or a table, column or
    /// database is missing, or the rows do not fit the table (ClickHouse error codes 16, 47,
    /// 60, 81, 192, 194, 497, 516; the crate's schema check). The loops still retry a few
    /// times (a server that is starting may answer oddly) before they give up.
    pub fn is_permanent(&self) -> bool {
        use clickhouse::error::Error;
        match &self.source {
            Error::SchemaMismatch(_) => true,
            Error::BadResponse(text) => response_code(text).is_some_and(|c| PERMANENT_CODES.contains(&c)),
            _ => false,
        }
    }
}

const PERMANENT_CODES: &[u32] = &[16, 47, 60, 81, 192, 194, 497, 516];

/// The `Code: N.` of a ClickHouse error response.
fn response_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + 6..];
    rest[..rest.find(|c: char| !c.is_ascii_digit())?].parse().ok()
}

fn err(what: &'static str) -> impl FnOnce(clickhouse::error::Error) -> SinkError {
    move |source| SinkError { what, source }
}

#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
struct IntentRow {
    topic: String,
    partition: i32,
    start_offset: i64,
    end_offset: i64,
    written_at: i64,
}

/// Progress of one (source file, host) stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamProgress {
    pub max_offset: u64,
    pub max_ts: i64,
    pub records: u64,
}

#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
struct ProgressRow {
    fingerprint: u64,
    site_host: String,
    max_offset: u64,
    max_ts: i64,
    records: u64,
    updated_at: i64,
}

/// The dedup token of a batch: a pure function of where it sits in Kafka (`topic` is the
/// topic's identity key, `name@id`).
pub fn batch_token(topic: &str, partition: i32, start: i64, end: i64) -> String {
    format!("{topic}/{partition}/{start}-{end}")
}

pub async fn write_intent(client: &Client, topic: &str, partition: i32, start: i64, end: i64) -> Result<(), SinkError> {
    let mut ins = client.insert::<IntentRow>("sink_intents").await.map_err(err("writing a batch intent"))?;
    ins.write(&IntentRow {
        topic: topic.into(),
        partition,
        start_offset: start,
        end_offset: end,
        written_at: chrono::Utc::now().timestamp_millis(),
    })
    .await
    .map_err(err("writing a batch intent"))?;
    ins.end().await.map_err(err("writing a batch intent"))
}

/// A batch planned before: where it ends, and the topic key its intent (and so its token)
/// was written under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub end: i64,
    pub key: String,
}

/// The batch that was planned to start at `start`, if one was: under the topic's identity key
/// (`name@id`), else under its bare name — an intent written by a sitelog before topic ids
/// (an upgrade while a batch was in flight), which must be retried under its old token.
pub async fn planned_end(
    client: &Client,
    key: &str,
    legacy_name: &str,
    partition: i32,
    start: i64,
) -> Result<Option<Planned>, SinkError> {
    let rows: Vec<(String, i64)> = client
        .query(
            "SELECT topic, max(end_offset) FROM sink_intents FINAL \
             WHERE topic IN (?, ?) AND partition = ? AND start_offset = ? GROUP BY topic",
        )
        .bind(key)
        .bind(legacy_name)
        .bind(partition)
        .bind(start)
        .fetch_all()
        .await
        .map_err(err("reading batch intents"))?;
    Ok(pick_planned(rows, key))
}

/// The identity key's intent wins over a legacy one.
fn pick_planned(rows: Vec<(String, i64)>, key: &str) -> Option<Planned> {
    rows.into_iter().map(|(k, end)| Planned { end, key: k }).max_by_key(|p| p.key == key)
}

/// Where the partition count the processors last worked with is kept: a row of
/// `sink_intents` under the topic `name@id#partitions`, its `partition` the count and both
/// offsets -1 (no migration; rewritten on every start and assignment, so the table's 30-day
/// TTL never removes it from a running pipeline).
fn partitions_marker(topic: &str) -> String {
    format!("{topic}#partitions")
}

/// The partition count last recorded for the topic (its identity key), if any.
pub async fn recorded_partitions(client: &Client, topic: &str) -> Result<Option<i32>, SinkError> {
    let counts: Vec<i32> = client
        .query("SELECT partition FROM sink_intents FINAL WHERE topic = ? ORDER BY written_at DESC LIMIT 1")
        .bind(partitions_marker(topic))
        .fetch_all()
        .await
        .map_err(err("reading the recorded partition count"))?;
    Ok(counts.into_iter().next())
}

/// Records the topic's partition count (see [`recorded_partitions`]).
pub async fn record_partitions(client: &Client, topic: &str, partitions: i32) -> Result<(), SinkError> {
    write_intent(client, &partitions_marker(topic), partitions, -1, -1).await
}

/// Inserts `rows` as one deduplicated insert.
pub async fn insert_rows(client: &Client, token: &str, rows: &[AccessLogRow]) -> Result<(), SinkError> {
    if rows.is_empty() {
        return Ok(());
    }
    let c = client
        .clone()
        .with_setting("insert_deduplicate", "1")
        .with_setting("insert_deduplication_token", token)
        .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1");
    let mut ins = c.insert::<AccessLogRow>("access_log").await.map_err(err("starting the access_log insert"))?;
    for r in rows {
        ins.write(r).await.map_err(err("streaming access_log rows"))?;
    }
    ins.end().await.map_err(err("finishing the access_log insert"))
}

/// Inserts a batch's security events (their current states) and near-miss signals, each table
/// with the batch's token and its own suffix, so a retried or replayed batch adds nothing.
pub async fn insert_security(
    client: &Client,
    token: &str,
    events: &[crate::security::detector::EventRow],
    signals: &[crate::security::detector::SignalRow],
) -> Result<(), SinkError> {
    use crate::security::detector::{EventRow, SignalRow};
    if !events.is_empty() {
        let c = client
            .clone()
            .with_setting("insert_deduplicate", "1")
            .with_setting("insert_deduplication_token", format!("{token}/events"));
        let mut ins =
            c.insert::<EventRow>("security_events").await.map_err(err("starting the security_events insert"))?;
        for e in events {
            ins.write(e).await.map_err(err("streaming security_events rows"))?;
        }
        ins.end().await.map_err(err("finishing the security_events insert"))?;
    }
    if !signals.is_empty() {
        let c = client
            .clone()
            .with_setting("insert_deduplicate", "1")
            .with_setting("insert_deduplication_token", format!("{token}/signals"));
        let mut ins =
            c.insert::<SignalRow>("security_signals").await.map_err(err("starting the security_signals insert"))?;
        for e in signals {
            ins.write(e).await.map_err(err("streaming security_signals rows"))?;
        }
        ins.end().await.map_err(err("finishing the security_signals insert"))?;
    }
    Ok(())
}

/// Loads the progress of every stream (one row per file and host; grows with every file ever
/// read, so the processor no longer loads it whole: see [`load_progress_of`]).
pub async fn load_progress(client: &Client) -> Result<HashMap<(u64, String), StreamProgress>, SinkError> {
    let rows: Vec<ProgressRow> = client
        .query("SELECT ?fields FROM source_progress FINAL")
        .fetch_all()
        .await
        .map_err(err("reading source_progress"))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let p = progress_of(&r);
            ((r.fingerprint, r.site_host), p)
        })
        .collect())
}

fn progress_of(r: &ProgressRow) -> StreamProgress {
    StreamProgress { max_offset: r.max_offset, max_ts: r.max_ts, records: r.records }
}

/// How many streams one progress query asks for.
const KEYS_PER_QUERY: usize = 2000;

/// The progress of just these streams (those a batch is about to use): streams without a row
/// are absent. Reads the primary key's prefix (`fingerprint`), so the cost follows the keys
/// asked for, not the size of the table.
pub async fn load_progress_of(
    client: &Client,
    keys: &[(u64, String)],
) -> Result<HashMap<(u64, String), StreamProgress>, SinkError> {
    let mut out = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(KEYS_PER_QUERY) {
        let mut fps: Vec<u64> = chunk.iter().map(|k| k.0).collect();
        fps.sort_unstable();
        fps.dedup();
        let mut hosts: Vec<&str> = chunk.iter().map(|k| k.1.as_str()).collect();
        hosts.sort_unstable();
        hosts.dedup();
        let rows: Vec<ProgressRow> = client
            .query("SELECT ?fields FROM source_progress FINAL WHERE fingerprint IN ? AND site_host IN ?")
            .bind(fps)
            .bind(hosts)
            .fetch_all()
            .await
            .map_err(err("reading source_progress"))?;
        // The two IN lists select a superset (every fingerprint with every host): keep the keys asked for.
        let wanted: std::collections::HashSet<(u64, &str)> = chunk.iter().map(|k| (k.0, k.1.as_str())).collect();
        for r in rows {
            if wanted.contains(&(r.fingerprint, r.site_host.as_str())) {
                out.insert((r.fingerprint, r.site_host.clone()), progress_of(&r));
            }
        }
    }
    Ok(out)
}

pub async fn write_progress(client: &Client, changed: &[((u64, String), StreamProgress)]) -> Result<(), SinkError> {
    if changed.is_empty() {
        return Ok(());
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut ins = client.insert::<ProgressRow>("source_progress").await.map_err(err("writing source progress"))?;
    for ((fp, host), p) in changed {
        ins.write(&ProgressRow {
            fingerprint: *fp,
            site_host: host.clone(),
            max_offset: p.max_offset,
            max_ts: p.max_ts,
            records: p.records,
            updated_at: now,
        })
        .await
        .map_err(err("writing source progress"))?;
    }
    ins.end().await.map_err(err("writing source progress"))
}

#[cfg(test)]
mod permanent_tests {
    use super::*;

    #[test]
    fn permanent_errors_are_told_by_their_code() {
        let e = |t: &str| SinkError { what: "x", source: clickhouse::error::Error::BadResponse(t.into()) };
        assert!(e("Code: 60. DB::Exception: Table db.access_log does not exist. (UNKNOWN_TABLE)").is_permanent());
        assert!(e("Code: 516. DB::Exception: default: Authentication failed").is_permanent());
        assert!(!e("Code: 241. DB::Exception: Memory limit exceeded").is_permanent());
        assert!(!e("connection reset").is_permanent());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intent_under_the_topic_id_wins_over_a_legacy_one() {
        let key = "sitelog.access@AAECAwQFBgcICQoLDA0ODw";
        let both = vec![("sitelog.access".to_owned(), 150), (key.to_owned(), 170)];
        assert_eq!(pick_planned(both, key), Some(Planned { end: 170, key: key.into() }));
        let legacy = vec![("sitelog.access".to_owned(), 150)];
        assert_eq!(pick_planned(legacy, key), Some(Planned { end: 150, key: "sitelog.access".into() }));
        assert_eq!(pick_planned(vec![], key), None);
    }
}
