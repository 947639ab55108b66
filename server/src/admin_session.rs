//! The admin page's sessions: opened by a login (an admin user's password or an API token),
//! kept in this node's memory only, each with its own CSRF token.
//!
//! A session is a random 256-bit id, sent to the browser in an HttpOnly, SameSite=Strict
//! cookie, and kept here by its BLAKE3 (so a memory dump does not hand out live cookies). It
//! ends [`SESSION_LIFETIME`] after the login (not extended by use), at logout, when the node
//! restarts (nothing is written down), or when what opened it no longer holds: the token is
//! revoked, the user is removed, loses the admin role or gets a new password (the API's auth
//! layer checks that on every request). Each node has its own sessions: logging in on one
//! machine's page does not log in on another's.
//!
//! Every request that changes something, made with the cookie, must carry the session's CSRF
//! token in the `X-CSRF-Token` header: the page reads it from the login answer (or
//! `GET /api/v1/session`), which another site's page cannot read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lasts after its login.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; past it, the oldest is dropped.
pub const MAX_SESSIONS: usize = 1024;
/// The cookie's name.
pub const COOKIE: &str = "wormfs_session";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What opened a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Login {
    /// A user of the cluster with the admin role: the digest of its password hash at login.
    User {
        /// The user's name.
        name: String,
        /// `Accounts::login_view`'s digest when the session opened.
        fingerprint: String,
    },
    /// An API token, by its hash.
    Token {
        /// The token's name.
        name: String,
        /// The token's hash.
        hash: String,
    },
}

/// One session.
#[derive(Clone, Debug)]
pub struct Session {
    /// What opened it.
    pub login: Login,
    /// May only look (a read-only token).
    pub read_only: bool,
    /// The CSRF token every change made with this session must carry.
    pub csrf: String,
    /// When it ends (ms since the epoch, for the page).
    pub expires_ms: u64,
    ends: Instant,
    opened: Instant,
}

impl Session {
    /// The name shown for whoever logged in: the user's or the token's.
    pub fn name(&self) -> &str {
        match &self.login {
            Login::User { name, .. } | Login::Token { name, .. } => name,
        }
    }
}

/// This node's sessions.
#[derive(Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<String, Session>>,
}

fn key(id: &str) -> String {
    blake3::hash(id.as_bytes()).to_hex().to_string()
}

fn random_hex() -> String {
    format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    )
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_hash.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session: its id (the cookie's value) and the session.
    pub fn open(&self, login: Login, read_only: bool) -> (String, Session) {
        let id = random_hex();
        let now = Instant::now();
        let s = Session {
            login,
            read_only,
            csrf: random_hex(),
            expires_ms: wormfs_parts::fsutil::now_ms()
                .saturating_add(SESSION_LIFETIME.as_millis() as u64),
            ends: now + SESSION_LIFETIME,
            opened: now,
        };
        let mut map = self.map();
        map.retain(|_, s| s.ends > now);
        while map.len() >= MAX_SESSIONS {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.opened)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(key(&id), s.clone());
        (id, s)
    }

    /// The live session of cookie value `id`.
    pub fn get(&self, id: &str) -> Option<Session> {
        let k = key(id);
        let mut map = self.map();
        match map.get(&k) {
            Some(s) if s.ends > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Ends the session of cookie value `id`.
    pub fn end(&self, id: &str) {
        self.map().remove(&key(id));
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.map().values().filter(|s| s.ends > now).count()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `given` is the session's CSRF token (compared in constant time).
pub fn csrf_matches(s: &Session, given: Option<&str>) -> bool {
    let Some(given) = given else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), s.csrf.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session cookie's value in a `Cookie` header, if any.
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that hands the browser session `id`.
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> Login {
        Login::User {
            name: "ann".into(),
            fingerprint: "f".into(),
        }
    }

    #[test]
    fn sessions_open_find_and_end() {
        let s = Sessions::default();
        let (id, sess) = s.open(user(), false);
        assert_eq!(id.len(), 64);
        let found = s.get(&id).expect("the session");
        assert_eq!(found.csrf, sess.csrf);
        assert_eq!(found.name(), "ann");
        assert!(s.get("nope").is_none());
        assert!(csrf_matches(&found, Some(&sess.csrf)));
        assert!(!csrf_matches(&found, Some("x")));
        assert!(!csrf_matches(&found, None));
        s.end(&id);
        assert!(s.get(&id).is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::default();
        let (first, _) = s.open(user(), true);
        for _ in 0..MAX_SESSIONS {
            s.open(user(), true);
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.get(&first).is_none(), "the oldest went first");
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "a=b; wormfs_session=abc ; c=d".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some("abc"));
        let c = set_cookie("abc");
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Max-Age="));
    }
}
