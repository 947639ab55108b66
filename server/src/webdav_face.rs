//! Putting the WebDAV face together from the config: dav-server over the store, the users (or
//! the generated `admin` user), anonymous access, and HTTPS.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use wormfs_config::{Anonymous, Config, Role};
use wormfs_webdav::{Auth, AuthConfig, Face, User};

use crate::store::Store;
use crate::webdav_backend::StoreBackend;
use wormfs_parts::fsutil::write_secret;

/// The file in the data folder holding the generated admin user's password.
pub const ADMIN_FILE: &str = "webdav-admin.txt";
/// The generated user's name.
pub const ADMIN_USER: &str = "admin";

fn new_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..20)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The generated admin password: read from the data folder, or made and written there (mode
/// 0600) at first start, with a line on standard error saying where it is.
fn admin_password(data_dir: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join(ADMIN_FILE);
    if path.exists() {
        let mode = std::fs::metadata(&path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} is readable by other users (mode {:o}); run chmod 600 on it",
                path.display(),
                mode & 0o777
            );
        }
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        return text
            .lines()
            .find_map(|l| l.strip_prefix("password = "))
            .map(|p| p.trim().to_owned())
            .with_context(|| format!("{}: no `password = ` line", path.display()));
    }
    let pw = new_password();
    write_secret(&path, &format!("user = {ADMIN_USER}\npassword = {pw}"))?;
    eprintln!(
        "\n  WebDAV user \"{ADMIN_USER}\" created; its password is in {} (mode 0600).\n  \
         List your own users under [[webdav.users]] to replace it (docs/webdav.md).\n",
        path.display()
    );
    Ok(pw)
}

/// Who may use the face, from the config.
fn auth_config(cfg: &Config) -> anyhow::Result<AuthConfig> {
    let mut users: Vec<User> = cfg
        .webdav
        .users
        .iter()
        .map(|u| User {
            name: u.name.clone(),
            password_hash: u.password_hash.clone(),
            can_write: u.role == Role::ReadWrite,
        })
        .collect();
    if users.is_empty() {
        let pw = admin_password(&cfg.node.data_dir)?;
        users.push(User {
            name: ADMIN_USER.into(),
            password_hash: wormfs_webdav::auth::hash_password(&pw)
                .map_err(|e| anyhow::anyhow!("hash the admin password: {e}"))?,
            can_write: true,
        });
    }
    let anonymous = match cfg.webdav.anonymous {
        Anonymous::Off => None,
        Anonymous::ReadOnly => Some(false),
        Anonymous::ReadWrite => Some(true),
    };
    if anonymous == Some(true) {
        tracing::warn!("WebDAV: anyone who can reach {} may read and write without a password (anonymous = \"rw\")", cfg.webdav.listen);
    }
    Ok(AuthConfig { users, anonymous })
}

/// The WebDAV face of `store` as `cfg` describes it.
pub fn build(cfg: &Config, store: Arc<Store>) -> anyhow::Result<Face> {
    let auth = Auth::new(auth_config(cfg)?).map_err(|e| anyhow::anyhow!("webdav.users: {e}"))?;
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
        auth: Arc::new(auth),
        tls,
        limits,
    })
}

/// `wormfs webdav hash-password`: the hash of the first line of standard input.
pub fn hash_password_from_stdin() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password (it will be shown as you type): ");
        std::io::stderr().flush().ok();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("read the password")?;
    let pw = line.trim_end_matches(['\r', '\n']);
    if pw.is_empty() {
        bail!("empty password");
    }
    wormfs_webdav::auth::hash_password(pw).map_err(|e| anyhow::anyhow!("hash: {e}"))
}
