-- Raw access records, one row per logged request. Purposes: security and error diagnosis.
-- Short retention; the full client address is kept even shorter (column TTL), after which
-- only client_net (/24 for IPv4, /48 for IPv6) remains.
CREATE TABLE IF NOT EXISTS {{db}}.access_log
(
    ts                 DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    tz_offset_secs     Int32 CODEC(ZSTD(1)),
    site_host          LowCardinality(String),
    customer_id        LowCardinality(String),
    site_id            LowCardinality(String),
    client_ip          IPv6 TTL toDateTime(ts) + INTERVAL {{client_ip_days}} DAY,
    client_net         IPv6 CODEC(ZSTD(1)),
    remote_user        LowCardinality(String),
    method             LowCardinality(String),
    path               String CODEC(ZSTD(3)),
    query              String CODEC(ZSTD(3)),
    protocol           LowCardinality(String),
    status             UInt16 CODEC(ZSTD(1)),
    bytes_sent         UInt64 CODEC(T64, ZSTD(1)),
    referer            String CODEC(ZSTD(3)),
    user_agent         LowCardinality(String),
    request_time_us    Nullable(UInt64) CODEC(T64, ZSTD(1)),
    upstream_time_us   Nullable(UInt64) CODEC(T64, ZSTD(1)),
    upstream_count     UInt8 CODEC(ZSTD(1)),
    cache_status       LowCardinality(String),
    request_class      LowCardinality(String),
    is_bot             Bool,
    bot_name           LowCardinality(String),
    flags              UInt8 CODEC(ZSTD(1)),
    source_fingerprint UInt64 CODEC(ZSTD(1)),
    source_offset      UInt64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (site_host, ts)
TTL toDateTime(ts) + INTERVAL {{raw_days}} DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- Usage per customer / site / host / Helsinki day. Purpose: billing; kept for the bookkeeping
-- period. Unique visitors are exact sets of salted 64-bit hashes (salt: site and day), so the
-- rollup holds no client address and cannot be joined across days or sites.
CREATE TABLE IF NOT EXISTS {{db}}.usage_daily
(
    customer_id     LowCardinality(String),
    site_id         LowCardinality(String),
    site_host       LowCardinality(String),
    day             Date,
    requests        SimpleAggregateFunction(sum, UInt64),
    bytes_sent      SimpleAggregateFunction(sum, UInt64),
    bot_requests    SimpleAggregateFunction(sum, UInt64),
    visitors_ip     AggregateFunction(uniqExact, UInt64),
    visitors_ip_ua  AggregateFunction(uniqExact, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (customer_id, site_id, day, site_host)
TTL day + INTERVAL {{usage_years}} YEAR
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.usage_daily_mv TO {{db}}.usage_daily AS
SELECT
    customer_id,
    site_id,
    site_host,
    toDate(ts, 'Europe/Helsinki') AS day,
    count() AS requests,
    sum(bytes_sent) AS bytes_sent,
    countIf(is_bot) AS bot_requests,
    uniqExactStateIf(sipHash64(site_id, day, client_ip),
        request_class != 'static' AND NOT is_bot AND status != 403) AS visitors_ip,
    uniqExactStateIf(sipHash64(site_id, day, client_ip, user_agent),
        request_class != 'static' AND NOT is_bot
        AND ((status >= 200 AND status < 300) OR status IN (303, 304, 305))) AS visitors_ip_ua
FROM {{db}}.access_log
GROUP BY customer_id, site_id, site_host, day;

-- Per site and minute health. Purpose: error diagnosis and disruption alerts; 90 days.
CREATE TABLE IF NOT EXISTS {{db}}.site_health_minute
(
    site_host       LowCardinality(String),
    minute          DateTime('UTC'),
    customer_id     SimpleAggregateFunction(any, String),
    requests        SimpleAggregateFunction(sum, UInt64),
    status_2xx      SimpleAggregateFunction(sum, UInt64),
    status_3xx      SimpleAggregateFunction(sum, UInt64),
    status_4xx      SimpleAggregateFunction(sum, UInt64),
    status_5xx      SimpleAggregateFunction(sum, UInt64),
    request_time_us AggregateFunction(quantilesTDigest(0.5, 0.9, 0.99), UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (site_host, minute)
TTL minute + INTERVAL {{site_health_days}} DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.site_health_minute_mv TO {{db}}.site_health_minute AS
SELECT
    site_host,
    toStartOfMinute(toDateTime(ts)) AS minute,
    any(customer_id) AS customer_id,
    count() AS requests,
    countIf(status >= 200 AND status < 300) AS status_2xx,
    countIf(status >= 300 AND status < 400) AS status_3xx,
    countIf(status >= 400 AND status < 500) AS status_4xx,
    countIf(status >= 500) AS status_5xx,
    quantilesTDigestStateIf(0.5, 0.9, 0.99)(assumeNotNull(request_time_us), isNotNull(request_time_us)) AS request_time_us
FROM {{db}}.access_log
GROUP BY site_host, minute;
