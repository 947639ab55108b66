//! The part data plane's transport cost on loopback, one connection (tests/bench/data_plane.sh):
//! plain TCP, TLS 1.3 with the data plane's own configurations (pinned certificates, mutual
//! authentication; the cipher the node would pick here, then ChaCha20-Poly1305 first as on a
//! CPU without AES instructions), and HTTP/1.1 over that TLS the way the data plane talks:
//! sequential 1 MiB `PUT /v1/uploads/1?offset=N` into an axum server that discards the bodies,
//! and sequential GETs that each answer a preallocated 1 MiB body, from a reqwest client built
//! like `DataClient`'s.
//!
//!   data_plane_bench [GIB [CASE...]]      (default 2 GiB, every case)
//!
//! CASE is tcp, tls, chacha, put or get (to profile one; the ratio column is then to the first
//! case run).
//!
//! Each side runs on its own OS thread with its own current-thread tokio runtime, so the
//! thread's CPU time (the kernel's per-thread runtime, /proc/thread-self/schedstat, the same
//! counter as CLOCK_THREAD_CPUTIME_ID) is that side's whole cost, its share of the kernel's
//! socket work included. Throughput is timed on the client, from its first byte until the
//! server has confirmed the last one (the last answer for HTTP).
//!
//! Prints one markdown table: case, GB/s (10^9 bytes), ratio to plain TCP in the same run,
//! client and server CPU-seconds per GiB.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::routing::{get, put};
use axum::{Json, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use wormfs_server::data_plane::tls::{client_config, server_config, Allowed, CipherPreference};
use wormfs_server::data_plane::NodeCert;

// The allocator the node uses (server/src/main.rs): rustls allocates a buffer per record.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHUNK: usize = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;

/// This thread's CPU time in seconds (user + system).
fn thread_cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("read /proc/thread-self/schedstat");
    let ns: u64 = s
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat's first field");
    ns as f64 / 1e9
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Tcp,
    Tls(CipherPreference),
    Put(CipherPreference),
    Get(CipherPreference),
}

impl Case {
    fn pref(self) -> Option<CipherPreference> {
        match self {
            Case::Tcp => None,
            Case::Tls(p) | Case::Put(p) | Case::Get(p) => Some(p),
        }
    }
}

/// The certificates of a client node and a server node, made as a node makes them.
struct Certs {
    server: NodeCert,
    client: NodeCert,
    allowed: Allowed,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn certs() -> Certs {
    let ds = tempfile::tempdir().expect("temp dir");
    let dc = tempfile::tempdir().expect("temp dir");
    let server = NodeCert::load_or_create(ds.path(), 1).expect("server certificate");
    let client = NodeCert::load_or_create(dc.path(), 2).expect("client certificate");
    let allowed: Allowed = Arc::new(RwLock::new(HashMap::from([(client.fingerprint, 2)])));
    Certs {
        server,
        client,
        allowed,
        _dirs: (ds, dc),
    }
}

/// What one case measured.
struct Measure {
    secs: f64,
    bytes: u64,
    client_cpu: f64,
    server_cpu: f64,
    /// The negotiated cipher suite, as the server saw it.
    suite: Option<String>,
    connections: usize,
}

fn run(case: Case, bytes: u64, certs: &Certs) -> Measure {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = std_listener.local_addr().expect("local address");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let chunks = bytes / CHUNK as u64;
    let acceptor = case.pref().map(|p| {
        TlsAcceptor::from(
            server_config(&certs.server, certs.allowed.clone(), p).expect("server config"),
        )
    });
    let client_tls = case
        .pref()
        .map(|p| client_config(&certs.client, certs.server.fingerprint, p).expect("client config"));
    let suite = Arc::new(Mutex::new(None::<String>));
    let connections = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();

    let server = {
        let suite = suite.clone();
        let connections = connections.clone();
        std::thread::Builder::new()
            .name("server".into())
            .spawn(move || {
                let rt = runtime();
                let cpu0 = thread_cpu();
                let cpu = rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                    match case {
                        Case::Tcp => {
                            let (mut s, _) = listener.accept().await.expect("accept");
                            connections.fetch_add(1, Ordering::Relaxed);
                            s.set_nodelay(true).ok();
                            sink(&mut s, bytes).await;
                            thread_cpu()
                        }
                        Case::Tls(_) => {
                            let (s, _) = listener.accept().await.expect("accept");
                            connections.fetch_add(1, Ordering::Relaxed);
                            s.set_nodelay(true).ok();
                            let mut tls = acceptor
                                .expect("acceptor")
                                .accept(s)
                                .await
                                .expect("TLS handshake");
                            *suite.lock().unwrap() = suite_of(&tls);
                            sink(&mut tls, bytes).await;
                            thread_cpu()
                        }
                        Case::Put(_) | Case::Get(_) => {
                            let listener = Handshaking {
                                listener,
                                acceptor: acceptor.expect("acceptor"),
                                suite,
                                connections,
                            };
                            let body = Bytes::from(vec![0x5au8; CHUNK]);
                            let app = Router::new()
                                .route("/v1/uploads/{id}", put(put_chunk))
                                .route("/v1/parts/{disk}/{file}/{segment}/{part}", get(read_blocks))
                                .layer(DefaultBodyLimit::max(8 << 20))
                                .with_state(body);
                            let cpu = Arc::new(Mutex::new(0.0));
                            let cpu2 = cpu.clone();
                            let serve =
                                axum::serve(listener, app).with_graceful_shutdown(async move {
                                    let _ = done_rx.await;
                                    *cpu2.lock().unwrap() = thread_cpu();
                                });
                            // The client has gone by the time it says it is done; do not wait
                            // long for anything else.
                            let _ = tokio::time::timeout(Duration::from_secs(10), serve).await;
                            let c = *cpu.lock().unwrap();
                            c
                        }
                    }
                });
                cpu - cpu0
            })
            .expect("server thread")
    };

    let client = std::thread::Builder::new()
        .name("client".into())
        .spawn(move || {
            let rt = runtime();
            rt.block_on(async move {
                let data = Bytes::from(vec![0xa5u8; CHUNK]);
                match case {
                    Case::Tcp => {
                        let s = TcpStream::connect(addr).await.expect("connect");
                        s.set_nodelay(true).ok();
                        source(s, &data, chunks).await
                    }
                    Case::Tls(_) => {
                        let s = TcpStream::connect(addr).await.expect("connect");
                        s.set_nodelay(true).ok();
                        let connector =
                            TlsConnector::from(Arc::new(client_tls.expect("client config")));
                        let name = ServerName::IpAddress(addr.ip().into());
                        let tls = connector.connect(name, s).await.expect("TLS handshake");
                        source(tls, &data, chunks).await
                    }
                    Case::Put(_) | Case::Get(_) => {
                        // As DataClient::conn builds it.
                        let http = reqwest::Client::builder()
                            .use_preconfigured_tls(client_tls.expect("client config"))
                            .http1_only()
                            .tcp_nodelay(true)
                            .connect_timeout(Duration::from_secs(3))
                            .pool_idle_timeout(Duration::from_secs(60))
                            .build()
                            .expect("reqwest client");
                        let cpu0 = thread_cpu();
                        let t0 = Instant::now();
                        if matches!(case, Case::Put(_)) {
                            for i in 0..chunks {
                                let offset = i * CHUNK as u64;
                                let resp = http
                                    .put(format!("https://{addr}/v1/uploads/1?offset={offset}"))
                                    .body(data.clone())
                                    .timeout(Duration::from_secs(30))
                                    .send()
                                    .await
                                    .expect("PUT");
                                assert!(resp.status().is_success(), "PUT: {}", resp.status());
                                let o: UploadOffset = resp.json().await.expect("PUT answer");
                                assert_eq!(o.offset, offset + CHUNK as u64);
                            }
                        } else {
                            for i in 0..chunks {
                                let resp = http
                                    .get(format!(
                                        "https://{addr}/v1/parts/1/f/0/0?first={}&count=4",
                                        i * 4
                                    ))
                                    .timeout(Duration::from_secs(10))
                                    .send()
                                    .await
                                    .expect("GET");
                                assert!(resp.status().is_success(), "GET: {}", resp.status());
                                let body = resp.bytes().await.expect("GET body");
                                assert_eq!(body.len(), CHUNK);
                            }
                        }
                        let secs = t0.elapsed().as_secs_f64();
                        let cpu = thread_cpu() - cpu0;
                        drop(http);
                        (secs, cpu)
                    }
                }
            })
        })
        .expect("client thread");

    let (secs, client_cpu) = client.join().expect("client thread panicked");
    let _ = done_tx.send(());
    let server_cpu = server.join().expect("server thread panicked");
    let suite = suite.lock().unwrap().clone();
    Measure {
        secs,
        bytes: chunks * CHUNK as u64,
        client_cpu,
        server_cpu,
        suite,
        connections: connections.load(Ordering::Relaxed),
    }
}

fn suite_of(tls: &TlsStream<TcpStream>) -> Option<String> {
    tls.get_ref()
        .1
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
}

/// Reads `bytes` into a 1 MiB buffer, then answers one byte.
async fn sink<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S, bytes: u64) {
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < bytes {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "early end of stream after {got} bytes");
        got += n as u64;
    }
    s.write_all(b"k").await.expect("answer");
    s.flush().await.expect("flush");
}

/// Writes `chunks` 1 MiB buffers and waits for the server's byte; the time and this thread's
/// CPU seconds from the first write until then.
async fn source<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    data: &[u8],
    chunks: u64,
) -> (f64, f64) {
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    for _ in 0..chunks {
        s.write_all(data).await.expect("write");
    }
    s.flush().await.expect("flush");
    let mut k = [0u8; 1];
    s.read_exact(&mut k).await.expect("the server's answer");
    let r = (t0.elapsed().as_secs_f64(), thread_cpu() - cpu0);
    let _ = s.shutdown().await;
    r
}

#[derive(serde::Serialize, serde::Deserialize)]
struct UploadOffset {
    offset: u64,
}

#[derive(serde::Deserialize)]
struct OffsetQuery {
    offset: u64,
}

/// Takes the chunk whole, as the data server does, and discards it.
async fn put_chunk(
    Path(_id): Path<u64>,
    Query(q): Query<OffsetQuery>,
    body: Bytes,
) -> Json<UploadOffset> {
    Json(UploadOffset {
        offset: q.offset + body.len() as u64,
    })
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct BlocksQuery {
    first: u64,
    count: u64,
}

/// Answers the preallocated 1 MiB.
async fn read_blocks(
    State(body): State<Bytes>,
    Path(_p): Path<(u64, String, u32, u16)>,
    Query(_q): Query<BlocksQuery>,
) -> Bytes {
    body
}

/// TCP connections after their TLS handshake, as a listener for axum.
struct Handshaking {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    suite: Arc<Mutex<Option<String>>>,
    connections: Arc<AtomicUsize>,
}

impl axum::serve::Listener for Handshaking {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((s, peer)) = self.listener.accept().await else {
                continue;
            };
            self.connections.fetch_add(1, Ordering::Relaxed);
            s.set_nodelay(true).ok();
            match self.acceptor.accept(s).await {
                Ok(tls) => {
                    *self.suite.lock().unwrap() = suite_of(&tls);
                    return (tls, peer);
                }
                Err(e) => eprintln!("handshake refused: {e}"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

fn main() {
    let gib: f64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("GIB: a number"))
        .unwrap_or(2.0);
    let bytes = ((gib * GIB) as u64 / CHUNK as u64).max(1) * CHUNK as u64;
    let certs = certs();
    let all = [
        ("tcp", Case::Tcp, "plain TCP"),
        ("tls", Case::Tls(CipherPreference::Auto), "TLS 1.3, Auto"),
        (
            "chacha",
            Case::Tls(CipherPreference::ChaCha20),
            "TLS 1.3, ChaCha20",
        ),
        (
            "put",
            Case::Put(CipherPreference::Auto),
            "HTTP/1.1 PUT 1 MiB, TLS Auto",
        ),
        (
            "get",
            Case::Get(CipherPreference::Auto),
            "HTTP/1.1 GET 1 MiB, TLS Auto",
        ),
    ];
    let chosen: Vec<String> = std::env::args().skip(2).collect();
    for c in &chosen {
        assert!(
            all.iter().any(|(k, _, _)| k == c),
            "unknown case {c:?}: tcp, tls, chacha, put or get"
        );
    }
    let cases = all
        .into_iter()
        .filter(|(k, _, _)| chosen.is_empty() || chosen.iter().any(|c| c == k))
        .map(|(_, case, name)| (case, name));
    println!(
        "{:.2} GiB per case, one connection on loopback; AES instructions: {}",
        bytes as f64 / GIB,
        wormfs_server::data_plane::tls::cpu_has_aes()
    );
    println!("| case | GB/s | vs plain TCP | client CPU-s/GiB | server CPU-s/GiB |");
    println!("| --- | --- | --- | --- | --- |");
    let mut tcp = None;
    for (case, name) in cases {
        let m = run(case, bytes, &certs);
        let gbps = m.bytes as f64 / m.secs / 1e9;
        let base = *tcp.get_or_insert(gbps);
        let name = match &m.suite {
            Some(s) => format!("{name} ({s})"),
            None => name.to_owned(),
        };
        assert_eq!(m.connections, 1, "{name}: {} connections", m.connections);
        let per_gib = GIB / m.bytes as f64;
        println!(
            "| {name} | {gbps:.2} | {:.2} | {:.3} | {:.3} |",
            gbps / base,
            m.client_cpu * per_gib,
            m.server_cpu * per_gib
        );
    }
}
