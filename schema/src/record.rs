//! The access record: one request as logged by nginx or apache, with typed fields.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Where a line came from: the file's content fingerprint and the byte offset of the line's
/// first byte. Stable across collector restarts, so it is the record's identity for dedup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct SourceId {
    /// Checksum of the file's first bytes (see `ingest::fingerprint`).
    pub fingerprint: u64,
    /// Byte offset of the line's first byte within the (uncompressed) file.
    pub offset: u64,
}

/// Bit flags describing how faithfully a record reflects its line.
pub mod flags {
    /// A text field held bytes that were not UTF-8; it keeps them reversibly: each such byte as
    /// `\xHH` and each backslash as `\\` (see `sitelog_ingest`'s `escape_invalid_utf8`).
    pub const NON_UTF8: u8 = 1 << 0;
    /// The request line could not be split into method / path / protocol; `path` holds it raw.
    pub const RAW_REQUEST: u8 = 1 << 1;
    /// The client address field was not an IP address (e.g. a hostname); `client_ip` is `None`.
    pub const NO_CLIENT_IP: u8 = 1 << 2;
    /// The line had no site host; the collector filled it from the source's path.
    pub const HOST_FROM_PATH: u8 = 1 << 3;
}

/// One access-log line with typed fields. Strings borrow from the input line where no escape
/// had to be decoded (`Cow::Borrowed`), so parsing allocates nothing on the happy path.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AccessRecord<'a> {
    /// Request time in UTC, microseconds since the Unix epoch.
    pub ts_micros: i64,
    /// The original UTC offset of the logged timestamp, in seconds east of UTC.
    pub tz_offset_secs: i32,
    /// The site's host name as logged (`$host`, `%v`) or taken from the file's path.
    #[serde(borrow)]
    pub host: Cow<'a, str>,
    /// The web server that logged the line (`[collector] server`, or the source's `server`);
    /// empty when unknown (wire version 1). One per wire message.
    #[serde(borrow, default)]
    pub server: Cow<'a, str>,
    /// Client address; `None` when the log held something else.
    pub client_ip: Option<IpAddr>,
    #[serde(borrow)]
    pub remote_user: Cow<'a, str>,
    #[serde(borrow)]
    pub method: Cow<'a, str>,
    /// Path without the query string; the raw request line when [`flags::RAW_REQUEST`] is set.
    #[serde(borrow)]
    pub path: Cow<'a, str>,
    /// Query string without the leading `?`.
    #[serde(borrow)]
    pub query: Cow<'a, str>,
    /// `HTTP/1.1`, `HTTP/2.0`, `HTTP/3`, or empty.
    #[serde(borrow)]
    pub protocol: Cow<'a, str>,
    pub status: u16,
    /// Response bytes sent to the client (`$body_bytes_sent` / `%b`, `-` = 0).
    pub bytes_sent: u64,
    #[serde(borrow)]
    pub referer: Cow<'a, str>,
    #[serde(borrow)]
    pub user_agent: Cow<'a, str>,
    /// Total request time in microseconds, when logged.
    pub request_time_us: Option<u64>,
    /// Sum of the upstream response times in microseconds, when logged.
    pub upstream_time_us: Option<u64>,
    /// How many upstream attempts the request took (0 when not logged).
    pub upstream_count: u8,
    /// `$upstream_status` of the last upstream tried (the answer the client got through;
    /// `502, 200` is 200); 0 when not logged or no upstream answered.
    #[serde(default)]
    pub upstream_status: u16,
    /// `$upstream_cache_status` (HIT, MISS, …) or empty.
    #[serde(borrow)]
    pub cache_status: Cow<'a, str>,
    /// See [`flags`].
    pub flags: u8,
    pub source: SourceId,
}

impl AccessRecord<'_> {
    /// Copies every borrowed string so the record outlives its input buffer.
    pub fn into_owned(self) -> AccessRecord<'static> {
        fn own(c: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(c.into_owned())
        }
        AccessRecord {
            ts_micros: self.ts_micros,
            tz_offset_secs: self.tz_offset_secs,
            host: own(self.host),
            server: own(self.server),
            client_ip: self.client_ip,
            remote_user: own(self.remote_user),
            method: own(self.method),
            path: own(self.path),
            query: own(self.query),
            protocol: own(self.protocol),
            status: self.status,
            bytes_sent: self.bytes_sent,
            referer: own(self.referer),
            user_agent: own(self.user_agent),
            request_time_us: self.request_time_us,
            upstream_time_us: self.upstream_time_us,
            upstream_count: self.upstream_count,
            upstream_status: self.upstream_status,
            cache_status: own(self.cache_status),
            flags: self.flags,
            source: self.source,
        }
    }
}

/// The client address as ClickHouse's `IPv6` column stores it (IPv4 mapped to `::ffff:a.b.c.d`).
pub fn ip_to_v6(ip: Option<IpAddr>) -> Ipv6Addr {
    match ip {
        Some(IpAddr::V4(v4)) => v4.to_ipv6_mapped(),
        Some(IpAddr::V6(v6)) => v6,
        None => Ipv6Addr::UNSPECIFIED,
    }
}

/// The privacy-preserving network of a client address: IPv4 truncated to /24, IPv6 to /48.
/// This is what remains once the full address's retention has passed.
pub fn truncated_network(ip: Option<IpAddr>) -> Ipv6Addr {
    match ip {
        Some(IpAddr::V4(v4)) => {
            let o = v4.octets();
            std::net::Ipv4Addr::new(o[0], o[1], o[2], 0).to_ipv6_mapped()
        }
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0)
        }
        None => Ipv6Addr::UNSPECIFIED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_only_the_network() {
        let v4: IpAddr = "203.0.113.77".parse().unwrap();
        assert_eq!(truncated_network(Some(v4)).to_string(), "::ffff:203.0.113.0");
        let v6: IpAddr = "2001:db8:abcd:12::1".parse().unwrap();
        assert_eq!(truncated_network(Some(v6)).to_string(), "2001:db8:abcd::");
        assert_eq!(ip_to_v6(None), Ipv6Addr::UNSPECIFIED);
    }
}
