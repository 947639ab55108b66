//! Consensus: openraft over the SQLite stores. On one node it runs as a one-voter cluster with a
//! durable log, so a cluster adds networking and membership, not a new write path.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft, SnapshotPolicy};
use wormfs_config::RaftConfig;

use crate::command::{Command, CommandV1, Outcome};
use crate::ids::NodeId;
use crate::meta::{LogStore, MetaDb, StateMachineStore};
use crate::raft_types::TypeConfig;

/// A write that did not reach the state machine.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// No leader or no majority.
    #[error("the cluster has no leader (no majority?): {0}")]
    NoQuorum(String),
    /// Raft stopped (a storage failure or shutdown).
    #[error("consensus stopped: {0}")]
    Fatal(String),
}

/// The node's Raft instance.
#[derive(Clone)]
pub struct Consensus {
    raft: Raft<TypeConfig>,
    node_id: NodeId,
    log: LogStore,
}

impl Consensus {
    /// Starts Raft over the stores in `dir` and, on first start, initialises a one-voter cluster.
    pub async fn start(
        node_id: NodeId,
        dir: &Path,
        db: MetaDb,
        cfg: &RaftConfig,
        addr: &str,
    ) -> anyhow::Result<Self> {
        let log = LogStore::open(&dir.join("raft-log.db")).await?;
        let sm = StateMachineStore::new(db, dir.join("snapshots")).await?;
        let config = openraft::Config {
            cluster_name: "wormfs".into(),
            heartbeat_interval: cfg.heartbeat_interval_ms,
            election_timeout_min: cfg.election_timeout_min_ms,
            election_timeout_max: cfg.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every_logs),
            max_in_snapshot_log_to_keep: cfg.max_logs_kept,
            ..Default::default()
        }
        .validate()
        .context("raft configuration")?;
        let raft = Raft::new(node_id, Arc::new(config), NoNetwork, log.clone(), sm)
            .await
            .context("start raft")?;
        if !raft.is_initialized().await.context("raft state")? {
            let mut members = BTreeMap::new();
            members.insert(node_id, BasicNode::new(addr));
            raft.initialize(members)
                .await
                .context("initialise one-voter cluster")?;
            tracing::info!(node_id, "initialised a new one-voter cluster");
        }
        raft.wait(Some(Duration::from_secs(60)))
            .current_leader(node_id, "become leader")
            .await
            .context("wait for leadership")?;
        Ok(Self { raft, node_id, log })
    }

    /// Proposes a command and returns its outcome once applied locally.
    pub async fn write(&self, cmd: CommandV1) -> Result<Outcome, ConsensusError> {
        match self.raft.client_write(Command::V1(cmd)).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(e)) => Err(ConsensusError::NoQuorum(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(ConsensusError::Fatal(e.to_string())),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Metrics for status pages.
    pub fn metrics(&self) -> openraft::RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// Builds a snapshot now and purges the log up to it (operators and tests).
    pub async fn snapshot_and_purge(&self) -> anyhow::Result<u64> {
        let before = self.metrics().snapshot.map(|s| s.index);
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
        let upto = m.snapshot.map(|s| s.index).unwrap_or(0);
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
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        self.log.close().await;
    }
}

/// The network of a one-voter cluster: there is nobody to talk to.
struct NoNetwork;

struct NoPeer;

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoPeer;
    async fn new_client(&mut self, _target: NodeId, _node: &BasicNode) -> NoPeer {
        NoPeer
    }
}

fn unreachable<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
        "single-node cluster has no peer network",
    )))
}

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(unreachable())
    }
}
