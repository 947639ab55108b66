//! Real-binary tests of what a node leaves on disk and what the CLI writes (issue 12, "Files
//! on disk and in the CLI"): private modes (and an older installation's fixed at start),
//! secret files checked for owner and mode, `wormfs get` never writing through a link, and
//! ranges whose numbers would wrap.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::process::{free_port, Server, BIN};

/// The secret files of an embedded-default node.
const SECRETS: &[&str] = &[
    "admin-token",
    "peer-key",
    "data-key.pem",
    "cluster-secret",
    "webdav-admin.txt",
];

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// Every folder and file the node keeps data in: the data folder and what is in it, `meta/`
/// and each disk's `parts/`, recursively (the test's own logs are elsewhere).
fn tree(data: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    fn walk(dir: &Path, dirs: &mut Vec<PathBuf>, files: &mut Vec<PathBuf>) {
        dirs.push(dir.to_owned());
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let k = e.file_type().unwrap();
            if k.is_dir() {
                walk(&e.path(), dirs, files);
            } else if k.is_file() {
                files.push(e.path());
            }
        }
    }
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    walk(data, &mut dirs, &mut files);
    (dirs, files)
}

/// The folders and files that must be private after a start: the data folder, `meta/`, each
/// disk's `parts/` and what they hold, and the files at the data folder's top.
fn must_be_private(data: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (dirs, files) = tree(data);
    let keep = |p: &PathBuf| {
        p == data
            || p.starts_with(data.join("meta"))
            || p.parent() == Some(data)
            || p.components().any(|c| c.as_os_str() == "parts")
    };
    (
        dirs.into_iter().filter(keep).collect(),
        files.into_iter().filter(keep).collect(),
    )
}

fn assert_private(data: &Path) {
    let (dirs, files) = must_be_private(data);
    assert!(files.iter().any(|f| f.ends_with("meta/metadata.db")));
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains("/parts/")),
        "no part file found"
    );
    for d in &dirs {
        assert_eq!(mode(d), 0o700, "folder {}", d.display());
    }
    for f in &files {
        assert_eq!(mode(f), 0o600, "file {}", f.display());
    }
}

/// Starts `wormfs serve` in `cwd` expecting it to refuse to start: its exit status and log.
/// A node that comes up instead fails the test (and is stopped).
fn start_refused(cwd: &Path) -> String {
    let port = free_port();
    let log = cwd.join(format!("refused-{port}.log"));
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--webdav-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--mdns", "off", "--peer-listen", "127.0.0.1:0"])
        .args(["--data-listen", "127.0.0.1:0"])
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "{status:?}");
            return std::fs::read_to_string(&log).unwrap();
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the node started (or hung) instead of refusing:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After a start, the data folder, `meta/`, the parts and the database are the owner's alone;
/// an older installation's open modes are closed at the next start (logged); a secret file
/// owned by another user, or open to others, stops the start with its name.
#[test]
fn private_modes_fixed_at_start_and_secrets_checked() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("wormfs-data");
    let s = Server::start(t.path(), free_port(), &[]);
    std::fs::write(t.path().join("f.bin"), vec![7u8; 300_000]).unwrap();
    s.ok(&["put", "f.bin", "/f.bin"]);
    assert_private(&data);
    assert!(s.term().success());

    // An installation from before: everything but the secrets open to all.
    let (dirs, files) = must_be_private(&data);
    for d in &dirs {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy();
        if !SECRETS.contains(&name.as_ref()) {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    assert_eq!(mode(&data.join("meta/metadata.db")), 0o644);
    let s = Server::start(t.path(), free_port(), &[]);
    assert_private(&data);
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(log.contains("open to other users"), "{log}");
    s.ok(&["get", "/f.bin", "back.bin"]);
    assert!(std::fs::read(t.path().join("back.bin")).unwrap() == vec![7u8; 300_000]);
    assert!(s.term().success());

    // Secrets: a loose mode is refused (as sshd refuses a private key), never fixed quietly.
    for name in SECRETS {
        let p = data.join(name);
        assert!(p.exists(), "{name} was not made");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let log = start_refused(t.path());
        assert!(
            log.contains(&format!("wormfs-data/{name} is open")) && log.contains("chmod 600"),
            "{log}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // Owned by another user: refused, naming the file (needs root to give a file away).
    if rustix::process::geteuid().is_root() {
        for name in SECRETS {
            let p = data.join(name);
            std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
            let log = start_refused(t.path());
            assert!(
                log.contains(&format!("wormfs-data/{name} belongs to user 65534")),
                "{log}"
            );
            std::os::unix::fs::chown(&p, Some(0), Some(0)).unwrap();
        }
    } else {
        eprintln!("not root: the ownership half of this test is skipped");
    }
    // All back in order: the node starts.
    let s = Server::start(t.path(), free_port(), &[]);
    assert!(s.term().success());
}

/// The process's umask, as the CLI it starts inherits it.
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}

/// One raw HTTP/1.1 GET with a Range header: the status code and the body's length.
fn get_range(s: &Server, token: &str, path: &str, range: &str) -> (u16, usize) {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        c,
        "GET /api/v1/files{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Range: {range}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    let code = text[9..12].parse().unwrap();
    let body = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (code, answer.len() - body)
}

/// `wormfs get` never writes through a link (one planted at the old temporary name, or DEST
/// itself a link to a file: the link is replaced), leaves no temporary file, and gives the file
/// the mode the umask makes; a range ending at u64::MAX is the whole file (206); several ranges
/// in `--range` are refused as a usage error, with nothing written.
#[test]
fn get_never_follows_links_and_ranges_never_wrap() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(t.path(), free_port(), &[]);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(t.path().join("f.bin"), &data).unwrap();
    s.ok(&["put", "f.bin", "/f.bin"]);

    // A link planted where the temporary file used to be: never followed, left as it was.
    let dir = t.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let victim = t.path().join("victim");
    std::fs::write(&victim, b"victim").unwrap();
    let planted = dir.join(".dest.bin.wormfs-part");
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    s.ok(&["get", "/f.bin", "out/dest.bin"]);
    assert!(
        std::fs::read(&victim).unwrap() == b"victim",
        "the link planted at the old temporary name was written through"
    );
    assert_eq!(std::fs::read_link(&planted).unwrap(), victim);
    let dest = dir.join("dest.bin");
    assert!(std::fs::read(&dest).unwrap() == data);
    assert_eq!(mode(&dest), 0o666 & !umask());
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "a temporary file was left: {names:?}");

    // DEST a link to a file elsewhere: the link is replaced, its target never written.
    let target = t.path().join("target");
    std::fs::write(&target, b"target").unwrap();
    let link = dir.join("link.bin");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    s.ok(&["get", "/f.bin", "out/link.bin"]);
    assert!(
        std::fs::read(&target).unwrap() == b"target",
        "DEST's link target was written"
    );
    assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
    assert!(std::fs::read(&link).unwrap() == data);

    // The largest last position is clamped to the file: 206 with all of it.
    let token = std::fs::read_to_string(t.path().join("wormfs-data/admin-token")).unwrap();
    let token = token.trim();
    let (code, len) = get_range(&s, token, "/f.bin", &format!("bytes=0-{}", u64::MAX));
    assert_eq!((code, len), (206, data.len()));
    let (code, len) = get_range(&s, token, "/f.bin", "bytes=199990-99999999999999999999999");
    assert_eq!((code, len), (206, 10));

    // `--range` takes one range; anything else is a usage error (exit 2) and writes nothing.
    for bad in ["1-2,3-4", "5-2", "x-3", "-0", "1", "+1-2"] {
        let arg = format!("--range={bad}");
        s.fails(&["get", "/f.bin", "out/r.bin", &arg], 2, "--range");
        assert!(!dir.join("r.bin").exists(), "--range {bad} wrote a file");
    }
    s.ok(&["get", "/f.bin", "out/r.bin", "--range=-10"]);
    assert!(std::fs::read(dir.join("r.bin")).unwrap() == data[199_990..]);
    assert!(s.term().success());
}

/// A durable file of a format this version does not know (written by a newer WormFS) is a
/// clear refusal naming the file, never a guess: `node.json`, and a disk's identity file.
#[test]
fn files_of_an_unknown_format_are_refused_naming_them() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("wormfs-data");
    let s = Server::start(t.path(), free_port(), &[]);
    assert!(s.term().success());

    let node_json = data.join("node.json");
    let disk_ident = data
        .join("disks/disk-0")
        .join(wormfs_parts::disk::IDENTITY_FILE);
    for (file, from, to) in [
        (&node_json, "\"format\": 1,", "\"format\": 99,"),
        (&disk_ident, "\"format\": 1,", "\"format\": 2,"),
    ] {
        let text = std::fs::read_to_string(file).unwrap();
        let newer = text.replace(from, to);
        assert_ne!(text, newer, "{}: {text}", file.display());
        std::fs::write(file, newer).unwrap();
        let log = start_refused(t.path());
        let named = file.strip_prefix(t.path()).unwrap().display().to_string();
        assert!(
            log.contains(&named) && log.contains("refusing to guess"),
            "{log}"
        );
        std::fs::write(file, text).unwrap();
    }
    // Both back as they were: the node starts.
    let s = Server::start(t.path(), free_port(), &[]);
    assert!(s.term().success());
}
