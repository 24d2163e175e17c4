-- Retention follows the configuration. The TTLs of the earlier migrations were filled in from
-- [retention] when each first applied; from this version `sitelog schema migrate` compares the
-- TTL in force on every retention-bearing table and column with the configured one and, where
-- they differ, alters it (ALTER TABLE … MODIFY TTL / MODIFY COLUMN … TTL, materialized before
-- the command returns). Each change is recorded here: when, which table and column ('' for the
-- table TTL), the TTL expression in force before and the one set, as ClickHouse formats them.
-- No personal data; kept as the account of how long the data was kept.
CREATE TABLE IF NOT EXISTS {{db}}.retention_changes
(
    changed_at  DateTime64(3, 'UTC') DEFAULT now64(3),
    table_name  LowCardinality(String),
    column_name LowCardinality(String),
    old_ttl     String,
    new_ttl     String
)
ENGINE = MergeTree
ORDER BY (changed_at, table_name, column_name);
