//! The cluster's accounts: WebDAV users and API tokens, replicated like the namespace so that
//! every machine accepts the same logins. Deterministic apply of their commands and the reads
//! the nodes cache.
//!
//! Every change bumps the `accounts_version` setting, so a node's cache reloads the two small
//! tables only when they changed. `PutUser` in any mode marks the cluster as having had a user
//! (`webdav_seeded`), after which a `PutMode::First` (the generated `admin`) is refused.

use serde::Serialize;
use sqlx::SqliteConnection;

use super::apply::{kv_get, kv_set};
use super::MetaDb;
use crate::command::{
    AccountRole, Outcome, PutMode, Rejection, TokenRecord, UserRecord, UserSource,
};
use crate::error::{DbContext, Res};
use crate::row::Cols;

macro_rules! reject {
    ($e:expr) => {
        return Ok(Outcome::Rejected($e))
    };
}

/// Longest user or token name, in bytes.
pub const MAX_ACCOUNT_NAME: usize = 64;

/// Why `name` cannot name a user or token, if it cannot.
pub fn account_name_problem(name: &str, user: bool) -> Option<String> {
    if name.is_empty() || name.len() > MAX_ACCOUNT_NAME {
        return Some(format!(
            "name {name:?}: must be 1 to {MAX_ACCOUNT_NAME} bytes"
        ));
    }
    if name.chars().any(char::is_control) {
        return Some(format!("name {name:?}: must not hold control characters"));
    }
    if user && name.contains(':') {
        return Some(format!(
            "user name {name:?}: must not hold `:` (HTTP Basic authentication splits at it)"
        ));
    }
    None
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn bump(c: &mut SqliteConnection) -> Res<()> {
    let v: u64 = kv_get(c, "accounts_version")
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    kv_set(c, "accounts_version", &(v + 1).to_string()).await
}

async fn user_exists(c: &mut SqliteConnection, name: &str) -> Res<bool> {
    Ok(sqlx::query("SELECT 1 FROM users WHERE name = ?")
        .bind(name)
        .fetch_optional(&mut *c)
        .await
        .db("look up a user")?
        .is_some())
}

/// `PutUser`.
pub(crate) async fn put_user(
    c: &mut SqliteConnection,
    u: &UserRecord,
    mode: PutMode,
    time_ms: u64,
) -> Res<Outcome> {
    if let Some(p) = account_name_problem(&u.name, true) {
        reject!(Rejection::Invalid(p));
    }
    if !u.password_hash.starts_with("$argon2") {
        reject!(Rejection::Invalid(format!(
            "user {:?}: the password hash is not an Argon2 PHC string",
            u.name
        )));
    }
    let exists = user_exists(c, &u.name).await?;
    match mode {
        PutMode::Create if exists => reject!(Rejection::AlreadyExists(format!("user {}", u.name))),
        PutMode::Replace if !exists => reject!(Rejection::NotFound(format!("user {}", u.name))),
        PutMode::First if kv_get(c, "webdav_seeded").await?.is_some() => {
            reject!(Rejection::AlreadyExists("the cluster's first user".into()))
        }
        _ => {}
    }
    sqlx::query(
        "INSERT INTO users (name, password_hash, role, source, created_ms, changed_ms)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash,
           role = excluded.role, source = excluded.source, changed_ms = excluded.changed_ms",
    )
    .bind(&u.name)
    .bind(&u.password_hash)
    .bind(u.role.as_str())
    .bind(u.source.to_column())
    .bind(to_i64(time_ms))
    .bind(to_i64(time_ms))
    .execute(&mut *c)
    .await
    .db("write a user")?;
    kv_set(c, "webdav_seeded", "1").await?;
    bump(c).await?;
    Ok(Outcome::Done)
}

/// `RemoveUser`.
pub(crate) async fn remove_user(c: &mut SqliteConnection, name: &str) -> Res<Outcome> {
    let gone = sqlx::query("DELETE FROM users WHERE name = ?")
        .bind(name)
        .execute(&mut *c)
        .await
        .db("remove a user")?
        .rows_affected();
    if gone == 0 {
        reject!(Rejection::NotFound(format!("user {name}")));
    }
    bump(c).await?;
    Ok(Outcome::Done)
}

/// `AddToken`.
pub(crate) async fn add_token(
    c: &mut SqliteConnection,
    t: &TokenRecord,
    time_ms: u64,
) -> Res<Outcome> {
    if let Some(p) = account_name_problem(&t.name, false) {
        reject!(Rejection::Invalid(p));
    }
    if t.hash.len() != 64 || !t.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        reject!(Rejection::Invalid(format!(
            "token {:?}: the hash must be 64 hex digits",
            t.name
        )));
    }
    let same = sqlx::query("SELECT 1 FROM api_tokens WHERE hash = ?")
        .bind(t.hash.to_ascii_lowercase())
        .fetch_optional(&mut *c)
        .await
        .db("look up a token")?;
    if same.is_some() {
        // Registered before (a machine's local token, registered again): nothing changes,
        // even if it was revoked since.
        return Ok(Outcome::Done);
    }
    let taken = sqlx::query("SELECT 1 FROM api_tokens WHERE name = ? AND revoked_ms IS NULL")
        .bind(&t.name)
        .fetch_optional(&mut *c)
        .await
        .db("look up a token")?;
    if taken.is_some() {
        reject!(Rejection::AlreadyExists(format!("token {}", t.name)));
    }
    sqlx::query(
        "INSERT INTO api_tokens (name, hash, read_only, created_ms, node) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&t.name)
    .bind(t.hash.to_ascii_lowercase())
    .bind(t.read_only)
    .bind(to_i64(time_ms))
    .bind(t.node.map(|n| n as i64))
    .execute(&mut *c)
    .await
    .db("write a token")?;
    bump(c).await?;
    Ok(Outcome::Done)
}

/// `RevokeToken`.
pub(crate) async fn revoke_token(
    c: &mut SqliteConnection,
    name: &str,
    time_ms: u64,
) -> Res<Outcome> {
    let n =
        sqlx::query("UPDATE api_tokens SET revoked_ms = ? WHERE name = ? AND revoked_ms IS NULL")
            .bind(to_i64(time_ms))
            .bind(name)
            .execute(&mut *c)
            .await
            .db("revoke a token")?
            .rows_affected();
    if n == 0 {
        reject!(Rejection::NotFound(format!("token {name}")));
    }
    bump(c).await?;
    Ok(Outcome::Done)
}

/// A WebDAV user as the metadata holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserRow {
    /// The user.
    pub user: UserRecord,
    /// When it was made (ms).
    pub created_ms: u64,
    /// When it last changed (ms).
    pub changed_ms: u64,
}

/// An API token as the metadata holds it (its hash, never the token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenRow {
    /// The token.
    pub token: TokenRecord,
    /// When it was made (ms).
    pub created_ms: u64,
    /// When it was revoked (ms), if it was.
    pub revoked_ms: Option<u64>,
}

/// Every user and token, with the version they were read at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountsSnapshot {
    /// The `accounts_version` setting (0 before the first change).
    pub version: u64,
    /// Users by name.
    pub users: Vec<UserRow>,
    /// Tokens, revoked ones included, oldest first.
    pub tokens: Vec<TokenRow>,
}

impl MetaDb {
    /// The accounts' version: changes whenever a user or token does.
    pub async fn accounts_version(&self) -> Res<u64> {
        let mut c = self
            .pool()
            .acquire()
            .await
            .db("read the accounts version")?;
        Ok(kv_get(&mut c, "accounts_version")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Every user and token, read in one transaction.
    pub async fn accounts(&self) -> Res<AccountsSnapshot> {
        let mut tx = self.pool().begin().await.db("read the accounts")?;
        let version = kv_get(&mut tx, "accounts_version")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let rows = sqlx::query(
            "SELECT name, password_hash, role, source, created_ms, changed_ms FROM users ORDER BY name",
        )
        .fetch_all(&mut *tx)
        .await
        .db("read the users")?;
        let mut users = Vec::with_capacity(rows.len());
        for row in &rows {
            let r = Cols::new(row, "users").key_col("name", 0);
            let role: String = r.col(2, "role")?;
            let source: String = r.col(3, "source")?;
            users.push(UserRow {
                user: UserRecord {
                    name: r.col(0, "name")?,
                    password_hash: r.col(1, "password_hash")?,
                    role: AccountRole::parse(&role)
                        .ok_or_else(|| r.corrupt("role", format!("unknown role {role:?}")))?,
                    source: UserSource::from_column(&source)
                        .ok_or_else(|| r.corrupt("source", format!("unknown source {source:?}")))?,
                },
                created_ms: r.int(4, "created_ms")?,
                changed_ms: r.int(5, "changed_ms")?,
            });
        }
        let rows = sqlx::query(
            "SELECT id, name, hash, read_only, created_ms, node, revoked_ms FROM api_tokens ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await
        .db("read the API tokens")?;
        let mut tokens = Vec::with_capacity(rows.len());
        for row in &rows {
            let r = Cols::new(row, "api_tokens").key_col("id", 0);
            tokens.push(TokenRow {
                token: TokenRecord {
                    name: r.col(1, "name")?,
                    hash: r.col(2, "hash")?,
                    read_only: r.flag(3, "read_only")?,
                    node: r.col::<Option<i64>>(5, "node")?.map(|n| n as u64),
                },
                created_ms: r.int(4, "created_ms")?,
                revoked_ms: r.opt_int(6, "revoked_ms")?,
            });
        }
        tx.commit().await.db("read the accounts")?;
        Ok(AccountsSnapshot {
            version,
            users,
            tokens,
        })
    }
}
