//! An in-memory Raft network with faults: every call goes from one `Raft` to another through the
//! router, encoded and decoded with the peer protocol's own CBOR codec (so what crosses is what
//! the libp2p network would carry), and may be cut, dropped, delayed or lose its answer.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use wormfs_meta::raft_types::TypeConfig;
use wormfs_server::peer::{PeerRequest, PeerResponse};

type NodeId = u64;
type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

/// What the network does to calls.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Nodes cut off from everyone, both ways.
    pub isolated: BTreeSet<NodeId>,
    /// Links cut, `(from, to)`: calls from `from` to `to` do not arrive.
    pub cut_links: BTreeSet<(NodeId, NodeId)>,
    /// Share of calls dropped before delivery (0.0 to 1.0).
    pub drop_request: f64,
    /// Share of delivered calls whose answer is lost.
    pub drop_response: f64,
    /// Each delivery waits a random time up to this long.
    pub max_delay: Duration,
}

/// Counters of what the router did, for tests that check faults really happened.
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub delivered: u64,
    pub cut: u64,
    pub dropped_requests: u64,
    pub dropped_responses: u64,
    pub snapshot_chunks: u64,
}

#[derive(Default)]
struct State {
    nodes: HashMap<NodeId, Raft<TypeConfig>>,
    faults: Faults,
    traffic: Traffic,
}

/// The shared network.
#[derive(Clone, Default)]
pub struct Router(Arc<Mutex<State>>);

impl Router {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `raft` reachable as node `id` (replacing a stopped instance).
    pub fn connect(&self, id: NodeId, raft: Raft<TypeConfig>) {
        self.state().nodes.insert(id, raft);
    }

    /// Makes node `id` unreachable, as a machine that is off.
    pub fn disconnect(&self, id: NodeId) {
        self.state().nodes.remove(&id);
    }

    /// Changes the faults.
    pub fn set_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.state().faults);
    }

    /// Cuts `id` off from everyone.
    pub fn isolate(&self, id: NodeId) {
        self.set_faults(|f| {
            f.isolated.insert(id);
        });
    }

    /// Splits the network in two: no call crosses between `a` and `b`, either way.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        self.set_faults(|f| {
            for x in a {
                for y in b {
                    f.cut_links.insert((*x, *y));
                    f.cut_links.insert((*y, *x));
                }
            }
        });
    }

    /// Ends every fault.
    pub fn heal(&self) {
        self.set_faults(|f| *f = Faults::default());
    }

    /// What happened so far.
    pub fn traffic(&self) -> Traffic {
        self.state().traffic
    }

    /// The factory node `from` gives openraft.
    pub fn network_of(&self, from: NodeId) -> RouterNetwork {
        RouterNetwork {
            from,
            router: self.clone(),
        }
    }

    /// Decides a call's fate: the target and a delay, or why it does not arrive.
    fn route(
        &self,
        from: NodeId,
        to: NodeId,
    ) -> Result<(Raft<TypeConfig>, Duration, bool), String> {
        let mut st = self.state();
        let mut rng = rand::rng();
        if st.faults.isolated.contains(&from)
            || st.faults.isolated.contains(&to)
            || st.faults.cut_links.contains(&(from, to))
        {
            st.traffic.cut += 1;
            return Err(format!("{from} -> {to}: partitioned"));
        }
        let Some(raft) = st.nodes.get(&to).cloned() else {
            st.traffic.cut += 1;
            return Err(format!("{from} -> {to}: node is down"));
        };
        if rng.random_bool(st.faults.drop_request) {
            st.traffic.dropped_requests += 1;
            return Err(format!("{from} -> {to}: request dropped"));
        }
        let delay = if st.faults.max_delay.is_zero() {
            Duration::ZERO
        } else {
            st.faults.max_delay.mul_f64(rng.random::<f64>())
        };
        let lose_answer = rng.random_bool(st.faults.drop_response);
        Ok((raft, delay, lose_answer))
    }
}

/// Node `from`'s side of the router.
pub struct RouterNetwork {
    from: NodeId,
    router: Router,
}

impl RaftNetworkFactory<TypeConfig> for RouterNetwork {
    type Network = RouterClient;
    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> RouterClient {
        RouterClient {
            from: self.from,
            to: target,
            router: self.router.clone(),
        }
    }
}

/// Node `from`'s connection to `to`.
pub struct RouterClient {
    from: NodeId,
    to: NodeId,
    router: Router,
}

/// Encodes and decodes `v` as the peer network's CBOR codec does.
fn over_the_wire<T: Serialize + DeserializeOwned>(v: T) -> T {
    let bytes = cbor4ii::serde::to_vec(Vec::new(), &v).expect("encode");
    cbor4ii::serde::from_slice(&bytes).expect("decode")
}

impl RouterClient {
    /// Delivers `req` and returns the answer, or the network's failure.
    async fn deliver<E: std::error::Error>(
        &self,
        req: PeerRequest,
    ) -> Result<PeerResponse, RpcErr<E>> {
        let (raft, delay, lose_answer) = self
            .router
            .route(self.from, self.to)
            .map_err(|why| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why))))?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let answer = match over_the_wire(req) {
            PeerRequest::AppendEntries(r) => {
                PeerResponse::AppendEntries(raft.append_entries(r).await)
            }
            PeerRequest::Vote(r) => PeerResponse::Vote(raft.vote(r).await),
            PeerRequest::InstallSnapshot(r) => {
                self.router.state().traffic.snapshot_chunks += 1;
                PeerResponse::InstallSnapshot(raft.install_snapshot(r).await)
            }
            other => panic!("not a Raft call: {other:?}"),
        };
        let mut st = self.router.state();
        if lose_answer {
            st.traffic.dropped_responses += 1;
            return Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other(format!("{} -> {}: answer lost", self.from, self.to)),
            )));
        }
        st.traffic.delivered += 1;
        Ok(over_the_wire(answer))
    }

    fn remote<E: std::error::Error>(&self, e: RaftError<NodeId, E>) -> RpcErr<E> {
        RPCError::RemoteError(RemoteError::new(self.to, e))
    }
}

fn unexpected<E: std::error::Error>(got: PeerResponse) -> RpcErr<E> {
    panic!("unexpected answer {got:?}")
}

impl RaftNetwork<TypeConfig> for RouterClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        match self.deliver(PeerRequest::AppendEntries(rpc)).await? {
            PeerResponse::AppendEntries(r) => r.map_err(|e| self.remote(e)),
            other => Err(unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self.deliver(PeerRequest::InstallSnapshot(rpc)).await? {
            PeerResponse::InstallSnapshot(r) => r.map_err(|e| self.remote(e)),
            other => Err(unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self.deliver(PeerRequest::Vote(rpc)).await? {
            PeerResponse::Vote(r) => r.map_err(|e| self.remote(e)),
            other => Err(unexpected(other)),
        }
    }
}
