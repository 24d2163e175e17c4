//! Incidents in ClickHouse: the health minutes the engine reads, the incident states it
//! writes, the progress of a live run, and what `sitelog incidents` lists.

use clickhouse::Client;
use serde::{Deserialize, Serialize};

use super::alerts::{Incident, MinuteCounts, Subject};

#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("{what}: {source}")]
    ClickHouse {
        what: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("no incident {0}")]
    NotFound(String),
}

fn ch(what: &'static str) -> impl FnOnce(clickhouse::error::Error) -> IncidentError {
    move |source| IncidentError::ClickHouse { what, source }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct HealthRow {
    minute: u32,
    site_host: String,
    server: String,
    customer_id: String,
    requests: u64,
    errors: u64,
    slow: u64,
}

/// Health minutes in `[from, to)` (unix seconds), ordered by minute: per site and server, the
/// requests, 5xx and requests slower than the `bucket`-th latency bucket.
pub async fn health_minutes(
    client: &Client,
    from: i64,
    to: i64,
    bucket: usize,
) -> Result<Vec<(i64, MinuteCounts)>, IncidentError> {
    let rows: Vec<HealthRow> = client
        .query(
            "SELECT toUInt32(minute) AS minute, site_host, server, any(customer_id) AS customer_id, \
             sum(requests) AS requests, sum(status_5xx) AS errors, \
             toUInt64(arrayElement(sumForEachMerge(request_time_over), toUInt64(?) + 1)) AS slow \
             FROM health_minute \
             WHERE minute >= toDateTime(toUInt32(?), 'UTC') AND minute < toDateTime(toUInt32(?), 'UTC') \
             GROUP BY minute, site_host, server ORDER BY minute, site_host, server",
        )
        .bind(bucket as u64)
        .bind(from.max(0) as u64)
        .bind(to.max(0) as u64)
        .fetch_all()
        .await
        .map_err(ch("reading health_minute"))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                i64::from(r.minute),
                MinuteCounts {
                    site_host: r.site_host,
                    server: r.server,
                    customer_id: r.customer_id,
                    requests: r.requests,
                    errors: r.errors,
                    slow: r.slow,
                },
            )
        })
        .collect())
}

/// The newest minute with health data (unix seconds), if any.
pub async fn latest_minute(client: &Client) -> Result<Option<i64>, IncidentError> {
    let (n, max): (u64, u32) = client
        .query("SELECT count(), toUInt32(max(minute)) FROM health_minute")
        .fetch_one()
        .await
        .map_err(ch("reading the newest health minute"))?;
    Ok((n > 0).then_some(i64::from(max)))
}

/// An incident as stored (one state).
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize, PartialEq)]
pub struct IncidentRow {
    pub id: String,
    pub kind: String,
    pub cause: String,
    pub site_host: String,
    pub server: String,
    pub opened_at: u32,
    pub resolved_at: Option<u32>,
    pub last_firing: u32,
    pub sites: Vec<String>,
    pub servers: Vec<String>,
    pub customers: Vec<String>,
    pub requests: u64,
    pub errors: u64,
    pub peak_error_ratio: f64,
    pub version: u64,
}

impl IncidentRow {
    pub fn from_incident(i: &Incident, evaluated: i64) -> Self {
        let (site_host, server) = match &i.subject {
            Subject::Site(h) => (h.clone(), i.server_of_site.clone()),
            Subject::Server(s) => (String::new(), s.clone()),
            Subject::Platform => (String::new(), String::new()),
        };
        IncidentRow {
            id: i.id.clone(),
            kind: i.subject.kind().to_owned(),
            cause: i.cause.to_owned(),
            site_host,
            server,
            opened_at: i.opened_at as u32,
            resolved_at: i.resolved_at.map(|t| t as u32),
            last_firing: i.last_firing as u32,
            sites: i.sites.iter().cloned().collect(),
            servers: i.servers.iter().cloned().collect(),
            customers: i.customers.iter().cloned().collect(),
            requests: i.requests,
            errors: i.errors,
            peak_error_ratio: i.peak_error_ratio,
            version: evaluated as u64,
        }
    }

    /// Back into the engine's form (a restarted live run continues open incidents).
    pub fn to_incident(&self) -> Incident {
        let subject = match self.kind.as_str() {
            "site" => Subject::Site(self.site_host.clone()),
            "server" => Subject::Server(self.server.clone()),
            _ => Subject::Platform,
        };
        Incident {
            id: self.id.clone(),
            subject,
            cause: if self.cause == "latency" { "latency" } else { "errors" },
            opened_at: i64::from(self.opened_at),
            last_firing: i64::from(self.last_firing),
            resolved_at: self.resolved_at.map(i64::from),
            sites: self.sites.iter().cloned().collect(),
            servers: self.servers.iter().cloned().collect(),
            customers: self.customers.iter().cloned().collect(),
            requests: self.requests,
            errors: self.errors,
            peak_error_ratio: self.peak_error_ratio,
            server_of_site: if self.kind == "site" { self.server.clone() } else { String::new() },
        }
    }
}

/// Writes incident states (idempotent: the same state written twice is one row after merges,
/// and readers take the highest version).
pub async fn write(client: &Client, rows: &[IncidentRow]) -> Result<(), IncidentError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut ins = client.insert::<IncidentRow>("incidents").await.map_err(ch("writing incidents"))?;
    for r in rows {
        ins.write(r).await.map_err(ch("writing incidents"))?;
    }
    ins.end().await.map_err(ch("writing incidents"))
}

const SELECT: &str = "SELECT ?fields FROM incidents FINAL";

/// Incidents open at the end of minute `at` as the store knows them.
pub async fn open_at(client: &Client, at: i64) -> Result<Vec<IncidentRow>, IncidentError> {
    client
        .query(&format!(
            "{SELECT} WHERE opened_at <= toDateTime(toUInt32(?), 'UTC') \
             AND (resolved_at IS NULL OR resolved_at > toDateTime(toUInt32(?), 'UTC')) ORDER BY opened_at, id"
        ))
        .bind(at as u64)
        .bind(at as u64)
        .fetch_all()
        .await
        .map_err(ch("reading open incidents"))
}

/// Incidents overlapping `[from, to)` (unix seconds), oldest first.
pub async fn list(client: &Client, from: i64, to: i64) -> Result<Vec<IncidentRow>, IncidentError> {
    client
        .query(&format!(
            "{SELECT} WHERE opened_at < toDateTime(toUInt32(?), 'UTC') \
             AND (resolved_at IS NULL OR resolved_at >= toDateTime(toUInt32(?), 'UTC')) ORDER BY opened_at, id"
        ))
        .bind(to.max(0) as u64)
        .bind(from.max(0) as u64)
        .fetch_all()
        .await
        .map_err(ch("reading incidents"))
}

pub async fn get(client: &Client, id: &str) -> Result<IncidentRow, IncidentError> {
    let rows: Vec<IncidentRow> = client
        .query(&format!("{SELECT} WHERE id = ?"))
        .bind(id)
        .fetch_all()
        .await
        .map_err(ch("reading the incident"))?;
    rows.into_iter().next().ok_or_else(|| IncidentError::NotFound(id.to_owned()))
}

/// A contact person of an affected customer, from the current register.
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize, PartialEq, Eq)]
pub struct Contact {
    pub customer_id: String,
    pub company_name: String,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub role: String,
}

/// The contact persons of `customers` in the register's current version (joined here, at
/// query time: contacts are never copied into log tables). A customer without contacts is
/// listed once with empty contact fields, so nobody affected is left out.
pub async fn contacts(client: &Client, customers: &[String]) -> Result<Vec<Contact>, IncidentError> {
    client
        .query(
            "WITH (SELECT max(version) FROM register_imports) AS v \
             SELECT c.customer_id AS customer_id, c.company_name AS company_name, \
             p.name AS name, p.email AS email, p.phone AS phone, p.role AS role \
             FROM (SELECT customer_id, company_name FROM customers WHERE version = v AND has(?, customer_id)) AS c \
             LEFT JOIN (SELECT customer_id, name, email, phone, role FROM contacts WHERE version = v) AS p \
             ON p.customer_id = c.customer_id \
             ORDER BY customer_id, name, email",
        )
        .bind(customers)
        .fetch_all()
        .await
        .map_err(ch("reading contacts from the register"))
}

/// Where a live run of evaluator `name` stopped (unix seconds: minutes before it are done).
pub async fn progress(client: &Client, name: &str) -> Result<Option<i64>, IncidentError> {
    let rows: Vec<u32> = client
        .query("SELECT toUInt32(evaluated_through) FROM alerts_progress FINAL WHERE evaluator = ?")
        .bind(name)
        .fetch_all()
        .await
        .map_err(ch("reading alerts_progress"))?;
    Ok(rows.first().map(|&t| i64::from(t)))
}

#[derive(clickhouse::Row, Serialize)]
struct ProgressRow<'a> {
    evaluator: &'a str,
    evaluated_through: u32,
    updated_at: i64,
}

pub async fn set_progress(client: &Client, name: &str, through: i64) -> Result<(), IncidentError> {
    let mut ins = client.insert::<ProgressRow>("alerts_progress").await.map_err(ch("writing alerts_progress"))?;
    let row = ProgressRow {
        evaluator: name,
        evaluated_through: through as u32,
        updated_at: chrono::Utc::now().timestamp_millis(),
    };
    ins.write(&row).await.map_err(ch("writing alerts_progress"))?;
    ins.end().await.map_err(ch("writing alerts_progress"))
}
