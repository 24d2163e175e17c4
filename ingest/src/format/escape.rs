//! Escapes in logged values: decoding what nginx and apache wrote, and writing it again
//! (for [`super::LogFormat::render`]).
//!
//! - nginx `escape=default` writes `"`, `\`, bytes below 0x20 and above 0x7e as `\xHH`;
//! - apache writes `\"`, `\\`, `\n` `\r` `\t` `\b` `\v` and other non-printables as `\xhh`;
//! - nginx `escape=json` writes JSON string escapes and leaves bytes above 0x7f as they are.
//!
//! One backslash decoder serves nginx `default` and apache: nginx never writes a bare `\`, so
//! every backslash in its output starts an `\xHH`, which apache writes the same way.

use std::borrow::Cow;

use sitelog_schema::record::flags;

/// How a format's values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decode {
    /// nginx `escape=default` and apache.
    Backslash,
    /// nginx `escape=json`.
    Json,
    /// nginx `escape=none`: bytes as they were.
    None,
}

#[inline(always)]
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Text of a field: `-` is empty, escapes decoded (`escaped` says whether the value holds a
/// backslash, when the caller already knows), invalid UTF-8 replaced and flagged. Borrows
/// from the line unless something had to change.
#[inline]
pub(crate) fn text<'a>(v: &'a [u8], decode: Decode, escaped: Option<bool>, flag: &mut u8) -> Cow<'a, str> {
    if v == b"-" {
        return Cow::Borrowed("");
    }
    let escaped = decode != Decode::None && escaped.unwrap_or_else(|| memchr::memchr(b'\\', v).is_some());
    if escaped {
        return owned_text(unescape(v, decode), flag);
    }
    match std::str::from_utf8(v) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => {
            *flag |= flags::NON_UTF8;
            Cow::Owned(escape_invalid_utf8(v))
        }
    }
}

/// Text that was not UTF-8, kept reversibly (attack payloads are evidence): every byte that is
/// not part of valid UTF-8 becomes `\xHH` (upper-case hex, as nginx escapes unsafe bytes), and
/// a backslash becomes `\\`, so the original bytes can be reconstructed exactly. The record's
/// `NON_UTF8` flag says a value is in this form. Only such values allocate; valid text stays
/// borrowed.
pub fn escape_invalid_utf8(v: &[u8]) -> String {
    let mut out = String::with_capacity(v.len() + 16);
    for chunk in v.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

/// The bytes an [`escape_invalid_utf8`] value stands for.
pub fn unescape_invalid_utf8(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            match (b.get(i + 2).copied().and_then(hex), b.get(i + 3).copied().and_then(hex)) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 4;
                }
                _ => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

pub(crate) fn owned_text(bytes: Vec<u8>, flag: &mut u8) -> Cow<'static, str> {
    match String::from_utf8(bytes) {
        Ok(s) => Cow::Owned(s),
        Err(e) => {
            *flag |= flags::NON_UTF8;
            Cow::Owned(escape_invalid_utf8(e.as_bytes()))
        }
    }
}

/// Decodes escapes; an escape that does not parse is kept as written.
pub(crate) fn unescape(v: &[u8], decode: Decode) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'\\', &v[i..]) {
        let at = i + p;
        out.extend_from_slice(&v[i..at]);
        let (bytes, used) = match decode {
            Decode::Backslash => backslash_escape(&v[at + 1..]),
            Decode::Json => json_escape(&v[at + 1..]),
            Decode::None => (Esc::None, 0),
        };
        match bytes {
            Esc::Byte(b) => out.push(b),
            Esc::Char(c) => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            Esc::None => out.push(b'\\'),
        }
        i = at + 1 + used;
    }
    out.extend_from_slice(&v[i..]);
    out
}

enum Esc {
    Byte(u8),
    Char(char),
    None,
}

fn backslash_escape(rest: &[u8]) -> (Esc, usize) {
    let Some(&c) = rest.first() else {
        return (Esc::None, 0);
    };
    let b = match c {
        b'x' | b'X' => match (rest.get(1).copied().and_then(hex), rest.get(2).copied().and_then(hex)) {
            (Some(h), Some(l)) => return (Esc::Byte(h << 4 | l), 3),
            _ => return (Esc::None, 0),
        },
        b'"' => b'"',
        b'\\' => b'\\',
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'v' => 0x0b,
        _ => return (Esc::None, 0),
    };
    (Esc::Byte(b), 1)
}

fn json_escape(rest: &[u8]) -> (Esc, usize) {
    let Some(&c) = rest.first() else {
        return (Esc::None, 0);
    };
    let b = match c {
        b'"' => b'"',
        b'\\' => b'\\',
        b'/' => b'/',
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'f' => 0x0c,
        b'u' => {
            let Some(hi) = hex4(&rest[1..]) else {
                return (Esc::None, 0);
            };
            if (0xD800..0xDC00).contains(&hi) {
                // A surrogate pair: `\uD83D\uDE00`.
                if rest.get(5..7) == Some(b"\\u") {
                    if let Some(lo) = hex4(&rest[7..]).filter(|lo| (0xDC00..0xE000).contains(lo)) {
                        let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        return (Esc::Char(char::from_u32(cp).unwrap_or('\u{FFFD}')), 11);
                    }
                }
                return (Esc::Char('\u{FFFD}'), 5);
            }
            return (Esc::Char(char::from_u32(hi).unwrap_or('\u{FFFD}')), 5);
        }
        _ => return (Esc::None, 0),
    };
    (Esc::Byte(b), 1)
}

fn hex4(b: &[u8]) -> Option<u32> {
    let b = b.get(..4)?;
    b.iter().try_fold(0u32, |acc, &c| Some(acc << 4 | hex(c)? as u32))
}

/// Writes a value as nginx (`escape=default`) or apache would log it.
pub(crate) fn write_backslash(v: &[u8], apache: bool, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in v {
        match b {
            b'"' if apache => out.extend_from_slice(b"\\\""),
            b'\\' if apache => out.extend_from_slice(b"\\\\"),
            b'\n' if apache => out.extend_from_slice(b"\\n"),
            b'\t' if apache => out.extend_from_slice(b"\\t"),
            b'"' | b'\\' | 0..=0x1f | 0x7f..=0xff => {
                out.extend_from_slice(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
            _ => out.push(b),
        }
    }
}

/// Writes a value as nginx `escape=json` logs it.
pub(crate) fn write_json(v: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in v {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => {
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]])
            }
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Kept reversibly: any bytes come back exactly from their escaped text.
        #[test]
        fn invalid_utf8_round_trips(v in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(unescape_invalid_utf8(&escape_invalid_utf8(&v)), v);
        }
    }

    #[test]
    fn invalid_bytes_are_escaped_like_nginx_and_backslashes_doubled() {
        assert_eq!(escape_invalid_utf8(b"caf\xe9 \\x41 \xf0\x9f\x98\x80"), "caf\\xE9 \\\\x41 \u{1F600}");
    }

    fn t(v: &[u8], d: Decode) -> (String, u8) {
        let mut f = 0;
        let s = text(v, d, None, &mut f).into_owned();
        (s, f)
    }

    #[test]
    fn nginx_hex_escapes() {
        assert_eq!(t(br"Mozilla \x22quoted\x22 caf\xC3\xA9", Decode::Backslash), ("Mozilla \"quoted\" café".into(), 0));
        assert_eq!(t(br"bad \xFF byte", Decode::Backslash), (r"bad \xFF byte".into(), flags::NON_UTF8));
        assert_eq!(t(br"trailing \x4", Decode::Backslash).0, "trailing \\x4");
        assert_eq!(t(br"lone \", Decode::Backslash).0, "lone \\");
    }

    #[test]
    fn apache_escapes() {
        assert_eq!(t(br#"say \"hi\" \\ done\n"#, Decode::Backslash).0, "say \"hi\" \\ done\n");
    }

    #[test]
    fn json_escapes() {
        assert_eq!(t(br#"a\"b\\c\/d\n\u00e9\ud83d\ude00"#, Decode::Json).0, "a\"b\\c/d\né😀");
        assert_eq!(t(br"\ud83d alone", Decode::Json).0, "\u{FFFD} alone");
        assert_eq!(t(br"\u12", Decode::Json).0, "\\u12");
    }

    #[test]
    fn dash_and_borrow() {
        let mut f = 0;
        assert!(matches!(text(b"-", Decode::Backslash, None, &mut f), Cow::Borrowed("")));
        assert!(matches!(text(b"plain", Decode::Backslash, None, &mut f), Cow::Borrowed("plain")));
        assert!(matches!(text(br"a\x20b", Decode::None, None, &mut f), Cow::Borrowed(r"a\x20b")));
        assert_eq!(f, 0);
    }

    proptest! {
        #[test]
        fn backslash_round_trip(v in proptest::collection::vec(any::<u8>(), 0..64), apache: bool) {
            let mut w = Vec::new();
            write_backslash(&v, apache, &mut w);
            prop_assert!(apache || !w.contains(&b'"'));
            prop_assert_eq!(unescape(&w, Decode::Backslash), v);
        }

        #[test]
        fn json_round_trip(v in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut w = Vec::new();
            write_json(&v, &mut w);
            prop_assert_eq!(unescape(&w, Decode::Json), v);
        }

        #[test]
        fn never_panics(v in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = unescape(&v, Decode::Json);
            let _ = unescape(&v, Decode::Backslash);
        }
    }
}
