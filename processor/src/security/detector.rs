//! The one engine that runs every scenario over the processor's stream, in event time.
//!
//! One detector per Kafka partition: a site's records all arrive on one partition in offset
//! order, so a detector sees the same records in the same order whichever replica holds the
//! partition, live or in a replay — the events it emits, and their identities (scenario,
//! source, site, start time), are the same. Their rows are inserted with the batch (same dedup
//! token rules as the access rows) into a ReplacingMergeTree keyed by that identity, so a
//! replay of the topic adds no events. A restart begins with empty buckets: an attack that
//! straddles it is found again once it crosses the threshold after the restart.
//!
//! Memory is bounded: buckets expire by event time, and past `max_buckets` the least recently
//! seen tenth is evicted (`sitelog_security_bucket_evictions_total`), so a spray of a million
//! addresses cannot grow it.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::Ipv6Addr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher24;

use super::fasthash::FastMap;
use super::scenario::{Dispatch, DistinctField, Kind, Matcher, ScannerList, Scenario};
use crate::store::rows::AccessLogRow;

/// A row of `security_events`: the current state of one event (newest `version` wins).
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct EventRow {
    pub event_id: u64,
    pub scenario: String,
    pub severity: String,
    /// The address as text (IPv4 dotted) or a network in CIDR.
    pub source: String,
    pub source_ip: Ipv6Addr,
    pub customer_id: String,
    pub site_id: String,
    pub site_host: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub count: u64,
    pub sample_paths: Vec<String>,
    pub sample_user_agents: Vec<String>,
    pub version: u64,
}

/// A row of `security_signals`: a group that came near a scenario's threshold (cross-tenant).
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct SignalRow {
    pub scenario: String,
    pub source_ip: Ipv6Addr,
    pub source_net: Ipv6Addr,
    pub customer_id: String,
    pub site_id: String,
    pub site_host: String,
    pub ts: i64,
}

/// The compiled scenarios, shared by every partition's detector.
pub struct Scenarios {
    list: Vec<(Scenario, Matcher)>,
    dispatch: Dispatch,
    /// Per scenario: event time (µs) a bucket must be idle before it can no longer fire or
    /// extend an event (its drain time plus the cool-down).
    horizon: Vec<i64>,
}

impl Scenarios {
    pub fn new(list: Vec<Scenario>) -> Result<Arc<Self>, super::scenario::ScenarioError> {
        let list = list
            .into_iter()
            .map(|s| {
                let m = Matcher::new(&s.filter, &s.name)?;
                Ok((s, m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let matchers: Vec<&Matcher> = list.iter().map(|(_, m)| m).collect();
        let dispatch = Dispatch::new(&matchers).ok_or_else(|| super::scenario::ScenarioError::Invalid {
            name: format!("{} scenarios", list.len()),
            msg: "at most 64 scenarios".into(),
        })?;
        let horizon = list
            .iter()
            .map(|(s, _)| {
                let drain = match s.kind {
                    Kind::Leaky => s.capacity * s.leak_secs,
                    Kind::Distinct => s.window_secs as f64,
                };
                ((drain + s.cooldown_secs as f64) * US) as i64
            })
            .collect();
        Ok(Arc::new(Scenarios { list, dispatch, horizon }))
    }
}

/// A bucket's group: scenario, address or network, and a hash of the site key — cheap to hash
/// and copy, 24 bytes: the scenario's index (< 64) sits in the top byte of `tag`, the site
/// key's hash in the other 56 bits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct GroupKey {
    ip: Ipv6Addr,
    tag: u64,
}

impl GroupKey {
    fn new(scenario: usize, ip: Ipv6Addr, site: u64) -> Self {
        GroupKey { ip, tag: (site & (u64::MAX >> 8)) | (scenario as u64) << 56 }
    }

    fn scenario(&self) -> usize {
        (self.tag >> 56) as usize
    }
}

impl Hash for GroupKey {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        let ip = u128::from(self.ip);
        h.write_u64(ip as u64);
        h.write_u64((ip >> 64) as u64);
        h.write_u64(self.tag);
    }
}

struct OpenEvent {
    id: u64,
    first_seen: i64,
    last_seen: i64,
    count: u64,
    paths: Vec<String>,
    agents: Vec<String>,
    customer_id: String,
    site_id: String,
    site_host: String,
}

/// Matching requests of one (scenario, network, site) within an hour, for near-miss signals.
#[derive(Default)]
struct SignalGroup {
    count: u32,
    start: i64,
    signaled: bool,
    last_obs: u64,
}

/// One group's state. Small (the open event is boxed: few buckets have one), so that the
/// many buckets of page views (`aggressive-crawl`) stay cache-friendly.
#[derive(Default)]
struct Bucket {
    level: f64,
    last_ts: i64,
    started: i64,
    hits: u64,
    /// Distinct scenarios only: (time, value hash) of the recent matches. Boxed: the deque's
    /// own 32 bytes would weigh on every leaky bucket too (8 here).
    #[allow(clippy::box_collection)]
    window: Option<Box<VecDeque<(i64, u64)>>>,
    /// `observed` when this bucket last matched.
    last_obs: u64,
    open: Option<Box<OpenEvent>>,
}

pub struct Detector {
    scenarios: Arc<Scenarios>,
    /// Everything that changes, apart from the (shared, read-only) scenarios: `observe`
    /// borrows both at once without cloning the `Arc` per row.
    st: State,
    pub evictions: u64,
}

struct State {
    buckets: FastMap<GroupKey, Bucket>,
    max_buckets: usize,
    /// The newest event time seen (µs): what "now" is for expiry.
    watermark: i64,
    observed: u64,
    dirty: BTreeMap<u64, GroupKey>,
    /// States of events whose bucket was removed before they were drained.
    finished: Vec<EventRow>,
    signals: Vec<SignalRow>,
    signal_groups: FastMap<GroupKey, SignalGroup>,
    scanners: ScannerList,
    /// Reused for counting distinct values (no allocation per row).
    scratch: Vec<u64>,
    /// The smallest `last_obs` of any bucket or signal group at the last expiry scan.
    least_obs: u64,
    /// The last site key seen and its hash (a partition's records come in runs of one site).
    last_site: (String, u64),
    evictions: u64,
}

const US: f64 = 1_000_000.0;
const MAX_SAMPLES: usize = 5;
/// How often (in records) idle buckets are looked for.
const EXPIRE_EVERY: u64 = 65_536;
/// Records of a partition a bucket must have been idle for before it may expire.
const IDLE_OBSERVATIONS: u64 = 1_000_000;
/// Near-miss signals count a group's matching requests within an hour.
const SIGNAL_WINDOW_US: i64 = 3_600_000_000;

fn source_text(ip: &Ipv6Addr) -> String {
    ip.to_ipv4_mapped().map(|v4| v4.to_string()).unwrap_or_else(|| ip.to_string())
}

/// A fast, stable hash of a site key for bucket keys, 8 bytes per step (not an identity that
/// leaves the process; collisions only merge two sites' buckets of one address, which is
/// harmless at 64 bits).
fn site_hash(b: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ b.len() as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 32)
}

fn stable_hash(parts: &[&[u8]]) -> u64 {
    // A fixed key: identities must be the same in every process and version.
    let mut h = SipHasher24::new_with_keys(0x7369_7465_6c6f_6721, 0x6576_656e_7473_2121);
    for p in parts {
        h.write(&(p.len() as u64).to_le_bytes());
        h.write(p);
    }
    h.finish()
}

/// Whether `b` has an ASCII upper-case letter, 8 bytes per step ("determine if a word has a
/// byte between m and n", Bit Twiddling Hacks: bytes above 0x40 and below 0x5b; bytes ≥ 0x80
/// are excluded by the `!x` term).
#[inline]
fn has_upper(b: &[u8]) -> bool {
    const ONES: u64 = u64::MAX / 255;
    let word = |x: u64| {
        let low = x & (ONES * 127);
        (ONES * (127 + 0x5b) - low) & !x & (low + ONES * (127 - 0x40)) & (ONES * 128) != 0
    };
    let mut chunks = b.chunks_exact(8);
    let mut any = false;
    for c in &mut chunks {
        any |= word(u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    any | word(u64::from_le_bytes(tail))
}

/// The path as the matchers see it: lower case, borrowed unless it has an upper-case letter.
fn lower_path(path: &str) -> Cow<'_, str> {
    if has_upper(path.as_bytes()) {
        path.to_ascii_lowercase().into()
    } else {
        path.into()
    }
}

impl Detector {
    pub fn new(scenarios: Arc<Scenarios>, max_buckets: usize) -> Self {
        Detector {
            scenarios,
            st: State {
                buckets: FastMap::default(),
                max_buckets: max_buckets.max(16),
                watermark: i64::MIN,
                observed: 0,
                dirty: BTreeMap::new(),
                finished: Vec::new(),
                signals: Vec::new(),
                signal_groups: FastMap::default(),
                scanners: ScannerList::default(),
                scratch: Vec::new(),
                least_obs: 0,
                last_site: (String::new(), site_hash(b"")),
                evictions: 0,
            },
            evictions: 0,
        }
    }

    pub fn buckets(&self) -> usize {
        self.st.buckets.len() + self.st.signal_groups.len()
    }

    /// Feeds one stored row (attributed, classified) to every scenario that may match it.
    pub fn observe(&mut self, row: &AccessLogRow) {
        if row.client_ip.is_unspecified() {
            return;
        }
        let sc: &Scenarios = &self.scenarios;
        let st = &mut self.st;
        let t = row.ts;
        st.watermark = st.watermark.max(t);
        st.observed += 1;
        if st.observed.is_multiple_of(EXPIRE_EVERY) {
            st.expire(sc);
        }
        let mut cand = sc.dispatch.candidates(row);
        if cand == 0 {
            return;
        }
        let scanner = cand & sc.dispatch.needs_scanner != 0 && st.scanners.is_scanner(&row.user_agent);
        if !scanner {
            cand &= sc.dispatch.not_scanner;
        }
        if cand == 0 {
            return;
        }
        let path = lower_path(&row.path);
        let site_key = if row.site_id.is_empty() { &row.site_host } else { &row.site_id };
        let mut site = None;
        while cand != 0 {
            let i = cand.trailing_zeros() as usize;
            cand &= cand - 1;
            let (s, m) = &sc.list[i];
            if m.matches(row, &path, scanner) {
                let site = *site.get_or_insert_with(|| st.site_hash(site_key));
                st.hit(sc, i, s, row, &path, site, site_key);
            }
        }
        self.evictions = st.evictions;
    }

    /// The events changed since the last call (their current state) and the new signals.
    pub fn drain(&mut self) -> (Vec<EventRow>, Vec<SignalRow>) {
        let st = &mut self.st;
        let mut events = std::mem::take(&mut st.finished);
        for (_, key) in std::mem::take(&mut st.dirty) {
            if let Some(row) = st.buckets.get(&key).and_then(|b| event_row(&self.scenarios, &key, b)) {
                events.push(row);
            }
        }
        (events, std::mem::take(&mut st.signals))
    }
}

fn event_row(sc: &Scenarios, key: &GroupKey, b: &Bucket) -> Option<EventRow> {
    let e = b.open.as_ref()?;
    let s = &sc.list[key.scenario()].0;
    Some(EventRow {
        event_id: e.id,
        scenario: s.name.clone(),
        severity: s.severity.clone(),
        source: source_text(&key.ip),
        source_ip: key.ip,
        customer_id: e.customer_id.clone(),
        site_id: e.site_id.clone(),
        site_host: e.site_host.clone(),
        first_seen: e.first_seen,
        last_seen: e.last_seen,
        count: e.count,
        sample_paths: e.paths.clone(),
        sample_user_agents: e.agents.clone(),
        version: e.count,
    })
}

impl State {
    /// `site_hash` of the site key, remembered for the next rows of the same site.
    fn site_hash(&mut self, key: &str) -> u64 {
        if self.last_site.0 != key {
            self.last_site.0.clear();
            self.last_site.0.push_str(key);
            self.last_site.1 = site_hash(key.as_bytes());
        }
        self.last_site.1
    }

    /// Scenario `i` (`s`) matched `row`: count it in its bucket, fire or extend an event, and
    /// count near-misses for the cross-tenant scenario.
    #[allow(clippy::too_many_arguments)]
    fn hit(
        &mut self,
        sc: &Scenarios,
        i: usize,
        s: &Scenario,
        row: &AccessLogRow,
        path: &str,
        site: u64,
        site_key: &str,
    ) {
        let t = row.ts;
        let key = GroupKey::new(i, row.client_ip, site);
        if self.buckets.len() >= self.max_buckets && !self.buckets.contains_key(&key) {
            self.evict(sc);
        }
        let b = self.buckets.entry(key).or_default();
        let fired = match s.kind {
            Kind::Leaky => {
                let elapsed = (t - b.last_ts).max(0) as f64 / US;
                b.level = (b.level - elapsed / s.leak_secs).max(0.0);
                if b.level == 0.0 {
                    b.started = t;
                    b.hits = 0;
                }
                b.level += 1.0;
                b.hits += 1;
                b.level > s.capacity
            }
            Kind::Distinct => {
                let value = match s.distinct.unwrap_or(DistinctField::Path) {
                    DistinctField::Path => stable_hash(&[path.as_bytes()]),
                    DistinctField::PathQuery => stable_hash(&[path.as_bytes(), row.query.as_bytes()]),
                    DistinctField::QueryAuthor => {
                        stable_hash(&[super::scenario::query_value(&row.query, "author").unwrap_or("").as_bytes()])
                    }
                };
                let horizon = t - (s.window_secs as i64) * 1_000_000;
                let window = b.window.get_or_insert_with(Default::default);
                while window.front().is_some_and(|(ts, _)| *ts < horizon) {
                    window.pop_front();
                }
                if window.is_empty() {
                    b.started = t;
                    b.hits = 0;
                }
                window.push_back((t, value));
                if window.len() > 4 * s.threshold {
                    window.pop_front();
                }
                b.hits += 1;
                let d = &mut self.scratch;
                d.clear();
                d.extend(window.iter().map(|(_, v)| *v));
                d.sort_unstable();
                d.dedup();
                d.len() >= s.threshold
            }
        };
        b.last_ts = b.last_ts.max(t);
        b.last_obs = self.observed;
        if s.signal_at > 0 {
            // Near-miss signals count per network and site (an attacker spreading thin uses
            // several addresses of one network), apart from the leaky level, which drains
            // between slow attempts.
            let gkey = GroupKey::new(i, row.client_net, site);
            if self.signal_groups.len() >= self.max_buckets && !self.signal_groups.contains_key(&gkey) {
                evict_signal_groups(&mut self.signal_groups, self.max_buckets, &mut self.evictions);
            }
            let g = self.signal_groups.entry(gkey).or_default();
            if g.count == 0 || t - g.start > SIGNAL_WINDOW_US {
                *g = SignalGroup { count: 0, start: t, signaled: false, last_obs: 0 };
            }
            g.count += 1;
            g.last_obs = self.observed;
            if !g.signaled && g.count >= s.signal_at {
                g.signaled = true;
                self.signals.push(SignalRow {
                    scenario: s.name.clone(),
                    source_ip: row.client_ip,
                    source_net: row.client_net,
                    customer_id: row.customer_id.clone(),
                    site_id: row.site_id.clone(),
                    site_host: row.site_host.clone(),
                    ts: t,
                });
            }
        }
        let cooldown = (s.cooldown_secs as i64) * 1_000_000;
        if b.open.as_ref().is_some_and(|e| t - e.last_seen > cooldown) {
            b.open = None;
        }
        if let Some(e) = &mut b.open {
            e.count += 1;
            e.last_seen = e.last_seen.max(t);
            add_sample(&mut e.paths, &row.path);
            add_sample(&mut e.agents, &row.user_agent);
            self.dirty.insert(e.id, key);
        } else if fired {
            let id = stable_hash(&[
                s.name.as_bytes(),
                &row.client_ip.octets(),
                site_key.as_bytes(),
                &b.started.to_le_bytes(),
            ]);
            let mut e = Box::new(OpenEvent {
                id,
                first_seen: b.started,
                last_seen: t,
                count: b.hits,
                paths: Vec::new(),
                agents: Vec::new(),
                customer_id: row.customer_id.clone(),
                site_id: row.site_id.clone(),
                site_host: row.site_host.clone(),
            });
            add_sample(&mut e.paths, &row.path);
            add_sample(&mut e.agents, &row.user_agent);
            metrics::counter!("sitelog_security_events_total", "scenario" => s.name.clone()).increment(1);
            b.open = Some(e);
            self.dirty.insert(id, key);
        }
    }

    /// Removes a bucket; an event of it not drained yet goes out with the next drain.
    fn remove_bucket(&mut self, sc: &Scenarios, key: &GroupKey) {
        if let Some(b) = self.buckets.remove(key) {
            if let Some(id) = b.open.as_ref().map(|e| e.id) {
                if self.dirty.remove(&id).is_some() {
                    if let Some(row) = event_row(sc, key, &b) {
                        self.finished.push(row);
                    }
                }
            }
        }
    }

    /// Drops buckets that can no longer fire or extend an event: idle past the scenario's
    /// horizon in event time AND for `IDLE_OBSERVATIONS` records of this partition. Records of
    /// a partition are not in time order (files are read side by side, rotated ones backfilled),
    /// so event time alone would expire an attack whose records are still coming; the count
    /// keeps expiry a function of the record order only — never of batch boundaries.
    fn expire(&mut self, sc: &Scenarios) {
        let (now, seen) = (self.watermark, self.observed);
        metrics::gauge!("sitelog_security_buckets").set(self.buckets.len() as f64);
        // Nothing can be idle for `IDLE_OBSERVATIONS` yet if the least recently matched bucket
        // or group at the last scan (or anything newer) matched within them: skip the scan.
        // Exact, since `last_obs` only grows and new entries start at the current count.
        if seen - self.least_obs <= IDLE_OBSERVATIONS {
            return;
        }
        let expired: Vec<GroupKey> = self
            .buckets
            .iter()
            .filter(|(k, b)| b.last_ts + sc.horizon[k.scenario()] < now && seen - b.last_obs > IDLE_OBSERVATIONS)
            .map(|(k, _)| *k)
            .collect();
        for k in &expired {
            self.remove_bucket(sc, k);
        }
        self.signal_groups.retain(|_, g| g.start + SIGNAL_WINDOW_US >= now || seen - g.last_obs <= IDLE_OBSERVATIONS);
        self.least_obs = self
            .buckets
            .values()
            .map(|b| b.last_obs)
            .chain(self.signal_groups.values().map(|g| g.last_obs))
            .min()
            .unwrap_or(seen);
    }

    /// At the limit: the least recently seen tenth goes (O(n) selection, once per tenth).
    fn evict(&mut self, sc: &Scenarios) {
        let mut by_age: Vec<(i64, GroupKey)> = self.buckets.iter().map(|(k, b)| (b.last_ts, *k)).collect();
        let n = (self.max_buckets / 10).max(1).min(by_age.len());
        by_age.select_nth_unstable(n - 1);
        for (_, k) in by_age.into_iter().take(n) {
            self.remove_bucket(sc, &k);
        }
        self.evictions += n as u64;
        metrics::counter!("sitelog_security_bucket_evictions_total").increment(n as u64);
    }
}

/// Signal groups at the limit: the oldest tenth goes (counted with the evictions).
fn evict_signal_groups(groups: &mut FastMap<GroupKey, SignalGroup>, max_buckets: usize, evictions: &mut u64) {
    let mut starts: Vec<i64> = groups.values().map(|g| g.start).collect();
    let n = (max_buckets / 10).max(1).min(starts.len());
    let (_, cut, _) = starts.select_nth_unstable(n - 1);
    let cut = *cut;
    let before = groups.len();
    groups.retain(|_, g| g.start > cut);
    let dropped = (before - groups.len()) as u64;
    *evictions += dropped;
    metrics::counter!("sitelog_security_bucket_evictions_total").increment(dropped);
}

fn add_sample(v: &mut Vec<String>, s: &str) {
    if v.len() < MAX_SAMPLES && !v.iter().any(|x| x == s) {
        v.push(s.chars().take(200).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap as Map;

    fn scenarios() -> Arc<Scenarios> {
        Scenarios::new(super::super::scenario::load(&Map::new()).unwrap()).unwrap()
    }

    fn row(ip: &str, t_secs: i64, method: &str, path: &str, status: u16) -> AccessLogRow {
        let ip: Ipv6Addr = format!("::ffff:{ip}").parse().unwrap();
        AccessLogRow {
            ts: 1_790_000_000_000_000 + t_secs * 1_000_000,
            site_host: "kahvila.fi".into(),
            customer_id: "C1".into(),
            site_id: "S1".into(),
            client_ip: ip,
            client_net: ip,
            method: method.into(),
            path: path.into(),
            status,
            user_agent: "Mozilla/5.0".into(),
            request_class: crate::classify::request_class(method, path, "").as_str().into(),
            ..Default::default()
        }
    }

    fn run(rows: &[AccessLogRow]) -> Vec<EventRow> {
        let mut d = Detector::new(scenarios(), 1000);
        let mut out: Map<u64, EventRow> = Map::new();
        for r in rows {
            d.observe(r);
        }
        for e in d.drain().0 {
            out.insert(e.event_id, e);
        }
        out.into_values().collect()
    }

    #[test]
    fn a_brute_force_is_one_event_a_human_login_none() {
        let attack: Vec<_> = (0..60).map(|i| row("185.220.101.47", i * 2, "POST", "/wp-login.php", 200)).collect();
        let ev = run(&attack);
        assert_eq!(ev.len(), 1, "{ev:?}");
        let e = &ev[0];
        assert_eq!(
            (e.scenario.as_str(), e.source.as_str(), e.site_id.as_str()),
            ("wp-login-bruteforce", "185.220.101.47", "S1")
        );
        assert_eq!((e.count, e.first_seen), (60, attack[0].ts), "every attempt counted, from the first");
        // A person: a few logins over a working day.
        let human: Vec<_> = (0..6).map(|i| row("91.152.10.20", i * 600, "POST", "/wp-login.php", 302)).collect();
        assert!(run(&human).is_empty());
    }

    #[test]
    fn the_same_input_gives_the_same_events_in_any_split() {
        let mut rows: Vec<_> = (0..40).map(|i| row("45.155.205.12", i, "POST", "/xmlrpc.php", 200)).collect();
        rows.extend((0..30).map(|i| row("198.51.100.9", 100 + i, "GET", &format!("/p{i}.php"), 404)));
        let whole = run(&rows);
        let mut d = Detector::new(scenarios(), 1000);
        let mut parts: Map<u64, EventRow> = Map::new();
        for chunk in rows.chunks(7) {
            chunk.iter().for_each(|r| d.observe(r));
            for e in d.drain().0 {
                parts.insert(e.event_id, e); // the newest state replaces the older
            }
        }
        assert_eq!(parts.into_values().collect::<Vec<_>>(), whole);
        let mut names: Vec<&str> = whole.iter().map(|e| e.scenario.as_str()).collect();
        names.sort();
        assert_eq!(names, ["http-probing", "xmlrpc-abuse"]);
    }

    #[test]
    fn a_spray_of_addresses_stays_within_the_bucket_limit() {
        let mut d = Detector::new(scenarios(), 5000);
        for i in 0..200_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            d.observe(&row(&ip, (i / 1000) as i64, "POST", "/wp-login.php", 200));
            assert!(d.buckets() <= 2 * 5000, "buckets and signal groups each within the limit");
        }
        assert!(d.evictions > 0);
    }

    #[test]
    fn dispatch_never_skips_a_scenario_that_matches() {
        // Every combination of the fields the dispatch looks at, with paths, queries and agents
        // that each scenario matches: a scenario the full matcher accepts is always a candidate.
        let sc = scenarios();
        let mut scanners = ScannerList::default();
        let paths = [
            "/",
            "/wp-login.php",
            "/xmlrpc.php",
            "/wp-json/wp/v2/users",
            "/wp-content/plugins/x/readme.txt",
            "/wp-config-sample.php",
            "/.env",
            "/DB.SQL",
            "/style.css",
            "/wp-admin/admin-ajax.php",
            "/feed/",
            "/wp-cron.php",
            "/WP-LOGIN.PHP",
        ];
        let (mut checked, mut skipped) = (0, 0);
        for method in ["GET", "POST", "post", "HEAD", "PROPFIND", ""] {
            for status in [0, 200, 301, 400, 403, 404, 410, 499, 500, 599, 600, 999, 1000] {
                for path in paths {
                    for query in ["", "author=2", "rest_route=/x"] {
                        for ua in ["Mozilla/5.0", "sqlmap/1.7", "Googlebot/2.1"] {
                            for (is_bot, class) in [(false, ""), (true, ""), (false, "static"), (false, "mystery")] {
                                let mut r = row("203.0.113.7", 0, method, path, status);
                                r.query = query.into();
                                r.user_agent = ua.into();
                                r.is_bot = is_bot;
                                r.request_class = match class {
                                    "" => crate::classify::request_class(method, path, query).as_str().into(),
                                    c => c.into(),
                                };
                                let mut cand = sc.dispatch.candidates(&r);
                                let scanner = scanners.is_scanner(ua);
                                if !scanner {
                                    cand &= sc.dispatch.not_scanner;
                                }
                                let lower = lower_path(path);
                                for (i, (s, m)) in sc.list.iter().enumerate() {
                                    if m.matches(&r, &lower, scanner) {
                                        checked += 1;
                                        assert!(cand & 1 << i != 0, "{} skipped for {method} {status} {path}", s.name);
                                    } else if cand & 1 << i == 0 {
                                        skipped += 1;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 1000 && skipped > 10_000, "{checked} {skipped}");
        // A browser's page view runs only the scenarios that look at every request.
        let mut page = row("203.0.113.7", 0, "GET", "/tuotteet/", 200);
        page.request_class = "page".into();
        let names: Vec<&str> = (0..sc.list.len())
            .filter(|i| sc.dispatch.candidates(&page) & sc.dispatch.not_scanner & 1 << i != 0)
            .map(|i| sc.list[i].0.name.as_str())
            .collect();
        assert_eq!(names, ["user-enumeration", "sensitive-file-probe", "aggressive-crawl"]);
    }

    #[test]
    fn upper_case_is_found_wherever_it_is() {
        for len in 0..40 {
            for at in 0..len {
                for b in [b'@', b'A', b'M', b'Z', b'[', b'a', b'z', 0x80, 0xc1, 0xda, 0xff, 0] {
                    let mut v = vec![b'x'; len];
                    v[at] = b;
                    assert_eq!(has_upper(&v), v.iter().any(u8::is_ascii_uppercase), "{v:?}");
                }
            }
        }
        assert_eq!(lower_path("/Wp-Login.PHP"), "/wp-login.php");
        assert!(matches!(lower_path("/wp-login.php"), Cow::Borrowed(_)));
    }

    #[test]
    fn near_misses_become_signals_once() {
        let mut d = Detector::new(scenarios(), 1000);
        for i in 0..4 {
            d.observe(&row("203.0.113.5", i * 30, "POST", "/wp-login.php", 200));
        }
        let (events, signals) = d.drain();
        assert!(events.is_empty());
        assert_eq!(signals.len(), 1);
        assert_eq!(signals[0].scenario, "wp-login-bruteforce");
    }
}
