//! The Grafana dashboards (`deploy/grafana/dashboards/*.json`, for the official ClickHouse data
//! source plugin `grafana-clickhouse-datasource`) against the real pipeline's tables.
//!
//! 1. Structure: every file is valid JSON, dashboard uids are unique, every panel, target and
//!    query variable names a data source of the plugin's type with the provisioned uid
//!    (`deploy/grafana/provisioning/datasources/sitelog.yaml`), panel ids are unique per
//!    dashboard, every target is raw SQL.
//! 2. Every panel target and every query variable, on a generated sample that went through
//!    collect → tansu → process → ClickHouse and `sitelog alerts run --from --to` (so incidents
//!    exist), with the plugin's macros and the dashboard's variables substituted the way the
//!    plugin does it (see [`expand`]) for a time range covering the sample, runs on the local
//!    ClickHouse and returns at least one row — at two intervals (`$__interval_s` = 1, the
//!    plugin's floor, and the range over 1000 data points rounded up to whole minutes) and, on
//!    the usage dashboard, with the customer variable at "All" and at one customer.
//! 3. Every table and column a panel reads (ClickHouse's `EXPLAIN QUERY TREE`) is granted to
//!    `sitelog_ops`, the data source user's role (`schema/src/access.rs`).
//! 4. Figures against the generator's ground truth: a site's total and per-server requests
//!    (`truth/health.csv`), the platform's requests, the incidents (kind and subject, one per
//!    injected disruption, `truth/incidents.csv`), every attack scenario in the security events
//!    (`truth/security.csv`) and usage per customer and month (`truth/usage_daily.csv`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Days, Utc};
use serde_json::Value;
use sitelog::sample::{truth, GenerateOptions};
use sitelog_schema::access::{self, Privilege, Role};

const PLUGIN: &str = "grafana-clickhouse-datasource";
const DATASOURCE_UID: &str = "sitelog-clickhouse";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// (file name, dashboard JSON) of every dashboard, sorted by file name.
fn dashboards() -> Vec<(String, Value)> {
    let dir = root().join("deploy/grafana/dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: invalid JSON: {e}"));
            (name, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Panels, including those nested in rows.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

fn query_variables(d: &Value) -> Vec<&Value> {
    d["templating"]["list"].as_array().map(|l| l.iter().filter(|v| v["type"] == "query").collect()).unwrap_or_default()
}

fn assert_plugin_datasource(what: &str, ds: &Value) {
    assert_eq!(ds["type"], PLUGIN, "{what}: datasource {ds}");
    assert_eq!(ds["uid"], DATASOURCE_UID, "{what}: datasource {ds}");
}

#[test]
fn dashboards_are_valid_json_with_unique_uids_and_the_plugin_datasource() {
    let all = dashboards();
    let names: BTreeSet<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["incidents.json", "overview.json", "security.json", "site.json", "usage.json"] {
        assert!(names.contains(want), "{want} missing: {names:?}");
    }
    let mut uids = BTreeSet::new();
    for (name, d) in &all {
        let uid = d["uid"].as_str().unwrap_or_else(|| panic!("{name}: no uid"));
        assert!(!uid.is_empty() && uid.len() <= 40, "{name}: uid {uid:?}");
        assert!(uids.insert(uid.to_owned()), "{name}: uid {uid} used twice");
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "{name}: title");
        assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 39), "{name}: schemaVersion {}", d["schemaVersion"]);
        assert!(d.get("id").is_none_or(Value::is_null), "{name}: a provisioned dashboard carries no id");
        let (mut ids, mut titles) = (BTreeSet::new(), BTreeSet::new());
        let ps = panels(d);
        assert!(!ps.is_empty(), "{name}: no panels");
        for p in ps {
            let title = p["title"].as_str().unwrap_or_default();
            let what = format!("{name}: panel {title:?}");
            assert!(ids.insert(p["id"].as_u64().unwrap_or_else(|| panic!("{what}: no id"))), "{what}: id used twice");
            assert!(titles.insert(title), "{what}: title used twice");
            if p["type"] == "row" {
                continue;
            }
            assert!(
                ["timeseries", "table", "stat"].contains(&p["type"].as_str().unwrap()),
                "{what}: type {}",
                p["type"]
            );
            for k in ["x", "y", "w", "h"] {
                assert!(p["gridPos"][k].is_u64(), "{what}: gridPos.{k}");
            }
            assert_plugin_datasource(&what, &p["datasource"]);
            let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{what}: no targets"));
            assert!(!targets.is_empty(), "{what}: no targets");
            for t in targets {
                assert_plugin_datasource(&what, &t["datasource"]);
                assert_eq!(t["editorType"], "sql", "{what}");
                assert!(t["rawSql"].as_str().is_some_and(|s| !s.trim().is_empty()), "{what}: rawSql");
                // The plugin's Format: 0 time series, 1 table.
                let want = if p["type"] == "timeseries" { 0 } else { 1 };
                assert_eq!(t["format"], want, "{what}: format");
            }
        }
        for v in query_variables(d) {
            assert_plugin_datasource(&format!("{name}: variable {}", v["name"]), &v["datasource"]);
        }
    }
    // The provisioning files name the same plugin, uid and folder.
    let ds = std::fs::read_to_string(root().join("deploy/grafana/provisioning/datasources/sitelog.yaml")).unwrap();
    assert!(ds.contains(&format!("type: {PLUGIN}")) && ds.contains(&format!("uid: {DATASOURCE_UID}")), "{ds}");
    assert!(ds.contains("password: ${SITELOG_GRAFANA_PASSWORD}"), "the password comes from the environment: {ds}");
    let live: Vec<&str> = ds.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    for key in ["host", "port", "username", "defaultDatabase"] {
        let line = live.iter().find(|l| l.trim_start().starts_with(&format!("{key}:"))).expect(key);
        assert!(line.contains("${SITELOG_"), "{key} from the environment: {line}");
    }
    let dash = std::fs::read_to_string(root().join("deploy/grafana/provisioning/dashboards/sitelog.yaml")).unwrap();
    assert!(dash.contains("folder: sitelog") && dash.contains("type: file"), "{dash}");
}

// ---------------------------------------------------------------------------------------------
// Macro and variable expansion, as grafana-clickhouse-datasource (v4) does it:
//
// In the browser (`applyTemplateVariables`): `$__conditionalAll(phrase, $var)` becomes `1=1`
// when the variable is "All" (or empty), else `phrase`; then Grafana replaces variables
// (`$var`, `${var}`) with the plugin's formatter: a single value as it is (the SQL quotes it),
// several values as `'a','b'`.
// In the backend (pkg/macros, for the dashboard's time range [F, T] in Unix seconds and the
// panel's interval):
//   $__timeFilter(col)   → col >= toDateTime(F) AND col <= toDateTime(T)
//   $__dateFilter(col)   → col >= toDate('F as YYYY-MM-DD') AND col <= toDate('T as YYYY-MM-DD')
//   $__timeInterval(col) → toStartOfInterval(toDateTime(col), INTERVAL max(interval, 1) second)
//   $__fromTime          → toDateTime(F)     $__toTime → toDateTime(T)
//   $__interval_s        → max(interval, 1) (whole seconds)
// Anything else starting with `$` left in the SQL fails the test.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Var {
    One(String),
    /// Several values; `all` when "All" is selected.
    Many(Vec<String>, bool),
}

struct Ctx {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    interval_s: i64,
    vars: BTreeMap<String, Var>,
}

/// The arguments of a macro call whose `(` is at `open`: (args, index after the `)`), split at
/// top-level commas and trimmed.
fn macro_args(sql: &str, open: usize) -> (Vec<String>, usize) {
    let bytes = sql.as_bytes();
    assert_eq!(bytes[open], b'(');
    let (mut depth, mut start, mut args) = (0, open + 1, Vec::new());
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    args.push(sql[start..i].trim().to_owned());
                    return (args, i + 1);
                }
            }
            b',' if depth == 1 => {
                args.push(sql[start..i].trim().to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    panic!("unbalanced macro call: {}", &sql[open..]);
}

fn expand(sql: &str, ctx: &Ctx) -> String {
    let mut sql = sql.to_owned();
    // 1. $__conditionalAll (browser), innermost-last as the plugin does (lastIndexOf).
    const COND: &str = "$__conditionalAll(";
    while let Some(at) = sql.rfind(COND) {
        let (args, end) = macro_args(&sql, at + COND.len() - 1);
        assert_eq!(args.len(), 2, "$__conditionalAll takes 2 arguments: {}", &sql[at..end]);
        let var = args[1].trim_start_matches('$').trim_start_matches('{').trim_end_matches('}');
        let all = match ctx.vars.get(var) {
            Some(Var::One(v)) => v.is_empty(),
            Some(Var::Many(vs, all)) => *all || vs.is_empty(),
            None => panic!("$__conditionalAll on an unknown variable {var}"),
        };
        let phrase = if all { "1=1".to_owned() } else { args[0].clone() };
        sql.replace_range(at..end, &phrase);
    }
    // 2. Dashboard variables (browser), longest names first.
    let mut names: Vec<&String> = ctx.vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        let value = match &ctx.vars[name] {
            Var::One(v) => v.clone(),
            Var::Many(vs, _) => format!("'{}'", vs.join("','")),
        };
        sql = sql.replace(&format!("${{{name}}}"), &value);
        let plain = format!("${name}");
        let mut out = String::new();
        let mut rest = sql.as_str();
        while let Some(at) = rest.find(&plain) {
            let after = rest[at + plain.len()..].chars().next();
            out.push_str(&rest[..at]);
            if after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.push_str(&plain);
            } else {
                out.push_str(&value);
            }
            rest = &rest[at + plain.len()..];
        }
        out.push_str(rest);
        sql = out;
    }
    // 3. The backend's macros.
    let (f, t) = (ctx.from.timestamp(), ctx.to.timestamp());
    let interval = ctx.interval_s.max(1);
    let mut out = String::new();
    let mut rest = sql.as_str();
    while let Some(at) = rest.find("$__") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let mut end = at + 3 + name.len();
        let args = if rest[end..].starts_with('(') {
            let (args, e) = macro_args(rest, end);
            end = e;
            args.into_iter().filter(|a| !a.is_empty()).collect()
        } else {
            Vec::new()
        };
        let one = || -> &str {
            assert_eq!(args.len(), 1, "$__{name} takes one argument");
            &args[0]
        };
        let text = match name.as_str() {
            "timeFilter" => {
                let c = one();
                format!("{c} >= toDateTime({f}) AND {c} <= toDateTime({t})")
            }
            "dateFilter" => {
                let c = one();
                let (fd, td) = (ctx.from.format("%Y-%m-%d"), ctx.to.format("%Y-%m-%d"));
                format!("{c} >= toDate('{fd}') AND {c} <= toDate('{td}')")
            }
            "timeInterval" => format!("toStartOfInterval(toDateTime({}), INTERVAL {interval} second)", one()),
            "fromTime" if args.is_empty() => format!("toDateTime({f})"),
            "toTime" if args.is_empty() => format!("toDateTime({t})"),
            "interval_s" if args.is_empty() => interval.to_string(),
            other => panic!("a macro this test does not expand: $__{other}({args:?})"),
        };
        out.push_str(&text);
        rest = &rest[end..];
    }
    out.push_str(rest);
    assert!(!out.contains('$'), "unexpanded macro or variable left: {out}");
    out
}

#[test]
fn macro_expansion_matches_the_plugin() {
    let ctx = Ctx {
        from: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        to: DateTime::from_timestamp(1_700_086_400, 0).unwrap(),
        interval_s: 0,
        vars: BTreeMap::from([
            ("site".to_owned(), Var::One("a.example".into())),
            ("customer".to_owned(), Var::Many(vec!["c1".into(), "c2".into()], false)),
            ("customers".to_owned(), Var::Many(vec!["x".into()], true)),
        ]),
    };
    assert_eq!(
        expand("WHERE $__timeFilter(minute) AND site_host = '${site}' AND s = '$site'", &ctx),
        "WHERE minute >= toDateTime(1700000000) AND minute <= toDateTime(1700086400) AND site_host = 'a.example' \
         AND s = 'a.example'"
    );
    assert_eq!(
        expand("SELECT $__timeInterval(ts) t, $__interval_s, $__fromTime, $__toTime()", &ctx),
        "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 1 second) t, 1, toDateTime(1700000000), toDateTime(1700086400)"
    );
    assert_eq!(
        expand("$__conditionalAll(customer_id IN (${customer}), $customer) AND $__conditionalAll(x IN ($customers), $customers)", &ctx),
        "customer_id IN ('c1','c2') AND 1=1"
    );
    assert_eq!(expand("$__dateFilter(day)", &ctx), "day >= toDate('2023-11-14') AND day <= toDate('2023-11-15')");
}

// ---------------------------------------------------------------------------------------------
// Running the panels.
// ---------------------------------------------------------------------------------------------

/// Rows of `sql` (already expanded) as tab-joined text of `cols`.
fn rows(ch: &clickhouse::Client, sql: &str, cols: &[&str]) -> Vec<Vec<String>> {
    let list: Vec<String> = cols.iter().map(|c| format!("toString(`{c}`)")).collect();
    let q = format!("SELECT arrayStringConcat([{}], '\\t') FROM ({}\n)", list.join(", "), sql.replace('?', "??"));
    support::block_on(ch.query(&q).fetch_all::<String>())
        .unwrap_or_else(|e| panic!("{e}\n{q}"))
        .into_iter()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

fn row_count(ch: &clickhouse::Client, sql: &str) -> u64 {
    let q = format!("SELECT count() FROM ({}\n)", sql.replace('?', "??"));
    support::block_on(ch.query(&q).fetch_one::<u64>()).unwrap_or_else(|e| panic!("{e}\n{q}"))
}

fn granted_to_ops(table: &str, column: Option<&str>) -> bool {
    access::grants_of(Role::Ops).into_iter().filter(|(t, _)| *t == table).any(|(_, g)| match g.privilege {
        Privilege::Select => true,
        Privilege::SelectColumns(cols) => column.is_none_or(|c| cols.contains(&c)),
        _ => false,
    })
}

fn u(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| panic!("not a count: {s:?}"))
}

/// The SQL of the panel titled `title` in `dashboard`.
fn panel_sql<'a>(all: &'a [(String, Value)], dashboard: &str, title: &str) -> &'a str {
    let d = &all.iter().find(|(n, _)| n == dashboard).unwrap().1;
    panels(d).into_iter().find(|p| p["title"] == title).unwrap_or_else(|| panic!("{dashboard}: no panel {title:?}"))
        ["targets"][0]["rawSql"]
        .as_str()
        .unwrap()
}

#[test]
fn every_panel_query_returns_rows_on_the_sample_and_matches_the_truth() {
    let today = Utc::now().with_timezone(&chrono_tz::Europe::Helsinki).date_naive();
    let dir = support::temp_dir("grafana");
    let opts = GenerateOptions {
        out: dir.join("sample"),
        seed: 16,
        start: today - Days::new(6),
        days: 5,
        customers: 8,
        rate: 8,
    };
    // The collector's `--once` run ends with a heartbeat on the default topic (this test
    // binary's stack is its own): the freshness panel reads what the processor stores of it.
    support::stack().create_topic(sitelog_schema::wire::HEARTBEAT_TOPIC, 1).unwrap();
    let run = support::run_sample(&opts, "grafana", &[], "");
    let cfg = run.config.to_str().unwrap();
    let ch = &run.client;
    // The whole sample, in whole hours (the truth is per hour): Helsinki days start at 21:00 or
    // 22:00 UTC the day before.
    let from = opts.start.and_hms_opt(0, 0, 0).unwrap().and_utc() - chrono::Duration::hours(3);
    let to = (opts.start + Days::new(u64::from(opts.days) + 1)).and_hms_opt(0, 0, 0).unwrap().and_utc();
    support::sitelog(&["alerts", "run", "-c", cfg, "--from", &from.to_rfc3339(), "--to", &to.to_rfc3339()], &[]);

    let truth_dir = opts.out.join("truth");
    let health = truth::read_health(&truth_dir).unwrap();
    assert!(
        health.iter().all(|h| h.hour >= from && h.hour + chrono::Duration::hours(1) <= to),
        "range covers the sample"
    );
    let mut per_site: BTreeMap<&str, u64> = BTreeMap::new();
    for h in &health {
        *per_site.entry(&h.site_host).or_default() += h.requests;
    }
    let (site, site_requests) = per_site.iter().max_by_key(|(_, n)| **n).map(|(s, n)| (s.to_string(), *n)).unwrap();
    let usage = truth::read_usage(&truth_dir).unwrap();
    let customers: BTreeSet<String> = usage.keys().map(|(c, _, _)| c.clone()).collect();
    let one_customer = customers.iter().next().unwrap().clone();

    // An interval a wide panel gets on this range (~1000 points, whole minutes), and the floor.
    let auto_interval = ((to - from).num_seconds() / 1000 + 59) / 60 * 60;
    let all = dashboards();
    let mut queries = 0;
    for (name, d) in &all {
        // Variable selections for this dashboard.
        let mut selections: Vec<BTreeMap<String, Var>> = vec![BTreeMap::new()];
        for v in query_variables(d) {
            let var = v["name"].as_str().unwrap();
            // The plugin's variable query: {queryType: "sql", rawSql} (a plain string in older
            // dashboards).
            assert_eq!(v["query"]["queryType"], "sql", "{name}: variable {var}");
            let sql = v["query"]["rawSql"].as_str().unwrap_or_else(|| panic!("{name}: variable {var}: rawSql"));
            let ctx = Ctx { from, to, interval_s: auto_interval, vars: BTreeMap::new() };
            // One column, of any name (the plugin takes the first as the value).
            let q = format!("SELECT toString(*) FROM ({}\n)", expand(sql, &ctx).replace('?', "??"));
            let values: Vec<String> =
                support::block_on(ch.query(&q).fetch_all::<String>()).unwrap_or_else(|e| panic!("{name}: {e}\n{q}"));
            assert!(!values.is_empty(), "{name}: variable {var} has no values");
            queries += 1;
            selections = match var {
                "site" => {
                    assert!(values.contains(&site), "{name}: {site} among the variable's values {values:?}");
                    selections
                        .into_iter()
                        .map(|mut s| {
                            s.insert(var.into(), Var::One(site.clone()));
                            s
                        })
                        .collect()
                }
                "customer" => {
                    let listed: BTreeSet<String> = values.iter().cloned().collect();
                    assert_eq!(listed, customers, "{name}: the customer variable lists the customers with usage");
                    assert_eq!(v["multi"], true, "{name}: {var} is multi-value");
                    selections
                        .into_iter()
                        .flat_map(|s| {
                            let mut all_sel = s.clone();
                            all_sel.insert(var.into(), Var::Many(values.clone(), true));
                            let mut one = s;
                            one.insert(var.into(), Var::Many(vec![one_customer.clone()], false));
                            [all_sel, one]
                        })
                        .collect()
                }
                other => panic!("{name}: a variable this test does not know: {other}"),
            };
        }
        for p in panels(d) {
            let title = p["title"].as_str().unwrap_or_default();
            for t in p["targets"].as_array().into_iter().flatten() {
                let raw = t["rawSql"].as_str().unwrap();
                for vars in &selections {
                    for interval_s in [1, auto_interval] {
                        let ctx = Ctx { from, to, interval_s, vars: vars.clone() };
                        let sql = expand(raw, &ctx);
                        let n = row_count(ch, &sql);
                        assert!(
                            n >= 1,
                            "{name}: panel {title:?} returns no rows ({vars:?}, interval {interval_s})\n{sql}"
                        );
                        queries += 1;
                        if p["type"] == "timeseries" {
                            // The plugin draws a time series from a DateTime column.
                            let q = format!("SELECT toTypeName(time) FROM ({}\n) LIMIT 1", sql.replace('?', "??"));
                            let ty = support::block_on(ch.query(&q).fetch_one::<String>())
                                .unwrap_or_else(|e| panic!("{name}: panel {title:?}: a `time` column: {e}"));
                            assert!(ty.starts_with("DateTime"), "{name}: panel {title:?}: time is {ty}");
                        }
                    }
                }
                // What it reads is granted to the data source user's role.
                let ctx = Ctx { from, to, interval_s: auto_interval, vars: selections[0].clone() };
                let read: BTreeSet<(String, Option<String>)> =
                    support::query_tree::reads(ch, &run.db, &expand(raw, &ctx)).into_iter().collect();
                assert!(read.iter().any(|(_, c)| c.is_some()), "{name}: panel {title:?} reads no sitelog column");
                for (table, col) in read {
                    assert!(
                        granted_to_ops(&table, col.as_deref()),
                        "{name}: panel {title:?} reads {table}.{} which sitelog_ops may not",
                        col.as_deref().unwrap_or("*")
                    );
                }
            }
        }
    }
    eprintln!("{queries} panel and variable queries returned rows");

    // Figures against the truth.
    let site_vars = BTreeMap::from([("site".to_owned(), Var::One(site.clone()))]);
    let ctx = Ctx { from, to, interval_s: auto_interval, vars: site_vars };
    let got = rows(ch, &expand(panel_sql(&all, "site.json", "Requests in range"), &ctx), &["requests"]);
    assert_eq!(u(&got[0][0]), site_requests, "site health: requests of {site} = truth/health.csv");
    let per_server: BTreeMap<String, u64> =
        rows(ch, &expand(panel_sql(&all, "site.json", "Servers"), &ctx), &["server", "requests"])
            .into_iter()
            .map(|r| (r[0].clone(), u(&r[1])))
            .collect();
    let mut want_servers: BTreeMap<String, u64> = BTreeMap::new();
    for h in health.iter().filter(|h| h.site_host == site) {
        *want_servers.entry(h.server.clone()).or_default() += h.requests;
    }
    assert_eq!(per_server, want_servers, "site health: {site}'s requests per server");

    let ctx = Ctx { from, to, interval_s: auto_interval, vars: BTreeMap::new() };
    let total = rows(ch, &expand(panel_sql(&all, "overview.json", "Requests in range"), &ctx), &["requests"]);
    assert_eq!(u(&total[0][0]), health.iter().map(|h| h.requests).sum::<u64>(), "overview: requests in range");

    let incidents: BTreeSet<(String, String)> =
        rows(ch, &expand(panel_sql(&all, "incidents.json", "Incidents"), &ctx), &["kind", "subject"])
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect();
    let want: BTreeSet<(String, String)> = truth::read_incidents(&truth_dir)
        .unwrap()
        .into_iter()
        .map(|w| {
            let subject = if w.kind == "site" { w.site_host.clone() } else { w.server.clone() };
            (w.kind, subject)
        })
        .collect();
    assert!(!want.is_empty());
    assert_eq!(incidents, want, "incidents: one per injected disruption");

    let scenarios: BTreeSet<String> =
        rows(ch, &expand(panel_sql(&all, "security.json", "Events by scenario"), &ctx), &["scenario"])
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
    let attacks: BTreeSet<String> = truth::read_security(&truth_dir).unwrap().into_iter().map(|a| a.scenario).collect();
    assert!(!attacks.is_empty());
    assert!(attacks.is_subset(&scenarios), "security: every injected scenario {attacks:?} in {scenarios:?}");

    // Usage per customer and month, All and one customer.
    let mut want_usage: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
    for ((c, _, day), x) in &usage {
        let e = want_usage.entry((c.clone(), format!("{}-01", &day[..7]))).or_default();
        *e = (e.0 + x.requests, e.1 + x.bytes_sent, e.2 + x.bot_requests);
    }
    for sel in [Var::Many(customers.iter().cloned().collect(), true), Var::Many(vec![one_customer.clone()], false)] {
        let all_sel = matches!(sel, Var::Many(_, true));
        let ctx = Ctx { from, to, interval_s: auto_interval, vars: BTreeMap::from([("customer".to_owned(), sel)]) };
        let got: BTreeMap<(String, String), (u64, u64, u64)> = rows(
            ch,
            &expand(panel_sql(&all, "usage.json", "Usage per customer and month"), &ctx),
            &["customer_id", "month", "requests", "bytes_sent", "bot_requests"],
        )
        .into_iter()
        .map(|r| ((r[0].clone(), r[1].clone()), (u(&r[2]), u(&r[3]), u(&r[4]))))
        .collect();
        let want: BTreeMap<_, _> = want_usage
            .iter()
            .filter(|((c, _), _)| all_sel || *c == one_customer)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        assert_eq!(got, want, "usage per customer and month (all customers: {all_sel})");
    }
}
