//! The Kafka wire format: many records of one (source file, site host) per message.
//!
//! Why a batch per message: a Kafka message costs ~1 µs of client CPU and its own framing;
//! packing a few hundred compact records per message is far cheaper (see `benches/README.md`).
//! Why per (source, host): the message key is the site host, so a site's records keep their
//! order within one partition, and the source fingerprint is stated once per message.
//!
//! Layout, version 2 (all integers little-endian; `varint` = LEB128, `zz` = zigzag LEB128):
//!
//! ```text
//! header  : "SLW" | version u8 = 2 | fingerprint u64 | count u32 | base_offset u64
//!           | base_ts_micros i64 | host_len varint | host bytes
//!           | server_len varint | server bytes          (v2: the web server that logged them)
//! record  : offset_delta varint        (from the previous record's offset, first: base_offset)
//!           ts_delta zz                (micros, from the previous record, first: base_ts)
//!           tz_offset_secs zz | flags u8
//!           ip_tag u8 (0 none, 4, 6) | 4 or 16 address bytes
//!           status varint | bytes_sent varint
//!           request_time_us varint (0 = absent, else value + 1) | upstream_time_us (same)
//!           upstream_count u8
//!           upstream_status varint     (v2: the last upstream's status, 0 = absent)
//!           8 strings, each len varint + UTF-8 bytes: remote_user, method, path, query,
//!           protocol, referer, user_agent, cache_status
//! ```
//!
//! Version 1 is the same without the header's server and the records' upstream status.
//! Writers write version 2; readers accept both (a v1 message reads as server `""` and
//! upstream status 0), so collectors and processors can be upgraded in either order. A reader
//! refuses other versions with [`WireError::UnsupportedVersion`]; a new version is added
//! beside the old ones so consumers can read both during a rollout.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::record::{AccessRecord, SourceId};

/// Default topic for access-record batches (key = site host).
pub const ACCESS_TOPIC: &str = "sitelog.access";
/// Default topic for rejects (JSON [`crate::Reject`], key = source path).
pub const REJECTS_TOPIC: &str = "sitelog.rejects";
/// Default topic for quarantined messages: what the processor could not decode, with where it
/// came from and why (see `sitelog_processor::quarantine`).
pub const DEADLETTER_TOPIC: &str = "sitelog.deadletter";
/// Default topic for collector heartbeats (JSON [`crate::heartbeat::Heartbeat`], key =
/// `server/source`): how far each collector source has delivered.
pub const HEARTBEAT_TOPIC: &str = "sitelog.heartbeats";

pub const MAGIC: &[u8; 3] = b"SLW";
/// The version writers write.
pub const VERSION: u8 = 2;
/// The oldest version readers still accept.
pub const MIN_VERSION: u8 = 1;
const HEADER_FIXED: usize = 3 + 1 + 8 + 4 + 8 + 8;
const COUNT_AT: usize = 3 + 1 + 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message is not a sitelog batch (bad magic)")]
    BadMagic,
    #[error("unsupported wire format version {0} (this build reads versions {MIN_VERSION} to {VERSION})")]
    UnsupportedVersion(u8),
    #[error("message truncated at byte {at} while reading {what}")]
    Truncated { at: usize, what: &'static str },
    #[error("invalid {what} at byte {at}")]
    Invalid { at: usize, what: &'static str },
    #[error("header counts {count} records but {extra} bytes follow the last of them at byte {at}")]
    TrailingBytes { count: u32, at: usize, extra: usize },
}

impl WireError {
    /// A short stable name for metrics labels and dead-letter reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            WireError::BadMagic => "bad_magic",
            WireError::UnsupportedVersion(_) => "unsupported_version",
            WireError::Truncated { .. } => "truncated",
            WireError::Invalid { .. } => "invalid_field",
            WireError::TrailingBytes { .. } => "trailing_bytes",
        }
    }
}

/// Decodes a whole message and checks that it is exactly one valid batch: the header, as
/// many records as it counts (each field valid, text UTF-8), and not one byte more. Returns
/// the record count. Work and memory are bounded by the message's length, never by what its
/// header claims (a header may say 4 billion records in a 63-byte message).
pub fn check(buf: &[u8]) -> Result<u32, WireError> {
    let mut reader = BatchReader::new(buf)?;
    let count = reader.header.count;
    for r in reader.by_ref() {
        r?;
    }
    if reader.pos != buf.len() {
        return Err(WireError::TrailingBytes { count, at: reader.pos, extra: buf.len() - reader.pos });
    }
    Ok(count)
}

/// Builds one batch message. Records must share the batch's host and server; offsets must
/// not decrease.
#[derive(Debug, Clone)]
pub struct BatchWriter {
    buf: Vec<u8>,
    version: u8,
    count: u32,
    prev_offset: u64,
    prev_ts: i64,
}

impl BatchWriter {
    /// Starts a batch (current version, no server name) whose first record will be at
    /// `first_offset` with time `first_ts_micros`.
    pub fn new(fingerprint: u64, host: &str, first_offset: u64, first_ts_micros: i64) -> Self {
        Self::with_server(fingerprint, host, "", first_offset, first_ts_micros)
    }

    /// Starts a batch of records logged by web server `server` (the collector's
    /// `[collector] server` or the source's `server`).
    pub fn with_server(fingerprint: u64, host: &str, server: &str, first_offset: u64, first_ts_micros: i64) -> Self {
        Self::start(VERSION, fingerprint, host, server, first_offset, first_ts_micros, 64 * 1024)
    }

    /// Starts a version-1 batch, as collectors before version 2 wrote them (no server, no
    /// upstream status): for rollout tests and tools feeding consumers that only read v1.
    pub fn v1(fingerprint: u64, host: &str, first_offset: u64, first_ts_micros: i64) -> Self {
        Self::start(1, fingerprint, host, "", first_offset, first_ts_micros, 64 * 1024)
    }

    /// Like [`with_server`](Self::with_server), reserving `capacity` bytes at first (the
    /// buffer grows as records come).
    pub fn with_server_capacity(
        fingerprint: u64,
        host: &str,
        server: &str,
        first_offset: u64,
        first_ts_micros: i64,
        capacity: usize,
    ) -> Self {
        Self::start(VERSION, fingerprint, host, server, first_offset, first_ts_micros, capacity)
    }

    fn start(
        version: u8,
        fingerprint: u64,
        host: &str,
        server: &str,
        first_offset: u64,
        first_ts: i64,
        capacity: usize,
    ) -> Self {
        let mut buf = Vec::with_capacity(capacity);
        buf.extend_from_slice(MAGIC);
        buf.push(version);
        buf.extend_from_slice(&fingerprint.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&first_offset.to_le_bytes());
        buf.extend_from_slice(&first_ts.to_le_bytes());
        put_str(&mut buf, host);
        if version >= 2 {
            put_str(&mut buf, server);
        }
        BatchWriter { buf, version, count: 0, prev_offset: first_offset, prev_ts: first_ts }
    }

    /// Appends a record (its `host`, `server` and `source.fingerprint` are the batch's; not
    /// re-encoded).
    pub fn push(&mut self, r: &AccessRecord<'_>) {
        let b = &mut self.buf;
        put_varint(b, r.source.offset.wrapping_sub(self.prev_offset));
        put_zigzag(b, r.ts_micros.wrapping_sub(self.prev_ts));
        put_zigzag(b, r.tz_offset_secs as i64);
        b.push(r.flags);
        match r.client_ip {
            None => b.push(0),
            Some(IpAddr::V4(v4)) => {
                b.push(4);
                b.extend_from_slice(&v4.octets());
            }
            Some(IpAddr::V6(v6)) => {
                b.push(6);
                b.extend_from_slice(&v6.octets());
            }
        }
        put_varint(b, r.status as u64);
        put_varint(b, r.bytes_sent);
        put_varint(b, r.request_time_us.map_or(0, |v| v.saturating_add(1)));
        put_varint(b, r.upstream_time_us.map_or(0, |v| v.saturating_add(1)));
        b.push(r.upstream_count);
        if self.version >= 2 {
            put_varint(b, r.upstream_status as u64);
        }
        for s in [&r.remote_user, &r.method, &r.path, &r.query, &r.protocol, &r.referer, &r.user_agent, &r.cache_status]
        {
            put_str(b, s);
        }
        self.prev_offset = r.source.offset;
        self.prev_ts = r.ts_micros;
        self.count += 1;
    }

    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes allocated for the message so far (at least [`len_bytes`](Self::len_bytes)).
    pub fn reserved_bytes(&self) -> usize {
        self.buf.capacity()
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The finished message payload.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[COUNT_AT..COUNT_AT + 4].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// Decoded batch header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchHeader<'a> {
    /// The wire version the message was written in.
    pub version: u8,
    pub fingerprint: u64,
    pub count: u32,
    pub host: &'a str,
    /// The web server that logged the records; `""` in version 1.
    pub server: &'a str,
}

/// Reads a batch without copying: records borrow their strings from the message.
pub struct BatchReader<'a> {
    header: BatchHeader<'a>,
    buf: &'a [u8],
    pos: usize,
    remaining: u32,
    prev_offset: u64,
    prev_ts: i64,
}

impl<'a> BatchReader<'a> {
    pub fn new(buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() < 4 || &buf[..3] != MAGIC {
            return Err(WireError::BadMagic);
        }
        let version = buf[3];
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(WireError::UnsupportedVersion(version));
        }
        if buf.len() < HEADER_FIXED {
            return Err(WireError::Truncated { at: buf.len(), what: "header" });
        }
        let u64_at = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
        let fingerprint = u64_at(4);
        let count = u32::from_le_bytes(buf[COUNT_AT..COUNT_AT + 4].try_into().expect("4 bytes"));
        let base_offset = u64_at(16);
        let base_ts = u64_at(24) as i64;
        let mut pos = HEADER_FIXED;
        let host = get_str(buf, &mut pos, "host")?;
        let server = if version >= 2 { get_str(buf, &mut pos, "server")? } else { "" };
        Ok(BatchReader {
            header: BatchHeader { version, fingerprint, count, host, server },
            buf,
            pos,
            remaining: count,
            prev_offset: base_offset,
            prev_ts: base_ts,
        })
    }

    pub fn header(&self) -> &BatchHeader<'a> {
        &self.header
    }

    fn record(&mut self) -> Result<AccessRecord<'a>, WireError> {
        let buf = self.buf;
        let p = &mut self.pos;
        let offset = self.prev_offset.wrapping_add(get_varint(buf, p, "offset")?);
        let ts_micros = self.prev_ts.wrapping_add(get_zigzag(buf, p, "ts")?);
        let tz = get_zigzag(buf, p, "tz_offset")?;
        let tz_offset_secs = i32::try_from(tz).map_err(|_| WireError::Invalid { at: *p, what: "tz_offset" })?;
        let flags = get_u8(buf, p, "flags")?;
        let client_ip = match get_u8(buf, p, "ip tag")? {
            0 => None,
            4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(take(buf, p, 4, "ipv4")?).expect("4")))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(take(buf, p, 16, "ipv6")?).expect("16")))),
            _ => return Err(WireError::Invalid { at: *p - 1, what: "ip tag" }),
        };
        let status =
            u16::try_from(get_varint(buf, p, "status")?).map_err(|_| WireError::Invalid { at: *p, what: "status" })?;
        let bytes_sent = get_varint(buf, p, "bytes_sent")?;
        let opt = |v: u64| v.checked_sub(1);
        let request_time_us = opt(get_varint(buf, p, "request_time")?);
        let upstream_time_us = opt(get_varint(buf, p, "upstream_time")?);
        let upstream_count = get_u8(buf, p, "upstream_count")?;
        let upstream_status = if self.header.version >= 2 {
            u16::try_from(get_varint(buf, p, "upstream_status")?)
                .map_err(|_| WireError::Invalid { at: *p, what: "upstream_status" })?
        } else {
            0
        };
        let mut s = || get_str(buf, p, "string field").map(Cow::Borrowed);
        let (remote_user, method, path, query, protocol, referer, user_agent, cache_status) =
            (s()?, s()?, s()?, s()?, s()?, s()?, s()?, s()?);
        self.prev_offset = offset;
        self.prev_ts = ts_micros;
        Ok(AccessRecord {
            ts_micros,
            tz_offset_secs,
            host: Cow::Borrowed(self.header.host),
            server: Cow::Borrowed(self.header.server),
            client_ip,
            remote_user,
            method,
            path,
            query,
            protocol,
            status,
            bytes_sent,
            referer,
            user_agent,
            request_time_us,
            upstream_time_us,
            upstream_count,
            upstream_status,
            cache_status,
            flags,
            source: SourceId { fingerprint: self.header.fingerprint, offset },
        })
    }
}

impl<'a> Iterator for BatchReader<'a> {
    type Item = Result<AccessRecord<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let r = self.record();
        if r.is_err() {
            self.remaining = 0; // a corrupt record makes the rest of the batch unreadable
        }
        Some(r)
    }
}

fn put_varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn put_zigzag(b: &mut Vec<u8>, v: i64) {
    put_varint(b, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    put_varint(b, s.len() as u64);
    b.extend_from_slice(s.as_bytes());
}

fn get_u8(buf: &[u8], p: &mut usize, what: &'static str) -> Result<u8, WireError> {
    let v = *buf.get(*p).ok_or(WireError::Truncated { at: *p, what })?;
    *p += 1;
    Ok(v)
}

fn get_varint(buf: &[u8], p: &mut usize, what: &'static str) -> Result<u64, WireError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = get_u8(buf, p, what)?;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(WireError::Invalid { at: *p, what })
}

fn get_zigzag(buf: &[u8], p: &mut usize, what: &'static str) -> Result<i64, WireError> {
    let v = get_varint(buf, p, what)?;
    Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
}

fn take<'a>(buf: &'a [u8], p: &mut usize, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
    let end = p.checked_add(n).filter(|&e| e <= buf.len()).ok_or(WireError::Truncated { at: *p, what })?;
    let s = &buf[*p..end];
    *p = end;
    Ok(s)
}

fn get_str<'a>(buf: &'a [u8], p: &mut usize, what: &'static str) -> Result<&'a str, WireError> {
    let len = get_varint(buf, p, what)?;
    let at = *p;
    let bytes = take(buf, p, usize::try_from(len).map_err(|_| WireError::Invalid { at, what })?, what)?;
    std::str::from_utf8(bytes).map_err(|_| WireError::Invalid { at, what })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> AccessRecord<'static> {
        AccessRecord {
            ts_micros: 1_790_000_000_123_456,
            tz_offset_secs: 10800,
            host: "shop.example.fi".into(),
            server: "".into(),
            client_ip: Some("2001:db8::7".parse().unwrap()),
            remote_user: "".into(),
            method: "GET".into(),
            path: "/wp-login.php".into(),
            query: "redirect_to=%2F".into(),
            protocol: "HTTP/2.0".into(),
            status: 200,
            bytes_sent: 5123,
            referer: "-".into(),
            user_agent: "Mozilla/5.0".into(),
            request_time_us: Some(12_000),
            upstream_time_us: None,
            upstream_count: 0,
            upstream_status: 0,
            cache_status: "MISS".into(),
            flags: 0,
            source: SourceId { fingerprint: 0xfeed_beef, offset: 4096 },
        }
    }

    /// Pins the version-1 bytes (what old collectors still send during a rollout): they must
    /// keep decoding, as server `""` and upstream status 0.
    #[test]
    fn golden_bytes_v1() {
        let r = sample();
        let mut w = BatchWriter::v1(r.source.fingerprint, &r.host, r.source.offset, r.ts_micros);
        w.push(&r);
        let bytes = w.finish();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            concat!(
                "534c5701",
                "efbeedfe00000000",
                "01000000",
                "0010000000000000",
                "40c227dafe5b0600",
                "0f73686f702e6578616d706c652e6669", // header: magic, version, fingerprint, count, offset, ts, host
                "00",
                "00",
                "e0a801",
                "00",                                 // offset delta, ts delta, tz +10800 s, flags
                "0620010db8000000000000000000000007", // ip tag 6 + address
                "c801",
                "8328",
                "e15d",
                "00",
                "00", // status 200, bytes 5123, request 12000 µs + 1, upstream absent, count
                "00",
                "03474554",
                "0d2f77702d6c6f67696e2e706870",
                "0f72656469726563745f746f3d253246",
                "08485454502f322e30",
                "012d",
                "0b4d6f7a696c6c612f352e30",
                "044d495353",
            )
        );
        let back: Vec<_> = BatchReader::new(&bytes).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(back, vec![r]);
        // A v1 writer drops what v1 cannot carry.
        let mut w = BatchWriter::v1(1, "h", 0, 0);
        w.push(&AccessRecord { server: "web-01".into(), upstream_status: 502, ..sample() });
        let bytes = w.finish();
        let rd = BatchReader::new(&bytes).unwrap();
        assert_eq!((rd.header().version, rd.header().server), (1, ""));
        let back: Vec<_> = rd.collect::<Result<_, _>>().unwrap();
        assert_eq!((back[0].server.as_ref(), back[0].upstream_status), ("", 0));
    }

    /// Pins the version-2 bytes: changing the layout must bump VERSION, not silently differ.
    #[test]
    fn golden_bytes_v2() {
        let r = AccessRecord { server: "web-01".into(), upstream_status: 502, upstream_count: 2, ..sample() };
        let mut w = BatchWriter::with_server(r.source.fingerprint, &r.host, &r.server, r.source.offset, r.ts_micros);
        w.push(&r);
        let bytes = w.finish();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            concat!(
                "534c5702",
                "efbeedfe00000000",
                "01000000",
                "0010000000000000",
                "40c227dafe5b0600",
                "0f73686f702e6578616d706c652e6669", // magic, version 2, fingerprint, count, offset, ts, host
                "067765622d3031",                   // server "web-01"
                "00",
                "00",
                "e0a801",
                "00",                                 // offset delta, ts delta, tz +10800 s, flags
                "0620010db8000000000000000000000007", // ip tag 6 + address
                "c801",
                "8328",
                "e15d",
                "00",
                "02",   // status 200, bytes 5123, request 12000 µs + 1, upstream absent, count 2
                "f603", // upstream status 502
                "00",
                "03474554",
                "0d2f77702d6c6f67696e2e706870",
                "0f72656469726563745f746f3d253246",
                "08485454502f322e30",
                "012d",
                "0b4d6f7a696c6c612f352e30",
                "044d495353",
            )
        );
        let rd = BatchReader::new(&bytes).unwrap();
        assert_eq!(
            rd.header(),
            &BatchHeader { version: 2, fingerprint: 0xfeed_beef, count: 1, host: "shop.example.fi", server: "web-01" }
        );
        let back: Vec<_> = rd.collect::<Result<_, _>>().unwrap();
        assert_eq!(back, vec![r]);
        assert_eq!(check(&bytes), Ok(1));
    }

    #[test]
    fn refuses_other_versions_and_truncation() {
        let r = sample();
        let mut w = BatchWriter::new(1, "h", 0, 0);
        w.push(&r);
        let mut bytes = w.finish();
        for cut in 0..bytes.len() {
            let res: Result<Vec<_>, _> = match BatchReader::new(&bytes[..cut]) {
                Ok(rd) => rd.collect(),
                Err(e) => Err(e),
            };
            assert!(res.is_err(), "cut at {cut} must fail");
        }
        for v in [0, 3, 255] {
            bytes[3] = v;
            assert_eq!(BatchReader::new(&bytes).err(), Some(WireError::UnsupportedVersion(v)));
        }
    }

    fn arb_record() -> impl Strategy<Value = AccessRecord<'static>> {
        let s = || any::<String>().prop_map(Cow::Owned);
        (
            (any::<i64>(), -86_400i32..86_400, any::<Option<std::net::IpAddr>>(), any::<u16>(), any::<u64>()),
            (any::<Option<u64>>(), any::<Option<u64>>(), any::<u8>(), any::<u8>(), 0u64..1 << 40, any::<u16>()),
            (s(), s(), s(), s(), s(), s(), s(), s()),
        )
            .prop_map(
                |((ts, tz, ip, status, bytes), (rt, ut, uc, flags, off, us), (ru, m, p, q, pr, rf, ua, cs))| {
                    AccessRecord {
                        ts_micros: ts,
                        tz_offset_secs: tz,
                        host: "h.example".into(),
                        server: "web-01.example".into(),
                        client_ip: ip,
                        remote_user: ru,
                        method: m,
                        path: p,
                        query: q,
                        protocol: pr,
                        status,
                        bytes_sent: bytes,
                        referer: rf,
                        user_agent: ua,
                        request_time_us: rt.map(|v| v.min(u64::MAX - 1)),
                        upstream_time_us: ut.map(|v| v.min(u64::MAX - 1)),
                        upstream_count: uc,
                        upstream_status: us,
                        cache_status: cs,
                        flags,
                        source: SourceId { fingerprint: 42, offset: off },
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn round_trip(mut recs in proptest::collection::vec(arb_record(), 1..20)) {
            recs.sort_by_key(|r| r.source.offset);
            let (off, ts) = (recs[0].source.offset, recs[0].ts_micros);
            let mut w = BatchWriter::with_server(42, "h.example", "web-01.example", off, ts);
            for r in &recs { w.push(r); }
            let bytes = w.finish();
            let back: Vec<_> = BatchReader::new(&bytes).unwrap().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(&back, &recs);
            // The same records as version 1: everything but the server and upstream status.
            let mut w = BatchWriter::v1(42, "h.example", off, ts);
            for r in &recs { w.push(r); }
            let bytes = w.finish();
            prop_assert_eq!(check(&bytes), Ok(recs.len() as u32));
            let back: Vec<_> = BatchReader::new(&bytes).unwrap().collect::<Result<_, _>>().unwrap();
            let want: Vec<_> =
                recs.into_iter().map(|r| AccessRecord { server: "".into(), upstream_status: 0, ..r }).collect();
            prop_assert_eq!(back, want);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(rd) = BatchReader::new(&bytes) { for _ in rd {} }
            let _ = check(&bytes);
        }

        /// A valid batch checks with its count; every strict prefix and every extension is
        /// refused (so a cut or padded message is never half-read).
        #[test]
        fn check_accepts_exactly_whole_batches(
            mut recs in proptest::collection::vec(arb_record(), 1..8),
            cut in any::<prop::sample::Index>(),
            extra in proptest::collection::vec(any::<u8>(), 1..4),
        ) {
            recs.sort_by_key(|r| r.source.offset);
            let mut w = BatchWriter::with_server(42, "h.example", "web-01.example", recs[0].source.offset, recs[0].ts_micros);
            for r in &recs { w.push(r); }
            let bytes = w.finish();
            prop_assert_eq!(check(&bytes), Ok(recs.len() as u32));
            let prefix = &bytes[..cut.index(bytes.len())];
            prop_assert!(check(prefix).is_err());
            let mut longer = bytes.clone();
            longer.extend_from_slice(&extra);
            prop_assert!(check(&longer).is_err());
        }
    }

    /// The message from the review: a v1 header claiming 0xFFFFFFFF records, 20 bytes of body.
    #[test]
    fn a_huge_count_in_a_small_message_is_refused_without_allocating() {
        let mut m = Vec::new();
        m.extend_from_slice(b"SLW\x01");
        m.extend_from_slice(&7u64.to_le_bytes());
        m.extend_from_slice(&u32::MAX.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes());
        m.extend_from_slice(&0i64.to_le_bytes());
        m.push(10);
        m.extend_from_slice(b"example.fi");
        m.extend_from_slice(&[0u8; 20]);
        assert_eq!(m.len(), 63);
        assert!(matches!(check(&m), Err(WireError::Truncated { .. })), "{:?}", check(&m));
        let mut bad_utf8 = BatchWriter::new(1, "h.fi", 0, 0);
        bad_utf8.push(&sample());
        let mut bytes = bad_utf8.finish();
        let at = bytes.windows(13).position(|w| w == b"/wp-login.php").unwrap();
        bytes[at + 1] = 0xff;
        assert_eq!(check(&bytes).unwrap_err().kind(), "invalid_field");
        let mut trailing = BatchWriter::new(1, "h.fi", 0, 0);
        trailing.push(&sample());
        let mut bytes = trailing.finish();
        bytes.push(0);
        assert_eq!(check(&bytes).unwrap_err().kind(), "trailing_bytes");
    }
}
