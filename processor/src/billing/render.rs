//! Output: a readable table for a terminal, CSV with a stable header for spreadsheets and
//! bookkeeping imports, JSON for machines (the whole [`BillingReport`]).

use std::fmt::Write as _;

use super::figures::{Measures, Metering};
use super::BillingReport;

/// The CSV header. Stable: columns are only ever appended (README, "Billing").
pub const CSV_HEADER: &str = "month,status,line,customer_id,site_id,plan,metering,included,billed_usage,overage,\
requests,bytes_sent,human_requests,bot_requests,visits_ip,visits_ip_ua";

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn metering(m: Option<Metering>) -> &'static str {
    m.map_or("", Metering::as_str)
}

/// A CSV field: quoted when it holds a comma, quote or line break (RFC 4180).
pub fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn measures_csv(m: &Measures) -> String {
    format!(
        "{},{},{},{},{},{}",
        m.requests, m.bytes_sent, m.human_requests, m.bot_requests, m.visits_ip, m.visits_ip_ua
    )
}

/// One row per site (`line=site`), one per customer (`line=customer`, totals), one for
/// unattributed traffic, and one per adjustment to an earlier closed month
/// (`line=adjustment`, `month` = the month adjusted, signed differences).
pub fn csv(r: &BillingReport) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    let month = r.month.to_string();
    let status = r.status.as_str();
    for c in &r.customers {
        for s in &c.sites {
            let _ = writeln!(
                out,
                "{month},{status},site,{},{},{},{},{},{},{},{}",
                field(&s.customer_id),
                field(&s.site_id),
                field(&s.plan),
                metering(s.metering),
                s.included,
                s.billed_usage,
                s.overage,
                measures_csv(&s.measures)
            );
        }
        let t = &c.total;
        let _ = writeln!(
            out,
            "{month},{status},customer,{},,,{},{},{},{},{}",
            field(&c.customer_id),
            t.metering,
            opt(t.included),
            opt(t.billed_usage),
            opt(t.overage),
            measures_csv(&t.measures)
        );
    }
    if r.customer_filter.is_none() {
        let _ = writeln!(out, "{month},{status},unattributed,,,,,,,,{}", measures_csv(&r.unattributed));
    }
    for a in &r.adjustments {
        let _ = writeln!(
            out,
            "{},{status},adjustment,{},{},{},{},{},{},{},{},{},{},{},{},{}",
            a.applies_to,
            field(&a.customer_id),
            field(&a.site_id),
            field(&a.plan),
            metering(a.metering),
            a.included,
            a.billed_usage,
            a.overage,
            a.requests,
            a.bytes_sent,
            a.human_requests,
            a.bot_requests,
            a.visits_ip,
            a.visits_ip_ua
        );
    }
    out
}

pub fn json(r: &BillingReport) -> String {
    let mut s = serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

/// Plain right-aligned digits, so columns line up and copied numbers stay numbers.
pub fn table(r: &BillingReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Billing {} ({}): {} .. {} UTC, {} h", r.month, r.timezone, r.from_utc, r.to_utc, r.hours);
    match (&r.closed, r.status) {
        (Some(c), _) => {
            let _ = writeln!(
                o,
                "Status: CLOSED {} by {} (register version {}, content hash {})",
                c.closed_at, c.closed_by, c.register_version, c.content_hash
            );
        }
        (None, super::Status::Complete) => {
            let _ = writeln!(
                o,
                "Status: complete (every active collector source delivered past {}); not closed yet",
                r.completeness.needed
            );
        }
        (None, _) => {
            let _ = writeln!(o, "Status: PROVISIONAL — figures may still change");
            for why in r.completeness.reasons.iter().chain(&r.problems) {
                let _ = writeln!(o, "  - {why}");
            }
        }
    }
    let _ = writeln!(o, "Register version {}; generated {}", r.register_version, r.generated_at);
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<24} {:<12} {:<13} {:>10} {:>10} {:>10} {:>11} {:>15} {:>11} {:>10}",
        "customer / site",
        "plan",
        "metering",
        "included",
        "billed",
        "overage",
        "requests",
        "bytes_sent",
        "human",
        "bots"
    );
    for c in &r.customers {
        let name =
            if c.company_name.is_empty() { String::new() } else { format!("  {} ({})", c.company_name, c.business_id) };
        let _ = writeln!(o, "{}{name}", c.customer_id);
        for s in &c.sites {
            let m = &s.measures;
            let _ = writeln!(
                o,
                "  {:<22} {:<12} {:<13} {:>10} {:>10} {:>10} {:>11} {:>15} {:>11} {:>10}",
                s.site_id,
                s.plan,
                metering(s.metering),
                s.included,
                s.billed_usage,
                s.overage,
                m.requests,
                m.bytes_sent,
                m.human_requests,
                m.bot_requests
            );
        }
        let t = &c.total;
        let m = &t.measures;
        let _ = writeln!(
            o,
            "  {:<22} {:<12} {:<13} {:>10} {:>10} {:>10} {:>11} {:>15} {:>11} {:>10}",
            "total",
            "",
            t.metering,
            opt(t.included),
            opt(t.billed_usage),
            opt(t.overage),
            m.requests,
            m.bytes_sent,
            m.human_requests,
            m.bot_requests
        );
    }
    if r.customer_filter.is_none() {
        let m = &r.unattributed;
        let _ = writeln!(
            o,
            "{:<24} {:<12} {:<13} {:>10} {:>10} {:>10} {:>11} {:>15} {:>11} {:>10}",
            "unattributed (not billed)", "", "", "", "", "", m.requests, m.bytes_sent, m.human_requests, m.bot_requests
        );
    }
    if !r.completeness.lagging.is_empty() {
        let _ = writeln!(o, "\nLagging collector sources (not delivered up to {}):", r.completeness.needed);
        for l in &r.completeness.lagging {
            let _ = writeln!(o, "  {}", l.describe());
        }
    }
    if !r.adjustments.is_empty() {
        let title = if r.closed.is_some() { "recorded by this run" } else { "to bill with this month" };
        let _ = writeln!(o, "\nAdjustments to earlier closed months, late records ({title}):");
        for a in &r.adjustments {
            let _ = writeln!(
                o,
                "  {} {} {:<10} {:<13} billed {:+} overage {:+} requests {:+} bytes_sent {:+} bots {:+}",
                a.applies_to,
                a.customer_id,
                a.site_id,
                metering(a.metering),
                a.billed_usage,
                a.overage,
                a.requests,
                a.bytes_sent,
                a.bot_requests
            );
        }
    }
    if let Some(v) = &r.verification {
        let _ = writeln!(o);
        let _ = writeln!(o, "Raw retention: {} days ({})", v.raw_retention_days, v.raw_retention_from);
        if let Some(note) = &v.raw_retention_note {
            let _ = writeln!(o, "note: {note}");
        }
        match &v.raw_days {
            Some((a, b)) => {
                let _ = writeln!(
                    o,
                    "Verified against raw records: {a} .. {b} ({} customer/site/day rows)",
                    v.raw_rows_compared
                );
            }
            None => {
                let _ =
                    writeln!(o, "Verified against raw records: no day of this month is fully inside the raw retention");
            }
        }
        let _ = writeln!(o, "Verified against source progress: {} hosts", v.hosts_compared);
        if r.closed.is_some() {
            let _ =
                writeln!(o, "Verified closed run against a fresh computation: {} site lines", v.closed_lines_compared);
        }
        if v.mismatches.is_empty() {
            let _ = writeln!(o, "Verification: no differences");
        } else {
            for m in &v.mismatches {
                let _ = writeln!(o, "{m}");
            }
            let _ = writeln!(o, "Verification: {} differences", v.mismatches.len());
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(field("S0001"), "S0001");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(CSV_HEADER.split(',').count(), 16);
    }
}
