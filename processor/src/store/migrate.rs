//! Applies `sitelog_schema::migrations` in order and records each in `schema_migrations`.
//!
//! Invariants: checks run before any change (a database newer than this binary, or an applied
//! migration whose file changed, refuses with nothing touched); a second run does nothing;
//! every statement is `IF NOT EXISTS`, so a run interrupted mid-migration completes on re-run.
//!
//! Retention follows the configuration: after the migrations, every TTL `[retention]` decides
//! ([`sitelog_schema::ttl::targets`]) is read back from ClickHouse and, where it differs from
//! the configured one, altered and materialized, and the change recorded in
//! `retention_changes` ([`sync_retention`]). With an unchanged config this changes nothing.

use clickhouse::Client;
use serde::Deserialize;
use sitelog_schema::cluster;
use sitelog_schema::migrations::{Migration, Retention, MIGRATIONS};
use sitelog_schema::ttl::{self, TtlInForce};

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("database '{db}' is at schema version {found}, newer than this sitelog (knows up to {known}); upgrade sitelog, nothing was changed")]
    DatabaseNewer { db: String, found: u32, known: u32 },
    #[error("migration {version} ({name}) was applied with checksum {recorded} but this binary has {current}; applied migrations must never be edited, nothing was changed")]
    ChecksumChanged { version: u32, name: String, recorded: String, current: String },
    #[error("invalid retention: {0}")]
    Retention(#[from] sitelog_schema::migrations::RetentionError),
    #[error("migration {version} ({name}), statement {index}: {source}")]
    Statement { version: u32, name: &'static str, index: usize, source: clickhouse::error::Error },
    #[error("{what}: {source}")]
    ClickHouse { what: &'static str, source: clickhouse::error::Error },
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    #[error("reloading a changed view: `{statement}` failed, so the view may be detached and its source table's inserts bypass it; run that statement (or `sitelog schema migrate` again) now: {source}")]
    ViewDetached { statement: String, source: clickhouse::error::Error },
    #[error("setting the TTL of {place} to {new} (was {old}): {source}")]
    Ttl { place: String, old: String, new: String, source: clickhouse::error::Error },
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Applied {
    version: u32,
    name: String,
    checksum: String,
}

/// What a run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrateReport {
    pub applied: Vec<(u32, &'static str)>,
    pub current_version: u32,
    /// TTLs brought to the configured retention (empty when they already were).
    pub retention_changes: Vec<RetentionChange>,
}

/// One TTL altered to follow `[retention]`, as recorded in `retention_changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionChange {
    pub table: String,
    /// `None` for the table TTL.
    pub column: Option<String>,
    /// The `[retention]` key it follows.
    pub key: &'static str,
    /// Both as ClickHouse formats them (`toDateTime(ts) + toIntervalDay(7)`); `old` is empty
    /// when there was none.
    pub old: String,
    pub new: String,
}

impl std::fmt::Display for RetentionChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = match &self.column {
            Some(c) => format!("{}.{c}", self.table),
            None => self.table.clone(),
        };
        let old = if self.old.is_empty() { "none" } else { &self.old };
        write!(f, "{place} TTL {old} -> {} (retention.{})", self.new, self.key)
    }
}

/// Migrates `db` to the newest known version. `server` must not be bound to `db` (it may not
/// exist yet).
pub async fn migrate(server: &Client, db: &str, retention: &Retention) -> Result<MigrateReport, MigrateError> {
    migrate_with(server, db, retention, MIGRATIONS, None).await
}

/// [`migrate`] on a cluster (`Some(name)`: every statement `ON CLUSTER`, Replicated and
/// Distributed tables, see [`sitelog_schema::cluster`]) or on one server (`None`).
pub async fn migrate_on(
    server: &Client,
    db: &str,
    retention: &Retention,
    cluster: Option<&str>,
) -> Result<MigrateReport, MigrateError> {
    migrate_with(server, db, retention, MIGRATIONS, cluster).await
}

/// `stmt` as it runs: unchanged on one server, rewritten for the cluster otherwise. A view's
/// `MODIFY QUERY` is followed by the view's reload ([`reload_view`]).
fn for_target(stmt: &str, db: &str, cluster: Option<&str>) -> Result<Vec<String>, MigrateError> {
    let mut out = match cluster {
        None => vec![stmt.to_owned()],
        Some(c) => cluster::render(stmt, db, c)?,
    };
    if let Some(view) = modified_view(stmt) {
        let [detach, attach] = reload_view(view, cluster);
        out.insert(0, attach.clone());
        out.extend([detach, attach]);
    }
    Ok(out)
}

/// The view (`db.name`) an `ALTER TABLE db.name MODIFY QUERY …` changes.
fn modified_view(stmt: &str) -> Option<&str> {
    let mut words = stmt.split_whitespace();
    let (alter, table, name, modify, query) =
        (words.next()?, words.next()?, words.next()?, words.next()?, words.next()?);
    [(alter, "ALTER"), (table, "TABLE"), (modify, "MODIFY"), (query, "QUERY")]
        .iter()
        .all(|(w, k)| w.eq_ignore_ascii_case(k))
        .then_some(name)
}

/// Re-attaches a view after `MODIFY QUERY`, as a server start would load it.
///
/// Why: ClickHouse derives a materialized view's deduplication block id from the insert's
/// token and the view's identity *as held in memory*; after `MODIFY QUERY` that identity
/// differs from the one loaded from the metadata at the next start (seen with ClickHouse 26.9
/// through chDB). An insert committed before a restart and retried after it (a processor killed
/// between storing a batch and recording its progress) was then dropped as a repeat in the
/// source table but counted again in the view's rollup (`tests/schema_view_dedup.rs`). After
/// `DETACH` + `ATTACH` the view is held as a start loads it, so the ids stay the same across
/// restarts. The view misses inserts only between the two statements (milliseconds), so run
/// migrations that change a view with the processors stopped. [`for_target`] also puts the
/// `ATTACH … IF NOT EXISTS` before the `MODIFY QUERY`: it re-attaches a view that a run
/// interrupted between the two left detached, and does nothing otherwise.
fn reload_view(view: &str, cluster: Option<&str>) -> [String; 2] {
    let on = cluster.map(|c| format!(" ON CLUSTER {c}")).unwrap_or_default();
    [format!("DETACH TABLE {view}{on}"), format!("ATTACH TABLE IF NOT EXISTS {view}{on}")]
}

pub(crate) async fn migrate_with(
    server: &Client,
    db: &str,
    retention: &Retention,
    migrations: &'static [Migration],
    cluster: Option<&str>,
) -> Result<MigrateReport, MigrateError> {
    retention.validate()?;
    let ch = |what| move |source| MigrateError::ClickHouse { what, source };
    for st in for_target(&format!("CREATE DATABASE IF NOT EXISTS {db}"), db, cluster)? {
        server.query(&st).execute().await.map_err(ch("creating the database"))?;
    }
    for st in for_target(&bookkeeping_table(db), db, cluster)? {
        server.query(&st).execute().await.map_err(ch("creating schema_migrations"))?;
    }
    let applied: Vec<Applied> = server
        .query(&format!("SELECT version, name, checksum FROM {db}.schema_migrations FINAL ORDER BY version"))
        .fetch_all()
        .await
        .map_err(ch("reading schema_migrations"))?;

    let known = migrations.last().map_or(0, |m| m.version);
    if let Some(newest) = applied.iter().map(|a| a.version).max().filter(|&v| v > known) {
        return Err(MigrateError::DatabaseNewer { db: db.into(), found: newest, known });
    }
    for a in &applied {
        if let Some(m) = migrations.iter().find(|m| m.version == a.version) {
            let current = m.checksum();
            if current != a.checksum {
                return Err(MigrateError::ChecksumChanged {
                    version: a.version,
                    name: a.name.clone(),
                    recorded: a.checksum.clone(),
                    current,
                });
            }
        }
    }

    let mut report = MigrateReport {
        applied: Vec::new(),
        current_version: applied.iter().map(|a| a.version).max().unwrap_or(0),
        retention_changes: Vec::new(),
    };
    for m in migrations.iter().filter(|m| !applied.iter().any(|a| a.version == m.version)) {
        let mut skipped = 0;
        for (index, stmt) in m.statements(db, retention).iter().enumerate() {
            // Roles and grants are not the migrator's: `sitelog schema grants` defines every
            // role from one definition (sitelog_schema::access) and an administrator applies it.
            if is_access_statement(stmt) {
                skipped += 1;
                continue;
            }
            for st in for_target(stmt, db, cluster)? {
                server.query(&st).execute().await.map_err(|source| {
                    if st.starts_with("ATTACH TABLE") {
                        MigrateError::ViewDetached { statement: st.clone(), source }
                    } else {
                        MigrateError::Statement { version: m.version, name: m.name, index: index + 1, source }
                    }
                })?;
            }
        }
        if skipped > 0 {
            tracing::info!(
                version = m.version,
                name = m.name,
                skipped,
                "role and grant statements skipped: roles are applied by `sitelog schema grants --apply`"
            );
        }
        // Recorded only after every statement succeeded.
        server
            .query(&format!("INSERT INTO {db}.schema_migrations (version, name, checksum) VALUES (?, ?, ?)"))
            .bind(m.version)
            .bind(m.name)
            .bind(m.checksum())
            .execute()
            .await
            .map_err(ch("recording a migration"))?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        report.applied.push((m.version, m.name));
        report.current_version = m.version;
    }
    report.retention_changes = sync_retention_on(server, db, retention, cluster).await?;
    Ok(report)
}

/// The TTL clauses in force on `db.table`, or `None` if the table does not exist (yet).
pub async fn ttl_in_force(
    client: &Client,
    db: &str,
    table: &str,
) -> Result<Option<TtlInForce>, clickhouse::error::Error> {
    let q: Vec<String> = client
        .query("SELECT create_table_query FROM system.tables WHERE database = ? AND name = ?")
        .bind(db)
        .bind(table)
        .fetch_all()
        .await?;
    Ok(q.first().map(|q| ttl::in_force(q)))
}

/// `expr` as ClickHouse's formatter writes it (`INTERVAL 7 DAY` → `toIntervalDay(7)`), so two
/// expressions compare exactly as ClickHouse understands them.
pub async fn format_expr(client: &Client, expr: &str) -> Result<String, clickhouse::error::Error> {
    let q: String = client.query("SELECT formatQuerySingleLine(concat('SELECT ', ?))").bind(expr).fetch_one().await?;
    Ok(q.strip_prefix("SELECT ").unwrap_or(&q).to_owned())
}

/// Brings every TTL `[retention]` decides to the configured value: reads the TTL in force
/// from ClickHouse, and where it differs, alters it (`MODIFY TTL` for a table TTL, `MODIFY
/// COLUMN … TTL` for a column), waits until ClickHouse has materialized it (rows and values
/// past the new limit are gone when this returns), and records the change. Tables that do not
/// exist are left alone. Changes nothing when the TTLs already follow `retention`.
pub async fn sync_retention(
    server: &Client,
    db: &str,
    retention: &Retention,
) -> Result<Vec<RetentionChange>, MigrateError> {
    sync_retention_on(server, db, retention, None).await
}

/// [`sync_retention`] on a cluster: the TTLs of the local (storage) tables, altered `ON
/// CLUSTER`; changes are recorded under the table's own name.
pub async fn sync_retention_on(
    server: &Client,
    db: &str,
    retention: &Retention,
    cluster: Option<&str>,
) -> Result<Vec<RetentionChange>, MigrateError> {
    let storage = |t: &str| if cluster.is_some() { cluster::local_name(t) } else { t.to_owned() };
    let ch = |what| move |source| MigrateError::ClickHouse { what, source };
    let mut changes = Vec::new();
    let mut tables: std::collections::BTreeMap<&str, Option<TtlInForce>> = Default::default();
    for t in ttl::targets(retention) {
        if !tables.contains_key(t.table) {
            let found = ttl_in_force(server, db, &storage(t.table)).await.map_err(ch("reading the TTLs in force"))?;
            tables.insert(t.table, found);
        }
        let Some(Some(in_force)) = tables.get(t.table) else {
            continue;
        };
        let current = match t.column {
            Some(c) => in_force.columns.get(c),
            None => in_force.table.as_ref(),
        };
        let new = format_expr(server, &t.expr).await.map_err(ch("formatting a TTL expression"))?;
        let old = match current {
            Some(e) => format_expr(server, e).await.map_err(ch("formatting a TTL expression"))?,
            None => String::new(),
        };
        if old == new {
            continue;
        }
        // mutations_sync = 2: the ALTER returns once the new TTL is materialized in every part
        // (on every replica), so what the new limit excludes is gone when migrate reports it.
        let alter = ttl_alter(db, &t, cluster);
        let change =
            RetentionChange { table: t.table.to_owned(), column: t.column.map(str::to_owned), key: t.key, old, new };
        server.query(&format!("{alter} SETTINGS mutations_sync = 2")).execute().await.map_err(|source| {
            MigrateError::Ttl { place: t.place(), old: change.old.clone(), new: change.new.clone(), source }
        })?;
        server
            .query(&format!(
                "INSERT INTO {db}.retention_changes (table_name, column_name, old_ttl, new_ttl) VALUES (?, ?, ?, ?)"
            ))
            .bind(&change.table)
            .bind(change.column.as_deref().unwrap_or(""))
            .bind(&change.old)
            .bind(&change.new)
            .execute()
            .await
            .map_err(ch("recording a retention change"))?;
        tracing::info!(%change, "retention changed");
        changes.push(change);
    }
    Ok(changes)
}

/// The ALTER that sets `t` (without `SETTINGS`): on the local table `ON CLUSTER` on a cluster.
pub fn ttl_alter(db: &str, t: &ttl::TtlTarget, cluster: Option<&str>) -> String {
    let (table, on_cluster) = match cluster {
        Some(c) => (cluster::local_name(t.table), format!(" ON CLUSTER {c}")),
        None => (t.table.to_owned(), String::new()),
    };
    match t.column {
        Some(c) => format!("ALTER TABLE {db}.{table}{on_cluster} MODIFY COLUMN {c} TTL {}", t.expr),
        None => format!("ALTER TABLE {db}.{table}{on_cluster} MODIFY TTL {}", t.expr),
    }
}

/// The runner's own statements (database, `schema_migrations`) as they run.
pub fn bookkeeping_statements(db: &str, cluster: Option<&str>) -> Result<Vec<String>, MigrateError> {
    let mut out = for_target(&format!("CREATE DATABASE IF NOT EXISTS {db}"), db, cluster)?;
    out.extend(for_target(&bookkeeping_table(db), db, cluster)?);
    Ok(out)
}

fn bookkeeping_table(db: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, checksum String, \
         applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
    )
}

/// Every statement of every migration as it runs for `db` (access statements left out: they
/// are `sitelog schema grants`'s).
pub fn migration_statements(
    db: &str,
    retention: &Retention,
    cluster: Option<&str>,
) -> Result<Vec<String>, MigrateError> {
    let mut out = Vec::new();
    for m in MIGRATIONS {
        for st in m.statements(db, retention).iter().filter(|s| !is_access_statement(s)) {
            out.extend(for_target(st, db, cluster)?);
        }
    }
    Ok(out)
}

/// Roles, users and grants: statements that need SQL-managed access control on the server.
pub fn is_access_statement(stmt: &str) -> bool {
    let head: String = stmt.split_whitespace().take(2).collect::<Vec<_>>().join(" ").to_ascii_uppercase();
    head.starts_with("GRANT ")
        || head.starts_with("REVOKE ")
        || matches!(head.as_str(), "CREATE ROLE" | "CREATE USER" | "ALTER ROLE" | "ALTER USER")
}

#[cfg(test)]
mod tests {
    use super::{for_target, is_access_statement};

    #[test]
    fn a_changed_view_is_reloaded_after_its_new_query() {
        let alter = "ALTER TABLE sitelog.usage_daily_mv MODIFY QUERY\nSELECT 1 AS x FROM sitelog.access_log";
        assert_eq!(
            for_target(alter, "sitelog", None).unwrap(),
            [
                "ATTACH TABLE IF NOT EXISTS sitelog.usage_daily_mv",
                alter,
                "DETACH TABLE sitelog.usage_daily_mv",
                "ATTACH TABLE IF NOT EXISTS sitelog.usage_daily_mv"
            ]
        );
        let on_cluster = for_target(alter, "sitelog", Some("logs")).unwrap();
        assert_eq!(on_cluster.len(), 4);
        assert_eq!(on_cluster[2], "DETACH TABLE sitelog.usage_daily_mv ON CLUSTER logs");
        assert_eq!(on_cluster[3], "ATTACH TABLE IF NOT EXISTS sitelog.usage_daily_mv ON CLUSTER logs");
        for other in
            ["ALTER TABLE sitelog.access_log ADD COLUMN IF NOT EXISTS x UInt8", "CREATE DATABASE IF NOT EXISTS sitelog"]
        {
            assert_eq!(for_target(other, "sitelog", None).unwrap(), [other]);
        }
    }

    #[test]
    fn access_statements_are_recognised() {
        assert!(is_access_statement("CREATE ROLE IF NOT EXISTS sitelog_billing"));
        assert!(is_access_statement("GRANT SELECT ON db.usage_daily TO sitelog_billing"));
        assert!(is_access_statement("grant select(a) on db.t to r"));
        assert!(!is_access_statement("CREATE TABLE IF NOT EXISTS db.grants (a UInt8) ENGINE = Memory"));
        assert!(!is_access_statement("CREATE MATERIALIZED VIEW IF NOT EXISTS db.v TO db.t AS SELECT 1"));
    }
}
