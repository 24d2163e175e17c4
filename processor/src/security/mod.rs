//! Security analysis in the processor's stream: scenarios (`scenario`, data in
//! `scenarios.toml`) run by one event-time engine (`detector`) per partition; events and
//! cross-tenant near-miss signals are stored with each batch (`security_events`,
//! `security_signals`, TTL `[retention] security_days`). The cross-tenant scenario — one
//! network probing many customers too thinly for any one site — is evaluated over the stored
//! signals of every partition (`query`), so it sees the whole platform whichever replica
//! processed which site.

pub mod detector;
pub mod fasthash;
pub mod investigate;
pub mod query;
pub mod scenario;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `[security]` in processor.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Run detection in `sitelog process`.
    pub enabled: bool,
    /// Buckets per partition's detector before the least recently seen are evicted.
    pub max_buckets: usize,
    /// Cross-tenant: distinct customers one network must touch within the window.
    pub cross_tenant_customers: u64,
    pub cross_tenant_window_secs: u64,
    /// Per-scenario overrides: `[security.scenarios.wp-login-bruteforce] capacity = 20`.
    pub scenarios: BTreeMap<String, scenario::Override>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            enabled: true,
            max_buckets: 200_000,
            cross_tenant_customers: 10,
            cross_tenant_window_secs: 3600,
            scenarios: BTreeMap::new(),
        }
    }
}

impl Eq for SecurityConfig {}
