//! Measurements behind two design decisions, on the real local stack (tansu + chDB):
//! 1. how many records to pack into one Kafka message (wire format v1 batches), and
//! 2. how many rows to put into one ClickHouse insert (the processor's batch size).
//!
//! Prints MB/s, records/s and bytes/record. Run: `cargo bench --bench pipeline`.

mod support {
    pub mod usage;
}

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use sitelog::stack::LocalStack;
use sitelog_processor::derive::Deriver;
use sitelog_processor::store::rows::AccessLogRow;
use sitelog_processor::store::ClickHouseConfig;
use sitelog_schema::migrations::Retention;
use sitelog_schema::wire::{BatchReader, BatchWriter};
use sitelog_schema::{AccessRecord, SourceId};

const PATHS: &[&str] = &[
    "/",
    "/blog/syksyn-uutuudet/",
    "/wp-content/themes/astra/style.css",
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

fn records(n: usize) -> Vec<AccessRecord<'static>> {
    let now = chrono::Utc::now().timestamp_micros() - 3_600_000_000;
    (0..n)
        .map(|i| AccessRecord {
            ts_micros: now + i as i64 * 7_000,
            tz_offset_secs: 7200,
            host: "kahvilaaroma.fi".into(),
            client_ip: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                84,
                20,
                (i / 250 % 256) as u8,
                (i % 250) as u8,
            ))),
            method: "GET".into(),
            path: PATHS[i % PATHS.len()].into(),
            query: if i % 9 == 0 { "ver=6.6.2".into() } else { "".into() },
            protocol: "HTTP/2.0".into(),
            status: if i % 31 == 0 { 404 } else { 200 },
            bytes_sent: 512 + (i as u64 * 7919) % 90_000,
            referer: "https://www.google.com/".into(),
            user_agent: UAS[i % UAS.len()].into(),
            request_time_us: Some((i as u64 * 37) % 400_000),
            upstream_time_us: Some((i as u64 * 31) % 390_000),
            upstream_count: 1,
            cache_status: "MISS".into(),
            source: SourceId { fingerprint: 9, offset: i as u64 * 230 },
            ..Default::default()
        })
        .collect()
}

fn kafka(stack: &LocalStack, recs: &[AccessRecord<'static>]) {
    println!("\n## Kafka: records per message (tansu sqlite storage, lz4, librdkafka, 1 partition)");
    println!(
        "{:>12} {:>10} {:>12} {:>14} {:>14} {:>12}",
        "recs/msg", "wire B/rec", "produce MB/s", "produce rec/s", "consume rec/s", "decode rec/s"
    );
    for per_msg in [1usize, 10, 100, 500, 2000] {
        let n = if per_msg == 1 { 20_000 } else { recs.len() };
        let recs = &recs[..n];
        let topic = format!("bench_{per_msg}_{}", std::process::id());
        stack.create_topic(&topic, 1).unwrap();
        let payloads: Vec<Vec<u8>> = recs
            .chunks(per_msg)
            .map(|c| {
                let mut w = BatchWriter::new(9, "kahvilaaroma.fi", c[0].source.offset, c[0].ts_micros);
                c.iter().for_each(|r| w.push(r));
                w.finish()
            })
            .collect();
        let bytes: usize = payloads.iter().map(|p| p.len()).sum();
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &stack.kafka_bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "20")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .unwrap();
        let t = Instant::now();
        for p in &payloads {
            let mut rec = BaseRecord::to(&topic).key("kahvilaaroma.fi").payload(p);
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        rec = r;
                        producer.poll(Duration::from_millis(5));
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(120)).unwrap();
        let produce = t.elapsed().as_secs_f64();

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &stack.kafka_bootstrap)
            .set("group.id", &topic)
            .set("auto.offset.reset", "earliest")
            .set("max.poll.interval.ms", "10000")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let mut got_msgs = 0;
        let mut t = None;
        let mut decode = Duration::ZERO;
        let mut decoded = 0usize;
        while got_msgs < payloads.len() {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                t.get_or_insert_with(Instant::now);
                got_msgs += 1;
                let d = Instant::now();
                for r in BatchReader::new(m.payload().unwrap()).unwrap() {
                    std::hint::black_box(r.unwrap());
                    decoded += 1;
                }
                decode += d.elapsed();
            }
        }
        let consume = t.map_or(1e-9, |t| t.elapsed().as_secs_f64());
        assert_eq!(decoded, n);
        println!(
            "{per_msg:>12} {:>10.1} {:>12.1} {:>14.0} {:>14.0} {:>12.0}",
            bytes as f64 / n as f64,
            bytes as f64 / produce / 1e6,
            n as f64 / produce,
            n as f64 / consume,
            n as f64 / decode.as_secs_f64()
        );
    }
}

fn clickhouse(stack: &LocalStack, recs: &[AccessRecord<'static>]) {
    println!("\n## ClickHouse: rows per insert (chDB HTTP endpoint, RowBinary, access_log + 2 MVs)");
    println!("{:>12} {:>12} {:>12}", "rows/insert", "rows/s", "ms/insert");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = format!("bench_{}", std::process::id());
    let cfg = ClickHouseConfig {
        url: stack.clickhouse_url.clone(),
        database: db.clone(),
        compression: false,
        ..Default::default()
    };
    rt.block_on(sitelog_processor::store::migrate::migrate(&cfg.server_client().unwrap(), &db, &Retention::default()))
        .unwrap();
    let client = cfg.client().unwrap();
    let map = sitelog_processor::attribute::SiteMap::default();
    let mut deriver = Deriver::new();
    let rows: Vec<AccessLogRow> = recs.iter().map(|r| deriver.row(r, &map)).collect();
    for batch in [1_000usize, 10_000, 50_000, 100_000] {
        let n_batches = (rows.len() / batch).clamp(1, 6);
        let t = Instant::now();
        for (k, chunk) in rows.chunks(batch).take(n_batches).enumerate() {
            let token = format!("bench-{batch}-{k}");
            rt.block_on(sitelog_processor::store::sink::insert_rows(&client, &token, chunk)).unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        let n = (batch * n_batches).min(rows.len());
        println!("{batch:>12} {:>12.0} {:>12.1}", n as f64 / secs, secs * 1000.0 / n_batches as f64);
    }
    rt.block_on(async {
        client.query("OPTIMIZE TABLE access_log FINAL").execute().await.unwrap();
        let (rows_n, bytes): (u64, u64) = client
            .query("SELECT sum(rows), sum(data_compressed_bytes) FROM system.parts WHERE database = ? AND table = 'access_log' AND active")
            .bind(&db)
            .fetch_one()
            .await
            .unwrap();
        println!("access_log on disk: {rows_n} rows, {:.1} bytes/row compressed (synthetic records; see README for the sample)", bytes as f64 / rows_n.max(1) as f64);
    });
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("pipeline: benchmark");
        return;
    }
    let dir = std::env::temp_dir().join(format!("sitelog-bench-{}", std::process::id()));
    let stack = LocalStack::start(&dir).expect("local stack (run `sitelog stack install` first)");
    let recs = records(300_000);
    kafka(&stack, &recs);
    clickhouse(&stack, &recs);
    println!("\npeak RSS of the bench process: {:.0} MB", support::usage::peak_rss_mb());
    drop(stack);
    let _ = std::fs::remove_dir_all(dir);
}
