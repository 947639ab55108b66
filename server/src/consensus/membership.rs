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
use crate::peer::protocol::RemoveRefused;
use crate::peer::{PeerRequest, PeerResponse};
use wormfs_meta::command::CommandV1;
use wormfs_parts::fsutil::now_ms;
use wormfs_parts::ids::NodeId;

/// A member heard from within this long counts as up.
const ALIVE: Duration = Duration::from_secs(5);
/// How often the leader looks at its voters.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Whether a member last heard from `last_heard` ago (`None`: never) counts as up.
fn answers(last_heard: Option<Duration>) -> bool {
    last_heard.is_some_and(|d| d < ALIVE)
}

/// How long a member has been silent as a leader sees it: since it was last heard from, or,
/// never heard from, for as long as this node has led.
fn silence(last_heard: Option<Duration>, leading_for: Duration) -> Duration {
    last_heard.unwrap_or(leading_for)
}

/// Voters wanted for a cluster of `members` machines: 1 for one or two (with two voters either
/// loss stops writes; with one, only the voter's), 3 for three or four, 5 from five.
pub(crate) fn voters_wanted(members: usize) -> usize {
    match members {
        0..=2 => 1,
        3 | 4 => 3,
        _ => 5,
    }
}

/// A change of voters the leader should make, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoterChange {
    /// Voters silent for too long give their vote to reachable learners (they stay members,
    /// as learners, until `wormfs node remove`). The new set of voters.
    Replace {
        /// The voters after the change.
        voters: BTreeSet<NodeId>,
        /// `(silent voter, learner taking its place)`.
        swaps: Vec<(NodeId, NodeId)>,
    },
    /// The cluster wants more voters: these learners become voters.
    Promote(BTreeSet<NodeId>),
    /// The cluster has more voters than it wants: these become learners.
    Demote(BTreeSet<NodeId>),
}

/// What the leader knows when it plans the voters.
pub struct VoterFacts<'a> {
    /// This node, the leader; never demoted or replaced.
    pub leader: NodeId,
    /// The current voters.
    pub voters: &'a BTreeSet<NodeId>,
    /// Every member, voters included.
    pub members: &'a BTreeSet<NodeId>,
    /// How long ago a member was last heard from (`None`: not since this node started).
    pub last_heard: &'a dyn Fn(NodeId) -> Option<Duration>,
    /// How long this node has led: a member never heard from has been silent that long.
    pub leading_for: Duration,
    /// `cluster.voter_replace_after_ms`.
    pub replace_after: Duration,
}

impl VoterFacts<'_> {
    /// Heard from within [`ALIVE`].
    fn alive(&self, id: NodeId) -> bool {
        id == self.leader || answers((self.last_heard)(id))
    }

    /// A voter silent for `replace_after` (never the leader).
    fn lost(&self, id: NodeId) -> bool {
        id != self.leader && silence((self.last_heard)(id), self.leading_for) >= self.replace_after
    }
}

/// The next change of voters, if any, in order of urgency: replace voters silent for
/// `replace_after` by reachable learners (lowest ids first); promote learners (reachable ones
/// first, then by id) while the cluster wants more voters ([`voters_wanted`]); demote surplus
/// voters (unreachable ones first, then the highest ids; never the leader).
pub fn plan_voters(f: &VoterFacts<'_>) -> Option<VoterChange> {
    let dead: Vec<NodeId> = f.voters.iter().copied().filter(|id| f.lost(*id)).collect();
    let mut spare: Vec<NodeId> = f
        .members
        .difference(f.voters)
        .copied()
        .filter(|id| f.alive(*id))
        .collect();
    spare.sort_unstable();
    let swaps: Vec<(NodeId, NodeId)> = dead.into_iter().zip(spare).collect();
    if !swaps.is_empty() {
        let mut voters = f.voters.clone();
        for (out, inn) in &swaps {
            voters.remove(out);
            voters.insert(*inn);
        }
        return Some(VoterChange::Replace { voters, swaps });
    }
    let want = voters_wanted(f.members.len());
    if f.voters.len() < want {
        let mut learners: Vec<NodeId> = f.members.difference(f.voters).copied().collect();
        learners.sort_by_key(|id| (!f.alive(*id), *id));
        let add: BTreeSet<NodeId> = learners.into_iter().take(want - f.voters.len()).collect();
        return (!add.is_empty()).then_some(VoterChange::Promote(add));
    }
    if f.voters.len() > want {
        let mut extra: Vec<NodeId> = f
            .voters
            .iter()
            .copied()
            .filter(|id| *id != f.leader)
            .collect();
        extra.sort_by_key(|id| (f.alive(*id), std::cmp::Reverse(*id)));
        let remove: BTreeSet<NodeId> = extra.into_iter().take(f.voters.len() - want).collect();
        return (!remove.is_empty()).then_some(VoterChange::Demote(remove));
    }
    None
}

impl VoterChange {
    /// The membership change openraft makes for it, and whether removed voters stay members
    /// (as learners).
    pub fn to_raft(&self) -> (ChangeMembers<NodeId, openraft::BasicNode>, bool) {
        match self {
            VoterChange::Replace { voters, .. } => {
                (ChangeMembers::ReplaceAllVoters(voters.clone()), true)
            }
            VoterChange::Promote(add) => (ChangeMembers::AddVoterIds(add.clone()), false),
            VoterChange::Demote(remove) => (ChangeMembers::RemoveVoters(remove.clone()), true),
        }
    }
}

impl Consensus {
    fn is_alive(&self, id: NodeId) -> bool {
        id == self.node_id || answers(self.inner.contacts.since(id))
    }

    /// Makes the change of voters [`plan_voters`] asks for, if any. `leading_since` is when
    /// this node became leader (`None`: no voter is replaced, only promotions and demotions).
    pub(super) async fn balance_voters(
        &self,
        leading_since: Option<Instant>,
    ) -> Result<(), String> {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        let replace_after = match leading_since {
            Some(_) => self.inner.params.voter_replace_after,
            None => Duration::MAX,
        };
        let last_heard = |id: NodeId| self.inner.contacts.since(id);
        let Some(change) = plan_voters(&VoterFacts {
            leader: self.node_id,
            voters: &voters,
            members: &members,
            last_heard: &last_heard,
            leading_for: leading_since.map_or(Duration::ZERO, |t| t.elapsed()),
            replace_after,
        }) else {
            return Ok(());
        };
        match &change {
            VoterChange::Replace { swaps, .. } => {
                for (out, inn) in swaps {
                    tracing::warn!(
                        dead = out,
                        replacement = inn,
                        "voter {out} not heard from for {}s: node {inn} votes in its place (node {out} stays a learner until `wormfs node remove {out}`)",
                        replace_after.as_secs()
                    );
                }
            }
            VoterChange::Promote(add) => tracing::info!(?add, "promoting learners to voters"),
            VoterChange::Demote(remove) => {
                tracing::info!(?remove, "turning surplus voters into learners")
            }
        }
        let (raft_change, retain) = change.to_raft();
        self.raft
            .change_membership(raft_change, retain)
            .await
            .map(|_| ())
            .map_err(|e| format!("changing the voters ({change:?}): {e}"))
    }

    /// On the leader, every few seconds: logs members going and coming back, and makes the
    /// next change of voters [`plan_voters`] asks for (one per round).
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
                if let Err(e) = self.balance_voters(Some(since)).await {
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
            let silent = silence(self.inner.contacts.since(id), leading_since.elapsed());
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
        self.balance_voters(None)
            .await
            .map_err(RemoveRefused::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn ids(v: &[NodeId]) -> BTreeSet<NodeId> {
        v.iter().copied().collect()
    }

    /// Plans for leader 1 with `members`, `voters`, and members last heard as `heard` says
    /// (absent: never), having led for `leading_for`, replacing after two minutes.
    fn plan(
        members: &[NodeId],
        voters: &[NodeId],
        heard: &[(NodeId, Duration)],
        leading_for: Duration,
    ) -> Option<VoterChange> {
        let heard: std::collections::HashMap<NodeId, Duration> = heard.iter().copied().collect();
        let last_heard = |id: NodeId| heard.get(&id).copied();
        plan_voters(&VoterFacts {
            leader: 1,
            voters: &ids(voters),
            members: &ids(members),
            last_heard: &last_heard,
            leading_for,
            replace_after: 2 * MIN,
        })
    }

    const NOW: Duration = Duration::from_millis(100);

    #[test]
    fn learners_are_promoted_up_to_the_wanted_voters_reachable_ones_first() {
        assert_eq!(plan(&[1], &[1], &[], MIN), None);
        assert_eq!(
            plan(&[1, 2], &[1], &[(2, NOW)], MIN),
            None,
            "two machines keep one voter"
        );
        assert_eq!(
            plan(&[1, 2, 3], &[1], &[(2, NOW), (3, NOW)], MIN),
            Some(VoterChange::Promote(ids(&[2, 3])))
        );
        // Node 2 has not been heard from: 3 and 4 first.
        assert_eq!(
            plan(&[1, 2, 3, 4], &[1], &[(3, NOW), (4, NOW)], MIN),
            Some(VoterChange::Promote(ids(&[3, 4])))
        );
        assert_eq!(
            plan(
                &[1, 2, 3, 4, 5],
                &[1, 2, 3],
                &[(2, NOW), (3, NOW), (4, NOW), (5, NOW)],
                MIN
            ),
            Some(VoterChange::Promote(ids(&[4, 5])))
        );
        // Unreachable learners are still promoted when there is nobody else.
        assert_eq!(
            plan(&[1, 2, 3], &[1], &[], MIN),
            Some(VoterChange::Promote(ids(&[2, 3])))
        );
    }

    #[test]
    fn a_voter_silent_too_long_gives_its_vote_to_a_reachable_learner() {
        let heard = [(2, 3 * MIN), (3, NOW), (4, NOW)];
        assert_eq!(
            plan(&[1, 2, 3, 4], &[1, 2, 3], &heard, 10 * MIN),
            Some(VoterChange::Replace {
                voters: ids(&[1, 3, 4]),
                swaps: vec![(2, 4)]
            })
        );
        // Silent, but not yet for two minutes.
        let heard = [(2, MIN), (3, NOW), (4, NOW)];
        assert_eq!(plan(&[1, 2, 3, 4], &[1, 2, 3], &heard, 10 * MIN), None);
        // No reachable learner to take the vote.
        let heard = [(2, 3 * MIN), (3, NOW), (4, 3 * MIN)];
        assert_eq!(plan(&[1, 2, 3, 4], &[1, 2, 3], &heard, 10 * MIN), None);
        // Never heard from since this node leads: silent as long as it has led.
        let heard = [(3, NOW), (4, NOW)];
        assert_eq!(plan(&[1, 2, 3, 4], &[1, 2, 3], &heard, MIN), None);
        assert!(matches!(
            plan(&[1, 2, 3, 4], &[1, 2, 3], &heard, 3 * MIN),
            Some(VoterChange::Replace { .. })
        ));
    }

    #[test]
    fn surplus_voters_become_learners_unreachable_then_highest_never_the_leader() {
        assert_eq!(
            plan(&[1, 2], &[1, 2], &[(2, NOW)], MIN),
            Some(VoterChange::Demote(ids(&[2])))
        );
        let all = [(2, NOW), (3, NOW), (4, NOW)];
        assert_eq!(
            plan(&[1, 2, 3, 4], &[1, 2, 3, 4], &all, MIN),
            Some(VoterChange::Demote(ids(&[4])))
        );
        let three_silent = [(2, NOW), (3, MIN), (4, NOW)];
        assert_eq!(
            plan(&[1, 2, 3, 4], &[1, 2, 3, 4], &three_silent, MIN),
            Some(VoterChange::Demote(ids(&[3])))
        );
    }

    #[test]
    fn changes_map_to_openraft_membership_changes() {
        let (c, retain) = VoterChange::Promote(ids(&[2])).to_raft();
        assert!(matches!(c, ChangeMembers::AddVoterIds(v) if v == ids(&[2])) && !retain);
        let (c, retain) = VoterChange::Demote(ids(&[2])).to_raft();
        assert!(matches!(c, ChangeMembers::RemoveVoters(v) if v == ids(&[2])) && retain);
        let (c, retain) = VoterChange::Replace {
            voters: ids(&[1, 3]),
            swaps: vec![(2, 3)],
        }
        .to_raft();
        assert!(matches!(c, ChangeMembers::ReplaceAllVoters(v) if v == ids(&[1, 3])) && retain);
    }

    #[test]
    fn voters_by_cluster_size() {
        let got: Vec<usize> = (1..=7).map(voters_wanted).collect();
        assert_eq!(got, [1, 1, 3, 3, 5, 5, 5]);
    }
}
