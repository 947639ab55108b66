//! Self-healing's routes: the health report, repair and scrub status and controls, and what a
//! disk's or a machine's loss would cost.

use axum::extract::{Path, Query, State};
use axum::Json;

use super::types::{
    DiskChange, DiskPathRequest, ForceQuery, HealthReport, ImpactQuery, ImpactResponse,
    RebalanceQuery, RebalanceReport, RepairNowRequest, RepairNowResponse, RepairStatus,
    ScrubRequest, ScrubStatus,
};
use super::{ApiResult, ApiState};
use crate::healing::health;
use crate::store::StoreError;
use wormfs_meta::command::{CommandV1, SegmentRef};
use wormfs_parts::fsutil::now_ms;
use wormfs_parts::tree_path::TreePath;

pub(super) async fn health_report(State(st): State<ApiState>) -> ApiResult<Json<HealthReport>> {
    Ok(Json(health::report(&st.store).await?))
}

pub(super) async fn repair_status(State(st): State<ApiState>) -> ApiResult<Json<RepairStatus>> {
    Ok(Json(health::repair_status(&st.store).await?))
}

async fn set_paused(st: &ApiState, paused: bool) -> ApiResult<Json<RepairStatus>> {
    st.store
        .propose(CommandV1::SetRepairPaused { paused })
        .await?;
    st.store.healing.wake_repair.notify_waiters();
    Ok(Json(health::repair_status(&st.store).await?))
}

pub(super) async fn repair_pause(State(st): State<ApiState>) -> ApiResult<Json<RepairStatus>> {
    set_paused(&st, true).await
}

pub(super) async fn repair_resume(State(st): State<ApiState>) -> ApiResult<Json<RepairStatus>> {
    set_paused(&st, false).await
}

/// `FILEID:SEG`, or a path: the file's segments (or, for a directory, every file's below it).
pub(super) async fn repair_now(
    State(st): State<ApiState>,
    Json(req): Json<RepairNowRequest>,
) -> ApiResult<Json<RepairNowResponse>> {
    let segments: Vec<SegmentRef> = if let Ok(s) = req.target.parse::<SegmentRef>() {
        if st
            .store
            .meta
            .file(s.file_id)
            .await
            .map_err(StoreError::from)?
            .is_none()
        {
            return Err(StoreError::BadRequest(format!("no file {}", s.file_id)).into());
        }
        vec![s]
    } else {
        let path = TreePath::parse(&req.target).map_err(|e| {
            StoreError::BadRequest(format!(
                "{:?} is neither FILEID:SEGMENT nor a path: {e}",
                req.target
            ))
        })?;
        let file = st.store.file_at(&path).await?;
        file.segments
            .iter()
            .map(|s| SegmentRef {
                file_id: file.file_id,
                seg: s.index,
            })
            .collect()
    };
    st.store
        .propose(CommandV1::QueueRepair {
            segments: segments.clone(),
            damaged: Vec::new(),
            reason: "asked for (wormfs repair now)".into(),
            time_ms: now_ms(),
        })
        .await?;
    st.store.healing.wake_repair.notify_waiters();
    Ok(Json(RepairNowResponse { segments }))
}

pub(super) async fn scrub_status(State(st): State<ApiState>) -> ApiResult<Json<ScrubStatus>> {
    Ok(Json(health::scrub_status(&st.store).await?))
}

pub(super) async fn scrub_now(
    State(st): State<ApiState>,
    Json(req): Json<ScrubRequest>,
) -> ApiResult<Json<ScrubStatus>> {
    st.store
        .propose(CommandV1::RequestScrub {
            deep: req.deep,
            time_ms: now_ms(),
        })
        .await?;
    st.store.healing.wake_scrub.notify_waiters();
    Ok(Json(health::scrub_status(&st.store).await?))
}

pub(super) async fn impact(
    State(st): State<ApiState>,
    Query(q): Query<ImpactQuery>,
) -> ApiResult<Json<ImpactResponse>> {
    let states = st
        .store
        .meta
        .disk_states()
        .await
        .map_err(StoreError::from)?;
    let disks: Vec<_> = match (q.disk, q.node) {
        (Some(d), None) => {
            if !states.iter().any(|s| s.disk_id == d) {
                return Err(StoreError::BadRequest(format!("no disk {d} in the cluster")).into());
            }
            vec![d]
        }
        (None, Some(n)) => {
            let v: Vec<_> = states
                .iter()
                .filter(|s| s.node_id == n)
                .map(|s| s.disk_id)
                .collect();
            if v.is_empty() {
                return Err(StoreError::BadRequest(format!("machine {n} has no disks")).into());
            }
            v
        }
        _ => {
            return Err(
                StoreError::BadRequest("give exactly one of disk=ID and node=ID".into()).into(),
            )
        }
    };
    let impact = st
        .store
        .meta
        .impact(&disks, 20)
        .await
        .map_err(StoreError::from)?;
    Ok(Json(ImpactResponse { disks, impact }))
}

fn disk_id(text: &str) -> Result<wormfs_parts::ids::DiskId, StoreError> {
    text.parse::<uuid::Uuid>()
        .map(wormfs_parts::ids::DiskId)
        .map_err(|_| StoreError::BadRequest(format!("{text:?} is not a disk id")))
}

pub(super) async fn disk_add(
    State(st): State<ApiState>,
    Json(req): Json<DiskPathRequest>,
) -> ApiResult<Json<DiskChange>> {
    Ok(Json(
        st.store.add_disk(std::path::Path::new(&req.path)).await?,
    ))
}

pub(super) async fn disk_drain(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<DiskChange>> {
    Ok(Json(st.store.drain_disk(disk_id(&id)?).await?))
}

pub(super) async fn disk_remove(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<ForceQuery>,
) -> ApiResult<Json<DiskChange>> {
    Ok(Json(st.store.remove_disk(disk_id(&id)?, q.force).await?))
}

pub(super) async fn disk_replace(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    Json(req): Json<DiskPathRequest>,
) -> ApiResult<Json<DiskChange>> {
    Ok(Json(
        st.store
            .replace_disk(disk_id(&id)?, std::path::Path::new(&req.path))
            .await?,
    ))
}

pub(super) async fn rebalance(
    State(st): State<ApiState>,
    Query(q): Query<RebalanceQuery>,
) -> ApiResult<Json<RebalanceReport>> {
    let mut r = crate::healing::rebalance::rebalance(&st.store, !q.dry_run).await?;
    if !q.dry_run && r.parts_queued > 0 {
        // Further rounds follow in the background until every disk is within the spread.
        let store = st.store.clone();
        tokio::spawn(crate::healing::rebalance::rebalance_until_even(store));
        r.message
            .push_str("; more rounds follow until every disk is within 5%");
    }
    Ok(Json(r))
}
