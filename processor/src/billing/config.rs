//! `[billing]` in processor.toml: who the billing run connects as and when a month counts as
//! complete. The password never lives in the file: `SITELOG_BILLING_PASSWORD` or
//! `password_file`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::BillingError;
use crate::store::ClickHouseConfig;

/// Environment variable holding the billing user's ClickHouse password.
pub const PASSWORD_ENV: &str = "SITELOG_BILLING_PASSWORD";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// ClickHouse user of the billing run; it holds the `sitelog_billing` role only
    /// (migration 0005, deploy/clickhouse/). The report never uses `[clickhouse] user`.
    pub user: String,
    /// File with the billing user's password (`SITELOG_BILLING_PASSWORD` wins).
    pub password_file: Option<PathBuf>,
    /// A month is complete once every active collector source (its latest heartbeat) has
    /// delivered this many hours past the month's end, or was idle after that (records still
    /// in flight from Kafka through the processor).
    pub grace_hours: u32,
    /// A collector source whose latest heartbeat is more than this many days before a month's
    /// start is retired (a decommissioned web server) and not waited for.
    pub source_idle_days: u32,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig { user: "sitelog_billing_user".into(), password_file: None, grace_hours: 2, source_idle_days: 7 }
    }
}

impl BillingConfig {
    /// Checks every key; the error names it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.user.is_empty() || !self.user.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(("billing.user", format!("'{}' must be a ClickHouse user name [A-Za-z0-9_]+", self.user)));
        }
        if self.grace_hours > 24 * 31 {
            return Err(("billing.grace_hours", format!("{} is more than a month (744 hours)", self.grace_hours)));
        }
        if self.source_idle_days == 0 {
            return Err(("billing.source_idle_days", "must be at least 1".into()));
        }
        Ok(())
    }

    /// The password from `SITELOG_BILLING_PASSWORD` or `password_file`, if any.
    fn password(&self) -> Result<Option<String>, BillingError> {
        if let Ok(p) = std::env::var(PASSWORD_ENV) {
            return Ok(Some(p));
        }
        match &self.password_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|p| Some(p.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|source| BillingError::PasswordFile { path: path.display().to_string(), source }),
            None => Ok(None),
        }
    }

    /// A client for `ch`'s server and database that authenticates as the billing user. The
    /// `[clickhouse]` password (the processor's) is never sent for it.
    pub fn client(&self, ch: &ClickHouseConfig) -> Result<clickhouse::Client, BillingError> {
        self.validate().map_err(|(key, msg)| BillingError::Config(format!("{key}: {msg}")))?;
        Ok(ch.client_as(&self.user, self.password()?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProcessorConfig;

    #[test]
    fn defaults_and_errors_name_the_key() {
        let cfg = ProcessorConfig::from_toml("", "x.toml").unwrap();
        assert_eq!(cfg.billing, BillingConfig::default());
        assert_eq!(cfg.billing.grace_hours, 2);
        let e = ProcessorConfig::from_toml("[billing]\nuser = \"a b\"\n", "x.toml").unwrap_err().to_string();
        assert!(e.contains("billing.user"), "{e}");
        let e = ProcessorConfig::from_toml("[billing]\nsource_idle_days = 0\n", "x.toml").unwrap_err().to_string();
        assert!(e.contains("billing.source_idle_days"), "{e}");
        let e = ProcessorConfig::from_toml("[billing]\npassword = \"x\"\n", "x.toml").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("password"), "a password in the file is refused: {e}");
    }
}
