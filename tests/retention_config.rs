//! Retention follows the configuration, not the day a migration first ran.
//!
//! A database is migrated by `sitelog schema migrate` with the default `[retention]`; rows are
//! placed on both sides of the limits about to be lowered (relative to the real now: ClickHouse
//! runs its TTLs on its own clock); then `[retention]` is lowered (a privacy request: full
//! addresses 7 → 3 days, raw records 30 → 20, site health 90 → 60, usage 10 → 9 years) and
//! `schema migrate` runs again. The TTLs in force, read back from ClickHouse, follow; every
//! change is printed and recorded in `retention_changes`; after `OPTIMIZE TABLE … FINAL` the
//! rows and addresses between the old and new limits are gone; a third run changes nothing;
//! and `report billing --verify` recounts by the raw TTL in force, not a stale `raw_days`.

mod billing_common;
mod support;

use billing_common::*;
use chrono::{Duration, Utc};
use sitelog_processor::store::migrate::ttl_in_force;
use sitelog_schema::migrations::Retention;
use sitelog_schema::ttl::TtlInForce;

fn write_config(db: &Db, r: &Retention) {
    let stack = support::stack();
    std::fs::write(
        &db.config,
        format!(
            "[kafka]\nbrokers = \"{}\"\n\n[clickhouse]\nurl = \"{}\"\ndatabase = \"{}\"\ncompression = false\n\n\
             [billing]\nuser = \"sitelog_billing_user\"\n\n[retention]\nraw_days = {}\nclient_ip_days = {}\n\
             site_health_days = {}\nusage_years = {}\nprogress_days = {}\n",
            stack.kafka_bootstrap,
            stack.clickhouse_url,
            db.name,
            r.raw_days,
            r.client_ip_days,
            r.site_health_days,
            r.usage_years,
            r.progress_days
        ),
    )
    .unwrap();
}

fn migrate_cli(db: &Db) -> String {
    let out = support::sitelog(&["schema", "migrate", "-c", db.config.to_str().unwrap()], &[]);
    println!("sitelog schema migrate:\n{out}");
    out
}

fn ttls(db: &Db, table: &str) -> TtlInForce {
    support::block_on(ttl_in_force(&db.client, &db.name, table)).unwrap().unwrap_or_else(|| panic!("no table {table}"))
}

fn count(db: &Db, sql: &str) -> u64 {
    support::block_on(db.client.query(sql).fetch_one::<u64>()).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn optimize(db: &Db) {
    for t in ["access_log", "usage_daily", "site_health_minute", "source_progress"] {
        exec(db, &format!("OPTIMIZE TABLE {t} FINAL"));
    }
}

fn day_ttl(n: u32) -> String {
    format!("toDateTime(ts) + toIntervalDay({n})")
}

#[test]
fn lowering_retention_alters_the_ttls_in_force_records_it_and_removes_the_data() {
    let stack = support::stack();
    let name = support::unique_name("retcfg");
    let dir = support::temp_dir("retcfg");
    let db = Db {
        client: support::clickhouse_config(stack, &name).client().unwrap(),
        name,
        config: dir.join("processor.toml"),
        now: None,
    };
    let defaults = Retention::default();
    write_config(&db, &defaults);

    // 1. Fresh database, default retention: the migrations set every TTL, nothing to change.
    let out = migrate_cli(&db);
    assert!(out.contains("applied migration 0008 retention_changes"), "{out}");
    assert!(out.contains("retention is as configured"), "{out}");
    let access = ttls(&db, "access_log");
    assert_eq!(access.table.as_deref(), Some(day_ttl(30).as_str()));
    for c in ["client_ip", "visitor_ip_key", "visitor_ip_ua_key"] {
        assert_eq!(access.columns.get(c), Some(&day_ttl(7)), "{c}");
    }

    // Rows placed around the limits, by the real clock.
    let now = Utc::now();
    let aged = |days: f64, n: u8| Req {
        ip: format!("::ffff:203.0.113.{n}").parse().unwrap(),
        ..req_at(now - Duration::minutes((days * 24.0 * 60.0) as i64), "C1", "S1", "b.fi")
    };
    // 2 d: everything stays; 4 d: the address goes at 3 days; 8 d: already without it;
    // 19 d: the record stays; 21.5 d and 25 d: records go at 20 days; 70 d: only health and
    // usage, health goes at 60 days.
    let reqs = [aged(2.0, 1), aged(4.0, 2), aged(8.0, 3), aged(19.0, 4), aged(21.5, 5), aged(25.0, 6), aged(70.0, 7)];
    insert(&db, &reqs, 9);
    progress(&db, 9, "b.fi", &(now - Duration::days(2)).to_rfc3339(), reqs.len() as u64);
    // A source last written 300 days ago: kept 400 days by default, not for 200.
    exec(
        &db,
        &format!(
            "INSERT INTO source_progress (fingerprint, site_host, max_offset, max_ts, records, updated_at) \
             VALUES (8, 'gone.fi', 100, now64(6) - INTERVAL 300 DAY, 1, toDateTime64('{}', 3, 'UTC'))",
            (now - Duration::days(300)).format("%Y-%m-%d %H:%M:%S")
        ),
    );
    // Usage 9.5 years old: kept for 10 years, not for 9.
    let old_day = (now - Duration::days(9 * 365 + 180)).date_naive();
    exec(
        &db,
        &format!(
            "INSERT INTO usage_daily SELECT 'C1', 'S-old', 'old.fi', toDate('{old_day}'), 10, 1000, 1, \
             uniqExactState(toUInt64(1)), uniqExactState(toUInt64(2))"
        ),
    );
    optimize(&db);
    let raw = "SELECT count() FROM access_log";
    let with_ip = "SELECT count() FROM access_log WHERE client_ip != toIPv6('::')";
    let with_key = "SELECT count() FROM access_log WHERE visitor_ip_key != 0 OR visitor_ip_ua_key != 0";
    let health = "SELECT sum(requests) FROM site_health_minute";
    let old_usage = "SELECT sum(requests) FROM usage_daily WHERE site_id = 'S-old'";
    assert_eq!(count(&db, raw), 6, "default: raw records 30 days");
    assert_eq!(count(&db, with_ip), 2, "default: full addresses 7 days");
    assert_eq!(count(&db, with_key), 2, "default: visitor identities 7 days");
    assert_eq!(count(&db, health), 7, "default: health 90 days");
    assert_eq!(count(&db, old_usage), 10, "default: usage 10 years");
    let sources = "SELECT count() FROM source_progress FINAL";
    assert_eq!(count(&db, sources), 2, "default: source progress 400 days");

    // 2. Lowered retention: every TTL follows, each change printed and recorded.
    let lower = Retention {
        raw_days: 20,
        client_ip_days: 3,
        site_health_days: 60,
        usage_years: 9,
        progress_days: 200,
        ..defaults
    };
    write_config(&db, &lower);
    let out = migrate_cli(&db);
    assert!(
        out.contains(&format!("schema is up to date (version {})", sitelog_schema::migrations::MIGRATIONS.len())),
        "{out}"
    );
    let expected_lines = [
        format!("access_log TTL {} -> {} (retention.raw_days)", day_ttl(30), day_ttl(20)),
        format!("access_log.client_ip TTL {} -> {} (retention.client_ip_days)", day_ttl(7), day_ttl(3)),
        format!("access_log.visitor_ip_key TTL {} -> {} (retention.client_ip_days)", day_ttl(7), day_ttl(3)),
        format!("access_log.visitor_ip_ua_key TTL {} -> {} (retention.client_ip_days)", day_ttl(7), day_ttl(3)),
        "site_health_minute TTL minute + toIntervalDay(90) -> minute + toIntervalDay(60) (retention.site_health_days)"
            .into(),
        "health_minute TTL minute + toIntervalDay(90) -> minute + toIntervalDay(60) (retention.site_health_days)"
            .into(),
        "incidents TTL opened_at + toIntervalDay(90) -> opened_at + toIntervalDay(60) (retention.site_health_days)"
            .into(),
        "incident_notifications TTL toDateTime(sent_at) + toIntervalDay(90) -> toDateTime(sent_at) + \
         toIntervalDay(60) (retention.site_health_days)"
            .into(),
        "usage_daily TTL day + toIntervalYear(10) -> day + toIntervalYear(9) (retention.usage_years)".into(),
        "billing_runs TTL toDateTime(closed_at) + toIntervalYear(10) -> toDateTime(closed_at) + toIntervalYear(9) \
         (retention.usage_years)"
            .into(),
        "billing_run_lines TTL toDateTime(closed_at) + toIntervalYear(10) -> toDateTime(closed_at) + \
         toIntervalYear(9) (retention.usage_years)"
            .into(),
        "source_progress TTL toDateTime(updated_at) + toIntervalDay(400) -> toDateTime(updated_at) + \
         toIntervalDay(200) (retention.progress_days)"
            .into(),
    ];
    let printed: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("retention changed: ")).collect();
    assert_eq!(printed, expected_lines.iter().map(String::as_str).collect::<Vec<_>>(), "{out}");

    // Read back from ClickHouse.
    let access = ttls(&db, "access_log");
    assert_eq!(access.table.as_deref(), Some(day_ttl(20).as_str()));
    for c in ["client_ip", "visitor_ip_key", "visitor_ip_ua_key"] {
        assert_eq!(access.columns.get(c), Some(&day_ttl(3)), "{c}");
    }
    assert_eq!(ttls(&db, "site_health_minute").table.as_deref(), Some("minute + toIntervalDay(60)"));
    assert_eq!(ttls(&db, "health_minute").table.as_deref(), Some("minute + toIntervalDay(60)"));
    assert_eq!(ttls(&db, "usage_daily").table.as_deref(), Some("day + toIntervalYear(9)"));
    for t in ["billing_runs", "billing_run_lines"] {
        assert_eq!(ttls(&db, t).table.as_deref(), Some("toDateTime(closed_at) + toIntervalYear(9)"), "{t}");
    }
    // Recorded: table, column, old and new TTL.
    let recorded: Vec<String> = support::block_on(
        db.client
            .query(
                "SELECT concat(table_name, '|', column_name, '|', old_ttl, '|', new_ttl) FROM retention_changes \
                 ORDER BY table_name, column_name",
            )
            .fetch_all(),
    )
    .unwrap();
    assert_eq!(recorded.len(), 12, "{recorded:#?}");
    assert!(recorded.contains(&format!("access_log|client_ip|{}|{}", day_ttl(7), day_ttl(3))), "{recorded:#?}");
    assert!(recorded.contains(&format!("access_log||{}|{}", day_ttl(30), day_ttl(20))), "{recorded:#?}");

    // The data between the old and the new limits is gone.
    optimize(&db);
    assert_eq!(count(&db, raw), 4, "raw records: 20 days (the 21.5- and 25-day-old ones went)");
    assert_eq!(count(&db, with_ip), 1, "full addresses: 3 days (the 4-day-old one went)");
    assert_eq!(count(&db, with_key), 1, "visitor identities go with the address");
    assert_eq!(count(&db, "SELECT count() FROM access_log WHERE client_net != toIPv6('::')"), 4, "networks stay");
    assert_eq!(count(&db, health), 6, "health: 60 days (the 70-day-old minute went)");
    assert_eq!(count(&db, old_usage), 0, "usage: 9 years");
    assert_eq!(count(&db, "SELECT sum(requests) FROM usage_daily WHERE site_id = 'S1'"), 7, "recent usage stays");
    assert_eq!(count(&db, sources), 1, "source progress: 200 days (the 300-day-old source went)");

    // 3. A third run changes nothing.
    let out = migrate_cli(&db);
    assert!(out.contains("retention is as configured") && !out.contains("retention changed"), "{out}");
    assert_eq!(count(&db, "SELECT count() FROM retention_changes"), 12);

    // 4. `--verify` recounts by the raw TTL in force. With a config still saying 30 days the
    // 21.5-day-old day would be recounted (its raw records are gone, its usage is not: a false
    // MISMATCH); the table says 20 days, so it is not, and the difference is reported.
    import(&db, vec![plan("basic", "requests", 1000)], vec![customer(0, "C1", vec![site("S1", "b.fi", "basic")])]);
    write_config(&db, &defaults);
    let month = (now - Duration::minutes(21 * 24 * 60 + 12 * 60))
        .with_timezone(&chrono_tz::Europe::Helsinki)
        .format("%Y-%m")
        .to_string();
    let out = billing(&db, &["--month", &month, "--verify", "--format", "json"]);
    let (so, se) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "exit {:?}\n{so}\n{se}", out.status.code());
    let report: serde_json::Value = serde_json::from_str(&so).unwrap();
    let v = &report["verification"];
    assert_eq!(v["raw_retention_days"], 20, "{v}");
    assert_eq!(v["raw_retention_from"], "access_log TTL", "{v}");
    assert_eq!(v["mismatches"].as_array().unwrap().len(), 0, "{v}");
    assert!(se.contains("raw retention in force is 20 days (access_log TTL), the config says raw_days = 30"), "{se}");
    if let Some(first) = v["raw_days"][0].as_str() {
        let oldest = (now - Duration::days(19)).with_timezone(&chrono_tz::Europe::Helsinki).date_naive();
        assert!(first > oldest.to_string().as_str(), "recounted from {first}, inside 20 days");
    }
}

/// The topics holding whole lines (access, rejects, dead-letter) keep them no longer than
/// `client_ip_days`: `sitelog kafka topics` sets `retention.ms` (and `segment.ms`,
/// `cleanup.policy`) through the admin API, tansu reports them back (`DescribeConfigs`), a
/// second run changes nothing, and a lowered `client_ip_days` lowers `retention.ms`.
#[test]
fn topic_retention_follows_client_ip_days() {
    let stack = support::stack();
    let names =
        [support::unique_name("ret-access"), support::unique_name("ret-rejects"), support::unique_name("ret-dlq")];
    for t in &names {
        stack.create_topic(t, 1).unwrap();
    }
    let dir = support::temp_dir("rettopics");
    let config = dir.join("processor.toml");
    let write = |days: u32| {
        std::fs::write(
            &config,
            format!(
                "[kafka]\nbrokers = \"{}\"\ntopic = \"{}\"\nrejects_topic = \"{}\"\ndeadletter_topic = \"{}\"\n\n\
                 [retention]\nclient_ip_days = {days}\n",
                stack.kafka_bootstrap, names[0], names[1], names[2]
            ),
        )
        .unwrap()
    };
    let cfg = config.to_str().unwrap();
    let kafka = |days: u32| {
        let k = sitelog_processor::config::KafkaConfig {
            brokers: stack.kafka_bootstrap.clone(),
            topic: names[0].clone(),
            rejects_topic: names[1].clone(),
            deadletter_topic: names[2].clone(),
            ..Default::default()
        };
        (k, Retention { client_ip_days: days, ..Default::default() })
    };

    write(7);
    // --check lists what is missing and exits 3.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["kafka", "topics", "--check", "-c", cfg])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    println!("sitelog kafka topics --check:\n{text}");
    assert_eq!(check.status.code(), Some(3), "{text}{}", String::from_utf8_lossy(&check.stderr));
    assert_eq!(text.lines().filter(|l| l.starts_with("would change: ")).count(), 9, "{text}");

    let out = support::sitelog(&["kafka", "topics", "-c", cfg], &[]);
    println!("sitelog kafka topics:\n{out}");
    for t in &names {
        assert!(out.contains(&format!("topic {t} retention.ms (broker default) -> 604800000")), "{out}");
        assert!(out.contains(&format!("topic {t} segment.ms (broker default) -> 3600000")), "{out}");
        assert!(out.contains(&format!("topic {t} cleanup.policy (broker default) -> delete")), "{out}");
    }
    // Read back from the broker.
    let (k, r) = kafka(7);
    assert_eq!(support::block_on(sitelog_processor::topics::plan(&k, &r)).unwrap(), vec![], "set as configured");
    let out = support::sitelog(&["kafka", "topics", "-c", cfg], &[]);
    assert!(out.contains("topic retention is as configured (7 days)"), "{out}");

    // Lowered: 7 → 3 days.
    write(3);
    let out = support::sitelog(&["kafka", "topics", "-c", cfg], &[]);
    println!("sitelog kafka topics (3 days):\n{out}");
    let changed: Vec<&str> = out.lines().filter(|l| l.starts_with("topic retention changed: ")).collect();
    assert_eq!(changed.len(), 3, "{out}");
    for t in &names {
        assert!(out.contains(&format!("topic {t} retention.ms 604800000 -> 259200000")), "{out}");
    }
    let (k, r) = kafka(3);
    assert_eq!(support::block_on(sitelog_processor::topics::plan(&k, &r)).unwrap(), vec![]);
}
