//! Drop folders against a real node process: complete files are taken exactly once, temporary
//! names and files still being written are left alone, originals leave only after the commit,
//! and a crash between commit and removal, a full disk or a source that changes are handled.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::process::{free_port, Server};

/// A config with one drop folder `drop` -> `tree`, with a short settle time, plus `extra` lines
/// inside the folder's table.
fn config(dir: &Path, tree: &str, extra: &str) -> PathBuf {
    let path = dir.join("wormfs.toml");
    std::fs::write(
        &path,
        format!(
            "[ingest]\nlease_ms = 2000\norphan_grace_ms = 2000\n\n[[ingest.folders]]\npath = \"drop\"\ntree = \"{tree}\"\nsettle_ms = 400\n{extra}\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("drop")).unwrap();
    path
}

fn start(dir: &Path, port: u16, env: &[(&str, &str)]) -> Server {
    let cfg = dir.join("wormfs.toml");
    Server::start_env(dir, port, &["--config", cfg.to_str().unwrap()], env)
}

/// Polls the ingest status until `done` items are done (and nothing is queued or in progress).
fn wait_done(s: &Server, done: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let v = s.json(&["ingest"]);
        if v["done"].as_u64() == Some(done)
            && v["settling"].as_u64() == Some(0)
            && v["queued"].as_u64() == Some(0)
            && v["in_progress"].as_u64() == Some(0)
        {
            return v;
        }
        assert!(Instant::now() < deadline, "waiting for {done} done: {v:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4] ^ seed)
        .collect()
}

fn tree_names(s: &Server, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = s.json(&["ls", dir])["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

fn get(s: &Server, path: &str) -> Vec<u8> {
    let out = s.cwd.join("got.bin");
    let _ = std::fs::remove_file(&out);
    s.ok(&["get", path, out.to_str().unwrap()]);
    std::fs::read(out).unwrap()
}

/// Files left in the drop folder (relative paths), sorted.
fn left(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

#[test]
fn a_dropped_tree_is_taken_once_complete_and_only_then_removed() {
    let t = tempfile::tempdir().unwrap();
    config(t.path(), "/in", "");
    let dropdir = t.path().join("drop");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("film one.mkv", bytes(3_000_000, 1)),
        ("Photos/été 2024/IMG_0001.JPG", bytes(200_000, 2)),
        ("Photos/été 2024/IMG_0002.JPG", bytes(0, 3)),
        ("music/a+b&c;d #1 [x] 'q'.flac", bytes(70_000, 4)),
    ];
    for (rel, data) in &files {
        let p = dropdir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    // Temporary names of download clients and copy tools are never taken.
    for tmp in [
        "movie.mkv.part",
        "movie2.mkv.crdownload",
        ".show.mkv.Ab12Cd",
        "x.!qB",
    ] {
        std::fs::write(dropdir.join(tmp), b"partial").unwrap();
    }
    let mut s = start(t.path(), free_port(), &[]);
    // A file still being written, with pauses longer than the settle time, while the node runs.
    let slow_path = dropdir.join("slow.mkv");
    let slow_data = bytes(900_000, 9);
    let mut f = std::fs::File::create(&slow_path).unwrap();
    for chunk in slow_data.chunks(150_000) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(700));
    }
    // Not taken while open: nothing of it may be in the tree yet.
    assert!(
        !tree_names(&s, "/in").contains(&"slow.mkv".to_owned()),
        "a file still open for writing was taken"
    );
    drop(f);
    let v = wait_done(&s, files.len() as u64 + 1);
    assert_eq!(v["failed"], 0, "{v:#}");
    for (rel, data) in &files {
        assert_eq!(&get(&s, &format!("/in/{rel}")), data, "{rel}");
    }
    assert_eq!(get(&s, "/in/slow.mkv"), slow_data);
    // Each exactly once (no "name (1)" copies), temporaries and nothing else left behind.
    assert_eq!(
        tree_names(&s, "/in"),
        vec!["Photos", "film one.mkv", "music", "slow.mkv"]
    );
    assert_eq!(
        left(&dropdir),
        vec![
            ".show.mkv.Ab12Cd",
            "movie.mkv.part",
            "movie2.mkv.crdownload",
            "x.!qB"
        ],
        "originals removed, emptied folders cleaned up, temporaries kept"
    );
    // Renamed to its final name, a download is taken.
    std::fs::rename(dropdir.join("movie.mkv.part"), dropdir.join("movie.mkv")).unwrap();
    wait_done(&s, files.len() as u64 + 2);
    assert_eq!(get(&s, "/in/movie.mkv"), b"partial");
    // The status says where each went.
    let v = s.json(&["ingest"]);
    let item = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["dest"] == "/in/film one.mkv")
        .expect("item for film one.mkv");
    assert_eq!(item["state"], "done");
    assert_eq!(item["size"], 3_000_000);
    s.child.kill().unwrap();
    s.child.wait().unwrap();
}

#[test]
fn kept_originals_are_not_taken_twice_and_moved_ones_land_in_the_done_folder() {
    // keep: a restart rescans the folder and recognises the committed source.
    let t = tempfile::tempdir().unwrap();
    config(t.path(), "/", "after = \"keep\"");
    std::fs::write(t.path().join("drop/a.bin"), bytes(100_000, 5)).unwrap();
    let port = free_port();
    let s = start(t.path(), port, &[]);
    wait_done(&s, 1);
    s.term();
    let s = start(t.path(), port, &[]);
    let v = wait_done(&s, 1);
    assert!(
        v["items"][0]["note"]
            .as_str()
            .unwrap_or("")
            .contains("already ingested"),
        "{v:#}"
    );
    assert_eq!(tree_names(&s, "/"), vec!["a.bin"]);
    assert!(
        t.path().join("drop/a.bin").exists(),
        "kept original removed"
    );
    // A kept original that changes is a new version, taken again (rename rule: a second name).
    std::fs::write(t.path().join("drop/a.bin"), bytes(100_001, 6)).unwrap();
    wait_done(&s, 1);
    wait_for("the new version", || tree_names(&s, "/").len() == 2);
    assert_eq!(tree_names(&s, "/"), vec!["a (1).bin", "a.bin"]);
    assert_eq!(get(&s, "/a (1).bin"), bytes(100_001, 6));
    s.term();

    // move: the original goes to done_dir, keeping its subfolders.
    let t = tempfile::tempdir().unwrap();
    config(
        t.path(),
        "/films",
        "after = \"move\"\ndone_dir = \"done\"\npolicy = \"copies:2\"",
    );
    std::fs::create_dir_all(t.path().join("drop/sub")).unwrap();
    std::fs::write(t.path().join("drop/sub/m.mkv"), bytes(50_000, 7)).unwrap();
    let s = start(t.path(), free_port(), &[]);
    wait_done(&s, 1);
    assert_eq!(
        std::fs::read(t.path().join("done/sub/m.mkv")).unwrap(),
        bytes(50_000, 7)
    );
    assert!(
        !t.path().join("drop/sub").exists(),
        "emptied folder left behind"
    );
    assert_eq!(get(&s, "/films/sub/m.mkv"), bytes(50_000, 7));
    assert_eq!(
        s.json(&["stat", "/films/sub/m.mkv"])["policy"],
        "copies:2",
        "the folder's policy"
    );
    s.term();
}

/// A crash after the commit and before the original is removed: at restart the original is
/// recognised by its committed source identity and only removed, never ingested twice.
#[test]
fn crash_between_commit_and_removal_is_finished_at_restart() {
    if !cfg!(feature = "crash-points") {
        panic!("this test needs the crash-points feature: run the suite with tests/run-all.sh (--features wormfs-server/crash-points)");
    }
    let t = tempfile::tempdir().unwrap();
    config(t.path(), "/", "");
    let data = bytes(1_500_000, 8);
    let port = free_port();
    let mut s = start(t.path(), port, &[("WORMFS_CRASH_AT", "drop-after-commit")]);
    std::fs::write(t.path().join("drop/f.mkv"), &data).unwrap();
    let st = s.child.wait().unwrap();
    assert!(
        !st.success(),
        "the node should have aborted at the crash point"
    );
    assert_eq!(std::fs::read(t.path().join("drop/f.mkv")).unwrap(), data);
    let s = start(t.path(), port, &[]);
    wait_for("the original to be removed", || {
        !t.path().join("drop/f.mkv").exists()
    });
    let v = wait_done(&s, 1);
    assert!(
        v["items"][0]["note"]
            .as_str()
            .unwrap_or("")
            .contains("already ingested"),
        "{v:#}"
    );
    assert_eq!(tree_names(&s, "/"), vec!["f.mkv"]);
    assert_eq!(get(&s, "/f.mkv"), data);
    s.term();
}

/// Disks too small for the file: the ingest fails, the original stays, the reason is shown.
#[test]
fn a_full_disk_keeps_the_source_and_says_why() {
    let t = tempfile::tempdir().unwrap();
    config(t.path(), "/", "");
    let data = bytes(12_000_000, 10);
    std::fs::write(t.path().join("drop/big.mkv"), &data).unwrap();
    let disks: Vec<PathBuf> = (0..3).map(|i| t.path().join(format!("d{i}"))).collect();
    let mounts: Vec<(PathBuf, u64)> = disks.iter().map(|d| (d.clone(), 2 << 20)).collect();
    let mut extra = vec![
        "--config".to_owned(),
        t.path().join("wormfs.toml").display().to_string(),
    ];
    for d in &disks {
        extra.push("--disk".into());
        extra.push(d.display().to_string());
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let s = Server::start_with_tmpfs(
        t.path(),
        free_port(),
        &extra,
        &[("WORMFS_STORAGE__RESERVE_FREE_BYTES", "0")],
        &mounts,
    );
    let mut v = serde_json::Value::Null;
    wait_for("the failure", || {
        v = s.json(&["ingest"]);
        v["failed"] == 1
    });
    let note = v["items"][0]["note"].as_str().unwrap_or("").to_owned();
    assert!(note.contains("original kept"), "{note}");
    assert!(
        note.contains("disk") || note.contains("space") || note.contains("full"),
        "the reason should say the disks are full: {note}"
    );
    assert_eq!(std::fs::read(t.path().join("drop/big.mkv")).unwrap(), data);
    assert!(tree_names(&s, "/").is_empty());
    let o = s.cli(&["ingest"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("failed") && text.contains("big.mkv"),
        "{text}"
    );
    s.term();
}

/// A source that grows while it is being read is not committed as it was; once it settles
/// again its final content is taken, once.
#[test]
fn a_source_changed_while_being_read_is_not_committed() {
    let t = tempfile::tempdir().unwrap();
    config(t.path(), "/", "");
    let first = bytes(300_000_000, 11);
    let path = t.path().join("drop/grow.bin");
    std::fs::write(&path, &first).unwrap();
    let s = start(t.path(), free_port(), &[]);
    wait_for("the ingest to start", || {
        let v = s.json(&["ingest"]);
        v["in_progress"] == 1
    });
    let tail = bytes(1000, 12);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&tail)
        .unwrap();
    let v = wait_done(&s, 1);
    assert!(
        v["items"][0]["attempts"].as_u64().unwrap_or(0) >= 2,
        "the first read should have failed on the change: {v:#}"
    );
    assert_eq!(tree_names(&s, "/"), vec!["grow.bin"]);
    let mut want = first;
    want.extend_from_slice(&tail);
    let got = get(&s, "/grow.bin");
    assert_eq!(
        got.len(),
        want.len(),
        "committed the version read before the change"
    );
    assert!(got == want);
    assert!(!path.exists());
    s.term();
}

/// Under the skip rule a name that exists is not stored, and the original, the only copy of
/// what was dropped, stays in the drop folder.
#[test]
fn skip_rule_leaves_the_original_in_place() {
    let t = tempfile::tempdir().unwrap();
    config(t.path(), "/", "conflict = \"skip\"");
    let s = start(t.path(), free_port(), &[]);
    std::fs::write(t.path().join("old.bin"), bytes(10_000, 13)).unwrap();
    s.ok(&["put", "old.bin", "/x.bin"]);
    std::fs::write(t.path().join("drop/x.bin"), bytes(20_000, 14)).unwrap();
    let v = wait_done(&s, 1);
    assert!(
        v["items"][0]["note"]
            .as_str()
            .unwrap_or("")
            .contains("skipped"),
        "{v:#}"
    );
    assert_eq!(get(&s, "/x.bin"), bytes(10_000, 13));
    assert_eq!(
        std::fs::read(t.path().join("drop/x.bin")).unwrap(),
        bytes(20_000, 14),
        "the skipped original must stay"
    );
    assert_eq!(tree_names(&s, "/"), vec!["x.bin"]);
    s.term();
}

/// A polled folder (for SMB/NFS mounts) takes files by scanning: a file that grows between
/// scans is taken only once it stops changing, with its final content.
#[test]
fn a_polled_folder_takes_files_once_they_stop_changing() {
    let t = tempfile::tempdir().unwrap();
    config(t.path(), "/p", "poll = true\npoll_interval_ms = 200");
    let s = start(t.path(), free_port(), &[]);
    let v = s.json(&["ingest"]);
    assert_eq!(v["folders"][0]["watch"], "poll", "{v:#}");
    let path = t.path().join("drop/growing.bin");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut all = Vec::new();
    for i in 0..6u8 {
        let chunk = bytes(100_000, 20 + i);
        f.write_all(&chunk).unwrap();
        f.flush().unwrap();
        all.extend_from_slice(&chunk);
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(f);
    wait_done(&s, 1);
    assert_eq!(get(&s, "/p/growing.bin"), all);
    assert_eq!(tree_names(&s, "/p"), vec!["growing.bin"]);
    assert!(!path.exists());
    s.term();
}
