-- sitelog roles and users for database `sitelog` (sitelog schema grants).
-- Generated from schema/src/access.rs: edit the definition there, never this output.
-- Needs SQL-managed access control (clickhouse-server's local_directory or replicated
-- user directory) and a user allowed to manage access. No password appears here.

-- sitelog_processor: sitelog process: inserts what the sink stores, reads its bookkeeping and the site map
CREATE ROLE IF NOT EXISTS sitelog_processor;
GRANT
    INSERT ON sitelog.access_log,
    INSERT ON sitelog.usage_daily,
    INSERT ON sitelog.site_health_minute,
    INSERT ON sitelog.health_minute,
    INSERT ON sitelog.collector_heartbeats,
    SELECT(version) ON sitelog.register_imports,
    SELECT(version, site_id, customer_id, primary_domain, aliases, plan, valid_from, valid_to) ON sitelog.sites,
    SELECT, INSERT ON sitelog.sink_intents,
    SELECT, INSERT ON sitelog.source_progress,
    INSERT ON sitelog.security_events,
    INSERT ON sitelog.security_signals
TO sitelog_processor WITH REPLACE OPTION;

-- sitelog_migrator: sitelog schema migrate: the only role that creates or alters tables
CREATE ROLE IF NOT EXISTS sitelog_migrator;
GRANT
    CREATE DATABASE, CREATE TABLE, CREATE VIEW, DROP VIEW, ALTER ADD COLUMN, ALTER MODIFY COLUMN, ALTER TTL, ALTER VIEW MODIFY QUERY ON sitelog.*,
    SELECT ON sitelog.access_log,
    INSERT ON sitelog.usage_daily,
    INSERT ON sitelog.site_health_minute,
    INSERT ON sitelog.health_minute,
    INSERT ON sitelog.retention_changes,
    SELECT, INSERT ON sitelog.schema_migrations
TO sitelog_migrator WITH REPLACE OPTION;

-- sitelog_register: sitelog customers import: writes the register, deletes superseded versions
CREATE ROLE IF NOT EXISTS sitelog_register;
GRANT
    SELECT, INSERT ON sitelog.register_imports,
    INSERT, ALTER DELETE ON sitelog.customers,
    INSERT, ALTER DELETE ON sitelog.contacts,
    INSERT, ALTER DELETE ON sitelog.sites,
    INSERT, ALTER DELETE ON sitelog.plans
TO sitelog_register WITH REPLACE OPTION;

-- sitelog_ops: incidents and attacks: raw records, health, security events, who to tell
CREATE ROLE IF NOT EXISTS sitelog_ops;
GRANT
    SELECT ON sitelog.access_log,
    SELECT ON sitelog.usage_daily,
    SELECT ON sitelog.site_health_minute,
    SELECT ON sitelog.health_minute,
    SELECT ON sitelog.collector_heartbeats,
    SELECT ON sitelog.incidents,
    SELECT ON sitelog.incident_notifications,
    SELECT(version) ON sitelog.register_imports,
    SELECT(version, customer_id, company_name) ON sitelog.customers,
    SELECT ON sitelog.contacts,
    SELECT ON sitelog.sites,
    SELECT ON sitelog.security_events,
    SELECT ON sitelog.security_signals,
    INSERT ON sitelog.access_audit
TO sitelog_ops WITH REPLACE OPTION;

-- sitelog_billing: month end: usage and the register's billing fields, never addresses or contacts
CREATE ROLE IF NOT EXISTS sitelog_billing;
GRANT
    SELECT(ts, customer_id, site_id, bytes_sent, is_bot) ON sitelog.access_log,
    SELECT ON sitelog.usage_daily,
    SELECT(server, source, sent_at, delivered_through, position, idle) ON sitelog.collector_heartbeats,
    SELECT(version, imported_at) ON sitelog.register_imports,
    SELECT(version, customer_id, company_name, business_id, billing_street, billing_postal_code, billing_city, billing_country, billing_email) ON sitelog.customers,
    SELECT(version, site_id, customer_id, primary_domain, plan, valid_from, valid_to) ON sitelog.sites,
    SELECT(version, plan, metering, included) ON sitelog.plans,
    SELECT(fingerprint, site_host, max_offset, max_ts, records) ON sitelog.source_progress,
    SELECT, INSERT ON sitelog.billing_runs,
    SELECT, INSERT ON sitelog.billing_run_lines
TO sitelog_billing WITH REPLACE OPTION;

-- sitelog_auditor: accountability: the access audit, imports, billing runs, retention changes
CREATE ROLE IF NOT EXISTS sitelog_auditor;
GRANT
    SELECT ON sitelog.register_imports,
    SELECT ON sitelog.billing_runs,
    SELECT ON sitelog.billing_run_lines,
    SELECT ON sitelog.access_audit,
    SELECT ON sitelog.retention_changes
TO sitelog_auditor WITH REPLACE OPTION;

-- sitelog_alerts: sitelog alerts run: reads health, writes incidents and notifications
CREATE ROLE IF NOT EXISTS sitelog_alerts;
GRANT
    SELECT ON sitelog.health_minute,
    SELECT, INSERT ON sitelog.incidents,
    SELECT, INSERT ON sitelog.incident_notifications,
    SELECT, INSERT ON sitelog.alerts_progress
TO sitelog_alerts WITH REPLACE OPTION;

-- Users: each holds exactly one role. Created with HOST NONE (nobody can log in) until `sitelog schema grants --apply --password-sha256-dir DIR` sets the SHA-256 of its password
CREATE USER IF NOT EXISTS sitelog_processor_user HOST NONE;
GRANT sitelog_processor TO sitelog_processor_user WITH REPLACE OPTION;
ALTER USER sitelog_processor_user DEFAULT ROLE sitelog_processor;
CREATE USER IF NOT EXISTS sitelog_migrator_user HOST NONE;
GRANT sitelog_migrator TO sitelog_migrator_user WITH REPLACE OPTION;
ALTER USER sitelog_migrator_user DEFAULT ROLE sitelog_migrator;
CREATE USER IF NOT EXISTS sitelog_register_user HOST NONE;
GRANT sitelog_register TO sitelog_register_user WITH REPLACE OPTION;
ALTER USER sitelog_register_user DEFAULT ROLE sitelog_register;
CREATE USER IF NOT EXISTS sitelog_billing_user HOST NONE;
GRANT sitelog_billing TO sitelog_billing_user WITH REPLACE OPTION;
ALTER USER sitelog_billing_user DEFAULT ROLE sitelog_billing;
CREATE USER IF NOT EXISTS sitelog_alerts_user HOST NONE;
GRANT sitelog_alerts TO sitelog_alerts_user WITH REPLACE OPTION;
ALTER USER sitelog_alerts_user DEFAULT ROLE sitelog_alerts;
CREATE USER IF NOT EXISTS sitelog_console_user HOST NONE;
GRANT sitelog_ops TO sitelog_console_user WITH REPLACE OPTION;
ALTER USER sitelog_console_user DEFAULT ROLE sitelog_ops;
