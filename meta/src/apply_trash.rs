//! The trash and retention locks: deterministic apply of their commands, the helpers the other
//! commands call when they remove an entry or create one, and the trash's queries.
//!
//! With the trash on (the replicated `trash` setting, see `SetTrash`), an entry naming a file
//! that is removed (deleted, replaced, overwritten by a MOVE or COPY) leaves a trash row with
//! its full path and time: the file's rows stay while an entry or a trash row names it.
//!
//! A directory's retention (`entries.retain_ms`, inherited like the storage policy) gives a
//! file committed (or copied, or restored) below it an absolute end, `entries.retain_until_ms`;
//! until then that entry cannot be removed, replaced, moved, renamed or appended to, nor any
//! directory above it removed or moved. Changing a directory's retention changes only the files
//! written afterwards.

use serde::Serialize;
use sqlx::SqliteConnection;

use super::apply::{kv_get, kv_set, lookup_child, mkdir_all, release_file, walk, Walk};
use super::MetaDb;
use crate::command::{Outcome, Rejection};
use crate::error::{DbContext, Res};
use crate::row::Cols;
use wormfs_parts::ids::FileId;
use wormfs_parts::tree_path::TreePath;

macro_rules! reject {
    ($e:expr) => {
        return Ok(Outcome::Rejected($e))
    };
}

fn parse(p: &str) -> Result<TreePath, Rejection> {
    TreePath::parse(p).map_err(|e| Rejection::Invalid(e.to_string()))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Whether deletes go to the trash (the replicated setting; off until set).
pub(crate) async fn trash_enabled(c: &mut SqliteConnection) -> Res<bool> {
    Ok(kv_get(c, "trash").await?.as_deref() == Some("on"))
}

/// `SetTrash`.
pub(crate) async fn set_trash(c: &mut SqliteConnection, enabled: bool) -> Res<Outcome> {
    kv_set(c, "trash", if enabled { "on" } else { "off" }).await?;
    Ok(Outcome::Done)
}

/// A file entry at or below a directory.
pub(crate) struct FileBelow {
    pub path: String,
    pub file_id: FileId,
    pub mtime_ms: u64,
    pub size: u64,
}

/// Every file entry at or below entry `id` (whose full path is `path`), with its full path.
pub(crate) async fn files_below(
    c: &mut SqliteConnection,
    id: i64,
    path: &str,
) -> Res<Vec<FileBelow>> {
    sqlx::query(
        "WITH RECURSIVE sub(id, path) AS (SELECT ?, ?
           UNION ALL SELECT e.id, sub.path || '/' || e.name FROM entries e JOIN sub ON e.parent = sub.id)
         SELECT sub.path, e.file_id, e.mtime_ms, e.id, COALESCE(f.size, 0)
         FROM sub JOIN entries e ON e.id = sub.id LEFT JOIN files f ON f.file_id = e.file_id
         WHERE e.file_id IS NOT NULL ORDER BY sub.path",
    )
    .bind(id)
    .bind(path)
    .fetch_all(&mut *c)
    .await
    .db("read the files below an entry")?
    .iter()
    .map(|r| {
        let r = Cols::new(r, "entries").key_col("id", 3);
        Ok(FileBelow {
            path: r.col(0, "path")?,
            file_id: r.file_id(1, "file_id")?,
            mtime_ms: r.int(2, "mtime_ms")?,
            size: r.int(4, "files.size")?,
        })
    })
    .collect()
}

/// The refusal if entry `id` (a file, or a directory holding one) is retained at `time_ms`.
pub(crate) async fn retained(
    c: &mut SqliteConnection,
    id: i64,
    path: &str,
    time_ms: u64,
) -> Res<Option<Rejection>> {
    // Most trees hold no retained file: one look at the partial index answers.
    let any = sqlx::query(
        "SELECT 1 FROM entries WHERE retain_until_ms IS NOT NULL AND retain_until_ms > ? LIMIT 1",
    )
    .bind(to_i64(time_ms))
    .fetch_optional(&mut *c)
    .await
    .db("look for retained files")?;
    if any.is_none() {
        return Ok(None);
    }
    let row = sqlx::query(
        "WITH RECURSIVE sub(id, path) AS (SELECT ?, ?
           UNION ALL SELECT e.id, sub.path || '/' || e.name FROM entries e JOIN sub ON e.parent = sub.id)
         SELECT sub.path, e.retain_until_ms, e.id FROM sub JOIN entries e ON e.id = sub.id
         WHERE e.retain_until_ms > ? ORDER BY e.retain_until_ms DESC, sub.path LIMIT 1",
    )
    .bind(id)
    .bind(path)
    .bind(to_i64(time_ms))
    .fetch_optional(&mut *c)
    .await
    .db("look for retained files")?;
    row.map(|r| {
        let r = Cols::new(&r, "entries").key_col("id", 2);
        Ok(Rejection::Retained {
            path: r.col(0, "path")?,
            until_ms: r.int(1, "retain_until_ms")?,
        })
    })
    .transpose()
}

/// Records a trash row for each file entry at or below `id` (when the trash is on; an empty
/// file has nothing to keep, and the one a WebDAV LOCK makes before Finder's PUT would litter
/// the trash). Call before the entries go; release the files after.
pub(crate) async fn trash_below(
    c: &mut SqliteConnection,
    id: i64,
    path: &str,
    time_ms: u64,
) -> Res<Vec<FileId>> {
    let files = files_below(c, id, path).await?;
    if trash_enabled(c).await? {
        for f in files.iter().filter(|f| f.size > 0) {
            sqlx::query(
                "INSERT INTO trash (file_id, path, deleted_ms, mtime_ms) VALUES (?, ?, ?, ?)",
            )
            .bind(f.file_id.to_bytes().to_vec())
            .bind(&f.path)
            .bind(to_i64(time_ms))
            .bind(to_i64(f.mtime_ms))
            .execute(&mut *c)
            .await
            .db("record a trash entry")?;
        }
    }
    Ok(files.into_iter().map(|f| f.file_id).collect())
}

/// The retention that applies to files committed in directory `dir` (its own or the nearest
/// ancestor's), in ms.
pub(crate) async fn retention_for(c: &mut SqliteConnection, dir: i64) -> Res<Option<u64>> {
    let row = sqlx::query(
        "WITH RECURSIVE up(id, depth) AS (SELECT ?, 0
           UNION ALL SELECT e.parent, up.depth + 1 FROM entries e JOIN up ON e.id = up.id
           WHERE e.id != 1)
         SELECT e.retain_ms, e.id FROM up JOIN entries e ON e.id = up.id
         WHERE e.retain_ms IS NOT NULL ORDER BY up.depth LIMIT 1",
    )
    .bind(dir)
    .fetch_optional(&mut *c)
    .await
    .db("read a directory's retention")?;
    row.map(|r| {
        Cols::new(&r, "entries")
            .key_col("id", 1)
            .int(0, "retain_ms")
    })
    .transpose()
}

/// Gives the new file entry `entry` in `dir` the retention that applies there, unless its file
/// is empty: the empty file a WebDAV LOCK makes before the PUT that replaces it (Finder saves
/// that way) must stay replaceable, and there is nothing in it to keep.
pub(crate) async fn retain_new_entry(
    c: &mut SqliteConnection,
    entry: i64,
    dir: i64,
    time_ms: u64,
) -> Res<()> {
    let retention = retention_for(c, dir).await?;
    retain_entry(c, entry, retention, time_ms).await
}

/// Gives the new file entry `entry` the retention `retention` (as [`retention_for`] read it
/// for its directory), as [`retain_new_entry`] does.
pub(crate) async fn retain_entry(
    c: &mut SqliteConnection,
    entry: i64,
    retention: Option<u64>,
    time_ms: u64,
) -> Res<()> {
    if let Some(r) = retention {
        sqlx::query(
            "UPDATE entries SET retain_until_ms = ? WHERE id = ? AND is_dir = 0
             AND EXISTS (SELECT 1 FROM files f WHERE f.file_id = entries.file_id AND f.size > 0)",
        )
        .bind(to_i64(time_ms.saturating_add(r)))
        .bind(entry)
        .execute(&mut *c)
        .await
        .db("retain a file")?;
    }
    Ok(())
}

/// The refusal if the file named by `file_id` (an append's target) is retained at `time_ms`.
pub(crate) async fn file_retained(
    c: &mut SqliteConnection,
    file_id: FileId,
    time_ms: u64,
) -> Res<Option<Rejection>> {
    let row = sqlx::query(
        "SELECT id, retain_until_ms FROM entries WHERE file_id = ? AND retain_until_ms > ?
         ORDER BY retain_until_ms DESC LIMIT 1",
    )
    .bind(file_id.to_bytes().to_vec())
    .bind(to_i64(time_ms))
    .fetch_optional(&mut *c)
    .await
    .db("read a file's retention")?;
    let Some(row) = row else {
        return Ok(None);
    };
    let r = Cols::new(&row, "entries").key_col("id", 0);
    let (id, until_ms): (i64, u64) = (r.col(0, "id")?, r.int(1, "retain_until_ms")?);
    // Its full path, from the entry up to the root.
    let path: Option<String> = sqlx::query(
        "WITH RECURSIVE up(id, parent, path) AS (
           SELECT id, parent, '/' || name FROM entries WHERE id = ?
           UNION ALL SELECT e.id, e.parent, '/' || e.name || up.path
           FROM entries e JOIN up ON e.id = up.parent WHERE up.parent != 1)
         SELECT path FROM up WHERE parent = 1",
    )
    .bind(id)
    .fetch_optional(&mut *c)
    .await
    .db("read a file's path")?
    .map(|r| {
        Cols::new(&r, "entries")
            .key(format!("id {id}"))
            .col(0, "path")
    })
    .transpose()?;
    Ok(Some(Rejection::Retained {
        path: path.unwrap_or_else(|| file_id.to_string()),
        until_ms,
    }))
}

/// `SetRetention`: sets or clears a directory's retention.
pub(crate) async fn set_retention(
    c: &mut SqliteConnection,
    path: &str,
    retain_ms: Option<u64>,
) -> Res<Outcome> {
    let path = match parse(path) {
        Ok(p) => p,
        Err(r) => reject!(r),
    };
    match walk(c, &path).await? {
        Walk::Found(r) if r.is_dir => {
            sqlx::query("UPDATE entries SET retain_ms = ? WHERE id = ?")
                .bind(retain_ms.map(to_i64))
                .bind(r.id)
                .execute(&mut *c)
                .await
                .db("set a retention")?;
            Ok(Outcome::Done)
        }
        Walk::Found(_) => reject!(Rejection::NotADirectory(path.to_string())),
        _ => reject!(Rejection::NotFound(path.to_string())),
    }
}

/// `RestoreTrash`: a new entry at `to` for the trash entry's file.
pub(crate) async fn restore_trash(
    c: &mut SqliteConnection,
    id: u64,
    to: &str,
    time_ms: u64,
) -> Res<Outcome> {
    let to = match parse(to) {
        Ok(p) if !p.is_root() => p,
        Ok(p) => reject!(Rejection::InvalidPath(p.to_string())),
        Err(r) => reject!(r),
    };
    let row = sqlx::query("SELECT file_id, mtime_ms, id FROM trash WHERE id = ?")
        .bind(to_i64(id))
        .fetch_optional(&mut *c)
        .await
        .db("read a trash entry")?;
    let Some(row) = row else {
        reject!(Rejection::NotFound(format!("trash entry {id}")));
    };
    let r = Cols::new(&row, "trash").key_col("id", 2);
    let file_id = r.file_id(0, "file_id")?;
    let mtime_ms: u64 = r.int(1, "mtime_ms")?;
    match walk(c, &to).await? {
        Walk::Found(_) => reject!(Rejection::AlreadyExists(to.to_string())),
        Walk::NotDir(i) => reject!(Rejection::NotADirectory(
            to.components()[..=i]
                .iter()
                .fold(String::new(), |s, n| s + "/" + n)
        )),
        Walk::Missing { .. } => {}
    }
    let dir = match mkdir_all(c, &to.parent(), to_i64(time_ms)).await? {
        Ok(d) => d,
        Err(r) => reject!(r),
    };
    let name = to.name().unwrap_or_default();
    if lookup_child(c, dir, name).await?.is_some() {
        reject!(Rejection::AlreadyExists(to.to_string()));
    }
    let entry = sqlx::query(
        "INSERT INTO entries (parent, name, is_dir, file_id, mtime_ms) VALUES (?, ?, 0, ?, ?)",
    )
    .bind(dir)
    .bind(name)
    .bind(file_id.to_bytes().to_vec())
    .bind(to_i64(mtime_ms))
    .execute(&mut *c)
    .await
    .db("restore a file")?
    .last_insert_rowid();
    retain_new_entry(c, entry, dir, time_ms).await?;
    sqlx::query("DELETE FROM trash WHERE id = ?")
        .bind(to_i64(id))
        .execute(&mut *c)
        .await
        .db("drop a trash entry")?;
    Ok(Outcome::Done)
}

/// `PurgeTrash`: drops the listed entries and those deleted before `deleted_before_ms`, then
/// releases the files no longer named.
pub(crate) async fn purge_trash(
    c: &mut SqliteConnection,
    ids: &[u64],
    deleted_before_ms: Option<u64>,
) -> Res<Outcome> {
    let mut files: Vec<FileId> = Vec::new();
    let read =
        |r: &sqlx::sqlite::SqliteRow| Cols::new(r, "trash").key_col("id", 1).file_id(0, "file_id");
    for id in ids {
        if let Some(r) = sqlx::query("DELETE FROM trash WHERE id = ? RETURNING file_id, id")
            .bind(to_i64(*id))
            .fetch_optional(&mut *c)
            .await
            .db("purge a trash entry")?
        {
            files.push(read(&r)?);
        }
    }
    if let Some(before) = deleted_before_ms {
        for r in sqlx::query("DELETE FROM trash WHERE deleted_ms < ? RETURNING file_id, id")
            .bind(to_i64(before))
            .fetch_all(&mut *c)
            .await
            .db("purge old trash entries")?
            .iter()
        {
            files.push(read(r)?);
        }
    }
    files.sort();
    files.dedup();
    for f in files {
        release_file(c, f).await?;
    }
    Ok(Outcome::Done)
}

/// A file in the trash.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TrashEntry {
    /// The trash entry's id.
    pub id: u64,
    /// Its full path when it was deleted.
    pub path: String,
    /// When it was deleted (ms since the epoch).
    pub deleted_ms: u64,
    /// Its last change before (ms since the epoch).
    pub mtime_ms: u64,
    /// The file.
    pub file_id: FileId,
    /// Its bytes.
    pub size: u64,
    /// Bytes its parts take on the disks (all parts, parity or copies included).
    pub stored_bytes: u64,
    /// Whether it still has a name outside the trash (a copy, or a restored twin): then
    /// purging it frees nothing.
    pub shared: bool,
}

/// What the trash holds, as `status` and `disks` show it.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TrashTotals {
    /// Whether deletes go to the trash now (the replicated setting).
    pub enabled: bool,
    /// Trash entries.
    pub entries: u64,
    /// Files named only by the trash (what emptying it frees).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Their parts' bytes on the disks.
    pub stored_bytes: u64,
}

/// Bytes on disk for a file of `size` bytes stored with `k` data and `m` parity parts (or
/// `k = 1` and `m` extra copies).
fn stored(size: u64, k: u64, m: u64) -> u64 {
    if k == 0 {
        return size;
    }
    let per_part = size.div_ceil(k);
    per_part.saturating_mul(k + m)
}

impl MetaDb {
    /// The trash's entries, oldest first; only those whose path is `under` or below it when
    /// given.
    pub async fn trash(&self, under: Option<&TreePath>) -> Res<Vec<TrashEntry>> {
        let rows = sqlx::query(
            "SELECT t.id, t.path, t.deleted_ms, t.mtime_ms, t.file_id, COALESCE(f.size, 0),
                    COALESCE(f.geometry, '{}'),
                    EXISTS (SELECT 1 FROM entries e WHERE e.file_id = t.file_id)
             FROM trash t LEFT JOIN files f ON f.file_id = t.file_id ORDER BY t.deleted_ms, t.id",
        )
        .fetch_all(&self.pool())
        .await
        .db("read the trash")?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let r = Cols::new(row, "trash").key_col("id", 0);
            let path: String = r.col(1, "path")?;
            if let Some(u) = under {
                let inside =
                    u.is_root() || path == u.to_string() || path.starts_with(&format!("{u}/"));
                if !inside {
                    continue;
                }
            }
            let size: u64 = r.int(5, "files.size")?;
            let geometry: serde_json::Value = r.json(6, "files.geometry")?;
            let k = geometry.get("k").and_then(|v| v.as_u64()).unwrap_or(1);
            let m = geometry.get("m").and_then(|v| v.as_u64()).unwrap_or(0);
            out.push(TrashEntry {
                id: r.int(0, "id")?,
                path,
                deleted_ms: r.int(2, "deleted_ms")?,
                mtime_ms: r.int(3, "mtime_ms")?,
                file_id: r.file_id(4, "file_id")?,
                size,
                stored_bytes: stored(size, k, m),
                shared: r.flag(7, "shared")?,
            });
        }
        Ok(out)
    }

    /// Whether deletes go to the trash now (the replicated setting).
    pub async fn trash_enabled(&self) -> Res<bool> {
        let mut c = self.pool().acquire().await.db("acquire a connection")?;
        trash_enabled(&mut c).await
    }

    /// The trash's figures.
    pub async fn trash_totals(&self) -> Res<TrashTotals> {
        let enabled = self.trash_enabled().await?;
        let all = self.trash(None).await?;
        let mut t = TrashTotals {
            enabled,
            entries: all.len() as u64,
            ..TrashTotals::default()
        };
        let mut seen = std::collections::HashSet::new();
        for e in all.iter().filter(|e| !e.shared) {
            if seen.insert(e.file_id) {
                t.files += 1;
                t.bytes += e.size;
                t.stored_bytes += e.stored_bytes;
            }
        }
        Ok(t)
    }
}

/// A path's retention settings.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Retention {
    /// A directory's own retention (ms), if set.
    pub retain_ms: Option<u64>,
    /// The retention files committed in this directory get (its own or inherited), in ms.
    pub effective_ms: Option<u64>,
    /// A file's retention end (ms since the epoch), if it has one (it may have passed).
    pub retain_until_ms: Option<u64>,
}

impl MetaDb {
    /// The retention of the entry at `path`; `None` if nothing is there.
    pub async fn retention(&self, path: &TreePath) -> Res<Option<Retention>> {
        let mut c = self.pool().acquire().await.db("acquire a connection")?;
        let r = match walk(&mut c, path).await? {
            Walk::Found(r) => r,
            _ => return Ok(None),
        };
        let row = sqlx::query("SELECT retain_ms, retain_until_ms, id FROM entries WHERE id = ?")
            .bind(r.id)
            .fetch_one(&mut *c)
            .await
            .db("read a retention")?;
        let row = Cols::new(&row, "entries").key_col("id", 2);
        let effective_ms = if r.is_dir {
            retention_for(&mut c, r.id).await?
        } else {
            None
        };
        Ok(Some(Retention {
            retain_ms: row.opt_int(0, "retain_ms")?,
            effective_ms,
            retain_until_ms: row.opt_int(1, "retain_until_ms")?,
        }))
    }
}

impl MetaDb {
    /// Clears the retention of every file at `path` or below it (offline only: `wormfs admin
    /// unlock` on a stopped node); returns each file's path and its old retention end, or
    /// `None` if nothing is at `path`. Not a Raft command: it changes this machine's copy only.
    pub async fn unlock_retention(&self, path: &TreePath) -> Res<Option<Vec<(String, u64)>>> {
        let mut tx = self.pool().begin().await.db("begin a transaction")?;
        let r = match walk(&mut tx, path).await? {
            Walk::Found(r) => r,
            _ => return Ok(None),
        };
        let base = if path.is_root() {
            String::new()
        } else {
            path.to_string()
        };
        let rows = sqlx::query(
            "WITH RECURSIVE sub(id, path) AS (SELECT ?, ?
               UNION ALL SELECT e.id, sub.path || '/' || e.name FROM entries e JOIN sub ON e.parent = sub.id)
             SELECT sub.path, e.retain_until_ms, e.id FROM sub JOIN entries e ON e.id = sub.id
             WHERE e.retain_until_ms IS NOT NULL ORDER BY sub.path",
        )
        .bind(r.id)
        .bind(&base)
        .fetch_all(&mut *tx)
        .await
        .db("read retained files")?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let row = Cols::new(row, "entries").key_col("id", 2);
            let id: i64 = row.col(2, "id")?;
            out.push((row.col(0, "path")?, row.int(1, "retain_until_ms")?));
            sqlx::query("UPDATE entries SET retain_until_ms = NULL WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .db("unlock a file")?;
        }
        tx.commit().await.db("commit")?;
        self.bump_generation();
        Ok(Some(out))
    }
}
