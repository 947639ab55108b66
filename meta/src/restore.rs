//! The metadata's side of backups and of recovery from the disks (`wormfs recover
//! --from-disks`): a consistent copy of the namespace with the log id it holds, the rows a
//! recovery compares with what the disks hold, commands applied offline (outside Raft, to a
//! database no node runs on), and the Raft state that makes a recovered database the state of
//! a one-voter cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::Context;
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, CommittedLeaderId, LogId, Membership};
use serde::{Deserialize, Serialize};

use crate::apply::{apply_command, kv_set};
use crate::command::{CommandV1, Outcome};
use crate::error::{DbContext, MetaError};
use crate::raft_store::read_applied;
use crate::row::Cols;
use crate::{open_pool, LogStore, MetaDb};
use sqlx::SqlSafeStr;
use wormfs_parts::ids::{DiskId, FileId, NodeId};

type Res<T> = Result<T, MetaError>;

/// The Raft log id a copy of the namespace holds (its last applied entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AppliedPoint {
    /// The entry's index.
    pub index: u64,
    /// The term of the leader that made it.
    pub term: u64,
    /// That leader's node id.
    pub leader: u64,
}

/// One part row of the namespace: where the metadata places a part, and its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartRow {
    /// The file.
    pub file_id: FileId,
    /// The segment.
    pub seg: u32,
    /// The part.
    pub part: u16,
    /// Its disk (`None`: missing).
    pub disk_id: Option<DiskId>,
    /// 0 healthy, 1 missing, 2 damaged.
    pub state: i64,
}

/// One segment row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentRow {
    /// The file.
    pub file_id: FileId,
    /// The segment.
    pub seg: u32,
    /// Its bytes.
    pub data_len: u64,
    /// Its BLAKE3, hex.
    pub blake3: String,
}

impl MetaDb {
    /// Writes a consistent copy of the namespace to `dest` (`VACUUM INTO`: one read
    /// transaction, so the applied log id inside matches the rows) and returns that log id.
    pub async fn copy_into(&self, dest: &Path) -> anyhow::Result<Option<AppliedPoint>> {
        let sql = format!(
            "VACUUM INTO '{}'",
            dest.display().to_string().replace('\'', "''")
        );
        sqlx::query(sqlx::AssertSqlSafe(sql).into_sql_str())
            .execute(&self.pool())
            .await
            .with_context(|| format!("copy the metadata into {}", dest.display()))?;
        let copy = open_pool(dest, 1).await?;
        let applied = read_applied(&copy).await;
        copy.close().await;
        for ext in ["-wal", "-shm"] {
            let mut p = dest.to_owned().into_os_string();
            p.push(ext);
            let _ = std::fs::remove_file(p);
        }
        Ok(applied?.0.map(point))
    }

    /// The log id of the last entry applied to this database.
    pub async fn applied_point(&self) -> anyhow::Result<Option<AppliedPoint>> {
        Ok(read_applied(&self.pool()).await?.0.map(point))
    }

    /// The largest number of parts beyond `k` of any committed file (its policy's
    /// redundancy), at least 1.
    pub async fn widest_redundancy(&self) -> Res<usize> {
        let rows = sqlx::query("SELECT DISTINCT policy FROM files")
            .fetch_all(&self.pool())
            .await
            .db("read the policies in use")?;
        let mut widest = 1;
        for r in &rows {
            let text: String = Cols::new(r, "files")
                .key("distinct policy")
                .col(0, "policy")?;
            if let Ok(p) = text.parse::<wormfs_parts::policy::Policy>() {
                widest = widest.max(p.redundancy());
            }
        }
        Ok(widest)
    }

    /// Every part row (recovery compares them with the disks).
    pub async fn all_part_rows(&self) -> Res<Vec<PartRow>> {
        let rows = sqlx::query("SELECT file_id, seg, part, disk_id, state FROM parts")
            .fetch_all(&self.pool())
            .await
            .db("read parts")?;
        rows.iter()
            .map(|r| {
                let r = Cols::new(r, "parts").key_col("file_id", 0);
                Ok(PartRow {
                    file_id: r.file_id(0, "file_id")?,
                    seg: r.int(1, "seg")?,
                    part: r.int(2, "part")?,
                    disk_id: r.opt_disk_id(3, "disk_id")?,
                    state: r.int(4, "state")?,
                })
            })
            .collect()
    }

    /// Every segment row.
    pub async fn all_segment_rows(&self) -> Res<Vec<SegmentRow>> {
        let rows = sqlx::query("SELECT file_id, seg, data_len, blake3 FROM segments")
            .fetch_all(&self.pool())
            .await
            .db("read segments")?;
        rows.iter()
            .map(|r| {
                let r = Cols::new(r, "segments").key_col("file_id", 0);
                Ok(SegmentRow {
                    file_id: r.file_id(0, "file_id")?,
                    seg: r.int(1, "seg")?,
                    data_len: r.int(2, "data_len")?,
                    blake3: r.col(3, "blake3")?,
                })
            })
            .collect()
    }

    /// Each committed file's size and the paths that name it.
    pub async fn file_paths(&self) -> Res<HashMap<FileId, (u64, Vec<String>)>> {
        let rows = sqlx::query(
            "WITH RECURSIVE p(id, path) AS (
                 SELECT id, '' FROM entries WHERE id = 1
                 UNION ALL
                 SELECT e.id, p.path || '/' || e.name FROM entries e JOIN p ON e.parent = p.id
                 WHERE e.id != 1)
             SELECT f.file_id, f.size, p.path FROM files f
             LEFT JOIN entries e ON e.file_id = f.file_id
             LEFT JOIN p ON p.id = e.id",
        )
        .fetch_all(&self.pool())
        .await
        .db("read the files' paths")?;
        let mut out: HashMap<FileId, (u64, Vec<String>)> = HashMap::new();
        for r in &rows {
            let r = Cols::new(r, "files").key_col("file_id", 0);
            let id = r.file_id(0, "file_id")?;
            let size: u64 = r.int(1, "size")?;
            let path: Option<String> = r.col(2, "path")?;
            let e = out.entry(id).or_insert((size, Vec::new()));
            e.1.extend(path);
        }
        Ok(out)
    }

    /// Applies `cmd` directly, outside Raft, in a transaction of its own; the applied log id
    /// is not touched. Only for a database no node runs on (recovery, offline tools).
    pub async fn apply_offline(&self, cmd: &CommandV1) -> anyhow::Result<Outcome> {
        let mut tx = self.pool().begin().await.context("begin")?;
        let outcome = apply_command(&mut tx, cmd).await?;
        tx.commit().await.context("commit")?;
        self.bump_generation();
        Ok(outcome)
    }

    /// Forgets a file's whole-content BLAKE3 (recovery knows only its segments' hashes).
    pub async fn forget_content_hash(&self, file_id: FileId) -> anyhow::Result<()> {
        sqlx::query("UPDATE files SET content_blake3 = NULL WHERE file_id = ?")
            .bind(file_id.to_bytes().to_vec())
            .execute(&self.pool())
            .await
            .context("forget a file's content hash")?;
        Ok(())
    }

    /// Records where a part is, and its state (recovery: a part found on another disk than
    /// the backup says, after a repair or a move the backup did not see).
    pub async fn set_part_row(&self, p: PartRow) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO parts (file_id, seg, part, disk_id, state) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (file_id, seg, part) DO UPDATE SET disk_id = excluded.disk_id,
             state = excluded.state",
        )
        .bind(p.file_id.to_bytes().to_vec())
        .bind(p.seg)
        .bind(p.part)
        .bind(p.disk_id.map(|d| d.to_string()))
        .bind(p.state)
        .execute(&self.pool())
        .await
        .context("record a part's location")?;
        Ok(())
    }
}

fn point(l: LogId<NodeId>) -> AppliedPoint {
    AppliedPoint {
        index: l.index,
        term: l.leader_id.term,
        leader: l.leader_id.node_id,
    }
}

/// The peer-network address `me` had in the membership a copy of the namespace holds.
pub async fn member_addr(db: &MetaDb, me: NodeId) -> anyhow::Result<Option<String>> {
    let (_, sm) = read_applied(&db.pool()).await?;
    Ok(sm.membership().get_node(&me).map(|n| n.addr.clone()))
}

/// Makes `meta_dir` (holding a recovered `metadata.db` and no `raft-log.db`) the state of a
/// cluster of one voter, `me`, reachable at `addr` on the peer network: the membership is
/// applied at log `index` in `term`, a snapshot of the database is taken there, and the new
/// log starts purged up to it. Started, the node elects itself; machines that join it get the snapshot
/// (never a replay of a log that does not hold the recovered namespace).
pub async fn make_single_voter(
    meta_dir: &Path,
    me: NodeId,
    addr: &str,
    index: u64,
    term: u64,
) -> anyhow::Result<()> {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    let log_path = meta_dir.join("raft-log.db");
    anyhow::ensure!(
        !log_path.exists(),
        "{} exists: recovery writes a new log only",
        log_path.display()
    );
    let membership = Membership::new(
        vec![BTreeSet::from([me])],
        BTreeMap::from([(me, BasicNode::new(addr))]),
    );
    // After the old cluster's entries (so that new backups sort after old ones), in a term
    // of its own that this node holds the vote of.
    let log_id = LogId::new(CommittedLeaderId::new(term, me), index);
    let db = MetaDb::open(&meta_dir.join("metadata.db")).await?;
    {
        let mut c = db.pool().acquire().await.context("open the metadata")?;
        let sm = openraft::StoredMembership::new(Some(log_id), membership);
        kv_set(&mut c, "raft_membership", &serde_json::to_string(&sm)?).await?;
        kv_set(
            &mut c,
            "raft_last_applied",
            &serde_json::to_string(&Some(log_id))?,
        )
        .await?;
    }
    let snapshots = meta_dir.join("snapshots");
    wormfs_parts::fsutil::create_private_dir_all(&snapshots)
        .with_context(|| format!("create {}", snapshots.display()))?;
    let mut sm = crate::StateMachineStore::new(db.clone(), snapshots).await?;
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .map_err(|e| anyhow::anyhow!("snapshot the recovered metadata: {e}"))?;
    db.close().await;
    let mut log = LogStore::open(&log_path).await?;
    log.save_vote(&openraft::Vote::new_committed(term, me))
        .await
        .map_err(|e| anyhow::anyhow!("start the new log: {e}"))?;
    log.purge(log_id)
        .await
        .map_err(|e| anyhow::anyhow!("start the new log: {e}"))?;
    log.close().await;
    Ok(())
}
