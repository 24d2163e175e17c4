//! The health model: per site and per web server over a window — requests, 5xx ratio,
//! upstream failures (status or upstream status 502/503/504), p50/p95/p99 of request and
//! upstream time, availability against the objective (`[health] objective`, the share of
//! requests that must not be 5xx) and the error-budget burn rate
//! `5xx ratio / (1 - objective)` (1 = spending the budget exactly as fast as allowed).
//!
//! [`assess`] is the arithmetic, pure; [`sites`] and [`servers`] read `health_minute`;
//! [`errors`] reads one site's failing requests from `access_log` for `investigate errors`.

use clickhouse::Client;
use serde::{Deserialize, Serialize};

/// `[health]` in processor.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Availability objective: the share of requests that are not 5xx (0 < x < 1).
    pub objective: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { objective: 0.999 }
    }
}

impl Eq for HealthConfig {}

impl HealthConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.objective > 0.0 && self.objective < 1.0) {
            return Err(("health.objective", format!("must be between 0 and 1 exclusive (got {})", self.objective)));
        }
        Ok(())
    }
}

/// p50 / p95 / p99 in milliseconds; `None` in JSON as `null` when nothing was timed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Quantiles {
    /// From ClickHouse's quantiles in microseconds (`-1` = no value in the window).
    fn from_us(q: &[f64]) -> Option<Quantiles> {
        let ms = |i: usize| q.get(i).copied().filter(|v| *v >= 0.0).map(|v| (v / 1000.0 * 1000.0).round() / 1000.0);
        Some(Quantiles { p50: ms(0)?, p95: ms(1)?, p99: ms(2)? })
    }
}

/// The counts one health figure is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub upstream_failures: u64,
}

/// What the counts say against the objective.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// Share of requests answered 5xx (0 without requests).
    pub error_ratio: f64,
    /// `1 - error_ratio`.
    pub availability: f64,
    /// `error_ratio / (1 - objective)`.
    pub burn_rate: f64,
    /// 5xx beyond what the objective allows in the window (`5xx - requests × (1 - objective)`),
    /// the order of "worst": volume-aware, so a site with 2 errors in 3 requests does not
    /// outrank one failing thousands of requests.
    pub excess_errors: f64,
}

/// The health arithmetic.
pub fn assess(c: Counts, objective: f64) -> Assessment {
    let budget = 1.0 - objective;
    let error_ratio = if c.requests == 0 { 0.0 } else { c.status_5xx as f64 / c.requests as f64 };
    Assessment {
        error_ratio,
        availability: 1.0 - error_ratio,
        burn_rate: error_ratio / budget,
        excess_errors: c.status_5xx as f64 - c.requests as f64 * budget,
    }
}

/// Health of one site (on one server) or one server in a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Empty for a server's figure.
    pub site_host: String,
    pub server: String,
    /// The site's owner; empty for a server or an unattributed host.
    pub customer_id: String,
    /// Sites with requests (a server's figure; 1 for a site).
    pub sites: u64,
    /// Sites whose burn rate is above 1 (a server's figure).
    pub failing_sites: u64,
    pub requests: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub upstream_failures: u64,
    pub objective: f64,
    #[serde(flatten)]
    pub assessment: Assessment,
    /// Request time p50/p95/p99 in ms; `null` when not logged.
    pub request_time_ms: Option<Quantiles>,
    /// Upstream time p50/p95/p99 in ms; `null` when not logged.
    pub upstream_time_ms: Option<Quantiles>,
}

impl Health {
    pub fn counts(&self) -> Counts {
        Counts {
            requests: self.requests,
            status_4xx: self.status_4xx,
            status_5xx: self.status_5xx,
            upstream_failures: self.upstream_failures,
        }
    }

    /// Spending the error budget faster than allowed.
    pub fn failing(&self) -> bool {
        self.status_5xx > 0 && self.assessment.burn_rate > 1.0
    }
}

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
struct HealthRow {
    site_host: String,
    server: String,
    customer_id: String,
    sites: u64,
    requests: u64,
    status_4xx: u64,
    status_5xx: u64,
    upstream_failures: u64,
    request_q: Vec<f64>,
    upstream_q: Vec<f64>,
}

impl HealthRow {
    fn into_health(self, objective: f64) -> Health {
        let c = Counts {
            requests: self.requests,
            status_4xx: self.status_4xx,
            status_5xx: self.status_5xx,
            upstream_failures: self.upstream_failures,
        };
        Health {
            site_host: self.site_host,
            server: self.server,
            customer_id: self.customer_id,
            sites: self.sites,
            failing_sites: 0,
            requests: c.requests,
            status_4xx: c.status_4xx,
            status_5xx: c.status_5xx,
            upstream_failures: c.upstream_failures,
            objective,
            assessment: assess(c, objective),
            request_time_ms: Quantiles::from_us(&self.request_q),
            upstream_time_ms: Quantiles::from_us(&self.upstream_q),
        }
    }
}

/// A window of whole minutes: `health_minute` rows with `from_minute <= minute < to`
/// (`from` rounded down to its minute; a minute still in progress at `to` is included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Microseconds since the epoch, UTC.
    pub from_us: i64,
    pub to_us: i64,
}

/// Optional filters of `sitelog health`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub site: Option<String>,
    pub server: Option<String>,
}

const AGG: &str = "sum(requests) AS requests, sum(status_4xx) AS status_4xx, sum(status_5xx) AS status_5xx, \
     sum(upstream_failures) AS upstream_failures, \
     arrayMap(x -> if(isNaN(x), -1., toFloat64(x)), quantilesTDigestMerge(0.5, 0.95, 0.99)(request_time_us)) AS request_q, \
     arrayMap(x -> if(isNaN(x), -1., toFloat64(x)), quantilesTDigestMerge(0.5, 0.95, 0.99)(upstream_time_us)) AS upstream_q";

const IN_WINDOW: &str = "minute >= toStartOfMinute(fromUnixTimestamp64Micro(toInt64(?), 'UTC')) \
     AND minute < fromUnixTimestamp64Micro(toInt64(?), 'UTC')";

/// Worst first: most errors beyond the objective, then the slowest p95, then the busiest.
pub fn sort_worst(list: &mut [Health]) {
    let p95 = |h: &Health| h.request_time_ms.map_or(0.0, |q| q.p95);
    list.sort_by(|a, b| {
        b.assessment
            .excess_errors
            .total_cmp(&a.assessment.excess_errors)
            .then(p95(b).total_cmp(&p95(a)))
            .then(b.requests.cmp(&a.requests))
            .then(a.site_host.cmp(&b.site_host))
            .then(a.server.cmp(&b.server))
    });
}

/// Every site (per server it was served by) with requests in the window, worst first.
pub async fn sites(
    client: &Client,
    w: Window,
    f: &Filter,
    objective: f64,
) -> Result<Vec<Health>, clickhouse::error::Error> {
    let sql = format!(
        "SELECT site_host, server, any(customer_id) AS customer_id, toUInt64(1) AS sites, {AGG} \
         FROM health_minute WHERE {IN_WINDOW} AND (? = '' OR site_host = ?) AND (? = '' OR server = ?) \
         GROUP BY site_host, server HAVING requests > 0"
    );
    let site = f.site.clone().unwrap_or_default().to_ascii_lowercase();
    let server = f.server.clone().unwrap_or_default();
    let rows: Vec<HealthRow> = client
        .query(&sql)
        .bind(w.from_us)
        .bind(w.to_us)
        .bind(&site)
        .bind(&site)
        .bind(&server)
        .bind(&server)
        .fetch_all()
        .await?;
    let mut out: Vec<Health> = rows.into_iter().map(|r| r.into_health(objective)).collect();
    sort_worst(&mut out);
    Ok(out)
}

/// Every server with requests in the window (restricted to `servers` when not empty), worst
/// first; `failing_sites` counts its sites whose burn rate is above 1.
pub async fn servers(
    client: &Client,
    w: Window,
    servers: &[String],
    objective: f64,
) -> Result<Vec<Health>, clickhouse::error::Error> {
    let sql = format!(
        "SELECT '' AS site_host, server, '' AS customer_id, toUInt64(0) AS sites, {AGG} \
         FROM health_minute WHERE {IN_WINDOW} AND (empty(?) OR has(?, server)) \
         GROUP BY server HAVING requests > 0"
    );
    let rows: Vec<HealthRow> =
        client.query(&sql).bind(w.from_us).bind(w.to_us).bind(servers).bind(servers).fetch_all().await?;
    let mut out: Vec<Health> = rows.into_iter().map(|r| r.into_health(objective)).collect();
    let per_site = sites(client, w, &Filter::default(), objective).await?;
    for s in &mut out {
        let own = || per_site.iter().filter(|p| p.server == s.server);
        s.sites = own().count() as u64;
        s.failing_sites = own().filter(|p| p.failing()).count() as u64;
    }
    sort_worst(&mut out);
    Ok(out)
}

/// One path's failures (`investigate errors`).
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
pub struct FailingPath {
    pub path: String,
    pub requests: u64,
    /// Status 500–599.
    pub errors: u64,
    pub upstream_failures: u64,
}

/// Requests per status (or upstream status; 0 = absent).
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
pub struct StatusCount {
    pub status: u16,
    pub requests: u64,
}

/// Latency of the site's requests in the window, from `access_log`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub request_time_ms: Option<Quantiles>,
    pub upstream_time_ms: Option<Quantiles>,
    /// Requests by request time: `[≤ 100 ms, ≤ 500 ms, ≤ 1 s, ≤ 4 s, > 4 s, not logged]`.
    pub request_time_buckets: Vec<Bucket>,
}

/// A latency histogram bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bucket {
    /// `le_100ms`, `le_500ms`, `le_1s`, `le_4s`, `gt_4s`, `none`.
    pub bucket: String,
    pub requests: u64,
}

/// What `sitelog investigate errors` shows for one site.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteErrors {
    pub site_host: String,
    /// The servers that logged the site's requests in the window.
    pub servers: Vec<String>,
    pub customer_id: String,
    pub requests: u64,
    pub status_5xx: u64,
    pub upstream_failures: u64,
    /// First and last 5xx or upstream failure in the window (microseconds, UTC).
    pub first_error_us: Option<i64>,
    pub last_error_us: Option<i64>,
    pub top_failing_paths: Vec<FailingPath>,
    pub statuses: Vec<StatusCount>,
    pub upstream_statuses: Vec<StatusCount>,
    pub latency: Latency,
    /// The other sites of the same servers in the window, worst first.
    pub server_sites: Vec<Health>,
}

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
struct SiteTotals {
    customer_id: String,
    servers: Vec<String>,
    requests: u64,
    status_5xx: u64,
    upstream_failures: u64,
    first_error: i64,
    last_error: i64,
    has_error: u8,
    request_q: Vec<f64>,
    upstream_q: Vec<f64>,
    b100: u64,
    b500: u64,
    b1000: u64,
    b4000: u64,
    bmore: u64,
    bnone: u64,
}

const FAIL: &str = "(status BETWEEN 500 AND 599 OR status IN (502, 503, 504) OR upstream_status IN (502, 503, 504))";
const TS_WINDOW: &str =
    "site_host = ? AND ts >= fromUnixTimestamp64Micro(toInt64(?), 'UTC') AND ts < fromUnixTimestamp64Micro(toInt64(?), 'UTC')";

/// One site's errors in `[from, to)` (exact, from `access_log`), and how the other sites of
/// its servers did (from `health_minute`, whole minutes).
pub async fn errors(
    client: &Client,
    host: &str,
    w: Window,
    objective: f64,
    top: u64,
) -> Result<SiteErrors, clickhouse::error::Error> {
    let host = host.to_ascii_lowercase();
    let totals: SiteTotals = client
        .query(&format!(
            "SELECT any(customer_id) AS customer_id, arraySort(groupUniqArray(toString(server))) AS servers, \
             count() AS requests, countIf(status BETWEEN 500 AND 599) AS status_5xx, \
             countIf(status IN (502, 503, 504) OR upstream_status IN (502, 503, 504)) AS upstream_failures, \
             toUnixTimestamp64Micro(minIf(ts, {FAIL})) AS first_error, \
             toUnixTimestamp64Micro(maxIf(ts, {FAIL})) AS last_error, toUInt8(countIf({FAIL}) > 0) AS has_error, \
             arrayMap(x -> if(isNaN(x), -1., toFloat64(x)), quantilesIf(0.5, 0.95, 0.99)(assumeNotNull(request_time_us), isNotNull(request_time_us))) AS request_q, \
             arrayMap(x -> if(isNaN(x), -1., toFloat64(x)), quantilesIf(0.5, 0.95, 0.99)(assumeNotNull(upstream_time_us), isNotNull(upstream_time_us))) AS upstream_q, \
             countIf(request_time_us <= 100000) AS b100, \
             countIf(request_time_us > 100000 AND request_time_us <= 500000) AS b500, \
             countIf(request_time_us > 500000 AND request_time_us <= 1000000) AS b1000, \
             countIf(request_time_us > 1000000 AND request_time_us <= 4000000) AS b4000, \
             countIf(request_time_us > 4000000) AS bmore, countIf(isNull(request_time_us)) AS bnone \
             FROM access_log WHERE {TS_WINDOW}"
        ))
        .bind(&host)
        .bind(w.from_us)
        .bind(w.to_us)
        .fetch_one()
        .await?;
    let top_failing_paths: Vec<FailingPath> = client
        .query(&format!(
            "SELECT path, count() AS requests, countIf(status BETWEEN 500 AND 599) AS errors, \
             countIf(status IN (502, 503, 504) OR upstream_status IN (502, 503, 504)) AS upstream_failures \
             FROM access_log WHERE {TS_WINDOW} GROUP BY path HAVING countIf({FAIL}) > 0 \
             ORDER BY errors DESC, upstream_failures DESC, path LIMIT ?"
        ))
        .bind(&host)
        .bind(w.from_us)
        .bind(w.to_us)
        .bind(top)
        .fetch_all()
        .await?;
    let by = |col: &str| {
        format!("SELECT {col} AS status, count() AS requests FROM access_log WHERE {TS_WINDOW} GROUP BY status ORDER BY status")
    };
    let statuses: Vec<StatusCount> =
        client.query(&by("status")).bind(&host).bind(w.from_us).bind(w.to_us).fetch_all().await?;
    let upstream_statuses: Vec<StatusCount> =
        client.query(&by("upstream_status")).bind(&host).bind(w.from_us).bind(w.to_us).fetch_all().await?;
    let mut server_sites = Vec::new();
    for server in totals.servers.iter().filter(|s| !s.is_empty()) {
        let f = Filter { site: None, server: Some(server.clone()) };
        server_sites.extend(sites(client, w, &f, objective).await?.into_iter().filter(|h| h.site_host != host));
    }
    sort_worst(&mut server_sites);
    let b = |name: &str, requests: u64| Bucket { bucket: name.to_owned(), requests };
    Ok(SiteErrors {
        site_host: host,
        servers: totals.servers,
        customer_id: totals.customer_id,
        requests: totals.requests,
        status_5xx: totals.status_5xx,
        upstream_failures: totals.upstream_failures,
        first_error_us: (totals.has_error == 1).then_some(totals.first_error),
        last_error_us: (totals.has_error == 1).then_some(totals.last_error),
        top_failing_paths,
        statuses,
        upstream_statuses,
        latency: Latency {
            request_time_ms: Quantiles::from_us(&totals.request_q),
            upstream_time_ms: Quantiles::from_us(&totals.upstream_q),
            request_time_buckets: vec![
                b("le_100ms", totals.b100),
                b("le_500ms", totals.b500),
                b("le_1s", totals.b1000),
                b("le_4s", totals.b4000),
                b("gt_4s", totals.bmore),
                b("none", totals.bnone),
            ],
        },
        server_sites,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(requests: u64, status_5xx: u64) -> Counts {
        Counts { requests, status_5xx, ..Counts::default() }
    }

    #[test]
    fn burn_rate_is_the_error_ratio_over_the_budget() {
        let a = assess(c(10_000, 10), 0.999);
        assert!((a.error_ratio - 0.001).abs() < 1e-12);
        assert!((a.burn_rate - 1.0).abs() < 1e-9, "{a:?}");
        assert!((a.availability - 0.999).abs() < 1e-12);
        assert!(a.excess_errors.abs() < 1e-9);
        let a = assess(c(1000, 144), 0.99);
        assert!((a.burn_rate - 14.4).abs() < 1e-9, "{a:?}");
        let idle = assess(c(0, 0), 0.999);
        assert_eq!((idle.error_ratio, idle.availability, idle.burn_rate), (0.0, 1.0, 0.0));
        let down = assess(c(50, 50), 0.999);
        assert!((down.burn_rate - 1000.0).abs() < 1e-6 && down.availability == 0.0);
    }

    #[test]
    fn worst_is_volume_aware() {
        let h = |site: &str, requests, status_5xx| Health {
            site_host: site.into(),
            server: "web-01".into(),
            customer_id: String::new(),
            sites: 1,
            failing_sites: 0,
            requests,
            status_4xx: 0,
            status_5xx,
            upstream_failures: 0,
            objective: 0.999,
            assessment: assess(c(requests, status_5xx), 0.999),
            request_time_ms: None,
            upstream_time_ms: None,
        };
        let mut list = vec![h("tiny.fi", 3, 2), h("busy.fi", 20_000, 900), h("fine.fi", 5_000, 0)];
        sort_worst(&mut list);
        let order: Vec<&str> = list.iter().map(|h| h.site_host.as_str()).collect();
        assert_eq!(order, ["busy.fi", "tiny.fi", "fine.fi"]);
        assert!(list[1].failing() && list[1].assessment.burn_rate > list[0].assessment.burn_rate);
        assert!(!list[2].failing());
    }

    #[test]
    fn objective_is_validated() {
        assert!(HealthConfig::default().validate().is_ok());
        for bad in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            let e = HealthConfig { objective: bad }.validate().unwrap_err();
            assert_eq!(e.0, "health.objective");
        }
        assert_eq!(Quantiles::from_us(&[-1.0, -1.0, -1.0]), None);
        assert_eq!(Quantiles::from_us(&[1500.0, 4_000_000.0, 9_999_999.0]).unwrap().p95, 4000.0);
    }
}
