//! Raft in one process: WormFS's own log store, state machine (SQLite files in temporary
//! folders), commands and Raft configuration, with nodes talking through an in-memory router that
//! cuts, drops, delays and loses answers (openraft's own test fixtures are the model). Elections,
//! minorities, lagging members, snapshots, membership changes and restarts, in seconds rather
//! than the minutes real processes take.

mod cluster;
mod router;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::{ChangeMembers, ServerState};
use wormfs_meta::command::{Command, Outcome};
use wormfs_server::consensus::{plan_voters, VoterChange, VoterFacts};

use cluster::{mkdir, node_addr, root_names, test_raft_config, NodeId, TestCluster, DEADLINE};

fn others(all: &[NodeId], not: NodeId) -> Vec<NodeId> {
    all.iter().copied().filter(|id| *id != not).collect()
}

fn name(n: u64) -> String {
    format!("d{n:05}")
}

/// Waits until `cond` holds for node `id`'s metrics.
/// Makes node `id` snapshot at least up to `index`. A trigger that arrives while openraft is
/// already building a snapshot (the automatic one every `snapshot_every_logs`) is dropped, so
/// it is sent again until a snapshot covers `index`, within the deadline.
async fn snapshot_up_to(c: &TestCluster, id: NodeId, index: u64) {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        c.raft(id).trigger().snapshot().await.expect("snapshot");
        let covered = c
            .raft(id)
            .wait(Some(std::time::Duration::from_secs(2)))
            .metrics(|m| m.snapshot.map(|s| s.index) >= Some(index), "snapshot")
            .await
            .is_ok();
        if covered {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node {id}: no snapshot up to {index} within {DEADLINE:?}: {:?}",
            c.raft(id).metrics().borrow().snapshot
        );
    }
}

async fn wait_metrics(
    c: &TestCluster,
    id: NodeId,
    what: &str,
    cond: impl Fn(&openraft::RaftMetrics<NodeId, openraft::BasicNode>) -> bool + Send,
) {
    c.raft(id)
        .wait(Some(DEADLINE))
        .metrics(cond, what)
        .await
        .unwrap_or_else(|e| panic!("node {id}: {what}: {e}"));
}

/// An isolated leader loses its leadership to a new one of a higher term; what it proposes
/// alone is never committed; back in the cluster it follows and drops that entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_is_replaced_and_its_lone_write_is_lost() {
    let all = [1, 2, 3];
    let mut c = TestCluster::new(test_raft_config(5000, 1000));
    c.start_voters(&all).await;
    let old = c.wait_for_leader(&all).await;
    c.write(old, mkdir(1)).await;
    let old_term = c.metrics(old).current_term;

    c.router.isolate(old);
    let rest = others(&all, old);
    let new = c.wait_for_leader(&rest).await;
    assert_ne!(new, old);
    assert!(c.metrics(new).current_term > old_term, "a new term");

    // The old leader alone cannot gather a majority.
    let lone = tokio::time::timeout(
        Duration::from_secs(2),
        c.raft(old).client_write(Command::V1(mkdir(999))),
    )
    .await;
    assert!(
        !matches!(lone, Ok(Ok(_))),
        "a write on an isolated leader was acknowledged: {lone:?}"
    );
    let (_, index) = c.write(new, mkdir(2)).await;

    c.router.heal();
    wait_metrics(&c, old, "follows a new leader", move |m| {
        m.current_leader.is_some_and(|l| l != old) && m.state == ServerState::Follower
    })
    .await;
    c.assert_converged(&all, index).await;
    let names = root_names(&c, old).await;
    assert!(
        names.contains(&name(1)) && names.contains(&name(2)),
        "{names:?}"
    );
    assert!(
        !names.contains(&name(999)),
        "the lone write survived: {names:?}"
    );
}

/// A follower cut off while the majority writes catches up from the log once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_from_the_log() {
    let all = [1, 2, 3];
    let mut c = TestCluster::new(test_raft_config(5000, 1000));
    c.start_voters(&all).await;
    let leader = c.wait_for_leader(&all).await;
    let lagging = others(&all, leader)[0];
    c.router.isolate(lagging);
    let last = c.write_many(leader, 0..50).await;
    assert!(
        c.metrics(lagging).last_applied.map(|l| l.index) < Some(last),
        "the isolated follower applied entries it cannot have received"
    );
    c.router.heal();
    c.assert_converged(&all, last).await;
    assert_eq!(root_names(&c, lagging).await.len(), 50);
    assert_eq!(
        c.router.traffic().snapshot_chunks,
        0,
        "no snapshot was needed"
    );
}

/// A follower that missed entries the leader has since purged receives a snapshot (a copy of
/// the SQLite database, sent in chunks), installs it, and keeps it across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_installs_a_snapshot_after_a_purge() {
    let all = [1, 2, 3];
    let mut c = TestCluster::new(test_raft_config(40, 0));
    c.start_voters(&all).await;
    let leader = c.wait_for_leader(&all).await;
    c.write(leader, mkdir(0)).await;
    let lagging = others(&all, leader)[0];
    c.router.isolate(lagging);
    let last = c.write_many(leader, 1..=120).await;
    // Both nodes that can lead snapshot everything and purge their logs (none kept), so
    // whichever leads after the healing has only a snapshot to offer.
    for id in others(&all, lagging) {
        snapshot_up_to(&c, id, last).await;
        c.raft(id).trigger().purge_log(last).await.expect("purge");
        wait_metrics(&c, id, "log purged", |m| {
            m.purged.map(|p| p.index) >= Some(last)
        })
        .await;
    }

    c.router.heal();
    c.assert_converged(&all, last).await;
    assert!(
        c.router.traffic().snapshot_chunks > 0,
        "a snapshot was sent"
    );
    assert!(
        c.metrics(lagging).snapshot.map(|s| s.index) >= Some(last),
        "the lagging node installed the snapshot: {:?}",
        c.metrics(lagging).snapshot
    );
    assert_eq!(root_names(&c, lagging).await.len(), 121);

    // What it installed is on its disk: after a restart it has everything and goes on.
    c.stop(lagging).await;
    let (_, more) = c.write(leader, mkdir(500)).await;
    c.start(lagging).await;
    c.assert_converged(&all, more).await;
    assert_eq!(root_names(&c, lagging).await.len(), 122);
}

/// Writes go on through a network that drops 10% of requests and of answers and delays the
/// rest, while one node after another (leaders included) is cut off for a while: every
/// acknowledged write is on every node at the end, and the databases are identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_network_and_rolling_partitions_lose_no_acknowledged_write() {
    let all = [1, 2, 3];
    let mut c = TestCluster::new(test_raft_config(30, 5));
    c.start_voters(&all).await;
    c.router.set_faults(|f| {
        f.drop_request = 0.1;
        f.drop_response = 0.1;
        f.max_delay = Duration::from_millis(10);
    });
    let mut acknowledged = BTreeSet::new();
    let mut last = 0;
    for round in 0..4u64 {
        let cut = all[(round % 3) as usize];
        if round > 0 {
            c.router.isolate(cut);
        }
        let via = others(&all, cut)[(round % 2) as usize];
        for i in 0..15 {
            let n = round * 100 + i;
            let (outcome, index) = c.write(via, mkdir(n)).await;
            // A write retried after a lost answer may find its directory made already.
            assert!(
                matches!(outcome, Outcome::Done | Outcome::Rejected(_)),
                "{outcome:?}"
            );
            acknowledged.insert(name(n));
            last = last.max(index);
        }
        c.router.set_faults(|f| {
            f.isolated.clear();
        });
    }
    let traffic = c.router.traffic();
    assert!(
        traffic.dropped_requests > 0 && traffic.dropped_responses > 0 && traffic.cut > 0,
        "the faults happened: {traffic:?}"
    );
    c.router.heal();
    let leader = c.wait_for_leader(&all).await;
    let (_, index) = c.write(leader, mkdir(9999)).await;
    acknowledged.insert(name(9999));
    assert!(index > last);
    c.assert_converged(&all, index).await;
    for id in all {
        let names = root_names(&c, id).await;
        assert_eq!(names, acknowledged, "node {id}");
    }
}

/// A cluster grows from one voter (learners added, caught up, promoted) and shrinks again:
/// the leader removes itself, a new leader takes over, and the removed node gets nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_grows_from_one_voter_and_shrinks() {
    let mut c = TestCluster::new(test_raft_config(5000, 1000));
    c.start_voters(&[1]).await;
    for n in 0..10 {
        c.write(1, mkdir(n)).await;
    }
    c.start(2).await;
    c.start(3).await;
    for id in [2, 3] {
        c.raft(1)
            .add_learner(id, node_addr(id), true)
            .await
            .expect("add learner");
    }
    let (_, index) = c.write(1, mkdir(10)).await;
    c.assert_converged(&[1, 2, 3], index).await;
    assert_eq!(c.metrics(2).state, ServerState::Learner);

    c.raft(1)
        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([2, 3])), false)
        .await
        .expect("promote");
    let voters: BTreeSet<NodeId> = c
        .metrics(c.wait_for_leader(&[1, 2, 3]).await)
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 3]));

    // With three voters, one down still leaves a majority.
    let leader = c.wait_for_leader(&[1, 2, 3]).await;
    c.router.isolate(others(&[1, 2, 3], leader)[0]);
    let (_, index) = c.write(leader, mkdir(11)).await;
    c.router.heal();
    c.assert_converged(&[1, 2, 3], index).await;

    // The leader removes itself from the cluster.
    let gone = c.wait_for_leader(&[1, 2, 3]).await;
    let stay = others(&[1, 2, 3], gone);
    c.raft(gone)
        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([gone])), false)
        .await
        .expect("remove the leader");
    let leader = c.wait_for_leader(&stay).await;
    let removed_at = c.metrics(gone).last_applied.map(|l| l.index);
    let (_, index) = c.write(leader, mkdir(12)).await;
    c.assert_converged(&stay, index).await;
    let members: Vec<NodeId> = c
        .metrics(leader)
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(members, stay);
    assert!(
        c.metrics(gone).last_applied.map(|l| l.index) < Some(index),
        "the removed node still receives entries (applied {:?} of {index}; {removed_at:?} when removed)",
        c.metrics(gone).last_applied
    );
    assert!(!root_names(&c, gone).await.contains(&name(12)));
}

/// Every node stopped and started again from its files: the vote, the log and the state
/// machine come back, a leader is elected, nothing acknowledged is missing, writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restarts_from_its_files() {
    let all = [1, 2, 3];
    let mut c = TestCluster::new(test_raft_config(25, 10));
    c.start_voters(&all).await;
    let leader = c.wait_for_leader(&all).await;
    let last = c.write_many(leader, 0..60).await;
    c.assert_converged(&all, last).await;
    let terms: BTreeMap<NodeId, u64> = all
        .iter()
        .map(|id| (*id, c.metrics(*id).current_term))
        .collect();
    let before = c.dump(leader).await;
    for id in all {
        c.stop(id).await;
        let vote = c.saved_vote(id).await.expect("a saved vote");
        assert_eq!(vote.leader_id().term, terms[&id], "node {id} kept its term");
    }
    let started = Instant::now();
    for id in all {
        c.start(id).await;
    }
    let leader = c.wait_for_leader(&all).await;
    eprintln!("leader elected {:?} after the restart", started.elapsed());
    for id in all {
        c.wait_applied(id, last).await;
    }
    let after = c.dump(leader).await;
    assert_eq!(
        before["entries"], after["entries"],
        "the namespace came back whole"
    );
    let (_, index) = c.write(leader, mkdir(60)).await;
    c.assert_converged(&all, index).await;
    assert_eq!(root_names(&c, leader).await.len(), 61);
}

/// Applies the voter planner's changes (what the leader's `maintain_voters` loop does every
/// few seconds) until it has nothing more to do; members in `lost` have been silent for ten
/// minutes, the others answered just now. Returns the changes made.
async fn settle_voters(c: &TestCluster, lost: &BTreeSet<NodeId>) -> Vec<VoterChange> {
    let mut made = Vec::new();
    for _ in 0..10 {
        let alive: Vec<NodeId> = c
            .nodes
            .keys()
            .copied()
            .filter(|id| !lost.contains(id))
            .collect();
        let voters: Vec<NodeId> = voters_of(c, alive[0])
            .into_iter()
            .filter(|id| !lost.contains(id))
            .collect();
        let leader = c.wait_for_leader(&voters).await;
        let m = c.metrics(leader);
        let membership = m.membership_config.membership();
        let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        let last_heard = |id: NodeId| {
            Some(if lost.contains(&id) {
                Duration::from_secs(600)
            } else {
                Duration::ZERO
            })
        };
        let Some(change) = plan_voters(&VoterFacts {
            leader,
            voters: &voter_ids,
            members: &members,
            last_heard: &last_heard,
            leading_for: Duration::from_secs(600),
            replace_after: Duration::from_secs(120),
        }) else {
            return made;
        };
        let (raft_change, retain) = change.to_raft();
        match c.raft(leader).change_membership(raft_change, retain).await {
            Ok(_) => made.push(change),
            // Leadership moved (a busy machine): plan again with the new leader.
            Err(e) => eprintln!("{change:?} not made, planning again: {e}"),
        }
    }
    panic!("the voters did not settle: {made:?}");
}

fn voters_of(c: &TestCluster, id: NodeId) -> BTreeSet<NodeId> {
    c.metrics(id)
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

/// WormFS's voter planner (`consensus::plan_voters`) over real Raft membership changes: a
/// founder alone promotes learners up to three voters (the fourth machine stays a learner), a
/// voter cut off gives its vote to the learner and writes go on without it, a removed voter's
/// place is refilled, and a cluster that shrinks to two machines keeps one voter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voter_planner_drives_real_membership_changes() {
    let none = BTreeSet::new();
    let mut c = TestCluster::new(test_raft_config(5000, 1000));
    c.start_voters(&[1]).await;
    for id in [2, 3, 4] {
        c.start(id).await;
        c.raft(1)
            .add_learner(id, node_addr(id), true)
            .await
            .expect("add learner");
    }
    let made = settle_voters(&c, &none).await;
    assert_eq!(made, vec![VoterChange::Promote(BTreeSet::from([2, 3]))]);
    assert_eq!(voters_of(&c, 1), BTreeSet::from([1, 2, 3]));
    assert_eq!(c.metrics(4).state, ServerState::Learner);

    // A voter (not the leader) goes silent: the learner takes its vote.
    let leader = c.wait_for_leader(&[1, 2, 3]).await;
    let gone = others(&[1, 2, 3], leader)[0];
    c.router.isolate(gone);
    let lost = BTreeSet::from([gone]);
    let made = settle_voters(&c, &lost).await;
    let mut want = BTreeSet::from([1, 2, 3, 4]);
    want.remove(&gone);
    assert_eq!(
        made,
        vec![VoterChange::Replace {
            voters: want.clone(),
            swaps: vec![(gone, 4)]
        }]
    );
    let survivors: Vec<NodeId> = want.iter().copied().collect();
    let leader = c.wait_for_leader(&survivors).await;
    assert_eq!(voters_of(&c, leader), want);
    // The new three voters commit without the silent machine, which is still a member.
    let (_, index) = c.write(leader, mkdir(1)).await;
    c.assert_converged(&survivors, index).await;
    assert!(c
        .metrics(leader)
        .membership_config
        .membership()
        .get_node(&gone)
        .is_some());

    // It comes back as a learner and catches up; then a voter is removed (as `wormfs node
    // remove` does) and the planner refills its place from the learner.
    c.router.heal();
    c.assert_converged(&[1, 2, 3, 4], index).await;
    assert_eq!(settle_voters(&c, &none).await, vec![]);
    let leader = c.wait_for_leader(&survivors).await;
    let removed = *want.iter().rev().find(|id| **id != leader).unwrap();
    // As `wormfs node remove` requires, the machine is off first.
    c.stop(removed).await;
    c.raft(leader)
        .change_membership(
            ChangeMembers::RemoveVoters(BTreeSet::from([removed])),
            false,
        )
        .await
        .expect("remove a voter");
    let made = settle_voters(&c, &none).await;
    assert_eq!(made, vec![VoterChange::Promote(BTreeSet::from([gone]))]);

    // Down to two machines: one voter, the other a learner.
    let running: Vec<NodeId> = c.nodes.keys().copied().collect();
    let leader = c.wait_for_leader(&running).await;
    let third = *voters_of(&c, leader)
        .iter()
        .find(|id| **id != leader)
        .unwrap();
    c.stop(third).await;
    c.raft(leader)
        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([third])), false)
        .await
        .expect("remove another voter");
    let made = settle_voters(&c, &none).await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(
        matches!(&made[0], VoterChange::Demote(d) if d.len() == 1),
        "{made:?}"
    );
    let running: Vec<NodeId> = c.nodes.keys().copied().collect();
    assert_eq!(running.len(), 2);
    let leader = c.wait_for_leader(&running).await;
    assert_eq!(voters_of(&c, leader), BTreeSet::from([leader]));
    // The learner's loss does not stop writes.
    let learner = c
        .metrics(leader)
        .membership_config
        .membership()
        .learner_ids()
        .next()
        .expect("a learner");
    c.router.isolate(learner);
    c.write(leader, mkdir(2)).await;
}

/// Five voters split three against two, the two still talking to each other: the two cannot
/// commit (not even the old leader among them), the three elect a leader among themselves and
/// go on, and after healing the two drop what they proposed and hold what the three committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_voters_split_three_two_only_the_majority_commits() {
    let all = [1, 2, 3, 4, 5];
    let mut c = TestCluster::new(test_raft_config(5000, 1000));
    c.start_voters(&all).await;
    let leader = c.wait_for_leader(&all).await;
    c.write(leader, mkdir(1)).await;
    // The leader and one other node form the minority.
    let minority = [leader, others(&all, leader)[0]];
    let majority: Vec<NodeId> = all
        .iter()
        .copied()
        .filter(|id| !minority.contains(id))
        .collect();
    c.router.partition(&minority, &majority);
    let new = c.wait_for_leader(&majority).await;
    for id in minority {
        let lone = tokio::time::timeout(
            Duration::from_secs(2),
            c.raft(id).client_write(Command::V1(mkdir(900 + id))),
        )
        .await;
        assert!(
            !matches!(lone, Ok(Ok(_))),
            "node {id} committed a write without a majority: {lone:?}"
        );
    }
    let last = c.write_many(new, 2..12).await;
    c.router.heal();
    c.assert_converged(&all, last).await;
    for id in all {
        let names = root_names(&c, id).await;
        assert_eq!(names.len(), 11, "node {id}: {names:?}");
        assert!(minority.iter().all(|m| !names.contains(&name(900 + m))));
    }
}
