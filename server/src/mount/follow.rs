//! Following the node's change feed (`GET /api/v1/changes`, a long poll) and telling the
//! kernel what to forget, so a film committed anywhere in the cluster appears in the mount
//! within a second or two although names and attributes are cached for an hour.
//!
//! While the feed answers, listings are cached (lookups need no request); when it stops, the
//! cache goes and every listing asks the node (so an unreachable node is `EIO`). When it
//! answers again with the same epoch the changes missed come from its ring; from a new epoch
//! (the node restarted) or too far behind, everything the kernel holds is dropped.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use fuser::{INodeNo, Notifier};
use wormfs_meta::changes::TreeChange;

use super::fs::Shared;
use super::tree::Forget;

/// How long one long poll waits for a change.
const POLL_WAIT: Duration = Duration::from_secs(25);
/// How long to wait before asking again after a failed poll.
const RETRY: Duration = Duration::from_secs(1);

/// Follows the feed until `stop` is cancelled.
pub async fn follow(
    shared: Arc<Shared>,
    notifier: Notifier,
    stop: tokio_util::sync::CancellationToken,
) {
    let notifier = Arc::new(notifier);
    let mut epoch = None;
    let mut after = 0;
    let mut lost = false;
    loop {
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            a = shared.remote.changes(epoch, after, POLL_WAIT) => a,
        };
        match answer {
            Ok(r) => {
                if lost {
                    tracing::info!("the node answers again: the mount follows its changes");
                    lost = false;
                }
                let mut forget = Forget::default();
                if r.reset {
                    if epoch.is_some() {
                        tracing::info!(
                            "the node's change feed restarted: every cached name dropped"
                        );
                    }
                    forget = shared.tree.reset();
                } else {
                    for item in &r.changes {
                        match &item.change {
                            TreeChange::Created { path } | TreeChange::Deleted { path } => {
                                merge(&mut forget, shared.tree.changed(path));
                            }
                            TreeChange::Moved { from, to } => {
                                merge(&mut forget, shared.tree.changed(from));
                                merge(&mut forget, shared.tree.changed(to));
                            }
                            TreeChange::Reset => merge(&mut forget, shared.tree.reset()),
                        }
                    }
                }
                epoch = Some(r.epoch);
                after = r.seq;
                tell_kernel(&notifier, forget).await;
                shared.tree.set_in_sync(true);
            }
            Err(e) => {
                shared.tree.set_in_sync(false);
                if !lost {
                    tracing::warn!(
                        "the node's change feed does not answer ({e}): listings and reads ask \
                         the node each time, and fail with EIO while it cannot answer"
                    );
                    lost = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}

fn merge(into: &mut Forget, more: Forget) {
    into.entries.extend(more.entries);
    into.inodes.extend(more.inodes);
}

/// Sends the invalidations (blocking writes to /dev/fuse, off the runtime's threads).
async fn tell_kernel(notifier: &Arc<Notifier>, forget: Forget) {
    if forget.entries.is_empty() && forget.inodes.is_empty() {
        return;
    }
    let notifier = notifier.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for (parent, name) in forget.entries {
            // ENOENT: the kernel did not hold that name; nothing to drop.
            let _ = notifier.inval_entry(INodeNo(parent), OsStr::new(&name));
        }
        // Offset -1: the attributes only (a file's bytes never change; its page cache stays).
        for ino in forget.inodes {
            let _ = notifier.inval_inode(INodeNo(ino), -1, 0);
        }
    })
    .await;
}
