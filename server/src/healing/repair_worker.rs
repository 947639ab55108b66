//! The repair loop of one node: take the most endangered queued segment this node should
//! handle, claim it through Raft, rebuild it, commit the new parts in one command, and on
//! failure record the error and the next try (doubling from `repair.retry_min_ms` up to
//! `repair.retry_max_ms`).
//!
//! Work is spread over the machines that hold the surviving parts: each queued segment has a
//! designated node (one of those machines, chosen by a hash of the segment), and any node
//! takes it once it has waited [`ORPHANED_AFTER`] past its due time. A claim is a lease: a
//! node that dies mid-repair leaves a claim that runs out, and the segment is taken again; the
//! parts it wrote are orphans for the sweeper. A new part counts only once committed, and is
//! committed only where the part it replaces is still where the repair saw it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::repair_job::{repair_segment, RepairError};
use super::throttle::Throttle;
use crate::store::{Store, StoreError};
use wormfs_meta::command::{CommandV1, Outcome, Rejection, SegmentRef};
use wormfs_meta::QueuedRepair;
use wormfs_parts::crash_point::crash_point;
use wormfs_parts::fsutil::now_ms;
use wormfs_parts::ids::NodeId;

/// How long a claim lasts (a segment of 1 GiB parts at a low rate fits well inside).
const CLAIM_MS: u64 = 30 * 60 * 1000;
/// A segment due this long without its designated node taking it is taken by anyone.
const ORPHANED_AFTER: Duration = Duration::from_secs(30);
/// How often an idle worker looks at the queue.
const IDLE_POLL: Duration = Duration::from_secs(2);

/// The wait before try number `attempts + 1`.
pub fn backoff_ms(attempts: u32, min_ms: u64, max_ms: u64) -> u64 {
    min_ms.saturating_mul(1u64 << attempts.min(32)).min(max_ms)
}

/// Runs the repair loop until `stop`.
pub async fn run(store: Arc<Store>, stop: CancellationToken) {
    let mut throttle = Throttle::new(store.repair.max_bytes_per_sec, store.repair.tranquility);
    loop {
        let idle = match step(&store, &mut throttle, &stop).await {
            Ok(did) => !did,
            Err(e) => {
                tracing::warn!("repair: {e}");
                true
            }
        };
        if idle {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = store.healing.wake_repair.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
        } else if stop.is_cancelled() {
            return;
        }
    }
}

/// Whether this node should take `q` now: it is the segment's designated node (one of the
/// machines holding its readable parts, by a hash of the segment), or nobody took it in time.
fn mine(store: &Store, q: &QueuedRepair, holders: &[NodeId], now: u64) -> bool {
    if holders.is_empty() {
        return true;
    }
    let h = blake3::hash(q.segment.to_string().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    let designated = holders[(u64::from_le_bytes(first) % holders.len() as u64) as usize];
    designated == store.node_id || now.saturating_sub(q.due_ms) >= ORPHANED_AFTER.as_millis() as u64
}

/// The nodes holding readable parts of a segment, sorted.
async fn holders(store: &Store, s: SegmentRef) -> Result<Vec<NodeId>, StoreError> {
    let Some(file) = store.meta.file(s.file_id).await? else {
        return Ok(Vec::new());
    };
    let statuses = store.disk_statuses().await?;
    let dir = store.data.directory();
    let mut nodes: Vec<NodeId> = file
        .segments
        .iter()
        .filter(|x| x.index == s.seg)
        .flat_map(|x| x.parts.iter())
        .filter(|p| !p.missing)
        .filter_map(|p| p.disk_id)
        .filter(|d| statuses.get(d).is_some_and(|st| st.available()))
        .filter_map(|d| {
            dir.disk(d)
                .map(|(n, _)| n)
                .or(store.disk(d).map(|_| store.node_id))
        })
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    Ok(nodes)
}

/// Whether `q` may be repaired now: inside `scrub.hours` (when set; the disks may sleep
/// outside it, docs/operations.md), or at any time when one more lost part would make it
/// unreadable (tolerance 0 or below: that never waits for the night).
fn urgent_or_in_hours(store: &Store, q: &QueuedRepair) -> bool {
    use chrono::Timelike;
    let Some(w) = store.scrub.hours else {
        return true;
    };
    let t = chrono::Local::now();
    if q.tolerance <= 0 || w.contains(t.hour() * 60 + t.minute()) {
        return true;
    }
    tracing::debug!(segment = %q.segment, tolerance = q.tolerance, "repair waits for scrub.hours");
    false
}

/// One pass over the due entries; `Ok(true)` if something was attempted.
async fn step(
    store: &Arc<Store>,
    throttle: &mut Throttle,
    stop: &CancellationToken,
) -> Result<bool, StoreError> {
    if !store.repair.enabled || store.meta.repair_paused().await? {
        return Ok(false);
    }
    let now = now_ms();
    let due = store.meta.due_repairs(store.node_id, now, 32).await?;
    let mut did = false;
    for q in due {
        if stop.is_cancelled() || store.meta.repair_paused().await? {
            break;
        }
        if !urgent_or_in_hours(store, &q) {
            continue;
        }
        let holders = holders(store, q.segment).await?;
        if !mine(store, &q, &holders, now_ms()) {
            continue;
        }
        match store
            .propose(CommandV1::ClaimRepair {
                segment: q.segment,
                node: store.node_id,
                until_ms: now_ms() + CLAIM_MS,
                now_ms: now_ms(),
            })
            .await
        {
            Ok(_) => {}
            Err(StoreError::Rejected(Rejection::Claimed(_) | Rejection::NotFound(_))) => continue,
            Err(e) => return Err(e),
        }
        did = true;
        repair_one(store, &q, throttle, stop)
            .instrument(tracing::info_span!("repair", segment = %q.segment))
            .await?;
    }
    Ok(did)
}

/// Repairs one claimed segment and records the outcome.
async fn repair_one(
    store: &Arc<Store>,
    q: &QueuedRepair,
    throttle: &mut Throttle,
    stop: &CancellationToken,
) -> Result<(), StoreError> {
    let result = repair_segment(store, q.segment, throttle, stop).await;
    let retry = |attempts: u32| {
        now_ms()
            + backoff_ms(
                attempts,
                store.repair.retry_min_ms,
                store.repair.retry_max_ms,
            )
    };
    match result {
        Ok(r) => {
            crash_point("repair_before_commit");
            let out = store
                .propose(CommandV1::CommitRepair {
                    segment: q.segment,
                    parts: r.written.clone(),
                    time_ms: now_ms(),
                    cancelled_moves: r.cancelled_moves.clone(),
                })
                .await;
            let written = r.written.len() as u64;
            match out {
                Ok(Outcome::Repaired { applied, skipped }) => {
                    drop_replaced_copies(store, q.segment, &r.written, &applied).await;
                    if !skipped.is_empty() {
                        tracing::info!(
                            ?skipped,
                            "repair: parts moved meanwhile; the new copies are left to the sweeper"
                        );
                    }
                    if !applied.is_empty() {
                        tracing::info!(parts = ?applied, "repair: segment rebuilt");
                    }
                    store
                        .healing
                        .end_repair(q.segment, Some(applied.len() as u64));
                }
                Ok(_) => store.healing.end_repair(q.segment, Some(written)),
                Err(StoreError::Rejected(Rejection::NotFound(_))) => {
                    tracing::info!("repair: the file was deleted meanwhile; its new parts are left to the sweeper");
                    store.healing.end_repair(q.segment, Some(0));
                    return Ok(());
                }
                Err(e) => {
                    store.healing.end_repair(q.segment, None);
                    return Err(e);
                }
            }
            if !r.unplaced.is_empty() {
                let error = format!(
                    "part(s) {:?} still to place: {}",
                    r.unplaced, r.unplaced_why
                );
                fail(store, q.segment, &error, retry(q.attempts)).await?;
            }
            Ok(())
        }
        Err(RepairError::Gone) => {
            store.healing.end_repair(q.segment, Some(0));
            // The claim of a deleted segment is refused and drops the entry.
            let _ = store
                .propose(CommandV1::ClaimRepair {
                    segment: q.segment,
                    node: store.node_id,
                    until_ms: now_ms(),
                    now_ms: now_ms(),
                })
                .await;
            Ok(())
        }
        Err(RepairError::Stopped) => {
            store.healing.end_repair(q.segment, None);
            // Released at once, so another node (or this one, resumed) takes it again.
            fail(store, q.segment, "stopped (shutdown or pause)", now_ms()).await
        }
        Err(e) => {
            store.healing.end_repair(q.segment, None);
            tracing::warn!("repair failed (attempt {}): {e}", q.attempts + 1);
            fail(store, q.segment, &e.to_string(), retry(q.attempts)).await
        }
    }
}

/// Deletes this node's old copies of parts that were committed elsewhere (a move or a drain):
/// the metadata no longer names them, so they are surplus. Other nodes' old copies are left to
/// their sweepers.
async fn drop_replaced_copies(
    store: &Store,
    s: SegmentRef,
    written: &[wormfs_meta::command::RepairedPart],
    applied: &[u16],
) {
    for p in written.iter().filter(|p| applied.contains(&p.part)) {
        let Some(from) = p.from.filter(|f| *f != p.to) else {
            continue;
        };
        let Some(disk) = store.disk(from) else {
            continue;
        };
        let path = disk.part_path(s.file_id, s.seg, p.part);
        match tokio::task::spawn_blocking(move || std::fs::remove_file(&path)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(Err(e)) => {
                tracing::warn!(disk = %from, "cannot remove a replaced part (the sweeper will): {e}")
            }
            Err(e) => tracing::warn!("cannot remove a replaced part: {e}"),
        }
    }
}

async fn fail(
    store: &Store,
    s: SegmentRef,
    error: &str,
    retry_at_ms: u64,
) -> Result<(), StoreError> {
    match store
        .propose(CommandV1::RepairFailed {
            segment: s,
            error: error.to_owned(),
            retry_at_ms,
        })
        .await
    {
        Ok(_) | Err(StoreError::Rejected(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Queues segments found damaged by reads (heal on read), batching what arrives together.
pub async fn heal_on_read(store: Arc<Store>, stop: CancellationToken) {
    let Some(mut rx) = store.healing.take_damage_receiver() else {
        return;
    };
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            d = rx.recv() => match d { Some(d) => d, None => return },
        };
        let mut batch = vec![first];
        while let Ok(d) = rx.try_recv() {
            batch.push(d);
        }
        let segments: Vec<SegmentRef> = batch.iter().map(|d| d.segment).collect();
        let damaged = batch.iter().filter_map(|d| d.part).collect();
        tracing::info!(
            segments = segments.len(),
            "heal on read: queueing damaged segments"
        );
        match store
            .propose(CommandV1::QueueRepair {
                segments,
                damaged,
                reason: "a read met a damaged part".into(),
                time_ms: now_ms(),
            })
            .await
        {
            Ok(_) => store.healing.wake_repair.notify_one(),
            Err(e) => tracing::warn!("heal on read: cannot queue: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_the_minimum_up_to_the_maximum() {
        assert_eq!(backoff_ms(0, 60_000, 3_840_000), 60_000);
        assert_eq!(backoff_ms(1, 60_000, 3_840_000), 120_000);
        assert_eq!(backoff_ms(6, 60_000, 3_840_000), 3_840_000);
        assert_eq!(backoff_ms(40, 60_000, 3_840_000), 3_840_000);
    }
}
