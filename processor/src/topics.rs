//! Kafka topic retention: the topics that hold whole log lines — access records (with the full
//! client address), rejects (the raw line) and the dead-letter topic (bytes of messages that
//! were not valid batches) — must not keep them longer than `[retention] client_ip_days`.
//!
//! [`plan`] reads each topic's configuration (`DescribeConfigs`) and lists what differs from
//! [`wanted`]; [`apply`] sets it with `IncrementalAlterConfigs` (only the keys named, other
//! topic settings stay). `sitelog kafka topics` runs both; `sitelog process` runs [`plan`] at
//! start and warns about every topic that would keep lines too long.
//!
//! rust-rdkafka exposes only the legacy `AlterConfigs`, which replaces a topic's whole
//! configuration (and which tansu does not implement); `IncrementalAlterConfigs` is called
//! through librdkafka's C API here.

use std::ffi::{CStr, CString};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use sitelog_schema::migrations::Retention;

use crate::config::KafkaConfig;

/// Segments roll at least hourly, so a record outlives `retention.ms` by at most about an hour
/// (Kafka deletes whole segments, once the newest record in one is past retention).
pub const SEGMENT_MS: u64 = 3_600_000;

#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("kafka admin client: {0}")]
    Client(rdkafka::error::KafkaError),
    #[error("describing the configuration of topic {topic}: {detail}")]
    Describe { topic: String, detail: String },
    #[error("reading the id and partition count of topic {topic}: {detail}")]
    Identity { topic: String, detail: String },
    #[error("setting {key} = {value} on topic {topic}: {detail}")]
    Alter { topic: String, key: String, value: String, detail: String },
}

/// One topic setting that differs from what retention needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicChange {
    pub topic: String,
    pub key: &'static str,
    /// `None`: not set on the topic (the broker default applies).
    pub old: Option<String>,
    pub new: String,
}

impl std::fmt::Display for TopicChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let old = self.old.as_deref().unwrap_or("(broker default)");
        write!(f, "topic {} {} {old} -> {}", self.topic, self.key, self.new)
    }
}

/// The settings a line-holding topic needs: delete (not compact), at most `client_ip_days`.
pub fn wanted(r: &Retention) -> [(&'static str, String); 3] {
    let retention_ms = u64::from(r.client_ip_days) * 86_400_000;
    [
        ("cleanup.policy", "delete".to_owned()),
        ("retention.ms", retention_ms.to_string()),
        ("segment.ms", SEGMENT_MS.min(retention_ms).to_string()),
    ]
}

/// The topics holding whole lines or addresses.
pub fn line_topics(k: &KafkaConfig) -> [&str; 3] {
    [&k.topic, &k.rejects_topic, &k.deadletter_topic]
}

fn admin(k: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>, TopicsError> {
    k.client_config().map_err(TopicsError::Client)?.create().map_err(TopicsError::Client)
}

/// Whether `current` keeps lines no longer than `want` asks (a shorter retention is fine).
fn satisfies(key: &str, current: Option<&str>, want: &str) -> bool {
    match (key, current) {
        ("cleanup.policy", Some(v)) => v == want,
        (_, Some(v)) => matches!((v.parse::<i64>(), want.parse::<i64>()), (Ok(c), Ok(w)) if c >= 0 && c <= w),
        (_, None) => false,
    }
}

/// What must change on the line-holding topics for `retention`.
pub async fn plan(k: &KafkaConfig, r: &Retention) -> Result<Vec<TopicChange>, TopicsError> {
    let admin = admin(k)?;
    let topics = line_topics(k);
    let specs: Vec<ResourceSpecifier> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let results = admin.describe_configs(&specs, &opts).await.map_err(TopicsError::Client)?;
    let mut changes = Vec::new();
    for (topic, res) in topics.iter().zip(results) {
        let res = res.map_err(|e| TopicsError::Describe { topic: topic.to_string(), detail: e.to_string() })?;
        for (key, want) in wanted(r) {
            let current = res.get(key).and_then(|e| e.value.clone());
            if !satisfies(key, current.as_deref(), &want) {
                changes.push(TopicChange { topic: topic.to_string(), key, old: current, new: want });
            }
        }
    }
    Ok(changes)
}

/// Sets every change with `IncrementalAlterConfigs`, one request per topic.
pub fn apply(k: &KafkaConfig, changes: &[TopicChange]) -> Result<(), TopicsError> {
    let admin = admin(k)?;
    let mut topics: Vec<&str> = changes.iter().map(|c| c.topic.as_str()).collect();
    topics.dedup();
    for topic in topics {
        let sets: Vec<(&str, &str)> =
            changes.iter().filter(|c| c.topic == topic).map(|c| (c.key, c.new.as_str())).collect();
        incremental_alter_topic(&admin, topic, &sets)?;
    }
    Ok(())
}

/// `IncrementalAlterConfigs` SET of `sets` on one topic through librdkafka's C API, waiting
/// for the broker's answer.
fn incremental_alter_topic(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    sets: &[(&str, &str)],
) -> Result<(), TopicsError> {
    use rdkafka::bindings as rd;
    let fail = |detail: String| TopicsError::Alter {
        topic: topic.into(),
        key: sets.iter().map(|s| s.0).collect::<Vec<_>>().join(", "),
        value: sets.iter().map(|s| s.1).collect::<Vec<_>>().join(", "),
        detail,
    };
    let name = CString::new(topic).map_err(|e| fail(e.to_string()))?;
    let owned: Vec<(CString, CString)> = sets
        .iter()
        .map(|(k, v)| Ok((CString::new(*k)?, CString::new(*v)?)))
        .collect::<Result<_, std::ffi::NulError>>()
        .map_err(|e| fail(e.to_string()))?;
    // SAFETY: every pointer passed below is either created here and destroyed before return,
    // or owned by `admin` (the client handle), which outlives this call. Strings are copied by
    // librdkafka. The result event is read before it is destroyed.
    unsafe {
        let rk = admin.inner().native_ptr();
        let res = rd::rd_kafka_ConfigResource_new(rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC, name.as_ptr());
        let mut outcome = Ok(());
        for (k, v) in &owned {
            let err = rd::rd_kafka_ConfigResource_add_incremental_config(
                res,
                k.as_ptr(),
                rd::rd_kafka_AlterConfigOpType_t::RD_KAFKA_ALTER_CONFIG_OP_TYPE_SET,
                v.as_ptr(),
            );
            if !err.is_null() {
                outcome = Err(fail(CStr::from_ptr(rd::rd_kafka_error_string(err)).to_string_lossy().into_owned()));
                rd::rd_kafka_error_destroy(err);
            }
        }
        if outcome.is_ok() {
            let queue = rd::rd_kafka_queue_new(rk);
            let opts =
                rd::rd_kafka_AdminOptions_new(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_INCREMENTALALTERCONFIGS);
            let mut resources = [res];
            rd::rd_kafka_IncrementalAlterConfigs(rk, resources.as_mut_ptr(), 1, opts, queue);
            let ev = rd::rd_kafka_queue_poll(queue, 30_000);
            outcome = if ev.is_null() {
                Err(fail("no answer from the broker within 30 s".into()))
            } else if rd::rd_kafka_event_error(ev) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                Err(fail(CStr::from_ptr(rd::rd_kafka_event_error_string(ev)).to_string_lossy().into_owned()))
            } else {
                let result = rd::rd_kafka_event_IncrementalAlterConfigs_result(ev);
                let mut n = 0usize;
                let out = rd::rd_kafka_IncrementalAlterConfigs_result_resources(result, &mut n);
                let mut r = Ok(());
                for i in 0..n {
                    let one = *out.add(i);
                    if rd::rd_kafka_ConfigResource_error(one) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                        let msg = rd::rd_kafka_ConfigResource_error_string(one);
                        let code = rd::rd_kafka_err2str(rd::rd_kafka_ConfigResource_error(one));
                        let text = if msg.is_null() { CStr::from_ptr(code) } else { CStr::from_ptr(msg) };
                        r = Err(fail(text.to_string_lossy().into_owned()));
                    }
                }
                r
            };
            if !ev.is_null() {
                rd::rd_kafka_event_destroy(ev);
            }
            rd::rd_kafka_AdminOptions_destroy(opts);
            rd::rd_kafka_queue_destroy(queue);
        }
        rd::rd_kafka_ConfigResource_destroy(res);
        outcome
    }
}

/// What identifies the topic the processor consumes, beyond its name: the broker's topic id
/// (Kafka's `Uuid`, KIP-516, Apache Kafka 2.8+; tansu 0.6.0 gives one per created topic, a new
/// one when a topic is deleted and created again), and its partition count.
///
/// rust-rdkafka's metadata types carry neither the topic id nor the cluster's view of it; they
/// come from librdkafka's `DescribeTopics` (a Metadata request v10+), called here through the
/// C API. A broker that gives no topic id (older than 2.8: the all-zero `Uuid`) leaves `id`
/// as the cluster id with the name (`cluster:<id>`): a recreated topic is then not told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicIdentity {
    pub name: String,
    /// The topic id in Kafka's URL-safe base64 form (22 characters), or `cluster:<cluster id>`.
    pub id: String,
    pub partitions: usize,
}

impl TopicIdentity {
    /// How intents and dedup tokens name the topic: `name@id`, so batches of a topic deleted
    /// and created again never share a token or an intent with the old topic's batches.
    pub fn key(&self) -> String {
        format!("{}@{}", self.name, self.id)
    }
}

/// Describes `topic` (id and partition count) through any client of the cluster.
pub fn describe<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<TopicIdentity, TopicsError> {
    use rdkafka::bindings as rd;
    let fail = |detail: String| TopicsError::Identity { topic: topic.into(), detail };
    let name = CString::new(topic).map_err(|e| fail(e.to_string()))?;
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: as in `incremental_alter_topic`: everything created here is destroyed before
    // return, the client handle outlives the call, the result is read before it is destroyed
    // (the id string is copied out at once).
    let (id, partitions) = unsafe {
        let rk = client.native_ptr();
        let mut names = [name.as_ptr()];
        let coll = rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1);
        let queue = rd::rd_kafka_queue_new(rk);
        let opts = rd::rd_kafka_AdminOptions_new(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS);
        // librdkafka answers every admin request on `queue`, with a timeout error at the
        // latest after the request timeout: the queue must live until that answer, or the
        // answer lands in freed memory (seen: SIGSEGV when a busy broker answered after the
        // wait). So the request times out first and the wait is longer.
        let mut errstr = [0 as std::os::raw::c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(opts, ms, errstr.as_mut_ptr(), errstr.len());
        rd::rd_kafka_DescribeTopics(rk, coll, opts, queue);
        let ev = rd::rd_kafka_queue_poll(queue, ms.saturating_add(30_000));
        if ev.is_null() {
            // No answer even past the request timeout: leave queue and options alive (a small
            // leak) rather than risk a late answer writing into freed memory.
            rd::rd_kafka_TopicCollection_destroy(coll);
            return Err(fail(format!("no answer from librdkafka within {} ms", ms.saturating_add(30_000))));
        }
        let out = if rd::rd_kafka_event_error(ev) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Err(fail(CStr::from_ptr(rd::rd_kafka_event_error_string(ev)).to_string_lossy().into_owned()))
        } else {
            let result = rd::rd_kafka_event_DescribeTopics_result(ev);
            let mut n = 0usize;
            let descs = rd::rd_kafka_DescribeTopics_result_topics(result, &mut n);
            if n == 0 {
                Err(fail("the broker described no topic".into()))
            } else {
                let d = *descs;
                let err = rd::rd_kafka_TopicDescription_error(d);
                if !err.is_null() && rd::rd_kafka_error_code(err) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                {
                    Err(fail(CStr::from_ptr(rd::rd_kafka_error_string(err)).to_string_lossy().into_owned()))
                } else {
                    let uuid = rd::rd_kafka_TopicDescription_topic_id(d);
                    let zero = uuid.is_null()
                        || (rd::rd_kafka_Uuid_most_significant_bits(uuid) == 0
                            && rd::rd_kafka_Uuid_least_significant_bits(uuid) == 0);
                    let id = if zero {
                        None
                    } else {
                        let s = rd::rd_kafka_Uuid_base64str(uuid);
                        (!s.is_null()).then(|| CStr::from_ptr(s).to_string_lossy().into_owned())
                    };
                    let mut np = 0usize;
                    rd::rd_kafka_TopicDescription_partitions(d, &mut np);
                    Ok((id, np))
                }
            }
        };
        rd::rd_kafka_event_destroy(ev);
        rd::rd_kafka_AdminOptions_destroy(opts);
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_TopicCollection_destroy(coll);
        out?
    };
    let id = match id {
        Some(id) => id,
        None => format!("cluster:{}", client.fetch_cluster_id(timeout).unwrap_or_default()),
    };
    Ok(TopicIdentity { name: topic.into(), id, partitions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_key_names_the_topic_and_its_id() {
        let t = TopicIdentity { name: "sitelog.access".into(), id: "AAECAwQFBgcICQoLDA0ODw".into(), partitions: 4 };
        assert_eq!(t.key(), "sitelog.access@AAECAwQFBgcICQoLDA0ODw");
        assert_eq!(
            crate::store::sink::batch_token(&t.key(), 2, 10, 20),
            "sitelog.access@AAECAwQFBgcICQoLDA0ODw/2/10-20"
        );
    }

    #[test]
    fn shorter_is_fine_longer_or_unset_is_not() {
        let r = Retention { client_ip_days: 3, ..Default::default() };
        let w = wanted(&r);
        assert_eq!(w[1], ("retention.ms", "259200000".to_owned()));
        assert_eq!(w[2], ("segment.ms", "3600000".to_owned()));
        assert!(satisfies("retention.ms", Some("259200000"), &w[1].1));
        assert!(satisfies("retention.ms", Some("86400000"), &w[1].1));
        assert!(!satisfies("retention.ms", Some("604800000"), &w[1].1));
        assert!(!satisfies("retention.ms", Some("-1"), &w[1].1), "forever is too long");
        assert!(!satisfies("retention.ms", None, &w[1].1));
        assert!(!satisfies("cleanup.policy", Some("compact"), "delete"));
    }
}
