//! The node API, `/api/v1`: streaming put and get, namespace operations, status; token auth.
//!
//! Every route is in one table, [`routes`], which [`router`] serves and docs/api.md documents
//! (a test, `doc_check`, compares the two). Every query, body and JSON answer is a type of
//! [`types`], shared with the CLI. Errors are mapped to statuses in one place ([`ApiError`]);
//! every error body is an [`types::ErrorBody`], `{"error": "...", "kind": "..."}`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};

use crate::consensus::ConsensusError;
use crate::store::{Store, StoreError};
use types::{ErrorBody, ErrorKind};
use wormfs_meta::command::Rejection;
use wormfs_parts::tree_path::TreePath;

mod accounts;
mod cluster;
#[cfg(test)]
mod doc_check;
mod drain;
mod events;
mod files;
mod healing;
mod locks;
mod namespace;
mod notify;
mod page;
mod scrape;
mod session;
mod trash;
pub mod types;

/// Shared state of the API.
#[derive(Clone)]
pub struct ApiState {
    /// The engine.
    pub store: Arc<Store>,
    /// The cluster's accounts: the API tokens accepted.
    pub accounts: Arc<crate::accounts::Accounts>,
    /// The drop folders' ingest status.
    pub drops: Arc<crate::drop_folders::IngestStatus>,
    /// `/metrics`: its token and the figures read at scrape time.
    pub metrics: Arc<crate::metrics::Exporter>,
    /// The admin page's sessions (this node's, in memory).
    pub sessions: Arc<crate::admin_session::Sessions>,
    /// The tree's changes, numbered, for clients that cache it (`GET /api/v1/changes`).
    pub changes: Arc<crate::changes::ChangeFeed>,
    /// Files recently read through `GET /api/v1/files` and their opened parts, while the
    /// metadata has not changed (a stream of range requests looks the path up once).
    pub reads: Arc<crate::api::ReadCache>,
    /// The media servers told about changes (`[[media_servers]]`).
    pub media: Arc<crate::media_notify::MediaNotify>,
}

/// The API's recent reads: the WebDAV face's lookups, kept apart from its own.
#[derive(Default)]
pub struct ReadCache(pub(crate) crate::webdav_lookups::Lookups);

/// An API error with its status.
pub struct ApiError(StatusCode, ErrorKind, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.2,
            kind: self.1,
            locks: Vec::new(),
        };
        (self.0, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        let (s, k) = match &e {
            StoreError::Rejected(r) => match r {
                Rejection::NotFound(_) => (StatusCode::NOT_FOUND, ErrorKind::NotFound),
                Rejection::AlreadyExists(_) => (StatusCode::CONFLICT, ErrorKind::AlreadyExists),
                Rejection::NotADirectory(_)
                | Rejection::IsADirectory(_)
                | Rejection::NotEmpty(_) => (StatusCode::CONFLICT, ErrorKind::Conflict),
                Rejection::NoIntent(_)
                | Rejection::PartsMaybeSwept(_)
                | Rejection::Changed(_)
                | Rejection::AlreadyInitialised
                | Rejection::Claimed(_) => (StatusCode::CONFLICT, ErrorKind::Conflict),
                Rejection::InvalidPath(_) | Rejection::Invalid(_) => {
                    (StatusCode::BAD_REQUEST, ErrorKind::BadRequest)
                }
                Rejection::Retained { .. } => (StatusCode::FORBIDDEN, ErrorKind::Retained),
            },
            StoreError::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorKind::BadRequest),
            StoreError::Consensus(ConsensusError::NoQuorum(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::NoQuorum)
            }
            StoreError::Consensus(ConsensusError::ReadOnly(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::ReadOnly)
            }
            StoreError::Consensus(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Unavailable),
            StoreError::Unavailable(_) => (
                StatusCode::INSUFFICIENT_STORAGE,
                ErrorKind::InsufficientStorage,
            ),
            StoreError::Meta(_) | StoreError::Other(_) => {
                tracing::error!("internal error: {msg}");
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Internal)
            }
        };
        ApiError(s, k, msg)
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, ErrorKind::BadRequest, msg.into())
}

fn internal(msg: impl ToString) -> ApiError {
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Internal,
        msg.to_string(),
    )
}

fn parse_path(p: &str) -> Result<TreePath, ApiError> {
    TreePath::parse(p).map_err(|e| bad(e.to_string()))
}

type ApiResult<T> = Result<T, ApiError>;

/// The HTTP methods the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// GET (a GET route also answers HEAD, with the headers only).
    Get,
    /// HEAD.
    Head,
    /// PUT.
    Put,
    /// POST.
    Post,
    /// DELETE.
    Delete,
}

impl Verb {
    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Head => "HEAD",
            Verb::Put => "PUT",
            Verb::Post => "POST",
            Verb::Delete => "DELETE",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Head => MethodFilter::HEAD,
            Verb::Put => MethodFilter::PUT,
            Verb::Post => MethodFilter::POST,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// What a request or an answer carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Nothing.
    Empty,
    /// Raw bytes (a file's content).
    Bytes,
    /// JSON: the name of the type in [`types`].
    Json(&'static str),
}

/// One route of the API: what [`router`] serves and docs/api.md documents.
pub struct Route {
    /// The method.
    pub verb: Verb,
    /// The path, in axum's syntax (`{*path}`: the rest of the path, a WormFS path).
    pub path: &'static str,
    /// Whether it needs the token (`Authorization: Bearer ...`) or an admin page session.
    pub auth: bool,
    /// The type of its query parameters, if it takes any.
    pub query: Option<&'static str>,
    /// Its request body.
    pub body: Payload,
    /// Its successful answer's body.
    pub answer: Payload,
    handler: MethodRouter<ApiState>,
}

/// The last segment of a type's name (`wormfs_server::api::types::PutQuery` is `PutQuery`).
fn type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

impl Route {
    /// A route that needs the token.
    fn new<H: Handler<T, ApiState>, T: 'static>(verb: Verb, path: &'static str, h: H) -> Self {
        Route {
            verb,
            path,
            auth: true,
            query: None,
            body: Payload::Empty,
            answer: Payload::Empty,
            handler: on(verb.filter(), h),
        }
    }

    /// A route open to anyone.
    fn open<H: Handler<T, ApiState>, T: 'static>(verb: Verb, path: &'static str, h: H) -> Self {
        Route {
            auth: false,
            ..Self::new(verb, path, h)
        }
    }

    fn query<Q>(self) -> Self {
        Route {
            query: Some(type_name::<Q>()),
            ..self
        }
    }

    fn body<B>(self) -> Self {
        Route {
            body: Payload::Json(type_name::<B>()),
            ..self
        }
    }

    fn body_bytes(self) -> Self {
        Route {
            body: Payload::Bytes,
            ..self
        }
    }

    fn answer<A>(self) -> Self {
        Route {
            answer: Payload::Json(type_name::<A>()),
            ..self
        }
    }

    fn answer_bytes(self) -> Self {
        Route {
            answer: Payload::Bytes,
            ..self
        }
    }
}

/// Every route of the API.
pub fn routes() -> Vec<Route> {
    use types::*;
    use Verb::*;
    vec![
        Route::open(Get, "/", page::index).answer_bytes(),
        Route::open(Get, "/admin.js", page::script).answer_bytes(),
        Route::open(Get, "/admin.css", page::style).answer_bytes(),
        Route::open(Post, "/api/v1/session", session::login)
            .body::<LoginRequest>()
            .answer::<SessionInfo>(),
        Route::open(Get, "/api/v1/session", session::whoami).answer::<SessionInfo>(),
        Route::new(Delete, "/api/v1/session", session::logout),
        Route::open(Get, "/api/v1/health", health).answer::<HealthResponse>(),
        // Outside /api/v1, with its own token (admin.metrics_token_file) or loopback only.
        Route::open(Get, "/metrics", scrape::metrics).answer_bytes(),
        Route::new(Get, "/api/v1/status", cluster::status).answer::<StatusResponse>(),
        Route::new(Get, "/api/v1/cluster", cluster::cluster).answer::<ClusterResponse>(),
        Route::new(Get, "/api/v1/disks", cluster::disks).answer::<DisksResponse>(),
        Route::new(Get, "/api/v1/ingest", cluster::ingest_status).answer::<IngestStatusResponse>(),
        Route::new(Get, "/api/v1/files/{*path}", files::get_file).answer_bytes(),
        Route::new(Head, "/api/v1/files/{*path}", files::get_file),
        Route::new(Put, "/api/v1/files/{*path}", files::put_file)
            .query::<PutQuery>()
            .body_bytes()
            .answer::<WriteResponse>(),
        Route::new(Delete, "/api/v1/files/{*path}", files::delete)
            .query::<RmQuery>()
            .answer::<BrokenLocks>(),
        Route::new(Post, "/api/v1/append/{*path}", files::append)
            .query::<LocksQuery>()
            .body_bytes()
            .answer::<WriteResponse>(),
        Route::new(Get, "/api/v1/stat", namespace::stat_root).answer::<StatResponse>(),
        Route::new(Get, "/api/v1/stat/{*path}", namespace::stat).answer::<StatResponse>(),
        Route::new(Get, "/api/v1/list", namespace::list_root).answer::<ListResponse>(),
        Route::new(Get, "/api/v1/list/{*path}", namespace::list).answer::<ListResponse>(),
        Route::new(Post, "/api/v1/mkdir/{*path}", namespace::mkdir).query::<MkdirQuery>(),
        Route::new(Post, "/api/v1/mv", namespace::mv)
            .query::<LocksQuery>()
            .body::<MvRequest>()
            .answer::<BrokenLocks>(),
        Route::new(Get, "/api/v1/policy", namespace::policy_get_root).answer::<PolicyResponse>(),
        Route::new(Get, "/api/v1/changes", namespace::changes)
            .query::<ChangesQuery>()
            .answer::<ChangesResponse>(),
        Route::new(Put, "/api/v1/policy", namespace::policy_set_root).body::<PolicyRequest>(),
        Route::new(Get, "/api/v1/policy/{*path}", namespace::policy_get).answer::<PolicyResponse>(),
        Route::new(Put, "/api/v1/policy/{*path}", namespace::policy_set).body::<PolicyRequest>(),
        Route::new(Put, "/api/v1/retention", trash::retention_set_root).body::<RetentionRequest>(),
        Route::new(Put, "/api/v1/retention/{*path}", trash::retention_set)
            .body::<RetentionRequest>(),
        Route::new(Get, "/api/v1/trash", trash::list)
            .query::<TrashQuery>()
            .answer::<TrashResponse>(),
        Route::new(Post, "/api/v1/trash/restore", trash::restore)
            .body::<TrashRestoreRequest>()
            .answer::<TrashRestoreResponse>(),
        Route::new(Post, "/api/v1/trash/empty", trash::empty)
            .body::<TrashEmptyRequest>()
            .answer::<TrashEmptyResponse>(),
        Route::new(Get, "/api/v1/health/report", healing::health_report).answer::<HealthReport>(),
        Route::new(Get, "/api/v1/events", events::events)
            .query::<EventsQuery>()
            .answer::<EventsResponse>(),
        Route::new(Get, "/api/v1/alerts", events::alerts).answer::<AlertsResponse>(),
        Route::new(Post, "/api/v1/alerts/test", events::alerts_test).answer::<AlertTestResponse>(),
        Route::new(Post, "/api/v1/notify/test", notify::test).answer::<NotifyTestResponse>(),
        Route::new(Get, "/api/v1/repair", healing::repair_status).answer::<RepairStatus>(),
        Route::new(Post, "/api/v1/repair/pause", healing::repair_pause).answer::<RepairStatus>(),
        Route::new(Post, "/api/v1/repair/resume", healing::repair_resume).answer::<RepairStatus>(),
        Route::new(Post, "/api/v1/repair/now", healing::repair_now)
            .body::<RepairNowRequest>()
            .answer::<RepairNowResponse>(),
        Route::new(Get, "/api/v1/scrub", healing::scrub_status).answer::<ScrubStatus>(),
        Route::new(Post, "/api/v1/scrub", healing::scrub_now)
            .body::<ScrubRequest>()
            .answer::<ScrubStatus>(),
        Route::new(Post, "/api/v1/disks", healing::disk_add)
            .body::<DiskPathRequest>()
            .answer::<DiskChange>(),
        Route::new(Post, "/api/v1/disks/{id}/drain", healing::disk_drain).answer::<DiskChange>(),
        Route::new(Post, "/api/v1/disks/{id}/remove", healing::disk_remove)
            .query::<ForceQuery>()
            .answer::<DiskChange>(),
        Route::new(Post, "/api/v1/disks/{id}/replace", healing::disk_replace)
            .body::<DiskPathRequest>()
            .answer::<DiskChange>(),
        Route::new(Post, "/api/v1/rebalance", healing::rebalance)
            .query::<RebalanceQuery>()
            .answer::<RebalanceReport>(),
        Route::new(Get, "/api/v1/impact", healing::impact)
            .query::<ImpactQuery>()
            .answer::<ImpactResponse>(),
        Route::new(Post, "/api/v1/admin/snapshot", cluster::admin_snapshot)
            .answer::<SnapshotResponse>(),
        Route::new(Post, "/api/v1/admin/sweep", cluster::admin_sweep).answer::<SweepResponse>(),
        Route::new(Post, "/api/v1/admin/backup", cluster::admin_backup).answer::<BackupStatus>(),
        Route::new(Get, "/api/v1/users", accounts::users).answer::<UsersResponse>(),
        Route::new(Post, "/api/v1/users", accounts::user_add)
            .body::<UserRequest>()
            .answer::<UserAnswer>(),
        Route::new(Put, "/api/v1/users/{name}", accounts::user_change)
            .body::<UserChange>()
            .answer::<UserAnswer>(),
        Route::new(Delete, "/api/v1/users/{name}", accounts::user_remove).answer::<AccountChange>(),
        Route::new(Get, "/api/v1/tokens", accounts::tokens).answer::<TokensResponse>(),
        Route::new(Post, "/api/v1/tokens", accounts::token_create)
            .body::<TokenRequest>()
            .answer::<TokenCreated>(),
        Route::new(Delete, "/api/v1/tokens/{name}", accounts::token_revoke)
            .answer::<AccountChange>(),
        Route::new(
            Post,
            "/api/v1/admin/nodes/{id}/remove",
            cluster::admin_remove_node,
        )
        .query::<RemoveQuery>()
        .answer::<RemoveResponse>(),
    ]
}

/// Builds the router from [`routes`].
pub fn router(state: ApiState) -> Router {
    let (open, authed): (Vec<Route>, Vec<Route>) = routes().into_iter().partition(|r| !r.auth);
    // Routes on one path with several methods are merged by axum.
    let add = |router: Router<ApiState>, r: Route| router.route(r.path, r.handler);
    let authed = authed
        .into_iter()
        .fold(Router::new(), add)
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    open.into_iter()
        .fold(Router::new(), add)
        .merge(authed)
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                ErrorKind::NotFound,
                "no such API endpoint".into(),
            )
        })
        .with_state(state)
        .layer(middleware::from_fn(drain::drain_refused_body))
        .layer(middleware::from_fn(trace_request))
}

async fn health(State(st): State<ApiState>) -> Response {
    let h = crate::alerts::node_health::check(&st.store).await;
    let code = match h.status {
        types::NodeHealth::Down => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    (code, Json(h)).into_response()
}

async fn trace_request(req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    // The route's template, never the raw path: the metrics' labels stay few.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let method = req.method().clone();
    let span = tracing::info_span!(
        "api",
        method = %method,
        path = %req.uri().path(),
        token = tracing::field::Empty
    );
    let res = next.run(req).instrument(span.clone()).await;
    let status = res.status().as_u16();
    crate::metrics::record_request("api", method.as_str(), &route, status, started.elapsed());
    span.in_scope(|| tracing::debug!(status, "request done"));
    res
}

/// Who made a request: the token it carried, or the admin page session whose cookie it
/// carried (set by the auth layer).
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's name.
    pub token_name: String,
    /// The token's hash (empty for an admin page session opened with a password).
    pub token_hash: String,
    /// May only read.
    pub read_only: bool,
}

/// A 401 answer saying `why`, asking for a bearer token.
pub(super) fn unauthorized(why: &str) -> Response {
    let mut r = ApiError(
        StatusCode::UNAUTHORIZED,
        ErrorKind::Unauthorized,
        why.into(),
    )
    .into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

async fn auth(State(st): State<ApiState>, mut req: Request, next: Next) -> Response {
    let reads = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let Some(token) = bearer else {
        // No token: the admin page's session cookie, if any.
        let Some(id) = crate::admin_session::cookie_value(req.headers()) else {
            return unauthorized("missing API token (Authorization: Bearer ...)");
        };
        let Some(session) = st.sessions.get(&id) else {
            return unauthorized(
                "the admin page's session ended (or this node restarted): log in again",
            );
        };
        match session::still_valid(&st, &session).await {
            Ok(true) => {}
            Ok(false) => {
                st.sessions.end(&id);
                tracing::info!(
                    who = session.name(),
                    "admin page: session ended: its user or token changed"
                );
                return unauthorized(
                    "the admin page's session ended: its user or token changed; log in again",
                );
            }
            Err(e) => return e.into_response(),
        }
        if !reads {
            let given = req
                .headers()
                .get(crate::admin_session::CSRF_HEADER)
                .and_then(|v| v.to_str().ok());
            if !crate::admin_session::csrf_matches(&session, given) {
                tracing::info!(who = session.name(), method = %req.method(), "admin page: refused: no valid CSRF token");
                return ApiError(
                    StatusCode::FORBIDDEN,
                    ErrorKind::Forbidden,
                    "missing or wrong CSRF token (X-CSRF-Token): reload the admin page".into(),
                )
                .into_response();
            }
            // A read-only session may still log out.
            let logout = *req.method() == axum::http::Method::DELETE
                && req.uri().path() == "/api/v1/session";
            if session.read_only && !logout {
                return ApiError(
                    StatusCode::FORBIDDEN,
                    ErrorKind::Forbidden,
                    format!("the session of {:?} may only look", session.name()),
                )
                .into_response();
            }
        }
        tracing::Span::current().record("token", session.name());
        req.extensions_mut().insert(Caller {
            token_name: session.name().to_owned(),
            token_hash: match &session.login {
                crate::admin_session::Login::Token { hash, .. } => hash.clone(),
                crate::admin_session::Login::User { .. } => String::new(),
            },
            read_only: session.read_only,
        });
        return next.run(req).await;
    };
    match st.accounts.check_token(&token).await {
        Ok(Ok(access)) => {
            if access.read_only && !reads {
                return ApiError(
                    StatusCode::FORBIDDEN,
                    ErrorKind::Forbidden,
                    format!("the API token {:?} may only read", access.name),
                )
                .into_response();
            }
            tracing::Span::current().record("token", access.name.as_str());
            req.extensions_mut().insert(Caller {
                token_name: access.name,
                token_hash: crate::accounts::token_hash(&token),
                read_only: access.read_only,
            });
            next.run(req).await
        }
        Ok(Err(crate::accounts::TokenRefusal::Revoked)) => {
            unauthorized("this API token was revoked")
        }
        Ok(Err(crate::accounts::TokenRefusal::Unknown)) => unauthorized("wrong API token"),
        Err(e) => ApiError::from(StoreError::from(e)).into_response(),
    }
}
