//! Who votes: learners promoted while the cluster wants more voters (1 for one or two
//! machines, 3 for three or four, 5 from five), a voter not heard from for
//! `cluster.voter_replace_after_ms` replaced by a reachable learner, and `wormfs node remove`.
//! All of it runs on the leader; other members forward a removal to it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Consensus;
use crate::command::CommandV1;
use crate::fsutil::now_ms;
use crate::ids::NodeId;
use crate::peer::protocol::RemoveRefused;
use crate::peer::{PeerRequest, PeerResponse};

/// A member heard from within this long counts as up.
const ALIVE: Duration = Duration::from_secs(5);
/// How often the leader looks at its voters.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Voters wanted for a cluster of `members` machines: 1 for one or two (with two voters either
/// loss stops writes; with one, only the voter's), 3 for three or four, 5 from five.
pub(crate) fn voters_wanted(members: usize) -> usize {
    match members {
        0..=2 => 1,
        3 | 4 => 3,
        _ => 5,
    }
}

impl Consensus {
    fn is_alive(&self, id: NodeId) -> bool {
        id == self.node_id || self.inner.contacts.since(id).is_some_and(|d| d < ALIVE)
    }

    /// Promotes reachable learners (lowest ids first) while the cluster wants more voters, and
    /// turns surplus voters back into learners (a cluster that shrank to two machines keeps
    /// one voter, so losing the other does not stop writes).
    pub(super) async fn balance_voters(&self) -> Result<(), String> {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        let want = voters_wanted(members.len());
        if voters.len() < want {
            let mut learners: Vec<NodeId> = members.difference(&voters).copied().collect();
            // Reachable ones first, then by id.
            learners.sort_by_key(|id| (!self.is_alive(*id), *id));
            let add: BTreeSet<NodeId> = learners.into_iter().take(want - voters.len()).collect();
            tracing::info!(?add, "promoting learners to voters");
            return self
                .raft
                .change_membership(ChangeMembers::AddVoterIds(add), false)
                .await
                .map(|_| ())
                .map_err(|e| format!("promoting voters: {e}"));
        }
        if voters.len() > want {
            // Unreachable voters go first, then the highest ids; never this node (the leader).
            let mut extra: Vec<NodeId> = voters
                .iter()
                .copied()
                .filter(|id| *id != self.node_id)
                .collect();
            extra.sort_by_key(|id| (self.is_alive(*id), std::cmp::Reverse(*id)));
            let remove: BTreeSet<NodeId> = extra.into_iter().take(voters.len() - want).collect();
            tracing::info!(?remove, "turning surplus voters into learners");
            return self
                .raft
                .change_membership(ChangeMembers::RemoveVoters(remove), true)
                .await
                .map(|_| ())
                .map_err(|e| format!("demoting voters: {e}"));
        }
        Ok(())
    }

    /// On the leader, every few seconds: replaces voters not heard from for
    /// `voter_replace_after` by reachable learners, then balances the voters.
    pub(super) async fn maintain_voters(self, shutdown: CancellationToken) {
        let span = tracing::info_span!("voters", node = self.node_id);
        async move {
            let mut leading_since: Option<Instant> = None;
            let mut down: BTreeSet<NodeId> = BTreeSet::new();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(CHECK_EVERY) => {}
                }
                let m = self.metrics();
                if m.current_leader != Some(self.node_id) {
                    leading_since = None;
                    down.clear();
                    continue;
                }
                let since = *leading_since.get_or_insert_with(Instant::now);
                self.log_reachability(since, &mut down);
                if let Err(e) = self.replace_dead_voters(since).await {
                    tracing::warn!("replacing an unreachable voter: {e}");
                    continue;
                }
                if let Err(e) = self.balance_voters().await {
                    tracing::warn!("{e}");
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Logs once when a member stops answering the leader and once when it is back (openraft's
    /// own replication warnings, several a second per member, are filtered out).
    fn log_reachability(&self, leading_since: Instant, down: &mut BTreeSet<NodeId>) {
        let m = self.metrics();
        let members: Vec<NodeId> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| *id != self.node_id)
            .collect();
        down.retain(|id| members.contains(id));
        for id in members {
            let silent = self
                .inner
                .contacts
                .since(id)
                .unwrap_or_else(|| leading_since.elapsed());
            if silent >= ALIVE && down.insert(id) {
                tracing::warn!(
                    node = id,
                    "member {id} does not answer (last heard {} s ago); replicating to it once it is back",
                    silent.as_secs()
                );
            } else if silent < ALIVE && down.remove(&id) {
                tracing::info!(node = id, "member {id} answers again");
            }
        }
    }

    async fn replace_dead_voters(&self, leading_since: Instant) -> Result<(), String> {
        let after = self.inner.params.voter_replace_after;
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        let silent = |id: &NodeId| {
            *id != self.node_id
                && self
                    .inner
                    .contacts
                    .since(*id)
                    .unwrap_or_else(|| leading_since.elapsed())
                    >= after
        };
        let dead: Vec<NodeId> = voters.iter().copied().filter(silent).collect();
        let mut spare: Vec<NodeId> = members
            .difference(&voters)
            .copied()
            .filter(|id| self.is_alive(*id))
            .collect();
        spare.sort_unstable();
        let swaps: Vec<(NodeId, NodeId)> = dead.into_iter().zip(spare).collect();
        if swaps.is_empty() {
            return Ok(());
        }
        let mut new_voters = voters.clone();
        for (out, inn) in &swaps {
            tracing::warn!(
                dead = out,
                replacement = inn,
                "voter {out} not heard from for {}s: node {inn} votes in its place (node {out} stays a learner until `wormfs node remove {out}`)",
                after.as_secs()
            );
            new_voters.remove(out);
            new_voters.insert(*inn);
        }
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(new_voters), true)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Removes machine `id` from the cluster: from the voters and the members (a learner
    /// then takes its vote if the cluster wants one), and from the registered nodes, so the
    /// data plane refuses its certificate. Refused for a machine heard from in the last few
    /// seconds unless `force`. Any member may be asked; it forwards to the leader.
    pub async fn remove_node(&self, id: NodeId, force: bool) -> Result<(), RemoveRefused> {
        let m = self.metrics();
        match m.current_leader {
            Some(l) if l == self.node_id => {}
            Some(l) => {
                return match self
                    .ask_member(
                        l,
                        PeerRequest::RemoveNode { node_id: id, force },
                        Duration::from_secs(60),
                    )
                    .await
                {
                    Ok(PeerResponse::RemoveNode(r)) => r,
                    Ok(other) => Err(RemoveRefused::Failed(format!(
                        "unexpected answer from the leader: {other:?}"
                    ))),
                    Err(e) => Err(RemoveRefused::NoMajority(format!(
                        "the leader (node {l}) did not answer: {e}"
                    ))),
                };
            }
            None => {
                return Err(RemoveRefused::NoMajority(
                    "the cluster has no majority (no leader): a machine cannot be removed; see \
                     the forced recovery in docs/cluster.md"
                        .into(),
                ))
            }
        }
        let membership = m.membership_config.membership();
        let is_member = membership.get_node(&id).is_some();
        if id == self.node_id {
            return Err(RemoveRefused::Refused(format!(
                "node {id} is the leader and is running: stop it first, then remove it through \
                 another machine"
            )));
        }
        if !force && self.is_alive(id) {
            return Err(RemoveRefused::Refused(format!(
                "node {id} is up (heard from {} ms ago): stop it first, or use --force",
                self.inner
                    .contacts
                    .since(id)
                    .unwrap_or_default()
                    .as_millis()
            )));
        }
        if is_member {
            tracing::warn!(node = id, "removing a machine from the cluster");
            let change = if membership.voter_ids().any(|v| v == id) {
                ChangeMembers::RemoveVoters([id].into_iter().collect())
            } else {
                ChangeMembers::RemoveNodes([id].into_iter().collect())
            };
            self.raft
                .change_membership(change, false)
                .await
                .map_err(|e| RemoveRefused::Failed(format!("removing node {id}: {e}")))?;
        }
        self.write(CommandV1::RemoveNode {
            node_id: id,
            time_ms: now_ms(),
        })
        .await
        .map_err(|e| RemoveRefused::Failed(e.to_string()))?;
        self.balance_voters().await.map_err(RemoveRefused::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_by_cluster_size() {
        let got: Vec<usize> = (1..=7).map(voters_wanted).collect();
        assert_eq!(got, [1, 1, 3, 3, 5, 5, 5]);
    }
}
