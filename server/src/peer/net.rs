//! The private peer network: a libp2p swarm over TCP -> pnet (keyed from the cluster secret) ->
//! noise -> yamux, carrying [`PeerRequest`]s as request-response substreams. One task owns the
//! swarm; [`PeerNet`] is a cheap handle that sends it work, and inbound requests come out of a
//! channel as [`Inbound`]s for the consensus layer to answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use libp2p::core::transport::Transport as _;
use libp2p::core::upgrade::Version;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, cbor, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{identity, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::protocol::{PeerRequest, PeerResponse, PROTOCOL};

/// Largest request or answer accepted (a batch of log entries, a snapshot chunk).
const MAX_MESSAGE: u64 = 16 * 1024 * 1024;
/// How long a request may take before the swarm gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection with nothing on it is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

type Behaviour = cbor::Behaviour<PeerRequest, PeerResponse>;

/// Why a request got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// The peer could not be reached at all.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The request was sent but no answer came back.
    #[error("no answer from peer: {0}")]
    Failed(String),
    /// The peer network has stopped.
    #[error("the peer network has stopped")]
    Stopped,
}

enum Cmd {
    Request {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        req: PeerRequest,
        reply: oneshot::Sender<Result<PeerResponse, PeerError>>,
    },
    Respond {
        ch: ResponseChannel<PeerResponse>,
        resp: PeerResponse,
    },
    Dial(Multiaddr),
}

/// A request from a peer, to be answered once through [`Responder::send`].
pub struct Inbound {
    /// Who sent it.
    pub peer: PeerId,
    /// The address its connection came from.
    pub remote: Option<Multiaddr>,
    /// What it asks.
    pub request: PeerRequest,
    /// Where the answer goes.
    pub reply: Responder,
}

/// Answers one inbound request.
pub struct Responder {
    ch: ResponseChannel<PeerResponse>,
    tx: mpsc::Sender<Cmd>,
}

impl Responder {
    /// Sends the answer (dropped silently if the peer has gone).
    pub async fn send(self, resp: PeerResponse) {
        let _ = self.tx.send(Cmd::Respond { ch: self.ch, resp }).await;
    }
}

/// What the swarm task knows about connections, shared with handles.
#[derive(Default)]
struct Shared {
    /// Open connections by peer: the remote address of each.
    connected: HashMap<PeerId, Vec<Multiaddr>>,
    /// The last failure dialling an address, and when.
    dial_errors: HashMap<Multiaddr, (Instant, String)>,
    /// Dials under way, by address.
    dialing: HashMap<Multiaddr, Instant>,
}

/// Where a dial to an address stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialState {
    /// Never dialled (or long forgotten).
    Unknown,
    /// Under way.
    Pending,
    /// Connected to this peer.
    Connected(PeerId),
    /// The last attempt failed, with this error.
    Failed(String),
}

/// A handle on the running peer network.
#[derive(Clone)]
pub struct PeerNet {
    tx: mpsc::Sender<Cmd>,
    local: PeerId,
    listen: watch::Receiver<Vec<Multiaddr>>,
    shared: Arc<Mutex<Shared>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The multiaddr of a socket address.
pub fn multiaddr_of(addr: SocketAddr) -> Multiaddr {
    Multiaddr::from(addr.ip()).with(Protocol::Tcp(addr.port()))
}

/// The peer id at the end of a multiaddr (`.../p2p/<id>`).
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// The IP address in a multiaddr.
pub fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

/// Reads the node's peer identity from `path`, or makes one (mode 0600).
/// The data folder's file holding this node's peer key.
pub const PEER_KEY_FILE: &str = "peer-key";

/// This node's peer key from `path`, made (mode 0600) when there is none.
pub fn load_identity(path: &std::path::Path) -> anyhow::Result<identity::Keypair> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim())
                .with_context(|| format!("{} is not a peer key", path.display()))?;
            identity::Keypair::from_protobuf_encoding(&bytes)
                .with_context(|| format!("{} is not a peer key", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = identity::Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().context("encode the peer key")?;
            wormfs_parts::fsutil::write_secret(path, &hex::encode(bytes))?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

impl PeerNet {
    /// Starts the swarm listening on `listen`; returns the handle and the inbound requests.
    pub async fn start(
        key: identity::Keypair,
        psk: PreSharedKey,
        listen: SocketAddr,
        shutdown: CancellationToken,
    ) -> anyhow::Result<(PeerNet, mpsc::Receiver<Inbound>)> {
        let codec = cbor::codec::Codec::<PeerRequest, PeerResponse>::default()
            .set_request_size_maximum(MAX_MESSAGE)
            .set_response_size_maximum(MAX_MESSAGE);
        let behaviour = Behaviour::with_codec(
            codec,
            [(
                StreamProtocol::new(PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
        );
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|key| {
                let noise = libp2p::noise::Config::new(key)?;
                let tcp = libp2p::tcp::tokio::Transport::new(
                    libp2p::tcp::Config::default().nodelay(true),
                );
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    tcp.and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                        .upgrade(Version::V1Lazy)
                        .authenticate(noise)
                        .multiplex(libp2p::yamux::Config::default())
                        .timeout(Duration::from_secs(20)),
                )
            })
            .context("build the peer transport")?
            .with_behaviour(|_| behaviour)
            .context("build the peer behaviour")?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
            .build();
        let local = *swarm.local_peer_id();
        swarm
            .listen_on(multiaddr_of(listen))
            .with_context(|| format!("listen for peers on {listen}"))?;
        let (tx, rx) = mpsc::channel(256);
        let (in_tx, in_rx) = mpsc::channel(256);
        let (listen_tx, mut listen_rx) = watch::channel(Vec::new());
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = SwarmTask {
            swarm,
            rx,
            tx: tx.clone(),
            inbound: in_tx,
            pending: HashMap::new(),
            listen: listen_tx,
            shared: shared.clone(),
            remote_of: HashMap::new(),
        };
        tokio::spawn(
            task.run(shutdown)
                .instrument(tracing::info_span!("peer_network", peer_id = %local)),
        );
        // Wait until the listener is up (and its port known when 0 was asked for).
        tokio::time::timeout(
            Duration::from_secs(10),
            listen_rx.wait_for(|l| !l.is_empty()),
        )
        .await
        .with_context(|| format!("listen for peers on {listen}: no listener after 10 s"))?
        .with_context(|| format!("listen for peers on {listen}"))?;
        Ok((
            PeerNet {
                tx,
                local,
                listen: listen_rx,
                shared,
            },
            in_rx,
        ))
    }

    /// A peer network with no listener and no peers, for a machine that runs alone with an
    /// in-process consensus (tests, offline tools): every request fails at once as stopped,
    /// dials go nowhere, and nothing comes in. It names a loopback address without a port so
    /// that the membership still records an address for this node.
    pub fn offline(shutdown: CancellationToken) -> (PeerNet, mpsc::Receiver<Inbound>) {
        let (tx, mut rx) = mpsc::channel::<Cmd>(16);
        let (_in_tx, in_rx) = mpsc::channel(1);
        let local = identity::Keypair::generate_ed25519().public().to_peer_id();
        let addr = multiaddr_of(SocketAddr::from(([127, 0, 0, 1], 0)));
        let (_listen_tx, listen) = watch::channel(vec![addr]);
        tokio::spawn(async move {
            // Dropping a request's reply answers it as `PeerError::Stopped`.
            let _keep_inbound_open = _in_tx;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    cmd = rx.recv() => if cmd.is_none() { break },
                }
            }
        });
        (
            PeerNet {
                tx,
                local,
                listen,
                shared: Arc::default(),
            },
            in_rx,
        )
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.local
    }

    /// The addresses the node listens on, each ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen
            .borrow()
            .iter()
            .map(|a| a.clone().with(Protocol::P2p(self.local)))
            .collect()
    }

    /// Peers with an open connection, with the remote address of each connection.
    pub fn connected(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        lock(&self.shared)
            .connected
            .iter()
            .map(|(p, a)| (*p, a.clone()))
            .collect()
    }

    /// Where dialling `addr` stands: connected, under way, or the last failure within `recent`.
    pub fn dial_state(&self, addr: &Multiaddr, recent: Duration) -> DialState {
        let s = lock(&self.shared);
        if let Some((p, _)) = s.connected.iter().find(|(_, a)| a.contains(addr)) {
            return DialState::Connected(*p);
        }
        if s.dialing.contains_key(addr) {
            return DialState::Pending;
        }
        match s.dial_errors.get(addr) {
            Some((at, e)) if at.elapsed() < recent => DialState::Failed(e.clone()),
            _ => DialState::Unknown,
        }
    }

    /// Dials `addr` (no peer id needed); the connection shows up in [`Self::connected`].
    pub async fn dial(&self, addr: Multiaddr) {
        let _ = self.tx.send(Cmd::Dial(addr)).await;
    }

    /// Sends `req` to `peer` (dialling one of `addrs` if not connected) and waits for the answer.
    pub async fn request(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        req: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, PeerError> {
        if wormfs_parts::crash_point::partitioned(&peer.to_string()) {
            return Err(PeerError::Unreachable(format!(
                "{peer}: partitioned (test)"
            )));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Request {
                peer,
                addrs,
                req,
                reply,
            })
            .await
            .map_err(|_| PeerError::Stopped)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(PeerError::Stopped),
            Err(_) => Err(PeerError::Failed(format!("no answer within {timeout:?}"))),
        }
    }
}

struct SwarmTask {
    swarm: Swarm<Behaviour>,
    rx: mpsc::Receiver<Cmd>,
    tx: mpsc::Sender<Cmd>,
    inbound: mpsc::Sender<Inbound>,
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<PeerResponse, PeerError>>>,
    listen: watch::Sender<Vec<Multiaddr>>,
    shared: Arc<Mutex<Shared>>,
    /// Remote address of each connection.
    remote_of: HashMap<libp2p::swarm::ConnectionId, Multiaddr>,
}

impl SwarmTask {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                ev = self.swarm.select_next_some() => self.event(ev).await,
            }
        }
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(PeerError::Stopped));
        }
        tracing::debug!("peer network stopped");
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Request {
                peer,
                addrs,
                req,
                reply,
            } => {
                for a in addrs {
                    self.swarm.add_peer_address(peer, a);
                }
                let id = self.swarm.behaviour_mut().send_request(&peer, req);
                self.pending.insert(id, reply);
            }
            Cmd::Respond { ch, resp } => {
                if self.swarm.behaviour_mut().send_response(ch, resp).is_err() {
                    tracing::debug!("answer dropped: the peer went away");
                }
            }
            Cmd::Dial(addr) => {
                lock(&self.shared)
                    .dialing
                    .insert(addr.clone(), Instant::now());
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    self.dial_failed(&addr, e.to_string());
                }
            }
        }
    }

    fn dial_failed(&mut self, addr: &Multiaddr, why: String) {
        tracing::debug!(%addr, "dial failed: {why}");
        let mut s = lock(&self.shared);
        s.dialing.remove(addr);
        s.dial_errors.insert(addr.clone(), (Instant::now(), why));
    }

    async fn event(&mut self, ev: SwarmEvent<request_response::Event<PeerRequest, PeerResponse>>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening for peers");
                self.listen.send_modify(|l| l.push(address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let remote = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address.clone(),
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                };
                tracing::debug!(peer = %peer_id, %remote, "peer connected");
                self.remote_of.insert(connection_id, remote.clone());
                let mut s = lock(&self.shared);
                if let ConnectedPoint::Dialer { address, .. } = &endpoint {
                    s.dial_errors.remove(address);
                    s.dialing.remove(address);
                }
                s.connected.entry(peer_id).or_default().push(remote);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => {
                let remote = self.remote_of.remove(&connection_id);
                let mut s = lock(&self.shared);
                if let Some(list) = s.connected.get_mut(&peer_id) {
                    if let Some(i) = remote.and_then(|r| list.iter().position(|a| *a == r)) {
                        list.remove(i);
                    }
                    if list.is_empty() {
                        s.connected.remove(&peer_id);
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                error: libp2p::swarm::DialError::Transport(errs),
                ..
            } => {
                for (addr, e) in &errs {
                    self.dial_failed(addr, error_chain(e));
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(remote = %send_back_addr, "inbound connection refused: {}", error_chain(&error));
            }
            SwarmEvent::Behaviour(ev) => self.behaviour(ev).await,
            _ => {}
        }
    }

    async fn behaviour(&mut self, ev: request_response::Event<PeerRequest, PeerResponse>) {
        match ev {
            request_response::Event::Message {
                peer,
                connection_id,
                message,
            } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let inbound = Inbound {
                        peer,
                        remote: self.remote_of.get(&connection_id).cloned(),
                        request,
                        reply: Responder {
                            ch: channel,
                            tx: self.tx.clone(),
                        },
                    };
                    // Never block the swarm: a full queue drops the request (the peer times
                    // out and retries).
                    if self.inbound.try_send(inbound).is_err() {
                        tracing::warn!(%peer, "inbound request dropped: the node is busy");
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let e = match error {
                        OutboundFailure::DialFailure => {
                            PeerError::Unreachable("dial failed".into())
                        }
                        other => PeerError::Failed(other.to_string()),
                    };
                    let _ = reply.send(Err(e));
                }
            }
            _ => {}
        }
    }
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
