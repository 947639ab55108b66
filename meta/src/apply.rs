//! Deterministic application of Raft commands to SQLite.
//!
//! Everything here reads only the command and the database, so every replica that applies the
//! same log ends with the same database. A command that cannot apply returns
//! [`Outcome::Rejected`]; only a failure of SQLite itself, or a row that does not decode (this
//! machine's database is damaged), is an error: the node stops applying and resyncs its
//! metadata from the cluster at its next start.

use sqlx::SqliteConnection;

use super::{apply_accounts, apply_dav, apply_events, apply_repair, apply_trash, apply_tree};
use crate::command::{CommandV1, Conflict, NewSegment, Outcome, Rejection, SourceIdentity};
use crate::error::{DbContext, MetaError, Res};
use crate::row::Cols;
use wormfs_parts::ids::{DiskId, FileId, NodeId};
use wormfs_parts::layout::Geometry;
use wormfs_parts::tree_path::TreePath;

/// Result of resolving a path.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub id: i64,
    pub is_dir: bool,
    pub file_id: Option<FileId>,
}

macro_rules! reject {
    ($e:expr) => {
        return Ok(Outcome::Rejected($e))
    };
}

/// Looks up one name in a directory.
pub(crate) async fn lookup_child(
    c: &mut SqliteConnection,
    parent: i64,
    name: &str,
) -> Res<Option<Resolved>> {
    let row = sqlx::query("SELECT id, is_dir, file_id FROM entries WHERE parent = ? AND name = ?")
        .bind(parent)
        .bind(name)
        .fetch_optional(&mut *c)
        .await
        .db("look up a name")?;
    row.map(|r| {
        let r = Cols::new(&r, "entries").key_col("id", 0);
        Ok(Resolved {
            id: r.col(0, "id")?,
            is_dir: r.flag(1, "is_dir")?,
            file_id: r.opt_file_id(2, "file_id")?,
        })
    })
    .transpose()
}

/// Outcome of walking a path.
pub(crate) enum Walk {
    Found(Resolved),
    /// A component is missing; holds the deepest existing directory's id and the index of the
    /// first missing component.
    Missing {
        dir: i64,
        at: usize,
    },
    /// A component before the last is a file.
    NotDir(usize),
}

/// The root folder's row.
const ROOT: Resolved = Resolved {
    id: 1,
    is_dir: true,
    file_id: None,
};

/// The recursive walk of [`walk`] as a table `w(depth, id, is_dir, file_id)`: one row per name
/// followed down from the root (`?1`, the names as [`names_json`] encodes them) while each
/// step is a folder, at most `?2` deep. A macro, so that each query stays a `&'static str`.
macro_rules! walk_cte {
    () => {
        "WITH RECURSIVE w(depth, id, is_dir, file_id) AS (
             SELECT 0, 1, 1, NULL
             UNION ALL
             SELECT w.depth + 1, e.id, e.is_dir, e.file_id FROM w JOIN entries e
               ON e.parent = w.id AND e.name = json_extract(?1, '$[' || w.depth || ']')
             WHERE w.is_dir AND w.depth < ?2)"
    };
}
pub(crate) use walk_cte;

/// `path`'s names as the JSON array [`walk_cte`] reads.
pub(crate) fn names_json(path: &TreePath) -> Res<String> {
    serde_json::to_string(path.components()).map_err(|e| MetaError::Encode {
        what: "a path's names",
        detail: e.to_string(),
    })
}

/// Walks `path` from the root, in one statement: every request resolves a path or two, and
/// a statement is a round trip to the database's thread (docs/performance.md, "Many small
/// files"). The recursive query follows the names (a JSON array) down from the root while
/// each step is a folder, and the deepest row it reached tells what [`walk_stepwise`] would.
pub(crate) async fn walk(c: &mut SqliteConnection, path: &TreePath) -> Res<Walk> {
    let names = path.components();
    match names.len() {
        0 => return Ok(Walk::Found(ROOT)),
        1 => return walk_stepwise(c, path).await,
        _ => {}
    }
    let row = sqlx::query(concat!(
        walk_cte!(),
        " SELECT depth, id, is_dir, file_id FROM w ORDER BY depth DESC LIMIT 1"
    ))
    .bind(names_json(path)?)
    .bind(names.len() as i64)
    .fetch_one(&mut *c)
    .await
    .db("walk a path")?;
    let r = Cols::new(&row, "entries").key_col("id", 1);
    let depth: i64 = r.col(0, "depth")?;
    let depth = usize::try_from(depth).map_err(|e| MetaError::corrupt("a walk's depth", e))?;
    let cur = Resolved {
        id: r.col(1, "id")?,
        is_dir: r.flag(2, "is_dir")?,
        file_id: r.opt_file_id(3, "file_id")?,
    };
    Ok(if depth == names.len() {
        Walk::Found(cur)
    } else if !cur.is_dir {
        // The name at `depth - 1` is a file with more names below it (the root is a folder).
        Walk::NotDir(depth - 1)
    } else {
        Walk::Missing {
            dir: cur.id,
            at: depth,
        }
    })
}

/// Walks `path` from the root one name (and one statement) at a time.
pub(crate) async fn walk_stepwise(c: &mut SqliteConnection, path: &TreePath) -> Res<Walk> {
    let mut cur = ROOT;
    for (i, name) in path.components().iter().enumerate() {
        if !cur.is_dir {
            return Ok(Walk::NotDir(i - 1));
        }
        match lookup_child(c, cur.id, name).await? {
            Some(r) => cur = r,
            None => return Ok(Walk::Missing { dir: cur.id, at: i }),
        }
    }
    Ok(Walk::Found(cur))
}

fn prefix(path: &TreePath, n: usize) -> String {
    let mut s = String::new();
    for c in &path.components()[..=n.min(path.components().len().saturating_sub(1))] {
        s.push('/');
        s.push_str(c);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

fn parse_path(p: &str) -> Result<TreePath, Rejection> {
    TreePath::parse(p).map_err(|e| Rejection::Invalid(e.to_string()))
}

/// Creates the missing directories of `path` (all of it); `Err` rejection if a file is in the way.
pub(crate) async fn mkdir_all(
    c: &mut SqliteConnection,
    path: &TreePath,
    time_ms: i64,
) -> Res<Result<i64, Rejection>> {
    let mut cur = 1i64;
    for (i, name) in path.components().iter().enumerate() {
        match lookup_child(c, cur, name).await? {
            Some(r) if r.is_dir => cur = r.id,
            Some(_) => return Ok(Err(Rejection::NotADirectory(prefix(path, i)))),
            None => {
                cur = insert_dir(c, cur, name, time_ms).await?;
            }
        }
    }
    Ok(Ok(cur))
}

async fn insert_dir(c: &mut SqliteConnection, parent: i64, name: &str, time_ms: i64) -> Res<i64> {
    let r = sqlx::query("INSERT INTO entries (parent, name, is_dir, mtime_ms) VALUES (?, ?, 1, ?)")
        .bind(parent)
        .bind(name)
        .bind(time_ms)
        .execute(&mut *c)
        .await
        .db("insert a directory")?;
    Ok(r.last_insert_rowid())
}

async fn delete_file_rows(c: &mut SqliteConnection, file_id: FileId) -> Res<()> {
    let id = file_id.to_bytes().to_vec();
    for sql in [
        "DELETE FROM files WHERE file_id = ?",
        "DELETE FROM segments WHERE file_id = ?",
        "DELETE FROM parts WHERE file_id = ?",
        "DELETE FROM sources WHERE file_id = ?",
        "DELETE FROM repair_queue WHERE file_id = ?",
        "DELETE FROM part_moves WHERE file_id = ?",
    ] {
        sqlx::query(sql)
            .bind(&id)
            .execute(&mut *c)
            .await
            .db("delete a file's rows")?;
    }
    Ok(())
}

/// Deletes the entry `id` (a file, or a directory with everything below it) and their dead
/// properties, records the files in the trash (when it is on) under their full paths (`path`
/// is the entry's), and releases the files no longer named.
pub(crate) async fn delete_subtree(
    c: &mut SqliteConnection,
    id: i64,
    path: &str,
    time_ms: u64,
) -> Res<()> {
    let ids = apply_trash::trash_below(c, id, path, time_ms).await?;
    for table in ["props WHERE entry", "entries WHERE id"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL SELECT e.id FROM entries e JOIN sub ON e.parent = sub.id)
             DELETE FROM {table} IN sub"
        )))
        .bind(id)
        .execute(&mut *c)
        .await.db("delete a subtree")?;
    }
    for f in ids {
        release_file(c, f).await?;
    }
    Ok(())
}

/// Drops a file's rows once no entry and no trash entry names it any more (a COPY shares the
/// file).
pub(crate) async fn release_file(c: &mut SqliteConnection, file_id: FileId) -> Res<()> {
    let named = sqlx::query(
        "SELECT 1 FROM entries WHERE file_id = ?1 UNION ALL SELECT 1 FROM trash WHERE file_id = ?1 LIMIT 1",
    )
    .bind(file_id.to_bytes().to_vec())
        .fetch_optional(&mut *c)
        .await
        .db("find the names of a file")?
        .is_some();
    if !named {
        delete_file_rows(c, file_id).await?;
    }
    Ok(())
}

/// A file's ETag: its size and its segments' BLAKE3 hashes, in order (strong: the same for
/// the same bytes stored the same way). A face that has just committed a file computes it
/// here rather than reading the file back.
pub fn etag_for(size: u64, segment_hashes: &[String]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"wormfs-etag-v1");
    h.update(&size.to_le_bytes());
    for s in segment_hashes {
        h.update(s.as_bytes());
    }
    h.finalize().to_hex()[..32].to_owned()
}

/// The key under which a drop-folder source is remembered.
pub(crate) fn source_key(s: &SourceIdentity) -> Option<String> {
    match s {
        SourceIdentity::DropFolder {
            path,
            size,
            mtime_ns,
            inode,
            dev,
        } => Some(format!("drop:{dev}:{inode}:{size}:{mtime_ns}:{path}")),
        SourceIdentity::Upload { .. } => None,
    }
}

/// Inserts segments `segs` of `file_id`, the first at `start_offset`, with their parts, and
/// queues for repair those with a part that could not be written; the offset after them.
async fn insert_segments(
    c: &mut SqliteConnection,
    file_id: FileId,
    start_offset: u64,
    segs: &[NewSegment],
    time_ms: u64,
) -> Res<u64> {
    let id = file_id.to_bytes().to_vec();
    let mut offset = start_offset;
    let mut incomplete = Vec::new();
    for chunk in segs.chunks(SEGMENTS_PER_TRIP) {
        let mut q = sqlx::QueryBuilder::new("");
        offset = push_segments(&mut q, &id, chunk, offset, time_ms);
        incomplete.extend(
            chunk
                .iter()
                .filter(|s| s.parts.iter().any(Option::is_none))
                .map(|s| crate::command::SegmentRef {
                    file_id,
                    seg: s.index,
                }),
        );
        q.build()
            .execute(&mut *c)
            .await
            .db("insert segments and their parts")?;
    }
    // A part that could not be written is rebuilt like a lost one.
    apply_repair::enqueue_missing(c, &incomplete, time_ms).await?;
    Ok(offset)
}

/// Segments whose rows and parts go to SQLite in one round trip (one multi-statement query:
/// sqlx sends it as one request to its connection's thread, and each request costs two
/// thread wake-ups, more than most of these statements).
const SEGMENTS_PER_TRIP: usize = 16;

/// Appends to `q` the statements that insert `segs` of file `id`, the first at `offset`
/// (separated from each other, not from what `q` holds); the offset after them.
fn push_segments(
    q: &mut sqlx::QueryBuilder<sqlx::Sqlite>,
    id: &[u8],
    segs: &[NewSegment],
    mut offset: u64,
    time_ms: u64,
) -> u64 {
    for (i, s) in segs.iter().enumerate() {
        if i > 0 {
            q.push("; ");
        }
        push_segment(q, id, s, offset, time_ms);
        offset += s.data_len;
    }
    offset
}

/// Appends to `q` the statements that insert segment `s` of file `id` at `offset`: its row,
/// then one statement for all its parts.
fn push_segment(
    q: &mut sqlx::QueryBuilder<sqlx::Sqlite>,
    id: &[u8],
    s: &NewSegment,
    offset: u64,
    time_ms: u64,
) {
    q.push("INSERT INTO segments (file_id, seg, offset, data_len, blake3) VALUES (");
    q.push_bind(id.to_vec())
        .push(", ")
        .push_bind(i64::from(s.index))
        .push(", ")
        .push_bind(offset as i64)
        .push(", ")
        .push_bind(s.data_len as i64)
        .push(", ")
        .push_bind(s.blake3.clone())
        .push(")");
    if !s.parts.is_empty() {
        q.push("; INSERT INTO parts (file_id, seg, part, disk_id, state, verified_ms) ");
        q.push_values(s.parts.iter().enumerate(), |mut b, (p, disk)| {
            b.push_bind(id.to_vec())
                .push_bind(i64::from(s.index))
                .push_bind(p as i64)
                .push_bind(disk.map(|d| d.to_string()))
                .push_bind(if disk.is_some() { 0i64 } else { 1 })
                .push_bind(time_ms as i64);
        });
    }
}

/// Picks "stem (n).ext" for the first free n, never longer than `max` bytes (see
/// [`wormfs_parts::tree_path::numbered_name`]).
async fn free_name(c: &mut SqliteConnection, dir: i64, name: &str, max: usize) -> Res<String> {
    let mut n = 1u64;
    loop {
        let cand = wormfs_parts::tree_path::numbered_name(name, n, max);
        if lookup_child(c, dir, &cand).await?.is_none() {
            return Ok(cand);
        }
        n += 1;
    }
}

/// A rejection if moving or copying the entry `src` (a file or a directory) to `to` would give
/// something below it a path longer than the limit, which no command could then name.
pub(crate) async fn subtree_fits(
    c: &mut SqliteConnection,
    src: &Resolved,
    to: &TreePath,
) -> Res<Option<Rejection>> {
    if !src.is_dir {
        return Ok(None);
    }
    let row = sqlx::query(
        "WITH RECURSIVE sub(id, len) AS (SELECT ?, 0 UNION ALL \
         SELECT e.id, sub.len + 1 + length(CAST(e.name AS BLOB)) FROM entries e \
         JOIN sub ON e.parent = sub.id) SELECT MAX(len) FROM sub",
    )
    .bind(src.id)
    .fetch_one(&mut *c)
    .await
    .db("measure a subtree's deepest path")?;
    let below: i64 = Cols::new(&row, "entries").col(0, "len")?;
    let longest = to.to_string().len() + usize::try_from(below).unwrap_or(usize::MAX);
    Ok(
        (longest > wormfs_parts::tree_path::PATH_MAX_BYTES).then(|| {
            Rejection::Invalid(format!(
                "{to}: a path below it would be {longest} bytes long, over the limit of {}",
                wormfs_parts::tree_path::PATH_MAX_BYTES
            ))
        }),
    )
}

/// The longest name that fits in `dir` within the path limit (and the name limit).
fn name_room(dir: &TreePath) -> usize {
    let prefix = if dir.is_root() {
        1
    } else {
        dir.to_string().len() + 1
    };
    wormfs_parts::tree_path::NAME_MAX_BYTES
        .min(wormfs_parts::tree_path::PATH_MAX_BYTES.saturating_sub(prefix))
}

async fn intent_exists(c: &mut SqliteConnection, id: FileId) -> Res<bool> {
    Ok(sqlx::query("SELECT 1 FROM intents WHERE file_id = ?")
        .bind(id.to_bytes().to_vec())
        .fetch_optional(&mut *c)
        .await
        .db("read an intent")?
        .is_some())
}

async fn delete_intent(c: &mut SqliteConnection, id: FileId) -> Res<()> {
    sqlx::query("DELETE FROM intents WHERE file_id = ?")
        .bind(id.to_bytes().to_vec())
        .execute(&mut *c)
        .await
        .db("delete an intent")?;
    Ok(())
}

pub(crate) async fn kv_get(c: &mut SqliteConnection, key: &str) -> Res<Option<String>> {
    let r = sqlx::query("SELECT value FROM kv WHERE key = ?")
        .bind(key)
        .fetch_optional(&mut *c)
        .await
        .db("read a setting")?;
    r.map(|r| {
        Cols::new(&r, "kv")
            .key(format!("key {key}"))
            .col(0, "value")
    })
    .transpose()
}

pub(crate) async fn kv_set(c: &mut SqliteConnection, key: &str, value: &str) -> Res<()> {
    sqlx::query("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .bind(key)
        .bind(value)
        .execute(&mut *c)
        .await.db("write a setting")?;
    Ok(())
}

/// The path of `name` in `dir`. (Not `TreePath::join`, which refuses every name in the root:
/// it parses `//name`.)
fn child_path(dir: &TreePath, name: &str) -> String {
    if dir.is_root() {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Applies one command (each of a batch's in turn), and records the events it caused (see
/// [`crate::apply_events`]).
pub(crate) async fn apply_command(c: &mut SqliteConnection, cmd: &CommandV1) -> Res<Outcome> {
    let CommandV1::Batch { commands } = cmd else {
        return apply_single(c, cmd).await;
    };
    if commands.is_empty()
        || commands
            .iter()
            .any(|c| matches!(c, CommandV1::Batch { .. }))
    {
        reject!(Rejection::Invalid(
            "a batch holds at least one command and no batch".into()
        ));
    }
    let mut outcomes = Vec::with_capacity(commands.len());
    for sub in commands {
        outcomes.push(apply_single(c, sub).await?);
    }
    Ok(Outcome::Batch(outcomes))
}

/// Applies one command that is not a batch, and records the events it caused.
async fn apply_single(c: &mut SqliteConnection, cmd: &CommandV1) -> Res<Outcome> {
    let before = apply_events::before(c, cmd).await?;
    let outcome = apply_one(c, cmd).await?;
    apply_events::after(c, cmd, before, &outcome).await?;
    Ok(outcome)
}

/// Applies one command: one function per command, each reading only its arguments and the
/// database.
async fn apply_one(c: &mut SqliteConnection, cmd: &CommandV1) -> Res<Outcome> {
    match cmd {
        CommandV1::InitCluster { cluster_id, .. } => init_cluster(c, &cluster_id.to_string()).await,
        CommandV1::RegisterNode {
            node_id,
            name,
            api_addr,
            data_addr,
            data_cert,
            time_ms,
        } => {
            let node = NodeRow {
                name,
                api_addr,
                data_addr,
                data_cert,
            };
            register_node(c, *node_id, &node, *time_ms).await
        }
        CommandV1::RemoveNode { node_id, time_ms } => remove_node(c, *node_id, *time_ms).await,
        CommandV1::RegisterDisk {
            disk_id,
            node_id,
            path,
            fs_dev,
            time_ms,
        } => register_disk(c, *disk_id, *node_id, path, *fs_dev, *time_ms).await,
        CommandV1::Mkdir {
            path,
            parents,
            time_ms,
        } => mkdir(c, path, *parents, *time_ms).await,
        CommandV1::SetPolicy { path, policy } => set_policy(c, path, policy.as_deref()).await,
        CommandV1::BeginIngest {
            file_id,
            writer,
            path,
            append_to,
            lease_until_ms,
            time_ms,
        } => {
            let lease = Lease {
                writer: *writer,
                until_ms: *lease_until_ms,
            };
            begin_ingest(c, *file_id, path, *append_to, lease, *time_ms).await
        }
        CommandV1::RenewLease {
            file_id,
            lease_until_ms,
        } => renew_lease(c, *file_id, *lease_until_ms).await,
        CommandV1::AbortIngest { file_id } => abort_ingest(c, *file_id).await,
        CommandV1::ExpireIntents { now_ms, writer } => expire_intents(c, *now_ms, *writer).await,
        CommandV1::CommitFile {
            file_id,
            path,
            conflict,
            policy,
            geometry,
            size,
            content_blake3,
            segments,
            source,
            time_ms,
        } => {
            let file = NewFile {
                file_id: *file_id,
                policy,
                geometry,
                size: *size,
                content_blake3,
                segments,
                source,
            };
            commit_file(c, &file, Claim::Intent, path, *conflict, *time_ms).await
        }
        CommandV1::CommitSmallFile {
            file: f,
            sweeps_before,
        } => {
            let file = NewFile {
                file_id: f.file_id,
                policy: &f.policy,
                geometry: &f.geometry,
                size: f.size,
                content_blake3: &f.content_blake3,
                segments: &f.segments,
                source: &f.source,
            };
            let claim = Claim::SweepsBefore(*sweeps_before);
            commit_file(c, &file, claim, &f.path, f.conflict, f.time_ms).await
        }
        CommandV1::SweepBegins { .. } => sweep_begins(c).await,
        CommandV1::AppendSegments {
            intent_id,
            file_id,
            expected_size,
            segments,
            time_ms,
        } => append_segments(c, *intent_id, *file_id, *expected_size, segments, *time_ms).await,
        CommandV1::Remove {
            path,
            recursive,
            time_ms,
        } => remove(c, path, *recursive, *time_ms).await,
        CommandV1::Rename {
            from,
            to,
            replace,
            time_ms,
        } => rename(c, from, to, *replace, *time_ms).await,
        CommandV1::Copy {
            from,
            to,
            replace,
            time_ms,
        } => apply_dav::copy(c, from, to, *replace, *time_ms).await,
        CommandV1::PatchProps { path, patch } => apply_dav::patch_props(c, path, patch).await,
        CommandV1::Lock { lock, now_ms } => apply_dav::lock(c, lock, *now_ms).await,
        CommandV1::Unlock { token } => apply_dav::unlock(c, token).await,
        CommandV1::RefreshLock {
            token,
            expires_ms,
            timeout_secs,
            now_ms,
        } => apply_dav::refresh(c, token, *expires_ms, *timeout_secs, *now_ms).await,
        CommandV1::DeleteLocks { path } => apply_dav::delete_locks(c, path).await,
        CommandV1::RemoveTree { path, time_ms } => apply_tree::remove_tree(c, path, *time_ms).await,
        CommandV1::MoveTree {
            from,
            to,
            replace,
            time_ms,
        } => apply_tree::move_tree(c, from, to, *replace, *time_ms).await,
        CommandV1::CopyTree {
            from,
            to,
            replace,
            deep,
            time_ms,
        } => apply_tree::copy_tree(c, from, to, *replace, *deep, *time_ms).await,
        CommandV1::SetDiskState {
            disk_id,
            state,
            reason,
            time_ms,
        } => apply_repair::set_disk_state(c, *disk_id, *state, reason, *time_ms).await,
        CommandV1::QueueRepair {
            segments,
            damaged,
            reason,
            time_ms,
        } => apply_repair::queue_repair(c, segments, damaged, reason, *time_ms).await,
        CommandV1::ClaimRepair {
            segment,
            node,
            until_ms,
            now_ms,
        } => apply_repair::claim_repair(c, segment, *node, *until_ms, *now_ms).await,
        CommandV1::CommitRepair {
            segment,
            parts,
            time_ms,
            cancelled_moves,
        } => apply_repair::commit_repair(c, segment, parts, cancelled_moves, *time_ms).await,
        CommandV1::RepairFailed {
            segment,
            error,
            retry_at_ms,
        } => apply_repair::repair_failed(c, segment, error, *retry_at_ms).await,
        CommandV1::PartsVerified { parts, time_ms } => {
            apply_repair::parts_verified(c, parts, *time_ms).await
        }
        CommandV1::SetRepairPaused { paused } => apply_repair::set_repair_paused(c, *paused).await,
        CommandV1::RequestScrub { deep, time_ms } => {
            apply_repair::request_scrub(c, *deep, *time_ms).await
        }
        CommandV1::SetBrakes { brakes } => apply_repair::set_brakes(c, brakes).await,
        CommandV1::MoveParts {
            parts,
            reason,
            time_ms,
        } => apply_repair::move_parts(c, parts, reason, *time_ms).await,
        CommandV1::SetTrash { enabled } => apply_trash::set_trash(c, *enabled).await,
        CommandV1::RestoreTrash { id, to, time_ms } => {
            apply_trash::restore_trash(c, *id, to, *time_ms).await
        }
        CommandV1::PurgeTrash {
            ids,
            deleted_before_ms,
        } => apply_trash::purge_trash(c, ids, *deleted_before_ms).await,
        CommandV1::SetRetention { path, retain_ms } => {
            apply_trash::set_retention(c, path, *retain_ms).await
        }
        CommandV1::PutUser {
            user,
            mode,
            time_ms,
        } => apply_accounts::put_user(c, user, *mode, *time_ms).await,
        CommandV1::RemoveUser { name } => apply_accounts::remove_user(c, name).await,
        CommandV1::AddToken { token, time_ms } => {
            apply_accounts::add_token(c, token, *time_ms).await
        }
        CommandV1::RevokeToken { name, time_ms } => {
            apply_accounts::revoke_token(c, name, *time_ms).await
        }
        CommandV1::RecordEvent {
            kind,
            severity,
            node,
            message,
            time_ms,
        } => apply_events::record_event(c, kind, *severity, *node, message, *time_ms).await,
        CommandV1::Batch { .. } => Ok(Outcome::Rejected(Rejection::Invalid(
            "a batch inside a batch".into(),
        ))),
    }
}

/// `InitCluster`: records the cluster id once; the same id again is accepted, another refused.
async fn init_cluster(c: &mut SqliteConnection, cluster_id: &str) -> Res<Outcome> {
    match kv_get(c, "cluster_id").await? {
        Some(have) if have != cluster_id => reject!(Rejection::AlreadyInitialised),
        Some(_) => {}
        None => kv_set(c, "cluster_id", cluster_id).await?,
    }
    Ok(Outcome::Done)
}

/// What `RegisterNode` records about a machine besides its id.
struct NodeRow<'a> {
    name: &'a str,
    api_addr: &'a str,
    data_addr: &'a str,
    data_cert: &'a str,
}

/// `RegisterNode`: adds a machine, or updates its name and addresses (its join time stays).
async fn register_node(
    c: &mut SqliteConnection,
    node_id: NodeId,
    node: &NodeRow<'_>,
    time_ms: u64,
) -> Res<Outcome> {
    sqlx::query(
        "INSERT INTO nodes (node_id, name, api_addr, joined_ms, data_addr, data_cert)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT(node_id) DO UPDATE SET name = excluded.name,
           api_addr = excluded.api_addr, data_addr = excluded.data_addr,
           data_cert = excluded.data_cert",
    )
    .bind(node_id as i64)
    .bind(node.name)
    .bind(node.api_addr)
    .bind(time_ms as i64)
    .bind(node.data_addr)
    .bind(node.data_cert)
    .execute(&mut *c)
    .await
    .db("register a node")?;
    Ok(Outcome::Done)
}

/// `RemoveNode`: the machine is no longer registered and its disks are marked removed (their
/// rows stay: their parts count as lost). Removing an unknown machine is not an error.
async fn remove_node(c: &mut SqliteConnection, node_id: NodeId, time_ms: u64) -> Res<Outcome> {
    sqlx::query("DELETE FROM nodes WHERE node_id = ?")
        .bind(node_id as i64)
        .execute(&mut *c)
        .await
        .db("delete a node")?;
    let disks: Vec<DiskId> = sqlx::query("SELECT disk_id FROM disks WHERE node_id = ?")
        .bind(node_id as i64)
        .fetch_all(&mut *c)
        .await
        .db("read a node's disks")?
        .iter()
        .map(|r| {
            Cols::new(r, "disks")
                .key_col("disk_id", 0)
                .disk_id(0, "disk_id")
        })
        .collect::<Res<_>>()?;
    for d in disks {
        apply_repair::set_disk_state(
            c,
            d,
            crate::command::DiskStatus::Removed,
            &format!("machine {node_id} removed"),
            time_ms,
        )
        .await?;
    }
    Ok(Outcome::Done)
}

/// `RegisterDisk`: adds a disk as up, or records its new node, path and device (its state
/// and the time it was added stay).
async fn register_disk(
    c: &mut SqliteConnection,
    disk_id: DiskId,
    node_id: NodeId,
    path: &str,
    fs_dev: u64,
    time_ms: u64,
) -> Res<Outcome> {
    sqlx::query(
        "INSERT INTO disks (disk_id, node_id, path, fs_dev, state, added_ms) VALUES (?, ?, ?, ?, 'up', ?)
         ON CONFLICT(disk_id) DO UPDATE SET node_id = excluded.node_id, path = excluded.path, fs_dev = excluded.fs_dev",
    )
    .bind(disk_id.to_string())
    .bind(node_id as i64)
    .bind(path)
    .bind(fs_dev as i64)
    .bind(time_ms as i64)
    .execute(&mut *c)
    .await
    .db("register a disk")?;
    Ok(Outcome::Done)
}

/// `Mkdir`: creates a directory; with `parents`, its missing ancestors too, and an existing
/// directory is accepted. A file in the way (at the path or above it) is refused.
async fn mkdir(c: &mut SqliteConnection, path: &str, parents: bool, time_ms: u64) -> Res<Outcome> {
    let path = match parse_path(path) {
        Ok(p) => p,
        Err(r) => reject!(r),
    };
    if path.is_root() {
        return Ok(if parents {
            Outcome::Done
        } else {
            Outcome::Rejected(Rejection::AlreadyExists("/".into()))
        });
    }
    match walk(c, &path).await? {
        Walk::Found(r) if r.is_dir && parents => Ok(Outcome::Done),
        Walk::Found(_) => reject!(Rejection::AlreadyExists(path.to_string())),
        Walk::NotDir(i) => reject!(Rejection::NotADirectory(prefix(&path, i))),
        Walk::Missing { dir, at } => {
            if at + 1 < path.components().len() && !parents {
                reject!(Rejection::NotFound(prefix(&path, at)));
            }
            let mut cur = dir;
            for name in &path.components()[at..] {
                cur = insert_dir(c, cur, name, time_ms as i64).await?;
            }
            Ok(Outcome::Done)
        }
    }
}

/// `SetPolicy`: sets or clears (`None`) a directory's policy.
async fn set_policy(c: &mut SqliteConnection, path: &str, policy: Option<&str>) -> Res<Outcome> {
    let path = match parse_path(path) {
        Ok(p) => p,
        Err(r) => reject!(r),
    };
    match walk(c, &path).await? {
        Walk::Found(r) if r.is_dir => {
            sqlx::query("UPDATE entries SET policy = ? WHERE id = ?")
                .bind(policy)
                .bind(r.id)
                .execute(&mut *c)
                .await
                .db("set a policy")?;
            Ok(Outcome::Done)
        }
        Walk::Found(_) => reject!(Rejection::NotADirectory(path.to_string())),
        _ => reject!(Rejection::NotFound(path.to_string())),
    }
}

/// An ingest's writer and the end of its lease.
struct Lease {
    writer: NodeId,
    until_ms: u64,
}

/// `BeginIngest`: records (or replaces) the intent `file_id`, whose parts carry `append_to`'s
/// id for an append and its own otherwise. The path is not checked here: the commit does.
async fn begin_ingest(
    c: &mut SqliteConnection,
    file_id: FileId,
    path: &str,
    append_to: Option<FileId>,
    lease: Lease,
    time_ms: u64,
) -> Res<Outcome> {
    sqlx::query(
        "INSERT OR REPLACE INTO intents (file_id, target_file_id, writer, path, append, lease_until_ms, created_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(file_id.to_bytes().to_vec())
    .bind(append_to.unwrap_or(file_id).to_bytes().to_vec())
    .bind(lease.writer as i64)
    .bind(path)
    .bind(i64::from(append_to.is_some()))
    .bind(lease.until_ms as i64)
    .bind(time_ms as i64)
    .execute(&mut *c)
    .await
    .db("insert an intent")?;
    Ok(Outcome::Done)
}

/// `RenewLease`: moves an intent's lease end; refused when the intent is gone.
async fn renew_lease(
    c: &mut SqliteConnection,
    file_id: FileId,
    lease_until_ms: u64,
) -> Res<Outcome> {
    let r = sqlx::query("UPDATE intents SET lease_until_ms = ? WHERE file_id = ?")
        .bind(lease_until_ms as i64)
        .bind(file_id.to_bytes().to_vec())
        .execute(&mut *c)
        .await
        .db("renew a lease")?;
    if r.rows_affected() == 0 {
        reject!(Rejection::NoIntent(file_id.to_string()));
    }
    Ok(Outcome::Done)
}

/// `AbortIngest`: drops the intent, if it is still there.
async fn abort_ingest(c: &mut SqliteConnection, file_id: FileId) -> Res<Outcome> {
    delete_intent(c, file_id).await?;
    Ok(Outcome::Done)
}

/// `ExpireIntents`: drops the intents whose lease ended before `now_ms` (a lease ending at
/// `now_ms` is still live), and every intent of `writer`.
async fn expire_intents(
    c: &mut SqliteConnection,
    now_ms: u64,
    writer: Option<NodeId>,
) -> Res<Outcome> {
    sqlx::query("DELETE FROM intents WHERE lease_until_ms < ? OR writer = ?")
        .bind(now_ms as i64)
        .bind(writer.map(|w| w as i64))
        .execute(&mut *c)
        .await
        .db("expire intents")?;
    Ok(Outcome::Done)
}

/// Where the count of sweeps begun is kept ([`CommandV1::SweepBegins`]).
const SWEEPS_KEY: &str = "sweeps_begun";

/// How many sweeps have begun (0 before the first).
pub(crate) async fn sweeps_begun(c: &mut SqliteConnection) -> Res<u64> {
    match kv_get(c, SWEEPS_KEY).await? {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|e| MetaError::corrupt(format!("kv {SWEEPS_KEY}"), e)),
    }
}

/// `SweepBegins`: one more sweep.
async fn sweep_begins(c: &mut SqliteConnection) -> Res<Outcome> {
    let n = sweeps_begun(c).await?.saturating_add(1);
    kv_set(c, SWEEPS_KEY, &n.to_string()).await?;
    Ok(Outcome::Done)
}

/// What kept a new file's parts from the sweeper while they were written.
#[derive(Clone, Copy)]
enum Claim {
    /// An intent, which must still exist (`CommitFile`).
    Intent,
    /// Nothing: parts started when this many sweeps had begun, and none may have begun
    /// since (`CommitSmallFile`).
    SweepsBefore(u64),
}

/// The file a `CommitFile` makes visible.
struct NewFile<'a> {
    file_id: FileId,
    policy: &'a str,
    geometry: &'a Geometry,
    size: u64,
    content_blake3: &'a str,
    segments: &'a [NewSegment],
    source: &'a SourceIdentity,
}

/// `CommitFile`: makes an ingested file visible at `path` (creating missing directories) and
/// drops its intent, which must exist. The intent is dropped even when the commit is then
/// refused (the ingest is over either way). A taken name follows `conflict`: `Rename` picks
/// "name (n).ext", `Skip` stores nothing, `Fail` refuses, `Replace` replaces a file (never a
/// directory), whose dead properties the new version keeps.
async fn commit_file(
    c: &mut SqliteConnection,
    file: &NewFile<'_>,
    claim: Claim,
    path: &str,
    conflict: Conflict,
    time_ms: u64,
) -> Res<Outcome> {
    let file_id = file.file_id;
    let parsed = match parse_path(path) {
        Ok(p) if !p.is_root() => Ok(p),
        Ok(p) => Err(Rejection::InvalidPath(p.to_string())),
        Err(r) => Err(r),
    };
    // The usual case, a folder that exists: one statement reads everything the commit needs
    // (nothing below writes before the reads it replaces).
    let early = match &parsed {
        Ok(p) => probe_commit_in(c, file_id, p).await?,
        Err(_) => None,
    };
    match claim {
        Claim::Intent => {
            if !intent_exists(c, file_id).await? {
                reject!(Rejection::NoIntent(file_id.to_string()));
            }
            delete_intent(c, file_id).await?;
        }
        Claim::SweepsBefore(seen) => {
            let begun = match &early {
                Some(p) => p.sweeps_begun,
                None => sweeps_begun(c).await?,
            };
            if begun > seen {
                reject!(Rejection::PartsMaybeSwept(file_id.to_string()));
            }
        }
    }
    let path = match parsed {
        Ok(p) => p,
        Err(r) => reject!(r),
    };
    let mut name = path.name().unwrap_or_default().to_owned();
    let (dir, probe) = match early {
        Some(p) => (p.dir, p.probe),
        None => {
            let dir = match mkdir_all(c, &path.parent(), time_ms as i64).await? {
                Ok(d) => d,
                Err(r) => reject!(r),
            };
            (dir, probe_commit(c, file_id, dir, &name).await?)
        }
    };
    // Refused after every other refusal (so that no other command's outcome changes) and
    // before anything is replaced: such a command used to fail SQLite's constraints, an
    // error that stopped every replica at this entry.
    let unstorable = unstorable_file(file, probe.id_taken);
    let mut replaced_entry = None;
    if let Some(existing) = probe.existing {
        match conflict {
            Conflict::Rename => {
                name = free_name(c, dir, &name, name_room(&path.parent())).await?;
            }
            Conflict::Skip => {
                return Ok(Outcome::Skipped {
                    path: path.to_string(),
                })
            }
            Conflict::Fail => reject!(Rejection::AlreadyExists(path.to_string())),
            Conflict::Replace if existing.is_dir => {
                reject!(Rejection::IsADirectory(path.to_string()))
            }
            Conflict::Replace => {
                if let Some(r) = unstorable {
                    reject!(r);
                }
                if let Some(r) =
                    apply_trash::retained(c, existing.id, &path.to_string(), time_ms).await?
                {
                    reject!(r);
                }
                apply_trash::trash_below(c, existing.id, &path.to_string(), time_ms).await?;
                // The new version keeps the old one's dead properties (moved below).
                sqlx::query("DELETE FROM entries WHERE id = ?")
                    .bind(existing.id)
                    .execute(&mut *c)
                    .await
                    .db("delete the replaced entry")?;
                if let Some(old) = existing.file_id {
                    release_file(c, old).await?;
                }
                replaced_entry = Some(existing.id);
            }
        }
    }
    if let Some(r) = unstorable {
        reject!(r);
    }
    // No name that a path check would refuse is ever stored (every face and command refuses
    // such a path, so the file could never be read, moved or removed).
    let stored = child_path(&path.parent(), &name);
    match TreePath::parse(&stored) {
        Ok(p) if p.name() == Some(name.as_str()) => {}
        Ok(_) => reject!(Rejection::Invalid(format!(
            "{stored}: the name is not in normal form (NFC)"
        ))),
        Err(e) => reject!(Rejection::Invalid(e.to_string())),
    }
    let entry = insert_file(c, file, dir, &name, probe.retention, time_ms).await?;
    if let Some(old) = replaced_entry {
        sqlx::query("UPDATE props SET entry = ? WHERE entry = ?")
            .bind(entry)
            .bind(old)
            .execute(&mut *c)
            .await
            .db("move dead properties to the new version")?;
    }
    if let Some(key) = source_key(file.source) {
        sqlx::query("INSERT OR REPLACE INTO sources (key, file_id) VALUES (?, ?)")
            .bind(key)
            .bind(file_id.to_bytes().to_vec())
            .execute(&mut *c)
            .await
            .db("record a drop-folder source")?;
    }
    Ok(Outcome::Committed {
        path: child_path(&path.parent(), &name),
        file_id,
        replaced: replaced_entry.is_some(),
    })
}

/// What a commit reads before it writes anything, in one statement (each statement is a round
/// trip to sqlx's connection thread): whether its file id names a committed file, the entry
/// already named `name` in `dir`, and the retention that applies to files committed in `dir`
/// (`apply_trash::retention_for`; nothing the commit then does changes it).
struct CommitProbe {
    id_taken: bool,
    existing: Option<Resolved>,
    retention: Option<u64>,
}

async fn probe_commit(
    c: &mut SqliteConnection,
    file_id: FileId,
    dir: i64,
    name: &str,
) -> Res<CommitProbe> {
    let row = sqlx::query(
        "WITH RECURSIVE up(id, depth) AS (SELECT ?1, 0
           UNION ALL SELECT e.parent, up.depth + 1 FROM entries e JOIN up ON e.id = up.id
           WHERE e.id != 1)
         SELECT EXISTS (SELECT 1 FROM files WHERE file_id = ?2),
                (SELECT e.retain_ms FROM up JOIN entries e ON e.id = up.id
                 WHERE e.retain_ms IS NOT NULL ORDER BY up.depth LIMIT 1),
                n.id, n.is_dir, n.file_id
         FROM (SELECT 1) LEFT JOIN entries n ON n.parent = ?1 AND n.name = ?3",
    )
    .bind(dir)
    .bind(file_id.to_bytes().to_vec())
    .bind(name)
    .fetch_one(&mut *c)
    .await
    .db("read what a commit needs")?;
    read_probe(&row, 0, format!("directory {dir}"))
}

/// A [`CommitProbe`] from `row`'s columns `at`..`at + 5`: whether the id is taken, the
/// retention, then the existing entry's id, `is_dir` and `file_id` (all NULL when none).
fn read_probe(row: &sqlx::sqlite::SqliteRow, at: usize, key: String) -> Res<CommitProbe> {
    let r = Cols::new(row, "entries").key(key);
    let existing = match r.col::<Option<i64>>(at + 2, "id")? {
        None => None,
        Some(_) => {
            let e = Cols::new(row, "entries").key_col("id", at + 2);
            Some(Resolved {
                id: e.col(at + 2, "id")?,
                is_dir: e.flag(at + 3, "is_dir")?,
                file_id: e.opt_file_id(at + 4, "file_id")?,
            })
        }
    };
    Ok(CommitProbe {
        id_taken: r.flag(at, "files")?,
        existing,
        retention: r.opt_int(at + 1, "retain_ms")?,
    })
}

/// [`CommitProbe`] with the folder it was read in and the sweep count.
struct FolderProbe {
    dir: i64,
    probe: CommitProbe,
    sweeps_begun: u64,
}

/// What a commit to `path` reads, in one statement when `path`'s folder exists (the walk of
/// [`walk`], then [`probe_commit`]'s reads and the sweep count); `None` when a folder on the
/// way is missing or a file, for [`mkdir_all`] to make or refuse. A small file's commit was
/// four statements (the sweep count, a step of the walk per folder, the probe).
async fn probe_commit_in(
    c: &mut SqliteConnection,
    file_id: FileId,
    path: &TreePath,
) -> Res<Option<FolderProbe>> {
    let parent = path.parent();
    let name = path.name().unwrap_or_default();
    let row = sqlx::query(concat!(
        walk_cte!(),
        ", d(id) AS (SELECT id FROM w WHERE depth = ?2 AND is_dir),
         up(id, depth) AS (SELECT id, 0 FROM d
           UNION ALL SELECT e.parent, up.depth + 1 FROM entries e JOIN up ON e.id = up.id
           WHERE e.id != 1)
         SELECT d.id,
                EXISTS (SELECT 1 FROM files WHERE file_id = ?3),
                (SELECT e.retain_ms FROM up JOIN entries e ON e.id = up.id
                 WHERE e.retain_ms IS NOT NULL ORDER BY up.depth LIMIT 1),
                n.id, n.is_dir, n.file_id,
                (SELECT value FROM kv WHERE key = ?5)
         FROM d LEFT JOIN entries n ON n.parent = d.id AND n.name = ?4"
    ))
    .bind(names_json(&parent)?)
    .bind(parent.components().len() as i64)
    .bind(file_id.to_bytes().to_vec())
    .bind(name)
    .bind(SWEEPS_KEY)
    .fetch_optional(&mut *c)
    .await
    .db("read what a commit needs")?;
    let Some(row) = row else {
        return Ok(None);
    };
    let dir: i64 = Cols::new(&row, "entries")
        .key(format!("directory {parent}"))
        .col(0, "id")?;
    let probe = read_probe(&row, 1, format!("directory {parent}"))?;
    let sweeps_begun = match Cols::new(&row, "kv")
        .key(format!("key {SWEEPS_KEY}"))
        .col::<Option<String>>(6, "value")?
    {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|e| MetaError::corrupt(format!("kv {SWEEPS_KEY}"), e))?,
    };
    Ok(Some(FolderProbe {
        dir,
        probe,
        sweeps_begun,
    }))
}

/// Why `file` cannot be stored, if it cannot: its id names a committed file already
/// (`id_taken`), or one of its segment indexes appears twice.
fn unstorable_file(file: &NewFile<'_>, id_taken: bool) -> Option<Rejection> {
    if id_taken {
        return Some(Rejection::Invalid(format!(
            "file {} is committed already",
            file.file_id
        )));
    }
    repeated_segment(file.segments, &[]).map(Rejection::Invalid)
}

/// A segment index of `new` that appears twice, or is one of `existing`'s, as a message.
fn repeated_segment(new: &[NewSegment], existing: &[u32]) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    new.iter().find_map(|s| {
        if existing.contains(&s.index) {
            Some(format!("segment {} exists already", s.index))
        } else if !seen.insert(s.index) {
            Some(format!("segment {} appears twice", s.index))
        } else {
            None
        }
    })
}

/// Inserts a committed file's row, its segments and parts, and its entry `name` in `dir`, with
/// the retention that applies there (`retention`, read by [`probe_commit`]); returns the
/// entry's id.
async fn insert_file(
    c: &mut SqliteConnection,
    file: &NewFile<'_>,
    dir: i64,
    name: &str,
    retention: Option<u64>,
    time_ms: u64,
) -> Res<i64> {
    let encode = |what: &'static str, e: serde_json::Error| MetaError::Encode {
        what,
        detail: e.to_string(),
    };
    let geometry_json =
        serde_json::to_string(file.geometry).map_err(|e| encode("a file's geometry", e))?;
    let source_json =
        serde_json::to_string(file.source).map_err(|e| encode("a file's source", e))?;
    let hashes: Vec<String> = file.segments.iter().map(|s| s.blake3.clone()).collect();
    let id = file.file_id.to_bytes().to_vec();
    let mut q = sqlx::QueryBuilder::new(
        "INSERT INTO files (file_id, size, policy, geometry, content_blake3, etag, created_ms, mtime_ms, source) ",
    );
    q.push_values([()], |mut b, ()| {
        b.push_bind(id.clone())
            .push_bind(file.size as i64)
            .push_bind(file.policy.to_owned())
            .push_bind(geometry_json.clone())
            .push_bind(file.content_blake3.to_owned())
            .push_bind(etag_for(file.size, &hashes))
            .push_bind(time_ms as i64)
            .push_bind(time_ms as i64)
            .push_bind(source_json.clone());
    });
    let push_entry = |q: &mut sqlx::QueryBuilder<sqlx::Sqlite>| {
        q.push("INSERT INTO entries (parent, name, is_dir, file_id, mtime_ms) VALUES (");
        q.push_bind(dir)
            .push(", ")
            .push_bind(name.to_owned())
            .push(", 0, ")
            .push_bind(id.clone())
            .push(", ")
            .push_bind(time_ms as i64)
            .push(")");
    };
    // A small file (every part written, a few segments) is inserted in one round trip: the
    // same statements, in the same order, as the longer way below.
    let one_trip = file.segments.len() <= SEGMENTS_PER_TRIP
        && file
            .segments
            .iter()
            .all(|s| s.parts.iter().all(Option::is_some));
    let entry = if one_trip {
        if !file.segments.is_empty() {
            q.push("; ");
            push_segments(&mut q, &id, file.segments, 0, time_ms);
        }
        q.push("; ");
        push_entry(&mut q);
        // The last statement is the entry's insert: its row id is the result's.
        q.build()
            .execute(&mut *c)
            .await
            .db("insert a file, its segments and its entry")?
            .last_insert_rowid()
    } else {
        q.build().execute(&mut *c).await.db("insert a file")?;
        insert_segments(c, file.file_id, 0, file.segments, time_ms).await?;
        let mut q = sqlx::QueryBuilder::new("");
        push_entry(&mut q);
        q.build()
            .execute(&mut *c)
            .await
            .db("insert a file's entry")?
            .last_insert_rowid()
    };
    apply_trash::retain_entry(c, entry, retention, time_ms).await?;
    Ok(entry)
}

/// `AppendSegments`: adds segments to the end of a committed file and drops the appending
/// intent, which must exist (and is dropped even when the append is then refused). Refused
/// when the file is gone, is shared with a copy, or changed since the append began (its size
/// is not `expected_size`, or the first new segment does not follow its last).
async fn append_segments(
    c: &mut SqliteConnection,
    intent_id: FileId,
    file_id: FileId,
    expected_size: u64,
    segments: &[NewSegment],
    time_ms: u64,
) -> Res<Outcome> {
    if !intent_exists(c, intent_id).await? {
        reject!(Rejection::NoIntent(intent_id.to_string()));
    }
    delete_intent(c, intent_id).await?;
    let id = file_id.to_bytes().to_vec();
    let row = sqlx::query("SELECT size FROM files WHERE file_id = ?")
        .bind(&id)
        .fetch_optional(&mut *c)
        .await
        .db("read the file appended to")?;
    let Some(row) = row else {
        reject!(Rejection::NotFound(file_id.to_string()));
    };
    let key = format!("file_id {file_id}");
    let size: u64 = Cols::new(&row, "files").key(&key).int(0, "size")?;
    let names: i64 = Cols::new(
        &sqlx::query("SELECT COUNT(*) FROM entries WHERE file_id = ?")
            .bind(&id)
            .fetch_one(&mut *c)
            .await
            .db("count a file's names")?,
        "entries",
    )
    .key(&key)
    .col(0, "count")?;
    if names == 0 {
        // Only the trash names it.
        reject!(Rejection::NotFound(file_id.to_string()));
    }
    if names > 1 {
        reject!(Rejection::Invalid(format!(
            "{file_id} is shared with a copy; appending would change the copy too"
        )));
    }
    if let Some(r) = apply_trash::file_retained(c, file_id, time_ms).await? {
        reject!(r);
    }
    if size != expected_size {
        reject!(Rejection::Changed(file_id.to_string()));
    }
    let first_new: i64 = Cols::new(
        &sqlx::query("SELECT COALESCE(MAX(seg) + 1, 0) FROM segments WHERE file_id = ?")
            .bind(&id)
            .fetch_one(&mut *c)
            .await
            .db("find the next segment index")?,
        "segments",
    )
    .key(&key)
    .col(0, "seg")?;
    if segments.first().map(|s| i64::from(s.index)) != Some(first_new) {
        reject!(Rejection::Changed(file_id.to_string()));
    }
    // A segment index already used (or used twice here) used to fail SQLite's constraints, an
    // error that stopped every replica at this entry.
    let existing: Vec<u32> = sqlx::query("SELECT seg FROM segments WHERE file_id = ?")
        .bind(&id)
        .fetch_all(&mut *c)
        .await
        .db("read a file's segments")?
        .iter()
        .map(|r| Cols::new(r, "segments").key(&key).int(0, "seg"))
        .collect::<Res<_>>()?;
    if let Some(why) = repeated_segment(segments, &existing) {
        reject!(Rejection::Invalid(format!("{file_id}: {why}")));
    }
    let new_size = insert_segments(c, file_id, expected_size, segments, time_ms).await?;
    let hashes: Vec<String> =
        sqlx::query("SELECT blake3 FROM segments WHERE file_id = ? ORDER BY seg")
            .bind(&id)
            .fetch_all(&mut *c)
            .await
            .db("read segment hashes")?
            .iter()
            .map(|r| Cols::new(r, "segments").key(&key).col(0, "blake3"))
            .collect::<Res<_>>()?;
    sqlx::query(
        "UPDATE files SET size = ?, content_blake3 = NULL, etag = ?, mtime_ms = ? WHERE file_id = ?",
    )
    .bind(new_size as i64)
    .bind(etag_for(new_size, &hashes))
    .bind(time_ms as i64)
    .bind(&id)
    .execute(&mut *c)
    .await
    .db("update the appended file")?;
    sqlx::query("UPDATE entries SET mtime_ms = ? WHERE file_id = ?")
        .bind(time_ms as i64)
        .bind(&id)
        .execute(&mut *c)
        .await
        .db("update the appended file's names")?;
    Ok(Outcome::Done)
}

/// `Remove`: removes a file's name (its rows go once no name is left), or a directory: an
/// empty one, or with `recursive` everything below it. Never the root.
async fn remove(
    c: &mut SqliteConnection,
    path: &str,
    recursive: bool,
    time_ms: u64,
) -> Res<Outcome> {
    let path = match parse_path(path) {
        Ok(p) if !p.is_root() => p,
        Ok(p) => reject!(Rejection::InvalidPath(p.to_string())),
        Err(r) => reject!(r),
    };
    let r = match walk(c, &path).await? {
        Walk::Found(r) => r,
        _ => reject!(Rejection::NotFound(path.to_string())),
    };
    if r.is_dir {
        let has_child = sqlx::query("SELECT 1 FROM entries WHERE parent = ? LIMIT 1")
            .bind(r.id)
            .fetch_optional(&mut *c)
            .await
            .db("read a directory's children")?
            .is_some();
        if has_child && !recursive {
            reject!(Rejection::NotEmpty(path.to_string()));
        }
    }
    if let Some(r) = apply_trash::retained(c, r.id, &path.to_string(), time_ms).await? {
        reject!(r);
    }
    delete_subtree(c, r.id, &path.to_string(), time_ms).await?;
    Ok(Outcome::Done)
}

/// `Rename`: moves a file or directory to `to`, whose parent must be a directory. A taken
/// name is refused unless `replace` and both are files (the replaced file is released).
/// Renaming onto itself is accepted; the root, and a directory into itself, are refused.
async fn rename(
    c: &mut SqliteConnection,
    from: &str,
    to: &str,
    replace: bool,
    time_ms: u64,
) -> Res<Outcome> {
    let (from, to) = match (parse_path(from), parse_path(to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => reject!(r),
    };
    if from.is_root() || to.is_root() || (to.starts_with(&from) && to != from) {
        reject!(Rejection::InvalidPath(to.to_string()));
    }
    let src = match walk(c, &from).await? {
        Walk::Found(r) => r,
        _ => reject!(Rejection::NotFound(from.to_string())),
    };
    let parent = match walk(c, &to.parent()).await? {
        Walk::Found(r) if r.is_dir => r,
        Walk::Found(_) => reject!(Rejection::NotADirectory(to.parent().to_string())),
        _ => reject!(Rejection::NotFound(to.parent().to_string())),
    };
    let name = to.name().unwrap_or_default();
    if let Some(r) = subtree_fits(c, &src, &to).await? {
        reject!(r);
    }
    if let Some(existing) = lookup_child(c, parent.id, name).await? {
        if existing.id == src.id {
            return Ok(Outcome::Done);
        }
        if !replace || existing.is_dir || src.is_dir {
            reject!(Rejection::AlreadyExists(to.to_string()));
        }
        if let Some(r) = apply_trash::retained(c, existing.id, &to.to_string(), time_ms).await? {
            reject!(r);
        }
    }
    if let Some(r) = apply_trash::retained(c, src.id, &from.to_string(), time_ms).await? {
        reject!(r);
    }
    if let Some(existing) = lookup_child(c, parent.id, name).await? {
        delete_subtree(c, existing.id, &to.to_string(), time_ms).await?;
    }
    sqlx::query("UPDATE entries SET parent = ?, name = ?, mtime_ms = ? WHERE id = ?")
        .bind(parent.id)
        .bind(name)
        .bind(time_ms as i64)
        .bind(src.id)
        .execute(&mut *c)
        .await
        .db("rename an entry")?;
    Ok(Outcome::Done)
}
