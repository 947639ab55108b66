//! Checks a node makes before it writes anything, for the mistakes a NAS or a container makes
//! easy:
//!
//! - a folder it must write (the data folder, a disk) that the user it runs as cannot write:
//!   an error naming the path, its owner, the user and the fix (`chown`, or the run-as user);
//! - a new disk (no identity file yet) that is not a mounted filesystem but the bare folder a
//!   filesystem should be mounted on: on a container's own layer (a root filesystem of type
//!   overlay: gone with the container); on a root filesystem in RAM (Unraid before the array
//!   starts); or under a mount point `/etc/fstab` lists that nothing is mounted on. Parts
//!   written there would be lost.
//!
//! A disk that has an identity file is past these checks: if its filesystem goes away later,
//! the identity goes with it and the disk is opened as missing (`wormfs_parts::disk`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use wormfs_config::Config;

/// Runs every check; the first failure is the error (with the fix in its text).
pub fn check(cfg: &Config) -> anyhow::Result<()> {
    check_writable(&cfg.node.data_dir, "the data folder (node.data_dir)")?;
    let mounts = Mounts::read();
    for disk in &cfg.storage.disks {
        check_disk_with(disk, &mounts)?;
    }
    Ok(())
}

/// The checks of one disk (also for `wormfs disk add`): writable by this user, and if it is
/// new, not the bare mount point of an unmounted filesystem.
pub fn check_disk(disk: &Path) -> anyhow::Result<()> {
    check_disk_with(disk, &Mounts::read())
}

fn check_disk_with(disk: &Path, mounts: &Mounts) -> anyhow::Result<()> {
    check_writable(disk, "the disk")?;
    if !disk.join(wormfs_parts::disk::IDENTITY_FILE).exists() {
        if let Some(why) = mounts.unmounted(disk) {
            anyhow::bail!("disk {}: {why}", disk.display());
        }
    }
    Ok(())
}

/// A disk's failure domain: its filesystem's device, except for a ZFS dataset, whose domain is
/// its pool (datasets of one pool fail together: they share the pool's drives).
pub fn failure_domain(root: &Path, fs_dev: u64) -> u64 {
    Mounts::read()
        .zfs_pool(root)
        .map_or(fs_dev, |pool| pool_domain(&pool))
}

/// The disks that are datasets of one ZFS pool, by pool (pools holding two or more).
pub fn shared_zfs_pools(disks: &[PathBuf]) -> Vec<(String, Vec<PathBuf>)> {
    let mounts = Mounts::read();
    let mut pools: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    for d in disks {
        if let Some(pool) = mounts.zfs_pool(d) {
            pools.entry(pool).or_default().push(d.clone());
        }
    }
    pools.into_iter().filter(|(_, m)| m.len() > 1).collect()
}

/// A pool's domain number: far above any device number (a `dev_t` keeps its high bits clear),
/// the same on every machine for the same pool name (pools of different machines are still
/// apart: placement counts domains per machine).
fn pool_domain(pool: &str) -> u64 {
    let h = blake3::hash(format!("zfs-pool:{pool}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b) | (1 << 63)
}

/// Whether this process runs in a container (Docker's and Podman's marker files).
pub fn in_container() -> bool {
    Path::new("/.dockerenv").exists() || Path::new("/run/.containerenv").exists()
}

/// `path` (or, if it does not exist yet, the folder it will be made in) must be writable by
/// this process's user.
fn check_writable(path: &Path, what: &str) -> anyhow::Result<()> {
    let mut at = path;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => return Ok(()),
        }
    }
    let access = rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK;
    match rustix::fs::access(at, access) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM) => {
            let meta = std::fs::metadata(at)?;
            let uid = rustix::process::getuid().as_raw();
            let gid = rustix::process::getgid().as_raw();
            let made_in = if at == path {
                String::new()
            } else {
                format!(
                    " (it does not exist yet, and would be made in {})",
                    at.display()
                )
            };
            let host = if in_container() {
                " on the host, on the folder mounted there"
            } else {
                ""
            };
            anyhow::bail!(
                "{what} {}{made_in}: {} belongs to uid {} (gid {}) and WormFS runs as uid {uid} \
                 (gid {gid}), which cannot write it. Fix: `chown -R {uid}:{gid} {}`{host}, or \
                 run WormFS as the folder's owner (the container's --user, TrueNAS's run-as \
                 user, Unraid's --user 99:100, the service's User=)",
                path.display(),
                at.display(),
                meta.uid(),
                meta.gid(),
                at.display(),
            )
        }
        // A read-only filesystem and the like: the write itself will say.
        Err(_) => Ok(()),
    }
}

/// One line of `/proc/self/mountinfo`: where, and what kind of filesystem.
#[derive(Debug, Clone)]
struct Mount {
    point: PathBuf,
    fstype: String,
    source: String,
}

/// The mount table and the mount points `/etc/fstab` promises.
#[derive(Debug, Default)]
struct Mounts {
    mounted: Vec<Mount>,
    fstab: Vec<PathBuf>,
}

impl Mounts {
    fn read() -> Mounts {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let fstab = std::fs::read_to_string("/etc/fstab").unwrap_or_default();
        Mounts::parse(&mountinfo, &fstab)
    }

    fn parse(mountinfo: &str, fstab: &str) -> Mounts {
        let mounted = mountinfo
            .lines()
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let point = left.split(' ').nth(4)?;
                let mut right = right.split(' ');
                let fstype = right.next()?;
                let source = right.next().unwrap_or("");
                Some(Mount {
                    point: PathBuf::from(wormfs_parts::disk::unescape_mount(point)),
                    fstype: fstype.to_owned(),
                    source: wormfs_parts::disk::unescape_mount(source),
                })
            })
            .collect();
        let fstab = fstab
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
                let options = f.next().unwrap_or("");
                (point.starts_with('/')
                    && point != "/"
                    && fstype != "swap"
                    && !options.split(',').any(|o| o == "noauto"))
                .then(|| PathBuf::from(wormfs_parts::disk::unescape_mount(point)))
            })
            .collect();
        Mounts { mounted, fstab }
    }

    /// The mount `path` lives on: the longest mount point that holds it.
    fn holding(&self, path: &Path) -> Option<&Mount> {
        self.mounted
            .iter()
            .filter(|m| path.starts_with(&m.point))
            .max_by_key(|m| m.point.components().count())
    }

    /// The ZFS pool `path` lives on, if it is on a ZFS dataset (`tank/media` is pool `tank`).
    fn zfs_pool(&self, path: &Path) -> Option<String> {
        let on = self.holding(&real_path(path))?;
        (on.fstype == "zfs").then(|| on.source.split('/').next().unwrap_or(&on.source).to_owned())
    }

    /// Why a new disk at `disk` is not a mounted filesystem, if it is not.
    fn unmounted(&self, disk: &Path) -> Option<String> {
        let path = real_path(disk);
        let on = self.holding(&path)?;
        if on.point != Path::new("/") {
            // On its own filesystem: unless fstab promises another one in between.
            return self.fstab_gap(&path, &on.point);
        }
        if matches!(
            on.fstype.as_str(),
            "overlay" | "fuse.fuse-overlayfs" | "aufs"
        ) {
            return Some(format!(
                "it is not a mounted volume but a folder of the container's own filesystem, \
                 which goes away with the container. Mount a disk's folder there (docker run \
                 -v /mnt/diskN/wormfs:{0}, a compose `volumes:` line, a TrueNAS host path, an \
                 Unraid Path), or take it out of storage.disks",
                disk.display()
            ));
        }
        if matches!(on.fstype.as_str(), "tmpfs" | "ramfs" | "rootfs") {
            return Some(format!(
                "it is on the root filesystem, which is in memory ({}): the disk that should \
                 be mounted there is not (on Unraid, /mnt/diskN exists before the array is \
                 started). Start the array or mount the disk, then start WormFS",
                on.fstype
            ));
        }
        self.fstab_gap(&path, &on.point)
    }

    /// A mount point `/etc/fstab` lists between `mounted_at` and `path` that has nothing on it.
    fn fstab_gap(&self, path: &Path, mounted_at: &Path) -> Option<String> {
        let point = self
            .fstab
            .iter()
            .filter(|p| path.starts_with(p) && p.as_path() != mounted_at)
            .find(|p| p.starts_with(mounted_at))?;
        Some(format!(
            "/etc/fstab mounts a filesystem at {0}, and none is mounted there now: the folder \
             is the bare mount point. Mount it first (`mount {0}`; with systemd, \
             RequiresMountsFor={0} in the service), then start WormFS",
            point.display()
        ))
    }
}

/// The path with symlinks resolved as far as it exists (the rest appended as written).
fn real_path(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = path.to_path_buf();
    loop {
        if let Ok(real) = at.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (at.file_name().map(ToOwned::to_owned), at.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                at = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 22 0:26 / /proc rw - proc proc rw
40 22 8:17 / /mnt/disk1 rw,relatime shared:5 - xfs /dev/sdb1 rw
41 22 8:33 / /mnt/my\\040disk rw,relatime shared:6 - ext4 /dev/sdc1 rw
";

    #[test]
    fn a_disk_on_its_own_filesystem_passes() {
        let m = Mounts::parse(HOST, "");
        assert_eq!(m.unmounted(Path::new("/mnt/disk1/wormfs")), None);
        assert_eq!(m.unmounted(Path::new("/mnt/my disk/wormfs")), None);
        // A folder on an ordinary root filesystem (a test bench, a single-disk machine) too.
        assert_eq!(m.unmounted(Path::new("/srv/wormfs/disk-a")), None);
    }

    #[test]
    fn a_bare_mount_point_that_fstab_promises_is_refused() {
        let fstab = "# comment\nUUID=1 / ext4 defaults 0 1\nUUID=2 /mnt/disk2 xfs defaults 0 2\n\
                     UUID=3 /mnt/disk3 xfs noauto 0 2\n/dev/sdz none swap sw 0 0\n";
        let m = Mounts::parse(HOST, fstab);
        let why = m
            .unmounted(Path::new("/mnt/disk2/wormfs"))
            .expect("refused");
        assert!(
            why.contains("/etc/fstab mounts a filesystem at /mnt/disk2"),
            "{why}"
        );
        assert!(why.contains("RequiresMountsFor=/mnt/disk2"), "{why}");
        // noauto is the user's to mount; a mounted one passes.
        assert_eq!(m.unmounted(Path::new("/mnt/disk3/wormfs")), None);
        assert_eq!(m.unmounted(Path::new("/mnt/disk1/wormfs")), None);
    }

    #[test]
    fn in_a_container_a_disk_must_be_a_volume() {
        let info = "\
100 90 0:50 / / rw - overlay overlay rw
101 100 254:1 /var/lib/docker/volumes/d1/_data /disks/disk1 rw - ext4 /dev/vda1 rw
";
        let m = Mounts::parse(info, "");
        assert_eq!(m.unmounted(Path::new("/disks/disk1")), None);
        let why = m.unmounted(Path::new("/disks/disk2")).expect("refused");
        assert!(why.contains("container's own filesystem"), "{why}");
    }

    #[test]
    fn datasets_of_one_zfs_pool_are_one_pool() {
        let info = "\
22 1 254:1 / / rw - ext4 /dev/vda1 rw
50 22 0:60 / /mnt/tank/films rw - zfs tank/films rw,xattr
51 22 0:61 / /mnt/tank/photos rw - zfs tank/photos rw,xattr
52 22 0:62 / /mnt/other rw - zfs other rw,xattr
53 22 8:17 / /mnt/disk1 rw - xfs /dev/sdb1 rw
";
        let m = Mounts::parse(info, "");
        assert_eq!(
            m.zfs_pool(Path::new("/mnt/tank/films/wormfs")).as_deref(),
            Some("tank")
        );
        assert_eq!(
            m.zfs_pool(Path::new("/mnt/tank/photos/wormfs")).as_deref(),
            Some("tank")
        );
        assert_eq!(
            m.zfs_pool(Path::new("/mnt/other/w")).as_deref(),
            Some("other")
        );
        assert_eq!(m.zfs_pool(Path::new("/mnt/disk1/wormfs")), None);
        assert_ne!(pool_domain("tank"), pool_domain("other"));
        assert!(pool_domain("tank") > u64::from(u32::MAX));
    }

    #[test]
    fn a_root_filesystem_in_memory_means_the_disk_is_not_mounted() {
        let info = "1 0 0:1 / / rw - rootfs rootfs rw\n";
        let m = Mounts::parse(info, "");
        let why = m
            .unmounted(Path::new("/mnt/disk1/wormfs"))
            .expect("refused");
        assert!(why.contains("in memory (rootfs)"), "{why}");
    }
}
