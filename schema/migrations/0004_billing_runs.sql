-- Closed billing runs: the frozen basis of a month's invoices. Purpose: billing; kept for the
-- bookkeeping period like the usage it summarises. A run is written lines first, header last:
-- the header row is the commit marker (lines whose content_hash has no header are ignored), so
-- a crash mid-close leaves nothing visible. A closed month is never rewritten; records that
-- arrive later are billed as adjustment lines of a later run.
CREATE TABLE IF NOT EXISTS {{db}}.billing_runs
(
    month            String,
    closed_at        DateTime64(3, 'UTC'),
    closed_by        String,
    register_version UInt64,
    from_utc         DateTime('UTC'),
    to_utc           DateTime('UTC'),
    content_hash     String,
    site_lines       UInt32,
    adjustment_lines UInt32,
    requests         UInt64,
    bytes_sent       UInt64
)
ENGINE = MergeTree
ORDER BY (month, closed_at)
TTL toDateTime(closed_at) + INTERVAL {{usage_years}} YEAR
SETTINGS non_replicated_deduplication_window = 1000;

-- The figures of a closed run. kind: 'site' and 'customer' (the month's own figures) or
-- 'adjustment' (signed differences found for an earlier closed month, applies_to).
CREATE TABLE IF NOT EXISTS {{db}}.billing_run_lines
(
    month        String,
    content_hash String,
    kind         LowCardinality(String),
    applies_to   String,
    customer_id  String,
    site_id      String,
    plan         String,
    metering     LowCardinality(String),
    included     UInt64,
    billed_usage Int64,
    overage      Int64,
    requests     Int64,
    bytes_sent   Int64,
    bot_requests Int64,
    visits_ip    Int64,
    visits_ip_ua Int64,
    closed_at    DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (month, content_hash, kind, applies_to, customer_id, site_id)
TTL toDateTime(closed_at) + INTERVAL {{usage_years}} YEAR
SETTINGS non_replicated_deduplication_window = 1000;
