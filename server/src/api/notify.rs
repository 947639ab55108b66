//! The media servers told about changes (`[[media_servers]]`, docs/media-servers.md): a test
//! request to each.

use axum::extract::State;
use axum::Json;

use super::types::NotifyTestResponse;
use super::ApiState;

/// `POST /api/v1/notify/test`: one harmless request to each media server of this node, and
/// what each said.
pub(super) async fn test(State(st): State<ApiState>) -> Json<NotifyTestResponse> {
    Json(NotifyTestResponse {
        servers: st.media.test().await,
    })
}
