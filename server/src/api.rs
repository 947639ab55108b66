//! The node API, `/api/v1`: streaming put and get, namespace operations, status; token auth.
//!
//! Errors are mapped to statuses in one place ([`ApiError`]); every error body is JSON
//! `{"error": "...", "kind": "..."}`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::io::StreamReader;

use crate::consensus::ConsensusError;
use crate::ingest::IngestRequest;
use crate::read::FileReader;
use crate::store::{Store, StoreError};
use wormfs_meta::command::{Conflict, Rejection, SourceIdentity};
use wormfs_meta::EntryKind;
use wormfs_parts::placement::domains_tolerated;
use wormfs_parts::policy::Policy;
use wormfs_parts::tree_path::TreePath;

/// Shared state of the API.
#[derive(Clone)]
pub struct ApiState {
    /// The engine.
    pub store: Arc<Store>,
    /// The bearer token.
    pub token: Arc<String>,
    /// The drop folders' ingest status.
    pub drops: Arc<crate::drop_folders::IngestStatus>,
}

/// An API error with its status.
pub struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.2, "kind": self.1}))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        let (s, k) = match &e {
            StoreError::Rejected(r) => match r {
                Rejection::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
                Rejection::AlreadyExists(_) => (StatusCode::CONFLICT, "already_exists"),
                Rejection::NotADirectory(_)
                | Rejection::IsADirectory(_)
                | Rejection::NotEmpty(_) => (StatusCode::CONFLICT, "conflict"),
                Rejection::NoIntent(_) | Rejection::Changed(_) | Rejection::AlreadyInitialised => {
                    (StatusCode::CONFLICT, "conflict")
                }
                Rejection::InvalidPath(_) | Rejection::Invalid(_) => {
                    (StatusCode::BAD_REQUEST, "bad_request")
                }
            },
            StoreError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            StoreError::Consensus(ConsensusError::NoQuorum(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "no_quorum")
            }
            StoreError::Consensus(ConsensusError::ReadOnly(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "read_only")
            }
            StoreError::Consensus(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            StoreError::Unavailable(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            StoreError::Meta(_) | StoreError::Other(_) => {
                tracing::error!("internal error: {msg}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        ApiError(s, k, msg)
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "bad_request", msg.into())
}

fn parse_path(p: &str) -> Result<TreePath, ApiError> {
    TreePath::parse(p).map_err(|e| bad(e.to_string()))
}

type ApiResult<T> = Result<T, ApiError>;

/// Builds the router.
pub fn router(state: ApiState) -> Router {
    let authed = Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/disks", get(disks))
        .route("/api/v1/ingest", get(ingest_status))
        .route(
            "/api/v1/files/{*path}",
            get(get_file).head(get_file).put(put_file).delete(delete),
        )
        .route("/api/v1/append/{*path}", post(append))
        .route("/api/v1/stat", get(stat_root))
        .route("/api/v1/stat/{*path}", get(stat))
        .route("/api/v1/list", get(list_root))
        .route("/api/v1/list/{*path}", get(list))
        .route("/api/v1/mkdir/{*path}", post(mkdir))
        .route("/api/v1/mv", post(mv))
        .route("/api/v1/policy", get(policy_get_root).put(policy_set_root))
        .route("/api/v1/policy/{*path}", get(policy_get).put(policy_set))
        .route("/api/v1/admin/snapshot", post(admin_snapshot))
        .route("/api/v1/admin/sweep", post(admin_sweep))
        .route("/api/v1/admin/nodes/{id}/remove", post(admin_remove_node))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route(
            "/api/v1/health",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .merge(authed)
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such API endpoint".into(),
            )
        })
        .with_state(state)
        .layer(middleware::from_fn(trace_request))
}

async fn trace_request(req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let span = tracing::info_span!("api", method = %req.method(), path = %req.uri().path());
    let res = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = res.status().as_u16(), "request done"));
    res
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.trim().as_bytes(), st.token.as_bytes()) => {
            next.run(req).await
        }
        Some(_) => ApiError(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong API token".into(),
        )
        .into_response(),
        None => {
            let mut r = ApiError(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing API token (Authorization: Bearer ...)".into(),
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

async fn cluster(State(st): State<ApiState>) -> ApiResult<Json<serde_json::Value>> {
    let nodes = st.store.meta.nodes().await.map_err(StoreError::from)?;
    let view = st.store.consensus.view(nodes).await;
    Ok(Json(json!(view)))
}

async fn status(State(st): State<ApiState>) -> ApiResult<Json<serde_json::Value>> {
    let t = st.store.meta.totals().await.map_err(StoreError::from)?;
    let disks = st.store.disk_reports().await?;
    // Folders on one filesystem share its space: count each filesystem once.
    let mut seen = std::collections::HashSet::new();
    let raw: u64 = disks
        .iter()
        .filter(|d| seen.insert((d.node_id, d.filesystem)))
        .map(|d| d.space.total_bytes.saturating_sub(d.space.free_bytes))
        .sum();
    let raft = st.store.consensus.status();
    let c = &st.store.counters;
    let health = if t.missing_parts > 0
        || disks
            .iter()
            .any(|d| d.state != wormfs_parts::disk::DiskState::Active)
    {
        "degraded"
    } else {
        "healthy"
    };
    Ok(Json(json!({
        "cluster_id": st.store.cluster_id,
        "node_id": st.store.node_id,
        "health": health,
        "files": t.files,
        "directories": t.dirs,
        "logical_bytes": t.logical_bytes,
        "segments": t.segments,
        "missing_parts": t.missing_parts,
        "ingests_in_progress": t.intents,
        "disks": disks.len(),
        "disks_active": st.store.writable_disks(),
        "disk_bytes_used": raw,
        "read_only": st.store.consensus.read_only(),
        "raft": raft,
        "counters": {
            "ingests_committed": c.ingests_committed.load(Ordering::Relaxed),
            "ingests_failed": c.ingests_failed.load(Ordering::Relaxed),
            "damaged_part_reads": c.damaged_part_reads.load(Ordering::Relaxed),
            "degraded_rows": c.degraded_rows.load(Ordering::Relaxed),
            "unreadable": c.unreadable.load(Ordering::Relaxed),
            "orphans_swept": c.orphans_swept.load(Ordering::Relaxed),
        },
    })))
}

async fn disks(State(st): State<ApiState>) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json!({ "disks": st.store.disk_reports().await? })))
}

/// Query of a PUT.
#[derive(Deserialize)]
struct PutQuery {
    policy: Option<String>,
    conflict: Option<String>,
    #[serde(default)]
    break_locks: bool,
}

/// Query of an append, a move: whether to break WebDAV locks in the way.
#[derive(Deserialize)]
struct LocksQuery {
    #[serde(default)]
    break_locks: bool,
}

/// The WebDAV locks in a write's way, as a JSON list.
fn locks_json(locks: &[wormfs_meta::command::Lock]) -> serde_json::Value {
    let now = wormfs_parts::fsutil::now_ms();
    locks
        .iter()
        .map(|l| {
            json!({
                "path": l.path,
                "principal": l.principal,
                "owner": l.owner_xml.as_deref().map(String::from_utf8_lossy),
                "token": l.token,
                "shared": l.shared,
                "depth_infinity": l.deep,
                "expires_ms": l.expires_ms,
                "expires_in_secs": l.expires_ms.saturating_sub(now).div_ceil(1000),
            })
        })
        .collect()
}

/// The API honours WebDAV locks: a write to a path a live lock covers (a lock on it or a
/// depth-infinity lock on an ancestor; for `(path, true)` also any lock below it) is refused
/// with 423 naming the locks, unless `break_locks`, which removes them first. Returns the locks
/// broken.
async fn honour_locks(
    store: &Store,
    paths: &[(TreePath, bool)],
    break_locks: bool,
) -> Result<Vec<wormfs_meta::command::Lock>, Response> {
    let locks = store
        .locks_in_the_way(paths)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    if locks.is_empty() {
        return Ok(locks);
    }
    if !break_locks {
        let l = &locks[0];
        let msg = format!(
            "{} is locked by WebDAV (held by {}, expires in {} s){}; retry later or pass break_locks=true (CLI: --break-locks) to remove the lock",
            l.path,
            l.principal.as_deref().unwrap_or("an anonymous client"),
            l.expires_ms.saturating_sub(wormfs_parts::fsutil::now_ms()).div_ceil(1000),
            if locks.len() > 1 { format!(" and {} more lock(s)", locks.len() - 1) } else { String::new() },
        );
        return Err((
            StatusCode::LOCKED,
            Json(json!({ "error": msg, "kind": "locked", "locks": locks_json(&locks) })),
        )
            .into_response());
    }
    for l in &locks {
        store
            .break_lock(&l.token)
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
        tracing::warn!(path = %l.path, principal = ?l.principal, token = %l.token, "API write broke a WebDAV lock");
    }
    Ok(locks)
}

/// A write's paths: with their parents (a lock on a collection protects its members list).
fn with_parent(p: &TreePath, below: bool) -> Vec<(TreePath, bool)> {
    let mut v = vec![(p.clone(), below)];
    if !p.is_root() {
        v.push((p.parent(), false));
    }
    v
}

/// `body` with the broken locks added when there are any.
fn with_broken(
    mut body: serde_json::Value,
    broken: &[wormfs_meta::command::Lock],
) -> serde_json::Value {
    if !broken.is_empty() {
        if let Some(o) = body.as_object_mut() {
            o.insert("broken_locks".into(), locks_json(broken));
        }
    }
    body
}

/// The answer of a change without a body: 204, or 200 naming the locks it broke.
fn done(broken: &[wormfs_meta::command::Lock]) -> Response {
    if broken.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        Json(json!({ "broken_locks": locks_json(broken) })).into_response()
    }
}

fn parse_conflict(s: &str) -> Result<Conflict, ApiError> {
    match s {
        "rename" => Ok(Conflict::Rename),
        "replace" => Ok(Conflict::Replace),
        "skip" => Ok(Conflict::Skip),
        "fail" => Ok(Conflict::Fail),
        other => Err(bad(format!(
            "conflict must be rename, replace, skip or fail, not {other:?}"
        ))),
    }
}

fn default_conflict(c: wormfs_config::ConflictRule) -> Conflict {
    match c {
        wormfs_config::ConflictRule::Rename => Conflict::Rename,
        wormfs_config::ConflictRule::Replace => Conflict::Replace,
        wormfs_config::ConflictRule::Skip => Conflict::Skip,
    }
}

fn announced_len(h: &HeaderMap) -> Result<Option<u64>, ApiError> {
    for name in [
        "x-wormfs-size",
        "x-expected-entity-length",
        "content-length",
    ] {
        if let Some(v) = h.get(name) {
            let s = v.to_str().map_err(|_| bad(format!("bad {name} header")))?;
            return s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| bad(format!("bad {name} header {s:?}")));
        }
    }
    Ok(None)
}

fn body_reader(body: Body) -> impl tokio::io::AsyncRead + Unpin + Send + 'static {
    StreamReader::new(body.into_data_stream().map_err(std::io::Error::other))
}

async fn put_file(
    State(st): State<ApiState>,
    Path(p): Path<String>,
    Query(q): Query<PutQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let path = parse_path(&p)?;
    let broken = match honour_locks(&st.store, &with_parent(&path, false), q.break_locks).await {
        Ok(b) => b,
        Err(r) => return Ok(r),
    };
    let policy = q
        .policy
        .as_deref()
        .map(str::parse::<Policy>)
        .transpose()
        .map_err(bad)?;
    let conflict = match q.conflict.as_deref() {
        Some(c) => parse_conflict(c)?,
        None => default_conflict(st.store.storage.conflict),
    };
    let req = IngestRequest {
        path,
        policy,
        conflict,
        source: SourceIdentity::Upload {
            client: "api".into(),
        },
        expected_size: announced_len(&headers)?,
    };
    // The write runs in its own task: a client that goes away must not cancel it half-way.
    let store = st.store.clone();
    let reader = body_reader(body);
    let res = tokio::spawn(async move { store.ingest(req, reader).await })
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    let status = if res.skipped {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = serde_json::to_value(&res)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((status, Json(with_broken(body, &broken))).into_response())
}

async fn append(
    State(st): State<ApiState>,
    Path(p): Path<String>,
    Query(q): Query<LocksQuery>,
    body: Body,
) -> ApiResult<Response> {
    let path = parse_path(&p)?;
    let broken = match honour_locks(&st.store, &[(path.clone(), false)], q.break_locks).await {
        Ok(b) => b,
        Err(r) => return Ok(r),
    };
    let store = st.store.clone();
    let reader = body_reader(body);
    let res = tokio::spawn(async move { store.append(&path, reader).await })
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    let body = serde_json::to_value(&res)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(Json(with_broken(body, &broken)).into_response())
}

/// Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range. The numbers are the client's:
/// digits only, a number too large for a u64 saturates, and nothing here adds without a check.
/// A last position beyond the file is clamped to it (RFC 9110 14.1.2), so
/// `bytes=0-18446744073709551615` is the whole file.
fn parse_range(h: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // multiple ranges: serve the whole file
    }
    let (a, b) = spec.split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().unwrap_or(u64::MAX))
    };
    let r = match (a.trim(), b.trim()) {
        ("", n) => num(n)
            .filter(|&n| n > 0)
            .map(|n| (size.saturating_sub(n), size)),
        (a, "") => num(a).map(|a| (a, size)),
        (a, b) => match (num(a), num(b)) {
            (Some(a), Some(b)) if a <= b => Some((a, b.saturating_add(1).min(size))),
            _ => return Some(Err(())),
        },
    };
    Some(match r {
        Some((a, b)) if a < b && a < size => Ok((a, b)),
        _ => Err(()),
    })
}

async fn get_file(
    State(st): State<ApiState>,
    Path(p): Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let path = parse_path(&p)?;
    let rec = st.store.file_at(&path).await?;
    let size = rec.size;
    let etag = format!("\"{}\"", rec.etag);
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| parse_range(h, size));
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, size),
        Some(Ok((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Some(Err(())) => {
            let mut r = ApiError(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "bad_range",
                format!("range not satisfiable for {size} bytes"),
            )
            .into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}"))
                    .unwrap_or(HeaderValue::from_static("bytes */0")),
            );
            return Ok(r);
        }
    };
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, etag)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{}", start, end - 1, size),
        );
    }
    let body = if method == axum::http::Method::HEAD {
        Body::empty()
    } else {
        let reader = FileReader::new(st.store.clone(), rec);
        let mut stream = Box::pin(reader.stream(start, end));
        // The first piece is read before answering, so a file that cannot be read (parts on
        // machines that are down) gets an error status and the reason, not a broken 200.
        let first = match stream.next().await {
            Some(Err(e)) => {
                tracing::error!("read failed: {e}");
                return Err(ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unreadable",
                    e.to_string(),
                ));
            }
            first => first,
        };
        // A later failure ends the body with an error: the client sees a short, broken
        // transfer, never zero-filled bytes.
        Body::from_stream(futures::stream::iter(first).chain(stream).map_err(|e| {
            tracing::error!("read failed: {e}");
            std::io::Error::other(e.to_string())
        }))
    };
    b.body(body)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// Query of a DELETE.
#[derive(Deserialize)]
struct RmQuery {
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    break_locks: bool,
}

async fn delete(
    State(st): State<ApiState>,
    Path(p): Path<String>,
    Query(q): Query<RmQuery>,
) -> ApiResult<Response> {
    let path = parse_path(&p)?;
    // Everything below goes too: so do the locks there.
    let broken = match honour_locks(&st.store, &[(path.clone(), true)], q.break_locks).await {
        Ok(b) => b,
        Err(r) => return Ok(r),
    };
    st.store.remove(&path, q.recursive).await?;
    Ok(done(&broken))
}

/// Query of a MKDIR.
#[derive(Deserialize)]
struct MkdirQuery {
    #[serde(default)]
    parents: bool,
}

async fn mkdir(
    State(st): State<ApiState>,
    Path(p): Path<String>,
    Query(q): Query<MkdirQuery>,
) -> ApiResult<StatusCode> {
    st.store.mkdir(&parse_path(&p)?, q.parents).await?;
    Ok(StatusCode::CREATED)
}

/// Body of a move.
#[derive(Deserialize)]
struct MvBody {
    from: String,
    to: String,
    #[serde(default)]
    replace: bool,
    /// Break WebDAV locks in the way (as the `break_locks` query parameter).
    #[serde(default)]
    break_locks: bool,
}

async fn mv(
    State(st): State<ApiState>,
    Query(q): Query<LocksQuery>,
    Json(b): Json<MvBody>,
) -> ApiResult<Response> {
    let (from, to) = (parse_path(&b.from)?, parse_path(&b.to)?);
    // The source and all below it, the destination (and what it replaces) and its parent.
    let mut paths = vec![(from.clone(), true)];
    paths.extend(with_parent(&to, true));
    let broken = match honour_locks(&st.store, &paths, q.break_locks || b.break_locks).await {
        Ok(b) => b,
        Err(r) => return Ok(r),
    };
    st.store.rename(&from, &to, b.replace).await?;
    Ok(done(&broken))
}

async fn list_root(st: State<ApiState>) -> ApiResult<Json<serde_json::Value>> {
    list(st, Path(String::new())).await
}

async fn list(
    State(st): State<ApiState>,
    Path(p): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let path = parse_path(&p)?;
    match st.store.meta.list(&path).await.map_err(StoreError::from)? {
        None => Err(StoreError::from(Rejection::NotFound(path.to_string())).into()),
        Some(Ok(entries)) => Ok(Json(json!({"path": path.to_string(), "entries": entries}))),
        Some(Err(file)) => Ok(Json(json!({"path": path.to_string(), "entries": [file]}))),
    }
}

async fn stat_root(st: State<ApiState>) -> ApiResult<Json<serde_json::Value>> {
    stat(st, Path(String::new())).await
}

/// What `stat` says about how many failures a file survives.
#[derive(Serialize)]
struct Tolerance {
    /// Parts of any one segment that can be lost.
    parts: usize,
    /// Disks (failure domains: filesystems) that can fail.
    disks: usize,
    /// Machines that can fail.
    machines: usize,
    /// A sentence for people.
    summary: String,
}

async fn stat(
    State(st): State<ApiState>,
    Path(p): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let path = parse_path(&p)?;
    let entry = st
        .store
        .meta
        .lookup(&path)
        .await
        .map_err(StoreError::from)?
        .ok_or_else(|| StoreError::from(Rejection::NotFound(path.to_string())))?;
    if entry.kind == EntryKind::Dir {
        let policy = st
            .store
            .meta
            .effective_policy(&path)
            .await
            .map_err(StoreError::from)?;
        return Ok(Json(
            json!({"path": path.to_string(), "kind": "dir", "mtime_ms": entry.mtime_ms, "policy": entry.policy, "effective_policy": policy}),
        ));
    }
    let Some(fid) = entry.file_id else {
        return Err(bad("entry without file"));
    };
    let rec = st
        .store
        .meta
        .file(fid)
        .await
        .map_err(StoreError::from)?
        .ok_or_else(|| StoreError::from(Rejection::NotFound(path.to_string())))?;
    let disks = st.store.meta.disks().await.map_err(StoreError::from)?;
    let names: std::collections::HashMap<u64, String> = st
        .store
        .meta
        .nodes()
        .await
        .map_err(StoreError::from)?
        .into_iter()
        .map(|n| (n.node_id, n.name))
        .collect();
    let k = usize::from(rec.geometry.k);
    let mut tol = Tolerance {
        parts: usize::MAX,
        disks: usize::MAX,
        machines: usize::MAX,
        summary: String::new(),
    };
    let mut segs = Vec::new();
    for s in &rec.segments {
        let mut per_domain: std::collections::HashMap<(u64, u64), usize> = Default::default();
        let mut per_node: std::collections::HashMap<u64, usize> = Default::default();
        let mut healthy = 0usize;
        let mut parts = Vec::new();
        for p in &s.parts {
            let d = p
                .disk_id
                .and_then(|id| disks.iter().find(|d| d.disk_id == id));
            if let (Some(d), false) = (d, p.missing) {
                healthy += 1;
                *per_domain.entry((d.node_id, d.fs_dev)).or_default() += 1;
                *per_node.entry(d.node_id).or_default() += 1;
            }
            parts.push(json!({"index": p.index, "disk_id": p.disk_id, "disk_path": d.map(|d| d.path.clone()), "node_id": d.map(|d| d.node_id), "node_name": d.and_then(|d| names.get(&d.node_id)), "missing": p.missing}));
        }
        tol.parts = tol.parts.min(healthy.saturating_sub(k));
        tol.disks = tol.disks.min(domains_tolerated(
            &per_domain.values().copied().collect::<Vec<_>>(),
            k,
        ));
        tol.machines = tol.machines.min(domains_tolerated(
            &per_node.values().copied().collect::<Vec<_>>(),
            k,
        ));
        segs.push(json!({"index": s.index, "offset": s.offset, "size": s.data_len, "blake3": s.blake3, "parts": parts}));
    }
    if rec.segments.is_empty() {
        tol = Tolerance {
            parts: 0,
            disks: 0,
            machines: 0,
            summary: String::new(),
        };
    }
    tol.summary = if rec.segments.is_empty() {
        "empty file: nothing to lose".into()
    } else {
        format!(
            "survives the loss of {} part(s) of any segment, {} disk(s) (folders on one filesystem count as one), {} machine(s)",
            tol.parts, tol.disks, tol.machines
        )
    };
    Ok(Json(json!({
        "path": path.to_string(),
        "kind": "file",
        "file_id": rec.file_id,
        "size": rec.size,
        "mtime_ms": rec.mtime_ms,
        "created_ms": rec.created_ms,
        "policy": rec.policy,
        "geometry": rec.geometry,
        "blake3": rec.content_blake3,
        "etag": rec.etag,
        "source": rec.source,
        "segments": segs,
        "tolerance": tol,
    })))
}

async fn ingest_status(State(st): State<ApiState>) -> Json<serde_json::Value> {
    Json(st.drops.snapshot())
}

async fn policy_get_root(st: State<ApiState>) -> ApiResult<Json<serde_json::Value>> {
    policy_get(st, Path(String::new())).await
}

async fn policy_get(
    State(st): State<ApiState>,
    Path(p): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let path = parse_path(&p)?;
    let entry = st
        .store
        .meta
        .lookup(&path)
        .await
        .map_err(StoreError::from)?
        .ok_or_else(|| StoreError::from(Rejection::NotFound(path.to_string())))?;
    if entry.kind != EntryKind::Dir {
        return Err(StoreError::from(Rejection::NotADirectory(path.to_string())).into());
    }
    let eff = st
        .store
        .meta
        .effective_policy(&path)
        .await
        .map_err(StoreError::from)?;
    let n = st.store.disks.len();
    let default = Policy::resolve(st.store.storage.default_policy, n, false).to_string();
    let small = Policy::resolve(st.store.storage.small_file_policy, n, true).to_string();
    Ok(Json(json!({
        "path": path.to_string(),
        "policy": entry.policy,
        "effective": eff.clone().unwrap_or_else(|| default.clone()),
        "inherited": entry.policy.is_none(),
        "default": default,
        "small_files": small,
        "small_file_threshold_bytes": st.store.storage.small_file_threshold_bytes,
    })))
}

/// Body of a policy change.
#[derive(Deserialize)]
struct PolicyBody {
    policy: Option<String>,
}

async fn policy_set_root(st: State<ApiState>, b: Json<PolicyBody>) -> ApiResult<StatusCode> {
    policy_set(st, Path(String::new()), b).await
}

async fn policy_set(
    State(st): State<ApiState>,
    Path(p): Path<String>,
    Json(b): Json<PolicyBody>,
) -> ApiResult<StatusCode> {
    let path = parse_path(&p)?;
    let policy = b
        .policy
        .as_deref()
        .map(str::parse::<Policy>)
        .transpose()
        .map_err(bad)?;
    st.store.set_policy(&path, policy).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_snapshot(State(st): State<ApiState>) -> ApiResult<Json<serde_json::Value>> {
    let upto = st
        .store
        .consensus
        .snapshot_and_purge()
        .await
        .map_err(StoreError::from)?;
    Ok(Json(json!({"snapshot_index": upto})))
}

async fn admin_sweep(State(st): State<ApiState>) -> ApiResult<Json<serde_json::Value>> {
    let r = crate::sweeper::sweep(&st.store).await?;
    Ok(Json(json!(r)))
}

/// Query of a node removal.
#[derive(Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

async fn admin_remove_node(
    State(st): State<ApiState>,
    Path(id): Path<u64>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    use crate::peer::protocol::RemoveRefused;
    match st.store.consensus.remove_node(id, q.force).await {
        Ok(()) => Ok(Json(json!({ "removed": id }))),
        Err(RemoveRefused::NoMajority(e)) => {
            Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "no_majority", e))
        }
        Err(RemoveRefused::Refused(e)) => Err(ApiError(StatusCode::CONFLICT, "refused", e)),
        Err(RemoveRefused::Failed(e)) => {
            Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, "failed", e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 100))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 100))));
        assert_eq!(parse_range("bytes=95-200", 100), Some(Ok((95, 100))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=5-2", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        // The largest last position (and beyond) is the whole file, never a wrapped sum.
        let max = u64::MAX;
        assert_eq!(
            parse_range(&format!("bytes=0-{max}"), 100),
            Some(Ok((0, 100)))
        );
        assert_eq!(
            parse_range("bytes=10-99999999999999999999999", 100),
            Some(Ok((10, 100)))
        );
        assert_eq!(
            parse_range(&format!("bytes={max}-{max}"), 100),
            Some(Err(()))
        );
        assert_eq!(parse_range(&format!("bytes={max}-"), 100), Some(Err(())));
        assert_eq!(
            parse_range(&format!("bytes=-{max}"), 100),
            Some(Ok((0, 100)))
        );
        assert_eq!(parse_range("bytes=+1-5", 100), Some(Err(())));
    }
}
