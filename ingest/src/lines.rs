//! Reading lines from files and streams: `memchr` splitting over one reusable buffer, with
//! line numbers, byte offsets, a bound on line length, and transparent gzip.
//!
//! Every byte of the input is accounted for: each line is reported once as a complete line,
//! an over-long line (skipped without buffering it whole), or — at the end of the input — a
//! final line without a newline. Offsets are in the uncompressed stream, so a record's
//! `(fingerprint, offset)` identity is the same for a live file and its `.gz` archive.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

/// Lines longer than this (without the newline) are reported as [`Line::TooLong`].
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// How many bytes of an over-long line are kept for its reject record.
pub const TOO_LONG_HEAD_BYTES: usize = sitelog_schema::reject::REJECT_RAW_CAP;

/// Read buffer size when the line limit does not ask for more.
const DEFAULT_BUF_BYTES: usize = 256 * 1024;

/// One item from a [`LineReader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'b> {
    /// A line ended by `\n` (a `\r` before it is removed too).
    Complete { line_no: u64, offset: u64, bytes: &'b [u8] },
    /// The last bytes of the input, with no newline after them. A live file may still be
    /// being written: a tailer treats this as incomplete (see [`LineReader::resume`]).
    Partial { line_no: u64, offset: u64, bytes: &'b [u8] },
    /// A line over the limit: `len` bytes at `offset` (without the newline), of which only
    /// the first [`TOO_LONG_HEAD_BYTES`] are kept in `head`. `terminated` is false when the
    /// input ended inside it.
    TooLong { line_no: u64, offset: u64, len: u64, head: &'b [u8], terminated: bool },
}

impl Line<'_> {
    pub fn line_no(&self) -> u64 {
        match *self {
            Line::Complete { line_no, .. } | Line::Partial { line_no, .. } | Line::TooLong { line_no, .. } => line_no,
        }
    }

    /// Byte offset of the line's first byte in the (uncompressed) stream.
    pub fn offset(&self) -> u64 {
        match *self {
            Line::Complete { offset, .. } | Line::Partial { offset, .. } | Line::TooLong { offset, .. } => offset,
        }
    }
}

/// State of an over-long line being skipped.
#[derive(Debug, Clone, Copy)]
struct Skipping {
    line_no: u64,
    offset: u64,
    /// Bytes seen so far, a trailing `\r` included.
    len: u64,
    last_was_cr: bool,
}

/// Splits a byte stream into lines. Not an `Iterator`: each line borrows the reader's
/// buffer, so use `while let Some(line) = reader.next_line()? { … }`.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Unconsumed data is `buf[start..end]`; `buf[start..scanned]` holds no newline.
    start: usize,
    scanned: usize,
    end: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// Lines reported so far (the next line's number is `line_no + 1`).
    line_no: u64,
    max: usize,
    eof: bool,
    partial_reported: bool,
    skipping: Option<Skipping>,
    head: Vec<u8>,
}

impl<R: Read> LineReader<R> {
    /// A reader with the default limit of [`DEFAULT_MAX_LINE_BYTES`].
    pub fn new(inner: R) -> Self {
        Self::with_max_line_bytes(inner, DEFAULT_MAX_LINE_BYTES)
    }

    pub fn with_max_line_bytes(inner: R, max_line_bytes: usize) -> Self {
        Self::with_capacity(inner, max_line_bytes, DEFAULT_BUF_BYTES)
    }

    /// A reader with an explicit buffer size (raised to fit `max_line_bytes` and a `\r\n`).
    pub fn with_capacity(inner: R, max_line_bytes: usize, buf_bytes: usize) -> Self {
        let cap = buf_bytes.max(max_line_bytes.saturating_add(2)).max(16);
        LineReader {
            inner,
            buf: vec![0; cap],
            start: 0,
            scanned: 0,
            end: 0,
            base: 0,
            line_no: 0,
            max: max_line_bytes,
            eof: false,
            partial_reported: false,
            skipping: None,
            head: Vec::with_capacity(TOO_LONG_HEAD_BYTES),
        }
    }

    /// Starts counting at a known place: the stream is positioned at `offset` (e.g. after a
    /// seek to a checkpoint) and `line_no` lines came before it.
    pub fn starting_at(mut self, offset: u64, line_no: u64) -> Self {
        self.base = offset.saturating_sub(self.start as u64);
        self.line_no = line_no;
        self
    }

    /// Stream offset of the first byte not yet reported (where the next line starts).
    pub fn offset(&self) -> u64 {
        match self.skipping {
            Some(s) => s.offset,
            None => self.base + self.start as u64,
        }
    }

    /// Number of lines reported so far (partial lines are not counted until completed).
    pub fn lines_read(&self) -> u64 {
        self.line_no
    }

    pub fn max_line_bytes(&self) -> usize {
        self.max
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// After the end of the input was reached: try reading again (a tailed file grew). A
    /// [`Line::Partial`] or unterminated [`Line::TooLong`] reported before is then reported
    /// again, completed, with the same line number and offset.
    pub fn resume(&mut self) {
        self.eof = false;
        self.partial_reported = false;
    }

    /// The next line, or `None` at the end of the input.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        loop {
            if self.skipping.is_some() {
                match self.skip_step()? {
                    Step::Again => continue,
                    Step::Done => return Ok(None),
                    Step::Report(terminated) => {
                        let Some(s) = self.skipping else { continue };
                        let len = if s.last_was_cr && terminated { s.len - 1 } else { s.len };
                        self.head.truncate(len.min(TOO_LONG_HEAD_BYTES as u64) as usize);
                        if terminated {
                            self.skipping = None;
                            self.line_no += 1;
                        }
                        let head = &self.head[..];
                        return Ok(Some(Line::TooLong { line_no: s.line_no, offset: s.offset, len, head, terminated }));
                    }
                }
            }
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.scanned..self.end]) {
                let nl = self.scanned + i;
                let (start, offset) = (self.start, self.base + self.start as u64);
                self.start = nl + 1;
                self.scanned = self.start;
                self.line_no += 1;
                let line_no = self.line_no;
                let mut bytes = &self.buf[start..nl];
                if let Some(b) = bytes.strip_suffix(b"\r") {
                    bytes = b;
                }
                if bytes.len() > self.max {
                    let head = &bytes[..bytes.len().min(TOO_LONG_HEAD_BYTES)];
                    let len = bytes.len() as u64;
                    return Ok(Some(Line::TooLong { line_no, offset, len, head, terminated: true }));
                }
                return Ok(Some(Line::Complete { line_no, offset, bytes }));
            }
            self.scanned = self.end;
            let pending = self.end - self.start;
            if pending > self.max.saturating_add(1) {
                self.start_skipping();
                continue;
            }
            if self.eof {
                if pending == 0 || self.partial_reported {
                    return Ok(None);
                }
                self.partial_reported = true;
                let bytes = &self.buf[self.start..self.end];
                let (line_no, offset) = (self.line_no + 1, self.base + self.start as u64);
                if bytes.len() > self.max {
                    let head = &bytes[..bytes.len().min(TOO_LONG_HEAD_BYTES)];
                    let len = bytes.len() as u64;
                    return Ok(Some(Line::TooLong { line_no, offset, len, head, terminated: false }));
                }
                return Ok(Some(Line::Partial { line_no, offset, bytes }));
            }
            self.fill()?;
        }
    }

    /// Reads more input after the pending bytes, moving them to the front when needed.
    fn fill(&mut self) -> io::Result<()> {
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.scanned -= self.start;
            self.end -= self.start;
            self.start = 0;
        }
        let n = read_retrying(&mut self.inner, &mut self.buf[self.end..])?;
        if n == 0 {
            self.eof = true;
        }
        self.end += n;
        Ok(())
    }

    /// The pending bytes (no newline among them) are over the limit: keep a head, drop the
    /// rest, and go on dropping until the newline.
    fn start_skipping(&mut self) {
        let bytes = &self.buf[self.start..self.end];
        self.head.clear();
        self.head.extend_from_slice(&bytes[..bytes.len().min(TOO_LONG_HEAD_BYTES)]);
        self.skipping = Some(Skipping {
            line_no: self.line_no + 1,
            offset: self.base + self.start as u64,
            len: bytes.len() as u64,
            last_was_cr: bytes.last() == Some(&b'\r'),
        });
        self.base += self.end as u64;
        self.start = 0;
        self.scanned = 0;
        self.end = 0;
    }

    fn skip_step(&mut self) -> io::Result<Step> {
        let Some(mut s) = self.skipping else {
            return Ok(Step::Again);
        };
        if self.end == self.start {
            if self.eof {
                if self.partial_reported {
                    return Ok(Step::Done);
                }
                self.partial_reported = true;
                return Ok(Step::Report(false));
            }
            self.base += self.end as u64;
            self.start = 0;
            self.scanned = 0;
            self.end = 0;
            self.fill()?;
            return Ok(Step::Again);
        }
        let data = &self.buf[self.start..self.end];
        let nl = memchr::memchr(b'\n', data);
        let room = TOO_LONG_HEAD_BYTES - self.head.len().min(TOO_LONG_HEAD_BYTES);
        self.head.extend_from_slice(&data[..nl.unwrap_or(data.len()).min(room)]);
        match nl {
            Some(i) => {
                s.len += i as u64;
                s.last_was_cr = if i > 0 { data[i - 1] == b'\r' } else { s.last_was_cr };
                self.start += i + 1;
                self.scanned = self.start;
                self.skipping = Some(s);
                Ok(Step::Report(true))
            }
            None => {
                s.len += data.len() as u64;
                s.last_was_cr = data.last() == Some(&b'\r');
                self.start = self.end;
                self.scanned = self.end;
                self.skipping = Some(s);
                Ok(Step::Again)
            }
        }
    }
}

enum Step {
    Again,
    Done,
    Report(bool),
}

fn read_retrying(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// gzip's magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Wraps a stream so that gzip input (detected by its magic bytes, whatever the file is
/// called) is decompressed, all members of a multi-member file included (`cat a.gz b.gz`,
/// logrotate's `delaycompress` + appends).
pub fn decompressing<R: Read + Send + 'static>(mut inner: R) -> io::Result<Box<dyn Read + Send>> {
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        let n = read_retrying(&mut inner, &mut magic[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = io::Cursor::new(magic).take(got as u64);
    let whole = head.chain(inner);
    if got == 2 && magic == GZIP_MAGIC {
        Ok(Box::new(MultiGzDecoder::new(whole)))
    } else {
        Ok(Box::new(whole))
    }
}

/// Opens a file for reading, decompressing it when it is gzip.
pub fn open(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    decompressing(File::open(path)?)
}

/// Opens a file as lines (see [`open`]).
pub fn open_lines(path: &Path, max_line_bytes: usize) -> io::Result<LineReader<Box<dyn Read + Send>>> {
    Ok(LineReader::with_max_line_bytes(open(path)?, max_line_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    /// Owned copy of a line item.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Item {
        Line(u64, u64, Vec<u8>),
        Partial(u64, u64, Vec<u8>),
        Long(u64, u64, u64, Vec<u8>, bool),
    }

    fn collect<R: Read>(mut r: LineReader<R>) -> Vec<Item> {
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push(match l {
                Line::Complete { line_no, offset, bytes } => Item::Line(line_no, offset, bytes.to_vec()),
                Line::Partial { line_no, offset, bytes } => Item::Partial(line_no, offset, bytes.to_vec()),
                Line::TooLong { line_no, offset, len, head, terminated } => {
                    Item::Long(line_no, offset, len, head.to_vec(), terminated)
                }
            });
        }
        out
    }

    /// A reader handing out at most `n` bytes per call.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(self.1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn lines_offsets_crlf_and_partial() {
        let data = b"a\r\nbb\n\nccc";
        let items = collect(LineReader::new(&data[..]));
        assert_eq!(
            items,
            [
                Item::Line(1, 0, b"a".to_vec()),
                Item::Line(2, 3, b"bb".to_vec()),
                Item::Line(3, 6, b"".to_vec()),
                Item::Partial(4, 7, b"ccc".to_vec()),
            ]
        );
    }

    #[test]
    fn over_long_lines_are_skipped_not_buffered() {
        let mut data = Vec::new();
        data.extend_from_slice(b"ok\n");
        data.extend(std::iter::repeat_n(b'x', 100));
        data.extend_from_slice(b"\r\nfine\n");
        data.extend(std::iter::repeat_n(b'y', 50));
        let r = LineReader::with_capacity(Trickle(&data, 7), 10, 16);
        let items = collect(r);
        assert_eq!(
            items,
            [
                Item::Line(1, 0, b"ok".to_vec()),
                Item::Long(2, 3, 100, vec![b'x'; 100], true),
                Item::Line(3, 105, b"fine".to_vec()),
                Item::Long(4, 110, 50, vec![b'y'; 50], false),
            ]
        );
    }

    #[test]
    fn exactly_at_the_limit() {
        let items = collect(LineReader::with_capacity(&b"0123456789\r\n01234567890\n"[..], 10, 16));
        assert_eq!(
            items,
            [Item::Line(1, 0, b"0123456789".to_vec()), Item::Long(2, 12, 11, b"01234567890".to_vec(), true)]
        );
    }

    #[test]
    fn resume_completes_a_partial_line() {
        let mut r = LineReader::new(io::Cursor::new(b"one\ntw".to_vec()));
        assert!(matches!(r.next_line().unwrap(), Some(Line::Complete { line_no: 1, .. })));
        assert!(matches!(r.next_line().unwrap(), Some(Line::Partial { line_no: 2, offset: 4, bytes: b"tw" })));
        assert!(r.next_line().unwrap().is_none());
        let cur = r.get_mut();
        let pos = cur.position();
        cur.get_mut().extend_from_slice(b"o\n");
        cur.set_position(pos);
        r.resume();
        assert!(matches!(r.next_line().unwrap(), Some(Line::Complete { line_no: 2, offset: 4, bytes: b"two" })));
        assert!(r.next_line().unwrap().is_none());
        assert_eq!(r.offset(), 8);
        assert_eq!(r.lines_read(), 2);
    }

    #[test]
    fn gzip_by_magic_multi_member() {
        let mut data = Vec::new();
        for part in [&b"first\nsec"[..], b"ond\nthird\n"] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(part).unwrap();
            data.extend(gz.finish().unwrap());
        }
        let r = LineReader::new(decompressing(io::Cursor::new(data)).unwrap());
        let items = collect(r);
        assert_eq!(items.len(), 3);
        assert_eq!(items[1], Item::Line(2, 6, b"second".to_vec()));
        let plain = collect(LineReader::new(decompressing(io::Cursor::new(b"x".to_vec())).unwrap()));
        assert_eq!(plain, [Item::Partial(1, 0, b"x".to_vec())]);
        assert!(collect(LineReader::new(decompressing(io::empty()).unwrap())).is_empty());
    }

    proptest! {
        /// Whatever the chunking, buffer size and limit: every byte is accounted for, lines
        /// match a naive split, and offsets are exact.
        #[test]
        fn matches_naive_split(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), any::<u8>()], 0..400),
            max in 0usize..40,
            buf in 0usize..64,
            chunk in 1usize..50,
        ) {
            let items = collect(LineReader::with_capacity(Trickle(&data, chunk), max, buf));
            let mut expect = Vec::new();
            let mut offset = 0u64;
            let pieces: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
            for (i, piece) in pieces.iter().enumerate() {
                let last = i + 1 == pieces.len();
                if last && piece.is_empty() {
                    break;
                }
                let line_no = i as u64 + 1;
                let body = if last { *piece } else { piece.strip_suffix(b"\r").unwrap_or(piece) };
                if body.len() > max {
                    let head = body[..body.len().min(TOO_LONG_HEAD_BYTES)].to_vec();
                    expect.push(Item::Long(line_no, offset, body.len() as u64, head, !last));
                } else if last {
                    expect.push(Item::Partial(line_no, offset, body.to_vec()));
                } else {
                    expect.push(Item::Line(line_no, offset, body.to_vec()));
                }
                offset += piece.len() as u64 + 1;
            }
            prop_assert_eq!(items, expect);
        }
    }
}
