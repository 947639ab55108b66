//! Local disks: identity files, the identity check before every write, space and state.
//!
//! Each disk root holds `wormfs-disk.json` (cluster id, disk id). A path that the metadata knows
//! as a disk but whose identity file is gone (an unmounted disk showing its empty mount point) is
//! marked missing and never written to, so parts never land on the root filesystem by accident.
//!
//! Disks that may sleep (docs/operations.md): what the node shows of a disk (its state, its
//! space) is kept in memory, so a status call touches no disk. The identity file is read
//! whole once, then checked by its inode (device, inode number, size, change time) with a
//! `stat` the kernel answers from its inode cache: a write checks it before every part, the
//! disk monitor cheaply every few seconds ([`LocalDisk::quick_check`]), and neither opens a
//! file. Space is measured (`statvfs`) when the disk takes a write, at open and when asked
//! ([`LocalDisk::space`]); [`LocalDisk::known_space`] answers from the last measure and
//! measures again only after bytes were written or [`LocalDisk::forget_space`].

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::ids::{ClusterId, DiskId, FileId};
use crate::part_format::part_file_name;

/// Name of the identity file at a disk's root.
pub const IDENTITY_FILE: &str = "wormfs-disk.json";
/// Folder holding part files inside a disk.
pub const PARTS_DIR: &str = "parts";

/// The identity file format this version writes and reads.
pub const IDENTITY_FORMAT: u32 = 1;

/// The content of a disk's identity file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskIdentity {
    /// Identity file format.
    pub format: u32,
    /// The cluster the disk belongs to.
    pub cluster_id: ClusterId,
    /// The disk's id.
    pub disk_id: DiskId,
    /// When it was made, ms since epoch.
    pub created_ms: u64,
}

/// What a node sees of one of its disks (not replicated).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskState {
    /// Takes new parts.
    Active,
    /// Less free space than the reserve plus [`FULL_FLOOR_BYTES`], or a write found no space
    /// (ENOSPC): no new parts.
    Full,
    /// Mounted read-only or not writable: no new parts.
    ReadOnly,
    /// The identity file is gone or belongs to another disk: nothing is read or written.
    Missing,
    /// Another machine's disk, that machine not answering: its state is unknown (never a
    /// local disk's state; the cluster's status shows it).
    MachineDown,
}

/// Free space (beyond the reserve) below which a disk counts as full: a part's header and a
/// block or two would not fit.
pub const FULL_FLOOR_BYTES: u64 = 1 << 20;

/// How long placement trusts a disk's last full check ([`LocalDisk::placement_space`]).
pub const PLACEMENT_CHECK_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether an I/O error says the filesystem has no space left (ENOSPC, or EDQUOT).
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122))
        || e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
}

/// Where a filesystem is mounted, from `/proc/self/mountinfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInfo {
    /// Its mount point (`/mnt/disk1`).
    pub mount_point: String,
    /// Its source (`/dev/sdb1`, `tmpfs`).
    pub device: String,
}

/// The mount of the filesystem holding `path` (device `dev`), read from
/// `/proc/self/mountinfo`: the mount of that device whose mount point is the longest prefix
/// of `path`. `None` where it cannot be told.
pub fn mount_of(path: &Path, dev: u64) -> Option<MountInfo> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // Mount points are absolute: a relative disk path (the embedded default's) is resolved.
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    mount_in(&text, &abs, dev)
}

/// A field of `/proc/self/mountinfo` or `/etc/fstab` with its octal escapes (`\040` for a
/// space) turned back into characters.
pub fn unescape_mount(s: &str) -> String {
    // Spaces, tabs, newlines and backslashes are written as octal escapes (`\040`).
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mount_in(text: &str, path: &Path, dev: u64) -> Option<MountInfo> {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let want = format!("{major}:{minor}");
    let mut best: Option<MountInfo> = None;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let f: Vec<&str> = left.split(' ').collect();
        if f.len() < 5 || f[2] != want {
            continue;
        }
        let mount_point = unescape_mount(f[4]);
        if !path.starts_with(&mount_point) {
            continue;
        }
        let device = right
            .split(' ')
            .nth(1)
            .map(unescape_mount)
            .unwrap_or_default();
        if best
            .as_ref()
            .is_none_or(|b| mount_point.len() >= b.mount_point.len())
        {
            best = Some(MountInfo {
                mount_point,
                device,
            });
        }
    }
    best
}

/// Whether an error chain holds an I/O error that says the filesystem has no space left.
pub fn chain_is_no_space(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(is_no_space))
}

/// Why a disk cannot take a write.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The identity file was written in a format this version does not know (a newer WormFS).
    #[error("disk {path}: identity file format {found} is unknown to this version (it reads format {IDENTITY_FORMAT}); refusing to guess")]
    UnknownFormat {
        /// The identity file.
        path: PathBuf,
        /// The format it names.
        found: u32,
    },
    /// The identity file is gone.
    #[error("disk {path}: identity file missing (unmounted?)")]
    Missing {
        /// The disk root.
        path: PathBuf,
    },
    /// The identity file names another disk or cluster.
    #[error("disk {path}: identity file belongs to disk {found} of cluster {cluster}, expected {expected}")]
    Swapped {
        /// The disk root.
        path: PathBuf,
        /// Disk id found.
        found: DiskId,
        /// Cluster id found.
        cluster: ClusterId,
        /// Disk id expected.
        expected: DiskId,
    },
    /// The root moved to another filesystem since the disk was opened.
    #[error("disk {path}: now on another filesystem (device {now}, was {was})")]
    DeviceChanged {
        /// The disk root.
        path: PathBuf,
        /// Device now.
        now: u64,
        /// Device at open.
        was: u64,
    },
    /// Not enough free space.
    #[error("disk {path}: disk full ({free} bytes free, {reserve} reserved)")]
    Full {
        /// The disk root.
        path: PathBuf,
        /// Free bytes.
        free: u64,
        /// Reserve.
        reserve: u64,
    },
    /// Not writable.
    #[error("disk {path}: read-only")]
    ReadOnly {
        /// The disk root.
        path: PathBuf,
    },
    /// A directory that is not empty and has no identity file.
    #[error("disk {path}: not empty and not a WormFS disk; refusing to initialise it")]
    NotEmpty {
        /// The disk root.
        path: PathBuf,
    },
    /// Another I/O failure.
    #[error("disk {path}: {source}")]
    Io {
        /// The disk root.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A disk attached to this node.
#[derive(Debug)]
pub struct LocalDisk {
    /// Its id.
    pub id: DiskId,
    /// Its root folder.
    pub root: PathBuf,
    /// The device of the root folder at open (checked before every write: a disk whose
    /// filesystem changed under it takes no parts).
    pub fs_dev: u64,
    /// Its failure domain for placement: its filesystem (`fs_dev`), unless the node knows
    /// better (datasets of one ZFS pool share the pool's; set by the server after opening).
    pub domain: u64,
    /// Free space below which it takes no new parts.
    pub reserve_bytes: u64,
    state: Mutex<(DiskState, String)>,
    /// Bytes read from part files.
    pub bytes_read: AtomicU64,
    /// Bytes written to part files.
    pub bytes_written: AtomicU64,
    /// Failed or corrupt reads.
    pub read_errors: AtomicU64,
    /// Of those, the blocks whose checksum did not match.
    pub checksum_failures: AtomicU64,
    /// Writes of part files that failed (the disk full included).
    pub write_errors: AtomicU64,
    /// The identity file's inode when its content was last read and found right: while it is
    /// unchanged, the identity needs no new read.
    identity_seen: Mutex<Option<IdentityStamp>>,
    /// The last measure of space, with `bytes_written` when it was taken (`None`: measure
    /// again).
    space_seen: Mutex<Option<(Space, u64)>>,
    /// When a full check ([`Self::verify_for_write`]) last passed: placement reuses it for
    /// [`PLACEMENT_CHECK_FOR`] (see [`Self::placement_space`]).
    checked_at: Mutex<Option<std::time::Instant>>,
    /// The sweeper's mark of what the disk held when a sweep last found nothing left to do
    /// on it (its own fingerprint of the writes and the parts the metadata places here);
    /// `None`: the next sweep lists it.
    pub swept_clean: Mutex<Option<u64>>,
}

/// What `stat` says of an identity file: another file (a swapped disk, a rewritten or
/// replaced identity) differs in one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IdentityStamp {
    dev: u64,
    ino: u64,
    len: u64,
    ctime: i64,
    ctime_nsec: i64,
}

impl IdentityStamp {
    /// Whether the file last changed over a second ago.
    fn settled(&self) -> bool {
        let changed = std::time::Duration::new(
            u64::try_from(self.ctime).unwrap_or(0),
            u32::try_from(self.ctime_nsec).unwrap_or(0),
        );
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .is_ok_and(|now| now.saturating_sub(changed) > std::time::Duration::from_secs(1))
    }

    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Space on a disk's filesystem.
#[derive(Clone, Copy, Debug, Serialize, Default)]
pub struct Space {
    /// Filesystem size.
    pub total_bytes: u64,
    /// Bytes available to us.
    pub free_bytes: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads a disk's identity file, if any.
pub fn read_identity(root: &Path) -> Result<Option<DiskIdentity>, DiskError> {
    let file = root.join(IDENTITY_FILE);
    match std::fs::read(&file) {
        Ok(b) => {
            let ident: DiskIdentity = serde_json::from_slice(&b).map_err(|e| DiskError::Io {
                path: file.clone(),
                source: std::io::Error::other(e),
            })?;
            if ident.format != IDENTITY_FORMAT {
                return Err(DiskError::UnknownFormat {
                    path: file,
                    found: ident.format,
                });
            }
            Ok(Some(ident))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(root)(e)),
    }
}

impl LocalDisk {
    /// Opens the disk at `root`.
    ///
    /// `known` is the disk id the metadata has for this path: if the identity file is missing
    /// there, the disk is opened as missing. An unknown path without identity is initialised as
    /// a new disk, but only when it is empty (a `lost+found` is allowed).
    pub fn open(
        root: &Path,
        cluster: ClusterId,
        known: Option<DiskId>,
        reserve_bytes: u64,
    ) -> Result<Self, DiskError> {
        let ident = read_identity(root)?;
        let (id, state) = match (ident, known) {
            (Some(i), _) if i.cluster_id != cluster => {
                return Err(DiskError::Swapped {
                    path: root.to_owned(),
                    found: i.disk_id,
                    cluster: i.cluster_id,
                    expected: known.unwrap_or(i.disk_id),
                })
            }
            (Some(i), Some(k)) if i.disk_id != k => (
                k,
                (
                    DiskState::Missing,
                    format!("identity names disk {}", i.disk_id),
                ),
            ),
            (Some(i), _) => (i.disk_id, (DiskState::Active, String::new())),
            (None, Some(k)) => (
                k,
                (
                    DiskState::Missing,
                    "identity file missing (unmounted?)".to_owned(),
                ),
            ),
            (None, None) => (
                Self::initialise(root, cluster)?,
                (DiskState::Active, String::new()),
            ),
        };
        let fs_dev = std::fs::metadata(root).map(|m| m.dev()).unwrap_or(0);
        let disk = Self {
            id,
            root: root.to_owned(),
            fs_dev,
            domain: fs_dev,
            reserve_bytes,
            state: Mutex::new(state),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
            checksum_failures: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            identity_seen: Mutex::new(None),
            space_seen: Mutex::new(None),
            checked_at: Mutex::new(None),
            swept_clean: Mutex::new(None),
        };
        if disk.state().0 == DiskState::Missing {
            tracing::error!(disk = %disk.root.display(), reason = %disk.state().1, "disk is missing: it gets no parts");
        } else {
            disk.restrict_parts();
            disk.refresh();
        }
        Ok(disk)
    }

    /// Takes group and others' access away from `parts/`, its folders and the part files in a
    /// folder that was open (an installation from before parts were private: each folder is
    /// walked once, its files before the folder itself, so an interrupted pass resumes). A
    /// failure (a read-only disk) is logged: the disk is still used.
    fn restrict_parts(&self) {
        let parts = self.parts_dir();
        let (mut files, mut dirs) = (0u64, 0u64);
        let mut pass = || -> anyhow::Result<()> {
            let Ok(entries) = std::fs::read_dir(&parts) else {
                return Ok(());
            };
            for e in entries.flatten() {
                let path = e.path();
                match e.file_type() {
                    Ok(k) if k.is_dir() => {
                        let open =
                            std::fs::symlink_metadata(&path).is_ok_and(|m| m.mode() & 0o077 != 0);
                        if !open {
                            continue;
                        }
                        for f in std::fs::read_dir(&path)?.flatten() {
                            if f.file_type().is_ok_and(|k| k.is_file())
                                && crate::fsutil::restrict_mode(&f.path())?.is_some()
                            {
                                files += 1;
                            }
                        }
                        if crate::fsutil::restrict_mode(&path)?.is_some() {
                            dirs += 1;
                        }
                    }
                    Ok(k) if k.is_file() => {
                        files += u64::from(crate::fsutil::restrict_mode(&path)?.is_some());
                    }
                    _ => {}
                }
            }
            if crate::fsutil::restrict_mode(&parts)?.is_some() {
                dirs += 1;
            }
            Ok(())
        };
        let res = pass();
        if files + dirs > 0 {
            tracing::warn!(
                disk = %self.root.display(),
                "{files} part files and {dirs} folders under {} were open to other users; \
                 they are now 0600 and 0700",
                parts.display()
            );
        }
        if let Err(e) = res {
            tracing::warn!(disk = %self.root.display(), "cannot make the parts private: {e:#}");
        }
    }

    fn initialise(root: &Path, cluster: ClusterId) -> Result<DiskId, DiskError> {
        crate::fsutil::create_private_dir_all(root).map_err(io(root))?;
        let mut entries = std::fs::read_dir(root).map_err(io(root))?;
        if entries.any(|e| e.map(|e| e.file_name() != "lost+found").unwrap_or(true)) {
            return Err(DiskError::NotEmpty {
                path: root.to_owned(),
            });
        }
        let ident = DiskIdentity {
            format: IDENTITY_FORMAT,
            cluster_id: cluster,
            disk_id: DiskId::random(),
            created_ms: crate::fsutil::now_ms(),
        };
        let json =
            serde_json::to_vec_pretty(&ident).map_err(|e| io(root)(std::io::Error::other(e)))?;
        crate::fsutil::write_durably(&root.join(IDENTITY_FILE), &json)
            .map_err(|e| io(root)(std::io::Error::other(format!("{e:#}"))))?;
        crate::fsutil::create_private_dir_all(&root.join(PARTS_DIR)).map_err(io(root))?;
        tracing::info!(disk = %root.display(), id = %ident.disk_id, "initialised a new disk");
        Ok(ident.disk_id)
    }

    /// The observed state and its reason.
    pub fn state(&self) -> (DiskState, String) {
        match self.state.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_state(&self, s: DiskState, why: String) {
        let mut g = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if g.0 != s {
            tracing::warn!(disk = %self.root.display(), from = ?g.0, to = ?s, reason = %why, "disk state changed");
        }
        *g = (s, why);
    }

    /// Records a write that found no space left (ENOSPC): no new parts until a check finds
    /// room above the floor again.
    pub fn mark_full(&self, why: &str) {
        self.set_state(DiskState::Full, format!("disk full: {why}"));
    }

    /// Space on the disk's filesystem, measured now (`statvfs`), and remembered for
    /// [`Self::known_space`].
    pub fn space(&self) -> Result<Space, DiskError> {
        let st = rustix::fs::statvfs(&self.root).map_err(|e| io(&self.root)(e.into()))?;
        Ok(self.remember_space(&st))
    }

    fn remember_space(&self, st: &rustix::fs::StatVfs) -> Space {
        let space = Space {
            total_bytes: st.f_blocks * st.f_frsize,
            free_bytes: st.f_bavail * st.f_frsize,
        };
        let written = self.bytes_written.load(Ordering::Relaxed);
        *lock(&self.space_seen) = Some((space, written));
        space
    }

    /// Space as last measured, measured again only when bytes were written to the disk since
    /// (it is awake then) or [`Self::forget_space`] was called: what status calls show, so
    /// they never poll a disk. A measure that fails gives the last one (zero if none).
    pub fn known_space(&self) -> Space {
        let written = self.bytes_written.load(Ordering::Relaxed);
        match *lock(&self.space_seen) {
            Some((space, at)) if at == written => return space,
            _ => {}
        }
        self.space()
            .unwrap_or_else(|_| lock(&self.space_seen).map(|(s, _)| s).unwrap_or_default())
    }

    /// Makes the next [`Self::known_space`] measure again (parts were removed).
    pub fn forget_space(&self) {
        let mut g = lock(&self.space_seen);
        if let Some((_, at)) = g.as_mut() {
            *at = at.wrapping_sub(1);
        }
    }

    /// Whether the identity file is still the one last read, checked with a `stat` of it
    /// (no file is opened, nothing is read: the kernel answers from its inode cache, so a
    /// sleeping disk stays asleep). `Err` says what changed; [`Self::refresh`] then reads
    /// the identity again and sets the state.
    pub fn quick_check(&self) -> Result<(), DiskError> {
        let m = match std::fs::metadata(self.root.join(IDENTITY_FILE)) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DiskError::Missing {
                    path: self.root.clone(),
                })
            }
            Err(e) => return Err(io(&self.root)(e)),
        };
        if *lock(&self.identity_seen) == Some(IdentityStamp::of(&m)) {
            Ok(())
        } else {
            Err(DiskError::Io {
                path: self.root.clone(),
                source: std::io::Error::other("identity file changed since it was last read"),
            })
        }
    }

    /// Checks the identity file: a `stat` when it is the file last read and found right,
    /// else its content read and compared.
    fn check_identity(&self) -> Result<(), DiskError> {
        let file = self.root.join(IDENTITY_FILE);
        let before = match std::fs::metadata(&file) {
            Ok(m) => IdentityStamp::of(&m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *lock(&self.identity_seen) = None;
                return Err(DiskError::Missing {
                    path: self.root.clone(),
                });
            }
            Err(e) => return Err(io(&self.root)(e)),
        };
        if *lock(&self.identity_seen) == Some(before) {
            return Ok(());
        }
        *lock(&self.identity_seen) = None;
        match read_identity(&self.root)? {
            None => {
                return Err(DiskError::Missing {
                    path: self.root.clone(),
                })
            }
            Some(i) if i.disk_id != self.id => {
                return Err(DiskError::Swapped {
                    path: self.root.clone(),
                    found: i.disk_id,
                    cluster: i.cluster_id,
                    expected: self.id,
                })
            }
            Some(_) => {}
        }
        // Remembered only if the file did not change while it was read, and last changed
        // long enough ago that a change now would show in its change time (which the kernel
        // keeps in coarse ticks: a file rewritten within one would look the same).
        if std::fs::metadata(&file).is_ok_and(|m| IdentityStamp::of(&m) == before)
            && before.settled()
        {
            *lock(&self.identity_seen) = Some(before);
        }
        Ok(())
    }

    /// The disk's space for placement's choice of disks for a part of `needed` bytes: from
    /// a full check ([`Self::verify_for_write`]) that passed within [`PLACEMENT_CHECK_FOR`],
    /// less what was written since, else from a new full check. Placement asks this of every
    /// disk for every file, and a photo library is thousands of files a second: the disks it
    /// then chooses are checked in full again as their parts are created
    /// (`LocalPartWriter::create`), so a disk swapped or filled meanwhile still takes nothing.
    pub fn placement_space(&self, needed: u64) -> Result<Space, DiskError> {
        let fresh = lock(&self.checked_at).is_some_and(|t| t.elapsed() < PLACEMENT_CHECK_FOR);
        if fresh && self.state().0 == DiskState::Active {
            let written = self.bytes_written.load(Ordering::Relaxed);
            if let Some((space, at)) = *lock(&self.space_seen) {
                let free = space.free_bytes.saturating_sub(written.saturating_sub(at));
                let floor = self.reserve_bytes.saturating_add(FULL_FLOOR_BYTES);
                if free >= floor.max(self.reserve_bytes.saturating_add(needed)) {
                    return Ok(Space {
                        total_bytes: space.total_bytes,
                        free_bytes: free,
                    });
                }
            }
        }
        self.verify_for_write(needed)?;
        Ok(self.known_space())
    }

    /// Checks that this is still the same disk and that it can take `needed` bytes.
    pub fn verify_for_write(&self, needed: u64) -> Result<(), DiskError> {
        let res = self.check(needed);
        *lock(&self.checked_at) = res.is_ok().then(std::time::Instant::now);
        match &res {
            Ok(()) => {
                if self.state().0 != DiskState::Active {
                    self.set_state(DiskState::Active, String::new());
                }
            }
            // Full only below the floor: a disk with room, only not for this part, is not.
            Err(DiskError::Full { free, .. })
                if *free < self.reserve_bytes.saturating_add(FULL_FLOOR_BYTES) =>
            {
                self.set_state(
                    DiskState::Full,
                    res.as_ref()
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default(),
                )
            }
            Err(DiskError::Full { .. }) => {
                if self.state().0 != DiskState::Active {
                    self.set_state(DiskState::Active, String::new());
                }
            }
            Err(DiskError::ReadOnly { .. }) => {
                self.set_state(DiskState::ReadOnly, "read-only".into())
            }
            Err(
                e @ (DiskError::Missing { .. }
                | DiskError::Swapped { .. }
                | DiskError::DeviceChanged { .. }),
            ) => self.set_state(DiskState::Missing, e.to_string()),
            Err(_) => {}
        }
        res
    }

    fn check(&self, needed: u64) -> Result<(), DiskError> {
        self.check_identity()?;
        let dev = std::fs::metadata(&self.root).map_err(io(&self.root))?.dev();
        if dev != self.fs_dev {
            return Err(DiskError::DeviceChanged {
                path: self.root.clone(),
                now: dev,
                was: self.fs_dev,
            });
        }
        let st = rustix::fs::statvfs(&self.root).map_err(|e| io(&self.root)(e.into()))?;
        let free = self.remember_space(&st).free_bytes;
        if st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
            return Err(DiskError::ReadOnly {
                path: self.root.clone(),
            });
        }
        let floor = self.reserve_bytes.saturating_add(FULL_FLOOR_BYTES);
        if free < floor.max(self.reserve_bytes.saturating_add(needed)) {
            return Err(DiskError::Full {
                path: self.root.clone(),
                free,
                reserve: self.reserve_bytes,
            });
        }
        Ok(())
    }

    /// Re-checks identity, writability and space: at open, and when the disk monitor saw a
    /// change ([`Self::quick_check`], read or write errors). Opens no file while the
    /// identity file is the one last read.
    pub fn refresh(&self) {
        let _ = self.verify_for_write(0);
    }

    /// Whether the disk may be read (its identity still checks out).
    pub fn readable(&self) -> bool {
        self.state().0 != DiskState::Missing
    }

    /// Where a part lives on this disk.
    pub fn part_path(&self, file_id: FileId, segment: u32, part: u16) -> PathBuf {
        let name = part_file_name(file_id, segment, part);
        self.root.join(PARTS_DIR).join(&name[..2]).join(name)
    }

    /// The folder holding all parts.
    pub fn parts_dir(&self) -> PathBuf {
        self.root.join(PARTS_DIR)
    }

    /// Counts bytes read.
    pub fn count_read(&self, n: u64) {
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a read that failed; `checksum` when it was a block whose checksum did not match.
    pub fn count_read_error(&self, checksum: bool) {
        self.read_errors.fetch_add(1, Ordering::Relaxed);
        if checksum {
            self.checksum_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a write to a part file that failed.
    pub fn count_write_error(&self) {
        self.write_errors.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_empty_dir_is_initialised_and_known_missing_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let cluster = ClusterId::random();
        let root = t.path().join("d1");
        let d = LocalDisk::open(&root, cluster, None, 0).unwrap();
        assert_eq!(d.state().0, DiskState::Active);
        d.verify_for_write(1).unwrap();
        // The identity vanishes (the disk was unmounted): writes are refused.
        std::fs::remove_file(root.join(IDENTITY_FILE)).unwrap();
        assert!(matches!(
            d.verify_for_write(1),
            Err(DiskError::Missing { .. })
        ));
        assert_eq!(d.state().0, DiskState::Missing);
        // Reopened with the metadata's knowledge, it stays missing and is not re-initialised.
        let again = LocalDisk::open(&root, cluster, Some(d.id), 0).unwrap();
        assert_eq!(again.state().0, DiskState::Missing);
        assert!(read_identity(&root).unwrap().is_none());
    }

    #[test]
    fn a_disk_is_named_by_its_mount() {
        let text = "22 1 0:21 / /proc rw - proc proc rw\n\
                    29 1 254:0 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw\n\
                    40 29 254:0 /srv /mnt/my\\040disk rw - ext4 /dev/mapper/vg-root rw\n\
                    41 29 0:45 / /mnt/t rw - tmpfs tmpfs rw,size=8192k\n";
        let dev = 254u64 << 8;
        let m = mount_in(text, Path::new("/var/lib/wormfs/d1"), dev).unwrap();
        assert_eq!(m.mount_point, "/");
        assert_eq!(m.device, "/dev/mapper/vg-root");
        let m = mount_in(text, Path::new("/mnt/my disk/d2"), dev).unwrap();
        assert_eq!(m.mount_point, "/mnt/my disk");
        let m = mount_in(text, Path::new("/mnt/t/d3"), 45).unwrap();
        assert_eq!(
            (m.mount_point.as_str(), m.device.as_str()),
            ("/mnt/t", "tmpfs")
        );
        assert!(mount_in(text, Path::new("/x"), 99).is_none());
        // The running system's own root is found.
        let dev = std::fs::metadata("/").unwrap().dev();
        assert!(mount_of(Path::new("/"), dev).is_some());
        // A relative path (the embedded default's folder-disks) too.
        let dev = std::fs::metadata(".").unwrap().dev();
        assert!(mount_of(Path::new("."), dev).is_some());
    }

    #[test]
    fn non_empty_foreign_dir_is_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("film.mkv"), b"x").unwrap();
        assert!(matches!(
            LocalDisk::open(t.path(), ClusterId::random(), None, 0),
            Err(DiskError::NotEmpty { .. })
        ));
    }

    #[test]
    fn an_identity_file_of_an_unknown_format_is_refused_not_guessed() {
        let t = tempfile::tempdir().unwrap();
        let cluster = ClusterId::random();
        let d = LocalDisk::open(t.path(), cluster, None, 0).unwrap();
        let file = t.path().join(IDENTITY_FILE);
        let text = std::fs::read_to_string(&file).unwrap();
        let newer = text.replace("\"format\": 1,", "\"format\": 2,");
        assert_ne!(text, newer, "{text}");
        std::fs::write(&file, newer).unwrap();
        let e = read_identity(t.path()).unwrap_err();
        assert!(
            matches!(e, DiskError::UnknownFormat { found: 2, .. }),
            "{e}"
        );
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        assert!(LocalDisk::open(t.path(), cluster, Some(d.id), 0).is_err());
    }

    /// Refreshes `d` until its identity file is remembered (the quick check passes), failing
    /// after 10 s.
    fn settled(d: &LocalDisk) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while d.quick_check().is_err() {
            assert!(std::time::Instant::now() < deadline, "never settled");
            std::thread::sleep(std::time::Duration::from_millis(50));
            d.refresh();
        }
        assert_eq!(d.state().0, DiskState::Active);
    }

    #[test]
    fn the_identity_is_checked_by_its_inode_and_read_again_when_it_changed() {
        let t = tempfile::tempdir().unwrap();
        let cluster = ClusterId::random();
        let d = LocalDisk::open(t.path(), cluster, None, 0).unwrap();
        // A file changed within the last second is read at each check; once older, it is
        // read once more and then checked by a stat (the quick check agrees).
        settled(&d);
        d.verify_for_write(1).unwrap();
        let file = t.path().join(IDENTITY_FILE);
        let text = std::fs::read_to_string(&file).unwrap();
        // Rewritten in place with another disk's id: the inode's change time moved, so the
        // quick check fails and a write's check reads it again and refuses it.
        let other = DiskId::random();
        std::fs::write(&file, text.replace(&d.id.to_string(), &other.to_string())).unwrap();
        assert!(d.quick_check().is_err());
        assert!(matches!(
            d.verify_for_write(1),
            Err(DiskError::Swapped { found, .. }) if found == other
        ));
        assert_eq!(d.state().0, DiskState::Missing);
        // Put back (a new file): read again, right, and the quick check agrees once more.
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, &text).unwrap();
        assert!(d.quick_check().is_err());
        d.refresh();
        assert_eq!(d.state().0, DiskState::Active);
        settled(&d);
        // Gone (unmounted): the quick check says so without reading anything.
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(d.quick_check(), Err(DiskError::Missing { .. })));
    }

    #[test]
    fn known_space_is_measured_again_only_after_a_write_or_when_forgotten() {
        let t = tempfile::tempdir().unwrap();
        let d = LocalDisk::open(t.path(), ClusterId::random(), None, 0).unwrap();
        let first = d.known_space();
        assert!(first.total_bytes > 0);
        let seen = |d: &LocalDisk| lock(&d.space_seen).map(|(_, at)| at);
        assert_eq!(seen(&d), Some(0));
        // Bytes written: the next known_space measures again, marked with the new count.
        d.bytes_written.fetch_add(4096, Ordering::Relaxed);
        d.known_space();
        assert_eq!(seen(&d), Some(4096));
        // Forgotten (parts swept off it): measured again too.
        d.forget_space();
        assert_ne!(seen(&d), Some(4096));
        d.known_space();
        assert_eq!(seen(&d), Some(4096));
    }

    #[test]
    fn full_disk_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = LocalDisk::open(t.path(), ClusterId::random(), None, u64::MAX / 2).unwrap();
        assert!(matches!(d.verify_for_write(1), Err(DiskError::Full { .. })));
        assert_eq!(d.state().0, DiskState::Full);
    }
}
