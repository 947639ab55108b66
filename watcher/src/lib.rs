//! Drop folders: watches folders for complete files and hands them out, one by one, ready to
//! ingest.
//!
//! Each folder is watched with inotify (through `notify`) or, for network mounts where inotify
//! sees nothing (SMB, NFS), polled. A file is handed out once it is complete: not under a
//! temporary name, closed after writing (inotify), and with size, mtime and inode unchanged for
//! the folder's settle time. Every folder is scanned at start (files that arrived while the node
//! was down) and rescanned from time to time under inotify too, in case events were lost.
//!
//! This crate only finds files; what happens to them (ingest, removal, retries) is the node's
//! business, reported back through [`DropWatcher::retry_after`] and [`DropWatcher::forget`].

// No unsafe code here: the workspace lint is `deny` only so that one syscall in
// wormfs-parts (`fsutil::writeback_error`) can be allowed.
#![forbid(unsafe_code)]

mod names;
mod scan;
mod tracker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use names::{is_litter, is_temporary};
pub use tracker::Signature;

/// Under inotify, a full rescan this often catches anything the events missed.
const RESCAN_EVERY: Duration = Duration::from_secs(60);

/// How one drop folder is watched.
#[derive(Debug, Clone)]
pub struct FolderSpec {
    /// The folder.
    pub root: PathBuf,
    /// Poll instead of inotify (network mounts).
    pub poll: bool,
    /// How long a file must stay unchanged (and closed) before it is taken.
    pub settle: Duration,
    /// How often a polled folder is scanned.
    pub poll_interval: Duration,
    /// Paths inside the folder that are never taken (a done folder kept inside it).
    pub exclude: Vec<PathBuf>,
}

/// A complete file, ready to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// Index of its folder in the list given to [`DropWatcher::start`].
    pub folder: usize,
    /// Absolute path.
    pub path: PathBuf,
    /// Path relative to the folder.
    pub rel: PathBuf,
    /// Its state when it settled; the taker checks it again before committing and removing.
    pub sig: Signature,
}

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// A drop folder is missing or not a folder.
    #[error("drop folder {0}: {1}")]
    Folder(PathBuf, String),
}

struct Shared {
    tracker: Mutex<tracker::Tracker>,
    rescan: AtomicBool,
    folders: Vec<FolderSpec>,
}

impl Shared {
    fn tracker(&self) -> std::sync::MutexGuard<'_, tracker::Tracker> {
        match self.tracker.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The folder holding `path` (the deepest root), unless the path is excluded.
    fn folder_of(&self, path: &Path) -> Option<usize> {
        self.folders
            .iter()
            .enumerate()
            .filter(|(_, f)| path.starts_with(&f.root) && path != f.root)
            .max_by_key(|(_, f)| f.root.components().count())
            .filter(|(_, f)| !f.exclude.iter().any(|x| path.starts_with(x)))
            .map(|(i, _)| i)
    }

    fn observe_path(&self, path: &Path, now: Instant) {
        let Some(folder) = self.folder_of(path) else {
            return;
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                // A folder moved or created in: its files may predate the watch on it.
                let found = scan::scan(path, &self.folders[folder].exclude);
                let mut t = self.tracker();
                for f in found {
                    t.observe(folder, &f.path, f.sig, now);
                }
            }
            Ok(m) if m.file_type().is_file() => {
                self.tracker().observe(folder, path, Signature::of(&m), now);
            }
            Ok(_) => {}
            Err(_) => {
                let mut t = self.tracker();
                t.forget(path);
                t.forget_under(path);
            }
        }
    }

    fn on_event(&self, ev: Event) {
        let now = Instant::now();
        if ev.need_rescan() {
            self.rescan.store(true, Ordering::Relaxed);
        }
        match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for p in &ev.paths {
                    self.observe_path(p, now);
                    self.tracker().written(p, false, now);
                }
            }
            EventKind::Modify(ModifyKind::Data(_)) | EventKind::Modify(ModifyKind::Any) => {
                for p in &ev.paths {
                    if !self.tracker().contains(p) {
                        self.observe_path(p, now);
                    }
                    self.tracker().written(p, true, now);
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
                let mut t = self.tracker();
                for p in &ev.paths {
                    t.forget(p);
                    t.forget_under(p);
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                if let [from, to] = ev.paths.as_slice() {
                    {
                        let mut t = self.tracker();
                        t.forget(from);
                        t.forget_under(from);
                    }
                    self.observe_path(to, now);
                }
            }
            EventKind::Create(CreateKind::Folder) | EventKind::Create(_) | EventKind::Modify(_) => {
                for p in &ev.paths {
                    self.observe_path(p, now);
                }
            }
            _ => {}
        }
    }
}

/// Watches the drop folders; dropping it (or cancelling its token) stops the watching.
pub struct DropWatcher {
    shared: Arc<Shared>,
    _inotify: Option<notify::RecommendedWatcher>,
}

impl DropWatcher {
    /// Starts watching `folders`; complete files arrive on the returned channel.
    pub fn start(
        folders: Vec<FolderSpec>,
        cancel: CancellationToken,
    ) -> Result<(Self, mpsc::Receiver<Ready>), WatchError> {
        let mut folders = folders;
        for f in &mut folders {
            let meta = std::fs::metadata(&f.root)
                .map_err(|e| WatchError::Folder(f.root.clone(), e.to_string()))?;
            if !meta.is_dir() {
                return Err(WatchError::Folder(f.root.clone(), "not a folder".into()));
            }
            f.root = f
                .root
                .canonicalize()
                .map_err(|e| WatchError::Folder(f.root.clone(), e.to_string()))?;
        }
        let shared = Arc::new(Shared {
            tracker: Mutex::new(tracker::Tracker::default()),
            rescan: AtomicBool::new(false),
            folders,
        });
        let mut inotify = None;
        if shared.folders.iter().any(|f| !f.poll) {
            let s = shared.clone();
            match notify::recommended_watcher(move |res: notify::Result<Event>| match res {
                Ok(ev) => s.on_event(ev),
                Err(e) => {
                    tracing::warn!("drop folder watch error, rescanning: {e}");
                    s.rescan.store(true, Ordering::Relaxed);
                }
            }) {
                Ok(mut w) => {
                    for f in shared.folders.iter().filter(|f| !f.poll) {
                        if let Err(e) = w.watch(&f.root, RecursiveMode::Recursive) {
                            // Without inotify the periodic rescan still finds everything.
                            tracing::warn!(folder = %f.root.display(), "inotify unavailable ({e}); relying on rescans every {}s", RESCAN_EVERY.as_secs());
                        }
                    }
                    inotify = Some(w);
                }
                Err(e) => tracing::warn!(
                    "inotify unavailable ({e}); drop folders are rescanned every {}s",
                    RESCAN_EVERY.as_secs()
                ),
            }
        }
        let (tx, rx) = mpsc::channel(64);
        let s = shared.clone();
        tokio::spawn(async move {
            run(s, tx, cancel).await;
        });
        Ok((
            Self {
                shared,
                _inotify: inotify,
            },
            rx,
        ))
    }

    /// The folders being watched (roots canonicalised).
    pub fn folders(&self) -> &[FolderSpec] {
        &self.shared.folders
    }

    /// Hands `path` out again after `delay` even if it does not change (its ingest failed).
    pub fn retry_after(&self, path: &Path, delay: Duration) {
        self.shared.tracker().retry_at(path, Instant::now() + delay);
    }

    /// How many files are found but not handed out yet (being written or settling).
    pub fn settling(&self) -> usize {
        self.shared.tracker().settling()
    }

    /// Forgets `path` (the node removed or moved it).
    pub fn forget(&self, path: &Path) {
        self.shared.tracker().forget(path);
    }
}

fn tick_interval(folders: &[FolderSpec]) -> Duration {
    folders
        .iter()
        .map(|f| f.settle / 4)
        .min()
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_millis(50), Duration::from_secs(1))
}

#[tracing::instrument(name = "drop_watcher", skip_all)]
async fn run(shared: Arc<Shared>, tx: mpsc::Sender<Ready>, cancel: CancellationToken) {
    let tick = tick_interval(&shared.folders);
    let n = shared.folders.len();
    // Everything is scanned at start: files that arrived while the node was down.
    let mut next_scan = vec![Instant::now(); n];
    loop {
        let now = Instant::now();
        let force = shared.rescan.swap(false, Ordering::Relaxed);
        let due: Vec<usize> = (0..n).filter(|&i| force || now >= next_scan[i]).collect();
        for &i in &due {
            let f = &shared.folders[i];
            next_scan[i] = now
                + if f.poll {
                    f.poll_interval
                } else {
                    RESCAN_EVERY
                };
        }
        let s = shared.clone();
        let ready = tokio::task::spawn_blocking(move || {
            let now = Instant::now();
            for &i in &due {
                let f = &s.folders[i];
                let found = scan::scan(&f.root, &f.exclude);
                let seen: std::collections::HashSet<&Path> =
                    found.iter().map(|x| x.path.as_path()).collect();
                let mut t = s.tracker();
                for gone in t
                    .paths_in(i)
                    .into_iter()
                    .filter(|p| !seen.contains(p.as_path()))
                {
                    t.forget(&gone);
                }
                for x in &found {
                    t.observe(i, &x.path, x.sig, now);
                }
            }
            // Files not yet handed out in their current state are looked at every tick.
            let unsettled = s.tracker().unsettled();
            for (folder, p) in unsettled {
                match scan::stat_file(&p) {
                    Some(sig) => s.tracker().observe(folder, &p, sig, now),
                    None => s.tracker().forget(&p),
                }
            }
            s.tracker().take_ready(now, |i| {
                s.folders.get(i).map_or(Duration::ZERO, |f| f.settle)
            })
        })
        .await
        .unwrap_or_default();
        for c in ready {
            let rel = c
                .path
                .strip_prefix(&shared.folders[c.folder].root)
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let r = Ready {
                folder: c.folder,
                path: c.path,
                rel,
                sig: c.sig,
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                sent = tx.send(r) => if sent.is_err() { return },
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
    }
}
