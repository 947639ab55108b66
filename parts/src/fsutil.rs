//! Small filesystem helpers: directory fsync, write-temp-fsync-rename, a descriptor's
//! writeback error, and the modes of the node's own files (folders 0700, files 0600;
//! docs/operations.md "File modes").

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{bail, Context};

/// A local path for a message: valid UTF-8 as it is, any other byte as `\xNN` (never the
/// U+FFFD a lossy conversion shows, which names no file).
pub fn escaped(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for chunk in p.as_os_str().as_bytes().utf8_chunks() {
        for ch in chunk.valid().chars() {
            if ch.is_control() {
                out.extend(ch.escape_default());
            } else {
                out.push(ch);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Fsyncs a directory, so a rename or create inside it survives a power cut.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("fsync directory {}", dir.display()))
}

/// Writes `bytes` to `path` durably: a temporary file, fsync, rename, directory fsync.
pub fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{:08x}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        rand::random::<u32>()
    ));
    let res = (|| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("write {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("fsync {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("rename into {}", path.display()))?;
        sync_dir(dir)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// The writeback error of `f`'s file since `f` was opened (or since it last reported one),
/// without the journal commit and the flush of the device's cache an `fdatasync` costs: for a
/// file that a `syncfs` of its filesystem has just made durable (the group sync,
/// [`crate::sync_group`]). The kernel reports a writeback error once per open descriptor, and
/// the `syncfs` reports only errors since its own descriptor was opened: one that happened
/// before, in background writeback, reaches only the descriptors open at the time.
///
/// `sync_file_range(2)` waiting on the whole file returns exactly that report
/// (`file_fdatawait_range`, Linux 4.14 and later), the one `fdatasync` returns; it makes
/// nothing durable by itself. Where the call is missing (`ENOSYS`: a seccomp filter, a kernel
/// without it), `fdatasync` answers instead; any other error is the answer (a writeback error
/// may be stored as `EINVAL` or `EOPNOTSUPP`, and once reported here it would not be reported
/// to an `fdatasync` after it). Each small file's
/// three parts paid three device flushes for this report (docs/performance.md, "Many small
/// files").
pub fn writeback_error(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a system call on a descriptor `f` holds open for its length; no memory is
    // passed or kept.
    #[allow(unsafe_code)]
    let r = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, flags) };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOSYS) => f.sync_data(),
        _ => Err(e),
    }
}

/// Creates `dir` and any missing parents with mode 0700 (folders that exist keep their mode).
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Takes every permission of group and others away from `path` (a folder 0755 becomes 0700, a
/// file 0644 becomes 0600). A symbolic link is never followed: it is left alone, as is a path
/// that does not exist. Returns the old mode when it changed something.
pub fn restrict_mode(path: &Path) -> anyhow::Result<Option<u32>> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP) => return Ok(None),
        Err(e) => {
            return Err(std::io::Error::from(e)).with_context(|| format!("open {}", path.display()))
        }
    };
    let st = rustix::fs::fstat(&fd).with_context(|| format!("stat {}", path.display()))?;
    let mode = st.st_mode & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o700))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(Some(mode))
}

/// [`restrict_mode`] with a log line naming the file and its old mode.
pub fn restrict_mode_logged(path: &Path) -> anyhow::Result<()> {
    if let Some(old) = restrict_mode(path)? {
        tracing::warn!(
            "{} was open to other users (mode {:o}); its mode is now {:o}",
            path.display(),
            old,
            old & 0o700
        );
    }
    Ok(())
}

/// Checks a secret file (a key, a token, a password): it must belong to the user running this
/// process and be closed to group and others. A loose mode is refused, not fixed, as sshd
/// refuses a private key others can read: a secret that was readable may have been read. A
/// file that does not exist passes (it is made, mode 0600, where it is needed).
pub fn check_secret(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "the secret file {} belongs to user {}, not to user {me} that runs this node; \
             chown it to this user (or run the node as its owner)",
            path.display(),
            meta.uid()
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        bail!(
            "the secret file {} is open to other users (mode {:o}); run chmod 600 on it",
            path.display(),
            mode & 0o777
        );
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes a new secret file (a token, a key) with mode 0600, durably; refused if the file
/// exists, so a secret is never overwritten.
pub fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    writeln!(f, "{secret}")?;
    f.sync_all()?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod escape_tests {
    use super::escaped;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn a_name_that_is_not_utf8_is_shown_escaped() {
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(
            b"/d/caf\xe9 \xc3\xa9t\xc3\xa9.txt",
        ));
        assert_eq!(escaped(p), "/d/caf\\xe9 \u{e9}t\u{e9}.txt");
        assert_eq!(escaped(std::path::Path::new("a\nb")), "a\\nb");
    }
}
