//! Investigation queries for ops in an incident: one address or network across every
//! customer (`investigate ip`), one site's attackers and request mix (`investigate site`), a
//! blocklist for the edge, and the audit trail of who looked.

use std::net::IpAddr;

use clickhouse::Client;
use serde::{Deserialize, Serialize};

/// An address or network as an IPv6 CIDR (IPv4 mapped), the form ClickHouse compares with.
pub fn to_cidr6(text: &str) -> Result<String, String> {
    let (addr, bits) = match text.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().map_err(|_| format!("'{text}': bad prefix length"))?)),
        None => (text, None),
    };
    match addr.parse::<IpAddr>().map_err(|_| format!("'{text}' is not an address or CIDR network"))? {
        IpAddr::V4(v4) => {
            let b = bits.unwrap_or(32);
            if b > 32 {
                return Err(format!("'{text}': an IPv4 prefix is at most 32"));
            }
            Ok(format!("{}/{}", v4.to_ipv6_mapped(), 96 + b as u32))
        }
        IpAddr::V6(v6) => {
            let b = bits.unwrap_or(128);
            if b > 128 {
                return Err(format!("'{text}': an IPv6 prefix is at most 128"));
            }
            Ok(format!("{v6}/{b}"))
        }
    }
}

/// One row of an address's timeline: a site, a status class, an hour.
#[derive(Debug, Clone, clickhouse::Row, Deserialize, Serialize)]
pub struct IpSiteRow {
    pub site_host: String,
    pub customer_id: String,
    pub requests: u64,
    pub s2xx: u64,
    pub s3xx: u64,
    pub s4xx: u64,
    pub s5xx: u64,
    pub logins: u64,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// Requests of an address (or network) per site in `[from, to)`; matched on the full
/// address, which is kept `client_ip_days` — older requests are matched by their network when
/// the query is a network of /24 (/48) or wider.
pub async fn ip_sites(
    client: &Client,
    cidr6: &str,
    prefix: u32,
    from_us: i64,
    to_us: i64,
) -> Result<Vec<IpSiteRow>, clickhouse::error::Error> {
    let by_net = (prefix <= 120 && cidr6.starts_with("::ffff:")) || prefix <= 48;
    client
        .query(
            "SELECT site_host, any(customer_id) AS customer_id, count() AS requests, \
             countIf(status BETWEEN 200 AND 299) AS s2xx, countIf(status BETWEEN 300 AND 399) AS s3xx, \
             countIf(status BETWEEN 400 AND 499) AS s4xx, countIf(status >= 500) AS s5xx, \
             countIf(request_class = 'wp-login' AND method = 'POST') AS logins, \
             toUnixTimestamp64Micro(min(ts)) AS first_seen, toUnixTimestamp64Micro(max(ts)) AS last_seen \
             FROM access_log \
             WHERE ts >= fromUnixTimestamp64Micro(toInt64(?), 'UTC') AND ts < fromUnixTimestamp64Micro(toInt64(?), 'UTC') \
             AND (isIPAddressInRange(toString(client_ip), ?) OR (? AND client_ip = toIPv6('::') AND isIPAddressInRange(toString(client_net), ?))) \
             GROUP BY site_host ORDER BY requests DESC",
        )
        .bind(from_us)
        .bind(to_us)
        .bind(cidr6)
        .bind(by_net)
        .bind(cidr6)
        .fetch_all()
        .await
}

/// Security events whose source lies in the range (per-site events; platform events name
/// networks and are matched by `security events`).
#[derive(Debug, Clone, clickhouse::Row, Deserialize, Serialize)]
pub struct EventBrief {
    pub scenario: String,
    pub source: String,
    pub site_host: String,
    pub customer_id: String,
    pub first_seen_us: i64,
    pub last_seen_us: i64,
    pub count: u64,
    pub severity: String,
}

/// The columns of [`EventBrief`] from the newest state of each event.
/// (µs aliases named apart from the columns: ClickHouse resolves WHERE names to aliases first.)
const EVENT_BRIEF: &str = "SELECT scenario, source, site_host, customer_id, \
     toUnixTimestamp64Micro(first_seen) AS first_seen_us, toUnixTimestamp64Micro(last_seen) AS last_seen_us, count, severity \
     FROM security_events FINAL";

pub async fn ip_events(
    client: &Client,
    cidr6: &str,
    from_us: i64,
    to_us: i64,
) -> Result<Vec<EventBrief>, clickhouse::error::Error> {
    client
        .query(
            &format!(
                "{EVENT_BRIEF} WHERE isIPAddressInRange(toString(source_ip), ?) \
             AND last_seen >= fromUnixTimestamp64Micro(toInt64(?), 'UTC') AND first_seen < fromUnixTimestamp64Micro(toInt64(?), 'UTC') \
             ORDER BY first_seen"
            ),
        )
        .bind(cidr6)
        .bind(from_us)
        .bind(to_us)
        .fetch_all()
        .await
}

/// A site's attack picture: the sources of its events, and its request mix.
#[derive(Debug, Clone, clickhouse::Row, Deserialize, Serialize)]
pub struct SiteMix {
    pub requests: u64,
    pub bot_requests: u64,
    pub from_event_sources: u64,
    pub s2xx: u64,
    pub s3xx: u64,
    pub s4xx: u64,
    pub s5xx: u64,
}

pub async fn site_events(
    client: &Client,
    host: &str,
    from_us: i64,
    to_us: i64,
) -> Result<Vec<EventBrief>, clickhouse::error::Error> {
    client
        .query(&format!(
            "{EVENT_BRIEF} WHERE site_host = ? AND last_seen >= fromUnixTimestamp64Micro(toInt64(?), 'UTC') \
             AND first_seen < fromUnixTimestamp64Micro(toInt64(?), 'UTC') ORDER BY count DESC"
        ))
        .bind(host)
        .bind(from_us)
        .bind(to_us)
        .fetch_all()
        .await
}

pub async fn site_mix(
    client: &Client,
    host: &str,
    from_us: i64,
    to_us: i64,
) -> Result<SiteMix, clickhouse::error::Error> {
    client
        .query(
            "SELECT count() AS requests, countIf(is_bot) AS bot_requests, \
             countIf(client_ip IN (SELECT source_ip FROM security_events FINAL WHERE site_host = ?)) AS from_event_sources, \
             countIf(status BETWEEN 200 AND 299) AS s2xx, countIf(status BETWEEN 300 AND 399) AS s3xx, \
             countIf(status BETWEEN 400 AND 499) AS s4xx, countIf(status >= 500) AS s5xx FROM access_log \
             WHERE site_host = ? AND ts >= fromUnixTimestamp64Micro(toInt64(?), 'UTC') AND ts < fromUnixTimestamp64Micro(toInt64(?), 'UTC')",
        )
        .bind(host)
        .bind(host)
        .bind(from_us)
        .bind(to_us)
        .fetch_one()
        .await
}

/// How long a blocklist entry lasts after the event's last request, by severity.
pub fn block_secs(severity: &str) -> i64 {
    match severity {
        "critical" => 7 * 86_400,
        "high" => 3 * 86_400,
        "medium" => 86_400,
        _ => 6 * 3_600,
    }
}

pub fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 3,
        "high" => 2,
        "medium" => 1,
        _ => 0,
    }
}

/// Good crawlers never blocked (substrings of their user agents, lower case).
const GOOD_BOTS: &[&str] = &[
    "googlebot",
    "bingbot",
    "applebot",
    "duckduckbot",
    "yandexbot",
    "baiduspider",
    "google-inspectiontool",
    "adsbot-google",
];

pub fn is_good_bot(user_agent: &str) -> bool {
    let ua = user_agent.to_ascii_lowercase();
    GOOD_BOTS.iter().any(|b| ua.contains(b))
}

/// An audit record as `sitelog audit list` shows it.
#[derive(Debug, Clone, clickhouse::Row, Deserialize, Serialize)]
pub struct AuditRow {
    pub ts_us: i64,
    pub os_user: String,
    pub db_user: String,
    pub command: String,
    pub arguments: String,
    pub reason: String,
}

pub async fn audit_list(client: &Client, from_us: i64) -> Result<Vec<AuditRow>, clickhouse::error::Error> {
    client
        .query(
            "SELECT toUnixTimestamp64Micro(ts) AS ts_us, os_user, db_user, command, arguments, reason FROM access_audit \
             WHERE ts >= fromUnixTimestamp64Micro(toInt64(?), 'UTC') ORDER BY ts",
        )
        .bind(from_us)
        .fetch_all()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_map_to_ipv6() {
        assert_eq!(to_cidr6("185.220.101.47").unwrap(), "::ffff:185.220.101.47/128");
        assert_eq!(to_cidr6("203.0.113.0/24").unwrap(), "::ffff:203.0.113.0/120");
        assert_eq!(to_cidr6("2a0e:8f02:f017::/48").unwrap(), "2a0e:8f02:f017::/48");
        assert!(to_cidr6("1.2.3.4/33").is_err());
        assert!(to_cidr6("example.fi").is_err());
        assert!(is_good_bot("Mozilla/5.0 (compatible; Googlebot/2.1)") && !is_good_bot("sqlmap/1.7"));
    }
}
