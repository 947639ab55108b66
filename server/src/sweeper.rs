//! The sweeper: removes parts that no committed file and no live intent owns.
//!
//! It first expires intents whose lease ran out (through Raft), then lists each local disk.
//! A part is kept when the metadata places it on that disk, or when a live intent targets its
//! file (a long ingest is never swept), or when it is younger than the orphan grace time.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::store::{Store, StoreError};
use wormfs_meta::command::CommandV1;
use wormfs_parts::fsutil::now_ms;
use wormfs_parts::part_format::parse_part_file_name;

/// What one sweep did.
#[derive(Debug, Default, Serialize)]
pub struct SweepReport {
    /// Part files looked at.
    pub scanned: u64,
    /// Orphan parts removed.
    pub removed: u64,
    /// Stale temporary files removed.
    pub temp_removed: u64,
    /// Orphans kept because they are younger than the grace time.
    pub kept_young: u64,
}

/// Runs one sweep over this node's disks.
#[tracing::instrument(skip_all)]
pub async fn sweep(store: &Arc<Store>) -> Result<SweepReport, StoreError> {
    store
        .propose(CommandV1::ExpireIntents {
            now_ms: now_ms(),
            writer: None,
        })
        .await?;
    let live: HashSet<_> = store
        .meta
        .intents()
        .await?
        .into_iter()
        .map(|i| i.target_file_id)
        .collect();
    let grace = Duration::from_millis(store.ingest.orphan_grace_ms);
    let mut report = SweepReport::default();
    for disk in &store.disks {
        if !disk.readable() {
            continue;
        }
        let known = store.meta.parts_on_disk(disk.id).await?;
        let dir = disk.parts_dir();
        let live = live.clone();
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<SweepReport> {
            let mut rep = SweepReport::default();
            let top = match std::fs::read_dir(&dir) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(rep),
                Err(e) => return Err(e),
            };
            for sub in top {
                let sub = sub?;
                if !sub.file_type()?.is_dir() {
                    continue;
                }
                for f in std::fs::read_dir(sub.path())? {
                    let f = f?;
                    let name = f.file_name().to_string_lossy().into_owned();
                    let age = f
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .unwrap_or_default();
                    if name.starts_with('.') && name.contains(".tmp") {
                        if age >= grace {
                            std::fs::remove_file(f.path())?;
                            rep.temp_removed += 1;
                        }
                        continue;
                    }
                    let Some((fid, seg, part)) = parse_part_file_name(&name) else {
                        continue;
                    };
                    rep.scanned += 1;
                    if known.contains(&(fid, seg, part)) || live.contains(&fid) {
                        continue;
                    }
                    if age < grace {
                        rep.kept_young += 1;
                        continue;
                    }
                    tracing::info!(part = %name, "removing orphan part");
                    std::fs::remove_file(f.path())?;
                    rep.removed += 1;
                }
            }
            Ok(rep)
        })
        .await
        .map_err(|e| StoreError::Other(e.into()))?
        .map_err(|e| StoreError::Other(anyhow::anyhow!("sweep {}: {e}", disk.root.display())))?;
        report.scanned += r.scanned;
        report.removed += r.removed;
        report.temp_removed += r.temp_removed;
        report.kept_young += r.kept_young;
    }
    store
        .counters
        .orphans_swept
        .fetch_add(report.removed, Ordering::Relaxed);
    store.counters.sweeps.fetch_add(1, Ordering::Relaxed);
    Ok(report)
}
