//! openraft storage on SQLite: the durable log store and the state machine with file snapshots.
//!
//! The log lives in `raft-log.db` (synchronous=FULL: an append is on disk before openraft is told
//! it is flushed). The state machine is the namespace database itself: each batch of entries is
//! applied in one transaction that also records the last applied log id and the membership, not
//! fsynced on its own (`crate::NAMESPACE_SYNC`: the log is what is durable). A snapshot makes the
//! namespace durable, then is a `VACUUM INTO` copy of it, fsynced and renamed into `snapshots/`,
//! and carries its own last log id and membership inside it.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};

use anyhow::Context;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use sqlx::sqlite::SqlitePool;
use sqlx::SqlSafeStr;
use tokio::io::AsyncSeekExt;

use super::apply::{apply_command, kv_set};
use super::{migrator, open_pool, MetaDb, RAFT_LOG_SQL};
use crate::command::{Command, Outcome};
use crate::error::{db_error, DbContext, MetaError};
use crate::raft_types::TypeConfig;
use crate::row::Cols;
use wormfs_parts::fsutil::sync_dir;

type NodeId = u64;
type SErr = StorageError<NodeId>;

fn io_err<E: std::error::Error + 'static>(f: fn(AnyError) -> StorageIOError<NodeId>, e: E) -> SErr {
    f(AnyError::new(&e)).into()
}
fn any_err(f: fn(AnyError) -> StorageIOError<NodeId>, e: anyhow::Error) -> SErr {
    f(AnyError::error(format!("{e:#}"))).into()
}

/// A file in the metadata folder that says the state machine failed: at the next start the
/// folder is set aside and the node resyncs from the cluster.
pub const RESYNC_MARKER: &str = "RESYNC";

/// The Raft log and vote, in their own SQLite file.
#[derive(Clone)]
pub struct LogStore {
    pool: SqlitePool,
    /// The entries last written, as they are in the database: openraft reads each entry back
    /// to apply it (and to send it to the followers) right after appending it.
    recent: std::sync::Arc<std::sync::Mutex<RecentEntries>>,
}

/// At most this many of the last written entries are kept in memory ([`RecentEntries`]).
const RECENT_ENTRIES: usize = 256;

/// And at most this many bytes of them (as stored: a batch of commits may be 1 MiB).
const RECENT_BYTES: usize = 8 << 20;

/// The last entries written to the log, by index, exactly as stored (with their stored size);
/// cleared where a write failed, truncated and purged with the log.
#[derive(Default)]
struct RecentEntries {
    entries: std::collections::BTreeMap<u64, (Entry<TypeConfig>, usize)>,
    bytes: usize,
}

impl RecentEntries {
    /// The entries `start..end` if every one of them is here.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry<TypeConfig>>> {
        if start >= end {
            return Some(Vec::new());
        }
        let got: Vec<Entry<TypeConfig>> = self
            .entries
            .range(start..end)
            .map(|(_, (e, _))| e.clone())
            .collect();
        (got.len() as u64 == end - start).then_some(got)
    }

    fn written(&mut self, entries: Vec<(Entry<TypeConfig>, usize)>) {
        for (e, len) in entries {
            self.bytes += len;
            if let Some((_, old)) = self.entries.insert(e.log_id.index, (e, len)) {
                self.bytes -= old;
            }
        }
        while self.entries.len() > RECENT_ENTRIES || self.bytes > RECENT_BYTES {
            match self.entries.pop_first() {
                Some((_, (_, len))) => self.bytes -= len,
                None => break,
            }
        }
    }

    /// Forgets the entries from `index` on (a truncation, or a write that failed).
    fn forget_from(&mut self, index: u64) {
        let gone = self.entries.split_off(&index);
        self.bytes -= gone.values().map(|(_, len)| len).sum::<usize>();
    }

    /// Forgets the entries up to `index` (a purge).
    fn forget_up_to(&mut self, index: u64) {
        let kept = self.entries.split_off(&index.saturating_add(1));
        let gone = std::mem::replace(&mut self.entries, kept);
        self.bytes -= gone.values().map(|(_, len)| len).sum::<usize>();
    }
}

impl LogStore {
    /// Opens (creating if needed) the log database at `path`.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let pool = open_pool(path, 2).await?;
        migrator(2, "raft_log", RAFT_LOG_SQL)
            .run(&pool)
            .await
            .with_context(|| format!("migrate {}", path.display()))?;
        Ok(Self {
            pool,
            recent: Default::default(),
        })
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentEntries> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn state_get<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, SErr> {
        let row = sqlx::query("SELECT value FROM log_state WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| io_err(StorageIOError::read, e))?;
        row.map(|r| {
            Cols::new(&r, "log_state")
                .key(format!("key {key}"))
                .json(0, "value")
        })
        .transpose()
        .map_err(|e| io_err(StorageIOError::read, e))
    }

    async fn state_set<T: serde::Serialize>(&self, key: &str, v: &T) -> Result<(), SErr> {
        let json = serde_json::to_string(v).map_err(|e| io_err(StorageIOError::write, e))?;
        sqlx::query("INSERT INTO log_state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(json)
            .execute(&self.pool)
            .await
            .map_err(|e| io_err(StorageIOError::write, e))?;
        Ok(())
    }

    /// Closes the database.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Writes `entries` (replacing any at the same indexes) in one transaction, on disk when it
    /// returns (synchronous=FULL). Raft's `append`, and the offline forced recovery.
    pub(super) async fn write_entries(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<(), SErr> {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let Some(first) = entries.first().map(|e| e.log_id.index) else {
            return Ok(());
        };
        let res = insert_entries(&self.pool, &entries).await;
        let mut recent = self.recent();
        match res {
            Ok(lens) => {
                recent.written(entries.into_iter().zip(lens).collect());
                Ok(())
            }
            // What the database holds from `first` on is not known: read it from there.
            Err(e) => {
                recent.forget_from(first);
                Err(e)
            }
        }
    }
}

/// Rows in one `INSERT` of log entries (two bound values each, far below SQLite's limit).
const LOG_ROWS_PER_INSERT: usize = 128;

/// Writes `entries` atomically; their stored sizes. Up to [`LOG_ROWS_PER_INSERT`] entries are
/// one statement, atomic by itself, with no transaction around it: each statement and each
/// `BEGIN` and `COMMIT` is a round trip to the connection's thread, and openraft usually
/// appends one entry at a time. More go in one transaction.
async fn insert_entries(
    pool: &SqlitePool,
    entries: &[Entry<TypeConfig>],
) -> Result<Vec<usize>, SErr> {
    let werr = |e: sqlx::Error| io_err(StorageIOError::write_logs, e);
    let mut rows = Vec::with_capacity(entries.len());
    for e in entries {
        let json = serde_json::to_string(e).map_err(|e| io_err(StorageIOError::write_logs, e))?;
        rows.push((e.log_id.index as i64, json));
    }
    if rows.len() <= LOG_ROWS_PER_INSERT {
        insert_log_rows(pool, &rows).await.map_err(werr)?;
    } else {
        let mut tx = pool.begin().await.map_err(werr)?;
        for chunk in rows.chunks(LOG_ROWS_PER_INSERT) {
            insert_log_rows(&mut *tx, chunk).await.map_err(werr)?;
        }
        tx.commit().await.map_err(werr)?;
    }
    Ok(rows.iter().map(|(_, json)| json.len()).collect())
}

/// One `INSERT OR REPLACE` of `rows` (index, entry as JSON) into the log.
async fn insert_log_rows<'c>(
    conn: impl sqlx::Executor<'c, Database = sqlx::Sqlite>,
    rows: &[(i64, String)],
) -> Result<(), sqlx::Error> {
    let mut sql = String::from("INSERT OR REPLACE INTO log (idx, entry) VALUES (?, ?)");
    for _ in 1..rows.len() {
        sql.push_str(", (?, ?)");
    }
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (idx, json) in rows {
        q = q.bind(*idx).bind(json.as_str());
    }
    q.execute(conn).await?;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => x.saturating_add(1),
            Bound::Excluded(x) => *x,
            Bound::Unbounded => u64::MAX,
        };
        // Indexes are stored as i64; none is above i64::MAX, so clamping loses nothing (and a
        // start above it must not wrap to a negative bound that matches every entry).
        let (start, end) = (start.min(i64::MAX as u64), end.min(i64::MAX as u64));
        if let Some(hit) = self.recent().get(start, end) {
            return Ok(hit);
        }
        let rows =
            sqlx::query("SELECT entry, idx FROM log WHERE idx >= ? AND idx < ? ORDER BY idx")
                .bind(start as i64)
                .bind(end as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| io_err(StorageIOError::read_logs, e))?;
        rows.iter()
            .map(|r| log_entry(r).map_err(|e| io_err(StorageIOError::read_logs, e)))
            .collect()
    }
}

/// A log entry from a row `entry, idx`.
fn log_entry(r: &sqlx::sqlite::SqliteRow) -> Result<Entry<TypeConfig>, MetaError> {
    Cols::new(r, "log").key_col("idx", 1).json(0, "entry")
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let last_purged: Option<LogId<NodeId>> = self.state_get("last_purged").await?;
        let row = sqlx::query("SELECT entry, idx FROM log ORDER BY idx DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| io_err(StorageIOError::read_logs, e))?;
        let last = match row {
            Some(r) => {
                let e = log_entry(&r).map_err(|e| io_err(StorageIOError::read_logs, e))?;
                Some(e.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        self.state_set("vote", vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        self.state_get("vote").await
    }

    /// Not kept (openraft's `save_committed` is optional). Saving it cost a transaction and an
    /// fsync of the log database for every commit. The state machine records its last applied
    /// log id in the batch that applies it; at a start, entries after it are applied again
    /// once a leader commits an entry of its term (at once, on a machine alone). That is also
    /// how a namespace that a power loss set back a few batches catches up
    /// (`crate::NAMESPACE_SYNC`).
    async fn save_committed(&mut self, _committed: Option<LogId<NodeId>>) -> Result<(), SErr> {
        Ok(())
    }

    /// What earlier versions saved, if anything: never above what their state machine had
    /// applied, and openraft takes the applied index where that is higher.
    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SErr> {
        Ok(self
            .state_get::<Option<LogId<NodeId>>>("committed")
            .await?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let res = self.write_entries(entries).await;
        callback.log_io_completed(match &res {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::other(e.to_string())),
        });
        res
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        // Forgotten first: a failed delete leaves the database as it may be.
        self.recent().forget_from(log_id.index);
        sqlx::query("DELETE FROM log WHERE idx >= ?")
            .bind(log_id.index as i64)
            .execute(&self.pool)
            .await
            .map_err(|e| io_err(StorageIOError::write_logs, e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        self.state_set("last_purged", &Some(log_id)).await?;
        self.recent().forget_up_to(log_id.index);
        sqlx::query("DELETE FROM log WHERE idx <= ?")
            .bind(log_id.index as i64)
            .execute(&self.pool)
            .await
            .map_err(|e| io_err(StorageIOError::write_logs, e))?;
        Ok(())
    }
}

/// The state machine: the namespace database plus its snapshots directory.
pub struct StateMachineStore {
    db: MetaDb,
    snapshot_dir: PathBuf,
    receiving: Option<PathBuf>,
}

/// The snapshot sidecar format this version writes and reads.
const SIDECAR_FORMAT: u32 = 1;

/// The format of a sidecar without a `format` field: those predate the field and have the
/// layout of format 1 (installations made before it have such files).
fn sidecar_unversioned() -> u32 {
    1
}

/// `snapshots/current.json`: which snapshot file is current, and its metadata.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SnapshotSidecar {
    /// The layout of this file ([`SIDECAR_FORMAT`]).
    #[serde(default = "sidecar_unversioned")]
    format: u32,
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    file: String,
}

/// Only the format of a sidecar, read before the rest so that an unknown format is refused
/// as such (whatever its other fields are) rather than misread.
#[derive(serde::Deserialize)]
struct SidecarFormat {
    #[serde(default = "sidecar_unversioned")]
    format: u32,
}

/// Reads the sidecar at `path`; `None` if there is none. A format other than
/// [`SIDECAR_FORMAT`] is refused with the file and the format found, never guessed at.
async fn read_sidecar(path: &Path) -> anyhow::Result<Option<SnapshotSidecar>> {
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let SidecarFormat { format } = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a snapshot sidecar", path.display()))?;
    if format != SIDECAR_FORMAT {
        anyhow::bail!(
            "{}: snapshot sidecar format {format} is unknown to this version (it reads format \
             {SIDECAR_FORMAT}); refusing to guess",
            path.display()
        );
    }
    let side = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a snapshot sidecar", path.display()))?;
    Ok(Some(side))
}

impl StateMachineStore {
    /// A state machine over `db`, keeping snapshots in `snapshot_dir`.
    pub async fn new(db: MetaDb, snapshot_dir: PathBuf) -> anyhow::Result<Self> {
        tokio::fs::create_dir_all(&snapshot_dir)
            .await
            .with_context(|| format!("create {}", snapshot_dir.display()))?;
        Ok(Self {
            db,
            snapshot_dir,
            receiving: None,
        })
    }

    /// An entry could not be applied: this node's state machine can no longer follow the log.
    /// Raft stops here (the node stays up, read-only) and the next start resyncs it from the
    /// cluster (see [`RESYNC_MARKER`]).
    fn apply_failed(&self, index: u64, e: &MetaError) {
        let why = format!("log entry {index} could not be applied: {e}");
        tracing::error!(
            "{why}. This node is read-only from now on; restart it to resync its metadata from the cluster"
        );
        if let Some(meta) = self.snapshot_dir.parent() {
            let marker = meta.join(RESYNC_MARKER);
            if let Err(e) = wormfs_parts::fsutil::write_durably(&marker, why.as_bytes()) {
                tracing::error!("cannot write {}: {e:#}", marker.display());
            }
        }
    }

    fn current_sidecar(&self) -> PathBuf {
        self.snapshot_dir.join("current.json")
    }
}

pub(super) async fn read_applied(
    pool: &SqlitePool,
) -> anyhow::Result<(
    Option<LogId<NodeId>>,
    StoredMembership<NodeId, openraft::BasicNode>,
)> {
    async fn get<T: serde::de::DeserializeOwned>(
        pool: &SqlitePool,
        key: &'static str,
    ) -> Result<Option<T>, MetaError> {
        let row = sqlx::query("SELECT value FROM kv WHERE key = ?")
            .bind(key)
            .fetch_optional(pool)
            .await
            .db("read the applied state")?;
        row.map(|r| {
            Cols::new(&r, "kv")
                .key(format!("key {key}"))
                .json(0, "value")
        })
        .transpose()
    }
    let applied = get::<Option<LogId<NodeId>>>(pool, "raft_last_applied")
        .await?
        .flatten();
    let membership = get(pool, "raft_membership").await?.unwrap_or_default();
    Ok((applied, membership))
}

/// Why a batch of entries was not applied.
enum ApplyFailure {
    /// This entry's command failed (the node can no longer follow the log).
    Entry(u64, MetaError),
    /// The transaction around the batch failed.
    Storage(SErr),
}

/// Applies `entries` to `db` in one transaction (the state machine's `apply`).
async fn apply_entries(
    db: MetaDb,
    entries: Vec<Entry<TypeConfig>>,
) -> Result<Vec<Outcome>, ApplyFailure> {
    let werr =
        |e: sqlx::Error| ApplyFailure::Storage(io_err(StorageIOError::write_state_machine, e));
    // Through the applies' own connection, held for the whole batch ([`MetaDb::writer`]).
    let mut slot = db.writer().await;
    if slot.is_none() {
        *slot = Some(db.pool().acquire().await.map_err(werr)?);
    }
    let Some(conn) = slot.as_mut() else {
        return Err(werr(sqlx::Error::PoolClosed));
    };
    let res = apply_batch(&db, conn, entries).await;
    if matches!(res, Err(ApplyFailure::Storage(_))) {
        // A connection that failed is not trusted with the next batch: back to the pool
        // (which tests it as it takes it back), and the next batch takes another.
        *slot = None;
    }
    res
}

/// Applies `entries` to `db` through `conn` in one transaction.
async fn apply_batch(
    db: &MetaDb,
    conn: &mut sqlx::SqliteConnection,
    entries: Vec<Entry<TypeConfig>>,
) -> Result<Vec<Outcome>, ApplyFailure> {
    use sqlx::Connection;
    let werr =
        |e: sqlx::Error| ApplyFailure::Storage(io_err(StorageIOError::write_state_machine, e));
    let merr = |e: MetaError| ApplyFailure::Storage(io_err(StorageIOError::write_state_machine, e));
    // The write lock is taken at the start: a transaction that has read first and then
    // finds the lock held by another writer fails at once in SQLite, where this one waits
    // its turn (the apply is the only writer of a running node; the in-process cluster tests
    // caught a full checkpoint, since replaced, taking that lock).
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(werr)?;
    let mut out = Vec::new();
    let mut last = None;
    let mut changed = Vec::new();
    let mut topology = false;
    let mut rare = false;
    for entry in entries {
        last = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => out.push(Outcome::Done),
            EntryPayload::Normal(Command::V1(cmd)) => {
                topology |= cmd.may_touch_topology();
                rare |= !cmd.only_ingests();
                let applied = match &cmd {
                    c if fails_by_test(c) => Err(db_error(
                        "apply",
                        sqlx::Error::Protocol("injected apply failure".into()),
                    )),
                    _ => apply_command(&mut tx, &cmd).await,
                };
                let outcome = match applied {
                    Ok(o) => o,
                    Err(e) => return Err(ApplyFailure::Entry(entry.log_id.index, e)),
                };
                if let Outcome::Rejected(r) = &outcome {
                    tracing::info!(log_index = entry.log_id.index, "command rejected: {r}");
                }
                changed.extend(crate::changes::tree_changes(&cmd, &outcome));
                out.push(outcome);
            }
            EntryPayload::Membership(m) => {
                topology = true;
                rare = true;
                let sm = StoredMembership::new(Some(entry.log_id), m);
                let json = serde_json::to_string(&sm).map_err(|e| {
                    ApplyFailure::Storage(io_err(StorageIOError::write_state_machine, e))
                })?;
                kv_set(&mut tx, "raft_membership", &json)
                    .await
                    .map_err(merr)?;
                out.push(Outcome::Done);
            }
        }
    }
    if let Some(last) = last {
        let json = serde_json::to_string(&Some(last))
            .map_err(|e| ApplyFailure::Storage(io_err(StorageIOError::write_state_machine, e)))?;
        kv_set(&mut tx, "raft_last_applied", &json)
            .await
            .map_err(merr)?;
    }
    tx.commit().await.map_err(werr)?;
    db.bump_generation_for(topology, rare);
    db.publish_changes(crate::changes::ChangeBatch {
        log_index: last.map_or(0, |l| l.index),
        changes: changed,
    });
    Ok(out)
}

/// The runtime that runs the state machine's applies: one thread of its own, shared by every
/// node of the process (the log's appends measured no faster there and stay on the caller's). A batch's apply
/// is one SQLite statement after another, each a round trip to sqlx's connection thread;
/// on the node's runtime every answer queued behind the requests, ingests and Raft tasks
/// running there, so a batch of small files' commits took several milliseconds per file of
/// waiting (docs/performance.md, "Many small files"). `None` if the thread could not be
/// started: the caller's runtime is used.
fn store_runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RT: std::sync::OnceLock<Option<tokio::runtime::Runtime>> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wormfs-store")
            .enable_all()
            .build()
            .inspect_err(|e| tracing::warn!("cannot start the metadata store's thread: {e}"))
            .ok()
    })
    .as_ref()
}

/// Runs `f` on the store's thread ([`store_runtime`]) and waits for it. It runs to its end
/// even if the caller stops waiting (a transaction is committed or rolled back whole either
/// way). An error if it panicked.
async fn on_store_thread<F>(f: F) -> Result<F::Output, io::Error>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    match store_runtime() {
        Some(rt) => rt
            .spawn(tracing::Instrument::instrument(f, tracing::Span::current()))
            .await
            .map_err(|e| io::Error::other(format!("the metadata store's task failed: {e}"))),
        None => Ok(f.await),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        SErr,
    > {
        read_applied(&self.db.pool())
            .await
            .map_err(|e| any_err(StorageIOError::read_state_machine, e))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let db = self.db.clone();
        match on_store_thread(apply_entries(db, entries)).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(ApplyFailure::Entry(index, e))) => {
                self.apply_failed(index, &e);
                Err(io_err(StorageIOError::write_state_machine, e))
            }
            Ok(Err(ApplyFailure::Storage(e))) => Err(e),
            Err(e) => Err(io_err(StorageIOError::write_state_machine, e)),
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            dir: self.snapshot_dir.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, SErr> {
        let path = self
            .snapshot_dir
            .join(format!("receiving-{:016x}.db", rand::random::<u64>()));
        // Read and write: openraft writes the chunks into it, then install_snapshot reads it
        // back (a write-only file failed there with EBADF once a snapshot came over the wire).
        let f = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| io_err(StorageIOError::write_snapshot_none, e))?;
        self.receiving = Some(path);
        Ok(Box::new(f))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), SErr> {
        let werr = |e: anyhow::Error| any_err(StorageIOError::write_snapshot_none, e);
        let ioerr = |e: io::Error| io_err(StorageIOError::write_snapshot_none, e);
        // Copy from whatever file object we were handed (it need not be the one
        // begin_receiving_snapshot made) into a file of our own, durably.
        let mut src = snapshot;
        src.seek(io::SeekFrom::Start(0)).await.map_err(ioerr)?;
        let received = self
            .snapshot_dir
            .join(format!("receiving-{:016x}.db", rand::random::<u64>()));
        let mut dst = tokio::fs::File::create(&received).await.map_err(ioerr)?;
        tokio::io::copy(&mut *src, &mut dst).await.map_err(ioerr)?;
        dst.sync_all().await.map_err(ioerr)?;
        drop(dst);
        drop(src);
        if let Some(old) = self.receiving.take() {
            let _ = tokio::fs::remove_file(old).await;
        }
        let name = format!("snap-{}.db", meta.snapshot_id);
        let dest = self.snapshot_dir.join(&name);
        tokio::fs::rename(&received, &dest)
            .await
            .map_err(|e| io_err(StorageIOError::write_snapshot_none, e))?;
        write_sidecar(&self.current_sidecar(), meta, &name)
            .await
            .map_err(werr)?;
        self.db.replace_with(&dest).await.map_err(werr)?;
        tracing::warn!(snapshot = %meta.snapshot_id, "installed a snapshot: the namespace was replaced");
        prune_snapshots(&self.snapshot_dir, &name).await;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let rerr = |e: io::Error| io_err(StorageIOError::read_snapshot_none, e);
        let Some(side) = read_sidecar(&self.current_sidecar())
            .await
            .map_err(|e| any_err(StorageIOError::read_snapshot_none, e))?
        else {
            return Ok(None);
        };
        let f = tokio::fs::File::open(self.snapshot_dir.join(&side.file))
            .await
            .map_err(rerr)?;
        Ok(Some(Snapshot {
            meta: side.meta,
            snapshot: Box::new(f),
        }))
    }
}

trait NoneSig {
    fn write_snapshot_none(e: AnyError) -> Self;
    fn read_snapshot_none(e: AnyError) -> Self;
}
impl NoneSig for StorageIOError<NodeId> {
    fn write_snapshot_none(e: AnyError) -> Self {
        StorageIOError::write_snapshot(None, e)
    }
    fn read_snapshot_none(e: AnyError) -> Self {
        StorageIOError::read_snapshot(None, e)
    }
}

async fn write_sidecar(
    path: &Path,
    meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
    file: &str,
) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(&SnapshotSidecar {
        format: SIDECAR_FORMAT,
        meta: meta.clone(),
        file: file.to_owned(),
    })?;
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || wormfs_parts::fsutil::write_durably(&p, &json)).await??;
    Ok(())
}

async fn prune_snapshots(dir: &Path, keep: &str) {
    let Ok(mut rd) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(e)) = rd.next_entry().await {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".db")
            && name != keep
            && (name.starts_with("snap-") || name.starts_with("receiving-"))
        {
            if let Err(err) = tokio::fs::remove_file(e.path()).await {
                tracing::warn!(file = %name, "remove old snapshot: {err}");
            }
        }
    }
}

/// Builds snapshots: a consistent `VACUUM INTO` copy of the namespace database.
pub struct SnapshotBuilder {
    db: MetaDb,
    dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let werr = |e: anyhow::Error| any_err(StorageIOError::write_snapshot_none, e);
        let tmp = self
            .dir
            .join(format!("building-{:016x}.tmp", rand::random::<u64>()));
        let sql = format!(
            "VACUUM INTO '{}'",
            tmp.display().to_string().replace('\'', "''")
        );
        sqlx::query(sqlx::AssertSqlSafe(sql).into_sql_str())
            .execute(&self.db.pool())
            .await
            .map_err(|e| io_err(StorageIOError::write_snapshot_none, e))?;
        // openraft may purge the log up to the snapshot once it has it: the namespace must
        // not be able to fall back behind it at a power loss (it syncs no batch on its own,
        // see `NAMESPACE_SYNC`), so everything committed so far, the copied state included,
        // is put on disk first.
        self.db.make_durable().await.map_err(werr)?;
        // The copy carries its own last applied log id and membership.
        let copy = open_pool(&tmp, 1).await.map_err(werr)?;
        let (last, membership) = read_applied(&copy).await.map_err(werr)?;
        copy.close().await;
        let id = match last {
            Some(l) => format!(
                "{}-{}-{}-{:08x}",
                l.leader_id.term,
                l.leader_id.node_id,
                l.index,
                rand::random::<u32>()
            ),
            None => format!("0-0-0-{:08x}", rand::random::<u32>()),
        };
        let name = format!("snap-{id}.db");
        let dest = self.dir.join(&name);
        let (t, d, dir) = (tmp.clone(), dest.clone(), self.dir.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            for ext in ["-wal", "-shm"] {
                let mut p = t.clone().into_os_string();
                p.push(ext);
                let _ = std::fs::remove_file(p);
            }
            std::fs::File::open(&t)?.sync_all()?;
            std::fs::rename(&t, &d)?;
            sync_dir(&dir)?;
            Ok(())
        })
        .await
        .map_err(|e| werr(e.into()))?
        .map_err(werr)?;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id: id,
        };
        write_sidecar(&self.dir.join("current.json"), &meta, &name)
            .await
            .map_err(werr)?;
        prune_snapshots(&self.dir, &name).await;
        let f = tokio::fs::File::open(&dest)
            .await
            .map_err(|e| io_err(StorageIOError::read_snapshot_none, e))?;
        tracing::info!(snapshot = %meta.snapshot_id, "built a metadata snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(f),
        })
    }
}

/// Whether a test asked the apply of this command (or of a command in this batch) to fail
/// (`crash_point::fail_apply_mkdir`).
fn fails_by_test(cmd: &crate::command::CommandV1) -> bool {
    match cmd {
        crate::command::CommandV1::Mkdir { path, .. } => {
            wormfs_parts::crash_point::fail_apply_mkdir(path)
        }
        crate::command::CommandV1::Batch { commands } => commands.iter().any(fails_by_test),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{BasicNode, CommittedLeaderId, Membership};

    use super::*;

    fn meta() -> SnapshotMeta<NodeId, BasicNode> {
        let log_id = LogId::new(CommittedLeaderId::new(3, 7), 42);
        let membership = Membership::new(
            vec![BTreeSet::from([7])],
            BTreeMap::from([(7, BasicNode::new("/ip4/127.0.0.1/tcp/7071"))]),
        );
        SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: StoredMembership::new(Some(log_id), membership),
            snapshot_id: "3-7-42-0000abcd".into(),
        }
    }

    fn blank(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// The log as a store that has no entries in memory reads it from the database.
    async fn from_disk(path: &Path, range: std::ops::Range<u64>) -> Vec<LogId<NodeId>> {
        let mut fresh = LogStore::open(path).await.unwrap();
        let got = fresh.try_get_log_entries(range).await.unwrap();
        fresh.close().await;
        got.into_iter().map(|e| e.log_id).collect()
    }

    /// The stored sizes of the entries at indexes `kept`, summed.
    async fn from_disk_json_lens(path: &Path, kept: &[u64]) -> usize {
        let fresh = LogStore::open(path).await.unwrap();
        let mut total = 0;
        for idx in kept {
            let len: i64 =
                sqlx::query_scalar("SELECT length(CAST(entry AS BLOB)) FROM log WHERE idx = ?")
                    .bind(*idx as i64)
                    .fetch_one(&fresh.pool)
                    .await
                    .unwrap();
            total += len as usize;
        }
        fresh.close().await;
        total
    }

    /// Entries read back from memory are exactly those in the database, through overwrites,
    /// truncations and purges; ranges not wholly in memory are read from the database.
    #[tokio::test]
    async fn recent_entries_read_back_as_the_database_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log.db");
        let mut log = LogStore::open(&path).await.unwrap();
        let ids = |v: Vec<Entry<TypeConfig>>| v.into_iter().map(|e| e.log_id).collect::<Vec<_>>();

        log.write_entries((1..=10).map(|i| blank(1, i)))
            .await
            .unwrap();
        assert_eq!(log.recent().entries.len(), 10);
        let mem = ids(log.try_get_log_entries(3..8).await.unwrap());
        assert_eq!(mem, from_disk(&path, 3..8).await);
        assert_eq!(mem.len(), 5);

        // A new leader overwrites from 6 on, after truncating.
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 6))
            .await
            .unwrap();
        assert_eq!(
            ids(log.try_get_log_entries(0..100).await.unwrap()),
            from_disk(&path, 0..100).await
        );
        log.write_entries((6..=8).map(|i| blank(2, i)))
            .await
            .unwrap();
        let all = ids(log.try_get_log_entries(1..9).await.unwrap());
        assert_eq!(all, from_disk(&path, 1..9).await);
        assert_eq!(all[5].leader_id.term, 2);
        assert_eq!(all[4].leader_id.term, 1);

        // Purged entries are gone from memory as from the database.
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 3))
            .await
            .unwrap();
        assert_eq!(log.recent().entries.keys().next(), Some(&4));
        assert_eq!(
            ids(log.try_get_log_entries(0..100).await.unwrap()),
            from_disk(&path, 0..100).await
        );

        // Only the last RECENT_ENTRIES stay in memory; older ones come from the database.
        let n = RECENT_ENTRIES as u64 + 20;
        log.write_entries((9..9 + n).map(|i| blank(2, i)))
            .await
            .unwrap();
        assert_eq!(log.recent().entries.len(), RECENT_ENTRIES);
        assert_eq!(
            ids(log.try_get_log_entries(4..9 + n).await.unwrap()),
            from_disk(&path, 4..9 + n).await
        );
        assert_eq!(
            log.try_get_log_entries(4..9 + n).await.unwrap().len() as u64,
            n + 5
        );
        // That batch was more than one statement's rows (one transaction); one entry alone
        // is one statement.
        assert!(n as usize > LOG_ROWS_PER_INSERT);
        log.write_entries([blank(3, 9 + n)]).await.unwrap();
        let last = from_disk(&path, 9 + n..9 + n + 1).await;
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].leader_id.term, 3);
        // The bytes kept are the stored sizes of the entries kept.
        let kept: Vec<u64> = log.recent().entries.keys().copied().collect();
        let stored = from_disk_json_lens(&path, &kept).await;
        assert_eq!(log.recent().bytes, stored);
        log.close().await;
    }

    #[tokio::test]
    async fn a_current_sidecar_is_written_with_its_format_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("current.json");
        write_sidecar(&path, &meta(), "snap-x.db").await.unwrap();
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw["format"], 1, "{raw}");
        let side = read_sidecar(&path).await.unwrap().unwrap();
        assert_eq!(side.format, SIDECAR_FORMAT);
        assert_eq!(side.file, "snap-x.db");
        assert_eq!(side.meta, meta());
        assert!(read_sidecar(&dir.path().join("none.json"))
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_sidecar_from_before_the_format_field_reads_as_format_1() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("current.json");
        // What the versions before the field wrote: `meta` and `file`, nothing else.
        let old = serde_json::json!({ "meta": meta(), "file": "snap-old.db" });
        assert!(old.get("format").is_none());
        std::fs::write(&path, serde_json::to_vec_pretty(&old).unwrap()).unwrap();
        let side = read_sidecar(&path).await.unwrap().unwrap();
        assert_eq!(side.format, 1);
        assert_eq!(side.file, "snap-old.db");
        assert_eq!(side.meta, meta());
    }

    /// The applied log id that the database file alone holds, without its WAL: what is left of
    /// the namespace if the WAL's last frames never reached the disk.
    async fn applied_in_file_alone(db: &Path) -> Option<LogId<NodeId>> {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("alone.db");
        std::fs::copy(db, &copy).unwrap();
        let pool = open_pool(&copy, 1).await.unwrap();
        // The file alone may not even hold the tables yet: nothing applied.
        let applied = read_applied(&pool).await.ok().and_then(|(a, _)| a);
        pool.close().await;
        applied
    }

    /// A snapshot lets openraft purge the log up to it, so the namespace, which syncs no batch
    /// on its own (`NAMESPACE_SYNC`), is made durable before a snapshot is handed over: with
    /// no reader in the way, its database file alone then holds the snapshot's state (the
    /// checkpoint ran; the fsyncs that follow it are not visible to a test).
    #[tokio::test]
    async fn a_snapshot_puts_the_namespace_in_its_database_file_before_it_is_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.db");
        let db = MetaDb::open(&path).await.unwrap();
        let mut sm = StateMachineStore::new(db.clone(), dir.path().join("snapshots"))
            .await
            .unwrap();
        for i in 1..=40 {
            sm.apply(vec![blank(2, i)]).await.unwrap();
        }
        // Applied batches are committed into the WAL only (a checkpoint copies them later).
        assert_eq!(applied_in_file_alone(&path).await, None);
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let last = snap.meta.last_log_id.unwrap();
        assert_eq!(last.index, 40);
        assert_eq!(applied_in_file_alone(&path).await, Some(last));
        db.close().await;
    }

    /// A namespace database in `dir` and its state machine, with blank entries 1..=`n` of term
    /// 2 applied one batch each.
    async fn store_with_blanks(dir: &Path, n: u64) -> (MetaDb, StateMachineStore) {
        let db = MetaDb::open(&dir.join("metadata.db")).await.unwrap();
        let mut sm = StateMachineStore::new(db.clone(), dir.join("snapshots"))
            .await
            .unwrap();
        for i in 1..=n {
            sm.apply(vec![blank(2, i)]).await.unwrap();
        }
        (db, sm)
    }

    /// A reader in the middle of a long read (a metadata backup's copy, a large listing)
    /// neither holds a snapshot up nor fails it, and applies go on meanwhile: the namespace is
    /// made durable without waiting for readers (a full checkpoint waited for them, holding
    /// the write lock, and failed the snapshot after the busy timeout).
    #[tokio::test]
    async fn a_snapshot_neither_waits_for_nor_fails_on_a_long_reader() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut sm) = store_with_blanks(dir.path(), 5).await;
        let mut reader = db.pool().acquire().await.unwrap();
        sqlx::query("BEGIN").execute(&mut *reader).await.unwrap();
        sqlx::query("SELECT COUNT(*) FROM entries")
            .fetch_one(&mut *reader)
            .await
            .unwrap();
        for i in 6..=10 {
            sm.apply(vec![blank(2, i)]).await.unwrap();
        }
        let deadline = std::time::Duration::from_secs(10);
        let mut builder = sm.get_snapshot_builder().await;
        let snap = tokio::time::timeout(deadline, builder.build_snapshot())
            .await
            .expect("the snapshot waited for the reader")
            .unwrap();
        assert_eq!(snap.meta.last_log_id.unwrap().index, 10);
        tokio::time::timeout(deadline, sm.apply(vec![blank(2, 11)]))
            .await
            .expect("the apply waited")
            .unwrap();
        sqlx::query("COMMIT").execute(&mut *reader).await.unwrap();
        drop(reader);
        db.close().await;
    }

    /// The applies write through one connection that they keep ([`MetaDb::writer`]); it is
    /// given back before its pool closes, so installing a snapshot (which replaces the pool)
    /// and closing the database do not wait for it forever, and applies go on afterwards
    /// through a connection of the new pool.
    #[tokio::test]
    async fn the_applies_connection_is_kept_and_given_back_when_the_pool_is_replaced() {
        let deadline = std::time::Duration::from_secs(20);
        let dir = tempfile::tempdir().unwrap();
        let (db, mut sm) = store_with_blanks(dir.path(), 5).await;
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        let other_dir = tempfile::tempdir().unwrap();
        let other = MetaDb::open(&other_dir.path().join("metadata.db"))
            .await
            .unwrap();
        let mut sm2 = StateMachineStore::new(other.clone(), other_dir.path().join("snapshots"))
            .await
            .unwrap();
        sm2.apply(vec![blank(1, 1)]).await.unwrap();
        assert!(
            other.writer().await.is_some(),
            "the apply kept its connection"
        );
        tokio::time::timeout(deadline, sm2.install_snapshot(&snap.meta, snap.snapshot))
            .await
            .expect("installing the snapshot waited for the applies' connection")
            .unwrap();
        assert!(other.writer().await.is_none());
        assert_eq!(sm2.applied_state().await.unwrap().0.unwrap().index, 5);
        tokio::time::timeout(deadline, sm2.apply(vec![blank(2, 6)]))
            .await
            .expect("the apply after the install waited")
            .unwrap();
        assert_eq!(sm2.applied_state().await.unwrap().0.unwrap().index, 6);
        tokio::time::timeout(deadline, other.close())
            .await
            .expect("closing waited for the applies' connection");
        tokio::time::timeout(deadline, db.close())
            .await
            .expect("closing waited for the applies' connection");
    }

    #[tokio::test]
    async fn a_sidecar_of_an_unknown_format_is_refused_naming_file_and_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("current.json");
        // Refused on its format alone, even with a layout this version could not read at all.
        for text in [
            serde_json::json!({ "format": 99, "meta": meta(), "file": "snap-new.db" }),
            serde_json::json!({ "format": 99, "snapshots": ["a", "b"] }),
        ] {
            std::fs::write(&path, serde_json::to_vec(&text).unwrap()).unwrap();
            let e = format!("{:#}", read_sidecar(&path).await.unwrap_err());
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains("format 99 is unknown"), "{e}");
        }
        // And openraft hears it as a storage error with the same words.
        let db = MetaDb::open(&dir.path().join("metadata.db")).await.unwrap();
        let mut sm = StateMachineStore::new(db, dir.path().to_owned())
            .await
            .unwrap();
        let e = sm.get_current_snapshot().await.unwrap_err().to_string();
        assert!(e.contains("format 99 is unknown"), "{e}");
    }
}
