//! The settle state machine: which files of the drop folders are complete and ready to take.
//!
//! Pure logic with the clock passed in, so it is tested without waiting. A file is ready when
//! its name is not temporary, it is not open for writing (as far as inotify told us), its size,
//! mtime and inode have not changed for the settle time, and it has not been handed out already
//! in that same state (a kept original is not taken twice; a changed one is taken again).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::names;

/// What identifies one version of a file: if any of it changes, the file changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Signature {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Device number.
    pub dev: u64,
}

impl Signature {
    /// The signature in `meta` (from `symlink_metadata`).
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            inode: meta.ino(),
            dev: meta.dev(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    folder: usize,
    sig: Signature,
    last_change: Instant,
    /// inotify saw a write and no close-for-write since.
    writing: bool,
    /// The signature last handed out, if any.
    emitted: Option<Signature>,
    /// Hand the file out again at this time even though it did not change (a failed attempt).
    retry_at: Option<Instant>,
    /// An event said it changed; its state must be read again.
    stale: bool,
}

/// Tracks candidate files across all drop folders.
#[derive(Debug, Default)]
pub struct Tracker {
    entries: HashMap<PathBuf, Entry>,
}

/// A file ready to take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Index of its drop folder.
    pub folder: usize,
    /// Absolute path.
    pub path: PathBuf,
    /// Its state when it settled.
    pub sig: Signature,
}

impl Tracker {
    /// Records the current state of `path` (seen by a scan or a stat).
    pub fn observe(&mut self, folder: usize, path: &Path, sig: Signature, now: Instant) {
        match self.entries.get_mut(path) {
            Some(e) => {
                e.stale = false;
                if e.sig != sig {
                    e.sig = sig;
                    e.last_change = now;
                }
            }
            None => {
                self.entries.insert(
                    path.to_owned(),
                    Entry {
                        folder,
                        sig,
                        last_change: now,
                        writing: false,
                        emitted: None,
                        retry_at: None,
                        stale: false,
                    },
                );
            }
        }
    }

    /// inotify reported a write (`writing = true`) or a close after writing (`false`).
    pub fn written(&mut self, path: &Path, writing: bool, now: Instant) {
        if let Some(e) = self.entries.get_mut(path) {
            e.writing = writing;
            e.last_change = now;
            e.stale = true;
        }
    }

    /// Forgets `path` (removed, renamed away, or moved out by the node).
    pub fn forget(&mut self, path: &Path) {
        self.entries.remove(path);
    }

    /// Forgets every path under `dir`.
    pub fn forget_under(&mut self, dir: &Path) {
        self.entries.retain(|p, _| !p.starts_with(dir));
    }

    /// Whether `path` is tracked.
    pub fn contains(&self, path: &Path) -> bool {
        self.entries.contains_key(path)
    }

    /// Paths tracked in `folder` (for a rescan to find the ones that vanished).
    pub fn paths_in(&self, folder: usize) -> Vec<PathBuf> {
        self.entries
            .iter()
            .filter(|(_, e)| e.folder == folder)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Paths that may still change state (not handed out in their current state), to stat.
    pub fn unsettled(&self) -> Vec<(usize, PathBuf)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.emitted != Some(e.sig) || e.retry_at.is_some() || e.stale)
            .map(|(p, e)| (e.folder, p.clone()))
            .collect()
    }

    /// Files found but not handed out yet in their current state (still being written or
    /// settling), leaving out temporary names and litter.
    pub fn settling(&self) -> usize {
        self.entries
            .iter()
            .filter(|(p, e)| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                e.emitted != Some(e.sig) && !names::is_temporary(name) && !names::is_litter(name)
            })
            .count()
    }

    /// Asks for `path` to be handed out again at `at`, even if it does not change.
    pub fn retry_at(&mut self, path: &Path, at: Instant) {
        if let Some(e) = self.entries.get_mut(path) {
            e.retry_at = Some(at);
        }
    }

    /// Takes the files ready at `now`, given each folder's settle time.
    pub fn take_ready(
        &mut self,
        now: Instant,
        settle: impl Fn(usize) -> Duration,
    ) -> Vec<Candidate> {
        // An AppleDouble `._NAME` waits while its twin `NAME` is still settling.
        let pending_twins: std::collections::HashSet<PathBuf> = self
            .entries
            .iter()
            .filter(|(_, e)| e.emitted != Some(e.sig))
            .map(|(p, _)| p.clone())
            .collect();
        let mut out = Vec::new();
        for (path, e) in &mut self.entries {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if names::is_temporary(name) || names::is_litter(name) {
                continue;
            }
            let retry_due = e.retry_at.is_some_and(|t| now >= t);
            if e.emitted == Some(e.sig) && !retry_due {
                continue;
            }
            if e.writing || now.saturating_duration_since(e.last_change) < settle(e.folder) {
                continue;
            }
            if let Some(twin) = names::apple_double_twin(name) {
                if pending_twins.contains(&path.with_file_name(twin)) {
                    continue;
                }
            }
            e.emitted = Some(e.sig);
            e.retry_at = None;
            out.push(Candidate {
                folder: e.folder,
                path: path.clone(),
                sig: e.sig,
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(size: u64, mtime: i64) -> Signature {
        Signature {
            size,
            mtime_ns: mtime,
            inode: 7,
            dev: 1,
        }
    }

    const SETTLE: Duration = Duration::from_secs(5);

    #[test]
    fn a_file_is_taken_once_after_it_settles() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        let p = Path::new("/drop/a.mkv");
        t.observe(0, p, sig(10, 1), t0);
        assert!(t
            .take_ready(t0 + Duration::from_secs(4), |_| SETTLE)
            .is_empty());
        // It grew: the clock restarts.
        t.observe(0, p, sig(20, 2), t0 + Duration::from_secs(4));
        assert!(t
            .take_ready(t0 + Duration::from_secs(8), |_| SETTLE)
            .is_empty());
        let ready = t.take_ready(t0 + Duration::from_secs(9), |_| SETTLE);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].sig, sig(20, 2));
        // Not again in the same state...
        t.observe(0, p, sig(20, 2), t0 + Duration::from_secs(20));
        assert!(t
            .take_ready(t0 + Duration::from_secs(30), |_| SETTLE)
            .is_empty());
        // ...but again when asked to retry, or when it changes.
        t.retry_at(p, t0 + Duration::from_secs(40));
        assert!(t
            .take_ready(t0 + Duration::from_secs(39), |_| SETTLE)
            .is_empty());
        assert_eq!(
            t.take_ready(t0 + Duration::from_secs(40), |_| SETTLE).len(),
            1
        );
        t.observe(0, p, sig(30, 3), t0 + Duration::from_secs(50));
        assert_eq!(
            t.take_ready(t0 + Duration::from_secs(56), |_| SETTLE).len(),
            1
        );
    }

    #[test]
    fn open_for_write_waits_for_close() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        let p = Path::new("/drop/slow.mkv");
        t.observe(0, p, sig(10, 1), t0);
        t.written(p, true, t0);
        assert!(t
            .take_ready(t0 + Duration::from_secs(60), |_| SETTLE)
            .is_empty());
        t.written(p, false, t0 + Duration::from_secs(61));
        assert!(t
            .take_ready(t0 + Duration::from_secs(62), |_| SETTLE)
            .is_empty());
        assert_eq!(
            t.take_ready(t0 + Duration::from_secs(66), |_| SETTLE).len(),
            1
        );
    }

    #[test]
    fn temporary_names_litter_and_apple_double_twins() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        t.observe(0, Path::new("/d/a.mkv.part"), sig(1, 1), t0);
        t.observe(0, Path::new("/d/.DS_Store"), sig(1, 1), t0);
        t.observe(0, Path::new("/d/._b.mov"), sig(1, 1), t0);
        t.observe(
            0,
            Path::new("/d/b.mov"),
            sig(1, 1),
            t0 + Duration::from_secs(3),
        );
        assert_eq!(t.settling(), 2, "temporaries and litter are not counted");
        let later = t0 + Duration::from_secs(6);
        assert!(
            t.take_ready(later, |_| SETTLE).is_empty(),
            "twin still settling"
        );
        // The twin goes first, its companion on the next pass.
        let names = |r: Vec<Candidate>| r.into_iter().map(|c| c.path).collect::<Vec<_>>();
        let first = names(t.take_ready(t0 + Duration::from_secs(9), |_| SETTLE));
        assert_eq!(first, vec![PathBuf::from("/d/b.mov")]);
        let second = names(t.take_ready(t0 + Duration::from_secs(9), |_| SETTLE));
        assert_eq!(second, vec![PathBuf::from("/d/._b.mov")]);
    }
}
