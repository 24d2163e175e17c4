//! Reading: new bytes of every tracked file, within the in-flight budget and the limit on
//! open descriptors, split into lines and batched; deletion, truncation (`copytruncate`)
//! and files that moved are noticed here.

use super::*;

impl<S: Sink> Collector<S> {
    pub(super) fn poll_files(&mut self, now: Instant) {
        let mut buf = std::mem::take(&mut self.buf);
        self.more_to_read = false;
        let ids: Vec<u64> = self.files.keys().copied().collect();
        // Every file is looked at even without budget: rotations and truncations are noticed
        // while the broker is down; only reading waits.
        for id in ids {
            self.poll_file(id, now, &mut buf);
            self.send_ready();
        }
        self.buf = buf;
    }

    pub(super) fn poll_file(&mut self, id: u64, now: Instant, buf: &mut [u8]) {
        let Some(f) = self.files.get(&id) else { return };
        if f.finishing || f.lost || f.retry_at.is_some_and(|t| now < t) {
            return;
        }
        if f.out.is_none() {
            self.identify(id, None);
        }
        let Some(f) = self.files.get(&id) else { return };
        let Some(fp) = f.fp() else { return };
        if f.reader.is_none() {
            let wants = match f.kind {
                Kind::Live => f.size != f.split.scan_pos(),
                Kind::Rotated | Kind::Final => true,
            };
            if !wants || !self.ensure_fd_slot(id) {
                return;
            }
            self.reopen(id, fp);
        }
        let Some(f) = self.files.get_mut(&id) else {
            return;
        };
        let Some(reader) = &mut f.reader else { return };
        if let Reader::Plain(file) = reader {
            let Ok(md) = file.metadata() else { return };
            // A log only shrinks when truncated (even before we read what it had).
            let shrunk = md.len() < f.size || md.len() < f.split.scan_pos();
            f.size = md.len();
            if shrunk && f.kind != Kind::Final {
                self.truncated(id);
                return;
            }
            // Truncated and written again up to or past our position before we looked: the
            // size alone cannot tell, the first line can. Checked before every read.
            // (Sizes and timestamps cannot tell a same-size rewrite within one clock tick;
            // reading the first line costs one small pread from the page cache.)
            if f.kind != Kind::Final {
                let fp_bytes = self.cfg.tail.fingerprint_bytes;
                let head = fingerprint::head_of_file(file, fp_bytes).unwrap_or_default();
                let changed = match fingerprint::of_head(&head, fp_bytes, false, f.site.as_deref()) {
                    Some(now_fp) => now_fp != fp,
                    // No complete first line: changed, unless the file was identified by
                    // its whole (final) content.
                    None => f.kind == Kind::Live,
                };
                if changed {
                    self.truncated(id);
                    return;
                }
            }
            if md.nlink() == 0 && f.kind == Kind::Live {
                info!(path = %f.path.display(), "file deleted; reading it to the end");
                self.sources[f.source].metrics.rotation("delete");
                f.kind = Kind::Rotated;
            }
            if md.len() == f.split.scan_pos() {
                f.eof = true;
                return;
            }
            // It grew since the last read. Said here, not only after a read: while reading
            // waits for the broker (backpressure), a stale `eof` would let a rotated file be
            // finished before its last lines were read (found by the model test).
            f.eof = false;
        }
        let quota = 4 * buf.len();
        let mut done = 0;
        let src = &self.sources[f.source];
        while done < quota {
            if self.restart_at.is_some() {
                break;
            }
            if self.cfg.limits.max_inflight_bytes.as_usize() <= self.inflight_bytes + self.outbox.buffered {
                self.more_to_read = true;
                break;
            }
            let Some(reader) = &mut f.reader else { break };
            // Read no more than the budget allows, so memory stays bounded (approximately:
            // one read's lines may encode a little larger than they were).
            let budget = self.cfg.limits.max_inflight_bytes.as_usize() - self.inflight_bytes - self.outbox.buffered;
            let want = buf.len().min(budget);
            let n = match reader.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) => {
                    warn!(path = %f.path.display(), error = %e, "read failed; retrying in a second");
                    f.reader = None;
                    self.open_count -= 1;
                    f.retry_at = Some(now + Duration::from_secs(1));
                    break;
                }
            };
            if n == 0 {
                f.eof = true;
                break;
            }
            f.eof = false;
            f.last_read = now;
            done += n;
            src.metrics.bytes_read.increment(n as u64);
            self.stats.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
            let Some(out) = f.out.as_mut() else { break };
            let mut lines = 0u64;
            let outbox = &mut self.outbox;
            let lim = &self.limits;
            f.split.feed(&buf[..n], &mut |piece| {
                lines += 1;
                out.take(piece, src, lim, outbox, now);
            });
            self.stats.lines.fetch_add(lines, Ordering::Relaxed);
        }
        if done >= quota {
            self.more_to_read = true;
        }
        if let Some(r) = &mut f.reader {
            f.disk_pos = r.disk_pos();
        }
    }

    /// Makes room for one more open file by closing the longest-idle live file at EOF.
    pub(super) fn ensure_fd_slot(&mut self, want: u64) -> bool {
        if self.open_count < self.cfg.limits.max_open_files {
            return true;
        }
        let victim = self
            .files
            .iter()
            .filter(|(id, f)| **id != want && f.reader.is_some() && f.kind == Kind::Live && f.eof && !f.finishing)
            .min_by_key(|(_, f)| f.last_read)
            .map(|(id, _)| *id);
        match victim {
            Some(v) => {
                if let Some(f) = self.files.get_mut(&v) {
                    f.reader = None;
                    self.open_count -= 1;
                }
                true
            }
            None => false,
        }
    }

    pub(super) fn close_idle(&mut self, now: Instant) {
        let idle = Duration::from_millis(self.cfg.tail.idle_close_ms);
        for f in self.files.values_mut() {
            if f.reader.is_some() && f.kind == Kind::Live && f.eof && now.duration_since(f.last_read) >= idle {
                f.reader = None;
                self.open_count -= 1;
            }
        }
    }

    /// Reopens a closed file by path, checking it is still the same content; otherwise the
    /// file moved (rotation, truncation) while closed and is looked up by fingerprint.
    pub(super) fn reopen(&mut self, id: u64, fp: u64) {
        let fp_bytes = self.cfg.tail.fingerprint_bytes;
        let Some(f) = self.files.get_mut(&id) else {
            return;
        };
        let same = File::open(&f.path).ok().and_then(|file| {
            let md = file.metadata().ok()?;
            if (md.dev(), md.ino()) != f.key || md.len() < f.split.scan_pos() {
                return None;
            }
            let head = fingerprint::head_of_file(&file, fp_bytes).ok()?;
            (fingerprint::of_head(&head, fp_bytes, f.kind != Kind::Live, f.site.as_deref()) == Some(fp)).then_some(file)
        });
        match same.map(|file| Reader::open(file, f.split.scan_pos())) {
            Some(Ok(r)) => {
                f.reader = Some(r);
                f.eof = false;
                self.open_count += 1;
            }
            _ => {
                let key = f.key;
                self.relocate(id, Some(key), "moved while closed");
            }
        }
    }

    /// The file was truncated in place (`copytruncate`): finish its old content from the copy.
    pub(super) fn truncated(&mut self, id: u64) {
        let Some(f) = self.files.get(&id) else { return };
        info!(path = %f.path.display(), "file truncated (copytruncate); finishing the old content from its copy");
        self.sources[f.source].metrics.rotation("truncate");
        let (key, kind, source, site, path) = (f.key, f.kind, f.source, f.site.clone(), f.path.clone());
        // The truncated file holds new content now: keep its descriptor for that (it may
        // have been renamed already, out of the globs' sight).
        let again = f.reader.as_ref().and_then(|r| r.file().try_clone().ok());
        self.relocate(id, Some(key), "truncated");
        if let Some(file) = again {
            self.track_open(file, source, site, path, kind, None);
        }
        self.last_scan = None;
    }

    /// Continues a file from wherever its content is now (found by fingerprint), or gives it
    /// up as lost. The old `(dev, inode)` no longer belongs to it.
    pub(super) fn relocate(&mut self, id: u64, exclude: Option<Key>, why: &str) {
        let Some(f) = self.files.get(&id) else { return };
        let Some(fp) = f.fp() else { return };
        let found = self.locate(fp, f.site.as_deref(), &f.path, exclude);
        let Some(f) = self.files.get_mut(&id) else {
            return;
        };
        if self.by_key.get(&f.key) == Some(&id) {
            self.by_key.remove(&f.key);
        }
        if f.reader.take().is_some() {
            self.open_count -= 1;
        }
        let opened = found.and_then(|(path, key)| {
            let file = File::open(&path).ok()?;
            let r = Reader::open(file, f.split.scan_pos()).ok()?;
            Some((path, key, r))
        });
        match opened {
            Some((path, key, r)) => {
                info!(from = %f.path.display(), to = %path.display(), why, "continuing the file from its new place");
                f.kind = if r.is_gzip() || why == "truncated" { Kind::Final } else { Kind::Rotated };
                f.size = r.file().metadata().map_or(0, |m| m.len());
                f.path = path;
                f.key = key;
                f.reader = Some(r);
                f.eof = false;
                self.by_key.insert(key, id);
                self.open_count += 1;
            }
            None => {
                warn!(
                    path = %f.path.display(),
                    offset = f.split.scan_pos(),
                    why,
                    "file content not found by fingerprint; lines after this offset that were not read are lost"
                );
                self.sources[f.source].metrics.lost.increment(1);
                f.lost = true;
                f.kind = Kind::Final;
                f.eof = true;
            }
        }
    }
}
