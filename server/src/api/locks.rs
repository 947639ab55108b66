//! The API honours WebDAV locks: a write in a live lock's way is refused with 423 naming the
//! locks, unless the caller asks to break them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::types::{BrokenLocks, ErrorBody, ErrorKind, LockInfo};
use super::ApiError;
use crate::store::Store;
use wormfs_meta::command::Lock;
use wormfs_parts::tree_path::TreePath;

/// The locks as answers list them.
pub(super) fn lock_infos(locks: &[Lock]) -> Vec<LockInfo> {
    let now = wormfs_parts::fsutil::now_ms();
    locks.iter().map(|l| LockInfo::new(l, now)).collect()
}

/// A write to a path a live lock covers (a lock on it or a depth-infinity lock on an ancestor;
/// for `(path, true)` also any lock below it) is refused with 423 naming the locks, unless
/// `break_locks`, which removes them first. Returns the locks broken.
pub(super) async fn honour_locks(
    store: &Store,
    paths: &[(TreePath, bool)],
    break_locks: bool,
) -> Result<Vec<Lock>, Response> {
    let locks = store
        .locks_in_the_way(paths)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    if locks.is_empty() {
        return Ok(locks);
    }
    if !break_locks {
        let l = &locks[0];
        let msg = format!(
            "{} is locked by WebDAV (held by {}, expires in {} s){}; retry later or pass break_locks=true (CLI: --break-locks) to remove the lock",
            l.path,
            l.principal.as_deref().unwrap_or("an anonymous client"),
            l.expires_ms.saturating_sub(wormfs_parts::fsutil::now_ms()).div_ceil(1000),
            if locks.len() > 1 { format!(" and {} more lock(s)", locks.len() - 1) } else { String::new() },
        );
        let body = ErrorBody {
            error: msg,
            kind: ErrorKind::Locked,
            locks: lock_infos(&locks),
        };
        return Err((StatusCode::LOCKED, Json(body)).into_response());
    }
    for l in &locks {
        store
            .break_lock(&l.token)
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
        tracing::warn!(path = %l.path, principal = ?l.principal, token = %l.token, "API write broke a WebDAV lock");
    }
    Ok(locks)
}

/// A write's paths: with their parents (a lock on a collection protects its members list).
pub(super) fn with_parent(p: &TreePath, below: bool) -> Vec<(TreePath, bool)> {
    let mut v = vec![(p.clone(), below)];
    if !p.is_root() {
        v.push((p.parent(), false));
    }
    v
}

/// The answer of a change without a body: 204, or 200 naming the locks it broke.
pub(super) fn done(broken: &[Lock]) -> Response {
    if broken.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        Json(BrokenLocks {
            broken_locks: lock_infos(broken),
        })
        .into_response()
    }
}
