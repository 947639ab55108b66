//! What nodes say to each other on the control plane: one request, one answer, as CBOR over a
//! libp2p request-response substream (protocol `/wormfs/control/1`).

use crate::consensus::typ::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotError, InstallSnapshotRequest,
    InstallSnapshotResponse, RaftError, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use wormfs_meta::command::{Command, Outcome};
use wormfs_parts::ids::NodeId;

/// The protocol name; a new incompatible version gets a new name.
pub const PROTOCOL: &str = "/wormfs/control/1";

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Who are you, and which cluster are you in?
    Hello,
    /// Raft: replicate entries (and heartbeats).
    AppendEntries(AppendEntriesRequest),
    /// Raft: ask for a vote.
    Vote(VoteRequest),
    /// Raft: one chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest),
    /// Add the sender to the cluster (handled by the leader; others forward it).
    Join(JoinRequest),
    /// A write proposed on a follower, for the leader to commit.
    Write(Command),
    /// Remove a machine from the cluster (handled by the leader; others forward it).
    RemoveNode {
        /// The machine.
        node_id: NodeId,
        /// Remove it even if it was heard from lately.
        force: bool,
    },
}

/// A node asking to join.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Its node id.
    pub node_id: NodeId,
    /// Its control-plane address, a multiaddr ending in `/p2p/<peer id>`. An unspecified IP
    /// (`0.0.0.0`) is replaced by the address its connection came from.
    pub addr: String,
}

/// What a node says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// Its node id.
    pub node_id: NodeId,
    /// Its cluster's name (from its config).
    pub cluster_name: String,
    /// Its cluster's id once it belongs to an initialised cluster.
    pub cluster_id: Option<String>,
    /// Whether its Raft state is initialised.
    pub initialized: bool,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
}

/// The answer to a [`PeerRequest`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// To `Hello`.
    Hello(Hello),
    /// To `AppendEntries`.
    AppendEntries(Result<AppendEntriesResponse, RaftError>),
    /// To `Vote`.
    Vote(Result<VoteResponse, RaftError>),
    /// To `InstallSnapshot`.
    InstallSnapshot(Result<InstallSnapshotResponse, InstallSnapshotError>),
    /// To `Join`: the member list it was added to, or why not.
    Join(Result<(), String>),
    /// To `RemoveNode`: done, or why not.
    RemoveNode(Result<(), RemoveRefused>),
    /// To `Write`: the outcome and the log index it was committed at, or why not.
    Write(Result<(Outcome, u64), WriteRefused>),
    /// The request could not be handled at all (e.g. the node is still starting).
    Refused(String),
}

/// Why a forwarded write was not committed.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum WriteRefused {
    /// The receiver is not (or no longer) the leader.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader it knows of.
        leader: Option<NodeId>,
    },
    /// No majority acknowledged it in time (it may still commit later).
    #[error("{0}")]
    NoMajority(String),
    /// Raft stopped or failed on the leader.
    #[error("{0}")]
    Failed(String),
}

/// Why a machine was not removed.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum RemoveRefused {
    /// There is no leader (no majority), or it could not be reached.
    #[error("{0}")]
    NoMajority(String),
    /// The removal is refused (the machine is up, or is the leader).
    #[error("{0}")]
    Refused(String),
    /// The membership change failed.
    #[error("{0}")]
    Failed(String),
}
