//! What time it is, asked in one place.
//!
//! Every "now" that decides something about data — is a month over, which days are inside the
//! raw retention, where the sample's default window lies — comes from [`now`]. It is the
//! system clock unless `SITELOG_NOW` is set (RFC 3339, e.g. `2027-01-15T12:00:00Z`), which
//! tests and replays use to say "November is not over" or "eleven years later" explicitly
//! instead of depending on the calendar. Production never sets it; when it is set, every
//! command says so on stderr.
//!
//! ClickHouse applies TTLs with its own, real clock: `SITELOG_NOW` cannot move that, so data
//! that tests of retention rely on is placed relative to the real time, never at fixed dates.

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};

/// The environment variable that sets the clock for tests and replays.
pub const NOW_VAR: &str = "SITELOG_NOW";

/// Parses a `SITELOG_NOW` value: RFC 3339, or a bare `YYYY-MM-DD` (noon UTC of that day).
pub fn parse_now(text: &str) -> anyhow::Result<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .with_context(|| format!("{NOW_VAR}={text:?} is neither RFC 3339 (2027-01-15T12:00:00Z) nor YYYY-MM-DD"))?;
    Ok(day.and_hms_opt(12, 0, 0).expect("noon exists").and_utc())
}

/// The current time: `SITELOG_NOW` when set, else the system clock.
pub fn now() -> anyhow::Result<DateTime<Utc>> {
    match std::env::var(NOW_VAR) {
        Ok(v) if !v.trim().is_empty() => parse_now(&v),
        _ => Ok(Utc::now()),
    }
}

/// Today in Europe/Helsinki (the calendar billing, days and the sample use).
pub fn today_helsinki() -> anyhow::Result<NaiveDate> {
    Ok(now()?.with_timezone(&chrono_tz::Europe::Helsinki).date_naive())
}

/// Checks `SITELOG_NOW` once at start-up, and says on stderr when it is in effect, so nobody
/// mistakes a set clock for the real one.
pub fn announce() -> anyhow::Result<()> {
    if std::env::var(NOW_VAR).is_ok_and(|v| !v.trim().is_empty()) {
        let t = now()?;
        tracing::warn!(
            "{NOW_VAR} is set: the clock reads {} (system clock: {})",
            t.to_rfc3339(),
            Utc::now().to_rfc3339()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_and_bare_days() {
        assert_eq!(parse_now("2027-01-15T12:00:00+02:00").unwrap().to_rfc3339(), "2027-01-15T10:00:00+00:00");
        assert_eq!(parse_now(" 2037-12-01 ").unwrap().to_rfc3339(), "2037-12-01T12:00:00+00:00");
        let e = parse_now("tomorrow").unwrap_err().to_string();
        assert!(e.contains("SITELOG_NOW=\"tomorrow\""), "{e}");
    }
}
