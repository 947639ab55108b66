//! Events that no metadata command records by itself (the rest are written by apply; see
//! `wormfs_meta`'s `apply_events`): a new leader, members that stop answering and come back,
//! metadata backups written or failing. Each is proposed as a `RecordEvent`, so every machine
//! holds the same history (docs/operations.md, "Events").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::consensus::status::RaftRole;
use crate::store::Store;
use wormfs_meta::command::{CommandV1, EventSeverity};
use wormfs_parts::fsutil::now_ms;
use wormfs_parts::ids::NodeId;

/// How often leadership and the members' contact are looked at.
const TICK: Duration = Duration::from_secs(2);

/// Proposes an event; a failure (no quorum now) is logged, never fatal: an event is a record
/// of what happened, not a step of it.
pub async fn record(
    store: &Store,
    kind: &str,
    severity: EventSeverity,
    node: Option<NodeId>,
    message: String,
) {
    let cmd = CommandV1::RecordEvent {
        kind: kind.to_owned(),
        severity,
        node,
        message: message.clone(),
        time_ms: now_ms(),
    };
    match tokio::time::timeout(Duration::from_secs(10), store.propose(cmd)).await {
        Ok(Ok(_)) => tracing::debug!(kind, %message, "event recorded"),
        Ok(Err(e)) => tracing::info!(kind, %message, "event not recorded: {e}"),
        Err(_) => tracing::info!(kind, %message, "event not recorded: no quorum within 10 s"),
    }
}

/// Whether the newest `member_unreachable` / `member_back` event about `node` says it is
/// unreachable (so a new leader does not record the same loss again).
async fn recorded_unreachable(store: &Store, node: NodeId) -> bool {
    let events = store.meta.events(200, None, None).await.unwrap_or_default();
    events
        .iter()
        .find(|e| {
            e.node == Some(node) && matches!(e.kind.as_str(), "member_unreachable" | "member_back")
        })
        .is_some_and(|e| e.kind == "member_unreachable")
}

/// The background task: a leader change is recorded by the new leader, once per term; on the
/// leader, a member not heard from for `alerts.member_lost_after_ms` is recorded unreachable,
/// and back when it answers again.
pub async fn run(store: Arc<Store>, lost_after_ms: u64, stop: CancellationToken) {
    let mut recorded_term = None;
    // Members this leader knows to be unreachable (recorded, or found recorded).
    let mut unreachable: BTreeMap<NodeId, bool> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(TICK) => {}
        }
        let status = store.consensus.status();
        if status.role != RaftRole::Leader {
            unreachable.clear();
            continue;
        }
        if recorded_term != Some(status.term) {
            recorded_term = Some(status.term);
            let msg = format!(
                "machine {} leads the cluster (term {})",
                store.node_id, status.term
            );
            record(
                &store,
                "leader_changed",
                EventSeverity::Info,
                Some(store.node_id),
                msg,
            )
            .await;
            // A machine recorded unreachable that comes back as the leader says so itself.
            if recorded_unreachable(&store, store.node_id).await {
                let msg = format!("machine {} answers again (and leads)", store.node_id);
                record(
                    &store,
                    "member_back",
                    EventSeverity::Info,
                    Some(store.node_id),
                    msg,
                )
                .await;
            }
        }
        let Ok(nodes) = store.meta.nodes().await else {
            continue;
        };
        let names: BTreeMap<NodeId, String> =
            nodes.iter().map(|n| (n.node_id, n.name.clone())).collect();
        let view = store.consensus.view(nodes).await;
        for m in view.members.iter().filter(|m| m.node_id != store.node_id) {
            let silent_ms = m.last_contact_ms.unwrap_or(u64::MAX);
            let lost = silent_ms >= lost_after_ms;
            let known = match unreachable.get(&m.node_id) {
                Some(k) => *k,
                None => {
                    let k = recorded_unreachable(&store, m.node_id).await;
                    unreachable.insert(m.node_id, k);
                    k
                }
            };
            let name = names
                .get(&m.node_id)
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            if lost && !known {
                let since = match m.last_contact_ms {
                    Some(ms) => format!("for {} s", ms / 1000),
                    None => "since the leader started".to_owned(),
                };
                let msg = format!(
                    "machine {}{name} has not answered {since}: its disks' parts cannot be read",
                    m.node_id
                );
                record(
                    &store,
                    "member_unreachable",
                    EventSeverity::Warning,
                    Some(m.node_id),
                    msg,
                )
                .await;
                unreachable.insert(m.node_id, true);
            } else if !lost && known {
                let msg = format!("machine {}{name} answers again", m.node_id);
                record(
                    &store,
                    "member_back",
                    EventSeverity::Info,
                    Some(m.node_id),
                    msg,
                )
                .await;
                unreachable.insert(m.node_id, false);
            }
        }
    }
}
