//! The broker goes away mid-run (tansu stopped, restarted on the same port with its data):
//! the collector loses nothing, its memory stays bounded while it waits, and it catches up.
//! `SITELOG_OUTAGE_SECS` sets the outage (default 10 s; the figure is 30 s).

mod collect_common;
mod support;

use std::time::{Duration, Instant};

use collect_common::{check, config, read_topics, CollectorProc, LogWriter};

#[test]
fn broker_outage_loses_nothing_and_memory_stays_bounded() {
    let outage =
        Duration::from_secs(std::env::var("SITELOG_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10));
    let mut stack = support::own_stack("collect-outage");
    let access = support::unique_name("collect");
    let rejects = support::unique_name("rejects");
    stack.create_topic(&access, 4).expect("topic");
    stack.create_topic(&rejects, 1).expect("topic");
    let dir = support::temp_dir("outage");
    let cfg = config(&dir, &stack.kafka_bootstrap, &access, &rejects, "");
    let mut w = LogWriter::new(&dir.join("logs"));
    let col = CollectorProc::spawn(&cfg, &[]);
    let sites = ["one.example", "two.example", "three.example"];
    let mut n = 0u64;
    let mut write_for = |w: &mut LogWriter, d: Duration, mut sample: Option<&mut dyn FnMut()>| {
        let start = Instant::now();
        while start.elapsed() < d {
            for s in sites {
                w.append(s, n.is_multiple_of(9));
            }
            n += 1;
            if n.is_multiple_of(10) {
                std::thread::sleep(Duration::from_millis(20));
                if let Some(f) = sample.as_mut() {
                    f();
                }
            }
        }
    };
    write_for(&mut w, Duration::from_secs(2), None);
    stack.stop_kafka();
    let mut max_rss = 0u64;
    let mut sample = || max_rss = max_rss.max(col.rss_kib().unwrap_or(0));
    write_for(&mut w, outage / 2, Some(&mut sample));
    w.rename_create(sites[0], 3); // a rotation during the outage, too
    write_for(&mut w, outage / 2, Some(&mut sample));
    let lines_during = w.line_count();
    stack.start_kafka().expect("restarting kafka");
    let restarted = Instant::now();
    write_for(&mut w, Duration::from_secs(2), None);
    let expected = w.expected();
    let got = read_topics(&stack.kafka_bootstrap, &access, &rejects, Duration::from_secs(120), |e| {
        expected.keys().all(|k| e.contains_key(k))
    });
    let caught_up = restarted.elapsed();
    let status = col.terminate(Duration::from_secs(40));
    assert!(status.success(), "collector exit {status:?}; logs in {}", dir.display());
    check(&expected, &got, true).unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));
    // 4 MiB in-flight limit: the collector must not buffer the outage in memory.
    assert!(max_rss < 96 * 1024, "RSS {max_rss} KiB during the outage");
    let dups: usize = got.values().map(|v| v.len() - 1).sum();
    eprintln!(
        "outage {outage:?}: {} lines ({lines_during} written before the broker returned), max RSS {} MiB, caught up {caught_up:?} after restart, {dups} duplicates",
        expected.len(),
        max_rss / 1024
    );
}
