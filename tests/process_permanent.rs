//! A failure that retrying cannot fix ends `sitelog process` with a clear message and a
//! non-zero exit (so systemd and ops see it) instead of retrying forever: here the
//! `access_log` table is missing when the first batch is inserted. A failure that retrying
//! can fix is waited for: here ClickHouse is down when the processor starts.

mod support;

use std::time::{Duration, Instant};

#[test]
fn a_missing_table_ends_the_processor_with_the_cause() {
    let stack = support::stack();
    let topic = support::unique_name("permanent");
    stack.create_topic(&topic, 1).unwrap();
    let db = support::unique_name("permanent");
    let cfg = &support::processor_config(stack, &topic, "permanent", &db, "");
    let ch = support::clickhouse_config(stack, &db).client().unwrap();
    support::block_on(ch.query("DROP TABLE access_log SYNC").execute()).unwrap();

    let batch = support::request_batch("kahvila.fi", 5, 0, 1);
    support::block_on(support::produce(&stack.kafka_bootstrap, &topic, &[("kahvila.fi".into(), batch)]));

    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["process", "-c", cfg])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a missing table is not retried forever: {err}");
    assert!(started.elapsed() < Duration::from_secs(90), "it gave up within seconds of the first failure");
    assert!(err.contains("access_log") && err.contains("UNKNOWN_TABLE"), "the message names the cause: {err}");
}

#[test]
fn clickhouse_down_at_start_is_waited_for() {
    let mut stack = support::own_stack("down-at-start");
    let topic = support::unique_name("downstart");
    stack.create_topic(&topic, 1).unwrap();
    let db = support::unique_name("downstart");
    let cfg = support::processor_config(&stack, &topic, "downstart", &db, "");
    let batch = support::request_batch("kahvila.fi", 6, 0, 25);
    support::block_on(support::produce(&stack.kafka_bootstrap, &topic, &[("kahvila.fi".into(), batch)]));

    stack.stop_clickhouse();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["process", "-c", &cfg, "--exit-when-idle", "2"])
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    stack.start_clickhouse().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the start waited for ClickHouse: {err}");
    assert!(err.contains("waiting for ClickHouse"), "the wait is logged: {err}");
    let ch = support::clickhouse_config(&stack, &db).client().unwrap();
    let stored: u64 = support::block_on(ch.query("SELECT count() FROM access_log").fetch_one()).unwrap();
    assert_eq!(stored, 25, "every record of the topic stored once");
}
