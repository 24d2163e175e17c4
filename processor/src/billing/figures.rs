//! The figures of a billing month: metering rules, per-site lines and per-customer totals.
//! Pure data and arithmetic; reading them from ClickHouse is `compute.rs`, freezing them
//! `runs.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// How a plan's allowance is counted (README, "Billing").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metering {
    /// Every logged HTTP request in the month, humans and bots alike.
    Requests,
    /// Unique client IP per site per Helsinki day (no static assets, known bots, 403s), summed.
    VisitsIp,
    /// Unique IP + user agent per site per day (2xx and 303/304/305 dynamic human requests), summed.
    VisitsIpUa,
}

impl Metering {
    pub fn as_str(self) -> &'static str {
        match self {
            Metering::Requests => "requests",
            Metering::VisitsIp => "visits_ip",
            Metering::VisitsIpUa => "visits_ip_ua",
        }
    }
}

impl fmt::Display for Metering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Metering {
    type Err = String;

    fn from_str(s: &str) -> Result<Metering, String> {
        match s {
            "requests" => Ok(Metering::Requests),
            "visits_ip" => Ok(Metering::VisitsIp),
            "visits_ip_ua" => Ok(Metering::VisitsIpUa),
            other => Err(format!("unknown metering rule '{other}'")),
        }
    }
}

/// What was measured for a site (or customer) in a month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Measures {
    pub requests: u64,
    pub bytes_sent: u64,
    pub human_requests: u64,
    pub bot_requests: u64,
    pub visits_ip: u64,
    pub visits_ip_ua: u64,
}

impl Measures {
    pub fn new(requests: u64, bytes_sent: u64, bot_requests: u64, visits_ip: u64, visits_ip_ua: u64) -> Measures {
        Measures {
            requests,
            bytes_sent,
            human_requests: requests.saturating_sub(bot_requests),
            bot_requests,
            visits_ip,
            visits_ip_ua,
        }
    }

    /// The usage a metering rule bills.
    pub fn billed(&self, m: Metering) -> u64 {
        match m {
            Metering::Requests => self.requests,
            Metering::VisitsIp => self.visits_ip,
            Metering::VisitsIpUa => self.visits_ip_ua,
        }
    }

    pub fn add(&mut self, o: &Measures) {
        self.requests += o.requests;
        self.bytes_sent += o.bytes_sent;
        self.human_requests += o.human_requests;
        self.bot_requests += o.bot_requests;
        self.visits_ip += o.visits_ip;
        self.visits_ip_ua += o.visits_ip_ua;
    }
}

/// One site of one customer in one month: the invoice line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteLine {
    pub customer_id: String,
    pub site_id: String,
    /// Empty when the register has no such site (then nothing is billed: a problem is listed).
    pub plan: String,
    /// `None` when the site or its plan is missing from the register.
    pub metering: Option<Metering>,
    /// The plan's monthly allowance in its metering unit (not prorated).
    pub included: u64,
    pub billed_usage: u64,
    /// `max(0, billed_usage - included)`.
    pub overage: u64,
    #[serde(flatten)]
    pub measures: Measures,
}

impl SiteLine {
    pub fn new(
        customer_id: &str,
        site_id: &str,
        plan: &str,
        metering: Option<Metering>,
        included: u64,
        measures: Measures,
    ) -> SiteLine {
        let billed_usage = metering.map_or(0, |m| measures.billed(m));
        SiteLine {
            customer_id: customer_id.into(),
            site_id: site_id.into(),
            plan: plan.into(),
            metering,
            included,
            billed_usage,
            overage: billed_usage.saturating_sub(included),
            measures,
        }
    }
}

/// A customer's totals: measures summed over its sites. Allowances and overage are per site
/// (a plan belongs to a site); they are summed here only when all sites share one metering
/// unit, otherwise the customer's metering is `mixed` and the site lines are the invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerTotal {
    pub metering: String,
    pub included: Option<u64>,
    pub billed_usage: Option<u64>,
    pub overage: Option<u64>,
    #[serde(flatten)]
    pub measures: Measures,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerBlock {
    pub customer_id: String,
    pub company_name: String,
    pub business_id: String,
    pub total: CustomerTotal,
    pub sites: Vec<SiteLine>,
}

pub fn customer_total(sites: &[SiteLine]) -> CustomerTotal {
    let mut measures = Measures::default();
    sites.iter().for_each(|s| measures.add(&s.measures));
    let mut rules: Vec<Option<Metering>> = sites.iter().map(|s| s.metering).collect();
    rules.dedup();
    let uniform = match rules.as_slice() {
        [Some(m)] => Some(*m),
        _ => None,
    };
    match uniform {
        Some(m) => CustomerTotal {
            metering: m.as_str().into(),
            included: Some(sites.iter().map(|s| s.included).sum()),
            billed_usage: Some(sites.iter().map(|s| s.billed_usage).sum()),
            overage: Some(sites.iter().map(|s| s.overage).sum()),
            measures,
        },
        None => CustomerTotal {
            metering: if sites.is_empty() { String::new() } else { "mixed".into() },
            included: None,
            billed_usage: None,
            overage: None,
            measures,
        },
    }
}

/// Groups site lines (any order) into customer blocks sorted by customer and site id.
pub fn group(lines: &[SiteLine], names: &BTreeMap<String, (String, String)>) -> Vec<CustomerBlock> {
    let mut by: BTreeMap<&str, Vec<SiteLine>> = BTreeMap::new();
    for l in lines {
        by.entry(&l.customer_id).or_default().push(l.clone());
    }
    by.into_iter()
        .map(|(c, mut sites)| {
            sites.sort_by(|a, b| a.site_id.cmp(&b.site_id));
            let (company_name, business_id) = names.get(c).cloned().unwrap_or_default();
            CustomerBlock { customer_id: c.into(), company_name, business_id, total: customer_total(&sites), sites }
        })
        .collect()
}

/// A signed change to an earlier, closed month's site line (late records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adjustment {
    pub applies_to: String,
    pub customer_id: String,
    pub site_id: String,
    pub plan: String,
    pub metering: Option<Metering>,
    pub included: u64,
    pub billed_usage: i64,
    pub overage: i64,
    pub requests: i64,
    pub bytes_sent: i64,
    pub human_requests: i64,
    pub bot_requests: i64,
    pub visits_ip: i64,
    pub visits_ip_ua: i64,
}

impl Adjustment {
    /// `now - before` for one site, `None` if nothing changed.
    pub fn between(applies_to: &str, before: &SiteLine, now: &SiteLine) -> Option<Adjustment> {
        let d = |a: u64, b: u64| a as i64 - b as i64;
        let adj = Adjustment {
            applies_to: applies_to.into(),
            customer_id: now.customer_id.clone(),
            site_id: now.site_id.clone(),
            plan: before.plan.clone(),
            metering: before.metering,
            included: before.included,
            billed_usage: d(now.billed_usage, before.billed_usage),
            overage: d(now.overage, before.overage),
            requests: d(now.measures.requests, before.measures.requests),
            bytes_sent: d(now.measures.bytes_sent, before.measures.bytes_sent),
            human_requests: d(now.measures.human_requests, before.measures.human_requests),
            bot_requests: d(now.measures.bot_requests, before.measures.bot_requests),
            visits_ip: d(now.measures.visits_ip, before.measures.visits_ip),
            visits_ip_ua: d(now.measures.visits_ip_ua, before.measures.visits_ip_ua),
        };
        let zero = [
            adj.billed_usage,
            adj.overage,
            adj.requests,
            adj.bytes_sent,
            adj.bot_requests,
            adj.visits_ip,
            adj.visits_ip_ua,
        ]
        .iter()
        .all(|v| *v == 0);
        (!zero).then_some(adj)
    }

    /// Applies this change to `line` (used to sum a closed month with its recorded adjustments).
    pub fn apply(&self, line: &mut SiteLine) {
        let a = |v: &mut u64, d: i64| *v = (*v as i64 + d).max(0) as u64;
        a(&mut line.billed_usage, self.billed_usage);
        a(&mut line.overage, self.overage);
        a(&mut line.measures.requests, self.requests);
        a(&mut line.measures.bytes_sent, self.bytes_sent);
        a(&mut line.measures.human_requests, self.human_requests);
        a(&mut line.measures.bot_requests, self.bot_requests);
        a(&mut line.measures.visits_ip, self.visits_ip);
        a(&mut line.measures.visits_ip_ua, self.visits_ip_ua);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overage_is_usage_above_the_allowance_per_site() {
        let m = Measures::new(1500, 10, 200, 90, 40);
        assert_eq!(m.human_requests, 1300);
        let l = SiteLine::new("C1", "S1", "start", Some(Metering::Requests), 1000, m);
        assert_eq!((l.billed_usage, l.overage), (1500, 500));
        let l = SiteLine::new("C1", "S2", "business", Some(Metering::VisitsIp), 100, m);
        assert_eq!((l.billed_usage, l.overage), (90, 0));
        let l = SiteLine::new("C1", "S3", "ent", Some(Metering::VisitsIpUa), 10, m);
        assert_eq!((l.billed_usage, l.overage), (40, 30));
        let l = SiteLine::new("C1", "S4", "", None, 0, m);
        assert_eq!((l.billed_usage, l.overage), (0, 0));
    }

    #[test]
    fn customer_totals_sum_allowances_only_within_one_unit() {
        let m = Measures::new(100, 1, 10, 5, 3);
        let a = SiteLine::new("C1", "S1", "start", Some(Metering::Requests), 60, m);
        let b = SiteLine::new("C1", "S2", "start", Some(Metering::Requests), 200, m);
        let t = customer_total(&[a.clone(), b]);
        assert_eq!(
            (t.metering.as_str(), t.included, t.billed_usage, t.overage),
            ("requests", Some(260), Some(200), Some(40))
        );
        assert_eq!(t.measures.requests, 200);
        let c = SiteLine::new("C1", "S3", "business", Some(Metering::VisitsIp), 1, m);
        let t = customer_total(&[a, c]);
        assert_eq!((t.metering.as_str(), t.overage), ("mixed", None));
        assert_eq!(t.measures.bot_requests, 20);
    }

    #[test]
    fn adjustments_are_signed_differences() {
        let before = SiteLine::new("C1", "S1", "start", Some(Metering::Requests), 100, Measures::new(90, 900, 0, 1, 1));
        let now = SiteLine::new("C1", "S1", "start", Some(Metering::Requests), 100, Measures::new(130, 1300, 5, 2, 1));
        let a = Adjustment::between("2026-10", &before, &now).unwrap();
        assert_eq!((a.requests, a.billed_usage, a.overage, a.bot_requests, a.visits_ip_ua), (40, 40, 30, 5, 0));
        let mut b = before.clone();
        a.apply(&mut b);
        assert_eq!(b, now);
        assert!(Adjustment::between("2026-10", &now, &now).is_none());
    }
}
