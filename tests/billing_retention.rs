//! Retention by purpose, enforced by ClickHouse TTL: billing usage is kept 10 years (the
//! Finnish bookkeeping period), raw records 30 days, the full client address 7 days (then only
//! its /24 network remains, and the keyed visitor identities derived from it go too), per-minute
//! site health 90 days. Rows on both sides of each limit
//! are written, TTL merges are forced with `OPTIMIZE TABLE … FINAL`, and the test states
//! exactly which rows remain.

mod billing_common;
mod support;

use billing_common::*;
use chrono::{Datelike, Duration, NaiveDate, Utc};

fn years_back(today: NaiveDate, years: i32, plus_days: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(today.year() - years, today.month(), today.day().min(28)).unwrap()
        + Duration::days(plus_days)
}

fn strings(db: &Db, sql: &str) -> Vec<String> {
    support::block_on(db.client.query(sql).fetch_all::<String>()).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn usage_ten_years_raw_thirty_days_ip_seven_days_health_ninety() {
    let db = db(support::stack(), "billret");
    let today = Utc::now().with_timezone(&chrono_tz::Europe::Helsinki).date_naive();

    // Usage rows by day: 9 years back and 10 years minus two days stay; 10 years plus two
    // days and 11 years back go.
    let days = [
        ("keep-9y", years_back(today, 9, 0)),
        ("keep-10y-inside", years_back(today, 10, 2)),
        ("drop-10y-outside", years_back(today, 10, -2)),
        ("drop-11y", years_back(today, 11, 0)),
    ];
    for (site, day) in days {
        exec(
            &db,
            &format!(
                "INSERT INTO usage_daily SELECT 'C1', '{site}', 'a.fi', toDate('{day}'), 10, 1000, 1, \
                 uniqExactState(toUInt64(1)), uniqExactState(toUInt64(2))"
            ),
        );
    }

    // Raw rows by age (the materialized views see every one of them).
    let now = Utc::now();
    let ip = |n: u8| -> std::net::Ipv6Addr { format!("::ffff:203.0.113.{n}").parse().unwrap() };
    let net: std::net::Ipv6Addr = "::ffff:203.0.113.0".parse().unwrap();
    let aged = |days: i64, n: u8| Req {
        ts: now - Duration::days(days),
        ip: ip(n),
        ..req("2026-01-01T00:00:00Z", "C1", "S1", "b.fi")
    };
    let reqs = [aged(91, 1), aged(31, 2), aged(29, 3), aged(8, 4), aged(6, 5)];
    let mut rows = rows(&reqs, 9);
    for r in &mut rows {
        r.client_net = net; // the /24 the processor derives
    }
    support::block_on(async {
        let mut ins = db.client.insert::<sitelog_processor::store::rows::AccessLogRow>("access_log").await.unwrap();
        for r in &rows {
            ins.write(r).await.unwrap();
        }
        ins.end().await.unwrap();
    });

    for t in ["usage_daily", "access_log", "site_health_minute"] {
        exec(&db, &format!("OPTIMIZE TABLE {t} FINAL"));
    }

    let usage =
        strings(&db, "SELECT site_id FROM usage_daily WHERE site_host = 'a.fi' GROUP BY site_id ORDER BY site_id");
    assert_eq!(usage, vec!["keep-10y-inside", "keep-9y"], "usage: 10 years, from {today}");

    // Raw: 29, 8 and 6 days old remain; the full address only in the 6-day-old one.
    let raw = strings(
        &db,
        "SELECT concat(toString(source_offset), ' ', toString(client_ip), ' ', toString(client_net)) FROM access_log ORDER BY source_offset",
    );
    assert_eq!(
        raw,
        ["200 :: ::ffff:203.0.113.0", "300 :: ::ffff:203.0.113.0", "400 ::ffff:203.0.113.5 ::ffff:203.0.113.0"],
        "raw records: 30 days; client_ip: 7 days, client_net stays"
    );

    // The keyed visitor identities derived from the address go with it after 7 days.
    let keyed: u64 = support::block_on(
        db.client.query("SELECT countIf(visitor_ip_key != 0 AND visitor_ip_ua_key != 0) FROM access_log").fetch_one(),
    )
    .unwrap();
    assert_eq!(keyed, 1, "visitor identities: 7 days, like the full address");

    // Usage of the same requests stays for billing, every one of them, including the ones
    // whose raw records are gone.
    let n: u64 = support::block_on(
        db.client.query("SELECT sum(requests) FROM usage_daily WHERE site_host = 'b.fi'").fetch_one(),
    )
    .unwrap();
    assert_eq!(n, 5);
    // Site health: 90 days.
    let health: u64 = support::block_on(
        db.client.query("SELECT sum(requests) FROM site_health_minute WHERE site_host = 'b.fi'").fetch_one(),
    )
    .unwrap();
    assert_eq!(health, 4, "the 91-day-old minute is gone");
}
