//! Metadata backups on the data disks: every `meta.backup_interval_ms` (and after
//! `meta.backup_after_changes` applied entries) each machine writes a consistent copy of the
//! namespace to a few of its own disks, keeping the last `meta.backup_keep` on each. With the
//! disks alone, `wormfs recover --from-disks` starts from the newest one that verifies.
//!
//! How many disks: enough that the cluster holds at least `m + 1` copies, `m` being the
//! widest redundancy of any stored file: each of the `M` machines with disks writes to
//! `ceil((m + 1) / M)` of its own (at least one), on different filesystems first.
//!
//! Disks that may sleep (docs/operations.md): the backups wake only those disks, the same
//! ones each time (chosen in disk id order), at most once per `meta.backup_interval_ms` and
//! only when the metadata changed (or after `meta.backup_after_changes`); an interval of 0
//! turns them off. At start the task lists each disk's `meta-backups/` once.

pub mod format;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use format::BackupHeader;
use wormfs_config::MetaConfig;
use wormfs_meta::command::EventSeverity;
use wormfs_parts::disk::LocalDisk;
use wormfs_parts::fsutil::{now_ms, sync_dir};

/// What this machine's last backup was.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStatus {
    /// When the last backup was written (ms since the epoch), if any since this node started.
    pub last_ms: Option<u64>,
    /// The Raft log index it holds.
    pub log_index: Option<u64>,
    /// The disks it was written to.
    pub disks: Vec<String>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// `meta.backup_interval_ms` (0: backups are off).
    pub interval_ms: u64,
    /// Entries applied since the last backup.
    pub changes_since: u64,
}

/// The backups' settings and this node's last result.
pub struct MetaBackups {
    cfg: MetaConfig,
    status: std::sync::Mutex<BackupStatus>,
    /// Serializes backups (the periodic one and `wormfs admin backup`).
    running: tokio::sync::Mutex<()>,
    /// The newest event when this machine last wrote a backup: the machines' backup events
    /// after it are metadata changes no backup needs to be written for (else three machines
    /// would keep each other writing backups on an idle cluster).
    events_mark: std::sync::atomic::AtomicU64,
    /// Whether the last attempt failed (a failure is an event once, until one succeeds).
    failing: std::sync::atomic::AtomicBool,
}

/// Events that do not count as changes a backup is due for.
const QUIET_EVENTS: [&str; 2] = ["backup_written", "backup_failed"];

impl MetaBackups {
    /// With the node's `[meta]` settings.
    pub fn new(cfg: MetaConfig) -> Self {
        Self {
            status: std::sync::Mutex::new(BackupStatus {
                interval_ms: cfg.backup_interval_ms,
                ..BackupStatus::default()
            }),
            cfg,
            running: tokio::sync::Mutex::new(()),
            events_mark: std::sync::atomic::AtomicU64::new(0),
            failing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut BackupStatus) -> R) -> R {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The last result.
    pub fn status(&self) -> BackupStatus {
        self.with(|s| s.clone())
    }
}

/// The last result, with the changes applied since it counted now.
pub async fn status_now(store: &Store) -> BackupStatus {
    let mut s = store.backups.status();
    if let (Ok(Some(p)), Some(i)) = (store.meta.applied_point().await, s.log_index) {
        s.changes_since = changes_since(store, p.index, i).await;
    }
    s
}

/// Metadata changes applied since the backup of `backup_index`, up to `applied`: the log
/// entries, less the machines' backup events since this machine's last backup.
async fn changes_since(store: &Store, applied: u64, backup_index: u64) -> u64 {
    let mark = store
        .backups
        .events_mark
        .load(std::sync::atomic::Ordering::Relaxed);
    let quiet = store
        .meta
        .count_events_after(mark, &QUIET_EVENTS)
        .await
        .unwrap_or(0);
    applied.saturating_sub(backup_index).saturating_sub(quiet)
}

/// Remembers the newest event now as the mark of [`changes_since`].
async fn set_events_mark(store: &Store) {
    let newest = match store.meta.events(1, None, None).await {
        Ok(e) => e.first().map_or(0, |e| e.id),
        Err(_) => 0,
    };
    store
        .backups
        .events_mark
        .store(newest, std::sync::atomic::Ordering::Relaxed);
}

/// Writes a backup now; returns the new status.
pub async fn backup_now(store: &Arc<Store>) -> anyhow::Result<BackupStatus> {
    let backups = &store.backups;
    let _one = backups.running.lock().await;
    let result = write_backup(store).await;
    backups.with(|s| {
        match &result {
            Ok((header, disks)) => {
                s.last_ms = Some(header.created_ms);
                s.log_index = Some(header.log_index);
                s.disks = disks.clone();
                s.last_error = None;
                s.changes_since = 0;
            }
            Err(e) => s.last_error = Some(format!("{e:#}")),
        }
        s.clone()
    });
    set_events_mark(store).await;
    let failed_before = backups
        .failing
        .swap(result.is_err(), std::sync::atomic::Ordering::Relaxed);
    match result {
        Ok((h, disks)) => {
            tracing::info!(
                log_index = h.log_index,
                bytes = h.db_len,
                disks = ?disks,
                "metadata backup written"
            );
            let msg = format!(
                "machine {} wrote a metadata backup (log index {}) to {} disk(s)",
                store.node_id,
                h.log_index,
                disks.len()
            );
            let node = Some(store.node_id);
            crate::events::record(store, "backup_written", EventSeverity::Info, node, msg).await;
            Ok(backups.status())
        }
        Err(e) => {
            tracing::warn!("metadata backup failed: {e:#}");
            if !failed_before {
                let msg = format!(
                    "machine {} could not write a metadata backup: {e:#}",
                    store.node_id
                );
                let node = Some(store.node_id);
                crate::events::record(store, "backup_failed", EventSeverity::Warning, node, msg)
                    .await;
            }
            Err(e)
        }
    }
}

async fn write_backup(store: &Arc<Store>) -> anyhow::Result<(BackupHeader, Vec<String>)> {
    let meta_dir = store
        .meta
        .path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let tmp = meta_dir.join(format!("backup-{:016x}.tmp", rand::random::<u64>()));
    // Stamped before the copy: a part written before this time belongs to a file the copy
    // holds, or to an ingest it holds as under way (recovery relies on it).
    let created_ms = now_ms();
    let point = store.meta.copy_into(&tmp).await;
    let result = async {
        let point = point?.context("nothing applied yet: no namespace to back up")?;
        let disks = chosen_disks(store).await?;
        anyhow::ensure!(!disks.is_empty(), "no readable disk on this machine");
        let header_disks: Vec<String> = disks.iter().map(|d| d.id.to_string()).collect();
        let (cluster_id, node_id, keep) = (
            store.cluster_id,
            store.node_id,
            store.backups.cfg.backup_keep,
        );
        let t = tmp.clone();
        let header = tokio::task::spawn_blocking(move || -> anyhow::Result<BackupHeader> {
            let (db_blake3, db_len) = format::hash_file(&t)?;
            let header = BackupHeader {
                cluster_id,
                node_id,
                log_index: point.index,
                log_term: point.term,
                created_ms,
                db_len,
                db_blake3,
            };
            let mut written = 0;
            let mut errors = Vec::new();
            for d in &disks {
                match write_to_disk(&d.root, &header, &t, keep) {
                    Ok(()) => written += 1,
                    Err(e) => errors.push(format!("disk {}: {e:#}", d.id)),
                }
            }
            anyhow::ensure!(written > 0, "{}", errors.join("; "));
            for e in errors {
                tracing::warn!("metadata backup: {e}");
            }
            Ok(header)
        })
        .await
        .context("join the backup writer")??;
        Ok((header, header_disks))
    }
    .await;
    let _ = tokio::fs::remove_file(&tmp).await;
    result
}

/// Writes one backup into `root/meta-backups/` durably, then drops all but the newest `keep`.
fn write_to_disk(root: &Path, header: &BackupHeader, db: &Path, keep: u32) -> anyhow::Result<()> {
    let dir = root.join(format::DIR);
    wormfs_parts::fsutil::create_private_dir_all(&dir)
        .with_context(|| format!("create {}", dir.display()))?;
    let name = header.file_name();
    let tmp = dir.join(format!(".{name}.tmp{:08x}", rand::random::<u32>()));
    let done = (|| -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut f);
        format::write(&mut w, header, db)?;
        std::io::Write::flush(&mut w)?;
        drop(w);
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(&name))?;
        sync_dir(&dir)
    })();
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done?;
    let mut old: Vec<PathBuf> = list(&dir);
    old.sort();
    let excess = old.len().saturating_sub(keep.max(1) as usize);
    for p in old.into_iter().take(excess) {
        if let Err(e) = std::fs::remove_file(&p) {
            tracing::warn!(file = %p.display(), "remove an old metadata backup: {e}");
        }
    }
    Ok(())
}

/// The finished backups in `dir` (never the temporary files, which start with `.`).
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == format::EXT)
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect()
}

/// The newest backup this node wrote on its disks, and the disks that hold it.
fn newest_on_disks(store: &Store) -> Option<(BackupHeader, Vec<String>)> {
    let mut best: Option<(BackupHeader, Vec<String>)> = None;
    for d in store.disks.iter() {
        for p in list(&d.root.join(format::DIR)) {
            let Ok((h, _)) = format::read_header(&p) else {
                continue;
            };
            if h.cluster_id != store.cluster_id || h.node_id != store.node_id {
                continue;
            }
            match &mut best {
                Some((b, disks)) if b.log_index == h.log_index && b.created_ms == h.created_ms => {
                    disks.push(d.id.to_string())
                }
                Some((b, _)) if (b.log_index, b.created_ms) >= (h.log_index, h.created_ms) => {}
                _ => best = Some((h, vec![d.id.to_string()])),
            }
        }
    }
    best
}

/// This machine's share of the cluster's `m + 1` copies, on its readable disks, different
/// filesystems first.
async fn chosen_disks(store: &Store) -> anyhow::Result<Vec<Arc<LocalDisk>>> {
    let m = store.meta.widest_redundancy().await?;
    let machines = {
        let mut nodes: Vec<u64> = store
            .meta
            .disk_nodes()
            .await?
            .into_iter()
            .map(|(_, n, _)| n)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes.len().max(1)
    };
    let want = (m + 1).div_ceil(machines).max(1);
    let mut disks: Vec<Arc<LocalDisk>> = store.disks.iter().filter(|d| d.readable()).collect();
    disks.sort_by_key(|d| d.id.to_string());
    // One disk of each filesystem first, so that the copies land on different ones.
    let mut seen = std::collections::HashSet::new();
    let (mut out, rest): (Vec<_>, Vec<_>) = disks.into_iter().partition(|d| seen.insert(d.fs_dev));
    out.extend(rest);
    out.truncate(want);
    Ok(out)
}

/// The periodic backup: every `meta.backup_interval_ms` when anything was applied since the
/// last one, and sooner after `meta.backup_after_changes` entries. Off with an interval of 0.
pub async fn run(store: Arc<Store>, stop: CancellationToken) {
    let cfg = store.backups.cfg.clone();
    // What an interrupted backup left: its copy in meta/, its temporary files on the disks.
    if let Some(meta_dir) = store.meta.path().parent() {
        for e in std::fs::read_dir(meta_dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("backup-") && name.contains(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    for d in store.disks.iter() {
        for e in std::fs::read_dir(d.root.join(format::DIR))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(".meta-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // The last backup this machine wrote before it (re)started, so its age survives a restart.
    let s = store.clone();
    if let Ok(Some((h, disks))) = tokio::task::spawn_blocking(move || newest_on_disks(&s)).await {
        store.backups.with(|st| {
            st.last_ms = Some(h.created_ms);
            st.log_index = Some(h.log_index);
            st.disks = disks;
        });
    }
    if cfg.backup_interval_ms == 0 {
        tracing::info!("metadata backups are off (meta.backup_interval_ms = 0)");
        return;
    }
    let tick = Duration::from_millis((cfg.backup_interval_ms / 10).clamp(500, 30_000));
    let mut last_failure: Option<u64> = None;
    set_events_mark(&store).await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
        let applied = match store.meta.applied_point().await {
            Ok(Some(p)) => p.index,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("metadata backup: read the applied log id: {e:#}");
                continue;
            }
        };
        let st = store.backups.status();
        let since = match st.log_index {
            Some(i) => changes_since(&store, applied, i).await,
            None => applied,
        };
        store.backups.with(|s| s.changes_since = since);
        let now = now_ms();
        let due = match (st.log_index, st.last_ms) {
            (Some(_), _) if since == 0 => false,
            (Some(_), Some(t)) => {
                now.saturating_sub(t) >= cfg.backup_interval_ms || since >= cfg.backup_after_changes
            }
            _ => true,
        };
        // A failure is retried after a tenth of the interval, not at every tick.
        let waiting = last_failure
            .is_some_and(|t| now.saturating_sub(t) < (cfg.backup_interval_ms / 10).max(1000));
        if due && !waiting {
            last_failure = backup_now(&store).await.is_err().then_some(now);
        }
    }
}
