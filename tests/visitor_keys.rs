//! The usage rollup's unique-visitor states hold keyed identities that nobody can reproduce
//! without the processor's per-month key: a generated sample goes through the real pipeline,
//! then, for a visitor known from the raw records, keyless hashes of their address (the old
//! `sipHash64(site_id, day, client_ip)` and others ClickHouse can compute) are merged into that
//! day's stored state — each raises the count, so none of them is what is stored — while the
//! identity computed with the processor's key does not. Visitor counts still equal the
//! generator's ground truth exactly, and the key appears nowhere in ClickHouse.

mod support;

use std::collections::BTreeMap;

use chrono::{Days, Utc};
use sitelog::sample::{truth, GenerateOptions};
use sitelog_processor::visitors::KeyStore;

fn one(ch: &clickhouse::Client, sql: &str) -> u64 {
    support::block_on(ch.query(sql).fetch_one::<u64>()).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn stored_visitor_states_cannot_be_tested_without_the_key() {
    let today = Utc::now().with_timezone(&chrono_tz::Europe::Helsinki).date_naive();
    let dir = support::temp_dir("vkeys");
    let keys = dir.join("keys");
    let opts = GenerateOptions {
        out: dir.join("sample"),
        seed: 11,
        start: today - Days::new(2),
        days: 2,
        customers: 3,
        rate: 8,
    };
    let extra = format!("\n[privacy]\nvisitor_key_dir = \"{}\"\n", keys.display());
    let run = support::run_sample(&opts, "vkeys", &[], &extra);
    let ch = &run.client;

    // Exact visitor counts per customer, site and day, against the generator's truth.
    let expected = truth::read_usage(&opts.out.join("truth")).unwrap();
    let rows: Vec<(String, String, String, u64, u64)> = support::block_on(
        ch.query(
            "SELECT customer_id, site_id, toString(day), uniqExactMerge(visitors_ip), uniqExactMerge(visitors_ip_ua) \
             FROM usage_daily WHERE customer_id != '' GROUP BY customer_id, site_id, day",
        )
        .fetch_all(),
    )
    .unwrap();
    let found: BTreeMap<(String, String, String), (u64, u64)> =
        rows.into_iter().map(|(c, s, d, a, b)| ((c, s, d), (a, b))).collect();
    assert_eq!(found.len(), expected.len());
    for (k, u) in &expected {
        assert_eq!(found.get(k), Some(&(u.visitors_ip, u.visitors_ip_ua)), "{k:?}: visitors by ip, by ip + agent");
    }

    // A visitor known from the raw records (a human page view answered 200).
    let (site, day, ip, ua): (String, String, String, String) = support::block_on(
        ch.query(
            "SELECT site_id, toString(toDate(ts, 'Europe/Helsinki')) AS d, toString(client_ip), user_agent \
             FROM access_log WHERE customer_id != '' AND request_class != 'static' AND NOT is_bot \
             AND status = 200 AND client_ip != toIPv6('::') ORDER BY ts LIMIT 1",
        )
        .fetch_one(),
    )
    .unwrap();
    let state = |col: &str| format!("SELECT {col} AS s FROM usage_daily WHERE site_id = '{site}' AND day = '{day}'");
    let stored_ip = one(ch, &format!("SELECT uniqExactMerge(s) FROM ({})", state("visitors_ip")));
    let stored_ua = one(ch, &format!("SELECT uniqExactMerge(s) FROM ({})", state("visitors_ip_ua")));
    let merged = |col: &str, value: &str| {
        one(
            ch,
            &format!(
                "SELECT uniqExactMerge(s) FROM ({} UNION ALL SELECT uniqExactState(toUInt64({value})) AS s)",
                state(col)
            ),
        )
    };
    let (s, d, a, u) = (
        format!("'{site}'"),
        format!("toDate('{day}')"),
        format!("toIPv6('{ip}')"),
        format!("'{}'", ua.replace('\\', "\\\\").replace('\'', "\\'")),
    );
    let keyless_ip = [
        format!("sipHash64({s}, {d}, {a})"), // the rollup's expression before keyed identities
        format!("sipHash64({a})"),
        format!("cityHash64({s}, {d}, {a})"),
        format!("xxHash64(concat({s}, toString({d}), toString({a})))"),
        format!("farmHash64({s}, {d}, {a})"),
        format!("murmurHash3_64({s}, {d}, {a})"),
    ];
    for h in &keyless_ip {
        assert_eq!(merged("visitors_ip", h), stored_ip + 1, "{h} is not a stored identity: the count grows");
    }
    let keyless_ua = [format!("sipHash64({s}, {d}, {a}, {u})"), format!("cityHash64({s}, {d}, {a}, {u})")];
    for h in &keyless_ua {
        assert_eq!(merged("visitors_ip_ua", h), stored_ua + 1, "{h} is not a stored identity");
    }

    // With the processor's key, the same visitor is already in the state: the count stays.
    let month = &day[..7];
    let mut store = KeyStore::open(&keys).unwrap();
    let key = store.key(month).unwrap().cloned().expect("the month's key exists");
    let (day_d, ip_v6) = (day.parse().unwrap(), ip.parse().unwrap());
    assert_eq!(merged("visitors_ip", &key.visitor_ip(&site, day_d, &ip_v6).to_string()), stored_ip);
    assert_eq!(merged("visitors_ip_ua", &key.visitor_ip_ua(&site, day_d, &ip_v6, &ua).to_string()), stored_ua);

    // The keys themselves are nowhere in ClickHouse: not in any table's DDL, not in the
    // settings, not in the query log (where the engine keeps one).
    let hexes: Vec<String> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .map(|p| std::fs::read_to_string(p).unwrap().trim().to_owned())
        .collect();
    assert!(!hexes.is_empty());
    let ddl: Vec<String> = support::block_on(
        ch.query(&format!("SELECT create_table_query FROM system.tables WHERE database = '{}'", run.db)).fetch_all(),
    )
    .unwrap();
    assert!(ddl.len() >= 8, "{ddl:?}");
    let settings: Vec<String> =
        support::block_on(ch.query("SELECT concat(name, '=', value) FROM system.settings").fetch_all()).unwrap();
    let logged: Vec<String> =
        support::block_on(ch.query("SELECT query FROM system.query_log WHERE event_date >= today() - 1").fetch_all())
            .unwrap_or_default();
    for hex in &hexes {
        for (what, texts) in [("DDL", &ddl), ("settings", &settings), ("query log", &logged)] {
            assert!(!texts.iter().any(|t| t.contains(hex.as_str())), "a visitor key appears in the {what}");
            // Also the key's bytes as ClickHouse would show an unhex()'d literal.
            assert!(!texts.iter().any(|t| t.to_ascii_lowercase().contains(&hex[..16])));
        }
    }

    // Destroying: the keys of the sample's months go for good (the CLI ops use).
    let cfg = run.config.to_str().unwrap();
    let list = support::sitelog(&["visitor-keys", "list", "-c", cfg], &[]);
    assert!(list.contains(&format!("{month}  active")), "{list}");
    let out = support::sitelog(&["visitor-keys", "destroy", "-c", cfg, "--through", month], &[]);
    assert!(out.contains(&format!("destroyed the visitor key of {month}")), "{out}");
    let list = support::sitelog(&["visitor-keys", "list", "-c", cfg], &[]);
    assert!(list.contains(&format!("{month}  destroyed")), "{list}");
    assert!(!keys.join(format!("{month}.key")).exists());
    assert_eq!(KeyStore::open(&keys).unwrap().key(month).unwrap(), None);
}
