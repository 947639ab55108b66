//! The admin page's login, logout and "who am I": sessions of [`crate::admin_session`] opened
//! with an admin user's password or an API token, handed to the browser as a cookie.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::types::{ErrorKind, LoginRequest, SessionInfo};
use super::{bad, ApiError, ApiState};
use crate::accounts::TokenRefusal;
use crate::admin_session::{self, Login, Session};
use crate::store::StoreError;
use wormfs_meta::command::AccountRole;

fn info(st: &ApiState, s: &Session) -> SessionInfo {
    SessionInfo {
        name: s.name().to_owned(),
        login: match s.login {
            Login::User { .. } => "user",
            Login::Token { .. } => "token",
        }
        .into(),
        read_only: s.read_only,
        csrf_token: s.csrf.clone(),
        expires_ms: s.expires_ms,
        node_id: st.store.node_id,
    }
}

fn refused(status: StatusCode, kind: ErrorKind, why: impl Into<String>) -> Response {
    ApiError(status, kind, why.into()).into_response()
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /api/v1/session`: a login; the answer sets the session cookie.
pub(super) async fn login(
    State(st): State<ApiState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Json(b): Json<LoginRequest>,
) -> Response {
    let peer: IpAddr = peer.map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |Extension(c)| c.0.ip());
    let token = b.token.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let user = b.user.as_deref().map(str::trim).filter(|u| !u.is_empty());
    let opened = match (token, user, b.password.as_deref()) {
        (Some(token), None, None) => match st.accounts.check_token(token).await {
            Ok(Ok(access)) => st.sessions.open(
                Login::Token {
                    name: access.name,
                    hash: crate::accounts::token_hash(token),
                },
                access.read_only,
            ),
            Ok(Err(TokenRefusal::Revoked)) => {
                return refused(
                    StatusCode::UNAUTHORIZED,
                    ErrorKind::Unauthorized,
                    "this API token was revoked",
                )
            }
            Ok(Err(TokenRefusal::Unknown)) => {
                return refused(
                    StatusCode::UNAUTHORIZED,
                    ErrorKind::Unauthorized,
                    "wrong API token",
                )
            }
            Err(e) => return ApiError::from(StoreError::from(e)).into_response(),
        },
        (None, Some(user), Some(password)) => {
            match st.accounts.check_password(user, password, peer).await {
                Ok(Ok((AccountRole::Admin, fingerprint))) => st.sessions.open(
                    Login::User {
                        name: user.to_owned(),
                        fingerprint,
                    },
                    false,
                ),
                Ok(Ok((role, _))) => {
                    tracing::info!(user, role = role.as_str(), %peer, "admin page: login refused: not an admin");
                    return refused(
                        StatusCode::FORBIDDEN,
                        ErrorKind::Forbidden,
                        format!(
                            "user {user} has the role {} (a WebDAV file user): the admin page \
                             needs a user with the admin role, or an API token",
                            role.as_str()
                        ),
                    );
                }
                Ok(Err(r)) => {
                    let kind = if r.status == StatusCode::TOO_MANY_REQUESTS {
                        ErrorKind::Throttled
                    } else if r.status == StatusCode::UNAUTHORIZED {
                        ErrorKind::Unauthorized
                    } else {
                        ErrorKind::Unavailable
                    };
                    return refused(r.status, kind, r.reason);
                }
                Err(e) => return ApiError::from(StoreError::from(e)).into_response(),
            }
        }
        _ => {
            return bad("give user and password, or token (an API token), not both").into_response()
        }
    };
    let (id, s) = opened;
    tracing::info!(who = s.name(), read_only = s.read_only, %peer, "admin page: logged in");
    let mut r = Json(info(&st, &s)).into_response();
    if let Ok(v) = HeaderValue::from_str(&admin_session::set_cookie(&id)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    no_store(r)
}

/// `GET /api/v1/session`: the session of this request's cookie, with its CSRF token; 204
/// without one (the page asks at load, and a browser logs every 401 as an error). A bearer
/// token is answered as itself (no session, no CSRF token), a wrong one 401.
pub(super) async fn whoami(State(st): State<ApiState>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    if let Some(token) = bearer {
        return match st.accounts.check_token(&token).await {
            Ok(Ok(a)) => no_store(
                Json(SessionInfo {
                    name: a.name,
                    login: "bearer".into(),
                    read_only: a.read_only,
                    csrf_token: String::new(),
                    expires_ms: 0,
                    node_id: st.store.node_id,
                })
                .into_response(),
            ),
            Ok(Err(_)) => refused(
                StatusCode::UNAUTHORIZED,
                ErrorKind::Unauthorized,
                "wrong or revoked API token",
            ),
            Err(e) => ApiError::from(StoreError::from(e)).into_response(),
        };
    }
    let Some(id) = admin_session::cookie_value(&headers) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let Some(s) = st.sessions.get(&id) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    match still_valid(&st, &s).await {
        Ok(true) => no_store(Json(info(&st, &s)).into_response()),
        Ok(false) => {
            st.sessions.end(&id);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `DELETE /api/v1/session`: logout; the cookie is cleared.
pub(super) async fn logout(State(st): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(id) = admin_session::cookie_value(&headers) {
        st.sessions.end(&id);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&admin_session::clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Whether what opened session `s` still holds: the token is live (and no more able than it
/// was), the user still has the admin role and the same password.
pub(super) async fn still_valid(st: &ApiState, s: &Session) -> Result<bool, ApiError> {
    Ok(match &s.login {
        Login::Token { hash, .. } => match st
            .accounts
            .check_token_hash(hash)
            .await
            .map_err(StoreError::from)?
        {
            Ok(a) => !a.read_only || s.read_only,
            Err(_) => false,
        },
        Login::User { name, fingerprint } => matches!(
            st.accounts.login_view(name).await.map_err(StoreError::from)?,
            Some((AccountRole::Admin, f)) if &f == fingerprint
        ),
    })
}
