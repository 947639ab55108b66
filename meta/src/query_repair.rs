//! Read-side queries for self-healing: the repair queue, redundancy by tolerance, the files at
//! risk, what a disk's loss would cost, and the parts due for a scrub.
//!
//! A segment's tolerance is the number of its parts that count (healthy, on a disk that is
//! `up` or `draining`) beyond the `k` it needs: 0 means one more lost part loses data, and a
//! negative number means it cannot be read until a disk comes back.

use serde::{Deserialize, Serialize};

use super::MetaDb;
use crate::apply_repair::{
    KV_BRAKES, KV_REPAIR_PAUSED, KV_SCRUB_REQUESTED_DEEP, KV_SCRUB_REQUESTED_MS,
};
use crate::command::{DiskStatus, PartRef, SegmentRef};
use crate::error::{DbContext, Res};
use crate::row::Cols;
use wormfs_parts::ids::{DiskId, FileId, NodeId};

/// A queued repair.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueuedRepair {
    /// The segment.
    pub segment: SegmentRef,
    /// Its tolerance when last computed.
    pub tolerance: i64,
    /// When it may be tried next (ms since epoch).
    pub due_ms: u64,
    /// Failed attempts.
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: String,
    /// Why it was queued.
    pub reason: String,
    /// When it was queued.
    pub added_ms: u64,
    /// The node repairing it, while its claim runs.
    pub claimed_by: Option<NodeId>,
    /// The claim's end.
    pub claim_until_ms: u64,
}

/// How many segments have each tolerance.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ToleranceCount {
    /// Parts beyond `k` that count (negative: unreadable now).
    pub tolerance: i64,
    /// Segments with it.
    pub segments: u64,
    /// Of those, segments below their policy's full redundancy.
    pub below_policy: u64,
}

/// A file whose weakest segment is at `tolerance`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileAtRisk {
    /// The file.
    pub file_id: FileId,
    /// One of its paths (empty if it has none).
    pub path: String,
    /// Its weakest segment's tolerance.
    pub tolerance: i64,
}

/// What the loss of some disks would cost now.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Impact {
    /// Segments with a part on those disks.
    pub segments: u64,
    /// Segments that could not be read any more.
    pub unreadable_segments: u64,
    /// Segments left at tolerance 0.
    pub zero_tolerance_segments: u64,
    /// Files that could not be read any more (first ones).
    pub unreadable_files: Vec<FileAtRisk>,
    /// Files left at tolerance 0 (first ones).
    pub zero_tolerance_files: Vec<FileAtRisk>,
}

/// A disk's replicated state.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskStateRecord {
    /// The disk.
    pub disk_id: DiskId,
    /// Its machine.
    pub node_id: NodeId,
    /// Its path there.
    pub path: String,
    /// Its state.
    pub state: DiskStatus,
    /// Why.
    pub reason: String,
    /// Since when (ms since epoch).
    pub since_ms: u64,
}

/// A part to scrub, with when it was last verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartToVerify {
    /// The part.
    pub part: PartRef,
    /// When it was last verified (written or scrubbed).
    pub verified_ms: u64,
}

/// A segment's parts with their tolerance, for queries below: `(file_id, seg, k, m, avail)`.
const SEGMENT_AVAILABILITY: &str = "SELECT s.file_id AS file_id, s.seg AS seg,
        json_extract(f.geometry, '$.k') AS k, json_extract(f.geometry, '$.m') AS m,
        (SELECT COUNT(*) FROM parts p JOIN disks d ON d.disk_id = p.disk_id
          WHERE p.file_id = s.file_id AND p.seg = s.seg AND p.state = 0
            AND d.state IN ('up', 'draining')) AS avail
     FROM segments s JOIN files f ON f.file_id = s.file_id";

impl MetaDb {
    /// Every disk's replicated state.
    pub async fn disk_states(&self) -> Res<Vec<DiskStateRecord>> {
        let rows = sqlx::query(
            "SELECT disk_id, node_id, path, state, reason, state_since_ms FROM disks ORDER BY path",
        )
        .fetch_all(&self.pool())
        .await
        .db("read disk states")?;
        rows.iter()
            .map(|r| {
                let r = Cols::new(r, "disks").key_col("disk_id", 0);
                let state: String = r.col(3, "state")?;
                Ok(DiskStateRecord {
                    disk_id: r.disk_id(0, "disk_id")?,
                    node_id: r.id_bits(1, "node_id")?,
                    path: r.col(2, "path")?,
                    state: state.parse().map_err(|e: String| r.corrupt("state", e))?,
                    reason: r.col(4, "reason")?,
                    since_ms: r.int(5, "state_since_ms")?,
                })
            })
            .collect()
    }

    /// The repair queue, most endangered first (lowest tolerance, then oldest), at most
    /// `limit` entries.
    pub async fn repair_queue(&self, limit: u32) -> Res<Vec<QueuedRepair>> {
        self.queue_where("1", 0, limit).await
    }

    /// Queued repairs that failed at least `min_attempts` times in a row (stuck), most
    /// endangered first, at most `limit`.
    pub async fn stuck_repairs(&self, min_attempts: u32, limit: u32) -> Res<Vec<QueuedRepair>> {
        self.queue_where(&format!("attempts >= {min_attempts}"), 0, limit)
            .await
    }

    /// How many parts were found damaged (corrupt or unreadable on a readable disk) and are
    /// not rewritten yet.
    pub async fn damaged_parts(&self) -> Res<u64> {
        let r = sqlx::query("SELECT COUNT(*) FROM parts WHERE state = 2")
            .fetch_one(&self.pool())
            .await
            .db("count damaged parts")?;
        Cols::new(&r, "parts").key("damaged").int(0, "count")
    }

    /// Queued repairs that node `me` may start at `now_ms` (due, and not claimed by another
    /// node's live claim: a node restarted after a crash takes its own claims back at once),
    /// most endangered first.
    pub async fn due_repairs(&self, me: NodeId, now_ms: u64, limit: u32) -> Res<Vec<QueuedRepair>> {
        let filter = format!(
            "due_ms <= ?1 AND (claimed_by IS NULL OR claimed_by = {} OR claim_until_ms <= ?1)",
            me as i64
        );
        self.queue_where(&filter, now_ms, limit).await
    }

    async fn queue_where(&self, filter: &str, now_ms: u64, limit: u32) -> Res<Vec<QueuedRepair>> {
        let sql = format!(
            "SELECT file_id, seg, tolerance, due_ms, attempts, last_error, reason, added_ms, claimed_by, claim_until_ms
             FROM repair_queue WHERE {filter} ORDER BY tolerance, added_ms, file_id, seg LIMIT ?2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms as i64)
            .bind(i64::from(limit))
            .fetch_all(&self.pool())
            .await
            .db("read the repair queue")?;
        rows.iter()
            .map(|r| {
                let r = Cols::new(r, "repair_queue").key_col("file_id", 0);
                Ok(QueuedRepair {
                    segment: SegmentRef {
                        file_id: r.file_id(0, "file_id")?,
                        seg: r.int(1, "seg")?,
                    },
                    tolerance: r.col(2, "tolerance")?,
                    due_ms: r.int(3, "due_ms")?,
                    attempts: r.int(4, "attempts")?,
                    last_error: r.col(5, "last_error")?,
                    reason: r.col(6, "reason")?,
                    added_ms: r.int(7, "added_ms")?,
                    claimed_by: r.opt_int(8, "claimed_by")?,
                    claim_until_ms: r.int(9, "claim_until_ms")?,
                })
            })
            .collect()
    }

    /// The queue's size by tolerance, lowest first: `(tolerance, segments)`.
    pub async fn repair_queue_counts(&self) -> Res<Vec<(i64, u64)>> {
        let rows = sqlx::query(
            "SELECT tolerance, COUNT(*) FROM repair_queue GROUP BY tolerance ORDER BY tolerance",
        )
        .fetch_all(&self.pool())
        .await
        .db("count the repair queue")?;
        rows.iter()
            .map(|r| {
                let r = Cols::new(r, "repair_queue").key("counts");
                Ok((r.col(0, "tolerance")?, r.int(1, "count")?))
            })
            .collect()
    }

    /// Logical bytes of the queued segments (for an estimate of the time left).
    pub async fn repair_queue_bytes(&self) -> Res<u64> {
        let r = sqlx::query(
            "SELECT COALESCE(SUM(s.data_len), 0) FROM repair_queue q
             JOIN segments s ON s.file_id = q.file_id AND s.seg = q.seg",
        )
        .fetch_one(&self.pool())
        .await
        .db("sum the repair queue")?;
        Cols::new(&r, "segments").key("queued bytes").int(0, "sum")
    }

    /// Segments by tolerance, lowest first.
    pub async fn redundancy(&self) -> Res<Vec<ToleranceCount>> {
        let sql = format!(
            "WITH seg AS ({SEGMENT_AVAILABILITY})
             SELECT avail - k, COUNT(*), SUM(CASE WHEN avail < k + m THEN 1 ELSE 0 END)
             FROM seg GROUP BY avail - k ORDER BY avail - k"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool())
            .await
            .db("count segments by tolerance")?;
        rows.iter()
            .map(|r| {
                let r = Cols::new(r, "segments").key("by tolerance");
                Ok(ToleranceCount {
                    tolerance: r.col(0, "tolerance")?,
                    segments: r.int(1, "count")?,
                    below_policy: r.int(2, "below policy")?,
                })
            })
            .collect()
    }

    /// Files whose weakest segment's tolerance is at most `max_tolerance`, weakest first, at
    /// most `limit`.
    pub async fn files_at_risk(&self, max_tolerance: i64, limit: u32) -> Res<Vec<FileAtRisk>> {
        let sql = format!(
            "WITH seg AS ({SEGMENT_AVAILABILITY})
             SELECT file_id, MIN(avail - k) AS t FROM seg GROUP BY file_id
             HAVING t <= ? ORDER BY t, file_id LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(max_tolerance)
            .bind(i64::from(limit))
            .fetch_all(&self.pool())
            .await
            .db("read the files at risk")?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let r = Cols::new(r, "segments").key("files at risk");
            let file_id = r.file_id(0, "file_id")?;
            out.push(FileAtRisk {
                file_id,
                path: self.path_of_file(file_id).await?.unwrap_or_default(),
                tolerance: r.col(1, "tolerance")?,
            });
        }
        Ok(out)
    }

    /// How many files have a segment at tolerance `max_tolerance` or below.
    pub async fn count_files_at_risk(&self, max_tolerance: i64) -> Res<u64> {
        let sql = format!(
            "WITH seg AS ({SEGMENT_AVAILABILITY})
             SELECT COUNT(DISTINCT file_id) FROM seg WHERE avail - k <= ?"
        );
        let r = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(max_tolerance)
            .fetch_one(&self.pool())
            .await
            .db("count the files at risk")?;
        Cols::new(&r, "segments")
            .key("files at risk")
            .int(0, "count")
    }

    /// One path naming `file_id` (a copy may give it several), else the path it had when it
    /// went to the trash (the newest trash entry's), `None` if none does.
    pub async fn path_of_file(&self, file_id: FileId) -> Res<Option<String>> {
        let mut c = self.pool().acquire().await.db("find a file's path")?;
        path_of_file_in(&mut c, file_id).await
    }

    /// What losing `disks` now would cost (for `wormfs disk impact`, the removal checks and
    /// the brakes), listing at most `limit` files of each kind.
    pub async fn impact(&self, disks: &[DiskId], limit: u32) -> Res<Impact> {
        if disks.is_empty() {
            return Ok(Impact::default());
        }
        let ids = serde_json::to_string(&disks.iter().map(ToString::to_string).collect::<Vec<_>>())
            .unwrap_or_else(|_| "[]".into());
        let sql = "WITH gone(disk_id) AS (SELECT value FROM json_each(?1)),
             seg AS (
               SELECT s.file_id AS file_id, s.seg AS seg, json_extract(f.geometry, '$.k') AS k,
                 (SELECT COUNT(*) FROM parts p JOIN disks d ON d.disk_id = p.disk_id
                   WHERE p.file_id = s.file_id AND p.seg = s.seg AND p.state = 0
                     AND d.state IN ('up', 'draining') AND p.disk_id NOT IN gone) AS left_after
               FROM segments s JOIN files f ON f.file_id = s.file_id
               WHERE EXISTS (SELECT 1 FROM parts p WHERE p.file_id = s.file_id AND p.seg = s.seg
                              AND p.disk_id IN gone))
             SELECT file_id, left_after - k FROM seg";
        let rows = sqlx::query(sql)
            .bind(ids)
            .fetch_all(&self.pool())
            .await
            .db("compute a disk's impact")?;
        let mut imp = Impact::default();
        let mut worst: std::collections::BTreeMap<FileId, i64> = Default::default();
        for r in &rows {
            let r = Cols::new(r, "segments").key("impact");
            let f = r.file_id(0, "file_id")?;
            let t: i64 = r.col(1, "tolerance")?;
            imp.segments += 1;
            if t < 0 {
                imp.unreadable_segments += 1;
            } else if t == 0 {
                imp.zero_tolerance_segments += 1;
            }
            let w = worst.entry(f).or_insert(t);
            *w = (*w).min(t);
        }
        for (f, t) in worst {
            let list = if t < 0 {
                &mut imp.unreadable_files
            } else if t == 0 {
                &mut imp.zero_tolerance_files
            } else {
                continue;
            };
            if list.len() < limit as usize {
                list.push(FileAtRisk {
                    file_id: f,
                    path: self.path_of_file(f).await?.unwrap_or_default(),
                    tolerance: t,
                });
            }
        }
        Ok(imp)
    }

    /// About how many bytes of parts the metadata places on `disk` (each part's data, without
    /// headers).
    pub async fn bytes_on_disk(&self, disk: DiskId) -> Res<u64> {
        let r = sqlx::query(
            "SELECT COALESCE(SUM((s.data_len + json_extract(f.geometry, '$.k') - 1) / json_extract(f.geometry, '$.k')), 0)
             FROM parts p JOIN segments s ON s.file_id = p.file_id AND s.seg = p.seg
             JOIN files f ON f.file_id = p.file_id WHERE p.disk_id = ?",
        )
        .bind(disk.to_string())
        .fetch_one(&self.pool())
        .await
        .db("sum the parts on a disk")?;
        Cols::new(&r, "parts")
            .key(format!("disk {disk}"))
            .int(0, "bytes")
    }

    /// The most parts any stored file's segments have (`k + m`), `None` without files.
    pub async fn widest_policy(&self) -> Res<Option<usize>> {
        let r = sqlx::query(
            "SELECT MAX(json_extract(geometry, '$.k') + json_extract(geometry, '$.m')) FROM files",
        )
        .fetch_one(&self.pool())
        .await
        .db("find the widest policy")?;
        Cols::new(&r, "files")
            .key("widest policy")
            .opt_int(0, "width")
    }

    /// The parts of segment `s` to move off their disks: `(part, disk to leave)`.
    pub async fn pending_moves(&self, s: SegmentRef) -> Res<Vec<(u16, DiskId)>> {
        let rows = sqlx::query(
            "SELECT m.part, m.from_disk FROM part_moves m JOIN parts p ON p.file_id = m.file_id
               AND p.seg = m.seg AND p.part = m.part AND p.disk_id = m.from_disk
             WHERE m.file_id = ? AND m.seg = ? ORDER BY m.part",
        )
        .bind(s.file_id.to_bytes().to_vec())
        .bind(i64::from(s.seg))
        .fetch_all(&self.pool())
        .await
        .db("read a segment's moves")?;
        rows.iter()
            .map(|r| {
                let r = Cols::new(r, "part_moves").key(format!("segment {s}"));
                Ok((r.int(0, "part")?, r.disk_id(1, "from_disk")?))
            })
            .collect()
    }

    /// Segments with parts still asked to move (at most `limit`): a machine back makes them
    /// due at once (a move that waited for it).
    pub async fn segments_with_moves(&self, limit: u32) -> Res<Vec<SegmentRef>> {
        let rows = sqlx::query(
            "SELECT DISTINCT m.file_id, m.seg FROM part_moves m JOIN parts p ON p.file_id = m.file_id
               AND p.seg = m.seg AND p.part = m.part AND p.disk_id = m.from_disk
             ORDER BY m.file_id, m.seg LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool())
        .await
        .db("read the segments with moves")?;
        rows.iter()
            .map(|r| {
                let r = Cols::new(r, "part_moves").key_col("file_id", 0);
                Ok(SegmentRef {
                    file_id: r.file_id(0, "file_id")?,
                    seg: r.int(1, "seg")?,
                })
            })
            .collect()
    }

    /// Parts still to move, and about how many bytes they hold.
    pub async fn moves_left(&self) -> Res<(u64, u64)> {
        let r = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM((s.data_len + json_extract(f.geometry, '$.k') - 1) / json_extract(f.geometry, '$.k')), 0)
             FROM part_moves m JOIN parts p ON p.file_id = m.file_id AND p.seg = m.seg
               AND p.part = m.part AND p.disk_id = m.from_disk
             JOIN segments s ON s.file_id = m.file_id AND s.seg = m.seg
             JOIN files f ON f.file_id = m.file_id",
        )
        .fetch_one(&self.pool())
        .await
        .db("count the moves left")?;
        let r = Cols::new(&r, "part_moves").key("moves left");
        Ok((r.int(0, "count")?, r.int(1, "bytes")?))
    }

    /// Healthy parts on `disk` with about how many bytes each holds, largest first, at most
    /// `limit`.
    pub async fn parts_with_sizes(&self, disk: DiskId, limit: u32) -> Res<Vec<(PartRef, u64)>> {
        let rows = sqlx::query(
            "SELECT p.file_id, p.seg, p.part, (s.data_len + json_extract(f.geometry, '$.k') - 1) / json_extract(f.geometry, '$.k') AS b
             FROM parts p JOIN segments s ON s.file_id = p.file_id AND s.seg = p.seg
             JOIN files f ON f.file_id = p.file_id
             WHERE p.disk_id = ? AND p.state = 0
             ORDER BY b DESC, p.file_id, p.seg, p.part LIMIT ?",
        )
        .bind(disk.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool())
        .await
        .db("read a disk's parts")?;
        rows.iter()
            .map(|r| {
                let r = Cols::new(r, "parts").key_col("file_id", 0);
                Ok((
                    PartRef {
                        file_id: r.file_id(0, "file_id")?,
                        seg: r.int(1, "seg")?,
                        part: r.int(2, "part")?,
                        disk_id: disk,
                    },
                    r.int(3, "bytes")?,
                ))
            })
            .collect()
    }

    /// The smallest number of parity parts (`m`) among stored files (`None` without files).
    pub async fn smallest_m(&self) -> Res<Option<u64>> {
        let r = sqlx::query("SELECT MIN(json_extract(geometry, '$.m')) FROM files")
            .fetch_one(&self.pool())
            .await
            .db("find the smallest m")?;
        Cols::new(&r, "files").key("smallest m").opt_int(0, "m")
    }

    /// The parts on `disks` last verified before `before_ms`, oldest first, at most `limit`.
    pub async fn parts_to_verify(
        &self,
        disks: &[DiskId],
        before_ms: u64,
        limit: u32,
    ) -> Res<Vec<PartToVerify>> {
        let ids = serde_json::to_string(&disks.iter().map(ToString::to_string).collect::<Vec<_>>())
            .unwrap_or_else(|_| "[]".into());
        let rows = sqlx::query(
            "SELECT file_id, seg, part, disk_id, verified_ms FROM parts
             WHERE disk_id IN (SELECT value FROM json_each(?)) AND state = 0 AND verified_ms < ?
             ORDER BY verified_ms, file_id, seg, part LIMIT ?",
        )
        .bind(ids)
        .bind(before_ms as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool())
        .await
        .db("read the parts due for a scrub")?;
        rows.iter()
            .map(|r| {
                let r = Cols::new(r, "parts").key_col("file_id", 0);
                Ok(PartToVerify {
                    part: PartRef {
                        file_id: r.file_id(0, "file_id")?,
                        seg: r.int(1, "seg")?,
                        part: r.int(2, "part")?,
                        disk_id: r.disk_id(3, "disk_id")?,
                    },
                    verified_ms: r.int(4, "verified_ms")?,
                })
            })
            .collect()
    }

    /// Counts of the healthy parts on `disks`: `(all, verified at or after since_ms, bytes of
    /// those not yet verified, the oldest verification)`.
    pub async fn scrub_progress(
        &self,
        disks: &[DiskId],
        since_ms: u64,
    ) -> Res<(u64, u64, u64, Option<u64>)> {
        let ids = serde_json::to_string(&disks.iter().map(ToString::to_string).collect::<Vec<_>>())
            .unwrap_or_else(|_| "[]".into());
        let r = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN p.verified_ms >= ?2 THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN p.verified_ms < ?2 THEN s.data_len / json_extract(f.geometry, '$.k') ELSE 0 END), 0),
                    MIN(p.verified_ms)
             FROM parts p JOIN segments s ON s.file_id = p.file_id AND s.seg = p.seg
             JOIN files f ON f.file_id = p.file_id
             WHERE p.disk_id IN (SELECT value FROM json_each(?1)) AND p.state = 0",
        )
        .bind(ids)
        .bind(since_ms as i64)
        .fetch_one(&self.pool())
        .await
        .db("measure scrub progress")?;
        let r = Cols::new(&r, "parts").key("scrub progress");
        Ok((
            r.int(0, "count")?,
            r.int(1, "verified")?,
            r.int(2, "bytes left")?,
            r.opt_int(3, "oldest")?,
        ))
    }

    /// Whether repair is paused cluster-wide.
    pub async fn repair_paused(&self) -> Res<bool> {
        Ok(self.kv(KV_REPAIR_PAUSED).await?.as_deref() == Some("1"))
    }

    /// The last scrub request: `(when, deep)`.
    pub async fn scrub_request(&self) -> Res<Option<(u64, bool)>> {
        let Some(ms) = self.kv(KV_SCRUB_REQUESTED_MS).await? else {
            return Ok(None);
        };
        let deep = self.kv(KV_SCRUB_REQUESTED_DEEP).await?.as_deref() == Some("1");
        Ok(ms.parse().ok().map(|ms| (ms, deep)))
    }

    /// The brakes holding automatic `out` decisions back now.
    pub async fn brakes(&self) -> Res<Vec<String>> {
        Ok(self
            .kv(KV_BRAKES)
            .await?
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default())
    }

    async fn kv(&self, key: &str) -> Res<Option<String>> {
        let mut c = self.pool().acquire().await.db("acquire a connection")?;
        crate::apply::kv_get(&mut c, key).await
    }
}

/// One path naming `file_id` (a copy may give it several), else the path it had when it
/// went to the trash (the newest trash entry's), `None` if none does.
pub(crate) async fn path_of_file_in(
    c: &mut sqlx::SqliteConnection,
    file_id: FileId,
) -> Res<Option<String>> {
    let rows = sqlx::query(
        "WITH RECURSIVE up(id, parent, name, depth) AS (
            SELECT id, parent, name, 0 FROM entries
             WHERE id = (SELECT MIN(id) FROM entries WHERE file_id = ?)
            UNION ALL
            SELECT e.id, e.parent, e.name, up.depth + 1 FROM entries e JOIN up ON e.id = up.parent
             WHERE up.parent != 0 AND up.depth < 4096)
         SELECT name FROM up WHERE id != 1 ORDER BY depth DESC",
    )
    .bind(file_id.to_bytes().to_vec())
    .fetch_all(&mut *c)
    .await
    .db("find a file's path")?;
    if rows.is_empty() {
        let trashed = sqlx::query(
            "SELECT path FROM trash WHERE file_id = ? ORDER BY deleted_ms DESC, id DESC LIMIT 1",
        )
        .bind(file_id.to_bytes().to_vec())
        .fetch_optional(&mut *c)
        .await
        .db("find a file's path in the trash")?;
        return trashed
            .map(|r| {
                Cols::new(&r, "trash")
                    .key(format!("file {file_id}"))
                    .col(0, "path")
            })
            .transpose();
    }
    let mut path = String::new();
    for r in &rows {
        let name: String = Cols::new(r, "entries")
            .key(format!("file {file_id}"))
            .col(0, "name")?;
        path.push('/');
        path.push_str(&name);
    }
    Ok(Some(path))
}
