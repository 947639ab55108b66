//! The cluster's events and this machine's alerts.

use axum::extract::{Query, State};
use axum::Json;

use super::types::{AlertTestResponse, AlertsResponse, EventsQuery, EventsResponse};
use super::{ApiResult, ApiState};
use crate::store::StoreError;

/// Events returned when the query names no limit.
const DEFAULT_LIMIT: u32 = 100;
/// The most events one answer holds.
const MAX_LIMIT: u32 = 1000;

pub(super) async fn events(
    State(st): State<ApiState>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<EventsResponse>> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let events = st
        .store
        .meta
        .events(limit, q.before, q.after)
        .await
        .map_err(StoreError::from)?;
    Ok(Json(EventsResponse { events }))
}

pub(super) async fn alerts(State(st): State<ApiState>) -> Json<AlertsResponse> {
    Json(st.store.alerts.view())
}

pub(super) async fn alerts_test(State(st): State<ApiState>) -> Json<AlertTestResponse> {
    Json(AlertTestResponse {
        deliveries: crate::alerts::send_test(&st.store).await,
    })
}
