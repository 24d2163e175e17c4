//! Keyed visitor identities for the usage rollup.
//!
//! `usage_daily` counts unique visitors exactly (`uniqExact`), which means it stores one 64-bit
//! value per visitor, site and day for ten years. If that value were a plain hash of the
//! address (`sipHash64(site, day, ip)`), anyone who can read the table — the billing role, a
//! backup — could test whether an address visited a site on a day, or recover every IPv4
//! visitor by hashing the 2^32 addresses. So the processor computes the value itself, with
//! SipHash-2-4 under a 128-bit secret key that never leaves it: ClickHouse only ever sees the
//! results (`access_log.visitor_ip_key`, `visitor_ip_ua_key`), and the rollup aggregates those.
//!
//! Keys are per Helsinki month (the billing period), independent random values kept as files
//! in `[privacy] visitor_key_dir` (`YYYY-MM.key`, 32 hex digits, mode 0600). A month's key is
//! created on first use; replicas must share the directory (or have the files provisioned
//! identically): creation is atomic (`link(2)` of a finished temporary file), so two replicas
//! racing on the first record of a month end up with the same key. Once a month can no longer
//! receive late records, `sitelog visitor-keys destroy --through YYYY-MM` replaces its key with
//! a tombstone; from then on nobody, operator included, can test an address against that
//! month's stored states, and records that still arrive for it count requests and bytes but no
//! visitors (`visitor_*_key = 0`, which the rollup ignores). A leaked key exposes the months it
//! belongs to, only: with it, an address can be tested against those months' states.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::Ipv6Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate, TimeZone};
use siphasher::sip::SipHasher24;
use std::hash::Hasher;

use crate::store::rows::AccessLogRow;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("visitor key directory {dir}: {source}")]
    Dir { dir: String, source: std::io::Error },
    #[error("visitor key {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("visitor key {path} is not 32 hex digits")]
    Malformed { path: String },
    #[error("'{0}' is not a month: use YYYY-MM")]
    Month(String),
}

/// One period's secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PeriodKey([u8; 16]);

impl std::fmt::Debug for PeriodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeriodKey(…)") // never printed, never logged
    }
}

impl PeriodKey {
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        PeriodKey(bytes)
    }

    fn hasher(&self, domain: &[u8], site_id: &str, day: NaiveDate, ip: &Ipv6Addr) -> SipHasher24 {
        let mut h = SipHasher24::new_with_key(&self.0);
        h.write(domain);
        h.write(&(site_id.len() as u64).to_le_bytes());
        h.write(site_id.as_bytes());
        h.write(&day.num_days_from_ce().to_le_bytes());
        h.write(&ip.octets());
        h
    }

    /// The visitor identity for the `visits_ip` rule (never 0: 0 means "no identity").
    pub fn visitor_ip(&self, site_id: &str, day: NaiveDate, ip: &Ipv6Addr) -> u64 {
        nonzero(self.hasher(b"sitelog/visitor-ip/1", site_id, day, ip).finish())
    }

    /// The visitor identity for the `visits_ip_ua` rule (never 0).
    pub fn visitor_ip_ua(&self, site_id: &str, day: NaiveDate, ip: &Ipv6Addr, user_agent: &str) -> u64 {
        let mut h = self.hasher(b"sitelog/visitor-ip-ua/1", site_id, day, ip);
        h.write(&(user_agent.len() as u64).to_le_bytes());
        h.write(user_agent.as_bytes());
        nonzero(h.finish())
    }
}

fn nonzero(v: u64) -> u64 {
    v.max(1)
}

/// The state of one month's key in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    Active,
    Destroyed,
}

/// The directory of period keys.
pub struct KeyStore {
    dir: PathBuf,
    cache: HashMap<String, Option<PeriodKey>>,
}

/// The default key directory: `$XDG_STATE_HOME/sitelog/visitor-keys`, else
/// `$HOME/.local/state/sitelog/visitor-keys` (production sets an absolute path).
pub fn default_dir() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    state.join("sitelog/visitor-keys")
}

fn check_month(month: &str) -> Result<(), KeyError> {
    month.parse::<crate::billing::Month>().map(|_| ()).map_err(|_| KeyError::Month(month.to_owned()))
}

impl KeyStore {
    /// Opens (creating, mode 0700) the key directory.
    pub fn open(dir: &Path) -> Result<Self, KeyError> {
        let err = |source| KeyError::Dir { dir: dir.display().to_string(), source };
        fs::create_dir_all(dir).map_err(err)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(err)?;
        Ok(KeyStore { dir: dir.to_owned(), cache: HashMap::new() })
    }

    fn key_path(&self, month: &str) -> PathBuf {
        self.dir.join(format!("{month}.key"))
    }

    fn tombstone_path(&self, month: &str) -> PathBuf {
        self.dir.join(format!("{month}.destroyed"))
    }

    /// The key of `month` (`YYYY-MM`), created on first use; `None` once it was destroyed.
    pub fn key(&mut self, month: &str) -> Result<Option<&PeriodKey>, KeyError> {
        if !self.cache.contains_key(month) {
            check_month(month)?;
            let k = self.load_or_create(month)?;
            self.cache.insert(month.to_owned(), k);
        }
        Ok(self.cache.get(month).and_then(Option::as_ref))
    }

    fn load_or_create(&self, month: &str) -> Result<Option<PeriodKey>, KeyError> {
        if self.tombstone_path(month).exists() {
            return Ok(None);
        }
        let path = self.key_path(month);
        let io = |source| KeyError::Io { path: path.display().to_string(), source };
        if !path.exists() {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes).map_err(|e| io(std::io::Error::other(e.to_string())))?;
            // A temporary name no other process or thread uses (never derived from the key).
            let mut nonce = [0u8; 8];
            getrandom::fill(&mut nonce).map_err(|e| io(std::io::Error::other(e.to_string())))?;
            let tmp = self.dir.join(format!(".{month}.{:016x}.tmp", u64::from_le_bytes(nonce)));
            {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode_0600()
                    .open(&tmp)
                    .map_err(|source| KeyError::Io { path: tmp.display().to_string(), source })?;
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                f.write_all(format!("{hex}\n").as_bytes()).and_then(|()| f.sync_all()).map_err(io)?;
            }
            // link(2) fails if another replica (or process) created the key first: theirs wins.
            let linked = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            if let Err(e) = linked {
                if !path.exists() {
                    return Err(io(e));
                }
            }
        }
        let text = fs::read_to_string(&path).map_err(io)?;
        let text = text.trim();
        let malformed = || KeyError::Malformed { path: path.display().to_string() };
        if text.len() != 32 {
            return Err(malformed());
        }
        let mut bytes = [0u8; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| malformed())?;
        }
        Ok(Some(PeriodKey(bytes)))
    }

    /// Every month the store knows, oldest first.
    pub fn list(&self) -> Result<Vec<(String, KeyState)>, KeyError> {
        let err = |source| KeyError::Dir { dir: self.dir.display().to_string(), source };
        let mut out = std::collections::BTreeMap::new();
        for e in fs::read_dir(&self.dir).map_err(err)? {
            let name = e.map_err(err)?.file_name().to_string_lossy().into_owned();
            if let Some(m) = name.strip_suffix(".key") {
                out.entry(m.to_owned()).or_insert(KeyState::Active);
            } else if let Some(m) = name.strip_suffix(".destroyed") {
                out.insert(m.to_owned(), KeyState::Destroyed);
            }
        }
        Ok(out.into_iter().filter(|(m, _)| check_month(m).is_ok()).collect())
    }

    /// Destroys `month`'s key: the tombstone first (so it is never created again), then the
    /// key's bytes are overwritten and the file removed.
    pub fn destroy(&mut self, month: &str) -> Result<(), KeyError> {
        check_month(month)?;
        let tomb = self.tombstone_path(month);
        fs::write(&tomb, b"destroyed\n").map_err(|source| KeyError::Io { path: tomb.display().to_string(), source })?;
        let path = self.key_path(month);
        if path.exists() {
            let io = |source| KeyError::Io { path: path.display().to_string(), source };
            fs::write(&path, [b'0'; 33]).map_err(io)?;
            fs::remove_file(&path).map_err(io)?;
        }
        self.cache.insert(month.to_owned(), None);
        Ok(())
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

/// Fills the visitor identities of rows: the Helsinki day of each request picks its month's
/// key. Most rows of a batch share a day, so the last day's bounds are remembered.
pub struct VisitorStamper {
    store: KeyStore,
    /// `[start, end)` in µs of the last Helsinki day seen, and that day.
    last_day: Option<(i64, i64, NaiveDate)>,
    /// Rows whose month's key was destroyed (no visitor identity given).
    pub without_key: u64,
}

impl VisitorStamper {
    pub fn new(store: KeyStore) -> Self {
        VisitorStamper { store, last_day: None, without_key: 0 }
    }

    fn day_of(&mut self, ts_us: i64) -> NaiveDate {
        if let Some((start, end, day)) = self.last_day {
            if ts_us >= start && ts_us < end {
                return day;
            }
        }
        let hel = chrono_tz::Europe::Helsinki;
        let day = hel.timestamp_micros(ts_us).single().map(|t| t.date_naive()).unwrap_or_default();
        let start_of = |d: NaiveDate| {
            hel.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight")).earliest().map(|t| t.timestamp_micros())
        };
        if let (Some(s), Some(e)) = (start_of(day), day.succ_opt().and_then(start_of)) {
            self.last_day = Some((s, e, day));
        }
        day
    }

    /// Sets `visitor_ip_key` and `visitor_ip_ua_key` of `row` (0 when its month's key was
    /// destroyed).
    pub fn stamp(&mut self, row: &mut AccessLogRow) -> Result<(), KeyError> {
        let day = self.day_of(row.ts);
        let month = day.format("%Y-%m").to_string();
        match self.store.key(&month)? {
            Some(k) => {
                row.visitor_ip_key = k.visitor_ip(&row.site_id, day, &row.client_ip);
                row.visitor_ip_ua_key = k.visitor_ip_ua(&row.site_id, day, &row.client_ip, &row.user_agent);
            }
            None => {
                self.without_key += 1;
                row.visitor_ip_key = 0;
                row.visitor_ip_ua_key = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("sitelog-keys-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn identities_depend_on_key_site_day_and_address() {
        let (a, b) = (PeriodKey([1; 16]), PeriodKey([2; 16]));
        let ip: Ipv6Addr = "::ffff:192.0.2.7".parse().unwrap();
        let other: Ipv6Addr = "::ffff:192.0.2.8".parse().unwrap();
        let v = a.visitor_ip("S1", d("2026-11-02"), &ip);
        assert_eq!(v, a.visitor_ip("S1", d("2026-11-02"), &ip), "deterministic");
        for w in [
            b.visitor_ip("S1", d("2026-11-02"), &ip),
            a.visitor_ip("S2", d("2026-11-02"), &ip),
            a.visitor_ip("S1", d("2026-11-03"), &ip),
            a.visitor_ip("S1", d("2026-11-02"), &other),
            a.visitor_ip_ua("S1", d("2026-11-02"), &ip, ""),
        ] {
            assert_ne!(v, w);
        }
        assert_ne!(a.visitor_ip_ua("S1", d("2026-11-02"), &ip, "A"), a.visitor_ip_ua("S1", d("2026-11-02"), &ip, "B"));
        assert_eq!(format!("{a:?}"), "PeriodKey(…)", "a key is never printed");
    }

    #[test]
    fn keys_are_created_once_shared_and_destroyed_for_good() {
        let dir = tmp("store");
        let mut s1 = KeyStore::open(&dir).unwrap();
        let k1 = s1.key("2026-11").unwrap().cloned().unwrap();
        let mut s2 = KeyStore::open(&dir).unwrap();
        assert_eq!(s2.key("2026-11").unwrap(), Some(&k1), "a second replica reads the same key");
        let k2 = s2.key("2026-12").unwrap().cloned().unwrap();
        assert_ne!(k1, k2, "months have independent keys");
        let mode = fs::metadata(dir.join("2026-11.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        s2.destroy("2026-11").unwrap();
        assert!(!dir.join("2026-11.key").exists());
        assert_eq!(KeyStore::open(&dir).unwrap().key("2026-11").unwrap(), None, "never created again");
        assert_eq!(
            s2.list().unwrap(),
            vec![("2026-11".to_owned(), KeyState::Destroyed), ("2026-12".to_owned(), KeyState::Active)]
        );
        assert!(matches!(s2.key("2026-13"), Err(KeyError::Month(_))));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn racing_creators_agree() {
        let dir = tmp("race");
        let keys: Vec<PeriodKey> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| KeyStore::open(&dir).unwrap().key("2027-01").unwrap().cloned().unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stamper_uses_the_helsinki_day_and_its_month() {
        let dir = tmp("stamp");
        let mut st = VisitorStamper::new(KeyStore::open(&dir).unwrap());
        let mut row =
            AccessLogRow { site_id: "S1".into(), client_ip: "::ffff:192.0.2.7".parse().unwrap(), ..Default::default() };
        // 2026-11-30T22:30Z is 00:30 on 1 December in Helsinki: December's key, day 1 Dec.
        row.ts = 1_796_077_800_000_000;
        st.stamp(&mut row).unwrap();
        let dec = KeyStore::open(&dir).unwrap().key("2026-12").unwrap().cloned().unwrap();
        assert_eq!(row.visitor_ip_key, dec.visitor_ip("S1", d("2026-12-01"), &row.client_ip));
        st.store.destroy("2026-12").unwrap();
        st.stamp(&mut row).unwrap();
        assert_eq!((row.visitor_ip_key, row.visitor_ip_ua_key, st.without_key), (0, 0, 1));
        fs::remove_dir_all(&dir).unwrap();
    }
}
