//! `GET /metrics`: the Prometheus text of [`crate::metrics`], behind its own bearer token
//! (`admin.metrics_token_file`) or, without one, for loopback clients only.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::types::ErrorKind;
use super::{ApiError, ApiState};
use crate::metrics::Refusal;

/// The content type of Prometheus's text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) async fn metrics(State(st): State<ApiState>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match st.metrics.check(peer, auth) {
        Err(Refusal::Unauthorized(why)) => super::unauthorized(why),
        Err(Refusal::Forbidden(why)) => {
            ApiError(StatusCode::FORBIDDEN, ErrorKind::Forbidden, why).into_response()
        }
        Ok(()) => match st.metrics.render(&st.store, &st.drops).await {
            Some(text) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response(),
            None => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Unavailable,
                "no metrics recorder in this process (another was installed first)".into(),
            )
            .into_response(),
        },
    }
}
