//! The WebDAV face's edge: its dead properties and locks converted to and from the log's own
//! types (`wormfs_meta::command`), so that nothing in the WebDAV crate can change what the Raft
//! log holds, and its lock checks run on the metadata's rules (`wormfs_meta::lock_rules`).

use wormfs_meta::command::{DeadProp as LogProp, Lock as LogLock};
use wormfs_meta::lock_rules;
use wormfs_webdav::{DeadProp, LockCheck, LockInfo};

/// A dead property for the log.
pub(crate) fn prop_to_log(p: DeadProp) -> LogProp {
    let DeadProp {
        namespace,
        name,
        prefix,
        xml,
    } = p;
    LogProp {
        namespace,
        name,
        prefix,
        xml,
    }
}

/// A dead property from the log.
pub(crate) fn prop_from_log(p: LogProp) -> DeadProp {
    let LogProp {
        namespace,
        name,
        prefix,
        xml,
    } = p;
    DeadProp {
        namespace,
        name,
        prefix,
        xml,
    }
}

/// A lock for the log.
pub(crate) fn lock_to_log(l: LockInfo) -> LogLock {
    let LockInfo {
        token,
        path,
        href,
        principal,
        owner_xml,
        expires_ms,
        timeout_secs,
        shared,
        deep,
    } = l;
    LogLock {
        token,
        path,
        href,
        principal,
        owner_xml,
        expires_ms,
        timeout_secs,
        shared,
        deep,
    }
}

/// A lock from the log.
pub(crate) fn lock_from_log(l: LogLock) -> LockInfo {
    let LogLock {
        token,
        path,
        href,
        principal,
        owner_xml,
        expires_ms,
        timeout_secs,
        shared,
        deep,
    } = l;
    LockInfo {
        token,
        path,
        href,
        principal,
        owner_xml,
        expires_ms,
        timeout_secs,
        shared,
        deep,
    }
}

/// [`wormfs_webdav::Backend::lock_conflict`] by the metadata's rule.
pub(crate) fn lock_conflict(locks: &[LockInfo], check: &LockCheck<'_>) -> Option<LockInfo> {
    let log: Vec<LogLock> = locks.iter().cloned().map(lock_to_log).collect();
    let q = lock_rules::LockCheck {
        path: check.path,
        principal: check.principal,
        ignore_principal: check.ignore_principal,
        deep: check.deep,
        tokens: check.tokens,
        shared_ok: check.shared_ok,
        now_ms: check.now_ms,
    };
    lock_rules::conflict(&log, &q).cloned().map(lock_from_log)
}

/// [`wormfs_webdav::Backend::covering_locks`] by the metadata's rule.
pub(crate) fn covering_locks(locks: &[LockInfo], path: &str, now_ms: u64) -> Vec<LockInfo> {
    let log: Vec<LogLock> = locks.iter().cloned().map(lock_to_log).collect();
    lock_rules::covering(&log, path, now_ms)
        .into_iter()
        .cloned()
        .map(lock_from_log)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(token: &str, path: &str, shared: bool, deep: bool) -> LockInfo {
        LockInfo {
            token: token.into(),
            path: path.into(),
            href: format!("http://h{path}"),
            principal: Some("ann".into()),
            owner_xml: Some(b"<D:owner/>".to_vec()),
            expires_ms: 1_000,
            timeout_secs: 1,
            shared,
            deep,
        }
    }

    #[test]
    fn locks_and_props_cross_the_edge_unchanged() {
        let l = lock("t", "/a", true, false);
        assert_eq!(lock_from_log(lock_to_log(l.clone())), l);
        let p = DeadProp {
            namespace: "urn:x".into(),
            name: "n".into(),
            prefix: Some("x".into()),
            xml: Some(b"<x:n>v</x:n>".to_vec()),
        };
        assert_eq!(prop_from_log(prop_to_log(p.clone())), p);
    }

    #[test]
    fn the_face_checks_requests_by_the_metadata_rule() {
        let locks = vec![lock("x", "/d", false, true), lock("s", "/e", true, false)];
        let none: [String; 0] = [];
        let held = ["x".to_owned()];
        let q = |path, tokens, principal| LockCheck {
            path,
            principal,
            ignore_principal: false,
            deep: false,
            tokens,
            shared_ok: false,
            now_ms: 0,
        };
        assert_eq!(
            lock_conflict(&locks, &q("/d/f", &none, Some("ann"))).map(|l| l.token),
            Some("x".into())
        );
        assert_eq!(lock_conflict(&locks, &q("/d/f", &held, Some("ann"))), None);
        assert!(lock_conflict(&locks, &q("/d/f", &held, Some("bob"))).is_some());
        assert_eq!(covering_locks(&locks, "/d/f", 0).len(), 1);
        assert!(covering_locks(&locks, "/d/f", 1_000).is_empty());
    }
}
