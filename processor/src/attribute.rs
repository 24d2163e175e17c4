//! Attribution: which customer owned the site a request was for, at the request's time.
//!
//! Host names are normalised the same way on both sides (register and log): lower case, no
//! port, no trailing dot, IDN to punycode. Lookup is exact first, then the most specific
//! wildcard (`*.example.fi` matches any name below example.fi), then — if configured — the
//! name without a leading `www.`. Ownership is time-aware: a domain that moved to another
//! customer on a date is attributed by the request's timestamp against Helsinki-date spans.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{NaiveDate, TimeZone};
use chrono_tz::Europe::Helsinki;

/// Who owned a host at some moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub customer_id: Arc<str>,
    pub site_id: Arc<str>,
}

/// One site's ownership period in the register.
#[derive(Debug, Clone)]
pub struct SiteSpan {
    pub site_id: String,
    pub customer_id: String,
    /// Domains: primary first, then aliases (exact names or `*.` wildcards).
    pub domains: Vec<String>,
    pub valid_from: NaiveDate,
    /// Exclusive; `None` = still owned.
    pub valid_to: Option<NaiveDate>,
}

#[derive(Debug, Clone)]
struct Span {
    from_us: i64,
    to_us: i64,
    owner: Owner,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    #[error("site {site}: domain '{domain}' is not a valid host name")]
    BadDomain { site: String, domain: String },
    #[error("site {site}: valid_to {to} is not after valid_from {from}")]
    EmptyPeriod { site: String, from: NaiveDate, to: NaiveDate },
    #[error("domain '{domain}' is owned by both site {a} and site {b} in overlapping periods")]
    Overlap { domain: String, a: String, b: String },
}

/// The host → (site, customer) map for one register version.
#[derive(Debug, Default, Clone)]
pub struct SiteMap {
    exact: HashMap<String, Vec<Span>>,
    /// Key: the suffix after `*.`.
    wildcard: HashMap<String, Vec<Span>>,
    /// Treat `www.X` as `X` when `www.X` itself is not registered.
    strip_www: bool,
}

/// Start of a Helsinki calendar day in UTC microseconds.
pub fn helsinki_day_start_us(d: NaiveDate) -> i64 {
    let local = d.and_hms_opt(0, 0, 0).expect("midnight exists");
    // Midnight is never inside a Helsinki DST gap (changes happen at 03:00/04:00).
    Helsinki.from_local_datetime(&local).earliest().expect("Helsinki midnight exists").timestamp_micros()
}

/// Normalises a host: lower case, no port, no trailing dot, IDN to punycode. Returns `None`
/// for names that are not host names at all.
pub fn normalize_host(raw: &str) -> Option<String> {
    let mut h = raw.trim();
    if let Some(rest) = h.strip_prefix('[') {
        // [v6]:port
        let end = rest.find(']')?;
        return Some(rest[..end].to_ascii_lowercase());
    }
    if let Some((name, port)) = h.rsplit_once(':') {
        if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) {
            h = name;
        }
    }
    let h = h.trim_end_matches('.');
    if h.is_empty() {
        return None;
    }
    if h.is_ascii() {
        if h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' || b == b'*' || b == b':')
        {
            return Some(h.to_ascii_lowercase());
        }
        return None;
    }
    idna::domain_to_ascii(h).ok().filter(|s| !s.is_empty())
}

impl SiteMap {
    pub fn new(sites: &[SiteSpan], strip_www: bool) -> Result<SiteMap, MapError> {
        let mut map = SiteMap { strip_www, ..Default::default() };
        for s in sites {
            let from_us = helsinki_day_start_us(s.valid_from);
            let to_us = s.valid_to.map_or(i64::MAX, helsinki_day_start_us);
            if let Some(to) = s.valid_to.filter(|to| *to <= s.valid_from) {
                return Err(MapError::EmptyPeriod { site: s.site_id.clone(), from: s.valid_from, to });
            }
            let owner = Owner { customer_id: s.customer_id.as_str().into(), site_id: s.site_id.as_str().into() };
            for d in &s.domains {
                let bad = || MapError::BadDomain { site: s.site_id.clone(), domain: d.clone() };
                let (table, name) = match d.strip_prefix("*.") {
                    Some(suffix) => (&mut map.wildcard, normalize_host(suffix).ok_or_else(bad)?),
                    None => (&mut map.exact, normalize_host(d).ok_or_else(bad)?),
                };
                if name.contains('*') {
                    return Err(bad());
                }
                let spans = table.entry(name.clone()).or_default();
                if let Some(o) = spans
                    .iter()
                    .find(|sp| sp.from_us < to_us && from_us < sp.to_us && sp.owner.site_id.as_ref() != s.site_id)
                {
                    return Err(MapError::Overlap {
                        domain: d.clone(),
                        a: o.owner.site_id.to_string(),
                        b: s.site_id.clone(),
                    });
                }
                spans.push(Span { from_us, to_us, owner: owner.clone() });
            }
        }
        Ok(map)
    }

    fn find(spans: Option<&Vec<Span>>, ts_us: i64) -> Option<&Owner> {
        spans?.iter().find(|s| s.from_us <= ts_us && ts_us < s.to_us).map(|s| &s.owner)
    }

    /// The owner of an already-normalised host at `ts_us` (UTC microseconds).
    pub fn lookup(&self, host: &str, ts_us: i64) -> Option<&Owner> {
        if let Some(o) = Self::find(self.exact.get(host), ts_us) {
            return Some(o);
        }
        let mut rest = host;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(o) = Self::find(self.wildcard.get(parent), ts_us) {
                return Some(o);
            }
            rest = parent;
        }
        if self.strip_www {
            if let Some(bare) = host.strip_prefix("www.") {
                return self.lookup(bare, ts_us);
            }
        }
        None
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn span(site: &str, cust: &str, domains: &[&str], from: &str, to: Option<&str>) -> SiteSpan {
        SiteSpan {
            site_id: site.into(),
            customer_id: cust.into(),
            domains: domains.iter().map(|s| s.to_string()).collect(),
            valid_from: d(from),
            valid_to: to.map(d),
        }
    }

    fn at(date: &str, hh: u32) -> i64 {
        Helsinki.from_local_datetime(&d(date).and_hms_opt(hh, 0, 0).unwrap()).earliest().unwrap().timestamp_micros()
    }

    #[test]
    fn normalises_case_port_dot_and_idn() {
        assert_eq!(normalize_host("Shop.Example.FI:443").as_deref(), Some("shop.example.fi"));
        assert_eq!(normalize_host("example.fi.").as_deref(), Some("example.fi"));
        assert_eq!(normalize_host("kahvilä.fi").as_deref(), Some("xn--kahvil-gua.fi"));
        assert_eq!(normalize_host("[2001:db8::1]:8080").as_deref(), Some("2001:db8::1"));
        assert_eq!(normalize_host("bad host"), None);
        assert_eq!(normalize_host(""), None);
    }

    #[test]
    fn exact_then_wildcard_then_www() {
        let m = SiteMap::new(
            &[
                span("S1", "C1", &["example.fi", "*.example.fi"], "2024-01-01", None),
                span("S2", "C2", &["shop.example.fi"], "2024-01-01", None),
                span("S3", "C3", &["kahvilä.fi"], "2024-01-01", None),
            ],
            true,
        )
        .unwrap();
        let t = at("2026-10-10", 12);
        assert_eq!(&*m.lookup("shop.example.fi", t).unwrap().site_id, "S2");
        assert_eq!(&*m.lookup("blog.example.fi", t).unwrap().site_id, "S1");
        assert_eq!(&*m.lookup("a.b.example.fi", t).unwrap().site_id, "S1");
        assert_eq!(&*m.lookup("xn--kahvil-gua.fi", t).unwrap().site_id, "S3");
        assert_eq!(&*m.lookup("www.xn--kahvil-gua.fi", t).unwrap().site_id, "S3");
        assert!(m.lookup("example.com", t).is_none());
        assert!(m.lookup("notexample.fi", t).is_none());
    }

    #[test]
    fn a_moved_domain_is_attributed_by_request_time() {
        let m = SiteMap::new(
            &[
                span("S1", "C1", &["moved.fi"], "2024-01-01", Some("2026-10-20")),
                span("S9", "C2", &["moved.fi"], "2026-10-20", None),
            ],
            false,
        )
        .unwrap();
        let last_before = helsinki_day_start_us(d("2026-10-20")) - 1;
        assert_eq!(&*m.lookup("moved.fi", last_before).unwrap().customer_id, "C1");
        assert_eq!(&*m.lookup("moved.fi", last_before + 1).unwrap().customer_id, "C2");
        assert!(m.lookup("moved.fi", helsinki_day_start_us(d("2023-12-31"))).is_none());
    }

    #[test]
    fn overlapping_owners_are_refused() {
        let e = SiteMap::new(
            &[span("S1", "C1", &["x.fi"], "2024-01-01", None), span("S2", "C2", &["x.fi"], "2025-01-01", None)],
            false,
        )
        .unwrap_err();
        assert_eq!(e, MapError::Overlap { domain: "x.fi".into(), a: "S1".into(), b: "S2".into() });
    }

    #[test]
    fn helsinki_midnight_across_dst() {
        // 2026-10-25 00:00 is still summer time (+03:00) = 2026-10-24T21:00Z; 2026-10-26 00:00 is
        // +02:00 = 2026-10-25T22:00Z: that day has 25 hours.
        assert_eq!(helsinki_day_start_us(d("2026-10-25")), 1_792_875_600_000_000);
        assert_eq!(helsinki_day_start_us(d("2026-10-26")), 1_792_965_600_000_000);
    }
}
