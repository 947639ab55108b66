//! The trash and retention locks against a real node: `rm`, a WebDAV PUT over a file and
//! `--conflict replace` keep the old version in the trash, which restores byte for byte,
//! empties, and expires after `retention.trash_days`; a retained file refuses every change
//! through every face (CLI and API, WebDAV, a drop folder with `conflict = "replace"`) with
//! nothing changed, until its retention ends; `wormfs admin unlock` lifts it offline.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::dav::Dav;
use crate::common::process::{files_under, free_port, wait_for, Server, BIN};

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4] ^ seed)
        .collect()
}

/// A config file in `dir` with `extra` appended, and the node started on it.
fn start(dir: &Path, extra: &str) -> Server {
    let cfg = write_config(dir, extra);
    Server::start(dir, free_port(), &["--config", cfg.to_str().unwrap()])
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("wormfs.toml");
    std::fs::write(
        &path,
        format!("[ingest]\nlease_ms = 2000\norphan_grace_ms = 2000\n{extra}\n"),
    )
    .unwrap();
    path
}

fn get(s: &Server, path: &str) -> Vec<u8> {
    let out = s.cwd.join("got.bin");
    let _ = std::fs::remove_file(&out);
    s.ok(&["get", path, out.to_str().unwrap()]);
    std::fs::read(out).unwrap()
}

fn put(s: &Server, name: &str, data: &[u8], dest: &str, extra: &[&str]) {
    let src = s.cwd.join(name);
    std::fs::write(&src, data).unwrap();
    let mut args = vec!["put", src.to_str().unwrap(), dest];
    args.extend_from_slice(extra);
    s.ok(&args);
}

fn trash(s: &Server) -> serde_json::Value {
    s.json(&["trash", "ls"])
}

fn trash_paths(s: &Server) -> Vec<String> {
    trash(s)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect()
}

fn part_count(root: &Path) -> usize {
    files_under(&root.join("wormfs-data/disks"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wp"))
        .count()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits until the leader has turned the trash on or off as its config says.
fn wait_trash(s: &Server, on: bool) {
    wait_for(30, "the trash setting", || {
        (s.json(&["status"])["trash"]["enabled"] == on).then_some(())
    });
}

#[test]
fn removed_and_replaced_files_go_to_the_trash_and_come_back_whole() {
    let t = tempfile::tempdir().unwrap();
    let s = start(t.path(), "");
    wait_trash(&s, true);
    let one = bytes(3_000_000, 1);
    put(&s, "one.bin", &one, "/films/one.bin", &[]);
    s.ok(&["rm", "/films/one.bin"]);
    assert_eq!(trash_paths(&s), vec!["/films/one.bin"]);
    let status = s.json(&["status"]);
    assert_eq!(status["files"], 0, "{status:#}");
    assert_eq!(status["trash"]["files"], 1, "{status:#}");
    assert_eq!(status["trash"]["bytes"], one.len() as u64, "{status:#}");
    assert_eq!(s.json(&["disks"])["trash"]["files"], 1);
    let text = s.ok(&["trash", "ls", "/films"]);
    assert!(text.contains("/films/one.bin"), "{text}");
    assert!(trash(&s)["entries"].as_array().unwrap().len() == 1);
    assert_eq!(
        s.json(&["trash", "ls", "/other"])["entries"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // Restored under its own name, byte for byte.
    s.ok(&["trash", "restore", "/films/one.bin"]);
    assert_eq!(get(&s, "/films/one.bin"), one);
    assert!(trash_paths(&s).is_empty());
    s.fails(&["trash", "restore", "/films/one.bin"], 3, "in the trash");

    // A replace through the CLI and a PUT through WebDAV keep the old versions.
    let two = bytes(100_000, 2);
    put(
        &s,
        "two.bin",
        &two,
        "/films/one.bin",
        &["--conflict", "replace"],
    );
    let dav = Dav::of(&s);
    let three = t.path().join("three.bin");
    std::fs::write(&three, bytes(50_000, 3)).unwrap();
    assert_eq!(
        dav.curl(&["-T", three.to_str().unwrap()], "/films/one.bin")
            .status,
        204
    );
    assert_eq!(trash_paths(&s), vec!["/films/one.bin", "/films/one.bin"]);
    // The newest version in the trash by path, the oldest by id, each elsewhere.
    s.ok(&[
        "trash",
        "restore",
        "/films/one.bin",
        "--to",
        "/back/two.bin",
    ]);
    assert_eq!(get(&s, "/back/two.bin"), two);
    let id = trash(&s)["entries"][0]["id"].as_u64().unwrap().to_string();
    s.fails(
        &["trash", "restore", "--id", &id, "--to", "/back/two.bin"],
        4,
        "exists",
    );
    s.ok(&["trash", "restore", "--id", &id, "--to", "/back/one.bin"]);
    assert_eq!(get(&s, "/back/one.bin"), one);
    // A WebDAV DELETE goes to the trash too; emptying frees it.
    assert_eq!(dav.curl(&["-X", "DELETE"], "/back/").status, 204);
    assert_eq!(trash_paths(&s).len(), 2);
    s.ok(&["trash", "empty", "--older-than", "1"]);
    assert_eq!(trash_paths(&s).len(), 2, "nothing is a day old");
    let v = s.json(&["trash", "empty"]);
    assert_eq!(v["entries"], 2, "{v:#}");
    assert!(trash_paths(&s).is_empty());
    assert_eq!(s.json(&["status"])["trash"]["files"], 0);
    // Their parts go at the sweep: only /films/one.bin's are left.
    let before = part_count(t.path());
    wait_for(30, "the sweep to remove the freed parts", || {
        s.ok(&["admin", "sweep"]);
        (part_count(t.path()) < before).then_some(())
    });
    assert_eq!(get(&s, "/films/one.bin"), bytes(50_000, 3));
    s.term();
}

#[test]
fn trash_entries_expire_after_trash_days_and_no_trash_frees_at_once() {
    let t = tempfile::tempdir().unwrap();
    // 0.00002 days: 1.7 s.
    let s = start(t.path(), "[retention]\ntrash_days = 0.00002\n");
    wait_trash(&s, true);
    put(&s, "a.bin", &bytes(200_000, 4), "/a.bin", &[]);
    let parts = part_count(t.path());
    assert!(parts > 0);
    s.ok(&["rm", "/a.bin"]);
    assert_eq!(trash_paths(&s), vec!["/a.bin"]);
    wait_for(60, "the trash entry to expire", || {
        trash_paths(&s).is_empty().then_some(())
    });
    wait_for(30, "the sweep to remove the expired file's parts", || {
        s.ok(&["admin", "sweep"]);
        (part_count(t.path()) == 0).then_some(())
    });
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(log.contains("trash: freed 1 file(s)"), "{log}");
    s.term();

    // With trash_days = 0 the leader turns it off, and a delete frees at once.
    let t = tempfile::tempdir().unwrap();
    let s = start(t.path(), "[retention]\ntrash_days = 0\n");
    put(&s, "b.bin", &bytes(1000, 5), "/b.bin", &[]);
    wait_for(30, "the trash to be off", || {
        let st = s.json(&["status"]);
        (st["trash"]["enabled"] == false && st["raft"]["leader"].is_number()).then_some(())
    });
    s.ok(&["rm", "/b.bin"]);
    assert!(trash_paths(&s).is_empty());
    let text = s.ok(&["trash", "ls"]);
    assert!(text.contains("the trash is off"), "{text}");
    s.term();
}

/// Every change to a retained file, through every face, is refused with nothing changed;
/// after its retention ends they work again.
#[test]
fn a_retained_file_refuses_every_change_through_every_face_until_it_ends() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("drop")).unwrap();
    let s = start(
        t.path(),
        "[[ingest.folders]]\npath = \"drop\"\ntree = \"/vault\"\nsettle_ms = 300\nconflict = \"replace\"\n",
    );
    wait_trash(&s, true);
    s.ok(&["mkdir", "/vault"]);
    s.ok(&["policy", "set", "/vault", "retain:40s"]);
    s.fails(&["policy", "set", "/vault", "retain:soon"], 2, "retention");
    let stat = s.ok(&["stat", "/vault"]);
    assert!(stat.contains("retain:40s"), "{stat}");
    let data = bytes(1_500_000, 6);
    put(&s, "a.bin", &data, "/vault/a.bin", &[]);
    put(&s, "other.bin", &bytes(1000, 7), "/other.bin", &[]);
    let st = s.json(&["stat", "/vault/a.bin"]);
    let until = st["retained_until_ms"].as_u64().expect("retained");
    let hash = st["blake3"].clone();
    let text = s.ok(&["stat", "/vault/a.bin"]);
    assert!(text.contains("retained until 20"), "{text}");
    let other = t.path().join("other.bin");
    let other = other.to_str().unwrap();

    // CLI (and so the API): exit 4 with the date.
    for args in [
        vec!["rm", "/vault/a.bin"],
        vec!["rm", "-r", "/vault"],
        vec!["mv", "/vault/a.bin", "/b.bin"],
        vec!["mv", "/vault/a.bin", "/vault/b.bin"],
        vec!["mv", "/vault", "/vault2"],
        vec!["put", other, "/vault/a.bin", "--conflict", "replace"],
        vec!["append", other, "/vault/a.bin"],
    ] {
        let o = s.fails(&args, 4, "retained until");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("/vault/a.bin"), "{args:?}: {err}");
        assert!(err.contains('T') && err.contains('Z'), "RFC 3339: {err}");
    }
    // The API's own answer: 403, kind retained.
    let token = std::fs::read_to_string(t.path().join("wormfs-data/admin-token")).unwrap();
    let o = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-X", "DELETE", "-H"])
        .arg(format!("Authorization: Bearer {}", token.trim()))
        .arg(format!("{}/api/v1/files/vault/a.bin", s.url))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.ends_with("403"), "{out}");
    assert!(out.contains("\"kind\":\"retained\""), "{out}");

    // WebDAV: 403 with a body that says until when.
    let dav = Dav::of(&s);
    let dest = |p: &str| format!("Destination: {}{p}", dav.base);
    let requests: Vec<(Vec<String>, &str)> = vec![
        (vec!["-X".into(), "DELETE".into()], "/vault/a.bin"),
        (vec!["-X".into(), "DELETE".into()], "/vault/"),
        (vec!["-T".into(), other.into()], "/vault/a.bin"),
        (
            vec!["-X".into(), "MOVE".into(), "-H".into(), dest("/moved.bin")],
            "/vault/a.bin",
        ),
        (
            vec!["-X".into(), "MOVE".into(), "-H".into(), dest("/vault2/")],
            "/vault/",
        ),
        (
            vec![
                "-X".into(),
                "MOVE".into(),
                "-H".into(),
                dest("/vault/a.bin"),
                "-H".into(),
                "Overwrite: T".into(),
            ],
            "/other.bin",
        ),
        (
            vec![
                "-X".into(),
                "COPY".into(),
                "-H".into(),
                dest("/vault/a.bin"),
                "-H".into(),
                "Overwrite: T".into(),
            ],
            "/other.bin",
        ),
    ];
    for (args, path) in &requests {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let a = dav.curl(&args, path);
        assert_eq!(a.status, 403, "{args:?} {path}: {}", a.text());
        assert!(
            a.text().contains("retained until"),
            "{args:?} {path}: {}",
            a.text()
        );
    }

    // Finder saves into the folder: a LOCK makes an empty file, the PUT under the lock
    // replaces it (an empty file is not retained); the content is then retained.
    let a = dav.lock("/vault/saved.txt", "finder");
    assert_eq!(a.status, 201, "{}", a.text());
    let token = a.header("lock-token").unwrap().to_owned();
    let a = dav.curl(
        &["-T", other, "-H", &format!("If: ({token})")],
        "/vault/saved.txt",
    );
    assert_eq!(a.status, 204, "{}", a.text());
    assert_eq!(dav.unlock("/vault/saved.txt", &token).status, 204);
    let a = dav.curl(&["-X", "DELETE"], "/vault/saved.txt");
    assert_eq!(a.status, 403, "{}", a.text());

    // A drop folder with conflict = "replace": the file's failure says why.
    std::fs::write(t.path().join("drop/a.bin"), bytes(2000, 8)).unwrap();
    wait_for(60, "the drop folder's failure", || {
        let v = s.json(&["ingest"]);
        let failed = v["items"]
            .as_array()?
            .iter()
            .find(|i| i["note"].as_str().unwrap_or("").contains("retained until"))
            .cloned();
        failed
    });
    // Gone, so that no retry replaces the file once the retention has ended.
    std::fs::remove_file(t.path().join("drop/a.bin")).unwrap();

    // Nothing changed.
    assert!(
        now_ms() < until,
        "the refusals must all come before the retention ends"
    );
    assert_eq!(get(&s, "/vault/a.bin"), data);
    let st = s.json(&["stat", "/vault/a.bin"]);
    assert_eq!(st["blake3"], hash);
    assert_eq!(st["retained_until_ms"].as_u64(), Some(until));
    assert_eq!(
        get(&s, "/other.bin"),
        bytes(1000, 7),
        "the refused MOVE left its source"
    );
    assert!(trash_paths(&s).is_empty());

    // Once it ends, everything works again.
    wait_for(120, "the retention to end", || {
        (now_ms() > until + 200).then_some(())
    });
    s.ok(&["mv", "/vault/a.bin", "/vault/b.bin"]);
    let a = dav.curl(&["-X", "MOVE", "-H", &dest("/vault/c.bin")], "/vault/b.bin");
    assert_eq!(a.status, 201, "{}", a.text());
    s.ok(&["rm", "/vault/c.bin"]);
    assert!(trash_paths(&s).contains(&"/vault/c.bin".to_owned()));
    // `retain:none`: later files are free at once.
    s.ok(&["policy", "set", "/vault", "retain:none"]);
    put(&s, "d.bin", &bytes(10, 9), "/vault/d.bin", &[]);
    s.ok(&["rm", "/vault/d.bin"]);
    s.term();
}

/// `wormfs admin unlock` is refused while the node runs; on the stopped node it clears the
/// retention below the path and logs each file.
#[test]
fn admin_unlock_runs_offline_and_logs_what_it_unlocked() {
    let t = tempfile::tempdir().unwrap();
    let s = start(t.path(), "");
    s.ok(&["mkdir", "/keep"]);
    s.ok(&["policy", "set", "/keep", "retain:1y"]);
    put(&s, "k.bin", &bytes(5000, 10), "/keep/deep/k.bin", &[]);
    s.fails(&["rm", "-r", "/keep"], 4, "retained until");
    let cfg = t.path().join("wormfs.toml");
    let unlock = |expect_ok: bool| {
        let o = std::process::Command::new(BIN)
            .args([
                "admin",
                "unlock",
                "--config",
                cfg.to_str().unwrap(),
                "/keep",
            ])
            .current_dir(t.path())
            .output()
            .unwrap();
        assert_eq!(o.status.success(), expect_ok, "{o:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = unlock(false);
    assert!(!err.is_empty());
    let port = s.port;
    s.term();
    let err = unlock(true);
    assert!(err.contains("unlocked /keep/deep/k.bin"), "{err}");
    let log = std::fs::read_to_string(t.path().join("wormfs-data/unlock.log")).unwrap();
    assert!(log.contains("/keep/deep/k.bin (retained until"), "{log}");
    let s = Server::start(t.path(), port, &["--config", cfg.to_str().unwrap()]);
    s.ok(&["rm", "-r", "/keep"]);
    s.term();
}

/// Below `retention.trash_min_free` the leader frees the oldest trash first, only as much as
/// the shortfall needs, and logs it.
#[test]
fn low_free_space_frees_the_oldest_trash_first() {
    const MIB: u64 = 1 << 20;
    let t = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..3).map(|i| t.path().join(format!("disk{i}"))).collect();
    let mounts: Vec<(PathBuf, u64)> = dirs.iter().map(|d| (d.clone(), 16 * MIB)).collect();
    let cfg = write_config(t.path(), "[retention]\ntrash_min_free = \"60%\"\n");
    let mut args = vec!["--config".to_owned(), cfg.display().to_string()];
    for d in &dirs {
        args.push("--disk".into());
        args.push(d.display().to_string());
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::start_with_tmpfs(
        t.path(),
        free_port(),
        &a,
        &[("WORMFS_STORAGE__RESERVE_FREE_BYTES", "1048576")],
        &mounts,
    );
    wait_trash(&s, true);
    // Three 4 MiB files as ec:2+1: 18 MiB of 48 MiB used, 27 MiB free beyond the reserves,
    // under the 28.8 MiB floor by less than one file.
    for (i, name) in ["/a", "/b", "/c"].iter().enumerate() {
        put(
            &s,
            "f.bin",
            &bytes(4 * MIB as usize, i as u8),
            name,
            &["--policy", "ec:2+1"],
        );
    }
    s.ok(&["rm", "/a"]);
    s.ok(&["rm", "/b"]);
    wait_for(60, "the oldest trash to be freed", || {
        (trash_paths(&s) == vec!["/b".to_owned()]).then_some(())
    });
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        log.contains("free space below retention.trash_min_free"),
        "{log}"
    );
    s.ok(&["admin", "sweep"]);
    assert_eq!(trash_paths(&s), vec!["/b".to_owned()]);
    assert_eq!(get(&s, "/c"), bytes(4 * MIB as usize, 2));
    s.term();
}
