//! Shared pieces of the collector's integration tests: a log writer that remembers exactly
//! what it wrote (the model), the `sitelog collect` process, and a reader of the topics.
//!
//! Exactness is judged against the writer's own record of every line (file content →
//! fingerprint, byte offset, request path), never against what the collector reports.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sitelog_ingest::collect::fingerprint;
use sitelog_schema::wire::BatchReader;
use sitelog_schema::Reject;

pub const FP_BYTES: usize = 256;

/// One log file as the writer knows it.
pub struct WFile {
    pub site: String,
    /// Where its bytes are now (`None` once deleted).
    pub path: Option<PathBuf>,
    pub content: Vec<u8>,
    /// (offset, request path) of every complete line.
    pub lines: Vec<(u64, String)>,
    /// Compressed to this path (content unchanged).
    pub gz: Option<PathBuf>,
}

/// Writes combined-format lines with unique request paths to `<root>/<site>/access.log`.
pub struct LogWriter {
    pub root: PathBuf,
    pub files: Vec<WFile>,
    /// Index of each site's live file, and its open handle.
    live: BTreeMap<String, (usize, File)>,
    next_id: u64,
    rotations: u64,
}

impl LogWriter {
    pub fn new(root: &Path) -> Self {
        LogWriter { root: root.to_path_buf(), files: Vec::new(), live: BTreeMap::new(), next_id: 0, rotations: 0 }
    }

    pub fn live_path(&self, site: &str) -> PathBuf {
        self.root.join(site).join("access.log")
    }

    fn open_live(&mut self, site: &str) -> usize {
        if let Some((i, _)) = self.live.get(site) {
            return *i;
        }
        let path = self.live_path(site);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let f = OpenOptions::new().create(true).append(true).open(&path).expect("create log");
        self.files.push(WFile {
            site: site.into(),
            path: Some(path),
            content: Vec::new(),
            lines: Vec::new(),
            gz: None,
        });
        let i = self.files.len() - 1;
        self.live.insert(site.into(), (i, f));
        i
    }

    /// Appends one line; every `split_every`-th line is written in two `write` calls, so the
    /// collector sometimes sees half a line.
    pub fn append(&mut self, site: &str, split: bool) {
        let i = self.open_live(site);
        self.next_id += 1;
        let id = self.next_id;
        let path = format!("/p/{site}/{id}");
        let line = format!(
            "192.0.2.{} - - [25/Nov/2026:10:{:02}:{:02} +0000] \"GET {path} HTTP/1.1\" 200 {} \"-\" \"sitelog-test\"\n",
            id % 250,
            (id / 60) % 60,
            id % 60,
            id % 5000
        );
        let (_, handle) = self.live.get_mut(site).expect("live");
        if split {
            let (a, b) = line.as_bytes().split_at(line.len() / 2);
            handle.write_all(a).expect("write");
            handle.flush().expect("flush");
            handle.write_all(b).expect("write");
        } else {
            handle.write_all(line.as_bytes()).expect("write");
        }
        let f = &mut self.files[i];
        f.lines.push((f.content.len() as u64, path));
        f.content.extend_from_slice(line.as_bytes());
    }

    fn rotated_path(&mut self, site: &str) -> PathBuf {
        self.rotations += 1;
        self.live_path(site).with_file_name(format!("access.log.{}", self.rotations))
    }

    /// logrotate `create`: rename, then the server keeps writing to the old file for
    /// `late_lines` lines (until it reopens its log), then a new file.
    pub fn rename_create(&mut self, site: &str, late_lines: usize) {
        let i = self.open_live(site);
        let to = self.rotated_path(site);
        fs::rename(self.live_path(site), &to).expect("rename");
        self.files[i].path = Some(to);
        for _ in 0..late_lines {
            self.append(site, false);
        }
        self.live.remove(site);
        self.open_live(site);
    }

    /// logrotate `copytruncate`: copy, truncate in place (no write in between), the server
    /// keeps its file open.
    pub fn copy_truncate(&mut self, site: &str) {
        let i = self.open_live(site);
        let to = self.rotated_path(site);
        fs::copy(self.live_path(site), &to).expect("copy");
        let (_, handle) = self.live.get_mut(site).expect("live");
        handle.set_len(0).expect("truncate");
        let fresh = WFile {
            site: site.into(),
            path: Some(self.live_path(site)),
            content: Vec::new(),
            lines: Vec::new(),
            gz: None,
        };
        let old = std::mem::replace(&mut self.files[i], fresh);
        self.files.push(WFile { path: Some(to), ..old });
    }

    /// Delete the live file and start a new one (possibly on the same inode).
    pub fn delete_recreate(&mut self, site: &str) {
        let i = self.open_live(site);
        fs::remove_file(self.live_path(site)).expect("delete");
        self.files[i].path = None;
        self.live.remove(site);
        self.open_live(site);
    }

    /// gzip a rotated file and delete the plain one (logrotate `compress`).
    pub fn compress(&mut self, index: usize) {
        let f = &mut self.files[index];
        let Some(plain) = f.path.clone() else { return };
        let gz = PathBuf::from(format!("{}.gz", plain.display()));
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&f.content).expect("gzip");
        fs::write(&gz, enc.finish().expect("gzip")).expect("write gz");
        fs::remove_file(&plain).expect("remove plain");
        f.path = Some(gz.clone());
        f.gz = Some(gz);
    }

    /// The most recently rotated file of `site` that is still plain on disk.
    pub fn last_rotated_plain(&self, site: &str) -> Option<usize> {
        let live = self.live.get(site).map(|(i, _)| *i);
        (0..self.files.len()).rev().find(|&i| {
            let f = &self.files[i];
            Some(i) != live && f.site == site && f.gz.is_none() && f.path.as_ref().is_some_and(|p| p.exists())
        })
    }

    /// Every written line by identity: (fingerprint, offset) → request path.
    pub fn expected(&self) -> BTreeMap<(u64, u64), String> {
        let mut out = BTreeMap::new();
        for f in &self.files {
            let head = &f.content[..f.content.len().min(FP_BYTES)];
            let Some(fp) = fingerprint::of_head(head, FP_BYTES, false, Some(&f.site)) else {
                continue;
            };
            for (off, path) in &f.lines {
                out.insert((fp, *off), path.clone());
            }
        }
        out
    }

    pub fn line_count(&self) -> usize {
        self.files.iter().map(|f| f.lines.len()).sum()
    }
}

/// A collector config for a test directory.
pub fn config(dir: &Path, bootstrap: &str, topic: &str, rejects: &str, extra_tail: &str) -> PathBuf {
    config_with(dir, bootstrap, topic, rejects, "", extra_tail)
}

/// [`config`] with more lines in `[kafka]`.
pub fn config_with(
    dir: &Path,
    bootstrap: &str,
    topic: &str,
    rejects: &str,
    extra_kafka: &str,
    extra_tail: &str,
) -> PathBuf {
    let text = format!(
        r#"
[collector]
checkpoint_dir = "{dir}/state"
shutdown_timeout_ms = 20000
[kafka]
brokers = "{bootstrap}"
topic = "{topic}"
rejects_topic = "{rejects}"
{extra_kafka}
[limits]
linger_ms = 50
max_inflight_bytes = "4MiB"
[tail]
scan_interval_ms = 200
poll_interval_ms = 50
rotate_wait_ms = 700
{extra_tail}
[[source]]
name = "test"
paths = ["{dir}/logs/{{site}}/access.log"]
format = "combined"
"#,
        dir = dir.display()
    );
    let path = dir.join("collector.toml");
    fs::write(&path, text).expect("write config");
    path
}

/// `sitelog collect` as a child process, its log in `<dir>/collect-<n>.log`.
pub struct CollectorProc {
    pub child: Child,
    pub log: PathBuf,
}

impl CollectorProc {
    pub fn spawn(config: &Path, args: &[&str]) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = config.parent().expect("config dir");
        let log = dir.join(format!("collect-{n}.log"));
        let out = File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sitelog"))
            .arg("collect")
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info,librdkafka=warn")
            .env_remove("SITELOG_KAFKA_BROKERS")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawning sitelog collect");
        CollectorProc { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM and wait (bounded) for the exit.
    pub fn terminate(mut self, within: Duration) -> ExitStatus {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        self.wait(within)
    }

    pub fn kill9(mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
    }

    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("sitelog collect did not exit within {within:?}; log: {}", self.log.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory in KiB (Linux).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
    }
}

/// What the topics hold: identity → request paths seen (more than one = duplicates).
pub type Emitted = BTreeMap<(u64, u64), Vec<String>>;

/// Reads both topics from the beginning until `done(&emitted)` or `timeout`.
pub fn read_topics(
    bootstrap: &str,
    topic: &str,
    rejects: &str,
    timeout: Duration,
    done: impl Fn(&Emitted) -> bool,
) -> Emitted {
    read(bootstrap, topic, rejects, timeout, done, None)
}

/// Like [`read_topics`], but records pass the processor's re-send filter: per (fingerprint,
/// host) of a batch, a record at or below the highest offset accepted so far is dropped as a
/// duplicate (counted in `dropped`). A line written only after a later line of its file and
/// host is missing here, as it would be in ClickHouse.
pub fn read_accepted(
    bootstrap: &str,
    topic: &str,
    rejects: &str,
    timeout: Duration,
    done: impl Fn(&Emitted) -> bool,
    dropped: &mut u64,
) -> Emitted {
    read(bootstrap, topic, rejects, timeout, done, Some(dropped))
}

fn read(
    bootstrap: &str,
    topic: &str,
    rejects: &str,
    timeout: Duration,
    done: impl Fn(&Emitted) -> bool,
    mut resend_filter: Option<&mut u64>,
) -> Emitted {
    let mut max: BTreeMap<(u64, String), u64> = BTreeMap::new();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("verify-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for t in [topic, rejects] {
        let md = consumer.fetch_metadata(Some(t), Duration::from_secs(10)).expect("metadata");
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(t, p.id(), Offset::Beginning).expect("partition");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Emitted::new();
    let deadline = Instant::now() + timeout;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet_since = Instant::now();
                let payload = m.payload().unwrap_or_default();
                if m.topic() == topic {
                    let reader = BatchReader::new(payload).expect("a wire batch");
                    // Every message names its web server ([collector] server: the host name).
                    assert!(!reader.header().server.is_empty(), "a message without its server");
                    let key = (reader.header().fingerprint, reader.header().host.to_owned());
                    for r in reader {
                        let r = r.expect("a record");
                        if let Some(dropped) = resend_filter.as_deref_mut() {
                            if max.get(&key).is_some_and(|&m| r.source.offset <= m) {
                                *dropped += 1;
                                continue;
                            }
                            max.insert(key.clone(), r.source.offset);
                        }
                        out.entry((r.source.fingerprint, r.source.offset)).or_default().push(r.path.into_owned());
                    }
                } else {
                    let r: Reject = serde_json::from_slice(payload).expect("a reject");
                    out.entry((r.fingerprint, r.offset)).or_default().push(format!("REJECT {}", r.raw));
                }
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {
                if done(&out) && quiet_since.elapsed() > Duration::from_millis(500) {
                    break;
                }
            }
        }
    }
    out
}

/// Compares the topics with the writer's record. `dups_ok`: after a crash or restart, a line
/// may arrive more than once, but only with its own identity and content.
pub fn check(expected: &BTreeMap<(u64, u64), String>, got: &Emitted, dups_ok: bool) -> Result<(), String> {
    let mut missing = Vec::new();
    let mut dups = 0;
    for (id, path) in expected {
        match got.get(id) {
            None => missing.push((id, path)),
            Some(v) => {
                if let Some(bad) = v.iter().find(|p| *p != path) {
                    return Err(format!("identity {id:?} carries {bad:?}, written as {path:?}"));
                }
                dups += v.len() - 1;
            }
        }
    }
    let foreign: Vec<_> = got.iter().filter(|(id, _)| !expected.contains_key(id)).take(5).collect();
    if !missing.is_empty() || !foreign.is_empty() || (!dups_ok && dups > 0) {
        return Err(format!(
            "{} written, {} identities emitted: {} missing (first {:?}), foreign {:?}, {} duplicates",
            expected.len(),
            got.len(),
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>(),
            foreign,
            dups
        ));
    }
    Ok(())
}

/// Polls `cond` until true or timeout.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
