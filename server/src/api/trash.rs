//! The trash and retentions: list, restore, empty; a directory's retention.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::locks::{honour_locks, with_parent};

use super::types::{
    RetentionRequest, TrashEmptyRequest, TrashEmptyResponse, TrashItem, TrashQuery, TrashResponse,
    TrashRestoreRequest, TrashRestoreResponse,
};
use super::{bad, parse_path, ApiResult, ApiState};
use crate::store::StoreError;
use wormfs_meta::command::CommandV1;

pub(super) async fn list(
    State(st): State<ApiState>,
    Query(q): Query<TrashQuery>,
) -> ApiResult<Json<TrashResponse>> {
    let under = q.path.as_deref().map(parse_path).transpose()?;
    let entries = crate::trash::list(&st.store, under.as_ref()).await?;
    let totals = st
        .store
        .meta
        .trash_totals()
        .await
        .map_err(StoreError::from)?;
    Ok(Json(TrashResponse {
        entries: entries.into_iter().map(TrashItem::from).collect(),
        totals: totals.into(),
        trash_days: st.store.retention.trash_ms as f64 / 86_400_000.0,
    }))
}

pub(super) async fn restore(
    State(st): State<ApiState>,
    Json(b): Json<TrashRestoreRequest>,
) -> ApiResult<Response> {
    let path = b.path.as_deref().map(parse_path).transpose()?;
    let entry = crate::trash::find(&st.store, path.as_ref(), b.id).await?;
    let dest = parse_path(b.to.as_deref().unwrap_or(&entry.path))?;
    // A WebDAV lock on the destination (or its folder) is in the way, as for a PUT there.
    if let Err(r) = honour_locks(&st.store, &with_parent(&dest, false), false).await {
        return Ok(r);
    }
    let (entry, to) = crate::trash::restore(&st.store, None, Some(entry.id), Some(&dest)).await?;
    Ok(Json(TrashRestoreResponse {
        id: entry.id,
        from: entry.path,
        to,
    })
    .into_response())
}

pub(super) async fn empty(
    State(st): State<ApiState>,
    Json(b): Json<TrashEmptyRequest>,
) -> ApiResult<Json<TrashEmptyResponse>> {
    let older = match b.older_than_days {
        None => None,
        Some(d) if d.is_finite() && d >= 0.0 => Some((d * 86_400_000.0) as u64),
        Some(d) => return Err(bad(format!("older_than_days must be 0 or more, got {d}"))),
    };
    let (entries, bytes) = crate::trash::empty(&st.store, older).await?;
    Ok(Json(TrashEmptyResponse { entries, bytes }))
}

pub(super) async fn retention_set_root(
    st: State<ApiState>,
    b: Json<RetentionRequest>,
) -> ApiResult<StatusCode> {
    retention_set(st, Path(String::new()), b).await
}

pub(super) async fn retention_set(
    State(st): State<ApiState>,
    Path(p): Path<String>,
    Json(b): Json<RetentionRequest>,
) -> ApiResult<StatusCode> {
    let path = parse_path(&p)?;
    let retain_ms = match b.retain.as_deref() {
        None => None,
        Some(s) => crate::trash::parse_retain(s).map_err(bad)?,
    };
    st.store
        .propose(CommandV1::SetRetention {
            path: path.to_string(),
            retain_ms,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
