//! The same sample seen at different ages: what the privacy notice promises for each age,
//! checked against the generator's ground truth.
//!
//! ClickHouse applies TTLs with its own, real clock, which `SITELOG_NOW` cannot move. So "the
//! clock set to the sample's start + N days" is done the other way round: a small sample whose
//! last day is N days before the real today goes through the real pipeline (collect → tansu →
//! process → ClickHouse), TTL merges are forced, and the test states what remains:
//!
//! | age of the sample | raw records | full client IP | site health | usage (billing) |
//! |---|---|---|---|---|
//! | 1 day        | all | all   | all  | exact |
//! | 10 days      | all | none (only the /24 or /48) | all | exact |
//! | 40 days      | none | none | all  | exact |
//! | 400 days     | none | none | none | exact |
//! | 11 years     | none | none | none | none  |
//!
//! and that `sitelog report billing` bills exactly the truth while usage is kept.

mod support;

use std::collections::BTreeMap;

use chrono::{Days, Utc};
use sitelog::sample::{truth, GenerateOptions};
use support::sitelog;

struct Expect {
    raw: bool,
    ip: bool,
    health: bool,
    usage: bool,
}

fn count(client: &clickhouse::Client, sql: &str) -> u64 {
    support::block_on(client.query(sql).fetch_one::<u64>()).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn csv_field(header: &str, row: &str, name: &str) -> String {
    let i = header.split(',').position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
    row.split(',').nth(i).unwrap().to_owned()
}

fn run_age(age_days: u64, want: Expect) {
    // The real clock, on purpose: it is the one ClickHouse's TTLs use.
    let real_now = Utc::now();
    let today = real_now.with_timezone(&chrono_tz::Europe::Helsinki).date_naive();
    let clock = [(sitelog::clock::NOW_VAR, real_now.to_rfc3339())];
    let clock: Vec<(&str, &str)> = clock.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let dir = support::temp_dir(&format!("ages-{age_days}"));
    let out = dir.join("sample");
    let opts = GenerateOptions {
        out: out.clone(),
        seed: 7 + age_days,
        start: today - Days::new(age_days + 1),
        days: 2,
        customers: 3,
        rate: 6,
    };
    let run = support::run_sample(&opts, "ages", &clock, "");
    let (summary, expected) = (&run.summary, truth::read_usage(&out.join("truth")).unwrap());
    let (cfg, ch) = (run.config.to_str().unwrap(), &run.client);
    for t in ["access_log", "usage_daily", "site_health_minute"] {
        support::block_on(ch.query(&format!("OPTIMIZE TABLE {t} FINAL")).execute()).unwrap();
    }
    let records = summary.records;
    let raw = count(ch, "SELECT count() FROM access_log");
    let with_ip = count(ch, "SELECT count() FROM access_log WHERE client_ip != toIPv6('::')");
    let with_net = count(ch, "SELECT count() FROM access_log WHERE client_net != toIPv6('::')");
    let with_key = count(ch, "SELECT count() FROM access_log WHERE visitor_ip_key != 0 OR visitor_ip_ua_key != 0");
    let health = count(ch, "SELECT sum(requests) FROM site_health_minute");
    let usage = count(ch, "SELECT sum(requests) FROM usage_daily");
    let age = format!("sample {age_days} days old ({} .. {})", opts.start, opts.end());
    assert_eq!(raw, if want.raw { records } else { 0 }, "{age}: raw records");
    assert_eq!(with_ip, if want.ip { records } else { 0 }, "{age}: full client addresses");
    assert_eq!(with_net, raw, "{age}: the network stays as long as the record");
    assert_eq!(with_key, with_ip, "{age}: keyed visitor identities go with the full address");
    assert_eq!(health, if want.health { records } else { 0 }, "{age}: site health");
    assert_eq!(usage, if want.usage { records } else { 0 }, "{age}: usage");

    // The billing run of each month the sample touches: every site line equals the truth
    // while usage is kept, and nothing is billed once it is gone.
    let mut by_month: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for ((c, site, day), u) in &expected {
        *by_month.entry((day[..7].to_owned(), c.clone(), site.clone())).or_default() += u.requests;
    }
    for month in &summary.months {
        let csv = sitelog(&["report", "billing", "-c", cfg, "--month", month, "--format", "csv", "--verify"], &clock);
        let mut lines = csv.lines();
        let header = lines.next().unwrap();
        let mut billed = 0;
        for row in lines.filter(|r| csv_field(header, r, "line") == "site") {
            let key = (month.clone(), csv_field(header, row, "customer_id"), csv_field(header, row, "site_id"));
            let got: u64 = csv_field(header, row, "requests").parse().unwrap();
            let truth = if want.usage { by_month.get(&key).copied().unwrap_or(0) } else { 0 };
            assert_eq!(got, truth, "{age}: {key:?} requests");
            billed += got;
        }
        let in_truth: u64 = by_month.iter().filter(|(k, _)| &k.0 == month).map(|(_, v)| v).sum();
        assert_eq!(billed, if want.usage { in_truth } else { 0 }, "{age}: {month} billed requests");
    }
}

#[test]
fn one_day_old_everything_kept() {
    run_age(1, Expect { raw: true, ip: true, health: true, usage: true });
}

#[test]
fn ten_days_old_full_ip_gone_raw_kept() {
    run_age(10, Expect { raw: true, ip: false, health: true, usage: true });
}

#[test]
fn forty_days_old_raw_gone_health_and_usage_kept() {
    run_age(40, Expect { raw: false, ip: false, health: true, usage: true });
}

#[test]
fn four_hundred_days_old_only_usage_kept() {
    run_age(400, Expect { raw: false, ip: false, health: false, usage: true });
}

#[test]
fn eleven_years_old_nothing_kept() {
    run_age(11 * 366, Expect { raw: false, ip: false, health: false, usage: false });
}
