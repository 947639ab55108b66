//! The data server: serves this node's disks to its peers over HTTP/1.1 on mutual TLS 1.3.
//! Only members' pinned certificates get past the handshake (see [`super::tls`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::cert::Fingerprint;
use super::tls::Allowed;
use super::wire::{DiskOffer, NewUpload, UploadCreated, UploadOffset, CRC_HEADER, MAX_CHUNK};
use wormfs_parts::disk_set::DiskSet;
use wormfs_parts::ids::{DiskId, FileId};
use wormfs_parts::part_format::PartHeader;
use wormfs_parts::part_io::{LocalPartWriter, OpenPart, PartReadError, PartWriter};

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An upload that receives nothing for this long is abandoned (its writer died).
const UPLOAD_IDLE: Duration = Duration::from_secs(300);
/// Open parts kept for block reads.
const OPEN_PARTS: usize = 256;

enum UploadState {
    Writing(Box<LocalPartWriter>),
    /// The finish (fsync, rename, directory fsync) is running in a task of its own; every
    /// request for it, the first and any retry, waits for its one outcome.
    Finishing(FinishOutcome),
    /// The finish returned Ok: the part is durable.
    Finished,
    Failed(String),
}

/// The outcome of a part's finish, once there is one.
type FinishOutcome = tokio::sync::watch::Receiver<Option<Result<(), String>>>;

struct Upload {
    state: UploadState,
    offset: u64,
    touched: Instant,
}

type PartKey = (DiskId, FileId, u32, u16);

struct Shared {
    disks: DiskSet,
    uploads: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<Upload>>>>,
    open: Mutex<HashMap<PartKey, Arc<OpenPart>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An error answer: a status and a sentence.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Binds the data server's address (before the node registers it).
pub async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("data plane: listen on {listen} (cluster.data_listen)"))
}

/// Serves the data plane on `listener` until `shutdown`.
pub fn start(
    disks: DiskSet,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    allowed: Allowed,
    listener: TcpListener,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<SocketAddr> {
    let local = listener.local_addr()?;
    let shared = Arc::new(Shared {
        disks,
        uploads: Mutex::default(),
        open: Mutex::default(),
    });
    let app = Router::new()
        .route("/v1/disks", get(offer_disks))
        .route("/v1/uploads", post(create_upload))
        .route("/v1/uploads/{id}", put(put_chunk).delete(abort_upload))
        .route("/v1/uploads/{id}/finish", post(finish_upload))
        .route("/v1/parts/{disk}/{file}/{segment}/{part}", get(read_blocks))
        .layer(DefaultBodyLimit::max(MAX_CHUNK))
        .layer(axum::middleware::from_fn(trace_request))
        .with_state(shared.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(tls);
    let stop = shutdown.clone();
    tasks.spawn(accept_loop(listener, acceptor, allowed, tx, stop));
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let listener = Handshaken { rx, local };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!("data server: {e}");
        }
    });
    tasks.spawn(janitor(shared, shutdown));
    tracing::info!(%local, "data plane listening (mutual TLS 1.3, pinned certificates)");
    Ok(local)
}

async fn trace_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let span = tracing::debug_span!("data", method = %req.method(), path = %req.uri().path());
    next.run(req).instrument(span).await
}

/// Accepts TCP connections and runs each TLS handshake on its own task, so that a slow
/// client holds up no one; finished handshakes go to the HTTP server.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    allowed: Allowed,
    tx: tokio::sync::mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("data plane accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let allowed = allowed.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let node = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| Fingerprint::of(c))
                        .and_then(|fp| {
                            allowed
                                .read()
                                .unwrap_or_else(|p| p.into_inner())
                                .get(&fp)
                                .copied()
                        });
                    tracing::debug!(%peer, ?node, "data plane: peer connected");
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::info!(%peer, "data plane: handshake refused: {e}"),
                Err(_) => tracing::info!(%peer, "data plane: handshake timed out"),
            }
        });
    }
}

/// The handshaken connections, as a listener for axum.
struct Handshaken {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for Handshaken {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop stopped: shutdown is under way.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Abandons uploads whose writer went quiet, and forgets finished ones.
async fn janitor(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        let all: Vec<_> = lock(&shared.uploads)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (id, up) in all {
            let Ok(mut u) = up.try_lock() else { continue };
            if u.touched.elapsed() < UPLOAD_IDLE {
                continue;
            }
            if let UploadState::Writing(w) =
                std::mem::replace(&mut u.state, UploadState::Failed("abandoned".into()))
            {
                tracing::warn!(
                    upload = id,
                    "data plane: abandoning an upload idle for 5 minutes"
                );
                let _ = tokio::task::spawn_blocking(move || w.abort()).await;
            }
            lock(&shared.uploads).remove(&id);
        }
    }
}

async fn offer_disks(State(sh): State<Arc<Shared>>) -> Result<Json<Vec<DiskOffer>>, Failure> {
    let disks = sh.disks.clone();
    let offers = tokio::task::spawn_blocking(move || {
        disks
            .iter()
            .map(|d| {
                let (writable, reason) = match d.verify_for_write(0) {
                    Ok(()) => (true, String::new()),
                    Err(e) => (false, e.to_string()),
                };
                let space = d.space().unwrap_or_default();
                let free = space.free_bytes.saturating_sub(d.reserve_bytes);
                DiskOffer {
                    disk_id: d.id,
                    // The failure domain (the filesystem, or a ZFS pool's).
                    fs_dev: d.domain,
                    free_bytes: free,
                    total_bytes: space.total_bytes,
                    writable,
                    reason,
                    state: Some(d.state().0),
                    mount: wormfs_parts::disk::mount_of(&d.root, d.fs_dev),
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(internal)?;
    Ok(Json(offers))
}

async fn create_upload(
    State(sh): State<Arc<Shared>>,
    Json(req): Json<NewUpload>,
) -> Result<Json<UploadCreated>, Failure> {
    let disk = sh.disks.get(req.disk_id).ok_or_else(|| {
        Failure(
            StatusCode::NOT_FOUND,
            format!("disk {} is not attached here", req.disk_id),
        )
    })?;
    let dest = disk.part_path(req.file_id, req.segment, req.part);
    let writer = tokio::task::spawn_blocking(move || {
        LocalPartWriter::create(
            disk,
            dest,
            req.header_len,
            req.block_size,
            req.expected_bytes,
        )
    })
    .await
    .map_err(internal)?
    .map_err(|e| Failure(StatusCode::INSUFFICIENT_STORAGE, format!("{e:#}")))?;
    let id = rand::random::<u64>();
    lock(&sh.uploads).insert(
        id,
        Arc::new(tokio::sync::Mutex::new(Upload {
            state: UploadState::Writing(Box::new(writer)),
            offset: 0,
            touched: Instant::now(),
        })),
    );
    tracing::debug!(upload = id, file = %req.file_id, segment = req.segment, part = req.part, "upload started");
    Ok(Json(UploadCreated { upload: id }))
}

fn upload(sh: &Shared, id: u64) -> Result<Arc<tokio::sync::Mutex<Upload>>, Failure> {
    lock(&sh.uploads)
        .get(&id)
        .cloned()
        .ok_or_else(|| Failure(StatusCode::NOT_FOUND, format!("no upload {id}")))
}

#[derive(serde::Deserialize)]
struct OffsetQuery {
    offset: u64,
}

async fn put_chunk(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<u64>,
    Query(q): Query<OffsetQuery>,
    body: Bytes,
) -> Result<Response, Failure> {
    let up = upload(&sh, id)?;
    let mut u = up.lock().await;
    u.touched = Instant::now();
    // The offset is the peer's number: a sum that would wrap is a bad request, not a panic.
    let end = q.offset.checked_add(body.len() as u64).ok_or_else(|| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("offset {} plus {} bytes overflows", q.offset, body.len()),
        )
    })?;
    if let UploadState::Failed(why) = &u.state {
        return Err(Failure(StatusCode::GONE, why.clone()));
    }
    if q.offset != u.offset || matches!(u.state, UploadState::Finished | UploadState::Finishing(_))
    {
        // A chunk sent again after its answer was lost is already written.
        let status = if end == u.offset {
            StatusCode::OK
        } else {
            StatusCode::CONFLICT
        };
        return Ok((status, Json(UploadOffset { offset: u.offset })).into_response());
    }
    let UploadState::Writing(mut w) = std::mem::replace(
        &mut u.state,
        UploadState::Failed("write in progress".into()),
    ) else {
        return Err(internal("upload in a bad state"));
    };
    let res = tokio::task::spawn_blocking(move || {
        let r = w.write(&body);
        (w, r)
    })
    .await;
    match res {
        Ok((w, Ok(()))) => {
            u.state = UploadState::Writing(w);
            u.offset = end;
            Ok(Json(UploadOffset { offset: end }).into_response())
        }
        Ok((w, Err(e))) => {
            let why = format!("{e:#}");
            u.state = UploadState::Failed(why.clone());
            let _ = tokio::task::spawn_blocking(move || w.abort()).await;
            Err(Failure(StatusCode::INSUFFICIENT_STORAGE, why))
        }
        Err(e) => Err(internal(e)),
    }
}

async fn finish_upload(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<u64>,
    Json(header): Json<PartHeader>,
) -> Result<StatusCode, Failure> {
    let up = upload(&sh, id)?;
    let mut outcome = {
        let mut u = up.lock().await;
        u.touched = Instant::now();
        match std::mem::replace(&mut u.state, UploadState::Failed("finishing".into())) {
            UploadState::Writing(w) => {
                let (tx, rx) = tokio::sync::watch::channel(None);
                u.state = UploadState::Finishing(rx.clone());
                // In a task of its own: a client that timed out (a slow fsync on a loaded disk)
                // drops its request, not the finish; its retry finds `Finishing` and waits for
                // the same outcome. The part counts as finished only once the finish returned Ok.
                let up = up.clone();
                tokio::spawn(
                    async move {
                        let r = finish_part(w, header).await;
                        let mut u = up.lock().await;
                        u.touched = Instant::now();
                        u.state = match &r {
                            Ok(()) => UploadState::Finished,
                            Err(why) => UploadState::Failed(why.clone()),
                        };
                        let _ = tx.send(Some(r));
                    }
                    .instrument(tracing::info_span!("part_finish", upload = id)),
                );
                rx
            }
            UploadState::Finishing(rx) => {
                u.state = UploadState::Finishing(rx.clone());
                rx
            }
            UploadState::Finished => {
                u.state = UploadState::Finished;
                return Ok(StatusCode::NO_CONTENT);
            }
            UploadState::Failed(why) => {
                u.state = UploadState::Failed(why.clone());
                return Err(Failure(StatusCode::GONE, why));
            }
        }
    };
    let r = match outcome.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or_else(|| Err("no outcome".into())),
        Err(_) => Err("the finish task ended without an outcome".into()),
    };
    r.map(|()| StatusCode::NO_CONTENT)
        .map_err(|why| Failure(StatusCode::INSUFFICIENT_STORAGE, why))
}

/// Finishes a part (header, fsync, rename, directory fsync) on the blocking pool; its error as
/// text. With the `crash-points` test feature, a test can delay it (a slow disk) and make it
/// fail after the delay (a failed fsync), removing the temporary file as a failed finish does
/// ([`wormfs_parts::crash_point::data_finish_fault`]).
async fn finish_part(w: Box<LocalPartWriter>, header: PartHeader) -> Result<(), String> {
    let (delay, fail) = wormfs_parts::crash_point::data_finish_fault();
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    if fail {
        let _ = tokio::task::spawn_blocking(move || w.abort()).await;
        return Err("injected fsync failure (test)".into());
    }
    match tokio::task::spawn_blocking(move || w.finish(header)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(e) => Err(format!("the finish task failed: {e}")),
    }
}

async fn abort_upload(State(sh): State<Arc<Shared>>, Path(id): Path<u64>) -> StatusCode {
    let Some(up) = lock(&sh.uploads).remove(&id) else {
        return StatusCode::NO_CONTENT;
    };
    let mut u = up.lock().await;
    if let UploadState::Writing(w) =
        std::mem::replace(&mut u.state, UploadState::Failed("aborted".into()))
    {
        let _ = tokio::task::spawn_blocking(move || w.abort()).await;
    }
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
struct BlocksQuery {
    first: u64,
    count: u64,
}

async fn read_blocks(
    State(sh): State<Arc<Shared>>,
    Path((disk_id, file_s, segment, part)): Path<(DiskId, String, u32, u16)>,
    Query(q): Query<BlocksQuery>,
) -> Result<Response, Failure> {
    let file_id: FileId = file_s
        .parse()
        .map_err(|e| Failure(StatusCode::BAD_REQUEST, format!("file id: {e}")))?;
    let key = (disk_id, file_id, segment, part);
    let sh2 = sh.clone();
    let res = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, Failure> {
        let opened = lock(&sh2.open).get(&key).cloned();
        let part_file = match opened {
            Some(p) => p,
            None => {
                let p = sh2
                    .disks
                    .open_part(disk_id, file_id, segment, part)
                    .map_err(part_failure)?;
                let p = Arc::new(p);
                let mut open = lock(&sh2.open);
                if open.len() >= OPEN_PARTS {
                    open.clear();
                }
                open.insert(key, p.clone());
                p
            }
        };
        // `first` and `count` come from a peer: a range outside the part is its mistake (400),
        // never a wrapped sum or a panic.
        let blocks = part_file.header.block_count();
        if q.count == 0 || q.first >= blocks || q.first.checked_add(q.count).is_none() {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                format!(
                    "blocks {}+{} lie outside the part's {blocks} blocks",
                    q.first, q.count
                ),
            ));
        }
        part_file.read_blocks(q.first, q.count).map_err(|e| {
            lock(&sh2.open).remove(&key);
            part_failure(e)
        })
    })
    .await
    .map_err(internal)??;
    let crc = crc32c::crc32c(&res);
    Ok(([(CRC_HEADER, crc.to_string())], res).into_response())
}

fn part_failure(e: PartReadError) -> Failure {
    let status = match e {
        PartReadError::Missing | PartReadError::DiskNotHere(_) => StatusCode::NOT_FOUND,
        PartReadError::WrongPart => StatusCode::CONFLICT,
        PartReadError::Corrupt(_) | PartReadError::Format(_) => StatusCode::UNPROCESSABLE_ENTITY,
        PartReadError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        PartReadError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    Failure(status, e.to_string())
}
