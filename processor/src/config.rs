//! `processor.toml`: one file for `sitelog process`, `schema migrate`, `customers` and reports.
//! Serde with defaults in one place, unknown keys refused, `validate()` naming the bad key,
//! secrets from the environment (`SITELOG_CLICKHOUSE_PASSWORD`, `SITELOG_KAFKA_PASSWORD`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use sitelog_schema::migrations::Retention;

use crate::store::ClickHouseConfig;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorConfig {
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    pub retention: Retention,
}

/// `[kafka]`: where the access records come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, comma-separated.
    pub brokers: String,
    pub topic: String,
    pub rejects_topic: String,
    pub group_id: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: String,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    /// Prefer `SITELOG_KAFKA_PASSWORD`.
    pub sasl_password: Option<String>,
    pub ssl_ca_location: Option<String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: sitelog_schema::wire::ACCESS_TOPIC.into(),
            rejects_topic: sitelog_schema::wire::REJECTS_TOPIC.into(),
            group_id: "sitelog-processor".into(),
            security_protocol: "plaintext".into(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
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

impl ProcessorConfig {
    /// Reads and validates a TOML file; errors name the file and line (TOML) or key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: p.clone(), source })?;
        Self::from_toml(&text, &p)
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: ProcessorConfig = toml::from_str(text).map_err(|e| {
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
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.clickhouse.validate().map_err(|e| ("clickhouse", e.to_string()))?;
        self.retention.validate().map_err(|e| ("retention", e.to_string()))?;
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            return Err(("kafka.brokers", "must name at least one broker".into()));
        }
        if !["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&k.security_protocol.as_str()) {
            return Err(("kafka.security_protocol", format!("'{}' is not plaintext|ssl|sasl_plaintext|sasl_ssl", k.security_protocol)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn errors_name_line_and_key() {
        let e = ProcessorConfig::from_toml("[kafka]\nbrokers = \"a:1\"\nbogus = 1\n", "x.toml").unwrap_err().to_string();
        assert!(e.starts_with("x.toml: line 3"), "{e}");
        let e = ProcessorConfig::from_toml("[retention]\nraw_days = 0\n", "x.toml").unwrap_err().to_string();
        assert!(e.contains("raw_days"), "{e}");
    }
}
