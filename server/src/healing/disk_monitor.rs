//! Disk states as the cluster sees them.
//!
//! Every node watches its own disks: one that stops reading (identity file gone, I/O errors,
//! unmounted) is proposed `down`; one that reads again, `up` (also after being `out`: its parts
//! that were not rebuilt yet count again, and those rebuilt elsewhere are surplus, removed by
//! the sweeper once nothing names them).
//!
//! Without waking a disk that sleeps (docs/operations.md, "Disks that may sleep"): each tick
//! looks at a disk only with [`LocalDisk::quick_check`], a `stat` of its identity file that
//! the kernel answers from its inode cache (no file opened, nothing read, no space measured).
//! The full check ([`LocalDisk::refresh`]: identity, device, writability, space) runs only for
//! a disk whose quick check failed, that counted read or write errors since the last tick
//! (a failing disk is found by the I/O that failed), or that is missing now (it is not
//! asleep, it is gone; the check sees it come back).
//!
//! The leader also watches the other machines: one whose data plane has not answered for
//! [`SILENT_AFTER`] has its `up` disks marked `down`, with a reason starting "machine". And
//! the leader turns `down` into `out` after `repair.disk_out_after_ms`
//! (`repair.machine_out_after_ms` for a silent machine), within two brakes:
//! - never more disks `out` with parts still to rebuild than the smallest `m` in use, so a
//!   network fault or a shelf of disks going away together does not start rebuilding
//!   everything at once;
//! - never a disk that holds the last readable parts of anything (rebuilding them is
//!   impossible; calling it `out` would say the data is gone when the disk may come back).
//!
//! A brake that holds is written to the metadata (`SetBrakes`), so `wormfs health` on any node
//! says why nothing happens.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::consensus::RaftRole;
use crate::store::{Store, StoreError};
use wormfs_meta::command::{CommandV1, DiskStatus};
use wormfs_parts::disk::DiskState;
use wormfs_parts::disk::LocalDisk;
use wormfs_parts::fsutil::now_ms;
use wormfs_parts::ids::DiskId;
use wormfs_parts::ids::NodeId;

/// A machine whose data plane has not answered this long has its disks marked down.
const SILENT_AFTER: Duration = Duration::from_secs(5);
/// How often the leader looks at the fill when `repair.auto_rebalance` is on.
const AUTO_REBALANCE_EVERY: Duration = Duration::from_secs(600);

/// Starts rounds of rebalancing when nothing else is queued.
async fn auto_rebalance(store: &Arc<Store>) -> Result<(), StoreError> {
    if !store.meta.repair_queue(1).await?.is_empty() || store.meta.repair_paused().await? {
        return Ok(());
    }
    let r = super::rebalance::rebalance(store, false).await?;
    if r.parts_queued > 0 {
        tracing::info!("automatic rebalance: {}", r.message);
        tokio::spawn(super::rebalance::rebalance_until_even(store.clone()));
    }
    Ok(())
}

/// A reason given for a silent machine's disks starts with this.
pub const MACHINE_REASON: &str = "machine ";

/// Runs the monitor until `stop`.
pub async fn run(store: Arc<Store>, stop: CancellationToken) {
    let tick = Duration::from_millis((store.repair.disk_out_after_ms / 10).clamp(200, 2000));
    let mut silent: HashMap<NodeId, Instant> = HashMap::new();
    let mut last_rebalance = Instant::now();
    // The disks were checked when they were opened: errors from now on count.
    let mut errors: HashMap<DiskId, u64> =
        store.disks.iter().map(|d| (d.id, io_errors(&d))).collect();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        if let Err(e) = own_disks(&store, &mut errors).await {
            tracing::debug!("disk monitor: {e}");
        }
        if store.consensus.status().role == RaftRole::Leader {
            if let Err(e) = as_leader(&store, &mut silent).await {
                tracing::warn!("disk monitor: {e}");
            }
            if store.repair.auto_rebalance && last_rebalance.elapsed() >= AUTO_REBALANCE_EVERY {
                last_rebalance = Instant::now();
                if let Err(e) = auto_rebalance(&store).await {
                    tracing::warn!("automatic rebalance: {e}");
                }
            }
        } else {
            silent.clear();
        }
    }
}

async fn set(
    store: &Store,
    disk: wormfs_parts::ids::DiskId,
    state: DiskStatus,
    reason: String,
) -> Result<(), StoreError> {
    tracing::warn!(disk = %disk, %state, %reason, "disk state");
    store
        .propose(CommandV1::SetDiskState {
            disk_id: disk,
            state,
            reason,
            time_ms: now_ms(),
        })
        .await?;
    store.healing.wake_repair.notify_one();
    Ok(())
}

/// Read and write errors a disk counted so far.
fn io_errors(d: &LocalDisk) -> u64 {
    d.read_errors
        .load(std::sync::atomic::Ordering::Relaxed)
        .wrapping_add(d.write_errors.load(std::sync::atomic::Ordering::Relaxed))
}

/// Checks this node's disks without waking those that sleep: the full check only for a disk
/// that changed, failed I/O since the last look (`errors`, updated here) or is missing.
/// Returns how many disks had the full check.
fn check_disks(store: &Store, errors: &mut HashMap<DiskId, u64>) -> usize {
    let mut full = 0;
    for d in store.disks.iter() {
        let now = io_errors(&d);
        let failed_io = errors.insert(d.id, now).is_some_and(|before| before != now);
        if failed_io || !d.readable() || d.quick_check().is_err() {
            d.refresh();
            full += 1;
        }
    }
    full
}

/// Proposes this node's disks `down` or `up` as they stop or start reading.
async fn own_disks(
    store: &Arc<Store>,
    errors: &mut HashMap<DiskId, u64>,
) -> Result<(), StoreError> {
    let s = store.clone();
    let mut errs = std::mem::take(errors);
    let (errs, full) = tokio::task::spawn_blocking(move || {
        let full = check_disks(&s, &mut errs);
        (errs, full)
    })
    .await
    .unwrap_or_default();
    *errors = errs;
    // Counted by the sleeping-disks test: the rounds it waits for, and no full check in them.
    tracing::debug!(disks = store.disks.len(), full, "disk monitor round");
    let statuses = store.disk_statuses().await?;
    let mut back = false;
    for d in store.disks.iter() {
        let Some(&current) = statuses.get(&d.id) else {
            continue;
        };
        let (observed, why) = d.state();
        let readable = observed != DiskState::Missing;
        match (current, readable) {
            (DiskStatus::Removed, _) => {
                tracing::info!(disk = %d.id, "disk removed from the cluster: detached");
                store.disks.remove(d.id);
            }
            (DiskStatus::Up, false) => set(store, d.id, DiskStatus::Down, why).await?,
            (DiskStatus::Down | DiskStatus::Out, true) => {
                set(store, d.id, DiskStatus::Up, "readable again".into()).await?;
                back = true;
            }
            _ => {}
        }
    }
    if back {
        moves_due_now(store).await?;
    }
    Ok(())
}

/// Makes the segments with parts asked to move due at once: a disk back may be where a move
/// waits to go (a file written while its machine was down), which would otherwise wait for
/// the repair's backoff (up to `repair.retry_max_ms`).
async fn moves_due_now(store: &Store) -> Result<(), StoreError> {
    let segments = store.meta.segments_with_moves(10_000).await?;
    for chunk in segments.chunks(256) {
        store
            .propose(CommandV1::QueueRepair {
                segments: chunk.to_vec(),
                damaged: Vec::new(),
                reason: "disks back: parts waiting to move to them".into(),
                time_ms: now_ms(),
            })
            .await?;
    }
    if !segments.is_empty() {
        store.healing.wake_repair.notify_one();
    }
    Ok(())
}

fn human(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

/// The leader's part: silent machines, and `down` disks that have waited long enough.
async fn as_leader(
    store: &Arc<Store>,
    silent: &mut HashMap<NodeId, Instant>,
) -> Result<(), StoreError> {
    let nodes = store.meta.nodes().await?;
    let states = store.meta.disk_states().await?;
    // Only machines that registered a data address can be probed; the probes run in
    // parallel, so one silent machine (a connect timeout) does not delay the others.
    let probed: Vec<_> = nodes
        .iter()
        .filter(|n| n.node_id != store.node_id && !n.data_addr.is_empty())
        .collect();
    let answers =
        futures::future::join_all(probed.iter().map(|n| store.data.answers(n.node_id))).await;
    for (n, answer) in probed.into_iter().zip(answers) {
        match answer {
            Ok(()) | Err(crate::data_plane::DataError::Unknown(_)) => {
                silent.remove(&n.node_id);
                continue;
            }
            Err(_) => {}
        }
        let since = *silent.entry(n.node_id).or_insert_with(Instant::now);
        if since.elapsed() < SILENT_AFTER {
            continue;
        }
        for d in states
            .iter()
            .filter(|d| d.node_id == n.node_id && d.state == DiskStatus::Up)
        {
            let why = format!(
                "{MACHINE_REASON}{} (node {}) is not answering",
                n.name, n.node_id
            );
            set(store, d.disk_id, DiskStatus::Down, why).await?;
        }
    }

    // The part counts below scan the parts table: only when a disk is down or draining is
    // there anything to decide (otherwise just clear brakes that no longer hold).
    if !states
        .iter()
        .any(|d| matches!(d.state, DiskStatus::Down | DiskStatus::Draining))
    {
        if !store.meta.brakes().await?.is_empty() {
            store
                .propose(CommandV1::SetBrakes { brakes: Vec::new() })
                .await?;
        }
        return Ok(());
    }
    let now = now_ms();
    let parts: HashMap<_, u64> = store
        .meta
        .disks()
        .await?
        .into_iter()
        .map(|d| (d.disk_id, d.parts))
        .collect();
    let held = |d: &wormfs_parts::ids::DiskId| parts.get(d).copied().unwrap_or(0);
    let smallest_m = store.meta.smallest_m().await?;
    let mut pending = states
        .iter()
        .filter(|d| d.state == DiskStatus::Out && held(&d.disk_id) > 0)
        .count() as u64;
    for d in states
        .iter()
        .filter(|d| d.state == DiskStatus::Draining && held(&d.disk_id) == 0)
    {
        set(
            store,
            d.disk_id,
            DiskStatus::Drained,
            "emptied: it can be removed or unplugged".into(),
        )
        .await?;
    }
    let mut due: Vec<_> = states
        .iter()
        .filter(|d| d.state == DiskStatus::Down)
        .filter(|d| {
            let wait = if d.reason.starts_with(MACHINE_REASON) {
                store.repair.machine_out_after_ms
            } else {
                store.repair.disk_out_after_ms
            };
            now.saturating_sub(d.since_ms) >= wait
        })
        .collect();
    due.sort_by_key(|d| d.since_ms);
    let mut brakes = Vec::new();
    for d in due {
        let down_for = human(now.saturating_sub(d.since_ms));
        if held(&d.disk_id) > 0 {
            let imp = store.meta.impact(&[d.disk_id], 1).await?;
            if imp.unreadable_segments > 0 {
                let example = imp
                    .unreadable_files
                    .first()
                    .map(|f| format!(" (such as {})", f.path))
                    .unwrap_or_default();
                brakes.push(format!(
                    "disk {} ({}) has been down for {down_for} but holds the last readable parts of {} segment(s){example}: it is not marked out; bring it back, or give those files up with `wormfs disk remove {} --force`",
                    d.disk_id, d.path, imp.unreadable_segments, d.disk_id
                ));
                continue;
            }
            let limit = smallest_m.unwrap_or(u64::MAX);
            if pending >= limit {
                brakes.push(format!(
                    "disk {} ({}) has been down for {down_for}; {pending} disk(s) are already out with parts still to rebuild, and the smallest redundancy in use (m = {limit}) allows no more at once: it waits",
                    d.disk_id, d.path
                ));
                continue;
            }
            pending += 1;
        }
        set(
            store,
            d.disk_id,
            DiskStatus::Out,
            format!("down for {down_for}: {}", d.reason),
        )
        .await?;
    }
    if brakes != store.meta.brakes().await? {
        for b in &brakes {
            tracing::warn!("repair brake: {b}");
        }
        store.propose(CommandV1::SetBrakes { brakes }).await?;
    }
    Ok(())
}
