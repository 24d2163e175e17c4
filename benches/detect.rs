//! Security detection's cost in the processor (issue: ≤ 20 % more CPU per row) and its memory
//! bound under a spray of distinct addresses.
//!
//! 1. CPU per row: the processor's per-row work — derive (attribution, classification, bot
//!    list), keyed visitor identities — with and without every built-in scenario observing the
//!    row, on a realistic mix (pages, assets, logins, bots, 404s and a brute force).
//! 2. A spray of 1,000,000 distinct addresses each POSTing `wp-login.php`: the detector's
//!    buckets stay within `[security] max_buckets` and the process's peak RSS is printed.
//!
//! Off and on (and each scenario alone) alternate within every round, and the best pass of each
//! counts; a split pass per round also times detection apart from derive within the same pass.
//!
//! Run: `cargo bench --bench detect` (`SITELOG_BENCH_ROUNDS`, default 7). No services needed.

mod support {
    pub mod usage;
}

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use sitelog_processor::attribute::SiteMap;
use sitelog_processor::derive::Deriver;
use sitelog_processor::security::detector::{Detector, Scenarios};
use sitelog_processor::security::scenario;
use sitelog_processor::store::rows::AccessLogRow;
use sitelog_processor::visitors::{KeyStore, VisitorStamper};
use sitelog_schema::{AccessRecord, SourceId};

const PATHS: &[&str] = &[
    "/",
    "/blog/syksyn-uutuudet/",
    "/wp-content/themes/astra/style.css",
    "/wp-content/uploads/2026/10/hero-1920x1080.jpg",
    "/shop/",
    "/wp-admin/admin-ajax.php",
    "/product/lahjakortti/",
    "/wp-content/plugins/woocommerce/assets/js/frontend.min.js",
];
const UAS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];

fn records(n: usize) -> Vec<AccessRecord<'static>> {
    let start = 1_793_000_000_000_000i64;
    (0..n)
        .map(|i| {
            // Visitors make a few requests each (a page and its assets): 12 in a row from one
            // address on one site, 40,000 addresses in all; every 50th request is a brute force.
            let brute = i % 50 == 0;
            let visitor = (i / 12) % 40_000;
            AccessRecord {
                ts_micros: start + i as i64 * 20_000,
                tz_offset_secs: 7200,
                host: ["kahvilaaroma.fi", "kauppa.kahvilaaroma.fi", "rakennuskivi.fi", "puutarha.fi"][visitor % 4]
                    .into(),
                client_ip: Some(IpAddr::V4(if brute {
                    Ipv4Addr::new(185, 220, 101, 47)
                } else {
                    Ipv4Addr::new(84, 20, (visitor / 250 % 256) as u8, (visitor % 250) as u8)
                })),
                method: if brute { "POST".into() } else { "GET".into() },
                path: if brute { "/wp-login.php".into() } else { PATHS[i % PATHS.len()].into() },
                query: if i % 9 == 0 { "ver=6.6.2".into() } else { "".into() },
                protocol: "HTTP/2.0".into(),
                status: if i % 31 == 0 { 404 } else { 200 },
                bytes_sent: 512 + (i as u64 * 7919) % 90_000,
                referer: "https://www.google.com/".into(),
                user_agent: UAS[i % UAS.len()].into(),
                request_time_us: Some((i as u64 * 37) % 400_000),
                source: SourceId { fingerprint: 1, offset: i as u64 * 200 },
                ..Default::default()
            }
        })
        .collect()
}

/// Nanoseconds per row of one pass: derive, visitor identities and, with `scenarios`, detection.
fn pass(recs: &[AccessRecord<'static>], scenarios: Option<&Arc<Scenarios>>, dir: &std::path::Path) -> f64 {
    let map = SiteMap::default();
    let mut deriver = Deriver::new();
    let mut stamper = VisitorStamper::new(KeyStore::open(dir).unwrap());
    let mut detector = scenarios.map(|s| Detector::new(s.clone(), 200_000));
    let t = Instant::now();
    for r in recs {
        let mut row: AccessLogRow = deriver.row(r, &map);
        stamper.stamp(&mut row).unwrap();
        if let Some(d) = &mut detector {
            d.observe(&row);
        }
        std::hint::black_box(&row);
    }
    if let Some(d) = &mut detector {
        std::hint::black_box(d.drain().0.len());
    }
    t.elapsed().as_secs_f64() * 1e9 / recs.len() as f64
}

/// One pass with detection on, timing its two parts separately in chunks of 256 records (rows
/// derived, then observed while still in cache): (derive + identities, detection) ns per row.
/// Both parts are measured in the same moments, so their ratio does not drift with the VM's
/// speed as two separate passes do.
fn pass_split(recs: &[AccessRecord<'static>], scenarios: &Arc<Scenarios>, dir: &std::path::Path) -> (f64, f64) {
    let map = SiteMap::default();
    let mut deriver = Deriver::new();
    let mut stamper = VisitorStamper::new(KeyStore::open(dir).unwrap());
    let mut detector = Detector::new(scenarios.clone(), 200_000);
    let (mut base, mut detect) = (0f64, 0f64);
    let mut rows: Vec<AccessLogRow> = Vec::with_capacity(256);
    for chunk in recs.chunks(256) {
        let t0 = Instant::now();
        for r in chunk {
            let mut row: AccessLogRow = deriver.row(r, &map);
            stamper.stamp(&mut row).unwrap();
            rows.push(row);
        }
        let t1 = Instant::now();
        for row in &rows {
            detector.observe(row);
        }
        let t2 = Instant::now();
        rows.clear();
        let t3 = Instant::now();
        base += (t1 - t0 + (t3 - t2)).as_secs_f64();
        detect += (t2 - t1).as_secs_f64();
    }
    let t = Instant::now();
    std::hint::black_box(detector.drain().0.len());
    detect += t.elapsed().as_secs_f64();
    let n = recs.len() as f64;
    (base * 1e9 / n, detect * 1e9 / n)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("detect: benchmark");
        return;
    }
    let recs = records(500_000);
    let rounds: usize = std::env::var("SITELOG_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let dir = std::env::temp_dir().join(format!("sitelog-bench-keys-{}", std::process::id()));
    // Configurations: off, all scenarios, then each scenario alone. The machine's speed drifts
    // (see Parsing), so every round runs each configuration once, alternating, and the best
    // pass of each counts: off and on are measured in the same minutes.
    let names: Vec<String> = scenario::load(&Default::default()).unwrap().into_iter().map(|s| s.name).collect();
    let mut configs: Vec<(String, Option<Arc<Scenarios>>)> = vec![
        ("off".into(), None),
        ("on".into(), Some(Scenarios::new(scenario::load(&Default::default()).unwrap()).unwrap())),
    ];
    for only in &names {
        let o = names
            .iter()
            .filter(|n| *n != only)
            .map(|n| (n.clone(), scenario::Override { enabled: Some(false), ..Default::default() }))
            .collect();
        configs.push((only.clone(), Some(Scenarios::new(scenario::load(&o).unwrap()).unwrap())));
    }
    let mut best = vec![f64::MAX; configs.len()];
    let mut split = (f64::MAX, f64::MAX);
    for _ in 0..rounds {
        for (i, (_, s)) in configs.iter().enumerate() {
            best[i] = best[i].min(pass(&recs, s.as_ref(), &dir));
        }
        let (b, d) = pass_split(&recs, configs[1].1.as_ref().unwrap(), &dir);
        split = (split.0.min(b), split.1.min(d));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (off, on) = (best[0], best[1]);
    println!(
        "## Processor CPU per row (derive + visitor identities), best of {rounds} alternating passes over {} rows",
        recs.len()
    );
    println!("detection off: {off:.0} ns/row ({:.2} M rows/s)", 1e3 / off);
    println!(
        "detection on:  {on:.0} ns/row ({:.2} M rows/s), +{:.0} ns/row = +{:.1} %",
        1e3 / on,
        on - off,
        (on / off - 1.0) * 100.0
    );
    for (i, (name, _)) in configs.iter().enumerate().skip(2) {
        println!("  only {name:<22} +{:>4.0} ns/row", best[i] - off);
    }
    println!(
        "timed apart within the same passes (chunks of 256 rows): derive + identities {:.0} ns/row, detection {:.0} ns/row = +{:.1} %",
        split.0,
        split.1,
        split.1 / split.0 * 100.0
    );

    println!("\n## A spray of 1,000,000 distinct addresses (POST /wp-login.php), max_buckets 200000");
    let scenarios = Scenarios::new(scenario::load(&Default::default()).unwrap()).unwrap();
    let mut d = Detector::new(scenarios, 200_000);
    let rss_before = support::usage::peak_rss_mb();
    let t = Instant::now();
    let mut peak = 0;
    for i in 0..1_000_000u32 {
        let ip = Ipv4Addr::from(0x0a00_0000 + i).to_ipv6_mapped();
        let row = AccessLogRow {
            ts: 1_793_000_000_000_000 + i as i64 * 1_000,
            site_host: "kahvilaaroma.fi".into(),
            site_id: "S1".into(),
            customer_id: "C1".into(),
            client_ip: ip,
            client_net: ip,
            method: "POST".into(),
            path: "/wp-login.php".into(),
            status: 200,
            user_agent: "Mozilla/5.0".into(),
            request_class: "wp-login".into(),
            ..Default::default()
        };
        d.observe(&row);
        peak = peak.max(d.buckets());
    }
    println!(
        "{:.1} s; buckets + signal groups at most {peak} (each bounded by 200000); {} evicted; peak RSS {:.0} MB (before the spray {:.0} MB)",
        t.elapsed().as_secs_f64(),
        d.evictions,
        support::usage::peak_rss_mb(),
        rss_before
    );
}
