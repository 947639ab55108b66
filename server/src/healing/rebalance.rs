//! Rebalancing: moving parts toward an even fill, MinIO's rule: every disk within 5% of the
//! cluster's free fraction (free bytes over size, all disks that are up).
//!
//! A disk below the cluster's fraction by more than that (or below it at all, while another
//! disk is above it by more than that) has parts chosen (largest first) until what they hold
//! would bring it to the cluster's fraction; they are asked to move
//! (`MoveParts`) and the repair queue copies each one to a disk emptier than the cluster, then
//! commits the new place like any repair. Folder-disks on one filesystem share their free
//! space: each is asked to give up its share. One plan takes at most one part of a segment
//! (several could not all find an emptier disk free of the segment's other parts), and where
//! a part goes among the emptier disks is placement's choice, so a plan is followed by others,
//! each once the last one's moves are done, until every disk is within the spread or a round
//! moves nothing ([`rebalance_until_even`]). `wormfs rebalance` starts those rounds;
//! `repair.auto_rebalance` has the leader start them whenever the queue is empty (checked every
//! ten minutes).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};
use wormfs_meta::command::{CommandV1, DiskStatus, PartRef};
use wormfs_parts::fsutil::now_ms;
use wormfs_parts::ids::{DiskId, NodeId};
use wormfs_parts::placement::Candidate;

/// How far from the cluster's free fraction a disk may be.
pub const SPREAD: f64 = 0.05;

/// Free bytes over size across `disks` (those whose size is known); 0 without any.
pub fn free_fraction(disks: &[Candidate]) -> f64 {
    let mut seen = std::collections::HashSet::new();
    let (mut free, mut total) = (0u128, 0u128);
    for d in disks.iter().filter(|d| d.total_bytes > 0) {
        // A filesystem counts once, however many folder-disks it holds.
        if seen.insert((d.node, d.domain)) {
            free += u128::from(d.free_bytes);
            total += u128::from(d.total_bytes);
        }
    }
    if total == 0 {
        0.0
    } else {
        free as f64 / total as f64
    }
}

/// One disk's fill.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DiskFill {
    /// The disk.
    pub disk_id: DiskId,
    /// Its machine.
    pub node_id: NodeId,
    /// Free bytes (after the reserve).
    pub free_bytes: u64,
    /// Its filesystem's size.
    pub total_bytes: u64,
    /// Free over size.
    pub free_fraction: f64,
    /// Bytes of parts asked to move off it now.
    pub to_move_bytes: u64,
}

/// What a rebalance found and asked for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RebalanceReport {
    /// Free bytes over size across the disks that are up.
    pub cluster_free_fraction: f64,
    /// Each disk that is up.
    pub disks: Vec<DiskFill>,
    /// Parts asked to move now.
    pub parts_queued: u64,
    /// About how many bytes they hold.
    pub bytes_queued: u64,
    /// Moves not yet done (these and earlier ones).
    pub moves_left: u64,
    /// What happens, in words.
    pub message: String,
}

/// Plans a rebalance; with `apply`, asks for the moves.
pub async fn rebalance(store: &Store, apply: bool) -> Result<RebalanceReport, StoreError> {
    let statuses = store.disk_statuses().await?;
    let mut cands = store.candidates(0);
    cands.extend(store.remote_candidates(0).await);
    cands.retain(|c| statuses.get(&c.disk) == Some(&DiskStatus::Up) && c.total_bytes > 0);
    let f = free_fraction(&cands);
    let mut per_domain: HashMap<(NodeId, u64), u64> = HashMap::new();
    for c in &cands {
        *per_domain.entry((c.node, c.domain)).or_default() += 1;
    }
    let mut disks = Vec::new();
    let mut moves: Vec<PartRef> = Vec::new();
    let mut bytes_queued = 0;
    let mut heaviest: Option<(DiskId, f64)> = None;
    // One part per segment per plan: several parts of a segment could not all find an emptier
    // disk free of the segment's other parts.
    let mut segments = std::collections::HashSet::new();
    let frac_of = |c: &Candidate| c.free_bytes as f64 / c.total_bytes as f64;
    // A disk too empty (above the spread) takes parts from every disk below the cluster's
    // fraction, not only from those below the spread.
    let too_empty = cands.iter().any(|c| frac_of(c) > f + SPREAD);
    for c in &cands {
        let frac = frac_of(c);
        let mut to_move = 0;
        if frac < f - SPREAD || (too_empty && frac < f) {
            let share = per_domain
                .get(&(c.node, c.domain))
                .copied()
                .unwrap_or(1)
                .max(1);
            let want = ((f - frac) * c.total_bytes as f64) as u64 / share;
            for (p, b) in store.meta.parts_with_sizes(c.disk, 1_000_000).await? {
                if to_move >= want {
                    break;
                }
                if segments.insert((p.file_id, p.seg)) {
                    moves.push(p);
                    to_move += b;
                }
            }
            bytes_queued += to_move;
            if heaviest.is_none_or(|(_, h)| frac < h) {
                heaviest = Some((c.disk, frac));
            }
        }
        disks.push(DiskFill {
            disk_id: c.disk,
            node_id: c.node,
            free_bytes: c.free_bytes,
            total_bytes: c.total_bytes,
            free_fraction: frac,
            to_move_bytes: to_move,
        });
    }
    let parts_queued = moves.len() as u64;
    if apply && !moves.is_empty() {
        let reason = match heaviest {
            Some((d, h)) => format!(
                "rebalance: disk {d} at {:.0}% free, the cluster at {:.0}%",
                h * 100.0,
                f * 100.0
            ),
            None => "rebalance".to_owned(),
        };
        for chunk in moves.chunks(256) {
            store
                .propose(CommandV1::MoveParts {
                    parts: chunk.to_vec(),
                    reason: reason.clone(),
                    time_ms: now_ms(),
                })
                .await?;
        }
        store.healing.wake_repair.notify_waiters();
    }
    let (moves_left, _) = store.meta.moves_left().await?;
    let even = disks.iter().all(|d| (d.free_fraction - f).abs() <= SPREAD);
    let message = if parts_queued == 0 && even {
        format!(
            "every disk is within {:.0}% of the cluster's free fraction ({:.1}%): nothing to move",
            SPREAD * 100.0,
            f * 100.0
        )
    } else if parts_queued == 0 {
        format!(
            "no part can move now (every part of the fullest disks already has a move asked for, or no disk is emptier); the cluster is at {:.1}% free",
            f * 100.0
        )
    } else if apply {
        format!(
            "{parts_queued} part(s) ({} MiB) asked to move toward {:.1}% free on every disk; `wormfs repair status` follows them",
            bytes_queued >> 20,
            f * 100.0
        )
    } else {
        format!(
            "would move {parts_queued} part(s) ({} MiB) toward {:.1}% free on every disk",
            bytes_queued >> 20,
            f * 100.0
        )
    };
    Ok(RebalanceReport {
        cluster_free_fraction: f,
        disks,
        parts_queued,
        bytes_queued,
        moves_left,
        message,
    })
}

/// Most rounds one rebalance runs.
const ROUNDS: usize = 20;

/// Plans rounds of moves, each once the last one's moves are done, until every disk is within
/// the spread, a round finds nothing it can move, or [`ROUNDS`] have run. One at a time per
/// node (a second call while rounds run returns at once).
pub async fn rebalance_until_even(store: Arc<Store>) {
    if store.healing.rebalancing.swap(true, Ordering::AcqRel) {
        return;
    }
    for round in 0..ROUNDS {
        // Wait for the moves asked for so far (and anything else queued) to be done.
        loop {
            match (
                store.meta.moves_left().await,
                store.meta.repair_paused().await,
            ) {
                (Ok((0, _)), Ok(false)) => break,
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!("rebalance: {e}");
                    store.healing.rebalancing.store(false, Ordering::Release);
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        match rebalance(&store, true).await {
            Ok(r) if r.parts_queued == 0 => {
                tracing::info!(round, "rebalance done: {}", r.message);
                break;
            }
            Ok(r) => tracing::info!(round, "rebalance: {}", r.message),
            Err(e) => {
                tracing::warn!("rebalance: {e}");
                break;
            }
        }
    }
    store.healing.rebalancing.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u128, node: u64, domain: u64, free: u64, total: u64) -> Candidate {
        Candidate {
            disk: DiskId(uuid::Uuid::from_u128(n)),
            node,
            domain,
            free_bytes: free,
            total_bytes: total,
        }
    }

    #[test]
    fn the_free_fraction_counts_each_filesystem_once() {
        // Two folders on one 100-byte filesystem with 50 free, and a 100-byte disk empty.
        let f = free_fraction(&[
            c(1, 1, 7, 50, 100),
            c(2, 1, 7, 50, 100),
            c(3, 1, 8, 100, 100),
        ]);
        assert!((f - 0.75).abs() < 1e-9, "{f}");
        assert_eq!(free_fraction(&[c(1, 1, 7, 0, 0)]), 0.0);
    }
}
