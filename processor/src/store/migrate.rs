//! Applies `sitelog_schema::migrations` in order and records each in `schema_migrations`.
//!
//! Invariants: checks run before any change (a database newer than this binary, or an applied
//! migration whose file changed, refuses with nothing touched); a second run does nothing;
//! every statement is `IF NOT EXISTS`, so a run interrupted mid-migration completes on re-run.

use clickhouse::Client;
use serde::Deserialize;
use sitelog_schema::migrations::{Migration, Retention, MIGRATIONS};

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
}

/// Migrates `db` to the newest known version. `server` must not be bound to `db` (it may not
/// exist yet).
pub async fn migrate(server: &Client, db: &str, retention: &Retention) -> Result<MigrateReport, MigrateError> {
    migrate_with(server, db, retention, MIGRATIONS).await
}

pub(crate) async fn migrate_with(
    server: &Client,
    db: &str,
    retention: &Retention,
    migrations: &'static [Migration],
) -> Result<MigrateReport, MigrateError> {
    retention.validate()?;
    let ch = |what| move |source| MigrateError::ClickHouse { what, source };
    server
        .query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .execute()
        .await
        .map_err(ch("creating the database"))?;
    server
        .query(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, checksum String, \
             applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
        ))
        .execute()
        .await
        .map_err(ch("creating schema_migrations"))?;
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

    let mut report =
        MigrateReport { applied: Vec::new(), current_version: applied.iter().map(|a| a.version).max().unwrap_or(0) };
    let mut sql_access: Option<bool> = None;
    for m in migrations.iter().filter(|m| !applied.iter().any(|a| a.version == m.version)) {
        let mut skipped = 0;
        for (index, stmt) in m.statements(db, retention).iter().enumerate() {
            if is_access_statement(stmt) {
                if sql_access.is_none() {
                    sql_access =
                        Some(has_sql_access_storage(server).await.map_err(ch("reading system.user_directories"))?);
                }
                if sql_access == Some(false) {
                    skipped += 1;
                    continue;
                }
            }
            server.query(stmt).execute().await.map_err(|source| MigrateError::Statement {
                version: m.version,
                name: m.name,
                index: index + 1,
                source,
            })?;
        }
        if skipped > 0 {
            tracing::warn!(
                version = m.version,
                name = m.name,
                skipped,
                "the server keeps users in users.xml only (no SQL-managed access storage, e.g. chDB): \
                 this migration's role and grant statements were skipped; define them in users.xml"
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
    Ok(report)
}

/// Roles, users and grants: statements that need SQL-managed access control on the server.
pub fn is_access_statement(stmt: &str) -> bool {
    let head: String = stmt.split_whitespace().take(2).collect::<Vec<_>>().join(" ").to_ascii_uppercase();
    head.starts_with("GRANT ")
        || head.starts_with("REVOKE ")
        || matches!(head.as_str(), "CREATE ROLE" | "CREATE USER" | "ALTER ROLE" | "ALTER USER")
}

/// Whether the server can store SQL-defined roles and grants (a `local_directory` or
/// `replicated` user directory). clickhouse-server has one by default; clickhouse-local and
/// chDB keep users in users.xml only, where roles are defined in the XML instead.
async fn has_sql_access_storage(server: &Client) -> Result<bool, clickhouse::error::Error> {
    let n: u64 = server
        .query("SELECT count() FROM system.user_directories WHERE type IN ('local_directory', 'replicated', 'memory')")
        .fetch_one()
        .await?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::is_access_statement;

    #[test]
    fn access_statements_are_recognised() {
        assert!(is_access_statement("CREATE ROLE IF NOT EXISTS sitelog_billing"));
        assert!(is_access_statement("GRANT SELECT ON db.usage_daily TO sitelog_billing"));
        assert!(is_access_statement("grant select(a) on db.t to r"));
        assert!(!is_access_statement("CREATE TABLE IF NOT EXISTS db.grants (a UInt8) ENGINE = Memory"));
        assert!(!is_access_statement("CREATE MATERIALIZED VIEW IF NOT EXISTS db.v TO db.t AS SELECT 1"));
    }
}
