//! Group commit: the writes that arrive while this node's previous write is being committed
//! wait for it, then go together as one `CommandV1::Batch` log entry: one log fsync, one
//! replication round and one apply transaction for all of them. Each write still gets its own
//! outcome (a conflict on one file fails only that file). A write that finds nothing in flight
//! goes at once, alone and unwrapped, so a lone write is as fast as before; under load the
//! batches grow by themselves with the commit latency (docs/performance.md, "Many small
//! files").

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use wormfs_meta::command::{CommandV1, Outcome};
use wormfs_parts::crash_point::crash_point;

use super::{Consensus, ConsensusError};

/// The most commands in one batch (a batch's entry stays well under the peer protocol's
/// message limit: a small file's commit is about 1 KiB).
pub(super) const MAX_BATCH: usize = 256;
/// The most bytes of commands (as the log encodes them) in one batch: a large file's commit,
/// with its many segments, goes alone or with few others, and an entry stays far below the
/// peer protocol's message limit.
pub(super) const MAX_BATCH_BYTES: usize = 1 << 20;

/// A command's size as the log stores it (JSON).
fn encoded_len(cmd: &CommandV1) -> usize {
    serde_json::to_vec(cmd).map_or(MAX_BATCH_BYTES, |v| v.len())
}

/// Log entries of this node's writes in flight at once. One: while it is committed, every
/// write that arrives waits and goes in the next batch. Two (the next entry appended while
/// the last was applied) split the batches that four WebDAV clients form into an entry per
/// file, and measured slower: with one, `put` 998 and 895 files/s against 864 and 809, WebDAV
/// four at a time 376 and 394 against 365 and 344, in alternating runs, with 10-20% less CPU
/// per file (docs/performance.md, "Many small files").
pub(super) const IN_FLIGHT: usize = 1;

/// A write waiting for its turn.
pub(super) struct Pending {
    cmd: CommandV1,
    reply: oneshot::Sender<Result<Outcome, ConsensusError>>,
}

/// The queue writes wait in.
pub(super) type Queue = mpsc::UnboundedSender<Pending>;

/// Queues `cmd` and waits for its outcome.
pub(super) async fn submit(queue: &Queue, cmd: CommandV1) -> Result<Outcome, ConsensusError> {
    let (reply, rx) = oneshot::channel();
    let stopped = || ConsensusError::Fatal("this node is shutting down".into());
    queue.send(Pending { cmd, reply }).map_err(|_| stopped())?;
    rx.await.map_err(|_| stopped())?
}

/// The loop that commits the queue: one write (or batch) in flight at a time, the next batch
/// being everything that queued meanwhile. Ends on shutdown; the writes still queued are then
/// answered "shutting down" (their senders are dropped).
pub(super) async fn run(
    consensus: Consensus,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    shutdown: CancellationToken,
) {
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    // A command that did not fit the last batch: it opens the next.
    let mut carried: Option<(Pending, usize)> = None;
    loop {
        let first = match carried.take() {
            Some(c) => c,
            None => tokio::select! {
                _ = shutdown.cancelled() => return,
                p = rx.recv() => match p {
                    Some(p) => {
                        let n = encoded_len(&p.cmd);
                        (p, n)
                    }
                    None => return,
                },
            },
        };
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.1;
        let mut batch = vec![first.0];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => {
                    let n = encoded_len(&p.cmd);
                    if bytes + n > MAX_BATCH_BYTES {
                        carried = Some((p, n));
                        break;
                    }
                    bytes += n;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let span = tracing::debug_span!("group_commit", commands = batch.len());
        let consensus = consensus.clone();
        tokio::spawn(
            async move {
                commit(&consensus, batch).await;
                drop(slot);
            }
            .instrument(span),
        );
    }
}

/// Commits one batch and answers each of its writes.
async fn commit(consensus: &Consensus, mut batch: Vec<Pending>) {
    metrics::counter!(crate::metrics::RAFT_WRITES).increment(1);
    metrics::counter!(crate::metrics::RAFT_WRITE_COMMANDS).increment(batch.len() as u64);
    if batch.len() == 1 {
        let Some(p) = batch.pop() else { return };
        let _ = p.reply.send(consensus.write_entry(p.cmd).await);
        return;
    }
    let (cmds, replies): (Vec<CommandV1>, Vec<_>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let n = cmds.len();
    // A batch formed and not yet proposed: none of its writes may be acknowledged, none of
    // its files visible after a restart.
    crash_point("group-commit-before-write");
    let result = consensus
        .write_entry(CommandV1::Batch { commands: cmds })
        .await;
    // Applied here, not yet answered: every file in it is whole after a restart, though none
    // was acknowledged.
    crash_point("group-commit-after-write");
    match result {
        Ok(Outcome::Batch(outcomes)) if outcomes.len() == n => {
            for (reply, o) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(o));
            }
        }
        // The whole batch refused (it cannot be, as built here; said to each write).
        Ok(Outcome::Rejected(r)) => {
            for reply in replies {
                let _ = reply.send(Ok(Outcome::Rejected(r.clone())));
            }
        }
        Ok(other) => {
            let e = format!("a batch of {n} commands was answered {other:?}");
            tracing::error!("{e}");
            for reply in replies {
                let _ = reply.send(Err(ConsensusError::Fatal(e.clone())));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
