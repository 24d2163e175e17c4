-- Access by need (privacy notice): separate roles per purpose. Applied on clickhouse-server.
CREATE ROLE IF NOT EXISTS sitelog_ops;      -- incidents: raw records, health, security
CREATE ROLE IF NOT EXISTS sitelog_billing;  -- month end: usage and billing fields only, never IPs
CREATE ROLE IF NOT EXISTS sitelog_auditor;  -- read-only view of imports and billing runs

GRANT SELECT ON sitelog.access_log TO sitelog_ops;
GRANT SELECT ON sitelog.site_health_minute TO sitelog_ops;
GRANT SELECT ON sitelog.usage_daily TO sitelog_billing;
GRANT SELECT(customer_id, company_name, business_id, billing_street, billing_postal_code, billing_city, billing_country, billing_email, version)
    ON sitelog.customers TO sitelog_billing;
GRANT SELECT ON sitelog.sites TO sitelog_billing;
GRANT SELECT ON sitelog.plans TO sitelog_billing;
GRANT SELECT ON sitelog.register_imports TO sitelog_billing, sitelog_auditor;
GRANT SELECT ON sitelog.source_progress TO sitelog_billing;

GRANT INSERT, SELECT ON sitelog.* TO sitelog_processor;
