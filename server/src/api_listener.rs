//! The API's HTTP listener: the axum router on hyper, one task per connection, with the bounds
//! WebDAV has (a request head must arrive whole within 30 s, at most 64 KiB and 100 headers), a
//! watchdog that closes a connection stalled for 60 s (no request while idle, a request body that
//! stops arriving, an answer the client stops reading), and at most 64 connections per client
//! address. On shutdown it stops accepting, lets requests in flight finish and closes idle
//! connections.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The connection bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a client has to send a whole request head (also how long an idle keep-alive
    /// connection waits for its next request: the timer runs from when the server waits).
    pub header_timeout: Duration,
    /// How long a connection may make no progress: no request in flight, or a request body
    /// that stops arriving, or an answer the client stops reading.
    pub idle_timeout: Duration,
    /// Connections open at once from one client address; more are closed at once.
    pub max_per_ip: usize,
}

/// The largest request head (request line and headers); a larger one is answered 431.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most headers in a request.
pub const MAX_HEADERS: usize = 100;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_per_ip: 64,
        }
    }
}

impl Limits {
    /// The fixed limits; builds with the `crash-points` test feature read
    /// `WORMFS_TEST_API_HEADER_TIMEOUT_MS`, `WORMFS_TEST_API_IDLE_TIMEOUT_MS` and
    /// `WORMFS_TEST_API_MAX_CONNECTIONS_PER_IP`, so tests need not wait 30 s.
    pub fn from_env() -> Limits {
        #[allow(unused_mut)]
        let mut l = Limits::default();
        #[cfg(feature = "crash-points")]
        {
            let num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
            if let Some(ms) = num("WORMFS_TEST_API_HEADER_TIMEOUT_MS") {
                l.header_timeout = Duration::from_millis(ms);
            }
            if let Some(ms) = num("WORMFS_TEST_API_IDLE_TIMEOUT_MS") {
                l.idle_timeout = Duration::from_millis(ms);
            }
            if let Some(n) = num("WORMFS_TEST_API_MAX_CONNECTIONS_PER_IP") {
                l.max_per_ip = n as usize;
            }
        }
        l
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for the connections: requests
/// in flight finish, idle connections close.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let tracker = TaskTracker::new();
    let per_ip = Arc::new(PerIp::default());
    let refusals = RateLimitedLog::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: do not spin.
                    tracing::warn!("API accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = per_ip.take(peer.ip(), limits.max_per_ip) else {
            if refusals.allow() {
                tracing::info!(%peer, max = limits.max_per_ip, "API: too many connections from this address; closing new ones (logged at most once a minute)");
            }
            // Best effort: a short answer, then close.
            let _ = stream.try_write(BUSY);
            drop(stream);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
        let app = app.clone();
        let stop = stop.clone();
        let abort = abort.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = connection(stream, peer, app, limits, stop) => {}
                () = abort.cancelled() => {}
            }
            drop(slot);
        });
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = tracker.len(),
            "shutdown: requests still running after {SHUTDOWN_GRACE:?} are dropped (an upload \
             not finished is not stored; its client sees an error and can send it again)"
        );
        abort.cancel();
        tracker.wait().await;
    }
}

/// How long requests in flight may run on after SIGTERM: the platforms stop a node within
/// 10 s (Docker's default) and unmount its disks next.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 45\r\nconnection: close\r\n\r\ntoo many connections from this address; retry\n";

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
) {
    let act = Arc::new(Activity::new());
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        act: act.clone(),
    });
    let inner = TowerToHyperService::new(app);
    let svc_act = act.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        svc_act.request_started();
        let mut req = req.map(|b| WatchedBody {
            inner: b,
            act: svc_act.clone(),
        });
        // Who is asking, for the routes that decide by address (`/metrics` without a token) and
        // the admin page's login throttle.
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let fut = hyper::service::Service::call(&inner, req);
        let act = svc_act.clone();
        async move {
            let resp = match fut.await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok::<_, std::convert::Infallible>(resp.map(|b| DoneBody {
                inner: b,
                _guard: InFlight(act),
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let deadline = act.deadline(limits.idle_timeout);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, "API connection: {e}");
                }
                return;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                if act.stalled(limits.idle_timeout) {
                    tracing::debug!(%peer, "API connection idle or stalled for {:?}: closed", limits.idle_timeout);
                    return;
                }
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection is doing, for the watchdog.
struct Activity(Mutex<ActState>);

struct ActState {
    in_flight: usize,
    /// Since when no request has been in flight (`Some` only with `in_flight == 0`).
    idle_since: Option<Instant>,
    /// Since when the handler has been waiting for more of the request body.
    body_wait_since: Option<Instant>,
    /// Since when a write to the client has been blocked.
    write_blocked_since: Option<Instant>,
}

impl Activity {
    fn new() -> Self {
        Activity(Mutex::new(ActState {
            in_flight: 0,
            idle_since: Some(Instant::now()),
            body_wait_since: None,
            write_blocked_since: None,
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ActState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn request_started(&self) {
        let mut s = self.state();
        s.in_flight += 1;
        s.idle_since = None;
    }

    fn request_done(&self) {
        let mut s = self.state();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.idle_since = Some(Instant::now());
            s.body_wait_since = None;
        }
    }

    fn body_waiting(&self, waiting: bool) {
        let mut s = self.state();
        if !waiting {
            s.body_wait_since = None;
        } else if s.body_wait_since.is_none() {
            s.body_wait_since = Some(Instant::now());
        }
    }

    fn write_blocked(&self, blocked: bool) {
        let mut s = self.state();
        if !blocked {
            s.write_blocked_since = None;
        } else if s.write_blocked_since.is_none() {
            s.write_blocked_since = Some(Instant::now());
        }
    }

    /// The earliest moment the connection could count as stalled.
    fn deadline(&self, idle: Duration) -> Instant {
        let s = self.state();
        [s.idle_since, s.body_wait_since, s.write_blocked_since]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(Instant::now)
            + idle
    }

    fn stalled(&self, idle: Duration) -> bool {
        let now = Instant::now();
        let s = self.state();
        [s.idle_since, s.body_wait_since, s.write_blocked_since]
            .into_iter()
            .flatten()
            .any(|t| now.saturating_duration_since(t) >= idle)
    }
}

/// The TCP stream, noting when writes to the client block.
struct WatchedIo {
    inner: TcpStream,
    act: Arc<Activity>,
}

impl WatchedIo {
    fn note<T>(&self, p: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        self.act.write_blocked(p.is_pending());
        p
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(p)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(p)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_flush(cx);
        self.note(p)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body, noting when the handler waits for more of it.
struct WatchedBody {
    inner: Incoming,
    act: Arc<Activity>,
}

impl Body for WatchedBody {
    type Data = <Incoming as Body>::Data;
    type Error = <Incoming as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let p = Pin::new(&mut self.inner).poll_frame(cx);
        self.act.body_waiting(p.is_pending());
        p
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        self.act.body_waiting(false);
    }
}

/// A request counts as in flight until its answer has been written (or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

struct DoneBody {
    inner: axum::body::Body,
    _guard: InFlight,
}

impl Body for DoneBody {
    type Data = <axum::body::Body as Body>::Data;
    type Error = <axum::body::Body as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Connections open per client address.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot(self.clone(), ip))
    }
}

/// One connection's place in [`PerIp`], given back when dropped.
struct Slot(Arc<PerIp>, IpAddr);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = (self.0).0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// At most one line a minute.
#[derive(Default)]
struct RateLimitedLog(Mutex<Option<Instant>>);

impl RateLimitedLog {
    fn allow(&self) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match *last {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(60) => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_slots_are_bounded_and_given_back() {
        let p = Arc::new(PerIp::default());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = p.take(a, 2).unwrap();
        let _s2 = p.take(a, 2).unwrap();
        assert!(p.take(a, 2).is_none());
        assert!(p.take(b, 2).is_some());
        drop(s1);
        assert!(p.take(a, 2).is_some());
    }
}
