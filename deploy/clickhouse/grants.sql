-- Access by need (privacy notice): separate roles per purpose. Applied on clickhouse-server.
CREATE ROLE IF NOT EXISTS sitelog_ops;      -- incidents: raw records, health, security
CREATE ROLE IF NOT EXISTS sitelog_auditor;  -- read-only view of imports and billing runs

GRANT SELECT ON sitelog.access_log TO sitelog_ops;
GRANT SELECT ON sitelog.site_health_minute TO sitelog_ops;
GRANT SELECT ON sitelog.register_imports TO sitelog_auditor;
GRANT SELECT ON sitelog.billing_runs TO sitelog_auditor;
GRANT SELECT ON sitelog.billing_run_lines TO sitelog_auditor;

-- Month end: usage and the register's billing fields only, never client IPs, user agents,
-- paths or contact persons. Identical to the grants of schema/migrations/0005_billing_access.sql
-- and 0010_collector_heartbeats.sql for the
-- database `sitelog` (tests/billing_access.rs keeps them the same).
CREATE ROLE IF NOT EXISTS sitelog_billing;
GRANT SELECT ON sitelog.usage_daily TO sitelog_billing;
GRANT SELECT(version, customer_id, company_name, business_id, billing_street, billing_postal_code, billing_city, billing_country, billing_email) ON sitelog.customers TO sitelog_billing;
GRANT SELECT(version, site_id, customer_id, primary_domain, plan, valid_from, valid_to) ON sitelog.sites TO sitelog_billing;
GRANT SELECT(version, plan, metering, included) ON sitelog.plans TO sitelog_billing;
GRANT SELECT(version, imported_at) ON sitelog.register_imports TO sitelog_billing;
GRANT SELECT(fingerprint, site_host, max_offset, max_ts, records) ON sitelog.source_progress TO sitelog_billing;
GRANT SELECT(ts, customer_id, site_id, bytes_sent, is_bot) ON sitelog.access_log TO sitelog_billing;
GRANT SELECT, INSERT ON sitelog.billing_runs TO sitelog_billing;
GRANT SELECT, INSERT ON sitelog.billing_run_lines TO sitelog_billing;
-- Migration 0010: completeness per collector source.
GRANT SELECT(server, source, sent_at, delivered_through, position, idle) ON sitelog.collector_heartbeats TO sitelog_billing;

-- The billing run's user (`[billing] user` in processor.toml) holds that role only. No
-- password here: the deploy sets it from a secret, e.g.
--   ALTER USER sitelog_billing_user IDENTIFIED WITH sha256_hash BY '<hex>' HOST ANY
-- and until then HOST NONE keeps anyone from logging in as it.
CREATE USER IF NOT EXISTS sitelog_billing_user NOT IDENTIFIED HOST NONE;
GRANT sitelog_billing TO sitelog_billing_user;
ALTER USER sitelog_billing_user DEFAULT ROLE sitelog_billing;

GRANT INSERT, SELECT ON sitelog.* TO sitelog_processor;
