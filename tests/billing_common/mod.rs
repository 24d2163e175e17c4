//! Helpers shared by the billing tests (`tests/billing_*.rs`): a migrated database on the
//! real local stack, a processor.toml for the `sitelog` binary, rows inserted as the
//! processor would store them, and running `sitelog report billing`.
#![allow(dead_code)]

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::process::{Command, Output};

use chrono::{DateTime, Datelike, Utc};
use sitelog::stack::LocalStack;
use sitelog_processor::store::migrate::migrate;
use sitelog_processor::store::rows::AccessLogRow;
use sitelog_processor::store::sink::{write_progress, StreamProgress};
use sitelog_processor::visitors::PeriodKey;
use sitelog_schema::migrations::Retention;
use sitelog_schema::register::{Customer, Plan, RegisterExport};

use crate::support;

/// A migrated database of its own and a config file pointing at it.
pub struct Db {
    pub name: String,
    pub client: clickhouse::Client,
    pub config: PathBuf,
    /// `SITELOG_NOW` for the reports run on this database (None: the clock the test has).
    pub now: Option<String>,
}

pub fn db(stack: &LocalStack, prefix: &str) -> Db {
    db_with_retention(stack, prefix, &Retention::default())
}

/// A migrated database whose TTLs (and `[retention]` in its config) are `retention`.
pub fn db_with_retention(stack: &LocalStack, prefix: &str, retention: &Retention) -> Db {
    let name = support::unique_name(prefix);
    let ch = support::clickhouse_config(stack, &name);
    support::block_on(migrate(&ch.server_client().unwrap(), &name, retention)).unwrap();
    let dir = support::temp_dir(&format!("{prefix}-config"));
    let config = dir.join("processor.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\n\n[clickhouse]\nurl = \"{}\"\ndatabase = \"{name}\"\ncompression = false\n\n\
             [billing]\nuser = \"sitelog_billing_user\"\ngrace_hours = 2\n\n\
             [retention]\nraw_days = {}\nclient_ip_days = {}\n",
            stack.kafka_bootstrap, stack.clickhouse_url, retention.raw_days, retention.client_ip_days
        ),
    )
    .unwrap();
    Db { client: ch.client().unwrap(), name, config, now: None }
}

/// The year these tests place hand-made records in: last year on the clock (`SITELOG_NOW` or
/// the system clock), so every month of it is over, and its usage is inside the 10-year TTL.
pub fn base_year() -> i32 {
    sitelog::clock::today_helsinki().unwrap().year() - 1
}

/// `text` with every `2026` replaced by [`base_year`]: the tests' timestamps and months are
/// written for 2026 (whose September–November hold no DST change but October's last Sunday,
/// the same in every year's layout used here) and moved to a year that is over.
pub fn y(text: &str) -> String {
    text.replace("2026", &base_year().to_string())
}

/// Midnight starting day `d` of `month` in Europe/Helsinki, as UTC.
pub fn helsinki_midnight(year: i32, month: u32, d: u32) -> DateTime<Utc> {
    use chrono::TimeZone;
    chrono_tz::Europe::Helsinki
        .with_ymd_and_hms(year, month, d, 0, 0, 0)
        .single()
        .unwrap_or_else(|| panic!("{year}-{month}-{d} 00:00 Helsinki"))
        .with_timezone(&Utc)
}

/// The last Sunday of a month (EU summer time starts and ends on those of March and October).
pub fn last_sunday(year: i32, month: u32) -> chrono::NaiveDate {
    let first_next = if month == 12 {
        chrono::NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        chrono::NaiveDate::from_ymd_opt(year, month + 1, 1)
    }
    .unwrap();
    let last = first_next.pred_opt().unwrap();
    last - chrono::Duration::days(last.weekday().num_days_from_sunday() as i64)
}

pub fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}")).with_timezone(&Utc)
}

/// `sitelog report billing --config <db> ARGS…`
pub fn billing(db: &Db, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sitelog"));
    cmd.args(["report", "billing", "--config"])
        .arg(&db.config)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("SITELOG_CLICKHOUSE_URL")
        .env_remove("SITELOG_DATABASE");
    if let Some(now) = &db.now {
        cmd.env(sitelog::clock::NOW_VAR, now);
    }
    cmd.output().expect("running sitelog report billing")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Parses the CSV the report writes (no quoted fields in these tests' ids) into maps.
pub fn csv_rows(text: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), header.len(), "row has as many fields as the header: {l}");
            header.iter().map(|h| h.to_string()).zip(f.iter().map(|v| v.to_string())).collect()
        })
        .collect()
}

// Re-exported for the billing tests; not every test binary uses them.
#[allow(unused_imports)]
pub use crate::support::{customer, plan, site};

pub fn import(db: &Db, plans: Vec<Plan>, customers: Vec<Customer>) {
    let export = RegisterExport { exported_at: "2026-11-01T00:00:00Z".into(), plans, customers };
    support::block_on(sitelog_processor::register::import(&db.client, &export, "test", "inline", "-")).unwrap();
}

/// One stored request as the processor would write it (attribution given by the test).
#[derive(Clone, Debug)]
pub struct Req {
    pub ts: DateTime<Utc>,
    pub customer: &'static str,
    pub site: &'static str,
    pub host: &'static str,
    pub ip: Ipv6Addr,
    pub ua: &'static str,
    pub status: u16,
    pub class: &'static str,
    pub bot: bool,
    pub bytes: u64,
}

pub fn req(ts: &str, customer: &'static str, site: &'static str, host: &'static str) -> Req {
    req_at(utc(ts), customer, site, host)
}

pub fn req_at(ts: DateTime<Utc>, customer: &'static str, site: &'static str, host: &'static str) -> Req {
    Req {
        ts,
        customer,
        site,
        host,
        ip: "::ffff:192.0.2.1".parse().unwrap(),
        ua: "Mozilla/5.0",
        status: 200,
        class: "page",
        bot: false,
        bytes: 1000,
    }
}

/// The period key these tests' rows are stamped with (the processor's own keyed function).
pub fn test_visitor_key() -> PeriodKey {
    PeriodKey::from_bytes(*b"sitelog-test-key")
}

pub fn rows(reqs: &[Req], fingerprint: u64) -> Vec<AccessLogRow> {
    let key = test_visitor_key();
    reqs.iter()
        .enumerate()
        .map(|(i, r)| {
            let day = r.ts.with_timezone(&chrono_tz::Europe::Helsinki).date_naive();
            (i, r, key.visitor_ip(r.site, day, &r.ip), key.visitor_ip_ua(r.site, day, &r.ip, r.ua))
        })
        .map(|(i, r, visitor_ip_key, visitor_ip_ua_key)| AccessLogRow {
            ts: r.ts.timestamp_micros(),
            tz_offset_secs: 7200,
            site_host: r.host.into(),
            customer_id: r.customer.into(),
            site_id: r.site.into(),
            client_ip: r.ip,
            client_net: r.ip,
            remote_user: String::new(),
            method: "GET".into(),
            path: if r.class == "static" { "/style.css".into() } else { "/".into() },
            query: String::new(),
            protocol: "HTTP/1.1".into(),
            status: r.status,
            bytes_sent: r.bytes,
            referer: "-".into(),
            user_agent: r.ua.into(),
            request_time_us: None,
            upstream_time_us: None,
            upstream_count: 0,
            cache_status: String::new(),
            request_class: r.class.into(),
            is_bot: r.bot,
            bot_name: if r.bot { "Googlebot".into() } else { String::new() },
            flags: 0,
            source_fingerprint: fingerprint,
            source_offset: i as u64 * 100,
            visitor_ip_key,
            visitor_ip_ua_key,
            server: String::new(),
            upstream_status: 0,
        })
        .collect()
}

/// Inserts into `access_log` (the usage rollup follows through its materialized view).
pub fn insert(db: &Db, reqs: &[Req], fingerprint: u64) {
    let rows = rows(reqs, fingerprint);
    support::block_on(async {
        let mut ins = db.client.insert::<AccessLogRow>("access_log").await.unwrap();
        for r in &rows {
            ins.write(r).await.unwrap();
        }
        ins.end().await.unwrap();
    });
}

/// Writes a `source_progress` row with the processor's own writer, as after a batch.
pub fn progress(db: &Db, fingerprint: u64, host: &str, max_ts: &str, records: u64) {
    let p = StreamProgress { max_offset: records * 100, max_ts: utc(max_ts).timestamp_micros(), records };
    support::block_on(write_progress(&db.client, &[((fingerprint, host.to_owned()), p)])).unwrap();
}

/// Stores a collector heartbeat of `server`'s source "sites" sent now (on the test's clock,
/// `SITELOG_NOW` or the system's) that delivered through `through`, as the processor stores
/// one. Later calls are sent later (a millisecond per call), even on a set clock.
pub fn heartbeat(db: &Db, server: &str, through: &str, idle: bool) {
    use sitelog_processor::heartbeat::{store, HeartbeatRow};
    static CALLS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let row = HeartbeatRow {
        server: server.into(),
        source: "sites".into(),
        sent_at: sitelog::clock::now().unwrap().timestamp_millis() + n,
        delivered_through: utc(through).timestamp_micros(),
        position: 0,
        idle: u8::from(idle),
        files: 1,
    };
    let token = format!("test/{server}/{}", row.sent_at);
    support::block_on(store(&db.client, &token, &[row])).unwrap();
}

pub fn exec(db: &Db, sql: &str) {
    support::block_on(db.client.query(sql).execute()).unwrap_or_else(|e| panic!("{sql}: {e}"));
}
