//! The billing run on the generated data set, end to end through the real stack: the
//! generator's log files are parsed with the collector's log formats, sent to tansu as wire
//! batches and stored by `sitelog process` (killed with SIGKILL mid-stream, restarted, ClickHouse stopped and restarted under it, and the
//! whole topic replayed by a second consumer group). Then `sitelog report billing` must equal
//! the generator's independently counted ground truth for every customer, site and month —
//! October 2026 with its DST change and a domain that moved between customers on 26 October,
//! and the partial November — and `--verify` must pass, then fail with a precise line once
//! the test deletes one rollup row.

mod billing_common;
mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use billing_common::*;
use sitelog::sample::{self, truth, GenerateOptions};
use sitelog_ingest::format::LogFormat;
use sitelog_schema::register::RegisterExport;
use sitelog_schema::wire::BatchWriter;
use sitelog_schema::{AccessRecord, SourceId};

const PER_MESSAGE: usize = 400;

/// Reads a file, gunzipping `.gz`.
fn read_log(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).unwrap();
        out
    } else {
        raw
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Every log file of the sample as wire batches keyed by host, parsed with the formats the
/// sample's collector.toml names. Returns the messages and the malformed line count.
fn wire_batches(sample: &Path) -> (Vec<(String, Vec<u8>)>, u64) {
    let web1 = LogFormat::resolve(sample::WEB1_LOG_FORMAT).unwrap();
    let combined = LogFormat::resolve("combined").unwrap();
    let vhost = LogFormat::resolve("vhost_combined").unwrap();
    let mut messages = Vec::new();
    let mut malformed = 0;
    for path in files(&sample.join("logs")) {
        let rel = path.strip_prefix(sample).unwrap().to_string_lossy().into_owned();
        let fingerprint =
            rel.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        let (fmt, path_host) = if rel.starts_with("logs/web1/") {
            (&web1, None)
        } else if rel.starts_with("logs/web2/") {
            (&combined, Some(rel.split('/').nth(2).unwrap().to_owned()))
        } else {
            (&vhost, None)
        };
        let text = read_log(&path);
        let mut streams: BTreeMap<String, Vec<AccessRecord<'static>>> = BTreeMap::new();
        let mut offset = 0u64;
        for line in text.split_inclusive(|b| *b == b'\n') {
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            match fmt.parse_line(body) {
                Ok(rec) => {
                    let mut rec = rec.into_owned();
                    if let Some(h) = &path_host {
                        rec.host = h.clone().into();
                    }
                    rec.source = SourceId { fingerprint, offset };
                    streams.entry(rec.host.to_string()).or_default().push(rec);
                }
                Err(_) => malformed += 1,
            }
            offset += line.len() as u64;
        }
        for (host, recs) in streams {
            for chunk in recs.chunks(PER_MESSAGE) {
                let mut w = BatchWriter::new(fingerprint, &host, chunk[0].source.offset, chunk[0].ts_micros);
                chunk.iter().for_each(|r| w.push(r));
                messages.push((host.clone(), w.finish()));
            }
        }
    }
    (messages, malformed)
}

fn process_config(db: &Db, bootstrap: &str, topic: &str, group: &str) -> PathBuf {
    let base = std::fs::read_to_string(&db.config).unwrap();
    let text = base.replacen(
        "[kafka]\n",
        &format!("[kafka]\ntopic = \"{topic}\"\ngroup_id = \"{group}\"\n"),
        1,
    ) + "\n[sink]\nbatch_max_records = 5000\nlinger_ms = 300\nmax_poll_interval_ms = 10000\n\n[attribution]\nregister_poll_secs = 1\n";
    assert!(text.contains(bootstrap));
    let path = support::temp_dir("billsample-proc").join("processor.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `sitelog process`; with `exit_when_idle` it stops once caught up for that many seconds
/// (long enough for a new consumer group to form first).
fn processor(config: &Path, exit_when_idle: Option<u32>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sitelog"));
    cmd.arg("process").arg("--config").arg(config).env("RUST_LOG", "warn").stdin(Stdio::null());
    if let Some(secs) = exit_when_idle {
        cmd.args(["--exit-when-idle", &secs.to_string()]);
    }
    cmd.spawn().unwrap()
}

fn wait_for_usage(db: &Db, at_least: u64) {
    let t = Instant::now();
    while count(db, "SELECT sum(requests) FROM usage_daily") < at_least {
        assert!(t.elapsed() < Duration::from_secs(180), "processor stored too little within 180 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn count(db: &Db, sql: &str) -> u64 {
    support::block_on(db.client.query(sql).fetch_one::<u64>()).unwrap()
}

/// Truth per (customer, site, month): requests, bytes, bots, visits_ip, visits_ip_ua.
fn truth_by_month(t: &truth::UsageTable) -> BTreeMap<(String, String, String), [u64; 5]> {
    let mut out: BTreeMap<(String, String, String), [u64; 5]> = BTreeMap::new();
    for ((c, s, day), u) in t {
        let e = out.entry((day[..7].to_owned(), c.clone(), s.clone())).or_default();
        for (i, v) in
            [u.requests, u.bytes_sent, u.bot_requests, u.visitors_ip, u.visitors_ip_ua].into_iter().enumerate()
        {
            e[i] += v;
        }
    }
    out
}

fn n(row: &BTreeMap<String, String>, k: &str) -> u64 {
    row[k].parse().unwrap_or_else(|_| panic!("{k} = {:?}", row[k]))
}

/// Checks a month's CSV against the truth; returns (sites with overage, sites without).
fn check_month(
    csv: &str,
    month: &str,
    truth: &BTreeMap<(String, String, String), [u64; 5]>,
    export: &RegisterExport,
    unattributed: u64,
) -> (usize, usize) {
    let rows = csv_rows(csv);
    let plans: BTreeMap<&str, (&str, u64)> =
        export.plans.iter().map(|p| (p.plan.as_str(), (p.metering.as_str(), p.included))).collect();
    let site_plan: BTreeMap<&str, &str> =
        export.customers.iter().flat_map(|c| c.sites.iter().map(|s| (s.site_id.as_str(), s.plan.as_str()))).collect();
    let mut seen = 0;
    let (mut over, mut under) = (0, 0);
    for r in rows.iter().filter(|r| r["line"] == "site") {
        assert_eq!(r["month"], month);
        let key = (month.to_owned(), r["customer_id"].clone(), r["site_id"].clone());
        let want = truth.get(&key).copied().unwrap_or_default();
        if truth.contains_key(&key) {
            seen += 1;
        }
        let got = [n(r, "requests"), n(r, "bytes_sent"), n(r, "bot_requests"), n(r, "visits_ip"), n(r, "visits_ip_ua")];
        assert_eq!(got, want, "{key:?}: requests, bytes, bots, visits_ip, visits_ip_ua");
        assert_eq!(n(r, "human_requests"), want[0] - want[2], "{key:?} human");
        let (metering, included) = plans[site_plan[r["site_id"].as_str()]];
        let billed = match metering {
            "requests" => want[0],
            "visits_ip" => want[3],
            "visits_ip_ua" => want[4],
            other => panic!("{other}"),
        };
        assert_eq!(
            (r["metering"].as_str(), n(r, "included"), n(r, "billed_usage")),
            (metering, included, billed),
            "{key:?}"
        );
        assert_eq!(n(r, "overage"), billed.saturating_sub(included), "{key:?} overage");
        if billed > included {
            over += 1;
        } else {
            under += 1;
        }
    }
    let in_truth = truth.keys().filter(|k| k.0 == month).count();
    assert_eq!(seen, in_truth, "{month}: every customer/site of the truth has a line");
    for r in rows.iter().filter(|r| r["line"] == "customer") {
        let want: u64 = truth.iter().filter(|(k, _)| k.0 == month && k.1 == r["customer_id"]).map(|(_, v)| v[0]).sum();
        assert_eq!(n(r, "requests"), want, "{month} {} customer requests", r["customer_id"]);
    }
    let un = rows.iter().find(|r| r["line"] == "unattributed").unwrap();
    assert_eq!(n(un, "requests"), unattributed, "{month} unattributed");
    (over, under)
}

/// Unattributed requests per month: the truth's total, split by the test's own count of the
/// unknown host's records per Helsinki month.
fn unattributed_by_month(messages: &[(String, Vec<u8>)], host: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (key, payload) in messages.iter().filter(|(k, _)| k == host) {
        for r in sitelog_schema::wire::BatchReader::new(payload).unwrap() {
            let r = r.unwrap();
            let t = chrono::DateTime::from_timestamp_micros(r.ts_micros).unwrap();
            let m = t.with_timezone(&chrono_tz::Europe::Helsinki).format("%Y-%m").to_string();
            let _ = key;
            *out.entry(m).or_default() += 1;
        }
    }
    out
}

#[test]
fn billing_equals_ground_truth_through_faults_and_verify_finds_a_deleted_rollup() {
    // A stack of its own: this test stops and restarts ClickHouse.
    let mut stack = support::own_stack("billsample-stack");
    let dir = support::temp_dir("billsample");
    let opts = GenerateOptions { out: dir.clone(), customers: 6, rate: 20, ..GenerateOptions::default() };
    let summary = sample::generate(&opts).unwrap();
    assert_eq!((summary.moved_domain.is_empty(), summary.moved_on.as_str()), (false, "2026-10-26"));
    let truth_dir = dir.join("truth");
    let truth = truth_by_month(&truth::read_usage(&truth_dir).unwrap());

    // The register, with each plan's allowance at the median of its sites' monthly usage in
    // the truth, so some sites go over and some do not.
    let mut export: RegisterExport =
        serde_json::from_str(&std::fs::read_to_string(dir.join("register.json")).unwrap()).unwrap();
    let site_plan: BTreeMap<String, String> =
        export.customers.iter().flat_map(|c| c.sites.iter().map(|s| (s.site_id.clone(), s.plan.clone()))).collect();
    let rule: BTreeMap<String, String> = export.plans.iter().map(|p| (p.plan.clone(), p.metering.clone())).collect();
    for p in &mut export.plans {
        let mut billed: Vec<u64> = truth
            .iter()
            .filter(|((_, _, site), _)| site_plan[site] == p.plan)
            .map(|(_, v)| match rule[&p.plan].as_str() {
                "requests" => v[0],
                "visits_ip" => v[3],
                _ => v[4],
            })
            .collect();
        billed.sort();
        p.included = billed.get(billed.len() / 2).copied().unwrap_or(0);
    }
    let db = db(&stack, "billsample");
    support::block_on(sitelog_processor::register::import(&db.client, &export, "test", "register.json", "-")).unwrap();

    let (messages, malformed) = wire_batches(&dir);
    assert_eq!(malformed, summary.malformed, "every line is a record or one of the generator's malformed lines");
    let topic = support::unique_name("billsample");
    stack.create_topic(&topic, 4).unwrap();
    support::block_on(support::produce(&stack.kafka_bootstrap, &topic, &messages));

    // Store everything, with a SIGKILL of the processor mid-stream.
    let config = process_config(&db, &stack.kafka_bootstrap, &topic, "billing-g1");
    let mut p = processor(&config, None);
    wait_for_usage(&db, summary.records / 3);
    p.kill().unwrap(); // SIGKILL
    p.wait().unwrap();
    let mut p = processor(&config, None);
    wait_for_usage(&db, summary.records * 2 / 3);
    // ClickHouse stopped mid-stream and restarted while the processor keeps running.
    stack.stop_clickhouse();
    std::thread::sleep(std::time::Duration::from_secs(3));
    stack.start_clickhouse().unwrap();
    wait_for_usage(&db, summary.records);
    // SAFETY: kill(2) on our own child's pid; SIGTERM drains and exits 0.
    unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
    assert!(p.wait().unwrap().success());
    assert_eq!(count(&db, "SELECT sum(requests) FROM usage_daily"), summary.records, "every record stored once");

    let unknown = "vanha-kauppa.example.org";
    let unattributed = unattributed_by_month(&messages, unknown);
    assert_eq!(unattributed.values().sum::<u64>(), summary.unattributed_requests);
    let mut reports = BTreeMap::new();
    let (mut over, mut under) = (0, 0);
    for month in ["2026-10", "2026-11"] {
        let out = billing(&db, &["--month", month, "--format", "csv"]);
        assert!(out.status.success(), "{month}: {}", stderr(&out));
        let csv = stdout(&out);
        let (o, u) = check_month(&csv, month, &truth, &export, unattributed[month]);
        over += o;
        under += u;
        reports.insert(month, csv);
    }
    assert!(over > 0 && under > 0, "overage both charged and not: {over} over, {under} within");

    // The moved domain: billed to each customer for its own days of October.
    let oct = csv_rows(&reports["2026-10"]);
    let moved: Vec<_> =
        oct.iter().filter(|r| r["line"] == "site" && (r["site_id"] == "S0004" || r["site_id"] == "S0009")).collect();
    assert_eq!(moved.len(), 2);
    assert!(moved.iter().all(|r| n(r, "requests") > 0), "both owners have October usage");
    assert_ne!(moved[0]["customer_id"], moved[1]["customer_id"]);
    assert!(oct.iter().all(|r| r["status"] == "complete"), "October: every source delivered past 1 Nov 00:00 UTC");

    // JSON carries the same figures.
    let out = billing(&db, &["--month", "2026-10", "--format", "json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((j["hours"].as_i64(), j["status"].as_str()), (Some(745), Some("complete")));
    let total: u64 = j["customers"].as_array().unwrap().iter().map(|c| c["total"]["requests"].as_u64().unwrap()).sum();
    let want: u64 = truth.iter().filter(|(k, _)| k.0 == "2026-10").map(|(_, v)| v[0]).sum();
    assert_eq!(total, want);

    // November is not over: provisional, and --strict refuses naming every lagging source.
    let csv = csv_rows(&reports["2026-11"]);
    assert!(csv.iter().all(|r| r["status"] == "provisional"));
    let out = billing(&db, &["--month", "2026-11", "--strict"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("refused: 2026-11 is not complete"), "{err}");
    assert!(
        err.contains(&format!("lagging source: {unknown}"))
            && err.contains(&format!("lagging source: {}", summary.moved_domain)),
        "{err}"
    );

    // --verify: raw records (days still in retention), source progress. Both months pass.
    for month in ["2026-10", "2026-11"] {
        let out = billing(&db, &["--month", month, "--verify", "--format", "json"]);
        assert_eq!(out.status.code(), Some(0), "{month}: {}", stderr(&out));
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(j["verification"]["raw_rows_compared"].as_u64().unwrap() > 0, "{month}: some days recounted from raw");
        assert!(j["verification"]["hosts_compared"].as_u64().unwrap() >= 10);
    }

    // A second consumer group replays the whole topic: nothing changes.
    let replay = process_config(&db, &stack.kafka_bootstrap, &topic, "billing-replay");
    assert!(processor(&replay, Some(10)).wait().unwrap().success());
    assert_eq!(count(&db, "SELECT sum(requests) FROM usage_daily"), summary.records, "the replay stored nothing twice");
    for month in ["2026-10", "2026-11"] {
        let out = billing(&db, &["--month", month, "--format", "csv"]);
        assert_eq!(
            stdout(&out).replace("provisional", "x"),
            reports[month].replace("provisional", "x"),
            "{month} unchanged by the replay"
        );
    }

    // Delete one rollup row: --verify names customer, site, day, expected and found.
    let (c, s, day) = ("C0002", "S0003", "2026-11-02");
    let want = truth::read_usage(&truth_dir).unwrap()[&(c.to_owned(), s.to_owned(), day.to_owned())];
    exec(&db, &format!("ALTER TABLE usage_daily DELETE WHERE customer_id = '{c}' AND site_id = '{s}' AND day = '{day}' SETTINGS mutations_sync = 1"));
    let out = billing(&db, &["--month", "2026-11", "--verify", "--format", "csv"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    let line =
        format!("MISMATCH raw {c} {s} {day} requests: expected {} (access_log), found 0 (usage_daily)", want.requests);
    assert!(err.lines().any(|l| l == line), "wanted `{line}` in:\n{err}");
    assert!(
        err.contains(&format!(
            "MISMATCH raw {c} {s} {day} bytes_sent: expected {} (access_log), found 0",
            want.bytes_sent
        )),
        "{err}"
    );
    assert!(err.contains("MISMATCH progress host ") && err.contains("(source_progress)"), "{err}");
    let other = billing(&db, &["--month", "2026-10", "--verify", "--customer", "C0001"]);
    assert_eq!(other.status.code(), Some(0), "other customers still verify: {}", stdout(&other));
}
