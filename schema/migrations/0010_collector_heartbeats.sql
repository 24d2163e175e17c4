-- Collector heartbeats (issue 12, part 4): per collector (`server`) and `[[source]]` name, how
-- far its records are delivered to Kafka. The billing run judges a month complete per
-- collector source from the latest row of each (server, source): delivered_through past the
-- month's end plus grace, or idle at a time after it. Version 9 is another change's number.
-- One row per heartbeat; a re-delivered heartbeat is the same row (same key and values) and
-- collapses. No personal data. Kept [retention] heartbeat_days.
CREATE TABLE IF NOT EXISTS {{db}}.collector_heartbeats
(
    server            LowCardinality(String),
    source            String,
    sent_at           DateTime64(3, 'UTC'),
    delivered_through DateTime64(6, 'UTC'),
    position          UInt64,
    idle              UInt8,
    files             UInt32
)
ENGINE = ReplacingMergeTree
ORDER BY (server, source, sent_at)
TTL toDateTime(sent_at) + INTERVAL {{heartbeat_days}} DAY;

GRANT SELECT(server, source, sent_at, delivered_through, position, idle) ON {{db}}.collector_heartbeats TO sitelog_billing;
