//! This machine's API token: a file in the data folder, mode 0600, made at the first start and
//! read by the CLI on the same machine (to send it). The node registers it in the cluster's
//! tokens (see [`crate::accounts`]), so it works on every machine of the cluster.

use std::path::Path;

use anyhow::{bail, Context};

/// Name of the admin token file in the data folder.
pub const TOKEN_FILE: &str = "admin-token";

/// Reads the token file, refusing one that others can read.
pub fn read_token(data_dir: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join(TOKEN_FILE);
    let meta = std::fs::metadata(&path).with_context(|| format!("read {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} is readable by other users (mode {:o}); run chmod 600 on it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("read {}", path.display()))?
        .trim()
        .to_owned())
}

/// The node's token: read from the data folder, or made, written (0600) and printed once.
pub fn read_or_create(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(TOKEN_FILE);
    if path.exists() {
        return read_token(data_dir);
    }
    let t = crate::accounts::new_token();
    wormfs_parts::fsutil::write_secret(&path, &t)?;
    if crate::logging::is_json() || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        // A log collector (JSON lines, the journal, `docker logs`) keeps what it reads and shows
        // it to more people than the file's owner: the token stays in its file.
        crate::logging::note(&format!(
            "API token of this machine made: it is in {} (mode 0600). It works on every machine \
             of the cluster; make more with `wormfs token create`.",
            path.display()
        ));
    } else {
        eprintln!(
            "\n  API token of this machine (printed once; also in {}, mode 0600):\n    {t}\n  \
             It works on every machine of the cluster; make more with `wormfs token create`.\n",
            path.display()
        );
    }
    Ok(t)
}
