//! Finding the cluster. A node with no Raft state looks for peers (static `HOST:PORT` peers,
//! dialled every few seconds, and nodes of its cluster's name seen over mDNS) and asks each
//! who it is. It joins a visible cluster of its name;
//! it never founds one while a member of its name is visible or while a peer refuses its
//! handshake (that machine holds a secret this one lacks); among machines with no state, the
//! lowest node id founds the cluster once the formation wait is over, and the others join it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use libp2p::{Multiaddr, PeerId};
use openraft::BasicNode;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Consensus;
use crate::peer::net::{ip_of, multiaddr_of, DialState};
use crate::peer::protocol::{Hello, JoinRequest};
use crate::peer::{PeerRequest, PeerResponse};

/// How often static peers are dialled while not connected, and formation looks around.
const DIAL_EVERY: Duration = Duration::from_secs(2);
const LOOK_EVERY: Duration = Duration::from_millis(300);

/// How this node came into its cluster, for `wormfs cluster` and the status.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum Formation {
    /// Not started yet.
    Starting,
    /// Looking for peers.
    Searching,
    /// Cannot go on: the reason, and what to do.
    Blocked(String),
    /// Founded a new cluster.
    Founded,
    /// Joined an existing cluster through this node.
    Joined(u64),
    /// Was already a member when it started.
    Member,
}

/// Whether a dial error happened after TCP connected, in the private-network handshake (a
/// peer with another secret resets the connection there), rather than nobody answering.
fn is_handshake_failure(err: &str) -> bool {
    err.to_ascii_lowercase().contains("handshake failed")
}

/// Whether a dial error says nothing listens there (the machine is off or not running WormFS).
/// Anything else (a handshake that times out, say: a peer with another secret may wait for
/// bytes that never come) is not taken as absence, so no cluster is founded beside it.
fn is_absent(err: &str) -> bool {
    let e = err.to_ascii_lowercase();
    [
        "connection refused",
        "no route to host",
        "network is unreachable",
        "host is unreachable",
    ]
    .iter()
    .any(|s| e.contains(s))
}

impl Consensus {
    fn set_formation(&self, f: Formation) {
        *self
            .inner
            .formation
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = f;
    }

    /// This node's control-plane address for the membership: a listen address, preferring one
    /// other machines can reach.
    pub(super) fn own_addr(&self) -> String {
        let addrs = self.net.listen_addrs();
        addrs
            .iter()
            .find(|a| ip_of(a).is_some_and(|ip| !ip.is_loopback() && !ip.is_unspecified()))
            .or(addrs.first())
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// Finds the cluster (see the module doc); returns once this node is a member.
    pub(super) async fn form(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        if self.raft.is_initialized().await.context("raft state")? {
            self.set_formation(Formation::Member);
            return Ok(());
        }
        let p = self.inner.params.clone();
        let alone = p.peers.is_empty() && !p.mdns;
        let started = Instant::now();
        self.set_formation(Formation::Searching);
        tracing::info!(
            cluster = %p.cluster_name,
            peers = ?p.peers,
            wait_ms = p.formation_wait.as_millis() as u64,
            "no cluster state: looking for the cluster"
        );
        let mut said = String::new();
        loop {
            if self.raft.is_initialized().await.context("raft state")? {
                // A leader added this node while it was looking.
                self.set_formation(Formation::Joined(
                    self.metrics().current_leader.unwrap_or(0),
                ));
                return Ok(());
            }
            let hellos = if alone {
                Vec::new()
            } else {
                self.hello_connected().await
            };
            let answered: Vec<PeerId> = hellos.iter().map(|(p, _)| *p).collect();
            let mut same = Vec::new();
            for (peer, h) in hellos {
                if h.cluster_name == p.cluster_name {
                    same.push((peer, h));
                } else {
                    tracing::debug!(node = h.node_id, name = %h.cluster_name, "peer of another cluster");
                }
            }
            if let Some((peer, h)) = same.iter().find(|(_, h)| h.initialized) {
                match self.ask_to_join(*peer).await {
                    Ok(()) => {
                        self.raft
                            .wait(Some(Duration::from_secs(120)))
                            .metrics(
                                |m| {
                                    m.membership_config
                                        .membership()
                                        .get_node(&self.node_id)
                                        .is_some()
                                },
                                "this node in the membership",
                            )
                            .await
                            .context("wait to be added to the cluster")?;
                        tracing::info!(
                            via = h.node_id,
                            cluster_id = ?h.cluster_id,
                            "joined cluster {}",
                            p.cluster_name
                        );
                        self.set_formation(Formation::Joined(h.node_id));
                        return Ok(());
                    }
                    Err(e) => tracing::warn!(via = h.node_id, "joining failed, will retry: {e}"),
                }
            } else if alone || started.elapsed() >= p.formation_wait {
                let (refused, unsettled) = self.static_peer_blockers(&answered).await;
                let other_secret: Vec<String> = self
                    .mdns_nodes()
                    .into_iter()
                    .filter(|(_, fp, _)| *fp != p.fingerprint)
                    .map(|(node, _, addrs)| {
                        let at = addrs.first().map(|a| a.to_string()).unwrap_or_default();
                        format!("node {node} at {at}")
                    })
                    .collect();
                let fix = "run `wormfs join-token` on a member and `wormfs init --join TOKEN` here";
                let blocked = if !other_secret.is_empty() {
                    Some(format!(
                        "cluster {} is here ({}); this machine lacks its secret: {fix}",
                        p.cluster_name,
                        other_secret.join(", ")
                    ))
                } else if !refused.is_empty() {
                    Some(format!(
                        "{} answered but did not complete the private-network handshake: this \
                         machine lacks the cluster's secret (or holds another one); {fix}",
                        refused.join(", ")
                    ))
                } else {
                    None
                };
                if let Some(msg) = blocked {
                    // Said once per change, kept in the status until it is fixed.
                    if msg != said {
                        tracing::error!("{msg}");
                        said = msg.clone();
                    }
                    self.set_formation(Formation::Blocked(msg));
                } else if !unsettled.is_empty() {
                    tracing::debug!(?unsettled, "waiting for static peers to answer");
                    self.set_formation(Formation::Searching);
                } else {
                    let lowest = same
                        .iter()
                        .map(|(_, h)| h.node_id)
                        .chain([self.node_id])
                        .min()
                        .unwrap_or(self.node_id);
                    if lowest == self.node_id {
                        return self.found(same.len()).await;
                    }
                    self.set_formation(Formation::Searching);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => anyhow::bail!("stopped while looking for the cluster"),
                _ = tokio::time::sleep(LOOK_EVERY) => {}
            }
        }
    }

    async fn found(&self, others: usize) -> anyhow::Result<()> {
        let addr = self.own_addr();
        let members: BTreeMap<u64, BasicNode> = [(self.node_id, BasicNode::new(addr.clone()))]
            .into_iter()
            .collect();
        self.raft
            .initialize(members)
            .await
            .context("found a new cluster")?;
        tracing::info!(
            node_id = self.node_id,
            %addr,
            waiting_to_join = others,
            "founded cluster {}",
            self.inner.params.cluster_name
        );
        self.set_formation(Formation::Founded);
        Ok(())
    }

    async fn ask_to_join(&self, peer: PeerId) -> Result<(), String> {
        let req = PeerRequest::Join(JoinRequest {
            node_id: self.node_id,
            addr: self.own_addr(),
        });
        match self
            .net
            .request(peer, Vec::new(), req, Duration::from_secs(150))
            .await
        {
            Ok(PeerResponse::Join(r)) => r,
            Ok(other) => Err(format!("unexpected answer: {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Asks every connected peer who it is.
    async fn hello_connected(&self) -> Vec<(PeerId, Hello)> {
        let asks = self
            .net
            .connected()
            .into_iter()
            .map(|(peer, _)| async move {
                match self
                    .net
                    .request(peer, Vec::new(), PeerRequest::Hello, Duration::from_secs(3))
                    .await
                {
                    Ok(PeerResponse::Hello(h)) => Some((peer, h)),
                    _ => None,
                }
            });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The static peers' addresses.
    async fn static_addrs(&self) -> Vec<Multiaddr> {
        let mut out = Vec::new();
        for p in &self.inner.params.peers {
            match tokio::net::lookup_host(p.as_str()).await {
                Ok(addrs) => out.extend(addrs.map(multiaddr_of)),
                Err(e) => tracing::debug!(peer = %p, "cannot resolve: {e}"),
            }
        }
        out
    }

    /// Sorts the static peers by what stands in the way of founding a cluster: those that
    /// refused or never finished the private-network handshake (they hold another secret), and
    /// those not settled yet (a dial under way, connected but not yet answering). A peer that
    /// nothing answers at its address (connection refused, no route) is simply absent.
    async fn static_peer_blockers(&self, answered: &[PeerId]) -> (Vec<String>, Vec<String>) {
        let (mut refused, mut unsettled) = (Vec::new(), Vec::new());
        for a in self.static_addrs().await {
            match self.net.dial_state(&a, DIAL_EVERY * 3) {
                DialState::Connected(p) if answered.contains(&p) => {}
                DialState::Failed(e) if is_handshake_failure(&e) => {
                    tracing::debug!(addr = %a, "handshake failure: {e}");
                    refused.push(a.to_string());
                }
                DialState::Failed(e) if !is_absent(&e) => {
                    tracing::debug!(addr = %a, "no handshake: {e}");
                    refused.push(a.to_string());
                }
                DialState::Failed(_) => {}
                DialState::Connected(_) | DialState::Pending | DialState::Unknown => {
                    unsettled.push(a.to_string())
                }
            }
        }
        (refused, unsettled)
    }

    /// Nodes of this cluster's name seen over mDNS: (node id, secret fingerprint, addresses).
    fn mdns_nodes(&self) -> Vec<(u64, String, Vec<Multiaddr>)> {
        let Some(w) = &self.inner.mdns else {
            return Vec::new();
        };
        let found = w.lock().unwrap_or_else(|p| p.into_inner()).poll();
        found
            .into_iter()
            .filter(|f| f.txt.get("cluster") == Some(&self.inner.params.cluster_name))
            .filter_map(|f| {
                let node: u64 = f.txt.get("node")?.parse().ok()?;
                (node != self.node_id).then(|| {
                    let addrs = wormfs_discovery::dialable(&f.addresses)
                        .into_iter()
                        .map(|ip| multiaddr_of(std::net::SocketAddr::new(ip, f.port)))
                        .collect();
                    (node, f.txt.get("fp").cloned().unwrap_or_default(), addrs)
                })
            })
            .collect()
    }

    /// Every address worth keeping a connection to: static peers and, over mDNS, nodes of this
    /// cluster that hold the same secret.
    async fn peer_addrs(&self) -> Vec<Multiaddr> {
        let mut out = self.static_addrs().await;
        for (_, fp, addrs) in self.mdns_nodes() {
            if fp == self.inner.params.fingerprint {
                out.extend(addrs);
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Keeps a connection to every peer (they may start later or restart).
    pub(super) async fn dial_peers(self, shutdown: CancellationToken) {
        if self.inner.params.peers.is_empty() && self.inner.mdns.is_none() {
            return;
        }
        let own: Vec<Multiaddr> = self.net.listen_addrs();
        loop {
            for a in self.peer_addrs().await {
                let is_self = own
                    .iter()
                    .any(|o| o.to_string().starts_with(&a.to_string()));
                // Not while connected, nor while a dial is under way (a handshake with a
                // peer holding another secret can hang until the transport's timeout).
                let idle = !matches!(
                    self.net.dial_state(&a, DIAL_EVERY),
                    DialState::Connected(_) | DialState::Pending
                );
                if !is_self && idle {
                    self.net.dial(a).await;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(if self.inner.params.peers.is_empty() {
                    LOOK_EVERY
                } else {
                    DIAL_EVERY
                }) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connections_are_not_handshake_failures() {
        // As libp2p words them (seen against a node with another secret, and a closed port).
        assert!(!is_handshake_failure("Connection refused (os error 111)"));
        assert!(is_absent("Connection refused (os error 111)"));
        assert!(!is_absent("Timeout has been reached"));
        assert!(is_handshake_failure(
            ": Handshake failed: Handshake failed: Connection reset by peer (os error 104)"
        ));
    }
}
