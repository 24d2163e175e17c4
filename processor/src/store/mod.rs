//! ClickHouse: connection settings, schema migrations and (later) the exactly-once sink.
//! Everything here speaks plain ClickHouse HTTP through the official `clickhouse` crate, so
//! the same code runs against clickhouse-server in production and the chDB endpoint locally.

pub mod migrate;
pub mod rows;
pub mod sink;

use serde::{Deserialize, Serialize};

/// `[clickhouse]` in the processor's and the CLI's TOML config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// `http://host:8123` or `https://…` (TLS is chosen by the scheme).
    pub url: String,
    pub database: String,
    pub user: String,
    /// Never put a real password here: use `SITELOG_CLICKHOUSE_PASSWORD` or `password_file`.
    pub password: Option<String>,
    pub password_file: Option<std::path::PathBuf>,
    /// ClickHouse's LZ4 block compression on the wire. On for clickhouse-server; the local chDB
    /// endpoint does not speak it, so local configs turn it off. A switch, not a code path.
    pub compression: bool,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "sitelog".into(),
            user: "default".into(),
            password: None,
            password_file: None,
            compression: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("clickhouse.{key}: {msg}")]
    Invalid { key: &'static str, msg: String },
    #[error("clickhouse.password_file {path}: {source}")]
    PasswordFile { path: String, source: std::io::Error },
}

impl ClickHouseConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                key: "url",
                msg: format!("'{}' must start with http:// or https://", self.url),
            });
        }
        if self.database.is_empty() || !self.database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::Invalid {
                key: "database",
                msg: format!("'{}' must be [A-Za-z0-9_]+", self.database),
            });
        }
        Ok(())
    }

    /// The password from env (wins), file, or config — in that order.
    fn password(&self) -> Result<Option<String>, ConfigError> {
        if let Ok(p) = std::env::var("SITELOG_CLICKHOUSE_PASSWORD") {
            return Ok(Some(p));
        }
        if let Some(path) = &self.password_file {
            let p = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::PasswordFile { path: path.display().to_string(), source })?;
            return Ok(Some(p.trim_end_matches(['\n', '\r']).to_owned()));
        }
        Ok(self.password.clone())
    }

    /// A client bound to the configured database, as the configured user.
    pub fn client(&self) -> Result<clickhouse::Client, ConfigError> {
        self.client_as(&self.user, self.password()?)
    }

    /// A client for the configured server and database that authenticates as `user` (e.g.
    /// the billing user); this config's own password is never sent for it.
    pub fn client_as(&self, user: &str, password: Option<String>) -> Result<clickhouse::Client, ConfigError> {
        self.validate()?;
        let compression = if self.compression { clickhouse::Compression::Lz4 } else { clickhouse::Compression::None };
        let c = clickhouse::Client::default()
            .with_url(&self.url)
            .with_database(&self.database)
            .with_user(user)
            .with_compression(compression);
        Ok(match password {
            Some(p) => c.with_password(p),
            None => c,
        })
    }

    /// A client without a database, for statements that create it.
    pub fn server_client(&self) -> Result<clickhouse::Client, ConfigError> {
        Ok(self.client()?.with_database("default"))
    }
}
