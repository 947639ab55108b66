//! The node and its cluster: status, members, disks, drop folders, maintenance.

use std::sync::atomic::Ordering;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;

use super::types::{
    BackupStatus, ClusterResponse, DisksResponse, ErrorKind, Health, IngestStatusResponse,
    RemoveQuery, RemoveResponse, SnapshotResponse, StatusCounters, StatusResponse, SweepResponse,
};
use super::{internal, ApiError, ApiResult, ApiState};
use crate::store::StoreError;
use wormfs_meta::command::DiskStatus;
use wormfs_parts::disk::DiskState;

pub(super) async fn cluster(State(st): State<ApiState>) -> ApiResult<Json<ClusterResponse>> {
    let nodes = st.store.meta.nodes().await.map_err(StoreError::from)?;
    let view = st.store.consensus.view(nodes).await;
    Ok(Json(ClusterResponse(view)))
}

pub(super) async fn status(State(st): State<ApiState>) -> ApiResult<Json<StatusResponse>> {
    let t = st.store.meta.totals().await.map_err(StoreError::from)?;
    let all = st.store.disk_reports().await?;
    // Disks removed for good (or emptied and left) are not counted.
    let disks: Vec<_> = all
        .iter()
        .filter(|d| !matches!(d.status, DiskStatus::Removed | DiskStatus::Drained))
        .collect();
    // Folders on one filesystem share its space: count each filesystem once.
    let mut seen = std::collections::HashSet::new();
    let raw: u64 = disks
        .iter()
        .filter(|d| d.space.total_bytes > 0 && seen.insert((d.node_id, d.filesystem)))
        .map(|d| d.space.total_bytes.saturating_sub(d.space.free_bytes))
        .sum();
    let count = |s: DiskState| disks.iter().filter(|d| d.state == s).count();
    let (full, machine_down) = (count(DiskState::Full), count(DiskState::MachineDown));
    let not_active = disks
        .iter()
        .filter(|d| !matches!(d.state, DiskState::Active | DiskState::Full))
        .count();
    let store_full = st.store.full_reason(&all);
    let mut why = Vec::new();
    if let Some(f) = &store_full {
        why.push(f.clone());
    } else if full > 0 {
        why.push(format!("{full} disk(s) full"));
    }
    if machine_down > 0 {
        why.push(format!(
            "{machine_down} disk(s) on machines that do not answer"
        ));
    }
    if not_active > machine_down {
        why.push(format!(
            "{} disk(s) missing or read-only",
            not_active - machine_down
        ));
    }
    if t.missing_parts > 0 {
        why.push(format!("{} part(s) missing", t.missing_parts));
    }
    let health = if store_full.is_some() {
        Health::Full
    } else if t.missing_parts > 0 || not_active > 0 {
        Health::Degraded
    } else {
        Health::Healthy
    };
    let c = &st.store.counters;
    Ok(Json(StatusResponse {
        cluster_id: st.store.cluster_id,
        node_id: st.store.node_id,
        health,
        health_reason: why.join("; "),
        files: t.files,
        directories: t.dirs,
        logical_bytes: t.logical_bytes,
        segments: t.segments,
        missing_parts: t.missing_parts,
        ingests_in_progress: t.intents,
        disks: disks.len(),
        disks_active: count(DiskState::Active),
        disks_full: full,
        disks_machine_down: machine_down,
        disk_bytes_used: raw,
        part_bytes: disks.iter().map(|d| d.part_bytes).sum(),
        read_only: st.store.consensus.read_only(),
        raft: st.store.consensus.status(),
        trash: trash_figures(&st).await?,
        counters: StatusCounters {
            ingests_committed: c.ingests_committed.load(Ordering::Relaxed),
            ingests_failed: c.ingests_failed.load(Ordering::Relaxed),
            damaged_part_reads: c.damaged_part_reads.load(Ordering::Relaxed),
            degraded_rows: c.degraded_rows.load(Ordering::Relaxed),
            unreadable: c.unreadable.load(Ordering::Relaxed),
            orphans_swept: c.orphans_swept.load(Ordering::Relaxed),
        },
        meta_backup: crate::meta_backup::status_now(&st.store).await,
        media_servers: st.media.status(),
    }))
}

/// What the trash holds, for the status and the disks.
async fn trash_figures(st: &ApiState) -> ApiResult<super::types::TrashFigures> {
    Ok(st
        .store
        .meta
        .trash_totals()
        .await
        .map_err(StoreError::from)?
        .into())
}

pub(super) async fn disks(State(st): State<ApiState>) -> ApiResult<Json<DisksResponse>> {
    Ok(Json(DisksResponse {
        disks: st.store.disk_reports().await?,
        trash: trash_figures(&st).await?,
    }))
}

pub(super) async fn ingest_status(
    State(st): State<ApiState>,
) -> ApiResult<Json<IngestStatusResponse>> {
    // The drop folders keep their status as JSON; read into the contract's type, a key that
    // drifted from it is a 500 naming it rather than an answer of another shape.
    serde_json::from_value(st.drops.snapshot())
        .map(Json)
        .map_err(|e| internal(format!("drop-folder status: {e}")))
}

pub(super) async fn admin_snapshot(
    State(st): State<ApiState>,
) -> ApiResult<Json<SnapshotResponse>> {
    let upto = st
        .store
        .consensus
        .snapshot_and_purge()
        .await
        .map_err(StoreError::from)?;
    Ok(Json(SnapshotResponse {
        snapshot_index: upto,
    }))
}

pub(super) async fn admin_backup(State(st): State<ApiState>) -> ApiResult<Json<BackupStatus>> {
    crate::meta_backup::backup_now(&st.store)
        .await
        .map(Json)
        .map_err(|e| internal(format!("metadata backup: {e:#}")))
}

pub(super) async fn admin_sweep(State(st): State<ApiState>) -> ApiResult<Json<SweepResponse>> {
    let r = crate::sweeper::sweep(&st.store).await?;
    Ok(Json(SweepResponse(r)))
}

pub(super) async fn admin_remove_node(
    State(st): State<ApiState>,
    Path(id): Path<u64>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<Json<RemoveResponse>> {
    use crate::peer::protocol::RemoveRefused;
    match st.store.consensus.remove_node(id, q.force).await {
        Ok(()) => Ok(Json(RemoveResponse { removed: id })),
        Err(RemoveRefused::NoMajority(e)) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::NoMajority,
            e,
        )),
        Err(RemoveRefused::Refused(e)) => {
            Err(ApiError(StatusCode::CONFLICT, ErrorKind::Refused, e))
        }
        Err(RemoveRefused::Failed(e)) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Failed,
            e,
        )),
    }
}
