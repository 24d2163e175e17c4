//! What a statement reads, from ClickHouse's own analysis (`EXPLAIN QUERY TREE`): the tests
//! of grants (`schema_grants`, `billing_access`) compare it with what a role may read.

use std::collections::BTreeMap;

/// (table, column) pairs a read touches in `db`; each table is also listed with `None` (a read
/// may touch a table without a column, e.g. `count()`). Tables of other databases are left out.
pub fn reads(ch: &clickhouse::Client, db: &str, sql: &str) -> Vec<(String, Option<String>)> {
    let text: String =
        super::block_on(ch.query(&format!("EXPLAIN QUERY TREE {}", sql.replace('?', "??"))).fetch_all::<String>())
            .unwrap_or_else(|e| panic!("EXPLAIN QUERY TREE {sql}: {e}"))
            .join("\n");
    let field = |line: &str, name: &str| -> Option<String> {
        line.split(", ").find_map(|kv| kv.trim().strip_prefix(&format!("{name}: ")).map(str::to_owned))
    };
    let mut tables = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("TABLE id: ") {
            let id = rest.split(',').next().unwrap().to_owned();
            let name = field(line, "table_name").unwrap();
            if let Some(t) = name.strip_prefix(&format!("{db}.")) {
                tables.insert(id, t.to_owned());
            }
        }
    }
    let mut out: Vec<(String, Option<String>)> = tables.values().map(|t| (t.clone(), None)).collect();
    for line in text.lines().map(str::trim).filter(|l| l.starts_with("COLUMN id: ")) {
        let (Some(col), Some(src)) = (field(line, "column_name"), field(line, "source_id")) else {
            continue;
        };
        if let Some(t) = tables.get(&src) {
            out.push((t.clone(), Some(col)));
        }
    }
    out
}
