//! Discovery: which files the collector follows. Globs are scanned (and, in follow mode,
//! directories watched); a new file is opened, identified by its fingerprint and started at
//! its checkpoint; a file that moved away is found again by fingerprint; a backfill plans
//! its files and opens a few at a time.

use super::*;

impl<S: Sink> Collector<S> {
    /// Matches the globs: new files are tracked, live files no longer at their path rotated.
    pub(super) fn discover(&mut self, _now: Instant) {
        let mut seen: HashMap<PathBuf, Key> = HashMap::new();
        let mut new_dirs = Vec::new();
        for si in 0..self.sources.len() {
            for pi in 0..self.sources[si].patterns.len() {
                let found = self.sources[si].patterns[pi].discover();
                for path in found {
                    let Ok(md) = fs::metadata(&path) else {
                        continue;
                    };
                    let key = (md.dev(), md.ino());
                    seen.insert(path.clone(), key);
                    if let Some(&id) = self.by_key.get(&key) {
                        if let Some(f) = self.files.get_mut(&id) {
                            if f.path != path && f.kind != Kind::Final {
                                debug!(from = %f.path.display(), to = %path.display(), "file renamed within the globs");
                                f.path = path;
                            }
                            // An open file's shrinking is the poll's to notice (truncation).
                            f.size = if f.reader.is_some() { f.size.max(md.len()) } else { md.len() };
                        }
                        continue;
                    }
                    if self.skip.get(&key) == Some(&md.len()) {
                        continue;
                    }
                    let site = self.sources[si].patterns[pi].matches(&path).and_then(|m| m.site);
                    if let Some(parent) = path.parent() {
                        new_dirs.push(parent.to_path_buf());
                    }
                    self.add_file(si, site, path, Kind::Live, None);
                }
            }
        }
        for f in self.files.values_mut() {
            if f.kind == Kind::Live && seen.get(&f.path) != Some(&f.key) {
                let gone = !seen.contains_key(&f.path);
                let kind = if gone { "delete" } else { "rename" };
                info!(path = %f.path.display(), kind, "file rotated away; reading it to the end");
                self.sources[f.source].metrics.rotation(kind);
                f.kind = Kind::Rotated;
            }
        }
        if !new_dirs.is_empty() {
            self.watch_dirs();
        }
    }

    pub(super) fn watch_dirs(&mut self) {
        let Some(w) = &mut self.watcher else { return };
        for s in &self.sources {
            for p in &s.patterns {
                w.watch(&p.root());
            }
        }
        for f in self.files.values() {
            if let Some(parent) = f.path.parent() {
                w.watch(parent);
            }
        }
    }

    /// Starts tracking a file; identifies it when its first line is there.
    pub(super) fn add_file(
        &mut self,
        source: usize,
        site: Option<String>,
        path: PathBuf,
        kind: Kind,
        start: Option<(u64, u64)>,
    ) {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                debug!(path = %path.display(), error = %e, "cannot open");
                return;
            }
        };
        self.track_open(file, source, site, path, kind, start);
    }

    pub(super) fn track_open(
        &mut self,
        file: File,
        source: usize,
        site: Option<String>,
        path: PathBuf,
        kind: Kind,
        start: Option<(u64, u64)>,
    ) {
        let Ok(md) = file.metadata() else { return };
        let key = (md.dev(), md.ino());
        if self.by_key.contains_key(&key) {
            return;
        }
        let reader = match Reader::open(file, 0) {
            Ok(r) => r,
            Err(e) => {
                debug!(path = %path.display(), error = %e, "cannot read");
                return;
            }
        };
        let kind = if reader.is_gzip() { Kind::Final } else { kind };
        let id = self.next_id;
        self.next_id += 1;
        let f = Tracked {
            source,
            site,
            path,
            key,
            kind,
            reader: Some(reader),
            split: LineSplitter::new(0, 0, self.limits.max_line),
            out: None,
            size: md.len(),
            eof: false,
            last_read: Instant::now(),
            finishing: false,
            lost: false,
            retry_at: None,
            disk_size: md.len(),
            disk_pos: 0,
        };
        self.files.insert(id, f);
        self.by_key.insert(key, id);
        self.open_count += 1;
        self.identify(id, start);
        let close = self.open_count > self.cfg.limits.max_open_files;
        if let Some(f) = self.files.get_mut(&id) {
            if close && f.kind == Kind::Live && f.reader.is_some() {
                f.reader = None;
                self.open_count -= 1;
            }
        }
    }

    /// Computes the fingerprint and decides where reading starts; drops the file when it is
    /// complete already, owned by another process, or a copy of a tracked file.
    pub(super) fn identify(&mut self, id: u64, start: Option<(u64, u64)>) {
        let fp_bytes = self.cfg.tail.fingerprint_bytes;
        let Some(f) = self.files.get_mut(&id) else {
            return;
        };
        if f.out.is_some() {
            return;
        }
        let Some(reader) = &f.reader else { return };
        let is_final = f.kind != Kind::Live;
        let head = match reader {
            Reader::Plain(file) => match fingerprint::head_of_file(file, fp_bytes) {
                Ok(h) => h,
                Err(_) => return,
            },
            Reader::Gz { .. } => gz_head(reader.file(), fp_bytes),
        };
        let Some(fp) = fingerprint::of_head(&head, fp_bytes, is_final, f.site.as_deref()) else {
            if is_final && head.is_empty() {
                // An empty final file: nothing to send, nothing to remember.
                self.forget(id);
            }
            return;
        };
        let key = f.key;
        let size = f.size;
        let path = f.path.clone();
        if let Some(&other) = self.by_fp.get(&fp) {
            if other != id {
                debug!(path = %path.display(), fingerprint = %fingerprint::hex(fp), "same content as a tracked file; ignoring the copy");
                self.skip.insert(key, size);
                self.forget(id);
                return;
            }
        }
        let found = self.store.lookup(fp);
        if start.is_none() && found == Lookup::New && self.unmodified_longer_than_remembered(&path) {
            // A file nobody remembers, unmodified for longer than finished files are
            // remembered: most likely an archive this collector finished and forgot (reading it
            // would re-send it, and the processor keeps per-source progress only so long,
            // `[retention] progress_days`). `--backfill` reads it on purpose.
            info!(path = %path.display(), days = self.cfg.tail.completed_retention_days,
                "not read: unmodified for longer than tail.completed_retention_days and not remembered (use --backfill to read it)");
            self.skip.insert(key, size);
            self.stats.files_skipped.fetch_add(1, Ordering::Relaxed);
            self.backfill_completed_bytes += self.files.get(&id).map_or(0, |f| f.disk_size);
            self.forget(id);
            return;
        }
        let (offset, line) = match (start, found) {
            (_, Lookup::Completed(_)) => {
                // Debug, like every per-file line: `collect` prints one summary line.
                debug!(path = %path.display(), "already sent completely; skipping");
                self.skip.insert(key, size);
                self.stats.files_skipped.fetch_add(1, Ordering::Relaxed);
                // Skipped counts as read for the progress display.
                self.backfill_completed_bytes += self.files.get(&id).map_or(0, |f| f.disk_size);
                self.forget(id);
                return;
            }
            (_, Lookup::OwnedElsewhere) => {
                info!(path = %path.display(), "being collected by the other checkpoint role; skipping");
                self.skip.insert(key, size);
                self.stats.files_skipped.fetch_add(1, Ordering::Relaxed);
                self.forget(id);
                return;
            }
            (Some(s), _) => s,
            (None, Lookup::Active(e)) => {
                let Some(f) = self.files.get(&id) else { return };
                if f.kind == Kind::Live && e.offset > f.size {
                    warn!(path = %path.display(), checkpoint = e.offset, size = f.size, "file is shorter than its checkpoint; reading it from the start");
                    (0, 0)
                } else {
                    (e.offset, e.line)
                }
            }
            (None, Lookup::New) => (0, 0),
        };
        let Some(f) = self.files.get_mut(&id) else {
            return;
        };
        f.split.reset(offset, line);
        if let Some(r) = &mut f.reader {
            if let Err(e) = r.skip_to(offset) {
                warn!(path = %path.display(), error = %e, "cannot seek");
                f.reader = None;
                self.open_count -= 1;
            }
        }
        let path_str = path.display().to_string();
        f.out = Some(FileOut::new(id, fp, path_str, f.site.clone()));
        self.by_fp.insert(fp, id);
        debug!(path = %path.display(), fingerprint = %fingerprint::hex(fp), offset, "tracking");
    }

    /// Whether `path` is unmodified for longer than `tail.completed_retention_days`, outside a
    /// backfill (0 turns the rule off: finished files are then not remembered at all, and only
    /// the processor's progress stops re-sends).
    fn unmodified_longer_than_remembered(&self, path: &Path) -> bool {
        let days = self.cfg.tail.completed_retention_days;
        if days == 0 || matches!(self.mode, Mode::Backfill { .. }) {
            return false;
        }
        let Ok(mtime) = fs::metadata(path).and_then(|m| m.modified()) else {
            return false;
        };
        SystemTime::now().duration_since(mtime).is_ok_and(|age| age > Duration::from_secs(days * 86_400))
    }

    /// Stops tracking without recording anything.
    pub(super) fn forget(&mut self, id: u64) {
        if let Some(f) = self.files.remove(&id) {
            if self.by_key.get(&f.key) == Some(&id) {
                self.by_key.remove(&f.key);
            }
            if let Some(fp) = f.fp() {
                if self.by_fp.get(&fp) == Some(&id) {
                    self.by_fp.remove(&fp);
                }
            }
            if f.reader.is_some() {
                self.open_count -= 1;
            }
        }
    }

    /// Checkpointed files that the globs did not find (rotated while the collector was
    /// down): look for them next to their old path, by fingerprint.
    pub(super) fn locate_missing(&mut self) {
        let missing: Vec<ActiveEntry> =
            self.store.active().filter(|e| !self.by_fp.contains_key(&e.fingerprint)).cloned().collect();
        for e in missing {
            let Some(si) = self.sources.iter().position(|s| s.name == e.source) else {
                continue;
            };
            if let Some((path, _)) = self.locate(e.fingerprint, e.site.as_deref(), &e.path, None) {
                info!(path = %path.display(), was = %e.path.display(), offset = e.offset, "found a rotated file by fingerprint; finishing it");
                self.add_file(si, e.site.clone(), path, Kind::Rotated, Some((e.offset, e.line)));
            }
        }
    }

    /// Finds the file with fingerprint `fp` next to `near` (same directory, name starting
    /// with `near`'s name: `access.log.1`, `access.log-20250101.gz`). Plain files first.
    pub(super) fn locate(
        &self,
        fp: u64,
        site: Option<&str>,
        near: &Path,
        exclude: Option<Key>,
    ) -> Option<(PathBuf, Key)> {
        let dir = near.parent()?;
        let base = near.file_name()?.to_str()?;
        let mut cands: Vec<(bool, PathBuf, Key)> = Vec::new();
        for e in fs::read_dir(dir).ok()?.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(base) {
                continue;
            }
            let path = e.path();
            let Ok(md) = fs::metadata(&path) else {
                continue;
            };
            if !md.is_file() {
                continue;
            }
            let key = (md.dev(), md.ino());
            if Some(key) == exclude || self.by_key.contains_key(&key) {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            cands.push((super::super::reader::is_gzip(&file), path, key));
        }
        cands.sort_by(|a, b| (a.0, a.1.as_os_str().len(), &a.1).cmp(&(b.0, b.1.as_os_str().len(), &b.1)));
        let fp_bytes = self.cfg.tail.fingerprint_bytes;
        for (gz, path, key) in cands {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let head = if gz {
                gz_head(&file, fp_bytes)
            } else {
                fingerprint::head_of_file(&file, fp_bytes).unwrap_or_default()
            };
            if fingerprint::of_head(&head, fp_bytes, true, site) == Some(fp) {
                return Some((path, key));
            }
        }
        None
    }

    pub(super) fn plan_backfill(&mut self, paths: &[PathBuf], source: Option<&str>) -> Result<(), CollectError> {
        let forced = match source {
            Some(name) => {
                Some(self.sources.iter().position(|s| s.name == name).ok_or_else(|| CollectError::Backfill {
                    path: PathBuf::from(name),
                    msg: "no source with this name in the config".into(),
                })?)
            }
            None => None,
        };
        let mut total = 0;
        for p in paths {
            let abs = if p.is_absolute() {
                p.clone()
            } else {
                std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.clone())
            };
            let md = fs::metadata(&abs).map_err(|e| CollectError::Backfill { path: p.clone(), msg: e.to_string() })?;
            if !md.is_file() {
                return Err(CollectError::Backfill { path: p.clone(), msg: "not a regular file".into() });
            }
            let mut hit = None;
            for (si, s) in self.sources.iter().enumerate() {
                if forced.is_some_and(|f| f != si) {
                    continue;
                }
                if let Some(m) = s.patterns.iter().find_map(|pat| pat.matches_rotated(&abs)) {
                    hit = Some((si, m.site));
                    break;
                }
            }
            let (si, site) = match (hit, forced) {
                (Some(h), _) => h,
                (None, Some(si)) if self.sources[si].host_from == super::super::config::HostFrom::Field => (si, None),
                (None, Some(_)) => {
                    return Err(CollectError::Backfill {
                        path: p.clone(),
                        msg: "the source takes the host from the path, but the path does not match its patterns".into(),
                    })
                }
                (None, None) => {
                    return Err(CollectError::Backfill {
                        path: p.clone(),
                        msg: "matches no source's paths (also allowing rotation suffixes); name one with --source"
                            .into(),
                    })
                }
            };
            total += md.len();
            self.backfill_queue.push_back((si, site, abs));
        }
        self.stats.backfill_total_bytes.store(total, Ordering::Relaxed);
        Ok(())
    }

    pub(super) fn activate_backfill(&mut self) {
        while !self.backfill_queue.is_empty() && self.files.len() < MAX_ACTIVE_BACKFILL {
            let Some((si, site, path)) = self.backfill_queue.pop_front() else {
                break;
            };
            let before = self.next_id;
            self.add_file(si, site, path.clone(), Kind::Final, None);
            if self.next_id == before || !self.files.contains_key(&before) {
                // Skipped (already sent) or unreadable: count its bytes as done.
                self.backfill_completed_bytes += fs::metadata(&path).map_or(0, |m| m.len());
            }
        }
    }
}
