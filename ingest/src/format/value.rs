//! Typed values from field bytes: integers, durations, upstream lists, the request line.

use super::plan::DurUnit;

/// A decimal integer; `None` on anything else or overflow.
#[inline]
pub(crate) fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(d as u64)?;
    }
    Some(v)
}

/// An HTTP status; nginx writes `000` when no response was sent, apache `-` in some cases.
#[inline]
pub(crate) fn parse_status(b: &[u8]) -> Option<u16> {
    if b == b"-" {
        return Some(0);
    }
    if b.len() > 3 {
        return None;
    }
    parse_u64(b).map(|v| v as u16)
}

/// Byte counts: `-` (apache `%b` for none) is 0.
#[inline]
pub(crate) fn parse_bytes(b: &[u8]) -> Option<u64> {
    if b == b"-" {
        return Some(0);
    }
    parse_u64(b)
}

/// A duration in microseconds; `Ok(None)` for `-` or empty (not logged).
#[inline]
pub(crate) fn parse_duration(b: &[u8], unit: DurUnit) -> Result<Option<u64>, ()> {
    if b == b"-" || b.is_empty() {
        return Ok(None);
    }
    match unit {
        DurUnit::Seconds => decimal_seconds_us(b).map(Some).ok_or(()),
        DurUnit::Millis => parse_u64(b).and_then(|v| v.checked_mul(1000)).map(Some).ok_or(()),
        DurUnit::Micros => parse_u64(b).map(Some).ok_or(()),
    }
}

/// `0.123` / `12` / `1.5` seconds as microseconds (digits past the sixth decimal dropped).
#[inline]
fn decimal_seconds_us(b: &[u8]) -> Option<u64> {
    let (int, frac) = match memchr::memchr(b'.', b) {
        Some(dot) => (&b[..dot], &b[dot + 1..]),
        None => (b, &b[..0]),
    };
    let secs = parse_u64(int)?;
    let mut us: u64 = 0;
    for i in 0..6 {
        let d = match frac.get(i) {
            Some(&c) => c.wrapping_sub(b'0'),
            None => 0,
        };
        if d > 9 {
            return None;
        }
        us = us * 10 + d as u64;
    }
    if frac.len() > 6 && !frac[6..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    secs.checked_mul(1_000_000)?.checked_add(us)
}

/// `$upstream_response_time`: `0.004`, `0.004, 0.010` (servers tried), `0.001 : 0.002`
/// (internal redirects), `-` entries for attempts without a time. Returns the summed time
/// (`None` when no entry had one) and the number of entries; `Err` when an entry is garbage.
pub(crate) fn parse_upstream(b: &[u8]) -> Result<(Option<u64>, u8), ()> {
    if b == b"-" || b.is_empty() {
        return Ok((None, 0));
    }
    let mut sum: Option<u64> = None;
    let mut count: u32 = 0;
    for entry in b.split(|&c| c == b',' || c == b':') {
        let entry = entry.trim_ascii();
        count += 1;
        if entry == b"-" {
            continue;
        }
        let us = decimal_seconds_us(entry).ok_or(())?;
        sum = Some(sum.unwrap_or(0).saturating_add(us));
    }
    Ok((sum, count.min(u8::MAX as u32) as u8))
}

/// `$upstream_status`: `200`, `502, 200` (servers tried), `502 : 200` (internal redirects),
/// `-` entries for attempts without a status. The last entry is the answer the client got
/// through; `-` there (or an absent field) is 0. `None` when an entry is garbage.
pub(crate) fn parse_upstream_status(b: &[u8]) -> Option<u16> {
    let last = b.rsplit(|&c| c == b',' || c == b':').next().unwrap_or(b).trim_ascii();
    for entry in b.split(|&c| c == b',' || c == b':') {
        let entry = entry.trim_ascii();
        if entry != b"-" && !entry.is_empty() && parse_status(entry).is_none() {
            return None;
        }
    }
    if last == b"-" || last.is_empty() {
        return Some(0);
    }
    parse_status(last)
}

/// A request line split into parts, as byte ranges of the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestParts {
    pub method: (usize, usize),
    pub path: (usize, usize),
    pub query: (usize, usize),
    pub protocol: (usize, usize),
}

/// RFC 9110 token characters (`GET`, `PROPFIND`, `M-SEARCH`).
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        c += 1;
    }
    t
};

/// Whether `b` is an RFC 9110 token character.
#[inline(always)]
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// `GET /a?b HTTP/1.1` → method, path, query, protocol. HTTP/0.9 style `GET /` has no
/// protocol; a target holding spaces is kept whole when a protocol ends the line. Anything
/// else (`-`, TLS bytes on a plain port, a bare word) is `None`: the caller keeps it raw.
#[inline]
pub(crate) fn split_request(b: &[u8]) -> Option<RequestParts> {
    // Method: token characters up to the first space.
    let sp = b.iter().take(33).position(|&c| !TCHAR[c as usize])?;
    if sp == 0 || b[sp] != b' ' {
        return None;
    }
    let rest_at = sp + 1;
    // Protocol: the last word, when it is `HTTP/…` (a few bytes from the end).
    let tail = &b[rest_at..];
    let last_sp = tail.iter().rev().take(12).position(|&c| c == b' ').map(|p| tail.len() - 1 - p);
    let (target_end, protocol) = match last_sp {
        Some(l) if is_protocol(&tail[l + 1..]) => (rest_at + l, (rest_at + l + 1, b.len())),
        _ => {
            if memchr::memchr(b' ', tail).is_some() {
                return None;
            }
            (b.len(), (b.len(), b.len()))
        }
    };
    if target_end == rest_at {
        return None;
    }
    let target = &b[rest_at..target_end];
    let (path, query) = match memchr::memchr(b'?', target) {
        Some(q) => ((rest_at, rest_at + q), (rest_at + q + 1, target_end)),
        None => ((rest_at, target_end), (target_end, target_end)),
    };
    Some(RequestParts { method: (0, sp), path, query, protocol })
}

/// `HTTP/1.1`, `HTTP/2.0`, `HTTP/3`.
#[inline(always)]
fn is_protocol(p: &[u8]) -> bool {
    p.len() > 5 && p.starts_with(b"HTTP/") && p[5..].iter().all(|c| c.is_ascii_digit() || *c == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> Option<[&str; 4]> {
        let p = split_request(s.as_bytes())?;
        let g = |r: (usize, usize)| &s[r.0..r.1];
        Some([g(p.method), g(p.path), g(p.query), g(p.protocol)])
    }

    #[test]
    fn request_lines() {
        assert_eq!(parts("GET /a/b?x=1&y=2 HTTP/1.1"), Some(["GET", "/a/b", "x=1&y=2", "HTTP/1.1"]));
        assert_eq!(parts("POST /wp-login.php HTTP/2.0"), Some(["POST", "/wp-login.php", "", "HTTP/2.0"]));
        assert_eq!(parts("GET / HTTP/3"), Some(["GET", "/", "", "HTTP/3"]));
        assert_eq!(parts("GET /"), Some(["GET", "/", "", ""]));
        assert_eq!(parts("GET /a b HTTP/1.1"), Some(["GET", "/a b", "", "HTTP/1.1"]));
        assert_eq!(parts("CONNECT example.com:443 HTTP/1.1"), Some(["CONNECT", "example.com:443", "", "HTTP/1.1"]));
        assert_eq!(parts("GET /?"), Some(["GET", "/", "", ""]));
        assert_eq!(parts("-"), None);
        assert_eq!(parts(""), None);
        assert_eq!(parts(r"\x16\x03\x01\x02\x00\x01\x00\x01\xFC\x03\x03"), None);
        assert_eq!(parts("GET  HTTP/1.1"), None);
        assert_eq!(parts("GET /a b c"), None);
        assert_eq!(parts("GET /a FOO/1.0"), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_status(b"200"), Some(200));
        assert_eq!(parse_status(b"-"), Some(0));
        assert_eq!(parse_status(b"2000"), None);
        assert_eq!(parse_bytes(b"-"), Some(0));
        assert_eq!(parse_bytes(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_bytes(b"18446744073709551616"), None);
        assert_eq!(parse_bytes(b"12a"), None);
        assert_eq!(parse_duration(b"0.123", DurUnit::Seconds), Ok(Some(123_000)));
        assert_eq!(parse_duration(b"12", DurUnit::Seconds), Ok(Some(12_000_000)));
        assert_eq!(parse_duration(b"1.0000019", DurUnit::Seconds), Ok(Some(1_000_001)));
        assert_eq!(parse_duration(b"-", DurUnit::Seconds), Ok(None));
        assert_eq!(parse_duration(b"x", DurUnit::Seconds), Err(()));
        assert_eq!(parse_duration(b"1.2.3", DurUnit::Seconds), Err(()));
        assert_eq!(parse_duration(b"1534", DurUnit::Micros), Ok(Some(1534)));
        assert_eq!(parse_duration(b"15", DurUnit::Millis), Ok(Some(15_000)));
    }

    #[test]
    fn upstream_lists() {
        assert_eq!(parse_upstream(b"0.004"), Ok((Some(4_000), 1)));
        assert_eq!(parse_upstream(b"0.004, 0.010"), Ok((Some(14_000), 2)));
        assert_eq!(parse_upstream(b"0.001 : 0.002"), Ok((Some(3_000), 2)));
        assert_eq!(parse_upstream(b"0.001, 0.002 : 0.003"), Ok((Some(6_000), 3)));
        assert_eq!(parse_upstream(b"-, 0.010"), Ok((Some(10_000), 2)));
        assert_eq!(parse_upstream(b"-"), Ok((None, 0)));
        assert_eq!(parse_upstream(b"fast"), Err(()));
    }
}
