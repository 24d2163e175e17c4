-- Billing's access by need (privacy notice): the role reads usage and the register's billing
-- fields, never client addresses, user agents, paths, referers or contact persons. Raw
-- records only through the columns the reconciliation (`report billing --verify`) counts.
-- Users get the role at deploy time (deploy/clickhouse/); passwords never live here.
-- deploy/clickhouse/grants.sql repeats these statements for the production database and a
-- test keeps the two identical. Access statements need a server with SQL-managed access
-- (local_directory or replicated user directory); the migrations runner skips them, with a
-- warning, on one that keeps users in users.xml only (the local chDB engine).
CREATE ROLE IF NOT EXISTS sitelog_billing;
GRANT SELECT ON {{db}}.usage_daily TO sitelog_billing;
GRANT SELECT(version, customer_id, company_name, business_id, billing_street, billing_postal_code, billing_city, billing_country, billing_email) ON {{db}}.customers TO sitelog_billing;
GRANT SELECT(version, site_id, customer_id, primary_domain, plan, valid_from, valid_to) ON {{db}}.sites TO sitelog_billing;
GRANT SELECT(version, plan, metering, included) ON {{db}}.plans TO sitelog_billing;
GRANT SELECT(version, imported_at) ON {{db}}.register_imports TO sitelog_billing;
GRANT SELECT(fingerprint, site_host, max_offset, max_ts, records) ON {{db}}.source_progress TO sitelog_billing;
GRANT SELECT(ts, customer_id, site_id, bytes_sent, is_bot) ON {{db}}.access_log TO sitelog_billing;
GRANT SELECT, INSERT ON {{db}}.billing_runs TO sitelog_billing;
GRANT SELECT, INSERT ON {{db}}.billing_run_lines TO sitelog_billing;
