//! Group sync: many small parts made durable by one `syncfs(2)` of their filesystem instead of
//! an `fsync` of each file and of each file's folder (docs/performance.md, "Many small files").
//!
//! A writer that needs its files durable calls [`SyncGroup::sync`] after writing and renaming
//! them. If no sync is running it runs one itself; if one is running it waits for it to end and
//! then for the next one (which it may run), since the running one may have started before its
//! writes. When `sync` returns `Ok`, every write and rename the caller made before calling it
//! is on stable storage: `syncfs` writes back the filesystem's dirty data and metadata (the
//! files, their folders' entries) and flushes the device's cache, and reports writeback errors
//! (Linux 5.8 and later). A failed sync fails every writer that was waiting for it. The kernel
//! reports a writeback error once per open descriptor, and `syncfs` only those since its own
//! descriptor was opened, so the part writer also asks its own descriptor (open since before
//! its write) after the group sync (`fsutil::writeback_error`: no second flush of the device),
//! and fails if that part's own writeback failed, whoever wrote it back.
//!
//! One group per filesystem (by device number), shared by the disks on it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// Parts up to this many bytes of data are made durable by a group sync; larger ones by their
/// own `fsync` (a `syncfs` would also wait for every other dirty byte of the filesystem).
pub const GROUP_SYNC_UP_TO: u64 = 256 << 10;

/// The syncs of one filesystem.
#[derive(Default)]
pub struct SyncGroup {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Default)]
struct State {
    /// Whether a sync is running now.
    running: bool,
    /// Syncs started so far (the running one, if any, is number `started`).
    started: u64,
    /// The last sync that ended.
    finished: u64,
    /// The last sync that failed, and why.
    failed: Option<(u64, String)>,
}

/// The group of the filesystem with device number `dev`.
pub fn for_device(dev: u64) -> Arc<SyncGroup> {
    static GROUPS: OnceLock<Mutex<HashMap<u64, Arc<SyncGroup>>>> = OnceLock::new();
    let groups = GROUPS.get_or_init(Default::default);
    let mut g = groups.lock().unwrap_or_else(|p| p.into_inner());
    g.entry(dev).or_default().clone()
}

impl SyncGroup {
    /// Returns once everything written on the filesystem of `root` before the call is durable
    /// (see the module's documentation). Blocking.
    pub fn sync(&self, root: &Path) -> std::io::Result<()> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // The first sync to start after this call covers this caller's writes.
        let need = s.started + 1;
        loop {
            if s.finished >= need {
                return match &s.failed {
                    Some((round, why)) if *round >= need => {
                        Err(std::io::Error::other(format!("syncfs: {why}")))
                    }
                    _ => Ok(()),
                };
            }
            if !s.running {
                s.running = true;
                s.started += 1;
                let round = s.started;
                drop(s);
                let r = syncfs(root);
                s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                s.running = false;
                s.finished = round;
                if let Err(e) = &r {
                    s.failed = Some((round, e.to_string()));
                }
                self.done.notify_all();
                continue;
            }
            s = self.done.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl SyncGroup {
    /// Syncs started so far (tests count them).
    #[cfg(test)]
    pub(crate) fn syncs_started(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).started
    }
}

fn syncfs(root: &Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(root)?;
    rustix::fs::syncfs(&dir).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_callers_share_syncs_and_all_return() {
        let dir = tempfile::tempdir().unwrap();
        let g = Arc::new(SyncGroup::default());
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let g = g.clone();
                let root = dir.path().to_owned();
                std::thread::spawn(move || {
                    std::fs::write(root.join(format!("f{i}")), b"x").unwrap();
                    g.sync(&root).unwrap();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let s = g.state.lock().unwrap();
        assert!(!s.running);
        assert!(s.started >= 1 && s.started <= 16, "{}", s.started);
        assert_eq!(s.finished, s.started);
    }

    #[test]
    fn a_failed_sync_fails_its_callers_and_not_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let g = SyncGroup::default();
        let gone = dir.path().join("missing");
        assert!(g.sync(&gone).is_err(), "a sync that cannot run is an error");
        g.sync(dir.path()).unwrap();
        assert!(for_device(1).sync(dir.path()).is_ok());
    }
}
