-- Exactly-once bookkeeping of the processor's ClickHouse sink.
-- sink_intents: the Kafka offset range of each insert batch, written before the insert, so a
-- restarted or rebalanced processor cuts the same batch again and its dedup token matches.
CREATE TABLE IF NOT EXISTS {{db}}.sink_intents
(
    topic        String,
    partition    Int32,
    start_offset Int64,
    end_offset   Int64,
    written_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(written_at)
ORDER BY (topic, partition, start_offset)
TTL toDateTime(written_at) + INTERVAL 30 DAY;

-- Per source file and site host: the highest byte offset stored and the newest request time.
-- Records at or below it are re-sends by a restarted collector and are dropped. The newest
-- time is the source's watermark for the billing run's completeness check.
CREATE TABLE IF NOT EXISTS {{db}}.source_progress
(
    fingerprint UInt64,
    site_host   String,
    max_offset  UInt64,
    max_ts      DateTime64(6, 'UTC'),
    records     UInt64,
    updated_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(max_offset)
ORDER BY (fingerprint, site_host);
