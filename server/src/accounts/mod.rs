//! The cluster's accounts as a node uses them: WebDAV users and API tokens live in the
//! replicated metadata (`users`, `api_tokens`), so every machine accepts the same logins; this
//! module keeps a copy in memory, reloaded when they change, checks API tokens against it and
//! hands the users to the WebDAV face.
//!
//! Each machine also has its local token (`DATA/admin-token`, made at its first start, read by
//! the CLI on that machine). [`bootstrap`] registers it in the cluster's tokens (as
//! `node-ID`), after which it works on every machine and can be revoked like any other. Until
//! this node's metadata holds it (a new node before it has joined), the node accepts it on its
//! own: that is the only token a fresh node can know.

pub mod bootstrap;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, RwLock};

use wormfs_meta::command::{AccountRole, UserRecord};
use wormfs_meta::{MetaDb, MetaError, TokenRow, UserRow};
use wormfs_parts::ids::NodeId;

/// What a token may do, once recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenAccess {
    /// The token's name (`node-3` for a machine's local token before it is registered).
    pub name: String,
    /// May only read (GET and HEAD).
    pub read_only: bool,
}

/// Why a token was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRefusal {
    /// No token of the cluster has this value.
    Unknown,
    /// It was revoked.
    Revoked,
}

/// The accounts as last read from the metadata.
#[derive(Default)]
struct Cached {
    /// The metadata generation they were read at (or found unchanged at).
    generation: u64,
    /// The `accounts_version` they were read at.
    version: u64,
    /// Live tokens by hash.
    live: HashMap<String, TokenAccess>,
    /// Every hash ever registered, revoked ones included.
    known: HashSet<String>,
    users: Arc<Vec<UserRow>>,
    tokens: Arc<Vec<TokenRow>>,
}

/// The hash a token is kept under: BLAKE3 of its text, hex.
pub fn token_hash(token: &str) -> String {
    blake3::hash(token.trim().as_bytes()).to_hex().to_string()
}

/// A new token: 256 random bits as 64 hex digits.
pub fn new_token() -> String {
    format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    )
}

/// A new password: 20 characters without look-alikes (about 116 bits).
pub fn new_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..20)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The first line of standard input as a password (asked for with `prompt` on a terminal);
/// `None` when it is empty.
pub fn password_from_stdin(prompt: &str) -> std::io::Result<Option<String>> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{prompt} (it will be shown as you type): ");
        std::io::stderr().flush().ok();
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let pw = line.trim_end_matches(['\r', '\n']);
    Ok((!pw.is_empty()).then(|| pw.to_owned()))
}

/// The name this node's local token is registered under.
pub fn local_token_name(node: NodeId) -> String {
    format!("node-{node}")
}

/// The accounts of this node's cluster.
pub struct Accounts {
    meta: MetaDb,
    node_id: NodeId,
    /// The hash of this machine's local token.
    local_hash: String,
    cached: RwLock<Arc<Cached>>,
    reload: tokio::sync::Mutex<()>,
    /// The WebDAV face's users, kept equal to the cluster's.
    webdav: OnceLock<Arc<wormfs_webdav::Auth>>,
    /// This machine's config file's users: its WebDAV face takes them as the file says at
    /// once, before (or without) the cluster having imported them.
    config_users: Vec<UserRecord>,
}

impl Accounts {
    /// The accounts read from `meta`, with this machine's `local_token` and its config file's
    /// users.
    pub fn new(
        meta: MetaDb,
        node_id: NodeId,
        local_token: &str,
        config_users: Vec<UserRecord>,
    ) -> Self {
        Accounts {
            config_users,
            meta,
            node_id,
            local_hash: token_hash(local_token),
            cached: RwLock::new(Arc::new(Cached {
                generation: u64::MAX,
                ..Cached::default()
            })),
            reload: tokio::sync::Mutex::new(()),
            webdav: OnceLock::new(),
        }
    }

    /// Keeps `auth`'s users equal to the cluster's from now on.
    pub async fn attach_webdav(&self, auth: Arc<wormfs_webdav::Auth>) -> Result<(), MetaError> {
        let _ = self.webdav.set(auth);
        let c = self.fresh().await?;
        self.push_users(&c.users);
        Ok(())
    }

    fn push_users(&self, users: &[UserRow]) {
        let Some(auth) = self.webdav.get() else {
            return;
        };
        // The cluster's users, with this machine's config file winning for those it lists.
        let mut by_name: HashMap<&str, &UserRecord> = users
            .iter()
            .map(|u| (u.user.name.as_str(), &u.user))
            .collect();
        for u in &self.config_users {
            by_name.insert(u.name.as_str(), u);
        }
        let list = by_name
            .values()
            .map(|u| wormfs_webdav::User {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                can_write: u.role.can_write(),
            })
            .collect();
        if let Err(e) = auth.set_users(list) {
            tracing::warn!("WebDAV: users left out: {e}");
        }
    }

    fn current(&self) -> Arc<Cached> {
        self.cached
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The accounts as this node's metadata holds them now: read again only when the metadata
    /// changed, and reloaded only when the accounts did.
    async fn fresh(&self) -> Result<Arc<Cached>, MetaError> {
        let generation = self.meta.generation();
        let c = self.current();
        if c.generation == generation {
            return Ok(c);
        }
        let _one = self.reload.lock().await;
        let c = self.current();
        if c.generation == generation {
            return Ok(c);
        }
        let version = self.meta.accounts_version().await?;
        let next = if version == c.version && c.generation != u64::MAX {
            Cached {
                generation,
                version,
                live: c.live.clone(),
                known: c.known.clone(),
                users: c.users.clone(),
                tokens: c.tokens.clone(),
            }
        } else {
            let snap = self.meta.accounts().await?;
            let mut live = HashMap::new();
            let mut known = HashSet::new();
            for t in &snap.tokens {
                known.insert(t.token.hash.clone());
                if t.revoked_ms.is_none() {
                    live.insert(
                        t.token.hash.clone(),
                        TokenAccess {
                            name: t.token.name.clone(),
                            read_only: t.token.read_only,
                        },
                    );
                }
            }
            let changed = Cached {
                generation,
                version: snap.version,
                live,
                known,
                users: Arc::new(snap.users),
                tokens: Arc::new(snap.tokens),
            };
            self.push_users(&changed.users);
            tracing::debug!(
                version = snap.version,
                users = changed.users.len(),
                tokens = changed.live.len(),
                "accounts reloaded"
            );
            changed
        };
        let next = Arc::new(next);
        *self.cached.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
        Ok(next)
    }

    /// Whether `token` is accepted here, and what it may do.
    pub async fn check_token(
        &self,
        token: &str,
    ) -> Result<Result<TokenAccess, TokenRefusal>, MetaError> {
        self.check_token_hash(&token_hash(token)).await
    }

    /// Whether the token whose [`token_hash`] is `hash` is accepted here (an admin page
    /// session keeps only the hash of the token it was opened with).
    pub async fn check_token_hash(
        &self,
        hash: &str,
    ) -> Result<Result<TokenAccess, TokenRefusal>, MetaError> {
        let hash = hash.to_owned();
        let c = self.fresh().await?;
        if let Some(a) = c.live.get(&hash) {
            return Ok(Ok(a.clone()));
        }
        if c.known.contains(&hash) {
            return Ok(Err(TokenRefusal::Revoked));
        }
        // This machine's own token, not (yet) in the cluster's metadata here.
        if constant_time_eq(hash.as_bytes(), self.local_hash.as_bytes()) {
            return Ok(Ok(TokenAccess {
                name: local_token_name(self.node_id),
                read_only: false,
            }));
        }
        Ok(Err(TokenRefusal::Unknown))
    }

    /// The users, as this node's metadata holds them now.
    pub async fn users(&self) -> Result<Arc<Vec<UserRow>>, MetaError> {
        Ok(self.fresh().await?.users.clone())
    }

    /// The tokens (hashes only), revoked ones included.
    pub async fn tokens(&self) -> Result<Arc<Vec<TokenRow>>, MetaError> {
        Ok(self.fresh().await?.tokens.clone())
    }

    /// The user of that name, if any.
    pub async fn user(&self, name: &str) -> Result<Option<UserRow>, MetaError> {
        Ok(self
            .users()
            .await?
            .iter()
            .find(|u| u.user.name == name)
            .cloned())
    }

    /// How many users may administer (role `admin`).
    pub async fn admins(&self) -> Result<usize, MetaError> {
        Ok(self
            .users()
            .await?
            .iter()
            .filter(|u| u.user.role == AccountRole::Admin)
            .count())
    }

    /// A user's role and a digest of its password hash, as this machine's WebDAV face sees
    /// them (its config file's users winning over the cluster's): the admin page's sessions
    /// end when either changes.
    pub async fn login_view(&self, name: &str) -> Result<Option<(AccountRole, String)>, MetaError> {
        let view = |u: &UserRecord| {
            (
                u.role,
                blake3::hash(u.password_hash.as_bytes())
                    .to_hex()
                    .to_string(),
            )
        };
        if let Some(u) = self.config_users.iter().find(|u| u.name == name) {
            return Ok(Some(view(u)));
        }
        Ok(self.user(name).await?.map(|u| view(&u.user)))
    }

    /// Checks a user's password as the WebDAV face does (its Argon2id check, its throttle of
    /// failed logins per address and user name) for the admin page: the user's role and
    /// [`Accounts::login_view`]'s digest, or the refusal (401, or 429 when throttled).
    pub async fn check_password(
        &self,
        name: &str,
        password: &str,
        peer: std::net::IpAddr,
    ) -> Result<Result<(AccountRole, String), wormfs_webdav::guard::Refusal>, MetaError> {
        let Some(auth) = self.webdav.get() else {
            return Ok(Err(wormfs_webdav::guard::Refusal {
                status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
                reason: "password logins are not ready yet on this node".into(),
                precondition: None,
            }));
        };
        // The users as the WebDAV face has them now.
        self.fresh().await?;
        if let Err(r) = auth.check_login(name, password, peer).await {
            return Ok(Err(r));
        }
        match self.login_view(name).await? {
            Some(v) => Ok(Ok(v)),
            None => Ok(Err(wormfs_webdav::guard::Refusal {
                status: axum::http::StatusCode::UNAUTHORIZED,
                reason: "wrong user name or password".into(),
                precondition: None,
            })),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The hash of this machine's local token.
    pub fn local_hash(&self) -> &str {
        &self.local_hash
    }

    /// Keeps the WebDAV face's users current until `stop` (the API reloads on demand; WebDAV
    /// logins do not pass through here).
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            }
            if let Err(e) = self.fresh().await {
                tracing::warn!("accounts: cannot read them: {e}");
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
