//! `wormfs mount`: the cluster's tree (or a folder of it) as a read-only FUSE filesystem, for
//! media servers that read libraries from local paths (docs/mount.md).
//!
//! The mount is a client of a node's API, on this machine or across the LAN, with a token:
//! listings and attributes come from the metadata, bytes from range requests, and the node's
//! change feed says what the kernel must forget. `remote.rs` the API calls, `tree.rs` inodes
//! and cached listings, `fs.rs` the FUSE requests, `reader.rs` an open file's reads,
//! `follow.rs` the change feed.

mod follow;
mod fs;
mod reader;
mod remote;
mod tree;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fuser::{MountOption, SessionACL};

pub use remote::{Remote, RemoteError};

/// What `wormfs mount` was asked.
#[derive(Clone, Debug)]
pub struct MountArgs {
    /// The node's API base URL.
    pub base: String,
    /// The API token.
    pub token: String,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// The WormFS folder shown at the mount point.
    pub root: String,
    /// How long the kernel may cache names and attributes.
    pub cache_ttl: Duration,
    /// How long any call to the node may take before the operation fails with EIO.
    pub timeout: Duration,
    /// Let other users (a media server's own user) read the mount.
    pub allow_other: bool,
    /// The kernel's read-ahead for the mount, in KiB (0: leave it).
    pub read_ahead_kb: u32,
}

/// Why the mount could not start, for the CLI's message and exit code.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The command line or the mount point is wrong.
    #[error("{0}")]
    Usage(String),
    /// The node or the root folder cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// The node refused the token.
    #[error("{0}")]
    Refused(String),
}

/// The mount point as the kernel's mount table writes it (octal escapes for space, tab,
/// newline and backslash).
fn mountinfo_escape(p: &Path) -> String {
    let mut out = String::new();
    for c in p.to_string_lossy().chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// The filesystem type mounted at `dir`, if something is mounted exactly there.
fn mounted_at(dir: &Path) -> Option<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = mountinfo_escape(dir);
    table.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let point = fields.get(4)?;
        if *point != want {
            return None;
        }
        let dash = fields.iter().position(|f| *f == "-")?;
        fields.get(dash + 1).map(|t| (*t).to_owned())
    })
}

/// Checks the mount point: a folder, not already mounted.
fn check_mountpoint(p: &Path) -> Result<PathBuf, MountError> {
    let meta = std::fs::metadata(p).map_err(|e| {
        MountError::Usage(format!(
            "mount point {}: {e} (make the folder first: mkdir -p {})",
            p.display(),
            p.display()
        ))
    })?;
    if !meta.is_dir() {
        return Err(MountError::Usage(format!(
            "mount point {} is not a folder",
            p.display()
        )));
    }
    let abs = std::fs::canonicalize(p)
        .map_err(|e| MountError::Usage(format!("mount point {}: {e}", p.display())))?;
    if let Some(fstype) = mounted_at(&abs) {
        return Err(MountError::Usage(format!(
            "{} is already a mount point ({fstype}); unmount it first (fusermount -u {}) or \
             choose another folder",
            abs.display(),
            abs.display()
        )));
    }
    Ok(abs)
}

/// Raises the kernel's read-ahead for the mount (its backing device's `read_ahead_kb`): the
/// default 128 KiB halves a stream's speed. Needs root; otherwise says how.
fn raise_read_ahead(mountpoint: &Path, kb: u32) {
    use std::os::unix::fs::MetadataExt;
    if kb == 0 {
        return;
    }
    let Ok(meta) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = meta.dev();
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let knob = PathBuf::from(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"));
    match std::fs::write(&knob, format!("{kb}\n")) {
        Ok(()) => tracing::info!(
            "read-ahead of the mount set to {kb} KiB ({})",
            knob.display()
        ),
        Err(e) => tracing::warn!(
            "cannot set the mount's read-ahead to {kb} KiB ({}: {e}); streams read at 128 KiB \
             a time. As root: echo {kb} > {}",
            knob.display(),
            knob.display()
        ),
    }
}

/// Mounts, serves until SIGTERM, SIGINT or `fusermount -u`, and unmounts.
pub async fn run(args: MountArgs) -> anyhow::Result<()> {
    let mountpoint = check_mountpoint(&args.mountpoint)?;
    let root = wormfs_parts::tree_path::TreePath::parse(&args.root)
        .map_err(|e| MountError::Usage(format!("--root {:?}: {e}", args.root)))?
        .to_string();
    let remote = Remote::new(args.base.clone(), args.token.clone(), args.timeout)?;
    // The root must be a folder the node can list now: a typo is an error, not an empty mount.
    let refused = |e: RemoteError| match e {
        RemoteError::NotFound => MountError::Usage(format!(
            "--root {root}: no such folder on the node at {}",
            args.base
        )),
        RemoteError::Refused(why) => MountError::Refused(format!(
            "{why} (give the node's token: --token, WORMFS_TOKEN, or read it from the node's \
             data folder)"
        )),
        e => MountError::Unavailable(format!("cannot list {root} on {}: {e}", args.base)),
    };
    if !remote.is_dir(&root).await.map_err(refused)? {
        return Err(MountError::Usage(format!("--root {root} is a file, not a folder")).into());
    }
    let entries = remote.list(&root).await.map_err(refused)?;
    let root_mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let shared = Arc::new(fs::Shared {
        tree: tree::Tree::new(&root, root_mtime),
        remote,
        ttl: args.cache_ttl,
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
    });
    let generation = shared.tree.generation();
    shared.tree.store_listing(tree::ROOT, entries, generation);

    let mut options = vec![
        MountOption::RO,
        MountOption::FSName("wormfs".into()),
        MountOption::Subtype("wormfs".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
    ];
    options.dedup();
    let mut config = fuser::Config::default();
    config.mount_options = options;
    if args.allow_other {
        config.acl = SessionACL::All;
    }
    let filesystem = fs::WormFs::new(shared.clone(), tokio::runtime::Handle::current());
    let session = {
        let mp = mountpoint.clone();
        tokio::task::spawn_blocking(move || fuser::spawn_mount(filesystem, &mp, &config))
            .await
            .context("join the mount")?
            .map_err(|e| {
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied
                    || e.raw_os_error() == Some(1)
                {
                    " (mounting needs root, or fusermount3 from the fuse3 package; \
                     --allow-other as a user needs user_allow_other in /etc/fuse.conf)"
                } else if e.kind() == std::io::ErrorKind::NotFound {
                    " (is /dev/fuse there, and fusermount3 installed? apt install fuse3)"
                } else {
                    ""
                };
                MountError::Unavailable(format!("mount {}: {e}{hint}", mountpoint.display()))
            })?
    };
    raise_read_ahead(&mountpoint, args.read_ahead_kb);
    let stop = tokio_util::sync::CancellationToken::new();
    let follower = tokio::spawn(tracing::Instrument::instrument(
        follow::follow(shared.clone(), session.notifier(), stop.clone()),
        tracing::info_span!("mount_follow"),
    ));
    crate::logging::note(&format!(
        "WormFS {root} mounted read-only at {} from {}",
        mountpoint.display(),
        args.base
    ));

    // Until a signal, or the session ends by itself (fusermount -u, umount).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("watch SIGTERM")?;
    let by_signal = loop {
        tokio::select! {
            _ = term.recv() => break true,
            _ = tokio::signal::ctrl_c() => break true,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if session.guard.is_finished() {
                    break false;
                }
            }
        }
    };
    stop.cancel();
    let _ = follower.await;
    if by_signal {
        tracing::info!("unmounting {}", mountpoint.display());
        let mp = mountpoint.clone();
        tokio::task::spawn_blocking(move || session.umount_and_join())
            .await
            .context("join the unmount")?
            .map_err(|e| {
                MountError::Unavailable(format!(
                    "unmount {}: {e} (a program still has a file open there? \
                     fusermount -u -z {} detaches it)",
                    mp.display(),
                    mp.display()
                ))
            })?;
    } else {
        let _ = tokio::task::spawn_blocking(move || session.join()).await;
    }
    crate::logging::note(&format!("{} unmounted", mountpoint.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_table_paths_are_escaped() {
        assert_eq!(
            mountinfo_escape(Path::new("/mnt/my films\\x")),
            "/mnt/my\\040films\\134x"
        );
    }

    #[test]
    fn the_root_folder_is_never_a_mount_point_of_ours() {
        // `/` is mounted (the container's or the machine's root); a fresh temp folder is not.
        assert!(mounted_at(Path::new("/")).is_some());
        let d = tempfile::tempdir().unwrap();
        assert!(mounted_at(&std::fs::canonicalize(d.path()).unwrap()).is_none());
        assert!(check_mountpoint(d.path()).is_ok());
        assert!(check_mountpoint(Path::new("/")).is_err());
    }
}
