-- Keyed visitor identities. usage_daily's unique-visitor states used to hold
-- sipHash64(site_id, day, client_ip[, user_agent]): no secret, so whoever reads the rollup
-- could test an address against it (merge one more state and see whether the count grows) or
-- hash all 2^32 IPv4 addresses per site and day. From this version the processor computes each
-- visitor's identity with SipHash-2-4 under a per-month key that never reaches ClickHouse
-- (sitelog_processor::visitors), writes it with the raw record, and the rollup aggregates that
-- value. 0 = no identity (the month's key was destroyed): not a visitor.
--
-- The identities are kept only as long as the full client address they are derived from.
ALTER TABLE {{db}}.access_log
    ADD COLUMN IF NOT EXISTS visitor_ip_key UInt64 DEFAULT 0 TTL toDateTime(ts) + INTERVAL {{client_ip_days}} DAY CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS visitor_ip_ua_key UInt64 DEFAULT 0 TTL toDateTime(ts) + INTERVAL {{client_ip_days}} DAY CODEC(ZSTD(1));

-- Replaced in place (no window in which inserts would bypass the rollup). Days rolled up before
-- this migration keep their keyless states until the usage TTL removes them; a day that
-- straddles the upgrade may count a visitor once under each scheme.
ALTER TABLE {{db}}.usage_daily_mv MODIFY QUERY
SELECT
    customer_id,
    site_id,
    site_host,
    toDate(ts, 'Europe/Helsinki') AS day,
    count() AS requests,
    sum(bytes_sent) AS bytes_sent,
    countIf(is_bot) AS bot_requests,
    uniqExactStateIf(visitor_ip_key,
        visitor_ip_key != 0 AND request_class != 'static' AND NOT is_bot AND status != 403) AS visitors_ip,
    uniqExactStateIf(visitor_ip_ua_key,
        visitor_ip_ua_key != 0 AND request_class != 'static' AND NOT is_bot
        AND ((status >= 200 AND status < 300) OR status IN (303, 304, 305))) AS visitors_ip_ua
FROM {{db}}.access_log
GROUP BY customer_id, site_id, site_host, day;
