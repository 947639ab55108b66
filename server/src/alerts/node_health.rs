//! `GET /api/v1/health` and `wormfs healthcheck`: is this machine doing its job, in one word
//! for container health checks and monitoring. `healthy` (exit 0, HTTP 200): it knows a
//! leader and nothing needs attention; `degraded` (exit 1, HTTP 200): it serves, but an alert
//! condition holds (a disk down, a file at risk, a member lost, ...); `down` (exit 2, HTTP
//! 503): it knows no leader, so nothing can be stored or changed through it (or, for the CLI,
//! it does not answer).

use serde::{Deserialize, Serialize};

use crate::consensus::status::RaftRole;
use crate::store::Store;

/// The verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeHealth {
    /// Everything as it should be.
    Healthy,
    /// Serving, but something needs attention.
    Degraded,
    /// Cannot store or change anything.
    Down,
}

impl NodeHealth {
    /// `wormfs healthcheck`'s exit status.
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Healthy => 0,
            Self::Degraded => 1,
            Self::Down => 2,
        }
    }
}

/// The answer of `GET /api/v1/health` (open: no file names in it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `healthy`, `degraded` or `down`.
    pub status: NodeHealth,
    /// The machine answering.
    pub node: u64,
    /// Why it is not healthy: one line each (the alert conditions' titles).
    pub reasons: Vec<String>,
}

/// This machine's health now.
pub async fn check(store: &Store) -> HealthResponse {
    let raft = store.consensus.status();
    let alerts = store.alerts.view().alerts;
    let mut reasons: Vec<String> = Vec::new();
    // A leader cut off from the others stays leader until it hears of a newer term, but
    // commits nothing: counted down once no majority has answered it for as long as a member
    // takes to be counted lost.
    let cut_off = if raft.role == RaftRole::Leader && raft.voters.len() > 1 {
        store
            .consensus
            .view(Vec::new())
            .await
            .millis_since_quorum_ack
            .filter(|ms| *ms >= store.alerts.member_lost_after_ms())
    } else {
        None
    };
    let status = if raft.leader.is_none() {
        reasons.push(format!(
            "machine {} knows no leader: nothing can be stored or changed (wormfs cluster)",
            store.node_id
        ));
        NodeHealth::Down
    } else if let Some(ms) = cut_off {
        reasons.push(format!(
            "machine {} leads, but no majority of the voting machines has answered it for {} s: nothing can be stored or changed (wormfs cluster)",
            store.node_id,
            ms / 1000
        ));
        NodeHealth::Down
    } else if !alerts.is_empty() {
        NodeHealth::Degraded
    } else {
        NodeHealth::Healthy
    };
    reasons.extend(alerts.into_iter().map(|a| a.title));
    HealthResponse {
        status,
        node: store.node_id,
        reasons,
    }
}
