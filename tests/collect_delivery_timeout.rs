//! Issue 12 part 3: a broker outage longer than `[kafka] message_timeout_ms` (tansu stopped,
//! restarted on the same port with its data). The collector gives up on its producer session
//! several times while the broker is away and re-sends from its checkpoints; read through the
//! processor's re-send filter (a record at or below the highest offset of its (fingerprint,
//! host) is dropped), the topics must hold every written line exactly once: no session may
//! have written a later line of a file and host without the earlier ones.
//! `SITELOG_OUTAGE_SECS` sets the outage (default 8 s, the timeout is 2 s).

mod collect_common;
mod support;

use std::time::{Duration, Instant};

use collect_common::{check, config_with, read_accepted, CollectorProc, LogWriter};

const TIMEOUT_MS: u64 = 2000;

#[test]
fn outage_longer_than_the_delivery_timeout_leaves_no_gap() {
    let outage =
        Duration::from_secs(std::env::var("SITELOG_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(8));
    assert!(outage > Duration::from_millis(2 * TIMEOUT_MS));
    let mut stack = support::own_stack("collect-timeout");
    let access = support::unique_name("collect");
    let rejects = support::unique_name("rejects");
    stack.create_topic(&access, 4).expect("topic");
    stack.create_topic(&rejects, 1).expect("topic");
    let dir = support::temp_dir("timeout");
    let cfg =
        config_with(&dir, &stack.kafka_bootstrap, &access, &rejects, &format!("message_timeout_ms = {TIMEOUT_MS}"), "");
    let mut w = LogWriter::new(&dir.join("logs"));
    let col = CollectorProc::spawn(&cfg, &[]);
    let sites = ["one.example", "two.example", "three.example"];
    let mut n = 0u64;
    let mut write_for = |w: &mut LogWriter, d: Duration| {
        let start = Instant::now();
        while start.elapsed() < d {
            for s in sites {
                w.append(s, n.is_multiple_of(7));
            }
            n += 1;
            if n.is_multiple_of(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    write_for(&mut w, Duration::from_secs(2));
    stack.stop_kafka();
    write_for(&mut w, outage / 2);
    w.rename_create(sites[1], 3);
    write_for(&mut w, outage / 2);
    stack.start_kafka().expect("restarting kafka");
    let restarted = Instant::now();
    write_for(&mut w, Duration::from_secs(2));
    let expected = w.expected();
    let mut dropped = 0u64;
    let got = read_accepted(
        &stack.kafka_bootstrap,
        &access,
        &rejects,
        Duration::from_secs(120),
        |e| expected.keys().all(|k| e.contains_key(k)),
        &mut dropped,
    );
    let caught_up = restarted.elapsed();
    let log_path = col.log.clone();
    let status = col.terminate(Duration::from_secs(40));
    assert!(status.success(), "collector exit {status:?}; logs in {}", dir.display());
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline_restarts = log.matches("message_timeout_ms; starting a new producer session").count();
    // Exactly once after the filter: every line, each accepted once, none lost behind a gap.
    check(&expected, &got, false).unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));
    assert!(deadline_restarts >= 1, "the outage must outlast the delivery timeout; log in {}", dir.display());
    eprintln!(
        "outage {outage:?}, message_timeout_ms {TIMEOUT_MS}: {} lines accepted once, {dropped} re-sent records dropped \
         by the filter, {deadline_restarts} session restarts on the deadline, caught up {caught_up:?} after restart",
        expected.len()
    );
}
