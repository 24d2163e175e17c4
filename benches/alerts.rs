//! Disruption alerting's cost: every rule (both burn-rate rules, latency, grouping) evaluated
//! for 10,000 sites on 40 servers over one day of per-minute health, minute by minute as
//! `alerts run` does — once with healthy traffic, once with a server and a few sites failing.
//!
//! Run: `cargo bench --bench alerts`. No services needed (the ClickHouse read is measured by
//! `tests/alerts_sample.rs`'s timing line instead: it depends on the server).

use std::time::Instant;

use sitelog_processor::diagnosis::alerts::{AlertRules, Change, Engine, MinuteCounts};

const SITES: usize = 10_000;
const SERVERS: usize = 40;
const MINUTES: i64 = 1440;
const T0: i64 = 1_790_000_000 / 86_400 * 86_400;

fn minute_rows(m: i64, failing: bool) -> Vec<MinuteCounts> {
    (0..SITES)
        .filter(|i| (*i as i64 + m) % 3 == 0 || i % 10 == 0) // most sites: traffic every third minute
        .map(|i| {
            let requests = 1 + (i % 7) as u64 * 3;
            let server = i % SERVERS;
            let bad = failing && ((600..630).contains(&m) && server == 7 || (900..920).contains(&m) && i % 1000 == 1);
            MinuteCounts {
                site_host: format!("site{i}.example.fi"),
                server: format!("web-{server:02}"),
                customer_id: format!("c{}", i / 3),
                requests,
                errors: if bad { requests } else { u64::from((i as i64 + m) % 97 == 0) },
                slow: 0,
            }
        })
        .collect()
}

fn run(failing: bool) {
    // Rows are built before timing: the bench measures evaluation, not string formatting.
    let rows: Vec<Vec<MinuteCounts>> = (0..MINUTES).map(|m| minute_rows(m, failing)).collect();
    let site_minutes: usize = rows.iter().map(Vec::len).sum();
    let mut e = Engine::new(AlertRules::default(), 0.999);
    let started = Instant::now();
    let (mut opened, mut resolved) = (0, 0);
    for (m, r) in rows.iter().enumerate() {
        e.add_minute(T0 + m as i64 * 60, r);
        for t in e.evaluate() {
            match t.change {
                Change::Opened => opened += 1,
                Change::Resolved => resolved += 1,
                Change::Updated => {}
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "alerts {}: {SITES} sites × {MINUTES} minutes ({site_minutes} site-minutes with traffic): {secs:.2} s, \
         {:.0} ns per site-minute; {opened} incidents opened, {resolved} resolved",
        if failing { "with failures" } else { "healthy" },
        secs * 1e9 / site_minutes as f64
    );
}

fn main() {
    run(false);
    run(true);
}
