//! Putting the WebDAV face together from the config: dav-server over the store, the cluster's
//! users, anonymous access, and HTTPS.

use std::sync::Arc;

use anyhow::{bail, Context};
use wormfs_config::{Anonymous, Config};
use wormfs_webdav::{Auth, AuthConfig, Face};

use crate::store::Store;
use crate::webdav_backend::StoreBackend;

/// Who may use the face without a password, from the config. The users are the cluster's
/// (see [`crate::accounts`]), given to the face once it is built.
fn auth_config(cfg: &Config) -> AuthConfig {
    let anonymous = match cfg.webdav.anonymous {
        Anonymous::Off => None,
        Anonymous::ReadOnly => Some(false),
        Anonymous::ReadWrite => Some(true),
    };
    if anonymous == Some(true) {
        tracing::warn!("WebDAV: anyone who can reach {} may read and write without a password (anonymous = \"rw\")", cfg.webdav.listen);
    }
    AuthConfig {
        users: Vec::new(),
        anonymous,
    }
}

/// The WebDAV face of `store` as `cfg` describes it, with the cluster's users from `accounts`.
pub async fn build(
    cfg: &Config,
    store: Arc<Store>,
    accounts: &crate::accounts::Accounts,
) -> anyhow::Result<Face> {
    let auth =
        Arc::new(Auth::new(auth_config(cfg)).map_err(|e| anyhow::anyhow!("webdav.users: {e}"))?);
    accounts
        .attach_webdav(auth.clone())
        .await
        .context("read the cluster's WebDAV users")?;
    let tls = match &cfg.webdav.tls {
        Some(t) => Some(
            wormfs_webdav::tls::acceptor(&t.cert, &t.key)
                .map_err(|e| anyhow::anyhow!("webdav TLS: {e}"))?,
        ),
        None => None,
    };
    let backend = StoreBackend::new(store);
    let l = cfg.webdav.limits;
    let limits = wormfs_webdav::Limits {
        locks_per_resource: l.locks_per_resource,
        locks_per_user: l.locks_per_user,
        dead_props_per_resource: l.dead_props_per_resource,
        dead_prop_bytes_per_resource: l.dead_prop_bytes_per_resource,
    };
    Ok(Face {
        handler: wormfs_webdav::handler(
            backend.clone(),
            cfg.webdav.macos_metadata == wormfs_config::MacMetadata::Discard,
            limits,
        ),
        backend,
        auth,
        tls,
        limits,
    })
}

/// `wormfs webdav hash-password`: the hash of the first line of standard input.
pub fn hash_password_from_stdin() -> anyhow::Result<String> {
    let Some(pw) = crate::accounts::password_from_stdin("Password").context("read the password")?
    else {
        bail!("empty password");
    };
    wormfs_webdav::auth::hash_password(&pw).map_err(|e| anyhow::anyhow!("hash: {e}"))
}
