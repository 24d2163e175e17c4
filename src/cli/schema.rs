//! `sitelog schema migrate`: bring the ClickHouse database to this binary's schema version.
//! `sitelog schema grants`: print or apply every sitelog role and user (schema::access).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use sitelog_processor::store::migrate;
use sitelog_schema::access::{Render, Role};

use super::ProcessorOpts;

#[derive(clap::Args, Debug)]
pub struct SchemaArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Apply pending migrations in order, then bring every TTL to `[retention]` (altered,
    /// materialized and recorded in `retention_changes`; each change is printed). A second run
    /// does nothing. Refuses, changing nothing, if the database is newer than this binary or
    /// an applied file changed.
    Migrate {
        #[command(flatten)]
        opts: ProcessorOpts,
    },
    /// Print (default) or apply the SQL that defines every sitelog role (`sitelog_processor`,
    /// `sitelog_migrator`, `sitelog_register`, `sitelog_ops`, `sitelog_billing`,
    /// `sitelog_auditor`, `sitelog_alerts`) with least privilege on the database, and the
    /// service users holding them. Passwords never appear: a user gets
    /// `IDENTIFIED WITH sha256_hash` from `--password-sha256-dir`, else `HOST NONE` (no login).
    /// Applying again makes each role's privileges exactly the definition's.
    Grants {
        #[command(flatten)]
        opts: ProcessorOpts,
        /// Execute the statements on the server (as `[clickhouse] user`, which must be
        /// allowed to manage access) instead of printing them.
        #[arg(long)]
        apply: bool,
        /// A directory of `USER.sha256` files, each the hex SHA-256 of that user's password
        /// (e.g. `printf %s "$PW" | sha256sum | cut -d' ' -f1`).
        #[arg(long, value_name = "DIR")]
        password_sha256_dir: Option<PathBuf>,
        /// A person's user and its role, e.g. `--user alice=sitelog_ops` (repeatable).
        #[arg(long = "user", value_name = "NAME=ROLE")]
        users: Vec<String>,
    },
}

/// `USER.sha256` files of `dir`: user → hex hash (the first word, as `sha256sum` prints it).
fn read_hashes(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(user) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".sha256")) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let hash = text.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
        out.insert(user.to_owned(), hash);
    }
    Ok(out)
}

fn grants(opts: ProcessorOpts, apply: bool, hash_dir: Option<PathBuf>, users: Vec<String>) -> anyhow::Result<ExitCode> {
    let cfg = opts.load()?;
    let mut people = Vec::new();
    for u in &users {
        let (name, role) = u.split_once('=').with_context(|| format!("--user '{u}': expected NAME=ROLE"))?;
        let role = Role::from_name(role).with_context(|| {
            let all: Vec<_> = Role::ALL.iter().map(|r| r.name()).collect();
            format!("--user '{u}': '{role}' is not a sitelog role ({})", all.join(", "))
        })?;
        people.push((name.to_owned(), role));
    }
    let render = Render {
        database: &cfg.clickhouse.database,
        cluster: cfg.clickhouse.cluster.as_deref(),
        password_sha256: match &hash_dir {
            Some(d) => read_hashes(d)?,
            None => BTreeMap::new(),
        },
        people,
    };
    if !apply {
        print!("{}", render.script()?);
        return Ok(ExitCode::SUCCESS);
    }
    let statements = render.statements()?;
    let server = cfg.clickhouse.server_client()?;
    let rt = super::runtime()?;
    for (i, st) in statements.iter().enumerate() {
        // The statement may carry a password hash: name it by its first line only.
        let head = st.lines().next().unwrap_or_default();
        let head = if head.contains("IDENTIFIED") { head.split(" IDENTIFIED").next().unwrap_or(head) } else { head };
        rt.block_on(server.query(st).execute()).with_context(|| {
            format!("statement {} of {} ({head} …) at {}", i + 1, statements.len(), cfg.clickhouse.url)
        })?;
    }
    println!("applied {} statements: {} roles, users {}", statements.len(), Role::ALL.len(), {
        let mut names: Vec<String> = sitelog_schema::access::USERS.iter().map(|(u, _)| u.to_string()).collect();
        names.extend(render.people.iter().map(|(u, _)| u.clone()));
        names.join(", ")
    });
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: SchemaArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Grants { opts, apply, password_sha256_dir, users } => {
            return grants(opts, apply, password_sha256_dir, users);
        }
        Action::Migrate { opts } => {
            let cfg = opts.load()?;
            let server = cfg.clickhouse.server_client()?;
            let rt = super::runtime()?;
            let report = rt
                .block_on(migrate::migrate_on(
                    &server,
                    &cfg.clickhouse.database,
                    &cfg.retention,
                    cfg.clickhouse.cluster.as_deref(),
                ))
                .with_context(|| {
                    format!("migrating database '{}' at {}", cfg.clickhouse.database, cfg.clickhouse.url)
                })?;
            if report.applied.is_empty() {
                println!("schema is up to date (version {})", report.current_version);
            }
            for (v, name) in &report.applied {
                println!("applied migration {v:04} {name}");
            }
            for change in &report.retention_changes {
                println!("retention changed: {change}");
            }
            if report.retention_changes.is_empty() {
                println!("retention is as configured");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
