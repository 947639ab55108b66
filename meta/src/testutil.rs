//! Test helpers: a real metadata database in a temporary folder, commands applied to it the way
//! the state machine applies them (inside a transaction, then committed), and raw SQL to look
//! at or damage rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::Row;
use uuid::Uuid;

use crate::apply::apply_command;
use crate::command::{CommandV1, Conflict, FileCommit, NewSegment, Outcome, SourceIdentity};
use crate::error::Res;
use crate::MetaDb;
use wormfs_parts::codec::CodecId;
use wormfs_parts::ids::{DiskId, FileId};
use wormfs_parts::layout::Geometry;

/// A fixed clock for the commands (apply never reads one).
pub(crate) const T: u64 = 1_765_000_000_000;

/// A metadata database in a temporary folder (removed on drop).
pub(crate) struct TestDb {
    _dir: tempfile::TempDir,
    pub db: MetaDb,
}

/// A new, migrated, empty metadata database.
pub(crate) async fn test_db() -> TestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = MetaDb::open(&dir.path().join("metadata.db"))
        .await
        .expect("open metadata");
    TestDb { _dir: dir, db }
}

impl TestDb {
    /// Applies `cmd` in a transaction of its own, as the state machine does for a batch of
    /// one, and commits (a rejected command's changes are committed too, as in the state
    /// machine).
    pub(crate) async fn try_apply(&self, cmd: CommandV1) -> Res<Outcome> {
        let mut tx = self.db.pool().begin().await.expect("begin");
        let out = apply_command(&mut tx, &cmd).await?;
        tx.commit().await.expect("commit");
        self.db
            .bump_generation_for(cmd.may_touch_topology(), !cmd.only_ingests());
        Ok(out)
    }

    /// Applies `cmd`, which must not fail.
    pub(crate) async fn apply(&self, cmd: CommandV1) -> Outcome {
        self.try_apply(cmd).await.expect("apply")
    }

    /// Runs a statement (to set up or damage rows).
    pub(crate) async fn exec(&self, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.db.pool())
            .await
            .expect(sql);
    }

    /// The first column of the first row of `sql`, as an integer.
    pub(crate) async fn int(&self, sql: &str) -> i64 {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.db.pool())
            .await
            .expect(sql)
            .try_get(0)
            .expect(sql)
    }

    /// The first column of every row of `sql`, as text.
    pub(crate) async fn texts(&self, sql: &str) -> Vec<String> {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&self.db.pool())
            .await
            .expect(sql)
            .iter()
            .map(|r| r.try_get(0).expect(sql))
            .collect()
    }

    /// Begins an ingest of `id` by node 7 with a lease until `T + 60 s`.
    pub(crate) async fn begin(&self, id: FileId, path: &str) {
        let out = self
            .apply(CommandV1::BeginIngest {
                file_id: id,
                writer: 7,
                path: path.into(),
                append_to: None,
                lease_until_ms: T + 60_000,
                time_ms: T,
            })
            .await;
        assert_eq!(out, Outcome::Done);
    }

    /// Begins and commits a 100-byte file `id` (one segment, see [`commit`]) at `path`.
    pub(crate) async fn put(&self, id: FileId, path: &str, conflict: Conflict) -> Outcome {
        self.begin(id, path).await;
        self.apply(commit(id, path, conflict)).await
    }
}

/// A disk id.
pub(crate) fn disk(n: u128) -> DiskId {
    DiskId(Uuid::from_u128(n))
}

/// `copies:2` geometry.
pub(crate) fn geometry() -> Geometry {
    Geometry {
        codec: CodecId::Replica,
        k: 1,
        m: 1,
        block_size: 4096,
        part_capacity: 1 << 20,
    }
}

/// A segment `index` of `len` bytes whose hash is `index` repeated, on disks 1 and 2.
pub(crate) fn segment(index: u32, len: u64) -> NewSegment {
    NewSegment {
        index,
        data_len: len,
        blake3: format!("{index:064}"),
        parts: vec![Some(disk(1)), Some(disk(2))],
    }
}

/// The commit of a 100-byte file `id` at `path`, uploaded by `test`.
pub(crate) fn commit(id: FileId, path: &str, conflict: Conflict) -> CommandV1 {
    file_commit(id, path, conflict).with_intent()
}

/// What [`commit`] commits.
pub(crate) fn file_commit(id: FileId, path: &str, conflict: Conflict) -> FileCommit {
    FileCommit {
        file_id: id,
        path: path.into(),
        conflict,
        policy: "copies:2".into(),
        geometry: geometry(),
        size: 100,
        content_blake3: "c0ffee".into(),
        segments: vec![segment(0, 100)],
        source: SourceIdentity::Upload {
            client: "test".into(),
        },
        time_ms: T,
    }
}
