//! Drop folders: complete files found by `wormfs-watcher` go through the ingest pipeline, and
//! their originals are removed, moved or kept only after the commit.
//!
//! The order is the crash-safety protocol of docs/drop-folders.md ("Crash safety"): the file is read and committed with its
//! source identity (path, size, mtime, inode, device); only then is the original touched, and
//! only if it is still exactly the file that was read. A file whose commit happened but whose
//! original is still there (a crash between the two) is recognised by that identity and only
//! removed. A source that changes while being read is not committed. A file that fails stays
//! where it is, with the reason in the ingest status, and is tried again later.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::sync::CancellationToken;
use wormfs_config::{AfterIngest, ConflictRule, DropFolderConfig, PolicySpec};
use wormfs_watcher::{DropWatcher, FolderSpec, Ready, Signature};

use crate::ingest::IngestRequest;
use crate::store::Store;
use wormfs_meta::command::{Conflict, SourceIdentity};
use wormfs_parts::crash_point::crash_point;
use wormfs_parts::fsutil::now_ms;
use wormfs_parts::policy::Policy;
use wormfs_parts::tree_path::TreePath;

/// Finished items kept in the status list.
const HISTORY: usize = 200;
/// First retry delay of a failed file; doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(30);
/// Longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(30 * 60);
/// Files ingested at once: small files go several at a time (their commits then share Raft
/// entries, and their parts' fsyncs overlap); a file above [`SMALL_FILE_BYTES`] takes every
/// slot, so large files still go one at a time, with the whole disk bandwidth.
pub const PARALLEL_FILES: u32 = 32;
/// The size up to which a file shares the worker with others.
pub const SMALL_FILE_BYTES: u64 = 4 << 20;

/// Where a drop-folder file is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    /// Found complete, waiting for its turn.
    Queued,
    /// Being read and encoded.
    InProgress,
    /// Committed (and the original removed, moved or kept).
    Done,
    /// Not committed; the original is where it was. Tried again later or when it changes.
    Failed,
}

/// One file of a drop folder, as the ingest status shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    /// The original.
    pub source: String,
    /// Its place in the tree.
    pub dest: String,
    /// State.
    pub state: ItemState,
    /// Size in bytes.
    pub size: u64,
    /// Bytes read so far.
    pub bytes_done: u64,
    /// Bytes per second while in progress (or overall, once done).
    pub rate: u64,
    /// When the state last changed (ms since the epoch).
    pub updated_ms: u64,
    /// Why it failed, or what was done instead of an ingest.
    pub note: Option<String>,
    /// Attempts so far.
    pub attempts: u32,
    /// When a failed file is tried again (ms since the epoch), unless it changes before.
    pub next_try_ms: Option<u64>,
}

#[derive(Debug)]
struct Tracked {
    item: Item,
    progress: Arc<AtomicU64>,
    started: Option<Instant>,
}

/// The drop folders' status, shared with the API.
#[derive(Default)]
pub struct IngestStatus {
    items: Mutex<HashMap<String, Tracked>>,
    finished: Mutex<VecDeque<String>>,
    folders: Mutex<Vec<serde_json::Value>>,
    watcher: std::sync::OnceLock<Arc<DropWatcher>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl IngestStatus {
    /// The folders and every item, oldest update first.
    pub fn snapshot(&self) -> serde_json::Value {
        let items = lock(&self.items);
        let mut list: Vec<Item> = items
            .values()
            .map(|t| {
                let mut it = t.item.clone();
                if it.state == ItemState::InProgress {
                    it.bytes_done = t.progress.load(Ordering::Relaxed);
                    let secs = t.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
                    it.rate = if secs > 0.0 {
                        (it.bytes_done as f64 / secs) as u64
                    } else {
                        0
                    };
                }
                it
            })
            .collect();
        list.sort_by(|a, b| {
            a.updated_ms
                .cmp(&b.updated_ms)
                .then(a.source.cmp(&b.source))
        });
        let count = |s: ItemState| list.iter().filter(|i| i.state == s).count();
        let settling = self.watcher.get().map_or(0, |w| w.settling());
        serde_json::json!({
            "folders": *lock(&self.folders),
            "settling": settling,
            "queued": count(ItemState::Queued),
            "in_progress": count(ItemState::InProgress),
            "done": count(ItemState::Done),
            "failed": count(ItemState::Failed),
            "items": list,
        })
    }

    fn set(&self, source: &str, dest: &str, size: u64, state: ItemState, note: Option<String>) {
        let mut items = lock(&self.items);
        let t = items.entry(source.to_owned()).or_insert_with(|| Tracked {
            item: Item {
                source: source.to_owned(),
                dest: dest.to_owned(),
                state,
                size,
                bytes_done: 0,
                rate: 0,
                updated_ms: now_ms(),
                note: None,
                attempts: 0,
                next_try_ms: None,
            },
            progress: Arc::new(AtomicU64::new(0)),
            started: None,
        });
        t.item.dest = dest.to_owned();
        t.item.size = size;
        t.item.state = state;
        t.item.note = note;
        t.item.updated_ms = now_ms();
        t.item.next_try_ms = None;
        match state {
            ItemState::InProgress => {
                t.item.attempts += 1;
                t.progress.store(0, Ordering::Relaxed);
                t.started = Some(Instant::now());
            }
            ItemState::Done | ItemState::Failed => {
                let done = t.progress.load(Ordering::Relaxed);
                t.item.bytes_done = done;
                let secs = t.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
                t.item.rate = if secs > 0.0 {
                    (done as f64 / secs) as u64
                } else {
                    0
                };
            }
            ItemState::Queued => {}
        }
        drop(items);
        if matches!(state, ItemState::Done) {
            let mut fin = lock(&self.finished);
            fin.retain(|s| s != source);
            fin.push_back(source.to_owned());
            while fin.len() > HISTORY {
                if let Some(old) = fin.pop_front() {
                    lock(&self.items).remove(&old);
                }
            }
        }
    }

    fn progress(&self, source: &str) -> Arc<AtomicU64> {
        lock(&self.items)
            .get(source)
            .map(|t| t.progress.clone())
            .unwrap_or_default()
    }

    fn next_try(&self, source: &str, at_ms: u64) {
        if let Some(t) = lock(&self.items).get_mut(source) {
            t.item.next_try_ms = Some(at_ms);
        }
    }

    fn attempts(&self, source: &str) -> u32 {
        lock(&self.items).get(source).map_or(0, |t| t.item.attempts)
    }

    fn forget(&self, source: &str) {
        lock(&self.items).remove(source);
    }
}

/// Starts watching the configured drop folders; the work runs on `tasks` until `stop`.
pub fn start(
    store: Arc<Store>,
    status: Arc<IngestStatus>,
    folders: Vec<DropFolderConfig>,
    stop: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> anyhow::Result<()> {
    if folders.is_empty() {
        return Ok(());
    }
    for f in &folders {
        std::fs::create_dir_all(&f.path)
            .map_err(|e| anyhow::anyhow!("drop folder {}: {e}", f.path.display()))?;
        TreePath::parse(&f.tree).map_err(|e| {
            anyhow::anyhow!("drop folder {}: tree {:?}: {e}", f.path.display(), f.tree)
        })?;
    }
    let specs: Vec<FolderSpec> = folders
        .iter()
        .map(|f| FolderSpec {
            root: f.path.clone(),
            poll: f.poll,
            settle: Duration::from_millis(f.settle_ms),
            poll_interval: Duration::from_millis(f.poll_interval_ms),
            exclude: f.done_dir.iter().cloned().collect(),
        })
        .collect();
    let (watcher, mut ready) = DropWatcher::start(specs, stop.clone())?;
    // The watcher canonicalised the roots; the done folders are compared against those.
    let mut folders = folders;
    for (f, spec) in folders.iter_mut().zip(watcher.folders()) {
        f.path = spec.root.clone();
    }
    *lock(&status.folders) = folders
        .iter()
        .map(|f| {
            serde_json::json!({
                "path": f.path, "tree": f.tree, "after": f.after.to_string(),
                "done_dir": f.done_dir, "watch": if f.poll { "poll" } else { "inotify" },
                "settle_ms": f.settle_ms, "conflict": f.conflict.to_string(),
                "policy": f.policy.map(|p| p.to_string()),
            })
        })
        .collect();
    for f in &folders {
        tracing::info!(folder = %f.path.display(), tree = %f.tree, after = %f.after, watch = if f.poll { "poll" } else { "inotify" }, "watching drop folder");
    }
    let watcher = Arc::new(watcher);
    let _ = status.watcher.set(watcher.clone());
    let worker = Worker {
        store,
        status,
        folders,
        watcher,
    };
    let worker = Arc::new(worker);
    tasks.spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(PARALLEL_FILES as usize));
        let mut running = tokio::task::JoinSet::new();
        // The paths being ingested: a path handed out again meanwhile (it settled anew) waits
        // for the first ingest to end, never runs beside it.
        let busy: Arc<Mutex<std::collections::HashSet<PathBuf>>> = Arc::default();
        loop {
            let r = tokio::select! {
                _ = stop.cancelled() => break,
                r = ready.recv() => r,
            };
            let Some(r) = r else { break };
            if !lock(&busy).insert(r.path.clone()) {
                worker.watcher.retry_after(&r.path, Duration::from_secs(1));
                continue;
            }
            let source = r.path.to_string_lossy().into_owned();
            worker
                .status
                .set(&source, "", r.sig.size, ItemState::Queued, None);
            let need = if r.sig.size <= SMALL_FILE_BYTES {
                1
            } else {
                PARALLEL_FILES
            };
            let slot = tokio::select! {
                _ = stop.cancelled() => break,
                s = slots.clone().acquire_many_owned(need) => match s {
                    Ok(s) => s,
                    Err(_) => break,
                },
            };
            let (w, busy) = (worker.clone(), busy.clone());
            running.spawn(async move {
                let path = r.path.clone();
                w.take(r).await;
                lock(&busy).remove(&path);
                drop(slot);
            });
            while running.try_join_next().is_some() {}
        }
        // Stopping mid-ingest leaves the originals in place and the intents to expire.
        running.abort_all();
        while running.join_next().await.is_some() {}
    });
    Ok(())
}

struct Worker {
    store: Arc<Store>,
    status: Arc<IngestStatus>,
    folders: Vec<DropFolderConfig>,
    watcher: Arc<DropWatcher>,
}

impl Worker {
    #[tracing::instrument(name = "drop_file", skip_all, fields(path = %r.path.display()))]
    async fn take(&self, r: Ready) {
        let folder = &self.folders[r.folder];
        let source = r.path.to_string_lossy().into_owned();
        let dest = match dest_path(folder, &r.rel) {
            Ok(d) => d,
            Err(why) => {
                tracing::warn!("not ingested: {why}");
                self.status
                    .set(&source, "", r.sig.size, ItemState::Failed, Some(why));
                return;
            }
        };
        let dest_s = dest.to_string();
        match self.ingest_one(folder, &r, &source, &dest).await {
            Ok(note) => {
                self.status
                    .set(&source, &dest_s, r.sig.size, ItemState::Done, note);
            }
            Err(Failure::Changed(why)) => {
                // It is being written again: it is handed out anew once it settles.
                tracing::info!("{why}; waiting for it to settle again");
                self.status
                    .set(&source, &dest_s, r.sig.size, ItemState::Queued, Some(why));
            }
            Err(Failure::Vanished) => {
                tracing::info!("gone before it was taken");
                self.status.forget(&source);
            }
            Err(Failure::Failed(why)) => {
                let attempts = self.status.attempts(&source).max(1);
                let delay = RETRY_FIRST
                    .saturating_mul(1 << (attempts - 1).min(10))
                    .min(RETRY_MAX);
                tracing::warn!(
                    retry_in_s = delay.as_secs(),
                    "ingest failed, original kept: {why}"
                );
                self.status.set(
                    &source,
                    &dest_s,
                    r.sig.size,
                    ItemState::Failed,
                    Some(format!(
                        "{why} (original kept; next try in {}s)",
                        delay.as_secs()
                    )),
                );
                self.status
                    .next_try(&source, now_ms().saturating_add(delay.as_millis() as u64));
                self.watcher.retry_after(&r.path, delay);
            }
        }
    }

    /// Ingests one file and disposes of its original. `Ok(note)` once committed.
    async fn ingest_one(
        &self,
        folder: &DropFolderConfig,
        r: &Ready,
        source: &str,
        dest: &TreePath,
    ) -> Result<Option<String>, Failure> {
        let identity = SourceIdentity::DropFolder {
            path: source.to_owned(),
            size: r.sig.size,
            mtime_ns: i128::from(r.sig.mtime_ns),
            inode: r.sig.inode,
            dev: r.sig.dev,
        };
        let current = current_sig(&r.path)?;
        if current != r.sig {
            return Err(Failure::Changed("changed since it settled".into()));
        }
        // Committed before (a crash between the commit and the removal, or a kept original)?
        let committed = self
            .store
            .meta
            .committed_source(&identity)
            .await
            .map_err(|e| Failure::Failed(format!("metadata: {e}")))?;
        let note = if committed.is_some() {
            tracing::info!(dest = %dest, "already ingested (recognised by its source identity)");
            Some("already ingested; original handled".to_owned())
        } else {
            self.status.set(
                source,
                &dest.to_string(),
                r.sig.size,
                ItemState::InProgress,
                None,
            );
            let parent = dest.parent();
            if !parent.is_root() {
                self.store
                    .mkdir(&parent, true)
                    .await
                    .map_err(|e| Failure::Failed(format!("cannot make {parent}: {e}")))?;
            }
            let file = open_nofollow(&r.path).await?;
            let check = file
                .try_clone()
                .await
                .map_err(|e| Failure::Failed(format!("open: {e}")))?
                .into_std()
                .await;
            let reader = CheckedReader {
                inner: file,
                check,
                expect: r.sig,
                read: 0,
                progress: self.status.progress(source),
            };
            let req = IngestRequest {
                path: dest.clone(),
                policy: folder.policy.and_then(|p| match p {
                    PolicySpec::Auto => None,
                    PolicySpec::Ec { k, m } => Some(Policy::Ec { k, m }),
                    PolicySpec::Copies { n } => Some(Policy::Copies { n }),
                }),
                conflict: match folder.conflict {
                    ConflictRule::Rename => Conflict::Rename,
                    ConflictRule::Replace => Conflict::Replace,
                    ConflictRule::Skip => Conflict::Skip,
                },
                source: identity,
                expected_size: Some(r.sig.size),
                retention_checked: false,
            };
            match self.store.ingest(req, reader).await {
                Ok(res) if res.skipped => {
                    // Not stored: the original is the only copy, so it stays where it is.
                    return Ok(Some(format!(
                        "{} exists; skipped by the conflict rule, original left in place",
                        res.path
                    )));
                }
                Ok(res) if res.path != dest.to_string() => Some(format!("stored as {}", res.path)),
                Ok(_) => None,
                Err(e) => {
                    let msg = e.to_string();
                    return Err(if msg.contains(CHANGED) {
                        Failure::Changed(CHANGED.into())
                    } else {
                        Failure::Failed(msg)
                    });
                }
            }
        };
        crash_point("drop-after-commit");
        self.dispose(folder, r).await?;
        Ok(note)
    }

    /// Removes, moves or keeps the original, if it is still exactly the file that was read.
    async fn dispose(&self, folder: &DropFolderConfig, r: &Ready) -> Result<(), Failure> {
        if folder.after == AfterIngest::Keep {
            return Ok(());
        }
        if current_sig(&r.path)? != r.sig {
            // Committed as it was; the new version is taken as a new file once it settles.
            return Err(Failure::Changed(
                "changed after it was committed; the new version will be taken too".into(),
            ));
        }
        let path = r.path.clone();
        let root = folder.path.clone();
        let done = folder.done_dir.as_ref().map(|d| d.join(&r.rel));
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            match done {
                Some(to) => move_file(&path, &to)?,
                None => std::fs::remove_file(&path)?,
            }
            remove_empty_parents(&path, &root);
            Ok(())
        })
        .await
        .map_err(|e| Failure::Failed(format!("dispose task: {e}")))?;
        res.map_err(|e| {
            Failure::Failed(format!(
                "committed, but the original could not be {}: {e}",
                if folder.after == AfterIngest::Move {
                    "moved"
                } else {
                    "removed"
                }
            ))
        })?;
        self.watcher.forget(&r.path);
        Ok(())
    }
}

enum Failure {
    /// The source changed while or after being read.
    Changed(String),
    /// The source is gone.
    Vanished,
    /// Anything else; retried later.
    Failed(String),
}

const CHANGED: &str = "the source changed while being read";

fn current_sig(path: &Path) -> Result<Signature, Failure> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(Signature::of(&m)),
        Ok(_) => Err(Failure::Failed("no longer a regular file".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Failure::Vanished),
        Err(e) => Err(Failure::Failed(format!("stat: {e}"))),
    }
}

async fn open_nofollow(path: &Path) -> Result<tokio::fs::File, Failure> {
    let mut o = tokio::fs::OpenOptions::new();
    o.read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    o.open(path).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Failure::Vanished,
        _ => Failure::Failed(format!("cannot open: {e}")),
    })
}

/// The tree path for `rel` in `folder`: the folder's tree prefix plus the relative path.
fn dest_path(folder: &DropFolderConfig, rel: &Path) -> Result<TreePath, String> {
    let rel = rel.to_str().ok_or_else(|| {
        format!(
            "{} is not valid UTF-8; rename it",
            wormfs_parts::fsutil::escaped(rel)
        )
    })?;
    let full = if folder.tree == "/" {
        format!("/{rel}")
    } else {
        format!("{}/{rel}", folder.tree)
    };
    TreePath::parse(&full).map_err(|e| format!("{full}: {e}"))
}

/// Moves `from` to `to`, making `to`'s folders; across file systems, copies durably first.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let to = free_name(to);
    match std::fs::rename(from, &to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
            let tmp = to.with_extension("wormfs-moving");
            std::fs::copy(from, &tmp)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}

/// `path`, or `name (1).ext`, `name (2).ext`... if it exists (a done folder never overwrites),
/// by the rule the tree renames by: never over 255 bytes, the stem shortened to make room.
fn free_name(path: &Path) -> PathBuf {
    if std::fs::symlink_metadata(path).is_err() {
        return path.to_owned();
    }
    let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("file");
    (1..)
        .map(|i| {
            path.with_file_name(wormfs_parts::tree_path::numbered_name(
                name,
                i,
                wormfs_parts::tree_path::NAME_MAX_BYTES,
            ))
        })
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| path.to_owned())
}

/// Removes the folders left empty under `root` above `file` (OS litter in them goes too).
fn remove_empty_parents(file: &Path, root: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) {
            break;
        }
        let Ok(entries) = std::fs::read_dir(d) else {
            break;
        };
        let names: Vec<_> = entries.flatten().collect();
        let only_litter = names.iter().all(|e| {
            e.file_name()
                .to_str()
                .is_some_and(wormfs_watcher::is_litter)
                && e.file_type().is_ok_and(|t| t.is_file())
        });
        if !only_litter {
            break;
        }
        for e in &names {
            let _ = std::fs::remove_file(e.path());
        }
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Reads the original and, at its end, checks it is still the file that settled: a source
/// that changed while being read fails the read, so the ingest is never committed.
struct CheckedReader {
    inner: tokio::fs::File,
    check: std::fs::File,
    expect: Signature,
    read: u64,
    progress: Arc<AtomicU64>,
}

impl AsyncRead for CheckedReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let me = &mut *self;
        match Pin::new(&mut me.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                me.read += n;
                me.progress.fetch_add(n, Ordering::Relaxed);
                let changed = if n == 0 {
                    // The end: same length read as settled, same size and mtime now.
                    let now = me.check.metadata().map(|m| Signature::of(&m));
                    !matches!(now, Ok(s) if s == me.expect) || me.read != me.expect.size
                } else {
                    me.read > me.expect.size
                };
                if changed {
                    return Poll::Ready(Err(std::io::Error::other(CHANGED)));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::free_name;

    #[test]
    fn a_taken_name_in_the_done_folder_is_numbered_within_the_name_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let long = dir.path().join(format!("{}.mkv", "x".repeat(251)));
        std::fs::write(&long, b"a").expect("write");
        let free = free_name(&long);
        let name = free.file_name().and_then(|n| n.to_str()).expect("name");
        assert_eq!(name, format!("{} (1).mkv", "x".repeat(247)));
        std::fs::write(&free, b"b").expect("a 255-byte name can be created");
        let short = dir.path().join("a.txt");
        assert_eq!(free_name(&short), short);
    }
}
