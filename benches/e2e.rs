//! End to end on the real local stack: files → `sitelog collect` → tansu → `sitelog process`
//! → chDB, both programs running at once as in production.
//!
//! 1. **Throughput**: the generated sample (`sitelog generate` defaults, ~0.9 M lines, live,
//!    rotated and `.gz` files) collected with `--once` while the processor consumes; the clock
//!    runs from the collector's start until `usage_daily` holds every record, which is then
//!    checked against the generator's ground truth (a wrong total fails the bench).
//! 2. **Freshness**: a writer appends lines stamped "now" to 8 live files at a steady rate while
//!    the collector tails them; a poller counts each file's stored rows every 100 ms (a file's
//!    lines are stored in file order). Freshness of a line = first poll that sees it − the
//!    moment it was written (an upper bound, ≤ 100 ms pessimistic).
//!
//! 3. **Detection cost**: the processor alone over the sample's topic again, `[security]
//!    enabled = false` and `true` alternating (`SITELOG_BENCH_DETECTION_ROUNDS`, default 2):
//!    processor CPU per record, each run checked against the ground truth.
//!
//! Prints rows/s, MB/s, freshness percentiles and each program's peak RSS.
//! `cargo bench --bench e2e`. Knobs: `SITELOG_BENCH_FRESH_RATE` (lines/s, default 20000),
//! `SITELOG_BENCH_FRESH_SECS` (default 20); the live collector uses the local stack's settings
//! (no Kafka compression, one request in flight) as in the sample's `collector.toml`, `SITELOG_BENCH_INFLIGHT` (processor
//! `sink.max_inflight_batches`, default 2), `SITELOG_BENCH_SAMPLE_ARGS` (extra `generate` args),
//! `SITELOG_BENCH_SKIP_FRESHNESS`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use sitelog::sample::truth;
use sitelog::stack::LocalStack;
use support::usage::{cpu_seconds, terminate, wait_rusage};

mod support {
    pub mod usage;
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn sitelog() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sitelog"));
    c.env("RUST_LOG", "warn").env_remove("SITELOG_KAFKA_BROKERS").env_remove("SITELOG_CLICKHOUSE_URL");
    c
}

fn run(args: &[&str]) -> String {
    let out = sitelog().args(args).output().expect("running sitelog");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "sitelog {args:?}: {}\n{stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout
}

struct Bench {
    stack: LocalStack,
    ch: clickhouse::Client,
    rt: tokio::runtime::Runtime,
    dir: PathBuf,
    db: String,
}

impl Bench {
    fn processor_config(&self, topic: &str, group: &str) -> PathBuf {
        self.processor_config_in(topic, group, &self.db, "")
    }

    /// A processor config for database `db`; `extra`: more TOML tables.
    fn processor_config_in(&self, topic: &str, group: &str, db: &str, extra: &str) -> PathBuf {
        let p = self.dir.join(format!("processor-{group}.toml"));
        let text = format!(
            "[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup_id = \"{group}\"\n\n\
             [clickhouse]\nurl = \"{}\"\ndatabase = \"{db}\"\ncompression = false\n\n\
             [sink]\nmax_poll_interval_ms = 10000\nmax_inflight_batches = {}\n{extra}",
            self.stack.kafka_bootstrap,
            self.stack.clickhouse_url,
            env_num("SITELOG_BENCH_INFLIGHT", 2)
        );
        fs::write(&p, text).expect("processor config");
        p
    }

    fn process(&self, cfg: &Path, exit_when_idle: bool) -> Child {
        let mut c = sitelog();
        c.arg("process").arg("-c").arg(cfg);
        if exit_when_idle {
            c.args(["--exit-when-idle", "2"]);
        }
        c.spawn().expect("sitelog process")
    }

    fn collect(&self, cfg: &Path, topic: &str, once: bool) -> Child {
        let mut c = sitelog();
        c.arg("collect").arg("--config").arg(cfg);
        if once {
            c.arg("--once");
        }
        c.env("SITELOG_KAFKA_BROKERS", &self.stack.kafka_bootstrap)
            .env("SITELOG_ACCESS_TOPIC", topic)
            .env("SITELOG_REJECTS_TOPIC", format!("{topic}-rejects"))
            .spawn()
            .expect("sitelog collect")
    }

    fn query_u64(&self, sql: &str) -> u64 {
        self.rt.block_on(self.ch.query(sql).fetch_one::<u64>()).unwrap_or(0)
    }
}

/// Returns the sample's directory and record count (the topic `e2e-sample` then holds it).
fn throughput(b: &Bench) -> (PathBuf, u64) {
    let sample = b.dir.join("sample");
    let s = sample.to_str().unwrap();
    let mut args = vec!["generate", "--out", s];
    let extra = std::env::var("SITELOG_BENCH_SAMPLE_ARGS").unwrap_or_default();
    args.extend(extra.split_whitespace());
    run(&args);
    run(&[
        "customers",
        "import",
        &format!("{s}/register.json"),
        "-c",
        b.processor_config("unused", "import").to_str().unwrap(),
    ]);
    let summary = truth::read_summary(&sample.join("truth")).expect("ground truth");
    let records = summary["records"].as_u64().expect("records");
    let lines = summary["lines"].as_u64().unwrap_or(records);
    let bytes: u64 = walk(&sample.join("logs")).iter().map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();

    let topic = "e2e-sample";
    b.stack.create_topic(topic, 4).expect("topic");
    b.stack.create_topic(&format!("{topic}-rejects"), 1).expect("topic");
    let (kafka_cpu, ch_cpu) = (cpu_seconds(b.stack.kafka_pid()), cpu_seconds(b.stack.clickhouse_pid()));
    let t0 = Instant::now();
    let collector = b.collect(&sample.join("collector.toml"), topic, true);
    let processor = b.process(&b.processor_config(topic, "e2e-sample"), true);
    let mut first_row = None;
    let stored = loop {
        let n = b.query_u64("SELECT toUInt64(sum(requests)) FROM usage_daily");
        if n > 0 && first_row.is_none() {
            first_row = Some(t0.elapsed());
        }
        if n >= records || t0.elapsed() > Duration::from_secs(900) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let secs = t0.elapsed().as_secs_f64();
    let (kafka_cpu, ch_cpu) =
        (cpu_seconds(b.stack.kafka_pid()) - kafka_cpu, cpu_seconds(b.stack.clickhouse_pid()) - ch_cpu);
    let c = wait_rusage(collector);
    let p = wait_rusage(processor);
    assert_eq!((c.status, p.status), (0, 0), "collector / processor exit status");
    assert_eq!(stored, records, "usage_daily must count every parsed line exactly once");
    let first = first_row.map(|d| d.as_secs_f64()).unwrap_or(0.0);
    println!("## Throughput: generated sample, collect --once and process running together");
    println!("lines {lines}, records {records}, {:.1} MB of logs (incl. .gz archives)", bytes as f64 / 1e6);
    println!(
        "wall {secs:.1} s from collector start to the last row queryable: {:.0} rows/s end to end",
        records as f64 / secs
    );
    println!(
        "first row queryable after {first:.1} s (group join + first batch); after that {:.0} rows/s",
        records as f64 / (secs - first).max(0.001)
    );
    println!("peak RSS: collector {:.1} MB, processor {:.1} MB", c.rss_mb, p.rss_mb);
    println!(
        "CPU seconds: collector {:.1}, tansu {kafka_cpu:.1}, processor {:.1}, chDB endpoint {ch_cpu:.1} (2 cores x {secs:.1} s = {:.1})",
        c.cpu_s,
        p.cpu_s,
        2.0 * secs
    );
    println!("usage_daily total = ground truth: {stored} records");
    (sample, records)
}

/// The processor's CPU per record with `[security] enabled = false` and `true`, each run
/// reading the whole sample from the topic `throughput` filled (a new group and database per
/// run), alternating off and on so both see the same machine; exit when caught up. The CPU
/// includes start-up and the 2 s idle wait at the end (the same in both).
fn detection_cost(b: &Bench, sample: &Path, records: u64) {
    let rounds = env_num("SITELOG_BENCH_DETECTION_ROUNDS", 2);
    let register = sample.join("register.json");
    let mut per_record = [Vec::new(), Vec::new()];
    println!("\n## Detection cost: the processor over the sample ({records} records), security off / on");
    for round in 0..rounds {
        for (i, on) in [false, true].into_iter().enumerate() {
            let name = format!("detect_{round}_{}", if on { "on" } else { "off" });
            let cfg = b.processor_config_in("e2e-sample", &name, &name, &format!("\n[security]\nenabled = {on}\n"));
            let cfg = cfg.to_str().unwrap();
            run(&["schema", "migrate", "-c", cfg]);
            run(&["customers", "import", register.to_str().unwrap(), "-c", cfg]);
            let p = wait_rusage(b.process(Path::new(cfg), true));
            assert_eq!(p.status, 0, "processor exit status");
            let stored = b.query_u64(&format!("SELECT toUInt64(sum(requests)) FROM {name}.usage_daily"));
            assert_eq!(stored, records, "{name}: usage_daily must count every record once");
            let us = p.cpu_s * 1e6 / records as f64;
            println!(
                "round {round}, detection {}: processor CPU {:.2} s = {us:.2} µs/record, peak RSS {:.1} MB",
                if on { "on " } else { "off" },
                p.cpu_s,
                p.rss_mb
            );
            per_record[i].push(us);
        }
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (off, on) = (&per_record[0], &per_record[1]);
    println!(
        "best of {rounds}: off {:.2} µs/record, on {:.2} µs/record: {:+.1} %; mean: off {:.2}, on {:.2}: {:+.1} %",
        best(off),
        best(on),
        (best(on) / best(off) - 1.0) * 100.0,
        mean(off),
        mean(on),
        (mean(on) / mean(off) - 1.0) * 100.0
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn freshness(b: &Bench) {
    let rate = env_num("SITELOG_BENCH_FRESH_RATE", 20_000);
    let secs = env_num("SITELOG_BENCH_FRESH_SECS", 20);
    let total = rate * secs;
    let root = b.dir.join("live");
    let sites: Vec<PathBuf> = (0..8).map(|i| root.join(format!("fresh{i}.bench.invalid"))).collect();
    for s in &sites {
        fs::create_dir_all(s).expect("site dir");
        fs::write(s.join("access.log"), b"").expect("log file");
    }
    let cfg = root.join("collector.toml");
    fs::write(
        &cfg,
        format!(
            "[collector]\ncheckpoint_dir = \"{r}/state\"\n[kafka]\ncompression = \"none\"\n\
             [kafka.properties]\n\"max.in.flight.requests.per.connection\" = \"1\"\n\
             [[source]]\nname = \"fresh\"\npaths = [\"{r}/{{site}}/access.log\"]\nformat = \"combined\"\nhost = \"path\"\n",
            r = root.display()
        ),
    )
    .expect("collector config");
    let topic = "e2e-fresh";
    b.stack.create_topic(topic, 4).expect("topic");
    b.stack.create_topic(&format!("{topic}-rejects"), 1).expect("topic");
    let (kafka_cpu, ch_cpu) = (cpu_seconds(b.stack.kafka_pid()), cpu_seconds(b.stack.clickhouse_pid()));
    let processor = b.process(&b.processor_config(topic, "e2e-fresh"), false);
    let collector = b.collect(&cfg, topic, false);
    std::thread::sleep(Duration::from_secs(5)); // group join, first scan

    // Writer: `rate` lines/s in 10 ms ticks, round robin over the sites; remembers when each
    // line was written (seconds since t0).
    let t0 = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut files: Vec<fs::File> = sites
            .iter()
            .map(|s| fs::OpenOptions::new().append(true).open(s.join("access.log")).expect("open"))
            .collect();
        let mut written = Vec::with_capacity(total as usize);
        let per_tick = (rate / 100).max(1);
        let mut seq = 0u64;
        let mut bufs = vec![Vec::new(); files.len()];
        while seq < total {
            let due = Duration::from_millis(10 * (seq / per_tick));
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
            let stamp = chrono::Utc::now().format("%d/%b/%Y:%H:%M:%S +0000").to_string();
            for _ in 0..per_tick.min(total - seq) {
                let buf = &mut bufs[(seq % 8) as usize];
                let _ = writeln!(
                    buf,
                    "10.{}.{}.{} - - [{stamp}] \"GET /fresh?seq={seq} HTTP/1.1\" 200 {} \"-\" \"Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0\"",
                    seq % 200,
                    seq / 200 % 250,
                    seq % 250,
                    512 + seq % 4096
                );
                seq += 1;
            }
            for (f, buf) in files.iter_mut().zip(bufs.iter_mut()) {
                f.write_all(buf).expect("append");
                buf.clear();
            }
            let now = t0.elapsed().as_secs_f64();
            written.resize(seq as usize, now);
        }
        written
    });

    // Poller: how many lines of each file are stored? A file's lines reach ClickHouse in file
    // order (one host = one partition, batches stored in offset order), so line `i` of file
    // `f` is queryable once the count for `f` exceeds `i`. Counting a LowCardinality key
    // column is cheap, so polling does not slow down what it measures.
    const FILES: u64 = 8;
    let per_file = |f: u64| total / FILES + u64::from(f < total % FILES);
    let mut seen: Vec<Vec<(u64, f64)>> = vec![Vec::new(); FILES as usize];
    let deadline = Duration::from_secs(secs + 120);
    let done =
        |seen: &[Vec<(u64, f64)>]| (0..FILES).all(|f| seen[f as usize].last().is_some_and(|l| l.0 == per_file(f)));
    while !done(&seen) && t0.elapsed() < deadline {
        let sql = "SELECT toUInt64(substring(site_host, 6, 1)), count() FROM access_log \
                   WHERE site_host LIKE 'fresh_.bench.invalid' GROUP BY site_host";
        let now = t0.elapsed().as_secs_f64();
        let rows: Vec<(u64, u64)> = match b.rt.block_on(b.ch.query(sql).fetch_all()) {
            Ok(rows) => rows,
            Err(e) => {
                eprintln!("freshness poll failed: {e}");
                Vec::new()
            }
        };
        for (f, n) in rows {
            assert!(n <= per_file(f), "file {f}: {n} rows for {} lines (duplicates)", per_file(f));
            let hist = &mut seen[f as usize];
            if hist.last().is_none_or(|l| l.0 < n) {
                hist.push((n, now));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let written = writer.join().expect("writer");
    let c = terminate(collector);
    let p = terminate(processor);
    let (kafka_cpu, ch_cpu) =
        (cpu_seconds(b.stack.kafka_pid()) - kafka_cpu, cpu_seconds(b.stack.clickhouse_pid()) - ch_cpu);
    assert!(
        done(&seen),
        "every written line queryable within {deadline:?}; stored: {}",
        b.query_u64("SELECT count() FROM access_log WHERE path = '/fresh'")
    );
    let queryable = |seq: u64| {
        let hist = &seen[(seq % FILES) as usize];
        hist[hist.partition_point(|&(n, _)| n <= seq / FILES)].1
    };
    let mut lag: Vec<f64> = written.iter().enumerate().map(|(i, w)| queryable(i as u64) - w).collect();
    lag.sort_by(f64::total_cmp);
    let q = |p: f64| lag[((lag.len() as f64 * p) as usize).min(lag.len() - 1)];
    println!("\n## Freshness: {rate} lines/s for {secs} s into 8 live files, tailed and processed");
    println!(
        "line written -> queryable: p50 {:.2} s, p90 {:.2} s, p99 {:.2} s, max {:.2} s ({total} lines, 100 ms poll)",
        q(0.5),
        q(0.9),
        q(0.99),
        lag[lag.len() - 1]
    );
    let last = seen.iter().filter_map(|h| h.last()).map(|l| l.1).fold(0.0, f64::max);
    println!(
        "all {total} lines queryable {last:.1} s after the first was written ({:.0} rows/s); {}",
        total as f64 / last,
        if lag[lag.len() - 1] > 5.0 {
            "the pipeline fell behind the writer"
        } else {
            "the pipeline kept up with the writer"
        }
    );
    println!("peak RSS: collector {:.1} MB, processor {:.1} MB", c.rss_mb, p.rss_mb);
    println!(
        "CPU seconds: collector {:.1}, tansu {kafka_cpu:.1}, processor {:.1}, chDB endpoint {ch_cpu:.1}",
        c.cpu_s, p.cpu_s
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sitelog-bench-e2e-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("bench dir");
    let stack = LocalStack::start(&dir.join("stack")).expect("local stack");
    let db = "bench".to_string();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ch = clickhouse::Client::default().with_url(&stack.clickhouse_url).with_database(&db);
    let b = Bench { stack, ch, rt, dir: dir.clone(), db };
    run(&["schema", "migrate", "-c", b.processor_config("unused", "migrate").to_str().unwrap()]);
    if std::env::var_os("SITELOG_BENCH_SKIP_THROUGHPUT").is_none() {
        let (sample, records) = throughput(&b);
        detection_cost(&b, &sample, records);
    }
    if std::env::var_os("SITELOG_BENCH_SKIP_FRESHNESS").is_none() {
        freshness(&b);
    }
    drop(b);
    let _ = fs::remove_dir_all(&dir);
}
