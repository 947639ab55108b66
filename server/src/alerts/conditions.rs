//! What needs attention now: the conditions the alerts watch, each with a stable key (one
//! message when it starts, one when it ends), read from the metadata and this machine's state.
//!
//! Cluster conditions (disks, damaged parts, files at risk, stuck repairs, lost members) are
//! the same seen from any machine; only the leader sends them, and only the leader can tell a
//! lost member (followers hear from the leader alone). Machine conditions (no leader, a stale
//! metadata backup) are this machine's own, and each machine sends its own.

use serde::{Deserialize, Serialize};

use crate::consensus::status::RaftRole;
use crate::store::{Store, StoreError};
use wormfs_config::AlertSeverity;
use wormfs_meta::command::DiskStatus;
use wormfs_parts::fsutil::now_ms;

/// One condition that holds now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// Stable while the condition lasts: `disk_down:<disk id>`, `member_lost:<node>`, ...
    pub key: String,
    /// What kind: `disk_down`, `disk_out`, `corruption`, `files_at_risk`, `files_unreadable`,
    /// `repair_stuck`, `member_lost`, `no_leader`, `backup_stale`.
    pub kind: String,
    /// How much it matters.
    pub severity: Severity,
    /// One line, with no file names (it is shown without a login by `/api/v1/health`).
    pub title: String,
    /// The details.
    pub message: String,
    /// Whether only the leader sends it (else the machine it is about does).
    pub cluster: bool,
}

/// [`AlertSeverity`] with serde, for the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs attention soon.
    Warning,
    /// Data is at risk now.
    Critical,
}

impl Severity {
    /// As the config spells it.
    pub fn config(self) -> AlertSeverity {
        match self {
            Self::Info => AlertSeverity::Info,
            Self::Warning => AlertSeverity::Warning,
            Self::Critical => AlertSeverity::Critical,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

fn cond(kind: &str, id: &str, severity: Severity, title: String, message: String) -> Condition {
    Condition {
        key: if id.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}:{id}")
        },
        kind: kind.to_owned(),
        severity,
        title,
        message,
        cluster: true,
    }
}

/// The thresholds the conditions use.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// `alerts.member_lost_after_ms`.
    pub member_lost_after_ms: u64,
    /// The effective `alerts.backup_stale_after_ms` (0: backups are off, never stale).
    pub backup_stale_after_ms: u64,
    /// `alerts.repair_stuck_attempts`.
    pub repair_stuck_attempts: u32,
}

/// The conditions that come from the metadata alone (the same on every machine): read again
/// only when the metadata changed.
pub async fn from_metadata(store: &Store, t: &Thresholds) -> Result<Vec<Condition>, StoreError> {
    let meta = &store.meta;
    let mut out = Vec::new();
    let nodes = meta.nodes().await?;
    let machine = |id: u64| match nodes.iter().find(|n| n.node_id == id) {
        Some(n) => format!("machine {id} ({})", n.name),
        None => format!("machine {id}"),
    };
    for d in meta.disk_states().await? {
        let (kind, severity, what) = match d.state {
            DiskStatus::Down => (
                "disk_down",
                Severity::Warning,
                "is down: its parts cannot be read; they are rebuilt elsewhere if it stays down",
            ),
            DiskStatus::Out => (
                "disk_out",
                Severity::Critical,
                "is out: its parts are being rebuilt elsewhere",
            ),
            _ => continue,
        };
        let reason = if d.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", d.reason)
        };
        out.push(cond(
            kind,
            &d.disk_id.to_string(),
            severity,
            format!("Disk {} on {} {}", d.path, machine(d.node_id), d.state),
            format!("Disk {} on {} {what}{reason}.", d.path, machine(d.node_id)),
        ));
    }
    let damaged = meta.damaged_parts().await?;
    if damaged > 0 {
        out.push(cond(
            "corruption",
            "",
            Severity::Warning,
            format!("{damaged} damaged part(s) found"),
            format!(
                "{damaged} part(s) were found corrupt or unreadable on a readable disk; repair \
                 rewrites them from the other parts (wormfs health, wormfs events)."
            ),
        ));
    }
    let by_tolerance = meta.redundancy().await?;
    let unreadable: u64 = by_tolerance
        .iter()
        .filter(|c| c.tolerance < 0)
        .map(|c| c.segments)
        .sum();
    let at_zero: u64 = by_tolerance
        .iter()
        .filter(|c| c.tolerance == 0)
        .map(|c| c.segments)
        .sum();
    let names = |files: Vec<wormfs_meta::FileAtRisk>| {
        files
            .into_iter()
            .map(|f| f.path)
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Files that cannot be read now (counted once: the query reads every segment).
    let unreadable_files = if unreadable > 0 {
        meta.count_files_at_risk(-1).await?
    } else {
        0
    };
    if unreadable > 0 {
        let count = unreadable_files;
        let some = names(meta.files_at_risk(-1, 3).await?);
        out.push(cond(
            "files_unreadable",
            "",
            Severity::Critical,
            format!("{count} file(s) cannot be read now"),
            format!(
                "{count} file(s) cannot be read until a disk or machine comes back, among them: \
                 {some}."
            ),
        ));
    }
    if at_zero > 0 {
        let count = meta
            .count_files_at_risk(0)
            .await?
            .saturating_sub(unreadable_files);
        if count > 0 {
            let some = names(meta.files_at_risk(0, 3).await?);
            out.push(cond(
                "files_at_risk",
                "",
                Severity::Critical,
                format!("{count} file(s) can survive no more failures"),
                format!(
                    "{count} file(s) would be lost with one more failed disk, among them: {some}. \
                     Repair is rebuilding them (wormfs health)."
                ),
            ));
        }
    }
    let stuck = meta.stuck_repairs(t.repair_stuck_attempts, 10_000).await?;
    if let Some(first) = stuck.first() {
        out.push(cond(
            "repair_stuck",
            "",
            Severity::Warning,
            format!(
                "Repair of {} segment(s) failed {} times or more",
                stuck.len(),
                t.repair_stuck_attempts
            ),
            format!(
                "Repair of {} segment(s) keeps failing; the last error: {} (wormfs repair status).",
                stuck.len(),
                first.last_error
            ),
        ));
    }
    Ok(out)
}

/// The conditions this machine sees now: a lost member (on the leader), no leader, a stale
/// backup. `no_leader_since` is when this machine last knew a leader.
pub async fn from_this_machine(
    store: &Store,
    t: &Thresholds,
    no_leader_since_ms: Option<u64>,
) -> Result<Vec<Condition>, StoreError> {
    let mut out = Vec::new();
    let now = now_ms();
    let me = store.node_id;
    let status = store.consensus.status();
    if let Some(since) = no_leader_since_ms {
        let for_ms = now.saturating_sub(since);
        if for_ms >= t.member_lost_after_ms {
            let mut c = cond(
                "no_leader",
                &me.to_string(),
                Severity::Critical,
                format!("Machine {me} sees no leader"),
                format!(
                    "Machine {me} has known no leader for {} s: nothing can be stored, changed \
                     or repaired until a majority of the voting machines answer each other \
                     (wormfs cluster).",
                    for_ms / 1000
                ),
            );
            c.cluster = false;
            out.push(c);
        }
    }
    if status.role == RaftRole::Leader {
        let nodes = store.meta.nodes().await?;
        let view = store.consensus.view(nodes.clone()).await;
        for m in view.members.iter().filter(|m| m.node_id != me) {
            let silent = m.last_contact_ms.unwrap_or(u64::MAX);
            if silent < t.member_lost_after_ms {
                continue;
            }
            let name = m
                .name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let since = match m.last_contact_ms {
                Some(ms) => format!("for {} s", ms / 1000),
                None => "since the leader started".to_owned(),
            };
            out.push(cond(
                "member_lost",
                &m.node_id.to_string(),
                Severity::Warning,
                format!("Machine {}{name} does not answer", m.node_id),
                format!(
                    "Machine {}{name} has not answered {since}: its disks' parts cannot be read \
                     and it has no say in the cluster. If it is gone for good: wormfs node remove {}.",
                    m.node_id, m.node_id
                ),
            ));
        }
    }
    let b = crate::meta_backup::status_now(store).await;
    if t.backup_stale_after_ms > 0 && b.interval_ms > 0 && b.changes_since > 0 {
        let age = b.last_ms.map(|l| now.saturating_sub(l));
        if age.is_none_or(|a| a >= t.backup_stale_after_ms) {
            let age_text = match age {
                Some(a) => format!("is {} min old", a / 60_000),
                None => "was never written".to_owned(),
            };
            let why = b
                .last_error
                .as_deref()
                .map(|e| format!(" The last attempt failed: {e}."))
                .unwrap_or_default();
            let mut c = cond(
                "backup_stale",
                &me.to_string(),
                Severity::Warning,
                format!("Machine {me}'s metadata backup is stale"),
                format!(
                    "Machine {me}'s newest metadata backup {age_text}, with {} change(s) since.{why}",
                    b.changes_since
                ),
            );
            c.cluster = false;
            out.push(c);
        }
    }
    Ok(out)
}
