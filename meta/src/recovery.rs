//! Forced recovery: when most voters are gone for good, one surviving machine (stopped) is
//! made the only voter by appending a membership entry to its own log. Raft cannot do this
//! safely (the lost voters may hold entries it never saw, and must never return with their old
//! state), so it is an explicit, offline, documented last resort: `wormfs recover --force`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context};
use openraft::storage::RaftLogStorage;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, Membership, RaftLogReader, StoredMembership,
};

use super::raft_store::read_applied;
use super::{open_pool, LogStore};
use crate::raft_types::TypeConfig;
use wormfs_parts::ids::NodeId;

/// What a forced recovery did.
#[derive(Debug)]
pub struct Recovered {
    /// The voters before.
    pub old_voters: BTreeSet<NodeId>,
    /// The log index of the new membership entry.
    pub index: u64,
}

/// Appends to the log in `meta_dir` a membership whose only voter (and member) is `me`.
pub async fn force_single_voter(meta_dir: &Path, me: NodeId) -> anyhow::Result<Recovered> {
    let mut log = LogStore::open(&meta_dir.join("raft-log.db")).await?;
    let Some(last) = log
        .get_log_state()
        .await
        .context("read the raft log")?
        .last_log_id
    else {
        bail!("this machine's raft log is empty: nothing to recover");
    };
    // The newest membership: in the log, else the one applied with the state machine.
    let entries = log
        .try_get_log_entries(..)
        .await
        .context("read the raft log")?;
    let current = match entries.iter().rev().find_map(|e| match &e.payload {
        EntryPayload::Membership(m) => Some(m.clone()),
        _ => None,
    }) {
        Some(m) => m,
        None => {
            let db = open_pool(&meta_dir.join("metadata.db"), 1).await?;
            let (_, sm): (_, StoredMembership<NodeId, BasicNode>) = read_applied(&db).await?;
            db.close().await;
            sm.membership().clone()
        }
    };
    let Some(node) = current.get_node(&me).cloned() else {
        bail!("node {me} is not a member of the cluster recorded here");
    };
    let old_voters: BTreeSet<NodeId> = current.voter_ids().collect();
    let membership = Membership::new(vec![BTreeSet::from([me])], BTreeMap::from([(me, node)]));
    let entry: Entry<TypeConfig> = Entry {
        log_id: LogId::new(last.leader_id, last.index + 1),
        payload: EntryPayload::Membership(membership),
    };
    let index = entry.log_id.index;
    log.write_entries([entry])
        .await
        .context("append the new membership")?;
    log.close().await;
    Ok(Recovered { old_voters, index })
}
