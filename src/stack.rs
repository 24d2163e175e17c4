//! The real local stack: a tansu broker (Kafka protocol) and ClickHouse via chDB behind
//! `deploy/local/chdb_http.py`, on free loopback ports.
//!
//! Two ways to run it:
//! - [`LocalStack::start`]: owned by the calling process (test harnesses, benches). The
//!   services die with the process, even on `kill -9` or a panic (`PR_SET_PDEATHSIG`).
//! - `sitelog stack up|down|status`: detached services described by `state.json` in the
//!   stack directory, for the demo and for people.
//!
//! Binaries come from the cache that `deploy/local/bootstrap.sh` fills, outside the clone.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The ClickHouse HTTP endpoint script, embedded so the binary works from any directory.
pub const CHDB_HTTP_PY: &str = include_str!("../deploy/local/chdb_http.py");
/// The installer of the cached parts (tansu, chDB venv).
pub const BOOTSTRAP_SH: &str = include_str!("../deploy/local/bootstrap.sh");

pub const TANSU_VERSION: &str = "0.6.0";
pub const CHDB_VERSION: &str = "26.9.0";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{what} not found at {path}: run `sitelog stack install` (or deploy/local/bootstrap.sh) first")]
    NotInstalled { what: &'static str, path: PathBuf },
    #[error("port {port} on 127.0.0.1 is busy ({service}); choose another or stop what holds it")]
    PortBusy { service: &'static str, port: u16 },
    #[error("{service} did not become ready within {secs} s; see its log {log}{tail}")]
    NotReady { service: &'static str, secs: u64, log: PathBuf, tail: String },
    #[error("{service} exited during start-up ({status}); see its log {log}{tail}")]
    Exited { service: &'static str, status: String, log: PathBuf, tail: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("creating topic {topic}: {detail}")]
    Topic { topic: String, detail: String },
    #[error("no stack state in {0}: is the stack up? (`sitelog stack up`)")]
    NoState(PathBuf),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StackError {
    let what = what.into();
    move |source| StackError::Io { what, source }
}

/// Where the cached binaries live: `$SITELOG_CACHE` or `${XDG_CACHE_HOME:-~/.cache}/sitelog`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SITELOG_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache"));
    base.join("sitelog")
}

pub fn tansu_bin() -> PathBuf {
    std::env::var_os("SITELOG_TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join(format!("tansu-{TANSU_VERSION}/bin/tansu")))
}

pub fn chdb_python() -> PathBuf {
    std::env::var_os("SITELOG_CHDB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join(format!("chdb-venv-{CHDB_VERSION}/bin/python")))
}

/// Runs the embedded bootstrap script (idempotent; slow only the first time on a machine).
pub fn install() -> Result<(), StackError> {
    let status = Command::new("bash")
        .arg("-c")
        .arg(BOOTSTRAP_SH)
        .arg("bootstrap.sh")
        .arg("all")
        .status()
        .map_err(io("running bash for the bootstrap script"))?;
    if !status.success() {
        return Err(StackError::Io {
            what: "bootstrap".into(),
            source: std::io::Error::other(format!("bootstrap failed ({status}); its message is above")),
        });
    }
    Ok(())
}

fn check_installed() -> Result<(), StackError> {
    let t = tansu_bin();
    if !t.exists() {
        return Err(StackError::NotInstalled { what: "tansu", path: t });
    }
    let p = chdb_python();
    if !p.exists() {
        return Err(StackError::NotInstalled { what: "the chDB Python venv", path: p });
    }
    Ok(())
}

/// A free loopback port for a service that needs a fixed one (tansu), picked at random in
/// 20000–31999 and checked by binding it. Below Linux's ephemeral range (32768–60999) on
/// purpose: a port the kernel handed out (bind to 0) was seen taken by some client's outgoing
/// connection between the pick and the service's bind while test suites ran in parallel
/// ("port … is busy (tansu (Kafka))"); ports outside that range are only taken by a service
/// that binds them. [`LocalStack::start`] still picks again if one turns out busy.
pub fn free_port() -> Result<u16, StackError> {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..200 {
        // A fresh RandomState is randomly seeded: a different port per call and process.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("binding a loopback port"))?;
    Ok(l.local_addr().map_err(io("reading a bound port"))?.port())
}

/// Starts a service on a [`free_port`], picking another (up to 3 times) when the port was
/// taken before the service could bind it.
fn on_free_port<T>(start: impl Fn(u16) -> Result<T, StackError>) -> Result<(u16, T), StackError> {
    let mut tries = 0;
    loop {
        let port = free_port()?;
        match start(port) {
            Err(StackError::PortBusy { .. }) if tries < 3 => tries += 1,
            other => return Ok((port, other?)),
        }
    }
}

fn ensure_port_free(service: &'static str, port: u16) -> Result<(), StackError> {
    TcpListener::bind(("127.0.0.1", port)).map(drop).map_err(|_| StackError::PortBusy { service, port })
}

fn log_tail(log: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(log) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().rev().take(5).collect();
    if lines.is_empty() {
        return String::new();
    }
    let mut out = String::from("; last lines:");
    for l in lines.iter().rev() {
        out.push_str("\n    ");
        out.push_str(l);
    }
    out
}

/// How a service's process is owned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ownership {
    /// Dies with this process (PR_SET_PDEATHSIG from a thread that lives as long as the process).
    Owned,
    /// Own session, survives this process (`sitelog stack up`).
    Detached,
}

/// PR_SET_PDEATHSIG fires when the *thread* that forked exits, so owned services are spawned
/// from one thread that never exits.
fn spawn_owned(cmd: Command) -> std::io::Result<Child> {
    type Req = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<mpsc::Sender<Req>>> = std::sync::OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Req>();
        std::thread::Builder::new()
            .name("sitelog-stack-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    // SAFETY: prctl and getppid are async-signal-safe; no allocation in the closure.
                    unsafe {
                        cmd.pre_exec(|| {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the stack spawner thread");
        std::sync::Mutex::new(tx)
    });
    let (rtx, rrx) = mpsc::channel();
    tx.lock().expect("spawner lock").send((cmd, rtx)).map_err(|_| std::io::Error::other("spawner thread gone"))?;
    rrx.recv().map_err(|_| std::io::Error::other("spawner thread gone"))?
}

fn spawn(mut cmd: Command, how: Ownership) -> std::io::Result<Child> {
    match how {
        Ownership::Owned => spawn_owned(cmd),
        Ownership::Detached => {
            cmd.process_group(0);
            cmd.spawn()
        }
    }
}

fn open_log(path: &Path) -> Result<File, StackError> {
    OpenOptions::new().create(true).append(true).open(path).map_err(io(format!("opening log {}", path.display())))
}

/// One running service.
#[derive(Debug)]
struct Proc {
    child: Option<Child>,
    pid: u32,
}

impl Proc {
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(c.id(), Duration::from_secs(10));
            let _ = c.wait();
        }
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL.
fn terminate(pid: u32, grace: Duration) {
    let pid = pid as libc::pid_t;
    // SAFETY: plain kill(2) calls on a pid we started.
    unsafe {
        if libc::kill(pid, libc::SIGTERM) != 0 {
            return;
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !pid_alive(pid as u32) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

fn pid_alive(pid: u32) -> bool {
    // A zombie still answers kill(0): read the state from /proc instead.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_tcp(service: &'static str, port: u16, child: &mut Child, log: &Path) -> Result<(), StackError> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(StackError::Exited {
                service,
                status: status.to_string(),
                log: log.into(),
                tail: log_tail(log),
            });
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(StackError::NotReady {
                service,
                secs: READY_TIMEOUT.as_secs(),
                log: log.into(),
                tail: log_tail(log),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// tansu's storage engine: durable sqlite in the stack directory unless
/// `SITELOG_TANSU_STORAGE` names another (e.g. `memory://tansu/` for a broker-ceiling bench).
fn tansu_storage() -> String {
    std::env::var("SITELOG_TANSU_STORAGE").unwrap_or_else(|_| "sqlite://tansu.db".into())
}

/// How the broker is reached: directly (plaintext, no authentication), or through a TLS
/// terminator on `tls_port` with SASL required (the broker advertises the TLS port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KafkaAccess {
    Plain,
    SaslBehindTls { tls_port: u16 },
}

fn start_kafka(dir: &Path, port: u16, how: Ownership) -> Result<Proc, StackError> {
    start_kafka_with(dir, port, how, KafkaAccess::Plain)
}

fn start_kafka_with(dir: &Path, port: u16, how: Ownership, access: KafkaAccess) -> Result<Proc, StackError> {
    ensure_port_free("tansu (Kafka)", port)?;
    let data = dir.join("kafka");
    fs::create_dir_all(&data).map_err(io(format!("creating {}", data.display())))?;
    let log = dir.join("kafka.log");
    let out = open_log(&log)?;
    let err = out.try_clone().map_err(io("cloning a log handle"))?;
    let url = format!("tcp://127.0.0.1:{port}");
    let advertised = match access {
        KafkaAccess::Plain => url.clone(),
        KafkaAccess::SaslBehindTls { tls_port } => format!("tcp://127.0.0.1:{tls_port}"),
    };
    let mut cmd = Command::new(tansu_bin());
    cmd.current_dir(&data).args(["broker", "--listener-url", &url, "--advertised-listener-url", &advertised]);
    if access != KafkaAccess::Plain {
        cmd.arg("--authentication");
    }
    cmd.args(["--storage-engine", &tansu_storage()])
        .env("RUST_LOG", std::env::var("SITELOG_TANSU_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let mut child = spawn(cmd, how).map_err(io(format!("starting {}", tansu_bin().display())))?;
    if let Err(e) = wait_tcp("tansu (Kafka)", port, &mut child, &log) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(Proc { pid: child.id(), child: Some(child) })
}

fn start_clickhouse(dir: &Path, port: u16, how: Ownership) -> Result<Proc, StackError> {
    start_clickhouse_with(dir, port, how, None)
}

fn start_clickhouse_with(dir: &Path, port: u16, how: Ownership, secure: Option<&Secure>) -> Result<Proc, StackError> {
    ensure_port_free("ClickHouse (chDB endpoint)", port)?;
    let data = dir.join("clickhouse");
    fs::create_dir_all(&data).map_err(io(format!("creating {}", data.display())))?;
    let script = dir.join("chdb_http.py");
    fs::write(&script, CHDB_HTTP_PY).map_err(io(format!("writing {}", script.display())))?;
    let log = dir.join("clickhouse.log");
    let mut cmd = Command::new(chdb_python());
    cmd.arg(&script)
        .arg("--data-dir")
        .arg(&data)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--log-file"])
        .arg(&log);
    if let Some(s) = secure {
        cmd.arg("--tls-cert").arg(&s.cert).arg("--tls-key").arg(&s.key);
        cmd.arg("--password-file").arg(&s.clickhouse_password_file);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(open_log(&log)?);
    let mut child = spawn(cmd, how).map_err(io(format!("starting {}", chdb_python().display())))?;
    // The endpoint prints `READY <url>` once it serves; read it on a thread to bound the wait.
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let mut r = BufReader::new(stdout);
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so the child never blocks on a full pipe.
        let mut sink = Vec::new();
        let _ = r.read_to_end(&mut sink);
    });
    let service = "ClickHouse (chDB endpoint)";
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(line) if line.starts_with("READY") => Ok(Proc { pid: child.id(), child: Some(child) }),
        Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            Err(StackError::Exited { service, status, log: log.clone(), tail: log_tail(&log) })
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(StackError::NotReady { service, secs: READY_TIMEOUT.as_secs(), log: log.clone(), tail: log_tail(&log) })
        }
    }
}

/// A stack owned by this process: services stop on drop, and die with the process.
#[derive(Debug)]
pub struct LocalStack {
    pub dir: PathBuf,
    pub kafka_port: u16,
    pub clickhouse_port: u16,
    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub kafka_bootstrap: String,
    /// `http://127.0.0.1:PORT`, for the `clickhouse` crate and curl.
    pub clickhouse_url: String,
    kafka: Proc,
    clickhouse: Proc,
    /// The TLS terminator in front of the broker ([`LocalStack::start_secure`]).
    tls: Option<Proc>,
    access: KafkaAccess,
    secure: Option<Secure>,
}

/// TLS and authentication for [`LocalStack::start_secure`].
#[derive(Debug, Clone)]
pub struct Secure {
    /// Server certificate (PEM, valid for 127.0.0.1) and its key, for both TLS endpoints.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SCRAM-SHA-512 users of the broker: (name, password).
    pub kafka_users: Vec<(String, String)>,
    /// Topics to create (name, partitions): with authentication on, tansu's own CLI cannot.
    pub topics: Vec<(String, i32)>,
    /// The password the ClickHouse endpoint requires (first line).
    pub clickhouse_password_file: PathBuf,
}

/// The TLS terminator of the local broker: tansu 0.6.0 cannot take `--cert` and `--key`
/// together, so `stunnel4` (Debian) accepts TLS on `tls_port` and forwards to the broker.
fn start_stunnel(dir: &Path, tls_port: u16, broker_port: u16, s: &Secure) -> Result<Proc, StackError> {
    let service = "stunnel (Kafka TLS)";
    ensure_port_free(service, tls_port)?;
    let conf = dir.join("stunnel.conf");
    let text = format!(
        "foreground = yes\nsyslog = no\npid =\ndebug = notice\n\n[kafka]\naccept = 127.0.0.1:{tls_port}\n\
         connect = 127.0.0.1:{broker_port}\ncert = {}\nkey = {}\n",
        s.cert.display(),
        s.key.display()
    );
    fs::write(&conf, text).map_err(io(format!("writing {}", conf.display())))?;
    let log = dir.join("stunnel.log");
    let out = open_log(&log)?;
    let err = out.try_clone().map_err(io("cloning a log handle"))?;
    let mut cmd = Command::new("stunnel4");
    cmd.arg(&conf).stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child = spawn(cmd, Ownership::Owned)
        .map_err(io("starting stunnel4 (Debian package stunnel4; scripts/test installs it)"))?;
    if let Err(e) = wait_tcp(service, tls_port, &mut child, &log) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(Proc { pid: child.id(), child: Some(child) })
}

fn create_user(port: u16, name: &str, password: &str) -> Result<(), StackError> {
    let out = Command::new(tansu_bin())
        .args(["user", "create", "--broker", &format!("tcp://127.0.0.1:{port}"), "--mechanism", "scram512"])
        .args([name, password])
        .output()
        .map_err(io("running tansu user create"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(StackError::Io {
        what: format!("tansu user create {name}"),
        source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
    })
}

impl LocalStack {
    /// Starts both services with TLS and authentication: the broker requires SASL
    /// (SCRAM-SHA-512) and is reached through a TLS terminator (`kafka_bootstrap` is the TLS
    /// port, `kafka_port` the broker's own); ClickHouse serves HTTPS and requires the password
    /// (`clickhouse_url` is `https://`). Users and topics are made before authentication is
    /// switched on (tansu's CLI cannot authenticate), on the same durable storage.
    pub fn start_secure(dir: &Path, secure: &Secure) -> Result<LocalStack, StackError> {
        check_installed()?;
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let (kp, tp, cp) = (free_port()?, free_port()?, free_port()?);
        let mut setup = start_kafka(dir, kp, Ownership::Owned)?;
        let made = secure
            .kafka_users
            .iter()
            .try_for_each(|(u, p)| create_user(kp, u, p))
            .and_then(|()| secure.topics.iter().try_for_each(|(t, n)| create_topic(kp, t, *n)));
        setup.stop();
        made?;
        let access = KafkaAccess::SaslBehindTls { tls_port: tp };
        let kafka = start_kafka_with(dir, kp, Ownership::Owned, access)?;
        let tls = start_stunnel(dir, tp, kp, secure)?;
        let clickhouse = start_clickhouse_with(dir, cp, Ownership::Owned, Some(secure))?;
        Ok(LocalStack {
            dir: dir.to_path_buf(),
            kafka_port: kp,
            clickhouse_port: cp,
            kafka_bootstrap: format!("127.0.0.1:{tp}"),
            clickhouse_url: format!("https://127.0.0.1:{cp}"),
            kafka,
            clickhouse,
            tls: Some(tls),
            access,
            secure: Some(secure.clone()),
        })
    }

    /// Starts both services with their data under `dir` on free ports (see [`on_free_port`]).
    pub fn start(dir: &Path) -> Result<LocalStack, StackError> {
        check_installed()?;
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let (kp, kafka) = on_free_port(|port| start_kafka(dir, port, Ownership::Owned))?;
        let (cp, clickhouse) = on_free_port(|port| start_clickhouse(dir, port, Ownership::Owned))?;
        Ok(LocalStack {
            dir: dir.to_path_buf(),
            kafka_port: kp,
            clickhouse_port: cp,
            kafka_bootstrap: format!("127.0.0.1:{kp}"),
            clickhouse_url: format!("http://127.0.0.1:{cp}"),
            kafka,
            clickhouse,
            tls: None,
            access: KafkaAccess::Plain,
            secure: None,
        })
    }

    pub fn kafka_log(&self) -> PathBuf {
        self.dir.join("kafka.log")
    }

    pub fn clickhouse_log(&self) -> PathBuf {
        self.dir.join("clickhouse.log")
    }

    /// Creates a topic (idempotent: an existing topic is fine).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), StackError> {
        create_topic(self.kafka_port, name, partitions)
    }

    /// Deletes a topic (its records and its id; a topic created under the same name later is
    /// another topic with another id).
    pub fn delete_topic(&self, name: &str) -> Result<(), StackError> {
        let out = Command::new(tansu_bin())
            .args(["topic", "delete", "--broker", &format!("tcp://127.0.0.1:{}", self.kafka_port), name])
            .output()
            .map_err(io("running tansu topic delete"))?;
        if out.status.success() {
            return Ok(());
        }
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Err(StackError::Topic { topic: name.into(), detail: text.trim().to_owned() })
    }

    /// Stops the broker (SIGTERM, then SIGKILL); its data stays for [`Self::start_kafka`].
    pub fn stop_kafka(&mut self) {
        self.kafka.stop();
    }

    /// Restarts the broker on the same port with the same data.
    pub fn start_kafka(&mut self) -> Result<(), StackError> {
        self.kafka.stop();
        self.kafka = start_kafka_with(&self.dir, self.kafka_port, Ownership::Owned, self.access)?;
        Ok(())
    }

    /// Kills the broker at once (no clean shutdown).
    pub fn kill_kafka(&mut self) {
        if let Some(mut c) = self.kafka.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stop_clickhouse(&mut self) {
        self.clickhouse.stop();
    }

    pub fn start_clickhouse(&mut self) -> Result<(), StackError> {
        self.clickhouse.stop();
        self.clickhouse =
            start_clickhouse_with(&self.dir, self.clickhouse_port, Ownership::Owned, self.secure.as_ref())?;
        Ok(())
    }

    /// Says which service is down, with its log, so a test failure points at the cause.
    pub fn check_alive(&mut self) -> Result<(), String> {
        for (name, p, log) in [
            ("tansu (Kafka)", &mut self.kafka, self.dir.join("kafka.log")),
            ("ClickHouse (chDB endpoint)", &mut self.clickhouse, self.dir.join("clickhouse.log")),
        ] {
            match p.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(None)) => {}
                Some(Ok(Some(st))) => {
                    return Err(format!("{name} exited ({st}); see {}{}", log.display(), log_tail(&log)))
                }
                Some(Err(e)) => return Err(format!("{name}: {e}; see {}", log.display())),
                None => return Err(format!("{name} is stopped; see {}", log.display())),
            }
        }
        Ok(())
    }

    pub fn kafka_pid(&self) -> u32 {
        self.kafka.pid
    }

    pub fn clickhouse_pid(&self) -> u32 {
        self.clickhouse.pid
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        if let Some(t) = &mut self.tls {
            t.stop();
        }
        self.kafka.stop();
        self.clickhouse.stop();
    }
}

fn create_topic(port: u16, name: &str, partitions: i32) -> Result<(), StackError> {
    let out = Command::new(tansu_bin())
        .args(["topic", "create", "--broker", &format!("tcp://127.0.0.1:{port}")])
        .args(["--partitions", &partitions.to_string(), name])
        .output()
        .map_err(io("running tansu topic create"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() || text.contains("TopicAlreadyExists") || text.contains("already exists") {
        return Ok(());
    }
    Err(StackError::Topic { topic: name.into(), detail: text.trim().to_owned() })
}

/// What `sitelog stack up` leaves behind for `down` and `status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StackState {
    pub kafka_port: u16,
    pub clickhouse_port: u16,
    pub kafka_pid: u32,
    pub clickhouse_pid: u32,
    pub kafka_bootstrap: String,
    pub clickhouse_url: String,
}

impl StackState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub fn load(dir: &Path) -> Result<StackState, StackError> {
        let p = Self::path(dir);
        let text = fs::read_to_string(&p).map_err(|_| StackError::NoState(dir.to_path_buf()))?;
        serde_json::from_str(&text)
            .map_err(|e| StackError::Io { what: format!("reading {}", p.display()), source: e.into() })
    }

    pub fn kafka_alive(&self) -> bool {
        pid_alive(self.kafka_pid)
    }

    pub fn clickhouse_alive(&self) -> bool {
        pid_alive(self.clickhouse_pid)
    }
}

/// Starts detached services (or reports the running ones). Ports 0 = choose free ports.
pub fn up(dir: &Path, kafka_port: u16, clickhouse_port: u16, topics: &[(&str, i32)]) -> Result<StackState, StackError> {
    check_installed()?;
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    if let Ok(st) = StackState::load(dir) {
        if st.kafka_alive() && st.clickhouse_alive() {
            return Ok(st);
        }
        down(dir)?; // half-up: stop what is left, start clean
    }
    let kp = if kafka_port == 0 { free_port()? } else { kafka_port };
    let cp = if clickhouse_port == 0 { free_port()? } else { clickhouse_port };
    let mut kafka = start_kafka(dir, kp, Ownership::Detached)?;
    let mut clickhouse = match start_clickhouse(dir, cp, Ownership::Detached) {
        Ok(c) => c,
        Err(e) => {
            kafka.stop();
            return Err(e);
        }
    };
    for (t, n) in topics {
        if let Err(e) = create_topic(kp, t, *n) {
            kafka.stop();
            clickhouse.stop();
            return Err(e);
        }
    }
    let st = StackState {
        kafka_port: kp,
        clickhouse_port: cp,
        kafka_pid: kafka.pid,
        clickhouse_pid: clickhouse.pid,
        kafka_bootstrap: format!("127.0.0.1:{kp}"),
        clickhouse_url: format!("http://127.0.0.1:{cp}"),
    };
    let p = StackState::path(dir);
    let mut f = File::create(&p).map_err(io(format!("writing {}", p.display())))?;
    f.write_all(serde_json::to_string_pretty(&st).expect("state serializes").as_bytes())
        .map_err(io(format!("writing {}", p.display())))?;
    // Detached children must outlive us: forget the handles without killing.
    kafka.child.take();
    clickhouse.child.take();
    Ok(st)
}

/// Stops detached services; fine if nothing runs.
pub fn down(dir: &Path) -> Result<(), StackError> {
    let Ok(st) = StackState::load(dir) else { return Ok(()) };
    for pid in [st.kafka_pid, st.clickhouse_pid] {
        if pid_alive(pid) {
            terminate(pid, Duration::from_secs(10));
        }
    }
    let _ = fs::remove_file(StackState::path(dir));
    Ok(())
}
