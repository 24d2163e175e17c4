//! `collector.toml`: what to tail, where to send it, and the limits that keep the collector
//! from ever hurting the web host. Defaults live in the `Default` impls below and nowhere
//! else; unknown keys are refused; [`CollectorConfig::validate`] names the bad key.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use sitelog_schema::kafka::{self, KafkaSecurity};

use super::pattern::PathPattern;

/// The whole `collector.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    #[serde(default)]
    pub collector: CollectorSection,
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub tail: TailConfig,
    /// `[[source]]` tables: one per log family (path globs + format + how the host is found).
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
}

/// `[collector]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorSection {
    /// Where checkpoints live (one state file per collector plus a lock file).
    pub checkpoint_dir: PathBuf,
    /// Prometheus `/metrics` listen address, e.g. `127.0.0.1:10471` (a bare port listens on loopback); none by default
    /// (`--metrics-addr` overrides).
    pub metrics_addr: Option<String>,
    /// How long a clean shutdown waits for outstanding acknowledgements.
    pub shutdown_timeout_ms: u64,
    /// The web server whose logs these are: every record carries it (wire version 2), so
    /// diagnosis can tell one failing server from many failing sites; it also names this
    /// collector in its heartbeats (`collector_heartbeats.server`, the billing run's
    /// completeness report). Default: this machine's host name ([`default_server`]); a
    /// `[[source]]` may name another with `server`.
    pub server: String,
    /// How often each `[[source]]` publishes a heartbeat (how far its records are delivered)
    /// to `[kafka] heartbeat_topic`. 0 turns heartbeats off (the billing run then cannot see
    /// this collector).
    pub heartbeat_interval_ms: u64,
}

impl Default for CollectorSection {
    fn default() -> Self {
        CollectorSection {
            checkpoint_dir: PathBuf::from("/var/lib/sitelog/collect"),
            metrics_addr: None,
            shutdown_timeout_ms: 30_000,
            server: default_server(),
            heartbeat_interval_ms: 10_000,
        }
    }
}

/// The machine's host name, the default of `[collector] server`: the kernel's
/// (`/proc/sys/kernel/hostname`), else `gethostname(2)`, else `localhost`.
pub fn default_server() -> String {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_owned());
    from_proc.filter(|s| !s.is_empty()).or_else(gethostname).unwrap_or_else(|| "localhost".to_owned())
}

fn gethostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is NUL-terminated when it fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_owned();
    (!name.is_empty()).then_some(name)
}

/// `[kafka]`: same keys as the processor's `[kafka]` where they overlap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, comma-separated.
    pub brokers: String,
    pub topic: String,
    pub rejects_topic: String,
    /// Where heartbeats go (JSON, `sitelog_schema::heartbeat`); default `sitelog.heartbeats`.
    pub heartbeat_topic: String,
    pub client_id: String,
    /// `security_protocol`, `ssl_*` and `sasl_*`: the keys the processor's `[kafka]` has too,
    /// one definition (`sitelog_schema::kafka`). The SASL password comes from
    /// `SITELOG_KAFKA_PASSWORD` or `sasl_password_file`, never from this file.
    #[serde(flatten)]
    pub security: KafkaSecurity,
    /// How long a message may stay unacknowledged before the collector gives up on the
    /// producer session: it stops sending, drops the session (purging its queue) and starts a
    /// new one from the last checkpoints. 0 (default) = wait forever: while the broker is down
    /// messages wait and reading pauses. This is the collector's own deadline, not
    /// librdkafka's `message.timeout.ms`, which is always infinite (see `deliver.rs`: a
    /// librdkafka timeout can fail message N and still deliver N+1, and the processor's
    /// re-send filter would then drop N when it is re-sent).
    pub message_timeout_ms: u64,
    /// Compression of Kafka messages: `lz4` (default, cheap and ~4× smaller on the wire),
    /// `zstd`, `snappy`, `gzip` or `none`. The local tansu broker decodes compressed batches
    /// byte by byte, which makes `none` ~4× faster there (benches/README.md, Collector).
    pub compression: String,
    /// Extra librdkafka properties, for what this file has no key for.
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: sitelog_schema::wire::ACCESS_TOPIC.into(),
            rejects_topic: sitelog_schema::wire::REJECTS_TOPIC.into(),
            heartbeat_topic: sitelog_schema::wire::HEARTBEAT_TOPIC.into(),
            client_id: "sitelog-collect".into(),
            security: KafkaSecurity::default(),
            message_timeout_ms: 0,
            compression: "lz4".into(),
            properties: Default::default(),
        }
    }
}

/// `[limits]`: memory and message sizes. Sizes accept integers (bytes) or `"16MiB"`, `"256KiB"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes in open batches plus sent-but-unacknowledged messages. When reached, reading
    /// pauses until acknowledgements free room (backpressure).
    pub max_inflight_bytes: ByteSize,
    /// Records per Kafka message.
    pub batch_max_records: u32,
    /// Encoded bytes per Kafka message (before compression).
    pub batch_max_bytes: ByteSize,
    /// How long a batch may wait for more records before it is sent.
    pub linger_ms: u64,
    /// Longer lines are rejected (not split); at most this much of a line is buffered.
    pub max_line_bytes: ByteSize,
    /// Open file descriptors for log files. Idle files are closed and reopened by path with
    /// an identity check.
    pub max_open_files: usize,
    /// Bytes read from a file per read call.
    pub read_chunk_bytes: ByteSize,
    /// Distinct hosts with an open batch per file. A line with a new host beyond it sends the
    /// batch open longest first (counted in `sitelog_collect_host_cap_seals_total`), so junk
    /// `Host` headers cannot grow memory without limit; every record keeps its own host.
    pub max_hosts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_inflight_bytes: ByteSize(16 << 20),
            batch_max_records: 1000,
            batch_max_bytes: ByteSize(256 << 10),
            linger_ms: 200,
            max_line_bytes: ByteSize(64 << 10),
            max_open_files: 512,
            read_chunk_bytes: ByteSize(128 << 10),
            max_hosts: 1000,
        }
    }
}

/// `[tail]`: how files are watched, identified and finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailConfig {
    /// Glob discovery (new files, rotations) at least this often.
    pub scan_interval_ms: u64,
    /// Open files are checked for growth at least this often (inotify wakes earlier).
    pub poll_interval_ms: u64,
    /// Use inotify (the `notify` crate); falls back to polling when unavailable.
    pub inotify: bool,
    /// A rotated-away file is finished (its partial last line sent as a line) once it has
    /// been unmodified this long: the web server may still write until it reopens its log.
    pub rotate_wait_ms: u64,
    /// An open file at EOF for this long is closed (reopened by path when it grows).
    pub idle_close_ms: u64,
    /// The fingerprint covers the first line, but at most this many bytes.
    pub fingerprint_bytes: usize,
    /// Checkpoints are written at most this often (and at exit).
    pub checkpoint_interval_ms: u64,
    /// Finished files are remembered this long, so archives of them are recognised.
    pub completed_retention_days: u64,
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            scan_interval_ms: 1000,
            poll_interval_ms: 250,
            inotify: true,
            rotate_wait_ms: 5000,
            idle_close_ms: 60_000,
            fingerprint_bytes: 256,
            checkpoint_interval_ms: 1000,
            completed_retention_days: 30,
        }
    }
}

/// Where a record's site host comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostFrom {
    /// The log line's host field (`$host`, `%v`); the path's `{site}` is the fallback.
    Field,
    /// The `{site}` capture of the path pattern.
    Path,
}

/// `[[source]]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Label for metrics and logs (`source="…"`).
    pub name: String,
    /// Absolute path patterns: `*`, `?`, `[abc]`, `**` (any depth) and one optional `{site}`
    /// (a `*` whose match is the site host), e.g. `/var/log/sites/{site}/access.log`.
    pub paths: Vec<String>,
    /// A log format: a known name or a pasted nginx `log_format` / apache `LogFormat`.
    pub format: String,
    /// `field` or `path`; default: `path` when the patterns capture `{site}`, else `field`.
    #[serde(default)]
    pub host: Option<HostFrom>,
    /// The web server these files are from, when not `[collector] server` (a log host that
    /// collects for several web servers, or logs copied from one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

impl SourceConfig {
    /// The server this source's records carry: its own `server`, else `[collector] server`.
    pub fn server<'a>(&'a self, collector: &'a CollectorSection) -> &'a str {
        self.server.as_deref().unwrap_or(&collector.server)
    }

    pub fn host_from(&self) -> HostFrom {
        self.host.unwrap_or_else(|| {
            if self.paths.iter().any(|p| p.contains("{site}")) {
                HostFrom::Path
            } else {
                HostFrom::Field
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: line {line}, column {column}: {msg}")]
    Parse { path: String, line: usize, column: usize, msg: String },
    #[error("{path}: {msg}")]
    ParseNoSpan { path: String, msg: String },
    #[error("{path}: {key}: {msg}")]
    Invalid { path: String, key: String, msg: String },
}

impl CollectorConfig {
    /// Reads, parses and validates a TOML file; errors name the file and line or key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: p.clone(), source })?;
        Self::from_toml(&text, &p)
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: CollectorConfig = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                ConfigError::Parse { path: origin.into(), line, column, msg: e.message().to_owned() }
            }
            None => ConfigError::ParseNoSpan { path: origin.into(), msg: e.message().to_owned() },
        })?;
        cfg.validate().map_err(|(key, msg)| ConfigError::Invalid { path: origin.into(), key, msg })?;
        Ok(cfg)
    }

    /// Checks what serde cannot; the error names the key (`source[1].paths[0]`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((k.to_owned(), m.to_owned()));
        if self.sources.is_empty() {
            return bad("source", "at least one [[source]] is required");
        }
        check_server("collector.server", &self.collector.server)?;
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let k = |f: &str| format!("source[{i}].{f}");
            if s.name.is_empty() {
                return Err((k("name"), "must not be empty".into()));
            }
            if !names.insert(s.name.as_str()) {
                return Err((k("name"), format!("duplicate source name {:?}", s.name)));
            }
            if s.paths.is_empty() {
                return Err((k("paths"), "at least one path pattern is required".into()));
            }
            for (j, p) in s.paths.iter().enumerate() {
                let pat = PathPattern::parse(p).map_err(|e| (k(&format!("paths[{j}]")), e.to_string()))?;
                if s.host == Some(HostFrom::Path) && !pat.has_site() {
                    return Err((k(&format!("paths[{j}]")), "host = \"path\" needs a {site} in every pattern".into()));
                }
            }
            if s.format.trim().is_empty() {
                return Err((k("format"), "must name a log format".into()));
            }
            if let Some(server) = &s.server {
                check_server(&k("server"), server)?;
            }
            super::parse::resolve(&s.format).map_err(|e| (k("format"), e))?;
        }
        let kf = &self.kafka;
        if kf.brokers.trim().is_empty() {
            return bad("kafka.brokers", "must list at least one broker");
        }
        if kf.topic.is_empty() {
            return bad("kafka.topic", "must not be empty");
        }
        if kf.rejects_topic.is_empty() {
            return bad("kafka.rejects_topic", "must not be empty");
        }
        if kf.heartbeat_topic.is_empty() || kf.heartbeat_topic == kf.topic {
            return bad("kafka.heartbeat_topic", "must be set and differ from kafka.topic");
        }
        let c = &self.collector;
        if c.server.trim().is_empty() || c.server.len() > sitelog_schema::heartbeat::MAX_NAME {
            return bad("collector.server", "must be 1 to 256 bytes (default: the host name)");
        }
        if c.heartbeat_interval_ms != 0 && c.heartbeat_interval_ms < 100 {
            return bad("collector.heartbeat_interval_ms", "must be 0 (off) or at least 100");
        }
        kf.security.validate().map_err(|(k, m)| (k.to_owned(), m))?;
        if !kafka::COMPRESSIONS.contains(&kf.compression.as_str()) {
            return bad("kafka.compression", "must be none, lz4, zstd, snappy or gzip");
        }
        // What the config asks for must be compiled into librdkafka (TLS, SCRAM, the codec).
        kafka::check_supported(&kf.security, Some(&kf.compression), &builtin_features())
            .map_err(|(k, m)| (k.to_owned(), m))?;
        for key in kf.properties.keys() {
            if GUARANTEE_KEYS.contains(&key.as_str()) {
                return Err((
                    format!("kafka.properties.{key:?}"),
                    "is fixed by the collector: delivery must stay idempotent, ordered and gap-less \
                     (the processor drops re-sent lines by offset); use kafka.message_timeout_ms for a deadline"
                        .into(),
                ));
            }
            if key.contains("password") || key.contains("secret") {
                return Err((
                    format!("kafka.properties.{key:?}"),
                    "secrets do not belong in the config file; use SITELOG_KAFKA_PASSWORD or sasl_password_file".into(),
                ));
            }
        }
        let l = &self.limits;
        if l.batch_max_records == 0 {
            return bad("limits.batch_max_records", "must be at least 1");
        }
        if l.batch_max_bytes.0 < 1024 || l.batch_max_bytes.0 > 900 << 10 {
            return bad(
                "limits.batch_max_bytes",
                "must be between 1KiB and 900KiB (Kafka's message.max.bytes is 1 MB)",
            );
        }
        if l.max_inflight_bytes.0 < 2 * l.batch_max_bytes.0 {
            return bad("limits.max_inflight_bytes", "must be at least twice limits.batch_max_bytes");
        }
        if l.max_line_bytes.0 < 256 {
            return bad("limits.max_line_bytes", "must be at least 256 bytes");
        }
        // A batch is sealed after the record that crosses batch_max_bytes: one line over.
        if l.max_line_bytes.0 + l.batch_max_bytes.0 > 960 << 10 {
            return bad(
                "limits.max_line_bytes",
                "plus limits.batch_max_bytes must stay under 960KiB (Kafka's message.max.bytes is 1 MB)",
            );
        }
        if l.max_open_files == 0 {
            return bad("limits.max_open_files", "must be at least 1");
        }
        if l.max_hosts == 0 {
            return bad("limits.max_hosts", "must be at least 1");
        }
        if l.read_chunk_bytes.0 < 4096 {
            return bad("limits.read_chunk_bytes", "must be at least 4KiB");
        }
        let t = &self.tail;
        if t.fingerprint_bytes < 16 || t.fingerprint_bytes > 64 << 10 {
            return bad("tail.fingerprint_bytes", "must be between 16 and 65536");
        }
        if t.poll_interval_ms == 0 || t.scan_interval_ms == 0 {
            return bad("tail.poll_interval_ms", "poll and scan intervals must be at least 1 ms");
        }
        Ok(())
    }

    /// The compiled path patterns of source `i`.
    pub fn patterns(&self, i: usize) -> Vec<PathPattern> {
        self.sources[i].paths.iter().filter_map(|p| PathPattern::parse(p).ok()).collect()
    }
}

/// A server name is what ops read in alerts: printable, no surrounding blanks, short.
fn check_server(key: &str, name: &str) -> Result<(), (String, String)> {
    if name.trim().is_empty() {
        return Err((key.to_owned(), "must name the web server (default: the host name)".into()));
    }
    if name.len() > 255 || name.trim() != name || name.chars().any(char::is_control) {
        return Err((key.to_owned(), "must be at most 255 printable bytes without surrounding blanks".into()));
    }
    Ok(())
}

/// A byte count written as an integer or as `"64KiB"`, `"16MiB"`, `"1GiB"`, `"500kB"`, `"1MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    fn parse(s: &str) -> Option<u64> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().ok()?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "kB" | "KB" => 1000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return None,
        };
        n.checked_mul(mult)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => ByteSize::parse(&s)
                .map(ByteSize)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid size {s:?} (use bytes or e.g. \"16MiB\")"))),
        }
    }
}

/// librdkafka properties that decide whether a session is gap-less; `[kafka.properties]`
/// may not set them (the config is refused, naming the key). `max.in.flight` stays settable:
/// librdkafka refuses more than 5 with idempotence, and fewer keeps order all the same.
pub const GUARANTEE_KEYS: &[&str] = &[
    "message.timeout.ms",
    "delivery.timeout.ms",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "acks",
    "request.required.acks",
    "retries",
    "message.send.max.retries",
    "transactional.id",
];

/// librdkafka's `builtin.features` (e.g. `gzip,snappy,ssl,sasl,sasl_scram,lz4,zstd`): what
/// this build can do, checked against the config at start-up.
pub fn builtin_features() -> String {
    rdkafka::ClientConfig::new().create_native_config().and_then(|c| c.get("builtin.features")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[source]]
name = "sites"
paths = ["/var/log/sites/{site}/access.log"]
format = "combined"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = CollectorConfig::from_toml(MINIMAL, "c.toml").unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.kafka.topic, "sitelog.access");
        assert_eq!(c.sources[0].host_from(), HostFrom::Path);
    }

    /// The shipped example parses, validates and states every default it claims to.
    #[test]
    fn example_config_parses() {
        let text = include_str!("../../../deploy/collector.example.toml");
        let c = CollectorConfig::from_toml(text, "deploy/collector.example.toml").unwrap();
        assert_eq!(c.sources.len(), 2);
        assert_eq!(c.sources[0].host_from(), HostFrom::Path);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.tail, TailConfig::default());
        assert_eq!(c.kafka.security.security_protocol, "sasl_ssl");
    }

    #[test]
    fn server_defaults_to_the_host_name_and_sources_override_it() {
        let c = CollectorConfig::from_toml(MINIMAL, "c.toml").unwrap();
        assert_eq!(c.collector.server, default_server());
        assert!(!c.collector.server.is_empty());
        let proc_name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_owned());
        if let Some(name) = proc_name.filter(|n| !n.is_empty()) {
            assert_eq!(c.collector.server, name);
        }
        assert_eq!(c.sources[0].server(&c.collector), c.collector.server);
        let text = format!("[collector]\nserver = \"web-01\"\n{MINIMAL}server = \"web-02\"\n");
        let c = CollectorConfig::from_toml(&text, "c.toml").unwrap();
        assert_eq!((c.collector.server.as_str(), c.sources[0].server(&c.collector)), ("web-01", "web-02"));
        let text = format!("{MINIMAL}server = \" \"\n");
        let e = CollectorConfig::from_toml(&text, "c.toml").unwrap_err().to_string();
        assert!(e.contains("source[0].server"), "{e}");
        let e = CollectorConfig::from_toml(&format!("[collector]\nserver = \"\"\n{MINIMAL}"), "c.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("collector.server"), "{e}");
    }

    #[test]
    fn sizes_accept_units() {
        let text = format!("{MINIMAL}\n[limits]\nmax_inflight_bytes = \"32MiB\"\nbatch_max_bytes = 65536\n");
        let c = CollectorConfig::from_toml(&text, "c.toml").unwrap();
        assert_eq!(c.limits.max_inflight_bytes.0, 32 << 20);
        assert_eq!(c.limits.batch_max_bytes.0, 65536);
    }

    #[test]
    fn parse_errors_name_file_and_line() {
        let text = format!("{MINIMAL}\n[limits]\nlinger_msec = 5\n");
        let e = CollectorConfig::from_toml(&text, "c.toml").unwrap_err().to_string();
        assert!(e.starts_with("c.toml: line 8"), "{e}");
        assert!(e.contains("linger_msec"), "{e}");
        let e = CollectorConfig::from_toml("[limits]\nmax_inflight_bytes = \"lots\"\n", "c.toml").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn validate_names_the_key() {
        let text = MINIMAL.replace("/var/log/sites/{site}/access.log", "relative/{site}.log");
        let e = CollectorConfig::from_toml(&text, "c.toml").unwrap_err().to_string();
        assert!(e.contains("source[0].paths[0]"), "{e}");
        let text = format!("{MINIMAL}\n[kafka]\nsecurity_protocol = \"tls\"\n");
        let e = CollectorConfig::from_toml(&text, "c.toml").unwrap_err().to_string();
        assert!(e.contains("kafka.security_protocol"), "{e}");
        let text = format!("{MINIMAL}\n[kafka]\ncompression = \"brotli\"\n");
        let e = CollectorConfig::from_toml(&text, "c.toml").unwrap_err().to_string();
        assert!(e.contains("kafka.compression"), "{e}");
        let text = format!("{MINIMAL}\n[kafka.properties]\n\"sasl.password\" = \"x\"\n");
        let e = CollectorConfig::from_toml(&text, "c.toml").unwrap_err().to_string();
        assert!(e.contains("secrets"), "{e}");
        for key in ["message.timeout.ms", "delivery.timeout.ms", "enable.gapless.guarantee", "acks"] {
            let text = format!("{MINIMAL}\n[kafka.properties]\n\"{key}\" = \"5000\"\n");
            let e = CollectorConfig::from_toml(&text, "c.toml").unwrap_err().to_string();
            assert!(e.contains("gap-less"), "{key}: {e}");
        }
        let text = format!("{MINIMAL}\n[kafka]\nmessage_timeout_ms = 5000\n");
        assert_eq!(CollectorConfig::from_toml(&text, "c.toml").unwrap().kafka.message_timeout_ms, 5000);
        let e = CollectorConfig::from_toml("", "c.toml").unwrap_err().to_string();
        assert!(e.contains("source: at least one"), "{e}");
    }
}
