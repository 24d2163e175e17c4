//! Running a compiled plan over one line: the hot path.
//!
//! Invariant: on a line that needs no escape decoding and is valid UTF-8, nothing here
//! allocates — every string in the record borrows from the line (see
//! `ingest/tests/no_alloc.rs`). Fields are delimited with `memchr` (through nom's
//! `take_until`, which uses it for the first byte of the literal after a field); timestamps,
//! addresses and numbers have hand-written parsers.

use std::borrow::Cow;
use std::net::IpAddr;

use nom::bytes::complete::take_until;
use nom::Parser;
use sitelog_schema::record::flags;
use sitelog_schema::AccessRecord;

use super::escape::{text, Decode};
use super::ip::{client_behind_proxies, parse_ip, IpNet};
use super::plan::{Extent, Field, Kind, Plan};
use super::time::{parse_epoch, parse_iso8601, parse_strftime, parse_time_local, Stamp};
use super::value::{
    parse_bytes, parse_duration, parse_status, parse_u64, parse_upstream, parse_upstream_status, split_request,
};
use super::{Extras, LineError};

/// Position of the first occurrence of `lit` in `hay`, nom's `take_until` (the slow paths).
fn take_until_pos(hay: &[u8], lit: &[u8]) -> Option<usize> {
    take_until::<_, _, nom::error::Error<&[u8]>>(lit).parse(hay).ok().map(|(_, taken)| taken.len())
}

/// First `b` in `hay`. Most fields are short (`-`, a status, an address): checking the
/// first 16 bytes eight at a time (SWAR) beats setting up a SIMD search; longer fields go
/// to memchr.
#[inline(always)]
fn find_byte(hay: &[u8], b: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * b as u64;
    let mut i = 0;
    while i < 16 {
        let Some(chunk) = hay.get(i..i + 8) else {
            break;
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        // The lowest set bit marks the first zero byte of `x` (higher bits can be false).
        let zero = x.wrapping_sub(LO) & !x & HI;
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    if i < 16 {
        return hay[i..].iter().position(|&c| c == b).map(|p| p + i);
    }
    memchr::memchr(b, &hay[i..]).map(|p| p + i)
}

/// Whether `lit` occurs in `line` at `at` (short literals compared inline: a libc `memcmp`
/// call costs more than the comparison).
#[inline(always)]
fn lit_at(line: &[u8], at: usize, lit: &[u8]) -> bool {
    let Some(s) = at.checked_add(lit.len()).and_then(|e| line.get(at..e)) else {
        return false;
    };
    match lit.len() {
        0 => true,
        1 => s[0] == lit[0],
        2 => s[0] == lit[0] && s[1] == lit[1],
        3..=8 => s.iter().zip(lit).all(|(a, b)| a == b),
        _ => s == lit,
    }
}

/// Position of the first occurrence of `lit` (non-empty) in `line[from..]`, as an index
/// into `line`.
#[inline(always)]
fn find(line: &[u8], from: usize, lit: &[u8]) -> Option<usize> {
    let first = *lit.first()?;
    let mut i = from;
    loop {
        let at = i + find_byte(line.get(i..)?, first)?;
        if lit_at(line, at, lit) {
            return Some(at);
        }
        i = at + 1;
    }
}

/// The line as `&str` when it is valid UTF-8. Nearly every log line is ASCII: checking that
/// sixteen bytes at a time is several times cheaper than full UTF-8 validation, which then
/// only runs for lines with non-ASCII bytes.
#[inline(always)]
fn as_str(line: &[u8]) -> Option<&str> {
    if is_ascii(line) {
        // SAFETY: every byte is below 0x80, and ASCII is valid UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(line) });
    }
    std::str::from_utf8(line).ok()
}

#[inline(always)]
fn is_ascii(b: &[u8]) -> bool {
    const HIGH: u128 = u128::from_le_bytes([0x80; 16]);
    if b.len() < 16 {
        return b.iter().fold(0, |a, &x| a | x) < 0x80;
    }
    let word = |c: &[u8]| {
        let mut w = [0u8; 16];
        w.copy_from_slice(c);
        u128::from_le_bytes(w)
    };
    let chunks = b.chunks_exact(16);
    // The last (overlapping) block covers the remainder.
    let mut acc = word(&b[b.len() - 16..]);
    for c in chunks {
        acc |= word(c);
    }
    acc & HIGH == 0
}

/// Whether a value holds a backslash (so escapes must be decoded).
#[inline(always)]
fn has_backslash(v: &[u8]) -> bool {
    if v.len() <= 16 {
        v.contains(&b'\\')
    } else {
        memchr::memchr(b'\\', v).is_some()
    }
}

/// The line and, when it is valid UTF-8 (nearly always), the same line as `&str`: checked
/// once, so each field is a `&str` slice without a validation of its own. Fields start and
/// end next to ASCII delimiters, which are always char boundaries.
#[derive(Clone, Copy)]
struct Src<'a> {
    bytes: &'a [u8],
    utf8: Option<&'a str>,
    decode: Decode,
}

impl<'a> Src<'a> {
    /// Text of `bytes[s..e]`: `-` is empty, escapes decoded, invalid UTF-8 replaced and
    /// flagged. `escaped` says whether the value holds a backslash, when already known.
    #[inline(always)]
    fn text(&self, s: usize, e: usize, escaped: Option<bool>, flag: &mut u8) -> Cow<'a, str> {
        let v = &self.bytes[s..e];
        if v.len() == 1 && v[0] == b'-' {
            return Cow::Borrowed("");
        }
        self.raw_text(s, e, escaped, flag)
    }

    /// Like `text`, but `-` stays `-`.
    #[inline(always)]
    fn raw_text(&self, s: usize, e: usize, escaped: Option<bool>, flag: &mut u8) -> Cow<'a, str> {
        let v = &self.bytes[s..e];
        let escaped = self.decode != Decode::None && escaped.unwrap_or_else(|| self.has_backslash(s, e));
        if !escaped {
            if let Some(t) = self.utf8.and_then(|u| u.get(s..e)) {
                return Cow::Borrowed(t);
            }
        }
        text(v, self.decode, Some(escaped), flag)
    }

    /// Whether `bytes[s..e]` holds a backslash (so escapes must be decoded).
    #[inline(always)]
    fn has_backslash(&self, s: usize, e: usize) -> bool {
        has_backslash(&self.bytes[s..e])
    }

    /// Position of the first occurrence of `lit` (non-empty) at or after `from`.
    #[inline(always)]
    fn find(&self, from: usize, lit: &[u8]) -> Option<usize> {
        find(self.bytes, from, lit)
    }
}

/// Whether the byte at `end` (a closing quote) is escaped by an odd run of backslashes.
fn escaped_quote(line: &[u8], start: usize, end: usize) -> bool {
    line[start..end].iter().rev().take_while(|&&c| c == b'\\').count() % 2 == 1
}

/// Values kept while the fields are read and combined at the end.
#[derive(Default)]
struct Pending<'a> {
    client: Option<(&'a [u8], usize)>,
    xff: Option<&'a [u8]>,
    frac_us: i64,
    whole_seconds: bool,
}

impl Plan {
    /// Parses `line` into `rec`. `extras`, when given, receives every field not stored in the
    /// record.
    #[inline]
    pub(crate) fn run<'a>(
        &self,
        line: &'a [u8],
        rec: &mut AccessRecord<'a>,
        trusted: &[IpNet],
        extras: Option<&mut Extras>,
    ) -> Result<(), LineError> {
        if line.is_empty() {
            return Err(LineError::empty());
        }
        if !line.starts_with(&self.prefix) {
            return Err(LineError::expected(&self.prefix_text, 0, None));
        }
        self.run_fields(line, rec, trusted, extras, 0, self.prefix.len(), Pending::default())
    }

    /// Goes on with field `first` at `pos` after a fused parser read the fields before it
    /// into `rec` (those of a fixed layout, with the client address, a `[$time_local]` and
    /// no extras: see `fast.rs`), so that the record is what `run` gives.
    pub(crate) fn run_rest<'a>(
        &self,
        line: &'a [u8],
        rec: &mut AccessRecord<'a>,
        trusted: &[IpNet],
        first: usize,
        pos: usize,
    ) -> Result<(), LineError> {
        // What `run` would hold here: the time read was in whole seconds; the client address
        // is already in the record (`finish` has nothing to combine unless a later field
        // gives one).
        let pending = Pending { whole_seconds: true, ..Pending::default() };
        self.run_fields(line, rec, trusted, None, first, pos, pending)
    }

    /// Reads the fields from `first` at `pos` to the end of the line.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn run_fields<'a>(
        &self,
        line: &'a [u8],
        rec: &mut AccessRecord<'a>,
        trusted: &[IpNet],
        mut extras: Option<&mut Extras>,
        first: usize,
        mut pos: usize,
        mut pending: Pending<'a>,
    ) -> Result<(), LineError> {
        let src = Src { bytes: line, utf8: as_str(line), decode: self.decode };
        for f in &self.fields[first..] {
            let (end, next, escaped) = self.extent(f, src, pos)?;
            let v = &line[pos..end];
            if f.store {
                self.store(f, src, pos, end, escaped, rec, &mut pending)?;
            } else {
                if matches!(f.kind, Kind::Xff) {
                    pending.xff = Some(v);
                }
                if let Some(ex) = extras.as_deref_mut() {
                    let mut ignored = 0;
                    ex.push(&f.name, &src.text(pos, end, escaped, &mut ignored));
                }
            }
            pos = next;
        }
        self.finish(rec, pending, trusted, line, extras);
        Ok(())
    }

    /// Where the field starting at `pos` ends (`end`), where the next one starts (`next`, past
    /// the literal), and whether a quoted value held a backslash (when that is known).
    #[inline(always)]
    fn extent(&self, f: &Field, src: Src<'_>, pos: usize) -> Result<(usize, usize, Option<bool>), LineError> {
        let line = src.bytes;
        let after = &*f.after;
        let missing = || LineError::expected(&f.after_text, line.len(), Some(&f.name));
        match f.extent {
            Extent::Rest => Ok((line.len(), line.len(), None)),
            Extent::Anchored => {
                let Some(end) = line.len().checked_sub(after.len()).filter(|&e| e >= pos && lit_at(line, e, after))
                else {
                    return Err(missing());
                };
                if f.quoted && self.decode != Decode::None && escaped_quote(line, pos, end) {
                    return Err(missing());
                }
                Ok((end, line.len(), None))
            }
            Extent::Scan(class) => {
                let end = pos + class.run(&line[pos..]);
                if lit_at(line, end, after) {
                    return Ok((end, end + after.len(), None));
                }
                match src.find(pos, after) {
                    Some(at) => Ok((at, at + after.len(), None)),
                    None => Err(missing()),
                }
            }
            Extent::Until => match src.find(pos, after) {
                Some(at) => Ok((at, at + after.len(), None)),
                None => Err(missing()),
            },
            Extent::Quoted => {
                let mut i = pos;
                let mut escaped = false;
                loop {
                    let Some(p) = line.get(i..).and_then(|h| memchr::memchr2(b'"', b'\\', h)) else {
                        return Err(missing());
                    };
                    let at = i + p;
                    if line[at] == b'\\' {
                        escaped = true;
                        i = at + 2;
                    } else if lit_at(line, at, after) {
                        return Ok((at, at + after.len(), Some(escaped)));
                    } else {
                        // An unescaped quote inside the value (`escape=none`, old apache):
                        // the value ends only where the whole literal after it follows.
                        i = at + 1;
                    }
                }
            }
            Extent::UntilList => {
                let mut i = pos;
                loop {
                    let Some(at) = src.find(i, after) else {
                        return Err(missing());
                    };
                    if at > pos && line[at - 1] == b',' {
                        i = at + 1; // `0.004, 0.010`
                    } else if line[at..].starts_with(b" : ") {
                        i = at + 3; // `0.001 : 0.002`
                    } else {
                        return Ok((at, at + after.len(), None));
                    }
                }
            }
            Extent::Fixed(w) => {
                let end = pos + w;
                if end <= line.len() && lit_at(line, end, after) {
                    return Ok((end, end + after.len(), None));
                }
                if after.is_empty() {
                    return Err(LineError::invalid("timestamp", pos, &f.name));
                }
                match take_until_pos(&line[pos..], after) {
                    Some(n) => Ok((pos + n, pos + n + after.len(), None)),
                    None => Err(missing()),
                }
            }
            Extent::UntilAfterSpaces(spaces) => {
                let mut i = pos;
                for _ in 0..spaces {
                    match memchr::memchr(b' ', &line[i..]) {
                        Some(n) => i += n + 1,
                        None => return Err(missing()),
                    }
                }
                match take_until_pos(&line[i..], after) {
                    Some(n) => Ok((i + n, i + n + after.len(), None)),
                    None => Err(missing()),
                }
            }
            Extent::Class(class) => {
                let n = class.run(&line[pos..]);
                Ok((pos + n, pos + n, None))
            }
        }
    }

    /// Converts a stored field into its record slot.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn store<'a>(
        &self,
        f: &Field,
        src: Src<'a>,
        pos: usize,
        end: usize,
        escaped: Option<bool>,
        rec: &mut AccessRecord<'a>,
        pending: &mut Pending<'a>,
    ) -> Result<(), LineError> {
        let v = &src.bytes[pos..end];
        let invalid = |what: &'static str| LineError::invalid(what, pos, &f.name);
        match &f.kind {
            Kind::ClientAddr { .. } => pending.client = Some((v, pos)),
            Kind::RemoteUser => rec.remote_user = src.text(pos, end, escaped, &mut rec.flags),
            Kind::TimeLocal { bracketed } => {
                let inner = if *bracketed { v.strip_prefix(b"[").and_then(|v| v.strip_suffix(b"]")) } else { Some(v) };
                let s = inner.and_then(parse_time_local).ok_or_else(|| invalid("timestamp"))?;
                set_time(rec, pending, s, true);
            }
            Kind::TimeIso => {
                let s = parse_iso8601(v).ok_or_else(|| invalid("timestamp"))?;
                set_time(rec, pending, s, v.len() == 25);
            }
            Kind::TimeEpoch { unit } => {
                let s = parse_epoch(v, *unit).ok_or_else(|| invalid("timestamp"))?;
                set_time(rec, pending, s, memchr::memchr(b'.', v).is_none());
            }
            Kind::TimeStrftime { fmt, .. } => {
                let s = parse_strftime(v, fmt).ok_or_else(|| invalid("timestamp"))?;
                set_time(rec, pending, s, true);
            }
            Kind::TimeFrac { scale } => {
                if v != b"-" {
                    let n = parse_u64(v).filter(|n| *n < 1_000_000).ok_or_else(|| invalid("time fraction"))?;
                    pending.frac_us = n as i64 * *scale as i64;
                }
            }
            Kind::Request => self.request(src, pos, end, escaped, rec),
            Kind::Method => rec.method = src.text(pos, end, escaped, &mut rec.flags),
            Kind::Target { with_query } => match memchr::memchr(b'?', v).filter(|_| *with_query) {
                Some(q) => {
                    rec.path = src.text(pos, pos + q, None, &mut rec.flags);
                    rec.query = src.text(pos + q + 1, end, None, &mut rec.flags);
                }
                None => rec.path = src.text(pos, end, None, &mut rec.flags),
            },
            Kind::Query { leading_q } => {
                let skip = usize::from(*leading_q && v.first() == Some(&b'?'));
                rec.query = src.text(pos + skip, end, None, &mut rec.flags);
            }
            Kind::Protocol => rec.protocol = src.text(pos, end, escaped, &mut rec.flags),
            Kind::Status { .. } => rec.status = parse_status(v).ok_or_else(|| invalid("status"))?,
            Kind::Bytes { .. } => rec.bytes_sent = parse_bytes(v).ok_or_else(|| invalid("byte count"))?,
            Kind::Duration { unit, .. } => {
                rec.request_time_us = parse_duration(v, *unit).map_err(|_| invalid("duration"))?;
            }
            Kind::Upstream => {
                let (time, count) = parse_upstream(v).map_err(|_| invalid("upstream times"))?;
                rec.upstream_time_us = time;
                rec.upstream_count = count;
            }
            Kind::UpstreamStatus => {
                rec.upstream_status = parse_upstream_status(v).ok_or_else(|| invalid("upstream status"))?;
            }
            Kind::Cache => rec.cache_status = src.text(pos, end, escaped, &mut rec.flags),
            Kind::Host { .. } => rec.host = src.text(pos, end, escaped, &mut rec.flags),
            Kind::Referer => rec.referer = src.text(pos, end, escaped, &mut rec.flags),
            Kind::Agent => rec.user_agent = src.text(pos, end, escaped, &mut rec.flags),
            Kind::Xff | Kind::Other { .. } => {}
        }
        Ok(())
    }

    /// `GET /a?b HTTP/1.1` into method, path, query, protocol; anything else kept raw in
    /// `path` with [`flags::RAW_REQUEST`].
    #[inline(always)]
    fn request<'a>(&self, src: Src<'a>, pos: usize, end: usize, escaped: Option<bool>, rec: &mut AccessRecord<'a>) {
        let v = &src.bytes[pos..end];
        let Some(p) = split_request(v) else {
            // Kept as logged, escapes included: binary garbage (a TLS handshake sent to a
            // plain-HTTP port) reads better as `\x16\x03\x01` than as control characters.
            rec.flags |= flags::RAW_REQUEST;
            rec.path = src.raw_text(pos, end, Some(false), &mut rec.flags);
            return;
        };
        // Parts are decoded one by one (an escape never holds a space or `?`).
        let escaped = escaped.or_else(|| Some(self.decode != Decode::None && src.has_backslash(pos, end)));
        let mut part = |r: (usize, usize)| src.raw_text(pos + r.0, pos + r.1, escaped.filter(|e| !e), &mut rec.flags);
        let (method, path, query, protocol) = (part(p.method), part(p.path), part(p.query), part(p.protocol));
        rec.method = method;
        rec.path = path;
        rec.query = query;
        rec.protocol = protocol;
    }

    /// Combines what needs several fields: the client address (X-Forwarded-For) and the
    /// fraction of a whole-second time.
    #[inline(always)]
    fn finish<'a>(
        &self,
        rec: &mut AccessRecord<'a>,
        pending: Pending<'a>,
        trusted: &[IpNet],
        line: &'a [u8],
        extras: Option<&mut Extras>,
    ) {
        if let Some((raw, pos)) = pending.client {
            match parse_ip(raw) {
                Some(ip) => rec.client_ip = Some(self.real_client(ip, pending.xff, trusted)),
                None => {
                    rec.flags |= flags::NO_CLIENT_IP;
                    // A hostname (apache `HostnameLookups On`) is still worth keeping.
                    if let Some(ex) = extras.filter(|_| raw != b"-") {
                        let name = self.fields.iter().find(|f| f.store && matches!(f.kind, Kind::ClientAddr { .. }));
                        if let Some(f) = name {
                            let mut ignored = 0;
                            ex.push(&f.name, &text(&line[pos..pos + raw.len()], self.decode, None, &mut ignored));
                        }
                    }
                }
            }
        }
        if pending.whole_seconds {
            rec.ts_micros = rec.ts_micros.saturating_add(pending.frac_us);
        }
    }

    #[inline(always)]
    fn real_client(&self, peer: IpAddr, xff: Option<&[u8]>, trusted: &[IpNet]) -> IpAddr {
        match xff {
            Some(xff) if !trusted.is_empty() => client_behind_proxies(peer, xff, trusted),
            _ => peer,
        }
    }
}

#[inline(always)]
fn set_time(rec: &mut AccessRecord<'_>, pending: &mut Pending<'_>, s: Stamp, whole_seconds: bool) {
    rec.ts_micros = s.micros;
    rec.tz_offset_secs = s.offset_secs;
    pending.whole_seconds = whole_seconds;
}
