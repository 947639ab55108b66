//! What a node tells the cluster's accounts when it starts:
//!
//! 1. its local token (`DATA/admin-token`), registered as `node-ID` unless the cluster already
//!    knows it (revoked ones included: a revoked local token stays revoked);
//! 2. the users of its config file's `[[webdav.users]]`, written again wherever the cluster's
//!    copy differs (the config file wins for the users it names);
//! 3. with no users in its config, the cluster's first user: `admin` with a generated password
//!    (or the one an older version left in `DATA/webdav-admin.txt`), applied only if the
//!    cluster never had a user. The machine whose proposal wins writes the password to
//!    `DATA/webdav-admin.txt` (mode 0600) and says where it is.
//!
//! A new node does this before it serves; a restarted one in the background, retrying until a
//! leader takes it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{local_token_name, new_password, Accounts};
use crate::store::{Store, StoreError};
use wormfs_config::{Config, Role};
use wormfs_meta::command::{
    AccountRole, CommandV1, PutMode, Rejection, TokenRecord, UserRecord, UserSource,
};
use wormfs_parts::fsutil::now_ms;

/// The file in the data folder holding the generated admin user's password.
pub const ADMIN_FILE: &str = "webdav-admin.txt";
/// The generated user's name.
pub const ADMIN_USER: &str = "admin";

/// What this node brings to the accounts.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The config file's users.
    pub config_users: Vec<UserRecord>,
    /// The data folder (for `webdav-admin.txt`).
    pub data_dir: PathBuf,
}

impl Plan {
    /// The plan of node `node` with config `cfg`.
    pub fn of(cfg: &Config, node: u64) -> Plan {
        Plan {
            config_users: cfg
                .webdav
                .users
                .iter()
                .map(|u| UserRecord {
                    name: u.name.clone(),
                    password_hash: u.password_hash.clone(),
                    role: match u.role {
                        Role::ReadOnly => AccountRole::Ro,
                        Role::ReadWrite => AccountRole::Rw,
                        Role::Admin => AccountRole::Admin,
                    },
                    source: UserSource::Config { node },
                })
                .collect(),
            data_dir: cfg.node.data_dir.clone(),
        }
    }
}

/// The password an older version (or this one, earlier) left in `webdav-admin.txt`.
pub fn read_admin_file(data_dir: &Path) -> anyhow::Result<Option<String>> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join(ADMIN_FILE);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "{} is readable by other users (mode {:o}); run chmod 600 on it",
            path.display(),
            mode & 0o777
        );
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("password = "))
        .map(|p| Some(p.trim().to_owned()))
        .with_context(|| format!("{}: no `password = ` line", path.display()))
}

/// Runs the bootstrap once: `Ok` when everything it had to say is applied.
pub async fn once(store: &Store, accounts: &Accounts, plan: &Plan) -> anyhow::Result<()> {
    if store.consensus.status().leader.is_none() {
        anyhow::bail!("no leader yet");
    }
    let node = accounts.node_id();
    let tokens = accounts.tokens().await?;
    if !tokens.iter().any(|t| t.token.hash == accounts.local_hash()) {
        let name = local_token_name(node);
        let r = store
            .propose(CommandV1::AddToken {
                token: TokenRecord {
                    name: name.clone(),
                    hash: accounts.local_hash().to_owned(),
                    read_only: false,
                    node: Some(node),
                },
                time_ms: now_ms(),
            })
            .await;
        match r {
            Ok(_) => tracing::info!(
                token = %name,
                "accounts: this machine's token (admin-token) now works on every machine of the cluster"
            ),
            Err(StoreError::Rejected(Rejection::AlreadyExists(_))) => tracing::warn!(
                "accounts: a token named {name} exists already, so this machine's own token \
                 (admin-token) works only here; revoke that token or give the CLI another"
            ),
            Err(e) => return Err(e.into()),
        }
    }
    let users = accounts.users().await?;
    for u in &plan.config_users {
        let same = users.iter().any(|have| have.user == *u);
        if same {
            continue;
        }
        store
            .propose(CommandV1::PutUser {
                user: u.clone(),
                mode: PutMode::Upsert,
                time_ms: now_ms(),
            })
            .await?;
        tracing::info!(user = %u.name, "accounts: WebDAV user imported from the config file ([[webdav.users]])");
    }
    if plan.config_users.is_empty() && accounts.users().await?.is_empty() {
        first_user(store, plan).await?;
    }
    Ok(())
}

/// Proposes the generated `admin` as the cluster's first user.
async fn first_user(store: &Store, plan: &Plan) -> anyhow::Result<()> {
    let old = read_admin_file(&plan.data_dir)?;
    let password = old.clone().unwrap_or_else(new_password);
    let pw = password.clone();
    let hash = tokio::task::spawn_blocking(move || wormfs_webdav::auth::hash_password(&pw))
        .await
        .context("hash the admin password")?
        .map_err(|e| anyhow::anyhow!("hash the admin password: {e}"))?;
    let r = store
        .propose(CommandV1::PutUser {
            user: UserRecord {
                name: ADMIN_USER.into(),
                password_hash: hash,
                role: AccountRole::Admin,
                source: UserSource::Generated,
            },
            mode: PutMode::First,
            time_ms: now_ms(),
        })
        .await;
    let path = plan.data_dir.join(ADMIN_FILE);
    match r {
        Ok(_) => {
            if old.is_none() {
                wormfs_parts::fsutil::write_secret(
                    &path,
                    &format!("user = {ADMIN_USER}\npassword = {password}"),
                )?;
            }
            crate::logging::note(&format!(
                "\n  WebDAV user \"{ADMIN_USER}\" created for the cluster; its password is in {} \
                 (mode 0600).\n  It works on every machine of the cluster. Add your own users with \
                 `wormfs user add` (docs/cluster.md, \"Accounts\").\n",
                path.display()
            ));
            tracing::info!("accounts: generated the cluster's first WebDAV user, admin");
        }
        Err(StoreError::Rejected(Rejection::AlreadyExists(_))) => {
            if old.is_some() {
                tracing::warn!(
                    "accounts: {} holds a password this machine generated before its users \
                     were the cluster's; the cluster's users are in `wormfs user list`, and that \
                     file no longer applies",
                    path.display()
                );
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Runs the bootstrap until it succeeds or `stop`, retrying with a growing delay.
pub async fn run(store: Arc<Store>, accounts: Arc<Accounts>, plan: Plan, stop: CancellationToken) {
    let mut delay = Duration::from_millis(250);
    let mut tries = 0u32;
    loop {
        match once(&store, &accounts, &plan).await {
            Ok(()) => return,
            Err(e) => {
                tries += 1;
                // A node waiting for its cluster says so once in a while, not at every try.
                if tries % 8 == 4 {
                    tracing::warn!("accounts: cannot tell the cluster yet (retrying): {e:#}");
                } else {
                    tracing::debug!("accounts: cannot tell the cluster yet (retrying): {e:#}");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
