//! Real WebDAV clients against a live node: the litmus compliance suite, rclone with awkward
//! names, cadaver, and ffprobe/ffmpeg seeking into a large video (which must read far less
//! than the whole file, also when the player abandons connections).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::dav::{node, Dav};
use crate::common::process::Server;

fn run(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (installed by tests/install-test-tools.sh)"));
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn user_and_password(dav: &Dav) -> (String, String) {
    let (u, p) = dav.login.as_deref().unwrap().split_once(':').unwrap();
    (u.to_owned(), p.to_owned())
}

/// Bytes the node has read from its disks since it started.
fn disk_bytes_read(s: &Server) -> u64 {
    s.json(&["disks"])["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["bytes_read"].as_u64().unwrap())
        .sum()
}

/// Waits until the disk reads have not moved for a while (read-ahead settles), returning the total.
pub(crate) fn settled_bytes_read(s: &Server) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = disk_bytes_read(s);
    let mut still_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = disk_bytes_read(s);
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() > Duration::from_secs(1) {
            return now;
        }
        assert!(Instant::now() < deadline, "disk reads never settled");
    }
}

#[test]
fn litmus_passes_every_test_without_warnings() {
    let (t, s, dav) = node();
    s.ok(&["mkdir", "/litmus"]);
    let (user, pw) = user_and_password(&dav);
    let o = Command::new("litmus")
        .arg(format!("{}/litmus/", dav.base))
        .args([&user, &pw])
        .env("TESTS", "basic copymove props locks http")
        .current_dir(t.path())
        .output()
        .expect("litmus runs (installed by tests/install-test-tools.sh)");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let debug = std::fs::read_to_string(t.path().join("debug.log")).unwrap_or_default();
    let report = || format!("{out}\n--- debug.log (tail) ---\n{}", tail(&debug, 4000));
    assert!(o.status.success(), "litmus failed:\n{}", report());
    for suite in ["basic", "copymove", "props", "locks", "http"] {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("summary for `{suite}'")))
            .unwrap_or_else(|| panic!("no summary for {suite}:\n{}", report()));
        assert!(
            line.contains(" 0 failed") && line.ends_with("100.0%"),
            "{line}\n{}",
            report()
        );
    }
    assert!(
        !out.to_lowercase().contains("warning"),
        "litmus warned:\n{}",
        report()
    );
    s.term();
}

fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// Names clients and users really produce, each a trap for some encoder.
const NAMES: &[&str] = &[
    "plain.txt",
    "with space.txt",
    "100% sure.txt",
    "#hash start.txt",
    "plus+and&semi;.txt",
    "quote's \"double\".txt",
    "[brackets] (round) {curly}.txt",
    "Café Müller.txt",
    "日本語の名前.txt",
    "emoji 🎬.txt",
    "sub dir/nested ü.bin",
    "sub dir/deeper %41/#x.bin",
];

fn rclone(t: &Path, dav: &Dav) -> Command {
    let (user, pw) = user_and_password(dav);
    let obscured = run(Command::new("rclone").args(["obscure", &pw])).stdout;
    let mut c = Command::new("rclone");
    c.env("RCLONE_CONFIG", t.join("rclone.conf"))
        .env("RCLONE_CONFIG_NODE_TYPE", "webdav")
        .env("RCLONE_CONFIG_NODE_URL", &dav.base)
        .env("RCLONE_CONFIG_NODE_VENDOR", "other")
        .env("RCLONE_CONFIG_NODE_USER", user)
        .env(
            "RCLONE_CONFIG_NODE_PASS",
            String::from_utf8(obscured).unwrap().trim(),
        )
        .args(["--low-level-retries", "1", "--retries", "1"]);
    c
}

#[test]
fn rclone_copies_awkward_names_up_and_down() {
    let (t, s, dav) = node();
    let up = t.path().join("up");
    for (i, name) in NAMES.iter().enumerate() {
        let p = up.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let body: Vec<u8> = (0..(1000 + i * 70_001))
            .map(|j| (j * 31 + i) as u8)
            .collect();
        std::fs::write(p, body).unwrap();
    }
    run(rclone(t.path(), &dav).args(["copy", up.to_str().unwrap(), "node:/Up"]));
    let listed = run(rclone(t.path(), &dav).args(["lsf", "-R", "--files-only", "node:/Up"])).stdout;
    let listed: BTreeSet<String> = String::from_utf8(listed)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = NAMES.iter().map(|n| n.to_string()).collect();
    assert_eq!(listed, expected);
    // Every byte compared, not only sizes.
    run(rclone(t.path(), &dav).args(["check", "--download", up.to_str().unwrap(), "node:/Up"]));
    let down = t.path().join("down");
    run(rclone(t.path(), &dav).args(["copy", "node:/Up", down.to_str().unwrap()]));
    for name in NAMES {
        assert!(
            std::fs::read(up.join(name)).unwrap() == std::fs::read(down.join(name)).unwrap(),
            "{name} came back different"
        );
    }
    // The tree holds the same files with the same hashes.
    let stat = s.json(&["stat", "/Up/sub dir/deeper %41/#x.bin"]);
    let local = blake3::hash(&std::fs::read(up.join("sub dir/deeper %41/#x.bin")).unwrap());
    assert_eq!(
        stat["blake3"].as_str(),
        Some(local.to_hex().as_str()),
        "{stat}"
    );

    // A name written in NFD is stored, listed and read back in NFC.
    let nfd = t.path().join("nfd");
    std::fs::create_dir_all(&nfd).unwrap();
    std::fs::write(nfd.join("e\u{301}te\u{301}.txt"), b"summer").unwrap();
    run(rclone(t.path(), &dav).args([
        "copy",
        "--no-unicode-normalization",
        nfd.to_str().unwrap(),
        "node:/Nfd",
    ]));
    let listed = run(rclone(t.path(), &dav).args(["lsf", "node:/Nfd"])).stdout;
    assert_eq!(String::from_utf8(listed).unwrap(), "\u{e9}t\u{e9}.txt\n");
    let a = dav.curl(&[], "/Nfd/%C3%A9t%C3%A9.txt");
    assert_eq!((a.status, a.body.as_slice()), (200, &b"summer"[..]));
    s.term();
}

#[test]
fn cadaver_session_works() {
    let (t, s, dav) = node();
    let (user, pw) = user_and_password(&dav);
    // cadaver takes credentials from ~/.netrc.
    let home = t.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let netrc = home.join(".netrc");
    std::fs::write(
        &netrc,
        format!("machine 127.0.0.1 login {user} password {pw}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&netrc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(t.path().join("local.txt"), b"from cadaver\n").unwrap();
    let script = "mkcol Docs\n\
                  put local.txt Docs/note.txt\n\
                  propset Docs/note.txt colour blue\n\
                  propget Docs/note.txt colour\n\
                  copy Docs/note.txt Docs/copy.txt\n\
                  move Docs/copy.txt Docs/moved.txt\n\
                  lock Docs/note.txt\n\
                  unlock Docs/note.txt\n\
                  ls Docs\n\
                  get Docs/moved.txt back.txt\n\
                  rm Docs/note.txt\n\
                  ls Docs\n\
                  quit\n";
    let mut c = Command::new("cadaver")
        .arg(format!("{}/", dav.base))
        .env("HOME", &home)
        .current_dir(t.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cadaver runs (installed by tests/install-test-tools.sh)");
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let o = c.wait_with_output().unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{out}");
    for bad in ["failed", "Failed", "Could not", "error"] {
        assert!(!out.contains(bad), "cadaver said {bad:?}:\n{out}");
    }
    assert!(out.contains("colour") && out.contains("blue"), "{out}");
    assert_eq!(
        std::fs::read(t.path().join("back.txt")).unwrap(),
        b"from cadaver\n"
    );
    assert_eq!(dav.curl(&[], "/Docs/note.txt").status, 404);
    assert_eq!(dav.curl(&[], "/Docs/moved.txt").body, b"from cadaver\n");
    assert_eq!(dav.curl(&[], "/Docs/copy.txt").status, 404);
    s.term();
}

/// Ten seconds of uncompressed video at `path`: large (over 50 MB), quick to make, and
/// seekable through the Matroska cues. Its size.
pub(crate) fn make_test_film(path: &std::path::Path) -> u64 {
    run(Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25:duration=10",
            "-c:v",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(path));
    let size = std::fs::metadata(path).unwrap().len();
    assert!(size > 50_000_000, "{size}");
    size
}

#[test]
fn ffmpeg_seeks_read_little_and_abandoned_reads_stop() {
    let (t, s, dav) = node();
    let video = t.path().join("film.mkv");
    let size = make_test_film(&video);
    s.ok(&["mkdir", "/Films"]);
    s.ok(&["put", video.to_str().unwrap(), "/Films/film.mkv"]);
    let (user, pw) = user_and_password(&dav);
    let url = format!(
        "http://{user}:{pw}@{}/Films/film.mkv",
        dav.base.trim_start_matches("http://")
    );

    // ffprobe reads the headers and the index, not the film.
    let before = settled_bytes_read(&s);
    let o = run(Command::new("ffprobe").args([
        "-loglevel",
        "error",
        "-show_entries",
        "format=duration",
        "-of",
        "csv=p=0",
        &url,
    ]));
    let duration: f64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert!((duration - 10.0).abs() < 0.5, "{duration}");
    let probe = settled_bytes_read(&s) - before;
    assert!(
        probe < size / 4,
        "ffprobe made the node read {probe} of {size} bytes"
    );

    // Seeking to 8 s and decoding half a second reads the end of the file, not all of it.
    let before = settled_bytes_read(&s);
    run(Command::new("ffmpeg").args([
        "-loglevel",
        "error",
        "-ss",
        "8",
        "-i",
        &url,
        "-t",
        "0.5",
        "-f",
        "null",
        "-",
    ]));
    let seek = settled_bytes_read(&s) - before;
    assert!(
        seek < size / 3,
        "a seek made the node read {seek} of {size} bytes"
    );

    // A client that reads the first megabyte and hangs up stops the node's reads.
    let before = settled_bytes_read(&s);
    {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", dav.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            c,
            "GET /Films/film.mkv HTTP/1.1\r\nHost: x\r\n{}\r\n",
            dav.auth_line()
        )
        .unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while got < 1 << 20 {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "closed early");
            got += n;
        }
    }
    let abandoned = settled_bytes_read(&s) - before;
    eprintln!(
        "file {size} B; node read: ffprobe {probe} B, seek {seek} B, abandoned GET {abandoned} B"
    );
    assert!(
        abandoned < size / 3,
        "an abandoned GET made the node read {abandoned} of {size} bytes"
    );
    s.term();
}
