//! WormFS's metadata: the Raft command vocabulary ([`command`]), its deterministic apply to
//! SQLite, the queries, and openraft's log store, state machine and snapshots. This is the only
//! crate that depends on sqlx (Cargo.toml enforces it).
//!
//! `metadata.db` holds the namespace (the Raft state machine) and `raft-log.db` the Raft log and
//! vote, both in WAL mode. The log runs with `synchronous=FULL`: an append is on disk before it
//! returns, and that is what makes a write durable. The namespace runs with `synchronous=NORMAL`
//! ([`NAMESPACE_SYNC`]): an applied batch survives the process being killed at once, and after a
//! power loss the last few batches may be applied again from the log (etcd's design; see
//! [`MetaDb::make_durable`] for the one point where the namespace itself must be on disk).

// No unsafe code here: the workspace lint is `deny` only so that one syscall in
// wormfs-parts (`fsutil::writeback_error`) can be allowed.
#![forbid(unsafe_code)]

mod apply;
mod apply_accounts;
#[cfg(test)]
mod apply_accounts_tests;
mod apply_dav;
mod apply_events;
#[cfg(test)]
mod apply_events_tests;
mod apply_repair;
#[cfg(test)]
mod apply_repair_tests;
#[cfg(test)]
mod apply_tests;
mod apply_trash;
#[cfg(test)]
mod apply_trash_tests;
mod apply_tree;
pub mod changes;
pub mod command;
mod error;
pub mod lock_rules;
mod query;
mod query_events;
mod query_repair;
#[allow(clippy::result_large_err)] // openraft's StorageError is large; its traits return it.
mod raft_store;
pub mod raft_types;
pub mod recovery;
pub mod restore;
mod row;
#[cfg(test)]
mod testutil;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::SqlSafeStr;

pub use apply::etag_for;
pub use apply_accounts::{
    account_name_problem, AccountsSnapshot, TokenRow, UserRow, MAX_ACCOUNT_NAME,
};
pub use apply_events::{EventRecord, EVENT_HISTORY};
pub use apply_trash::{Retention, TrashEntry, TrashTotals};
pub use query::{
    DirEntry, DiskRecord, EntryKind, FileRecord, IntentRecord, NodeRecord, PartRecord,
    SegmentRecord, Totals,
};
pub use query_repair::{
    DiskStateRecord, FileAtRisk, Impact, PartToVerify, QueuedRepair, ToleranceCount,
};
pub use raft_store::{LogStore, StateMachineStore, RESYNC_MARKER};

const NAMESPACE_SQL: &str = include_str!("../migrations/0001_namespace.sql");
const RAFT_LOG_SQL: &str = include_str!("../migrations/0002_raft_log.sql");
const WEBDAV_SQL: &str = include_str!("../migrations/0003_webdav.sql");
const DATA_PLANE_SQL: &str = include_str!("../migrations/0004_data_plane.sql");
const REPAIR_SQL: &str = include_str!("../migrations/0005_repair.sql");
const TRASH_SQL: &str = include_str!("../migrations/0006_trash.sql");
const ACCOUNTS_SQL: &str = include_str!("../migrations/0007_accounts.sql");
const EVENTS_SQL: &str = include_str!("../migrations/0008_events.sql");

pub use error::{DbError, MetaError};

/// Makes `path` a private SQLite file before SQLite opens it: created empty with mode 0600
/// when missing (SQLite gives its `-wal` and `-shm` files the database's mode), and the
/// database, `-wal` and `-shm` narrowed to the owner when they exist with a looser mode
/// (`VACUUM INTO` copies follow the umask), whatever the umask. Quietly: the node logs what
/// it fixes in an older installation's `meta/` before it opens anything there.
fn private_db_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        wormfs_parts::fsutil::restrict_mode(Path::new(&p))?;
    }
    Ok(())
}

/// Opens a SQLite file with WormFS's durability settings.
async fn open_pool(path: &Path, max_connections: u32) -> anyhow::Result<SqlitePool> {
    open_pool_with(path, max_connections, SqliteSynchronous::Full).await
}

async fn open_pool_with(
    path: &Path,
    max_connections: u32,
    synchronous: SqliteSynchronous,
) -> anyhow::Result<SqlitePool> {
    private_db_file(path)?;
    let opts = SqliteConnectOptions::from_str("sqlite://")
        .context("build sqlite options")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(false);
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        // No ping on every acquire: the connection is a thread in this process, not a socket
        // that can drop, and sqlx already pings it when it is released (which also runs a
        // rollback left by a dropped transaction). Each ping is a round trip to the
        // connection's thread, as costly as a small statement (docs/performance.md).
        .test_before_acquire(false)
        .connect_with(opts)
        .await
        .with_context(|| format!("open SQLite database {}", path.display()))
}

fn migration(version: i64, description: &'static str, sql: &'static str) -> Migration {
    Migration::new(
        version,
        Cow::Borrowed(description),
        MigrationType::Simple,
        sqlx::AssertSqlSafe(sql).into_sql_str(),
        false,
    )
}

fn migrator(version: i64, description: &'static str, sql: &'static str) -> Migrator {
    Migrator::with_migrations(vec![migration(version, description, sql)])
}

/// How the namespace database syncs: `NORMAL`, no fsync per applied batch.
///
/// A write is durable once its log entry is (the log runs `FULL`); the namespace is what the
/// log's entries make, applied again from the log when it is behind it. In WAL mode, `NORMAL`
/// keeps every committed batch across a crash of the process, and after a power loss or a
/// crash of the machine it is consistent, at some earlier batch: its last applied log id is
/// committed in the same transaction, so openraft applies again what follows it once a leader
/// commits (at once, on a machine alone). It must therefore never be behind what the log has
/// dropped: a snapshot, after which the log may be purged, first makes the namespace durable
/// ([`MetaDb::make_durable`]). On this machine's journaled ext4 this took one journal commit
/// off every write's wait (docs/performance.md, "Many small files").
pub const NAMESPACE_SYNC: SqliteSynchronous = SqliteSynchronous::Normal;

/// What every write reads first and few commands change (see `MetaDbInner::rare_generation`).
#[derive(Clone)]
struct RareState {
    generation: u64,
    locks: Arc<Vec<command::Lock>>,
    sweeps_begun: u64,
}

/// The namespace database (the state machine's data), shared by apply and readers.
#[derive(Clone)]
pub struct MetaDb {
    inner: Arc<MetaDbInner>,
}

struct MetaDbInner {
    path: PathBuf,
    pool: RwLock<SqlitePool>,
    /// Bumped after every change is committed (applied commands, an installed snapshot), so
    /// a cache of reads can tell whether anything changed since it read.
    generation: std::sync::atomic::AtomicU64,
    /// Bumped with `generation`, but only by changes that may touch machines or disks.
    topology_generation: std::sync::atomic::AtomicU64,
    /// Bumped with `generation` by every change but a file's ingest and commit
    /// ([`CommandV1::only_ingests`](command::CommandV1::only_ingests)): the WebDAV locks and
    /// the sweep count, read before every write, are cached against it.
    rare_generation: std::sync::atomic::AtomicU64,
    /// The locks and the sweep count as read at a `rare_generation`.
    rare_cache: std::sync::Mutex<Option<RareState>>,
    /// Damaged rows skipped by reads that stay available without them (each also logged).
    skipped_rows: std::sync::atomic::AtomicU64,
    /// What each committed batch changed in the tree (see [`changes`]).
    changes: tokio::sync::broadcast::Sender<Arc<changes::ChangeBatch>>,
    /// The connection the state machine's applies write through ([`MetaDb::writer`]).
    writer: tokio::sync::Mutex<Option<sqlx::pool::PoolConnection<sqlx::Sqlite>>>,
}

impl MetaDb {
    /// Opens (creating and migrating if needed) the namespace database at `path`.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        Self::open_with(path, 8, NAMESPACE_SYNC).await
    }

    /// Opens a database that an offline tool fills and then makes durable as a whole (one
    /// connection, no fsync per transaction): `wormfs recover --from-disks`'s working copy,
    /// which is fsynced before it is moved into place. Never a running node's metadata.
    pub async fn open_unsynced(path: &Path) -> anyhow::Result<Self> {
        Self::open_with(path, 1, SqliteSynchronous::Off).await
    }

    async fn open_with(
        path: &Path,
        connections: u32,
        synchronous: SqliteSynchronous,
    ) -> anyhow::Result<Self> {
        let pool = open_pool_with(path, connections, synchronous).await?;
        Migrator::with_migrations(vec![
            migration(1, "namespace", NAMESPACE_SQL),
            migration(3, "webdav", WEBDAV_SQL),
            migration(4, "data_plane", DATA_PLANE_SQL),
            migration(5, "repair", REPAIR_SQL),
            migration(6, "trash", TRASH_SQL),
            migration(7, "accounts", ACCOUNTS_SQL),
            migration(8, "events", EVENTS_SQL),
        ])
        .run(&pool)
        .await
        .with_context(|| format!("migrate {}", path.display()))?;
        Ok(Self {
            inner: Arc::new(MetaDbInner {
                path: path.to_owned(),
                pool: RwLock::new(pool),
                generation: std::sync::atomic::AtomicU64::new(0),
                topology_generation: std::sync::atomic::AtomicU64::new(0),
                rare_generation: std::sync::atomic::AtomicU64::new(0),
                rare_cache: std::sync::Mutex::new(None),
                skipped_rows: std::sync::atomic::AtomicU64::new(0),
                changes: changes::channel(),
                writer: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// A number that changes whenever the metadata has changed: read it before a read, and
    /// the read is still current while it has not changed.
    pub fn generation(&self) -> u64 {
        self.inner
            .generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// A number that changes whenever the machines or disks (their rows, addresses or states)
    /// may have changed: caches of those follow it rather than [`MetaDb::generation`], which
    /// every file's commit bumps.
    pub fn topology_generation(&self) -> u64 {
        self.inner
            .topology_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// A number that changes with every committed change but a file's ingest and commit
    /// ([`CommandV1::only_ingests`](command::CommandV1::only_ingests)). Those add files and
    /// folders and replace files, and change no folder that exists: a folder's entry read at
    /// one value holds while it does.
    pub fn rare_generation(&self) -> u64 {
        self.inner
            .rare_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Follows what committed changes do to the tree, from now on: each applied batch of log
    /// entries that changed a name, and a [`changes::TreeChange::Reset`] when a snapshot was
    /// installed. A receiver that falls behind gets `Lagged` and must treat it as a reset.
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<Arc<changes::ChangeBatch>> {
        self.inner.changes.subscribe()
    }

    /// Tells the subscribers (nobody listening is fine).
    pub(crate) fn publish_changes(&self, batch: changes::ChangeBatch) {
        if !batch.changes.is_empty() {
            let _ = self.inner.changes.send(Arc::new(batch));
        }
    }

    /// Marks a committed change (after the commit, before its proposer hears of it).
    pub(crate) fn bump_generation(&self) {
        self.bump_generation_for(true, true);
    }

    /// Marks a committed change that may (`topology`) or cannot touch machines and disks, and
    /// that may (`rare`) or cannot touch anything but files' ingests and commits.
    pub(crate) fn bump_generation_for(&self, topology: bool, rare: bool) {
        if topology {
            self.inner
                .topology_generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        if rare {
            self.inner
                .rare_generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        self.inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// How many times a read skipped a damaged row (and logged it) since the database was
    /// opened: rows that did not decode, where the read stays useful without them (see
    /// `query.rs`; a row read again is counted again). Anything above zero means this
    /// machine's metadata is damaged; a resync from the cluster replaces it.
    pub fn skipped_rows(&self) -> u64 {
        self.inner
            .skipped_rows
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Logs a damaged row that a read skips, and counts it.
    pub(crate) fn skip_row(&self, read: &str, e: &MetaError) {
        let n = self
            .inner
            .skipped_rows
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        tracing::warn!(skipped_rows = n, "{read}: skipped a damaged row: {e}");
    }

    /// The current connection pool (replaced when a snapshot is installed).
    pub fn pool(&self) -> SqlitePool {
        match self.inner.pool.read() {
            Ok(p) => p.clone(),
            Err(poison) => poison.into_inner().clone(),
        }
    }

    /// The connection the state machine's applies write through (empty until the first
    /// apply takes one from the pool), held by one apply at a time. Always the same one: SQLite
    /// keeps a connection's page cache from one transaction to the next only while no other
    /// connection wrote, and the applies are a running node's only writer, so each batch finds
    /// what the last one read and wrote still in memory. A connection taken from the pool for
    /// each batch had had its cache dropped by the other connections' last write, and the
    /// pool's release is one more round trip to the connection's thread (docs/performance.md,
    /// "Many small files"). Given back to the pool before it closes ([`Self::close`], an
    /// installed snapshot).
    pub(crate) async fn writer(
        &self,
    ) -> tokio::sync::MutexGuard<'_, Option<sqlx::pool::PoolConnection<sqlx::Sqlite>>> {
        self.inner.writer.lock().await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Replaces the whole database with the SQLite file at `from` (an installed snapshot).
    async fn replace_with(&self, from: &Path) -> anyhow::Result<()> {
        // Held until the new pool is in place: no apply takes a connection of the old one.
        let mut writer = self.writer().await;
        *writer = None;
        let old = self.pool();
        old.close().await;
        let path = self.inner.path.clone();
        let src = from.to_owned();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            for ext in ["-wal", "-shm"] {
                let mut p = path.clone().into_os_string();
                p.push(ext);
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).context("remove SQLite side file"),
                }
            }
            let tmp = path.with_extension("db.installing");
            std::fs::copy(&src, &tmp).context("copy snapshot into place")?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path).context("rename snapshot into place")?;
            wormfs_parts::fsutil::sync_dir(path.parent().unwrap_or(Path::new(".")))?;
            Ok(())
        })
        .await
        .context("join snapshot install")??;
        let pool = open_pool_with(&self.inner.path, 8, NAMESPACE_SYNC).await?;
        match self.inner.pool.write() {
            Ok(mut p) => *p = pool,
            Err(poison) => *poison.into_inner() = pool,
        }
        drop(writer);
        self.bump_generation();
        self.publish_changes(changes::ChangeBatch {
            log_index: 0,
            changes: vec![changes::TreeChange::Reset],
        });
        Ok(())
    }

    /// Puts every batch committed so far on disk. A passive WAL checkpoint first copies into
    /// the database file what no reader still needs (it never waits, and never holds the
    /// write lock: a full checkpoint waited up to the busy timeout for a long reader, such
    /// as a metadata backup's copy, while every apply waited behind it, and then failed the
    /// snapshot, which openraft takes as fatal). Then the WAL and the database file are
    /// fsynced: every committed batch is in one or the other, since SQLite writes the WAL
    /// again from its start only after a checkpoint that copied all of it, and at `NORMAL`
    /// that checkpoint has synced the database file first ([`NAMESPACE_SYNC`]).
    pub async fn make_durable(&self) -> anyhow::Result<()> {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&self.pool())
            .await
            .map_err(|e| error::db_error("checkpoint the namespace", e))?;
        let path = self.inner.path.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            match std::fs::File::open(&wal) {
                Ok(f) => f
                    .sync_all()
                    .with_context(|| format!("fsync {}", Path::new(&wal).display()))?,
                // None: every batch is in the database file (the last connection checkpointed
                // all of it and removed the WAL).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("open {}", Path::new(&wal).display()))
                }
            }
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("fsync {}", path.display()))
        })
        .await
        .context("join the namespace's fsync")?
    }

    /// Closes the pool (shutdown).
    pub async fn close(&self) {
        // The applies' connection first: closing waits for every connection to come back.
        *self.writer().await = None;
        self.pool().close().await;
    }
}
