//! The trash, engine side: listing, restoring and emptying it through Raft, and the leader's
//! background task that keeps the replicated on/off setting in step with its config, frees
//! what has been in the trash longer than `retention.trash_days`, and frees the oldest first
//! while the free space is below `retention.trash_min_free` (docs/operations.md, "Trash").
//!
//! Apply only drops the metadata (`PurgeTrash`); the parts of a file no longer named are
//! orphans that the sweeper removes on its next pass on each machine.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::consensus::RaftRole;
use crate::store::{Store, StoreError};
use wormfs_meta::command::{CommandV1, Rejection};
use wormfs_meta::TrashEntry;
use wormfs_parts::fsutil::now_ms;
use wormfs_parts::tree_path::TreePath;

/// The trash's entries, oldest first (only those at or below `under` when given).
pub async fn list(store: &Store, under: Option<&TreePath>) -> Result<Vec<TrashEntry>, StoreError> {
    Ok(store.meta.trash(under).await?)
}

/// Which trash entry a restore means: `id`, else the newest whose original path is `path`.
pub async fn find(
    store: &Store,
    path: Option<&TreePath>,
    id: Option<u64>,
) -> Result<TrashEntry, StoreError> {
    let all = store.meta.trash(None).await?;
    let found = match (id, path) {
        (Some(id), _) => all.into_iter().find(|e| e.id == id),
        (None, Some(p)) => {
            let p = p.to_string();
            all.into_iter()
                .filter(|e| e.path == p)
                .max_by_key(|e| (e.deleted_ms, e.id))
        }
        (None, None) => {
            return Err(StoreError::BadRequest(
                "name the file to restore: its original path or --id".into(),
            ))
        }
    };
    found.ok_or_else(|| {
        let what = match (id, path) {
            (Some(id), _) => format!("trash entry {id}"),
            (None, Some(p)) => format!("{p} (in the trash)"),
            (None, None) => String::new(),
        };
        StoreError::Rejected(Rejection::NotFound(what))
    })
}

/// Restores a trash entry at `to` (its original path by default); returns the entry and
/// where it went.
pub async fn restore(
    store: &Store,
    path: Option<&TreePath>,
    id: Option<u64>,
    to: Option<&TreePath>,
) -> Result<(TrashEntry, String), StoreError> {
    let entry = find(store, path, id).await?;
    let to = match to {
        Some(t) => t.to_string(),
        None => entry.path.clone(),
    };
    store
        .propose(CommandV1::RestoreTrash {
            id: entry.id,
            to: to.clone(),
            time_ms: now_ms(),
        })
        .await?;
    tracing::info!(id = entry.id, from = %entry.path, to = %to, "trash: restored");
    Ok((entry, to))
}

/// Empties the trash (only what was deleted more than `older_than_ms` ago when given);
/// returns how many entries went and the bytes of the files that were freed.
pub async fn empty(store: &Store, older_than_ms: Option<u64>) -> Result<(u64, u64), StoreError> {
    let now = now_ms();
    let chosen: Vec<TrashEntry> = store
        .meta
        .trash(None)
        .await?
        .into_iter()
        .filter(|e| older_than_ms.is_none_or(|age| e.deleted_ms < now.saturating_sub(age)))
        .collect();
    if chosen.is_empty() {
        return Ok((0, 0));
    }
    let (n, bytes) = purge(store, &chosen).await?;
    tracing::info!(entries = n, bytes, "trash: emptied on request");
    Ok((n, bytes))
}

/// Purges `entries`; returns their count and the bytes of those that freed their file.
async fn purge(store: &Store, entries: &[TrashEntry]) -> Result<(u64, u64), StoreError> {
    store
        .propose(CommandV1::PurgeTrash {
            ids: entries.iter().map(|e| e.id).collect(),
            deleted_before_ms: None,
        })
        .await?;
    let bytes = entries.iter().filter(|e| !e.shared).map(|e| e.size).sum();
    Ok((entries.len() as u64, bytes))
}

/// Free and total bytes of the disks that take parts now, in the whole cluster (each
/// filesystem counted once).
pub async fn free_space(store: &Store) -> (u64, u64) {
    let mut all = store.candidates(0);
    all.extend(store.remote_candidates(0).await);
    let mut seen = std::collections::HashSet::new();
    all.iter()
        .filter(|c| seen.insert((c.node, c.domain)))
        .fold((0, 0), |(f, t), c| (f + c.free_bytes, t + c.total_bytes))
}

/// How often the leader looks at the trash.
fn tick(trash_ms: u64) -> Duration {
    if trash_ms == 0 {
        Duration::from_secs(5)
    } else {
        Duration::from_millis((trash_ms / 4).clamp(250, 5_000))
    }
}

/// Runs the trash's leader task until `stop`.
pub async fn run(store: Arc<Store>, stop: CancellationToken) {
    let mut waiting_for_sweep: Option<u64> = None;
    let tick = tick(store.retention.trash_ms);
    let mut first = true;
    loop {
        let wait = if first { Duration::ZERO } else { tick };
        first = false;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if store.consensus.status().role != RaftRole::Leader {
            waiting_for_sweep = None;
            continue;
        }
        if let Err(e) = as_leader(&store, &mut waiting_for_sweep).await {
            tracing::warn!("trash: {e}");
        }
    }
}

/// One look: the setting, what expired, and the free space.
async fn as_leader(store: &Store, waiting_for_sweep: &mut Option<u64>) -> Result<(), StoreError> {
    let trash_ms = store.retention.trash_ms;
    let want = trash_ms > 0;
    if store.meta.trash_enabled().await? != want {
        store.propose(CommandV1::SetTrash { enabled: want }).await?;
        tracing::info!(
            "trash turned {} (retention.trash_days here; the leader's value applies)",
            if want { "on" } else { "off" }
        );
    }
    let entries = store.meta.trash(None).await?;
    if entries.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let cutoff = now.saturating_sub(trash_ms);
    let expired: Vec<TrashEntry> = entries
        .iter()
        .filter(|e| e.deleted_ms < cutoff)
        .cloned()
        .collect();
    if !expired.is_empty() {
        store
            .propose(CommandV1::PurgeTrash {
                ids: Vec::new(),
                deleted_before_ms: Some(cutoff),
            })
            .await?;
        let bytes: u64 = expired.iter().filter(|e| !e.shared).map(|e| e.size).sum();
        tracing::info!(
            entries = expired.len(),
            bytes,
            "trash: freed {} file(s) deleted more than {:.3} day(s) ago",
            expired.len(),
            trash_ms as f64 / 86_400_000.0
        );
    }
    // The space check waits for a sweep after it purged: until then the parts are still there.
    if let Some(at) = *waiting_for_sweep {
        if store.counters.sweeps.load(Ordering::Relaxed) <= at {
            return Ok(());
        }
        *waiting_for_sweep = None;
    }
    let (free, total) = free_space(store).await;
    let floor = store.retention.trash_min_free.bytes(total);
    if total == 0 || free >= floor {
        return Ok(());
    }
    let deficit = floor - free;
    let mut chosen = Vec::new();
    let mut freed = 0u64;
    for e in entries
        .iter()
        .filter(|e| e.deleted_ms >= cutoff && !e.shared)
    {
        if freed >= deficit {
            break;
        }
        freed += e.stored_bytes;
        chosen.push(e.clone());
    }
    if chosen.is_empty() {
        return Ok(());
    }
    let (n, bytes) = purge(store, &chosen).await?;
    tracing::info!(
        entries = n,
        bytes,
        stored_bytes = freed,
        free_bytes = free,
        min_free_bytes = floor,
        "trash: freed the {n} oldest file(s): free space below retention.trash_min_free ({})",
        store.retention.trash_min_free
    );
    *waiting_for_sweep = Some(store.counters.sweeps.load(Ordering::Relaxed));
    Ok(())
}

/// Parses a retention: `30d`, `12h`, `90s`, `15m`, `2w`, `1y` (365 days), or `none`
/// (`Ok(None)`). A bare number is seconds.
pub fn parse_retain(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let bad = || format!("{s:?} is not a retention such as 30d, 12h, 90s, 1y or none");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..split].parse().map_err(|_| bad())?;
    let unit: u64 = match &t[split..] {
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "y" => 365 * 86_400_000,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(unit).ok_or_else(bad)?;
    if ms == 0 {
        return Err(format!(
            "{s:?}: a retention must be longer than 0 (or none)"
        ));
    }
    Ok(Some(ms))
}

/// A retention in ms as `parse_retain` reads it back (the largest unit that divides it).
pub fn format_retain(ms: u64) -> String {
    for (unit, len) in [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
    ] {
        if ms.is_multiple_of(len) {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{}s", ms.div_ceil(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentions_parse_and_print_back() {
        assert_eq!(parse_retain("30d"), Ok(Some(30 * 86_400_000)));
        assert_eq!(parse_retain("90s"), Ok(Some(90_000)));
        assert_eq!(parse_retain("12h"), Ok(Some(12 * 3_600_000)));
        assert_eq!(parse_retain("1y"), Ok(Some(365 * 86_400_000)));
        assert_eq!(parse_retain("none"), Ok(None));
        assert_eq!(parse_retain("45"), Ok(Some(45_000)));
        for bad in ["", "0d", "3x", "-1d", "d", "99999999999999999y"] {
            assert!(parse_retain(bad).is_err(), "{bad}");
        }
        for s in ["30d", "90s", "12h", "1y", "2w", "15m"] {
            assert_eq!(format_retain(parse_retain(s).unwrap().unwrap()), s);
        }
    }
}
