//! What `wormfs cluster` shows: members, roles, the leader, the term, and each member's lag
//! and last contact as the leader sees them.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Consensus, Formation};
use crate::peer::net::peer_of;
use wormfs_meta::NodeRecord;
use wormfs_parts::ids::NodeId;

/// The cluster as this node sees it.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    /// The cluster's name.
    pub cluster_name: String,
    /// The cluster's id.
    pub cluster_id: Option<String>,
    /// The node answering.
    pub node_id: NodeId,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Where it listens for peers.
    pub listen: Vec<String>,
    /// How it came into the cluster.
    pub formation: Formation,
    /// The Raft term.
    pub term: u64,
    /// The leader, if one is known.
    pub leader: Option<NodeId>,
    /// The last log index written here.
    pub last_log_index: Option<u64>,
    /// The last log index applied here.
    pub last_applied: Option<u64>,
    /// On the leader: milliseconds since a majority last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// The members, by node id.
    pub members: Vec<Member>,
}

/// One member.
#[derive(Debug, Serialize)]
pub struct Member {
    /// Its node id.
    pub node_id: NodeId,
    /// Its name, once it has registered.
    pub name: Option<String>,
    /// `voter` or `learner`.
    pub role: &'static str,
    /// Whether it leads.
    pub leader: bool,
    /// Its control-plane address.
    pub addr: String,
    /// Its node API address, once registered.
    pub api_addr: Option<String>,
    /// Its registered part-data address (an unspecified IP: its control-plane address).
    pub data_addr: Option<String>,
    /// The SHA-256 fingerprint of its data-plane certificate, as pinned in the membership.
    pub data_cert: Option<String>,
    /// Whether this node has a connection to it now (itself: true).
    pub connected: bool,
    /// Milliseconds since this node last heard from it (a Raft call or answer; itself: 0;
    /// `None`: not since this node started).
    pub last_contact_ms: Option<u64>,
    /// On the leader: the last log index it has (`None`: nothing replicated yet).
    pub matched: Option<u64>,
    /// On the leader: entries it is behind.
    pub lag: Option<u64>,
}

impl Consensus {
    /// The cluster as this node sees it.
    pub async fn view(&self, nodes: Vec<NodeRecord>) -> ClusterView {
        let m = self.metrics();
        let names: BTreeMap<NodeId, NodeRecord> =
            nodes.into_iter().map(|n| (n.node_id, n)).collect();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let connected: Vec<_> = self.net.connected().into_iter().map(|(p, _)| p).collect();
        let last = m.last_log_index.unwrap_or(0);
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned())
                    .map(|l| l.map(|l| l.index));
                let reg = names.get(id);
                Member {
                    node_id: *id,
                    name: reg.map(|r| r.name.clone()),
                    role: if voters.contains(id) {
                        "voter"
                    } else {
                        "learner"
                    },
                    leader: m.current_leader == Some(*id),
                    addr: node.addr.clone(),
                    api_addr: reg.map(|r| r.api_addr.clone()),
                    data_addr: reg
                        .filter(|r| !r.data_addr.is_empty())
                        .map(|r| r.data_addr.clone()),
                    data_cert: reg
                        .filter(|r| !r.data_cert.is_empty())
                        .map(|r| r.data_cert.clone()),
                    connected: *id == self.node_id
                        || node
                            .addr
                            .parse()
                            .ok()
                            .and_then(|a| peer_of(&a))
                            .is_some_and(|p| connected.contains(&p)),
                    last_contact_ms: if *id == self.node_id {
                        Some(0)
                    } else {
                        self.inner.contacts.since(*id).map(|d| d.as_millis() as u64)
                    },
                    matched: matched.flatten(),
                    lag: matched.map(|x| last.saturating_sub(x.unwrap_or(0))),
                }
            })
            .collect();
        ClusterView {
            cluster_name: self.inner.params.cluster_name.clone(),
            cluster_id: self.inner.db.cluster_id().await.ok().flatten(),
            node_id: self.node_id,
            peer_id: self.net.peer_id().to_string(),
            listen: self
                .net
                .listen_addrs()
                .iter()
                .map(|a| a.to_string())
                .collect(),
            formation: self.formation(),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            members,
        }
    }
}
