//! `wormfs mount`: the tree read through a real FUSE mount (root on these machines; fuse3 from
//! tests/install-test-tools.sh) by the programs a media server uses: `find`, `cat`, ffprobe and
//! ffmpeg; new files, deletions and renames appearing without a remount; a node that goes away
//! giving EIO (never an empty folder) and the mount working again once it is back.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::common::dav::node;
use super::common::mount::{mount_cmd, mounted, Mount};
use super::common::process::{wait_for, Server};
use super::common::random_bytes;
use super::webdav_clients::{make_test_film, settled_bytes_read};

/// Every file under `dir` by its path relative to `dir`, with its bytes, and every folder.
fn tree_of(dir: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                out.push((rel, None));
                todo.push(p);
            } else {
                out.push((rel, Some(std::fs::read(&p).unwrap())));
            }
        }
    }
    out.sort();
    out
}

fn is_eio<T: std::fmt::Debug>(r: std::io::Result<T>) -> bool {
    match r {
        Err(e) => e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()),
        Ok(v) => panic!("expected EIO, got {v:?}"),
    }
}

#[test]
fn the_mount_shows_the_tree_follows_changes_and_survives_the_node() {
    let (t, s, dav) = node();
    // A source tree with awkward names and sizes around the block and segment sizes.
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("Films/Big Film (2024)")).unwrap();
    std::fs::create_dir_all(src.join("Photos/été")).unwrap();
    std::fs::create_dir_all(src.join("Empty")).unwrap();
    let files: [(&str, usize); 6] = [
        ("Films/Big Film (2024)/film.mkv", 9 * 1024 * 1024 + 17),
        ("Films/Big Film (2024)/film.nfo", 1),
        ("Films/zero.bin", 0),
        ("Photos/été/photo 1.jpg", 300_000),
        ("Photos/été/#hash%.jpg", 4095),
        ("unread.bin", 2 * 1024 * 1024),
    ];
    for (i, (name, size)) in files.iter().enumerate() {
        std::fs::write(src.join(name), random_bytes(*size, i as u64)).unwrap();
    }
    s.ok(&["put", src.to_str().unwrap(), "/Lib"]);
    // A tree put stores files; an empty folder is made on its own.
    s.ok(&["mkdir", "-p", "/Lib/Empty"]);
    let mp = t.path().join("mnt");
    let mut m = Mount::start(&s, &mp, &["--root", "/Lib"]);

    // The tree and every byte, except the file kept unread for the outage below.
    let unread = mp.join("unread.bin");
    let mut want = tree_of(&src);
    want.retain(|(p, _)| p != "unread.bin");
    let mut got = Vec::new();
    for (rel, bytes) in &want {
        let p = mp.join(rel);
        let meta = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{rel}: {e}"));
        match bytes {
            None => assert!(meta.is_dir(), "{rel}"),
            Some(b) => {
                assert_eq!(meta.len(), b.len() as u64, "{rel}");
                assert!(meta.permissions().readonly(), "{rel}");
            }
        }
        got.push((
            rel.clone(),
            bytes.as_ref().map(|_| std::fs::read(&p).unwrap()),
        ));
    }
    assert!(got == want, "the mount's bytes differ from the source's");
    let mut names: Vec<String> = std::fs::read_dir(&mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["Empty", "Films", "Photos", "unread.bin"]);
    assert!(std::fs::metadata(&unread).unwrap().len() == 2 * 1024 * 1024);

    // Read-only: writes are refused by the kernel.
    let e = std::fs::write(mp.join("new.txt"), b"x").unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(rustix::io::Errno::ROFS.raw_os_error()),
        "{e}"
    );

    // A second mount at the same point is a clear error.
    let o = mount_cmd(&s, &mp, &[]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already a mount point"),
        "{o:?}"
    );
    // A root that is not there, and a wrong token.
    let other = t.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let o = mount_cmd(&s, &other, &["--root", "/Nope"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no such folder"),
        "{o:?}"
    );
    let o = mount_cmd(&s, &other, &["--token", "wrong"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(6), "{o:?}");
    assert!(!mounted(&other));

    // A file committed through WebDAV appears in a folder the kernel has cached, within
    // seconds; one deleted disappears although its name was cached for an hour; a rename moves.
    let films = mp.join("Films");
    assert!(!films.join("new film.mkv").exists());
    let body = random_bytes(123_457, 99);
    std::fs::write(t.path().join("up.bin"), &body).unwrap();
    let a = dav.curl(
        &["-T", t.path().join("up.bin").to_str().unwrap()],
        "/Lib/Films/new%20film.mkv",
    );
    assert_eq!(a.status, 201, "{}", a.text());
    wait_for(10, "the new film in the mount", || {
        films.join("new film.mkv").exists().then_some(())
    });
    assert_eq!(std::fs::read(films.join("new film.mkv")).unwrap(), body);
    assert!(std::fs::read_dir(&films)
        .unwrap()
        .any(|e| e.unwrap().file_name() == "new film.mkv"));
    let nfo = films.join("Big Film (2024)/film.nfo");
    assert!(nfo.exists());
    s.ok(&["rm", "/Lib/Films/Big Film (2024)/film.nfo"]);
    wait_for(10, "the deleted file gone from the mount", || {
        (!nfo.exists()).then_some(())
    });
    s.ok(&["mv", "/Lib/Photos/été", "/Lib/Photos/summer"]);
    wait_for(10, "the renamed folder", || {
        (mp.join("Photos/summer/photo 1.jpg").exists() && !mp.join("Photos/été").exists())
            .then_some(())
    });

    // The node goes away: listings and reads of bytes not yet read fail with EIO, never an
    // empty folder.
    let port = s.port;
    s.kill9();
    assert!(is_eio(std::fs::read_dir(&films)));
    assert!(is_eio(std::fs::read_dir(&mp)));
    assert!(is_eio(std::fs::read(&unread)));
    // Back: the same mount lists and reads again.
    let s = Server::start(t.path(), port, &[]);
    wait_for(30, "the mount to answer again", || {
        std::fs::read_dir(&films).ok().map(|_| ())
    });
    assert_eq!(
        std::fs::read(&unread).unwrap(),
        random_bytes(2 * 1024 * 1024, 5)
    );
    // Changes are followed again after the restart.
    s.ok(&["mkdir", "/Lib/Films/After"]);
    wait_for(10, "a folder made after the restart", || {
        films.join("After").is_dir().then_some(())
    });

    // SIGTERM unmounts cleanly.
    m.signal_term();
    assert!(m.wait_exit().success());
    assert!(!mounted(&mp));
    drop(s);
}

#[test]
fn find_walks_ten_thousand_entries_and_fusermount_ends_the_mount() {
    let (t, s, dav) = node();
    // 100 small files, then the folder copied 99 times by WebDAV COPY (which shares the
    // files): 10,000 files in 100 folders without writing 10,000 files.
    let src = t.path().join("seed");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..100 {
        std::fs::write(src.join(format!("file-{i:03}.srt")), format!("{i}\n")).unwrap();
    }
    s.ok(&["mkdir", "/Many"]);
    s.ok(&["put", src.to_str().unwrap(), "/Many/d000"]);
    for d in 1..100 {
        let a = dav.curl(
            &[
                "-X",
                "COPY",
                "-H",
                &format!("Destination: {}/Many/d{d:03}", dav.base),
            ],
            "/Many/d000",
        );
        assert_eq!(a.status, 201, "COPY d{d:03}: {}", a.text());
    }
    let mp = t.path().join("mnt");
    let mut m = Mount::start(&s, &mp, &[]);
    let o = Command::new("find")
        .arg(mp.join("Many"))
        .args(["-printf", "%y %s %P\n"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    let files = lines.iter().filter(|l| l.starts_with("f ")).count();
    let dirs = lines.iter().filter(|l| l.starts_with("d ")).count();
    assert_eq!(files, 10_000);
    assert_eq!(dirs, 101, "Many itself and its 100 folders");
    assert!(lines.contains(&"f 3 d042/file-042.srt"), "sizes and names");
    assert_eq!(
        std::fs::read_to_string(mp.join("Many/d099/file-099.srt")).unwrap(),
        "99\n"
    );

    // fusermount -u ends the mount process cleanly.
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mp)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(m.wait_exit().success());
    assert!(!mounted(&mp));
}

#[test]
fn ffmpeg_streams_and_seeks_through_the_mount_reading_little() {
    let (t, s, _dav) = node();
    let video = t.path().join("film.mkv");
    let size = make_test_film(&video);
    s.ok(&["mkdir", "/Films"]);
    s.ok(&["put", video.to_str().unwrap(), "/Films/film.mkv"]);
    let mp = t.path().join("mnt");
    let _m = Mount::start(&s, &mp, &[]);
    let film = mp.join("Films/film.mkv");

    // ffprobe reads the headers and the index, not the film.
    let before = settled_bytes_read(&s);
    let o = Command::new("ffprobe")
        .args([
            "-loglevel",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(&film)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let duration: f64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert!((duration - 10.0).abs() < 0.5, "{duration}");
    let probe = settled_bytes_read(&s) - before;
    assert!(
        probe < size / 4,
        "ffprobe made the node read {probe} of {size} bytes"
    );

    // Seeking to 8 s and decoding half a second reads a small part of the file.
    let before = settled_bytes_read(&s);
    let o = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-ss", "8", "-i"])
        .arg(&film)
        .args(["-t", "0.5", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let seek = settled_bytes_read(&s) - before;
    assert!(
        seek < size / 3,
        "a seek made the node read {seek} of {size} bytes"
    );

    // The whole film, byte for byte, as a player streaming it from the start would.
    let started = Instant::now();
    let got = std::fs::read(&film).unwrap();
    let took = started.elapsed();
    assert!(
        got == std::fs::read(&video).unwrap(),
        "the film's bytes differ"
    );
    eprintln!(
        "read {size} bytes through the mount in {took:?} ({:.0} MB/s; figures are for the \
         benchmark, not asserted)",
        size as f64 / took.as_secs_f64().max(1e-9) / 1e6
    );
}
