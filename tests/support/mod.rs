//! The one harness every integration test uses: a private real stack (tansu + chDB endpoint)
//! per test binary, unique topic and database names per test, and helpers to reach them.
//! No mocks: if a service is missing or dies, the failure names it and its log file.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

pub mod proxy;
pub mod query_tree;
pub mod webhook;

use sitelog::stack::LocalStack;
use sitelog_processor::store::ClickHouseConfig;
use sitelog_schema::register::{Address, Customer, Plan, Site};

/// A fresh directory under the cargo target dir, unique per process and call.
pub fn temp_dir(prefix: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a test directory");
    dir
}

/// The stack shared by the tests of this binary. Started on first use.
pub fn stack() -> &'static LocalStack {
    static STACK: OnceLock<LocalStack> = OnceLock::new();
    STACK.get_or_init(|| own_stack("stack"))
}

/// A stack owned by one test (for outage tests that stop and restart services).
pub fn own_stack(prefix: &str) -> LocalStack {
    let dir = temp_dir(prefix);
    LocalStack::start(&dir).unwrap_or_else(|e| panic!("local stack in {}: {e}", dir.display()))
}

/// `prefix_<pid>_<n>`: safe as a Kafka topic, consumer group and ClickHouse database name.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// ClickHouse settings for `db` on `stack` (compression off: the chDB endpoint lacks LZ4 framing).
pub fn clickhouse_config(stack: &LocalStack, db: &str) -> ClickHouseConfig {
    ClickHouseConfig {
        url: stack.clickhouse_url.clone(),
        database: db.into(),
        compression: false,
        ..Default::default()
    }
}

/// Runs a future to completion on a fresh runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Produces keyed messages (idempotent, lz4, as the collector does) and waits for every ack.
pub async fn produce(bootstrap: &str, topic: &str, messages: &[(String, Vec<u8>)]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .create()
        .expect("kafka producer");
    for (key, payload) in messages {
        producer
            .send(FutureRecord::to(topic).key(key).payload(payload), std::time::Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("message acknowledged");
    }
}

// Register builders for tests: a plan, a site owned since 2020, a customer with a valid business ID.

pub fn plan(name: &str, metering: &str, included: u64) -> Plan {
    Plan { plan: name.into(), metering: metering.into(), included }
}

pub fn site(id: &str, domain: &str, plan: &str) -> Site {
    Site {
        site_id: id.into(),
        primary_domain: domain.into(),
        aliases: vec![],
        plan: plan.into(),
        valid_from: "2020-01-01".into(),
        valid_to: None,
    }
}

/// Valid Finnish business IDs for test customers.
const BUSINESS_IDS: [&str; 4] = ["0112038-9", "1572860-0", "2331972-7", "0737546-2"];

pub fn customer(i: usize, id: &str, sites: Vec<Site>) -> Customer {
    Customer {
        customer_id: id.into(),
        company_name: format!("{id} Oy"),
        business_id: BUSINESS_IDS[i % BUSINESS_IDS.len()].into(),
        billing_address: Address {
            street: "Katu 1".into(),
            postal_code: "00100".into(),
            city: "Helsinki".into(),
            country: "FI".into(),
        },
        billing_email: "laskut@example.fi".into(),
        contacts: vec![],
        sites,
    }
}

/// Runs the `sitelog` binary with `args` and extra environment; panics with its output unless
/// it succeeds; returns stdout.
pub fn sitelog(args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sitelog"));
    cmd.args(args).env("RUST_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running sitelog");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sitelog {args:?} failed: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A generated sample that went through the real pipeline on the shared stack.
pub struct SampleRun {
    pub db: String,
    pub config: PathBuf,
    pub client: clickhouse::Client,
    pub summary: sitelog::sample::Summary,
}

/// Generates `opts`' sample and runs it as the demo does: `schema migrate`, `customers
/// import`, `collect --once` (own topics and checkpoints) and `process --exit-when-idle`, each
/// with `env`. `extra_toml` is appended to the processor config.
pub fn run_sample(
    opts: &sitelog::sample::GenerateOptions,
    prefix: &str,
    env: &[(&str, &str)],
    extra_toml: &str,
) -> SampleRun {
    let stack = stack();
    let summary = sitelog::sample::generate(opts).unwrap();
    let dir = temp_dir(&format!("{prefix}-run"));
    let topic = unique_name(prefix);
    let rejects = unique_name(&format!("{prefix}-rejects"));
    stack.create_topic(&topic, 2).unwrap();
    stack.create_topic(&rejects, 1).unwrap();
    let db = unique_name(prefix);
    let config = dir.join("processor.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup_id = \"{prefix}\"\n\n[clickhouse]\nurl = \"{}\"\n\
             database = \"{db}\"\ncompression = false\n\n[sink]\nmax_poll_interval_ms = 10000\n\n\
             [billing]\nuser = \"sitelog_billing_user\"\n{extra_toml}",
            stack.kafka_bootstrap, stack.clickhouse_url
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let s = opts.out.to_str().unwrap();
    sitelog(&["schema", "migrate", "-c", cfg], env);
    sitelog(&["customers", "import", &format!("{s}/register.json"), "-c", cfg], env);
    let mut collect_env = env.to_vec();
    collect_env.extend([
        ("SITELOG_KAFKA_BROKERS", stack.kafka_bootstrap.as_str()),
        ("SITELOG_ACCESS_TOPIC", topic.as_str()),
        ("SITELOG_REJECTS_TOPIC", rejects.as_str()),
    ]);
    let checkpoints = dir.join("checkpoints");
    sitelog(
        &[
            "collect",
            "--config",
            &format!("{s}/collector.toml"),
            "--once",
            "--checkpoint-dir",
            checkpoints.to_str().unwrap(),
        ],
        &collect_env,
    );
    sitelog(&["process", "-c", cfg, "--exit-when-idle", "3"], env);
    let client = clickhouse_config(stack, &db).client().unwrap();
    SampleRun { db, config, client, summary }
}

/// A processor config on `stack` for `topic`, consumer group `group` and database `db`
/// (`kafka_extra`: more `[kafka]` lines), with `db` migrated; returns the file's path.
pub fn processor_config(stack: &LocalStack, topic: &str, group: &str, db: &str, kafka_extra: &str) -> String {
    let config = temp_dir(group).join("processor.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup_id = \"{group}\"\n{kafka_extra}\n\n\
             [clickhouse]\nurl = \"{}\"\ndatabase = \"{db}\"\ncompression = false\n\n\
             [sink]\nlinger_ms = 300\nmax_poll_interval_ms = 10000\n",
            stack.kafka_bootstrap, stack.clickhouse_url
        ),
    )
    .expect("writing processor.toml");
    let cfg = config.to_str().expect("utf-8 path").to_owned();
    sitelog(&["schema", "migrate", "-c", &cfg], &[]);
    cfg
}

/// One wire batch of `n` GET requests for `host`, records `first..first + n` of source
/// `fingerprint` (offsets k * 100), an hour ago, one second apart.
pub fn request_batch(host: &str, fingerprint: u64, first: u64, n: u64) -> Vec<u8> {
    use sitelog_schema::{AccessRecord, SourceId};
    let now = chrono::Utc::now().timestamp_micros() - 3_600_000_000;
    let recs: Vec<AccessRecord<'static>> = (first..first + n)
        .map(|k| AccessRecord {
            ts_micros: now + k as i64 * 1_000_000,
            tz_offset_secs: 7200,
            host: host.to_owned().into(),
            client_ip: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, (k % 200) as u8))),
            method: "GET".into(),
            path: format!("/sivu/{k}").into(),
            protocol: "HTTP/1.1".into(),
            status: 200,
            bytes_sent: 100,
            user_agent: "Mozilla/5.0".into(),
            source: SourceId { fingerprint, offset: k * 100 },
            ..Default::default()
        })
        .collect();
    let mut w = sitelog_schema::wire::BatchWriter::new(fingerprint, host, recs[0].source.offset, recs[0].ts_micros);
    recs.iter().for_each(|r| w.push(r));
    w.finish()
}

/// Two customers with one site each: C1 kahvila.fi (so also www.kahvila.fi), C2 puutarha.fi;
/// any other host is unattributed.
pub fn two_customer_register() -> sitelog_schema::register::RegisterExport {
    sitelog_schema::register::RegisterExport {
        exported_at: "2026-11-01T00:00:00Z".into(),
        plans: vec![plan("start", "requests", 1000)],
        customers: vec![
            customer(0, "C1", vec![site("S1", "kahvila.fi", "start")]),
            customer(1, "C2", vec![site("S2", "puutarha.fi", "start")]),
        ],
    }
}
