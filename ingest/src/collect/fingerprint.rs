//! File identity: a checksum of the file's first line.
//!
//! Why the first line and not the first N bytes: access-log lines carry a timestamp and a
//! client address, so the first line tells files apart, and a small log of two lines is
//! identified as soon as its first line is complete (a fixed N would leave short files
//! unread forever). The line is capped at `fingerprint_bytes`. A file whose first line is
//! not complete yet has no fingerprint and waits — unless it is final (rotated away,
//! archived), when its whole content stands in for the line.
//!
//! The site captured from the path seeds the hash, so two sites whose logs happen to start
//! with the same line (a monitoring probe hitting every site in the same second) are still
//! two files. The fingerprint of a `.gz` archive is that of its decompressed content, so an
//! archive of an already-sent file is recognised.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The length of the fingerprinted prefix of `head` (the file's first bytes, at most
/// `max` of them), or `None` while the file cannot be identified yet.
pub fn prefix_len(head: &[u8], max: usize, is_final: bool) -> Option<usize> {
    let head = &head[..head.len().min(max)];
    if head.is_empty() {
        return None;
    }
    match memchr::memchr(b'\n', head) {
        Some(i) => Some(i + 1),
        None if head.len() >= max || is_final => Some(head.len()),
        None => None,
    }
}

/// Hash of a prefix, seeded with the path's `{site}` capture.
pub fn hash(prefix: &[u8], site: Option<&str>) -> u64 {
    let seed = site.map_or(0, |s| xxh3_64(s.as_bytes()));
    xxh3_64_with_seed(prefix, seed)
}

/// The fingerprint of a file's (decompressed) head.
pub fn of_head(head: &[u8], max: usize, is_final: bool, site: Option<&str>) -> Option<u64> {
    prefix_len(head, max, is_final).map(|n| hash(&head[..n], site))
}

/// Reads up to `max` bytes from the start of a plain file without moving its cursor.
pub fn head_of_file(file: &File, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; max];
    let mut got = 0;
    while got < max {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Reads up to `max` bytes from a reader (a decompressor); a truncated gzip stream yields
/// what could be decoded.
pub fn head_of_reader(mut r: impl Read, max: usize) -> Vec<u8> {
    let mut buf = vec![0u8; max];
    let mut got = 0;
    while got < max {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    buf.truncate(got);
    buf
}

/// Formats a fingerprint the way checkpoints and logs show it.
pub fn hex(fp: u64) -> String {
    format!("{fp:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_capped() {
        assert_eq!(prefix_len(b"abc\ndef\n", 256, false), Some(4));
        assert_eq!(prefix_len(b"abcdef", 256, false), None);
        assert_eq!(prefix_len(b"abcdef", 256, true), Some(6));
        assert_eq!(prefix_len(b"abcdef", 4, false), Some(4));
        assert_eq!(prefix_len(b"", 4, true), None);
    }

    #[test]
    fn growth_after_the_first_line_keeps_the_fingerprint() {
        let a = of_head(b"GET /a 200\n", 256, false, None);
        let b = of_head(b"GET /a 200\nGET /b 404\n", 256, false, None);
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_ne!(a, of_head(b"GET /a 200\n", 256, false, Some("x.fi")));
        assert_ne!(
            of_head(b"GET /a 200\n", 256, false, Some("y.fi")),
            of_head(b"GET /a 200\n", 256, false, Some("x.fi"))
        );
    }
}
