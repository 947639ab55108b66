//! The WebDAV lock rules (RFC 4918 section 6, as dav-server's `MemLs` decides them), over the
//! log's own [`Lock`] type: pure functions, so the state machine grants a lock by exactly the
//! same rule on every node and at every replay, and the WebDAV face checks requests with the
//! same rule through its backend (converting at its edge).

use crate::command::Lock;

/// Whether `anc` is `path` or one of its ancestors (both in tree form: `/a/b`, `/` the root).
pub fn is_ancestor_or_self(anc: &str, path: &str) -> bool {
    anc == "/"
        || path == anc
        || (path.starts_with(anc) && path.as_bytes().get(anc.len()) == Some(&b'/'))
}

/// A request to check against the locks.
#[derive(Clone, Copy, Debug)]
pub struct LockCheck<'a> {
    /// The path acted on, in tree form.
    pub path: &'a str,
    /// The user asking.
    pub principal: Option<&'a str>,
    /// Whether a submitted token counts whoever holds the lock.
    pub ignore_principal: bool,
    /// Whether locks on `path`'s descendants matter too (a DELETE or MOVE of a folder).
    pub deep: bool,
    /// The lock tokens the request submitted.
    pub tokens: &'a [String],
    /// Whether other shared locks may stay (a new shared lock coexists with them).
    pub shared_ok: bool,
    /// The time of the check (ms since the epoch); locks expired by then do not count.
    pub now_ms: u64,
}

fn live(l: &Lock, now_ms: u64) -> bool {
    l.expires_ms > now_ms
}

fn holds(l: &Lock, q: &LockCheck<'_>) -> bool {
    q.tokens.iter().any(|t| t == &l.token)
        && (q.ignore_principal || q.principal == l.principal.as_deref())
}

/// Live locks that cover `path`: those on it, and deep ones on its ancestors.
pub fn covering<'a>(locks: &'a [Lock], path: &str, now_ms: u64) -> Vec<&'a Lock> {
    locks
        .iter()
        .filter(|l| live(l, now_ms))
        .filter(|l| l.path == path || (l.deep && is_ancestor_or_self(&l.path, path)))
        .collect()
}

/// What a request may do given the locks: every exclusive lock covering the path must be held
/// (its token submitted, by its owner unless `ignore_principal`); of shared locks, one held is
/// enough unless `shared_ok`. With `deep`, locks on the path and below must all be held too.
/// Returns a conflicting lock, if any.
pub fn conflict<'a>(locks: &'a [Lock], q: &LockCheck<'_>) -> Option<&'a Lock> {
    let mut held = false;
    let mut first_shared: Option<&Lock> = None;
    for l in covering(locks, q.path, q.now_ms) {
        if holds(l, q) {
            held = true;
        } else if !l.shared {
            return Some(l);
        } else if !q.shared_ok {
            first_shared.get_or_insert(l);
        }
    }
    if let (false, Some(l)) = (held, first_shared) {
        return Some(l);
    }
    if q.deep {
        return locks.iter().find(|l| {
            live(l, q.now_ms)
                && is_ancestor_or_self(q.path, &l.path)
                && (!l.shared || !q.shared_ok)
                && !holds(l, q)
        });
    }
    None
}

/// The lock that stops `new` from being granted, if any.
pub fn conflict_for_new<'a>(locks: &'a [Lock], new: &Lock, now_ms: u64) -> Option<&'a Lock> {
    conflict(
        locks,
        &LockCheck {
            path: &new.path,
            principal: None,
            ignore_principal: true,
            deep: new.deep,
            tokens: &[],
            shared_ok: new.shared,
            now_ms,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(token: &str, path: &str, shared: bool, deep: bool) -> Lock {
        Lock {
            token: token.into(),
            path: path.into(),
            href: path.into(),
            principal: None,
            owner_xml: None,
            expires_ms: 1_000,
            timeout_secs: 1,
            shared,
            deep,
        }
    }

    fn check<'a>(path: &'a str, deep: bool, tokens: &'a [String], now_ms: u64) -> LockCheck<'a> {
        LockCheck {
            path,
            principal: None,
            ignore_principal: true,
            deep,
            tokens,
            shared_ok: false,
            now_ms,
        }
    }

    #[test]
    fn ancestors_are_whole_components() {
        assert!(is_ancestor_or_self("/", "/a"));
        assert!(is_ancestor_or_self("/a", "/a"));
        assert!(is_ancestor_or_self("/a", "/a/b"));
        assert!(!is_ancestor_or_self("/a", "/ab"));
        assert!(!is_ancestor_or_self("/a/b", "/a"));
    }

    #[test]
    fn exclusive_lock_blocks_others_until_its_token_is_submitted() {
        let locks = vec![lock("t1", "/a", false, false)];
        let t1 = ["t1".to_owned()];
        assert!(conflict(&locks, &check("/a", false, &[], 0)).is_some());
        assert!(conflict(&locks, &check("/a", false, &t1, 0)).is_none());
        // A depth-0 lock does not cover children, a deep one does.
        assert!(conflict(&locks, &check("/a/b", false, &[], 0)).is_none());
        let deep = vec![lock("t1", "/a", false, true)];
        assert!(conflict(&deep, &check("/a/b", false, &[], 0)).is_some());
        // A deep check (DELETE of /) sees locks below.
        assert!(conflict(&locks, &check("/", true, &[], 0)).is_some());
    }

    #[test]
    fn shared_locks_coexist_but_exclusive_does_not() {
        let locks = vec![lock("s1", "/f", true, false)];
        let shared = lock("s2", "/f", true, false);
        let exclusive = lock("x", "/f", false, false);
        assert_eq!(conflict_for_new(&locks, &shared, 0), None);
        assert_eq!(
            conflict_for_new(&locks, &exclusive, 0).map(|l| l.token.as_str()),
            Some("s1")
        );
        // A shared lock under a deep exclusive one is refused.
        let deep = vec![lock("x", "/d", false, true)];
        assert!(conflict_for_new(&deep, &lock("s", "/d/f", true, false), 0).is_some());
    }

    #[test]
    fn expired_locks_are_ignored() {
        let locks = vec![lock("t1", "/a", false, true)];
        assert!(conflict(&locks, &check("/a", false, &[], 999)).is_some());
        assert!(conflict(&locks, &check("/a", false, &[], 1_000)).is_none());
    }

    #[test]
    fn the_owner_must_match_unless_ignored() {
        let mut l = lock("t1", "/a", false, false);
        l.principal = Some("ann".into());
        let locks = vec![l];
        let t = ["t1".to_owned()];
        let as_user = |who, ignore| LockCheck {
            principal: Some(who),
            ignore_principal: ignore,
            ..check("/a", false, &t, 0)
        };
        assert!(conflict(&locks, &as_user("bob", false)).is_some());
        assert!(conflict(&locks, &as_user("ann", false)).is_none());
        assert!(conflict(&locks, &as_user("bob", true)).is_none());
    }
}
