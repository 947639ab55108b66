//! The WebDAV face: dav-server on hyper over the node's tree.
//!
//! This first step serves the tree read-only: OPTIONS, GET and HEAD with ranges, ETag and
//! Last-Modified (with conditional requests, handled by dav-server), PROPFIND depth 0 and 1, and
//! an HTML listing for browsers. Reads go to the backend exactly as asked, with a large read
//! size, and a read that fails is an error, never zero-filled bytes. Writes (PUT through the
//! ingest pipeline, MKCOL, DELETE, MOVE, COPY, PROPPATCH, LOCK) come with the rest of issue #3.

mod backend;
mod davfs;

use std::net::SocketAddr;
use std::sync::Arc;

use dav_server::{DavHandler, DavMethodSet};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use backend::{Backend, BackendError, BoxFut, Entry, ReadFile};
pub use davfs::WormDavFs;

/// Bytes dav-server asks for per read: large, so a GET is a few big backend reads.
pub const READ_BUF_SIZE: usize = 1 << 20;

/// The dav-server handler over `backend`.
pub fn handler(backend: Arc<dyn Backend>) -> DavHandler {
    DavHandler::builder()
        .filesystem(WormDavFs::new(backend))
        .methods(DavMethodSet::WEBDAV_RO)
        .autoindex(true)
        .read_buf_size(READ_BUF_SIZE)
        .build_handler()
}

/// Serves `handler` on `listener` until `stop`; connections get TCP_NODELAY.
pub async fn serve(listener: TcpListener, handler: DavHandler, stop: CancellationToken) {
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
        let h = handler.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            connection(stream, peer, h, stop).await;
        });
    }
}

#[tracing::instrument(name = "webdav_conn", skip_all, fields(%peer))]
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    h: DavHandler,
    stop: CancellationToken,
) {
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let h = h.clone();
        let span = tracing::info_span!("webdav", method = %req.method(), path = %req.uri().path());
        async move { Ok::<_, std::convert::Infallible>(h.handle(req).await) }.instrument(span)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { tracing::debug!("webdav connection: {e}") },
        _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
}
