//! A failure that retrying cannot fix ends `sitelog process` with a clear message and a
//! non-zero exit (so systemd and ops see it) instead of retrying forever: here the
//! `access_log` table is missing when the first batch is inserted.

mod support;

use std::time::{Duration, Instant};

use sitelog_schema::wire::BatchWriter;
use sitelog_schema::{AccessRecord, SourceId};

#[test]
fn a_missing_table_ends_the_processor_with_the_cause() {
    let stack = support::stack();
    let topic = support::unique_name("permanent");
    stack.create_topic(&topic, 1).unwrap();
    let db = support::unique_name("permanent");
    let config = support::temp_dir("permanent").join("processor.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup_id = \"permanent\"\n\n[clickhouse]\nurl = \"{}\"\n\
             database = \"{db}\"\ncompression = false\n\n[sink]\nlinger_ms = 200\nmax_poll_interval_ms = 10000\n",
            stack.kafka_bootstrap, stack.clickhouse_url
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    support::sitelog(&["schema", "migrate", "-c", cfg], &[]);
    let ch = support::clickhouse_config(stack, &db).client().unwrap();
    support::block_on(ch.query("DROP TABLE access_log SYNC").execute()).unwrap();

    let rec = AccessRecord {
        ts_micros: chrono::Utc::now().timestamp_micros(),
        host: "kahvila.fi".into(),
        method: "GET".into(),
        path: "/".into(),
        status: 200,
        source: SourceId { fingerprint: 5, offset: 0 },
        ..Default::default()
    };
    let mut w = BatchWriter::new(5, "kahvila.fi", 0, rec.ts_micros);
    w.push(&rec);
    support::block_on(support::produce(&stack.kafka_bootstrap, &topic, &[("kahvila.fi".into(), w.finish())]));

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
