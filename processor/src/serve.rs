//! `[serve]` in processor.toml: the web console (`sitelog serve`). It reads the same
//! ClickHouse as the other commands, as a user with the `sitelog_ops` role (and the billing
//! user for the Usage page) — never as the processor. The server itself is in the binary
//! (`src/console/`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::store::ClickHouseConfig;

/// Environment variable with the console's ClickHouse password (wins over the file).
pub const PASSWORD_ENV: &str = "SITELOG_CONSOLE_PASSWORD";
/// Environment variable with the billing user's password for the Usage page (wins over the
/// file; default: `[billing]`'s own password).
pub const BILLING_PASSWORD_ENV: &str = "SITELOG_CONSOLE_BILLING_PASSWORD";

/// `[serve]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Where the console listens. Loopback by default: the pages show personal data.
    pub listen: SocketAddr,
    /// TLS certificate chain (PEM); with `tls_key_file`, the console speaks HTTPS only.
    pub tls_cert_file: Option<PathBuf>,
    /// TLS private key (PEM, PKCS#8/PKCS#1/SEC1).
    pub tls_key_file: Option<PathBuf>,
    /// People who may log in: one `user:password` or `user:sha256:HEX` per line. When set,
    /// every page needs a login (HTTP Basic); unset, the console refuses to listen anywhere
    /// but loopback.
    pub password_file: Option<PathBuf>,
    /// ClickHouse user with the `sitelog_ops` role the console reads as.
    pub clickhouse_user: String,
    /// File with that user's password (`SITELOG_CONSOLE_PASSWORD` wins).
    pub clickhouse_password_file: Option<PathBuf>,
    /// ClickHouse user with the `sitelog_billing` role for the Usage page (default:
    /// `[billing] user` with its password).
    pub billing_user: Option<String>,
    /// File with the billing user's password (`SITELOG_CONSOLE_BILLING_PASSWORD` wins).
    pub billing_password_file: Option<PathBuf>,
    /// How often the Now page reloads itself, seconds.
    pub refresh_secs: u32,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8470)),
            tls_cert_file: None,
            tls_key_file: None,
            password_file: None,
            clickhouse_user: "sitelog_console_user".into(),
            clickhouse_password_file: None,
            billing_user: None,
            billing_password_file: None,
            refresh_secs: 10,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeConfigError {
    #[error("serve.{key}: {path}: {source}")]
    File { key: &'static str, path: String, source: std::io::Error },
    #[error(transparent)]
    ClickHouse(#[from] crate::store::ConfigError),
    #[error(transparent)]
    Billing(#[from] crate::billing::BillingError),
}

fn user_ok(u: &str) -> bool {
    !u.is_empty() && u.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn secret(env: &str, file: &Option<PathBuf>, key: &'static str) -> Result<Option<String>, ServeConfigError> {
    if let Ok(p) = std::env::var(env) {
        return Ok(Some(p));
    }
    match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|p| Some(p.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|source| ServeConfigError::File { key, path: path.display().to_string(), source }),
        None => Ok(None),
    }
}

impl ServeConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(("serve.tls_cert_file", "tls_cert_file and tls_key_file go together".into()));
        }
        if !user_ok(&self.clickhouse_user) {
            return Err(("serve.clickhouse_user", format!("'{}' must be [A-Za-z0-9_]+", self.clickhouse_user)));
        }
        if self.clickhouse_user == "sitelog_processor_user" {
            return Err(("serve.clickhouse_user", "the console never connects as the processor".into()));
        }
        if let Some(b) = &self.billing_user {
            if !user_ok(b) {
                return Err(("serve.billing_user", format!("'{b}' must be [A-Za-z0-9_]+")));
            }
        }
        if self.password_file.is_none() && !self.listen.ip().is_loopback() {
            return Err((
                "serve.listen",
                format!("{} is not loopback: set serve.password_file (the pages show personal data)", self.listen),
            ));
        }
        if !(1..=3600).contains(&self.refresh_secs) {
            return Err(("serve.refresh_secs", "must be between 1 and 3600".into()));
        }
        Ok(())
    }

    /// The ops client: `clickhouse_user` on `[clickhouse]`'s server and database; the
    /// `[clickhouse]` password is never sent for it.
    pub fn ops_client(&self, ch: &ClickHouseConfig) -> Result<clickhouse::Client, ServeConfigError> {
        let p = secret(PASSWORD_ENV, &self.clickhouse_password_file, "clickhouse_password_file")?;
        Ok(ch.client_as(&self.clickhouse_user, p)?)
    }

    /// The billing client for the Usage page.
    pub fn billing_client(
        &self,
        ch: &ClickHouseConfig,
        billing: &crate::billing::BillingConfig,
    ) -> Result<clickhouse::Client, ServeConfigError> {
        match &self.billing_user {
            Some(u) => {
                let p = secret(BILLING_PASSWORD_ENV, &self.billing_password_file, "billing_password_file")?;
                Ok(ch.client_as(u, p)?)
            }
            None => Ok(billing.client(ch)?),
        }
    }

    /// The billing user's name (for the page's role line).
    pub fn billing_user_name<'a>(&'a self, billing: &'a crate::billing::BillingConfig) -> &'a str {
        self.billing_user.as_deref().unwrap_or(&billing.user)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::ProcessorConfig;

    #[test]
    fn defaults_loopback_and_errors_name_the_key() {
        let cfg = ProcessorConfig::from_toml("", "x.toml").unwrap();
        assert!(cfg.serve.listen.ip().is_loopback());
        assert_eq!(cfg.serve.listen.port(), 8470);
        let e = ProcessorConfig::from_toml("[serve]\nlisten = \"0.0.0.0:8470\"\n", "x.toml").unwrap_err().to_string();
        assert!(e.contains("serve.listen") && e.contains("password_file"), "{e}");
        let ok = ProcessorConfig::from_toml("[serve]\nlisten = \"0.0.0.0:8470\"\npassword_file = \"/p\"\n", "x.toml");
        assert!(ok.is_ok());
        let e = ProcessorConfig::from_toml("[serve]\ntls_cert_file = \"/c\"\n", "x.toml").unwrap_err().to_string();
        assert!(e.contains("serve.tls_cert_file"), "{e}");
        let e = ProcessorConfig::from_toml("[serve]\nclickhouse_user = \"sitelog_processor_user\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("never connects as the processor"), "{e}");
    }
}
