//! The caps on what clients store beside files: locks per resource and per user, dead
//! properties per resource (count and bytes). Each is checked by the node that takes the
//! request, against the replicated state it reads just before proposing; two requests racing
//! on two nodes can each pass, so a cap may be overshot by the requests in flight at once,
//! never more.

use http::StatusCode;

use crate::backend::DeadProp;
use crate::guard::Refusal;
use crate::Face;

/// Refuses a new lock on `path` by `user` when the path or the user already has as many live
/// locks as the caps allow.
pub(crate) async fn check_new_lock(
    face: &Face,
    path: &str,
    user: Option<&str>,
) -> Result<(), Refusal> {
    let locks = face.backend.locks().await.map_err(|e| Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        reason: format!("locks cannot be read now: {e}"),
        precondition: None,
    })?;
    let now = crate::locks::now_ms();
    let live = || locks.iter().filter(|l| l.expires_ms > now);
    let on_path = live().filter(|l| l.path == path).count();
    let by_user = live().filter(|l| l.principal.as_deref() == user).count();
    let cap = face.limits;
    let refuse = |what: String| {
        tracing::warn!(path, user, "LOCK refused: {what}");
        Err(Refusal {
            status: StatusCode::FORBIDDEN,
            reason: what,
            precondition: None,
        })
    };
    if on_path >= cap.locks_per_resource as usize {
        return refuse(format!(
            "{path} already has {on_path} locks, the most allowed (webdav.max_locks_per_resource)"
        ));
    }
    if by_user >= cap.locks_per_user as usize {
        return refuse(format!(
            "{} already holds {by_user} locks, the most allowed (webdav.max_locks_per_user)",
            user.unwrap_or("the anonymous user")
        ));
    }
    Ok(())
}

fn prop_bytes(p: &DeadProp) -> u64 {
    (p.namespace.len() + p.name.len() + p.xml.as_ref().map_or(0, Vec::len)) as u64
}

/// Whether the dead properties `current` of a resource, after `patch` (in order), stay within
/// the caps; the reason if not.
pub(crate) fn check_props(
    current: &[DeadProp],
    patch: &[(bool, DeadProp)],
    count_cap: u32,
    bytes_cap: u64,
) -> Result<(), String> {
    let mut after: Vec<&DeadProp> = current.iter().collect();
    for (set, p) in patch {
        after.retain(|q| !(q.namespace == p.namespace && q.name == p.name));
        if *set {
            after.push(p);
        }
    }
    if after.len() > count_cap as usize {
        return Err(format!(
            "{} dead properties would be more than the {count_cap} allowed on one resource (webdav.max_dead_props_per_resource)",
            after.len()
        ));
    }
    let bytes: u64 = after.iter().map(|p| prop_bytes(p)).sum();
    if bytes > bytes_cap {
        return Err(format!(
            "{bytes} bytes of dead properties would be more than the {bytes_cap} allowed on one resource (webdav.max_dead_prop_bytes_per_resource)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(name: &str, len: usize) -> DeadProp {
        DeadProp {
            namespace: "urn:x".into(),
            name: name.into(),
            prefix: None,
            xml: Some(vec![b'x'; len]),
        }
    }

    #[test]
    fn props_are_counted_after_the_patch() {
        let cur = vec![prop("a", 10), prop("b", 10)];
        assert!(check_props(&cur, &[(true, prop("c", 10))], 3, 1000).is_ok());
        assert!(check_props(
            &cur,
            &[(true, prop("c", 10)), (true, prop("d", 1))],
            3,
            1000
        )
        .is_err());
        // Replacing or removing frees room.
        assert!(check_props(
            &cur,
            &[(false, prop("a", 0)), (true, prop("c", 10))],
            2,
            1000
        )
        .is_ok());
        assert!(check_props(&cur, &[(true, prop("a", 10))], 2, 1000).is_ok());
        assert!(check_props(&cur, &[(true, prop("a", 2000))], 9, 1000).is_err());
    }
}
