//! Error diagnosis and disruption alerts: how healthy sites and web servers are, read from
//! the `health_minute` rollup and, for one site's errors, from `access_log` (`health`); the
//! alerting engine over per-minute health (`alerts`), the incidents it stores and what ops
//! read of them (`incidents`), the webhooks that tell people (`notify`), and the loop of
//! `sitelog alerts run` (`run`).

pub mod alerts;
pub mod health;
pub mod incidents;
pub mod notify;
pub mod run;

use serde::{Deserialize, Serialize};

/// `[alerts]` in processor.toml. The error budget is `1 − [health] objective`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// `[alerts.rules]`: burn rates, volume guard, latency, hysteresis, grouping.
    pub rules: alerts::AlertRules,
    /// Live runs evaluate a minute once data of a minute this far after it has arrived
    /// (late records of an evaluated minute are not looked at again).
    pub lateness_minutes: u32,
    /// How often a live run looks for new data.
    pub poll_interval_ms: u64,
    /// A live run evaluates at most this many minutes per step (then stores incidents, sends
    /// notifications and its progress): catching up after a pause goes in bounded steps.
    pub max_step_minutes: u32,
    pub webhooks: Vec<notify::Webhook>,
    /// Not a key of `[alerts]`: `[attribution] strip_www`, copied here when the config is
    /// loaded. When set, the hosts `www.X` and `X` are one site to the alerter, as they are
    /// one site to attribution: an outage of a site served under both is one incident, and
    /// the site counts once towards its server's `server_min_sites`.
    #[serde(skip)]
    pub strip_www: bool,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            rules: alerts::AlertRules::default(),
            lateness_minutes: 2,
            poll_interval_ms: 10_000,
            max_step_minutes: 60,
            webhooks: Vec::new(),
            strip_www: true,
        }
    }
}

impl AlertsConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.max_step_minutes == 0 {
            return Err(("alerts.max_step_minutes".into(), "must be at least 1".into()));
        }
        if self.poll_interval_ms == 0 {
            return Err(("alerts.poll_interval_ms".into(), "must be at least 1".into()));
        }
        self.rules.validate()?;
        let mut names = std::collections::BTreeSet::new();
        for w in &self.webhooks {
            w.validate()?;
            if !names.insert(&w.name) {
                return Err((format!("alerts.webhooks.{}", w.name), "names must be unique".into()));
            }
        }
        Ok(())
    }
}

impl Eq for AlertsConfig {}

/// The alerter's name of the site a host belongs to: `X` for `www.X` when `strip_www`.
pub fn site_key(host: &str, strip_www: bool) -> &str {
    match host.strip_prefix("www.") {
        Some(bare) if strip_www && !bare.is_empty() => bare,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn www_and_bare_host_are_one_site_when_attribution_strips_www() {
        assert_eq!(site_key("www.kahvila.fi", true), "kahvila.fi");
        assert_eq!(site_key("kahvila.fi", true), "kahvila.fi");
        assert_eq!(site_key("www.kahvila.fi", false), "www.kahvila.fi");
        assert_eq!(site_key("www.", true), "www.");
        assert_eq!(site_key("wwwx.fi", true), "wwwx.fi");
    }

    #[test]
    fn the_config_copies_strip_www() {
        let off = crate::config::ProcessorConfig::from_toml("[attribution]\nstrip_www = false\n", "t").unwrap();
        assert!(!off.alerts.strip_www);
        let on = crate::config::ProcessorConfig::from_toml("", "t").unwrap();
        assert!(on.alerts.strip_www);
    }
}
