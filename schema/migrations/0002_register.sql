-- The customer register, versioned: an import writes every row with a new version and then
-- its row in register_imports, which makes that version current (all or nothing). Older
-- versions of personal data (contacts, billing addresses) are deleted right after, so a
-- rectification takes effect without delay. Contact data never enters the log tables.
CREATE TABLE IF NOT EXISTS {{db}}.register_imports
(
    version      UInt64,
    imported_at  DateTime64(3, 'UTC') DEFAULT now64(3),
    imported_by  String,
    source_file  String,
    sha256       String,
    customers    UInt32,
    sites        UInt32,
    contacts     UInt32
)
ENGINE = MergeTree
ORDER BY version;

CREATE TABLE IF NOT EXISTS {{db}}.customers
(
    version             UInt64,
    customer_id         String,
    company_name        String,
    business_id         String,
    billing_street      String,
    billing_postal_code String,
    billing_city        String,
    billing_country     String,
    billing_email       String
)
ENGINE = MergeTree
ORDER BY (version, customer_id);

CREATE TABLE IF NOT EXISTS {{db}}.contacts
(
    version     UInt64,
    customer_id String,
    name        String,
    email       String,
    phone       String,
    role        String
)
ENGINE = MergeTree
ORDER BY (version, customer_id);

-- Ownership over time: valid_from inclusive, valid_to exclusive, Europe/Helsinki dates.
CREATE TABLE IF NOT EXISTS {{db}}.sites
(
    version        UInt64,
    site_id        String,
    customer_id    String,
    primary_domain String,
    aliases        Array(String),
    plan           String,
    valid_from     Date,
    valid_to       Nullable(Date)
)
ENGINE = MergeTree
ORDER BY (version, site_id);

CREATE TABLE IF NOT EXISTS {{db}}.plans
(
    version  UInt64,
    plan     String,
    metering LowCardinality(String),
    included UInt64
)
ENGINE = MergeTree
ORDER BY (version, plan);
