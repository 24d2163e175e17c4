//! The billing run on the generated data set, end to end through the real stack: the
//! generator's log files are parsed with the collector's log formats, sent to tansu as wire
//! batches and stored by `sitelog process` (killed with SIGKILL mid-stream, restarted, ClickHouse stopped and restarted under it, and the
//! whole topic replayed by a second consumer group). Then `sitelog report billing` must equal
//! the generator's independently counted ground truth for every customer, site and month —
//! a finished month with a domain that moved between customers two days before its end, and
//! the following month, not over yet — and `--verify` must pass, then fail with a precise line
//! once the test deletes one rollup row.
//!
//! Dates come from the clock (`SITELOG_NOW` or the system clock), never from the calendar the
//! test was written in: the sample's 28 days cross the latest month boundary that has 12 days
//! after it before today, and the reports run with the clock set to the day after the sample
//! ("the second month is not over").

mod billing_common;
mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use billing_common::*;
use chrono::{Datelike, Days, NaiveDate, TimeZone};
use sitelog::sample::{self, truth, GenerateOptions};
use sitelog_ingest::format::LogFormat;
use sitelog_schema::migrations::Retention;
use sitelog_schema::register::RegisterExport;
use sitelog_schema::wire::BatchWriter;
use sitelog_schema::{AccessRecord, SourceId};

const PER_MESSAGE: usize = 400;

/// Kafka messages: (key, payload).
type Messages = Vec<(String, Vec<u8>)>;

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
/// sample's collector.toml names. Returns the messages, the malformed line count and the
/// newest request time per web server (`logs/<server>/…`), counted from the lines.
fn wire_batches(sample: &Path) -> (Messages, u64, BTreeMap<String, i64>) {
    let web1 = LogFormat::resolve(sample::WEB1_LOG_FORMAT).unwrap();
    let combined = LogFormat::resolve("combined").unwrap();
    let vhost = LogFormat::resolve("vhost_combined").unwrap();
    let mut messages = Vec::new();
    let mut malformed = 0;
    let mut newest: BTreeMap<String, i64> = BTreeMap::new();
    for path in files(&sample.join("logs")) {
        let rel = path.strip_prefix(sample).unwrap().to_string_lossy().into_owned();
        let server = rel.split('/').nth(1).unwrap().to_owned();
        let fingerprint =
            rel.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        let (fmt, path_host) = if rel.starts_with("logs/web1/") || rel.starts_with("logs/web4/") {
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
                    let n = newest.entry(server.clone()).or_insert(i64::MIN);
                    *n = (*n).max(rec.ts_micros);
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
    (messages, malformed, newest)
}

/// What each sample server's collector would say once it had read everything: source
/// "access" delivered through its newest request, idle a minute after the newest request of
/// the whole sample.
fn heartbeats(newest: &BTreeMap<String, i64>) -> Vec<(String, Vec<u8>)> {
    let sent_at = newest.values().max().unwrap() + 60_000_000;
    newest
        .iter()
        .map(|(server, &through)| {
            let h = sitelog_schema::heartbeat::Heartbeat {
                version: 1,
                server: server.clone(),
                source: "access".into(),
                sent_at_us: sent_at,
                delivered_through_us: through,
                position: 0,
                idle: true,
                files: 1,
            };
            (h.key(), serde_json::to_vec(&h).unwrap())
        })
        .collect()
}

fn process_config(db: &Db, bootstrap: &str, topic: &str, group: &str) -> PathBuf {
    let base = std::fs::read_to_string(&db.config).unwrap();
    let text = base.replacen(
        "[kafka]\n",
        &format!("[kafka]\ntopic = \"{topic}\"\nheartbeat_topic = \"{topic}.heartbeats\"\ngroup_id = \"{group}\"\n"),
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

/// The first day of the latest month that has 12 full days before `today` (Helsinki).
fn month_boundary(today: NaiveDate) -> NaiveDate {
    let this = today.with_day(1).unwrap();
    if today - Days::new(12) > this {
        this
    } else {
        (this - Days::new(1)).with_day(1).unwrap()
    }
}

/// Hours of a Helsinki month, from chrono-tz (independent of the billing code).
fn month_hours(first: NaiveDate) -> i64 {
    let next = (first + Days::new(32)).with_day(1).unwrap();
    let midnight = |d: NaiveDate| {
        chrono_tz::Europe::Helsinki.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap()).single().unwrap()
    };
    (midnight(next) - midnight(first)).num_hours()
}

#[test]
fn boundary_leaves_twelve_days_after_it() {
    let d = |s: &str| s.parse::<NaiveDate>().unwrap();
    assert_eq!(month_boundary(d("2026-12-01")), d("2026-11-01"));
    assert_eq!(month_boundary(d("2026-12-13")), d("2026-11-01"));
    assert_eq!(month_boundary(d("2026-12-14")), d("2026-12-01"));
    assert_eq!(
        (month_hours(d("2026-10-01")), month_hours(d("2026-03-01")), month_hours(d("2028-02-01"))),
        (745, 743, 696)
    );
}

#[test]
fn billing_equals_ground_truth_through_faults_and_verify_finds_a_deleted_rollup() {
    // A stack of its own: this test stops and restarts ClickHouse.
    let mut stack = support::own_stack("billsample-stack");
    let dir = support::temp_dir("billsample");
    // 28 days: 16 before the boundary, 12 after; the domain moves two days before it.
    let boundary = month_boundary(sitelog::clock::today_helsinki().unwrap());
    let opts = GenerateOptions {
        out: dir.clone(),
        customers: 6,
        rate: 20,
        start: boundary - Days::new(16),
        ..GenerateOptions::default()
    };
    let summary = sample::generate(&opts).unwrap();
    let (first, second) = (summary.months[0].clone(), summary.months[1].clone());
    assert_eq!(summary.months.len(), 2);
    assert_eq!(
        (summary.moved_domain.is_empty(), summary.moved_on.clone()),
        (false, (boundary - Days::new(2)).to_string())
    );
    // The reports' clock: noon of the day after the sample, inside the second month.
    let report_now = format!("{}T10:00:00Z", opts.end() + Days::new(1));
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
    // Raw records kept 90 days, so that `--verify` recounts every day of the sample from raw
    // records whatever day of the month the test runs on (the oldest is at most 59 days old).
    let retention = Retention { raw_days: 90, ..Retention::default() };
    let mut db = db_with_retention(&stack, "billsample", &retention);
    db.now = Some(report_now.clone());
    support::block_on(sitelog_processor::register::import(&db.client, &export, "test", "register.json", "-")).unwrap();

    let (messages, malformed, newest) = wire_batches(&dir);
    assert_eq!(malformed, summary.malformed, "every line is a record or one of the generator's malformed lines");
    let topic = support::unique_name("billsample");
    stack.create_topic(&topic, 4).unwrap();
    support::block_on(support::produce(&stack.kafka_bootstrap, &topic, &messages));
    // Each server's collector reports that it delivered everything (completeness per
    // collector source: the sample's quiet hosts block nothing).
    let hb_topic = format!("{topic}.heartbeats");
    stack.create_topic(&hb_topic, 1).unwrap();
    support::block_on(support::produce(&stack.kafka_bootstrap, &hb_topic, &heartbeats(&newest)));

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
    let t = Instant::now();
    while count(&db, "SELECT count() FROM collector_heartbeats") < newest.len() as u64 {
        assert!(t.elapsed() < Duration::from_secs(60), "heartbeats not stored within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill(2) on our own child's pid; SIGTERM drains and exits 0.
    unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
    assert!(p.wait().unwrap().success());
    assert_eq!(count(&db, "SELECT sum(requests) FROM usage_daily"), summary.records, "every record stored once");

    let unknown = "vanha-kauppa.example.org";
    let unattributed = unattributed_by_month(&messages, unknown);
    assert_eq!(unattributed.values().sum::<u64>(), summary.unattributed_requests);
    let mut reports = BTreeMap::new();
    let (mut over, mut under) = (0, 0);
    for month in [&first, &second] {
        let out = billing(&db, &["--month", month, "--format", "csv"]);
        assert!(out.status.success(), "{month}: {}", stderr(&out));
        let csv = stdout(&out);
        let (o, u) = check_month(&csv, month, &truth, &export, unattributed.get(month).copied().unwrap_or(0));
        over += o;
        under += u;
        reports.insert(month.clone(), csv);
    }
    assert!(over > 0 && under > 0, "overage both charged and not: {over} over, {under} within");

    // The moved domain: billed to each customer for its own days of the first month.
    let rows = csv_rows(&reports[&first]);
    let moved: Vec<_> =
        rows.iter().filter(|r| r["line"] == "site" && (r["site_id"] == "S0004" || r["site_id"] == "S0009")).collect();
    assert_eq!(moved.len(), 2);
    assert!(moved.iter().all(|r| n(r, "requests") > 0), "both owners have usage in {first}");
    assert_ne!(moved[0]["customer_id"], moved[1]["customer_id"]);
    assert!(rows.iter().all(|r| r["status"] == "complete"), "{first}: every source delivered past its end");

    // JSON carries the same figures.
    let out = billing(&db, &["--month", &first, "--format", "json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first_day: NaiveDate = format!("{first}-01").parse().unwrap();
    assert_eq!((j["hours"].as_i64(), j["status"].as_str()), (Some(month_hours(first_day)), Some("complete")));
    let total: u64 = j["customers"].as_array().unwrap().iter().map(|c| c["total"]["requests"].as_u64().unwrap()).sum();
    let want: u64 = truth.iter().filter(|(k, _)| k.0 == first).map(|(_, v)| v[0]).sum();
    assert_eq!(total, want);

    // The second month is not over: provisional, and --strict refuses naming every collector
    // source (none has delivered past its end) and no site host.
    let csv = csv_rows(&reports[&second]);
    assert!(csv.iter().all(|r| r["status"] == "provisional"));
    let out = billing(&db, &["--month", &second, "--strict"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("refused: {second} is not complete")), "{err}");
    for server in newest.keys() {
        assert!(err.contains(&format!("lagging source: {server}/access delivered through")), "{server}: {err}");
    }
    assert!(!err.contains(unknown) && !err.contains(&summary.moved_domain), "quiet hosts are not sources: {err}");

    // --verify: raw records (days still in retention), source progress. Both months pass.
    for month in [&first, &second] {
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
    for month in [&first, &second] {
        let out = billing(&db, &["--month", month, "--format", "csv"]);
        assert_eq!(
            stdout(&out).replace("provisional", "x"),
            reports[month].replace("provisional", "x"),
            "{month} unchanged by the replay"
        );
    }

    // Delete one rollup row (the second month's first day of C0002's first site in the truth):
    // --verify names customer, site, day, expected and found.
    let usage = truth::read_usage(&truth_dir).unwrap();
    let ((c, s, day), want) = usage
        .iter()
        .find(|((c, _, day), u)| c == "C0002" && day.starts_with(&second) && u.requests > 0)
        .map(|(k, u)| (k.clone(), *u))
        .expect("C0002 has usage in the second month");
    let (c, s, day) = (c.as_str(), s.as_str(), day.as_str());
    exec(&db, &format!("ALTER TABLE usage_daily DELETE WHERE customer_id = '{c}' AND site_id = '{s}' AND day = '{day}' SETTINGS mutations_sync = 1"));
    let out = billing(&db, &["--month", &second, "--verify", "--format", "csv"]);
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
    let other = billing(&db, &["--month", &first, "--verify", "--customer", "C0001"]);
    assert_eq!(other.status.code(), Some(0), "other customers still verify: {}", stdout(&other));
}
