//! Reading a month's figures out of ClickHouse: the register's plans (billing fields only) and
//! the usage rollup, through the statements in `sql.rs`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use clickhouse::Client;
use serde::Deserialize;

use super::figures::{Measures, Metering, SiteLine};
use super::month::Month;
use super::{ch, sql, BillingError};

#[derive(Debug, clickhouse::Row, Deserialize)]
struct PlanRow {
    plan: String,
    metering: String,
    included: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct SiteRow {
    site_id: String,
    customer_id: String,
    primary_domain: String,
    plan: String,
    valid_from_s: String,
    valid_to_s: String,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct CustomerRow {
    customer_id: String,
    company_name: String,
    business_id: String,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct UsageRow {
    customer_id: String,
    site_id: String,
    requests: u64,
    bytes_sent: u64,
    bot_requests: u64,
    visits_ip: u64,
    visits_ip_ua: u64,
    #[allow(dead_code)]
    days: u32,
}

/// A site as the register states it.
#[derive(Debug, Clone)]
pub struct RegisterSite {
    pub customer_id: String,
    pub primary_domain: String,
    pub plan: String,
    pub valid_from: Option<NaiveDate>,
    pub valid_to: Option<NaiveDate>,
}

/// The register's billing fields at one version.
#[derive(Debug, Clone, Default)]
pub struct Register {
    pub version: u64,
    /// plan → (metering, included); a metering rule this build does not know is `Err(name)`.
    pub plans: BTreeMap<String, (Result<Metering, String>, u64)>,
    pub sites: BTreeMap<String, RegisterSite>,
    /// customer_id → (company name, business ID).
    pub customers: BTreeMap<String, (String, String)>,
}

impl Register {
    /// The plan terms for a site: (plan, metering, included), or a problem description.
    pub fn terms(&self, site_id: &str) -> Result<(String, Metering, u64), String> {
        let site = self
            .sites
            .get(site_id)
            .ok_or_else(|| format!("site {site_id} is not in register version {}", self.version))?;
        let (metering, included) = self.plans.get(&site.plan).ok_or_else(|| {
            format!("site {site_id}: plan '{}' is not in register version {}", site.plan, self.version)
        })?;
        match metering {
            Ok(m) => Ok((site.plan.clone(), *m, *included)),
            Err(name) => Err(format!(
                "site {site_id}: plan '{}' has metering '{name}' which this sitelog does not know",
                site.plan
            )),
        }
    }

    /// Whether the site was owned by someone during any day of `month`.
    fn site_active_in(&self, s: &RegisterSite, month: Month) -> bool {
        let first = month.first_day();
        let next = month.next().first_day();
        s.valid_from.is_none_or(|f| f < next) && s.valid_to.is_none_or(|t| t > first)
    }
}

pub async fn load_register(client: &Client) -> Result<Register, BillingError> {
    let version: u64 =
        client.query(sql::REGISTER_VERSION.sql).fetch_one().await.map_err(ch("reading register_imports"))?;
    if version == 0 {
        return Err(BillingError::NoRegister);
    }
    let plans: Vec<PlanRow> =
        client.query(sql::PLANS.sql).bind(version).fetch_all().await.map_err(ch("reading plans"))?;
    let sites: Vec<SiteRow> =
        client.query(sql::SITES.sql).bind(version).fetch_all().await.map_err(ch("reading sites"))?;
    let customers: Vec<CustomerRow> =
        client.query(sql::CUSTOMERS.sql).bind(version).fetch_all().await.map_err(ch("reading customers"))?;
    let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    Ok(Register {
        version,
        plans: plans
            .into_iter()
            .map(|p| (p.plan, (p.metering.parse::<Metering>().map_err(|_| p.metering.clone()), p.included)))
            .collect(),
        sites: sites
            .into_iter()
            .map(|s| {
                let site = RegisterSite {
                    customer_id: s.customer_id,
                    primary_domain: s.primary_domain,
                    plan: s.plan,
                    valid_from: date(&s.valid_from_s),
                    valid_to: date(&s.valid_to_s),
                };
                (s.site_id, site)
            })
            .collect(),
        customers: customers.into_iter().map(|c| (c.customer_id, (c.company_name, c.business_id))).collect(),
    })
}

/// Usage of one month as measured, before any plan applies. `None` customer = unattributed.
#[derive(Debug, Clone, Default)]
pub struct MonthUsage {
    /// (customer_id, site_id) → measures; attributed traffic only.
    pub sites: BTreeMap<(String, String), Measures>,
    /// Requests of hosts no site owned at the time (never billed).
    pub unattributed: Measures,
}

pub async fn load_usage(client: &Client, month: Month, customer: Option<&str>) -> Result<MonthUsage, BillingError> {
    let c = customer.unwrap_or("");
    let rows: Vec<UsageRow> = client
        .query(sql::USAGE_MONTH.sql)
        .bind(month.first_day().to_string())
        .bind(month.next().first_day().to_string())
        .bind(c)
        .bind(c)
        .fetch_all()
        .await
        .map_err(ch("reading usage_daily"))?;
    let mut out = MonthUsage::default();
    for r in rows {
        let m = Measures::new(r.requests, r.bytes_sent, r.bot_requests, r.visits_ip, r.visits_ip_ua);
        if r.customer_id.is_empty() {
            out.unattributed.add(&m);
        } else {
            out.sites.insert((r.customer_id, r.site_id), m);
        }
    }
    Ok(out)
}

/// Site lines for `month`: every site with usage, plus every site the register says was owned
/// during the month (with zero usage). Attribution comes from the rollup (who owned the host
/// at the request's time); the plan terms from the register. Sites without valid terms get
/// an unbilled line and a problem.
pub fn site_lines(
    usage: &MonthUsage,
    register: &Register,
    month: Month,
    customer: Option<&str>,
) -> (Vec<SiteLine>, Vec<String>) {
    let mut keys: BTreeSet<(String, String)> = usage.sites.keys().cloned().collect();
    for (site_id, s) in &register.sites {
        if register.site_active_in(s, month) && customer.is_none_or(|c| c == s.customer_id) {
            keys.insert((s.customer_id.clone(), site_id.clone()));
        }
    }
    let mut problems = Vec::new();
    let lines = keys
        .into_iter()
        .map(|(c, s)| {
            let measures = usage.sites.get(&(c.clone(), s.clone())).copied().unwrap_or_default();
            match register.terms(&s) {
                Ok((plan, metering, included)) => SiteLine::new(&c, &s, &plan, Some(metering), included, measures),
                Err(p) => {
                    problems.push(p);
                    SiteLine::new(&c, &s, "", None, 0, measures)
                }
            }
        })
        .collect();
    (lines, problems)
}
