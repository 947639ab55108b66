//! Applying the self-healing commands: disk states, the repair queue, repaired parts, scrub
//! verifications and the cluster-wide repair and scrub settings.
//!
//! The queue holds segments, not parts: the repairing node looks at the segment as a whole
//! when it takes it (which parts are lost, damaged or on a draining disk), so a segment queued
//! twice, or for two reasons, is still one job.

use sqlx::SqliteConnection;

use crate::apply::kv_set;
use crate::command::{DiskStatus, Outcome, PartRef, Rejection, RepairedPart, SegmentRef};
use crate::error::{DbContext, Res};
use crate::row::Cols;
use wormfs_parts::ids::{DiskId, NodeId};

macro_rules! reject {
    ($e:expr) => {
        return Ok(Outcome::Rejected($e))
    };
}

/// Settings kept in `kv`.
pub(crate) const KV_REPAIR_PAUSED: &str = "repair.paused";
pub(crate) const KV_SCRUB_REQUESTED_MS: &str = "scrub.requested_ms";
pub(crate) const KV_SCRUB_REQUESTED_DEEP: &str = "scrub.requested_deep";
pub(crate) const KV_BRAKES: &str = "repair.brakes";

/// Parts of the queued segment `repair_queue.(file_id, seg)` that count: healthy, on a disk
/// whose state is `up` or `draining`.
pub(crate) const AVAILABLE_PARTS: &str =
    "(SELECT COUNT(*) FROM parts p JOIN disks d ON d.disk_id = p.disk_id
      WHERE p.file_id = repair_queue.file_id AND p.seg = repair_queue.seg AND p.state = 0
        AND d.state IN ('up', 'draining'))";

/// The data parts (`k`) of the queued segment's file.
const K_OF_QUEUED: &str =
    "(SELECT json_extract(f.geometry, '$.k') FROM files f WHERE f.file_id = repair_queue.file_id)";

fn seg_key(s: &SegmentRef) -> (Vec<u8>, i64) {
    (s.file_id.to_bytes().to_vec(), i64::from(s.seg))
}

/// Recomputes the tolerance of the queued segments chosen by `filter` (a condition on
/// `repair_queue` with one `?`, bound to `bind`).
async fn recompute_tolerance(c: &mut SqliteConnection, filter: &str, bind: &str) -> Res<()> {
    let sql = format!(
        "UPDATE repair_queue SET tolerance = {AVAILABLE_PARTS} - COALESCE({K_OF_QUEUED}, 0) WHERE {filter}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(bind.to_owned())
        .execute(&mut *c)
        .await
        .db("recompute repair priorities")?;
    Ok(())
}

/// Queues a segment (or, if queued, makes it due by `due_ms` at the latest).
async fn enqueue(c: &mut SqliteConnection, s: &SegmentRef, reason: &str, time_ms: u64) -> Res<()> {
    let (id, seg) = seg_key(s);
    sqlx::query(
        "INSERT INTO repair_queue (file_id, seg, tolerance, due_ms, attempts, last_error, reason, added_ms, claimed_by, claim_until_ms)
         VALUES (?, ?, 0, ?, 0, '', ?, ?, NULL, 0)
         ON CONFLICT (file_id, seg) DO UPDATE SET due_ms = MIN(due_ms, excluded.due_ms)",
    )
    .bind(&id)
    .bind(seg)
    .bind(time_ms as i64)
    .bind(reason)
    .bind(time_ms as i64)
    .execute(&mut *c)
    .await
    .db("queue a segment for repair")?;
    recompute_one(c, &id, seg).await
}

/// Recomputes one queued segment's tolerance.
async fn recompute_one(c: &mut SqliteConnection, id: &[u8], seg: i64) -> Res<()> {
    let sql = format!(
        "UPDATE repair_queue SET tolerance = {AVAILABLE_PARTS} - COALESCE({K_OF_QUEUED}, 0) WHERE file_id = ? AND seg = ?"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(seg)
        .execute(&mut *c)
        .await
        .db("recompute a repair priority")?;
    Ok(())
}

/// Queues the segments of a new file that were committed with missing parts.
pub(crate) async fn enqueue_missing(
    c: &mut SqliteConnection,
    segments: &[SegmentRef],
    time_ms: u64,
) -> Res<()> {
    for s in segments {
        enqueue(c, s, "written with missing parts", time_ms).await?;
    }
    Ok(())
}

/// Drops a file's queued segments (the file is gone).
pub(crate) async fn drop_queued_file(c: &mut SqliteConnection, file: &[u8]) -> Res<()> {
    sqlx::query("DELETE FROM repair_queue WHERE file_id = ?")
        .bind(file)
        .execute(&mut *c)
        .await
        .db("drop a file's repairs")?;
    Ok(())
}

/// `SetDiskState`.
pub(crate) async fn set_disk_state(
    c: &mut SqliteConnection,
    disk: DiskId,
    state: DiskStatus,
    reason: &str,
    time_ms: u64,
) -> Res<Outcome> {
    let id = disk.to_string();
    let Some(row) = sqlx::query("SELECT state FROM disks WHERE disk_id = ?")
        .bind(&id)
        .fetch_optional(&mut *c)
        .await
        .db("read a disk's state")?
    else {
        reject!(Rejection::NotFound(format!("disk {disk}")));
    };
    let old: String = Cols::new(&row, "disks")
        .key(format!("disk_id {disk}"))
        .col(0, "state")?;
    sqlx::query(
        "UPDATE disks SET state = ?, reason = ?,
            state_since_ms = CASE WHEN state = ? THEN state_since_ms ELSE ? END
         WHERE disk_id = ?",
    )
    .bind(state.as_str())
    .bind(reason)
    .bind(state.as_str())
    .bind(time_ms as i64)
    .bind(&id)
    .execute(&mut *c)
    .await
    .db("set a disk's state")?;
    if old != state.as_str() && (state.lost() || state == DiskStatus::Draining) {
        let why = match state {
            DiskStatus::Draining => format!("disk {disk} draining"),
            _ => format!("disk {disk} {state}: {reason}"),
        };
        sqlx::query(
            "INSERT INTO repair_queue (file_id, seg, tolerance, due_ms, attempts, last_error, reason, added_ms, claimed_by, claim_until_ms)
             SELECT DISTINCT file_id, seg, 0, ?, 0, '', ?, ?, NULL, 0 FROM parts WHERE disk_id = ?
             ON CONFLICT (file_id, seg) DO UPDATE SET due_ms = MIN(due_ms, excluded.due_ms)",
        )
        .bind(time_ms as i64)
        .bind(&why)
        .bind(time_ms as i64)
        .bind(&id)
        .execute(&mut *c)
        .await
        .db("queue a disk's segments for repair")?;
    }
    recompute_tolerance(
        c,
        "EXISTS (SELECT 1 FROM parts p WHERE p.file_id = repair_queue.file_id AND p.seg = repair_queue.seg AND p.disk_id = ?)",
        &id,
    )
    .await?;
    Ok(Outcome::Done)
}

/// `QueueRepair`.
pub(crate) async fn queue_repair(
    c: &mut SqliteConnection,
    segments: &[SegmentRef],
    damaged: &[PartRef],
    reason: &str,
    time_ms: u64,
) -> Res<Outcome> {
    for p in damaged {
        sqlx::query(
            "UPDATE parts SET state = 2 WHERE file_id = ? AND seg = ? AND part = ? AND disk_id = ?",
        )
        .bind(p.file_id.to_bytes().to_vec())
        .bind(i64::from(p.seg))
        .bind(i64::from(p.part))
        .bind(p.disk_id.to_string())
        .execute(&mut *c)
        .await
        .db("mark a part damaged")?;
    }
    let all = segments
        .iter()
        .copied()
        .chain(damaged.iter().map(|p| SegmentRef {
            file_id: p.file_id,
            seg: p.seg,
        }));
    for s in all {
        if segment_exists(c, &s).await? {
            enqueue(c, &s, reason, time_ms).await?;
        }
    }
    Ok(Outcome::Done)
}

async fn segment_exists(c: &mut SqliteConnection, s: &SegmentRef) -> Res<bool> {
    let (id, seg) = seg_key(s);
    Ok(
        sqlx::query("SELECT 1 FROM segments WHERE file_id = ? AND seg = ?")
            .bind(id)
            .bind(seg)
            .fetch_optional(&mut *c)
            .await
            .db("find a segment")?
            .is_some(),
    )
}

/// `ClaimRepair`.
pub(crate) async fn claim_repair(
    c: &mut SqliteConnection,
    s: &SegmentRef,
    node: NodeId,
    until_ms: u64,
    now_ms: u64,
) -> Res<Outcome> {
    let (id, seg) = seg_key(s);
    if !segment_exists(c, s).await? {
        sqlx::query("DELETE FROM repair_queue WHERE file_id = ? AND seg = ?")
            .bind(&id)
            .bind(seg)
            .execute(&mut *c)
            .await
            .db("drop a repair of a deleted segment")?;
        reject!(Rejection::NotFound(format!("segment {s}")));
    }
    let Some(row) = sqlx::query(
        "SELECT claimed_by, claim_until_ms FROM repair_queue WHERE file_id = ? AND seg = ?",
    )
    .bind(&id)
    .bind(seg)
    .fetch_optional(&mut *c)
    .await
    .db("read a repair claim")?
    else {
        reject!(Rejection::NotFound(format!("segment {s} is not queued")));
    };
    let r = Cols::new(&row, "repair_queue").key(format!("segment {s}"));
    let by: Option<i64> = r.col(0, "claimed_by")?;
    let until: i64 = r.col(1, "claim_until_ms")?;
    if let Some(by) = by {
        if by as u64 != node && until > now_ms as i64 {
            reject!(Rejection::Claimed(format!(
                "segment {s} is being repaired by node {}",
                by as u64
            )));
        }
    }
    sqlx::query(
        "UPDATE repair_queue SET claimed_by = ?, claim_until_ms = ? WHERE file_id = ? AND seg = ?",
    )
    .bind(node as i64)
    .bind(until_ms as i64)
    .bind(&id)
    .bind(seg)
    .execute(&mut *c)
    .await
    .db("claim a repair")?;
    Ok(Outcome::Done)
}

/// Whether a segment still has work: a part missing or damaged, on an unknown disk, on a
/// disk that is out, removed or draining, or still to move off its disk.
async fn needs_work(c: &mut SqliteConnection, s: &SegmentRef) -> Res<bool> {
    let (id, seg) = seg_key(s);
    Ok(sqlx::query(
        "SELECT 1 FROM parts p LEFT JOIN disks d ON d.disk_id = p.disk_id
         WHERE p.file_id = ?1 AND p.seg = ?2
           AND (p.state != 0 OR p.disk_id IS NULL OR d.disk_id IS NULL
                OR d.state IN ('out', 'removed', 'draining')
                OR EXISTS (SELECT 1 FROM part_moves m WHERE m.file_id = p.file_id
                           AND m.seg = p.seg AND m.part = p.part AND m.from_disk = p.disk_id))
         LIMIT 1",
    )
    .bind(id)
    .bind(seg)
    .fetch_optional(&mut *c)
    .await
    .db("look for work on a segment")?
    .is_some())
}

/// `CommitRepair`.
pub(crate) async fn commit_repair(
    c: &mut SqliteConnection,
    s: &SegmentRef,
    parts: &[RepairedPart],
    cancelled_moves: &[u16],
    time_ms: u64,
) -> Res<Outcome> {
    let (id, seg) = seg_key(s);
    if !segment_exists(c, s).await? {
        drop_queued_file(c, &id).await?;
        reject!(Rejection::NotFound(format!("segment {s}")));
    }
    let mut applied = Vec::new();
    let mut skipped = Vec::new();
    for p in parts {
        let row =
            sqlx::query("SELECT disk_id FROM parts WHERE file_id = ? AND seg = ? AND part = ?")
                .bind(&id)
                .bind(seg)
                .bind(i64::from(p.part))
                .fetch_optional(&mut *c)
                .await
                .db("read a part's location")?;
        let current = match &row {
            Some(r) => Some(
                Cols::new(r, "parts")
                    .key(format!("segment {s} part {}", p.part))
                    .opt_disk_id(0, "disk_id")?,
            ),
            None => None,
        };
        // The part must exist and still be where the repair saw it.
        if current != Some(p.from) {
            skipped.push(p.part);
            continue;
        }
        sqlx::query(
            "UPDATE parts SET disk_id = ?, state = 0, verified_ms = ? WHERE file_id = ? AND seg = ? AND part = ?",
        )
        .bind(p.to.to_string())
        .bind(time_ms as i64)
        .bind(&id)
        .bind(seg)
        .bind(i64::from(p.part))
        .execute(&mut *c)
        .await
        .db("record a repaired part")?;
        applied.push(p.part);
    }
    for part in cancelled_moves {
        sqlx::query("DELETE FROM part_moves WHERE file_id = ? AND seg = ? AND part = ?")
            .bind(&id)
            .bind(seg)
            .bind(i64::from(*part))
            .execute(&mut *c)
            .await
            .db("drop a move no disk can take")?;
    }
    // Moves done (or overtaken: the part left that disk some other way) are forgotten.
    sqlx::query(
        "DELETE FROM part_moves WHERE file_id = ?1 AND seg = ?2 AND NOT EXISTS
           (SELECT 1 FROM parts p WHERE p.file_id = part_moves.file_id AND p.seg = part_moves.seg
              AND p.part = part_moves.part AND p.disk_id = part_moves.from_disk)",
    )
    .bind(&id)
    .bind(seg)
    .execute(&mut *c)
    .await
    .db("forget finished moves")?;
    if needs_work(c, s).await? {
        sqlx::query(
            "UPDATE repair_queue SET claimed_by = NULL, claim_until_ms = 0 WHERE file_id = ? AND seg = ?",
        )
        .bind(&id)
        .bind(seg)
        .execute(&mut *c)
        .await
        .db("release a repair claim")?;
        recompute_one(c, &id, seg).await?;
    } else {
        sqlx::query("DELETE FROM repair_queue WHERE file_id = ? AND seg = ?")
            .bind(&id)
            .bind(seg)
            .execute(&mut *c)
            .await
            .db("drop a finished repair")?;
    }
    Ok(Outcome::Repaired { applied, skipped })
}

/// `RepairFailed`.
pub(crate) async fn repair_failed(
    c: &mut SqliteConnection,
    s: &SegmentRef,
    error: &str,
    retry_at_ms: u64,
) -> Res<Outcome> {
    let (id, seg) = seg_key(s);
    let r = sqlx::query(
        "UPDATE repair_queue SET attempts = attempts + 1, last_error = ?, due_ms = ?,
            claimed_by = NULL, claim_until_ms = 0
         WHERE file_id = ? AND seg = ?",
    )
    .bind(error)
    .bind(retry_at_ms as i64)
    .bind(&id)
    .bind(seg)
    .execute(&mut *c)
    .await
    .db("record a failed repair")?;
    if r.rows_affected() == 0 {
        reject!(Rejection::NotFound(format!("segment {s} is not queued")));
    }
    Ok(Outcome::Done)
}

/// `PartsVerified`.
pub(crate) async fn parts_verified(
    c: &mut SqliteConnection,
    parts: &[PartRef],
    time_ms: u64,
) -> Res<Outcome> {
    for p in parts {
        sqlx::query(
            "UPDATE parts SET verified_ms = MAX(verified_ms, ?)
             WHERE file_id = ? AND seg = ? AND part = ? AND disk_id = ?",
        )
        .bind(time_ms as i64)
        .bind(p.file_id.to_bytes().to_vec())
        .bind(i64::from(p.seg))
        .bind(i64::from(p.part))
        .bind(p.disk_id.to_string())
        .execute(&mut *c)
        .await
        .db("record a verified part")?;
    }
    Ok(Outcome::Done)
}

/// `MoveParts`.
pub(crate) async fn move_parts(
    c: &mut SqliteConnection,
    parts: &[PartRef],
    reason: &str,
    time_ms: u64,
) -> Res<Outcome> {
    for p in parts {
        let r = sqlx::query(
            "INSERT INTO part_moves (file_id, seg, part, from_disk, added_ms)
             SELECT file_id, seg, part, disk_id, ? FROM parts
              WHERE file_id = ? AND seg = ? AND part = ? AND disk_id = ? AND state = 0
             ON CONFLICT (file_id, seg, part) DO UPDATE SET from_disk = excluded.from_disk",
        )
        .bind(time_ms as i64)
        .bind(p.file_id.to_bytes().to_vec())
        .bind(i64::from(p.seg))
        .bind(i64::from(p.part))
        .bind(p.disk_id.to_string())
        .execute(&mut *c)
        .await
        .db("record a part to move")?;
        if r.rows_affected() > 0 {
            enqueue(
                c,
                &SegmentRef {
                    file_id: p.file_id,
                    seg: p.seg,
                },
                reason,
                time_ms,
            )
            .await?;
        }
    }
    Ok(Outcome::Done)
}

/// `SetRepairPaused`.
pub(crate) async fn set_repair_paused(c: &mut SqliteConnection, paused: bool) -> Res<Outcome> {
    kv_set(c, KV_REPAIR_PAUSED, if paused { "1" } else { "0" }).await?;
    Ok(Outcome::Done)
}

/// `RequestScrub`.
pub(crate) async fn request_scrub(
    c: &mut SqliteConnection,
    deep: bool,
    time_ms: u64,
) -> Res<Outcome> {
    kv_set(c, KV_SCRUB_REQUESTED_MS, &time_ms.to_string()).await?;
    kv_set(c, KV_SCRUB_REQUESTED_DEEP, if deep { "1" } else { "0" }).await?;
    Ok(Outcome::Done)
}

/// `SetBrakes`.
pub(crate) async fn set_brakes(c: &mut SqliteConnection, brakes: &[String]) -> Res<Outcome> {
    let json = serde_json::to_string(brakes).unwrap_or_else(|_| "[]".into());
    kv_set(c, KV_BRAKES, &json).await?;
    Ok(Outcome::Done)
}
