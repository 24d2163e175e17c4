//! End to end with real parts: generated logs → `sitelog collect --once` → tansu →
//! `sitelog process` → chDB. Usage per customer / site / Helsinki day must equal the
//! generator's independently counted ground truth exactly, unknown hosts must land in the
//! unattributed bucket, and every malformed line must be a reject — including a second
//! collect + process round that must change nothing.

mod support;

use std::path::Path;
use std::time::Duration;

use chrono::{Datelike, Days, NaiveDate, Weekday};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sitelog::sample::truth;
use support::sitelog;

fn count_messages(brokers: &str, topic: &str) -> i64 {
    let c: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", "count").create().unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (lo, hi) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap();
            hi - lo
        })
        .sum()
}

/// customer, site, day, requests, bytes, bots, visitors by IP, visitors by IP + agent.
type UsageTuple = (String, String, String, u64, u64, u64, u64, u64);

/// The Saturday before the latest last Sunday of October whose Monday is before `today`.
fn dst_end_weekend(today: NaiveDate) -> NaiveDate {
    let last_sunday = |year: i32| {
        let mut d = NaiveDate::from_ymd_opt(year, 10, 31).unwrap();
        while d.weekday() != Weekday::Sun {
            d = d.pred_opt().unwrap();
        }
        d
    };
    let this_year = last_sunday(today.year());
    let sunday = if this_year + Days::new(1) < today { this_year } else { last_sunday(today.year() - 1) };
    sunday - Days::new(1)
}

#[test]
fn dst_weekend_is_the_latest_one_over() {
    let d = |s: &str| s.parse::<NaiveDate>().unwrap();
    assert_eq!(dst_end_weekend(d("2026-12-01")), d("2026-10-24"));
    assert_eq!(dst_end_weekend(d("2027-11-01")), d("2026-10-24"));
    assert_eq!(dst_end_weekend(d("2027-11-02")), d("2027-10-30"));
}

#[test]
fn generated_sample_end_to_end_equals_ground_truth() {
    let stack = support::stack();
    let dir = support::temp_dir("e2e");
    let sample = dir.join("sample");
    let s = sample.to_str().unwrap();
    // Three days around the latest end of summer time that is over on the clock (the night of
    // October's last Sunday has 25 hours); the moved domain changes owner on day 2.
    let start = dst_end_weekend(sitelog::clock::today_helsinki().unwrap()).to_string();
    sitelog(&["generate", "--out", s, "--start", &start, "--days", "3", "--customers", "4", "--rate", "40"], &[]);

    let topic = support::unique_name("access");
    let rejects = support::unique_name("rejects");
    stack.create_topic(&topic, 4).unwrap();
    stack.create_topic(&rejects, 1).unwrap();
    let db = support::unique_name("e2e");
    let config = dir.join("processor.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup_id = \"e2e\"\n\n[clickhouse]\nurl = \"{}\"\ndatabase = \"{db}\"\ncompression = false\n\n\
             [sink]\nmax_poll_interval_ms = 10000\n",
            stack.kafka_bootstrap, stack.clickhouse_url
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let checkpoints = dir.join("checkpoints");
    let collect = || {
        sitelog(
            &[
                "collect",
                "--config",
                &format!("{s}/collector.toml"),
                "--once",
                "--checkpoint-dir",
                checkpoints.to_str().unwrap(),
            ],
            &[
                ("SITELOG_KAFKA_BROKERS", &stack.kafka_bootstrap),
                ("SITELOG_ACCESS_TOPIC", &topic),
                ("SITELOG_REJECTS_TOPIC", &rejects),
            ],
        )
    };

    sitelog(&["schema", "migrate", "-c", cfg], &[]);
    sitelog(&["customers", "import", &format!("{s}/register.json"), "-c", cfg], &[]);
    collect();
    sitelog(&["process", "-c", cfg, "--exit-when-idle", "3"], &[]);
    let report = sitelog(&["report", "summary", "-c", cfg, "--truth", &format!("{s}/truth")], &[]);
    assert!(report.contains("match exactly"), "{report}");

    let summary = truth::read_summary(Path::new(&format!("{s}/truth"))).unwrap();
    assert_eq!(
        count_messages(&stack.kafka_bootstrap, &rejects) as u64,
        summary["malformed"].as_u64().unwrap(),
        "every malformed line is one reject"
    );

    // Independently of the report: compare the rollups row by row, and the stored records.
    let ch = support::clickhouse_config(stack, &db).client().unwrap();
    let expected = truth::read_usage(Path::new(&format!("{s}/truth"))).unwrap();
    let check = |when: &str| {
        support::block_on(async {
            let rows: Vec<UsageTuple> = ch
                .query(
                    "SELECT customer_id, site_id, toString(day), sum(requests), sum(bytes_sent), sum(bot_requests), \
                     uniqExactMerge(visitors_ip), uniqExactMerge(visitors_ip_ua) FROM usage_daily WHERE customer_id != '' \
                     GROUP BY customer_id, site_id, day",
                )
                .fetch_all()
                .await
                .unwrap();
            let found: truth::UsageTable = rows
                .into_iter()
                .map(|(c, si, d, requests, bytes_sent, bot_requests, visitors_ip, visitors_ip_ua)| {
                    ((c, si, d), truth::DayUsage { requests, bytes_sent, bot_requests, visitors_ip, visitors_ip_ua })
                })
                .collect();
            let diff = truth::diff(&expected, &found);
            assert!(diff.is_empty(), "{when}: {} mismatches, first: {:?}", diff.len(), diff.first());
            let stored: u64 = ch.query("SELECT sum(records) FROM source_progress FINAL").fetch_one().await.unwrap();
            assert_eq!(stored, summary["records"].as_u64().unwrap(), "{when}: every parsed line stored once");
            let unattributed: u64 =
                ch.query("SELECT sum(requests) FROM usage_daily WHERE customer_id = ''").fetch_one().await.unwrap();
            assert_eq!(unattributed, summary["unattributed_requests"].as_u64().unwrap(), "{when}: unattributed bucket");
        })
    };
    check("first run");

    // Running both again changes nothing: the collector's checkpoints skip what was sent.
    collect();
    sitelog(&["process", "-c", cfg, "--exit-when-idle", "3"], &[]);
    check("second run");
}
