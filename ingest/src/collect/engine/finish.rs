//! Finishing: a rotated or final file whose every line Kafka acknowledged is marked complete
//! in the checkpoints and forgotten.

use super::*;

impl<S: Sink> Collector<S> {
    pub(super) fn finish_files(&mut self, now: Instant) {
        let rotate_wait = Duration::from_millis(self.cfg.tail.rotate_wait_ms);
        let ids: Vec<u64> = self.files.keys().copied().collect();
        for id in ids {
            let Some(f) = self.files.get_mut(&id) else {
                continue;
            };
            if !f.finishing {
                let ready = match f.kind {
                    Kind::Live => false,
                    Kind::Final => f.eof,
                    Kind::Rotated => f.eof && quiet(f, rotate_wait),
                };
                if !ready || self.restart_at.is_some() {
                    continue;
                }
                if f.out.is_none() {
                    // Never identified (its first line never completed): final now.
                    self.identify(id, None);
                }
                let Some(f) = self.files.get_mut(&id) else {
                    continue;
                };
                let Some(out) = f.out.as_mut() else {
                    if f.reader.is_some() {
                        self.open_count -= 1;
                    }
                    let key = f.key;
                    self.files.remove(&id);
                    self.by_key.remove(&key);
                    continue;
                };
                let src = &self.sources[f.source];
                let outbox = &mut self.outbox;
                let lim = &self.limits;
                f.split.flush(&mut |piece| out.take(piece, src, lim, outbox, now));
                out.seal_lingering(None, now, outbox);
                f.finishing = true;
            }
            let Some(f) = self.files.get(&id) else {
                continue;
            };
            let Some(out) = &f.out else { continue };
            if !(f.finishing && out.pending.is_empty() && out.batches.is_empty()) {
                continue;
            }
            let done = DoneEntry {
                fingerprint: out.fp,
                path: f.path.clone(),
                offset: f.split.read_pos(),
                line: f.split.lines(),
                finished: now_unix(),
            };
            // Debug: a backfill completes hundreds of files; `collect` prints one summary line.
            debug!(path = %f.path.display(), lines = done.line, bytes = done.offset, "file complete");
            self.sources[f.source].metrics.completed.increment(1);
            self.stats.files_completed.fetch_add(1, Ordering::Relaxed);
            self.backfill_completed_bytes += f.disk_size;
            self.store.complete(done);
            self.forget(id);
        }
    }
}
