//! `processor.toml`: one file for `sitelog process`, `schema migrate`, `customers` and reports.
//! Serde with defaults in one place, unknown keys refused, `validate()` naming the bad key,
//! secrets from the environment (`SITELOG_CLICKHOUSE_PASSWORD`, `SITELOG_KAFKA_PASSWORD`) or
//! from files (`password_file`, `sasl_password_file`), never from this file.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sitelog_schema::kafka::{self, KafkaSecurity};
use sitelog_schema::migrations::Retention;

use crate::billing::BillingConfig;
use crate::store::ClickHouseConfig;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorConfig {
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    pub retention: Retention,
    pub sink: SinkConfig,
    pub attribution: AttributionConfig,
    pub billing: BillingConfig,
    pub privacy: PrivacyConfig,
    pub security: crate::security::SecurityConfig,
    /// `[alerts]`: disruption alerting (`sitelog alerts run`).
    pub alerts: crate::diagnosis::AlertsConfig,
    pub health: crate::diagnosis::health::HealthConfig,
    /// `[serve]`: the web console (`sitelog serve`).
    pub serve: crate::serve::ServeConfig,
}

/// `[privacy]`: the processor's secrets for visitor identities (see `visitors`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Directory of the per-month visitor keys (`YYYY-MM.key`). Only the processor reads it;
    /// replicas share it. Default: `$XDG_STATE_HOME/sitelog/visitor-keys` or
    /// `~/.local/state/sitelog/visitor-keys`.
    pub visitor_key_dir: Option<std::path::PathBuf>,
}

impl PrivacyConfig {
    pub fn key_dir(&self) -> std::path::PathBuf {
        self.visitor_key_dir.clone().unwrap_or_else(crate::visitors::default_dir)
    }
}

/// `[sink]`: how records are cut into ClickHouse inserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Records per insert batch (per Kafka partition); see benches/README.md for the measurement.
    pub batch_max_records: usize,
    /// Longest time a partial batch waits before it is inserted.
    pub linger_ms: u64,
    /// Kafka consumer `max.poll.interval.ms`: how long an insert may block before the group
    /// rebalances (which is safe: batches are reproducible).
    pub max_poll_interval_ms: u32,
    /// Batches being inserted at once (at most one per partition, so a partition's batches
    /// stay in offset order). Each holds its rows in memory until ClickHouse acknowledges.
    pub max_inflight_batches: usize,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            batch_max_records: 100_000,
            linger_ms: 1_000,
            max_poll_interval_ms: 60_000,
            max_inflight_batches: 2,
        }
    }
}

/// `[attribution]`: host → site → customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributionConfig {
    /// Treat `www.example.fi` as `example.fi` when only the latter is registered.
    pub strip_www: bool,
    /// How often the running processor checks for a new register version.
    pub register_poll_secs: u64,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        AttributionConfig { strip_www: true, register_poll_secs: 10 }
    }
}

/// `[kafka]`: where the access records come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, comma-separated.
    pub brokers: String,
    pub topic: String,
    pub rejects_topic: String,
    /// Where messages that are not valid batches are quarantined (never skipped silently).
    pub deadletter_topic: String,
    /// At most this many bytes of a quarantined message are kept in its dead-letter entry.
    pub deadletter_max_bytes: usize,
    /// Collector heartbeats (JSON, `sitelog_schema::heartbeat`), stored in
    /// `collector_heartbeats` by the consumer group `<group_id>.heartbeats`.
    pub heartbeat_topic: String,
    pub group_id: String,
    /// Static group membership (`group.instance.id`), unique per replica and stable across
    /// its restarts (e.g. the host name): with Apache Kafka a restarted replica gets its
    /// partitions back without waiting for a session timeout. Unset (the default): dynamic
    /// membership. tansu 0.6.0 does not give a restarted static member its partitions back:
    /// leave it unset there. See `Processor::new` in `processor/src/consume.rs`.
    pub group_instance_id: Option<String>,
    /// `security_protocol`, `ssl_*` and `sasl_*`: the same keys as the collector's `[kafka]`,
    /// one definition (`sitelog_schema::kafka`). The SASL password comes from
    /// `SITELOG_KAFKA_PASSWORD` or `sasl_password_file`, never from this file.
    #[serde(flatten)]
    pub security: KafkaSecurity,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: sitelog_schema::wire::ACCESS_TOPIC.into(),
            rejects_topic: sitelog_schema::wire::REJECTS_TOPIC.into(),
            deadletter_topic: sitelog_schema::wire::DEADLETTER_TOPIC.into(),
            deadletter_max_bytes: 256 * 1024,
            heartbeat_topic: sitelog_schema::wire::HEARTBEAT_TOPIC.into(),
            group_id: "sitelog-processor".into(),
            group_instance_id: None,
            security: KafkaSecurity::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {msg}")]
    Parse { path: String, msg: String },
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {key}: {msg}")]
    Invalid { path: String, key: &'static str, msg: String },
}

impl KafkaConfig {
    /// librdkafka settings shared by consumers and producers: brokers, TLS and SASL, the
    /// password from `SITELOG_KAFKA_PASSWORD` or `sasl_password_file`.
    pub fn client_config(&self) -> Result<rdkafka::ClientConfig, rdkafka::error::KafkaError> {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (key, v) in self.security.properties() {
            c.set(key, v);
        }
        // Info-level lines reach the log callback, which needs them to see a plaintext client's
        // first request dropped by a TLS listener (`consume::Context`); tracing filters output.
        if !matches!(c.log_level, rdkafka::config::RDKafkaLogLevel::Debug) {
            c.set_log_level(rdkafka::config::RDKafkaLogLevel::Info);
        }
        let password = self
            .security
            .sasl_password(std::env::var(kafka::PASSWORD_ENV).ok(), |p| std::fs::read_to_string(p))
            .map_err(rdkafka::error::KafkaError::ClientCreation)?;
        if let Some(p) = password {
            c.set("sasl.password", p);
        }
        Ok(c)
    }
}

/// librdkafka's `builtin.features` (e.g. `gzip,snappy,ssl,sasl,sasl_scram,lz4,zstd`).
pub fn builtin_features() -> String {
    rdkafka::ClientConfig::new().create_native_config().and_then(|c| c.get("builtin.features")).unwrap_or_default()
}

/// Errors of a Kafka client that no retry can fix: wrong credentials, an untrusted
/// certificate, plaintext against a TLS listener. `None` for transient ones (broker down).
pub fn kafka_refusal(err: &rdkafka::error::KafkaError, reason: &str) -> Option<String> {
    sitelog_schema::kafka::refusal(err.rdkafka_error_code().map(|c| c as i32), reason)
}

impl ProcessorConfig {
    /// Reads and validates a TOML file; errors name the file and line (TOML) or key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: p.clone(), source })?;
        Self::from_toml(&text, &p)
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut cfg: ProcessorConfig = toml::from_str(text).map_err(|e| {
            let msg = match e.span() {
                Some(span) => {
                    let line = text[..span.start].matches('\n').count() + 1;
                    format!("line {line}: {}", e.message())
                }
                None => e.message().to_owned(),
            };
            ConfigError::Parse { path: origin.into(), msg }
        })?;
        cfg.validate().map_err(|(key, msg)| ConfigError::Invalid { path: origin.into(), key, msg })?;
        cfg.alerts.strip_www = cfg.attribution.strip_www;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.clickhouse.validate().map_err(|e| ("clickhouse", e.to_string()))?;
        self.retention.validate().map_err(|e| ("retention", e.to_string()))?;
        if !(1024..=16 * 1024 * 1024).contains(&self.kafka.deadletter_max_bytes) {
            return Err(("kafka.deadletter_max_bytes", "must be between 1024 and 16777216".into()));
        }
        if self.kafka.deadletter_topic.is_empty() || self.kafka.deadletter_topic == self.kafka.topic {
            return Err(("kafka.deadletter_topic", "must be set and differ from kafka.topic".into()));
        }
        if self.kafka.heartbeat_topic.is_empty() || self.kafka.heartbeat_topic == self.kafka.topic {
            return Err(("kafka.heartbeat_topic", "must be set and differ from kafka.topic".into()));
        }
        if self.sink.batch_max_records == 0 || self.sink.batch_max_records > 1_000_000 {
            return Err((
                "sink.batch_max_records",
                "must be between 1 and 1000000 (one ClickHouse insert block)".into(),
            ));
        }
        if self.sink.max_inflight_batches == 0 || self.sink.max_inflight_batches > 64 {
            return Err(("sink.max_inflight_batches", "must be between 1 and 64".into()));
        }
        self.billing.validate()?;
        self.alerts.validate().map_err(|(k, m)| ("alerts", format!("{k}: {m}")))?;
        self.health.validate()?;
        self.serve.validate()?;
        if self.attribution.register_poll_secs == 0 {
            return Err(("attribution.register_poll_secs", "must be at least 1".into()));
        }
        let k = &self.kafka;
        if k.group_instance_id.as_deref().is_some_and(|id| id.trim().is_empty() || id.len() > 249) {
            return Err(("kafka.group_instance_id", "must be 1 to 249 characters when set".into()));
        }
        if k.brokers.trim().is_empty() {
            return Err(("kafka.brokers", "must name at least one broker".into()));
        }
        k.security.validate()?;
        // What the config asks for must be compiled into librdkafka (TLS, SCRAM).
        kafka::check_supported(&k.security, None, &builtin_features())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Secrets never sit in the file: an inline ClickHouse password is refused, naming the key.
    #[test]
    fn inline_clickhouse_password_is_refused() {
        let e = ProcessorConfig::from_toml("[clickhouse]\npassword = \"hunter2\"\n", "p.toml").unwrap_err().to_string();
        assert!(e.contains("clickhouse.password") && e.contains("password_file"), "{e}");
        assert!(!e.contains("hunter2"), "the error does not repeat the secret: {e}");
    }

    /// What the configs may ask for is compiled in: TLS, SCRAM, every codec.
    #[test]
    fn librdkafka_has_tls_scram_and_zstd() {
        let f = builtin_features();
        for feature in ["ssl", "sasl_scram", "zstd", "lz4", "snappy", "gzip"] {
            assert!(f.split(',').any(|x| x == feature), "{feature} missing from builtin.features {f}");
        }
    }

    #[test]
    fn example_configs_parse() {
        for (name, text) in [
            ("deploy/local/processor.toml", include_str!("../../deploy/local/processor.toml")),
            ("deploy/processor.example.toml", include_str!("../../deploy/processor.example.toml")),
        ] {
            ProcessorConfig::from_toml(text, name).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn health_objective_defaults_and_is_validated() {
        let c = ProcessorConfig::from_toml("", "x.toml").unwrap();
        assert_eq!(c.health.objective, 0.999);
        let c = ProcessorConfig::from_toml("[health]\nobjective = 0.99\n", "x.toml").unwrap();
        assert_eq!(c.health.objective, 0.99);
        for bad in ["1.0", "0", "1.5"] {
            let e = ProcessorConfig::from_toml(&format!("[health]\nobjective = {bad}\n"), "x.toml").unwrap_err();
            assert!(e.to_string().contains("health.objective"), "{e}");
        }
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = ProcessorConfig::from_toml("[sink]\nlinger_ms = 5\nbogus = 1\n", "x.toml").unwrap_err().to_string();
        assert!(e.starts_with("x.toml: line 3"), "{e}");
        // [kafka] flattens the shared security keys: an unknown key there is named, but serde
        // reports it at the table, not its own line.
        let e =
            ProcessorConfig::from_toml("[kafka]\nbrokers = \"a:1\"\nbogus = 1\n", "x.toml").unwrap_err().to_string();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let e = ProcessorConfig::from_toml("[kafka]\nsasl_password = \"hunter2\"\n", "x.toml").unwrap_err().to_string();
        assert!(e.contains("kafka.sasl_password") && e.contains("SITELOG_KAFKA_PASSWORD"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = ProcessorConfig::from_toml(
            "[kafka]\nsecurity_protocol = \"sasl_ssl\"\nsasl_mechanism = \"GSSAPI\"\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("kafka.sasl_mechanism"), "{e}");
        let e = ProcessorConfig::from_toml("[clickhouse]\nurl = \"http://h:8123\"\nca_file = \"/ca.pem\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ca_file"), "{e}");
        let e = ProcessorConfig::from_toml("[retention]\nraw_days = 0\n", "x.toml").unwrap_err().to_string();
        assert!(e.contains("raw_days"), "{e}");
    }
}
