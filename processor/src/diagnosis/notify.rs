//! Webhooks for incident transitions (opened, resolved): generic JSON or Slack-compatible.
//!
//! Each (incident, transition, webhook) is delivered once: before sending, `alerts run` looks
//! it up in `incident_notifications`, and records it there after the receiver's 2xx. A run
//! killed and restarted replays the minutes after its last progress, finds the same
//! transitions (incident ids are deterministic) and sends only those not recorded. The one
//! window left — killed after the receiver answered and before the record was written — is
//! covered by the `Idempotency-Key` header (`<incident id>:<transition>`), the same value as
//! the payload's `event_id`, so a receiver can drop the repeat.

use std::path::PathBuf;
use std::time::Duration;

use clickhouse::Client;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};

use super::alerts::Change;
use super::incidents::IncidentRow;

/// `[[alerts.webhooks]]`: one receiver. The URL often carries a secret (Slack's does), so it
/// comes from an environment variable or a file; `url` is for receivers without one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// A stable name: deliveries are recorded per name.
    pub name: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// `json` (the incident as JSON) or `slack` (`{"text": …}` for Slack and compatibles).
    #[serde(default = "default_format")]
    pub format: String,
    /// Attempts per delivery within one evaluation step (waits 200 ms doubling to 10 s).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_format() -> String {
    "json".into()
}
fn default_attempts() -> u32 {
    6
}
fn default_timeout() -> u64 {
    10_000
}

impl Webhook {
    pub fn validate(&self) -> Result<(), (String, String)> {
        let key = |k: &str| format!("alerts.webhooks.{}.{k}", self.name);
        let given = [self.url.is_some(), self.url_env.is_some(), self.url_file.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err((key("url"), "give exactly one of url, url_env, url_file".into()));
        }
        if !["json", "slack"].contains(&self.format.as_str()) {
            return Err((key("format"), "must be json or slack".into()));
        }
        if self.name.is_empty() {
            return Err(("alerts.webhooks.name".into(), "must not be empty".into()));
        }
        Ok(())
    }

    /// The URL, read from its environment variable or file when configured so.
    pub fn resolve_url(&self) -> Result<String, NotifyError> {
        let url = if let Some(u) = &self.url {
            u.clone()
        } else if let Some(var) = &self.url_env {
            std::env::var(var)
                .map_err(|_| NotifyError::Url { name: self.name.clone(), msg: format!("${var} is not set") })?
        } else if let Some(p) = &self.url_file {
            std::fs::read_to_string(p)
                .map_err(|e| NotifyError::Url { name: self.name.clone(), msg: format!("{}: {e}", p.display()) })?
                .trim()
                .to_owned()
        } else {
            unreachable!("validated")
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(NotifyError::Url { name: self.name.clone(), msg: "not an http(s) URL".into() });
        }
        Ok(url)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("webhook {name}: {msg}")]
    Url { name: String, msg: String },
    #[error("webhook {name}: {msg}")]
    Send { name: String, msg: String },
    #[error("{what}: {source}")]
    ClickHouse {
        what: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
}

pub fn transition_name(c: Change) -> &'static str {
    match c {
        Change::Opened => "opened",
        Change::Updated => "updated",
        Change::Resolved => "resolved",
    }
}

/// RFC 3339 UTC, seconds.
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The incident as the JSON objects of `incidents list --format json` and the webhooks carry
/// it (one shape for both).
pub fn incident_json(r: &IncidentRow) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "kind": r.kind,
        "cause": r.cause,
        "site_host": if r.kind == "site" { serde_json::Value::from(r.site_host.clone()) } else { serde_json::Value::Null },
        "server": if r.server.is_empty() { serde_json::Value::Null } else { serde_json::Value::from(r.server.clone()) },
        "opened_at": rfc3339(i64::from(r.opened_at)),
        "resolved_at": r.resolved_at.map(|t| rfc3339(i64::from(t))),
        "sites": r.sites,
        "servers": r.servers,
        "affected_customers": r.customers,
        "requests": r.requests,
        "errors": r.errors,
        "peak_error_ratio": r.peak_error_ratio,
    })
}

/// The body sent for one transition.
pub fn payload(format: &str, change: Change, r: &IncidentRow) -> serde_json::Value {
    let transition = transition_name(change);
    if format == "slack" {
        let what = match r.kind.as_str() {
            "site" => format!("site {} (server {})", r.site_host, r.server),
            "server" => format!("server {} ({} sites)", r.server, r.sites.len()),
            _ => format!("the platform ({} servers)", r.servers.len()),
        };
        let icon = if change == Change::Resolved { ":white_check_mark:" } else { ":rotating_light:" };
        return serde_json::json!({
            "text": format!(
                "{icon} Incident {} {transition}: {what}, cause {}; {} customers affected; opened {}{}",
                r.id,
                r.cause,
                r.customers.len(),
                rfc3339(i64::from(r.opened_at)),
                r.resolved_at.map(|t| format!(", resolved {}", rfc3339(i64::from(t)))).unwrap_or_default()
            )
        });
    }
    serde_json::json!({
        "event_id": format!("{}:{transition}", r.id),
        "transition": transition,
        "incident": incident_json(r),
    })
}

#[derive(clickhouse::Row, Serialize, Deserialize)]
struct SentRow {
    incident_id: String,
    transition: String,
    webhook: String,
    sent_at: i64,
    attempts: u32,
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// Sends transitions to every configured webhook, once each.
pub struct Notifier {
    hooks: Vec<(Webhook, String)>,
    http: HttpClient,
}

impl Notifier {
    pub fn new(hooks: &[Webhook]) -> Result<Self, NotifyError> {
        let mut resolved = Vec::new();
        for h in hooks {
            resolved.push((h.clone(), h.resolve_url()?));
        }
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| NotifyError::Send { name: "*".into(), msg: format!("loading system CA roots: {e}") })?
            .https_or_http()
            .enable_http1()
            .build();
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(tls);
        Ok(Notifier { hooks: resolved, http })
    }

    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Delivers the notifiable transitions (opened, resolved) not yet recorded as delivered.
    /// Returns how many were sent; a webhook that still fails after its attempts is logged
    /// and counted, and left for the next call (the caller keeps it pending).
    pub async fn deliver(&self, client: &Client, transitions: &[(Change, IncidentRow)]) -> Result<usize, NotifyError> {
        let mut sent = 0;
        for (change, row) in transitions {
            if *change == Change::Updated {
                continue;
            }
            let transition = transition_name(*change);
            for (hook, url) in &self.hooks {
                if already_sent(client, &row.id, transition, &hook.name).await? {
                    continue;
                }
                let body = serde_json::to_vec(&payload(&hook.format, *change, row)).expect("JSON");
                let key = format!("{}:{transition}", row.id);
                let mut backoff = crate::retry::Backoff::default();
                let mut attempt = 0;
                let delivered = loop {
                    attempt += 1;
                    match self.post(hook, url, &key, body.clone()).await {
                        Ok(()) => break true,
                        Err(e) if attempt < hook.max_attempts => {
                            tokio::time::sleep(backoff.failed("webhook", "retrying", &e)).await;
                        }
                        Err(e) => {
                            metrics::counter!("sitelog_alerts_webhook_failures_total", "webhook" => hook.name.clone())
                                .increment(1);
                            tracing::error!(webhook = %hook.name, incident = %row.id, error = %e, "webhook delivery failed; will retry");
                            break false;
                        }
                    }
                };
                if !delivered {
                    return Err(NotifyError::Send { name: hook.name.clone(), msg: format!("{key} not delivered") });
                }
                let mut ins = client
                    .insert::<SentRow>("incident_notifications")
                    .await
                    .map_err(|source| NotifyError::ClickHouse { what: "recording a webhook delivery", source })?;
                ins.write(&SentRow {
                    incident_id: row.id.clone(),
                    transition: transition.into(),
                    webhook: hook.name.clone(),
                    sent_at: chrono::Utc::now().timestamp_millis(),
                    attempts: attempt,
                })
                .await
                .map_err(|source| NotifyError::ClickHouse { what: "recording a webhook delivery", source })?;
                ins.end()
                    .await
                    .map_err(|source| NotifyError::ClickHouse { what: "recording a webhook delivery", source })?;
                metrics::counter!("sitelog_alerts_webhook_sent_total", "webhook" => hook.name.clone()).increment(1);
                sent += 1;
            }
        }
        Ok(sent)
    }

    async fn post(&self, hook: &Webhook, url: &str, key: &str, body: Vec<u8>) -> Result<(), NotifyError> {
        let err = |msg: String| NotifyError::Send { name: hook.name.clone(), msg };
        let req = hyper::Request::post(url)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .header("user-agent", concat!("sitelog/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| err(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_millis(hook.timeout_ms), self.http.request(req))
            .await
            .map_err(|_| err("timed out".into()))?
            .map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(err(format!("HTTP {status}")))
        }
    }
}

async fn already_sent(client: &Client, id: &str, transition: &str, hook: &str) -> Result<bool, NotifyError> {
    let n: u64 = client
        .query("SELECT count() FROM incident_notifications WHERE incident_id = ? AND transition = ? AND webhook = ?")
        .bind(id)
        .bind(transition)
        .bind(hook)
        .fetch_one()
        .await
        .map_err(|source| NotifyError::ClickHouse { what: "reading incident_notifications", source })?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> IncidentRow {
        IncidentRow {
            id: "inc-00112233aabbccdd".into(),
            kind: "server".into(),
            cause: "errors".into(),
            site_host: String::new(),
            server: "web-02".into(),
            opened_at: 1_790_000_000,
            resolved_at: None,
            last_firing: 1_790_000_000,
            sites: vec!["a.fi".into(), "b.fi".into()],
            servers: vec!["web-02".into()],
            customers: vec!["c1".into(), "c2".into()],
            requests: 10,
            errors: 9,
            peak_error_ratio: 0.9,
            version: 1,
        }
    }

    #[test]
    fn json_payload_names_the_event_and_the_customers() {
        let p = payload("json", Change::Opened, &row());
        assert_eq!(p["event_id"], "inc-00112233aabbccdd:opened");
        assert_eq!(p["incident"]["kind"], "server");
        assert_eq!(p["incident"]["site_host"], serde_json::Value::Null);
        assert_eq!(p["incident"]["resolved_at"], serde_json::Value::Null);
        assert_eq!(p["incident"]["affected_customers"], serde_json::json!(["c1", "c2"]));
        assert_eq!(p["incident"]["opened_at"], "2026-09-21T14:13:20Z");
    }

    #[test]
    fn slack_payload_is_one_text() {
        let mut r = row();
        r.resolved_at = Some(1_790_000_600);
        let p = payload("slack", Change::Resolved, &r);
        let t = p["text"].as_str().expect("text");
        assert!(t.contains("resolved") && t.contains("web-02") && t.contains("2 customers"), "{t}");
    }

    #[test]
    fn exactly_one_url_source() {
        let mut w = Webhook {
            name: "ops".into(),
            url: Some("http://127.0.0.1:1/".into()),
            url_env: None,
            url_file: None,
            format: "json".into(),
            max_attempts: 1,
            timeout_ms: 100,
        };
        assert!(w.validate().is_ok());
        w.url_env = Some("X".into());
        assert!(w.validate().is_err());
        w.url = None;
        w.url_env = None;
        assert!(w.validate().is_err());
    }
}
