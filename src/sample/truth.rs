//! Reading the generator's ground truth back, for tests and `sitelog report summary --truth`.

use std::collections::BTreeMap;
use std::path::Path;

/// Usage of one customer / site / Helsinki day, as the generator counted it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayUsage {
    pub requests: u64,
    pub bytes_sent: u64,
    pub bot_requests: u64,
    pub visitors_ip: u64,
    pub visitors_ip_ua: u64,
}

/// Key: (customer_id, site_id, day as YYYY-MM-DD).
pub type UsageTable = BTreeMap<(String, String, String), DayUsage>;

/// Reads `truth/usage_daily.csv`.
pub fn read_usage(truth_dir: &Path) -> std::io::Result<UsageTable> {
    let path = truth_dir.join("usage_daily.csv");
    let text = std::fs::read_to_string(&path)?;
    let mut out = UsageTable::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || std::io::Error::other(format!("{}:{}: malformed row", path.display(), i + 1));
        if f.len() != 8 {
            return Err(bad());
        }
        let n = |k: usize| f[k].parse::<u64>().map_err(|_| bad());
        out.insert(
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned()),
            DayUsage {
                requests: n(3)?,
                bytes_sent: n(4)?,
                bot_requests: n(5)?,
                visitors_ip: n(6)?,
                visitors_ip_ua: n(7)?,
            },
        );
    }
    Ok(out)
}

/// Reads `truth/summary.json`.
pub fn read_summary(truth_dir: &Path) -> std::io::Result<serde_json::Value> {
    let text = std::fs::read_to_string(truth_dir.join("summary.json"))?;
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

/// Every difference between `expected` and `found`, one line each.
pub fn diff(expected: &UsageTable, found: &UsageTable) -> Vec<String> {
    let mut out = Vec::new();
    for (k, e) in expected {
        match found.get(k) {
            None => out.push(format!("{} {} {}: expected {e:?}, found nothing", k.0, k.1, k.2)),
            Some(f) if f != e => out.push(format!("{} {} {}: expected {e:?}, found {f:?}", k.0, k.1, k.2)),
            Some(_) => {}
        }
    }
    for (k, f) in found {
        if !expected.contains_key(k) {
            out.push(format!("{} {} {}: expected nothing, found {f:?}", k.0, k.1, k.2));
        }
    }
    out
}
