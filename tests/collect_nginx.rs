//! End to end with real parts: a real nginx (Debian's `nginx-light`) on a free loopback port
//! serves bounded load from a small client in this test, real `logrotate` rotates its access
//! logs with `compress` (no `delaycompress`, so rotated files are gzipped while the collector
//! may still be reading them) in both `create` mode (postrotate: `nginx -s reopen`) and
//! `copytruncate` mode, while `sitelog collect` runs against the private stack's Kafka.
//!
//! Judged against two independent records: the client's own count of the responses it got
//! (each request has a unique path `/req/<n>`), and what nginx wrote to disk (live files and
//! the gzipped archives: file fingerprint + byte offset of every line). The topic must hold
//! every logged request exactly once by identity, and the logged set must equal the client's.
//!
//! Two things the test does because logrotate and nginx would otherwise lose lines on disk
//! themselves (not the collector's doing, and not what is under test):
//! - `create`: `nginx -s reopen` only signals the master; workers reopen a moment later. The
//!   postrotate script waits until no nginx process holds the renamed file open, so that
//!   `compress` (which runs after postrotate and deletes the plain file) sees every line.
//! - `copytruncate`: logrotate's manual says "there is a very small time slice between copying
//!   the file and truncating it, so some logging data might be lost". Around those rotations
//!   the client pauses that site's requests until nginx has logged every answered one; the
//!   other site's load (rotated with `create`) never pauses.

mod collect_common;
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use collect_common::{check, config, read_topics, wait_until, CollectorProc, FP_BYTES};
use sitelog_ingest::collect::fingerprint;

/// How long the client sends requests.
const LOAD: Duration = Duration::from_secs(8);
/// Keep-alive connections per site, each paced to `RATE_PER_CONN` requests per second.
const CONNS_PER_SITE: usize = 2;
const RATE_PER_CONN: u64 = 500;
/// Hard cap on requests, whatever the pace.
const MAX_REQUESTS: u64 = 40_000;
/// Each site is rotated this often (the two sites half a period apart).
const ROTATE_EVERY: Duration = Duration::from_millis(1000);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Create,
    CopyTruncate,
}

const SITES: [(&str, Mode); 2] = [("create.nginx.test", Mode::Create), ("copytruncate.nginx.test", Mode::CopyTruncate)];

/// A Debian binary: on PATH, or in /usr/sbin and /sbin (not on a non-root PATH).
fn find_bin(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found (PATH, /usr/sbin, /sbin): this test needs the Debian packages \
                 nginx-light and logrotate (scripts/test installs them: apt-get install -y nginx-light logrotate wrk)"
            )
        })
}

/// nginx as a non-daemon child (master + one worker), everything under `<dir>/nginx/`.
struct Nginx {
    child: Option<Child>,
    bin: PathBuf,
    prefix: PathBuf,
    conf: PathBuf,
    error_log: PathBuf,
    pid_file: PathBuf,
    port: u16,
}

impl Nginx {
    fn start(bin: &Path, dir: &Path, logs: &Path) -> Nginx {
        let prefix = dir.join("nginx");
        fs::create_dir_all(prefix.join("temp")).expect("nginx prefix");
        for attempt in 1..=3 {
            let port = free_loopback_port();
            let mut n = Nginx {
                child: None,
                bin: bin.to_path_buf(),
                conf: prefix.join("nginx.conf"),
                error_log: prefix.join("error.log"),
                pid_file: prefix.join("nginx.pid"),
                prefix: prefix.clone(),
                port,
            };
            fs::write(&n.conf, n.config_text(logs)).expect("write nginx.conf");
            let out = fs::File::create(prefix.join("nginx.out")).expect("nginx.out");
            n.child = Some(
                Command::new(bin)
                    .arg("-p")
                    .arg(format!("{}/", prefix.display()))
                    .arg("-c")
                    .arg(&n.conf)
                    .arg("-e")
                    .arg(&n.error_log)
                    .stdin(Stdio::null())
                    .stdout(out.try_clone().expect("dup"))
                    .stderr(out)
                    .spawn()
                    .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display())),
            );
            let mut exited = None;
            let up = wait_until(Duration::from_secs(10), || {
                if let Some(st) = n.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    exited = Some(st);
                    return true;
                }
                TcpStream::connect(("127.0.0.1", port)).is_ok() && n.pid_file.exists()
            });
            let err = fs::read_to_string(&n.error_log).unwrap_or_default()
                + &fs::read_to_string(prefix.join("nginx.out")).unwrap_or_default();
            match exited {
                None if up => return n,
                Some(st) if err.contains("Address already in use") && attempt < 3 => {
                    eprintln!("nginx: port {port} taken ({st}), trying another");
                    n.child = None;
                }
                _ => panic!("nginx did not start on 127.0.0.1:{port} (exit {exited:?}); its log:\n{err}"),
            }
        }
        unreachable!()
    }

    fn config_text(&self, logs: &Path) -> String {
        let p = self.prefix.display();
        // As root, workers would switch to `nobody`; keep them as the current user.
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 { "user root;" } else { "" };
        let mut servers = String::new();
        for (i, (site, _)) in SITES.iter().enumerate() {
            servers += &format!(
                "  server {{\n    listen 127.0.0.1:{port}{default};\n    server_name {site};\n    \
                 access_log {logs}/{site}/access.log combined;\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n",
                port = self.port,
                default = if i == 0 { " default_server" } else { "" },
                logs = logs.display(),
            );
        }
        format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\n{user}\npid {pid};\nlock_file {p}/nginx.lock;\n\
             error_log {err} notice;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  \
             default_type text/plain;\n  server_tokens off;\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n  \
             client_body_temp_path {p}/temp/body;\n  proxy_temp_path {p}/temp/proxy;\n  fastcgi_temp_path {p}/temp/fastcgi;\n  \
             uwsgi_temp_path {p}/temp/uwsgi;\n  scgi_temp_path {p}/temp/scgi;\n{servers}}}\n",
            pid = self.pid_file.display(),
            err = self.error_log.display(),
        )
    }

    /// `nginx -s reopen` with this instance's prefix and config (logrotate's postrotate).
    fn reopen_command(&self) -> String {
        format!(
            "{} -p {}/ -c {} -e {} -s reopen",
            self.bin.display(),
            self.prefix.display(),
            self.conf.display(),
            self.error_log.display()
        )
    }

    fn pids(&self) -> Vec<i32> {
        let Some(c) = &self.child else { return Vec::new() };
        let master = c.id();
        let children = fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap_or_default();
        std::iter::once(master as i32).chain(children.split_whitespace().filter_map(|s| s.parse().ok())).collect()
    }

    /// Fast shutdown (SIGTERM to the master, which stops its worker), SIGKILL after 5 s.
    fn stop(&mut self) {
        let pids = self.pids();
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        for pid in pids {
            // SAFETY: the master we started and its worker.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The collector, killed if the test ends early.
struct Collector(Option<CollectorProc>);

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.kill9();
        }
    }
}

fn free_loopback_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

/// The load of one site, shared with its client threads.
#[derive(Default)]
struct SiteLoad {
    /// While set, the site's threads send nothing (around a `copytruncate`).
    paused: AtomicBool,
    /// Threads between "about to send" and "response read".
    busy: AtomicUsize,
    answered: AtomicU64,
}

struct Load {
    port: u16,
    stop: AtomicBool,
    next: AtomicU64,
    failed: AtomicBool,
    sites: [SiteLoad; 2],
}

/// One keep-alive connection: `GET /req/<n>` with a unique `n`, paced; returns the `n` of
/// every request that got its `200`. Any error ends the thread with a message.
fn client(load: &Load, site: usize) -> Result<Vec<u64>, String> {
    let host = SITES[site].0;
    let s = &load.sites[site];
    let stream = TcpStream::connect(("127.0.0.1", load.port)).map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut got = Vec::new();
    let interval = Duration::from_nanos(1_000_000_000 / RATE_PER_CONN);
    let mut next_at = Instant::now();
    let mut line = String::new();
    while !load.stop.load(SeqCst) {
        s.busy.fetch_add(1, SeqCst);
        if s.paused.load(SeqCst) {
            s.busy.fetch_sub(1, SeqCst);
            thread::sleep(Duration::from_millis(1));
            next_at = Instant::now();
            continue;
        }
        let n = load.next.fetch_add(1, SeqCst);
        if n >= MAX_REQUESTS {
            s.busy.fetch_sub(1, SeqCst);
            break;
        }
        let result = (|| -> Result<(), String> {
            write!(writer, "GET /req/{n} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sitelog-nginx-test\r\n\r\n")
                .map_err(|e| format!("sending /req/{n}: {e}"))?;
            line.clear();
            reader.read_line(&mut line).map_err(|e| format!("reading /req/{n}: {e}"))?;
            if !line.starts_with("HTTP/1.1 200 ") {
                return Err(format!("/req/{n}: status line {line:?}"));
            }
            let mut length = None;
            loop {
                line.clear();
                reader.read_line(&mut line).map_err(|e| format!("reading /req/{n}: {e}"))?;
                let h = line.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse::<usize>().ok();
                    }
                }
            }
            let mut body = vec![0; length.ok_or(format!("/req/{n}: no content-length"))?];
            reader.read_exact(&mut body).map_err(|e| format!("reading /req/{n} body: {e}"))?;
            Ok(())
        })();
        if let Err(e) = result {
            s.busy.fetch_sub(1, SeqCst);
            return Err(format!("{host}: {e}"));
        }
        got.push(n);
        s.answered.fetch_add(1, SeqCst);
        s.busy.fetch_sub(1, SeqCst);
        next_at += interval;
        let now = Instant::now();
        if next_at > now {
            thread::sleep(next_at - now);
        } else if now - next_at > Duration::from_millis(200) {
            next_at = now; // fell behind (loaded machine): do not burst to catch up
        }
    }
    Ok(got)
}

/// Every file nginx wrote for `site` (live and rotated, `.gz` decompressed): name → content.
fn site_files(logs: &Path, site: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let dir = logs.join(site);
    for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.expect("dir entry").path();
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        if !name.starts_with("access.log") {
            continue;
        }
        let content = if name.ends_with(".gz") {
            let mut v = Vec::new();
            flate2::read::MultiGzDecoder::new(fs::File::open(&path).expect("open gz"))
                .read_to_end(&mut v)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            v
        } else {
            match fs::read(&path) {
                Ok(v) => v,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // just compressed
                Err(e) => panic!("{}: {e}", path.display()),
            }
        };
        out.insert(name, content);
    }
    out
}

fn count_lines(files: &BTreeMap<String, Vec<u8>>) -> u64 {
    files.values().map(|c| c.iter().filter(|&&b| b == b'\n').count() as u64).sum()
}

/// What nginx logged, by identity: (fingerprint, byte offset) → request path.
fn logged(logs: &Path) -> BTreeMap<(u64, u64), String> {
    let mut out = BTreeMap::new();
    for (site, _) in SITES {
        for (name, content) in site_files(logs, site) {
            let head = &content[..content.len().min(FP_BYTES)];
            let Some(fp) = fingerprint::of_head(head, FP_BYTES, false, Some(site)) else {
                assert!(content.is_empty(), "{site}/{name}: no fingerprint");
                continue;
            };
            assert!(content.ends_with(b"\n"), "{site}/{name}: a partial last line");
            let mut off = 0u64;
            for l in content.split_inclusive(|&b| b == b'\n') {
                let text = String::from_utf8_lossy(l);
                let path = text
                    .split_once("\"GET ")
                    .and_then(|(_, r)| r.split_once(" HTTP/1.1\""))
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_else(|| panic!("{site}/{name}: unexpected line {text:?}"));
                assert!(out.insert((fp, off), path).is_none(), "{site}/{name}: identity twice");
                off += l.len() as u64;
            }
        }
    }
    out
}

/// `logrotate -f -s <state> <conf>` for one site, with a config this test writes.
struct Rotator {
    bin: PathBuf,
    conf: PathBuf,
    state: PathBuf,
    runs: u32,
    time: Duration,
}

impl Rotator {
    fn new(bin: &Path, dir: &Path, logs: &Path, site: &str, mode: Mode, nginx: &Nginx) -> Rotator {
        let log = logs.join(site).join("access.log");
        let how = match mode {
            // Rename + create, then tell nginx to reopen, and wait until it has: compression
            // comes after postrotate and removes the plain file.
            Mode::Create => format!(
                "    create\n    postrotate\n        {reopen} || exit 1\n        M=$(cat {pid})\n        \
                 for i in $(seq 200); do\n            open=\"\"\n            \
                 for p in $M $(cat /proc/$M/task/$M/children 2>/dev/null); do\n                \
                 open=\"$open$(find /proc/$p/fd -lname \"$1.1\" 2>/dev/null)\"\n            done\n            \
                 [ -z \"$open\" ] && exit 0\n            sleep 0.05\n        done\n        \
                 echo \"nginx still writes to $1.1: $open\" >&2\n        exit 1\n    endscript\n",
                reopen = nginx.reopen_command(),
                pid = nginx.pid_file.display(),
            ),
            Mode::CopyTruncate => "    copytruncate\n".to_string(),
        };
        let text = format!(
            "{log} {{\n    compress\n    nodelaycompress\n    rotate 200\n    missingok\n    notifempty\n{how}}}\n",
            log = log.display()
        );
        let conf = dir.join(format!("logrotate-{site}.conf"));
        fs::write(&conf, text).expect("write logrotate config");
        Rotator {
            bin: bin.to_path_buf(),
            conf,
            state: dir.join(format!("logrotate-{site}.state")),
            runs: 0,
            time: Duration::ZERO,
        }
    }

    fn run(&mut self) {
        let t = Instant::now();
        let out = Command::new(&self.bin)
            .arg("-f")
            .arg("-s")
            .arg(&self.state)
            .arg(&self.conf)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()));
        self.time += t.elapsed();
        assert!(
            out.status.success(),
            "logrotate -f -s {} {}: {}\n{}{}",
            self.state.display(),
            self.conf.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.runs += 1;
    }
}

#[test]
fn nginx_with_logrotate_create_and_copytruncate_every_request_once() {
    let t0 = Instant::now();
    let nginx_bin = find_bin("nginx");
    let logrotate_bin = find_bin("logrotate");
    let stack = support::stack();
    let topic = support::unique_name("collect");
    let rejects = support::unique_name("rejects");
    stack.create_topic(&topic, 4).expect("create access topic");
    stack.create_topic(&rejects, 1).expect("create rejects topic");
    let dir = support::temp_dir("nginx");
    let logs = dir.join("logs");
    for (site, _) in SITES {
        fs::create_dir_all(logs.join(site)).expect("log dir");
    }
    let cfg = config(&dir, &stack.kafka_bootstrap, &topic, &rejects, "");
    let stack_ready = t0.elapsed();

    let mut nginx = Nginx::start(&nginx_bin, &dir, &logs);
    let mut rotators: Vec<Rotator> =
        SITES.iter().map(|&(site, mode)| Rotator::new(&logrotate_bin, &dir, &logs, site, mode, &nginx)).collect();
    let mut collector = Collector(Some(CollectorProc::spawn(&cfg, &[])));

    let load = Arc::new(Load {
        port: nginx.port,
        stop: AtomicBool::new(false),
        next: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        sites: Default::default(),
    });
    let threads: Vec<_> = (0..SITES.len() * CONNS_PER_SITE)
        .map(|i| {
            let load = load.clone();
            thread::spawn(move || {
                let r = client(&load, i % SITES.len());
                if r.is_err() {
                    load.failed.store(true, SeqCst);
                }
                r
            })
        })
        .collect();

    // Rotate each site every ROTATE_EVERY, half a period apart, while the load runs.
    let start = Instant::now();
    let mut next = [ROTATE_EVERY / 2, ROTATE_EVERY];
    let mut max_pause = Duration::ZERO;
    while start.elapsed() < LOAD && !load.failed.load(SeqCst) && load.next.load(SeqCst) < MAX_REQUESTS {
        for (i, &(site, mode)) in SITES.iter().enumerate() {
            if start.elapsed() < next[i] {
                continue;
            }
            next[i] += ROTATE_EVERY;
            if mode == Mode::Create {
                rotators[i].run();
                continue;
            }
            let s = &load.sites[i];
            let paused = Instant::now();
            s.paused.store(true, SeqCst);
            let idle = wait_until(Duration::from_secs(10), || s.busy.load(SeqCst) == 0);
            assert!(idle, "{site}: client threads did not pause");
            let answered = s.answered.load(SeqCst);
            let flushed = wait_until(Duration::from_secs(10), || count_lines(&site_files(&logs, site)) == answered);
            assert!(flushed, "{site}: nginx did not log the {answered} answered requests within 10 s");
            rotators[i].run();
            s.paused.store(false, SeqCst);
            max_pause = max_pause.max(paused.elapsed());
        }
        thread::sleep(Duration::from_millis(5));
    }
    load.stop.store(true, SeqCst);
    let mut sent: Vec<u64> = Vec::new();
    for t in threads {
        match t.join().expect("client thread") {
            Ok(v) => sent.extend(v),
            Err(e) => panic!("load client: {e}; nginx log {}", nginx.error_log.display()),
        }
    }
    let load_time = start.elapsed();
    let answered: u64 = load.sites.iter().map(|s| s.answered.load(SeqCst)).sum();
    assert_eq!(answered, sent.len() as u64);

    // nginx logs a request after answering it: wait until every answer is on disk.
    let on_disk = || SITES.iter().map(|(site, _)| count_lines(&site_files(&logs, site))).sum::<u64>();
    let flushed = wait_until(Duration::from_secs(10), || on_disk() == answered);
    assert!(flushed, "nginx logged {} lines for {answered} answered requests", on_disk());
    nginx.stop();

    // The independent records: the client's answered paths and nginx's files agree.
    let expected = logged(&logs);
    let mut logged_paths: Vec<&str> = expected.values().map(String::as_str).collect();
    logged_paths.sort_unstable();
    let mut client_paths: Vec<String> = sent.iter().map(|n| format!("/req/{n}")).collect();
    client_paths.sort_unstable();
    assert_eq!(
        expected.len(),
        sent.len(),
        "nginx logged {} requests, the client got {} responses",
        expected.len(),
        sent.len()
    );
    assert!(logged_paths.iter().copied().eq(client_paths.iter().map(String::as_str)), "logged paths differ");
    for (i, &(site, mode)) in SITES.iter().enumerate() {
        let files = site_files(&logs, site);
        let gz = files.keys().filter(|n| n.ends_with(".gz")).count();
        assert_eq!(gz, rotators[i].runs as usize, "{site} ({mode:?}): archives on disk {:?}", files.keys());
        assert!(rotators[i].runs >= 3, "{site}: only {} rotations", rotators[i].runs);
    }

    // The running collector catches up on its own: everything nginx logged is in the topic.
    let caught = Instant::now();
    let live = read_topics(&stack.kafka_bootstrap, &topic, &rejects, Duration::from_secs(60), |e| {
        expected.keys().all(|k| e.contains_key(k))
    });
    let catch_up = caught.elapsed();
    if let Err(e) = check(&expected, &live, false) {
        panic!("while running: {e}\ncollector logs in {}", dir.display());
    }
    let status = collector.0.take().expect("collector").terminate(Duration::from_secs(40));
    assert!(status.success(), "collector exit {status:?}; logs in {}", dir.display());
    // A clean restart reads everything present and sends nothing again.
    let mut once = CollectorProc::spawn(&cfg, &["--once"]);
    let st = once.wait(Duration::from_secs(60));
    assert!(st.success(), "--once: exit {st:?}, log {}", once.log.display());
    let got = read_topics(&stack.kafka_bootstrap, &topic, &rejects, Duration::from_secs(30), |e| {
        expected.keys().all(|k| e.contains_key(k))
    });
    if let Err(e) = check(&expected, &got, false) {
        panic!("after SIGTERM and --once: {e}\ncollector logs in {}", dir.display());
    }

    eprintln!(
        "nginx e2e: {} requests answered and logged ({} create / {} copytruncate), {} create + {} copytruncate \
         rotations (logrotate {:?} / {:?} total, longest copytruncate pause {:?}), every line exactly once by \
         identity; stack {:?}, load {:?}, topic caught up {:?} after load, total {:?}",
        sent.len(),
        load.sites[0].answered.load(SeqCst),
        load.sites[1].answered.load(SeqCst),
        rotators[0].runs,
        rotators[1].runs,
        rotators[0].time,
        rotators[1].time,
        max_pause,
        stack_ready,
        load_time,
        catch_up,
        t0.elapsed()
    );
}
