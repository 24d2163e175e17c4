//! Issue 12, part 5: intents and dedup tokens name the topic by its name *and its id*. A topic
//! deleted and created again within the dedup window starts its offsets at 0 again, so its
//! batches sit at the same (partition, start, end) as the old topic's: keyed by name only, the
//! new records' inserts carried the old tokens and ClickHouse dropped them as repeats (this
//! test stored 0 of the second 120 records before the fix). With the topic id in the key,
//! every new record is stored once, and a restart stores nothing again.

mod support;

use std::process::Command;

const HOST: &str = "kahvila.fi";

// Deleting a topic happens on a stack of its own: while tansu 0.6.0 deletes a topic, other
// clients of the same broker saw `UnknownTopicOrPartition` producing to a topic just created,
// and a processor consuming another topic died with SIGSEGV in 3 of 6 parallel runs (never
// alone). The core: librdkafka's main thread serving a metadata-update op
// (`rd_kafka_metadata_update_op` → `rd_kafka_metadata_cache_find` → `strcmp` on a null topic
// name), i.e. a metadata hint for a topic librdkafka cannot name (the deleted one), not the
// processor's `DescribeTopics` call. Deleting topics under running clients is rare in
// production (README: "Which topic: its name and its id").

/// `n` records of source `fingerprint` from record `first` on (one message).
fn batch(fingerprint: u64, first: u64, n: u64) -> Vec<u8> {
    support::request_batch(HOST, fingerprint, first, n)
}

fn count(client: &clickhouse::Client, sql: &str) -> u64 {
    support::block_on(client.query(sql).fetch_one::<u64>()).unwrap()
}

#[test]
fn a_recreated_topic_never_meets_the_old_topics_tokens() {
    let own = support::own_stack("recreated");
    let stack = &own;
    let topic = support::unique_name("recreated");
    stack.create_topic(&topic, 1).unwrap();
    let db = support::unique_name("recreated");
    let dir = support::temp_dir("recreated");
    let config = dir.join("processor.toml");
    let write_config = |group: &str| {
        std::fs::write(
            &config,
            format!(
                "[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup_id = \"{group}\"\n\n[clickhouse]\nurl = \"{}\"\n\
                 database = \"{db}\"\ncompression = false\n\n[sink]\nlinger_ms = 300\nbatch_max_records = 40\n\
                 max_poll_interval_ms = 10000\n",
                stack.kafka_bootstrap, stack.clickhouse_url
            ),
        )
        .unwrap();
    };
    write_config("recreated-1");
    let cfg = config.to_str().unwrap();
    support::sitelog(&["schema", "migrate", "-c", cfg], &[]);
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_sitelog"))
            .args(["process", "-c", cfg, "--exit-when-idle", "3"])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "process exits 0: {err}");
        err
    };
    // The old topic: 3 messages of 40 records of source 77 (offsets 0, 1, 2: batches 0-0, 1-1, 2-2).
    let messages =
        |fp: u64| -> Vec<(String, Vec<u8>)> { (0..3).map(|i| (HOST.to_owned(), batch(fp, i * 40, 40))).collect() };
    support::block_on(support::produce(&stack.kafka_bootstrap, &topic, &messages(77)));
    run();
    let ch = support::clickhouse_config(stack, &db).client().unwrap();
    assert_eq!(count(&ch, "SELECT count() FROM access_log"), 120);

    // Deleted and created again under the same name; another source's records at the same
    // Kafka offsets. Another consumer group: what happens to a deleted topic's committed
    // offsets is the broker's business (Apache Kafka removes them); this test is about tokens.
    stack.delete_topic(&topic).unwrap();
    stack.create_topic(&topic, 1).unwrap();
    support::block_on(support::produce(&stack.kafka_bootstrap, &topic, &messages(78)));
    write_config("recreated-2");
    let err = run();
    assert_eq!(
        count(&ch, "SELECT count() FROM access_log WHERE source_fingerprint = 78"),
        120,
        "every record of the recreated topic stored: {err}"
    );
    assert_eq!(count(&ch, "SELECT count() FROM access_log"), 240);
    assert_eq!(
        count(&ch, "SELECT count() FROM (SELECT DISTINCT source_fingerprint, source_offset FROM access_log)"),
        240,
        "…once"
    );
    let keys = count(&ch, &format!("SELECT uniqExact(topic) FROM sink_intents WHERE topic LIKE '{topic}@%' AND NOT endsWith(topic, '#partitions')"));
    assert_eq!(keys, 2, "the intents of the two topics carry two ids");

    // A restart stores nothing again.
    run();
    assert_eq!(count(&ch, "SELECT count() FROM access_log"), 240);
}

/// A processor started after the partition count changed (tansu 0.6.0 has no
/// `CreatePartitions`, so the change is simulated: the count the processors recorded is set
/// to 1 on a 2-partition topic) refuses to run while the group lags, naming both counts, and
/// stores nothing; with the group caught up it accepts the new count and runs on exactly.
#[test]
fn a_changed_partition_count_is_accepted_only_when_caught_up() {
    let stack = support::stack();
    let topic = support::unique_name("repartitioned");
    stack.create_topic(&topic, 2).unwrap();
    let db = support::unique_name("repartitioned");
    let cfg = &support::processor_config(stack, &topic, "repartitioned", &db, "");
    let ch = support::clickhouse_config(stack, &db).client().unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_sitelog"))
            .args(["process", "-c", cfg, "--exit-when-idle", "3"])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let hosts = ["a.fi", "b.fi", "c.fi", "d.fi"];
    let send = |fp: u64| {
        let msgs: Vec<(String, Vec<u8>)> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.to_string(), support::request_batch(h, fp + i as u64, 0, 25)))
            .collect();
        support::block_on(support::produce(&stack.kafka_bootstrap, &topic, &msgs));
    };
    // First run records the count (2).
    send(100);
    let out = run();
    assert!(out.status.success(), "{:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(&ch, "SELECT count() FROM access_log"), 100);
    let marker = format!("topic LIKE '{topic}@%#partitions'");
    assert_eq!(
        count(&ch, &format!("SELECT toUInt64(argMax(partition, written_at)) FROM sink_intents WHERE {marker}")),
        2
    );

    // The recorded count set by hand, as if the topic had had `n` partitions when last consumed.
    let key: String = support::block_on(
        ch.query(&format!("SELECT any(topic) FROM sink_intents WHERE {marker}")).fetch_one::<String>(),
    )
    .unwrap();
    let set_recorded = |n: i32| {
        support::block_on(ch.query(&format!("DELETE FROM sink_intents WHERE {marker}")).execute()).unwrap();
        support::block_on(
            ch.query("INSERT INTO sink_intents (topic, partition, start_offset, end_offset) VALUES (?, ?, -1, -1)")
                .bind(&key)
                .bind(n)
                .execute(),
        )
        .unwrap();
    };
    // Changed while records wait: refused, nothing stored.
    set_recorded(1);
    send(200);
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {err}");
    assert!(err.contains("changed from 1 to 2") && err.contains("the group lags 4 messages"), "{err}");
    assert_eq!(count(&ch, "SELECT count() FROM access_log"), 100, "nothing stored meanwhile");

    // Drained under the recorded count (as the procedure says), then changed: accepted.
    set_recorded(2);
    assert!(run().status.success());
    assert_eq!(count(&ch, "SELECT count() FROM access_log"), 200);
    set_recorded(1);
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("accepted"), "accepted when caught up: {err}");
    assert_eq!(
        count(&ch, &format!("SELECT toUInt64(argMax(partition, written_at)) FROM sink_intents WHERE {marker}")),
        2
    );
    send(300);
    assert!(run().status.success());
    assert_eq!(count(&ch, "SELECT count() FROM access_log"), 300);
    assert_eq!(
        count(&ch, "SELECT count() FROM (SELECT DISTINCT source_fingerprint, source_offset FROM access_log)"),
        300,
        "…each once"
    );
}

/// An upgrade while a batch was in flight: the older sitelog wrote the batch's intent and rows
/// under the bare topic name (`topic/0/0-1`) and was stopped before its progress and commit.
/// The new processor finds that intent, cuts the same range and retries under the old token,
/// so the batch is a repeat. (Under the new `name@id` token it would be stored a second time:
/// no progress was recorded to drop its records.)
#[test]
fn a_batch_planned_before_topic_ids_is_retried_under_its_old_token() {
    let stack = support::stack();
    let topic = support::unique_name("upgraded");
    stack.create_topic(&topic, 1).unwrap();
    let db = support::unique_name("upgraded");
    let cfg = &support::processor_config(stack, &topic, "upgraded", &db, "");
    let ch = support::clickhouse_config(stack, &db).client().unwrap();

    // Offsets 0 and 1: 40 records each of source 91 (record k at byte offset k * 100); offset 2
    // comes after the old batch.
    let msgs: Vec<(String, Vec<u8>)> = (0..3).map(|i| (HOST.to_owned(), batch(91, i * 40, 40))).collect();
    support::block_on(support::produce(&stack.kafka_bootstrap, &topic, &msgs));
    // What the older sitelog left: the intent under the bare name and the batch's 80 rows under
    // its token (ClickHouse's dedup looks at the token, not at the rows' content).
    support::block_on(
        ch.query("INSERT INTO sink_intents (topic, partition, start_offset, end_offset) VALUES (?, 0, 0, 1)")
            .bind(&topic)
            .execute(),
    )
    .unwrap();
    support::block_on(
        ch.query(
            "INSERT INTO access_log (ts, site_host, customer_id, client_ip, client_net, status, bytes_sent, \
             source_fingerprint, source_offset) SELECT now64(6) - 3600 + number, ?, '', toIPv6('192.0.2.1'), \
             toIPv6('192.0.2.0'), 200, 100, 91, number * 100 FROM numbers(80)",
        )
        .bind(HOST)
        .with_setting("insert_deduplicate", "1")
        .with_setting("insert_deduplication_token", format!("{topic}/0/0-1"))
        .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1")
        .execute(),
    )
    .unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["process", "-c", cfg, "--exit-when-idle", "3"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(&ch, "SELECT count() FROM access_log"), 120, "the old batch once, offset 2 stored");
    assert_eq!(
        count(&ch, "SELECT count() FROM (SELECT DISTINCT source_fingerprint, source_offset FROM access_log)"),
        120
    );
    assert_eq!(count(&ch, "SELECT sum(requests) FROM usage_daily"), 120);
}
