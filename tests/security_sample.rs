//! Security analysis end to end on the generated sample: generated logs → `sitelog collect`
//! → tansu → `sitelog process` (detectors in the stream, event time) → ClickHouse →
//! `sitelog security events`. Every attack the generator injected (`truth/security.csv`,
//! written by the generator, never by parsing logs back) must be found with its scenario,
//! source, customer and site; no event may name a benign look-alike (`truth/benign.csv`: an
//! office behind one NAT address, an uptime monitor, a Googlebot burst); replaying the whole
//! topic in a second consumer group must add no event; and every query is audited.

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;

use chrono::{Days, Utc};
use sitelog::sample::{truth, GenerateOptions};

fn events(cfg: &str, since_days: u64) -> Vec<serde_json::Value> {
    let out = support::sitelog(
        &[
            "security",
            "events",
            "-c",
            cfg,
            "--since",
            &format!("{since_days}d"),
            "--format",
            "json",
            "--reason",
            "test: security_sample",
        ],
        &[],
    );
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Whether `ip` lies in `source` (an address or a CIDR network).
fn covers(source: &str, ip: &str) -> bool {
    match source.split_once('/') {
        None => source == ip,
        Some((net, bits)) => {
            let (Ok(IpAddr::V4(n)), Ok(IpAddr::V4(a)), Ok(b)) = (net.parse(), ip.parse(), bits.parse::<u32>()) else {
                return false;
            };
            let mask = u32::MAX.checked_shl(32 - b).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
    }
}

#[test]
fn injected_attacks_are_found_benign_traffic_is_not_and_a_replay_adds_nothing() {
    let today = Utc::now().with_timezone(&chrono_tz::Europe::Helsinki).date_naive();
    let dir = support::temp_dir("security");
    let opts = GenerateOptions {
        out: dir.join("sample"),
        seed: 5,
        start: today - Days::new(8),
        days: 7,
        customers: 12,
        rate: 12,
    };
    let run = support::run_sample(&opts, "security", &[], "");
    let cfg = run.config.to_str().unwrap();
    let truth_dir = opts.out.join("truth");
    let attacks = truth::read_security(&truth_dir).unwrap();
    let benign = truth::read_benign(&truth_dir).unwrap();
    assert!(attacks.len() >= 9, "the generator injects every scenario: {attacks:?}");

    let found = events(cfg, 30);
    let key = |e: &serde_json::Value| {
        (
            e["scenario"].as_str().unwrap().to_owned(),
            e["source"].as_str().unwrap().to_owned(),
            e["customer_id"].as_str().unwrap().to_owned(),
            e["site_host"].as_str().unwrap().to_owned(),
        )
    };
    let got: BTreeSet<_> = found.iter().map(key).collect();
    for a in &attacks {
        let want = (a.scenario.clone(), a.source.clone(), a.customer_id.clone(), a.site_host.clone());
        assert!(got.contains(&want), "injected {want:?} not found among {got:#?}");
    }
    // Contract of the JSON lines.
    for e in &found {
        for k in ["scenario", "source", "customer_id", "site_host", "first_seen", "last_seen", "severity"] {
            assert!(e[k].is_string(), "{k} in {e}");
        }
        assert!(e["count"].as_u64().unwrap() > 0);
        assert!(e["first_seen"].as_str().unwrap().ends_with('Z'));
    }
    // No false positive: no event names a benign look-alike's address.
    for (kind, source) in &benign {
        for e in &found {
            let s = e["source"].as_str().unwrap();
            let net = s.split('/').next().unwrap();
            assert!(!covers(source, net) && !covers(s, source), "benign {kind} {source} in event {e}");
        }
    }
    // Every event is about an attack the generator injected (nothing else in the sample is an
    // attack); a source may also trip a more generic scenario on the same site (a WordPress
    // scan is also HTTP probing).
    let attacked: BTreeSet<_> = attacks.iter().map(|a| (a.source.clone(), a.site_host.clone())).collect();
    let extra: Vec<_> =
        got.iter().filter(|(_, src, _, site)| !attacked.contains(&(src.clone(), site.clone()))).collect();
    assert!(extra.is_empty(), "events about sources the generator did not inject: {extra:#?}");

    // Investigation: the brute force's address across all customers, and its site.
    let brute = attacks.iter().find(|a| a.scenario == "wp-login-bruteforce").expect("a brute force");
    let reason = ["--reason", "test: security_sample"];
    let ip = support::sitelog(
        &[&["investigate", "ip", &brute.source, "-c", cfg, "--since", "30d", "--format", "json"][..], &reason[..]]
            .concat(),
        &[],
    );
    let ip: serde_json::Value = serde_json::from_str(ip.trim()).unwrap();
    let site = ip["sites"].as_array().unwrap().iter().find(|s| s["site_host"] == brute.site_host.as_str()).unwrap();
    assert!(site["logins"].as_u64().unwrap() >= 60, "{site}");
    assert_eq!(site["customer_id"], brute.customer_id.as_str());
    assert!(ip["events"].as_array().unwrap().iter().any(|e| e["scenario"] == "wp-login-bruteforce"), "{ip}");
    let s = support::sitelog(
        &[&["investigate", "site", &brute.site_host, "-c", cfg, "--since", "30d", "--format", "json"][..], &reason[..]]
            .concat(),
        &[],
    );
    let s: serde_json::Value = serde_json::from_str(s.trim()).unwrap();
    assert!(s["mix"]["from_event_sources"].as_u64().unwrap() >= 60, "{s}");
    assert!(s["events"].as_array().unwrap().iter().any(|e| e["source"] == brute.source.as_str()), "{s}");

    // The blocklist: attack sources only (never a benign look-alike such as Googlebot).
    let csv = support::sitelog(
        &["security", "blocklist", "-c", cfg, "--format", "csv", "--since", "30d", "--min-severity", "low"],
        &[],
    );
    let listed: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    let sources: BTreeSet<&str> = attacks.iter().map(|a| a.source.as_str()).collect();
    assert!(listed.iter().all(|l| sources.contains(l)), "{csv}");
    for (_, b) in &benign {
        assert!(!listed.contains(&b.as_str()), "{csv}");
    }

    // A second consumer group replays the whole topic into the same database: no new event.
    let replay = run.config.with_file_name("replay.toml");
    let text = std::fs::read_to_string(&run.config)
        .unwrap()
        .replace("group_id = \"security\"", "group_id = \"security-replay\"");
    std::fs::write(&replay, text).unwrap();
    support::sitelog(&["process", "-c", replay.to_str().unwrap(), "--exit-when-idle", "3"], &[]);
    let again = events(cfg, 30);
    assert_eq!(again.iter().map(key).collect::<BTreeSet<_>>(), got, "the replay found the same events");
    assert_eq!(again, found, "…with the same counts and times");

    // The same topic processed from scratch into a fresh database by another group (other
    // batch boundaries, other timing): exactly the same events — detection is a function of
    // the records and their event times, not of how they were read.
    let fresh_db = format!("{}_fresh", run.db);
    let fresh = run.config.with_file_name("fresh.toml");
    let text = std::fs::read_to_string(&run.config)
        .unwrap()
        .replace("group_id = \"security\"", "group_id = \"security-fresh\"")
        .replace(&format!("database = \"{}\"", run.db), &format!("database = \"{fresh_db}\""))
        .replace("[sink]\n", "[sink]\nbatch_max_records = 777\nlinger_ms = 50\n");
    std::fs::write(&fresh, text).unwrap();
    let fresh_cfg = fresh.to_str().unwrap();
    support::sitelog(&["schema", "migrate", "-c", fresh_cfg], &[]);
    support::sitelog(&["customers", "import", opts.out.join("register.json").to_str().unwrap(), "-c", fresh_cfg], &[]);
    support::sitelog(&["process", "-c", fresh_cfg, "--exit-when-idle", "3"], &[]);
    assert_eq!(events(fresh_cfg, 30), found, "a backfill from scratch finds the same events");

    // Accountability: both queries on the first database left an audit record with its reason.
    let audited: u64 = support::block_on(
        run.client.query("SELECT count() FROM access_audit WHERE reason = 'test: security_sample'").fetch_one(),
    )
    .unwrap();
    assert_eq!(audited, 4, "two event queries and two investigations");
    let audit = support::sitelog(&["audit", "list", "-c", cfg, "--format", "json"], &[]);
    assert!(audit.lines().filter(|l| l.contains("investigate ip")).count() == 1, "{audit}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["security", "events", "-c", cfg, "--reason", " "])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--reason must say why"));
}
