//! Deterministic application of WebDAV's tree operations (DELETE, MOVE, COPY of a whole
//! subtree, with Overwrite): each is one command, so it happens whole or not at all. A request
//! that names the root, or a destination that is the source, inside it or one of its
//! ancestors, is rejected before anything changes.

use sqlx::SqliteConnection;

use super::apply::{delete_subtree, lookup_child, subtree_fits, walk, Resolved, Walk};
use super::apply_dav;
use super::apply_trash;
use crate::command::{Outcome, Rejection};
use wormfs_parts::tree_path::TreePath;

use crate::error::{DbContext, Res};
use crate::row::Cols;

macro_rules! reject {
    ($e:expr) => {
        return Ok(Outcome::Rejected($e))
    };
}

fn parse(p: &str) -> Result<TreePath, Rejection> {
    TreePath::parse(p).map_err(|e| Rejection::Invalid(e.to_string()))
}

/// The two paths of a MOVE or COPY, refused when either is the root or when one is inside the
/// other (or they are the same): overwriting an ancestor would delete the source itself.
fn pair(from: &str, to: &str) -> Result<(TreePath, TreePath), Rejection> {
    let (from, to) = (parse(from)?, parse(to)?);
    if from.is_root() {
        return Err(Rejection::InvalidPath(from.to_string()));
    }
    if to.is_root() || to.starts_with(&from) || from.starts_with(&to) {
        return Err(Rejection::InvalidPath(to.to_string()));
    }
    Ok((from, to))
}

/// Where `to` goes: its parent directory's id and its name; a rejection if the parent is not a
/// directory or the name is taken and `replace` is off. Removes nothing.
async fn destination(
    c: &mut SqliteConnection,
    to: &TreePath,
    replace: bool,
) -> Res<Result<(i64, Option<Resolved>), Rejection>> {
    let parent = match walk(c, &to.parent()).await? {
        Walk::Found(r) if r.is_dir => r,
        Walk::Found(_) => return Ok(Err(Rejection::NotADirectory(to.parent().to_string()))),
        _ => return Ok(Err(Rejection::NotFound(to.parent().to_string()))),
    };
    let existing = lookup_child(c, parent.id, to.name().unwrap_or_default()).await?;
    if existing.is_some() && !replace {
        return Ok(Err(Rejection::AlreadyExists(to.to_string())));
    }
    Ok(Ok((parent.id, existing)))
}

/// `RemoveTree`: a file, or a directory and everything below it, and the locks on them.
pub(crate) async fn remove_tree(
    c: &mut SqliteConnection,
    path: &str,
    time_ms: u64,
) -> Res<Outcome> {
    let path = match parse(path) {
        Ok(p) if !p.is_root() => p,
        Ok(p) => reject!(Rejection::InvalidPath(p.to_string())),
        Err(r) => reject!(r),
    };
    let r = match walk(c, &path).await? {
        Walk::Found(r) => r,
        _ => reject!(Rejection::NotFound(path.to_string())),
    };
    if let Some(r) = apply_trash::retained(c, r.id, &path.to_string(), time_ms).await? {
        reject!(r);
    }
    delete_subtree(c, r.id, &path.to_string(), time_ms).await?;
    apply_dav::delete_locks(c, &path.to_string()).await?;
    Ok(Outcome::Done)
}

/// The checks and the overwrite of a MOVE or COPY: both paths parsed and refused as [`pair`]
/// says, the source found (and, for a MOVE, not retained), and whatever is at `to` removed
/// (with its locks) when `replace` and nothing retained is there. Returns the paths, the
/// source and the destination's parent directory.
async fn clear_destination(
    c: &mut SqliteConnection,
    (from, to): (&str, &str),
    replace: bool,
    moving: bool,
    time_ms: u64,
) -> Res<Result<(TreePath, TreePath, Resolved, i64), Rejection>> {
    let (from, to) = match pair(from, to) {
        Ok(p) => p,
        Err(r) => return Ok(Err(r)),
    };
    let src = match walk(c, &from).await? {
        Walk::Found(r) => r,
        _ => return Ok(Err(Rejection::NotFound(from.to_string()))),
    };
    if let Some(r) = subtree_fits(c, &src, &to).await? {
        return Ok(Err(r));
    }
    let (parent, existing) = match destination(c, &to, replace).await? {
        Ok(d) => d,
        Err(r) => return Ok(Err(r)),
    };
    if moving {
        if let Some(r) = apply_trash::retained(c, src.id, &from.to_string(), time_ms).await? {
            return Ok(Err(r));
        }
    }
    if let Some(e) = existing {
        if let Some(r) = apply_trash::retained(c, e.id, &to.to_string(), time_ms).await? {
            return Ok(Err(r));
        }
        delete_subtree(c, e.id, &to.to_string(), time_ms).await?;
        apply_dav::delete_locks(c, &to.to_string()).await?;
    }
    Ok(Ok((from, to, src, parent)))
}

/// `MoveTree`: renames a file or directory; with `replace`, whatever is at `to` (a file or a
/// whole directory) is removed in the same step. Locks on the source and on what was replaced
/// are dropped (a lock never follows a MOVE, RFC 4918 section 7.7).
pub(crate) async fn move_tree(
    c: &mut SqliteConnection,
    from: &str,
    to: &str,
    replace: bool,
    time_ms: u64,
) -> Res<Outcome> {
    let (from, to, src, parent) =
        match clear_destination(c, (from, to), replace, true, time_ms).await? {
            Ok(x) => x,
            Err(r) => reject!(r),
        };
    sqlx::query("UPDATE entries SET parent = ?, name = ?, mtime_ms = ? WHERE id = ?")
        .bind(parent)
        .bind(to.name().unwrap_or_default())
        .bind(time_ms as i64)
        .bind(src.id)
        .execute(&mut *c)
        .await
        .db("move an entry")?;
    apply_dav::delete_locks(c, &from.to_string()).await?;
    Ok(Outcome::Done)
}

/// Inserts a copy of entry `src` (a new name for the same immutable file, or an empty
/// directory) under `parent`, with its dead properties and policy; returns the new id.
async fn copy_entry(
    c: &mut SqliteConnection,
    src: i64,
    parent: i64,
    name: &str,
    time_ms: u64,
) -> Res<i64> {
    let r = sqlx::query(
        "INSERT INTO entries (parent, name, is_dir, file_id, policy, retain_ms, mtime_ms)
         SELECT ?, ?, is_dir, file_id, policy, retain_ms, ? FROM entries WHERE id = ?",
    )
    .bind(parent)
    .bind(name)
    .bind(time_ms as i64)
    .bind(src)
    .execute(&mut *c)
    .await
    .db("copy an entry")?;
    let id = r.last_insert_rowid();
    sqlx::query(
        "INSERT INTO props (entry, ns, name, prefix, xml)
         SELECT ?, ns, name, prefix, xml FROM props WHERE entry = ?",
    )
    .bind(id)
    .bind(src)
    .execute(&mut *c)
    .await
    .db("copy an entry's dead properties")?;
    // A copied file gets the retention of where it lands, as a new file would.
    apply_trash::retain_new_entry(c, id, parent, time_ms).await?;
    Ok(id)
}

/// `CopyTree`: copies a file, or a directory (with everything below it when `deep`), to `to`;
/// files are shared, never rewritten. With `replace`, whatever is at `to` is removed in the
/// same step (and its locks dropped).
pub(crate) async fn copy_tree(
    c: &mut SqliteConnection,
    from: &str,
    to: &str,
    replace: bool,
    deep: bool,
    time_ms: u64,
) -> Res<Outcome> {
    let (_, to, src, parent) =
        match clear_destination(c, (from, to), replace, false, time_ms).await? {
            Ok(x) => x,
            Err(r) => reject!(r),
        };
    let top = copy_entry(c, src.id, parent, to.name().unwrap_or_default(), time_ms).await?;
    if !(src.is_dir && deep) {
        return Ok(Outcome::Done);
    }
    // Breadth by breadth without recursion: the destination is not inside the source (checked
    // above), so the walk only ever reads entries that existed before it began.
    let mut stack = vec![(src.id, top)];
    while let Some((from_dir, to_dir)) = stack.pop() {
        let children: Vec<(i64, String, bool)> =
            sqlx::query("SELECT id, name, is_dir FROM entries WHERE parent = ? ORDER BY name")
                .bind(from_dir)
                .fetch_all(&mut *c)
                .await
                .db("read a directory's children")?
                .iter()
                .map(|r| {
                    let r = Cols::new(r, "entries").key_col("id", 0);
                    Ok((r.col(0, "id")?, r.col(1, "name")?, r.flag(2, "is_dir")?))
                })
                .collect::<Res<_>>()?;
        for (id, name, is_dir) in children {
            let new = copy_entry(c, id, to_dir, &name, time_ms).await?;
            if is_dir {
                stack.push((id, new));
            }
        }
    }
    Ok(Outcome::Done)
}
