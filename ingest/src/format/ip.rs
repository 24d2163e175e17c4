//! Client addresses: a fast IPv4 path, std's parser for IPv6, CIDR ranges of trusted proxies
//! and the X-Forwarded-For walk.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Parses a logged client address. IPv4-mapped IPv6 (`::ffff:192.0.2.1`, what a dual-stack
/// listener logs for IPv4 clients) becomes the IPv4 address, so one client has one identity.
#[inline]
pub(crate) fn parse_ip(b: &[u8]) -> Option<IpAddr> {
    if let Some(v4) = parse_v4(b) {
        return Some(IpAddr::V4(v4));
    }
    if b.len() < 2 || b.len() > 45 || memchr::memchr(b':', b).is_none() {
        return None;
    }
    let v6 = match parse_v6_groups(b) {
        Some(v6) => v6,
        None => std::str::from_utf8(b).ok()?.parse().ok()?,
    };
    Some(canonical(IpAddr::V6(v6)))
}

#[inline]
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Dotted quad, no leading zeros (as std, so `010.0.0.1` is not silently decimal).
#[inline]
fn parse_v4(b: &[u8]) -> Option<Ipv4Addr> {
    if b.len() < 7 || b.len() > 15 {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut n = 0;
    let mut v: u32 = 0;
    let mut digits = 0;
    for &c in b {
        if c == b'.' {
            if digits == 0 || n == 3 {
                return None;
            }
            octets[n] = v as u8;
            n += 1;
            v = 0;
            digits = 0;
            continue;
        }
        let d = c.wrapping_sub(b'0');
        if d > 9 || (digits > 0 && v == 0) {
            return None;
        }
        v = v * 10 + d as u32;
        digits += 1;
        if v > 255 {
            return None;
        }
    }
    if digits == 0 || n != 3 {
        return None;
    }
    octets[3] = v as u8;
    Some(Ipv4Addr::from(octets))
}

/// IPv6 as servers log it: hex groups and at most one `::`, nothing else (no embedded IPv4,
/// no zone). A subset of std's grammar read in one pass; `None` leaves the rest to std.
#[inline]
fn parse_v6_groups(b: &[u8]) -> Option<Ipv6Addr> {
    v6_groups_prefix(b).filter(|&(_, end)| end == b.len()).map(|(v6, _)| v6)
}

/// Like `parse_v6_groups` for the address at the start of `b`, ending before the first byte
/// that cannot continue it; returns the address and its length.
#[inline]
pub(crate) fn v6_groups_prefix(b: &[u8]) -> Option<(Ipv6Addr, usize)> {
    let mut groups = [0u16; 8];
    let mut n = 0;
    // Where `::` stands, as a group index, and whether it was just read.
    let mut gap = None;
    let mut after_gap = false;
    let mut i = 0;
    if b.starts_with(b"::") {
        gap = Some(0);
        after_gap = true;
        i = 2;
    }
    loop {
        let start = i;
        let mut v: u32 = 0;
        while i < b.len() && i - start < 5 {
            let h = HEX[b[i] as usize];
            if h > 15 {
                break;
            }
            v = v << 4 | h as u32;
            i += 1;
        }
        if i == start {
            if after_gap {
                break; // `::` ends the address
            }
            return None;
        }
        if i - start > 4 || n == 8 {
            return None;
        }
        groups[n] = v as u16;
        n += 1;
        after_gap = false;
        if b.get(i) != Some(&b':') {
            break;
        }
        i += 1;
        if b.get(i) == Some(&b':') {
            if gap.is_some() {
                return None;
            }
            gap = Some(n);
            after_gap = true;
            i += 1;
        }
    }
    match gap {
        None if n == 8 => {}
        // `::` stands for at least one zero group.
        Some(g) if n <= 7 => {
            let tail = n - g;
            groups.copy_within(g..n, 8 - tail);
            groups[g..8 - tail].fill(0);
        }
        _ => return None,
    }
    Some((Ipv6Addr::from(groups), i))
}

/// Hex digit values; 0xff for other bytes.
static HEX: [u8; 256] = {
    let mut t = [0xff; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => 0xff,
        };
        i += 1;
    }
    t
};

/// An address range in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// A CIDR range that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address range `{0}` (expected CIDR such as 10.0.0.0/8 or 2001:db8::/32)")]
pub struct IpNetError(String);

impl IpNet {
    /// A range; host bits of `addr` are ignored. `None` when the prefix is too long.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in the range (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || IpNetError(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| err())?)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let addr = canonical(addr);
        let prefix = prefix.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
        IpNet::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn trusted(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(ip))
}

/// One X-Forwarded-For element: an address, optionally `[v6]:port` or `v4:port`.
fn parse_forwarded_elem(e: &[u8]) -> Option<IpAddr> {
    let e = e.trim_ascii();
    if let Some(ip) = parse_ip(e) {
        return Some(ip);
    }
    if let Some(inner) = e.strip_prefix(b"[") {
        let end = memchr::memchr(b']', inner)?;
        return parse_ip(&inner[..end]);
    }
    // `192.0.2.1:4711`: exactly one colon means IPv4 with a port.
    let colon = memchr::memchr(b':', e)?;
    if memchr::memrchr(b':', e) == Some(colon) {
        return parse_v4(&e[..colon]).map(IpAddr::V4);
    }
    None
}

/// The real client behind trusted proxies, as nginx's realip module with
/// `real_ip_recursive on` finds it: when the connecting peer is trusted, walk X-Forwarded-For
/// from the right and take the first address that is not trusted. A malformed element stops
/// the walk (keeping the last good address): anything left of it is client-controlled.
/// When the peer itself is not trusted, its X-Forwarded-For is ignored (it could be forged).
pub(crate) fn client_behind_proxies(peer: IpAddr, xff: &[u8], nets: &[IpNet]) -> IpAddr {
    if !trusted(nets, peer) {
        return peer;
    }
    let mut client = peer;
    for elem in xff.rsplit(|&b| b == b',') {
        if elem.trim_ascii().is_empty() || elem.trim_ascii() == b"-" {
            continue;
        }
        let Some(ip) = parse_forwarded_elem(elem) else {
            break;
        };
        client = ip;
        if !trusted(nets, ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_fast_path_matches_std_on_examples() {
        for s in ["0.0.0.0", "255.255.255.255", "192.0.2.1", "10.10.10.10"] {
            assert_eq!(parse_ip(s.as_bytes()), Some(ip(s)));
        }
        for s in ["256.0.0.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1..2.3", "a.b.c.d", "-", "", "1.2.3.4 "] {
            assert_eq!(parse_ip(s.as_bytes()), None, "{s}");
        }
    }

    #[test]
    fn v6_and_mapped() {
        assert_eq!(parse_ip(b"2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_ip(b"::ffff:192.0.2.7"), Some(ip("192.0.2.7")));
        assert_eq!(parse_ip(b"fe80::1%eth0"), None);
        assert_eq!(parse_ip(b"crawl-66-249-66-1.googlebot.com"), None);
    }

    #[test]
    fn cidr_contains() {
        let n: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains(ip("10.200.1.1")));
        assert!(n.contains(ip("::ffff:10.1.1.1")));
        assert!(!n.contains(ip("11.0.0.1")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        let host: IpNet = "192.0.2.1".parse().unwrap();
        assert_eq!(host.prefix(), 32);
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("nonsense/8".parse::<IpNet>().is_err());
        assert_eq!(n.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn xff_walk() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
        // peer trusted, rightmost untrusted wins (the spoofed left part is ignored)
        assert_eq!(client_behind_proxies(ip("10.0.0.5"), b"6.6.6.6, 203.0.113.9, 10.1.1.1", &nets), ip("203.0.113.9"));
        // peer not trusted: XFF ignored
        assert_eq!(client_behind_proxies(ip("198.51.100.1"), b"203.0.113.9", &nets), ip("198.51.100.1"));
        // all trusted: leftmost
        assert_eq!(client_behind_proxies(ip("10.0.0.5"), b"10.9.9.9, 10.1.1.1", &nets), ip("10.9.9.9"));
        // ports and brackets
        assert_eq!(client_behind_proxies(ip("10.0.0.5"), b"203.0.113.9:4711", &nets), ip("203.0.113.9"));
        assert_eq!(client_behind_proxies(ip("10.0.0.5"), b"[2001:db9::1]:443", &nets), ip("2001:db9::1"));
        // garbage stops the walk
        assert_eq!(client_behind_proxies(ip("10.0.0.5"), b"203.0.113.9, unknown, 10.1.1.1", &nets), ip("10.1.1.1"));
        assert_eq!(client_behind_proxies(ip("10.0.0.5"), b"-", &nets), ip("10.0.0.5"));
    }

    proptest! {
        #[test]
        fn parse_ip_agrees_with_std(s in "[0-9a-f:.]{0,20}") {
            let std = s.parse::<IpAddr>().ok().map(canonical);
            prop_assert_eq!(parse_ip(s.as_bytes()), std);
        }

        #[test]
        fn parse_v6_agrees_with_std(s in "[0-9a-fA-F:]{0,45}") {
            let std = s.parse::<IpAddr>().ok().map(canonical);
            prop_assert_eq!(parse_ip(s.as_bytes()), std);
        }

        #[test]
        fn v6_groups_read_what_std_writes(groups: [u16; 8], zeros in 0usize..8, at in 0usize..8, upper: bool) {
            // Runs of zero groups make std write `::`.
            let mut g = groups;
            g[at..(at + zeros).min(8)].fill(0);
            let v6 = Ipv6Addr::from(g);
            let s = if upper { v6.to_string().to_ascii_uppercase() } else { v6.to_string() };
            prop_assert_eq!(parse_ip(s.as_bytes()), Some(canonical(IpAddr::V6(v6))));
            if !s.contains('.') {
                prop_assert_eq!(parse_v6_groups(s.as_bytes()), Some(v6));
            }
        }

        /// The prefix reader takes exactly the address before a byte that ends it.
        #[test]
        fn v6_prefix_stops_where_the_address_ends(groups: [u16; 8], zeros in 0usize..8, at in 0usize..8, end in "[ \".%/g-]") {
            let mut g = groups;
            g[at..(at + zeros).min(8)].fill(0);
            let v6 = Ipv6Addr::from(g);
            let s = v6.to_string();
            let line = format!("{s}{end}rest");
            if !s.contains('.') {
                prop_assert_eq!(v6_groups_prefix(line.as_bytes()), Some((v6, s.len())));
            }
        }

        #[test]
        fn parse_v4_agrees_with_std(a: u8, b: u8, c: u8, d: u8) {
            let s = format!("{a}.{b}.{c}.{d}");
            prop_assert_eq!(parse_ip(s.as_bytes()), Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d))));
        }
    }
}
