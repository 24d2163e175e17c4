//! Issue 12, part 6: `source_progress` has a row for every file and host ever read and is
//! no longer loaded whole. With 100,000 sources' progress already stored, a processor run
//! reads just the streams its batches name: re-sent records of 50 of those sources (at or
//! below their stored offset) are dropped, their newer records stored, a new source stored
//! whole, a message delivered twice stored once. Expected counts are derived from the
//! construction below, not from the processor. The figures (whole load vs. per-batch lookup,
//! the processor's peak RSS) are printed for benches/README.md.

mod support;

use std::process::Command;
use std::time::Instant;

use sitelog_processor::store::sink::{load_progress, load_progress_of};

const HOST: &str = "kahvila.fi";
const SOURCES: u64 = 100_000;
/// Every stored source has records 0..=STORED_MAX (offsets k * 100).
const STORED_MAX: u64 = 50;

fn count(client: &clickhouse::Client, sql: &str) -> u64 {
    support::block_on(client.query(sql).fetch_one::<u64>()).unwrap()
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_hundred_thousand_sources_are_not_loaded_and_stay_exact() {
    let stack = support::stack();
    let topic = support::unique_name("progress100k");
    stack.create_topic(&topic, 2).unwrap();
    let db = support::unique_name("progress100k");
    let cfg = &support::processor_config(stack, &topic, "progress100k", &db, "");
    let ch = support::clickhouse_config(stack, &db).client().unwrap();

    // 100 K sources (fingerprints 1000..101000), each stored up to record STORED_MAX.
    support::block_on(
        ch.query(&format!(
            "INSERT INTO source_progress (fingerprint, site_host, max_offset, max_ts, records) \
             SELECT 1000 + number, '{HOST}', {}, now64(6), {} FROM numbers({SOURCES})",
            STORED_MAX * 100,
            STORED_MAX + 1
        ))
        .execute(),
    )
    .unwrap();
    assert_eq!(count(&ch, "SELECT count() FROM source_progress FINAL"), SOURCES);

    // What loading it whole cost (the processor did this on start and on every assignment).
    let rss0 = rss_kib();
    let t = Instant::now();
    let whole = support::block_on(load_progress(&ch)).unwrap();
    let whole_ms = t.elapsed().as_millis();
    let whole_kib = rss_kib().saturating_sub(rss0);
    assert_eq!(whole.len() as u64, SOURCES);
    drop(whole);

    // 50 of those sources re-send records 40..60 (40..=50 stored already), a new source 7
    // sends 20, and one message is delivered twice.
    let old: Vec<u64> = (0..50).map(|i| 1000 + i * 2000).collect();
    let mut messages: Vec<(String, Vec<u8>)> =
        old.iter().map(|&fp| (HOST.to_owned(), support::request_batch(HOST, fp, 40, 20))).collect();
    messages.push((HOST.to_owned(), support::request_batch(HOST, 7, 0, 20)));
    messages.push((HOST.to_owned(), support::request_batch(HOST, 7, 0, 20)));
    let keys: Vec<(u64, String)> = old.iter().chain([&7]).map(|&fp| (fp, HOST.to_owned())).collect();
    let t = Instant::now();
    let some = support::block_on(load_progress_of(&ch, &keys)).unwrap();
    let lookup_ms = t.elapsed().as_millis();
    assert_eq!(some.len(), 50, "the stored sources found, the new one absent");
    assert!(some.values().all(|p| p.max_offset == STORED_MAX * 100));

    support::block_on(support::produce(&stack.kafka_bootstrap, &topic, &messages));
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "maxrss_kib=%M"])
        .arg(env!("CARGO_BIN_EXE_sitelog"))
        .args(["process", "-c", cfg, "--exit-when-idle", "3"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "process exits 0: {err}");
    let new_per_old = 60 - (STORED_MAX + 1); // records 51..59
    let expected = old.len() as u64 * new_per_old + 20;
    assert_eq!(count(&ch, "SELECT count() FROM access_log"), expected, "{err}");
    assert_eq!(
        count(&ch, "SELECT count() FROM (SELECT DISTINCT source_fingerprint, source_offset FROM access_log)"),
        expected,
        "…once"
    );
    assert_eq!(
        count(&ch, &format!("SELECT countIf(source_offset <= {}) FROM access_log", STORED_MAX * 100)),
        20,
        "no re-sent record of a stored source (only the new source's own)"
    );
    let rss = err.lines().find_map(|l| l.strip_prefix("maxrss_kib=")).unwrap_or("?");
    eprintln!(
        "FIGURES sources={SOURCES} whole_load_ms={whole_ms} whole_load_rss_kib={whole_kib} \
         lookup_{}_keys_ms={lookup_ms} process_wall_ms={} process_maxrss_kib={rss}",
        keys.len(),
        started.elapsed().as_millis()
    );
}
