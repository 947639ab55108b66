//! What an applied command changed in the tree, for those who cache it or tell others: the FUSE
//! mount drops its cached entries, the media-server notifier asks for a scan of the folders.
//!
//! Derived from the command and its outcome after the transaction committed, on every node (each
//! applies every command), so any node can follow the whole cluster's changes. Nothing here is
//! stored: a node that restarts, or installs a snapshot, says [`TreeChange::Reset`].

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::command::{CommandV1, Outcome};

/// One change to the tree. Paths are absolute, as the commands carry them; ancestors created on
/// the way (`mkdir -p`, a restore into a missing folder) are not listed one by one: a consumer
/// that caches listings treats every ancestor of a created path as changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TreeChange {
    /// A file was committed (new, or replacing one), copied or restored, or a directory made.
    Created {
        /// Where (a file or a directory: a consumer that must know asks the metadata).
        path: String,
    },
    /// A file or a directory (with everything below it) lost its name.
    Deleted {
        /// Where it was.
        path: String,
    },
    /// A file or a directory (with everything below it) was renamed; whatever was at `to` is
    /// gone.
    Moved {
        /// The old path.
        from: String,
        /// The new path.
        to: String,
    },
    /// Anything may have changed (a snapshot was installed, bytes were appended to a file, or
    /// the follower fell behind): drop every cached entry.
    Reset,
}

/// The changes one applied batch of log entries made, in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeBatch {
    /// The last log index of the batch (0 for a snapshot or a reset).
    pub log_index: u64,
    /// The changes.
    pub changes: Vec<TreeChange>,
}

/// How many batches a slow subscriber may fall behind before it is told to reset.
pub(crate) const CHANGE_CHANNEL: usize = 1024;

/// A sender of change batches (kept by [`crate::MetaDb`]).
pub(crate) fn channel() -> broadcast::Sender<std::sync::Arc<ChangeBatch>> {
    broadcast::channel(CHANGE_CHANNEL).0
}

/// What `cmd`, applied with `outcome`, changed in the tree (nothing for a rejected command or
/// one that touches no name).
pub fn tree_changes(cmd: &CommandV1, outcome: &Outcome) -> Vec<TreeChange> {
    if matches!(outcome, Outcome::Rejected(_)) {
        return Vec::new();
    }
    let created = |path: &str| {
        vec![TreeChange::Created {
            path: path.to_owned(),
        }]
    };
    match cmd {
        CommandV1::Batch { commands } => match outcome {
            Outcome::Batch(outcomes) => commands
                .iter()
                .zip(outcomes)
                .flat_map(|(c, o)| tree_changes(c, o))
                .collect(),
            _ => Vec::new(),
        },
        CommandV1::Mkdir { path, .. } => created(path),
        CommandV1::CommitFile { .. } | CommandV1::CommitSmallFile { .. } => match outcome {
            // The rename rule may have chosen another name: the outcome has the final one.
            Outcome::Committed { path, .. } => created(path),
            _ => Vec::new(),
        },
        CommandV1::AppendSegments { .. } => vec![TreeChange::Reset],
        CommandV1::Remove { path, .. } | CommandV1::RemoveTree { path, .. } => {
            vec![TreeChange::Deleted { path: path.clone() }]
        }
        CommandV1::Rename { from, to, .. } | CommandV1::MoveTree { from, to, .. } => {
            vec![TreeChange::Moved {
                from: from.clone(),
                to: to.clone(),
            }]
        }
        CommandV1::Copy { to, .. } => created(to),
        CommandV1::CopyTree { to, .. } => created(to),
        CommandV1::RestoreTrash { to, .. } => created(to),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Rejection;

    #[test]
    fn rejected_commands_change_nothing() {
        let cmd = CommandV1::Remove {
            path: "/a".into(),
            recursive: false,
            time_ms: 1,
        };
        assert_eq!(
            tree_changes(&cmd, &Outcome::Rejected(Rejection::NotFound("/a".into()))),
            vec![]
        );
        assert_eq!(
            tree_changes(&cmd, &Outcome::Done),
            vec![TreeChange::Deleted { path: "/a".into() }]
        );
    }

    #[test]
    fn moves_and_mkdirs_name_their_paths() {
        let mv = CommandV1::MoveTree {
            from: "/a".into(),
            to: "/b/c".into(),
            replace: true,
            time_ms: 1,
        };
        assert_eq!(
            tree_changes(&mv, &Outcome::Done),
            vec![TreeChange::Moved {
                from: "/a".into(),
                to: "/b/c".into()
            }]
        );
        let mk = CommandV1::Mkdir {
            path: "/x/y".into(),
            parents: true,
            time_ms: 1,
        };
        assert_eq!(
            tree_changes(&mk, &Outcome::Done),
            vec![TreeChange::Created {
                path: "/x/y".into()
            }]
        );
    }

    #[test]
    fn the_wire_form_is_tagged_by_kind() {
        let v = serde_json::to_value(TreeChange::Moved {
            from: "/a".into(),
            to: "/b".into(),
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"kind": "moved", "from": "/a", "to": "/b"})
        );
    }
}
