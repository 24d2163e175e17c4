//! Fused single-pass parsers for the common built-in layouts (apache `combined`, `common`,
//! `vhost_combined`, nginx `combined` and `main`): the hot path for nearly every line.
//!
//! The generic executor (`exec.rs`) follows the plan field by field: a search per field, a
//! `Src` text conversion per value, a record built up from `Default`. Here one function per
//! layout walks the line once with fixed offsets where the layout has them (timestamp,
//! status), and builds the record in one go.
//!
//! It only takes lines it can prove the generic plan parses the same way: ASCII without any
//! backslash (so nothing is decoded and every value borrows), an IPv4/IPv6 client address,
//! a `METHOD target HTTP/x[.y]` request, numbers without sign or fraction. Anything else
//! (escapes, non-UTF-8, a raw request, a hostname as client, an error) returns `None` and
//! the caller runs the generic plan, so records and errors are identical by construction;
//! `tests.rs` checks that on mutated lines of every layout.
//!
//! A format that is one of these layouts followed by more fields (`main` + `$request_time
//! $host …`) is read the same way up to the layout's last quoted value; the plan reads the
//! rest from there (`Plan::run_rest`).
//!
//! The parser is compiled twice: as is (SSE2, what every x86-64 has) and with AVX2 and BMI
//! enabled (`parse_wide`, 32-byte scans), chosen once per format from what the CPU has.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use sitelog_schema::AccessRecord;

use super::escape::Decode;
use super::ip::{canonical, parse_ip, v6_groups_prefix};
use super::plan::{Class, Extent, Field, Plan};
use super::time::parse_time_local_cached;
use super::value::is_tchar;
use super::{apache, nginx, IpNet, LineError, LogFormat, NGINX_COMBINED};

/// What follows `%>s %b` / `$status $body_bytes_sent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Nothing: the byte count ends the line (`common`).
    None,
    /// `"referer" "agent"` ending the line (`combined`, `vhost_combined`).
    RefererAgent,
    /// `"referer" "agent" "x-forwarded-for"` ending the line (nginx `main`).
    RefererAgentXff,
}

/// A layout with a fused parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fast {
    /// `%v:%p ` before the client address (`vhost_combined`).
    vhost: bool,
    /// nginx's ` - ` literal after the address rather than apache's `%l` field.
    nginx: bool,
    tail: Tail,
    /// `Some(k)`: the format goes on after the layout (`main` plus `$request_time $host …`):
    /// the fused parser reads the layout's fields, and the plan the rest from field `k`.
    rest: Option<usize>,
    /// The format logs X-Forwarded-For (with trusted proxies the client address depends on it).
    forwarded: bool,
    /// The CPU has AVX2 (and BMI): the same parser compiled for it, scanning 32 bytes at a
    /// time. Checked once at compile time of the format, so lines pay no feature test.
    wide: bool,
}

impl Fast {
    /// The fused parser for a plan, when it compiles to one of the covered layouts (whatever
    /// the spelling: `%{user-agent}i` and `%{User-Agent}i` are the same layout).
    pub(crate) fn detect(plan: &Plan) -> Option<Fast> {
        static LAYOUTS: OnceLock<Vec<(Plan, Fast)>> = OnceLock::new();
        let layouts = LAYOUTS.get_or_init(|| {
            let fast =
                |vhost, nginx, tail| Fast { vhost, nginx, tail, rest: None, forwarded: false, wide: wide_available() };
            let apache = |f: &str| Plan::build(apache::tokenize(f).expect("built-in"), Decode::Backslash);
            let nginx = |f: &str| Plan::build(nginx::tokenize(f).expect("built-in"), Decode::Backslash);
            [
                (apache(LogFormat::COMBINED), fast(false, false, Tail::RefererAgent)),
                (apache(LogFormat::COMMON), fast(false, false, Tail::None)),
                (apache(LogFormat::VHOST_COMBINED), fast(true, false, Tail::RefererAgent)),
                (nginx(NGINX_COMBINED), fast(false, true, Tail::RefererAgent)),
                (nginx(LogFormat::MAIN), fast(false, true, Tail::RefererAgentXff)),
            ]
            .into_iter()
            .map(|(p, f)| (p.expect("built-in compiles"), f))
            .collect()
        });
        let forwarded = plan.xff.is_some();
        if let Some((_, f)) = layouts.iter().find(|(p, _)| same_layout(p, plan)) {
            return Some(Fast { forwarded, ..*f });
        }
        let (layout, f) = layouts.iter().find(|(p, f)| f.tail != Tail::None && layout_prefix(p, plan))?;
        Some(Fast { rest: Some(layout.fields.len()), forwarded, ..*f })
    }

    /// Whether the fused parser gives what the plan gives: only without trusted proxies when
    /// the layout logs X-Forwarded-For (the client address then depends on it).
    pub(crate) fn usable_with(self, trusted: &[IpNet]) -> bool {
        !self.forwarded || trusted.is_empty()
    }

    /// Parses `line`: the fused parser (and the plan for the fields after the layout), or
    /// `whole` — the plan over the whole line — when the plan must decide (see the module
    /// docs). The record is built in the caller's result (no copy of the ~300-byte record).
    #[inline]
    pub(crate) fn parse_or<'a>(
        self,
        line: &'a [u8],
        plan: &Plan,
        trusted: &[IpNet],
        whole: impl FnOnce(&'a [u8]) -> Result<AccessRecord<'a>, LineError>,
    ) -> Result<AccessRecord<'a>, LineError> {
        #[cfg(target_arch = "x86_64")]
        if self.wide {
            // SAFETY: `wide` is set only when the CPU has the features `parse_wide` enables.
            return unsafe { self.parse_wide(line, plan, trusted, whole) };
        }
        match self.fused::<false>(line, plan, trusted) {
            Some(result) => result,
            None => whole(line),
        }
    }

    /// The same parser with AVX2 and BMI enabled: 32-byte scans, and the compiler may use
    /// them anywhere in the inlined body.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,bmi1,bmi2,lzcnt,popcnt")]
    unsafe fn parse_wide<'a>(
        self,
        line: &'a [u8],
        plan: &Plan,
        trusted: &[IpNet],
        whole: impl FnOnce(&'a [u8]) -> Result<AccessRecord<'a>, LineError>,
    ) -> Result<AccessRecord<'a>, LineError> {
        match self.fused::<true>(line, plan, trusted) {
            Some(result) => result,
            None => whole(line),
        }
    }

    /// The fused parser, then the plan for the fields after the layout; `None` where the plan
    /// must read the whole line.
    #[inline(always)]
    fn fused<'a, const WIDE: bool>(
        self,
        line: &'a [u8],
        plan: &Plan,
        trusted: &[IpNet],
    ) -> Option<Result<AccessRecord<'a>, LineError>> {
        // Two builds of the parser: the whole-line layouts (nearly every line) do not carry
        // the end position the others need.
        let Some(k) = self.rest else {
            return self.parse_with::<WIDE, false>(line).map(|(rec, _)| Ok(rec));
        };
        let (mut rec, end) = self.parse_with::<WIDE, true>(line)?;
        // `end` is the first quote after the layout's last value: the plan ends that value
        // there too when the literal after it follows (else it looks further: its call).
        let after = &plan.fields[k - 1].after;
        if !line[end..].starts_with(after) {
            return None;
        }
        Some(plan.run_rest(line, &mut rec, trusted, k, end + after.len()).map(|()| rec))
    }

    /// The fused parser alone (with the plan after the layout): `None` where the plan reads
    /// the whole line.
    #[cfg(test)]
    pub(crate) fn parse<'a>(self, line: &'a [u8], fmt: &LogFormat) -> Option<Result<AccessRecord<'a>, LineError>> {
        let mut declined = false;
        let r = self.parse_or(line, &fmt.plan, &fmt.trusted, |_| {
            declined = true;
            Err(LineError::empty())
        });
        (!declined).then_some(r)
    }

    /// Whether the format goes on after the layout (the plan reads the rest).
    #[cfg(test)]
    pub(crate) fn has_rest(self) -> bool {
        self.rest.is_some()
    }

    /// This layout's parser with the 16-byte scans only (what a CPU without AVX2 runs), for
    /// tests that compare both builds.
    #[cfg(test)]
    pub(crate) fn narrow(self) -> Fast {
        Fast { wide: false, ..self }
    }

    /// The parser; `WIDE` only where AVX2 is enabled (`parse_wide`).
    ///
    /// With `REST` (the format has `rest`), the layout's last quoted value may be followed by
    /// more: its end is the first quote after it, returned with the record (otherwise the
    /// line's length).
    #[inline(always)]
    fn parse_with<'a, const WIDE: bool, const REST: bool>(self, line: &'a [u8]) -> Option<(AccessRecord<'a>, usize)> {
        if !plain::<WIDE>(line) {
            return None;
        }
        // SAFETY: `plain` checked every byte is ASCII, which is valid UTF-8.
        let s = unsafe { std::str::from_utf8_unchecked(line) };
        let mut pos = 0;
        let mut host = Cow::Borrowed("");
        if self.vhost {
            // `%v` up to the first `:`, then `%p` up to the first space.
            let colon = find_byte::<WIDE>(line, 0, b':')?;
            host = text(s, 0, colon);
            pos = find_byte::<WIDE>(line, colon + 1, b' ')? + 1;
        }
        let (ip, end) = client(line, pos)?;
        // `end` is the space after the address.
        pos = if self.nginx {
            if line.get(end + 1..end + 3)? != b"- " {
                return None;
            }
            end + 3
        } else if line.get(end + 1..end + 3)? == b"- " {
            end + 3
        } else {
            find_byte::<WIDE>(line, end + 1, b' ')? + 1
        };
        // The user ends at the first space; `[` must follow (nginx's literal is ` [`).
        let user_end = find_byte::<WIDE>(line, pos, b' ')?;
        let remote_user = text(s, pos, user_end);
        let t = user_end + 1;
        let stamp = line.get(t..t + 30)?;
        if stamp[0] != b'[' || stamp[27] != b']' || stamp[28] != b' ' || stamp[29] != b'"' {
            return None;
        }
        let ts = parse_time_local_cached(stamp[1..27].try_into().ok()?)?;

        let (q, method, path, query, protocol) = request::<WIDE>(s, t + 30)?;

        // Status: three digits and a space.
        let st = q + 2;
        let d = line.get(st..st + 4)?;
        let digits = [d[0].wrapping_sub(b'0'), d[1].wrapping_sub(b'0'), d[2].wrapping_sub(b'0')];
        if digits.iter().any(|&x| x > 9) || d[3] != b' ' {
            return None;
        }
        let status = digits[0] as u16 * 100 + digits[1] as u16 * 10 + digits[2] as u16;

        let b = st + 4;
        let (bytes_sent, b_end) = count(line, b)?;
        let mut end = line.len();
        let (referer, user_agent) = match self.tail {
            Tail::None => {
                if b_end != line.len() {
                    return None;
                }
                (Cow::Borrowed(""), Cow::Borrowed(""))
            }
            Tail::RefererAgent | Tail::RefererAgentXff => {
                if line.get(b_end..b_end + 2)? != b" \"" {
                    return None;
                }
                let rf = b_end + 2;
                let rf_end = quoted::<WIDE>(line, rf)?;
                let ua = rf_end + 3;
                let ua_end = if REST {
                    // The last quoted value ends at the first quote after it.
                    let ua_end = match self.tail {
                        Tail::RefererAgentXff => quoted::<WIDE>(line, ua)?,
                        _ => find_byte::<WIDE>(line, ua, b'"')?,
                    };
                    end = match self.tail {
                        Tail::RefererAgentXff => find_byte::<WIDE>(line, ua_end + 3, b'"')?,
                        _ => ua_end,
                    };
                    ua_end
                } else {
                    // The last field runs to the closing quote that ends the line.
                    let last = line.len() - 1;
                    if line[last] != b'"' || last < ua {
                        return None;
                    }
                    match self.tail {
                        // `$http_x_forwarded_for` (not in the record) runs to the end.
                        Tail::RefererAgentXff => quoted::<WIDE>(line, ua).filter(|&e| e + 3 <= last)?,
                        _ => last,
                    }
                };
                (text(s, rf, rf_end), text(s, ua, ua_end))
            }
        };
        let rec = AccessRecord {
            ts_micros: ts.micros,
            tz_offset_secs: ts.offset_secs,
            host,
            client_ip: Some(ip),
            remote_user,
            method,
            path,
            query,
            protocol,
            status,
            bytes_sent,
            referer,
            user_agent,
            ..AccessRecord::default()
        };
        Some((rec, end))
    }
}

/// Same fields, kinds, literals and extents: the plans parse every line alike (names only
/// matter for errors and extras, which the fused parsers leave to the plan).
fn same_layout(a: &Plan, b: &Plan) -> bool {
    a.prefix == b.prefix
        && a.decode == b.decode
        && a.host == b.host
        && a.xff == b.xff
        && a.fields.len() == b.fields.len()
        && a.fields.iter().zip(&b.fields).all(|(x, y)| same_field(x, y))
}

fn same_field(x: &Field, y: &Field) -> bool {
    x.kind == y.kind && x.store == y.store && x.after == y.after && x.extent == y.extent && x.quoted == y.quoted
}

/// Whether `plan` starts with the layout and goes on after it: the same fields up to the
/// layout's last one, a quoted value, which in `plan` is followed by more (a quote, then
/// literals and fields the plan reads). The layout's site host and X-Forwarded-For fields,
/// if any, stay where they are; the plan's others come after the layout.
fn layout_prefix(layout: &Plan, plan: &Plan) -> bool {
    let n = layout.fields.len();
    let moved = |l: Option<usize>, p: Option<usize>| l == p || (l.is_none() && p.is_some_and(|i| i >= n));
    let (Some(last), Some(next)) = (layout.fields.last(), plan.fields.get(n - 1)) else {
        return false;
    };
    plan.fields.len() > n
        && layout.prefix == plan.prefix
        && layout.decode == plan.decode
        && moved(layout.host, plan.host)
        && moved(layout.xff, plan.xff)
        && layout.fields[..n - 1].iter().zip(&plan.fields).all(|(x, y)| same_field(x, y))
        && last.quoted
        && last.kind == next.kind
        && last.store == next.store
        && next.quoted
        && next.extent == Extent::Quoted
        && next.after.first() == Some(&b'"')
}

/// `-` is empty, anything else borrows.
#[inline(always)]
fn text(s: &str, start: usize, end: usize) -> Cow<'_, str> {
    let v = str_at(s, start, end);
    if v == "-" {
        Cow::Borrowed("")
    } else {
        Cow::Borrowed(v)
    }
}

/// `s[start..end]` of an ASCII line: every index is a char boundary, so only the bounds are
/// checked (str slicing's boundary checks were a visible cost).
#[inline(always)]
fn str_at(s: &str, start: usize, end: usize) -> &str {
    let v = &s.as_bytes()[start..end];
    debug_assert!(v.is_ascii());
    // SAFETY: the fused parsers only run on ASCII lines (`plain`), so any byte range is UTF-8.
    unsafe { std::str::from_utf8_unchecked(v) }
}

/// Whether the line is ASCII and holds no backslash: one pass instead of a UTF-8 check and
/// a backslash search per field.
#[inline(always)]
fn plain<const WIDE: bool>(b: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `WIDE` is only set in `parse_wide`, which runs where AVX2 is present; SSE2
        // is part of x86_64.
        if WIDE && b.len() >= <simd::Wide as simd::Block>::LEN {
            return unsafe { simd::plain::<simd::Wide>(b) };
        }
        if b.len() >= <simd::Narrow as simd::Block>::LEN {
            return unsafe { simd::plain::<simd::Narrow>(b) };
        }
    }
    b.iter().all(|&c| c < 0x80 && c != b'\\')
}

/// First `c` at or after `from`. Fields searched this way are short (a user, a host): a
/// register at a time inline, no call into memchr.
#[inline(always)]
fn find_byte<const WIDE: bool>(b: &[u8], from: usize, c: u8) -> Option<usize> {
    #[allow(unused_mut)]
    let mut i = from;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: as in `plain`.
        if WIDE {
            i = match unsafe { simd::find_byte::<simd::Wide>(b, i, c) } {
                Ok(at) => return Some(at),
                Err(next) => next,
            };
        }
        i = match unsafe { simd::find_byte::<simd::Narrow>(b, i, c) } {
            Ok(at) => return Some(at),
            Err(next) => next,
        };
    }
    b.get(i..)?.iter().position(|&x| x == c).map(|p| i + p)
}

/// The client address at `pos` and the index of the space after it, as the plan reads it:
/// dotted quads and plain IPv6 in place, anything else through `parse_ip` over the same
/// bytes the plan takes (the run of address characters).
#[inline(always)]
fn client(line: &[u8], pos: usize) -> Option<(IpAddr, usize)> {
    if let Some((v4, end)) = dotted_quad(line, pos) {
        return Some((IpAddr::V4(v4), end));
    }
    // IPv6 read up to where it ends: when a space follows, that is also where the plan's
    // run of address characters ends, and `parse_ip` reads the same groups.
    if let Some((v6, n)) = v6_groups_prefix(line.get(pos..)?) {
        if line.get(pos + n) == Some(&b' ') {
            return Some((canonical(IpAddr::V6(v6)), pos + n));
        }
    }
    let end = pos + Class::Address.run(line.get(pos..)?);
    if line.get(end) != Some(&b' ') {
        return None;
    }
    Some((parse_ip(&line[pos..end])?, end))
}

/// A dotted quad at `pos` followed by a space, and the index of the space. Std's rules (no
/// leading zeros, octets up to 255). The dots and the space are located at once in a
/// 16-byte window and the octets read independently: octet lengths vary from line to line,
/// and a digit-by-digit loop mispredicts its exits.
#[inline(always)]
fn dotted_quad(line: &[u8], pos: usize) -> Option<(Ipv4Addr, usize)> {
    // Four octets of up to three digits, three dots and the space fit in 16 bytes.
    let w: &[u8; 16] = line.get(pos..pos + 16)?.try_into().ok()?;
    let (dots, space) = dots_and_space(w);
    // The first three dots, then the space, in that order with no other dot in between.
    let p1 = dots.trailing_zeros() as usize;
    let rest = dots & dots.wrapping_sub(1);
    let p2 = rest.trailing_zeros() as usize;
    let rest = rest & rest.wrapping_sub(1);
    let p3 = rest.trailing_zeros() as usize;
    let rest = rest & rest.wrapping_sub(1);
    let end = space.trailing_zeros() as usize;
    if end >= 16 || p3 >= end || rest.trailing_zeros() as usize <= end {
        return None;
    }
    // Each octet from the (up to) three bytes before its end, units first, every test a
    // plain `&` of booleans: octet lengths vary from line to line, and a branch on them
    // (a `match` on the length, a short-circuit `&&`) mispredicts.
    let d = |k: usize| w[k & 15].wrapping_sub(b'0') as u32;
    let mut ok = true;
    let mut octet = |s: usize, e: usize| {
        let len = e.wrapping_sub(s);
        let (u, t, h) = (d(e.wrapping_sub(1)), d(e.wrapping_sub(2)), d(e.wrapping_sub(3)));
        let (has_t, has_h) = (len >= 2, len >= 3);
        let v = u + t * 10 * has_t as u32 + h * 100 * has_h as u32;
        let digits = (u <= 9) & (!has_t | (t <= 9)) & (!has_h | (h <= 9));
        // No leading zero (std's rule): a one-digit octet, or a first digit other than 0.
        let lead = (len == 1) | (d(s) != 0);
        ok &= digits & (len.wrapping_sub(1) < 3) & lead & (v <= 255);
        v as u8
    };
    let octets = [octet(0, p1), octet(p1 + 1, p2), octet(p2 + 1, p3), octet(p3 + 1, end)];
    ok.then(|| (Ipv4Addr::from(octets), pos + end))
}

/// Bit masks of the `.` and ` ` bytes of a 16-byte window.
#[inline(always)]
fn dots_and_space(w: &[u8; 16]) -> (u32, u32) {
    #[cfg(target_arch = "x86_64")]
    {
        use simd::{Block, Narrow};
        // SAFETY: SSE2 is part of x86_64; the load reads the 16 bytes of `w`.
        unsafe {
            let v = Narrow::load(w.as_ptr());
            (v.eq(Narrow::splat(b'.')).mask() | 1 << 16, v.eq(Narrow::splat(b' ')).mask() | 1 << 16)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mask = |c: u8| w.iter().enumerate().fold(1 << 16, |m, (i, &x)| m | u32::from(x == c) << i);
        (mask(b'.'), mask(b' '))
    }
}

/// The request `METHOD target HTTP/x.y` from `r` to its closing quote `q` (returned, with
/// the space after it checked): method, path, query and protocol, or `None` for anything the
/// plan would split differently or keep raw.
#[inline(always)]
#[allow(clippy::type_complexity)]
fn request<const WIDE: bool>(
    s: &str,
    r: usize,
) -> Option<(usize, Cow<'_, str>, Cow<'_, str>, Cow<'_, str>, Cow<'_, str>)> {
    let b = s.as_bytes();
    // Method: 1..=32 token characters and a space (as `split_request`; a quote is no token
    // character, so the method ends before the closing quote).
    let mut m = r;
    if b.get(r..r + 4) == Some(b"GET ") {
        m = r + 3;
    } else {
        while m < b.len() && m - r < 33 && is_tchar(b[m]) {
            m += 1;
        }
    }
    if m == r || m - r > 32 || b.get(m) != Some(&b' ') {
        return None;
    }
    let t = m + 1;
    let (q, qmark) = find_quote_and_qmark::<WIDE>(b, t)?;
    if b.get(q + 1) != Some(&b' ') {
        return None;
    }
    // Protocol: `HTTP/d.d` or `HTTP/d` after the last space; the target must be non-empty.
    let proto_len = if q >= 8 && is_http(&b[q - 8..q], true) {
        8
    } else if q >= 6 && is_http(&b[q - 6..q], false) {
        6
    } else {
        return None;
    };
    let target_end = q - proto_len - 1;
    if target_end <= t || b[target_end] != b' ' {
        return None;
    }
    // The protocol holds no `?`, so one before the quote is in the target.
    let (path, query) = match qmark {
        Some(p) => (str_at(s, t, p), str_at(s, p + 1, target_end)),
        None => (str_at(s, t, target_end), ""),
    };
    let c = Cow::Borrowed;
    Some((q, c(str_at(s, r, m)), c(path), c(query), c(str_at(s, target_end + 1, q))))
}

/// `HTTP/1.1` (`minor`) or `HTTP/2`.
#[inline(always)]
fn is_http(p: &[u8], minor: bool) -> bool {
    p.starts_with(b"HTTP/") && p[5].is_ascii_digit() && (!minor || (p[6] == b'.' && p[7].is_ascii_digit()))
}

/// A byte count at `pos` (`-` is 0) and the index after it: 1 to 19 digits (no overflow),
/// not followed by a `.` or `-` (the plan's number would run on).
#[inline(always)]
fn count(line: &[u8], pos: usize) -> Option<(u64, usize)> {
    let first = *line.get(pos)?;
    if first == b'-' {
        let end = pos + 1;
        return (line.get(end).is_none_or(|&c| !Class::Decimal.contains(c))).then_some((0, end));
    }
    // Up to seven digits eight bytes at a time (the line is ASCII, so no byte XOR `0` has
    // its top bit set, and adding 0x76 sets it exactly for the non-digits).
    if let Some(w) = line.get(pos..pos + 8) {
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let x = u64::from_le_bytes(w.try_into().ok()?) ^ 0x3030_3030_3030_3030;
        let non_digit = (x.wrapping_add(0x7676_7676_7676_7676) | x) & HIGH;
        let len = (non_digit.trailing_zeros() / 8) as usize;
        if (1..8).contains(&len) {
            if Class::Decimal.contains(w[len]) {
                return None;
            }
            // The digits to the top bytes, then pairs, quads, octets combined (the usual
            // eight-digit multiply trick; leading zero bytes are leading zero digits).
            let mut v = x << ((8 - len) * 8);
            v = (v & 0x0f0f_0f0f_0f0f_0f0f).wrapping_mul(2561) >> 8;
            v = (v & 0x00ff_00ff_00ff_00ff).wrapping_mul(6_553_601) >> 16;
            v = (v & 0x0000_ffff_0000_ffff).wrapping_mul(42_949_672_960_001) >> 32;
            return Some((v, pos + len));
        }
    }
    let mut v: u64 = 0;
    let mut i = pos;
    while let Some(&c) = line.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        if i - pos == 19 {
            return None; // a 20th digit could overflow
        }
        v = v * 10 + d as u64;
        i += 1;
    }
    if i == pos || line.get(i).is_some_and(|&c| Class::Decimal.contains(c)) {
        return None;
    }
    Some((v, i))
}

/// The end of a quoted value starting at `pos` (the line holds no backslash): its first `"`,
/// which must start the `" "` before the next quoted field.
#[inline(always)]
fn quoted<const WIDE: bool>(line: &[u8], pos: usize) -> Option<usize> {
    let q = find_byte::<WIDE>(line, pos, b'"')?;
    (line.get(q + 1..q + 3)? == b" \"").then_some(q)
}

/// The first `"` at or after `from`, and the first `?` before it. Values are short (tens of
/// bytes): an inline scan a register at a time beats a call into memchr, and finds both in
/// one pass.
#[inline(always)]
fn find_quote_and_qmark<const WIDE: bool>(b: &[u8], from: usize) -> Option<(usize, Option<usize>)> {
    #[allow(unused_mut)]
    let (mut i, mut qmark) = (from, None);
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: as in `plain`.
        if WIDE {
            (i, qmark) = match unsafe { simd::find_quote_and_qmark::<simd::Wide>(b, i, qmark) } {
                Ok(found) => return Some(found),
                Err(state) => state,
            };
        }
        (i, qmark) = match unsafe { simd::find_quote_and_qmark::<simd::Narrow>(b, i, qmark) } {
            Ok(found) => return Some(found),
            Err(state) => state,
        };
    }
    while i < b.len() {
        match b[i] {
            b'"' => return Some((i, qmark)),
            b'?' if qmark.is_none() => qmark = Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The scans' loops, written once over a register of either width: 16 bytes (SSE2, part of
/// x86_64) or 32 (AVX2, only inside `parse_wide`). Each function takes whole registers from
/// `from` and leaves the rest to the caller.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// One register of bytes.
    pub(super) trait Block: Copy {
        const LEN: usize;
        /// SAFETY (all methods): the CPU has the register's instructions; `load` reads
        /// `LEN` bytes at `p`.
        unsafe fn load(p: *const u8) -> Self;
        unsafe fn splat(c: u8) -> Self;
        /// `0xff` where the bytes are equal.
        unsafe fn eq(self, other: Self) -> Self;
        unsafe fn or(self, other: Self) -> Self;
        /// Bit `k` is the top bit of byte `k`.
        unsafe fn mask(self) -> u32;
    }

    /// A register type and its intrinsics.
    macro_rules! block {
        ($name:ident($reg:ty), $len:literal, $load:ident, $set1:ident, $cmpeq:ident, $or:ident, $movemask:ident) => {
            #[derive(Clone, Copy)]
            pub(super) struct $name($reg);

            impl Block for $name {
                const LEN: usize = $len;
                #[inline(always)]
                unsafe fn load(p: *const u8) -> Self {
                    $name($load(p as *const $reg))
                }
                #[inline(always)]
                unsafe fn splat(c: u8) -> Self {
                    $name($set1(c as i8))
                }
                #[inline(always)]
                unsafe fn eq(self, other: Self) -> Self {
                    $name($cmpeq(self.0, other.0))
                }
                #[inline(always)]
                unsafe fn or(self, other: Self) -> Self {
                    $name($or(self.0, other.0))
                }
                #[inline(always)]
                unsafe fn mask(self) -> u32 {
                    $movemask(self.0) as u32
                }
            }
        };
    }
    block!(Narrow(__m128i), 16, _mm_loadu_si128, _mm_set1_epi8, _mm_cmpeq_epi8, _mm_or_si128, _mm_movemask_epi8);
    block!(
        Wide(__m256i),
        32,
        _mm256_loadu_si256,
        _mm256_set1_epi8,
        _mm256_cmpeq_epi8,
        _mm256_or_si256,
        _mm256_movemask_epi8
    );

    /// `super::plain` for `b.len() >= B::LEN`: every register ORed together (the last one
    /// overlaps the one before), one test at the end.
    #[inline(always)]
    pub(super) unsafe fn plain<B: Block>(b: &[u8]) -> bool {
        let bs = B::splat(b'\\');
        let p = b.as_ptr();
        let last = B::load(p.add(b.len() - B::LEN));
        let mut acc = last.or(last.eq(bs));
        let mut i = 0;
        while i + B::LEN <= b.len() {
            let v = B::load(p.add(i));
            acc = acc.or(v.or(v.eq(bs)));
            i += B::LEN;
        }
        acc.mask() == 0
    }

    /// The first `c` in whole registers from `from`, or where the search goes on.
    #[inline(always)]
    pub(super) unsafe fn find_byte<B: Block>(b: &[u8], from: usize, c: u8) -> Result<usize, usize> {
        let needle = B::splat(c);
        let mut i = from;
        while i + B::LEN <= b.len() {
            let m = B::load(b.as_ptr().add(i)).eq(needle).mask();
            if m != 0 {
                return Ok(i + m.trailing_zeros() as usize);
            }
            i += B::LEN;
        }
        Err(i)
    }

    /// The first `"` and the first `?` before it, in whole registers from `from` (`qmark`: a
    /// `?` already seen), or where the search goes on and the `?` seen so far.
    #[inline(always)]
    #[allow(clippy::type_complexity)]
    pub(super) unsafe fn find_quote_and_qmark<B: Block>(
        b: &[u8],
        from: usize,
        mut qmark: Option<usize>,
    ) -> Result<(usize, Option<usize>), (usize, Option<usize>)> {
        let (quote, question) = (B::splat(b'"'), B::splat(b'?'));
        let mut i = from;
        while i + B::LEN <= b.len() {
            let v = B::load(b.as_ptr().add(i));
            let (qm, wm) = (v.eq(quote).mask(), v.eq(question).mask());
            if qmark.is_none() && wm != 0 {
                qmark = Some(i + wm.trailing_zeros() as usize);
            }
            if qm != 0 {
                let q = i + qm.trailing_zeros() as usize;
                return Ok((q, qmark.filter(|&p| p < q)));
            }
            i += B::LEN;
        }
        Err((i, qmark))
    }
}

/// Whether this CPU runs the wide parsers.
fn wide_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("bmi1")
            && std::is_x86_feature_detected!("bmi2")
            && std::is_x86_feature_detected!("lzcnt")
            && std::is_x86_feature_detected!("popcnt")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// The branch-free dotted quad reads exactly what `parse_ip` reads before a space.
        #[test]
        fn dotted_quad_matches_parse_ip(s in "[0-9.]{0,17}", tail in "[ 0-9.:a-f-]{0,16}") {
            let line = format!("{s}{tail}");
            let b = line.as_bytes();
            if let Some((ip, end)) = dotted_quad(b, 0) {
                prop_assert_eq!(b[end], b' ');
                prop_assert_eq!(parse_ip(&b[..end]), Some(IpAddr::V4(ip)));
            } else if b.len() >= 16 {
                // Declines only what is not a dotted quad and a space.
                let run = b.iter().take_while(|c| c.is_ascii_digit() || **c == b'.').count();
                let v4 = matches!(parse_ip(&b[..run]), Some(IpAddr::V4(_)));
                prop_assert!(!(v4 && b.get(run) == Some(&b' ')), "{:?}", line);
            }
        }

        #[test]
        fn dotted_quads_of_every_octet(a: u8, b: u8, c: u8, d: u8, rest in "[ -~]{0,9}") {
            let line = format!("{a}.{b}.{c}.{d} {rest}");
            let want = (line.len() >= 16).then(|| (Ipv4Addr::new(a, b, c, d), line.find(' ').unwrap()));
            prop_assert_eq!(dotted_quad(line.as_bytes(), 0), want);
        }

        /// Counts agree with the plan's reading of a number: the run of `[0-9.-]`, parsed.
        #[test]
        fn count_matches_parse_bytes(digits in "[0-9]{0,21}|[0-9.-]{0,5}", after in "[ \".x]?", pad in 0usize..10) {
            let line = format!("{digits}{after}{}", " ".repeat(pad));
            let run = Class::Decimal.run(line.as_bytes());
            let want = super::super::value::parse_bytes(&line.as_bytes()[..run]).map(|v| (v, run));
            let got = count(line.as_bytes(), 0);
            prop_assert!(got.is_none() || got == want, "{:?}: {:?} {:?}", line, got, want);
            // It declines only past 19 digits.
            prop_assert!(got.is_some() || want.is_none() || run > 19, "{:?}", line);
        }
    }
}
