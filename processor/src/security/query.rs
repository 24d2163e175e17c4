//! Reading security events back: the per-site events the detectors stored (newest state of
//! each), and the platform-level `cross-tenant` events evaluated here over the stored
//! near-miss signals of every partition.

use std::net::Ipv6Addr;

use clickhouse::Client;
use serde::{Deserialize, Serialize};

use super::detector::EventRow;

/// What to list: event time overlapping `[from, to)` (µs), optional customer, site, scenario.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub from_us: i64,
    pub to_us: i64,
    pub customer: Option<String>,
    pub site_host: Option<String>,
    pub scenario: Option<String>,
    /// Cross-tenant: distinct customers per network within `window_secs`.
    pub cross_tenant_customers: u64,
    pub window_secs: u64,
}

/// One event as people and tools see it (`sitelog security events --format json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub scenario: String,
    /// The address, or the network in CIDR for platform events.
    pub source: String,
    /// Empty for platform events.
    pub customer_id: String,
    pub site_host: String,
    pub first_seen: String,
    pub last_seen: String,
    pub count: u64,
    pub severity: String,
    /// Platform events: the customers whose sites the network touched.
    pub customers: Vec<String>,
    pub sample_paths: Vec<String>,
    pub sample_user_agents: Vec<String>,
}

/// Microseconds since the epoch as RFC 3339 UTC, to the second (how events are shown).
pub fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The network of a signal's `source_net` as CIDR text (/24 for IPv4, /48 for IPv6).
pub fn cidr(net: &Ipv6Addr) -> String {
    match net.to_ipv4_mapped() {
        Some(v4) => format!("{v4}/24"),
        None => format!("{net}/48"),
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct WindowRow {
    source_net: Ipv6Addr,
    customers: Vec<String>,
    first: i64,
    last: i64,
    n: u64,
}

/// Lists events, oldest first.
pub async fn events(client: &Client, q: &EventQuery) -> Result<Vec<Event>, clickhouse::error::Error> {
    let rows: Vec<EventRow> = client
        .query(
            "SELECT ?fields FROM security_events FINAL \
             WHERE last_seen >= fromUnixTimestamp64Micro(toInt64(?), 'UTC') AND first_seen < fromUnixTimestamp64Micro(toInt64(?), 'UTC') \
             AND (? = '' OR customer_id = ?) AND (? = '' OR site_host = ?) AND (? = '' OR scenario = ?) \
             ORDER BY first_seen, scenario, source",
        )
        .bind(q.from_us)
        .bind(q.to_us)
        .bind(q.customer.as_deref().unwrap_or(""))
        .bind(q.customer.as_deref().unwrap_or(""))
        .bind(q.site_host.as_deref().unwrap_or(""))
        .bind(q.site_host.as_deref().unwrap_or(""))
        .bind(q.scenario.as_deref().unwrap_or(""))
        .bind(q.scenario.as_deref().unwrap_or(""))
        .fetch_all()
        .await?;
    let mut out: Vec<Event> = rows
        .into_iter()
        .map(|r| Event {
            scenario: r.scenario,
            source: r.source,
            customer_id: r.customer_id,
            site_host: r.site_host,
            first_seen: rfc3339(r.first_seen),
            last_seen: rfc3339(r.last_seen),
            count: r.count,
            severity: r.severity,
            customers: Vec::new(),
            sample_paths: r.sample_paths,
            sample_user_agents: r.sample_user_agents,
        })
        .collect();
    let platform_wanted =
        q.customer.is_none() && q.site_host.is_none() && q.scenario.as_deref().is_none_or(|s| s == "cross-tenant");
    if platform_wanted && q.cross_tenant_customers > 0 {
        out.extend(cross_tenant(client, q).await?);
    }
    out.sort_by(|a, b| (&a.first_seen, &a.scenario, &a.source).cmp(&(&b.first_seen, &b.scenario, &b.source)));
    Ok(out)
}

/// Networks whose near-miss signals touched at least `cross_tenant_customers` customers within
/// one window. Windows come from two tumbling grids half a window apart (so an attack across a
/// grid line is still inside one window); overlapping hits of one network merge into one event.
async fn cross_tenant(client: &Client, q: &EventQuery) -> Result<Vec<Event>, clickhouse::error::Error> {
    let w = q.window_secs.max(60);
    let rows: Vec<WindowRow> = client
        .query(
            "SELECT source_net, arraySort(groupUniqArray(customer_id)) AS customers, \
             toUnixTimestamp64Micro(min(ts)) AS first, toUnixTimestamp64Micro(max(ts)) AS last, count() AS n \
             FROM (SELECT source_net, customer_id, ts, \
                   arrayJoin([intDiv(toUnixTimestamp(ts), ?), intDiv(toUnixTimestamp(ts) + intDiv(?, 2), ?) + 1000000000]) AS w \
                   FROM security_signals \
                   WHERE customer_id != '' AND ts >= fromUnixTimestamp64Micro(toInt64(?), 'UTC') - toIntervalSecond(?) \
                   AND ts < fromUnixTimestamp64Micro(toInt64(?), 'UTC')) \
             GROUP BY source_net, w HAVING length(customers) >= ? ORDER BY source_net, first",
        )
        .bind(w)
        .bind(w)
        .bind(w)
        .bind(q.from_us)
        .bind(w)
        .bind(q.to_us)
        .bind(q.cross_tenant_customers)
        .fetch_all()
        .await?;
    // Merge overlapping windows of one network into one event.
    let mut merged: Vec<WindowRow> = Vec::new();
    for r in rows {
        match merged.last_mut() {
            Some(m) if m.source_net == r.source_net && r.first <= m.last => {
                m.last = m.last.max(r.last);
                m.n = m.n.max(r.n);
                for c in r.customers {
                    if !m.customers.contains(&c) {
                        m.customers.push(c);
                    }
                }
                m.customers.sort();
            }
            _ => merged.push(r),
        }
    }
    Ok(merged
        .into_iter()
        .filter(|m| m.last >= q.from_us)
        .map(|m| Event {
            scenario: "cross-tenant".into(),
            source: cidr(&m.source_net),
            customer_id: String::new(),
            site_host: String::new(),
            first_seen: rfc3339(m.first),
            last_seen: rfc3339(m.last),
            count: m.n,
            severity: "critical".into(),
            customers: m.customers,
            sample_paths: Vec::new(),
            sample_user_agents: Vec::new(),
        })
        .collect())
}
