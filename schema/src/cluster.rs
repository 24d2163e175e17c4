//! The migrations' DDL for a ClickHouse cluster (`[clickhouse] cluster = "NAME"`).
//!
//! On one server the migrations create plain MergeTree tables. On a cluster, every statement
//! runs `ON CLUSTER` and:
//!
//! - **Sharded tables** ([`SHARDED`]: the raw records, their rollups and the security data,
//!   everything that grows with traffic) become `<table>_local` with a Replicated engine
//!   (path `/clickhouse/tables/{uuid}/{shard}`, one copy per shard's replicas), and `<table>`
//!   becomes a `Distributed` table over them, sharded by `cityHash64(site_host)`: a site's
//!   rows, and so its visitor states and security buckets, live on one shard. The code reads
//!   and inserts `<table>` as on one server; the processor inserts with
//!   `distributed_foreground_insert = 1`, so an acknowledged insert is stored on its shard and
//!   the batch's `insert_deduplication_token` deduplicates a retried batch there. The rollup
//!   views run on each shard, from `access_log_local` into the `_local` rollups (their
//!   deduplication unchanged: the token is passed on to the views' inserts).
//! - **Every other table** (bookkeeping, register, billing runs, audit: small) is Replicated
//!   on every host of the cluster (path `/clickhouse/tables/{uuid}/all`, replica
//!   `{shard}-{replica}`), so each host reads it locally and the exactly-once bookkeeping is
//!   one state for the whole cluster.
//! - `non_replicated_deduplication_window = N` becomes `replicated_deduplication_window = N`
//!   with `replicated_deduplication_window_seconds` = 7 days: a batch the sink retries (after
//!   an outage, a restart or a rebalance) is recognised among the last N inserts of the table
//!   within a week.
//!
//! Pure text rewriting of the migration files' own statements (their shapes are known and
//! tested); the result is checked with ClickHouse's parser in `tests/schema_cluster.rs`.

/// Tables that are sharded (local Replicated table + Distributed table of the same name).
pub const SHARDED: &[&str] =
    &["access_log", "usage_daily", "site_health_minute", "health_minute", "security_events", "security_signals"];

/// The sharding key of the Distributed tables.
pub const SHARDING_KEY: &str = "cityHash64(site_host)";

/// Deduplication window in seconds for replicated tables (ClickHouse's default, made explicit).
pub const DEDUP_WINDOW_SECS: u32 = 7 * 24 * 3600;

/// The local (storage) table of `table`: `<table>_local` when sharded.
pub fn local_name(table: &str) -> String {
    if SHARDED.contains(&table) {
        format!("{table}_local")
    } else {
        table.to_owned()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    #[error("a migration statement this renderer does not know: {0}")]
    Unknown(String),
}

/// Rewrites one migration statement (as [`crate::migrations::Migration::statements`] renders
/// it for `db`) for `cluster`; one statement may become two (a table and its Distributed
/// table).
pub fn render(stmt: &str, db: &str, cluster: &str) -> Result<Vec<String>, ClusterError> {
    let head: Vec<String> = stmt.split_whitespace().take(3).map(|w| w.to_ascii_uppercase()).collect();
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    match head.as_slice() {
        ["CREATE", "DATABASE", ..] => Ok(vec![on_cluster_after_name(stmt, "CREATE DATABASE IF NOT EXISTS", cluster)?]),
        ["CREATE", "TABLE", ..] => create_table(stmt, db, cluster),
        ["CREATE", "MATERIALIZED", "VIEW"] => {
            let s = localize(stmt, db);
            Ok(vec![on_cluster_after_name(&s, "CREATE MATERIALIZED VIEW IF NOT EXISTS", cluster)?])
        }
        ["ALTER", "TABLE", ..] => alter_table(stmt, db, cluster),
        _ => Err(ClusterError::Unknown(stmt.to_owned())),
    }
}

/// `{db}.t` → `{db}.t_local` for every sharded table named in `stmt`.
fn localize(stmt: &str, db: &str) -> String {
    let mut out = stmt.to_owned();
    for t in SHARDED {
        let from = format!("{db}.{t}");
        let mut res = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(i) = rest.find(&from) {
            let end = i + from.len();
            let next = rest[end..].chars().next();
            res.push_str(&rest[..end]);
            if !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                res.push_str("_local");
            }
            rest = &rest[end..];
        }
        res.push_str(rest);
        out = res;
    }
    out
}

/// Inserts ` ON CLUSTER c` after the object name that follows `prefix`.
fn on_cluster_after_name(stmt: &str, prefix: &str, cluster: &str) -> Result<String, ClusterError> {
    let s = stmt.trim_start();
    if !s.to_ascii_uppercase().starts_with(prefix) {
        return Err(ClusterError::Unknown(stmt.to_owned()));
    }
    let rest = &s[prefix.len()..];
    let name_start = rest.len() - rest.trim_start().len();
    let name_len = rest[name_start..].find(|c: char| c.is_whitespace() || c == '(').unwrap_or(rest.len() - name_start);
    let split = prefix.len() + name_start + name_len;
    Ok(format!("{} ON CLUSTER {cluster}{}", &s[..split], &s[split..]))
}

/// The table name (without database) of `CREATE TABLE IF NOT EXISTS db.t …`.
fn table_of(stmt: &str, db: &str, prefix: &str) -> Option<String> {
    let rest = stmt.trim_start().get(prefix.len()..)?.trim_start();
    let name: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != '(').collect();
    name.strip_prefix(&format!("{db}.")).map(str::to_owned)
}

fn create_table(stmt: &str, db: &str, cluster: &str) -> Result<Vec<String>, ClusterError> {
    const PREFIX: &str = "CREATE TABLE IF NOT EXISTS";
    let table = table_of(stmt, db, PREFIX).ok_or_else(|| ClusterError::Unknown(stmt.to_owned()))?;
    let sharded = SHARDED.contains(&table.as_str());
    let s = localize(stmt, db);
    let s = on_cluster_after_name(&s, PREFIX, cluster)?;
    // ENGINE = XMergeTree[(args)] → ENGINE = ReplicatedXMergeTree('path', 'replica'[, args])
    let at = s.find("ENGINE = ").ok_or_else(|| ClusterError::Unknown(stmt.to_owned()))? + "ENGINE = ".len();
    let engine_len = s[at..].find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(s.len() - at);
    let engine = &s[at..at + engine_len];
    if !engine.ends_with("MergeTree") {
        return Err(ClusterError::Unknown(stmt.to_owned()));
    }
    let (path, replica) = if sharded {
        ("/clickhouse/tables/{uuid}/{shard}", "{replica}")
    } else {
        ("/clickhouse/tables/{uuid}/all", "{shard}-{replica}")
    };
    let after = &s[at + engine_len..];
    let (args, tail) = match after.strip_prefix('(') {
        Some(r) => {
            let close = r.find(')').ok_or_else(|| ClusterError::Unknown(stmt.to_owned()))?;
            (if r[..close].trim().is_empty() { String::new() } else { format!(", {}", &r[..close]) }, &r[close + 1..])
        }
        None => (String::new(), after),
    };
    let tail = tail.replace(
        "non_replicated_deduplication_window = ",
        &format!("replicated_deduplication_window_seconds = {DEDUP_WINDOW_SECS}, replicated_deduplication_window = "),
    );
    let local = format!("{}Replicated{engine}('{path}', '{replica}'{args}){tail}", &s[..at]);
    let mut out = vec![local];
    if sharded {
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {cluster} AS {db}.{table}_local \
             ENGINE = Distributed({cluster}, {db}, {table}_local, {SHARDING_KEY})"
        ));
    }
    Ok(out)
}

/// Splits on commas outside parentheses and quotes.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut depth, mut quote, mut start) = (0i32, false, 0);
    let mut parts = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quote = !quote,
            '(' if !quote => depth += 1,
            ')' if !quote => depth -= 1,
            ',' if !quote && depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn alter_table(stmt: &str, db: &str, cluster: &str) -> Result<Vec<String>, ClusterError> {
    const PREFIX: &str = "ALTER TABLE";
    let table = table_of(stmt, db, PREFIX).ok_or_else(|| ClusterError::Unknown(stmt.to_owned()))?;
    let s = on_cluster_after_name(&localize(stmt, db), PREFIX, cluster)?;
    let mut out = vec![s];
    if SHARDED.contains(&table.as_str()) {
        // The Distributed table gets the new columns too (name and type only: defaults, TTLs
        // and codecs are the storage's business).
        let body = stmt.trim_start()[PREFIX.len()..].trim_start();
        let body = &body[body.find(char::is_whitespace).unwrap_or(body.len())..];
        let mut adds = Vec::new();
        for clause in split_top_level(body) {
            let words: Vec<&str> = clause.split_whitespace().collect();
            match words.as_slice() {
                ["ADD", "COLUMN", "IF", "NOT", "EXISTS", name, ty, ..] | ["ADD", "COLUMN", name, ty, ..] => {
                    adds.push(format!("ADD COLUMN IF NOT EXISTS {name} {ty}"));
                }
                _ => {}
            }
        }
        if !adds.is_empty() {
            out.push(format!("ALTER TABLE {db}.{table} ON CLUSTER {cluster} {}", adds.join(", ")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::{Retention, MIGRATIONS};

    fn all(db: &str) -> Vec<String> {
        let mut out = Vec::new();
        for m in MIGRATIONS {
            for s in m.statements(db, &Retention::default()) {
                if s.starts_with("CREATE ROLE") || s.starts_with("GRANT") {
                    continue;
                }
                out.extend(render(&s, db, "logs").unwrap());
            }
        }
        out
    }

    #[test]
    fn every_migration_statement_renders_on_the_cluster() {
        let st = all("sitelog");
        for s in &st {
            assert!(s.contains(" ON CLUSTER logs"), "{s}");
            assert!(!s.contains("non_replicated_deduplication_window"), "{s}");
            if s.contains("ENGINE = ") && !s.contains("Distributed") {
                assert!(s.contains("ENGINE = Replicated"), "{s}");
            }
        }
        let text = st.join("\n");
        for t in ["access_log", "usage_daily", "site_health_minute", "security_events", "security_signals"] {
            assert!(text.contains(&format!("CREATE TABLE IF NOT EXISTS sitelog.{t}_local ON CLUSTER logs")), "{t}");
            assert!(text.contains(&format!("ENGINE = Distributed(logs, sitelog, {t}_local, cityHash64(site_host))")));
        }
        assert!(text.contains("TO sitelog.usage_daily_local"));
        assert!(text.contains("FROM sitelog.access_log_local"));
        assert!(!text.contains("FROM sitelog.access_log\n"));
        assert!(text.contains(
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/all', '{shard}-{replica}', written_at)"
        ));
        assert!(text.contains("replicated_deduplication_window = 10000"));
        assert!(text.contains(
            "ALTER TABLE sitelog.access_log ON CLUSTER logs ADD COLUMN IF NOT EXISTS visitor_ip_key UInt64, ADD COLUMN IF NOT EXISTS visitor_ip_ua_key UInt64"
        ));
    }

    #[test]
    fn local_names_only_for_sharded_tables() {
        assert_eq!(local_name("access_log"), "access_log_local");
        assert_eq!(local_name("sink_intents"), "sink_intents");
        assert_eq!(localize("FROM db.access_log_x, db.access_log", "db"), "FROM db.access_log_x, db.access_log_local");
    }
}
