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
    /// Refused when present: a password never sits in a config file. Use
    /// `SITELOG_CLICKHOUSE_PASSWORD` or `password_file`.
    #[serde(skip_serializing)]
    pub password: Option<sitelog_schema::kafka::Refused>,
    pub password_file: Option<std::path::PathBuf>,
    /// CA certificate(s) (PEM) the server's certificate must chain to, for `https://` URLs;
    /// default: the system's trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured).
    pub ca_file: Option<std::path::PathBuf>,
    /// ClickHouse's LZ4 block compression on the wire. On for clickhouse-server; the local chDB
    /// endpoint does not speak it, so local configs turn it off. A switch, not a code path.
    pub compression: bool,
    /// A ClickHouse cluster (`remote_servers` name): `schema migrate` creates Replicated
    /// tables `ON CLUSTER` and Distributed tables for the sharded ones, `schema grants` puts
    /// roles and users on the cluster. Unset: one server.
    pub cluster: Option<String>,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "sitelog".into(),
            user: "default".into(),
            password: None,
            password_file: None,
            ca_file: None,
            compression: true,
            cluster: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("clickhouse.{key}: {msg}")]
    Invalid { key: &'static str, msg: String },
    #[error("clickhouse.password_file {path}: {source}")]
    PasswordFile { path: String, source: std::io::Error },
    #[error("clickhouse.ca_file {path}: {msg}")]
    CaFile { path: String, msg: String },
}

impl ClickHouseConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.password.is_some() {
            return Err(ConfigError::Invalid {
                key: "password",
                msg: "a password never sits in a config file: use SITELOG_CLICKHOUSE_PASSWORD or clickhouse.password_file"
                    .into(),
            });
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                key: "url",
                msg: format!("'{}' must start with http:// or https://", self.url),
            });
        }
        if self.ca_file.is_some() && !self.url.starts_with("https://") {
            return Err(ConfigError::Invalid {
                key: "ca_file",
                msg: format!("is only used with an https:// url, not '{}'", self.url),
            });
        }
        if self.database.is_empty() || !self.database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::Invalid {
                key: "database",
                msg: format!("'{}' must be [A-Za-z0-9_]+", self.database),
            });
        }
        if let Some(c) = &self.cluster {
            if c.is_empty() || !c.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ConfigError::Invalid { key: "cluster", msg: format!("'{c}' must be [A-Za-z0-9_]+") });
            }
        }
        Ok(())
    }

    /// The password from env (wins) or file.
    fn password(&self) -> Result<Option<String>, ConfigError> {
        if let Ok(p) = std::env::var("SITELOG_CLICKHOUSE_PASSWORD") {
            return Ok(Some(p));
        }
        if let Some(path) = &self.password_file {
            let p = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::PasswordFile { path: path.display().to_string(), source })?;
            return Ok(Some(p.trim_end_matches(['\n', '\r']).to_owned()));
        }
        Ok(None)
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
        let c = match &self.ca_file {
            Some(ca) => clickhouse::Client::with_http_client(
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_idle_timeout(std::time::Duration::from_secs(2))
                    .build(https_connector(ca)?),
            ),
            None => clickhouse::Client::default(),
        };
        let c = c.with_url(&self.url).with_database(&self.database).with_user(user).with_compression(compression);
        // On a cluster the sharded tables are Distributed: an insert is acknowledged only once
        // its shards stored it (and their deduplication saw its token), as on one server.
        let c = if self.cluster.is_some() { c.with_setting("distributed_foreground_insert", "1") } else { c };
        Ok(match password {
            Some(p) => c.with_password(p),
            None => c,
        })
    }

    /// Whether the server is reached over TLS.
    pub fn uses_tls(&self) -> bool {
        self.url.starts_with("https://")
    }

    /// A client without a database, for statements that create it.
    pub fn server_client(&self) -> Result<clickhouse::Client, ConfigError> {
        Ok(self.client()?.with_database("default"))
    }
}

/// A connector like the clickhouse crate's own (rustls with ring, HTTP/1, TCP keep-alive)
/// that trusts the certificates in `ca` and nothing else.
fn https_connector(
    ca: &std::path::Path,
) -> Result<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, ConfigError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let err = |msg: String| ConfigError::CaFile { path: ca.display().to_string(), msg };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| err(e.to_string()))? {
        roots.add(cert.map_err(|e| err(e.to_string()))?).map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    let tls = rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_keepalive(Some(std::time::Duration::from_secs(60)));
    http.enforce_http(false);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}
