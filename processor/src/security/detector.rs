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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hasher;
use std::net::Ipv6Addr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher24;

use super::scenario::{DistinctField, Kind, Matcher, ScannerList, Scenario};
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
pub struct Scenarios(Vec<(Scenario, Matcher)>, bool);

impl Scenarios {
    pub fn new(list: Vec<Scenario>) -> Result<Arc<Self>, super::scenario::ScenarioError> {
        let compiled = list
            .into_iter()
            .map(|s| {
                let m = Matcher::new(&s.filter, &s.name)?;
                Ok((s, m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let needs_scanner = compiled.iter().any(|(_, m)| m.needs_scanner());
        Ok(Arc::new(Scenarios(compiled, needs_scanner)))
    }
}

/// (scenario index, address or network, hash of the site key): cheap to hash and copy.
type GroupKey = (u16, Ipv6Addr, u64);

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

#[derive(Default)]
struct Bucket {
    level: f64,
    last_ts: i64,
    started: i64,
    hits: u64,
    window: VecDeque<(i64, u64)>,
    /// `observed` when this bucket last matched.
    last_obs: u64,
    open: Option<OpenEvent>,
}

pub struct Detector {
    scenarios: Arc<Scenarios>,
    buckets: HashMap<GroupKey, Bucket>,
    max_buckets: usize,
    /// The newest event time seen (µs): what "now" is for expiry.
    watermark: i64,
    observed: u64,
    dirty: BTreeMap<u64, GroupKey>,
    /// States of events whose bucket was removed before they were drained.
    finished: Vec<EventRow>,
    signals: Vec<SignalRow>,
    signal_groups: HashMap<GroupKey, SignalGroup>,
    scanners: ScannerList,
    pub evictions: u64,
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

/// FNV-1a: a fast, stable hash of a site key for bucket keys (not an identity that leaves the
/// process; collisions only merge two sites' buckets of one address, which is harmless).
fn fast_hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x100_0000_01b3))
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

impl Detector {
    pub fn new(scenarios: Arc<Scenarios>, max_buckets: usize) -> Self {
        Detector {
            scenarios,
            buckets: HashMap::new(),
            max_buckets: max_buckets.max(16),
            watermark: i64::MIN,
            observed: 0,
            dirty: BTreeMap::new(),
            finished: Vec::new(),
            signals: Vec::new(),
            signal_groups: HashMap::new(),
            scanners: ScannerList::default(),
            evictions: 0,
        }
    }

    pub fn buckets(&self) -> usize {
        self.buckets.len() + self.signal_groups.len()
    }

    /// Feeds one stored row (attributed, classified) to every scenario.
    pub fn observe(&mut self, row: &AccessLogRow) {
        if row.client_ip.is_unspecified() {
            return;
        }
        let t = row.ts;
        self.watermark = self.watermark.max(t);
        self.observed += 1;
        if self.observed.is_multiple_of(EXPIRE_EVERY) {
            self.expire();
        }
        let path: std::borrow::Cow<'_, str> = if row.path.bytes().any(|b| b.is_ascii_uppercase()) {
            row.path.to_ascii_lowercase().into()
        } else {
            row.path.as_str().into()
        };
        let site_key = if row.site_id.is_empty() { &row.site_host } else { &row.site_id };
        let site_hash = fast_hash(site_key.as_bytes());
        let scanner = self.scenarios.1 && self.scanners.is_scanner(&row.user_agent);
        let scenarios = self.scenarios.clone();
        for (i, (s, m)) in scenarios.0.iter().enumerate() {
            if !m.matches(row, &path, scanner) {
                continue;
            }
            let key: GroupKey = (i as u16, row.client_ip, site_hash);
            if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_buckets {
                self.evict();
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
                    while b.window.front().is_some_and(|(ts, _)| *ts < horizon) {
                        b.window.pop_front();
                    }
                    if b.window.is_empty() {
                        b.started = t;
                        b.hits = 0;
                    }
                    b.window.push_back((t, value));
                    if b.window.len() > 4 * s.threshold {
                        b.window.pop_front();
                    }
                    b.hits += 1;
                    b.window.iter().map(|(_, v)| v).collect::<HashSet<_>>().len() >= s.threshold
                }
            };
            b.last_ts = b.last_ts.max(t);
            b.last_obs = self.observed;
            if s.signal_at > 0 {
                // Near-miss signals count per network and site (an attacker spreading thin uses
                // several addresses of one network), apart from the leaky level, which drains
                // between slow attempts.
                let gkey = (i as u16, row.client_net, site_hash);
                if !self.signal_groups.contains_key(&gkey) && self.signal_groups.len() >= self.max_buckets {
                    self.evict_signal_groups();
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
            let b = self.buckets.get_mut(&key).expect("present");
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
                let mut e = OpenEvent {
                    id,
                    first_seen: b.started,
                    last_seen: t,
                    count: b.hits,
                    paths: Vec::new(),
                    agents: Vec::new(),
                    customer_id: row.customer_id.clone(),
                    site_id: row.site_id.clone(),
                    site_host: row.site_host.clone(),
                };
                add_sample(&mut e.paths, &row.path);
                add_sample(&mut e.agents, &row.user_agent);
                metrics::counter!("sitelog_security_events_total", "scenario" => s.name.clone()).increment(1);
                b.open = Some(e);
                self.dirty.insert(id, key);
            }
        }
    }

    /// The events changed since the last call (their current state) and the new signals.
    pub fn drain(&mut self) -> (Vec<EventRow>, Vec<SignalRow>) {
        let mut events = std::mem::take(&mut self.finished);
        for (_, key) in std::mem::take(&mut self.dirty) {
            if let Some(row) = self.buckets.get(&key).and_then(|b| self.event_row(&key, b)) {
                events.push(row);
            }
        }
        (events, std::mem::take(&mut self.signals))
    }

    fn event_row(&self, key: &GroupKey, b: &Bucket) -> Option<EventRow> {
        let e = b.open.as_ref()?;
        let s = &self.scenarios.0[key.0 as usize].0;
        Some(EventRow {
            event_id: e.id,
            scenario: s.name.clone(),
            severity: s.severity.clone(),
            source: source_text(&key.1),
            source_ip: key.1,
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

    /// Removes a bucket; an event of it not drained yet goes out with the next drain.
    fn remove_bucket(&mut self, key: &GroupKey) {
        if let Some(b) = self.buckets.remove(key) {
            if let Some(id) = b.open.as_ref().map(|e| e.id) {
                if self.dirty.remove(&id).is_some() {
                    if let Some(row) = self.event_row(key, &b) {
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
    fn expire(&mut self) {
        let (now, seen) = (self.watermark, self.observed);
        let scenarios = &self.scenarios.0;
        let expired: Vec<GroupKey> = self
            .buckets
            .iter()
            .filter(|(k, b)| {
                let s = &scenarios[k.0 as usize].0;
                let drain = match s.kind {
                    Kind::Leaky => s.capacity * s.leak_secs,
                    Kind::Distinct => s.window_secs as f64,
                };
                let horizon = ((drain + s.cooldown_secs as f64) * US) as i64;
                b.last_ts + horizon < now && seen - b.last_obs > IDLE_OBSERVATIONS
            })
            .map(|(k, _)| *k)
            .collect();
        for k in &expired {
            self.remove_bucket(k);
        }
        self.signal_groups.retain(|_, g| g.start + SIGNAL_WINDOW_US >= now || seen - g.last_obs <= IDLE_OBSERVATIONS);
        metrics::gauge!("sitelog_security_buckets").set(self.buckets.len() as f64);
    }

    /// Signal groups at the limit: the oldest tenth goes (counted with the evictions).
    fn evict_signal_groups(&mut self) {
        let mut starts: Vec<i64> = self.signal_groups.values().map(|g| g.start).collect();
        let n = (self.max_buckets / 10).max(1).min(starts.len());
        let (_, cut, _) = starts.select_nth_unstable(n - 1);
        let cut = *cut;
        let before = self.signal_groups.len();
        self.signal_groups.retain(|_, g| g.start > cut);
        let dropped = (before - self.signal_groups.len()) as u64;
        self.evictions += dropped;
        metrics::counter!("sitelog_security_bucket_evictions_total").increment(dropped);
    }

    /// At the limit: the least recently seen tenth goes (O(n) selection, once per tenth).
    fn evict(&mut self) {
        let mut by_age: Vec<(i64, GroupKey)> = self.buckets.iter().map(|(k, b)| (b.last_ts, *k)).collect();
        let n = (self.max_buckets / 10).max(1).min(by_age.len());
        by_age.select_nth_unstable(n - 1);
        for (_, k) in by_age.into_iter().take(n) {
            self.remove_bucket(&k);
        }
        self.evictions += n as u64;
        metrics::counter!("sitelog_security_bucket_evictions_total").increment(n as u64);
    }
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
