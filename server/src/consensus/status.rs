//! What this node's Raft is doing, in WormFS's own terms: the API, `wormfs status` and the
//! operator's page read this, never openraft's metrics, so an openraft upgrade changes one
//! function here rather than every reader.

use serde::Serialize;
use wormfs_parts::ids::NodeId;

/// This node's part in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RaftRole {
    /// It leads: writes are committed here.
    Leader,
    /// It votes and follows a leader.
    Follower,
    /// It is asking for votes.
    Candidate,
    /// It receives the log but does not vote.
    Learner,
    /// Raft is stopping or has stopped.
    Shutdown,
}

/// A snapshot of this node's Raft state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RaftStatus {
    /// The current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// This node's role.
    pub role: RaftRole,
    /// The last log index written here.
    pub last_log: Option<u64>,
    /// The last log index applied to the metadata here.
    pub last_applied: Option<u64>,
    /// The log index the newest snapshot covers.
    pub snapshot: Option<u64>,
    /// The log index up to which the log was purged.
    pub purged: Option<u64>,
    /// The voting members.
    pub voters: Vec<NodeId>,
    /// Members that receive the log without voting.
    pub learners: Vec<NodeId>,
}

impl RaftStatus {
    /// The status from openraft's metrics.
    pub(super) fn from_metrics(m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>) -> Self {
        use openraft::ServerState;
        let role = match m.state {
            ServerState::Leader => RaftRole::Leader,
            ServerState::Follower => RaftRole::Follower,
            ServerState::Candidate => RaftRole::Candidate,
            ServerState::Learner => RaftRole::Learner,
            ServerState::Shutdown => RaftRole::Shutdown,
        };
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let learners: Vec<NodeId> = membership.learner_ids().collect();
        Self {
            term: m.current_term,
            leader: m.current_leader,
            role,
            last_log: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
            voters,
            learners,
        }
    }
}
