//! Europe/Helsinki calendar months and days as exact UTC intervals.
//!
//! Usage is rolled up per Helsinki day (`usage_daily.day`), so a month is the union of its
//! days; raw records and watermarks are instants, compared with the month's UTC bounds. DST
//! makes months and days uneven: October 2026 has 745 hours (25 on 25 October), March 2026
//! has 743 (23 on 29 March).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone, Utc};
use chrono_tz::Europe::Helsinki;

use super::BillingError;

/// A Europe/Helsinki calendar month, written `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u32,
}

impl Month {
    pub fn new(year: i32, month: u32) -> Option<Month> {
        ((1970..=9998).contains(&year) && (1..=12).contains(&month)).then_some(Month { year, month })
    }

    /// The month a Helsinki calendar day belongs to.
    pub fn of_day(d: NaiveDate) -> Month {
        Month { year: d.year(), month: d.month() }
    }

    /// The Helsinki month containing the instant `t`.
    pub fn of_instant(t: DateTime<Utc>) -> Month {
        Month::of_day(t.with_timezone(&Helsinki).date_naive())
    }

    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or(NaiveDate::MIN)
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month { year: self.year + 1, month: 1 }
        } else {
            Month { year: self.year, month: self.month + 1 }
        }
    }

    pub fn prev(self) -> Month {
        if self.month == 1 {
            Month { year: self.year - 1, month: 12 }
        } else {
            Month { year: self.year, month: self.month - 1 }
        }
    }

    /// Every Helsinki calendar day of the month, in order.
    pub fn days(self) -> impl Iterator<Item = NaiveDate> {
        let end = self.next().first_day();
        self.first_day().iter_days().take_while(move |d| *d < end)
    }

    /// `[start, end)` in UTC: local midnight of the first day to local midnight of the next
    /// month's first day.
    pub fn utc_bounds(self) -> (DateTime<Utc>, DateTime<Utc>) {
        (helsinki_midnight(self.first_day()), helsinki_midnight(self.next().first_day()))
    }

    /// Length in hours (744 ± 1 in DST months).
    pub fn hours(self) -> i64 {
        let (a, b) = self.utc_bounds();
        (b - a).num_hours()
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = BillingError;

    fn from_str(s: &str) -> Result<Month, BillingError> {
        let bad = || BillingError::BadMonth(s.to_owned());
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        Month::new(y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?).ok_or_else(bad)
    }
}

impl serde::Serialize for Month {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `[start, end)` in UTC of a Helsinki calendar day (23, 24 or 25 hours long).
pub fn day_utc_bounds(d: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    (helsinki_midnight(d), helsinki_midnight(d + Days::new(1)))
}

/// 00:00 Helsinki time on `d`, in UTC. Helsinki changes clocks at 03:00/04:00 local time, so
/// midnight always exists exactly once; the fallback only guards against a future tz change.
fn helsinki_midnight(d: NaiveDate) -> DateTime<Utc> {
    let local = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    match Helsinki.from_local_datetime(&local).earliest() {
        Some(t) => t.with_timezone(&Utc),
        None => Helsinki.from_utc_datetime(&(local - chrono::Duration::hours(2))).with_timezone(&Utc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn october_2026_has_745_hours_and_eest_to_eet_bounds() {
        let m: Month = "2026-10".parse().unwrap();
        assert_eq!(m.utc_bounds(), (utc("2026-09-30T21:00:00Z"), utc("2026-10-31T22:00:00Z")));
        assert_eq!(m.hours(), 745);
        assert_eq!(m.days().count(), 31);
        let dst = NaiveDate::from_ymd_opt(2026, 10, 25).unwrap();
        assert_eq!(day_utc_bounds(dst), (utc("2026-10-24T21:00:00Z"), utc("2026-10-25T22:00:00Z")));
    }

    #[test]
    fn march_2026_has_743_hours_and_eet_to_eest_bounds() {
        let m: Month = "2026-03".parse().unwrap();
        assert_eq!(m.utc_bounds(), (utc("2026-02-28T22:00:00Z"), utc("2026-03-31T21:00:00Z")));
        assert_eq!(m.hours(), 743);
        let dst = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        let (a, b) = day_utc_bounds(dst);
        assert_eq!((b - a).num_hours(), 23);
    }

    #[test]
    fn plain_months_and_year_rollover() {
        assert_eq!("2026-11".parse::<Month>().unwrap().hours(), 720);
        assert_eq!("2028-02".parse::<Month>().unwrap().hours(), 29 * 24);
        let dec: Month = "2026-12".parse().unwrap();
        assert_eq!(dec.next().to_string(), "2027-01");
        assert_eq!(dec.next().prev(), dec);
        assert_eq!(dec.utc_bounds().1, utc("2026-12-31T22:00:00Z"));
        // The instants at the bounds: the first belongs to the month, the second does not.
        assert_eq!(Month::of_instant(utc("2026-09-30T21:00:00Z")).to_string(), "2026-10");
        assert_eq!(Month::of_instant(utc("2026-09-30T20:59:59.999999Z")).to_string(), "2026-09");
        assert_eq!(Month::of_instant(utc("2026-10-31T21:59:59.999999Z")).to_string(), "2026-10");
        assert_eq!(Month::of_instant(utc("2026-10-31T22:00:00Z")).to_string(), "2026-11");
    }

    #[test]
    fn parsing_is_strict() {
        for bad in ["2026-1", "2026-13", "26-10", "2026/10", "2026-10-01", "", "abcd-ef", "2026-00"] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
        assert_eq!("2026-10".parse::<Month>().unwrap().to_string(), "2026-10");
    }
}
