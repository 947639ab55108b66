//! Forced recovery: when most voters are gone for good, one surviving machine (stopped) is
//! made the only voter by appending a membership entry to its own log. Raft cannot do this
//! safely (the lost voters may hold entries it never saw, and must never return with their old
//! state), so it is an explicit, offline, documented last resort: `wormfs recover --force`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context};
use openraft::{BasicNode, Entry, EntryPayload, LogId, Membership, StoredMembership};
use sqlx::Row;

use super::raft_store::read_applied;
use super::{open_pool, LogStore};
use crate::ids::NodeId;
use crate::raft_types::TypeConfig;

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
    let log = LogStore::open(&meta_dir.join("raft-log.db")).await?;
    let pool = log.pool();
    let rows = sqlx::query("SELECT entry FROM log ORDER BY idx DESC")
        .fetch_all(pool)
        .await
        .context("read the raft log")?;
    let entries: Vec<Entry<TypeConfig>> = rows
        .iter()
        .map(|r| serde_json::from_str(&r.get::<String, _>(0)))
        .collect::<Result<_, _>>()
        .context("decode the raft log")?;
    // The newest membership: in the log, else the one applied with the state machine.
    let mut current: Option<Membership<NodeId, BasicNode>> =
        entries.iter().find_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some(m.clone()),
            _ => None,
        });
    let last: Option<LogId<NodeId>> = match entries.first() {
        Some(e) => Some(e.log_id),
        None => {
            let r = sqlx::query("SELECT value FROM log_state WHERE key = 'last_purged'")
                .fetch_optional(pool)
                .await?;
            match r {
                Some(r) => serde_json::from_str::<Option<LogId<NodeId>>>(&r.get::<String, _>(0))?,
                None => None,
            }
        }
    };
    if current.is_none() {
        let db = open_pool(&meta_dir.join("metadata.db"), 1).await?;
        let (_, sm): (_, StoredMembership<NodeId, BasicNode>) = read_applied(&db).await?;
        current = Some(sm.membership().clone());
        db.close().await;
    }
    let current = current.context("this machine has no cluster membership to recover")?;
    let Some(last) = last else {
        bail!("this machine's raft log is empty: nothing to recover");
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
    let json = serde_json::to_string(&entry)?;
    sqlx::query("INSERT INTO log (idx, entry) VALUES (?, ?)")
        .bind(entry.log_id.index as i64)
        .bind(json)
        .execute(pool)
        .await
        .context("append the new membership")?;
    pool.close().await;
    Ok(Recovered {
        old_voters,
        index: entry.log_id.index,
    })
}
