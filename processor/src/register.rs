//! The customer register: validate an export, import it as a new version (all or nothing),
//! and load the current version's sites for attribution.

use std::collections::HashSet;

use chrono::NaiveDate;
use clickhouse::Client;
use serde::{Deserialize, Serialize};
use sitelog_schema::register::{business_id_check_digit, RegisterExport};

use crate::attribute::{SiteMap, SiteSpan};

/// One problem in an export, with the place it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// e.g. `customers[3] (C0004).sites[1] (S0007)`.
    pub at: String,
    pub msg: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.msg)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("register export has {} problem(s); nothing was imported:\n  {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid(Vec<RowError>),
    #[error("{what}: {source}")]
    ClickHouse { what: &'static str, source: clickhouse::error::Error },
}

impl RegisterError {
    /// ClickHouse could not be reached (down, restarting, timed out): retrying can fix it.
    pub fn is_unreachable(&self) -> bool {
        use clickhouse::error::Error;
        matches!(self, RegisterError::ClickHouse { source: Error::Network(_) | Error::TimedOut, .. })
    }
}

fn ch(what: &'static str) -> impl FnOnce(clickhouse::error::Error) -> RegisterError {
    move |source| RegisterError::ClickHouse { what, source }
}

const METERING: &[&str] = &["requests", "visits_ip", "visits_ip_ua"];

fn date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// The sites of an export as attribution spans (dates already validated).
pub fn spans(export: &RegisterExport) -> Vec<SiteSpan> {
    let mut out = Vec::new();
    for c in &export.customers {
        for s in &c.sites {
            let mut domains = vec![s.primary_domain.clone()];
            domains.extend(s.aliases.iter().cloned());
            out.push(SiteSpan {
                site_id: s.site_id.clone(),
                customer_id: c.customer_id.clone(),
                domains,
                valid_from: date(&s.valid_from).unwrap_or(NaiveDate::MIN),
                valid_to: s.valid_to.as_deref().and_then(date),
            });
        }
    }
    out
}

/// Checks everything an import relies on; returns every problem, not just the first.
pub fn validate(export: &RegisterExport) -> Result<(), RegisterError> {
    let mut errs = Vec::new();
    let mut plans = HashSet::new();
    for (i, p) in export.plans.iter().enumerate() {
        let at = format!("plans[{i}] ({})", p.plan);
        if !METERING.contains(&p.metering.as_str()) {
            errs.push(RowError {
                at: at.clone(),
                msg: format!("metering '{}' is not one of {}", p.metering, METERING.join(", ")),
            });
        }
        if !plans.insert(p.plan.as_str()) {
            errs.push(RowError { at, msg: "duplicate plan name".into() });
        }
    }
    let (mut customers, mut sites) = (HashSet::new(), HashSet::new());
    for (i, c) in export.customers.iter().enumerate() {
        let at = format!("customers[{i}] ({})", c.customer_id);
        let mut bad = |msg: String| errs.push(RowError { at: at.clone(), msg });
        if c.customer_id.trim().is_empty() {
            bad("customer_id is empty".into());
        }
        if !customers.insert(c.customer_id.as_str()) {
            bad("duplicate customer_id".into());
        }
        if c.company_name.trim().is_empty() {
            bad("company_name is empty".into());
        }
        let valid_bid = c.business_id.split_once('-').filter(|(body, check)| {
            check.len() == 1 && business_id_check_digit(body).map(|d| d.to_string()) == Some(check.to_string())
        });
        if valid_bid.is_none() {
            bad(format!(
                "business_id '{}' is not a valid Finnish business ID (1234567-8 with its check digit)",
                c.business_id
            ));
        }
        if !c.billing_email.contains('@') {
            bad(format!("billing_email '{}' is not an e-mail address", c.billing_email));
        }
        for (k, ct) in c.contacts.iter().enumerate() {
            if !ct.email.contains('@') {
                errs.push(RowError {
                    at: format!("{at}.contacts[{k}]"),
                    msg: format!("email '{}' is not an e-mail address", ct.email),
                });
            }
        }
        for (k, s) in c.sites.iter().enumerate() {
            let sat = format!("{at}.sites[{k}] ({})", s.site_id);
            let mut sbad = |msg: String| errs.push(RowError { at: sat.clone(), msg });
            if !sites.insert(s.site_id.as_str()) {
                sbad("duplicate site_id".into());
            }
            if !plans.contains(s.plan.as_str()) {
                sbad(format!("plan '{}' is not in plans", s.plan));
            }
            if date(&s.valid_from).is_none() {
                sbad(format!("valid_from '{}' is not a YYYY-MM-DD date", s.valid_from));
            }
            if let Some(to) = &s.valid_to {
                if date(to).is_none() {
                    sbad(format!("valid_to '{to}' is not a YYYY-MM-DD date"));
                }
            }
        }
    }
    if errs.is_empty() {
        if let Err(e) = SiteMap::new(&spans(export), false) {
            errs.push(RowError { at: "sites".into(), msg: e.to_string() });
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(RegisterError::Invalid(errs))
    }
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct CustomerRow {
    version: u64,
    customer_id: String,
    company_name: String,
    business_id: String,
    billing_street: String,
    billing_postal_code: String,
    billing_city: String,
    billing_country: String,
    billing_email: String,
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct ContactRow {
    version: u64,
    customer_id: String,
    name: String,
    email: String,
    phone: String,
    role: String,
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct SiteRow {
    version: u64,
    site_id: String,
    customer_id: String,
    primary_domain: String,
    aliases: Vec<String>,
    plan: String,
    /// Days since 1970-01-01 (ClickHouse `Date`).
    valid_from: u16,
    valid_to: Option<u16>,
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct PlanRow {
    version: u64,
    plan: String,
    metering: String,
    included: u64,
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct ImportRow {
    version: u64,
    imported_at: i64,
    imported_by: String,
    source_file: String,
    sha256: String,
    customers: u32,
    sites: u32,
    contacts: u32,
}

fn days(d: NaiveDate) -> u16 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days().clamp(0, u16::MAX as i64) as u16
}

fn from_days(n: u16) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Days::new(n as u64)
}

/// The current register version (0 = never imported).
pub async fn current_version(client: &Client) -> Result<u64, RegisterError> {
    client.query("SELECT max(version) FROM register_imports").fetch_one().await.map_err(ch("reading register_imports"))
}

async fn insert_all<T>(client: &Client, table: &'static str, rows: &[T]) -> Result<(), RegisterError>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    let mut ins = client.insert::<T>(table).await.map_err(ch(table))?;
    for r in rows {
        ins.write(r).await.map_err(ch(table))?;
    }
    ins.end().await.map_err(ch(table))
}

/// Facts about a finished import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub version: u64,
    pub customers: u32,
    pub sites: u32,
    pub contacts: u32,
}

/// Validates and imports `export` as a new register version. Either the new version becomes
/// current (its `register_imports` row is written last) or nothing visible changes. Older
/// versions of personal data are deleted once the new one is current.
pub async fn import(
    client: &Client,
    export: &RegisterExport,
    imported_by: &str,
    source_file: &str,
    sha256: &str,
) -> Result<ImportReport, RegisterError> {
    validate(export)?;
    let current = current_version(client).await?;
    let v = current + 1;
    // Leftovers of an import that failed before its commit row: never visible, remove them.
    for t in ["customers", "contacts", "sites", "plans"] {
        client
            .query(&format!("ALTER TABLE {t} DELETE WHERE version > ? SETTINGS mutations_sync = 1"))
            .bind(current)
            .execute()
            .await
            .map_err(ch("removing a failed import's rows"))?;
    }
    let mut customers = Vec::new();
    let mut contacts = Vec::new();
    let mut sites = Vec::new();
    for c in &export.customers {
        let a = &c.billing_address;
        customers.push(CustomerRow {
            version: v,
            customer_id: c.customer_id.clone(),
            company_name: c.company_name.clone(),
            business_id: c.business_id.clone(),
            billing_street: a.street.clone(),
            billing_postal_code: a.postal_code.clone(),
            billing_city: a.city.clone(),
            billing_country: a.country.clone(),
            billing_email: c.billing_email.clone(),
        });
        for ct in &c.contacts {
            contacts.push(ContactRow {
                version: v,
                customer_id: c.customer_id.clone(),
                name: ct.name.clone(),
                email: ct.email.clone(),
                phone: ct.phone.clone(),
                role: ct.role.clone(),
            });
        }
        for s in &c.sites {
            sites.push(SiteRow {
                version: v,
                site_id: s.site_id.clone(),
                customer_id: c.customer_id.clone(),
                primary_domain: s.primary_domain.clone(),
                aliases: s.aliases.clone(),
                plan: s.plan.clone(),
                valid_from: days(date(&s.valid_from).expect("validated")),
                valid_to: s.valid_to.as_deref().and_then(date).map(days),
            });
        }
    }
    let plans: Vec<PlanRow> = export
        .plans
        .iter()
        .map(|p| PlanRow { version: v, plan: p.plan.clone(), metering: p.metering.clone(), included: p.included })
        .collect();
    insert_all(client, "customers", &customers).await?;
    insert_all(client, "contacts", &contacts).await?;
    insert_all(client, "sites", &sites).await?;
    insert_all(client, "plans", &plans).await?;
    let report = ImportReport {
        version: v,
        customers: customers.len() as u32,
        sites: sites.len() as u32,
        contacts: contacts.len() as u32,
    };
    let commit = ImportRow {
        version: v,
        imported_at: chrono::Utc::now().timestamp_millis(),
        imported_by: imported_by.into(),
        source_file: source_file.into(),
        sha256: sha256.into(),
        customers: report.customers,
        sites: report.sites,
        contacts: report.contacts,
    };
    insert_all(client, "register_imports", std::slice::from_ref(&commit)).await?;
    // Rectification without delay: superseded personal data goes now, not at some TTL.
    for t in ["customers", "contacts", "sites", "plans"] {
        client
            .query(&format!("ALTER TABLE {t} DELETE WHERE version < ? SETTINGS mutations_sync = 1"))
            .bind(v)
            .execute()
            .await
            .map_err(ch("deleting superseded register rows"))?;
    }
    Ok(report)
}

/// The current version's sites, ready for [`SiteMap::new`].
pub async fn load_sites(client: &Client) -> Result<(u64, Vec<SiteSpan>), RegisterError> {
    let v = current_version(client).await?;
    let rows: Vec<SiteRow> = client
        .query("SELECT ?fields FROM sites WHERE version = ? ORDER BY site_id")
        .bind(v)
        .fetch_all()
        .await
        .map_err(ch("reading sites"))?;
    let spans = rows
        .into_iter()
        .map(|r| {
            let mut domains = vec![r.primary_domain];
            domains.extend(r.aliases);
            SiteSpan {
                site_id: r.site_id,
                customer_id: r.customer_id,
                domains,
                valid_from: from_days(r.valid_from),
                valid_to: r.valid_to.map(from_days),
            }
        })
        .collect();
    Ok((v, spans))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitelog_schema::register::{Address, Customer, Plan, Site};

    fn export() -> RegisterExport {
        RegisterExport {
            exported_at: "2026-11-01T00:00:00Z".into(),
            plans: vec![Plan { plan: "start".into(), metering: "requests".into(), included: 10 }],
            customers: vec![Customer {
                customer_id: "C1".into(),
                company_name: "Kahvila Oy".into(),
                business_id: "0112038-9".into(),
                billing_address: Address {
                    street: "Katu 1".into(),
                    postal_code: "00100".into(),
                    city: "Helsinki".into(),
                    country: "FI".into(),
                },
                billing_email: "laskut@kahvila.fi".into(),
                contacts: vec![],
                sites: vec![Site {
                    site_id: "S1".into(),
                    primary_domain: "kahvila.fi".into(),
                    aliases: vec![],
                    plan: "start".into(),
                    valid_from: "2024-01-01".into(),
                    valid_to: None,
                }],
            }],
        }
    }

    #[test]
    fn errors_name_the_row() {
        validate(&export()).unwrap();
        let mut e = export();
        e.customers[0].business_id = "0112038-8".into();
        e.customers[0].sites[0].plan = "gold".into();
        e.customers[0].sites[0].valid_from = "1.1.2024".into();
        let msg = validate(&e).unwrap_err().to_string();
        assert!(msg.contains("3 problem(s)"), "{msg}");
        assert!(msg.contains("customers[0] (C1): business_id '0112038-8' is not a valid"), "{msg}");
        assert!(msg.contains("customers[0] (C1).sites[0] (S1): plan 'gold' is not in plans"), "{msg}");
        assert!(msg.contains("valid_from '1.1.2024'"), "{msg}");
    }

    #[test]
    fn date_columns_round_trip() {
        let d = NaiveDate::from_ymd_opt(2026, 10, 25).unwrap();
        assert_eq!(from_days(days(d)), d);
    }
}
