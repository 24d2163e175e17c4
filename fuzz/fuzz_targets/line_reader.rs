//! The line reader: every byte is accounted for, whatever the chunking, buffer size and
//! line limit; gzip detection never panics on garbage.
#![no_main]

use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use sitelog_ingest::lines::{decompressing, Line, LineReader};

/// Hands out at most `n` bytes per read.
struct Trickle<'a>(&'a [u8], usize);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.len().min(buf.len()).min(self.1);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let [a, b, c, rest @ ..] = data else { return };
    let max = *a as usize;
    let buf = *b as usize;
    let chunk = (*c as usize).max(1);
    let mut reader = LineReader::with_capacity(Trickle(rest, chunk), max, buf);
    let mut covered = 0u64;
    let mut expect_line = 1u64;
    while let Some(item) = reader.next_line().unwrap() {
        assert_eq!(item.line_no(), expect_line);
        assert_eq!(item.offset(), covered, "lines are contiguous");
        expect_line += 1;
        match item {
            Line::Complete { offset, bytes, .. } => {
                assert!(bytes.len() <= max);
                assert!(!bytes.contains(&b'\n'));
                let end = offset as usize + bytes.len();
                let term = if rest.get(end) == Some(&b'\r') { 2 } else { 1 };
                assert_eq!(&rest[offset as usize..end], bytes);
                covered = (end + term) as u64;
            }
            Line::Partial { offset, bytes, .. } => {
                assert_eq!(&rest[offset as usize..], bytes);
                covered = rest.len() as u64;
            }
            Line::TooLong {
                offset,
                len,
                head,
                terminated,
                ..
            } => {
                assert!(len as usize > max);
                assert_eq!(&rest[offset as usize..offset as usize + head.len()], head);
                let end = offset as usize + len as usize;
                covered = if terminated {
                    (end + if rest.get(end) == Some(&b'\r') { 2 } else { 1 }) as u64
                } else {
                    end as u64
                };
            }
        }
    }
    assert_eq!(covered, rest.len() as u64, "every byte is accounted for");

    // Garbage that looks like gzip must end in an error, never a panic.
    if let Ok(r) = decompressing(io::Cursor::new(rest.to_vec())) {
        let mut lines = LineReader::with_capacity(r, max, buf);
        while let Ok(Some(_)) = lines.next_line() {}
    }
});
