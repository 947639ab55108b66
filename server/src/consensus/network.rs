//! Raft's outbound calls (append entries, vote, snapshot chunks) over the peer network. A
//! member's address in the membership is its control-plane multiaddr ending in `/p2p/<peer id>`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use crate::peer::net::{ip_of, peer_of};
use crate::peer::{PeerError, PeerNet, PeerRequest, PeerResponse};
use wormfs_meta::raft_types::TypeConfig;
use wormfs_parts::ids::NodeId;

/// Makes one client per Raft target.
pub(crate) struct PeerNetwork {
    pub(crate) net: PeerNet,
    pub(crate) contacts: Contacts,
}

/// When this node last heard from each member (an answer to a Raft call, or a call from it).
#[derive(Clone, Default)]
pub(crate) struct Contacts(Arc<Mutex<HashMap<NodeId, Instant>>>);

impl Contacts {
    /// Records that `node` was heard from now.
    pub(crate) fn heard(&self, node: NodeId) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, Instant::now());
    }

    /// How long ago `node` was last heard from, if ever since this node started.
    pub(crate) fn since(&self, node: NodeId) -> Option<Duration> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .map(|t| t.elapsed())
    }
}

/// Raft's connection to one member.
pub(crate) struct PeerClient {
    net: PeerNet,
    contacts: Contacts,
    target: NodeId,
    peer: Option<PeerId>,
    addrs: Vec<Multiaddr>,
    raw: String,
}

/// The peer and dialable addresses of a member's recorded address. An unspecified IP is never
/// dialled (connecting to 0.0.0.0 reaches this machine); the swarm then uses the addresses it
/// already knows for that peer.
pub(crate) fn target_of(addr: &str) -> (Option<PeerId>, Vec<Multiaddr>) {
    match addr.parse::<Multiaddr>() {
        Ok(m) => {
            let peer = peer_of(&m);
            let dialable = ip_of(&m).is_some_and(|ip| !ip.is_unspecified());
            (peer, if dialable { vec![m] } else { Vec::new() })
        }
        Err(_) => (None, Vec::new()),
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;
    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        let (peer, addrs) = target_of(&node.addr);
        PeerClient {
            net: self.net.clone(),
            contacts: self.contacts.clone(),
            target,
            peer,
            addrs,
            raw: node.addr.clone(),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl PeerClient {
    async fn call<E: std::error::Error>(
        &self,
        req: PeerRequest,
        ttl: Duration,
    ) -> Result<PeerResponse, RpcErr<E>> {
        let Some(peer) = self.peer else {
            return Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other(format!(
                    "member {} has no peer address (recorded: {:?})",
                    self.target, self.raw
                )),
            )));
        };
        match self.net.request(peer, self.addrs.clone(), req, ttl).await {
            Ok(r) => {
                self.contacts.heard(self.target);
                Ok(r)
            }
            Err(e @ PeerError::Unreachable(_)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    fn remote<E: std::error::Error>(&self, e: RaftError<NodeId, E>) -> RpcErr<E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

fn unexpected<E: std::error::Error>(what: &str, got: &PeerResponse) -> RpcErr<E> {
    let text = match got {
        PeerResponse::Refused(why) => format!("{what} refused: {why}"),
        other => format!("{what}: unexpected answer {other:?}"),
    };
    RPCError::Network(NetworkError::new(&std::io::Error::other(text)))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        match self
            .call(PeerRequest::AppendEntries(rpc), option.hard_ttl())
            .await?
        {
            PeerResponse::AppendEntries(r) => r.map_err(|e| self.remote(e)),
            other => Err(unexpected("append entries", &other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self
            .call(PeerRequest::InstallSnapshot(rpc), option.hard_ttl())
            .await?
        {
            PeerResponse::InstallSnapshot(r) => r.map_err(|e| self.remote(e)),
            other => Err(unexpected("install snapshot", &other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self.call(PeerRequest::Vote(rpc), option.hard_ttl()).await? {
            PeerResponse::Vote(r) => r.map_err(|e| self.remote(e)),
            other => Err(unexpected("vote", &other)),
        }
    }
}
