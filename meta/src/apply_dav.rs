//! Deterministic application of the WebDAV commands: COPY as a shared file, dead properties
//! and locks. Like `apply.rs`, this reads only the command and the database.

use crate::command::{DeadProp, Lock};
use crate::lock_rules;
use sqlx::SqliteConnection;

use super::apply::{delete_subtree, lookup_child, walk, Walk};
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

/// Copies the dead properties of entry `from` to entry `to`.
async fn copy_props(c: &mut SqliteConnection, from: i64, to: i64) -> Res<()> {
    sqlx::query(
        "INSERT OR REPLACE INTO props (entry, ns, name, prefix, xml)
         SELECT ?, ns, name, prefix, xml FROM props WHERE entry = ?",
    )
    .bind(to)
    .bind(from)
    .execute(&mut *c)
    .await
    .db("copy dead properties")?;
    Ok(())
}

/// `Copy`: a new entry for the same file.
pub(crate) async fn copy(
    c: &mut SqliteConnection,
    from: &str,
    to: &str,
    replace: bool,
    time_ms: u64,
) -> Res<Outcome> {
    let (from, to) = match (parse(from), parse(to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => reject!(r),
    };
    if to.is_root() {
        reject!(Rejection::InvalidPath(to.to_string()));
    }
    let src = match walk(c, &from).await? {
        Walk::Found(r) => r,
        _ => reject!(Rejection::NotFound(from.to_string())),
    };
    let Some(file_id) = src.file_id.filter(|_| !src.is_dir) else {
        reject!(Rejection::IsADirectory(from.to_string()));
    };
    let parent = match walk(c, &to.parent()).await? {
        Walk::Found(r) if r.is_dir => r,
        Walk::Found(_) => reject!(Rejection::NotADirectory(to.parent().to_string())),
        _ => reject!(Rejection::NotFound(to.parent().to_string())),
    };
    let name = to.name().unwrap_or_default();
    if let Some(existing) = lookup_child(c, parent.id, name).await? {
        if existing.id == src.id {
            reject!(Rejection::InvalidPath(to.to_string()));
        }
        if !replace || existing.is_dir {
            reject!(Rejection::AlreadyExists(to.to_string()));
        }
        if let Some(r) = apply_trash::retained(c, existing.id, &to.to_string(), time_ms).await? {
            reject!(r);
        }
        delete_subtree(c, existing.id, &to.to_string(), time_ms).await?;
    }
    let r = sqlx::query(
        "INSERT INTO entries (parent, name, is_dir, file_id, mtime_ms) VALUES (?, ?, 0, ?, ?)",
    )
    .bind(parent.id)
    .bind(name)
    .bind(file_id.to_bytes().to_vec())
    .bind(time_ms as i64)
    .execute(&mut *c)
    .await
    .db("insert a copy's entry")?;
    copy_props(c, src.id, r.last_insert_rowid()).await?;
    apply_trash::retain_new_entry(c, r.last_insert_rowid(), parent.id, time_ms).await?;
    Ok(Outcome::Done)
}

/// `PatchProps`.
pub(crate) async fn patch_props(
    c: &mut SqliteConnection,
    path: &str,
    patch: &[(bool, DeadProp)],
) -> Res<Outcome> {
    let path = match parse(path) {
        Ok(p) => p,
        Err(r) => reject!(r),
    };
    let entry = match walk(c, &path).await? {
        Walk::Found(r) => r.id,
        _ => reject!(Rejection::NotFound(path.to_string())),
    };
    for (set, p) in patch {
        if !set {
            sqlx::query("DELETE FROM props WHERE entry = ? AND ns = ? AND name = ?")
                .bind(entry)
                .bind(&p.namespace)
                .bind(&p.name)
                .execute(&mut *c)
                .await
                .db("remove a dead property")?;
            continue;
        }
        sqlx::query(
            "INSERT OR REPLACE INTO props (entry, ns, name, prefix, xml) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(entry)
        .bind(&p.namespace)
        .bind(&p.name)
        .bind(&p.prefix)
        .bind(&p.xml)
        .execute(&mut *c)
        .await
        .db("set a dead property")?;
    }
    Ok(Outcome::Done)
}

/// Reads every lock row.
pub(crate) async fn all_locks(c: &mut SqliteConnection) -> Res<Vec<Lock>> {
    let rows = sqlx::query(
        "SELECT token, path, href, principal, owner_xml, expires_ms, timeout_secs, shared, deep
         FROM locks ORDER BY token",
    )
    .fetch_all(&mut *c)
    .await
    .db("read locks")?;
    rows.iter()
        .map(|r| {
            let r = Cols::new(r, "locks").key_col("token", 0);
            Ok(Lock {
                token: r.col(0, "token")?,
                path: r.col(1, "path")?,
                href: r.col(2, "href")?,
                principal: r.col(3, "principal")?,
                owner_xml: r.col(4, "owner_xml")?,
                expires_ms: r.int(5, "expires_ms")?,
                timeout_secs: r.int(6, "timeout_secs")?,
                shared: r.flag(7, "shared")?,
                deep: r.flag(8, "deep")?,
            })
        })
        .collect()
}

/// `Lock`.
pub(crate) async fn lock(c: &mut SqliteConnection, new: &Lock, now_ms: u64) -> Res<Outcome> {
    if parse(&new.path).is_err() || new.token.is_empty() {
        reject!(Rejection::Invalid(format!("lock on {}", new.path)));
    }
    sqlx::query("DELETE FROM locks WHERE expires_ms <= ?")
        .bind(now_ms as i64)
        .execute(&mut *c)
        .await
        .db("drop expired locks")?;
    let held = all_locks(c).await?;
    if let Some(conflict) = lock_rules::conflict_for_new(&held, new, now_ms) {
        return Ok(Outcome::LockConflict(conflict.clone()));
    }
    // A token in use used to fail SQLite's constraint, an error that stopped every replica
    // at this entry.
    if held.iter().any(|l| l.token == new.token) {
        reject!(Rejection::Invalid(format!(
            "lock token {} is in use",
            new.token
        )));
    }
    sqlx::query(
        "INSERT INTO locks (token, path, href, principal, owner_xml, expires_ms, timeout_secs, shared, deep)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&new.token)
    .bind(&new.path)
    .bind(&new.href)
    .bind(&new.principal)
    .bind(&new.owner_xml)
    .bind(new.expires_ms as i64)
    .bind(new.timeout_secs as i64)
    .bind(i64::from(new.shared))
    .bind(i64::from(new.deep))
    .execute(&mut *c)
    .await.db("insert a lock")?;
    Ok(Outcome::Lock(new.clone()))
}

/// `Unlock`.
pub(crate) async fn unlock(c: &mut SqliteConnection, token: &str) -> Res<Outcome> {
    let r = sqlx::query("DELETE FROM locks WHERE token = ?")
        .bind(token)
        .execute(&mut *c)
        .await
        .db("delete a lock")?;
    if r.rows_affected() == 0 {
        reject!(Rejection::NotFound(format!("lock {token}")));
    }
    Ok(Outcome::Done)
}

/// `RefreshLock`.
pub(crate) async fn refresh(
    c: &mut SqliteConnection,
    token: &str,
    expires_ms: u64,
    timeout_secs: u64,
    now_ms: u64,
) -> Res<Outcome> {
    let r = sqlx::query(
        "UPDATE locks SET expires_ms = ?, timeout_secs = ? WHERE token = ? AND expires_ms > ?",
    )
    .bind(expires_ms as i64)
    .bind(timeout_secs as i64)
    .bind(token)
    .bind(now_ms as i64)
    .execute(&mut *c)
    .await
    .db("refresh a lock")?;
    if r.rows_affected() == 0 {
        reject!(Rejection::NotFound(format!("lock {token}")));
    }
    let lock = all_locks(c).await?.into_iter().find(|l| l.token == token);
    match lock {
        Some(l) => Ok(Outcome::Lock(l)),
        None => reject!(Rejection::NotFound(format!("lock {token}"))),
    }
}

/// `DeleteLocks`.
pub(crate) async fn delete_locks(c: &mut SqliteConnection, path: &str) -> Res<Outcome> {
    let doomed: Vec<String> = all_locks(c)
        .await?
        .into_iter()
        .filter(|l| lock_rules::is_ancestor_or_self(path, &l.path))
        .map(|l| l.token)
        .collect();
    for t in doomed {
        sqlx::query("DELETE FROM locks WHERE token = ?")
            .bind(t)
            .execute(&mut *c)
            .await
            .db("delete a lock")?;
    }
    Ok(Outcome::Done)
}
