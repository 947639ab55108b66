//! Who may do what: HTTP Basic authentication against users with Argon2id password hashes,
//! read-only and read-write roles, and anonymous access only when asked for.
//!
//! Checking an Argon2id hash costs tens of milliseconds of CPU by design, and Basic
//! authentication sends the password with every request, so a successful check is remembered
//! (by a BLAKE3 digest of user and password, never the password) for a few minutes; at most two
//! checks run at once, so a flood of wrong passwords cannot take every core.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use base64::Engine;
use http::{HeaderMap, Method, StatusCode};
use tokio::sync::Semaphore;

use crate::guard::Refusal;

/// How long a verified password is remembered.
const REMEMBER: Duration = Duration::from_secs(600);
/// Most remembered logins (the memory is cleared when full).
const REMEMBER_MAX: usize = 4096;

/// A user.
#[derive(Clone, Debug)]
pub struct User {
    /// The name.
    pub name: String,
    /// The password's Argon2id hash (PHC string).
    pub password_hash: String,
    /// May write.
    pub can_write: bool,
}

/// Who may use the face.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// Users.
    pub users: Vec<User>,
    /// Access without a password: `None` (refused), `Some(false)` read, `Some(true)` write.
    pub anonymous: Option<bool>,
}

/// The caller of one request, once admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The user, or `None` for anonymous access.
    pub user: Option<String>,
    /// May write.
    pub can_write: bool,
}

/// The users and the memory of recent logins.
pub struct Auth {
    users: HashMap<String, User>,
    anonymous: Option<bool>,
    remembered: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    checks: Arc<Semaphore>,
}

/// Methods that only read.
fn reads_only(m: &Method) -> bool {
    matches!(m.as_str(), "GET" | "HEAD" | "OPTIONS" | "PROPFIND")
}

/// Makes the Argon2id hash (PHC string) of a password, with a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn unauthorized(why: &str) -> Refusal {
    Refusal {
        status: StatusCode::UNAUTHORIZED,
        reason: why.into(),
        precondition: None,
    }
}

fn forbidden(why: &str) -> Refusal {
    Refusal {
        status: StatusCode::FORBIDDEN,
        reason: why.into(),
        precondition: None,
    }
}

/// The `WWW-Authenticate` challenge sent with a 401.
pub const CHALLENGE: &str = "Basic realm=\"WormFS\", charset=\"UTF-8\"";

impl Auth {
    /// The checker for `cfg`; a hash that does not parse is an error naming its user.
    pub fn new(cfg: AuthConfig) -> Result<Self, String> {
        let mut users = HashMap::new();
        for u in cfg.users {
            check_hash(&u.password_hash)
                .map_err(|e| format!("user {:?}: password hash: {e}", u.name))?;
            users.insert(u.name.clone(), u);
        }
        Ok(Self {
            users,
            anonymous: cfg.anonymous,
            remembered: Mutex::new(HashMap::new()),
            checks: Arc::new(Semaphore::new(2)),
        })
    }

    /// Admits or refuses a request: 401 without valid credentials (unless anonymous access
    /// covers it), 403 for a write by a read-only caller.
    pub async fn admit(&self, method: &Method, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let caller = match headers.get(http::header::AUTHORIZATION) {
            None => match self.anonymous {
                Some(can_write) => Caller {
                    user: None,
                    can_write,
                },
                None => return Err(unauthorized("a user name and password are needed")),
            },
            Some(v) => {
                let (user, password) = parse_basic(v.as_bytes())
                    .ok_or_else(|| unauthorized("only Basic authentication is supported"))?;
                self.check(&user, &password).await?
            }
        };
        if !caller.can_write && !reads_only(method) {
            return Err(forbidden("this user may only read"));
        }
        Ok(caller)
    }

    async fn check(&self, user: &str, password: &str) -> Result<Caller, Refusal> {
        let bad = || unauthorized("wrong user name or password");
        let u = self.users.get(user).ok_or_else(bad)?;
        let caller = Caller {
            user: Some(u.name.clone()),
            can_write: u.can_write,
        };
        let mut h = blake3::Hasher::new();
        h.update(u.password_hash.as_bytes());
        h.update(&[0]);
        h.update(password.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        {
            let mem = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((name, at)) = mem.get(&key) {
                if name == user && at.elapsed() < REMEMBER {
                    return Ok(caller);
                }
            }
        }
        let _permit = self
            .checks
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| bad())?;
        let hash = u.password_hash.clone();
        let pw = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if !ok {
            tracing::info!(user, "webdav: wrong password");
            return Err(bad());
        }
        let mut mem = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        if mem.len() >= REMEMBER_MAX {
            mem.clear();
        }
        mem.insert(key, (user.to_owned(), Instant::now()));
        Ok(caller)
    }
}

/// `Basic base64(user:password)` as UTF-8.
fn parse_basic(v: &[u8]) -> Option<(String, String)> {
    let v = std::str::from_utf8(v).ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Checks that a stored hash is a whole Argon2 PHC string (algorithm, parameters, salt and
/// hash), so a truncated or mistyped one is refused at start, not at the first login.
fn check_hash(phc: &str) -> Result<(), String> {
    let h = PasswordHash::new(phc).map_err(|e| e.to_string())?;
    if !h.algorithm.as_str().starts_with("argon2") {
        return Err(format!("{} is not an Argon2 hash", h.algorithm));
    }
    if h.salt.is_none() || h.hash.is_none() {
        return Err("the salt or the hash is missing".into());
    }
    argon2::Params::try_from(&h).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pw: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        h.insert("authorization", format!("Basic {v}").parse().unwrap());
        h
    }

    fn auth(anonymous: Option<bool>) -> Auth {
        Auth::new(AuthConfig {
            users: vec![
                User {
                    name: "ann".into(),
                    password_hash: hash_password("s3cret é").unwrap(),
                    can_write: true,
                },
                User {
                    name: "kid".into(),
                    password_hash: hash_password("pw").unwrap(),
                    can_write: false,
                },
            ],
            anonymous,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn users_roles_and_anonymous_access() {
        let a = auth(None);
        let put = Method::PUT;
        let get = Method::GET;
        let none = HeaderMap::new();
        assert_eq!(a.admit(&get, &none).await.unwrap_err().status, 401);
        let ok = a.admit(&put, &basic("ann", "s3cret é")).await.unwrap();
        assert_eq!(ok.user.as_deref(), Some("ann"));
        // Twice: the second comes from memory.
        assert!(a.admit(&put, &basic("ann", "s3cret é")).await.is_ok());
        assert_eq!(
            a.admit(&get, &basic("ann", "wrong"))
                .await
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            a.admit(&get, &basic("bob", "pw")).await.unwrap_err().status,
            401
        );
        assert!(a.admit(&get, &basic("kid", "pw")).await.is_ok());
        assert_eq!(
            a.admit(&put, &basic("kid", "pw")).await.unwrap_err().status,
            403
        );
        let ro = auth(Some(false));
        assert!(ro.admit(&get, &none).await.is_ok());
        assert_eq!(ro.admit(&put, &none).await.unwrap_err().status, 403);
        let rw = auth(Some(true));
        assert!(rw.admit(&put, &none).await.is_ok());
    }

    #[test]
    fn a_bad_hash_is_refused_naming_the_user() {
        let good = hash_password("pw").unwrap();
        let truncated = good[..good.rfind('$').unwrap()].to_string();
        let with = |hash: &str| {
            Auth::new(AuthConfig {
                users: vec![User {
                    name: "ann".into(),
                    password_hash: hash.into(),
                    can_write: true,
                }],
                anonymous: None,
            })
        };
        assert!(with(&good).is_ok());
        for bad in ["$argon2id$nonsense", "plain-password", &truncated] {
            let e = with(bad).err().unwrap();
            assert!(e.contains("ann"), "{bad}: {e}");
        }
    }
}
