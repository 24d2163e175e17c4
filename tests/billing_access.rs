//! Billing reads only what billing needs. chDB runs every query as `default` (it cannot switch
//! users), so the proof uses ClickHouse itself in two steps:
//!
//! 1. A ClickHouse engine (chDB behind the same HTTP endpoint) is started with a users.xml
//!    that defines the `sitelog_billing` role from migration 0005's own GRANT statements and a
//!    billing user holding it. `SHOW GRANTS` / `system.grants` then report what the role may
//!    read, as ClickHouse understood the statements: usage, the register's billing fields,
//!    non-personal raw columns, billing runs — and nothing about client addresses, user
//!    agents, paths, referers or contact persons.
//! 2. For every statement the billing run sends (`billing::sql::ALL`), `EXPLAIN QUERY TREE`
//!    lists the columns it reads per table; each must be inside those grants.
//!
//! Production applies the same grants (`sitelog schema grants`, deploy/clickhouse/grants.sql,
//! from sitelog_schema::access; checked equal to the migration's below).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use sitelog_processor::billing::sql;
use sitelog_processor::store::migrate::migrate;
use sitelog_processor::store::ClickHouseConfig;
use sitelog_schema::migrations::{Retention, MIGRATIONS};

const ROLE: &str = "sitelog_billing";
const USER: &str = "sitelog_billing_user";

/// The chDB endpoint started for this test; killed on drop.
struct Engine {
    child: Child,
    url: String,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The billing role's statements of every migration for `db`: migration 0005 (the role and
/// its grants) and the grants later tables add (0010, `collector_heartbeats`).
fn access_statements(db: &str) -> Vec<String> {
    let m = MIGRATIONS.iter().find(|m| m.name == "billing_access").expect("migration billing_access");
    let mut out = m.statements(db, &Retention::default());
    for m in MIGRATIONS.iter().filter(|m| m.name != "billing_access") {
        out.extend(
            m.statements(db, &Retention::default())
                .into_iter()
                .filter(|s| normalize(s).starts_with("GRANT ") && normalize(s).ends_with(&format!(" TO {ROLE}"))),
        );
    }
    out
}

fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// users.xml: `default` may manage access (to read system.grants), the role carries the
/// migration's grants, the billing user holds the role.
fn users_xml(db: &str) -> String {
    let mut grants = String::new();
    for s in access_statements(db) {
        let s = normalize(&s);
        if s.starts_with("CREATE ROLE") {
            assert_eq!(s, format!("CREATE ROLE IF NOT EXISTS {ROLE}"));
            continue;
        }
        let g = s.strip_suffix(&format!(" TO {ROLE}")).unwrap_or_else(|| panic!("a grant to the role: {s}"));
        grants.push_str(&format!("        <query>{g}</query>\n"));
    }
    format!(
        "<clickhouse>\n  <profiles><default/></profiles>\n  <quotas><default/></quotas>\n  <roles>\n    <{ROLE}>\n      <grants>\n{grants}      </grants>\n    </{ROLE}>\n  </roles>\n  <users>\n    <default><password></password><networks><ip>::/0</ip></networks><profile>default</profile><quota>default</quota><access_management>1</access_management></default>\n    <{USER}><password_sha256_hex>2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881</password_sha256_hex><networks><ip>::1</ip></networks><profile>default</profile><quota>default</quota>\n      <grants><query>GRANT {ROLE}</query></grants>\n    </{USER}>\n  </users>\n</clickhouse>\n"
    )
}

fn start_engine(dir: &Path, db: &str) -> Engine {
    std::fs::write(dir.join("users.xml"), users_xml(db)).unwrap();
    // clickhouse-local (chDB's engine) reads config.xml from its working directory.
    std::fs::write(dir.join("config.xml"), "<clickhouse>\n  <user_directories><users_xml><path>users.xml</path></users_xml></user_directories>\n</clickhouse>\n").unwrap();
    let script = dir.join("chdb_http.py");
    std::fs::write(&script, sitelog::stack::CHDB_HTTP_PY).unwrap();
    let mut child = Command::new(sitelog::stack::chdb_python())
        .arg(&script)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--host", "127.0.0.1", "--port", "0", "--log-file"])
        .arg(dir.join("clickhouse.log"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the chDB endpoint");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("READY ").unwrap_or_else(|| panic!("endpoint not ready: {line:?}")).to_owned();
    Engine { child, url }
}

/// table → (privilege → None for the whole table, Some(columns) for a column grant).
type Grants = BTreeMap<String, BTreeMap<String, Option<BTreeSet<String>>>>;

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct GrantRow {
    access_type: String,
    database: Option<String>,
    table: Option<String>,
    column: Option<String>,
    is_partial_revoke: u8,
}

fn grants(client: &clickhouse::Client, db: &str) -> Grants {
    let rows: Vec<GrantRow> = support::block_on(
        client
            .query("SELECT toString(access_type) AS access_type, database, table, column, is_partial_revoke FROM system.grants WHERE role_name = ?")
            .bind(ROLE)
            .fetch_all(),
    )
    .unwrap();
    let mut out = Grants::new();
    for r in rows {
        assert_eq!(r.is_partial_revoke, 0);
        assert_eq!(r.database.as_deref(), Some(db), "every grant is on the sitelog database: {r:?}");
        let table = r.table.clone().unwrap_or_else(|| panic!("no database-wide grant: {r:?}"));
        let entry = out.entry(table).or_default().entry(r.access_type.clone()).or_insert_with(|| Some(BTreeSet::new()));
        match (&r.column, entry) {
            (None, e) => *e = None,
            (Some(c), Some(cols)) => {
                cols.insert(c.clone());
            }
            (Some(_), None) => {}
        }
    }
    out
}

fn may_select(g: &Grants, table: &str, column: &str) -> bool {
    match g.get(table).and_then(|p| p.get("SELECT")) {
        Some(None) => true,
        Some(Some(cols)) => cols.contains(column),
        None => false,
    }
}

/// (table, column) pairs a statement reads, from ClickHouse's analyzed query tree.
fn columns_read(client: &clickhouse::Client, db: &str, sql: &str) -> BTreeSet<(String, String)> {
    let read = support::query_tree::reads(client, db, sql);
    assert!(read.iter().any(|(t, _)| !t.is_empty()), "the tree names tables of {db}: {sql}");
    read.into_iter().filter_map(|(t, c)| c.map(|c| (t, c))).collect()
}

#[test]
fn billing_role_reads_usage_and_billing_fields_only() {
    let dir = support::temp_dir("billaccess");
    let db = support::unique_name("billaccess");
    let engine = start_engine(&dir, &db);
    let cfg =
        ClickHouseConfig { url: engine.url.clone(), database: db.clone(), compression: false, ..Default::default() };
    // On an engine without SQL-managed access storage the runner skips the access statements;
    // the role comes from users.xml above, built from those very statements.
    support::block_on(migrate(&cfg.server_client().unwrap(), &db, &Retention::default())).unwrap();
    let client = cfg.client().unwrap();

    let show: Vec<String> = support::block_on(client.query(&format!("SHOW GRANTS FOR {ROLE}")).fetch_all()).unwrap();
    println!("SHOW GRANTS FOR {ROLE}:\n  {}", show.join("\n  "));
    assert_eq!(show.len(), access_statements(&db).len() - 1, "every GRANT of the migration was understood");
    let user: Vec<String> = support::block_on(client.query(&format!("SHOW GRANTS FOR {USER}")).fetch_all()).unwrap();
    assert_eq!(user, vec![format!("GRANT {ROLE} TO {USER}")], "the billing user has the role and nothing else");

    let g = grants(&client, &db);
    let set = |xs: &[&str]| -> Option<BTreeSet<String>> { Some(xs.iter().map(|s| s.to_string()).collect()) };
    let select = |cols: Option<BTreeSet<String>>| BTreeMap::from([("SELECT".to_string(), cols)]);
    let mut want = Grants::new();
    want.insert("usage_daily".into(), select(None));
    want.insert(
        "customers".into(),
        select(set(&[
            "version",
            "customer_id",
            "company_name",
            "business_id",
            "billing_street",
            "billing_postal_code",
            "billing_city",
            "billing_country",
            "billing_email",
        ])),
    );
    want.insert(
        "sites".into(),
        select(set(&["version", "site_id", "customer_id", "primary_domain", "plan", "valid_from", "valid_to"])),
    );
    want.insert("plans".into(), select(set(&["version", "plan", "metering", "included"])));
    want.insert("register_imports".into(), select(set(&["version", "imported_at"])));
    want.insert(
        "source_progress".into(),
        select(set(&["fingerprint", "site_host", "max_offset", "max_ts", "records"])),
    );
    want.insert("access_log".into(), select(set(&["ts", "customer_id", "site_id", "bytes_sent", "is_bot"])));
    want.insert(
        "collector_heartbeats".into(),
        select(set(&["server", "source", "sent_at", "delivered_through", "position", "idle"])),
    );
    for t in sql::WRITES {
        want.insert(t.to_string(), BTreeMap::from([("SELECT".to_string(), None), ("INSERT".to_string(), None)]));
    }
    assert_eq!(g, want, "exactly these grants");
    // Said plainly: no personal or request-content column is readable.
    for (table, col) in [
        ("access_log", "client_ip"),
        ("access_log", "client_net"),
        ("access_log", "user_agent"),
        ("access_log", "path"),
        ("access_log", "query"),
        ("access_log", "referer"),
        ("access_log", "remote_user"),
        ("contacts", "email"),
        ("contacts", "phone"),
        ("contacts", "name"),
        ("register_imports", "imported_by"),
        ("site_health_minute", "requests"),
        ("health_minute", "requests"),
        ("access_log", "server"),
    ] {
        assert!(!may_select(&g, table, col), "{table}.{col} must not be readable by billing");
    }

    // Every statement the billing run sends reads only granted columns.
    let mut audited = 0;
    for s in sql::ALL {
        let cols = columns_read(&client, &db, &s.example());
        assert!(!cols.is_empty() || s.name == "register_version", "{}: no columns found", s.name);
        for (table, col) in &cols {
            assert!(
                may_select(&g, table, col),
                "statement {} reads {table}.{col}, which the billing role may not read",
                s.name
            );
        }
        println!(
            "{:<18} reads {}",
            s.name,
            cols.iter().map(|(t, c)| format!("{t}.{c}")).collect::<Vec<_>>().join(", ")
        );
        audited += 1;
    }
    assert_eq!(audited, sql::ALL.len());
    // The usage statement really reads the rollup (the audit is not vacuous).
    let usage = columns_read(&client, &db, &sql::USAGE_MONTH.example());
    assert!(
        usage.contains(&("usage_daily".into(), "visitors_ip".into()))
            && usage.contains(&("usage_daily".into(), "day".into())),
        "{usage:?}"
    );
    let raw = columns_read(&client, &db, &sql::RAW_DAILY.example());
    assert_eq!(
        raw.iter().map(|(_, c)| c.as_str()).collect::<BTreeSet<_>>(),
        BTreeSet::from(["ts", "customer_id", "site_id", "bytes_sent", "is_bot"])
    );
}

#[test]
fn access_definition_grants_billing_what_the_migration_did() {
    use sitelog_schema::access::{grants_of, Role, Why};
    // The role as `sitelog schema grants` defines it (deploy/clickhouse/grants.sql), without
    // the grants on tables other branches are still adding, is migration 0005's.
    let defined: Vec<String> = grants_of(Role::Billing)
        .into_iter()
        .filter(|(_, g)| !matches!(g.why, Why::Pending(_)))
        .fold(Vec::<(&str, Vec<String>)>::new(), |mut acc, (t, g)| {
            match acc.iter_mut().find(|(x, _)| *x == t) {
                Some((_, ps)) => ps.push(g.privilege.sql()),
                None => acc.push((t, vec![g.privilege.sql()])),
            }
            acc
        })
        .into_iter()
        .map(|(t, ps)| format!("GRANT {} ON sitelog.{t} TO {ROLE}", ps.join(", ")))
        .collect();
    let migration: BTreeSet<String> =
        access_statements("sitelog").iter().map(|s| normalize(s)).filter(|s| s.starts_with("GRANT ")).collect();
    assert_eq!(
        defined.iter().cloned().collect::<BTreeSet<_>>(),
        migration,
        "schema::access and migration 0005 grant billing the same"
    );
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/clickhouse/grants.sql")).unwrap();
    assert!(text.contains(&format!("GRANT {ROLE} TO {USER} WITH REPLACE OPTION;")), "the billing user gets the role");
    let local = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/processor.example.toml")).unwrap();
    assert!(local.contains(&format!("user = \"{USER}\"")), "the example config connects as the billing user");
}
