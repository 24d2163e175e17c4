//! Parsing throughput per core: generated access logs (deterministic, a few hundred MB each)
//! split into lines with memchr and parsed into typed `AccessRecord`s, one thread.
//!
//! `cargo bench --bench parse` — figures and the machine are recorded in `benches/README.md`.
//! `SITELOG_BENCH_MB` sets the data size per format (default 256). After criterion's figure for
//! each format, `SITELOG_BENCH_PASSES` plain timed passes print their best and median.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sitelog_ingest::format::{Escape, LogFormat};
use sitelog_ingest::lines::{Line, LineReader};
use sitelog_schema::AccessRecord;

/// The 20-field custom nginx format of the benchmark (what a tuned WordPress host logs).
pub const CUSTOM_NGINX: &str = concat!(
    r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "#,
    r#""$http_user_agent" "$http_x_forwarded_for" $host rt=$request_time urt="$upstream_response_time" "#,
    r#"ua="$upstream_addr" us="$upstream_status" cs=$upstream_cache_status $scheme $ssl_protocol "#,
    r#"$request_length $connection $pipe"#
);

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.6668.81 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "WordPress/6.6.2; https://www.example.fi",
    "python-requests/2.32.3",
    "curl/8.5.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36 Edg/129.0.0.0",
];

const PATHS: &[&str] = &[
    "/",
    "/wp-login.php",
    "/xmlrpc.php",
    "/wp-admin/admin-ajax.php",
    "/wp-content/uploads/2026/09/hero-image-1024x768.jpg",
    "/wp-content/themes/astra/assets/css/minified/main.min.css",
    "/wp-includes/js/jquery/jquery.min.js",
    "/blog/how-to-choose-a-sauna-heater/",
    "/feed/",
    "/wp-json/wp/v2/posts",
    "/product/organic-coffee-beans-1kg/",
    "/wp-content/plugins/woocommerce/assets/js/frontend/cart-fragments.min.js",
    "/favicon.ico",
    "/robots.txt",
    "/.env",
];

const QUERIES: &[&str] =
    &["", "", "", "", "ver=6.6.2", "ver=3.7.1", "s=sauna+heater", "per_page=10&page=2", "add-to-cart=1234", "p=123"];

/// A deterministic, realistic mix of requests to WordPress sites.
fn records(n: usize, seed: u64) -> Vec<(AccessRecord<'static>, Vec<(&'static str, String)>)> {
    let mut rng = Rng(seed | 1);
    let mut ts: i64 = 1_791_579_600_000_000; // 2026-10-10 00:00 +03:00
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        ts += rng.below(40_000) as i64;
        let client = if rng.below(100) < 85 {
            let a = rng.below(5000) as u32;
            std::net::IpAddr::from([(a % 200 + 20) as u8, (a / 200) as u8, (a * 7 % 256) as u8, (a % 250 + 1) as u8])
        } else {
            let a = rng.below(5000) as u16;
            std::net::IpAddr::from([0x2001, 0x0db8, a, 0x12, 0, 0, a / 3, 1])
        };
        let status = match rng.below(100) {
            0..80 => 200,
            80..86 => 304,
            86..90 => 301,
            90..96 => 404,
            96..97 => 403,
            97..98 => 502,
            _ => 302,
        };
        let site = format!("site{}.example.fi", rng.below(200));
        let referer = match rng.below(10) {
            0..4 => String::new(),
            4..5 => "https://www.google.com/".to_owned(),
            _ => format!("https://{site}{}", rng.pick(PATHS)),
        };
        let rt = rng.below(800_000) / 1000 * 1000;
        let rec = AccessRecord {
            ts_micros: ts / 1_000_000 * 1_000_000,
            tz_offset_secs: 3 * 3600,
            host: site.into(),
            client_ip: Some(client),
            remote_user: if rng.below(100) == 0 { "admin".into() } else { "".into() },
            method: match rng.below(100) {
                0..85 => "GET",
                85..97 => "POST",
                _ => "HEAD",
            }
            .into(),
            path: rng.pick(PATHS).into(),
            query: rng.pick(QUERIES).into(),
            protocol: match rng.below(20) {
                0..9 => "HTTP/1.1",
                9..19 => "HTTP/2.0",
                _ => "HTTP/3.0",
            }
            .into(),
            status,
            bytes_sent: if status == 304 { 0 } else { rng.below(300_000) },
            referer: referer.into(),
            user_agent: rng.pick(AGENTS).into(),
            request_time_us: Some(rt),
            upstream_time_us: Some(rt.saturating_sub(1000)),
            upstream_count: 1,
            upstream_status: status,
            cache_status: ["HIT", "MISS", "BYPASS", "EXPIRED"][rng.below(4) as usize].into(),
            ..Default::default()
        };
        let extras = vec![
            ("$upstream_addr", format!("unix:/run/php/php8.3-fpm-site{}.sock", rng.below(200))),
            ("$scheme", "https".to_owned()),
            ("$ssl_protocol", "TLSv1.3".to_owned()),
            ("$request_length", (300 + rng.below(900)).to_string()),
            ("$connection", (1_000_000 + rng.below(1_000_000)).to_string()),
            ("$pipe", ".".to_owned()),
        ];
        out.push((rec, extras));
    }
    out
}

/// About `mb` MB of log lines in `fmt`, newline-terminated, and the line count.
pub fn generate(fmt: &LogFormat, mb: usize, seed: u64) -> (Vec<u8>, u64) {
    let recs = records(10_000, seed);
    let mut data = Vec::with_capacity(mb << 20);
    let mut lines = 0u64;
    let mut i = 0usize;
    while data.len() < mb << 20 {
        let (rec, extras) = &recs[i % recs.len()];
        let mut rec = rec.clone();
        // Keep time moving so timestamps differ across repetitions of the sample.
        rec.ts_micros += (i / recs.len()) as i64 * 400_000_000;
        let extras: Vec<(&str, &str)> = extras.iter().map(|(k, v)| (*k, v.as_str())).collect();
        fmt.render(&rec, &extras, &mut data);
        data.push(b'\n');
        lines += 1;
        i += 1;
    }
    (data, lines)
}

/// Splits with memchr and parses every line; returns a checksum so nothing is optimized away.
fn parse_all(fmt: &LogFormat, data: &[u8]) -> (u64, u64) {
    let mut sum = 0u64;
    let mut errors = 0u64;
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', data) {
        let line = &data[start..nl];
        start = nl + 1;
        // Borrowed, not moved out: a by-value `Ok(r)` made the bench copy the ~300-byte
        // record once more per line (a memcpy call, ~7% of the time).
        match &fmt.parse_line(line) {
            Ok(r) => sum = sum.wrapping_add(r.status as u64 + r.bytes_sent + r.ts_micros as u64 + r.path.len() as u64),
            Err(_) => errors += 1,
        }
    }
    (sum, errors)
}

/// `SITELOG_BENCH_PASSES` (default 15) timed passes over the data outside criterion: the
/// best pass is what the code does when nothing else holds the core (this VM's speed swings by
/// a third over seconds), the median what a run usually sees.
fn passes(name: &str, fmt: &LogFormat, data: &[u8], lines: u64) {
    let n: usize = std::env::var("SITELOG_BENCH_PASSES").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    if n == 0 {
        return;
    }
    let mut secs: Vec<f64> = (0..n)
        .map(|_| {
            let t = std::time::Instant::now();
            black_box(parse_all(fmt, black_box(data)));
            t.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    let gbs = |t: f64| data.len() as f64 / t / 1e9;
    let (best, median) = (secs[0], secs[n / 2]);
    eprintln!(
        "{name}: {n} passes: best {:.2} GB/s ({:.2} M lines/s, {:.0} ns/line), median {:.2} GB/s",
        gbs(best),
        lines as f64 / best / 1e6,
        best / lines as f64 * 1e9,
        gbs(median)
    );
}

fn bench_formats(c: &mut Criterion) {
    let mb: usize = std::env::var("SITELOG_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let formats = [
        ("combined", LogFormat::builtin("combined").expect("builtin")),
        ("vhost_combined", LogFormat::builtin("vhost_combined").expect("builtin")),
        ("nginx_custom_20", LogFormat::nginx(CUSTOM_NGINX, Escape::Default).expect("compiles")),
    ];
    let mut group = c.benchmark_group("parse");
    group.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(12));
    for (name, fmt) in &formats {
        let (data, lines) = generate(fmt, mb, 0x5eed);
        let (_, errors) = parse_all(fmt, &data);
        assert_eq!(errors, 0, "{name}: generated lines must all parse");
        eprintln!("{name}: {} MB, {lines} lines, {:.0} bytes/line", data.len() >> 20, data.len() as f64 / lines as f64);
        group.throughput(Throughput::ElementsAndBytes { elements: lines, bytes: data.len() as u64 });
        group.bench_function(*name, |b| b.iter(|| black_box(parse_all(fmt, black_box(&data)))));
        passes(name, fmt, &data, lines);
        if *name == "combined" {
            group.bench_function("split_only_linereader", |b| {
                b.iter(|| {
                    let mut r = LineReader::new(black_box(&data[..]));
                    let mut n = 0u64;
                    while let Ok(Some(Line::Complete { bytes, .. })) = r.next_line() {
                        n += bytes.len() as u64;
                    }
                    black_box(n)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_formats);
criterion_main!(benches);
