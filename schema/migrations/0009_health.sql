-- Health per site and web server. Purpose: error diagnosis and disruption alerts.
--
-- Records name the web server that logged them (wire version 2: `[collector] server`, or the
-- source's `server`) and the status of the last upstream the request went to
-- (`$upstream_status`). Rows stored before this version, and rows from collectors that still
-- send wire version 1, hold server '' and upstream_status 0 (= absent).
ALTER TABLE {{db}}.access_log
    ADD COLUMN IF NOT EXISTS server LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS upstream_status UInt16 DEFAULT 0 CODEC(ZSTD(1));

-- Per site, server and minute; what `sitelog health`, `sitelog investigate errors` and the
-- alert rules read. site_health_minute (0001) stays as it is for its readers.
-- upstream_failures: status or upstream status 502, 503 or 504 (the backend failed).
-- A site is served by one server at a time, so rows sorted by site are nearly sorted by
-- server too: the `set` skip index makes one server's rows cheap to find without a second
-- rollup (no extra materialized view on the insert path), and the minmax index on minute
-- does the same for a time window over every site.
CREATE TABLE IF NOT EXISTS {{db}}.health_minute
(
    site_host         LowCardinality(String),
    server            LowCardinality(String),
    minute            DateTime('UTC'),
    customer_id       SimpleAggregateFunction(any, String),
    requests          SimpleAggregateFunction(sum, UInt64),
    status_4xx        SimpleAggregateFunction(sum, UInt64),
    status_5xx        SimpleAggregateFunction(sum, UInt64),
    upstream_failures SimpleAggregateFunction(sum, UInt64),
    request_time_us   AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt64),
    upstream_time_us  AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt64),
    INDEX health_by_server server TYPE set(256) GRANULARITY 1,
    INDEX health_by_minute minute TYPE minmax GRANULARITY 1
)
ENGINE = AggregatingMergeTree
ORDER BY (site_host, server, minute)
TTL minute + INTERVAL {{site_health_days}} DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.health_minute_mv TO {{db}}.health_minute AS
SELECT
    site_host,
    server,
    toStartOfMinute(toDateTime(ts)) AS minute,
    any(customer_id) AS customer_id,
    count() AS requests,
    countIf(status >= 400 AND status < 500) AS status_4xx,
    countIf(status >= 500 AND status < 600) AS status_5xx,
    countIf(status IN (502, 503, 504) OR upstream_status IN (502, 503, 504)) AS upstream_failures,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(assumeNotNull(request_time_us), isNotNull(request_time_us)) AS request_time_us,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(assumeNotNull(upstream_time_us), isNotNull(upstream_time_us)) AS upstream_time_us
FROM {{db}}.access_log
GROUP BY site_host, server, minute;
