//! The cluster's events: what happened to disks, machines, data and the metadata itself, in
//! the replicated metadata with a bounded history (docs/operations.md, "Events").
//!
//! Most events are written by the apply of the command that causes them, from what the
//! database held just before ([`before`]) and the command's outcome ([`after`]): a disk's state
//! changing, a machine joining or being removed, a disk added, corruption found by a read or a
//! scrub, a damaged part rewritten by repair. Every machine applies the same commands to the
//! same database, so every machine holds the same events with the same ids. What no command
//! says (a leader change, a metadata backup written) is proposed as a `RecordEvent`.
//! Only the newest [`EVENT_HISTORY`] events are kept.

use serde::{Deserialize, Serialize};
use sqlx::SqliteConnection;

use crate::command::{CommandV1, DiskStatus, EventSeverity, Outcome, PartRef, SegmentRef};
use crate::error::{DbContext, Res};
use crate::query_repair::path_of_file_in;
use crate::row::Cols;
use wormfs_parts::ids::{DiskId, NodeId};

/// How many events the metadata keeps (the oldest are dropped beyond it).
pub const EVENT_HISTORY: i64 = 10_000;

/// The longest message kept (longer ones are cut at a character boundary).
const MAX_MESSAGE: usize = 1000;

/// One event, as the API and the admin page show it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventRecord {
    /// Increasing; never reused.
    pub id: u64,
    /// When (ms since epoch, the proposer's clock).
    pub at_ms: u64,
    /// What happened: `disk_down`, `disk_out`, `disk_back`, `disk_draining`, `disk_drained`,
    /// `disk_removed`, `disk_added`, `member_joined`, `member_left`, `corruption_found`,
    /// `corruption_repaired`, `leader_changed`, `backup_written`, ...
    pub kind: String,
    /// How much it matters.
    pub severity: EventSeverity,
    /// The machine it is about.
    pub node: Option<NodeId>,
    /// The disk it is about.
    pub disk: Option<String>,
    /// The file it is about.
    pub path: Option<String>,
    /// In words.
    pub message: String,
}

/// What an event-causing command's apply needs from before it ran.
pub(crate) enum Before {
    /// Nothing to remember (the command causes no event).
    Nothing,
    /// A disk's state and where it is, if the disk is known.
    Disk(Option<DiskRow>),
    /// Whether the machine was registered.
    Node(bool),
    /// Parts reported damaged that were not marked so yet.
    NewlyDamaged(Vec<PartRef>),
    /// How many of a segment's parts were marked damaged.
    DamagedParts(SegmentRef, i64),
}

/// A disk's row, for event messages.
pub(crate) struct DiskRow {
    state: String,
    node: NodeId,
    path: String,
}

async fn disk_row(c: &mut SqliteConnection, disk: DiskId) -> Res<Option<DiskRow>> {
    let r = sqlx::query("SELECT state, node_id, path FROM disks WHERE disk_id = ?")
        .bind(disk.to_string())
        .fetch_optional(&mut *c)
        .await
        .db("read a disk for an event")?;
    r.map(|r| {
        let r = Cols::new(&r, "disks").key(format!("disk_id {disk}"));
        Ok(DiskRow {
            state: r.col(0, "state")?,
            node: r.id_bits(1, "node_id")?,
            path: r.col(2, "path")?,
        })
    })
    .transpose()
}

async fn node_known(c: &mut SqliteConnection, node: NodeId) -> Res<bool> {
    let r = sqlx::query("SELECT 1 FROM nodes WHERE node_id = ?")
        .bind(node as i64)
        .fetch_optional(&mut *c)
        .await
        .db("read a node for an event")?;
    Ok(r.is_some())
}

async fn damaged_parts(c: &mut SqliteConnection, s: &SegmentRef) -> Res<i64> {
    let r = sqlx::query("SELECT COUNT(*) FROM parts WHERE file_id = ? AND seg = ? AND state = 2")
        .bind(s.file_id.to_bytes().to_vec())
        .bind(i64::from(s.seg))
        .fetch_one(&mut *c)
        .await
        .db("count a segment's damaged parts")?;
    Cols::new(&r, "parts")
        .key(format!("segment {s}"))
        .int(0, "count")
}

/// Whether the metadata places `p` on its disk, not yet marked damaged.
async fn part_newly_damaged(c: &mut SqliteConnection, p: &PartRef) -> Res<bool> {
    let r = sqlx::query(
        "SELECT 1 FROM parts WHERE file_id = ? AND seg = ? AND part = ? AND disk_id = ? AND state != 2",
    )
    .bind(p.file_id.to_bytes().to_vec())
    .bind(i64::from(p.seg))
    .bind(i64::from(p.part))
    .bind(p.disk_id.to_string())
    .fetch_optional(&mut *c)
    .await
    .db("read a part's state")?;
    Ok(r.is_some())
}

/// Reads what [`after`] will need, before `cmd` is applied.
pub(crate) async fn before(c: &mut SqliteConnection, cmd: &CommandV1) -> Res<Before> {
    Ok(match cmd {
        CommandV1::SetDiskState { disk_id, .. } | CommandV1::RegisterDisk { disk_id, .. } => {
            Before::Disk(disk_row(c, *disk_id).await?)
        }
        CommandV1::RegisterNode { node_id, .. } | CommandV1::RemoveNode { node_id, .. } => {
            Before::Node(node_known(c, *node_id).await?)
        }
        CommandV1::QueueRepair { damaged, .. } if !damaged.is_empty() => {
            let mut new = Vec::new();
            for p in damaged {
                if part_newly_damaged(c, p).await? {
                    new.push(*p);
                }
            }
            Before::NewlyDamaged(new)
        }
        CommandV1::CommitRepair { segment, .. } => {
            Before::DamagedParts(*segment, damaged_parts(c, segment).await?)
        }
        _ => Before::Nothing,
    })
}

/// An event about to be written.
struct NewEvent<'a> {
    kind: &'a str,
    severity: EventSeverity,
    node: Option<NodeId>,
    disk: Option<String>,
    path: Option<String>,
    message: String,
    at_ms: u64,
}

/// Records the events `cmd` caused (nothing when it was refused).
pub(crate) async fn after(
    c: &mut SqliteConnection,
    cmd: &CommandV1,
    before: Before,
    outcome: &Outcome,
) -> Res<()> {
    if matches!(outcome, Outcome::Rejected(_)) {
        return Ok(());
    }
    let event = match (cmd, before) {
        (
            CommandV1::SetDiskState {
                disk_id,
                state,
                reason,
                time_ms,
            },
            Before::Disk(Some(old)),
        ) if old.state != state.as_str() => {
            let (kind, severity, what) = match state {
                DiskStatus::Up => ("disk_back", EventSeverity::Info, "is back in use"),
                DiskStatus::Down => ("disk_down", EventSeverity::Warning, "is down"),
                DiskStatus::Out => (
                    "disk_out",
                    EventSeverity::Critical,
                    "is out: its parts are being rebuilt elsewhere",
                ),
                DiskStatus::Draining => ("disk_draining", EventSeverity::Info, "is draining"),
                DiskStatus::Drained => (
                    "disk_drained",
                    EventSeverity::Info,
                    "is drained: it holds nothing WormFS needs",
                ),
                DiskStatus::Removed => ("disk_removed", EventSeverity::Warning, "was removed"),
            };
            let reason = if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            };
            let message = format!(
                "disk {} on machine {} {what}{reason}; it was {}",
                old.path, old.node, old.state
            );
            Some(NewEvent {
                kind,
                severity,
                node: Some(old.node),
                disk: Some(disk_id.to_string()),
                path: None,
                message,
                at_ms: *time_ms,
            })
        }
        (
            CommandV1::RegisterDisk {
                disk_id,
                node_id,
                path,
                time_ms,
                ..
            },
            Before::Disk(None),
        ) => {
            let message = format!("disk {path} on machine {node_id} was added");
            Some(NewEvent {
                kind: "disk_added",
                severity: EventSeverity::Info,
                node: Some(*node_id),
                disk: Some(disk_id.to_string()),
                path: None,
                message,
                at_ms: *time_ms,
            })
        }
        (
            CommandV1::RegisterNode {
                node_id,
                name,
                api_addr,
                time_ms,
                ..
            },
            Before::Node(false),
        ) => {
            let message = format!("machine {node_id} ({name}, {api_addr}) joined the cluster");
            Some(NewEvent {
                kind: "member_joined",
                severity: EventSeverity::Info,
                node: Some(*node_id),
                disk: None,
                path: None,
                message,
                at_ms: *time_ms,
            })
        }
        (CommandV1::RemoveNode { node_id, time_ms }, Before::Node(true)) => {
            let message = format!(
                "machine {node_id} was removed from the cluster; its disks' parts are rebuilt elsewhere"
            );
            Some(NewEvent {
                kind: "member_left",
                severity: EventSeverity::Warning,
                node: Some(*node_id),
                disk: None,
                path: None,
                message,
                at_ms: *time_ms,
            })
        }
        (
            CommandV1::QueueRepair {
                reason, time_ms, ..
            },
            Before::NewlyDamaged(parts),
        ) if !parts.is_empty() => {
            let first = parts[0];
            let path = path_of_file_in(c, first.file_id).await?;
            let disk = disk_row(c, first.disk_id).await?;
            let on = disk
                .as_ref()
                .map(|d| format!(" on disk {} of machine {}", d.path, d.node))
                .unwrap_or_default();
            let what = path.as_deref().unwrap_or("a file that no longer exists");
            let more = match parts.len() {
                1 => String::new(),
                n => format!(" and {} more part(s)", n - 1),
            };
            let message = format!(
                "corruption found: part {} of segment {} of {what}{on}{more} ({reason}); queued for repair",
                first.part, first.seg
            );
            Some(NewEvent {
                kind: "corruption_found",
                severity: EventSeverity::Warning,
                node: disk.map(|d| d.node),
                disk: Some(first.disk_id.to_string()),
                path,
                message,
                at_ms: *time_ms,
            })
        }
        (CommandV1::CommitRepair { time_ms, .. }, Before::DamagedParts(segment, was))
            if was > 0 =>
        {
            let now = damaged_parts(c, &segment).await?;
            if now >= was {
                return Ok(());
            }
            let path = path_of_file_in(c, segment.file_id).await?;
            let what = path.as_deref().unwrap_or("a file that no longer exists");
            let message = format!(
                "corruption repaired: {} damaged part(s) of segment {} of {what} rewritten",
                was - now,
                segment.seg
            );
            Some(NewEvent {
                kind: "corruption_repaired",
                severity: EventSeverity::Info,
                node: None,
                disk: None,
                path,
                message,
                at_ms: *time_ms,
            })
        }
        _ => None,
    };
    if let Some(e) = event {
        record(c, e).await?;
    }
    Ok(())
}

/// `RecordEvent`: an event no other command records. The kind is a stable name: 1 to 64
/// characters of `a-z`, `0-9` and `_`.
pub(crate) async fn record_event(
    c: &mut SqliteConnection,
    kind: &str,
    severity: EventSeverity,
    node: Option<NodeId>,
    message: &str,
    time_ms: u64,
) -> Res<Outcome> {
    let valid = !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Ok(Outcome::Rejected(crate::command::Rejection::Invalid(
            format!("event kind {kind:?}: use 1 to 64 of a-z, 0-9 and _"),
        )));
    }
    record(
        c,
        NewEvent {
            kind,
            severity,
            node,
            disk: None,
            path: None,
            message: message.to_owned(),
            at_ms: time_ms,
        },
    )
    .await?;
    Ok(Outcome::Done)
}

/// Writes one event and drops those beyond the history's length.
async fn record(c: &mut SqliteConnection, e: NewEvent<'_>) -> Res<()> {
    let mut message = e.message;
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    let id = sqlx::query(
        "INSERT INTO events (at_ms, kind, severity, node, disk, path, message) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(e.at_ms as i64)
    .bind(e.kind)
    .bind(e.severity.as_str())
    .bind(e.node.map(|n| n as i64))
    .bind(e.disk)
    .bind(e.path)
    .bind(message)
    .execute(&mut *c)
    .await
    .db("record an event")?
    .last_insert_rowid();
    sqlx::query("DELETE FROM events WHERE id <= ?")
        .bind(id - EVENT_HISTORY)
        .execute(&mut *c)
        .await
        .db("drop old events")?;
    Ok(())
}
