//! The WebDAV face: dav-server on hyper over the node's tree.
//!
//! GET and HEAD with ranges, ETag and Last-Modified (conditional requests are dav-server's),
//! PROPFIND depth 0 and 1, an HTML listing for browsers; PUT of whole files through the
//! backend's ingest, committed only when the body ended with its announced length; MKCOL,
//! DELETE, MOVE, COPY; dead properties and locks kept by the backend (the node keeps them in its
//! replicated metadata). Requests are checked first ([`guard`]): paths confined to the tree,
//! no partial writes, no `Depth: infinity`, no `#fragment`.

// No unsafe code here: the workspace lint is `deny` only so that one syscall in
// wormfs-parts (`fsutil::writeback_error`) can be allowed.
#![forbid(unsafe_code)]

pub mod auth;
mod backend;
mod davfs;
mod fragment;
pub mod guard;
mod limits;
pub mod locks;
pub mod propfind;
pub mod ranges;
pub mod tls;
pub mod tree_ops;
pub mod xml_depth;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use dav_server::body::Body;
use dav_server::{DavConfig, DavHandler, DavMethodSet};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use auth::{Auth, AuthConfig, User};
pub use backend::{
    Backend, BackendError, BoxFut, CreateOptions, DeadProp, Entry, LockCheck, LockInfo, ReadFile,
    WriteFile,
};
pub use davfs::WormDavFs;
pub use locks::WormLs;

use fragment::{FragmentSniffer, Fragments};

/// Bytes dav-server asks for per read: large, so a GET is a few big backend reads.
pub const READ_BUF_SIZE: usize = 1 << 20;

/// The dav-server handler over `backend`; see [`WormDavFs::new`] for `discard_mac_metadata`.
pub fn handler(
    backend: Arc<dyn Backend>,
    discard_mac_metadata: bool,
    limits: Limits,
) -> DavHandler {
    let mut methods = DavMethodSet::WEBDAV_RW;
    methods.remove(dav_server::DavMethod::Patch);
    DavHandler::builder()
        .filesystem(WormDavFs::new(
            backend.clone(),
            discard_mac_metadata,
            limits,
        ))
        .locksystem(WormLs::new(backend))
        .methods(methods)
        .autoindex(true)
        .read_buf_size(READ_BUF_SIZE)
        .build_handler()
}

/// Everything a connection needs: dav-server, who may use it, and HTTPS if configured.
#[derive(Clone)]
pub struct Face {
    /// dav-server over the backend.
    pub handler: DavHandler,
    /// The backend, for the per-request views of read-only requests.
    pub backend: Arc<dyn Backend>,
    /// Authentication and roles.
    pub auth: Arc<Auth>,
    /// HTTPS, if configured.
    pub tls: Option<TlsAcceptor>,
    /// Caps on locks and dead properties.
    pub limits: Limits,
}

/// Caps on what clients store beside files (docs/webdav.md, "Limits").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Live locks on one path.
    pub locks_per_resource: u32,
    /// Live locks held by one user (anonymous clients count as one).
    pub locks_per_user: u32,
    /// Dead properties on one file or directory.
    pub dead_props_per_resource: u32,
    /// Bytes of dead properties (names, namespaces, values) on one file or directory.
    pub dead_prop_bytes_per_resource: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            locks_per_resource: 32,
            locks_per_user: 1_000,
            dead_props_per_resource: 100,
            dead_prop_bytes_per_resource: 64 * 1024,
        }
    }
}

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `face` on `listener` until `stop`; connections get TCP_NODELAY.
pub async fn serve(listener: TcpListener, face: Face, stop: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("webdav accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
        let face = face.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            match face.tls.clone() {
                None => connection(stream, peer, face, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => connection(tls, peer, face, stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "webdav TLS handshake: {e}"),
                        Err(_) => tracing::debug!(%peer, "webdav TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

#[tracing::instrument(name = "webdav_conn", skip_all, fields(%peer))]
async fn connection<I>(stream: I, peer: SocketAddr, face: Face, stop: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let fragments = Fragments::default();
    let stream = FragmentSniffer::new(stream, fragments.clone());
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let face = face.clone();
        let span = tracing::info_span!("webdav", method = %req.method(), path = %req.uri().path(), user = tracing::field::Empty);
        let fragment = fragments.take(req.method().as_str(), req.uri().path());
        let started = std::time::Instant::now();
        let method = req.method().clone();
        let answer = async move {
            let resp = with_refusal(respond(&face, req, fragment, peer.ip()).await);
            record_request(&method, resp.status(), started.elapsed());
            Ok::<_, std::convert::Infallible>(resp)
        };
        REFUSAL
            .scope(std::cell::RefCell::new(None), answer)
            .instrument(span)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        // A request head must arrive whole, soon and small: this bounds
        // what one slow or hostile client can hold.
        .header_read_timeout(std::time::Duration::from_secs(30))
        .max_header_size(MAX_HEAD)
        .max_headers(100)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { tracing::debug!("webdav connection: {e}") },
        _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
}

/// The methods a request is labelled with in the metrics; any other is `other` (bounded
/// labels). The node's API labels its requests with the same list.
pub const RECORDED_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "PUT",
    "POST",
    "DELETE",
    "OPTIONS",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
];

/// Records an answered request in the node's metrics (docs/metrics.md): the same names as the
/// API's, with `face` `webdav` and one route, the tree; the method says what was asked.
fn record_request(method: &http::Method, status: StatusCode, took: std::time::Duration) {
    let method = RECORDED_METHODS
        .iter()
        .find(|m| **m == method.as_str())
        .copied()
        .unwrap_or("other");
    metrics::histogram!("wormfs_request_duration_seconds", "face" => "webdav", "method" => method, "route" => "/{*path}")
        .record(took.as_secs_f64());
    if status.as_u16() >= 400 {
        metrics::counter!("wormfs_request_errors_total", "face" => "webdav", "route" => "/{*path}", "status" => status.as_u16().to_string())
            .increment(1);
    }
}

tokio::task_local! {
    /// Why the backend refused a change to a retained file during this request, for the 403's
    /// body (dav-server answers an `FsError` with an empty body).
    static REFUSAL: std::cell::RefCell<Option<String>>;
}

/// Records why this request's change was refused (see [`REFUSAL`]).
pub(crate) fn note_refusal(why: &str) {
    let _ = REFUSAL.try_with(|c| *c.borrow_mut() = Some(why.to_owned()));
}

/// A 403 whose refusal was noted gets the sentence as its body.
fn with_refusal(resp: Resp) -> Resp {
    let why = REFUSAL.try_with(|c| c.borrow_mut().take()).ok().flatten();
    match why {
        Some(why) if resp.status() == StatusCode::FORBIDDEN => {
            tracing::info!("refused: {why}");
            status_response(StatusCode::FORBIDDEN, &why)
        }
        _ => resp,
    }
}

/// The largest request head (request line and headers) accepted; a larger
/// one is answered 431 and the connection closed.
const MAX_HEAD: usize = 64 * 1024;

/// The largest XML request body read (PROPFIND, PROPPATCH, LOCK), as dav-server bounds it.
const MAX_XML_BODY: usize = 64 * 1024;

/// A response with any body: dav-server's, or one of this face's own (a multipart answer).
pub type Resp = Response<UnsyncBoxBody<Bytes, std::io::Error>>;

fn boxed(r: Response<Body>) -> Resp {
    r.map(BodyExt::boxed_unsync)
}

fn status_response(status: StatusCode, text: &str) -> Resp {
    let mut r = Response::new(Body::from(format!("{text}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    boxed(r)
}

/// One request: who is asking, the guard's checks, then dav-server (with PROPFIND answers
/// completed, tree operations made whole, XML bodies bounded and ranges planned).
async fn respond(
    face: &Face,
    req: Request<Incoming>,
    fragment: bool,
    client: std::net::IpAddr,
) -> Resp {
    let caller = match face.auth.admit(req.method(), req.headers(), client).await {
        Ok(c) => c,
        Err(refusal) => {
            tracing::info!(status = %refusal.status, "refused: {}", refusal.reason);
            return boxed(refusal.response());
        }
    };
    if let Some(u) = &caller.user {
        tracing::Span::current().record("user", u.as_str());
    }
    let refused = |refusal: guard::Refusal| {
        tracing::info!(status = %refusal.status, "refused: {}", refusal.reason);
        boxed(refusal.response())
    };
    if let Err(refusal) = guard::check(&req, fragment) {
        return refused(refusal);
    }
    let tree = match tree_ops::preflight(&req, face.tls.is_some()) {
        Ok(t) => t,
        Err(refusal) => return refused(refusal),
    };
    let mut config = DavConfig::new();
    if let Some(u) = &caller.user {
        config = config.principal(u.clone());
    }
    let h = &face.handler;
    if let Some(op) = tree {
        // One committed change for the whole operation (see tree_ops).
        let config = config
            .filesystem(WormDavFs::for_tree_op(face.backend.clone(), op))
            .locksystem(WormLs::for_tree_op(face.backend.clone()));
        return boxed(h.handle_with(config, req).await);
    }
    let method = req.method().as_str().to_owned();
    if (method == "GET" || method == "HEAD") && req.headers().contains_key(http::header::RANGE) {
        return ranged(face, config, req).await;
    }
    if !matches!(method.as_str(), "PROPFIND" | "PROPPATCH" | "LOCK") {
        return boxed(h.handle_with(config, req).await);
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_XML_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return status_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        }
        Err(e) => {
            tracing::debug!("{method} body: {e}");
            return status_response(StatusCode::BAD_REQUEST, "request body cut off");
        }
    };
    // The XML parsers recurse: bound the nesting before any of them sees the body.
    if let Err(why) = xml_depth::check(&body, xml_depth::MAX_XML_DEPTH) {
        tracing::info!("refused: {why}");
        return status_response(StatusCode::BAD_REQUEST, &why);
    }
    if method == "LOCK" && !body.is_empty() {
        let path = tree_ops::tree_path(parts.uri.path()).unwrap_or_default();
        if let Err(refusal) = limits::check_new_lock(face, &path, caller.user.as_deref()).await {
            return refused(refusal);
        }
    }
    let req = Request::from_parts(parts, Full::new(body.clone()));
    if method != "PROPFIND" {
        return boxed(h.handle_with(config, req).await);
    }
    let wanted = propfind::names_needing_404s(&body);
    // A PROPFIND changes nothing: it gets a view that reads the locks once and each listed
    // directory's dead properties in one call.
    let config = config
        .filesystem(WormDavFs::for_one_read(face.backend.clone()))
        .locksystem(WormLs::for_one_read(face.backend.clone()));
    let resp = h.handle_with(config, req).await;
    match wanted {
        Some(w) if resp.status() == StatusCode::MULTI_STATUS => {
            let (mut parts, body) = resp.into_parts();
            let xml = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    tracing::warn!("PROPFIND answer: {e}");
                    return status_response(StatusCode::INTERNAL_SERVER_ERROR, "PROPFIND failed");
                }
            };
            let fixed = propfind::add_missing(&xml, &w).map_or(xml, Bytes::from);
            parts.headers.remove(http::header::CONTENT_LENGTH);
            boxed(Response::from_parts(parts, Body::from(fixed)))
        }
        _ => boxed(resp),
    }
}

/// A GET or HEAD with a Range header: planned (see [`ranges`]) before dav-server sees it.
async fn ranged(face: &Face, config: DavConfig, mut req: Request<Incoming>) -> Resp {
    let h = &face.handler;
    let spec = req
        .headers()
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let path = tree_ops::tree_path(req.uri().path()).unwrap_or_default();
    let size = match face.backend.stat(&path).await {
        Ok(e) if !e.is_dir => e.size,
        // A directory or a missing name: dav-server answers as it would anyway.
        _ => return boxed(h.handle_with(config, req).await),
    };
    let plan = ranges::plan(&spec, size);
    let set_range = |req: &mut Request<Incoming>, a: u64, b: u64| {
        if let Ok(v) = http::HeaderValue::from_str(&format!("bytes={a}-{}", b - 1)) {
            req.headers_mut().insert(http::header::RANGE, v);
        }
    };
    let ranges = match plan {
        ranges::Plan::AsIs => return boxed(h.handle_with(config, req).await),
        ranges::Plan::Whole => {
            tracing::debug!("Range {spec:.80} ignored: the whole file is sent");
            req.headers_mut().remove(http::header::RANGE);
            return boxed(h.handle_with(config, req).await);
        }
        ranges::Plan::Single(a, b) => {
            set_range(&mut req, a, b);
            return boxed(h.handle_with(config, req).await);
        }
        ranges::Plan::Multi(r) if req.method() == http::Method::GET => r,
        ranges::Plan::Multi(_) => {
            req.headers_mut().remove(http::header::RANGE);
            return boxed(h.handle_with(config, req).await);
        }
    };
    // dav-server decides the preconditions (If-Match, If-None-Match, dates, If-Range) on a
    // HEAD of the same request with one range: a 206 means the ranges are to be served.
    let (parts, _) = req.into_parts();
    let mut head = Request::from_parts(parts.clone(), Full::new(Bytes::new()));
    *head.method_mut() = http::Method::HEAD;
    if let Ok(v) =
        http::HeaderValue::from_str(&format!("bytes={}-{}", ranges[0].0, ranges[0].1 - 1))
    {
        head.headers_mut().insert(http::header::RANGE, v);
    }
    let head_resp = h.handle_with(config.clone(), head).await;
    if head_resp.status() != StatusCode::PARTIAL_CONTENT {
        // Not modified, a failed precondition, or If-Range not matching (200: the whole file).
        let mut whole = Request::from_parts(parts, Full::new(Bytes::new()));
        whole.headers_mut().remove(http::header::RANGE);
        if head_resp.status() == StatusCode::OK {
            return boxed(h.handle_with(config, whole).await);
        }
        return boxed(head_resp);
    }
    let file = match face.backend.open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("multipart GET of {path}: {e}");
            return status_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the file could not be opened",
            );
        }
    };
    let content_type = head_resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    ranges::multipart(file, ranges, &content_type, head_resp.headers())
}
