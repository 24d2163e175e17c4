//! Resumable line splitting: bytes arrive in chunks at known file offsets, complete lines
//! leave with their offset and number, an incomplete last line waits for more bytes.
//!
//! A line is never split. A line longer than `max_line` is not buffered whole: its first
//! bytes are kept for the reject, the rest is counted and skipped up to its newline.

use sitelog_schema::reject::REJECT_RAW_CAP;

/// A complete line, or an over-long one.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// `bytes` without the newline (and without a trailing `\r`).
    Line { offset: u64, line: u64, bytes: &'a [u8] },
    /// A line of `len` bytes (without newline) exceeding the limit; `head` is its start.
    TooLong { offset: u64, line: u64, head: &'a [u8], len: u64 },
}

impl Piece<'_> {
    pub fn offset(&self) -> u64 {
        match self {
            Piece::Line { offset, .. } | Piece::TooLong { offset, .. } => *offset,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Discard {
    head: Vec<u8>,
    len: u64,
}

/// Position and carry-over state of one file.
#[derive(Debug, Clone)]
pub struct LineSplitter {
    /// Offset of the first byte not yet part of an emitted line.
    read_pos: u64,
    /// Lines emitted before `read_pos`.
    line: u64,
    partial: Vec<u8>,
    discard: Option<Discard>,
    max_line: usize,
}

impl LineSplitter {
    pub fn new(offset: u64, line: u64, max_line: usize) -> Self {
        LineSplitter { read_pos: offset, line, partial: Vec::new(), discard: None, max_line }
    }

    /// Starts over at a known line start (a checkpoint), dropping carried bytes.
    pub fn reset(&mut self, offset: u64, line: u64) {
        self.read_pos = offset;
        self.line = line;
        self.partial = Vec::new();
        self.discard = None;
    }

    /// Offset of the first byte of the line in progress; every byte before it was emitted.
    pub fn read_pos(&self) -> u64 {
        self.read_pos
    }

    pub fn lines(&self) -> u64 {
        self.line
    }

    /// Offset of the next byte to feed.
    pub fn scan_pos(&self) -> u64 {
        self.read_pos + self.carried()
    }

    /// Bytes of the incomplete last line seen so far.
    pub fn carried(&self) -> u64 {
        match &self.discard {
            Some(d) => d.len,
            None => self.partial.len() as u64,
        }
    }

    /// Feeds the bytes at [`scan_pos`](Self::scan_pos); emits each completed line.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(Piece<'_>)) {
        if self.carried() > 0 {
            let Some(nl) = memchr::memchr(b'\n', data) else {
                self.carry(data);
                return;
            };
            self.carry(&data[..nl]);
            self.finish_carried(1, emit);
            data = &data[nl + 1..];
        }
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', data) {
            self.emit_one(&data[start..nl], 1, emit);
            start = nl + 1;
        }
        self.carry(&data[start..]);
    }

    /// The file is final: its unterminated last line is a line after all.
    pub fn flush(&mut self, emit: &mut impl FnMut(Piece<'_>)) {
        if self.carried() > 0 {
            self.finish_carried(0, emit);
        }
    }

    fn carry(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(d) = &mut self.discard {
            let room = REJECT_RAW_CAP.saturating_sub(d.head.len());
            d.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
            d.len += bytes.len() as u64;
        } else if self.partial.len() + bytes.len() > self.max_line {
            let mut head = std::mem::take(&mut self.partial);
            let len = (head.len() + bytes.len()) as u64;
            let room = REJECT_RAW_CAP.saturating_sub(head.len());
            head.extend_from_slice(&bytes[..bytes.len().min(room)]);
            head.truncate(REJECT_RAW_CAP);
            self.discard = Some(Discard { head, len });
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    /// Emits the carried line; `terminator` is 1 when a newline ended it, 0 at a final flush.
    fn finish_carried(&mut self, terminator: u64, emit: &mut impl FnMut(Piece<'_>)) {
        if let Some(d) = self.discard.take() {
            self.line += 1;
            emit(Piece::TooLong { offset: self.read_pos, line: self.line, head: &d.head, len: d.len });
            self.read_pos += d.len + terminator;
        } else {
            let partial = std::mem::take(&mut self.partial);
            self.emit_one(&partial, terminator, emit);
            // Keep the allocation for the next partial line of this file.
            self.partial = partial;
            self.partial.clear();
        }
    }

    fn emit_one(&mut self, bytes: &[u8], terminator: u64, emit: &mut impl FnMut(Piece<'_>)) {
        self.line += 1;
        let offset = self.read_pos;
        if bytes.len() > self.max_line {
            let head = &bytes[..bytes.len().min(REJECT_RAW_CAP)];
            emit(Piece::TooLong { offset, line: self.line, head, len: bytes.len() as u64 });
        } else {
            let trimmed = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            emit(Piece::Line { offset, line: self.line, bytes: trimmed });
        }
        self.read_pos += bytes.len() as u64 + terminator;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Out {
        L(u64, u64, Vec<u8>),
        T(u64, u64, u64),
    }

    fn run(s: &mut LineSplitter, chunks: &[&[u8]], flush: bool) -> Vec<Out> {
        let mut out = Vec::new();
        let mut f = |p: Piece<'_>| match p {
            Piece::Line { offset, line, bytes } => out.push(Out::L(offset, line, bytes.to_vec())),
            Piece::TooLong { offset, line, len, .. } => out.push(Out::T(offset, line, len)),
        };
        for c in chunks {
            s.feed(c, &mut f);
        }
        if flush {
            s.flush(&mut f);
        }
        out
    }

    #[test]
    fn lines_across_chunks_and_partial_waits() {
        let mut s = LineSplitter::new(0, 0, 1000);
        let out = run(&mut s, &[b"ab", b"c\nde\r\nf", b"g"], false);
        assert_eq!(out, vec![Out::L(0, 1, b"abc".to_vec()), Out::L(4, 2, b"de".to_vec())]);
        assert_eq!((s.read_pos(), s.scan_pos(), s.lines()), (8, 10, 2));
        let out = run(&mut s, &[], true);
        assert_eq!(out, vec![Out::L(8, 3, b"fg".to_vec())]);
        assert_eq!(s.read_pos(), 10);
    }

    #[test]
    fn over_long_lines_are_not_split() {
        let mut s = LineSplitter::new(100, 5, 300);
        let long = vec![b'x'; 1000];
        let out = run(&mut s, &[b"ok\n", &long[..500], &long[500..], b"\nnext\n"], false);
        assert_eq!(out, vec![Out::L(100, 6, b"ok".to_vec()), Out::T(103, 7, 1000), Out::L(1104, 8, b"next".to_vec())]);
        let mut s = LineSplitter::new(0, 0, 300);
        let mut one = long.clone();
        one.push(b'\n');
        assert_eq!(run(&mut s, &[&one], false), vec![Out::T(0, 1, 1000)]);
        assert_eq!(s.scan_pos(), 1001);
    }

    proptest! {
        /// However the bytes are chunked, the same lines come out at the same offsets.
        #[test]
        fn chunking_does_not_matter(text in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a'), Just(b'b')], 0..400), cuts in proptest::collection::vec(0usize..400, 0..10)) {
            let mut whole = LineSplitter::new(0, 0, 20);
            let expect = run(&mut whole, &[&text], true);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            cuts.sort();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut prev = 0;
            for c in cuts { chunks.push(&text[prev..c]); prev = c; }
            chunks.push(&text[prev..]);
            let mut split = LineSplitter::new(0, 0, 20);
            prop_assert_eq!(run(&mut split, &chunks, true), expect);
            prop_assert_eq!(split.read_pos(), text.len() as u64);
        }
    }
}
