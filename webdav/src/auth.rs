//! Who may do what: HTTP Basic authentication against users with Argon2id password hashes,
//! read-only and read-write roles, and anonymous access only when asked for.
//!
//! Checking an Argon2id hash costs tens of milliseconds of CPU by design, and Basic
//! authentication sends the password with every request, so a successful check is remembered
//! (by a BLAKE3 digest of user and password, never the password) for a few minutes; at most two
//! checks run at once, so a flood of wrong passwords cannot take every core.
//!
//! An unknown user name is checked against a dummy hash with the same parameters, so a wrong
//! name costs what a wrong password costs and names cannot be found by timing. Failed logins are
//! counted per client address (IPv6 by /64) and per user name: after [`FREE_FAILURES`] failures
//! within [`FAILURE_MEMORY`], an address is refused (429, without a check) until a back-off since
//! its last failure has passed (0.5 s, doubling, at most [`MAX_BACKOFF`]), and a wrong password
//! for that user name is answered only after the same back-off. A correct password is never
//! delayed and clears both counts; the counts are forgotten 15 minutes after the last failure,
//! and at most [`THROTTLE_MAX`] are kept.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Failed logins (per address or per user name) let through before the throttle engages.
pub const FREE_FAILURES: u32 = 5;
/// The first back-off once the throttle engages; it doubles with each further failure.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long failures are remembered after the last one.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// Most addresses and user names whose failures are remembered.
pub const THROTTLE_MAX: usize = 10_000;

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
    /// The users by name, replaced as a whole when the cluster's accounts change.
    users: std::sync::RwLock<Arc<HashMap<String, User>>>,
    anonymous: Option<bool>,
    remembered: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    checks: Arc<Semaphore>,
    /// The dummy hash checked for unknown user names (made at the first unknown name with
    /// the parameters of a real user's hash), and the parameters it was made with.
    dummy: Mutex<Option<(DummyParams, String)>>,
    /// Argon2 verifications run (for the tests).
    verifications: AtomicU64,
    throttle: Mutex<Throttle>,
    clock: Arc<dyn Fn() -> Instant + Send + Sync>,
    /// Whether a throttled user name's failures wait out their back-off (not with a test clock).
    delay_failures: bool,
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

fn too_many(wait: Duration) -> Refusal {
    Refusal {
        status: StatusCode::TOO_MANY_REQUESTS,
        reason: format!(
            "too many failed logins from this address; retry in {} s",
            wait.as_secs().max(1)
        ),
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
        let users = user_map(cfg.users)?;
        Ok(Self {
            users: std::sync::RwLock::new(Arc::new(users)),
            anonymous: cfg.anonymous,
            remembered: Mutex::new(HashMap::new()),
            checks: Arc::new(Semaphore::new(2)),
            dummy: Mutex::new(None),
            verifications: AtomicU64::new(0),
            throttle: Mutex::new(Throttle::default()),
            clock: Arc::new(Instant::now),
            delay_failures: true,
        })
    }

    /// Replaces the users (the cluster's accounts changed): a removed user or a changed
    /// password stops working at once, remembered logins included. A user whose hash does not
    /// parse is left out (and named in the error), the others are taken.
    pub fn set_users(&self, users: Vec<User>) -> Result<(), String> {
        let mut bad = Vec::new();
        let mut map = HashMap::new();
        for u in users {
            match check_hash(&u.password_hash) {
                Ok(()) => {
                    map.insert(u.name.clone(), u);
                }
                Err(e) => bad.push(format!("user {:?}: password hash: {e}", u.name)),
            }
        }
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
        self.remembered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("; "))
        }
    }

    /// The names of the users, sorted.
    pub fn user_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.users().keys().cloned().collect();
        v.sort();
        v
    }

    fn users(&self) -> Arc<HashMap<String, User>> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The same, with `clock` telling the time for the throttle (for the tests).
    #[cfg(test)]
    fn with_clock(mut self, clock: impl Fn() -> Instant + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self.delay_failures = false;
        self
    }

    /// Admits or refuses a request from `peer`: 401 without valid credentials (unless anonymous
    /// access covers it), 429 from an address with too many recent failed logins, 403 for a
    /// write by a read-only caller.
    pub async fn admit(
        &self,
        method: &Method,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Result<Caller, Refusal> {
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
                self.login(&user, &password, peer).await?
            }
        };
        if !caller.can_write && !reads_only(method) {
            return Err(forbidden("this user may only read"));
        }
        Ok(caller)
    }

    /// Checks a user name and password as a Basic login would (the same throttle per address
    /// and user name, the same Argon2id check): for another face of the node that logs users
    /// in, the admin page. Read-only users are admitted; the caller decides what they may do.
    pub async fn check_login(
        &self,
        user: &str,
        password: &str,
        peer: IpAddr,
    ) -> Result<Caller, Refusal> {
        self.login(user, password, peer).await
    }

    /// A Basic login: the throttle, then the check; a failure is counted and, for a throttled
    /// user name, answered only after its back-off.
    async fn login(&self, user: &str, password: &str, peer: IpAddr) -> Result<Caller, Refusal> {
        let addr = ThrottleKey::addr(peer);
        let name = ThrottleKey::User(user.to_owned());
        if let Some(wait) = self.throttle().refused(&addr, (self.clock)()) {
            tracing::debug!(%peer, user, "webdav: login refused: too many failures from this address");
            return Err(too_many(wait));
        }
        match self.check(user, password).await {
            Ok(c) => {
                let mut t = self.throttle();
                t.forget(&addr);
                t.forget(&name);
                Ok(c)
            }
            Err(e) => {
                let now = (self.clock)();
                let delay = {
                    let mut t = self.throttle();
                    t.failed(name.clone(), now, peer, user);
                    let delay = t
                        .backoff(&name)
                        .filter(|_| self.delay_failures)
                        .unwrap_or_default();
                    // The address's back-off runs from when the (delayed) answer goes out.
                    t.failed(addr, now + delay, peer, user);
                    delay
                };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Err(e)
            }
        }
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn check(&self, user: &str, password: &str) -> Result<Caller, Refusal> {
        let bad = || unauthorized("wrong user name or password");
        let users = self.users();
        let Some(u) = users.get(user) else {
            // The same work as for a real user, so names cannot be found by timing.
            let dummy = self.dummy_hash().await;
            let _permit = self
                .checks
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| bad())?;
            self.verify(dummy, password.to_owned()).await;
            tracing::info!(user, "webdav: unknown user");
            return Err(bad());
        };
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
        let ok = self
            .verify(u.password_hash.clone(), password.to_owned())
            .await;
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

    /// Whether `password` matches the PHC string `hash` (off the async threads).
    async fn verify(&self, hash: String, password: String) -> bool {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }

    /// A hash of a random password with the users' parameters (those of the first user by
    /// name; all users usually share them), made again only when those change.
    async fn dummy_hash(&self) -> String {
        let params = {
            let users = self.users();
            users.keys().min().and_then(|n| {
                let h = PasswordHash::new(&users[n].password_hash).ok()?;
                let alg = argon2::Algorithm::try_from(h.algorithm).ok()?;
                Some((alg, argon2::Params::try_from(&h).ok()?))
            })
        };
        if let Some((p, h)) = &*self.dummy.lock().unwrap_or_else(|p| p.into_inner()) {
            if *p == params {
                return h.clone();
            }
        }
        let for_hash = params.clone();
        let made = tokio::task::spawn_blocking(move || dummy_hash_with(for_hash))
            .await
            .unwrap_or_default();
        *self.dummy.lock().unwrap_or_else(|p| p.into_inner()) = Some((params, made.clone()));
        made
    }
}

/// The parameters of the dummy hash (none: Argon2's defaults).
type DummyParams = Option<(argon2::Algorithm, argon2::Params)>;

/// The users by name; a hash that does not parse is an error naming its user.
fn user_map(users: Vec<User>) -> Result<HashMap<String, User>, String> {
    let mut map = HashMap::new();
    for u in users {
        check_hash(&u.password_hash)
            .map_err(|e| format!("user {:?}: password hash: {e}", u.name))?;
        map.insert(u.name.clone(), u);
    }
    Ok(map)
}

/// A hash of a random password with the algorithm and parameters `params`, or the defaults.
fn dummy_hash_with(params: Option<(argon2::Algorithm, argon2::Params)>) -> String {
    let argon = params
        .map(|(alg, p)| Argon2::new(alg, argon2::Version::V0x13, p))
        .unwrap_or_default();
    let salt = match SaltString::encode_b64(&rand::random::<[u8; 16]>()) {
        Ok(s) => s,
        Err(_) => return String::new(),
    };
    let pw: [u8; 32] = rand::random();
    argon
        .hash_password(&pw, &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// Whose failures are counted: an address (an IPv6 one by its /64) or a user name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ThrottleKey {
    Addr(IpAddr),
    User(String),
}

impl ThrottleKey {
    fn addr(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ThrottleKey::Addr(IpAddr::V4(v4)),
                None => {
                    let mut o = v6.octets();
                    o[8..].fill(0);
                    ThrottleKey::Addr(IpAddr::from(o))
                }
            },
            v4 => ThrottleKey::Addr(v4),
        }
    }
}

struct Failures {
    count: u32,
    last: Instant,
}

/// Failed logins per address and per user name, bounded in memory.
#[derive(Default)]
struct Throttle {
    failures: HashMap<ThrottleKey, Failures>,
    /// When the last warning was logged, and how many since that minute began.
    warned: Option<(Instant, u32)>,
}

/// Warnings about repeated failures logged per minute, at most.
const WARNINGS_PER_MINUTE: u32 = 10;

impl Throttle {
    /// The back-off after `count` failures: none before [`FREE_FAILURES`].
    fn backoff_for(count: u32) -> Option<Duration> {
        let over = count.checked_sub(FREE_FAILURES)?;
        Some(
            FIRST_BACKOFF
                .saturating_mul(1u32 << over.min(16))
                .min(MAX_BACKOFF),
        )
    }

    fn live(&self, key: &ThrottleKey, now: Instant) -> Option<&Failures> {
        self.failures
            .get(key)
            .filter(|f| now.saturating_duration_since(f.last) < FAILURE_MEMORY)
    }

    /// How long `key` must still wait, if it is throttled at `now`.
    fn refused(&self, key: &ThrottleKey, now: Instant) -> Option<Duration> {
        let f = self.live(key, now)?;
        let until = f.last + Self::backoff_for(f.count)?;
        let wait = until.saturating_duration_since(now);
        (!wait.is_zero()).then_some(wait)
    }

    /// The back-off of `key` as its failures stand.
    fn backoff(&self, key: &ThrottleKey) -> Option<Duration> {
        Self::backoff_for(self.failures.get(key)?.count)
    }

    fn forget(&mut self, key: &ThrottleKey) {
        self.failures.remove(key);
    }

    /// Counts a failure of `key` at `now` (logging, rate-limited, when it is throttled).
    fn failed(&mut self, key: ThrottleKey, now: Instant, peer: IpAddr, user: &str) {
        if !self.failures.contains_key(&key) && self.failures.len() >= THROTTLE_MAX {
            self.failures
                .retain(|_, f| now.saturating_duration_since(f.last) < FAILURE_MEMORY);
            if self.failures.len() >= THROTTLE_MAX {
                // Still full: the entry failed longest ago goes.
                if let Some(k) = self
                    .failures
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(k, _)| k.clone())
                {
                    self.failures.remove(&k);
                }
            }
        }
        let f = self.failures.entry(key.clone()).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.saturating_duration_since(f.last) >= FAILURE_MEMORY {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        let count = f.count;
        if count >= FREE_FAILURES && self.may_warn(now) {
            let by = match &key {
                ThrottleKey::Addr(_) => "address",
                ThrottleKey::User(_) => "user name",
            };
            tracing::warn!(%peer, user, failures = count, "webdav: repeated failed logins for this {by}: throttled (warnings limited to {WARNINGS_PER_MINUTE} a minute)");
        }
    }

    fn may_warn(&mut self, now: Instant) -> bool {
        match &mut self.warned {
            Some((start, n)) if now.saturating_duration_since(*start) < Duration::from_secs(60) => {
                *n += 1;
                *n <= WARNINGS_PER_MINUTE
            }
            w => {
                *w = Some((now, 1));
                true
            }
        }
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
pub fn check_hash(phc: &str) -> Result<(), String> {
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

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

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
        assert_eq!(a.admit(&get, &none, HOME).await.unwrap_err().status, 401);
        let ok = a
            .admit(&put, &basic("ann", "s3cret é"), HOME)
            .await
            .unwrap();
        assert_eq!(ok.user.as_deref(), Some("ann"));
        // Twice: the second comes from memory.
        assert!(a.admit(&put, &basic("ann", "s3cret é"), HOME).await.is_ok());
        assert_eq!(
            a.admit(&get, &basic("ann", "wrong"), HOME)
                .await
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            a.admit(&get, &basic("bob", "pw"), HOME)
                .await
                .unwrap_err()
                .status,
            401
        );
        assert!(a.admit(&get, &basic("kid", "pw"), HOME).await.is_ok());
        assert_eq!(
            a.admit(&put, &basic("kid", "pw"), HOME)
                .await
                .unwrap_err()
                .status,
            403
        );
        let ro = auth(Some(false));
        assert!(ro.admit(&get, &none, HOME).await.is_ok());
        assert_eq!(ro.admit(&put, &none, HOME).await.unwrap_err().status, 403);
        let rw = auth(Some(true));
        assert!(rw.admit(&put, &none, HOME).await.is_ok());
    }

    #[tokio::test]
    async fn replaced_users_take_effect_at_once_even_for_remembered_logins() {
        let a = auth(None);
        let get = Method::GET;
        assert!(a.admit(&get, &basic("ann", "s3cret é"), HOME).await.is_ok());
        // ann's password changes and kid goes: the remembered login does not outlive it.
        a.set_users(vec![User {
            name: "ann".into(),
            password_hash: hash_password("new").unwrap(),
            can_write: true,
        }])
        .unwrap();
        let old = a.admit(&get, &basic("ann", "s3cret é"), HOME).await;
        assert_eq!(old.unwrap_err().status, 401);
        assert!(a.admit(&get, &basic("ann", "new"), HOME).await.is_ok());
        let kid = a.admit(&get, &basic("kid", "pw"), HOME).await;
        assert_eq!(kid.unwrap_err().status, 401);
        assert_eq!(a.user_names(), vec!["ann".to_string()]);
        // A user with a broken hash is left out and named; the others stay.
        let e = a
            .set_users(vec![
                User {
                    name: "bad".into(),
                    password_hash: "plain".into(),
                    can_write: true,
                },
                User {
                    name: "kid".into(),
                    password_hash: hash_password("pw").unwrap(),
                    can_write: false,
                },
            ])
            .unwrap_err();
        assert!(e.contains("bad"), "{e}");
        assert_eq!(a.user_names(), vec!["kid".to_string()]);
    }

    #[tokio::test]
    async fn an_unknown_user_costs_a_hash_check_like_a_known_one() {
        let a = auth(None);
        let get = Method::GET;
        assert_eq!(
            a.admit(&get, &basic("nobody", "pw"), HOME)
                .await
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(a.verifications.load(Ordering::Relaxed), 1);
        // The dummy hash has the users' parameters.
        let dummy = a.dummy.lock().unwrap().clone().unwrap().1;
        let users = a.users();
        let real = PasswordHash::new(&users["ann"].password_hash).unwrap();
        let d = PasswordHash::new(&dummy).unwrap();
        assert_eq!(d.algorithm, real.algorithm);
        assert_eq!(d.params, real.params);
        assert!(a.admit(&get, &basic("kid", "wrong"), HOME).await.is_err());
        assert_eq!(a.verifications.load(Ordering::Relaxed), 2);
    }

    /// A clock the test moves.
    fn test_clock() -> (
        Arc<Mutex<Instant>>,
        impl Fn() -> Instant + Send + Sync + 'static,
    ) {
        let t = Arc::new(Mutex::new(Instant::now()));
        let t2 = t.clone();
        (t, move || *t2.lock().unwrap())
    }

    fn advance(t: &Mutex<Instant>, d: Duration) {
        let mut g = t.lock().unwrap();
        *g += d;
    }

    #[tokio::test]
    async fn failures_throttle_an_address_until_a_success_or_expiry() {
        let (t, clock) = test_clock();
        let a = auth(None).with_clock(clock);
        let get = Method::GET;
        let other: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            let e = a
                .admit(&get, &basic("ann", "guess"), HOME)
                .await
                .unwrap_err();
            assert_eq!(e.status, 401);
        }
        let checks = a.verifications.load(Ordering::Relaxed);
        // Now refused without a check, even with the right password.
        let e = a
            .admit(&get, &basic("ann", "s3cret é"), HOME)
            .await
            .unwrap_err();
        assert_eq!(e.status, 429, "{}", e.reason);
        assert_eq!(a.verifications.load(Ordering::Relaxed), checks);
        // Another address logs in as that user at once.
        assert!(a
            .admit(&get, &basic("ann", "s3cret é"), other)
            .await
            .is_ok());
        // After the back-off the address may try again.
        advance(&t, FIRST_BACKOFF);
        assert_eq!(
            a.admit(&get, &basic("ann", "guess"), HOME)
                .await
                .unwrap_err()
                .status,
            401
        );
        // One more failure: a longer back-off, capped.
        advance(&t, FIRST_BACKOFF);
        assert_eq!(
            a.admit(&get, &basic("ann", "guess"), HOME)
                .await
                .unwrap_err()
                .status,
            429
        );
        advance(&t, FIRST_BACKOFF);
        assert_eq!(
            a.admit(&get, &basic("ann", "guess"), HOME)
                .await
                .unwrap_err()
                .status,
            401
        );
        // A success after the back-off clears the count.
        advance(&t, MAX_BACKOFF);
        assert!(a.admit(&get, &basic("ann", "s3cret é"), HOME).await.is_ok());
        assert_eq!(
            a.admit(&get, &basic("ann", "guess"), HOME)
                .await
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            a.admit(&get, &basic("ann", "guess"), HOME)
                .await
                .unwrap_err()
                .status,
            401
        );
        // Failures are forgotten after FAILURE_MEMORY.
        for _ in 0..FREE_FAILURES {
            let _ = a.admit(&get, &basic("kid", "guess"), HOME).await;
        }
        assert_eq!(
            a.admit(&get, &basic("kid", "pw"), HOME)
                .await
                .unwrap_err()
                .status,
            429
        );
        advance(&t, FAILURE_MEMORY);
        assert!(a.admit(&get, &basic("kid", "pw"), HOME).await.is_ok());
    }

    #[test]
    fn the_throttle_is_bounded_and_backs_off_exponentially() {
        assert_eq!(Throttle::backoff_for(FREE_FAILURES - 1), None);
        assert_eq!(Throttle::backoff_for(FREE_FAILURES), Some(FIRST_BACKOFF));
        assert_eq!(
            Throttle::backoff_for(FREE_FAILURES + 1),
            Some(FIRST_BACKOFF * 2)
        );
        assert_eq!(Throttle::backoff_for(u32::MAX), Some(MAX_BACKOFF));
        let mut th = Throttle::default();
        let now = Instant::now();
        for i in 0..(THROTTLE_MAX as u32 + 50) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            th.failed(ThrottleKey::addr(ip), now, ip, "x");
        }
        assert_eq!(th.failures.len(), THROTTLE_MAX);
        // IPv6 addresses count by their /64.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        assert_eq!(ThrottleKey::addr(a), ThrottleKey::addr(b));
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
