//! The sweeper: removes parts that no committed file and no live intent owns.
//!
//! It first expires intents whose lease ran out (through Raft), then lists each local disk.
//! A part is kept when the metadata places it on that disk, or when a live intent targets its
//! file (a long ingest is never swept), or when it is younger than the orphan grace time.
//!
//! A disk is listed only when something may have changed on it since a sweep last found
//! nothing to do there: bytes written to it (a part, committed or not), a failed write, or a
//! change in the parts the metadata places on it (a file deleted, a part moved away). An idle
//! disk is never listed on the sweeper's timer, so it may sleep (docs/operations.md, "Disks
//! that may sleep"); a disk is listed at least once after each start.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash};
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

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What may leave something to sweep on `disk`: the bytes written to it, its failed writes,
/// and the parts the metadata places on it (`known`, order-independent).
fn fingerprint(
    disk: &wormfs_parts::disk::LocalDisk,
    known: &HashSet<(wormfs_parts::ids::FileId, u32, u16)>,
) -> u64 {
    // A fixed hasher: the mark is compared within one process only.
    let hasher =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
    let parts = known
        .iter()
        .fold(0u64, |acc, p| acc.wrapping_add(hasher.hash_one(p)));
    let mut h = hasher.build_hasher();
    (
        disk.bytes_written.load(Ordering::Relaxed),
        disk.write_errors.load(Ordering::Relaxed),
        known.len(),
        parts,
    )
        .hash(&mut h);
    std::hash::Hasher::finish(&h)
}

/// Runs one sweep over this node's disks.
#[tracing::instrument(skip_all)]
pub async fn sweep(store: &Arc<Store>) -> Result<SweepReport, StoreError> {
    let now = now_ms();
    store
        .propose(CommandV1::ExpireIntents {
            now_ms: now,
            writer: None,
        })
        .await?;
    // Small files' parts are written with no intent to claim them: before anything is
    // removed, the sweep is counted, and the commit of every small file whose writer saw
    // fewer sweeps is refused from then on. Applied here before `known` is read below, so a
    // small file's commit either shows there or is refused, and parts written after this
    // point are younger than the sweep's start, which is what ages are counted to.
    store
        .propose(CommandV1::SweepBegins {
            node: store.node_id,
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
    let (mut listed, mut unchanged) = (0u32, 0u32);
    for disk in &store.disks {
        if !disk.readable() {
            continue;
        }
        let known = store.meta.parts_on_disk(disk.id).await?;
        let mark = fingerprint(&disk, &known);
        if *lock(&disk.swept_clean) == Some(mark) {
            unchanged += 1;
            continue;
        }
        listed += 1;
        let dir = disk.parts_dir();
        let live = live.clone();
        // Ages are counted to the sweep's start (this machine's clock, as the parts' times
        // are: its disks' parts are written here): a part written after the sweep was
        // counted is never removed by it, however long the listing takes.
        let started = SystemTime::UNIX_EPOCH + Duration::from_millis(now);
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<(SweepReport, u64)> {
            let mut rep = SweepReport::default();
            // Files left for a later sweep to look at again: temporary files younger than the
            // grace time, parts of an ingest under way.
            let mut left = 0;
            let top = match std::fs::read_dir(&dir) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((rep, 0)),
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
                        .and_then(|t| started.duration_since(t).ok())
                        .unwrap_or_default();
                    if name.starts_with('.') && name.contains(".tmp") {
                        if age >= grace {
                            std::fs::remove_file(f.path())?;
                            rep.temp_removed += 1;
                        } else {
                            left += 1;
                        }
                        continue;
                    }
                    let Some((fid, seg, part)) = parse_part_file_name(&name) else {
                        continue;
                    };
                    rep.scanned += 1;
                    if known.contains(&(fid, seg, part)) {
                        continue;
                    }
                    if live.contains(&fid) {
                        // An ingest under way: an orphan if it never commits.
                        left += 1;
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
            Ok((rep, left))
        })
        .await
        .map_err(|e| StoreError::Other(e.into()))?
        .map_err(|e| StoreError::Other(anyhow::anyhow!("sweep {}: {e}", disk.root.display())))?;
        // Clean when nothing was left for a later sweep to look at again.
        let (r, left) = r;
        let clean = r.kept_young == 0 && left == 0;
        *lock(&disk.swept_clean) = clean.then_some(mark);
        if r.removed + r.temp_removed > 0 {
            // Space was freed (the disk is awake): measure it, and let a full disk take parts.
            let d = disk.clone();
            let _ = tokio::task::spawn_blocking(move || {
                d.forget_space();
                d.refresh();
            })
            .await;
        }
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
    // Counted by the sleeping-disks test: the rounds it waits for, and no disk listed in them.
    tracing::debug!(listed, unchanged, "sweep round");
    Ok(report)
}
