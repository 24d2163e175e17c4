//! Foundation: the real local stack works end to end, migrations behave, errors are clear.

mod support;

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sitelog_processor::store::migrate::{migrate, MigrateError};
use sitelog_processor::store::rows::AccessLogRow;
use sitelog_schema::migrations::{Retention, MIGRATIONS};
use sitelog_schema::wire::{BatchReader, BatchWriter};
use sitelog_schema::{AccessRecord, SourceId};

fn record(i: u64) -> AccessRecord<'static> {
    AccessRecord {
        ts_micros: 1_792_000_000_000_000 + i as i64 * 1_000,
        tz_offset_secs: 10800,
        host: "kahvila.example.fi".into(),
        client_ip: Some(if i.is_multiple_of(2) {
            "203.0.113.9".parse().unwrap()
        } else {
            "2001:db8::9".parse().unwrap()
        }),
        method: "GET".into(),
        path: format!("/page/{i}").into(),
        protocol: "HTTP/2.0".into(),
        status: 200,
        bytes_sent: 1000 + i,
        user_agent: "Mozilla/5.0".into(),
        request_time_us: Some(i * 10),
        source: SourceId { fingerprint: 77, offset: i * 100 },
        ..Default::default()
    }
}

#[test]
fn kafka_round_trip_through_tansu() {
    let stack = support::stack();
    let topic = support::unique_name("rt");
    stack.create_topic(&topic, 2).unwrap();
    let sent: Vec<AccessRecord<'static>> = (0..2_000).map(record).collect();
    support::block_on(async {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &stack.kafka_bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .create()
            .unwrap();
        for chunk in sent.chunks(500) {
            let mut w = BatchWriter::new(77, "kahvila.example.fi", chunk[0].source.offset, chunk[0].ts_micros);
            chunk.iter().for_each(|r| w.push(r));
            let payload = w.finish();
            producer
                .send(FutureRecord::to(&topic).key("kahvila.example.fi").payload(&payload), Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &stack.kafka_bootstrap)
            .set("group.id", support::unique_name("g"))
            .set("auto.offset.reset", "earliest")
            .set("max.poll.interval.ms", "10000")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
                .await
                .expect("records within 60 s")
                .unwrap();
            for r in BatchReader::new(m.payload().unwrap()).unwrap() {
                got.push(r.unwrap().into_owned());
            }
        }
        got.sort_by_key(|r| r.source.offset);
        assert_eq!(got, sent);
    });
}

/// Rows from an hour ago: older ones would be past the raw retention TTL and dropped on insert.
fn row(i: u64) -> AccessLogRow {
    let hour_ago = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64)
        - 3_600_000_000;
    AccessLogRow {
        ts: hour_ago + i as i64,
        tz_offset_secs: 7200,
        site_host: "kahvila.example.fi".into(),
        customer_id: "C0001".into(),
        site_id: "S0001".into(),
        client_ip: "2001:db8::1".parse().unwrap(),
        client_net: "2001:db8::".parse().unwrap(),
        remote_user: String::new(),
        method: "POST".into(),
        path: "/wp-login.php".into(),
        query: "a=ä&b=\"x\"".into(),
        protocol: "HTTP/1.1".into(),
        status: 200,
        bytes_sent: u64::MAX - i,
        referer: "-".into(),
        user_agent: "Mozilla/5.0 (\"quoted\")".into(),
        request_time_us: if i.is_multiple_of(2) { Some(1234) } else { None },
        upstream_time_us: None,
        upstream_count: 0,
        cache_status: "MISS".into(),
        request_class: "wp-login".into(),
        is_bot: i.is_multiple_of(3),
        bot_name: String::new(),
        flags: 0,
        source_fingerprint: 5,
        source_offset: i,
        visitor_ip_key: 0x5eed_0000 + i,
        visitor_ip_ua_key: 0x5eed_1000 + i,
        server: format!("web-{:02}", i % 3),
        upstream_status: if i.is_multiple_of(5) { 502 } else { 0 },
    }
}

#[test]
fn clickhouse_round_trip_and_idempotent_migrations() {
    let stack = support::stack();
    let db = support::unique_name("rt");
    let cfg = support::clickhouse_config(stack, &db);
    support::block_on(async {
        let server = cfg.server_client().unwrap();
        let first = migrate(&server, &db, &Retention::default()).await.unwrap();
        assert_eq!(first.applied.len(), MIGRATIONS.len());
        let second = migrate(&server, &db, &Retention::default()).await.unwrap();
        assert!(second.applied.is_empty(), "a second run does nothing");
        assert!(first.retention_changes.is_empty() && second.retention_changes.is_empty(), "TTLs as configured");

        let client = cfg.client().unwrap();
        let rows: Vec<AccessLogRow> = (0..1000).map(row).collect();
        let mut ins = client.insert::<AccessLogRow>("access_log").await.unwrap();
        for r in &rows {
            ins.write(r).await.unwrap();
        }
        ins.end().await.unwrap();
        let back: Vec<AccessLogRow> =
            client.query("SELECT ?fields FROM access_log ORDER BY source_offset").fetch_all().await.unwrap();
        assert!(back == rows, "rows read back differ: {} of {} read", back.len(), rows.len());
        let ip: String = client.query("SELECT toString(client_ip) FROM access_log LIMIT 1").fetch_one().await.unwrap();
        assert_eq!(ip, "2001:db8::1");
        // The usage rollup saw every row once.
        let n: u64 = client.query("SELECT sum(requests) FROM usage_daily").fetch_one().await.unwrap();
        assert_eq!(n, 1000);
    });
}

#[test]
fn migrate_refuses_newer_database_and_changed_checksum_without_changes() {
    let stack = support::stack();
    support::block_on(async {
        let db = support::unique_name("newer");
        let cfg = support::clickhouse_config(stack, &db);
        let server = cfg.server_client().unwrap();
        migrate(&server, &db, &Retention::default()).await.unwrap();
        server
            .query(&format!("INSERT INTO {db}.schema_migrations (version, name, checksum) VALUES (999, 'future', 'x')"))
            .execute()
            .await
            .unwrap();
        let e = migrate(&server, &db, &Retention::default()).await.unwrap_err();
        assert!(matches!(e, MigrateError::DatabaseNewer { found: 999, .. }), "{e}");
        assert!(e.to_string().contains("newer than this sitelog"), "{e}");

        let db2 = support::unique_name("tampered");
        server.query(&format!("CREATE DATABASE {db2}")).execute().await.unwrap();
        server
            .query(&format!(
                "CREATE TABLE {db2}.schema_migrations (version UInt32, name String, checksum String, \
                 applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
            ))
            .execute()
            .await
            .unwrap();
        server
            .query(&format!(
                "INSERT INTO {db2}.schema_migrations (version, name, checksum) VALUES (1, 'access_log', 'edited')"
            ))
            .execute()
            .await
            .unwrap();
        let e = migrate(&server, &db2, &Retention::default()).await.unwrap_err();
        assert!(matches!(e, MigrateError::ChecksumChanged { version: 1, .. }), "{e}");
        let tables: Vec<String> = server
            .query(&format!("SELECT name FROM system.tables WHERE database = '{db2}' ORDER BY name"))
            .fetch_all()
            .await
            .unwrap();
        assert_eq!(tables, vec!["schema_migrations".to_string()], "nothing else was created");
    });
}

#[test]
fn a_dead_service_is_named_with_its_log() {
    let mut stack = support::own_stack("dead");
    stack.check_alive().unwrap();
    stack.kill_kafka();
    let e = stack.check_alive().unwrap_err();
    assert!(e.contains("tansu (Kafka)") && e.contains("kafka.log"), "{e}");
    stack.start_kafka().unwrap();
    stack.check_alive().unwrap();
}

#[test]
fn a_busy_port_is_one_clear_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let dir = support::temp_dir("busy");
    let e = sitelog::stack::up(&dir, port, 0, &[]).unwrap_err().to_string();
    assert_eq!(e, format!("port {port} on 127.0.0.1 is busy (tansu (Kafka)); choose another or stop what holds it"));
    assert!(!dir.join("state.json").exists(), "no partial state");
}

#[test]
fn a_missing_python_is_one_clear_error() {
    // The stack refuses to start without the chDB venv's Python and says what to run.
    let dir = support::temp_dir("nopython");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["stack", "up", "--dir"])
        .arg(&dir)
        .env("SITELOG_CHDB_PYTHON", "/nonexistent/bin/python")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("the chDB Python venv not found at /nonexistent/bin/python")
            && err.contains("sitelog stack install"),
        "{err}"
    );
    assert!(!dir.join("state.json").exists(), "no partial state");

    // The installer, on a machine without python3, stops before doing anything.
    let cache = support::temp_dir("nopython-cache");
    let out = std::process::Command::new("/bin/bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/bootstrap.sh"))
        .arg("chdb")
        .env("SITELOG_CACHE", &cache)
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim(), "bootstrap: error: 'python3' not found on PATH (install Python 3.9+ with venv and pip)");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0, "nothing half-installed");
}
