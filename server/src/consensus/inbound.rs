//! Answering peers: Raft's calls, hellos, joins and forwarded writes. Each request is answered
//! on its own task, so a write waiting for a majority never holds up a heartbeat.

use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use openraft::{BasicNode, ChangeMembers};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Consensus;
use crate::peer::net::ip_of;
use crate::peer::protocol::{Hello, JoinRequest};
use crate::peer::{Inbound, PeerRequest, PeerResponse};
use wormfs_parts::ids::NodeId;

impl Consensus {
    /// Records a call from the leader or candidate that `vote` names.
    fn heard_from(&self, vote: &openraft::Vote<NodeId>) {
        if let Some(from) = vote.leader_id().voted_for() {
            self.inner.contacts.heard(from);
        }
    }

    /// Answers inbound requests until shutdown.
    pub(super) async fn serve_inbound(
        self,
        mut inbound: mpsc::Receiver<Inbound>,
        shutdown: CancellationToken,
    ) {
        loop {
            let req = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = inbound.recv() => match r { Some(r) => r, None => break },
            };
            // A test's network partition: no answer, as if nothing arrived.
            if wormfs_parts::crash_point::partitioned(&req.peer.to_string()) {
                continue;
            }
            let me = self.clone();
            let span = tracing::debug_span!("peer_request", peer = %req.peer);
            tokio::spawn(
                async move {
                    let resp = me.answer(req.remote, req.request).await;
                    req.reply.send(resp).await;
                }
                .instrument(span),
            );
        }
    }

    async fn answer(&self, remote: Option<Multiaddr>, req: PeerRequest) -> PeerResponse {
        match req {
            PeerRequest::Hello => PeerResponse::Hello(self.hello().await),
            PeerRequest::AppendEntries(r) => {
                self.heard_from(&r.vote);
                PeerResponse::AppendEntries(self.raft.append_entries(r).await)
            }
            PeerRequest::Vote(r) => {
                self.heard_from(&r.vote);
                PeerResponse::Vote(self.raft.vote(r).await)
            }
            PeerRequest::InstallSnapshot(r) => {
                PeerResponse::InstallSnapshot(self.raft.install_snapshot(r).await)
            }
            PeerRequest::Join(j) => PeerResponse::Join(self.join(j, remote).await),
            PeerRequest::Write(cmd) => PeerResponse::Write(self.write_here(cmd).await),
            PeerRequest::RemoveNode { node_id, force } => {
                PeerResponse::RemoveNode(self.remove_node(node_id, force).await)
            }
        }
    }

    pub(super) async fn hello(&self) -> Hello {
        Hello {
            node_id: self.node_id,
            cluster_name: self.inner.params.cluster_name.clone(),
            cluster_id: self.inner.db.cluster_id().await.ok().flatten(),
            initialized: self.raft.is_initialized().await.unwrap_or(false),
            leader: self.metrics().current_leader,
        }
    }

    /// Adds a machine: as a learner first (it catches up from the log or a snapshot), then as a
    /// voter while the cluster wants more voters. Any member forwards it to the leader.
    async fn join(&self, mut j: JoinRequest, remote: Option<Multiaddr>) -> Result<(), String> {
        j.addr = fill_unspecified(&j.addr, remote.as_ref());
        let m = self.metrics();
        match m.current_leader {
            Some(l) if l == self.node_id => {}
            Some(l) => {
                return match self
                    .ask_member(l, PeerRequest::Join(j), Duration::from_secs(120))
                    .await
                {
                    Ok(PeerResponse::Join(r)) => r,
                    Ok(other) => Err(format!("unexpected answer from the leader: {other:?}")),
                    Err(e) => Err(format!("the leader (node {l}) did not answer: {e}")),
                }
            }
            None => return Err("the cluster has no leader right now; try again".into()),
        }
        let known = m
            .membership_config
            .membership()
            .get_node(&j.node_id)
            .map(|n| n.addr.clone());
        if known.as_deref() != Some(j.addr.as_str()) {
            tracing::info!(node = j.node_id, addr = %j.addr, "adding a machine to the cluster");
            let node = BasicNode::new(j.addr.clone());
            let change = if known.is_some() {
                // A member that moved: keep its role, update its address.
                self.raft
                    .change_membership(
                        ChangeMembers::SetNodes([(j.node_id, node)].into_iter().collect()),
                        true,
                    )
                    .await
                    .map(|_| ())
            } else {
                self.raft
                    .add_learner(j.node_id, node, true)
                    .await
                    .map(|_| ())
            };
            change.map_err(|e| format!("adding node {}: {e}", j.node_id))?;
        }
        self.balance_voters(None).await
    }
}

/// `addr` with an unspecified IP replaced by the IP the connection came from.
fn fill_unspecified(addr: &str, remote: Option<&Multiaddr>) -> String {
    let (Ok(m), Some(remote_ip)) = (addr.parse::<Multiaddr>(), remote.and_then(ip_of)) else {
        return addr.to_owned();
    };
    if !ip_of(&m).is_some_and(|ip| ip.is_unspecified()) {
        return addr.to_owned();
    }
    m.iter()
        .map(|p| match p {
            Protocol::Ip4(_) | Protocol::Ip6(_) => Protocol::from(remote_ip),
            other => other,
        })
        .collect::<Multiaddr>()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_take_the_connection_ip() {
        let remote: Multiaddr = "/ip4/192.168.1.7/tcp/40000".parse().unwrap();
        let p = "/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";
        assert_eq!(
            fill_unspecified(&format!("/ip4/0.0.0.0/tcp/7712{p}"), Some(&remote)),
            format!("/ip4/192.168.1.7/tcp/7712{p}")
        );
        let fixed = format!("/ip4/10.0.0.2/tcp/7712{p}");
        assert_eq!(fill_unspecified(&fixed, Some(&remote)), fixed);
        assert_eq!(fill_unspecified("junk", Some(&remote)), "junk");
    }
}
