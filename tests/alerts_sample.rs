//! Disruption alerting end to end on the generated sample: generated logs (four web servers,
//! with a site outage, a server outage, a latency degradation and a tiny site with 2 errors in
//! 3 requests) → `sitelog collect` → tansu → `sitelog process` → `health_minute` →
//! `sitelog alerts run`. Checked against the generator's ground truth (`truth/incidents.csv`,
//! `truth/no_incident.csv`, `register.json`), never against sitelog's own output:
//!
//! - exactly one incident per injected disruption, of the right kind and cause, opened within
//!   2 minutes of event time of its start, resolved after its end, with the right affected
//!   sites and customers; none for the tiny site; nothing else;
//! - the live run (evaluating in steps, killed with SIGKILL after its first notification is
//!   delivered and recorded, and restarted) stores the same incidents as a backfill (`--from/--to`) finds;
//! - a webhook receiver gets every transition (opened, resolved) exactly once;
//! - `incidents contacts` lists the affected customers' contact persons from the register.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, Utc};
use sitelog::sample::{truth, GenerateOptions};
use sitelog_schema::register::RegisterExport;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn injected_disruptions_are_one_incident_each_live_equals_backfill_and_webhooks_get_each_transition_once() {
    let today = Utc::now().with_timezone(&chrono_tz::Europe::Helsinki).date_naive();
    let dir = support::temp_dir("alerts");
    let opts = GenerateOptions {
        out: dir.join("sample"),
        seed: 11,
        start: today - Days::new(8),
        days: 7,
        customers: 12,
        rate: 12,
    };
    let (url, hooks) = support::webhook::receiver();
    let extra = format!(
        "\n[alerts]\npoll_interval_ms = 200\nmax_step_minutes = 15\n\n[[alerts.webhooks]]\nname = \"test\"\nurl = \"{url}\"\nmax_attempts = 3\n"
    );
    let run = support::run_sample(&opts, "alerts", &[], &extra);
    let cfg = run.config.to_str().unwrap();
    let truth_dir = opts.out.join("truth");
    let want = truth::read_incidents(&truth_dir).unwrap();
    let quiet = truth::read_no_incident(&truth_dir).unwrap();
    assert!(want.iter().any(|w| w.kind == "server") && want.iter().any(|w| w.cause == "latency"), "{want:?}");
    let from = opts.start.and_hms_opt(0, 0, 0).unwrap().and_utc() - chrono::Duration::hours(3);
    let to = (opts.start + Days::new(u64::from(opts.days) + 1)).and_hms_opt(0, 0, 0).unwrap().and_utc();
    let (from_s, to_s) = (from.to_rfc3339(), to.to_rfc3339());

    // Live, in 15-minute steps from the sample's start; SIGKILL after the first notification.
    let live = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sitelog"))
            .args(["alerts", "run", "-c", cfg, "--evaluator", "live", "--start", &from_s, "--exit-when-caught-up"])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap()
    };
    let mut first = live();
    let started = Instant::now();
    // Kill once the first delivery is recorded (mid-incident: its resolution is minutes of
    // event time and several steps later). Killed between the receiver's answer and that
    // record, a run sends the transition again after the restart: the window the
    // Idempotency-Key header covers, which no sender can close alone.
    let recorded = || -> u64 {
        support::block_on(run.client.query("SELECT count() FROM incident_notifications").fetch_one()).unwrap()
    };
    let killed = loop {
        if !hooks.lock().unwrap().is_empty() && recorded() > 0 {
            first.kill().unwrap(); // SIGKILL: no drain, no final progress
            first.wait().unwrap();
            break true;
        }
        if first.try_wait().unwrap().is_some() {
            break false;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "no notification within 5 minutes");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(killed, "the live run finished before any notification");
    let mut second = live();
    let status = second.wait().unwrap();
    assert!(status.success(), "restarted live run: {status}");

    // What live stored.
    let listed =
        support::sitelog(&["incidents", "list", "-c", cfg, "--from", &from_s, "--to", &to_s, "--format", "json"], &[]);
    let stored: Vec<serde_json::Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for inc in &stored {
        for k in ["id", "kind", "opened_at"] {
            assert!(inc[k].is_string(), "{k} in {inc}");
        }
        assert!(inc["affected_customers"].is_array() && inc.get("resolved_at").is_some(), "{inc}");
    }

    // Exactly one incident per injected disruption; nothing else.
    let mut matched = BTreeSet::new();
    for w in &want {
        let hits: Vec<&serde_json::Value> = stored
            .iter()
            .filter(|i| {
                i["kind"] == w.kind.as_str()
                    && if w.kind == "site" {
                        i["site_host"] == w.site_host.as_str()
                    } else {
                        i["server"] == w.server.as_str()
                    }
            })
            .collect();
        assert_eq!(hits.len(), 1, "{} ({} {}{}): {hits:#?}", w.scenario, w.kind, w.site_host, w.server);
        let inc = hits[0];
        matched.insert(inc["id"].as_str().unwrap().to_owned());
        let opened = t(inc["opened_at"].as_str().unwrap());
        assert!(
            opened > w.start && opened - w.start <= chrono::Duration::minutes(2),
            "{}: opened {opened}, started {}",
            w.scenario,
            w.start
        );
        let resolved = t(inc["resolved_at"].as_str().expect("resolved"));
        assert!(resolved > w.end, "{}: resolved {resolved} before its end {}", w.scenario, w.end);
        assert_eq!(inc["cause"], w.cause.as_str(), "{}", w.scenario);
        let customers: Vec<String> = serde_json::from_value(inc["affected_customers"].clone()).unwrap();
        assert_eq!(customers, w.affected_customers, "{}", w.scenario);
        let sites: Vec<String> = serde_json::from_value(inc["sites"].clone()).unwrap();
        assert_eq!(sites, w.affected_sites, "{}", w.scenario);
        if w.kind == "site" {
            assert_eq!(inc["server"], w.server.as_str(), "{}", w.scenario);
        }
    }
    let extra: Vec<_> = stored.iter().filter(|i| !matched.contains(i["id"].as_str().unwrap())).collect();
    assert!(extra.is_empty(), "incidents the generator did not inject: {extra:#?}");
    for q in &quiet {
        assert!(
            stored.iter().all(|i| !i["sites"].as_array().unwrap().iter().any(|s| s == q.site_host.as_str())),
            "the tiny site {} must not be an incident",
            q.site_host
        );
    }

    // A backfill of the same window finds the same transitions (same ids, same times).
    let dry = support::sitelog(&["alerts", "run", "-c", cfg, "--from", &from_s, "--to", &to_s, "--dry-run"], &[]);
    let backfill: BTreeSet<(String, String, String)> = dry
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].to_owned(), f[2].to_owned(), f[0].to_owned())
        })
        .collect();
    let mut live_transitions = BTreeSet::new();
    for i in &stored {
        let id = i["id"].as_str().unwrap().to_owned();
        live_transitions.insert((id.clone(), "opened".to_owned(), i["opened_at"].as_str().unwrap().to_owned()));
        live_transitions.insert((id, "resolved".to_owned(), i["resolved_at"].as_str().unwrap().to_owned()));
    }
    assert_eq!(backfill, live_transitions, "backfill vs live");

    // Webhooks: each transition exactly once, across the kill and restart.
    let got = hooks.lock().unwrap().clone();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for h in &got {
        *counts.entry(h["event_id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> =
        live_transitions.iter().map(|(id, tr, _)| (format!("{id}:{tr}"), 1)).collect();
    assert_eq!(counts, expected, "webhook deliveries");

    // Contacts of the affected customers, from the register (joined at query time).
    let register: RegisterExport =
        serde_json::from_str(&std::fs::read_to_string(opts.out.join("register.json")).unwrap()).unwrap();
    for i in &stored {
        let id = i["id"].as_str().unwrap();
        let out = support::sitelog(&["incidents", "contacts", id, "-c", cfg, "--format", "json"], &[]);
        let got: BTreeSet<(String, String)> = out
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["customer_id"].as_str().unwrap().to_owned(), v["email"].as_str().unwrap().to_owned())
            })
            .collect();
        let customers: BTreeSet<String> = serde_json::from_value(i["affected_customers"].clone()).unwrap();
        let want: BTreeSet<(String, String)> = register
            .customers
            .iter()
            .filter(|c| customers.contains(&c.customer_id))
            .flat_map(|c| c.contacts.iter().map(move |p| (c.customer_id.clone(), p.email.clone())))
            .collect();
        assert_eq!(got, want, "contacts of {id}");
        let shown = support::sitelog(&["incidents", "show", id, "-c", cfg, "--format", "json"], &[]);
        let shown: serde_json::Value = serde_json::from_str(shown.trim()).unwrap();
        assert_eq!(&shown, i, "show = list");
    }
    println!("alerts_sample: {} incidents ({} injected), {} webhook deliveries", stored.len(), want.len(), got.len());
}
