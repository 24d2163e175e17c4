//! inotify (through `notify`) as a wake-up call: a change in a watched directory makes the
//! collector poll its files now instead of at the next poll interval. Polling stays the
//! source of truth, so a missed or overflowed event costs latency, never data; without
//! inotify (limits, unsupported file systems) the collector simply polls.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode, Watcher};
use tracing::{debug, warn};

use super::sink::{Event, EventSender};

pub struct DirWatcher {
    inner: notify::RecommendedWatcher,
    watched: HashSet<PathBuf>,
    /// At most one wake-up waits in the channel at a time.
    armed: Arc<AtomicBool>,
}

impl DirWatcher {
    /// `None` (with a warning) when inotify is unavailable: the collector polls.
    pub fn new(events: EventSender) -> Option<Self> {
        let armed = Arc::new(AtomicBool::new(true));
        let flag = armed.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            // Files appearing, vanishing or renamed: rescan the globs now, not at the next
            // scan interval (a file must be open before it is rotated away to be followed).
            let structural =
                matches!(ev.kind, EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)));
            if structural {
                let _ = events.send(Event::Rescan);
            } else if flag.swap(false, Ordering::AcqRel) {
                let _ = events.send(Event::Wake);
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(inner) => Some(DirWatcher { inner, watched: HashSet::new(), armed }),
            Err(e) => {
                warn!(error = %e, "inotify unavailable; polling only");
                None
            }
        }
    }

    /// Allows the next event to wake the collector again.
    pub fn rearm(&self) {
        self.armed.store(true, Ordering::Release);
    }

    pub fn watch(&mut self, dir: &Path) {
        if self.watched.contains(dir) || !dir.is_dir() {
            return;
        }
        match self.inner.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watched.insert(dir.to_path_buf());
            }
            Err(e) => debug!(dir = %dir.display(), error = %e, "cannot watch; polling it"),
        }
    }
}
