//! Timestamp fast paths: the formats nginx and apache write, parsed digit by digit.
//!
//! Why not chrono on the hot path: `DateTime::parse_from_str` interprets its format string on
//! every call and costs several times the rest of a combined line. These functions read fixed
//! positions and compute days from the civil date directly; the tests check them against
//! chrono. chrono stays the slow path for apache's free-form `%{strftime}t`.

/// Microseconds per second.
const US: i64 = 1_000_000;

/// A parsed timestamp: UTC microseconds since the epoch and the original UTC offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub micros: i64,
    pub offset_secs: i32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
#[inline(always)]
pub(crate) const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400; // [0, 399]
    let m = month as i64;
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + day as i64 - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

const fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

const fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

#[inline(always)]
fn digit(b: u8) -> Option<u32> {
    let d = b.wrapping_sub(b'0');
    (d <= 9).then_some(d as u32)
}

#[inline(always)]
fn d2(b: &[u8], at: usize) -> Option<u32> {
    Some(digit(*b.get(at)?)? * 10 + digit(*b.get(at + 1)?)?)
}

#[inline(always)]
fn d4(b: &[u8], at: usize) -> Option<u32> {
    Some(d2(b, at)? * 100 + d2(b, at + 2)?)
}

/// `Jan`..`Dec`, any letter case.
#[inline(always)]
fn month_abbr(b: &[u8]) -> Option<u32> {
    let key = u32::from_le_bytes([b[0] | 0x20, b[1] | 0x20, b[2] | 0x20, 0]);
    const fn k(s: &[u8; 3]) -> u32 {
        u32::from_le_bytes([s[0], s[1], s[2], 0])
    }
    Some(match key {
        x if x == k(b"jan") => 1,
        x if x == k(b"feb") => 2,
        x if x == k(b"mar") => 3,
        x if x == k(b"apr") => 4,
        x if x == k(b"may") => 5,
        x if x == k(b"jun") => 6,
        x if x == k(b"jul") => 7,
        x if x == k(b"aug") => 8,
        x if x == k(b"sep") => 9,
        x if x == k(b"oct") => 10,
        x if x == k(b"nov") => 11,
        x if x == k(b"dec") => 12,
        _ => return None,
    })
}

/// Seconds since the epoch of a validated civil date and time (UTC wall clock).
#[inline(always)]
fn civil_secs(year: u32, month: u32, day: u32, h: u32, m: u32, s: u32) -> Option<i64> {
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(date_days(year, month, day)? * 86_400 + (h * 3600 + m * 60 + s) as i64)
}

/// Days since the epoch of a date that exists.
#[inline(always)]
fn date_days(year: u32, month: u32, day: u32) -> Option<i64> {
    let year = year as i64;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// `+0300` / `-0700` (and `+03:00` when `colon`) to seconds east of UTC.
#[inline(always)]
fn offset(b: &[u8], colon: bool) -> Option<i32> {
    let sign = match *b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hh = d2(b, 1)?;
    let (mm, len) = if colon {
        if *b.get(3)? != b':' {
            return None;
        }
        (d2(b, 4)?, 6)
    } else {
        (d2(b, 3)?, 5)
    };
    if b.len() != len || hh > 23 || mm > 59 {
        return None;
    }
    Some(sign * (hh * 3600 + mm * 60) as i32)
}

/// nginx `$time_local` / the inside of apache `%t`: `10/Oct/2026:13:55:36 +0300` (26 bytes).
#[inline(always)]
pub(crate) fn parse_time_local(b: &[u8]) -> Option<Stamp> {
    time_local(b.try_into().ok()?, |b, day, year| date_days(year, month_abbr(&b[3..6])?, day))
}

/// [`parse_time_local`] remembering the last date's day number on this thread: lines come in
/// time order, so nearly every line repeats the date of the line before (a memo of a pure
/// function, keyed on the date's bytes).
#[inline(always)]
pub(crate) fn parse_time_local_cached(b: &[u8; 26]) -> Option<Stamp> {
    thread_local! {
        static LAST_DATE: std::cell::Cell<(u64, u32, i64)> = const { std::cell::Cell::new((0, 0, 0)) };
    }
    time_local(b, |b, day, year| {
        // `dd/Mon/yyyy`: never all zero bytes once validated, so the initial key never hits.
        let key = (u64::from_le_bytes(b[..8].try_into().unwrap()), u32::from_le_bytes([b[8], b[9], b[10], 0]));
        let (k0, k1, days) = LAST_DATE.get();
        if (k0, k1) == key {
            return Some(days);
        }
        let days = date_days(year, month_abbr(&b[3..6])?, day)?;
        LAST_DATE.set((key.0, key.1, days));
        Some(days)
    })
}

/// `dd/Mon/yyyy:hh:mm:ss +zzzz` checked and read, with `days(bytes, day, year)` giving the
/// date's day number (or `None` for a date that does not exist).
///
/// The fixed bytes are checked eight at a time: each byte XOR its template is 0..=9 at a
/// digit and 0 at a separator, and adding 0x76 / 0x7f sets the byte's top bit otherwise.
#[inline(always)]
fn time_local(b: &[u8; 26], days: impl FnOnce(&[u8; 26], u32, u32) -> Option<i64>) -> Option<Stamp> {
    // Templates over `dd/Mon/y`, `yyy:hh:m`, `m:ss +hh`, `mm` (month and sign unchecked).
    const T: [u64; 3] = [
        u64::from_le_bytes(*b"00/\x00\x00\x00/0"),
        u64::from_le_bytes(*b"000:00:0"),
        u64::from_le_bytes(*b"0:00 \x0000"),
    ];
    const ADD: [u64; 3] = [
        u64::from_le_bytes([0x76, 0x76, 0x7f, 0, 0, 0, 0x7f, 0x76]),
        u64::from_le_bytes([0x76, 0x76, 0x76, 0x7f, 0x76, 0x76, 0x7f, 0x76]),
        u64::from_le_bytes([0x76, 0x7f, 0x76, 0x76, 0x7f, 0, 0x76, 0x76]),
    ];
    const CHECKED: [u64; 3] = [
        u64::from_le_bytes([0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0xff]),
        u64::MAX,
        u64::from_le_bytes([0xff, 0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff]),
    ];
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
    let x = [(word(0) ^ T[0]) & CHECKED[0], (word(1) ^ T[1]) & CHECKED[1], (word(2) ^ T[2]) & CHECKED[2]];
    let bad = (0..3).fold(0, |bad, i| bad | ((x[i].wrapping_add(ADD[i]) | x[i]) & HIGH & CHECKED[i]));
    let (o0, o1) = (b[24].wrapping_sub(b'0'), b[25].wrapping_sub(b'0'));
    if bad != 0 || o0 > 9 || o1 > 9 {
        return None;
    }
    let d = |w: usize, i: usize| (x[w] >> (i * 8)) as u8 as u32;
    let day = d(0, 0) * 10 + d(0, 1);
    let year = d(0, 7) * 1000 + d(1, 0) * 100 + d(1, 1) * 10 + d(1, 2);
    let (h, m, s) = (d(1, 4) * 10 + d(1, 5), d(1, 7) * 10 + d(2, 0), d(2, 2) * 10 + d(2, 3));
    let (oh, om) = (d(2, 6) * 10 + d(2, 7), o0 as u32 * 10 + o1 as u32);
    let sign = match b[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if oh > 23 || om > 59 || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let off = sign * (oh * 3600 + om * 60) as i32;
    let local = days(b, day, year)? * 86_400 + (h * 3600 + m * 60 + s) as i64;
    Some(Stamp { micros: (local - off as i64) * US, offset_secs: off })
}

/// nginx `$time_iso8601`: `2026-10-10T13:55:36+03:00`; also accepts a fraction of a second
/// and `Z` / `+0300`, as other ISO 8601 writers produce.
pub(crate) fn parse_iso8601(b: &[u8]) -> Option<Stamp> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b'T' && b[10] != b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = d4(b, 0)?;
    let (month, day) = (d2(b, 5)?, d2(b, 8)?);
    let (h, m, s) = (d2(b, 11)?, d2(b, 14)?, d2(b, 17)?);
    let mut rest = &b[19..];
    let mut frac_us = 0i64;
    if let Some((&b'.', digits)) = rest.split_first() {
        let n = digits.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        frac_us = fraction_micros(&digits[..n]);
        rest = &digits[n..];
    }
    let off = match rest {
        b"Z" | b"z" => 0,
        _ if rest.len() == 6 => offset(rest, true)?,
        _ => offset(rest, false)?,
    };
    let local = civil_secs(year, month, day, h, m, s)?;
    Some(Stamp { micros: (local - off as i64) * US + frac_us, offset_secs: off })
}

/// Up to six fraction digits (more are truncated) as microseconds.
fn fraction_micros(digits: &[u8]) -> i64 {
    let mut v = 0i64;
    for i in 0..6 {
        v = v * 10 + digits.get(i).map_or(0, |d| (d - b'0') as i64);
    }
    v
}

/// Unit of an integer or decimal epoch timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EpochUnit {
    /// `$msec`: seconds with a decimal fraction (`1760090136.123`); apache `%{sec}t` too.
    Seconds,
    Millis,
    Micros,
}

/// An epoch timestamp (UTC, offset 0).
pub(crate) fn parse_epoch(b: &[u8], unit: EpochUnit) -> Option<Stamp> {
    let (int, frac) = match memchr::memchr(b'.', b) {
        Some(dot) => (&b[..dot], &b[dot + 1..]),
        None => (b, &b[..0]),
    };
    if int.is_empty() || int.len() > 16 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v = 0i64;
    for &c in int {
        v = v * 10 + digit(c)? as i64;
    }
    let micros = match unit {
        EpochUnit::Seconds => v.checked_mul(US)?.checked_add(fraction_micros(frac))?,
        EpochUnit::Millis if frac.is_empty() => v.checked_mul(1000)?,
        EpochUnit::Micros if frac.is_empty() => v,
        _ => return None,
    };
    Some(Stamp { micros, offset_secs: 0 })
}

/// Apache `%{…}t` with a strftime format: chrono's slow path. Without `%z` in the format the
/// time is taken as UTC (apache writes the server's local time; the log does not say which).
pub(crate) fn parse_strftime(b: &[u8], fmt: &str) -> Option<Stamp> {
    let s = std::str::from_utf8(b).ok()?;
    if fmt.contains("%z") || fmt.contains("%:z") {
        let dt = chrono::DateTime::parse_from_str(s, fmt).ok()?;
        return Some(Stamp { micros: dt.timestamp_micros(), offset_secs: dt.offset().local_minus_utc() });
    }
    let dt = chrono::NaiveDateTime::parse_from_str(s, fmt).ok()?;
    Some(Stamp { micros: dt.and_utc().timestamp_micros(), offset_secs: 0 })
}

/// Renders `10/Oct/2026:13:55:36 +0300` (the inverse of [`parse_time_local`]).
pub(crate) fn format_time_local(micros: i64, offset_secs: i32, out: &mut Vec<u8>) {
    use std::io::Write;
    let Some(dt) = to_fixed(micros, offset_secs) else {
        out.push(b'-');
        return;
    };
    let _ = write!(out, "{}", dt.format("%d/%b/%Y:%H:%M:%S %z"));
}

/// Renders `2026-10-10T13:55:36+03:00`.
pub(crate) fn format_iso8601(micros: i64, offset_secs: i32, out: &mut Vec<u8>) {
    use std::io::Write;
    let Some(dt) = to_fixed(micros, offset_secs) else {
        out.push(b'-');
        return;
    };
    let _ = write!(out, "{}", dt.format("%Y-%m-%dT%H:%M:%S%:z"));
}

fn to_fixed(micros: i64, offset_secs: i32) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    let off = chrono::FixedOffset::east_opt(offset_secs)?;
    Some(chrono::DateTime::from_timestamp_micros(micros)?.with_timezone(&off))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, NaiveDate};
    use proptest::prelude::*;

    /// The previous byte-by-byte `parse_time_local`, kept to check the word-wise one against.
    fn parse_time_local_digitwise(b: &[u8]) -> Option<Stamp> {
        let b: &[u8; 26] = b.try_into().ok()?;
        if b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[14] != b':' || b[17] != b':' || b[20] != b' ' {
            return None;
        }
        const DIGITS: [usize; 16] = [0, 1, 7, 8, 9, 10, 12, 13, 15, 16, 18, 19, 22, 23, 24, 25];
        let d = DIGITS.map(|i| b[i].wrapping_sub(b'0'));
        // Branch-free check of all sixteen digits at once.
        if d.iter().fold(0u8, |bad, &x| bad | u8::from(x > 9)) != 0 {
            return None;
        }
        let n2 = |i: usize| d[i] as u32 * 10 + d[i + 1] as u32;
        let day = n2(0);
        let year = n2(2) * 100 + n2(4);
        let (h, m, s) = (n2(6), n2(8), n2(10));
        let month = month_abbr(&b[3..6])?;
        let (oh, om) = (n2(12), n2(14));
        let sign = match b[21] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        if oh > 23 || om > 59 {
            return None;
        }
        let off = sign * (oh * 3600 + om * 60) as i32;
        let local = civil_secs(year, month, day, h, m, s)?;
        Some(Stamp { micros: (local - off as i64) * US, offset_secs: off })
    }

    #[test]
    fn time_local_example() {
        let s = parse_time_local(b"10/Oct/2026:13:55:36 +0300").unwrap();
        let want = DateTime::parse_from_str("10/Oct/2026:13:55:36 +0300", "%d/%b/%Y:%H:%M:%S %z").unwrap();
        assert_eq!(s.micros, want.timestamp_micros());
        assert_eq!(s.offset_secs, 3 * 3600);
    }

    #[test]
    fn time_local_rejects_bad_dates() {
        for bad in [
            &b"31/Feb/2026:13:55:36 +0300"[..],
            b"29/Feb/2025:00:00:00 +0000",
            b"10/Foo/2026:13:55:36 +0300",
            b"10/Oct/2026:24:00:00 +0300",
            b"10/Oct/2026:13:60:00 +0300",
            b"10/Oct/2026:13:55:36 +2400",
            b"10/Oct/2026:13:55:36 0300",
            b"10/Oct/2026:13:55:36 +03000",
            b"1x/Oct/2026:13:55:36 +0300",
            b"",
        ] {
            assert_eq!(parse_time_local(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse_time_local(b"29/Feb/2024:00:00:00 -1200").is_some());
    }

    #[test]
    fn iso8601_variants() {
        let a = parse_iso8601(b"2026-10-10T13:55:36+03:00").unwrap();
        let b = parse_iso8601(b"2026-10-10T10:55:36Z").unwrap();
        assert_eq!(a.micros, b.micros);
        assert_eq!(a.offset_secs, 10800);
        let c = parse_iso8601(b"2026-10-10T10:55:36.250+0000").unwrap();
        assert_eq!(c.micros, b.micros + 250_000);
        assert_eq!(parse_iso8601(b"2026-10-10T10:55:36."), None);
        assert_eq!(parse_iso8601(b"2026-13-10T10:55:36Z"), None);
    }

    #[test]
    fn epoch_units() {
        assert_eq!(parse_epoch(b"1760090136.123", EpochUnit::Seconds).unwrap().micros, 1_760_090_136_123_000);
        assert_eq!(parse_epoch(b"1760090136", EpochUnit::Seconds).unwrap().micros, 1_760_090_136_000_000);
        assert_eq!(parse_epoch(b"1760090136123", EpochUnit::Millis).unwrap().micros, 1_760_090_136_123_000);
        assert_eq!(parse_epoch(b"1760090136123456", EpochUnit::Micros).unwrap().micros, 1_760_090_136_123_456);
        assert_eq!(parse_epoch(b"-", EpochUnit::Seconds), None);
        assert_eq!(parse_epoch(b"1.2.3", EpochUnit::Seconds), None);
        assert_eq!(parse_epoch(b"99999999999999999999", EpochUnit::Micros), None);
    }

    #[test]
    fn strftime_slow_path() {
        let s = parse_strftime(b"2026-10-10 13:55:36 +0300", "%Y-%m-%d %H:%M:%S %z").unwrap();
        assert_eq!(s, parse_time_local(b"10/Oct/2026:13:55:36 +0300").unwrap());
        let u = parse_strftime(b"2026-10-10 10:55:36", "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(u.micros, s.micros);
        assert_eq!(u.offset_secs, 0);
    }

    proptest! {
        /// The digit-by-digit parser agrees with chrono on every date from year 1 to 9999.
        #[test]
        fn time_local_matches_chrono(secs in -62_135_596_800i64..253_402_300_799, off_min in -(23*60+59)..=(23*60+59i32)) {
            let off = chrono::FixedOffset::east_opt(off_min * 60).unwrap();
            let dt = DateTime::from_timestamp(secs, 0).unwrap().with_timezone(&off);
            let text = dt.format("%d/%b/%Y:%H:%M:%S %z").to_string();
            let got = parse_time_local(text.as_bytes()).unwrap();
            prop_assert_eq!(got.micros, secs * US);
            prop_assert_eq!(got.offset_secs, off_min * 60);
            let iso = dt.format("%Y-%m-%dT%H:%M:%S%:z").to_string();
            prop_assert_eq!(parse_iso8601(iso.as_bytes()).unwrap(), got);
            let mut rendered = Vec::new();
            format_time_local(got.micros, got.offset_secs, &mut rendered);
            prop_assert_eq!(rendered, text.into_bytes());
        }

        #[test]
        fn days_from_civil_matches_chrono(y in 1i32..9999, m in 1u32..=12, d in 1u32..=28) {
            let want = NaiveDate::from_ymd_opt(y, m, d).unwrap().signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days();
            prop_assert_eq!(days_from_civil(y as i64, m, d), want);
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_time_local(&b);
            let _ = parse_iso8601(&b);
            let _ = parse_epoch(&b, EpochUnit::Seconds);
            let _ = parse_epoch(&b, EpochUnit::Micros);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// The word-wise parser agrees with the byte-by-byte one on valid and damaged stamps
        /// (the bytes next to separators and digits are what a wrong constant would let in).
        #[test]
        fn time_local_matches_digitwise(
            secs in -62_135_596_800i64..253_402_300_799,
            off_min in -(23*60+59)..=(23*60+59i32),
            edits in proptest::collection::vec((0usize..26, any::<u8>(), prop::sample::select(b"0123456789/: +-!)(.;?Oo\x80\xff".to_vec()), any::<bool>()), 0..3),
        ) {
            let off = chrono::FixedOffset::east_opt(off_min * 60).unwrap();
            let dt = DateTime::from_timestamp(secs, 0).unwrap().with_timezone(&off);
            let mut text = dt.format("%d/%b/%Y:%H:%M:%S %z").to_string().into_bytes();
            for (at, random, special, pick) in edits {
                text[at] = if pick { special } else { random };
            }
            prop_assert_eq!(parse_time_local(&text), parse_time_local_digitwise(&text));
            // The memo of the date gives the same, whatever the line before held.
            let text: [u8; 26] = text.try_into().unwrap();
            prop_assert_eq!(parse_time_local_cached(&text), parse_time_local(&text));
            prop_assert_eq!(parse_time_local_cached(&text), parse_time_local(&text));
        }
    }
}
