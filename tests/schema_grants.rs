//! Roles and users as a real ClickHouse accepts them, and grants that cover exactly what each
//! role's commands send.
//!
//! chDB (the local engine) keeps users in users.xml only: `CREATE USER` / `CREATE ROLE` are
//! refused there ("no writeable access storage"), and every query runs as `default`. So:
//!
//! 1. Every statement `sitelog schema grants` renders (one server and a cluster, with password
//!    hashes and a person's user) parses with the engine's own parser (`formatQuery`).
//! 2. The engine is started with a users.xml whose roles carry the definition's GRANTs (the
//!    same privilege lists the SQL grants) — including tables that do not exist yet — and
//!    `system.grants` must report exactly the definition.
//! 3. The engine logs every query it receives (`chdb_http.py --query-log`). The test runs each
//!    role's commands on a generated sample (migrate, register import, collect + process,
//!    billing with `--verify` and `--final`, ops' security and investigation commands, the
//!    audit list) and derives what each query needs: `EXPLAIN QUERY TREE` for reads (table
//!    and column), the target of INSERT / ALTER / CREATE, the materialized views an insert
//!    pushes into. Every need must be granted to the role, and every grant the definition
//!    attributes to a command must be needed by one (nothing else is granted).
//! 4. `deploy/clickhouse/grants.sql` is the command's output, byte for byte.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use chrono::{Datelike, Days, NaiveDate, Utc};
use sitelog::sample::GenerateOptions;
use sitelog_processor::store::ClickHouseConfig;
use sitelog_schema::access::{self, Privilege, Render, Role, Why, DATABASE, TABLES};

struct Engine {
    child: Child,
    url: String,
    query_log: PathBuf,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// users.xml: `default` may manage access; each role carries the definition's privileges.
fn users_xml(db: &str) -> String {
    let render = Render { database: db, ..Default::default() };
    let mut roles = String::new();
    for role in Role::ALL {
        let grant = render.role_privileges(role).split_whitespace().collect::<Vec<_>>().join(" ");
        roles.push_str(&format!("    <{0}><grants><query>{grant}</query></grants></{0}>\n", role.name()));
    }
    format!(
        "<clickhouse>\n  <profiles><default/></profiles>\n  <quotas><default/></quotas>\n  <roles>\n{roles}  </roles>\n  <users>\n    <default><password></password><networks><ip>::/0</ip></networks><profile>default</profile><quota>default</quota><access_management>1</access_management></default>\n  </users>\n</clickhouse>\n"
    )
}

fn start_engine(dir: &Path, db: &str) -> Engine {
    std::fs::write(dir.join("users.xml"), users_xml(db)).unwrap();
    // clickhouse-local (chDB's engine) reads config.xml from its working directory.
    std::fs::write(
        dir.join("config.xml"),
        "<clickhouse>\n  <user_directories><users_xml><path>users.xml</path></users_xml></user_directories>\n</clickhouse>\n",
    )
    .unwrap();
    let script = dir.join("chdb_http.py");
    std::fs::write(&script, sitelog::stack::CHDB_HTTP_PY).unwrap();
    let query_log = dir.join("queries.jsonl");
    let mut child = Command::new(sitelog::stack::chdb_python())
        .arg(&script)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--host", "127.0.0.1", "--port", "0", "--log-file"])
        .arg(dir.join("clickhouse.log"))
        .arg("--query-log")
        .arg(&query_log)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the chDB endpoint");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("READY ").unwrap_or_else(|| panic!("endpoint not ready: {line:?}")).to_owned();
    Engine { child, url, query_log }
}

fn client(url: &str, db: &str) -> clickhouse::Client {
    ClickHouseConfig { url: url.into(), database: db.into(), compression: false, ..Default::default() }
        .client()
        .unwrap()
}

/// Runs `sitelog` without the environment's ClickHouse overrides; returns (success, stdout, stderr).
fn sitelog(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sitelog"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env_remove("SITELOG_CLICKHOUSE_URL")
        .env_remove("SITELOG_DATABASE")
        .env_remove(sitelog::clock::NOW_VAR);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running sitelog");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sitelog_ok(args: &[&str], envs: &[(&str, &str)]) -> String {
    let (ok, out, err) = sitelog(args, envs);
    assert!(ok, "sitelog {args:?} failed:\n{out}{err}");
    out
}

#[test]
fn every_statement_parses_and_the_roles_load_as_defined() {
    let dir = support::temp_dir("grants-parse");
    let db = support::unique_name("grants");
    let engine = start_engine(&dir, &db);
    let ch = client(&engine.url, "default");

    // 1. The engine's parser accepts every statement, for one server and for a cluster with
    //    password hashes and a person's user.
    let mut hashes = BTreeMap::new();
    for (u, _) in access::USERS {
        hashes.insert(u.to_string(), format!("{:064x}", u.len()));
    }
    hashes.insert("alice".into(), "ab".repeat(32));
    let renders = [
        Render { database: &db, ..Default::default() },
        Render {
            database: &db,
            cluster: Some("logs"),
            password_sha256: hashes,
            people: vec![("alice".into(), Role::Ops), ("bob".into(), Role::Auditor)],
        },
    ];
    let mut parsed = 0;
    for r in &renders {
        for st in r.statements().unwrap() {
            let formatted: String = support::block_on(ch.query("SELECT formatQuery(?)").bind(&st).fetch_one())
                .unwrap_or_else(|e| panic!("the engine's parser refuses:\n{st}\n{e}"));
            assert!(!formatted.is_empty());
            parsed += 1;
        }
    }
    println!("{parsed} statements parsed");
    assert!(parsed > 40);

    // 2. The roles as the engine understood the definition's privileges: exactly the
    //    definition, including grants on tables no migration of this version creates.
    #[derive(Debug, clickhouse::Row, serde::Deserialize)]
    struct GrantRow {
        role_name: Option<String>,
        access_type: String,
        database: Option<String>,
        table: Option<String>,
        column: Option<String>,
    }
    let rows: Vec<GrantRow> = support::block_on(
        ch.query(
            "SELECT role_name, toString(access_type) AS access_type, database, table, column FROM system.grants \
             WHERE role_name LIKE 'sitelog\\\\_%'",
        )
        .fetch_all(),
    )
    .unwrap();
    let mut found: BTreeSet<(String, String, String, Option<String>)> = BTreeSet::new();
    for r in rows {
        let role = r.role_name.unwrap();
        match (&r.database, &r.table) {
            (Some(d), Some(t)) => {
                assert_eq!(d, &db, "{role}: a grant outside the database: {t}");
                found.insert((role, t.clone(), r.access_type, r.column));
            }
            (Some(d), None) => {
                assert_eq!(d, &db);
                found.insert((role, String::new(), r.access_type, None));
            }
            _ => panic!("{role}: a global grant {}", r.access_type),
        }
    }
    let mut want = BTreeSet::new();
    for t in TABLES {
        for g in t.grants {
            let role = g.role.name().to_owned();
            match g.privilege {
                Privilege::SelectColumns(cols) => {
                    for c in cols {
                        want.insert((role.clone(), t.table.to_owned(), "SELECT".into(), Some(c.to_string())));
                    }
                }
                p => {
                    want.insert((role, t.table.to_owned(), p.kind().to_owned(), None));
                }
            }
        }
    }
    for (role, privileges) in DATABASE {
        for p in privileges.split(", ") {
            want.insert((role.name().to_owned(), String::new(), p.to_owned(), None));
        }
    }
    let missing: Vec<_> = want.difference(&found).collect();
    let extra: Vec<_> = found.difference(&want).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:#?}\nextra {extra:#?}");
    for pending in ["health_minute", "collector_heartbeats", "incidents", "incident_notifications"] {
        assert!(found.iter().any(|(_, t, _, _)| t == pending), "a grant on {pending}, which does not exist yet");
    }

    // Applying needs SQL-managed access storage; the embedded engine has none, and says so.
    let (ok, _, err) =
        sitelog(&["schema", "grants", "--apply", "--clickhouse-url", &engine.url, "--database", &db], &[]);
    assert!(!ok);
    assert!(err.contains("no writeable access storage") || err.contains("storage is readonly"), "{err}");
}

#[test]
fn production_grants_file_is_the_command_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::read_to_string(root.join("deploy/clickhouse/grants.sql")).unwrap();
    let out = sitelog_ok(&["schema", "grants", "--database", "sitelog"], &[]);
    assert_eq!(file, out, "deploy/clickhouse/grants.sql must be `sitelog schema grants --database sitelog`");
    assert_eq!(file, Render { database: "sitelog", ..Default::default() }.script().unwrap());
    // No user keeps privileges from users.xml: they are all SQL-defined.
    let users_xml = std::fs::read_to_string(root.join("deploy/clickhouse/users.d/sitelog.xml")).unwrap();
    assert!(!users_xml.contains("<sitelog_"), "users.xml defines no sitelog user:\n{users_xml}");
    // Password hashes come from files, never from the command line or the output file.
    let dir = support::temp_dir("grants-hash");
    std::fs::write(dir.join("sitelog_processor_user.sha256"), format!("{}  -\n", "0f".repeat(32))).unwrap();
    let out = sitelog_ok(&["schema", "grants", "--password-sha256-dir", dir.to_str().unwrap()], &[]);
    assert!(out.contains(&format!(
        "ALTER USER sitelog_processor_user IDENTIFIED WITH sha256_hash BY '{}' HOST ANY;",
        "0f".repeat(32)
    )));
    std::fs::write(dir.join("sitelog_processor_user.sha256"), "hunter2\n").unwrap();
    let (ok, _, err) = sitelog(&["schema", "grants", "--password-sha256-dir", dir.to_str().unwrap()], &[]);
    assert!(!ok && err.contains("64 hex digits") && !err.contains("hunter2"), "{err}");
}

// ------------------------------------------------------------------------ what commands send

/// One privilege a query needs: on a table (`table` empty: database-wide), of a kind
/// (`SELECT`, `INSERT`, `ALTER DELETE`, `CREATE TABLE`, …; `ANY` = any privilege on the table),
/// for a column (reads only).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Need {
    table: String,
    kind: String,
    column: Option<String>,
}

fn need(table: &str, kind: &str, column: Option<&str>) -> Need {
    Need { table: table.into(), kind: kind.into(), column: column.map(str::to_owned) }
}

/// The name after a keyword prefix: `db.t`, `` `t` ``, `t(` … → `t`.
fn object_name(rest: &str) -> String {
    let token: String =
        rest.trim_start().chars().take_while(|c| !c.is_whitespace() && *c != '(').collect::<String>().replace('`', "");
    token.rsplit('.').next().unwrap_or_default().to_owned()
}

/// What one query sent by a command needs.
fn needs_of(ch: &clickhouse::Client, db: &str, query: &str) -> Vec<Need> {
    let q = query.trim();
    let upper = q.to_ascii_uppercase();
    let words: Vec<&str> = upper.split_whitespace().take(4).collect();
    let after = |n: usize| -> &str {
        let mut rest = q;
        for _ in 0..n {
            rest = rest.trim_start();
            rest = &rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..];
        }
        rest
    };
    match words.as_slice() {
        ["SELECT", ..] | ["WITH", ..] => support::query_tree::reads(ch, db, q)
            .into_iter()
            .map(|(t, c)| Need { table: t, kind: "SELECT".into(), column: c })
            .collect(),
        ["INSERT", "INTO", ..] => vec![need(&object_name(after(2)), "INSERT", None)],
        ["DESCRIBE", "TABLE", ..] => vec![need(&object_name(after(2)), "ANY", None)],
        ["ALTER", "TABLE", ..] => {
            let table = object_name(after(2));
            let action = upper.split_whitespace().nth(3).unwrap_or("").to_owned()
                + " "
                + upper.split_whitespace().nth(4).unwrap_or("");
            let kind = match action.as_str() {
                a if a.starts_with("DELETE ") => "ALTER DELETE",
                "MODIFY TTL" => "ALTER TTL",
                "MODIFY COLUMN" => "ALTER MODIFY COLUMN",
                "ADD COLUMN" => "ALTER ADD COLUMN",
                "MODIFY QUERY" => "ALTER VIEW MODIFY QUERY",
                other => panic!("an ALTER this test does not know ({other}): {q}"),
            };
            vec![need(&table, kind, None)]
        }
        // The migrator's reload of a view it changed (`DETACH`, then `ATTACH … IF NOT EXISTS`).
        ["DETACH", "TABLE", ..] => vec![need(&object_name(after(2)), "DROP VIEW", None)],
        ["ATTACH", "TABLE", "IF", ..] => vec![need(&object_name(after(5)), "CREATE VIEW", None)],
        ["CREATE", "DATABASE", ..] => vec![need("", "CREATE DATABASE", None)],
        ["CREATE", "TABLE", ..] => vec![need(&object_name(after(5)), "CREATE TABLE", None)],
        ["CREATE", "MATERIALIZED", "VIEW", ..] => vec![need(&object_name(after(6)), "CREATE VIEW", None)],
        _ => panic!("a statement this test does not know: {q}"),
    }
}

fn granted(role: Role, n: &Need) -> bool {
    let db_wide = DATABASE.iter().any(|(r, ps)| *r == role && ps.split(", ").any(|p| p == n.kind));
    if db_wide {
        return true;
    }
    access::grants_of(role).into_iter().filter(|(t, _)| *t == n.table).any(|(_, g)| {
        match (n.kind.as_str(), g.privilege) {
            ("ANY", _) => true,
            ("SELECT", Privilege::Select) => true,
            ("SELECT", Privilege::SelectColumns(cols)) => n.column.as_deref().is_none_or(|c| cols.contains(&c)),
            (k, p) => p.kind() == k,
        }
    })
}

#[derive(serde::Deserialize)]
struct Logged {
    database: String,
    query: String,
    status: u16,
}

/// Queries the engine logged from byte `from` on, for `db`, that succeeded.
fn logged_since(path: &Path, from: u64, db: &str) -> Vec<String> {
    let text = std::fs::read(path).unwrap();
    String::from_utf8_lossy(&text[from as usize..])
        .lines()
        .map(|l| serde_json::from_str::<Logged>(l).unwrap())
        .filter(|l| l.status == 200 && (l.database == db || l.query.contains(&format!("{db}."))))
        .map(|l| l.query)
        .collect()
}

/// Waits until the engine wrote the last lines of a command (it logs after answering).
fn settle(path: &Path) {
    let mut len = log_len(path);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = log_len(path);
        if now == len {
            return;
        }
        len = now;
    }
}

fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The first day of `d`'s month.
fn month_start(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap()
}

#[test]
fn grants_cover_exactly_what_each_role_commands_send() {
    let stack = support::stack(); // Kafka for collect + process
    let dir = support::temp_dir("grants-cmds");
    let db = support::unique_name("grantscmd");
    let engine = start_engine(&dir.join("engine").tap_mkdir(), &db);

    // Two days across the latest month boundary at least two days back (real clock: the
    // engine's TTLs run on it; raw_days 60 keeps the rows).
    let today = Utc::now().with_timezone(&chrono_tz::Europe::Helsinki).date_naive();
    let boundary = month_start(today - Days::new(2));
    let month = (boundary - Days::new(1)).format("%Y-%m").to_string();
    let opts = GenerateOptions {
        out: dir.join("sample"),
        seed: 7,
        start: boundary - Days::new(1),
        days: 2,
        customers: 3,
        rate: 6,
    };
    sitelog::sample::generate(&opts).unwrap();
    let topic = support::unique_name("grants");
    let rejects = support::unique_name("grants-rejects");
    let heartbeats = support::unique_name("grants-heartbeats");
    stack.create_topic(&topic, 2).unwrap();
    stack.create_topic(&rejects, 1).unwrap();
    stack.create_topic(&heartbeats, 1).unwrap();
    // The collector's heartbeats go to this test's own topic (the processor stores them).
    let collector_toml = opts.out.join("collector.toml");
    let text = std::fs::read_to_string(&collector_toml).unwrap();
    std::fs::write(
        &collector_toml,
        text.replacen("[kafka]\n", &format!("[kafka]\nheartbeat_topic = \"{heartbeats}\"\n"), 1),
    )
    .unwrap();
    let (hook, hooks) = support::webhook::receiver();
    let toml = |raw: u32, ip: u32| {
        format!(
            "[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\nrejects_topic = \"{rejects}\"\nheartbeat_topic = \"{heartbeats}\"\ngroup_id = \"{db}\"\n\n\
             [clickhouse]\nurl = \"{}\"\ndatabase = \"{db}\"\ncompression = false\n\n\
             [retention]\nraw_days = {raw}\nclient_ip_days = {ip}\n\n[sink]\nmax_poll_interval_ms = 10000\n\n\
             [billing]\nuser = \"sitelog_billing_user\"\n\n[privacy]\nvisitor_key_dir = \"{}\"\n\n\
             [[alerts.webhooks]]\nname = \"grants\"\nurl = \"{hook}\"\nmax_attempts = 2\n",
            stack.kafka_bootstrap,
            engine.url,
            dir.join("keys").display()
        )
    };
    let config = dir.join("processor.toml");
    let lowered = dir.join("processor-lowered.toml");
    std::fs::write(&config, toml(60, 7)).unwrap();
    std::fs::write(&lowered, toml(59, 6)).unwrap();
    let cfg = config.to_str().unwrap();
    let s = opts.out.to_str().unwrap();
    let checkpoints = dir.join("checkpoints");
    let collect_env = [
        ("SITELOG_KAFKA_BROKERS", stack.kafka_bootstrap.as_str()),
        ("SITELOG_ACCESS_TOPIC", topic.as_str()),
        ("SITELOG_REJECTS_TOPIC", rejects.as_str()),
    ];

    // Each role's commands, in the order a deployment runs them.
    type Step<'a> = (Role, Vec<&'a str>, &'a [(&'a str, &'a str)]);
    let register = format!("{s}/register.json");
    let steps: Vec<Step> = vec![
        (Role::Migrator, vec!["schema", "migrate", "-c", cfg], &[]),
        (Role::Migrator, vec!["schema", "migrate", "-c", lowered.to_str().unwrap()], &[]),
        (Role::Register, vec!["customers", "import", &register, "-c", cfg], &[]),
        (Role::Register, vec!["customers", "import", &register, "-c", cfg], &[]),
        // The collector talks to Kafka only: nothing may reach ClickHouse from it.
        (
            Role::Processor,
            vec![
                "collect",
                "--config",
                Box::leak(format!("{s}/collector.toml").into_boxed_str()),
                "--once",
                "--checkpoint-dir",
                checkpoints.to_str().unwrap(),
            ],
            &collect_env,
        ),
        (Role::Processor, vec!["process", "-c", cfg, "--exit-when-idle", "3"], &[]),
        (Role::Billing, vec!["report", "billing", "-c", cfg, "--month", &month, "--verify"], &[]),
        (Role::Billing, vec!["report", "billing", "-c", cfg, "--month", &month, "--final", "--closed-by", "test"], &[]),
        (Role::Billing, vec!["report", "billing", "-c", cfg, "--month", &month], &[]),
        (Role::Ops, vec!["security", "events", "-c", cfg, "--since", "60d", "--reason", "T-1"], &[]),
        (Role::Ops, vec!["security", "blocklist", "-c", cfg, "--since", "60d"], &[]),
        (Role::Ops, vec!["investigate", "ip", "-c", cfg, "192.0.2.0/24", "--since", "60d", "--reason", "T-2"], &[]),
        (Role::Ops, vec!["investigate", "site", "-c", cfg, "example.fi", "--since", "60d", "--reason", "T-3"], &[]),
        (Role::Ops, vec!["health", "-c", cfg, "--since", "60d"], &[]),
        (
            Role::Ops,
            vec!["investigate", "errors", "-c", cfg, "--site", "example.fi", "--since", "60d", "--reason", "T-4"],
            &[],
        ),
        (Role::Ops, vec!["customers", "unattributed", "-c", cfg], &[]),
        (Role::Ops, vec!["report", "summary", "-c", cfg], &[]),
        (Role::Auditor, vec!["audit", "list", "-c", cfg, "--since", "1d"], &[]),
    ];
    let mut queries: BTreeMap<Role, Vec<(String, String)>> = BTreeMap::new();
    let mut run = |role: Role, args: &[&str], env: &[(&str, &str)]| -> String {
        let from = log_len(&engine.query_log);
        let out = sitelog_ok(args, env);
        settle(&engine.query_log);
        let sent = logged_since(&engine.query_log, from, &db);
        if args[0] == "collect" {
            assert!(sent.is_empty(), "the collector sent ClickHouse queries: {sent:#?}");
        }
        let cmd = args.iter().take_while(|a| !a.starts_with('-')).copied().collect::<Vec<_>>().join(" ");
        queries.entry(role).or_default().extend(sent.into_iter().map(|q| (cmd.clone(), q)));
        out
    };
    for (role, args, env) in &steps {
        run(*role, args, env);
    }
    // Disruption alerting (the sample's outages are in its last days) and what ops read of it.
    let (from, to) = (opts.start.to_string(), (opts.start + Days::new(u64::from(opts.days))).to_string());
    run(Role::Alerts, &["alerts", "run", "-c", cfg, "--from", &from, "--to", &to, "--notify"], &[]);
    // Live, twice: the second run resumes (progress, then the incidents open there).
    run(Role::Alerts, &["alerts", "run", "-c", cfg, "--start", &from, "--exit-when-caught-up"], &[]);
    run(Role::Alerts, &["alerts", "run", "-c", cfg, "--exit-when-caught-up"], &[]);
    let listed =
        run(Role::Ops, &["incidents", "list", "-c", cfg, "--from", &from, "--to", &to, "--format", "json"], &[]);
    let first: serde_json::Value = serde_json::from_str(listed.lines().next().expect("an incident")).unwrap();
    let id = first["id"].as_str().unwrap();
    run(Role::Ops, &["incidents", "show", id, "-c", cfg], &[]);
    run(Role::Ops, &["incidents", "contacts", id, "-c", cfg, "--format", "csv"], &[]);
    assert!(hooks.lock().unwrap().len() >= 2, "the webhook got the transitions");

    // The web console (`sitelog serve`): every page as the ops role, Usage as billing.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["serve", "-c", cfg, "--listen", "127.0.0.1:0"])
        .env("SITELOG_NOW", &to)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(serve.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("console: http://").expect("console: URL").trim_end_matches('/').to_owned();
    let pages = [
        (Role::Ops, "/".to_owned()),
        (Role::Ops, format!("/incidents/{id}")),
        (Role::Ops, "/security?days=31".to_owned()),
        (Role::Ops, "/security/ip/192.0.2.1".to_owned()),
        (Role::Ops, "/sites/example.fi".to_owned()),
        (Role::Billing, format!("/usage?month={month}")),
    ];
    for (role, path) in &pages {
        let from = log_len(&engine.query_log);
        let status = http_get(&addr, path);
        settle(&engine.query_log);
        assert_eq!(status, 200, "sitelog serve {path}");
        let sent = logged_since(&engine.query_log, from, &db);
        queries.entry(*role).or_default().extend(sent.into_iter().map(|q| (format!("serve {path}"), q)));
    }
    let _ = serve.kill();
    let _ = serve.wait();

    // What the engine says each materialized view pushes: source table → target tables.
    let ch = client(&engine.url, &db);
    let views: Vec<String> = support::block_on(
        ch.query("SELECT create_table_query FROM system.tables WHERE database = ? AND engine = 'MaterializedView'")
            .bind(&db)
            .fetch_all(),
    )
    .unwrap();
    let mut pushes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for v in &views {
        let target = object_name(v.split(" TO ").nth(1).unwrap());
        let source = object_name(v.split(" FROM ").nth(1).unwrap());
        pushes.entry(source).or_default().insert(target);
    }
    assert!(pushes["access_log"].contains("usage_daily") && pushes["access_log"].contains("site_health_minute"));

    let mut failures = Vec::new();
    for role in Role::ALL {
        let mut used: BTreeSet<(String, String)> = BTreeSet::new();
        let sent = queries.get(&role).cloned().unwrap_or_default();
        for (cmd, q) in &sent {
            for n in needs_of(&ch, &db, q) {
                if !granted(role, &n) {
                    failures.push(format!(
                        "{}: `{cmd}` needs {} on {}{} (not granted): {}",
                        role.name(),
                        n.kind,
                        n.table,
                        n.column.as_deref().map(|c| format!(".{c}")).unwrap_or_default(),
                        q.chars().take(160).collect::<String>()
                    ));
                }
                if n.kind == "INSERT" {
                    for target in pushes.get(&n.table).into_iter().flatten() {
                        let via = need(target, "INSERT", None);
                        if !granted(role, &via) {
                            failures.push(format!(
                                "{}: INSERT into {} pushes into {target}: not granted",
                                role.name(),
                                n.table
                            ));
                        }
                    }
                }
                used.insert((n.table.clone(), n.kind.clone()));
            }
        }
        println!(
            "{:<18} {:>4} queries; uses {}",
            role.name(),
            sent.len(),
            used.iter().map(|(t, k)| format!("{k} {t}")).collect::<Vec<_>>().join(", ")
        );
        // Nothing else: every grant attributed to a command is needed by one.
        for (table, g) in access::grants_of(role) {
            if g.why == Why::Command && !used.contains(&(table.to_owned(), g.privilege.kind().to_owned())) {
                failures.push(format!(
                    "{}: {} on {table} is granted for a command but no command used it",
                    role.name(),
                    g.privilege.kind()
                ));
            }
        }
        assert!(!sent.is_empty(), "{}: its commands sent nothing", role.name());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// GET `path` from `addr` (HTTP/1.1, one request); the response status.
fn http_get(addr: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
