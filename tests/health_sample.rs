//! Health end to end on the generated sample: generated logs (four web servers, each named by
//! its `[[source]] server`, with the disruption scenarios) → `sitelog collect` (wire v2) →
//! tansu → `sitelog process` → `health_minute` → `sitelog health` and `sitelog investigate
//! errors`, with the clock (`SITELOG_NOW`) set inside the sample. Every figure is compared
//! with `truth/health.csv`, `incidents.csv` and `no_incident.csv`, which the generator counted
//! from what it wrote, never by reading the logs back. Then an old collector's version-1
//! messages go through the same processor: still stored, with no server and no upstream status.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Days, Duration, Utc};
use serde_json::Value;
use sitelog::sample::truth::{self, HealthTruth};
use sitelog::sample::GenerateOptions;
use sitelog_schema::wire::BatchWriter;
use sitelog_schema::{AccessRecord, SourceId};

fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp() / 3600 * 3600, 0).unwrap()
}

/// `sitelog ARGS` with the clock at `now`, its stdout as JSON.
fn json(args: &[&str], now: DateTime<Utc>) -> Value {
    let now = now.to_rfc3339();
    let out = support::sitelog(args, &[("SITELOG_NOW", now.as_str())]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The truth rows of one UTC hour, by (site_host, server).
fn truth_hour(rows: &[HealthTruth], hour: DateTime<Utc>) -> BTreeMap<(String, String), (u64, u64, u64)> {
    rows.iter()
        .filter(|h| h.hour == hour)
        .map(|h| ((h.site_host.clone(), h.server.clone()), (h.requests, h.status_5xx, h.upstream_failures)))
        .collect()
}

/// Requests, 5xx, upstream failures.
type Figures = (u64, u64, u64);
/// A server's figures, its sites and its failing sites.
type ServerFigures = (Figures, u64, u64);

fn figures(v: &Value) -> (u64, u64, u64) {
    (v["requests"].as_u64().unwrap(), v["status_5xx"].as_u64().unwrap(), v["upstream_failures"].as_u64().unwrap())
}

/// Burn rate above 1 at the default objective (0.999): 5xx ratio above 0.001.
fn failing(f: (u64, u64, u64)) -> bool {
    f.1 > 0 && f.1 as f64 / f.0 as f64 > 0.001
}

/// `sitelog health` over exactly `hour` equals the truth of that hour for every site and server.
fn check_health_hour(cfg: &str, rows: &[HealthTruth], hour: DateTime<Utc>, server: Option<&str>) {
    let mut args = vec!["health", "-c", cfg, "--since", "1h", "--format", "json", "--limit", "100000"];
    if let Some(s) = server {
        args.extend(["--server", s]);
    }
    let v = json(&args, hour + Duration::hours(1));
    let want: BTreeMap<_, _> =
        truth_hour(rows, hour).into_iter().filter(|((_, s), _)| server.is_none_or(|x| x == s)).collect();
    let got: BTreeMap<(String, String), (u64, u64, u64)> = v["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| ((s["site_host"].as_str().unwrap().to_owned(), s["server"].as_str().unwrap().to_owned()), figures(s)))
        .collect();
    assert_eq!(got, want, "sites in {hour} (server {server:?})");
    assert_eq!(v["sites_total"].as_u64().unwrap() as usize, want.len());
    let mut per_server: BTreeMap<String, ServerFigures> = BTreeMap::new();
    for ((_, s), f) in &want {
        let e = per_server.entry(s.clone()).or_default();
        e.0 = (e.0 .0 + f.0, e.0 .1 + f.1, e.0 .2 + f.2);
        e.1 += 1;
        e.2 += failing(*f) as u64;
    }
    let got: BTreeMap<String, ServerFigures> = v["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["server"].as_str().unwrap().to_owned(),
                (figures(s), s["sites"].as_u64().unwrap(), s["failing_sites"].as_u64().unwrap()),
            )
        })
        .collect();
    assert_eq!(got, per_server, "servers in {hour}");
    // The contract of the JSON.
    for s in v["sites"].as_array().unwrap().iter().chain(v["servers"].as_array().unwrap()) {
        for k in ["error_ratio", "availability", "burn_rate", "excess_errors", "objective"] {
            assert!(s[k].is_f64(), "{k} in {s}");
        }
        let (r, e) = (s["requests"].as_f64().unwrap(), s["status_5xx"].as_f64().unwrap());
        assert!((s["burn_rate"].as_f64().unwrap() - e / r / 0.001).abs() < 1e-6 * (1.0 + e / r / 0.001), "{s}");
        assert!(s["request_time_ms"].is_null() || s["request_time_ms"]["p95"].is_f64(), "{s}");
    }
}

#[test]
fn health_and_investigate_errors_equal_the_generated_truth() {
    let today = Utc::now().with_timezone(&chrono_tz::Europe::Helsinki).date_naive();
    let dir = support::temp_dir("health");
    let opts = GenerateOptions {
        out: dir.join("sample"),
        seed: 11,
        start: today - Days::new(6),
        days: 5,
        customers: 6,
        rate: 6,
    };
    let run = support::run_sample(&opts, "health", &[], "");
    let cfg = run.config.to_str().unwrap();
    let truth_dir = opts.out.join("truth");
    let rows = truth::read_health(&truth_dir).unwrap();
    let incidents = truth::read_incidents(&truth_dir).unwrap();
    let quiet = truth::read_no_incident(&truth_dir).unwrap();
    let by = |scenario: &str| incidents.iter().find(|i| i.scenario == scenario).unwrap().clone();
    let (site_outage, server_outage, slow) = (by("site-outage"), by("server-outage"), by("latency-degradation"));

    // The server travelled collector → Kafka → ClickHouse, and the last upstream status with it.
    let servers: Vec<String> = support::block_on(
        run.client.query("SELECT arraySort(groupUniqArray(toString(server))) FROM access_log").fetch_one(),
    )
    .unwrap();
    assert_eq!(servers, ["web-01", "web-02", "web-03", "web-04"]);
    let retried: (u64, u64) = support::block_on(
        run.client
            .query("SELECT countIf(upstream_status = 502 AND status = 200), countIf(upstream_status = 502) FROM access_log")
            .fetch_one(),
    )
    .unwrap();
    assert!(retried.0 == 0 && retried.1 > 0, "`502, 200` is stored as 200: {retried:?}");

    // `sitelog health` per site and server equals the truth: the server outage's hour (that
    // server only, then everything), the site outage's hour, the latency degradation's.
    let outage_hour = hour_of(server_outage.start);
    check_health_hour(cfg, &rows, outage_hour, Some("web-01"));
    check_health_hour(cfg, &rows, outage_hour, None);
    check_health_hour(cfg, &rows, hour_of(site_outage.start), None);
    check_health_hour(cfg, &rows, hour_of(slow.start), None);
    let web01 = truth_hour(&rows, outage_hour);
    let listed: BTreeSet<&str> = web01.keys().filter(|(_, s)| s == "web-01").map(|(h, _)| h.as_str()).collect();
    assert!(server_outage.affected_sites.iter().all(|s| listed.contains(s.as_str())), "{listed:?}");
    assert!(server_outage.affected_sites.len() >= 2 && server_outage.affected_customers.len() >= 2);

    // The slow site: p95 in the degradation's range, no errors.
    let hour = hour_of(slow.start);
    let v = json(
        &["health", "-c", cfg, "--site", &slow.site_host, "--since", "1h", "--format", "json"],
        hour + Duration::hours(1),
    );
    let s = &v["sites"][0];
    assert_eq!(figures(s), truth_hour(&rows, hour)[&(slow.site_host.clone(), slow.server.clone())]);
    let p95 = s["request_time_ms"]["p95"].as_f64().unwrap();
    assert!((4000.0..=10_000.0).contains(&p95), "p95 {p95} ms: {s}");
    assert_eq!(v["servers"].as_array().unwrap().len(), 1, "the site's server: {v}");

    // The tiny site: 3 requests, 2 of them 5xx, as the truth says.
    let tiny = &quiet[0];
    let hour = hour_of(tiny.start);
    let v = json(&["health", "-c", cfg, "--site", &tiny.site_host, "--format", "json"], hour + Duration::hours(1));
    assert_eq!(figures(&v["sites"][0]), truth_hour(&rows, hour)[&(tiny.site_host.clone(), tiny.server.clone())]);
    assert_eq!(figures(&v["sites"][0]).0, 3);

    // `investigate errors` on the failing site, over its outage's hour.
    let reason = "test: health_sample";
    let hour = hour_of(site_outage.start);
    let e = json(
        &["investigate", "errors", "--site", &site_outage.site_host, "-c", cfg, "--format", "json", "--reason", reason],
        hour + Duration::hours(1),
    );
    let want = truth_hour(&rows, hour)[&(site_outage.site_host.clone(), site_outage.server.clone())];
    assert_eq!(figures(&e), want, "{e}");
    assert_eq!(e["first_error"], truth::rfc3339(site_outage.start), "{e}");
    assert_eq!(e["servers"], serde_json::json!([site_outage.server]));
    let sum = |k: &str| e[k].as_array().unwrap().iter().map(|s| s["requests"].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("statuses"), sum("upstream_statuses")), (want.0, want.0));
    let buckets: u64 =
        e["latency"]["request_time_buckets"].as_array().unwrap().iter().map(|b| b["requests"].as_u64().unwrap()).sum();
    assert_eq!(buckets, want.0);
    let paths = e["top_failing_paths"].as_array().unwrap();
    assert!(!paths.is_empty() && paths.len() <= 10);
    assert!(paths.windows(2).all(|w| w[0]["errors"].as_u64() >= w[1]["errors"].as_u64()));
    let others: Vec<_> = truth_hour(&rows, hour)
        .into_iter()
        .filter(|((h, s), f)| *s == site_outage.server && *h != site_outage.site_host && failing(*f))
        .collect();
    assert_eq!(e["other_sites_failing"].as_u64().unwrap() as usize, others.len(), "{e}");
    assert_eq!(e["server_wide"], !others.is_empty());

    // …and on one site of the failing server, over the server outage's hour: the others fail too.
    // Spelled as the issue does (no --reason: the command shows paths, not addresses).
    let site = &server_outage.affected_sites[0];
    let e = json(
        &["investigate", "errors", "--site", site, "-c", cfg, "--format", "json"],
        outage_hour + Duration::hours(1),
    );
    assert_eq!(figures(&e), web01[&(site.clone(), "web-01".to_owned())]);
    assert_eq!(e["server_wide"], true, "{e}");
    let failing_others = web01.iter().filter(|((h, s), f)| s == "web-01" && h != site && failing(**f)).count();
    assert_eq!(e["other_sites_failing"].as_u64().unwrap() as usize, failing_others);
    assert!(failing_others + 1 >= server_outage.affected_sites.len());
    let first = DateTime::parse_from_rfc3339(e["first_error"].as_str().unwrap()).unwrap();
    assert!(first >= server_outage.start && first < server_outage.end, "{e}");
    let audited: u64 = support::block_on(
        run.client.query("SELECT count() FROM access_audit WHERE command = 'investigate errors'").fetch_one(),
    )
    .unwrap();
    assert_eq!(audited, 2);

    // An old collector during a rollout: version-1 messages are stored, server '' and upstream 0.
    let text = std::fs::read_to_string(&run.config).unwrap();
    let topic = text.lines().find_map(|l| l.strip_prefix("topic = \"")).unwrap().trim_end_matches('"').to_owned();
    let host = "vanha-keraaja.example.fi";
    let ts0 = (hour_of(server_outage.start) + Duration::minutes(3)).timestamp_micros();
    let recs: Vec<AccessRecord<'static>> = (0..5u64)
        .map(|k| AccessRecord {
            ts_micros: ts0 + k as i64 * 1_000_000,
            host: host.into(),
            server: "ignored-by-v1".into(),
            method: "GET".into(),
            path: "/".into(),
            protocol: "HTTP/1.1".into(),
            status: if k < 2 { 502 } else { 200 },
            upstream_status: 502,
            source: SourceId { fingerprint: 0x0001_d001, offset: k * 100 },
            ..Default::default()
        })
        .collect();
    let mut w = BatchWriter::v1(0x0001_d001, host, 0, ts0);
    recs.iter().for_each(|r| w.push(r));
    support::block_on(support::produce(&support::stack().kafka_bootstrap, &topic, &[(host.to_owned(), w.finish())]));
    support::sitelog(&["process", "-c", cfg, "--exit-when-idle", "3"], &[]);
    let stored: (u64, String, u16, u64) = support::block_on(
        run.client
            .query(
                "SELECT count(), any(toString(server)), max(upstream_status), countIf(status = 502) FROM access_log \
                 WHERE site_host = ?",
            )
            .bind(host)
            .fetch_one(),
    )
    .unwrap();
    assert_eq!(stored, (5, String::new(), 0, 2), "v1 records: no server, no upstream status");
    let v = json(
        &["health", "-c", cfg, "--site", host, "--format", "json", "--since", "1h"],
        hour_of(server_outage.start) + Duration::hours(1),
    );
    assert_eq!(figures(&v["sites"][0]), (5, 2, 2), "{v}");
    assert_eq!(v["sites"][0]["server"], "");
}
