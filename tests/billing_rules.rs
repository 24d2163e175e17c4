//! The billing report on hand-made records: Helsinki months to exact UTC bounds (records one
//! microsecond either side of each bound, both DST transitions), the three metering rules,
//! allowance and overage, and the three output formats. The records lie in last year on the
//! clock (`SITELOG_NOW` or the system clock), so the test means the same in any year. Every expected figure is counted
//! here from the records the test wrote and the rule texts in the README.

mod billing_common;
mod support;

use billing_common::*;

const S1: &str = "kahvila.fi";
const S2: &str = "puutarha.fi";
const S3: &str = "kauppa.fi";

fn ip(n: u8) -> std::net::Ipv6Addr {
    format!("::ffff:198.51.100.{n}").parse().unwrap()
}

fn setup() -> Db {
    let db = db(support::stack(), "billrules");
    import(
        &db,
        vec![plan("req", "requests", 3), plan("vip", "visits_ip", 2), plan("vua", "visits_ip_ua", 10)],
        vec![
            customer(0, "C1", vec![site("S1", S1, "req")]),
            customer(1, "C2", vec![site("S2", S2, "vip"), site("S3", S3, "vua")]),
        ],
    );
    // S1: one request a microsecond before and one at each bound of October (EEST→EET) and
    // March (EET→EEST) of last year on the clock, and two in each DST night. The bounds and
    // nights are computed here with chrono-tz, independently of the billing code.
    let year = base_year();
    let us = chrono::Duration::microseconds(1);
    let (oct_night, mar_night) = (last_sunday(year, 10), last_sunday(year, 3));
    let at = |d: chrono::NaiveDate, h: u32, m: u32, s: u32| d.and_hms_opt(h, m, s).unwrap().and_utc();
    let mut reqs: Vec<Req> = [
        helsinki_midnight(year, 10, 1) - us, // 23:59:59.999999 EEST 30 Sep: September
        helsinki_midnight(year, 10, 1),      // 00:00 EEST 1 Oct: October
        at(oct_night, 0, 30, 0),             // 03:30 EEST, the first 03:30 of the last Sunday
        at(oct_night, 1, 30, 0),             // 03:30 EET, the second
        helsinki_midnight(year, 11, 1) - us, // 23:59:59.999999 EET 31 Oct: October
        helsinki_midnight(year, 11, 1),      // 00:00 EET 1 Nov: November
        helsinki_midnight(year, 3, 1) - us,  // 23:59:59.999999 EET, February's last day: February
        helsinki_midnight(year, 3, 1),       // 00:00 EET 1 Mar: March
        at(mar_night, 0, 59, 59),            // 02:59:59 EET, the last Sunday of March
        at(mar_night, 1, 0, 0),              // 04:00 EEST (03:00-04:00 does not exist)
        helsinki_midnight(year, 4, 1) - us,  // 23:59:59.999999 EEST 31 Mar: March
        helsinki_midnight(year, 4, 1),       // 00:00 EEST 1 Apr: April
    ]
    .into_iter()
    .map(|t| req_at(t, "C1", "S1", S1))
    .collect();
    // S2 (visits_ip) and S3 (visits_ip_ua) on 5 October: one request of each kind.
    let day = &y("2026-10-05T09:00:00Z");
    let kinds = |site: &'static str, host: &'static str| -> Vec<Req> {
        let r = move |n: u8, ua: &'static str, status: u16, class: &'static str, bot: bool| Req {
            ip: ip(n),
            ua,
            status,
            class,
            bot,
            ..req(day, "C2", site, host)
        };
        vec![
            r(1, "Firefox", 200, "page", false),     // A: both rules
            r(1, "Chrome", 200, "page", false),      // A again, another agent: ua rule only
            r(2, "Firefox", 200, "static", false),   // static: neither
            r(3, "Firefox", 403, "page", false),     // 403: neither
            r(4, "Googlebot", 200, "page", true),    // known bot: neither
            r(5, "Firefox", 404, "page", false),     // 4xx other than 403: ip rule only
            r(6, "Firefox", 301, "page", false),     // redirect: ip rule only
            r(7, "Firefox", 304, "page", false),     // 304: both
            r(8, "Firefox", 500, "page", false),     // 5xx: ip rule only
            r(9, "Firefox", 303, "wp-admin", false), // 303 on a dynamic page: both
        ]
    };
    reqs.extend(kinds("S2", S2));
    reqs.extend(kinds("S3", S3));
    // The next day A comes back to S2: a new day, a new visit.
    reqs.push(Req { ip: ip(1), ua: "Firefox", ..req(&y("2026-10-06T09:00:00Z"), "C2", "S2", S2) });
    insert(&db, &reqs, 1);
    db
}

fn site_row<'a>(
    rows: &'a [std::collections::BTreeMap<String, String>],
    site: &str,
) -> &'a std::collections::BTreeMap<String, String> {
    rows.iter().find(|r| r["line"] == "site" && r["site_id"] == site).unwrap_or_else(|| panic!("no row for {site}"))
}

#[test]
fn months_rules_and_formats() {
    let db = setup();
    let year = base_year();

    // Requests per month of S1, from the calendar: the bounds decide. February has 28 or 29
    // days; October one hour more, March one less.
    let feb_hours = (helsinki_midnight(year, 3, 1) - helsinki_midnight(year, 2, 1)).num_hours() as u64;
    assert!(feb_hours == 672 || feb_hours == 696);
    for (month, n, hours) in [
        ("2026-09", 1u64, 720u64),
        ("2026-10", 4, 745),
        ("2026-11", 1, 720),
        ("2026-02", 1, feb_hours),
        ("2026-03", 4, 743),
        ("2026-04", 1, 720),
    ] {
        let month = &y(month);
        let out = billing(&db, &["--month", month, "--format", "json", "--customer", "C1"]);
        assert!(out.status.success(), "{month}: {}", stderr(&out));
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["hours"], hours, "{month} hours");
        let s1 = &j["customers"][0]["sites"][0];
        assert_eq!(s1["site_id"], "S1");
        assert_eq!(s1["requests"], n, "{month}: S1 requests");
        assert_eq!(s1["billed_usage"], n, "{month}: the requests rule bills every request");
        assert_eq!(s1["overage"], n.saturating_sub(3), "{month}: overage above 3 included");
    }
    let out = billing(&db, &["--month", &y("2026-10"), "--format", "json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (j["from_utc"].as_str(), j["to_utc"].as_str()),
        (Some(y("2026-09-30T21:00:00Z").as_str()), Some(y("2026-10-31T22:00:00Z").as_str()))
    );
    let out = billing(&db, &["--month", &y("2026-03"), "--format", "json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let march_from = helsinki_midnight(year, 3, 1).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert!(march_from.ends_with("-28T22:00:00Z") || march_from.ends_with("-29T22:00:00Z"), "{march_from}");
    assert_eq!(
        (j["from_utc"].as_str(), j["to_utc"].as_str()),
        (Some(march_from.as_str()), Some(y("2026-03-31T21:00:00Z").as_str()))
    );

    // The three rules for October, in CSV.
    let out = billing(&db, &["--month", &y("2026-10"), "--format", "csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        text.lines().next().unwrap(),
        "month,status,line,customer_id,site_id,plan,metering,included,billed_usage,overage,requests,bytes_sent,human_requests,bot_requests,visits_ip,visits_ip_ua"
    );
    let rows = csv_rows(&text);
    // S2: 11 requests (one a bot); unique IPs per day: 5 Oct {1,5,6,7,8,9}, 6 Oct {1} = 7.
    let s2 = site_row(&rows, "S2");
    let want = [
        ("plan", "vip"),
        ("metering", "visits_ip"),
        ("included", "2"),
        ("billed_usage", "7"),
        ("overage", "5"),
        ("requests", "11"),
        ("bytes_sent", "11000"),
        ("human_requests", "10"),
        ("bot_requests", "1"),
        ("visits_ip", "7"),
        ("visits_ip_ua", "5"),
    ];
    for (k, v) in want {
        assert_eq!(s2[k], v, "S2 {k}");
    }
    // S3: (IP, agent) on 5 Oct with 2xx/303/304/305, human, dynamic: (1,Firefox) (1,Chrome) (7) (9) = 4.
    let s3 = site_row(&rows, "S3");
    for (k, v) in [
        ("metering", "visits_ip_ua"),
        ("billed_usage", "4"),
        ("included", "10"),
        ("overage", "0"),
        ("visits_ip", "6"),
        ("visits_ip_ua", "4"),
        ("requests", "10"),
    ] {
        assert_eq!(s3[k], v, "S3 {k}");
    }
    // C2's sites meter differently: totals of measures, no summed allowance.
    let c2 = rows.iter().find(|r| r["line"] == "customer" && r["customer_id"] == "C2").unwrap();
    assert_eq!((c2["metering"].as_str(), c2["overage"].as_str(), c2["requests"].as_str()), ("mixed", "", "21"));
    let c1 = rows.iter().find(|r| r["line"] == "customer" && r["customer_id"] == "C1").unwrap();
    assert_eq!((c1["metering"].as_str(), c1["billed_usage"].as_str(), c1["overage"].as_str()), ("requests", "4", "1"));
    assert!(rows.iter().all(|r| r["status"] == "complete"), "no sources, month over: complete");

    // The table names what a person needs; --output writes the file instead of stdout.
    let out = billing(&db, &["--month", &y("2026-10")]);
    let t = stdout(&out);
    assert!(
        t.contains(&y("Billing 2026-10 (Europe/Helsinki): 2026-09-30T21:00:00Z .. 2026-10-31T22:00:00Z UTC, 745 h")),
        "{t}"
    );
    assert!(t.contains("C2  C2 Oy (1572860-0)") && t.contains("visits_ip_ua"), "{t}");
    let file = support::temp_dir("billrules-out").join("october.csv");
    let out = billing(&db, &["--month", &y("2026-10"), "--format", "csv", "--output", file.to_str().unwrap()]);
    assert!(out.status.success() && out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    // A bad month is one clear error.
    let out = billing(&db, &["--month", "2026-13"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("'2026-13' is not a month: use YYYY-MM"), "{}", stderr(&out));
}
