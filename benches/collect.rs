//! Collector throughput and memory: files → collector → (nothing | tansu).
//!
//! 1. In process, with a sink that acknowledges at once: what the collector itself costs
//!    (read, split, parse, encode, track acknowledgements), one big file and 1,000 small ones.
//! 2. `sitelog collect --once` as its own process against the local stack's tansu (sqlite
//!    storage, lz4): lines/s end to end and the collector's peak RSS, 1 file and 1,000 files.
//!
//! Run: `cargo bench --bench collect` (figures go to `benches/README.md`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

mod support {
    pub mod usage;
}

use sitelog::stack::LocalStack;
use sitelog_ingest::collect::sink::{Ack, Event, EventSender, Sink, SinkError, Token, Topic};
use sitelog_ingest::collect::{Collector, CollectorConfig, Mode};
use support::usage::{cpu_seconds, wait_rusage};

const PATHS: &[&str] = &[
    "/",
    "/blog/syksyn-uutuudet/",
    "/wp-content/themes/astra/style.css?ver=4.8.3",
    "/wp-login.php",
    "/wp-content/uploads/2026/10/hero-1920x1080.jpg",
    "/shop/",
    "/wp-admin/admin-ajax.php",
];
const UAS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];

/// Writes `files` logs of `lines` combined lines each under `<root>/logs/<site>/access.log`.
fn write_logs(root: &Path, files: usize, lines: usize) -> u64 {
    let mut bytes = 0;
    for f in 0..files {
        let dir = root.join("logs").join(format!("site{f}.example"));
        fs::create_dir_all(&dir).expect("mkdir");
        let mut out = std::io::BufWriter::new(fs::File::create(dir.join("access.log")).expect("create"));
        for i in 0..lines {
            let line = format!(
                "84.20.{}.{} - - [25/Nov/2026:{:02}:{:02}:{:02} +0200] \"GET {} HTTP/2.0\" {} {} \"https://www.google.com/\" \"{}\"\n",
                (i / 250) % 256,
                i % 250,
                (i / 3600) % 24,
                (i / 60) % 60,
                i % 60,
                PATHS[i % PATHS.len()],
                if i % 31 == 0 { 404 } else { 200 },
                512 + (i * 7919) % 90_000,
                UAS[(i + f) % UAS.len()]
            );
            bytes += line.len() as u64;
            out.write_all(line.as_bytes()).expect("write");
        }
    }
    bytes
}

fn config(root: &Path, brokers: &str, topic: &str) -> PathBuf {
    let text = format!(
        r#"
[collector]
checkpoint_dir = "{root}/state"
[kafka]
brokers = "{brokers}"
topic = "{topic}"
rejects_topic = "{topic}-rejects"
# As in the sample config for the local stack: tansu decodes compressed batches slowly.
compression = "none"
[limits]
max_open_files = 256
[tail]
inotify = false
[[source]]
name = "bench"
paths = ["{root}/logs/{{site}}/access.log"]
format = "combined"
{props}"#,
        root = root.display(),
        props = extra_properties(),
    );
    let p = root.join("collector.toml");
    fs::write(&p, text).expect("config");
    p
}

/// `[kafka.properties]` as in the sample's config for the local stack (one produce request in
/// flight: tansu serves a connection's requests one at a time, and more in flight only makes
/// librdkafka poll in a busy loop), plus `SITELOG_BENCH_KAFKA_PROPS="key=value,..."` to
/// compare other librdkafka settings.
fn extra_properties() -> String {
    let mut props = std::collections::BTreeMap::from([("max.in.flight.requests.per.connection", "1")]);
    let list = std::env::var("SITELOG_BENCH_KAFKA_PROPS").unwrap_or_default();
    for kv in list.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').expect("SITELOG_BENCH_KAFKA_PROPS: key=value,...");
        props.insert(k, v);
    }
    let mut out = String::from("[kafka.properties]\n");
    for (k, v) in props {
        out.push_str(&format!("{k:?} = {v:?}\n"));
    }
    out
}

/// Acknowledges every message at once: the collector alone.
struct NullSink(EventSender);

impl Sink for NullSink {
    fn send(&mut self, _: Topic, _: &[u8], _: &[u8], token: Token) -> Result<(), SinkError> {
        let _ = self.0.send(Event::Ack(Ack { token, result: Ok(()) }));
        Ok(())
    }
    fn restart(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

fn in_process(label: &str, files: usize, lines: usize) {
    let root = std::env::temp_dir().join(format!("sitelog-bench-collect-{}-{files}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let bytes = write_logs(&root, files, lines);
    let cfg = CollectorConfig::load(&config(&root, "127.0.0.1:9", "unused")).expect("config");
    let (tx, rx) = mpsc::channel();
    let mut c = Collector::new(cfg, Mode::Once, NullSink(tx.clone()), (tx, rx)).expect("collector");
    let t = Instant::now();
    c.run().expect("run");
    let secs = t.elapsed().as_secs_f64();
    let n = (files * lines) as f64;
    println!(
        "{label:<28} {:>10} {:>10.0} {:>10.1} {:>12.0}",
        files * lines,
        n / secs,
        bytes as f64 / secs / 1e6,
        1e9 * secs / n
    );
    let _ = fs::remove_dir_all(&root);
}

fn to_tansu(stack: &LocalStack, label: &str, files: usize, lines: usize) {
    let root = stack.dir.join(format!("bench-{files}"));
    let _ = fs::remove_dir_all(&root);
    let bytes = write_logs(&root, files, lines);
    let topic = format!("bench-{files}");
    stack.create_topic(&topic, 4).expect("topic");
    stack.create_topic(&format!("{topic}-rejects"), 1).expect("topic");
    let cfg = config(&root, &stack.kafka_bootstrap, &topic);
    let tansu_cpu = cpu_seconds(stack.kafka_pid());
    let t = Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["collect", "--once", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .env_remove("SITELOG_KAFKA_BROKERS")
        .spawn()
        .expect("sitelog collect");
    let u = wait_rusage(child);
    let secs = t.elapsed().as_secs_f64();
    let tansu_cpu = cpu_seconds(stack.kafka_pid()) - tansu_cpu;
    assert!(u.status == 0, "collector exit status {}", u.status);
    let n = (files * lines) as f64;
    println!(
        "{label:<28} {:>10} {:>10.0} {:>10.1} {:>12.1} {:>10.1} {:>10.1} {secs:>8.1}",
        files * lines,
        n / secs,
        bytes as f64 / secs / 1e6,
        u.rss_mb,
        u.cpu_s,
        tansu_cpu
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("## Collector alone (sink acknowledges at once), --once");
    println!("{:<28} {:>10} {:>10} {:>10} {:>12}", "case", "lines", "lines/s", "MB/s", "ns/line");
    // `SITELOG_BENCH_TANSU_ONLY=1` skips the in-process figures (when comparing broker settings).
    if std::env::var_os("SITELOG_BENCH_TANSU_ONLY").is_none() {
        in_process("1 file x 1,000,000", 1, 1_000_000);
        in_process("1,000 files x 1,000", 1000, 1000);
    }

    let dir = std::env::temp_dir().join(format!("sitelog-bench-stack-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let stack = LocalStack::start(&dir).expect("local stack");
    println!("\n## sitelog collect --once -> tansu (sqlite storage, no Kafka compression), own process");
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>12} {:>10} {:>10} {:>8}",
        "case", "lines", "lines/s", "MB/s", "peak RSS MB", "CPU s", "tansu CPU", "wall s"
    );
    // `SITELOG_BENCH_MILLIONS=3`: more lines per case, so start-up (connect, metadata, scan)
    // and the final acknowledgement weigh less in the figure.
    let m: usize = std::env::var("SITELOG_BENCH_MILLIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    to_tansu(&stack, &format!("1 file x {m},000,000"), 1, m * 1_000_000);
    to_tansu(&stack, &format!("1,000 files x {m},000"), 1000, m * 1000);
    drop(stack);
    let _ = fs::remove_dir_all(&dir);
}
