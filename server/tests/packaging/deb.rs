//! The Debian package (packaging/debian/, built by packaging/debian/build.sh with cargo-deb):
//! lintian finds no errors and the package holds what it should; its unit's
//! `systemd-analyze security` exposure is 2.0 or lower; and it is installed, reinstalled over
//! itself, upgraded to a higher version, removed and purged, checking what remains after each
//! step, twice: in a copy of the debootstrap chroot (no systemd: the node is started by hand as
//! the user `wormfs`), and in a container of the debootstrap image with systemd as PID 1,
//! where the packaged unit starts the node under its hardening, `systemctl stop` stops it and
//! upgrades restart it.
//!
//! What the package promises (README.Debian): the conffile's edits survive upgrades; remove
//! keeps the configuration, the user and /var/lib/wormfs; purge removes the configuration and
//! keeps /var/lib/wormfs and the user; the disks are never touched.
//!
//! Every wait has a deadline; nothing asserts a duration.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::support::{
    docker, docker_any, ok, rootfs, rootfs_image, run, script, target_dir, temp_dir, unique,
    wait_for, Container,
};

/// The version cargo-deb gives the package: the crate's, revision 1.
fn base_version() -> String {
    format!("{}-1", env!("CARGO_PKG_VERSION"))
}

/// The higher version the upgrade steps install: the next patch release (0.1.0 -> 0.1.1-1).
fn upgrade_version() -> String {
    let (head, patch) = env!("CARGO_PKG_VERSION").rsplit_once('.').unwrap();
    format!("{head}.{}-1", patch.parse::<u64>().unwrap() + 1)
}

/// The highest `systemd-analyze security` exposure the unit may have (issue 18).
const MAX_EXPOSURE: f64 = 2.0;

/// The conffile and the data folder.
const CONFFILE: &str = "/etc/wormfs/wormfs.toml";
const DATA: &str = "/var/lib/wormfs";

/// The image with systemd, derived from the debootstrap image (no registry: built here),
/// tagged with the base image's id so that a new debootstrap image gets a new derived one.
const SYSTEMD_IMAGE: &str = "wormfs-test/bookworm-systemd";

// ---- the package --------------------------------------------------------------------------

/// The .deb built by packaging/debian/build.sh (which builds the release binary first):
/// the crate's version, or `version`.
fn build_deb(version: Option<&str>) -> PathBuf {
    let args: Vec<&str> = version.map_or(vec![], |v| vec!["--version", v]);
    let deb = PathBuf::from(script("packaging/debian/build.sh", &args));
    assert!(
        deb.is_file(),
        "build.sh printed {deb:?}, which is not a file"
    );
    deb
}

/// One control field of a .deb.
fn field(deb: &Path, name: &str) -> String {
    ok(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))
}

/// The .deb's files, unpacked into `dir`.
fn unpack(deb: &Path, dir: &Path) {
    ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir));
}

/// The .deb's control files (conffiles, maintainer scripts), unpacked into `dir`.
fn unpack_control(deb: &Path, dir: &Path) {
    ok(Command::new("dpkg-deb").arg("-e").arg(deb).arg(dir));
}

/// The files of a .deb as (mode string, owner, path) from `dpkg-deb -c`.
fn listing(deb: &Path) -> Vec<(String, String, String)> {
    ok(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // cargo-deb writes the owner as numbers only (0/0); dpkg-deb -b writes root/root.
            let owner = match cols[1] {
                "0/0" => "root/root",
                o => o,
            };
            (
                cols[0].to_owned(),
                owner.to_owned(),
                cols[5].trim_start_matches('.').to_owned(),
            )
        })
        .collect()
}

/// The overall exposure `systemd-analyze security --offline=true` gives a unit file.
fn exposure(unit: &Path) -> (f64, String) {
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    let number = line
        .rsplit(':')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"));
    (number, text)
}

// ---- where the package is installed -----------------------------------------------------

/// A root filesystem the package is installed in, whose shell runs scripts as root: a
/// chroot or a container.
trait Place {
    /// Runs `script` with `sh -c`, whatever it answers.
    fn sh_any(&self, script: &str) -> Output;
    /// Copies a host file to `inside`.
    fn copy_in(&self, host: &Path, inside: &str);

    /// Runs `script`, which must succeed; its stdout and stderr, trimmed.
    fn sh_all(&self, script: &str) -> String {
        let out = self.sh_any(script);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "`{script}` failed ({}):\n{text}",
            out.status
        );
        text.trim().to_owned()
    }

    /// Runs `script`, which must succeed; its stdout, trimmed.
    fn sh(&self, script: &str) -> String {
        let out = self.sh_any(script);
        assert!(
            out.status.success(),
            "`{script}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Whether `path` exists.
    fn exists(&self, path: &str) -> bool {
        self.sh_any(&format!("test -e '{path}'")).status.success()
    }

    /// The installed package's dpkg status and version, or None when dpkg knows it not.
    fn dpkg_state(&self) -> Option<String> {
        let out = self.sh_any("dpkg-query -W -f '${Status} ${Version}' wormfs 2>/dev/null");
        let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !s.is_empty() && !s.starts_with("unknown ok not-installed"))
            .then_some(s)
    }

    /// Every file under `dir`, with its size, sorted (a disk's or the data folder's contents).
    fn files(&self, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .sh(&format!("find '{dir}' -type f -printf '%p %s\\n'"))
            .lines()
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }
}

/// A copy of the debootstrap tree with /proc mounted, used as a chroot; unmounted and deleted
/// when dropped.
struct Chroot {
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Chroot {
    fn new() -> Chroot {
        let tree = rootfs();
        let dir = temp_dir();
        let root = dir.path().join("root");
        ok(Command::new("cp").arg("-a").arg(&tree).arg(&root));
        ok(Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(root.join("proc")));
        Chroot { root, _dir: dir }
    }

    /// A command run in the chroot with a clean environment (the host's is not the system's).
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("chroot");
        c.arg(&self.root)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/root")
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        c
    }
}

impl Place for Chroot {
    fn sh_any(&self, script: &str) -> Output {
        run(&mut self.command(&["/bin/sh", "-c", script]))
    }

    fn copy_in(&self, host: &Path, inside: &str) {
        std::fs::copy(host, self.root.join(inside.trim_start_matches('/'))).unwrap();
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.root.join("proc"))
            .status();
    }
}

/// A container with systemd as PID 1 (removed when dropped).
struct SystemdBox(Container);

impl Place for SystemdBox {
    fn sh_any(&self, script: &str) -> Output {
        docker_any(&[
            "exec",
            "-e",
            "DEBIAN_FRONTEND=noninteractive",
            &self.0 .0,
            "/bin/sh",
            "-c",
            script,
        ])
    }

    fn copy_in(&self, host: &Path, inside: &str) {
        docker(&[
            "cp",
            &host.display().to_string(),
            &format!("{}:{inside}", self.0 .0),
        ]);
    }
}

// ---- steps and checks both round trips share ----------------------------------------------

/// Installs (or reinstalls, or upgrades to) `deb` with `dpkg -i`; its output.
fn dpkg_install(p: &dyn Place, deb: &Path) -> String {
    let name = deb.file_name().unwrap().to_str().unwrap();
    p.copy_in(deb, &format!("/tmp/{name}"));
    p.sh_all(&format!("dpkg -i /tmp/{name} </dev/null"))
}

/// What an installed package of `version` must have put in place.
fn assert_installed(p: &dyn Place, version: &str) {
    assert_eq!(
        p.dpkg_state().as_deref(),
        Some(format!("install ok installed {version}").as_str())
    );
    let v = p.sh("wormfs --version");
    assert!(
        v.contains(env!("CARGO_PKG_VERSION")),
        "wormfs --version: {v}"
    );
    // The system user made by systemd-sysusers, with no login and its home the data folder.
    let user = p.sh("getent passwd wormfs");
    let cols: Vec<&str> = user.split(':').collect();
    let uid: u32 = cols[2].parse().unwrap();
    assert!(uid < 1000, "wormfs must be a system user: {user}");
    assert_eq!(cols[5], DATA, "{user}");
    assert!(cols[6].ends_with("nologin"), "{user}");
    assert!(p.sh("getent group wormfs").starts_with("wormfs:"));
    // The data folder, the service's alone; the configuration, readable by root and the service.
    assert_eq!(
        p.sh(&format!("stat -c '%U:%G %a' {DATA}")),
        "wormfs:wormfs 700"
    );
    assert_eq!(
        p.sh(&format!("stat -c '%U:%G %a' {CONFFILE}")),
        "root:wormfs 640"
    );
    assert!(p.exists("/usr/lib/systemd/system/wormfs.service"));
    assert!(p.exists("/usr/lib/sysusers.d/wormfs.conf"));
}

/// Edits the conffile as an administrator would: the disks, and a marker line to find later.
fn edit_conffile(p: &dyn Place, disks: &[&str], marker: &str) {
    let list = disks
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    p.sh(&format!(
        "sed -i 's#^disks = \\[\\]$#disks = [{list}]#' {CONFFILE} && echo '# {marker}' >> {CONFFILE}"
    ));
    for d in disks {
        p.sh(&format!("mkdir -p {d} && chown wormfs:wormfs {d}"));
    }
    let text = p.sh(&format!("cat {CONFFILE}"));
    assert!(text.contains(&format!("disks = [{list}]")), "{text}");
}

/// The administrator's edit is still there, and dpkg left no .dpkg-new/.dpkg-dist beside it.
fn assert_edit_kept(p: &dyn Place, marker: &str) {
    let text = p.sh(&format!("cat {CONFFILE}"));
    assert!(text.contains(marker), "the conffile lost its edit:\n{text}");
    let beside = p.sh("ls -A /etc/wormfs");
    assert_eq!(beside, "wormfs.toml", "/etc/wormfs holds: {beside}");
}

/// After `dpkg -r`: the binary and the unit are gone; the configuration (with its edit), the
/// user, the data folder and the disks remain.
fn assert_removed(
    p: &dyn Place,
    marker: &str,
    data: &[String],
    disks: &[String],
    disk_dirs: &[&str],
) {
    assert!(
        p.dpkg_state()
            .is_some_and(|s| s.starts_with("deinstall ok config-files")),
        "after dpkg -r: {:?}",
        p.dpkg_state()
    );
    assert!(!p.exists("/usr/bin/wormfs"), "the binary is still there");
    assert!(!p.exists("/usr/lib/systemd/system/wormfs.service"));
    assert_edit_kept(p, marker);
    assert!(p.sh("getent passwd wormfs").starts_with("wormfs:"));
    assert_data_kept(p, data, disks, disk_dirs);
}

/// After `dpkg -P`: the configuration is gone; the user, the data folder and the disks remain.
fn assert_purged(p: &dyn Place, data: &[String], disks: &[String], disk_dirs: &[&str]) {
    assert_eq!(
        p.dpkg_state(),
        None,
        "dpkg still knows the package after a purge"
    );
    assert!(!p.exists(CONFFILE), "the conffile survived the purge");
    assert!(!p.exists("/etc/wormfs"), "/etc/wormfs survived the purge");
    assert!(!p.exists("/usr/lib/sysusers.d/wormfs.conf"));
    assert!(p.sh("getent passwd wormfs").starts_with("wormfs:"));
    assert_data_kept(p, data, disks, disk_dirs);
}

/// The data folder still holds at least the files it held (the node's own token and secret
/// among them) and the disks exactly theirs.
fn assert_data_kept(p: &dyn Place, data: &[String], disks: &[String], disk_dirs: &[&str]) {
    let now = p.files(DATA);
    let names = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|l| l.rsplit_once(' ').unwrap().0.to_owned())
            .collect()
    };
    let now_names = names(&now);
    for f in names(data) {
        // SQLite's -wal and -shm files come and go with the node; the rest must stay.
        if !f.ends_with("-wal") && !f.ends_with("-shm") {
            assert!(
                now_names.contains(&f),
                "{f} left the data folder; it holds {now:#?}"
            );
        }
    }
    assert!(now_names.iter().any(|f| f.ends_with("/admin-token")));
    let disks_now: Vec<String> = disk_dirs.iter().flat_map(|d| p.files(d)).collect();
    assert_eq!(disks_now, disks, "the disks changed");
}

// ---- the tests ----------------------------------------------------------------------------

/// lintian finds no errors in the package (`--fail-on error`, the project's overrides only),
/// and the package holds what it should: the binary the other packages ship in /usr/bin, the
/// conffile, the unit, the sysusers file, the man page and the docs; it depends on something
/// that provides systemd-sysusers; its maintainer scripts make the user; and its example
/// configuration is one the binary accepts.
#[test]
fn lintian_finds_no_errors_and_the_package_holds_what_it_should() {
    let deb = build_deb(None);

    eprintln!("== lintian");
    let out = run(Command::new("lintian")
        .args(["--allow-root", "--fail-on", "error", "--display-info"])
        .arg(&deb));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "lintian failed ({}):\n{text}",
        out.status
    );
    assert!(
        !text.lines().any(|l| l.starts_with("E: ")),
        "lintian errors:\n{text}"
    );

    eprintln!("== control fields");
    assert_eq!(field(&deb, "Package"), "wormfs");
    assert_eq!(field(&deb, "Version"), base_version());
    assert_eq!(field(&deb, "Architecture"), "amd64");
    let depends = field(&deb, "Depends");
    assert!(
        depends.contains("systemd | systemd-standalone-sysusers"),
        "Depends: {depends}"
    );
    let description = field(&deb, "Description");
    let mut lines = description.lines();
    let summary = lines.next().unwrap_or_default();
    assert!(
        !summary.is_empty() && !summary.starts_with("[generated"),
        "short description: {summary:?}"
    );
    assert!(
        lines.count() >= 3,
        "no extended description:\n{description}"
    );

    eprintln!("== files");
    let files = listing(&deb);
    let mode_of = |path: &str| -> String {
        files
            .iter()
            .find(|(_, _, p)| p == path)
            .map(|(m, o, _)| format!("{m} {o}"))
            .unwrap_or_else(|| panic!("{path} is not in the package: {files:#?}"))
    };
    assert_eq!(mode_of("/usr/bin/wormfs"), "-rwxr-xr-x root/root");
    assert_eq!(mode_of(CONFFILE), "-rw-r--r-- root/root");
    for f in [
        "/usr/lib/systemd/system/wormfs.service",
        "/usr/lib/sysusers.d/wormfs.conf",
        "/usr/share/man/man1/wormfs.1.gz",
        "/usr/share/doc/wormfs/copyright",
        "/usr/share/doc/wormfs/changelog.Debian.gz",
        "/usr/share/doc/wormfs/README.Debian",
        "/usr/share/lintian/overrides/wormfs",
    ] {
        assert_eq!(mode_of(f), "-rw-r--r-- root/root", "{f}");
    }
    // The data folder and the disks belong to the system, not to the package's file list.
    assert!(
        !files
            .iter()
            .any(|(_, _, p)| p.starts_with("/var/") || p.starts_with("/srv/")),
        "{files:#?}"
    );

    let dir = temp_dir();
    let (tree, control) = (dir.path().join("tree"), dir.path().join("control"));
    unpack(&deb, &tree);
    unpack_control(&deb, &control);
    let shipped = std::fs::read(target_dir().join("packaging/bin/wormfs")).unwrap();
    assert!(
        std::fs::read(tree.join("usr/bin/wormfs")).unwrap() == shipped,
        "/usr/bin/wormfs is not target/packaging/bin/wormfs"
    );
    let sysusers = std::fs::read_to_string(tree.join("usr/lib/sysusers.d/wormfs.conf")).unwrap();
    assert!(
        sysusers
            .lines()
            .any(|l| l.starts_with("u wormfs ") && l.ends_with(DATA)),
        "{sysusers}"
    );

    eprintln!("== conffiles and maintainer scripts");
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), CONFFILE);
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert_eq!(
        postinst
            .lines()
            .filter(|l| l.trim_start().starts_with("systemd-sysusers "))
            .count(),
        1,
        "the user must be made exactly once:\n{postinst}"
    );
    for s in ["preinst", "postinst", "prerm", "postrm"] {
        if let Ok(text) = std::fs::read_to_string(control.join(s)) {
            assert!(
                !text.contains("#DEBHELPER#"),
                "{s} kept its marker:\n{text}"
            );
            ok(Command::new("sh").arg("-n").arg(control.join(s)));
        }
    }
    let prerm = std::fs::read_to_string(control.join("prerm")).unwrap();
    assert!(
        prerm.contains("deb-systemd-invoke stop wormfs.service"),
        "{prerm}"
    );

    eprintln!("== the example configuration is valid");
    let check = ok(Command::new(tree.join("usr/bin/wormfs"))
        .args(["config", "check"])
        .arg(tree.join(CONFFILE.trim_start_matches('/'))));
    eprintln!("{check}");

    let size = std::fs::metadata(&deb).unwrap().len();
    eprintln!(
        "package {} : {size} bytes, Installed-Size {} KiB",
        deb.display(),
        field(&deb, "Installed-Size")
    );
}

/// The packaged unit scores 2.0 or lower in `systemd-analyze security --offline=true` and
/// carries the settings the issue asks for: the user wormfs, waits for local filesystems and
/// the network, a read-only system with the data folder writable, no new privileges and no
/// capabilities.
#[test]
fn unit_exposure_is_at_most_2() {
    let deb = build_deb(None);
    let dir = temp_dir();
    unpack(&deb, dir.path());
    let unit = dir.path().join("usr/lib/systemd/system/wormfs.service");

    let (score, report) = exposure(&unit);
    eprintln!("{report}");
    eprintln!("exposure of the packaged wormfs.service: {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{report}"
    );

    let text = std::fs::read_to_string(&unit).unwrap();
    let has = |line: &str| text.lines().any(|l| l.trim() == line);
    for line in [
        "Type=exec",
        "User=wormfs",
        "Group=wormfs",
        "ExecStart=/usr/bin/wormfs serve --config /etc/wormfs/wormfs.toml",
        "StateDirectory=wormfs",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/wormfs",
        "NoNewPrivileges=true",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "SystemCallFilter=@system-service",
        "WantedBy=multi-user.target",
    ] {
        assert!(has(line), "the unit lacks {line:?}:\n{text}");
    }
    let after = text
        .lines()
        .find(|l| l.starts_with("After="))
        .unwrap_or_default();
    for t in ["local-fs.target", "network-online.target"] {
        assert!(after.contains(t), "After= lacks {t}: {after}");
    }
    assert!(
        text.lines().any(|l| l.starts_with("TimeoutStopSec=")),
        "no TimeoutStopSec"
    );
}

/// In a copy of the debootstrap chroot (a minimal bookworm without systemd): the package
/// installs over systemd-standalone-sysusers, makes its user, and its binary runs a node
/// as that user with the packaged configuration; the conffile's edit survives a reinstall of
/// the same version and an upgrade to a higher one, and a file stored before the upgrade
/// reads back after it; `dpkg -r` and `dpkg -P` leave what README.Debian says.
#[test]
fn chroot_install_upgrade_remove_purge() {
    let first = build_deb(None);
    let second = build_deb(Some(&upgrade_version()));
    let ch = Chroot::new();
    let marker = unique("edit");
    let disks = [
        "/srv/wormfs/disk1",
        "/srv/wormfs/disk2",
        "/srv/wormfs/disk3",
    ];

    eprintln!(
        "== systemd-standalone-sysusers from Debian's mirror (the minimal system's provider)"
    );
    ch.sh("apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd-standalone-sysusers >/dev/null");
    assert!(
        !ch.exists("/run/systemd/system"),
        "the chroot must have no systemd running"
    );

    eprintln!("== dpkg -i {}", base_version());
    let out = dpkg_install(&ch, &first);
    assert!(out.contains("systemctl enable --now wormfs"), "{out}");
    assert_installed(&ch, &base_version());
    // Not enabled by the installation: disks are chosen first.
    assert!(!ch.exists("/etc/systemd/system/multi-user.target.wants/wormfs.service"));

    eprintln!("== the administrator's edit: three disks");
    edit_conffile(&ch, &disks, &marker);

    eprintln!("== a node as the user wormfs with the packaged configuration; a file in");
    let content = ch.sh("cat /etc/os-release");
    {
        let node = ChrootNode::start(&ch);
        node.wait_healthy(&ch);
        node.cli(&ch, "put /etc/os-release /os-release");
        node.stop();
    }
    let data = ch.files(DATA);
    let disk_files: Vec<String> = disks.iter().flat_map(|d| ch.files(d)).collect();
    assert!(
        disks
            .iter()
            .all(|d| disk_files.iter().any(|f| f.starts_with(d))),
        "every disk should hold parts: {disk_files:#?}"
    );

    eprintln!(
        "== dpkg -i {} again (reinstall over itself)",
        base_version()
    );
    dpkg_install(&ch, &first);
    assert_installed(&ch, &base_version());
    assert_edit_kept(&ch, &marker);

    eprintln!("== dpkg -i {} (upgrade)", upgrade_version());
    dpkg_install(&ch, &second);
    assert_installed(&ch, &upgrade_version());
    assert_edit_kept(&ch, &marker);
    {
        let node = ChrootNode::start(&ch);
        node.wait_healthy(&ch);
        let back = node.cli(&ch, "get /os-release -");
        assert_eq!(
            back.trim(),
            content.trim(),
            "the file stored before the upgrade"
        );
        node.stop();
    }
    let data = data_after_runs(&ch, data);
    let disk_files = disk_files_after_runs(&ch, &disks, disk_files);

    eprintln!("== dpkg -r");
    ch.sh("dpkg -r wormfs");
    assert_removed(&ch, &marker, &data, &disk_files, &disks);

    eprintln!("== dpkg -P");
    let out = ch.sh_all("dpkg -P wormfs");
    assert!(
        out.contains("kept the data folder /var/lib/wormfs"),
        "{out}"
    );
    assert_purged(&ch, &data, &disk_files, &disks);
}

/// In a container of the debootstrap image with systemd as PID 1: the package installs; with
/// the disks added by the documented drop-in (ReadWritePaths, RequiresMountsFor) the packaged
/// unit starts the node under its hardening (user wormfs, no capabilities, no new privileges,
/// a seccomp filter, a read-only system outside the allowed paths) and `wormfs healthcheck`
/// answers healthy; `systemd-analyze verify` accepts the unit; a reinstall and an upgrade
/// restart the running node and keep the conffile's edit and the stored file; `systemctl
/// stop` stops it cleanly; `dpkg -r` stops it and `dpkg -P` leaves what README.Debian says.
#[test]
fn systemd_container_install_start_upgrade_remove_purge() {
    let first = build_deb(None);
    let second = build_deb(Some(&upgrade_version()));
    let image = systemd_image();
    // Each disk a host folder mounted in the container, as a disk is a mounted filesystem (the
    // node refuses a new disk that is a folder of the container's own filesystem).
    let host = temp_dir();
    let mut volumes = Vec::new();
    for i in 1..=4 {
        let d = host.path().join(format!("disk{i}"));
        std::fs::create_dir(&d).unwrap();
        volumes.push(format!("{}:/mnt/disk{i}", d.display()));
    }
    let bx = SystemdBox(start_systemd(&image, &volumes));
    let marker = unique("edit");
    let disks = [
        "/mnt/disk1/wormfs",
        "/mnt/disk2/wormfs",
        "/mnt/disk3/wormfs",
    ];

    eprintln!("== dpkg -i {}", base_version());
    dpkg_install(&bx, &first);
    assert_installed(&bx, &base_version());
    assert_eq!(service(&bx, "is-enabled"), "disabled");
    assert_eq!(service(&bx, "is-active"), "inactive");
    let verify = bx.sh("systemd-analyze verify --man=no wormfs.service 2>&1; echo rc=$?");
    assert!(
        verify.ends_with("rc=0") && !verify.contains("wormfs.service:"),
        "systemd-analyze verify: {verify}"
    );

    eprintln!("== the administrator's edit and drop-in: three disks under /mnt");
    edit_conffile(&bx, &disks, &marker);
    bx.sh(
        "mkdir -p /etc/systemd/system/wormfs.service.d /mnt/disk4/wormfs && \
         chown wormfs:wormfs /mnt/disk4/wormfs && \
         printf '[Unit]\\nRequiresMountsFor=/mnt/disk1 /mnt/disk2 /mnt/disk3\\n[Service]\\nReadWritePaths=/mnt/disk1/wormfs /mnt/disk2/wormfs /mnt/disk3/wormfs\\n' \
           > /etc/systemd/system/wormfs.service.d/disks.conf && systemctl daemon-reload",
    );

    eprintln!("== systemctl enable --now wormfs");
    bx.sh("systemctl enable --now wormfs");
    let pid = wait_healthy_service(&bx);
    let status = bx.sh(&format!("cat /proc/{pid}/status"));
    let line = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_default()
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(bx.sh(&format!("stat -c %U /proc/{pid}")), "wormfs");
    assert_eq!(line("NoNewPrivs:"), "1", "{status}");
    assert_eq!(line("CapEff:"), "0000000000000000", "{status}");
    assert_eq!(line("CapBnd:"), "0000000000000000", "{status}");
    assert_eq!(line("Seccomp:"), "2", "{status}");
    // The node's view of the file system: its disks are writable, another folder of its own
    // user is not (ProtectSystem=strict), nor is /etc.
    let ns = |cmd: &str| bx.sh_any(&format!("nsenter --target {pid} --mount -- {cmd}"));
    assert!(ns("touch /mnt/disk1/wormfs/.probe").status.success());
    ns("rm -f /mnt/disk1/wormfs/.probe");
    for path in ["/mnt/disk4/wormfs/.probe", "/etc/wormfs/.probe"] {
        let out = ns(&format!("touch {path}"));
        assert!(
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
            "{path} is writable in the service's namespace: {out:?}"
        );
    }
    let content = bx.sh("cat /etc/os-release");
    bx.sh("WORMFS_DATA_DIR=/var/lib/wormfs wormfs put /etc/os-release /os-release");

    eprintln!(
        "== dpkg -i {} again: the running node restarts",
        base_version()
    );
    dpkg_install(&bx, &first);
    assert_installed(&bx, &base_version());
    assert_edit_kept(&bx, &marker);
    let pid2 = wait_healthy_service(&bx);
    assert_ne!(pid2, pid, "the reinstall did not restart the node");

    eprintln!(
        "== dpkg -i {} (upgrade): restarts it again",
        upgrade_version()
    );
    dpkg_install(&bx, &second);
    assert_installed(&bx, &upgrade_version());
    assert_edit_kept(&bx, &marker);
    let pid3 = wait_healthy_service(&bx);
    assert_ne!(pid3, pid2, "the upgrade did not restart the node");
    assert_eq!(
        service(&bx, "is-enabled"),
        "enabled",
        "the upgrade disabled the unit"
    );
    // Without WORMFS_DATA_DIR, the CLI finds the service's token through the packaged
    // config's data folder.
    let back = bx.sh("cd / && wormfs get /os-release -");
    assert_eq!(
        back.trim(),
        content.trim(),
        "the file stored before the upgrade"
    );

    eprintln!("== systemctl stop wormfs");
    bx.sh("systemctl stop wormfs");
    assert_eq!(service(&bx, "is-active"), "inactive");
    assert_eq!(
        bx.sh("systemctl show -p Result --value wormfs"),
        "success",
        "the node did not stop cleanly on SIGTERM"
    );
    let data = bx.files(DATA);
    let disk_files: Vec<String> = disks.iter().flat_map(|d| bx.files(d)).collect();
    assert!(!disk_files.is_empty());

    eprintln!("== dpkg -r while the node runs: it is stopped");
    bx.sh("systemctl start wormfs");
    wait_healthy_service(&bx);
    bx.sh("dpkg -r wormfs");
    assert_ne!(
        service(&bx, "is-active"),
        "active",
        "the node still runs after dpkg -r"
    );
    let data = data_after_runs(&bx, data);
    let disk_files = disk_files_after_runs(&bx, &disks, disk_files);
    assert_removed(&bx, &marker, &data, &disk_files, &disks);
    assert!(bx.exists("/etc/systemd/system/wormfs.service.d/disks.conf"));

    eprintln!("== dpkg -P");
    let out = bx.sh_all("dpkg -P wormfs");
    assert!(
        out.contains("kept the data folder /var/lib/wormfs"),
        "{out}"
    );
    assert_purged(&bx, &data, &disk_files, &disks);
    // The administrator's drop-in is theirs, not the package's.
    assert!(bx.exists("/etc/systemd/system/wormfs.service.d/disks.conf"));
}

// ---- the node in the chroot -----------------------------------------------------------------

/// `wormfs serve` in the chroot as the user wormfs, with the packaged configuration and only
/// the listen addresses (free ports on 127.0.0.1) and mDNS (off: the chroot shares the host's
/// network) given as flags; killed if still running when dropped.
struct ChrootNode {
    child: Option<Child>,
    api: String,
    log: PathBuf,
}

impl ChrootNode {
    fn start(ch: &Chroot) -> ChrootNode {
        let api = format!("127.0.0.1:{}", free_port());
        let webdav = format!("127.0.0.1:{}", free_port());
        let log = ch.root.join(format!("tmp/{}.log", unique("node")));
        let child = ch
            .command(&[
                "setpriv",
                "--reuid=wormfs",
                "--regid=wormfs",
                "--init-groups",
                "/usr/bin/wormfs",
                "serve",
                "--config",
                CONFFILE,
                "--listen",
                &api,
                "--webdav-listen",
                &webdav,
                "--peer-listen",
                "127.0.0.1:0",
                "--data-listen",
                "127.0.0.1:0",
                "--no-mdns",
            ])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .expect("start wormfs serve in the chroot");
        ChrootNode {
            child: Some(child),
            api,
            log,
        }
    }

    /// Waits until `wormfs healthcheck` answers 0.
    fn wait_healthy(&self, ch: &Chroot) {
        let mut last = String::new();
        let healthy = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(120, "the node in the chroot to be healthy", || {
                let out = ch.sh_any(&format!(
                    "wormfs healthcheck --node {} --timeout 3",
                    self.api
                ));
                last = String::from_utf8_lossy(&out.stdout).into_owned();
                out.status.success().then_some(())
            })
        }));
        if healthy.is_err() {
            panic!(
                "the node never answered healthy (last: {last}); its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    /// A `wormfs` command on this node as root, with the token from the data folder.
    fn cli(&self, ch: &Chroot, args: &str) -> String {
        ch.sh(&format!(
            "WORMFS_DATA_DIR={DATA} wormfs --node {} {args}",
            self.api
        ))
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        ok(Command::new("kill").args(["-TERM", &child.id().to_string()]));
        let status = wait_for(60, "the node to exit after SIGTERM", || {
            child.try_wait().unwrap()
        });
        assert!(
            status.success(),
            "the node exited {status} after SIGTERM; its log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for ChrootNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if std::thread::panicking() {
                eprintln!(
                    "--- the node's log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A TCP port free on 127.0.0.1 now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The data folder's files after the node ran again (it keeps writing its metadata): the
/// files it held before must still be there; the new listing is what remove and purge keep.
fn data_after_runs(p: &dyn Place, before: Vec<String>) -> Vec<String> {
    let now = p.files(DATA);
    let names: Vec<&str> = now.iter().map(|l| l.rsplit_once(' ').unwrap().0).collect();
    for l in &before {
        let f = l.rsplit_once(' ').unwrap().0;
        if !f.ends_with("-wal") && !f.ends_with("-shm") {
            assert!(names.contains(&f), "{f} left the data folder: {now:#?}");
        }
    }
    now
}

/// The disks' files after the node ran again: a superset of those before.
fn disk_files_after_runs(p: &dyn Place, disks: &[&str], before: Vec<String>) -> Vec<String> {
    let now: Vec<String> = disks.iter().flat_map(|d| p.files(d)).collect();
    let names: Vec<&str> = now.iter().map(|l| l.rsplit_once(' ').unwrap().0).collect();
    for l in &before {
        let f = l.rsplit_once(' ').unwrap().0;
        assert!(names.contains(&f), "{f} left the disks: {now:#?}");
    }
    now
}

// ---- systemd in a container -------------------------------------------------------------------

/// The debootstrap image with systemd added (apt inside a build from the local image: no
/// pull), built once.
fn systemd_image() -> String {
    let base = rootfs_image();
    let id = docker(&["image", "inspect", "-f", "{{.Id}}", &base]);
    let id = id.trim_start_matches("sha256:");
    let tag = format!("{SYSTEMD_IMAGE}:{}", &id[..12.min(id.len())]);
    if docker_any(&["image", "inspect", &tag]).status.success() {
        return tag;
    }
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {base}\n\
             ENV DEBIAN_FRONTEND=noninteractive\n\
             RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd systemd-sysv >/dev/null \
                 && apt-get clean && rm -rf /var/lib/apt/lists/*\n\
             STOPSIGNAL SIGRTMIN+3\n\
             CMD [\"/sbin/init\"]\n"
        ),
    )
    .unwrap();
    ok(Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(dir.path())
        .env("DOCKER_BUILDKIT", "0"));
    tag
}

/// Linux capability names by number, as Docker spells them.
#[rustfmt::skip]
const CAPS: [&str; 41] = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN",
    "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE",
    "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
    "PERFMON", "BPF", "CHECKPOINT_RESTORE",
];

/// The capabilities this process's bounding set lacks (a VM or container host may withhold
/// some: this one withholds CAP_SYS_RESOURCE, which makes `docker run --privileged` fail with
/// "unable to apply caps: operation not permitted").
fn missing_caps() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim();
    let bnd = u64::from_str_radix(hex, 16).unwrap();
    CAPS.iter()
        .enumerate()
        .filter(|(i, _)| bnd & (1u64 << i) == 0)
        .map(|(_, n)| *n)
        .collect()
}

/// A container running systemd as PID 1, booted, with `volumes` (`-v` arguments). cgroup v1 hybrid here: the host's cgroup
/// tree read-only, /run and /run/lock as tmpfs. Every capability the host has, instead of
/// --privileged (see `missing_caps`), and no seccomp or AppArmor profile of Docker's, so that
/// systemd can set up the unit's own sandbox.
fn start_systemd(image: &str, volumes: &[String]) -> Container {
    let name = unique("deb-systemd");
    let mut args: Vec<String> = format!(
        "run -d --name {name} --hostname wormfs-deb --cap-add ALL \
         --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
         -v /sys/fs/cgroup:/sys/fs/cgroup:ro --tmpfs /run --tmpfs /run/lock"
    )
    .split_whitespace()
    .map(str::to_owned)
    .collect();
    for v in volumes {
        args.push("-v".into());
        args.push(v.clone());
    }
    for c in missing_caps() {
        args.push("--cap-drop".into());
        args.push(c.into());
    }
    args.push(image.into());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&a);
    let c = Container(name);
    wait_for(120, "systemd in the container to finish booting", || {
        let out = docker_any(&["exec", &c.0, "systemctl", "is-system-running"]);
        let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        matches!(state.as_str(), "running" | "degraded").then_some(())
    });
    c
}

/// `systemctl VERB wormfs`'s answer (is-active, is-enabled), whatever its exit code.
fn service(p: &dyn Place, verb: &str) -> String {
    let out = p.sh_any(&format!("systemctl {verb} wormfs"));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits until the service runs and `wormfs healthcheck` answers 0; its main PID.
fn wait_healthy_service(p: &dyn Place) -> u32 {
    let mut last = String::new();
    let pid = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(120, "wormfs.service to be healthy", || {
            let out = p.sh_any("wormfs healthcheck --timeout 3");
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            if !out.status.success() {
                return None;
            }
            let pid = p.sh("systemctl show -p MainPID --value wormfs");
            pid.parse::<u32>().ok().filter(|&p| p != 0)
        })
    }));
    pid.unwrap_or_else(|_| {
        panic!(
            "wormfs.service never answered healthy (last: {last}):\n{}\n{}",
            String::from_utf8_lossy(&p.sh_any("systemctl status --no-pager wormfs").stdout),
            String::from_utf8_lossy(&p.sh_any("journalctl -u wormfs --no-pager -n 60").stdout)
        )
    })
}
