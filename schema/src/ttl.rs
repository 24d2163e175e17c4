//! The TTLs retention sets, and reading the TTLs in force out of ClickHouse's own DDL.
//!
//! [`targets`] lists every TTL that follows `[retention]`, with the expression the migration
//! files write for it. [`in_force`] reads a table's TTL clauses from the `CREATE TABLE` text
//! ClickHouse keeps (`system.tables.create_table_query`), which is the only place it reports
//! them. Comparing an expression with another is left to ClickHouse's formatter (the processor
//! formats both sides with `formatQuerySingleLine`), so no textual guessing decides a change.

use std::collections::BTreeMap;

use crate::migrations::Retention;

/// One TTL that follows the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtlTarget {
    pub table: &'static str,
    /// `None`: the table TTL (rows are deleted); `Some`: a column TTL (the value is reset to
    /// its default).
    pub column: Option<&'static str>,
    /// The `[retention]` key it follows.
    pub key: &'static str,
    /// The TTL expression, as the migration files write it.
    pub expr: String,
}

impl TtlTarget {
    /// `table` or `table.column`.
    pub fn place(&self) -> String {
        match self.column {
            Some(c) => format!("{}.{c}", self.table),
            None => self.table.to_owned(),
        }
    }
}

/// Every TTL `[retention]` decides.
pub fn targets(r: &Retention) -> Vec<TtlTarget> {
    let days = |col: &str, n: u32| format!("toDateTime({col}) + INTERVAL {n} DAY");
    let t = |table, column, key, expr| TtlTarget { table, column, key, expr };
    vec![
        t("access_log", None, "raw_days", days("ts", r.raw_days)),
        t("access_log", Some("client_ip"), "client_ip_days", days("ts", r.client_ip_days)),
        t("access_log", Some("visitor_ip_key"), "client_ip_days", days("ts", r.client_ip_days)),
        t("access_log", Some("visitor_ip_ua_key"), "client_ip_days", days("ts", r.client_ip_days)),
        t("site_health_minute", None, "site_health_days", format!("minute + INTERVAL {} DAY", r.site_health_days)),
        t("health_minute", None, "site_health_days", format!("minute + INTERVAL {} DAY", r.site_health_days)),
        t("incidents", None, "site_health_days", format!("opened_at + INTERVAL {} DAY", r.site_health_days)),
        t("incident_notifications", None, "site_health_days", days("sent_at", r.site_health_days)),
        t("usage_daily", None, "usage_years", format!("day + INTERVAL {} YEAR", r.usage_years)),
        t("billing_runs", None, "usage_years", format!("toDateTime(closed_at) + INTERVAL {} YEAR", r.usage_years)),
        t("billing_run_lines", None, "usage_years", format!("toDateTime(closed_at) + INTERVAL {} YEAR", r.usage_years)),
        t("security_events", None, "security_days", days("first_seen", r.security_days)),
        t("security_signals", None, "security_days", days("ts", r.security_days)),
        t("access_audit", None, "security_days", days("ts", r.security_days)),
        t("collector_heartbeats", None, "heartbeat_days", days("sent_at", r.heartbeat_days)),
        t("source_progress", None, "progress_days", days("updated_at", r.progress_days)),
    ]
}

/// `N` of a TTL `toDateTime(<column>) + toIntervalDay(N)` as ClickHouse formats it (how it
/// stores the `toDateTime(ts) + INTERVAL N DAY` of the migrations); `None` for any other form.
pub fn days_after(expr: &str, column: &str) -> Option<u32> {
    expr.trim().strip_prefix(&format!("toDateTime({column}) + toIntervalDay("))?.strip_suffix(')')?.parse().ok()
}

/// The TTL clauses of one table, as written in its `CREATE TABLE` statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TtlInForce {
    /// The table TTL (everything after `TTL` up to `SETTINGS` or the end).
    pub table: Option<String>,
    /// Column name → its TTL expression, for columns that have one.
    pub columns: BTreeMap<String, String>,
}

/// Reads the TTL clauses from a single-line `CREATE TABLE` statement as ClickHouse stores it:
/// `CREATE TABLE db.t (`c` T [DEFAULT …] [CODEC(…)] [TTL expr], …) ENGINE = … [TTL expr]
/// [SETTINGS …]`. Keywords are only recognised outside quotes and parentheses.
pub fn in_force(create_table_query: &str) -> TtlInForce {
    let mut out = TtlInForce::default();
    let q = create_table_query;
    let Some(open) = top_level(q).find(|&(_, c, _)| c == '(').map(|(i, _, _)| i) else {
        return out;
    };
    // The column list's own `)`: the first one after it back at depth 0.
    let Some(close) = top_level(q).find(|&(i, c, depth)| i > open && c == ')' && depth == 0).map(|(i, _, _)| i) else {
        return out;
    };
    for def in split_top_level(&q[open + 1..close], ',') {
        let def = def.trim();
        let Some(name) = def.strip_prefix('`').and_then(|r| r.split_once('`')).map(|(n, _)| n) else {
            continue; // INDEX, PROJECTION, CONSTRAINT
        };
        if let Some(expr) = clause(def, "TTL", &[]) {
            out.columns.insert(name.to_owned(), expr);
        }
    }
    out.table = clause(&q[close + 1..], "TTL", &["SETTINGS", "COMMENT"]);
    out
}

/// `(byte index, char, depth)` of every character outside quotes; depth counts the
/// parentheses around it (a parenthesis is at the depth outside it).
fn top_level(s: &str) -> impl Iterator<Item = (usize, char, usize)> + '_ {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    s.char_indices().filter_map(move |(i, c)| {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            return None;
        }
        match c {
            '\'' | '`' | '"' => {
                quote = Some(c);
                None
            }
            '(' => {
                depth += 1;
                Some((i, c, depth - 1))
            }
            ')' => {
                depth = depth.saturating_sub(1);
                Some((i, c, depth))
            }
            _ => Some((i, c, depth)),
        }
    })
}

fn split_top_level(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, c, depth) in top_level(s) {
        if c == sep && depth == 0 {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Byte index of the keyword ` KW ` at depth 0 (outside quotes), if any.
fn keyword(s: &str, kw: &str) -> Option<usize> {
    top_level(s)
        .filter(|&(_, c, depth)| c == ' ' && depth == 0)
        .map(|(i, _, _)| i)
        .find(|&i| s[i + 1..].starts_with(kw) && s[i + 1 + kw.len()..].starts_with(' '))
}

/// The text after top-level ` KW ` up to the first of `until` (or the end), trimmed.
fn clause(s: &str, kw: &str, until: &[&str]) -> Option<String> {
    let start = keyword(s, kw)? + kw.len() + 2;
    let rest = &s[start..];
    let end = until.iter().filter_map(|u| keyword(rest, u)).min().unwrap_or(rest.len());
    Some(rest[..end].trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_table_and_column_ttls_as_clickhouse_writes_them() {
        let q = "CREATE TABLE t1.a (`ts` DateTime64(6, 'UTC'), `client_ip` IPv6 TTL toDateTime(ts) + toIntervalDay(7), \
                 `k` UInt64 DEFAULT 0 CODEC(ZSTD(1)) TTL toDateTime(ts) + toIntervalDay(3), `s` String DEFAULT ' TTL x, (', \
                 INDEX i s TYPE bloom_filter GRANULARITY 1) ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY ts \
                 TTL toDateTime(ts) + toIntervalDay(30) SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 8192";
        let t = in_force(q);
        assert_eq!(t.table.as_deref(), Some("toDateTime(ts) + toIntervalDay(30)"));
        assert_eq!(
            t.columns,
            BTreeMap::from([
                ("client_ip".to_owned(), "toDateTime(ts) + toIntervalDay(7)".to_owned()),
                ("k".to_owned(), "toDateTime(ts) + toIntervalDay(3)".to_owned()),
            ])
        );
        let none =
            in_force("CREATE TABLE t1.b (`a` UInt8) ENGINE = MergeTree ORDER BY a SETTINGS index_granularity = 8192");
        assert_eq!(none, TtlInForce::default());
        let last = in_force("CREATE TABLE t1.c (`d` Date) ENGINE = MergeTree ORDER BY d TTL d + toIntervalYear(10)");
        assert_eq!(last.table.as_deref(), Some("d + toIntervalYear(10)"));
    }

    #[test]
    fn days_are_read_from_the_canonical_form_only() {
        assert_eq!(days_after("toDateTime(ts) + toIntervalDay(20)", "ts"), Some(20));
        assert_eq!(days_after("toDateTime(ts) + toIntervalHour(20)", "ts"), None);
        assert_eq!(days_after("toDateTime(ts) + toIntervalDay(20) DELETE WHERE 1", "ts"), None);
        assert_eq!(days_after("toDateTime(x) + toIntervalDay(20)", "ts"), None);
    }

    #[test]
    fn targets_match_the_migration_files() {
        let r = Retention::default();
        let sql: String = crate::migrations::MIGRATIONS.iter().flat_map(|m| m.statements("db", &r)).collect();
        for t in targets(&r) {
            assert!(sql.contains(&format!("TTL {}", t.expr)), "{} ({}) is written by a migration", t.place(), t.expr);
        }
    }
}
