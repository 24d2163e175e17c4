//! Every statement the billing run sends, in one place, so the access test can ask ClickHouse
//! (`EXPLAIN QUERY TREE`) which columns each one reads and check them against the grants of
//! the `sitelog_billing` role. Writes go through the crate's typed inserts into
//! `billing_runs` / `billing_run_lines` only.
//!
//! `?` are bind placeholders (the `clickhouse` crate substitutes them client-side). A
//! customer filter is `(? = '' OR customer_id = ?)`, so one statement serves both cases.

/// One audited statement with literal example binds for `EXPLAIN`.
#[derive(Debug, Clone, Copy)]
pub struct Statement {
    pub name: &'static str,
    pub sql: &'static str,
    /// SQL literals, one per `?`, for auditing the statement without running it.
    pub example_binds: &'static [&'static str],
}

impl Statement {
    /// The statement with its example binds substituted.
    pub fn example(&self) -> String {
        let mut out = String::with_capacity(self.sql.len());
        let mut binds = self.example_binds.iter();
        for (i, part) in self.sql.split('?').enumerate() {
            if i > 0 {
                out.push_str(binds.next().copied().unwrap_or("NULL"));
            }
            out.push_str(part);
        }
        out
    }
}

pub const REGISTER_VERSION: Statement =
    Statement { name: "register_version", sql: "SELECT max(version) FROM register_imports", example_binds: &[] };

pub const PLANS: Statement = Statement {
    name: "plans",
    sql: "SELECT plan, metering, included FROM plans WHERE version = ? ORDER BY plan",
    example_binds: &["1"],
};

pub const SITES: Statement = Statement {
    name: "sites",
    sql: "SELECT site_id, customer_id, primary_domain, plan, toString(valid_from) AS valid_from_s, \
          ifNull(toString(valid_to), '') AS valid_to_s FROM sites WHERE version = ? ORDER BY site_id",
    example_binds: &["1"],
};

pub const CUSTOMERS: Statement = Statement {
    name: "customers",
    sql: "SELECT customer_id, company_name, business_id FROM customers WHERE version = ? ORDER BY customer_id",
    example_binds: &["1"],
};

/// Usage per customer and site over the month's Helsinki days. Visitors are exact unique
/// counts per site and day (the states of all of a site's host names merged), summed over the
/// days: the metering rules count "per site per day".
pub const USAGE_MONTH: Statement = Statement {
    name: "usage_month",
    sql: "SELECT customer_id, site_id, sum(requests) AS requests, sum(bytes_sent) AS bytes_sent, \
          sum(bot_requests) AS bot_requests, sum(v_ip) AS visits_ip, sum(v_ip_ua) AS visits_ip_ua, \
          toUInt32(count()) AS days \
          FROM (SELECT customer_id, site_id, day, sum(requests) AS requests, sum(bytes_sent) AS bytes_sent, \
                sum(bot_requests) AS bot_requests, uniqExactMerge(visitors_ip) AS v_ip, \
                uniqExactMerge(visitors_ip_ua) AS v_ip_ua \
                FROM usage_daily WHERE day >= toDate(?) AND day < toDate(?) AND (? = '' OR customer_id = ?) \
                GROUP BY customer_id, site_id, day) \
          GROUP BY customer_id, site_id ORDER BY customer_id, site_id",
    example_binds: &["'2026-10-01'", "'2026-11-01'", "''", "''"],
};

/// The newest request time stored per site host, and the file that holds it.
/// The latest heartbeat of every collector source (`billing::complete`).
pub const HEARTBEATS: Statement = Statement {
    name: "heartbeats",
    sql: "SELECT server, source, toUnixTimestamp64Milli(max(sent_at)) AS sent_at_ms, \
          toUnixTimestamp64Micro(argMax(delivered_through, sent_at)) AS delivered_through_us, \
          argMax(idle, sent_at) AS idle FROM collector_heartbeats GROUP BY server, source ORDER BY server, source",
    example_binds: &[],
};

/// Records delivered per site host as the processor counted them (latest row per stream), of
/// the streams whose newest record is safely inside the usage TTL (bind: usage years): the
/// horizon is ClickHouse's own `today()`, the clock its TTL runs on, plus 30 days' margin for
/// a file whose records span a few days.
pub const PROGRESS_RECORDS: Statement = Statement {
    name: "progress_records",
    sql: "SELECT site_host, sum(records) AS records FROM \
          (SELECT fingerprint, site_host, argMax(records, max_offset) AS records, max(max_ts) AS last \
           FROM source_progress GROUP BY fingerprint, site_host) \
          WHERE toDate(last) >= today() - toIntervalYear(?) + toIntervalDay(30) \
          GROUP BY site_host ORDER BY site_host",
    example_binds: &["10"],
};

/// Requests per site host in the rollup since the same horizon as [`PROGRESS_RECORDS`], with
/// the owners they were attributed to.
pub const USAGE_BY_HOST: Statement = Statement {
    name: "usage_by_host",
    sql: "SELECT site_host, arraySort(groupUniqArray(concat(customer_id, '/', site_id))) AS owners, \
          sum(requests) AS requests FROM usage_daily \
          WHERE day >= today() - toIntervalYear(?) + toIntervalDay(30) GROUP BY site_host ORDER BY site_host",
    example_binds: &["10"],
};

/// Raw records per customer, site and Helsinki day in `[from, to)` (UTC, microseconds).
pub const RAW_DAILY: Statement = Statement {
    name: "raw_daily",
    sql: "SELECT customer_id, site_id, toString(toDate(ts, 'Europe/Helsinki')) AS d, count() AS requests, \
          sum(bytes_sent) AS bytes_sent, countIf(is_bot) AS bot_requests FROM access_log \
          WHERE ts >= fromUnixTimestamp64Micro(toInt64(?), 'UTC') AND ts < fromUnixTimestamp64Micro(toInt64(?), 'UTC') \
          AND (? = '' OR customer_id = ?) \
          GROUP BY customer_id, site_id, d ORDER BY customer_id, site_id, d",
    example_binds: &["1790000000000000", "1790086400000000", "''", "''"],
};

/// The rollup per customer, site and day for the same days as [`RAW_DAILY`].
pub const USAGE_DAILY: Statement = Statement {
    name: "usage_daily",
    sql: "SELECT customer_id, site_id, toString(day) AS d, sum(requests) AS requests, \
          sum(bytes_sent) AS bytes_sent, sum(bot_requests) AS bot_requests FROM usage_daily \
          WHERE day >= toDate(?) AND day < toDate(?) AND (? = '' OR customer_id = ?) \
          GROUP BY customer_id, site_id, d ORDER BY customer_id, site_id, d",
    example_binds: &["'2026-10-01'", "'2026-11-01'", "''", "''"],
};

/// Committed runs (the header is the commit marker), oldest first.
pub const RUN_HEADERS: Statement = Statement {
    name: "run_headers",
    sql: "SELECT month, content_hash, toUnixTimestamp64Milli(closed_at) AS closed_at_ms, closed_by, \
          register_version FROM billing_runs ORDER BY month, closed_at",
    example_binds: &[],
};

pub const RUN_LINES: Statement = Statement {
    name: "run_lines",
    sql: "SELECT month, content_hash, kind, applies_to, customer_id, site_id, plan, metering, included, \
          billed_usage, overage, requests, bytes_sent, bot_requests, visits_ip, visits_ip_ua, \
          toUnixTimestamp64Milli(closed_at) AS closed_at FROM billing_run_lines WHERE month = ? AND content_hash = ? \
          ORDER BY kind, applies_to, customer_id, site_id",
    example_binds: &["'2026-10'", "'x'"],
};

/// Adjustment lines recorded for `applies_to` by any run (filtered to committed runs after).
pub const ADJUSTMENT_LINES: Statement = Statement {
    name: "adjustment_lines",
    sql: "SELECT month, content_hash, kind, applies_to, customer_id, site_id, plan, metering, included, \
          billed_usage, overage, requests, bytes_sent, bot_requests, visits_ip, visits_ip_ua, \
          toUnixTimestamp64Milli(closed_at) AS closed_at FROM billing_run_lines WHERE kind = 'adjustment' AND applies_to = ? \
          ORDER BY month, customer_id, site_id",
    example_binds: &["'2026-10'"],
};

/// Every statement above.
pub const ALL: &[Statement] = &[
    REGISTER_VERSION,
    PLANS,
    SITES,
    CUSTOMERS,
    USAGE_MONTH,
    HEARTBEATS,
    PROGRESS_RECORDS,
    USAGE_BY_HOST,
    RAW_DAILY,
    USAGE_DAILY,
    RUN_HEADERS,
    RUN_LINES,
    ADJUSTMENT_LINES,
];

/// The raw retention in force: `access_log`'s DDL, whose table TTL `--verify` reads (bind:
/// the database). Metadata, no data: ClickHouse shows a table in `system.tables` to a user
/// holding any privilege on it (the role's column grant on `access_log`). Not in [`ALL`],
/// whose statements are audited column by column against the grants on the database's tables.
pub const RAW_TTL: Statement = Statement {
    name: "raw_ttl",
    sql: "SELECT create_table_query FROM system.tables WHERE database = ? AND name = 'access_log'",
    example_binds: &["'sitelog'"],
};

/// Statements on ClickHouse's system tables (metadata only).
pub const METADATA: &[Statement] = &[RAW_TTL];

/// Tables the billing run inserts into.
pub const WRITES: &[&str] = &["billing_runs", "billing_run_lines"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_has_an_example() {
        for s in ALL.iter().chain(METADATA) {
            assert_eq!(s.sql.matches('?').count(), s.example_binds.len(), "{}", s.name);
            assert!(!s.example().contains('?'), "{}", s.name);
        }
    }
}
