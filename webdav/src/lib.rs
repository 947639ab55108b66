//! The WebDAV face: dav-server on hyper over the node's tree.
//!
//! GET and HEAD with ranges, ETag and Last-Modified (conditional requests are dav-server's),
//! PROPFIND depth 0 and 1, an HTML listing for browsers; PUT of whole files through the
//! backend's ingest, committed only when the body ended with its announced length; MKCOL,
//! DELETE, MOVE, COPY; dead properties and locks kept by the backend (the node keeps them in its
//! replicated metadata). Requests are checked first ([`guard`]): paths confined to the tree,
//! no partial writes, no `Depth: infinity`, no `#fragment`.

pub mod auth;
mod backend;
mod davfs;
mod fragment;
pub mod guard;
pub mod locks;
pub mod propfind;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use dav_server::body::Body;
use dav_server::{DavConfig, DavHandler, DavMethodSet};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use auth::{Auth, AuthConfig, User};
pub use backend::{
    Backend, BackendError, BoxFut, CreateOptions, DeadProp, Entry, LockInfo, ReadFile, WriteFile,
};
pub use davfs::WormDavFs;
pub use locks::WormLs;

use fragment::{FragmentSniffer, Fragments};

/// Bytes dav-server asks for per read: large, so a GET is a few big backend reads.
pub const READ_BUF_SIZE: usize = 1 << 20;

/// The dav-server handler over `backend`; see [`WormDavFs::new`] for `discard_mac_metadata`.
pub fn handler(backend: Arc<dyn Backend>, discard_mac_metadata: bool) -> DavHandler {
    let mut methods = DavMethodSet::WEBDAV_RW;
    methods.remove(dav_server::DavMethod::Patch);
    DavHandler::builder()
        .filesystem(WormDavFs::new(backend.clone(), discard_mac_metadata))
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
        async move { Ok::<_, std::convert::Infallible>(respond(&face, req, fragment).await) }
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

/// The largest request head (request line and headers) accepted; a larger
/// one is answered 431 and the connection closed.
const MAX_HEAD: usize = 64 * 1024;

/// The largest XML request body read (PROPFIND, PROPPATCH, LOCK), as dav-server bounds it.
const MAX_XML_BODY: usize = 64 * 1024;

fn status_response(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("{text}\n")));
    *r.status_mut() = status;
    r
}

/// One request: who is asking, the guard's checks, then dav-server (with PROPFIND answers
/// completed).
async fn respond(face: &Face, req: Request<Incoming>, fragment: bool) -> Response<Body> {
    let caller = match face.auth.admit(req.method(), req.headers()).await {
        Ok(c) => c,
        Err(refusal) => {
            tracing::info!(status = %refusal.status, "refused: {}", refusal.reason);
            return refusal.response();
        }
    };
    if let Some(u) = &caller.user {
        tracing::Span::current().record("user", u.as_str());
    }
    if let Err(refusal) = guard::check(&req, fragment) {
        tracing::info!(status = %refusal.status, "refused: {}", refusal.reason);
        return refusal.response();
    }
    let mut config = DavConfig::new();
    if let Some(u) = caller.user {
        config = config.principal(u);
    }
    let h = &face.handler;
    if req.method().as_str() != "PROPFIND" {
        return h.handle_with(config, req).await;
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_XML_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return status_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        }
        Err(e) => {
            tracing::debug!("PROPFIND body: {e}");
            return status_response(StatusCode::BAD_REQUEST, "request body cut off");
        }
    };
    let wanted = propfind::names_needing_404s(&body);
    // A PROPFIND changes nothing: it gets a view that reads the locks once and each listed
    // directory's dead properties in one call.
    let config = config
        .filesystem(WormDavFs::for_one_read(face.backend.clone()))
        .locksystem(WormLs::for_one_read(face.backend.clone()));
    let resp = h
        .handle_with(config, Request::from_parts(parts, Full::new(body)))
        .await;
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
            Response::from_parts(parts, Body::from(fixed))
        }
        _ => resp,
    }
}
