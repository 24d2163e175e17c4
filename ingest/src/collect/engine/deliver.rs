//! Delivery: batches out to the sink, acknowledgements in (the checkpoint position of each
//! file advances only over acknowledged lines), producer-session restarts after a delivery
//! failure, heartbeats and checkpoint writes.

use super::*;

impl<S: Sink> Collector<S> {
    // INVARIANT: a file's pending unit is removed only here, on a successful acknowledgement
    // from the current producer session; checkpoints are computed from what remains pending.
    pub(super) fn handle_ack(&mut self, ack: Ack) {
        let t = ack.token;
        if t.gen != self.gen {
            return;
        }
        self.inflight_bytes = self.inflight_bytes.saturating_sub(t.bytes as usize);
        self.inflight_msgs = self.inflight_msgs.saturating_sub(1);
        self.inflight_sent.remove(&t.seq);
        match ack.result {
            Ok(()) => {
                self.restart_backoff = Duration::ZERO;
                let topic = match t.topic {
                    Topic::Records => "records",
                    Topic::Rejects => "rejects",
                    Topic::Heartbeats => "heartbeats",
                };
                metrics::counter!(m::MESSAGES_ACKED, "topic" => topic).increment(1);
                if t.topic == Topic::Heartbeats {
                    return;
                }
                if let Some(f) = self.files.get_mut(&t.file) {
                    if let Some(out) = &mut f.out {
                        if let Some(ts) = out.acked(t.offset) {
                            let d = &mut self.delivered_max[f.source];
                            *d = Some(d.map_or(ts, |m| m.max(ts)));
                        }
                    }
                    if t.topic == Topic::Records {
                        self.sources[f.source].metrics.records_acked.increment(t.lines as u64);
                        self.stats.records_acked.fetch_add(t.lines as u64, Ordering::Relaxed);
                    } else {
                        self.stats.rejects_acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(e) if t.topic == Topic::Heartbeats => {
                // Heartbeats have their own producer: a lost one is followed by the next.
                metrics::counter!(m::HEARTBEAT_ERRORS).increment(1);
                warn!(error = %e, topic = %self.cfg.kafka.heartbeat_topic, "heartbeat not delivered");
            }
            Err(e) => {
                metrics::counter!(m::DELIVERY_ERRORS).increment(1);
                warn!(error = %e, "delivery failed; restarting the producer from the checkpoints");
                self.schedule_restart();
            }
        }
    }

    /// `[kafka] message_timeout_ms`: a message unacknowledged this long ends the session. The
    /// restart stops sending at once and drops the producer (purging its queue), so nothing
    /// after the late message is written by this session once it is given up; librdkafka's
    /// own timeout stays infinite because it would skip the message and go on (`deliver.rs`).
    pub(super) fn check_deadline(&mut self, now: Instant) {
        let timeout = self.cfg.kafka.message_timeout_ms;
        if timeout == 0 || self.restart_at.is_some() {
            return;
        }
        let Some((_, &sent)) = self.inflight_sent.first_key_value() else { return };
        if now.duration_since(sent) >= Duration::from_millis(timeout) {
            metrics::counter!(m::DELIVERY_ERRORS).increment(1);
            warn!(
                timeout_ms = timeout,
                messages = self.inflight_msgs,
                "message unacknowledged past kafka.message_timeout_ms; starting a new producer session from the checkpoints"
            );
            self.schedule_restart();
        }
    }

    /// The first restart is immediate; repeated failures without a success in between
    /// back off up to 30 s.
    pub(super) fn schedule_restart(&mut self) {
        if self.restart_at.is_none() {
            self.restart_at = Some(Instant::now() + self.restart_backoff);
            self.restart_backoff =
                (self.restart_backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
        }
    }

    /// A new producer session: everything not acknowledged is read and sent again.
    pub(super) fn restart(&mut self, now: Instant) {
        self.gen = self.gen.wrapping_add(1);
        metrics::counter!(m::PRODUCER_RESTARTS).increment(1);
        if let Err(e) = self.sink.restart() {
            warn!(error = %e, "producer restart failed; retrying");
            self.restart_backoff =
                (self.restart_backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
            self.restart_at = Some(now + self.restart_backoff);
            return;
        }
        self.restart_at = None;
        self.stats.producer_restarts.fetch_add(1, Ordering::Relaxed);
        self.inflight_bytes = 0;
        self.inflight_msgs = 0;
        self.inflight_sent.clear();
        self.outbox.ready.clear();
        for f in self.files.values_mut() {
            let (off, line) = f.ack_position();
            if let Some(out) = &mut f.out {
                out.clear(&mut self.outbox);
            }
            f.split.reset(off, line);
            f.finishing = false;
            f.eof = false;
            if let Some(r) = &mut f.reader {
                if let Err(e) = r.skip_to(off) {
                    warn!(path = %f.path.display(), error = %e, "cannot rewind; reopening");
                    f.reader = None;
                    self.open_count -= 1;
                }
            } else if f.lost {
                warn!(path = %f.path.display(), offset = off, "file is gone: unacknowledged lines after this offset cannot be re-sent");
            }
        }
        self.outbox.buffered = 0;
        self.more_to_read = true;
    }

    pub(super) fn seal_lingering(&mut self, now: Instant, force: bool) {
        if self.outbox.buffered == 0 {
            return;
        }
        let linger = if force { None } else { Some(Duration::from_millis(self.cfg.limits.linger_ms)) };
        for f in self.files.values_mut() {
            if let Some(out) = &mut f.out {
                if !out.batches.is_empty() {
                    out.seal_lingering(linger, now, &mut self.outbox);
                }
            }
        }
    }

    pub(super) fn send_ready(&mut self) {
        if self.outbox.ready.is_empty() {
            return;
        }
        let ready = std::mem::take(&mut self.outbox.ready);
        let now = Instant::now();
        for r in ready {
            if self.restart_at.is_some() {
                break; // everything unacknowledged is re-read after the restart
            }
            self.next_seq += 1;
            let token = Token {
                gen: self.gen,
                seq: self.next_seq,
                file: r.file,
                offset: r.offset,
                bytes: r.payload.len() as u32,
                lines: r.lines,
                topic: r.topic,
            };
            match self.sink.send(r.topic, &r.key, &r.payload, token) {
                Ok(()) => {
                    self.outbox.buffered = self.outbox.buffered.saturating_sub(r.payload.len());
                    self.inflight_bytes += r.payload.len();
                    self.inflight_msgs += 1;
                    self.inflight_sent.insert(token.seq, now);
                }
                Err(e) => {
                    metrics::counter!(m::DELIVERY_ERRORS).increment(1);
                    warn!(error = %e, "send failed; restarting the producer from the checkpoints");
                    self.schedule_restart();
                }
            }
        }
    }

    pub(super) fn heartbeats_on(&self) -> bool {
        // A backfill reads archives of a source that a tailing collector may be following:
        // only the tailing collector speaks for the source.
        self.cfg.collector.heartbeat_interval_ms > 0 && !matches!(self.mode, Mode::Backfill { .. })
    }

    pub(super) fn heartbeat_due(&mut self, now: Instant) {
        if !self.heartbeats_on() || self.restart_at.is_some() {
            return;
        }
        let every = Duration::from_millis(self.cfg.collector.heartbeat_interval_ms);
        if self.last_heartbeat.is_none_or(|t| now.duration_since(t) >= every) {
            self.heartbeat(now);
        }
    }

    /// The heartbeats of every source as they stand now, from acknowledged state only.
    pub fn heartbeats(&self, now: Instant) -> Vec<Heartbeat> {
        let sent_at_us = self.clock_origin.0 + now.saturating_duration_since(self.clock_origin.1).as_micros() as i64;
        let mut out: Vec<Heartbeat> = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| Heartbeat {
                version: HEARTBEAT_VERSION,
                server: self.cfg.collector.server.clone(),
                source: s.name.clone(),
                sent_at_us,
                delivered_through_us: self.delivered_max[i].unwrap_or(0).max(0),
                position: 0,
                idle: true,
                files: 0,
            })
            .collect();
        let mut through: Vec<Option<i64>> = vec![None; self.sources.len()];
        for f in self.files.values() {
            let h = &mut out[f.source];
            h.files += 1;
            h.position += f.ack_position().0;
            let Some(o) = &f.out else { continue };
            // A file constrains its source unless it is read to its end with everything read
            // acknowledged. Then: just before its oldest unacknowledged record, but never
            // past the newest acknowledged one of the source (a heartbeat claims acknowledged
            // data only); lines not read yet are taken to be no older than the file's newest
            // acknowledged record, and with none acknowledged nothing is claimed.
            if f.idle() && o.pending.is_empty() && o.batches.is_empty() {
                continue;
            }
            let acked = self.delivered_max[f.source].unwrap_or(0);
            let t = match o.undelivered_min_ts() {
                Some(min) => min.saturating_sub(1).min(acked),
                None => o.acked_max_ts.unwrap_or(0).min(acked),
            };
            let cur = &mut through[f.source];
            *cur = Some(cur.map_or(t, |c| c.min(t)));
        }
        for (h, t) in out.iter_mut().zip(through) {
            if let Some(t) = t {
                h.idle = false;
                h.delivered_through_us = t.max(0);
            }
        }
        out
    }

    /// Sends one heartbeat per source (acknowledged like any message; not re-sent).
    pub(super) fn heartbeat(&mut self, now: Instant) {
        self.last_heartbeat = Some(now);
        for h in self.heartbeats(now) {
            // Strings and integers always serialize.
            let payload = serde_json::to_vec(&h).unwrap_or_default();
            self.next_seq += 1;
            let token = Token {
                gen: self.gen,
                seq: self.next_seq,
                file: 0,
                offset: 0,
                bytes: payload.len() as u32,
                lines: 0,
                topic: Topic::Heartbeats,
            };
            match self.sink.send(Topic::Heartbeats, h.key().as_bytes(), &payload, token) {
                Ok(()) => {
                    metrics::counter!(m::HEARTBEATS_SENT, "source" => h.source.clone()).increment(1);
                    metrics::gauge!(m::DELIVERED_THROUGH, "source" => h.source.clone())
                        .set(h.delivered_through_us as f64 / 1e6);
                    self.inflight_bytes += payload.len();
                    self.inflight_msgs += 1;
                }
                Err(e) => {
                    metrics::counter!(m::HEARTBEAT_ERRORS).increment(1);
                    warn!(error = %e, "sending a heartbeat failed");
                    return;
                }
            }
        }
    }

    pub(super) fn checkpoint(&mut self, now: Instant, force: bool) {
        let every = Duration::from_millis(self.cfg.tail.checkpoint_interval_ms);
        if !force && now.duration_since(self.last_checkpoint) < every {
            return;
        }
        self.last_checkpoint = now;
        let mut lag: Vec<u64> = vec![0; self.sources.len()];
        for f in self.files.values() {
            let Some(fp) = f.fp() else { continue };
            let (offset, line) = f.ack_position();
            lag[f.source] += f.size.saturating_sub(offset);
            self.store.update(ActiveEntry {
                fingerprint: fp,
                source: self.sources[f.source].name.clone(),
                site: f.site.clone(),
                path: f.path.clone(),
                dev: f.key.0,
                inode: f.key.1,
                offset,
                line,
                size: f.size,
                updated: 0,
            });
        }
        for (s, l) in self.sources.iter().zip(lag) {
            s.metrics.lag.set(l as f64);
        }
        let by_fp = &self.by_fp;
        self.store.prune(self.cfg.tail.completed_retention_days, |fp| by_fp.contains_key(&fp));
        match self.store.flush() {
            Ok(()) => self.last_checkpoint_ok = now,
            Err(e) => {
                metrics::counter!(m::CHECKPOINT_ERRORS).increment(1);
                error!(error = %e, "writing checkpoints failed; retrying");
            }
        }
    }
}
