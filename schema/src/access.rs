//! Who may do what in ClickHouse: every sitelog role and user, from one table-driven
//! definition ([`TABLES`], [`DATABASE`], [`USERS`]), rendered as SQL that a ClickHouse server
//! with SQL-managed access control accepts (`sitelog schema grants`, and
//! `deploy/clickhouse/grants.sql`, which is that command's output).
//!
//! Least privilege by purpose of the privacy notice: the processor writes what the sink
//! stores and reads the bookkeeping it needs; only the migrator changes schema; the register
//! import writes the register; ops read raw records, health and security data; billing reads
//! usage and the register's billing fields; auditors read the accountability tables; the alert
//! runner reads health and writes incidents.
//!
//! Each role's grants are written as ONE statement `GRANT … TO role WITH REPLACE OPTION`, so
//! applying the script again makes the role's privileges exactly the definition's (a grant
//! removed here is revoked there) without a moment in which the role has none.
//!
//! Every grant says why it exists ([`Why`]): a command that uses it (the integration test
//! `tests/schema_grants.rs` runs those commands and checks that what they send is granted, and
//! that every `Why::Command` grant is used), a materialized view's push, people reading with
//! other tools, or a table/command another branch is adding (ClickHouse accepts grants on
//! tables that do not exist yet).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A sitelog role. Names are `sitelog_<purpose>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// `sitelog process`: the sink and its bookkeeping.
    Processor,
    /// `sitelog schema migrate`: the only role that creates or alters tables.
    Migrator,
    /// `sitelog customers import`: writes the customer register.
    Register,
    /// People investigating incidents and attacks (`security`, `investigate`, reports).
    Ops,
    /// `sitelog report billing`: usage and the register's billing fields only.
    Billing,
    /// People checking who looked at what, imports, billing runs and retention changes.
    Auditor,
    /// `sitelog alerts run`: reads health, writes incidents and notifications.
    Alerts,
}

impl Role {
    pub const ALL: [Role; 7] =
        [Role::Processor, Role::Migrator, Role::Register, Role::Ops, Role::Billing, Role::Auditor, Role::Alerts];

    pub fn name(self) -> &'static str {
        match self {
            Role::Processor => "sitelog_processor",
            Role::Migrator => "sitelog_migrator",
            Role::Register => "sitelog_register",
            Role::Ops => "sitelog_ops",
            Role::Billing => "sitelog_billing",
            Role::Auditor => "sitelog_auditor",
            Role::Alerts => "sitelog_alerts",
        }
    }

    pub fn purpose(self) -> &'static str {
        match self {
            Role::Processor => "sitelog process: inserts what the sink stores, reads its bookkeeping and the site map",
            Role::Migrator => "sitelog schema migrate: the only role that creates or alters tables",
            Role::Register => "sitelog customers import: writes the register, deletes superseded versions",
            Role::Ops => "incidents and attacks: raw records, health, security events, who to tell",
            Role::Billing => "month end: usage and the register's billing fields, never addresses or contacts",
            Role::Auditor => "accountability: the access audit, imports, billing runs, retention changes",
            Role::Alerts => "sitelog alerts run: reads health, writes incidents and notifications",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// A privilege on one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    Select,
    /// `SELECT(columns)`: only these columns.
    SelectColumns(&'static [&'static str]),
    Insert,
    /// `ALTER DELETE`: mutations deleting rows.
    AlterDelete,
}

impl Privilege {
    /// As ClickHouse writes it in a GRANT.
    pub fn sql(self) -> String {
        match self {
            Privilege::Select => "SELECT".into(),
            Privilege::SelectColumns(cols) => format!("SELECT({})", cols.join(", ")),
            Privilege::Insert => "INSERT".into(),
            Privilege::AlterDelete => "ALTER DELETE".into(),
        }
    }

    /// The access type without columns (`SELECT`, `INSERT`, `ALTER DELETE`).
    pub fn kind(self) -> &'static str {
        match self {
            Privilege::Select | Privilege::SelectColumns(_) => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::AlterDelete => "ALTER DELETE",
        }
    }
}

/// Why a grant exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A sitelog command of the role sends statements that need it (checked by running them).
    Command,
    /// A materialized view pushes the inserted rows into this table with the inserting (or,
    /// on servers with `SQL SECURITY DEFINER` views, the defining) user's rights.
    MaterializedView,
    /// People read it with other tools (clickhouse-client, dashboards).
    Direct(&'static str),
    /// Used by a table or command still being added (named); ClickHouse accepts the grant now.
    Pending(&'static str),
}

/// One grant: a role's privilege on a table and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    pub privilege: Privilege,
    pub why: Why,
}

/// A table of the sitelog database and who may do what with it.
#[derive(Debug, Clone, Copy)]
pub struct TableAccess {
    pub table: &'static str,
    pub grants: &'static [Grant],
}

const fn g(role: Role, privilege: Privilege, why: Why) -> Grant {
    Grant { role, privilege, why }
}

use Privilege::{AlterDelete, Insert, Select, SelectColumns};
use Role::{Alerts, Auditor, Billing, Migrator, Ops, Processor, Register};
use Why::{Command, Direct, MaterializedView};

const DASHBOARDS: &str = "dashboards and clickhouse-client";

/// The register's tables: the import writes them (new version, then deletes superseded ones).
const REGISTER_WRITE: [Grant; 2] = [g(Register, Insert, Command), g(Register, AlterDelete, Command)];

/// Every table and its grants. Tables of other branches are listed with `Why::Pending`.
pub const TABLES: &[TableAccess] = &[
    TableAccess {
        table: "access_log",
        grants: &[
            g(Processor, Insert, Command),
            g(Ops, Select, Command),
            g(Billing, SelectColumns(&["ts", "customer_id", "site_id", "bytes_sent", "is_bot"]), Command),
            // The rollup views' definer (SQL SECURITY DEFINER, the default of current servers)
            // is the user that created them.
            g(Migrator, Select, MaterializedView),
        ],
    },
    TableAccess {
        table: "usage_daily",
        grants: &[
            g(Processor, Insert, MaterializedView),
            g(Migrator, Insert, MaterializedView),
            g(Billing, Select, Command),
            g(Ops, Select, Command),
        ],
    },
    TableAccess {
        table: "site_health_minute",
        grants: &[
            g(Processor, Insert, MaterializedView),
            g(Migrator, Insert, MaterializedView),
            g(Ops, Select, Direct(DASHBOARDS)),
        ],
    },
    TableAccess {
        table: "health_minute",
        grants: &[
            g(Processor, Insert, MaterializedView),
            g(Migrator, Insert, MaterializedView),
            g(Ops, Select, Command),
            g(Alerts, Select, Command),
        ],
    },
    TableAccess {
        table: "collector_heartbeats",
        grants: &[
            g(Processor, Insert, Command),
            // `sitelog serve`'s Now page: data freshness per collector source.
            g(Ops, Select, Command),
            g(
                Billing,
                SelectColumns(&["server", "source", "sent_at", "delivered_through", "position", "idle"]),
                Command,
            ),
        ],
    },
    TableAccess {
        table: "incidents",
        grants: &[g(Alerts, Select, Command), g(Alerts, Insert, Command), g(Ops, Select, Command)],
    },
    TableAccess {
        table: "incident_notifications",
        grants: &[g(Alerts, Select, Command), g(Alerts, Insert, Command), g(Ops, Select, Direct(DASHBOARDS))],
    },
    TableAccess { table: "alerts_progress", grants: &[g(Alerts, Select, Command), g(Alerts, Insert, Command)] },
    TableAccess {
        table: "register_imports",
        grants: &[
            g(Register, Select, Command),
            g(Register, Insert, Command),
            g(Processor, SelectColumns(&["version"]), Command),
            g(Billing, SelectColumns(&["version", "imported_at"]), Command),
            g(Ops, SelectColumns(&["version"]), Command),
            g(Auditor, Select, Direct(DASHBOARDS)),
        ],
    },
    TableAccess {
        table: "customers",
        grants: &[
            REGISTER_WRITE[0],
            REGISTER_WRITE[1],
            g(
                Billing,
                SelectColumns(&[
                    "version",
                    "customer_id",
                    "company_name",
                    "business_id",
                    "billing_street",
                    "billing_postal_code",
                    "billing_city",
                    "billing_country",
                    "billing_email",
                ]),
                Command,
            ),
            g(Ops, SelectColumns(&["version", "customer_id", "company_name"]), Command),
        ],
    },
    TableAccess { table: "contacts", grants: &[REGISTER_WRITE[0], REGISTER_WRITE[1], g(Ops, Select, Command)] },
    TableAccess {
        table: "sites",
        grants: &[
            REGISTER_WRITE[0],
            REGISTER_WRITE[1],
            g(
                Processor,
                SelectColumns(&[
                    "version",
                    "site_id",
                    "customer_id",
                    "primary_domain",
                    "aliases",
                    "plan",
                    "valid_from",
                    "valid_to",
                ]),
                Command,
            ),
            g(
                Billing,
                SelectColumns(&[
                    "version",
                    "site_id",
                    "customer_id",
                    "primary_domain",
                    "plan",
                    "valid_from",
                    "valid_to",
                ]),
                Command,
            ),
            g(Ops, Select, Direct(DASHBOARDS)),
        ],
    },
    TableAccess {
        table: "plans",
        grants: &[
            REGISTER_WRITE[0],
            REGISTER_WRITE[1],
            g(Billing, SelectColumns(&["version", "plan", "metering", "included"]), Command),
        ],
    },
    TableAccess { table: "sink_intents", grants: &[g(Processor, Select, Command), g(Processor, Insert, Command)] },
    TableAccess {
        table: "source_progress",
        grants: &[
            g(Processor, Select, Command),
            g(Processor, Insert, Command),
            g(Billing, SelectColumns(&["fingerprint", "site_host", "max_offset", "max_ts", "records"]), Command),
        ],
    },
    TableAccess {
        table: "billing_runs",
        grants: &[g(Billing, Select, Command), g(Billing, Insert, Command), g(Auditor, Select, Direct(DASHBOARDS))],
    },
    TableAccess {
        table: "billing_run_lines",
        grants: &[g(Billing, Select, Command), g(Billing, Insert, Command), g(Auditor, Select, Direct(DASHBOARDS))],
    },
    TableAccess { table: "security_events", grants: &[g(Processor, Insert, Command), g(Ops, Select, Command)] },
    TableAccess { table: "security_signals", grants: &[g(Processor, Insert, Command), g(Ops, Select, Command)] },
    TableAccess {
        table: "access_audit",
        // Ops write who looked and why before anything is shown; only auditors read it; no
        // role may alter or delete it.
        grants: &[g(Ops, Insert, Command), g(Auditor, Select, Command)],
    },
    TableAccess {
        table: "retention_changes",
        grants: &[g(Migrator, Insert, Command), g(Auditor, Select, Direct(DASHBOARDS))],
    },
    TableAccess { table: "schema_migrations", grants: &[g(Migrator, Select, Command), g(Migrator, Insert, Command)] },
];

/// Database-wide privileges (`ON db.*`): the migrator's schema changes. Nothing else is
/// granted database-wide.
/// `DROP VIEW` is there for `DETACH TABLE` of a view (ClickHouse checks a detach as a drop):
/// the migrator re-attaches every view it changes (`sitelog_processor::store::migrate`); its
/// `ATTACH` is a `CREATE VIEW`.
pub const DATABASE: &[(Role, &str)] = &[(
    Migrator,
    "CREATE DATABASE, CREATE TABLE, CREATE VIEW, DROP VIEW, ALTER ADD COLUMN, ALTER MODIFY COLUMN, ALTER TTL, ALTER VIEW MODIFY QUERY",
)];

/// The service users sitelog's own processes log in as, and their one role. People (ops,
/// auditors) get their own users with `--user NAME=ROLE`.
pub const USERS: &[(&str, Role)] = &[
    ("sitelog_processor_user", Processor),
    ("sitelog_migrator_user", Migrator),
    ("sitelog_register_user", Register),
    ("sitelog_billing_user", Billing),
    ("sitelog_alerts_user", Alerts),
    // `sitelog serve` (the web console) reads as ops; people get their own ops users.
    ("sitelog_console_user", Ops),
];

/// What to render.
#[derive(Debug, Clone, Default)]
pub struct Render<'a> {
    pub database: &'a str,
    /// `ON CLUSTER` for every statement (servers whose access storage is not replicated).
    pub cluster: Option<&'a str>,
    /// User → SHA-256 of its password (hex), set at apply time. Users without one are created
    /// with `HOST NONE` (nobody can log in) until a hash is given.
    pub password_sha256: BTreeMap<String, String>,
    /// People's users: name → role.
    pub people: Vec<(String, Role)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("'{0}' is not a valid name (letters, digits and _ only)")]
    Name(String),
    #[error("the password hash of '{user}' must be 64 hex digits (SHA-256), not {len} characters")]
    Hash { user: String, len: usize },
    #[error("a password hash was given for '{0}', which is no sitelog user")]
    UnknownUser(String),
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The grants of one role, in definition order: (table, privilege, why).
pub fn grants_of(role: Role) -> Vec<(&'static str, Grant)> {
    TABLES.iter().flat_map(|t| t.grants.iter().filter(move |g| g.role == role).map(move |g| (t.table, *g))).collect()
}

impl Render<'_> {
    fn on_cluster(&self) -> String {
        self.cluster.map(|c| format!(" ON CLUSTER {c}")).unwrap_or_default()
    }

    fn users(&self) -> Vec<(String, Role)> {
        USERS.iter().map(|(u, r)| (u.to_string(), *r)).chain(self.people.iter().cloned()).collect()
    }

    fn check(&self) -> Result<(), RenderError> {
        for name in [self.database].into_iter().chain(self.cluster).chain(self.people.iter().map(|(u, _)| u.as_str())) {
            if !valid_name(name) {
                return Err(RenderError::Name(name.to_owned()));
            }
        }
        let users = self.users();
        for (user, hash) in &self.password_sha256 {
            if !users.iter().any(|(u, _)| u == user) {
                return Err(RenderError::UnknownUser(user.clone()));
            }
            if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(RenderError::Hash { user: user.clone(), len: hash.len() });
            }
        }
        Ok(())
    }

    /// The GRANT statement of one role (privileges only), without `TO …`.
    pub fn role_privileges(&self, role: Role) -> String {
        let db = self.database;
        let mut parts: Vec<String> =
            DATABASE.iter().filter(|(r, _)| *r == role).map(|(_, p)| format!("{p} ON {db}.*")).collect();
        if role == Migrator && self.cluster.is_some() {
            parts.push("CLUSTER ON *.*".into());
        }
        let mut by_table: Vec<(String, Vec<String>)> = Vec::new();
        for (table, grant) in grants_of(role) {
            // On a cluster a sharded table is a Distributed table over `<table>_local`; reads
            // and inserts reach the local tables as the same user.
            let mut names = vec![table.to_owned()];
            if self.cluster.is_some() && crate::cluster::SHARDED.contains(&table) {
                names.push(crate::cluster::local_name(table));
            }
            for name in names {
                match by_table.iter_mut().find(|(t, _)| *t == name) {
                    Some((_, ps)) => ps.push(grant.privilege.sql()),
                    None => by_table.push((name, vec![grant.privilege.sql()])),
                }
            }
        }
        parts.extend(by_table.into_iter().map(|(t, ps)| format!("{} ON {db}.{t}", ps.join(", "))));
        format!("GRANT{}\n    {}", self.on_cluster(), parts.join(",\n    "))
    }

    /// Every statement, in the order to apply them.
    pub fn statements(&self) -> Result<Vec<String>, RenderError> {
        Ok(self.sections()?.into_iter().flat_map(|(_, s)| s).collect())
    }

    /// Statements grouped under a comment each.
    fn sections(&self) -> Result<Vec<(String, Vec<String>)>, RenderError> {
        self.check()?;
        let oc = self.on_cluster();
        let mut out = Vec::new();
        for role in Role::ALL {
            let r = role.name();
            out.push((
                format!("{r}: {}", role.purpose()),
                vec![
                    format!("CREATE ROLE IF NOT EXISTS {r}{oc}"),
                    format!("{}\nTO {r} WITH REPLACE OPTION", self.role_privileges(role)),
                ],
            ));
        }
        let mut users = Vec::new();
        for (user, role) in self.users() {
            let r = role.name();
            users.push(format!("CREATE USER IF NOT EXISTS {user}{oc} HOST NONE"));
            if let Some(hash) = self.password_sha256.get(&user) {
                users.push(format!("ALTER USER {user}{oc} IDENTIFIED WITH sha256_hash BY '{hash}' HOST ANY"));
            }
            users.push(format!("GRANT{oc} {r} TO {user} WITH REPLACE OPTION"));
            users.push(format!("ALTER USER {user}{oc} DEFAULT ROLE {r}"));
        }
        out.push((
            "Users: each holds exactly one role. Created with HOST NONE (nobody can log in) until \
             `sitelog schema grants --apply --password-sha256-dir DIR` sets the SHA-256 of its password"
                .into(),
            users,
        ));
        Ok(out)
    }

    /// The script `sitelog schema grants` prints: comments, and each statement ending in `;`.
    pub fn script(&self) -> Result<String, RenderError> {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "-- sitelog roles and users for database `{}` (sitelog schema grants{}{}).\n\
             -- Generated from schema/src/access.rs: edit the definition there, never this output.\n\
             -- Needs SQL-managed access control (clickhouse-server's local_directory or replicated\n\
             -- user directory) and a user allowed to manage access. No password appears here.",
            self.database,
            if self.database == "sitelog" { String::new() } else { format!(" --database {}", self.database) },
            self.cluster.map(|c| format!(", cluster {c}")).unwrap_or_default(),
        );
        for (comment, stmts) in self.sections()? {
            let _ = writeln!(s, "\n-- {comment}");
            for st in stmts {
                let _ = writeln!(s, "{st};");
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render() -> Render<'static> {
        Render { database: "sitelog", ..Default::default() }
    }

    #[test]
    fn every_role_has_one_replacing_grant_and_users_one_role() {
        let st = render().statements().unwrap();
        for role in Role::ALL {
            let grants: Vec<_> =
                st.iter().filter(|s| s.ends_with(&format!("TO {} WITH REPLACE OPTION", role.name()))).collect();
            assert_eq!(grants.len(), 1, "{role:?}");
            assert!(st.contains(&format!("CREATE ROLE IF NOT EXISTS {}", role.name())));
        }
        for (user, role) in USERS {
            assert!(st.contains(&format!("GRANT {} TO {user} WITH REPLACE OPTION", role.name())));
            assert!(st.contains(&format!("CREATE USER IF NOT EXISTS {user} HOST NONE")));
        }
        assert!(!st.iter().any(|s| s.contains("IDENTIFIED")), "no password without a hash");
    }

    #[test]
    fn tables_are_listed_once_and_grants_are_not_repeated() {
        let mut seen = std::collections::BTreeSet::new();
        for t in TABLES {
            assert!(seen.insert(t.table), "{} twice", t.table);
            for (i, a) in t.grants.iter().enumerate() {
                for b in &t.grants[i + 1..] {
                    assert!(
                        !(a.role == b.role && a.privilege.kind() == b.privilege.kind()),
                        "{}: {a:?} twice",
                        t.table
                    );
                }
            }
        }
    }

    #[test]
    fn hashes_and_names_are_checked() {
        let mut r = render();
        r.password_sha256.insert("sitelog_billing_user".into(), "ab".repeat(32));
        let st = r.statements().unwrap();
        assert!(st.contains(&format!(
            "ALTER USER sitelog_billing_user IDENTIFIED WITH sha256_hash BY '{}' HOST ANY",
            "ab".repeat(32)
        )));
        r.password_sha256.insert("sitelog_billing_user".into(), "secret".into());
        assert_eq!(r.statements().unwrap_err(), RenderError::Hash { user: "sitelog_billing_user".into(), len: 6 });
        let mut r = render();
        r.password_sha256.insert("mallory".into(), "ab".repeat(32));
        assert_eq!(r.statements().unwrap_err(), RenderError::UnknownUser("mallory".into()));
        let r = Render { database: "x; DROP", ..Default::default() };
        assert!(r.statements().is_err());
        let r = Render { database: "sitelog", people: vec![("alice".into(), Ops)], ..Default::default() };
        assert!(r.statements().unwrap().contains(&"GRANT sitelog_ops TO alice WITH REPLACE OPTION".to_string()));
    }

    #[test]
    fn cluster_puts_every_statement_on_the_cluster() {
        let r = Render { database: "sitelog", cluster: Some("logs"), ..Default::default() };
        for s in r.statements().unwrap() {
            assert!(s.contains(" ON CLUSTER logs"), "{s}");
        }
        assert!(r.role_privileges(Migrator).contains("CLUSTER ON *.*"));
        let ops = r.role_privileges(Ops);
        assert!(ops.contains("SELECT ON sitelog.access_log,") && ops.contains("SELECT ON sitelog.access_log_local,"));
        assert!(!ops.contains("access_audit_local"));
    }

    #[test]
    fn billing_never_reads_addresses_contacts_or_request_content() {
        for (table, g) in grants_of(Billing) {
            if let Privilege::Select = g.privilege {
                assert!(!["access_log", "contacts", "customers", "sites"].contains(&table), "{table}");
            }
            assert_ne!(table, "contacts");
            if let Privilege::SelectColumns(cols) = g.privilege {
                for c in ["client_ip", "client_net", "user_agent", "path", "query", "referer", "email", "phone"] {
                    assert!(!cols.contains(&c), "{table}.{c}");
                }
            }
        }
        // Only the migrator changes schema; nobody may delete the audit trail.
        for t in TABLES {
            for g in t.grants {
                if g.privilege == AlterDelete {
                    assert_eq!(g.role, Register, "{}", t.table);
                    assert!(["register_imports", "customers", "contacts", "sites", "plans"].contains(&t.table));
                }
            }
        }
        assert!(DATABASE.iter().all(|(r, _)| *r == Migrator));
    }
}
