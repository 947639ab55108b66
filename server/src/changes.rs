//! The tree's changes as `GET /api/v1/changes` serves them: the metadata's change batches
//! (every node applies every command, so each node sees the whole cluster's changes) numbered
//! in the order this node applied them and kept in a ring, for clients that cache the tree (the
//! FUSE mount) to long-poll.
//!
//! The numbers are this process's own: each start picks a new random `epoch`, and a client
//! whose epoch differs, or who asks for changes older than the ring holds, is told to reset
//! (drop everything it cached) rather than being given a gap.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use wormfs_meta::changes::TreeChange;
use wormfs_meta::MetaDb;

use crate::api::types::{ChangeItem, ChangesResponse};

/// How many changes the ring keeps.
pub const RING: usize = 10_000;

/// The longest a long poll may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// This node's numbered changes.
pub struct ChangeFeed {
    epoch: u64,
    ring: Mutex<Ring>,
    /// The newest sequence number, for long polls to wait on.
    latest: watch::Sender<u64>,
    /// Set at shutdown: long polls answer at once.
    closing: watch::Sender<bool>,
}

struct Ring {
    /// The changes, oldest first, with their numbers.
    items: VecDeque<(u64, TreeChange)>,
    /// The number the next change gets.
    next: u64,
}

impl ChangeFeed {
    /// Follows `meta`'s changes from now on (a task that ends when the node stops).
    pub fn start(meta: &MetaDb) -> Arc<Self> {
        let feed = Arc::new(ChangeFeed {
            epoch: rand::random::<u64>() >> 12, // exact in JSON (below 2^53) for any client
            ring: Mutex::new(Ring {
                items: VecDeque::new(),
                next: 1,
            }),
            latest: watch::channel(0).0,
            closing: watch::channel(false).0,
        });
        let mut rx = meta.subscribe_changes();
        let weak = Arc::downgrade(&feed);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                loop {
                    let changes = match rx.recv().await {
                        Ok(batch) => batch.changes.clone(),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::debug!("change feed fell {n} batches behind: reset");
                            vec![TreeChange::Reset]
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    let Some(feed) = weak.upgrade() else { return };
                    feed.push(changes);
                }
            },
            tracing::info_span!("change_feed"),
        ));
        feed
    }

    fn push(&self, changes: Vec<TreeChange>) {
        let newest = {
            let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            for c in changes {
                let seq = ring.next;
                ring.next += 1;
                ring.items.push_back((seq, c));
            }
            while ring.items.len() > RING {
                ring.items.pop_front();
            }
            ring.next - 1
        };
        self.latest.send_replace(newest);
    }

    /// Ends every long poll now and from now on (shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// The changes after `after` in `epoch`, waiting up to `wait` (at most [`MAX_WAIT`]) for
    /// one when there is none yet. A client without an epoch, from another epoch or older than
    /// the ring is told to reset, with the newest number to follow from.
    pub async fn since(&self, epoch: Option<u64>, after: u64, wait: Duration) -> ChangesResponse {
        if epoch != Some(self.epoch) {
            return self.reset();
        }
        let mut latest = self.latest.subscribe();
        let mut closing = self.closing.subscribe();
        if *latest.borrow_and_update() <= after && !*closing.borrow_and_update() {
            let _ = tokio::time::timeout(wait.min(MAX_WAIT), async {
                tokio::select! {
                    _ = latest.wait_for(|&n| n > after) => {}
                    _ = closing.wait_for(|&c| c) => {}
                }
            })
            .await;
        }
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let newest = ring.next - 1;
        if after > newest {
            // A number this epoch never gave: the client is confused; start it over.
            drop(ring);
            return self.reset();
        }
        let oldest = ring.items.front().map_or(ring.next, |(s, _)| *s);
        if after + 1 < oldest {
            drop(ring);
            return self.reset();
        }
        ChangesResponse {
            epoch: self.epoch,
            seq: newest,
            reset: false,
            changes: ring
                .items
                .iter()
                .filter(|(s, _)| *s > after)
                .map(|(seq, change)| ChangeItem {
                    seq: *seq,
                    change: change.clone(),
                })
                .collect(),
        }
    }

    fn reset(&self) -> ChangesResponse {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ChangesResponse {
            epoch: self.epoch,
            seq: ring.next - 1,
            reset: true,
            changes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed() -> ChangeFeed {
        ChangeFeed {
            epoch: 7,
            ring: Mutex::new(Ring {
                items: VecDeque::new(),
                next: 1,
            }),
            latest: watch::channel(0).0,
            closing: watch::channel(false).0,
        }
    }

    fn created(p: &str) -> TreeChange {
        TreeChange::Created { path: p.into() }
    }

    #[tokio::test]
    async fn a_client_follows_then_is_reset_past_the_ring() {
        let f = feed();
        let first = f.since(None, 0, Duration::ZERO).await;
        assert!(first.reset);
        assert_eq!((first.epoch, first.seq), (7, 0));
        f.push(vec![created("/a"), created("/b")]);
        let got = f.since(Some(7), 0, Duration::ZERO).await;
        assert!(!got.reset);
        assert_eq!(got.seq, 2);
        assert_eq!(got.changes.len(), 2);
        let got = f.since(Some(7), 1, Duration::ZERO).await;
        assert_eq!(got.changes.len(), 1);
        assert_eq!(got.changes[0].change, created("/b"));
        // Another epoch (the node restarted) resets.
        assert!(f.since(Some(8), 2, Duration::ZERO).await.reset);
        // Past the ring: reset.
        f.push((0..RING + 5).map(|i| created(&format!("/f{i}"))).collect());
        let got = f.since(Some(7), 2, Duration::ZERO).await;
        assert!(got.reset);
        assert_eq!(got.seq, (RING + 7) as u64);
    }

    #[tokio::test]
    async fn a_long_poll_wakes_on_a_change() {
        let f = Arc::new(feed());
        let waiting = {
            let f = f.clone();
            tokio::spawn(async move { f.since(Some(7), 0, Duration::from_secs(20)).await })
        };
        // The poll must not answer before the change exists: push once it waits.
        tokio::task::yield_now().await;
        f.push(vec![created("/new")]);
        let got = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the long poll woke")
            .unwrap();
        assert_eq!(got.changes.len(), 1);
    }

    #[tokio::test]
    async fn closing_ends_a_long_poll() {
        let f = Arc::new(feed());
        let waiting = {
            let f = f.clone();
            tokio::spawn(async move { f.since(Some(7), 0, Duration::from_secs(20)).await })
        };
        tokio::task::yield_now().await;
        f.close();
        let got = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the long poll ended")
            .unwrap();
        assert!(got.changes.is_empty());
    }
}
