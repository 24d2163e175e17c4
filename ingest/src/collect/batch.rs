//! From lines to messages: parse, pick the site host, pack records per (file, host) into
//! `schema::wire` batches, turn bad lines into rejects, and remember which lines are not
//! acknowledged yet.
//!
//! Acknowledgement tracking, the heart of "never lose a line": every unit that must reach
//! Kafka (an open or sent batch, a reject) is entered in its file's `pending` map under the
//! offset of its first line, with the number of lines before it. The file's checkpoint is
//! the smallest pending offset — or, when nothing is pending, the position after the last
//! complete line. Records within a file are sent in several batches (one per host) and
//! acknowledged in any order; taking the minimum means the checkpoint only ever covers
//! lines whose messages were all acknowledged.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use sitelog_schema::record::flags;
use sitelog_schema::wire::BatchWriter;
use sitelog_schema::{Reject, SourceId};

use super::config::HostFrom;
use super::metrics::SourceMetrics;
use super::parse::LineParser;
use super::sink::Topic;
use super::split::Piece;

/// What a source contributes to turning lines into records.
pub struct SourceRt {
    pub name: String,
    pub patterns: Vec<super::pattern::PathPattern>,
    pub parser: Arc<dyn LineParser>,
    pub host_from: HostFrom,
    /// The web server every record of this source carries (one per message).
    pub server: String,
    pub metrics: SourceMetrics,
}

/// Batch size limits.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_records: u32,
    pub max_bytes: usize,
    pub max_line: usize,
    /// Open batches (distinct hosts) per file; a new host beyond it seals the oldest first.
    pub max_hosts: usize,
}

/// What an open batch reserves at first; it grows by doubling up to the batch size.
const INITIAL_BATCH_BYTES: usize = 1024;

/// A message ready to be handed to the sink.
#[derive(Debug)]
pub struct Ready {
    pub topic: Topic,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub file: u64,
    pub offset: u64,
    pub lines: u32,
}

/// Messages waiting for the sink, and the bytes held in open batches and those messages.
#[derive(Debug, Default)]
pub struct Outbox {
    pub ready: Vec<Ready>,
    pub buffered: usize,
}

pub struct OpenBatch {
    host: String,
    writer: BatchWriter,
    first_offset: u64,
    opened: Instant,
    /// Event times of its records (µs): what a heartbeat may not claim until acknowledged.
    min_ts: i64,
    max_ts: i64,
}

/// One file's records on their way out.
pub struct FileOut {
    pub id: u64,
    pub fp: u64,
    pub path: String,
    pub site: Option<String>,
    /// First offset of each unacknowledged unit → lines before it.
    pub pending: BTreeMap<u64, u64>,
    pub batches: Vec<OpenBatch>,
    /// Host → index in `batches`.
    by_host: HashMap<String, usize>,
    /// First offset of each sealed, unacknowledged record batch → (min, max) event time of
    /// its records (rejects have none). Open batches keep theirs in [`OpenBatch`].
    pending_ts: BTreeMap<u64, (i64, i64)>,
    /// The newest event time among acknowledged records of this file.
    pub acked_max_ts: Option<i64>,
}

impl FileOut {
    pub fn new(id: u64, fp: u64, path: String, site: Option<String>) -> Self {
        FileOut {
            id,
            fp,
            path,
            site,
            pending: BTreeMap::new(),
            batches: Vec::new(),
            by_host: HashMap::new(),
            pending_ts: BTreeMap::new(),
            acked_max_ts: None,
        }
    }

    /// The oldest event time of a record read but not acknowledged (open or sent batches).
    pub fn undelivered_min_ts(&self) -> Option<i64> {
        let sealed = self.pending_ts.values().map(|&(min, _)| min);
        sealed.chain(self.batches.iter().map(|b| b.min_ts)).min()
    }

    /// Where this file's checkpoint stands: `(offset, lines before it)`.
    pub fn ack_position(&self, read_pos: u64, lines: u64) -> (u64, u64) {
        match self.pending.first_key_value() {
            Some((&off, &line)) => (off, line),
            None => (read_pos, lines),
        }
    }

    /// Drops everything unacknowledged (a producer restart re-reads it).
    pub fn clear(&mut self, out: &mut Outbox) {
        for b in self.batches.drain(..) {
            out.buffered = out.buffered.saturating_sub(b.writer.reserved_bytes());
        }
        self.by_host.clear();
        self.pending.clear();
        self.pending_ts.clear();
    }

    /// Handles one piece from the splitter.
    pub fn take(&mut self, piece: Piece<'_>, src: &SourceRt, lim: &BatchLimits, out: &mut Outbox, now: Instant) {
        match piece {
            Piece::Line { bytes: [], .. } => src.metrics.empty.increment(1),
            Piece::Line { offset, line, bytes } => match src.parser.parse(bytes) {
                Ok(mut rec) => {
                    let from_path = match src.host_from {
                        HostFrom::Path => true,
                        HostFrom::Field => rec.host.is_empty(),
                    };
                    if from_path {
                        let Some(site) = self.site.as_deref() else {
                            let reason = "no site host: the line has no host field and the path no {site}".to_owned();
                            self.reject(offset, line, reason, bytes, None, src, out);
                            return;
                        };
                        rec.host = Cow::Owned(site.to_owned());
                        rec.flags |= flags::HOST_FROM_PATH;
                    }
                    rec.source = SourceId { fingerprint: self.fp, offset };
                    src.metrics.parsed.increment(1);
                    self.push(&rec, &src.server, line, lim, out, now);
                }
                Err(reason) => self.reject(offset, line, reason, bytes, None, src, out),
            },
            Piece::TooLong { offset, line, head, len } => {
                let reason = format!("line of {len} bytes exceeds limits.max_line_bytes ({})", lim.max_line);
                self.reject(offset, line, reason, head, Some(len), src, out);
            }
        }
    }

    fn push(
        &mut self,
        rec: &sitelog_schema::AccessRecord<'_>,
        server: &str,
        line: u64,
        lim: &BatchLimits,
        out: &mut Outbox,
        now: Instant,
    ) {
        let idx = match self.by_host.get(rec.host.as_ref()) {
            Some(&i) => i,
            None => {
                if self.batches.len() >= lim.max_hosts.max(1) {
                    // Junk `Host` values must not grow memory without limit: the batch open
                    // longest goes out now, its records keep their host.
                    let oldest = (0..self.batches.len()).min_by_key(|&i| self.batches[i].opened).unwrap_or(0);
                    self.seal(oldest, out);
                    metrics::counter!(super::metrics::HOST_CAP_SEALS).increment(1);
                }
                let cap = INITIAL_BATCH_BYTES.min(lim.max_bytes);
                let writer = BatchWriter::with_server_capacity(
                    self.fp,
                    &rec.host,
                    server,
                    rec.source.offset,
                    rec.ts_micros,
                    cap,
                );
                out.buffered += writer.reserved_bytes();
                self.pending.insert(rec.source.offset, line - 1);
                self.by_host.insert(rec.host.clone().into_owned(), self.batches.len());
                self.batches.push(OpenBatch {
                    host: rec.host.clone().into_owned(),
                    writer,
                    first_offset: rec.source.offset,
                    opened: now,
                    min_ts: rec.ts_micros,
                    max_ts: rec.ts_micros,
                });
                self.batches.len() - 1
            }
        };
        let b = &mut self.batches[idx];
        b.min_ts = b.min_ts.min(rec.ts_micros);
        b.max_ts = b.max_ts.max(rec.ts_micros);
        let before = b.writer.reserved_bytes();
        b.writer.push(rec);
        // What is allocated, not what is written: a buffer grows by doubling.
        out.buffered += b.writer.reserved_bytes() - before;
        if b.writer.count() >= lim.max_records || b.writer.len_bytes() >= lim.max_bytes {
            self.seal(idx, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn reject(
        &mut self,
        offset: u64,
        line: u64,
        reason: String,
        raw: &[u8],
        true_len: Option<u64>,
        src: &SourceRt,
        out: &mut Outbox,
    ) {
        src.metrics.rejected.increment(1);
        let mut r = Reject::new(&self.path, self.fp, offset, line, reason, raw);
        if let Some(len) = true_len {
            r.len = len;
        }
        // A Reject of strings and integers always serializes.
        let payload = serde_json::to_vec(&r).unwrap_or_default();
        self.pending.insert(offset, line - 1);
        out.buffered += payload.len();
        out.ready.push(Ready {
            topic: Topic::Rejects,
            key: self.path.as_bytes().to_vec(),
            payload,
            file: self.id,
            offset,
            lines: 1,
        });
    }

    fn seal(&mut self, idx: usize, out: &mut Outbox) {
        // The payload's bytes stay counted in `buffered` until the sink takes the message;
        // the reserve beyond them is given back (the sink copies the payload).
        let b = self.batches.swap_remove(idx);
        self.by_host.remove(&b.host);
        if let Some(moved) = self.batches.get(idx) {
            self.by_host.insert(moved.host.clone(), idx);
        }
        out.buffered = out.buffered.saturating_sub(b.writer.reserved_bytes() - b.writer.len_bytes());
        let lines = b.writer.count();
        self.pending_ts.insert(b.first_offset, (b.min_ts, b.max_ts));
        out.ready.push(Ready {
            topic: Topic::Records,
            key: b.host.into_bytes(),
            payload: b.writer.finish(),
            file: self.id,
            offset: b.first_offset,
            lines,
        });
    }

    /// Open batches (distinct hosts) of this file.
    pub fn open_batches(&self) -> usize {
        self.batches.len()
    }

    /// Seals batches open for at least `linger` (all of them with `None`).
    pub fn seal_lingering(&mut self, linger: Option<std::time::Duration>, now: Instant, out: &mut Outbox) {
        let mut i = 0;
        while i < self.batches.len() {
            let due = linger.is_none_or(|l| now.duration_since(self.batches[i].opened) >= l);
            if due {
                self.seal(i, out);
            } else {
                i += 1;
            }
        }
    }

    /// A producer acknowledged the unit starting at `offset`.
    /// Returns the newest event time of the unit's records (none for a reject).
    pub fn acked(&mut self, offset: u64) -> Option<i64> {
        self.pending.remove(&offset);
        let (_, max) = self.pending_ts.remove(&offset)?;
        self.acked_max_ts = Some(self.acked_max_ts.map_or(max, |m| m.max(max)));
        Some(max)
    }
}
