//! Durable collector state: how far each file (by fingerprint) is acknowledged by Kafka.
//!
//! Two JSON files per role in the checkpoint directory, both replaced atomically (write a
//! temp file, fsync, rename, fsync the directory):
//! - `<role>-checkpoints.json`: files in progress, rewritten every checkpoint interval;
//! - `<role>-completed.json`: files read to the end and fully acknowledged, rewritten only
//!   when a file completes (rarely), so the hot file stays small.
//!
//! The role is `collect` for the tailing collector (`--once` included) and `backfill` for
//! `--backfill`, each guarded by its own lock file, so a backfill can run beside the
//! service. Each role reads the other's files (read-only) to skip what was already sent.
//!
//! Invariant: an entry's `offset` is never ahead of what Kafka acknowledged: every line
//! before it was delivered (or was empty). Lines after it may have been delivered too
//! (the unacknowledged window); re-sending them after a crash yields duplicates with the
//! same `(fingerprint, offset)` identity, which the processor drops.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint directory {dir}: {source}")]
    Dir { dir: PathBuf, source: io::Error },
    #[error("checkpoint directory {dir} is in use by another `sitelog collect` ({role}); stop it or use another checkpoint_dir")]
    Locked { dir: PathBuf, role: &'static str },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a sitelog checkpoint file: {msg}")]
    Corrupt { path: PathBuf, msg: String },
    #[error("{path}: checkpoint format version {found} is newer than this build ({FORMAT_VERSION})")]
    TooNew { path: PathBuf, found: u32 },
}

/// Who owns a set of state files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Collect,
    Backfill,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Collect => "collect",
            Role::Backfill => "backfill",
        }
    }

    fn other(self) -> Role {
        match self {
            Role::Collect => Role::Backfill,
            Role::Backfill => Role::Collect,
        }
    }
}

/// A file in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveEntry {
    #[serde(with = "fp_hex")]
    pub fingerprint: u64,
    /// Source name from the config (which parser and host rule apply).
    pub source: String,
    /// The `{site}` capture of the path, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Last known path (a hint to find the file again after a rotation).
    pub path: PathBuf,
    pub dev: u64,
    pub inode: u64,
    /// Every line before this byte offset is acknowledged.
    pub offset: u64,
    /// Number of lines before `offset`.
    pub line: u64,
    /// Last seen size of the file (for the lag metric and for reading the file).
    pub size: u64,
    /// Unix seconds of the last change of this entry.
    pub updated: u64,
}

/// A file read to its end, every line acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneEntry {
    #[serde(with = "fp_hex")]
    pub fingerprint: u64,
    pub path: PathBuf,
    /// Bytes (decompressed) and lines in the file.
    pub offset: u64,
    pub line: u64,
    pub finished: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ActiveFile {
    version: u32,
    written: u64,
    files: Vec<ActiveEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CompletedFile {
    version: u32,
    written: u64,
    files: Vec<DoneEntry>,
}

/// What the state says about a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    New,
    Active(ActiveEntry),
    Completed(DoneEntry),
    /// In progress in the other role's state: that process owns it.
    OwnedElsewhere,
}

/// The loaded state of one role, plus a read-only view of the other role's.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    role: Role,
    _lock: File,
    active: BTreeMap<u64, ActiveEntry>,
    completed: BTreeMap<u64, DoneEntry>,
    other_active: HashMap<u64, ()>,
    other_completed: HashMap<u64, DoneEntry>,
    active_dirty: bool,
    completed_dirty: bool,
}

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl CheckpointStore {
    /// Creates the directory if needed, takes the role's lock and loads the state.
    pub fn open(dir: &Path, role: Role) -> Result<Self, CheckpointError> {
        fs::create_dir_all(dir).map_err(|source| CheckpointError::Dir { dir: dir.into(), source })?;
        let lock_path = dir.join(format!("{}.lock", role.name()));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| CheckpointError::Io { path: lock_path.clone(), source })?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(CheckpointError::Locked { dir: dir.into(), role: role.name() });
        }
        let mut store = CheckpointStore {
            dir: dir.into(),
            role,
            _lock: lock,
            active: BTreeMap::new(),
            completed: BTreeMap::new(),
            other_active: HashMap::new(),
            other_completed: HashMap::new(),
            active_dirty: false,
            completed_dirty: false,
        };
        for e in read_active(&store.active_path(role))? {
            store.active.insert(e.fingerprint, e);
        }
        for e in read_completed(&store.completed_path(role))? {
            store.completed.insert(e.fingerprint, e);
        }
        for e in read_active(&store.active_path(role.other()))? {
            store.other_active.insert(e.fingerprint, ());
        }
        for e in read_completed(&store.completed_path(role.other()))? {
            store.other_completed.insert(e.fingerprint, e);
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn active_path(&self, role: Role) -> PathBuf {
        self.dir.join(format!("{}-checkpoints.json", role.name()))
    }

    fn completed_path(&self, role: Role) -> PathBuf {
        self.dir.join(format!("{}-completed.json", role.name()))
    }

    pub fn lookup(&self, fp: u64) -> Lookup {
        if let Some(e) = self.completed.get(&fp).or_else(|| self.other_completed.get(&fp)) {
            return Lookup::Completed(e.clone());
        }
        if let Some(e) = self.active.get(&fp) {
            return Lookup::Active(e.clone());
        }
        if self.other_active.contains_key(&fp) {
            return Lookup::OwnedElsewhere;
        }
        Lookup::New
    }

    /// Entries in progress (as loaded or last updated).
    pub fn active(&self) -> impl Iterator<Item = &ActiveEntry> {
        self.active.values()
    }

    /// Records progress of a file; marks the state dirty only on a change.
    pub fn update(&mut self, mut e: ActiveEntry) {
        if let Some(old) = self.active.get(&e.fingerprint) {
            let same = old.offset == e.offset
                && old.size == e.size
                && old.path == e.path
                && old.inode == e.inode
                && old.dev == e.dev;
            if same {
                return;
            }
        }
        e.updated = now_unix();
        self.active.insert(e.fingerprint, e);
        self.active_dirty = true;
    }

    /// A file is finished: every line acknowledged.
    pub fn complete(&mut self, e: DoneEntry) {
        self.active.remove(&e.fingerprint);
        self.completed.insert(e.fingerprint, e);
        self.active_dirty = true;
        self.completed_dirty = true;
    }

    /// Drops entries older than the retention: files that vanished without being found
    /// again (`tracked` says which fingerprints are still being read), files finished long ago.
    pub fn prune(&mut self, retention_days: u64, tracked: impl Fn(u64) -> bool) {
        let cutoff = now_unix().saturating_sub(retention_days.saturating_mul(86_400));
        let before = (self.active.len(), self.completed.len());
        self.active.retain(|fp, e| e.updated >= cutoff || tracked(*fp));
        self.completed.retain(|_, e| e.finished >= cutoff);
        self.active_dirty |= before.0 != self.active.len();
        self.completed_dirty |= before.1 != self.completed.len();
    }

    pub fn is_dirty(&self) -> bool {
        self.active_dirty || self.completed_dirty
    }

    /// Writes whatever changed. Completed first: a file listed in both is complete.
    pub fn flush(&mut self) -> Result<(), CheckpointError> {
        if self.completed_dirty {
            let body = CompletedFile {
                version: FORMAT_VERSION,
                written: now_unix(),
                files: self.completed.values().cloned().collect(),
            };
            write_atomic(&self.completed_path(self.role), &to_json(&body))?;
            self.completed_dirty = false;
        }
        if self.active_dirty {
            let body = ActiveFile {
                version: FORMAT_VERSION,
                written: now_unix(),
                files: self.active.values().cloned().collect(),
            };
            write_atomic(&self.active_path(self.role), &to_json(&body))?;
            self.active_dirty = false;
        }
        Ok(())
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing plain structs of strings and integers cannot fail.
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

fn read_active(path: &Path) -> Result<Vec<ActiveEntry>, CheckpointError> {
    let Some(bytes) = read_optional(path)? else {
        return Ok(Vec::new());
    };
    let f: ActiveFile = parse(path, &bytes)?;
    Ok(f.files)
}

fn read_completed(path: &Path) -> Result<Vec<DoneEntry>, CheckpointError> {
    let Some(bytes) = read_optional(path)? else {
        return Ok(Vec::new());
    };
    let f: CompletedFile = parse(path, &bytes)?;
    Ok(f.files)
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, CheckpointError> {
    #[derive(Deserialize)]
    struct Probe {
        version: u32,
    }
    let probe: Probe = serde_json::from_slice(bytes)
        .map_err(|e| CheckpointError::Corrupt { path: path.into(), msg: e.to_string() })?;
    if probe.version > FORMAT_VERSION {
        return Err(CheckpointError::TooNew { path: path.into(), found: probe.version });
    }
    serde_json::from_slice(bytes).map_err(|e| CheckpointError::Corrupt { path: path.into(), msg: e.to_string() })
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, CheckpointError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CheckpointError::Io { path: path.into(), source }),
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io_err = |source| CheckpointError::Io { path: path.into(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp).map_err(io_err)?;
        f.write_all(bytes).map_err(io_err)?;
        f.sync_all().map_err(io_err)?;
    }
    fs::rename(&tmp, path).map_err(io_err)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    Ok(())
}

mod fp_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(fp: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::super::fingerprint::hex(*fp))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        u64::from_str_radix(&s, 16).map_err(|_| serde::de::Error::custom(format!("bad fingerprint {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sitelog-ckpt-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn entry(fp: u64, offset: u64) -> ActiveEntry {
        ActiveEntry {
            fingerprint: fp,
            source: "s".into(),
            site: Some("a.fi".into()),
            path: "/x/access.log".into(),
            dev: 1,
            inode: 2,
            offset,
            line: offset / 10,
            size: offset,
            updated: 0,
        }
    }

    #[test]
    fn round_trip_lock_and_roles() {
        let dir = tmpdir("rt");
        {
            let mut s = CheckpointStore::open(&dir, Role::Collect).unwrap();
            assert!(matches!(CheckpointStore::open(&dir, Role::Collect), Err(CheckpointError::Locked { .. })));
            s.update(entry(0xabc, 100));
            s.update(entry(0xdef, 50));
            s.complete(DoneEntry {
                fingerprint: 0xdef,
                path: "/x/a.1".into(),
                offset: 70,
                line: 7,
                finished: now_unix(),
            });
            assert!(s.is_dirty());
            s.flush().unwrap();
            assert!(!s.is_dirty());
            s.update(entry(0xabc, 100));
            assert!(!s.is_dirty(), "an unchanged entry is not rewritten");
        }
        let s = CheckpointStore::open(&dir, Role::Collect).unwrap();
        assert!(matches!(s.lookup(0xabc), Lookup::Active(e) if e.offset == 100 && e.site.as_deref() == Some("a.fi")));
        assert!(matches!(s.lookup(0xdef), Lookup::Completed(e) if e.offset == 70));
        assert_eq!(s.lookup(0x1), Lookup::New);
        let b = CheckpointStore::open(&dir, Role::Backfill).unwrap();
        assert_eq!(b.lookup(0xabc), Lookup::OwnedElsewhere);
        assert!(matches!(b.lookup(0xdef), Lookup::Completed(_)));
        let text = fs::read_to_string(dir.join("collect-checkpoints.json")).unwrap();
        assert!(text.contains("\"fingerprint\": \"0000000000000abc\""), "{text}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_newer_and_corrupt_files() {
        let dir = tmpdir("bad");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("collect-checkpoints.json"), r#"{"version": 9, "written": 0, "files": []}"#).unwrap();
        assert!(matches!(CheckpointStore::open(&dir, Role::Collect), Err(CheckpointError::TooNew { found: 9, .. })));
        fs::write(dir.join("collect-checkpoints.json"), "{").unwrap();
        assert!(matches!(CheckpointStore::open(&dir, Role::Collect), Err(CheckpointError::Corrupt { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn prune_drops_old_entries() {
        let dir = tmpdir("prune");
        let mut s = CheckpointStore::open(&dir, Role::Collect).unwrap();
        s.complete(DoneEntry { fingerprint: 1, path: "/a".into(), offset: 1, line: 1, finished: 0 });
        s.complete(DoneEntry { fingerprint: 2, path: "/b".into(), offset: 1, line: 1, finished: now_unix() });
        s.prune(30, |_| false);
        assert_eq!(s.lookup(1), Lookup::New);
        assert!(matches!(s.lookup(2), Lookup::Completed(_)));
        fs::remove_dir_all(&dir).unwrap();
    }
}
