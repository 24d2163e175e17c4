//! Late data and closed runs: collector heartbeats decide whether a month is complete (`--strict` and
//! `--final` refuse with exit 2 naming the lagging sources); a final run freezes the month
//! (content hash, register version); re-running prints the frozen figures, `--verify` shows
//! what changed since; records that arrive after closing are billed by the next run as
//! adjustments, once; a tampered closed run is refused.

mod billing_common;
mod support;

use billing_common::*;

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(out), stderr(out)))
}

fn site<'a>(j: &'a serde_json::Value, site: &str) -> &'a serde_json::Value {
    j["customers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["sites"].as_array().unwrap())
        .find(|s| s["site_id"] == site)
        .unwrap()
}

#[test]
fn watermarks_strict_final_closed_runs_and_adjustments() {
    let db = db(support::stack(), "billruns");
    import(
        &db,
        vec![plan("req", "requests", 2), plan("big", "requests", 100)],
        vec![
            customer(0, "C1", vec![billing_common::site("S1", "a.fi", "req")]),
            customer(1, "C2", vec![billing_common::site("S2", "b.fi", "big")]),
        ],
    );
    let sept = vec![
        req(&y("2026-09-10T10:00:00Z"), "C1", "S1", "a.fi"),
        req(&y("2026-09-10T11:00:00Z"), "C1", "S1", "a.fi"),
        req(&y("2026-09-11T10:00:00Z"), "C1", "S1", "a.fi"),
        req(&y("2026-09-12T10:00:00Z"), "C2", "S2", "b.fi"),
    ];
    insert(&db, &sept, 1);
    // Hand-made records in last year's September–November (`y`): every month of it is over.
    // September ends 2026-09-30T21:00Z; with 2 h grace every source must reach 23:00Z.
    // a.fi is collected by web-a, b.fi by web-b; completeness follows their heartbeats.
    progress(&db, 1, "a.fi", &y("2026-10-15T00:00:00Z"), 3);
    progress(&db, 2, "b.fi", &y("2026-09-30T22:30:00Z"), 1);
    heartbeat(&db, "web-a", &y("2026-10-15T00:00:00Z"), false);
    heartbeat(&db, "web-b", &y("2026-09-30T22:30:00Z"), false);

    let out = billing(&db, &["--month", &y("2026-09"), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let j = json(&out);
    assert_eq!(j["status"], "provisional");
    let lagging = j["completeness"]["lagging"].as_array().unwrap();
    assert_eq!(lagging.len(), 1);
    assert_eq!(
        (lagging[0]["server"].as_str(), lagging[0]["source"].as_str(), lagging[0]["idle"].as_bool()),
        (Some("web-b"), Some("sites"), Some(false))
    );
    assert_eq!(lagging[0]["delivered_through"].as_str(), Some(y("2026-09-30T22:30:00Z").as_str()));

    for flag in ["--strict", "--final"] {
        let out = billing(&db, &["--month", &y("2026-09"), flag]);
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&y("lagging source: web-b/sites delivered through 2026-09-30T22:30:00Z")),
            "{flag}: {err}"
        );
        assert!(!err.contains("web-a"), "{flag}: only lagging sources are named: {err}");
        assert!(out.stdout.is_empty(), "{flag}: no report when refused");
    }
    assert_eq!(support::block_on(db.client.query("SELECT count() FROM billing_runs").fetch_one::<u64>()).unwrap(), 0);

    // b.fi catches up: September is complete and can be closed.
    progress(&db, 2, "b.fi", &y("2026-10-20T00:00:00Z"), 1);
    heartbeat(&db, "web-b", &y("2026-10-20T00:00:00Z"), false);
    let out =
        billing(&db, &["--month", &y("2026-09"), "--strict", "--final", "--closed-by", "laskutus", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let closed = json(&out);
    assert_eq!(closed["status"], "closed");
    let hash = closed["closed"]["content_hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64);
    assert_eq!(
        (closed["closed"]["closed_by"].as_str(), closed["closed"]["register_version"].as_u64()),
        (Some("laskutus"), Some(1))
    );
    assert_eq!((site(&closed, "S1")["requests"].as_u64(), site(&closed, "S1")["overage"].as_u64()), (Some(3), Some(1)));

    // Two records for September arrive after closing (a collector that was offline).
    insert(
        &db,
        &[req(&y("2026-09-20T10:00:00Z"), "C1", "S1", "a.fi"), req(&y("2026-09-21T10:00:00Z"), "C1", "S1", "a.fi")],
        3,
    );
    progress(&db, 3, "a.fi", &y("2026-09-21T10:00:00Z"), 2);

    // Re-running the closed month prints the stored figures, unchanged.
    let out = billing(&db, &["--month", &y("2026-09"), "--final", "--format", "json"]);
    assert!(out.status.success());
    let again = json(&out);
    assert_eq!(again["closed"], closed["closed"], "the same closed run");
    assert_eq!(site(&again, "S1")["requests"], 3, "a closed invoice never changes");
    assert_eq!(support::block_on(db.client.query("SELECT count() FROM billing_runs").fetch_one::<u64>()).unwrap(), 1);
    // --verify shows what a fresh computation would say, and exits 3.
    let out = billing(&db, &["--month", &y("2026-09"), "--verify", "--format", "csv"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out)
            .lines()
            .any(|l| l
                == y("MISMATCH closed 2026-09 C1 S1 requests: expected 3 (closed run), found 5 (fresh computation)")),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).lines().skip(1).all(|l| l.starts_with(&y("2026-09,closed,"))), "{}", stdout(&out));

    // October's run carries them as an adjustment to September: +2 requests, overage 1 → 3.
    let out = billing(&db, &["--month", &y("2026-10"), "--format", "csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = csv_rows(&stdout(&out));
    let adj: Vec<_> = rows.iter().filter(|r| r["line"] == "adjustment").collect();
    assert_eq!(adj.len(), 1, "{rows:?}");
    let a = adj[0];
    for (k, v) in [
        ("month", y("2026-09").as_str()),
        ("customer_id", "C1"),
        ("site_id", "S1"),
        ("billed_usage", "2"),
        ("overage", "2"),
        ("requests", "2"),
        ("bytes_sent", "2000"),
    ] {
        assert_eq!(a[k], v, "adjustment {k}");
    }
    // Closing October records the adjustment with it (October is complete once both
    // sources passed 1 November 00:00 UTC).
    let out = billing(&db, &["--month", &y("2026-10"), "--final"]);
    assert_eq!(out.status.code(), Some(2), "web-a delivered only up to 15 October: {}", stderr(&out));
    assert!(
        stderr(&out).contains(&y("lagging source: web-a/sites delivered through 2026-10-15T00:00:00Z")),
        "{}",
        stderr(&out)
    );
    progress(&db, 1, "a.fi", &y("2026-11-20T00:00:00Z"), 3);
    progress(&db, 2, "b.fi", &y("2026-11-20T00:00:00Z"), 1);
    heartbeat(&db, "web-a", &y("2026-11-20T00:00:00Z"), false);
    // web-b has only parked sites left: nothing newer than 20 October, but idle now.
    heartbeat(&db, "web-b", &y("2026-10-20T00:00:00Z"), true);
    let out = billing(&db, &["--month", &y("2026-10"), "--final", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let oct = json(&out);
    assert_eq!((oct["status"].as_str(), oct["adjustments"][0]["requests"].as_i64()), (Some("closed"), Some(2)));
    // Billed once: November has nothing pending for September…
    let nov = json(&billing(&db, &["--month", &y("2026-11"), "--format", "json"]));
    assert_eq!(nov["adjustments"].as_array().unwrap().len(), 0, "{}", nov["adjustments"]);
    // …until another late record arrives.
    insert(&db, &[req(&y("2026-09-25T10:00:00Z"), "C1", "S1", "a.fi")], 4);
    let nov = json(&billing(&db, &["--month", &y("2026-11"), "--format", "json"]));
    let adj = nov["adjustments"].as_array().unwrap();
    assert_eq!(adj.len(), 1);
    assert_eq!(
        (adj[0]["applies_to"].as_str(), adj[0]["requests"].as_i64(), adj[0]["overage"].as_i64()),
        (Some(y("2026-09").as_str()), Some(1), Some(1))
    );
    // Re-running October shows the adjustment its run recorded.
    let oct2 = json(&billing(&db, &["--month", &y("2026-10"), "--format", "json"]));
    assert_eq!(oct2["closed"], oct["closed"]);
    assert_eq!(oct2["adjustments"][0]["requests"], 2);

    // A closed run whose stored lines were edited is refused.
    exec(&db, &y("ALTER TABLE billing_run_lines UPDATE requests = 999 WHERE month = '2026-09' AND kind = 'site' AND site_id = 'S1' SETTINGS mutations_sync = 1"));
    let out = billing(&db, &["--month", &y("2026-09")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains(&format!("the closed run of {} does not match its content hash (stored {hash}", y("2026-09"))),
        "{}",
        stderr(&out)
    );
}
