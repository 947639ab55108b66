//! Reads what a client is still sending before an early refusal is answered.
//!
//! A request refused before its body was read (a wrong token, a WebDAV lock, a name that
//! exists, a bad query) is answered while the client is still writing the body. If the
//! connection is then closed with unread bytes in it, the kernel resets it and the client sees
//! "broken pipe" instead of the answer (`wormfs put` said "error writing a body to connection"
//! where it should have said "locked"). So every API request's body is shared between the
//! handler and this layer: after an unsuccessful answer, what the handler left unread is read
//! and dropped, up to [`DRAIN_LIMIT`] bytes and [`DRAIN_TIME`]; beyond that the connection is
//! closed (`Connection: close`), as a server must not read gigabytes to refuse them.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use futures::{Stream, StreamExt};

/// The most of a refused request's body that is read to deliver the refusal.
pub(super) const DRAIN_LIMIT: usize = 16 << 20;
/// The longest a refused request's body is read for.
pub(super) const DRAIN_TIME: Duration = Duration::from_secs(5);

type Shared = Arc<Mutex<Option<BodyDataStream>>>;

/// The handler's view of the body: the same stream, taken back by the layer afterwards.
struct SharedBody(Shared);

impl Stream for SharedBody {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_mut() {
            Some(s) => s.poll_next_unpin(cx),
            None => Poll::Ready(None),
        }
    }
}

/// The layer: see the module's documentation.
pub(super) async fn drain_refused_body(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let shared: Shared = Arc::new(Mutex::new(Some(body.into_data_stream())));
    let req = Request::from_parts(parts, Body::from_stream(SharedBody(shared.clone())));
    let mut res = next.run(req).await;
    if res.status().is_success() || res.status().is_informational() {
        return res;
    }
    let rest = shared.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(rest) = rest {
        if !drain(rest).await {
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    res
}

/// Reads and drops the rest of a body; true when it ended within the limits.
async fn drain(mut rest: BodyDataStream) -> bool {
    let mut seen = 0usize;
    let read_all = async {
        while let Some(chunk) = rest.next().await {
            match chunk {
                Ok(c) => {
                    seen += c.len();
                    if seen > DRAIN_LIMIT {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read_all)
        .await
        .unwrap_or(false)
}
