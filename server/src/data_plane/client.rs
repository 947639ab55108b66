//! The data client: talks to other nodes' data servers, with a pooled connection per node
//! (mutual TLS, the node's pinned certificate), timeouts, and retries with exponential
//! backoff for requests that can be repeated safely.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::cert::NodeCert;
use super::directory::{Directory, Endpoint};
use super::tls::{client_config, CipherPreference};
use super::wire::{DiskOffer, NewUpload, UploadCreated, UploadOffset, CRC_HEADER};
use wormfs_parts::ids::{DiskId, FileId, NodeId};
use wormfs_parts::part_format::PartHeader;

/// [`REQUEST_TIMEOUT`], or a test's shorter one.
fn request_timeout() -> Duration {
    wormfs_parts::crash_point::data_request_timeout().unwrap_or(REQUEST_TIMEOUT)
}

/// How long to wait for a TCP connection and handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request may take (a chunk, a block read, a finish with its fsync).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a block read may take before the block is decoded from other parts instead.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of a request that can be repeated.
const ATTEMPTS: u32 = 5;
/// The first retry's delay; each next one doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long to wait before asking a node that refused at once a second time: longer than the
/// 250 ms in which every node rereads the membership (and the certificates it accepts).
const DIRECTORY_CATCH_UP: Duration = Duration::from_millis(300);
/// How long a node's disk offers are reused for placement.
const OFFERS_TTL: Duration = Duration::from_secs(2);
/// How long block reads skip a node whose last read found it silent (unreachable or past the
/// read timeout): its blocks are decoded from other parts meanwhile, so a machine that is off
/// costs one wait, not one per file (a media player would stall at every file).
const SILENT_NODE_SKIP: Duration = Duration::from_secs(15);

/// A data-plane request that failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DataError {
    /// The node has no data address or certificate registered.
    #[error("node {0} has no data-plane address registered")]
    Unknown(NodeId),
    /// The node could not be reached or did not answer in time.
    #[error("node {node} ({addr}) unreachable: {detail}")]
    Unreachable {
        /// The node.
        node: NodeId,
        /// Its address.
        addr: String,
        /// What happened.
        detail: String,
    },
    /// The node answered with an error.
    #[error("node {node} answered {status}: {message}")]
    Refused {
        /// The node.
        node: NodeId,
        /// The HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The bytes received do not match their checksum.
    #[error("node {0} sent a block whose checksum does not match")]
    Corrupt(NodeId),
}

impl DataError {
    /// Whether trying again may help.
    fn transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Corrupt(_) => true,
            Self::Refused { status, .. } => *status >= 500 && *status != 507,
            Self::Unknown(_) => false,
        }
    }
}

/// A node's disk offers and when they were asked for.
type CachedOffers = (Instant, Result<Vec<DiskOffer>, DataError>);

struct Conn {
    endpoint: Endpoint,
    http: reqwest::Client,
}

/// The client side of the data plane.
pub struct DataClient {
    cert: NodeCert,
    dir: Arc<Directory>,
    pref: CipherPreference,
    conns: Mutex<HashMap<NodeId, Arc<Conn>>>,
    offers: Mutex<HashMap<NodeId, CachedOffers>>,
    /// Nodes whose last block read found them silent, and until when reads skip them.
    silent: Mutex<HashMap<NodeId, Instant>>,
    rt: tokio::runtime::Handle,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DataClient {
    /// A client presenting `cert`, finding nodes in `dir`. Must be made on the runtime that
    /// its blocking callers ([`Self::read_blocks_blocking`]) use.
    pub fn new(cert: NodeCert, dir: Arc<Directory>, pref: CipherPreference) -> Arc<Self> {
        Arc::new(Self {
            cert,
            dir,
            pref,
            conns: Mutex::default(),
            offers: Mutex::default(),
            silent: Mutex::default(),
            rt: tokio::runtime::Handle::current(),
        })
    }

    /// The directory it uses.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.dir
    }

    fn conn(&self, node: NodeId) -> Result<Arc<Conn>, DataError> {
        let endpoint = self.dir.endpoint(node).ok_or(DataError::Unknown(node))?;
        let mut conns = lock(&self.conns);
        if let Some(c) = conns.get(&node) {
            if c.endpoint == endpoint {
                return Ok(c.clone());
            }
        }
        let unreachable = |detail: String| DataError::Unreachable {
            node,
            addr: endpoint.addr.to_string(),
            detail,
        };
        let tls = client_config(&self.cert, endpoint.fingerprint, self.pref)
            .map_err(|e| unreachable(format!("{e:#}")))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .http1_only()
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| unreachable(e.to_string()))?;
        let c = Arc::new(Conn { endpoint, http });
        conns.insert(node, c.clone());
        Ok(c)
    }

    fn url(c: &Conn, path: &str) -> String {
        format!("https://{}{path}", c.endpoint.addr)
    }

    /// Sends a request and turns a non-success answer into [`DataError::Refused`].
    async fn send(
        &self,
        node: NodeId,
        c: &Conn,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, DataError> {
        let resp = req.send().await.map_err(|e| DataError::Unreachable {
            node,
            addr: c.endpoint.addr.to_string(),
            detail: error_chain(&e),
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let message = resp.text().await.unwrap_or_default();
        Err(DataError::Refused {
            node,
            status,
            message,
        })
    }

    /// Runs `op` until it succeeds, fails for good, or [`ATTEMPTS`] run out, doubling the
    /// delay between attempts.
    async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, DataError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, DataError>>,
    {
        let mut delay = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.transient() && attempt < ATTEMPTS => {
                    tracing::debug!(
                        attempt,
                        "data plane: {what} failed, retrying in {delay:?}: {e}"
                    );
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The disks `node` offers for new parts (reused for a moment; an unreachable node's
    /// failure too, so placement does not wait on it for every segment). A node the
    /// directory does not know yet is not remembered as a failure: it may register any moment.
    pub async fn disk_offers(&self, node: NodeId) -> Result<Vec<DiskOffer>, DataError> {
        if let Some((at, r)) = lock(&self.offers).get(&node) {
            if at.elapsed() < OFFERS_TTL {
                return r.clone();
            }
        }
        let r = self.ask_offers(node).await;
        if !matches!(r, Err(DataError::Unknown(_))) {
            lock(&self.offers).insert(node, (Instant::now(), r.clone()));
        }
        r
    }

    /// The disks `node` offers now, asked afresh (not the answer reused for a moment), and
    /// remembered for the next [`Self::disk_offers`].
    pub async fn disk_offers_now(&self, node: NodeId) -> Result<Vec<DiskOffer>, DataError> {
        let r = self.ask_offers(node).await;
        if !matches!(r, Err(DataError::Unknown(_))) {
            lock(&self.offers).insert(node, (Instant::now(), r.clone()));
        }
        r
    }

    /// Whether `node`'s data server answers now (the disk monitor's liveness probe; neither
    /// read from nor written to the placement's memory of offers).
    pub async fn answers(&self, node: NodeId) -> Result<(), DataError> {
        self.ask_offers(node).await.map(|_| ())
    }

    async fn ask_offers(&self, node: NodeId) -> Result<Vec<DiskOffer>, DataError> {
        let ask = || async {
            let c = self.conn(node)?;
            let req = c
                .http
                .get(Self::url(&c, "/v1/disks"))
                .timeout(CONNECT_TIMEOUT * 2);
            let resp = self.send(node, &c, req).await?;
            resp.json::<Vec<DiskOffer>>()
                .await
                .map_err(|e| DataError::Unreachable {
                    node,
                    addr: c.endpoint.addr.to_string(),
                    detail: e.to_string(),
                })
        };
        let started = Instant::now();
        let mut r = ask().await;
        if matches!(r, Err(DataError::Unreachable { .. })) && started.elapsed() < CONNECT_TIMEOUT {
            // A quick refusal can be a member whose own view of the membership has not caught
            // up yet (a node rereads it every 250 ms and refuses a certificate it does not know
            // yet): asked once more after that. A silent node is not asked again.
            tokio::time::sleep(DIRECTORY_CATCH_UP).await;
            r = ask().await;
        }
        r
    }

    /// Starts a part on `node`; the answer is the upload's id.
    pub async fn create_upload(&self, node: NodeId, req: &NewUpload) -> Result<u64, DataError> {
        let c = self.conn(node)?;
        self.retry("start a part", || async {
            let r = c
                .http
                .post(Self::url(&c, "/v1/uploads"))
                .json(req)
                .timeout(request_timeout());
            let resp = self.send(node, &c, r).await?;
            let created: UploadCreated = resp.json().await.map_err(|e| DataError::Refused {
                node,
                status: 200,
                message: e.to_string(),
            })?;
            Ok(created.upload)
        })
        .await
    }

    /// Sends the chunk at `offset` of an upload; answers the offset after it. A chunk whose
    /// answer was lost is not written twice: the server says where it stands.
    pub async fn put_chunk(
        &self,
        node: NodeId,
        upload: u64,
        offset: u64,
        chunk: Bytes,
    ) -> Result<u64, DataError> {
        let c = self.conn(node)?;
        let end = offset + chunk.len() as u64;
        self.retry("send part data", || async {
            let r = c
                .http
                .put(Self::url(
                    &c,
                    &format!("/v1/uploads/{upload}?offset={offset}"),
                ))
                .body(chunk.clone())
                .timeout(request_timeout());
            let resp = self.send(node, &c, r).await?;
            let o: UploadOffset = resp.json().await.map_err(|e| DataError::Refused {
                node,
                status: 200,
                message: e.to_string(),
            })?;
            if o.offset == end {
                Ok(end)
            } else {
                Err(DataError::Refused {
                    node,
                    status: 409,
                    message: format!("upload at {}, expected {end}", o.offset),
                })
            }
        })
        .await
    }

    /// Makes an upload's part durable under its final name.
    pub async fn finish_upload(
        &self,
        node: NodeId,
        upload: u64,
        header: &PartHeader,
    ) -> Result<(), DataError> {
        let c = self.conn(node)?;
        self.retry("finish a part", || async {
            let r = c
                .http
                .post(Self::url(&c, &format!("/v1/uploads/{upload}/finish")))
                .json(header)
                .timeout(request_timeout());
            self.send(node, &c, r).await.map(|_| ())
        })
        .await
    }

    /// Discards an upload (best effort: the server abandons idle uploads anyway).
    pub async fn abort_upload(&self, node: NodeId, upload: u64) {
        let Ok(c) = self.conn(node) else { return };
        let r = c
            .http
            .delete(Self::url(&c, &format!("/v1/uploads/{upload}")))
            .timeout(CONNECT_TIMEOUT * 2);
        if let Err(e) = self.send(node, &c, r).await {
            tracing::debug!("data plane: abort upload {upload} on node {node}: {e}");
        }
    }

    /// Reads `count` blocks from block `first` of a part on another node; the server verifies
    /// the blocks' checksums, this side the body's.
    pub async fn read_blocks(
        &self,
        part: &RemotePart,
        first: u64,
        count: u64,
    ) -> Result<Bytes, DataError> {
        let node = part.node;
        let c = self.conn(node)?;
        if let Some(until) = lock(&self.silent).get(&node).copied() {
            let now = Instant::now();
            if now < until {
                return Err(DataError::Unreachable {
                    node,
                    addr: c.endpoint.addr.to_string(),
                    detail: format!(
                        "silent at its last read; asked again in {} s",
                        (until - now).as_secs() + 1
                    ),
                });
            }
        }
        let path = format!(
            "/v1/parts/{}/{}/{}/{}?first={first}&count={count}",
            part.disk, part.file, part.segment, part.part
        );
        let r = self.read_blocks_from(node, &c, &path).await;
        match &r {
            Err(DataError::Unreachable { .. }) => {
                lock(&self.silent).insert(node, Instant::now() + SILENT_NODE_SKIP);
            }
            _ => {
                lock(&self.silent).remove(&node);
            }
        }
        r
    }

    async fn read_blocks_from(
        &self,
        node: NodeId,
        c: &Conn,
        path: &str,
    ) -> Result<Bytes, DataError> {
        // Two tries: a pooled connection the server closed fails once, at once; a node that
        // stays silent for the connect timeout is not asked again (it is left to the decoder).
        let mut tries = 0;
        loop {
            tries += 1;
            let started = Instant::now();
            let r = c.http.get(Self::url(c, path)).timeout(READ_TIMEOUT);
            let res = async {
                let resp = self.send(node, c, r).await?;
                let crc: Option<u32> = resp
                    .headers()
                    .get(CRC_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let body = resp.bytes().await.map_err(|e| DataError::Unreachable {
                    node,
                    addr: c.endpoint.addr.to_string(),
                    detail: error_chain(&e),
                })?;
                if crc != Some(crc32c::crc32c(&body)) {
                    return Err(DataError::Corrupt(node));
                }
                Ok(body)
            }
            .await;
            match res {
                Err(e) if e.transient() && tries < 2 && started.elapsed() < CONNECT_TIMEOUT => {
                    tracing::debug!("data plane: block read failed, trying once more: {e}")
                }
                r => return r,
            }
        }
    }

    /// [`Self::read_blocks`] for a blocking thread (never an async one).
    pub fn read_blocks_blocking(
        &self,
        part: &RemotePart,
        first: u64,
        count: u64,
    ) -> Result<Bytes, DataError> {
        self.rt.block_on(self.read_blocks(part, first, count))
    }
}

/// A part on another node's disk.
#[derive(Clone, Copy, Debug)]
pub struct RemotePart {
    /// The node holding it.
    pub node: NodeId,
    /// Its disk there.
    pub disk: DiskId,
    /// Its file.
    pub file: FileId,
    /// Its segment.
    pub segment: u32,
    /// Its index in the segment.
    pub part: u16,
}

/// An error with its sources, which say what really happened (refused, timed out, TLS).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
