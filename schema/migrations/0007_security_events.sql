-- Security analysis. Purpose: security; kept [retention] security_days (1 year by default).
-- Events keep the source address because their purpose needs it, and nothing else from the
-- raw log beyond a few sample paths and user agents. Readable by the ops role only.
--
-- One row per state of an event (the processor writes an event again when it grows); the
-- newest state (highest version) is the event. event_id is deterministic (scenario, source,
-- site, start), so a replay of the topic writes the same ids and adds no events.
CREATE TABLE IF NOT EXISTS {{db}}.security_events
(
    event_id           UInt64,
    scenario           LowCardinality(String),
    severity           LowCardinality(String),
    source             String,
    source_ip          IPv6,
    customer_id        LowCardinality(String),
    site_id            LowCardinality(String),
    site_host          LowCardinality(String),
    first_seen         DateTime64(6, 'UTC'),
    last_seen          DateTime64(6, 'UTC'),
    count              UInt64,
    sample_paths       Array(String),
    sample_user_agents Array(String),
    version            UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY event_id
TTL toDateTime(first_seen) + INTERVAL {{security_days}} DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- Near-miss signals: a group (address and site) that reached a scenario's signal level
-- without necessarily firing it. The cross-tenant scenario counts distinct customers per
-- network over these, across every partition.
CREATE TABLE IF NOT EXISTS {{db}}.security_signals
(
    scenario    LowCardinality(String),
    source_ip   IPv6,
    source_net  IPv6,
    customer_id LowCardinality(String),
    site_id     LowCardinality(String),
    site_host   LowCardinality(String),
    ts          DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (source_net, scenario, site_host, source_ip, ts)
TTL toDateTime(ts) + INTERVAL {{security_days}} DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- Accountability: every command that reveals client addresses (security events, investigate)
-- writes who asked what, when and why here first. The auditor role reads it; no role may
-- alter or delete it (deploy/clickhouse/grants.sql). Kept as long as the security events.
CREATE TABLE IF NOT EXISTS {{db}}.access_audit
(
    ts        DateTime64(3, 'UTC'),
    os_user   String,
    db_user   String,
    command   String,
    arguments String,
    reason    String
)
ENGINE = MergeTree
ORDER BY ts
TTL toDateTime(ts) + INTERVAL {{security_days}} DAY;
