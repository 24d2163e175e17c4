//! Reading the generator's ground truth back, for tests and `sitelog report summary --truth`.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

/// Usage of one customer / site / Helsinki day, as the generator counted it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayUsage {
    pub requests: u64,
    pub bytes_sent: u64,
    pub bot_requests: u64,
    pub visitors_ip: u64,
    pub visitors_ip_ua: u64,
}

/// Key: (customer_id, site_id, day as YYYY-MM-DD).
pub type UsageTable = BTreeMap<(String, String, String), DayUsage>;

/// Reads `truth/usage_daily.csv`.
pub fn read_usage(truth_dir: &Path) -> std::io::Result<UsageTable> {
    let path = truth_dir.join("usage_daily.csv");
    let text = std::fs::read_to_string(&path)?;
    let mut out = UsageTable::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || std::io::Error::other(format!("{}:{}: malformed row", path.display(), i + 1));
        if f.len() != 8 {
            return Err(bad());
        }
        let n = |k: usize| f[k].parse::<u64>().map_err(|_| bad());
        out.insert(
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned()),
            DayUsage {
                requests: n(3)?,
                bytes_sent: n(4)?,
                bot_requests: n(5)?,
                visitors_ip: n(6)?,
                visitors_ip_ua: n(7)?,
            },
        );
    }
    Ok(out)
}

/// Reads `truth/summary.json`.
pub fn read_summary(truth_dir: &Path) -> std::io::Result<serde_json::Value> {
    let text = std::fs::read_to_string(truth_dir.join("summary.json"))?;
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

/// Every difference between `expected` and `found`, one line each.
pub fn diff(expected: &UsageTable, found: &UsageTable) -> Vec<String> {
    let mut out = Vec::new();
    for (k, e) in expected {
        match found.get(k) {
            None => out.push(format!("{} {} {}: expected {e:?}, found nothing", k.0, k.1, k.2)),
            Some(f) if f != e => out.push(format!("{} {} {}: expected {e:?}, found {f:?}", k.0, k.1, k.2)),
            Some(_) => {}
        }
    }
    for (k, f) in found {
        if !expected.contains_key(k) {
            out.push(format!("{} {} {}: expected nothing, found {f:?}", k.0, k.1, k.2));
        }
    }
    out
}

/// Header of `truth/security.csv`.
pub const SECURITY_HEADER: &str = "scenario,source,customer_id,site_host,day";
/// Header of `truth/benign.csv`.
pub const BENIGN_HEADER: &str = "kind,source";

/// One injected attack that detection must find (a line of `truth/security.csv`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecurityTruth {
    /// The scenario's name, e.g. `wp-login-bruteforce`.
    pub scenario: String,
    /// The attacking address as text (IPv6 compressed), or a CIDR network for `cross-tenant`.
    pub source: String,
    /// The owner of the attacked site on that day; empty for `cross-tenant`.
    pub customer_id: String,
    /// The host name the requests used (lowercase); empty for `cross-tenant`.
    pub site_host: String,
    /// Helsinki date (YYYY-MM-DD) of the attack's first request.
    pub day: String,
}

/// Writes `truth/security.csv`.
pub fn write_security(truth_dir: &Path, rows: &[SecurityTruth]) -> std::io::Result<()> {
    let mut text = format!("{SECURITY_HEADER}\n");
    for r in rows {
        text.push_str(&format!("{},{},{},{},{}\n", r.scenario, r.source, r.customer_id, r.site_host, r.day));
    }
    std::fs::write(truth_dir.join("security.csv"), text)
}

/// Writes `truth/benign.csv`: (kind, source) per benign look-alike.
pub fn write_benign(truth_dir: &Path, rows: &[(String, String)]) -> std::io::Result<()> {
    let mut text = format!("{BENIGN_HEADER}\n");
    for (kind, source) in rows {
        text.push_str(&format!("{kind},{source}\n"));
    }
    std::fs::write(truth_dir.join("benign.csv"), text)
}

/// The rows of a CSV file with exactly `header` and `width` fields per row.
fn read_csv(path: &Path, header: &str, width: usize) -> std::io::Result<Vec<Vec<String>>> {
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines();
    if lines.next() != Some(header) {
        return Err(std::io::Error::other(format!("{}: header is not {header:?}", path.display())));
    }
    lines
        .enumerate()
        .map(|(i, line)| {
            let f: Vec<String> = line.split(',').map(str::to_owned).collect();
            if f.len() == width {
                Ok(f)
            } else {
                Err(std::io::Error::other(format!("{}:{}: malformed row", path.display(), i + 2)))
            }
        })
        .collect()
}

/// Reads `truth/security.csv`.
pub fn read_security(truth_dir: &Path) -> std::io::Result<Vec<SecurityTruth>> {
    Ok(read_csv(&truth_dir.join("security.csv"), SECURITY_HEADER, 5)?
        .into_iter()
        .map(|f| {
            let [scenario, source, customer_id, site_host, day]: [String; 5] = f.try_into().expect("5 fields");
            SecurityTruth { scenario, source, customer_id, site_host, day }
        })
        .collect())
}

/// Reads `truth/benign.csv`: (kind, source) per benign look-alike.
pub fn read_benign(truth_dir: &Path) -> std::io::Result<Vec<(String, String)>> {
    Ok(read_csv(&truth_dir.join("benign.csv"), BENIGN_HEADER, 2)?
        .into_iter()
        .map(|f| (f[0].clone(), f[1].clone()))
        .collect())
}

/// Header of `truth/incidents.csv`.
pub const INCIDENTS_HEADER: &str = "scenario,kind,cause,site_host,server,start,end,affected_customers,affected_sites";
/// Header of `truth/no_incident.csv`.
pub const NO_INCIDENT_HEADER: &str = "scenario,site_host,server,start,end";
/// Header of `truth/health.csv`.
pub const HEALTH_HEADER: &str = "site_host,server,hour,requests,status_5xx,upstream_failures";

/// One injected disruption that alerting must report as one incident (a line of
/// `truth/incidents.csv`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentTruth {
    /// `site-outage`, `server-outage` or `latency-degradation`.
    pub scenario: String,
    /// `site` or `server`.
    pub kind: String,
    /// `errors` or `latency`.
    pub cause: String,
    /// The failing site's host; empty for a server incident.
    pub site_host: String,
    /// The failing server, or the site's server.
    pub server: String,
    /// The first affected request.
    pub start: DateTime<Utc>,
    /// The end of the minute of the last affected request.
    pub end: DateTime<Utc>,
    /// Owners of the affected sites (customer ids), sorted.
    pub affected_customers: Vec<String>,
    /// Primary hosts of the sites with affected requests (a `www.` alias counts for its site), sorted.
    pub affected_sites: Vec<String>,
}

/// Errors that must not become an incident (a line of `truth/no_incident.csv`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoIncidentTruth {
    pub scenario: String,
    pub site_host: String,
    pub server: String,
    /// The first of its requests, and the end of the minute of the last.
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// One site host on one server in one UTC hour, as the generator wrote it (a line of
/// `truth/health.csv`; only hours with requests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthTruth {
    pub site_host: String,
    pub server: String,
    /// The hour's start.
    pub hour: DateTime<Utc>,
    pub requests: u64,
    /// Status 500–599.
    pub status_5xx: u64,
    /// Status or logged upstream status 502, 503 or 504.
    pub upstream_failures: u64,
}

/// RFC 3339 UTC with a `Z` and whole seconds (the truth files' times are whole seconds).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(path: &Path, line: usize, s: &str) -> std::io::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| std::io::Error::other(format!("{}:{line}: {s:?}: {e}", path.display())))
}

fn list(s: &str) -> Vec<String> {
    s.split(';').filter(|x| !x.is_empty()).map(str::to_owned).collect()
}

/// Writes `truth/incidents.csv`.
pub fn write_incidents(truth_dir: &Path, rows: &[IncidentTruth]) -> std::io::Result<()> {
    let mut text = format!("{INCIDENTS_HEADER}\n");
    for r in rows {
        text.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            r.scenario,
            r.kind,
            r.cause,
            r.site_host,
            r.server,
            rfc3339(r.start),
            rfc3339(r.end),
            r.affected_customers.join(";"),
            r.affected_sites.join(";")
        ));
    }
    std::fs::write(truth_dir.join("incidents.csv"), text)
}

/// Reads `truth/incidents.csv`.
pub fn read_incidents(truth_dir: &Path) -> std::io::Result<Vec<IncidentTruth>> {
    let path = truth_dir.join("incidents.csv");
    read_csv(&path, INCIDENTS_HEADER, 9)?
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            Ok(IncidentTruth {
                scenario: f[0].clone(),
                kind: f[1].clone(),
                cause: f[2].clone(),
                site_host: f[3].clone(),
                server: f[4].clone(),
                start: parse_time(&path, i + 2, &f[5])?,
                end: parse_time(&path, i + 2, &f[6])?,
                affected_customers: list(&f[7]),
                affected_sites: list(&f[8]),
            })
        })
        .collect()
}

/// Writes `truth/no_incident.csv`.
pub fn write_no_incident(truth_dir: &Path, rows: &[NoIncidentTruth]) -> std::io::Result<()> {
    let mut text = format!("{NO_INCIDENT_HEADER}\n");
    for r in rows {
        let (start, end) = (rfc3339(r.start), rfc3339(r.end));
        text.push_str(&format!("{},{},{},{start},{end}\n", r.scenario, r.site_host, r.server));
    }
    std::fs::write(truth_dir.join("no_incident.csv"), text)
}

/// Reads `truth/no_incident.csv`.
pub fn read_no_incident(truth_dir: &Path) -> std::io::Result<Vec<NoIncidentTruth>> {
    let path = truth_dir.join("no_incident.csv");
    read_csv(&path, NO_INCIDENT_HEADER, 5)?
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            Ok(NoIncidentTruth {
                scenario: f[0].clone(),
                site_host: f[1].clone(),
                server: f[2].clone(),
                start: parse_time(&path, i + 2, &f[3])?,
                end: parse_time(&path, i + 2, &f[4])?,
            })
        })
        .collect()
}

/// Writes `truth/health.csv`.
pub fn write_health(truth_dir: &Path, rows: &[HealthTruth]) -> std::io::Result<()> {
    let mut text = format!("{HEALTH_HEADER}\n");
    for r in rows {
        text.push_str(&format!(
            "{},{},{},{},{},{}\n",
            r.site_host,
            r.server,
            rfc3339(r.hour),
            r.requests,
            r.status_5xx,
            r.upstream_failures
        ));
    }
    std::fs::write(truth_dir.join("health.csv"), text)
}

/// Reads `truth/health.csv`.
pub fn read_health(truth_dir: &Path) -> std::io::Result<Vec<HealthTruth>> {
    let path = truth_dir.join("health.csv");
    read_csv(&path, HEALTH_HEADER, 6)?
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let n = |k: usize| {
                f[k].parse::<u64>()
                    .map_err(|_| std::io::Error::other(format!("{}:{}: malformed row", path.display(), i + 2)))
            };
            Ok(HealthTruth {
                site_host: f[0].clone(),
                server: f[1].clone(),
                hour: parse_time(&path, i + 2, &f[2])?,
                requests: n(3)?,
                status_5xx: n(4)?,
                upstream_failures: n(5)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_and_benign_round_trip() {
        let dir = std::env::temp_dir().join(format!("sitelog-truth-rt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rows = vec![
            SecurityTruth {
                scenario: "wp-login-bruteforce".into(),
                source: "185.220.101.47".into(),
                customer_id: "C0001".into(),
                site_host: "kahvilaaroma.fi".into(),
                day: "2026-11-06".into(),
            },
            SecurityTruth {
                scenario: "xmlrpc-abuse".into(),
                source: "2a0e:8f02:f017::66".into(),
                customer_id: "C0002".into(),
                site_host: "rakennuskivi.fi".into(),
                day: "2026-11-07".into(),
            },
            SecurityTruth {
                scenario: "cross-tenant".into(),
                source: "217.182.143.0/24".into(),
                customer_id: String::new(),
                site_host: String::new(),
                day: "2026-11-20".into(),
            },
        ];
        let benign = vec![
            ("office-nat".to_owned(), "62.78.192.34".to_owned()),
            ("googlebot".to_owned(), "66.249.66.0/24".to_owned()),
        ];
        write_security(&dir, &rows).unwrap();
        write_benign(&dir, &benign).unwrap();
        assert_eq!(read_security(&dir).unwrap(), rows);
        assert_eq!(read_benign(&dir).unwrap(), benign);
        let text = std::fs::read_to_string(dir.join("security.csv")).unwrap();
        assert!(text.starts_with("scenario,source,customer_id,site_host,day\n"));
        assert!(text.contains("\ncross-tenant,217.182.143.0/24,,,2026-11-20\n"), "{text}");
        std::fs::write(dir.join("benign.csv"), "kind,src\noffice-nat,1.2.3.4\n").unwrap();
        assert!(read_benign(&dir).is_err(), "a wrong header is an error");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
