//! What the platforms WormFS installs on need from the binary (docs/install.md): it stops
//! promptly on SIGTERM even with uploads in flight (the platform unmounts the disks next), it
//! names the folder, the owner, the user and the fix when it may not write a folder, and it
//! refuses a new disk that is the bare mount point of a filesystem that is not mounted.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common::process::{free_port, wait_for, webdav_port, Server, BIN};

/// A `curl` upload held slow (`--limit-rate`), so it is still in flight when the node is told to
/// stop.
fn slow_upload(file: &Path, url: &str, auth: &[&str]) -> Child {
    Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--limit-rate", "100k", "-T"])
        .arg(file)
        .args(auth)
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl runs")
}

/// A node's listeners (the API on `port`, the rest on free ports), mDNS off.
fn node_args(port: u16) -> Vec<String> {
    let on = |p: u16| format!("127.0.0.1:{p}");
    [
        ("--mdns", "off".to_owned()),
        ("--listen", on(port)),
        ("--webdav-listen", on(free_port())),
        ("--peer-listen", on(free_port())),
        ("--data-listen", on(free_port())),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect()
}

/// Gives `path` to uid and gid 568, TrueNAS's apps user.
fn give_to_568(path: &Path) {
    rustix::fs::chown(
        path,
        Some(rustix::fs::Uid::from_raw(568)),
        Some(rustix::fs::Gid::from_raw(568)),
    )
    .unwrap();
}

/// Nothing was written in `dir` (a refusal comes before any write).
fn assert_empty(dir: &Path) {
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0, "it wrote first");
}

/// SIGTERM with an API upload and a WebDAV upload in flight (each would take minutes): the node
/// stops cleanly (exit 0, its shutdown logged) without waiting for them, and nothing of either
/// upload is visible after a restart; the node then works as before.
#[test]
fn sigterm_with_uploads_in_flight_stops_promptly_and_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(t.path(), port, &["--anonymous", "rw"]);
    let big = t.path().join("big.bin");
    std::fs::write(&big, vec![5u8; 32 << 20]).unwrap();
    let token = std::fs::read_to_string(t.path().join("wormfs-data/admin-token")).unwrap();
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let mut api = slow_upload(
        &big,
        &format!("http://127.0.0.1:{port}/api/v1/files/api-upload.bin"),
        &["-H", &bearer],
    );
    let mut dav = slow_upload(
        &big,
        &format!("http://127.0.0.1:{}/dav-upload.bin", webdav_port(port)),
        &[],
    );
    // Both are being stored (their intents are open) before the signal.
    wait_for(60, "two uploads in progress", || {
        (s.json(&["status"])["ingests_in_progress"].as_u64() >= Some(2)).then_some(())
    });
    let log = s.log.clone();
    let status = s.term();
    assert!(status.success(), "exit after SIGTERM: {status}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("shutdown complete"), "{text}");
    // The clients see their uploads fail (they were not finished), not a hang.
    for c in [&mut api, &mut dav] {
        let st = wait_for(60, "curl to end", || c.try_wait().unwrap());
        assert!(!st.success(), "an unfinished upload must not look stored");
    }
    let s = Server::start(t.path(), port, &["--anonymous", "rw"]);
    let names = s.ok(&["ls", "/"]);
    assert!(
        !names.contains("api-upload.bin") && !names.contains("dav-upload.bin"),
        "half an upload is visible: {names}"
    );
    std::fs::write(t.path().join("small"), b"after the restart").unwrap();
    s.ok(&["put", "small", "/small"]);
    s.ok(&["get", "/small", "back"]);
    assert_eq!(
        std::fs::read(t.path().join("back")).unwrap(),
        b"after the restart"
    );
    assert!(s.term().success());
}

/// `wormfs serve` run as uid 568 (TrueNAS's apps user) on folders root owns: it refuses before
/// writing anything, naming the folder, its owner, the user it runs as and the fix; once the
/// folders are chowned, it starts.
#[test]
fn a_folder_the_user_cannot_write_is_named_with_owner_user_and_fix() {
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data = t.path().join("data");
    let disk = t.path().join("disk1");
    std::fs::create_dir(&data).unwrap();
    std::fs::create_dir(&disk).unwrap();
    let port = free_port();
    let log = t.path().join("serve.log");
    let serve_as_568 = || {
        Command::new("setpriv")
            .args(["--reuid=568", "--regid=568", "--clear-groups", BIN, "serve"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--disk")
            .arg(&disk)
            .args(node_args(port))
            .current_dir(t.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("setpriv runs (util-linux)")
    };
    let refused = |mut child: Child| {
        let st = wait_for(60, "the node to refuse", || child.try_wait().unwrap());
        assert!(!st.success(), "started on a folder it cannot write");
        std::fs::read_to_string(&log).unwrap()
    };
    // The data folder first.
    let err = refused(serve_as_568());
    for says in [
        &format!("the data folder (node.data_dir) {}", data.display()),
        "belongs to uid 0 (gid 0)",
        "runs as uid 568 (gid 568)",
        &format!("chown -R 568:568 {}", data.display()),
        "run-as",
    ] {
        assert!(err.contains(says), "missing {says:?} in: {err}");
    }
    assert_empty(&data);
    // Then the disk, once the data folder is the user's.
    give_to_568(&data);
    let err = refused(serve_as_568());
    assert!(
        err.contains(&format!("the disk {}", disk.display()))
            && err.contains(&format!("chown -R 568:568 {}", disk.display())),
        "{err}"
    );
    assert_empty(&data);
    // Chowned: it starts and answers its health check.
    give_to_568(&disk);
    let mut child = serve_as_568();
    let node = format!("127.0.0.1:{port}");
    let healthy = wait_for(60, "the node as uid 568 to answer", || {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the node exited: {st}");
        }
        let o = Command::new(BIN)
            .args(["--node", &node, "healthcheck", "--timeout", "2"])
            .output()
            .unwrap();
        o.status.success().then_some(o)
    });
    assert!(String::from_utf8_lossy(&healthy.stdout).starts_with("healthy"));
    let _ = child.kill();
    let _ = child.wait();
}

/// A disk folder under a mount point that `/etc/fstab` lists but nothing is mounted on (the
/// bare folder on the root filesystem) is refused before anything is written there; with the
/// filesystem mounted, the same configuration starts. Run in a private mount namespace with a
/// test fstab bound over /etc/fstab.
#[test]
fn a_disk_under_an_unmounted_fstab_mount_point_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("mnt-disk1");
    let disk = mnt.join("wormfs");
    std::fs::create_dir_all(&mnt).unwrap();
    let fstab = t.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# a test fstab\nUUID=0000 / ext4 defaults 0 1\nLABEL=disk1 {} xfs defaults 0 2\n",
            mnt.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let log = t.path().join("serve.log");
    let run = |mount_it: bool| {
        let mount = if mount_it {
            format!("mount -t tmpfs -o size=64m disk1 '{}'\n", mnt.display())
        } else {
            String::new()
        };
        let script = format!(
            "set -e\nmount --bind '{}' /etc/fstab\n{mount}exec \"$0\" \"$@\"\n",
            fstab.display()
        );
        Command::new("unshare")
            .args([
                "--user",
                "--map-root-user",
                "--mount",
                "sh",
                "-c",
                &script,
                BIN,
            ])
            .args(["serve", "--data-dir", "data", "--disk"])
            .arg(&disk)
            .args(node_args(port))
            .current_dir(t.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("unshare runs (util-linux)")
    };
    let mut child = run(false);
    let st = wait_for(60, "the node to refuse", || child.try_wait().unwrap());
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(!st.success(), "started on an unmounted disk: {err}");
    assert!(
        err.contains(&format!("disk {}", disk.display()))
            && err.contains(&format!(
                "/etc/fstab mounts a filesystem at {}",
                mnt.display()
            ))
            && err.contains("RequiresMountsFor="),
        "{err}"
    );
    assert!(!disk.exists(), "it wrote on the bare mount point");
    // Mounted (inside the namespace), the same command starts.
    let mut child = run(true);
    let node = format!("127.0.0.1:{port}");
    wait_for(60, "the node with its disk mounted to answer", || {
        if let Some(st) = child.try_wait().unwrap() {
            let err = std::fs::read_to_string(&log).unwrap();
            panic!("the node exited ({st}): {err}");
        }
        Command::new(BIN)
            .args(["--node", &node, "healthcheck", "--timeout", "2"])
            .status()
            .unwrap()
            .success()
            .then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !disk.exists(),
        "the tmpfs was the node's own, in its namespace"
    );
}
