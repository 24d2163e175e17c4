//! Encrypted and authenticated connections on the real local stack: the broker requires SASL
//! SCRAM-SHA-512 behind a TLS terminator (stunnel), the ClickHouse endpoint serves HTTPS and
//! requires a password. A generated sample goes through `sitelog collect` and `sitelog
//! process` over both and every record arrives; a wrong password, an untrusted certificate and
//! plaintext against a TLS port each stop the command quickly with a message that says which.
//! Throwaway certificates are made with the openssl CLI for every run.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sitelog::sample::truth;
use sitelog::stack::{LocalStack, Secure};

const KAFKA_USER: &str = "sitelog-test";
const KAFKA_PASSWORD: &str = "kafka-pw-6f2e";
const CLICKHOUSE_PASSWORD: &str = "ch-pw-91ac";
/// A refused configuration must stop a command well before this.
const FAIL_FAST: Duration = Duration::from_secs(40);

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("running openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// A CA that did not sign the servers' certificate.
    other_ca: PathBuf,
}

fn make_certs(dir: &Path) -> Certs {
    let p = |n: &str| dir.join(n);
    let s = |n: &str| dir.join(n).display().to_string();
    for ca in ["ca", "other-ca"] {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=sitelog test {ca}"),
            "-keyout",
            &s(&format!("{ca}.key")),
            "-out",
            &s(&format!("{ca}.pem")),
        ]);
    }
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &s("server.key"),
        "-out",
        &s("server.csr"),
    ]);
    std::fs::write(p("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s("server.csr"),
        "-CA",
        &s("ca.pem"),
        "-CAkey",
        &s("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &s("server.ext"),
        "-out",
        &s("server.pem"),
    ]);
    Certs { ca: p("ca.pem"), cert: p("server.pem"), key: p("server.key"), other_ca: p("other-ca.pem") }
}

/// Runs `sitelog`, returning (success, stdout + stderr, how long it took).
fn run(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sitelog"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env_remove("SITELOG_KAFKA_PASSWORD")
        .env_remove("SITELOG_CLICKHOUSE_PASSWORD");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let t0 = Instant::now();
    let out = cmd.output().expect("running sitelog");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text, t0.elapsed())
}

fn ok(args: &[&str], envs: &[(&str, &str)]) -> String {
    let (success, text, _) = run(args, envs);
    assert!(success, "sitelog {args:?} failed:\n{text}");
    text
}

/// Runs a command that must be refused quickly, with a message containing `expect`.
fn refused(what: &str, args: &[&str], envs: &[(&str, &str)], expect: &str) {
    let (success, text, took) = run(args, envs);
    assert!(!success, "{what}: sitelog {args:?} succeeded:\n{text}");
    assert!(took < FAIL_FAST, "{what}: took {took:?} to fail:\n{text}");
    let last = text.lines().rfind(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(last.contains(expect), "{what}: the error should say {expect:?}:\n{text}");
    eprintln!("{what}: refused in {took:.1?}: {last}");
}

struct Setup {
    dir: PathBuf,
    certs: Certs,
    stack: LocalStack,
    kafka_pw_file: PathBuf,
    ch_pw_file: PathBuf,
}

const TOPIC: &str = "tls.access";
const REJECTS: &str = "tls.rejects";
const DEADLETTER: &str = "tls.deadletter";

fn setup() -> Setup {
    let dir = support::temp_dir("tls-sasl");
    let certs = make_certs(&dir);
    let kafka_pw_file = dir.join("kafka-password");
    std::fs::write(&kafka_pw_file, format!("{KAFKA_PASSWORD}\n")).unwrap();
    let ch_pw_file = dir.join("clickhouse-password");
    std::fs::write(&ch_pw_file, format!("{CLICKHOUSE_PASSWORD}\n")).unwrap();
    let secure = Secure {
        cert: certs.cert.clone(),
        key: certs.key.clone(),
        kafka_users: vec![(KAFKA_USER.into(), KAFKA_PASSWORD.into())],
        topics: vec![(TOPIC.into(), 2), (REJECTS.into(), 1), (DEADLETTER.into(), 1)],
        clickhouse_password_file: ch_pw_file.clone(),
    };
    let stack = LocalStack::start_secure(&dir.join("stack"), &secure)
        .unwrap_or_else(|e| panic!("secure local stack in {}: {e}", dir.display()));
    Setup { dir, certs, stack, kafka_pw_file, ch_pw_file }
}

/// `[kafka]` security keys for a config file.
fn kafka_security(protocol: &str, ca: &Path, pw_file: &Path) -> String {
    let ca =
        if protocol.ends_with("ssl") { format!("ssl_ca_location = \"{}\"\n", ca.display()) } else { String::new() };
    format!(
        "security_protocol = \"{protocol}\"\n{ca}sasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"{KAFKA_USER}\"\n\
         sasl_password_file = \"{}\"\n",
        pw_file.display()
    )
}

impl Setup {
    /// The sample's collector config with `[kafka]` security keys inserted.
    fn collector_config(&self, sample: &Path, name: &str, security: &str) -> PathBuf {
        let text = std::fs::read_to_string(sample.join("collector.toml")).unwrap();
        assert!(text.contains("\n[kafka]\n"), "the sample's collector.toml has a [kafka] table");
        let path = self.dir.join(name);
        std::fs::write(&path, text.replacen("\n[kafka]\n", &format!("\n[kafka]\n{security}"), 1)).unwrap();
        path
    }

    fn processor_config(&self, name: &str, kafka: &str, url: &str, clickhouse: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(
            &path,
            format!(
                "[kafka]\nbrokers = \"{}\"\ntopic = \"{TOPIC}\"\nrejects_topic = \"{REJECTS}\"\n\
                 deadletter_topic = \"{DEADLETTER}\"\ngroup_id = \"tls\"\n{kafka}\n\
                 [clickhouse]\nurl = \"{url}\"\ndatabase = \"tls\"\ncompression = false\n{clickhouse}\n\
                 [sink]\nmax_poll_interval_ms = 10000\n\n[privacy]\nvisitor_key_dir = \"{}\"\n",
                self.stack.kafka_bootstrap,
                self.dir.join("visitor-keys").display()
            ),
        )
        .unwrap();
        path
    }
}

#[test]
fn sample_over_tls_and_scram_and_every_refusal_says_why() {
    let st = setup();
    let sample = st.dir.join("sample");
    let s = sample.to_str().unwrap();
    ok(&["generate", "--out", s, "--days", "1", "--customers", "3", "--rate", "10"], &[]);
    let truth_summary = truth::read_summary(&sample.join("truth")).unwrap();

    let ca = &st.certs.ca;
    let good_kafka = kafka_security("sasl_ssl", ca, &st.kafka_pw_file);
    let good_ch = format!("ca_file = \"{}\"\npassword_file = \"{}\"\n", ca.display(), st.ch_pw_file.display());
    let https = st.stack.clickhouse_url.clone();
    let processor = st.processor_config("processor.toml", &good_kafka, &https, &good_ch);
    let pcfg = processor.to_str().unwrap();
    let brokers = [
        ("SITELOG_KAFKA_BROKERS", st.stack.kafka_bootstrap.as_str()),
        ("SITELOG_ACCESS_TOPIC", TOPIC),
        ("SITELOG_REJECTS_TOPIC", REJECTS),
    ];
    let checkpoints = |n: &str| st.dir.join(format!("checkpoints-{n}")).display().to_string();

    // --- ClickHouse over HTTPS with a password: refusals first (nothing is created by them).
    let wrong_pw = [("SITELOG_CLICKHOUSE_PASSWORD", "not-the-password")];
    refused("clickhouse: wrong password", &["schema", "migrate", "-c", pcfg], &wrong_pw, "Authentication failed");
    let untrusted_ch =
        format!("ca_file = \"{}\"\npassword_file = \"{}\"\n", st.certs.other_ca.display(), st.ch_pw_file.display());
    let p = st.processor_config("untrusted-ch.toml", &good_kafka, &https, &untrusted_ch);
    refused("clickhouse: untrusted certificate", &["schema", "migrate", "-c", p.to_str().unwrap()], &[], "certificate");
    let plain_ch = format!("password_file = \"{}\"\n", st.ch_pw_file.display());
    let p = st.processor_config("plain-ch.toml", &good_kafka, &https.replace("https://", "http://"), &plain_ch);
    refused(
        "clickhouse: plaintext against the TLS port",
        &["schema", "migrate", "-c", p.to_str().unwrap()],
        &[],
        "expects TLS",
    );

    ok(&["schema", "migrate", "-c", pcfg], &[]);
    ok(&["customers", "import", &format!("{s}/register.json"), "-c", pcfg], &[]);

    // --- Kafka over SASL_SSL + SCRAM-SHA-512: refusals of the collector.
    let collector = st.collector_config(&sample, "collector.toml", &good_kafka);
    let ccfg = collector.to_str().unwrap();
    let collect = |cfg: &str, n: &str| {
        vec![
            "collect".to_owned(),
            "--config".into(),
            cfg.to_owned(),
            "--once".into(),
            "--checkpoint-dir".into(),
            checkpoints(n),
        ]
    };
    let args = collect(ccfg, "wrong-pw");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut env = brokers.to_vec();
    env.push(("SITELOG_KAFKA_PASSWORD", "not-the-password"));
    refused("kafka: wrong password", &args, &env, "SASL authentication failed");

    let untrusted = st.collector_config(
        &sample,
        "untrusted.toml",
        &kafka_security("sasl_ssl", &st.certs.other_ca, &st.kafka_pw_file),
    );
    let args = collect(untrusted.to_str().unwrap(), "untrusted");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused("kafka: untrusted certificate", &args, &brokers, "certificate is not trusted");

    let plain = st.collector_config(&sample, "plain.toml", &kafka_security("sasl_plaintext", ca, &st.kafka_pw_file));
    let args = collect(plain.to_str().unwrap(), "plain");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused("kafka: plaintext against the TLS port", &args, &brokers, "expects TLS");

    // --- The sample through both encrypted, authenticated connections.
    let args = collect(ccfg, "good");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&args, &brokers);
    // The processor's Kafka password is checked too (from the environment, which wins).
    refused(
        "processor: wrong Kafka password",
        &["process", "-c", pcfg, "--exit-when-idle", "3"],
        &[("SITELOG_KAFKA_PASSWORD", "not-the-password")],
        "SASL authentication failed",
    );
    ok(&["process", "-c", pcfg, "--exit-when-idle", "3"], &[]);

    let client = sitelog_processor::store::ClickHouseConfig {
        url: https.clone(),
        database: "tls".into(),
        ca_file: Some(ca.clone()),
        password_file: Some(st.ch_pw_file.clone()),
        compression: false,
        ..Default::default()
    }
    .client()
    .unwrap();
    let stored: u64 = support::block_on(client.query("SELECT count() FROM access_log").fetch_one()).unwrap();
    let records = truth_summary["records"].as_u64().unwrap();
    assert!(records > 0);
    assert_eq!(stored, records, "every generated record arrived over TLS + SCRAM and HTTPS + password");
    let tls_log = std::fs::read_to_string(st.stack.dir.join("stunnel.log")).unwrap_or_default();
    assert!(tls_log.contains("accepted connection"), "the collector and processor went through stunnel:\n{tls_log}");
}
