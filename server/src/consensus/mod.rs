//! Consensus: openraft over the SQLite stores, talking to other nodes over the private peer
//! network. A single machine is a cluster of one; others join it (see [`formation`]). Writes
//! go through the leader: a follower forwards them and answers only once it has applied them
//! itself, so a client sees its own writes on the node it talks to.

mod formation;
mod group_commit;
mod inbound;
mod membership;
mod network;
pub mod status;
pub mod typ;
mod view;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, SnapshotPolicy};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wormfs_config::RaftConfig;

use crate::peer::protocol::WriteRefused;
use crate::peer::{Inbound, PeerNet, PeerRequest, PeerResponse};
use wormfs_meta::command::{Command, CommandV1, Outcome};
use wormfs_meta::raft_types::TypeConfig;
use wormfs_meta::{LogStore, MetaDb, StateMachineStore};
use wormfs_parts::ids::NodeId;

pub use formation::Formation;
pub use membership::{plan_voters, VoterChange, VoterFacts};
pub use status::{RaftRole, RaftStatus};
pub use view::{ClusterView, Member};

/// How long a write waits for a leader (an election in progress) before it is refused.
const LEADER_WAIT: Duration = Duration::from_secs(10);
/// How long a leader waits for a majority to acknowledge a write.
const COMMIT_WAIT: Duration = Duration::from_secs(15);

/// A write that did not reach the state machine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsensusError {
    /// No leader or no majority.
    #[error("the cluster has no majority: {0}")]
    NoQuorum(String),
    /// Raft stopped (a storage failure or shutdown).
    #[error("consensus stopped: {0}")]
    Fatal(String),
    /// This node's state machine failed; it serves reads only until it is restarted.
    #[error("this node is read-only: {0}")]
    ReadOnly(String),
}

/// How this node finds and joins its cluster.
#[derive(Debug, Clone)]
pub struct ClusterParams {
    /// The cluster's name: nodes only join a cluster of the same name.
    pub cluster_name: String,
    /// Static peers, `HOST:PORT`.
    pub peers: Vec<String>,
    /// How long a node with no cluster state looks for peers before founding a cluster.
    pub formation_wait: Duration,
    /// Whether peers may also appear through mDNS (so an empty peer list is not "alone").
    pub mdns: bool,
    /// This node's secret fingerprint, to tell a cluster whose secret it lacks.
    pub fingerprint: String,
    /// How long the leader waits before replacing a voter it has not heard from.
    pub voter_replace_after: Duration,
}

/// The node's Raft instance.
#[derive(Clone)]
pub struct Consensus {
    raft: Raft<TypeConfig>,
    node_id: NodeId,
    log: LogStore,
    net: PeerNet,
    inner: Arc<Inner>,
}

struct Inner {
    db: MetaDb,
    params: ClusterParams,
    formation: std::sync::Mutex<Formation>,
    /// When each member was last heard from.
    contacts: network::Contacts,
    /// Nodes seen over mDNS.
    mdns: Option<std::sync::Mutex<wormfs_discovery::Watcher>>,
    /// Set by [`Consensus::shutdown`]: Raft stopping is then no failure.
    stopping: std::sync::atomic::AtomicBool,
    /// Writes waiting for the one in flight (group commit).
    queue: group_commit::Queue,
    /// Cancelled by [`Consensus::shutdown`]: the group commit's loop ends (writes go on until
    /// then, so the uploads a shutdown lets finish can still commit).
    writes_closed: CancellationToken,
}

/// openraft's configuration for a node of cluster `cluster_name` (the in-process Raft tests use
/// it too, so they run what a node runs).
pub fn raft_config(cluster_name: &str, cfg: &RaftConfig) -> anyhow::Result<openraft::Config> {
    openraft::Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: cfg.heartbeat_interval_ms,
        election_timeout_min: cfg.election_timeout_min_ms,
        election_timeout_max: cfg.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every_logs),
        max_in_snapshot_log_to_keep: cfg.max_logs_kept,
        // Chunks well under the peer protocol's message limit.
        snapshot_max_chunk_size: 256 * 1024,
        ..Default::default()
    }
    .validate()
    .context("raft configuration")
}

impl Consensus {
    /// Starts Raft over the stores in `dir`, answers peers from `inbound`, and, when this node
    /// has no cluster state yet, finds its cluster: joins one of its name or founds one.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        node_id: NodeId,
        dir: &std::path::Path,
        db: MetaDb,
        cfg: &RaftConfig,
        net: PeerNet,
        inbound: mpsc::Receiver<Inbound>,
        params: ClusterParams,
        mdns: Option<wormfs_discovery::Watcher>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let log = LogStore::open(&dir.join("raft-log.db")).await?;
        let sm = StateMachineStore::new(db.clone(), dir.join("snapshots")).await?;
        let config = raft_config(&params.cluster_name, cfg)?;
        let contacts = network::Contacts::default();
        let raft = Raft::new(
            node_id,
            Arc::new(config),
            network::PeerNetwork {
                net: net.clone(),
                contacts: contacts.clone(),
            },
            log.clone(),
            sm,
        )
        .await
        .context("start raft")?;
        let (queue, queued) = mpsc::unbounded_channel();
        let me = Self {
            raft,
            node_id,
            log,
            net,
            inner: Arc::new(Inner {
                db,
                params,
                formation: std::sync::Mutex::new(Formation::Starting),
                contacts,
                mdns: mdns.map(std::sync::Mutex::new),
                stopping: std::sync::atomic::AtomicBool::new(false),
                queue,
                writes_closed: CancellationToken::new(),
            }),
        };
        tokio::spawn(group_commit::run(
            me.clone(),
            queued,
            me.inner.writes_closed.clone(),
        ));
        tokio::spawn(me.clone().serve_inbound(inbound, shutdown.clone()));
        tokio::spawn(me.clone().dial_peers(shutdown.clone()));
        tokio::spawn(me.clone().maintain_voters(shutdown.clone()));
        me.form(&shutdown).await?;
        // A machine that was already a member starts without a leader if it must: it serves
        // reads without a majority. One that just founded or joined waits for its leader.
        if me.formation() != Formation::Member {
            me.wait_for_leader(&shutdown).await?;
        }
        Ok(me)
    }

    /// Waits until a leader is known (this node's, or one it follows).
    async fn wait_for_leader(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut rx = self.raft.metrics();
        let mut last_note = Instant::now();
        loop {
            if rx.borrow().current_leader.is_some() {
                return Ok(());
            }
            if last_note.elapsed() > Duration::from_secs(10) {
                tracing::warn!(
                    waited_s = started.elapsed().as_secs(),
                    "waiting for a leader: the cluster has no majority of its voters reachable"
                );
                last_note = Instant::now();
            }
            tokio::select! {
                _ = shutdown.cancelled() => anyhow::bail!("stopped while waiting for a leader"),
                _ = rx.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Whether [`Consensus::shutdown`] was called.
    pub fn stopping(&self) -> bool {
        self.inner
            .stopping
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Why this node is read-only, if it is: Raft stopped on it (its state machine could not
    /// apply an entry). It serves reads and refuses writes until restarted, which resyncs it.
    pub fn read_only(&self) -> Option<String> {
        if self.stopping() {
            return None;
        }
        match &self.metrics().running_state {
            Ok(()) => None,
            Err(e) => Some(format!(
                "its metadata could not follow the cluster ({e}); restart it to resync from the cluster"
            )),
        }
    }

    /// Proposes a command and returns its outcome once applied on this node. Writes that
    /// arrive while another is being committed go together in one log entry (see
    /// [`group_commit`]), each with its own outcome.
    pub async fn write(&self, cmd: CommandV1) -> Result<Outcome, ConsensusError> {
        if self.stopping() {
            return Err(ConsensusError::Fatal("this node is shutting down".into()));
        }
        group_commit::submit(&self.inner.queue, cmd).await
    }

    /// Proposes one log entry (a command or a batch), forwarded to the leader if this node
    /// does not lead, and waits until it is applied here.
    async fn write_entry(&self, cmd: CommandV1) -> Result<Outcome, ConsensusError> {
        if self.stopping() {
            return Err(ConsensusError::Fatal("this node is shutting down".into()));
        }
        if let Some(why) = self.read_only() {
            return Err(ConsensusError::ReadOnly(why));
        }
        let cmd = Command::V1(cmd);
        let deadline = Instant::now() + LEADER_WAIT;
        let mut pause = Duration::from_millis(50);
        loop {
            let leader = match self.write_here(cmd.clone()).await {
                Ok((outcome, _)) => return Ok(outcome),
                Err(WriteRefused::NotLeader { leader }) => leader,
                Err(WriteRefused::Failed(e)) => return Err(ConsensusError::Fatal(e)),
                Err(WriteRefused::NoMajority(e)) => return Err(ConsensusError::NoQuorum(e)),
            };
            if let Some(leader) = leader.filter(|l| *l != self.node_id) {
                match self.forward_write(leader, cmd.clone()).await {
                    Ok(outcome) => return Ok(outcome),
                    Err(Forward::Retry(why)) => {
                        tracing::debug!(leader, "write not forwarded, retrying: {why}")
                    }
                    Err(Forward::Fail(e)) => return Err(e),
                }
            }
            if Instant::now() >= deadline {
                return Err(ConsensusError::NoQuorum(format!(
                    "no leader reachable after {}s (a majority of the voters must be up and \
                     connected); see `wormfs cluster`",
                    LEADER_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Writes through this node's Raft if it leads; the outcome and its log index.
    async fn write_here(&self, cmd: Command) -> Result<(Outcome, u64), WriteRefused> {
        match tokio::time::timeout(COMMIT_WAIT, self.raft.client_write(cmd)).await {
            Err(_) => Err(WriteRefused::NoMajority(format!(
                "no majority acknowledged the write within {}s",
                COMMIT_WAIT.as_secs()
            ))),
            Ok(Ok(resp)) => Ok((resp.data, resp.log_id.index)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(WriteRefused::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(RaftError::APIError(e))) => Err(WriteRefused::NoMajority(e.to_string())),
            Ok(Err(RaftError::Fatal(e))) => Err(WriteRefused::Failed(e.to_string())),
        }
    }

    /// Sends a write to the leader and waits until this node has applied it.
    async fn forward_write(&self, leader: NodeId, cmd: Command) -> Result<Outcome, Forward> {
        let resp = self
            .ask_member(
                leader,
                PeerRequest::Write(cmd),
                COMMIT_WAIT + Duration::from_secs(5),
            )
            .await
            .map_err(|e| match e {
                // Not sent: safe to try again.
                crate::peer::PeerError::Unreachable(_) => Forward::Retry(e.to_string()),
                // Sent but unanswered: the write may or may not have been committed.
                other => Forward::Fail(ConsensusError::NoQuorum(format!(
                    "the leader (node {leader}) did not answer: {other}"
                ))),
            })?;
        let (outcome, index) = match resp {
            PeerResponse::Write(Ok(v)) => v,
            PeerResponse::Write(Err(WriteRefused::NotLeader { .. })) => {
                return Err(Forward::Retry("leadership moved".into()))
            }
            PeerResponse::Write(Err(WriteRefused::NoMajority(e))) => {
                return Err(Forward::Fail(ConsensusError::NoQuorum(e)))
            }
            PeerResponse::Write(Err(WriteRefused::Failed(e))) => {
                return Err(Forward::Fail(ConsensusError::Fatal(e)))
            }
            PeerResponse::Refused(why) => return Err(Forward::Retry(why)),
            other => {
                return Err(Forward::Fail(ConsensusError::Fatal(format!(
                    "unexpected answer to a write: {other:?}"
                ))))
            }
        };
        self.raft
            .wait(Some(COMMIT_WAIT))
            .applied_index_at_least(Some(index), "forwarded write applied here")
            .await
            .map_err(|e| {
                Forward::Fail(ConsensusError::NoQuorum(format!(
                    "the write was committed (log index {index}) but this node has not applied \
                     it yet: {e}"
                )))
            })?;
        Ok(outcome)
    }

    /// Sends `req` to member `id` at its recorded address.
    async fn ask_member(
        &self,
        id: NodeId,
        req: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, crate::peer::PeerError> {
        let addr = self
            .metrics()
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        let (peer, addrs) = network::target_of(&addr);
        let peer = peer.ok_or_else(|| {
            crate::peer::PeerError::Unreachable(format!("member {id} has no peer address"))
        })?;
        self.net.request(peer, addrs, req, timeout).await
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The peer network.
    pub fn net(&self) -> &PeerNet {
        &self.net
    }

    /// How this node came into its cluster (and what stands in the way while it cannot).
    pub fn formation(&self) -> Formation {
        self.inner
            .formation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Each member's IP on the control plane, from the Raft membership.
    pub fn control_ips(&self) -> std::collections::HashMap<NodeId, std::net::IpAddr> {
        let metrics = self.metrics();
        metrics
            .membership_config
            .nodes()
            .filter_map(|(id, n)| {
                let addr: libp2p::Multiaddr = n.addr.parse().ok()?;
                Some((*id, crate::peer::net::ip_of(&addr)?))
            })
            .collect()
    }

    /// openraft's metrics, for this module only (others read [`Self::status`]).
    fn metrics(&self) -> openraft::RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// What this node's Raft is doing, in WormFS's terms.
    pub fn status(&self) -> RaftStatus {
        RaftStatus::from_metrics(&self.raft.metrics().borrow())
    }

    /// The commit index this node knows: on the leader, the highest log index a majority of
    /// the voters hold (openraft's replication progress, the leader's own included); elsewhere
    /// the last applied index (a follower applies every entry it learns is committed, and
    /// openraft 0.9 does not expose the leader's commit index to it).
    pub fn commit_index(&self) -> Option<u64> {
        let m = self.metrics();
        let applied = m.last_applied.map(|l| l.index);
        let Some(progress) = m.replication.as_ref() else {
            return applied;
        };
        let mut held: Vec<u64> = m
            .membership_config
            .membership()
            .voter_ids()
            .map(|id| progress.get(&id).copied().flatten().map_or(0, |l| l.index))
            .collect();
        if held.is_empty() {
            return applied;
        }
        held.sort_unstable_by(|a, b| b.cmp(a));
        // The majority-th highest: held by at least floor(n/2)+1 voters.
        held.get(held.len() / 2).copied().max(applied)
    }

    /// How long ago this node last heard from each other member (voters and learners), `None`
    /// for one not heard from since this node started.
    pub fn member_contacts(&self) -> Vec<(NodeId, Option<std::time::Duration>)> {
        let st = self.status();
        let mut members: Vec<NodeId> = st.voters.into_iter().chain(st.learners).collect();
        members.sort_unstable();
        members.dedup();
        members
            .into_iter()
            .filter(|id| *id != self.node_id())
            .map(|id| (id, self.inner.contacts.since(id)))
            .collect()
    }

    /// Builds a snapshot now and purges the log up to it (operators and tests).
    pub async fn snapshot_and_purge(&self) -> anyhow::Result<u64> {
        let m = self.metrics();
        let before = m.snapshot.map(|s| s.index);
        let upto = if before.is_some() && before == m.last_applied.map(|l| l.index) {
            // Nothing applied since the last snapshot: openraft builds none (waiting for a new
            // one hung for two minutes), and the last one already covers everything.
            before.unwrap_or(0)
        } else {
            self.raft
                .trigger()
                .snapshot()
                .await
                .context("trigger snapshot")?;
            let m = self
                .raft
                .wait(Some(Duration::from_secs(120)))
                .metrics(
                    |m| m.snapshot.map(|s| s.index) != before && m.snapshot.is_some(),
                    "snapshot built",
                )
                .await
                .context("wait for snapshot")?;
            m.snapshot.map(|s| s.index).unwrap_or(0)
        };
        self.raft
            .trigger()
            .purge_log(upto)
            .await
            .context("purge log")?;
        self.raft
            .wait(Some(Duration::from_secs(60)))
            .metrics(|m| m.purged.map(|p| p.index) >= Some(upto), "log purged")
            .await
            .context("wait for purge")?;
        Ok(upto)
    }

    /// Stops Raft and closes the log.
    pub async fn shutdown(&self) {
        self.inner
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.writes_closed.cancel();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        self.log.close().await;
    }
}

/// Why a forwarded write did not go through.
enum Forward {
    /// Nothing was committed; try again (perhaps with another leader).
    Retry(String),
    /// Give up with this error.
    Fail(ConsensusError),
}
