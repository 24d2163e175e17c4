-- Disruption incidents found by `sitelog alerts run`. Purpose: error diagnosis and telling
-- customers about service disruptions; kept [retention] site_health_days (90 days by default),
-- like the health rollups they are derived from. No personal data: sites, servers and
-- customer ids; contact persons are joined from the register at query time only.
--
-- One row per state of an incident (opened, grown, resolved); the newest state (highest
-- version = the evaluated minute) is the incident. `id` is derived from kind, subject and
-- opening minute, so a backfill, a replay or a restarted run writes the same ids.
CREATE TABLE IF NOT EXISTS {{db}}.incidents
(
    id               String,
    kind             LowCardinality(String),
    cause            LowCardinality(String),
    site_host        String,
    server           String,
    opened_at        DateTime('UTC'),
    resolved_at      Nullable(DateTime('UTC')),
    last_firing      DateTime('UTC'),
    sites            Array(String),
    servers          Array(String),
    customers        Array(String),
    requests         UInt64,
    errors           UInt64,
    peak_error_ratio Float64,
    version          UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY id
TTL opened_at + INTERVAL {{site_health_days}} DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- Webhook deliveries: one row per (incident, transition, webhook) delivered. `alerts run`
-- checks it before sending, so a transition is not sent again after a restart.
CREATE TABLE IF NOT EXISTS {{db}}.incident_notifications
(
    incident_id String,
    transition  LowCardinality(String),
    webhook     LowCardinality(String),
    sent_at     DateTime64(3, 'UTC'),
    attempts    UInt32
)
ENGINE = ReplacingMergeTree
ORDER BY (incident_id, transition, webhook)
TTL toDateTime(sent_at) + INTERVAL {{site_health_days}} DAY;

-- How far `alerts run` (live) has evaluated, per evaluator name: a restart continues there.
CREATE TABLE IF NOT EXISTS {{db}}.alerts_progress
(
    evaluator         LowCardinality(String),
    evaluated_through DateTime('UTC'),
    updated_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY evaluator;
