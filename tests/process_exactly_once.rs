//! The processor stores every record exactly once, whatever happens: `kill -9` mid-stream
//! (several times), ClickHouse stopped and restarted mid-insert, records re-sent by a
//! restarted collector (same identity, new Kafka offsets), two replicas with a rebalance, and
//! the whole topic replayed. Expected totals are counted here from what the test produced.

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::TimeZone;
use sitelog::stack::LocalStack;
use sitelog_processor::store::migrate::migrate;
use sitelog_schema::migrations::Retention;
use sitelog_schema::wire::BatchWriter;
use sitelog_schema::{AccessRecord, SourceId};

const HOSTS: [&str; 4] = ["kahvila.fi", "www.kahvila.fi", "puutarha.fi", "tuntematon.example"];
const RECORDS_PER_MESSAGE: usize = 250;

/// One stream per (file, host); records an hour apart from now backwards so they sit inside
/// the raw retention and span two Helsinki days at most.
struct Produced {
    messages: Vec<(String, Vec<u8>)>,
    /// Expected requests per (customer_id, Helsinki day).
    expected: BTreeMap<(String, String), u64>,
    total: u64,
}

fn produce_plan(n_per_stream: usize) -> Produced {
    let now = chrono::Utc::now().timestamp_micros();
    let mut messages = Vec::new();
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut total = 0;
    for (i, host) in HOSTS.iter().enumerate() {
        let fingerprint = 1000 + i as u64;
        let records: Vec<AccessRecord<'static>> = (0..n_per_stream)
            .map(|k| AccessRecord {
                ts_micros: now - 3_600_000_000 * 20 + (k as i64) * 1_000_000,
                tz_offset_secs: 7200,
                host: (*host).into(),
                client_ip: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, (k % 200) as u8))),
                method: "GET".into(),
                path: format!("/sivu/{k}").into(),
                protocol: "HTTP/1.1".into(),
                status: 200,
                bytes_sent: 100 + k as u64,
                user_agent: "Mozilla/5.0 (X11; Linux x86_64)".into(),
                source: SourceId { fingerprint, offset: (k as u64) * 180 },
                ..Default::default()
            })
            .collect();
        for r in &records {
            let customer = match *host {
                "kahvila.fi" | "www.kahvila.fi" => "C1",
                "puutarha.fi" => "C2",
                _ => "",
            };
            let day = chrono_tz::Europe::Helsinki.timestamp_micros(r.ts_micros).unwrap().date_naive().to_string();
            *expected.entry((customer.to_owned(), day)).or_default() += 1;
            total += 1;
        }
        for chunk in records.chunks(RECORDS_PER_MESSAGE) {
            let mut w = BatchWriter::new(fingerprint, host, chunk[0].source.offset, chunk[0].ts_micros);
            chunk.iter().for_each(|r| w.push(r));
            messages.push((host.to_string(), w.finish()));
        }
    }
    Produced { messages, expected, total }
}

struct Env {
    config: std::path::PathBuf,
}

fn write_config(stack: &LocalStack, topic: &str, group: &str, db: &str, batch: usize) -> Env {
    let dir = support::temp_dir("proc-config");
    let config = dir.join("processor.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\ngroup_id = \"{group}\"\n\n\
             [clickhouse]\nurl = \"{}\"\ndatabase = \"{db}\"\ncompression = false\n\n\
             [sink]\nbatch_max_records = {batch}\nlinger_ms = 300\nmax_poll_interval_ms = 10000\n\n\
             [attribution]\nregister_poll_secs = 1\n",
            stack.kafka_bootstrap, stack.clickhouse_url
        ),
    )
    .unwrap();
    Env { config }
}

fn spawn_processor(env: &Env, exit_when_idle: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sitelog"));
    cmd.arg("process").arg("--config").arg(&env.config).env("RUST_LOG", "warn").stdin(Stdio::null());
    if exit_when_idle {
        cmd.args(["--exit-when-idle", "3"]);
    }
    cmd.spawn().expect("starting sitelog process")
}

async fn count(client: &clickhouse::Client, sql: &str) -> u64 {
    client.query(sql).fetch_one::<u64>().await.unwrap()
}

async fn usage_by_customer_day(client: &clickhouse::Client) -> BTreeMap<(String, String), u64> {
    let rows: Vec<(String, String, u64)> = client
        .query("SELECT customer_id, toString(day), sum(requests) FROM usage_daily GROUP BY customer_id, day")
        .fetch_all()
        .await
        .unwrap();
    rows.into_iter().map(|(c, d, n)| ((c, d), n)).collect()
}

async fn assert_exact(client: &clickhouse::Client, p: &Produced, when: &str) {
    let stored = count(client, "SELECT count() FROM access_log").await;
    let distinct = count(
        client,
        "SELECT count() FROM (SELECT DISTINCT source_fingerprint, source_offset, site_host FROM access_log)",
    )
    .await;
    assert_eq!(distinct, p.total, "{when}: every record stored");
    assert_eq!(stored, p.total, "{when}: no record stored twice");
    let usage = usage_by_customer_day(client).await;
    if usage != p.expected {
        // What to look at when the rollup disagrees with exact raw rows: per host, the raw
        // count against the rollup, and the rollup's parts (a part written twice shows here).
        let per_host = client
            .query(
                "SELECT site_host, n, r FROM (SELECT site_host, sum(requests) AS r FROM usage_daily GROUP BY site_host) \
                 LEFT JOIN (SELECT site_host, count() AS n FROM access_log GROUP BY site_host) USING (site_host) \
                 ORDER BY site_host",
            )
            .fetch_all::<(String, u64, u64)>()
            .await;
        let parts = |table: &'static str| {
            client
                .query(&format!(
                    "SELECT t._part, t.site_host, toUInt64(count()), any(toString(p.modification_time)) FROM {table} AS t \
                     LEFT JOIN (SELECT name, modification_time FROM system.parts \
                     WHERE database = currentDatabase() AND table = '{table}') AS p ON p.name = t._part \
                     GROUP BY t._part, t.site_host ORDER BY t._part, t.site_host"
                ))
                .fetch_all::<(String, String, u64, String)>()
        };
        eprintln!(
            "{when}: per host (raw rows, usage requests): {per_host:?}\nusage_daily parts: {:?}\naccess_log parts: {:?}",
            parts("usage_daily").await,
            parts("access_log").await
        );
    }
    assert_eq!(usage, p.expected, "{when}: usage per customer and day");
}

fn wait_until_started(client: &clickhouse::Client, rt: &tokio::runtime::Runtime, at_least: u64, limit: Duration) {
    let t = Instant::now();
    while rt.block_on(count(client, "SELECT count() FROM access_log")) < at_least {
        assert!(t.elapsed() < limit, "processor made no progress within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn exactly_once_through_crashes_outage_resends_replicas_and_replay() {
    let mut stack = support::own_stack("exactly-once");
    // On a failure, the engine's request log (each insert with its dedup token and rows written) is here.
    eprintln!("local stack: {}", stack.dir.display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topic = support::unique_name("access");
    stack.create_topic(&topic, 4).unwrap();
    let db = support::unique_name("eo");
    let ch = support::clickhouse_config(&stack, &db);
    rt.block_on(migrate(&ch.server_client().unwrap(), &db, &Retention::default())).unwrap();
    let client = ch.client().unwrap();
    rt.block_on(sitelog_processor::register::import(&client, &support::two_customer_register(), "test", "inline", "-"))
        .unwrap();

    let plan = produce_plan(6_000);
    rt.block_on(support::produce(&stack.kafka_bootstrap, &topic, &plan.messages));
    let env = write_config(&stack, &topic, "g1", &db, 1_000);

    // 1. kill -9 three times mid-stream, restart each time.
    for round in 0..3u64 {
        let mut child = spawn_processor(&env, false);
        let before = rt.block_on(count(&client, "SELECT count() FROM access_log"));
        wait_until_started(&client, &rt, before + 1, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(150 * (round + 1)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    // 2. ClickHouse stopped mid-stream and restarted while the processor keeps running.
    let mut child = spawn_processor(&env, false);
    let before = rt.block_on(count(&client, "SELECT count() FROM access_log"));
    wait_until_started(&client, &rt, before + 1, Duration::from_secs(60));
    // Longer than max.poll.interval.ms (10 s): the processor must stay in its group.
    eprintln!("ClickHouse stopped at {}", chrono::Utc::now());
    stack.stop_clickhouse();
    std::thread::sleep(Duration::from_secs(12));
    stack.start_clickhouse().unwrap();
    eprintln!("ClickHouse started again at {}", chrono::Utc::now());

    // 3. A restarted collector re-sends a stretch of already delivered records.
    let resend: Vec<_> = plan.messages.iter().skip(10).take(30).cloned().collect();
    rt.block_on(support::produce(&stack.kafka_bootstrap, &topic, &resend));
    let t = Instant::now();
    loop {
        let n = rt.block_on(count(&client, "SELECT count() FROM access_log"));
        if n >= plan.total || t.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGTERM drains and exits 0.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    rt.block_on(assert_exact(&client, &plan, "after kill -9 x3, a ClickHouse outage and re-sends"));

    // 4. Two replicas in a new group replay the whole topic from the start: nothing changes.
    let env2 = write_config(&stack, &topic, "g2-replay", &db, 700);
    let mut a = spawn_processor(&env2, true);
    std::thread::sleep(Duration::from_millis(800));
    let mut b = spawn_processor(&env2, true);
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    rt.block_on(assert_exact(&client, &plan, "after a two-replica replay of the whole topic"));
    let unattributed = rt.block_on(count(&client, "SELECT sum(requests) FROM usage_daily WHERE customer_id = ''"));
    assert_eq!(unattributed, 6_000, "the unknown host's records are in the unattributed bucket");
}
