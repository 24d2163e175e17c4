//! Poison messages on the access topic never stop the pipeline and never vanish: each kind of
//! invalid message (the review's 63-byte header claiming 4 billion records, plain garbage, an
//! unknown version, a truncated batch, a batch whose count does not add up, invalid UTF-8)
//! is put before, between and after real batches of the same partition. `sitelog process
//! --exit-when-idle` must store every real record once and exit 0, a restart must not crash
//! or store anything again, and the dead-letter topic (read back with `sitelog deadletter
//! list`) must hold exactly the bad messages, with their positions and reasons.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

const HOST: &str = "kahvila.fi";

/// Records `first..first + n` of one source (fingerprint 77) for HOST.
fn batch(first: u64, n: u64) -> Vec<u8> {
    support::request_batch(HOST, 77, first, n)
}

/// The poison kinds: (name, expected reason kind, bytes).
fn poisons() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut huge = Vec::new();
    huge.extend_from_slice(b"SLW\x01");
    huge.extend_from_slice(&7u64.to_le_bytes());
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(&[0u8; 16]);
    huge.push(10);
    huge.extend_from_slice(b"example.fi");
    huge.extend_from_slice(&[0u8; 20]);
    assert_eq!(huge.len(), 63);

    let mut version = batch(9000, 3);
    version[3] = 9;
    let whole = batch(9100, 5);
    let truncated = whole[..whole.len() - 7].to_vec();
    let mut trailing = batch(9200, 2);
    trailing.extend_from_slice(&batch(9300, 1)); // two batches glued: the count does not add up
    let mut utf8 = batch(9400, 1);
    let at = utf8.windows(5).position(|w| w == b"/sivu").unwrap();
    utf8[at + 1] = 0xff;
    vec![
        ("huge count", "truncated", huge),
        ("garbage", "bad_magic", b"GET / HTTP/1.1 this is not a batch".to_vec()),
        ("unknown version", "unsupported_version", version),
        ("truncated", "truncated", truncated),
        ("trailing bytes", "trailing_bytes", trailing),
        ("invalid utf-8", "invalid_field", utf8),
        ("empty", "bad_magic", Vec::new()),
    ]
}

fn count(client: &clickhouse::Client, sql: &str) -> u64 {
    support::block_on(client.query(sql).fetch_one::<u64>()).unwrap()
}

#[test]
fn poison_messages_are_quarantined_and_real_records_stored_once() {
    let stack = support::stack();
    let topic = support::unique_name("poison");
    let deadletter = support::unique_name("poison-dlq");
    stack.create_topic(&topic, 2).unwrap();
    stack.create_topic(&deadletter, 1).unwrap();
    let db = support::unique_name("poison");
    let dir = support::temp_dir("poison");
    let cfg = &support::processor_config(
        stack,
        &topic,
        "poison",
        &db,
        &format!("deadletter_topic = \"{deadletter}\"\ndeadletter_max_bytes = 1024"),
    );

    // One key (one partition): poison first, between every real batch, and last; plus one
    // larger than the dead-letter cap.
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    let mut expected_bad = Vec::new();
    let mut real = 0u64;
    let big = vec![0x42u8; 5000];
    let mut bad = poisons();
    bad.push(("oversized garbage", "bad_magic", big.clone()));
    for (i, (name, kind, bytes)) in bad.into_iter().enumerate() {
        expected_bad.push((messages.len() as i64, name, kind, bytes.len() as u64));
        messages.push((HOST.to_owned(), bytes));
        if i < 6 {
            messages.push((HOST.to_owned(), batch(i as u64 * 1000, 40)));
            real += 40;
        }
    }
    support::block_on(support::produce(&stack.kafka_bootstrap, &topic, &messages));

    let run = || {
        Command::new(env!("CARGO_BIN_EXE_sitelog"))
            .args(["process", "-c", cfg, "--exit-when-idle", "3"])
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    };
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "process exits 0 past poison messages: {err}");
    assert!(err.contains(&format!("{} stored", real)) && err.contains("8 quarantined messages"), "{err}");

    let ch = support::clickhouse_config(stack, &db).client().unwrap();
    assert_eq!(count(&ch, "SELECT count() FROM access_log"), real, "every real record stored");
    assert_eq!(
        count(&ch, "SELECT count() FROM (SELECT DISTINCT source_fingerprint, source_offset FROM access_log)"),
        real,
        "…once"
    );

    // A restart: no crash, nothing new stored, nothing quarantined again (offsets committed).
    let out = run();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(&ch, "SELECT count() FROM access_log"), real);

    // The dead-letter topic holds exactly the bad ones, with position, reason and capped bytes.
    let list = support::sitelog(&["deadletter", "list", "-c", cfg, "--format", "json"], &[]);
    let entries: Vec<serde_json::Value> = list.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries.len(), expected_bad.len(), "{list}");
    let partition = entries[0]["partition"].as_i64().unwrap();
    for (e, (offset, name, kind, size)) in entries.iter().zip(&expected_bad) {
        assert_eq!(e["topic"], topic.as_str(), "{name}");
        assert_eq!((e["partition"].as_i64(), e["offset"].as_i64()), (Some(partition), Some(*offset)), "{name}");
        assert_eq!(e["kind"], *kind, "{name}: {e}");
        assert_eq!(e["original_bytes"], *size, "{name}");
        assert_eq!(e["key"], HOST, "{name}");
        assert!(!e["reason"].as_str().unwrap().is_empty());
    }
    let raw = dir.join("big.bin");
    let pos = format!("{partition}/{}", expected_bad.last().unwrap().0);
    let shown = support::sitelog(&["deadletter", "show", "-c", cfg, &pos, "--raw", raw.to_str().unwrap()], &[]);
    assert!(shown.contains("bytes:           5000 (kept 1024)"), "{shown}");
    assert_eq!(std::fs::read(&raw).unwrap(), big[..1024].to_vec());
    let shown = support::sitelog(&["deadletter", "show", "-c", cfg, &format!("{topic}/{partition}/0")], &[]);
    assert!(shown.contains("reason:          truncated") && shown.contains("00000000  53 4c 57 01"), "{shown}");
    let kinds: BTreeSet<&str> = entries.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");
}
