//! Real-binary tests: `wormfs serve` as a process, driven by the `wormfs` CLI.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::process::{free_port, Server, BIN};

/// The embedded default runs, the CLI does every namespace operation, bad input gets the
/// documented exit codes, and SIGTERM shuts down cleanly.
#[test]
fn cli_against_a_live_node() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(t.path(), free_port(), &[]);
    // Token made at first start, mode 0600, found by the CLI in ./wormfs-data.
    let tok = t.path().join("wormfs-data/admin-token");
    assert_eq!(
        std::fs::metadata(&tok).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(t.path().join("film.mkv"), &data).unwrap();
    std::fs::create_dir_all(t.path().join("tree/sub")).unwrap();
    std::fs::write(t.path().join("tree/a.nfo"), b"nfo").unwrap();
    std::fs::write(t.path().join("tree/sub/b.srt"), b"srt").unwrap();

    let put = s.json(&["put", "film.mkv", "/Films/Film (2001).mkv"]);
    assert_eq!(put[0]["size"], 3_000_000);
    assert_eq!(put[0]["policy"], "ec:4+2");
    assert_eq!(put[0]["blake3"], blake3::hash(&data).to_hex().as_str());
    s.ok(&["put", "tree", "/Shows"]);
    s.ok(&["get", "/Films/Film (2001).mkv", "back.mkv"]);
    assert_eq!(std::fs::read(t.path().join("back.mkv")).unwrap(), data);
    s.ok(&[
        "get",
        "/Films/Film (2001).mkv",
        "range.bin",
        "--range",
        "65000-131999",
    ]);
    assert_eq!(
        std::fs::read(t.path().join("range.bin")).unwrap(),
        &data[65000..132000]
    );
    // An existing pipe or device (like /dev/null) is written to, never replaced by a file.
    let fifo = t.path().join("pipe");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    s.ok(&["get", "/Films/Film (2001).mkv", fifo.to_str().unwrap()]);
    assert_eq!(reader.join().unwrap(), data);
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata(&fifo).unwrap().file_type().is_fifo(),
        "the pipe was replaced"
    );
    let st = s.json(&["stat", "/Films/Film (2001).mkv"]);
    assert_eq!(st["segments"][0]["parts"].as_array().unwrap().len(), 6);
    assert_eq!(st["tolerance"]["parts"], 2);
    assert_eq!(
        st["tolerance"]["disks"], 0,
        "six folders on one filesystem survive no disk failure"
    );
    let human = s.ok(&["stat", "/Films/Film (2001).mkv"]);
    assert!(
        human.contains("survives") && human.contains("ec:4+2"),
        "{human}"
    );
    let ls = s.json(&["ls", "/Shows/sub"]);
    assert_eq!(ls["entries"][0]["name"], "b.srt");
    s.ok(&["mkdir", "-p", "/Music/Albums"]);
    s.ok(&["policy", "set", "/Music", "copies:2"]);
    assert_eq!(
        s.json(&["policy", "get", "/Music/Albums"])["effective"],
        "copies:2"
    );
    s.ok(&["mv", "/Shows/a.nfo", "/Music/a.nfo"]);
    s.ok(&["append", "tree/a.nfo", "/Music/a.nfo"]);
    s.ok(&["get", "/Music/a.nfo", "a2"]);
    assert_eq!(std::fs::read(t.path().join("a2")).unwrap(), b"nfonfo");
    s.ok(&["rm", "/Music/a.nfo"]);
    let status = s.json(&["status"]);
    assert_eq!(status["files"], 2);
    let text = s.ok(&["status"]);
    assert!(text.contains("metadata backup:"), "{text}");
    assert_eq!(s.json(&["disks"])["disks"].as_array().unwrap().len(), 6);

    // Exit codes.
    let code = |o: Output| o.status.code().unwrap();
    assert_eq!(code(s.cli(&["stat", "/nope"])), 3);
    assert_eq!(
        code(s.cli(&["put", "film.mkv", "/Films/Film (2001).mkv"])),
        4
    );
    assert_eq!(code(s.cli(&["policy", "set", "/Music", "ec:8+3"])), 2);
    assert_eq!(code(s.cli(&["--token", "wrong", "status"])), 6);
    assert_eq!(code(s.cli(&["mkdir", "/a/../b"])), 2);
    assert_eq!(
        code(s.cli(&["rm", "/Shows"])),
        4,
        "non-empty directory without -r"
    );
    // Two snapshots in a row: the second has nothing new to cover and answers at once (it
    // used to wait two minutes for a snapshot openraft never builds, then fail).
    let first = s.json(&["admin", "snapshot"])["snapshot_index"]
        .as_u64()
        .unwrap();
    let o = s.cli(&["--json", "admin", "snapshot"]);
    assert!(o.status.success(), "second snapshot: {o:?}");
    let second: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(second["snapshot_index"].as_u64().unwrap() >= first);
    let o = Command::new(BIN)
        .args(["--node", &s.url, "status"])
        .current_dir("/")
        .env_remove("WORMFS_TOKEN")
        .env_remove("WORMFS_DATA_DIR")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(6), "no token found");

    let status = s.term();
    assert!(status.success(), "SIGTERM exit: {status:?}");
}

/// Config errors name the key and the line; `config example` is a valid config.
#[test]
fn config_errors_and_example() {
    let t = tempfile::tempdir().unwrap();
    let ex = Command::new(BIN)
        .args(["config", "example"])
        .output()
        .unwrap();
    assert!(ex.status.success());
    std::fs::write(t.path().join("ex.toml"), &ex.stdout).unwrap();
    let ok = Command::new(BIN)
        .args(["config", "check"])
        .arg(t.path().join("ex.toml"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::write(
        t.path().join("bad.toml"),
        "[storage]\nblock_size_bytes = 262144\ndefualt_policy = \"ec:4+2\"\n",
    )
    .unwrap();
    let bad = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(t.path().join("bad.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        err.contains("defualt_policy") && err.contains("line 3"),
        "{err}"
    );
    std::fs::write(
        t.path().join("bad2.toml"),
        "[storage]\ndefault_policy = \"ec:4+x\"\n",
    )
    .unwrap();
    let bad = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(t.path().join("bad2.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("default_policy") && err.contains("line 2") && err.contains("ec:4+x"),
        "{err}"
    );
}

/// kill -9 during a stream of commits: after a restart, every acknowledged write is there.
#[test]
fn kill_9_loses_nothing_acknowledged() {
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(t.path(), port, &[]);
    std::fs::write(t.path().join("f"), vec![42u8; 200_000]).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (url, cwd, st, ak) = (
        s.url.clone(),
        t.path().to_owned(),
        stop.clone(),
        acked.clone(),
    );
    let writer = std::thread::spawn(move || {
        let mut i = 0;
        while !st.load(std::sync::atomic::Ordering::Relaxed) && i < 400 {
            let o = Command::new(BIN)
                .args(["--node", &url, "put", "f", &format!("/k/f{i}")])
                .current_dir(&cwd)
                .output()
                .unwrap();
            if o.status.success() {
                ak.lock().unwrap().push(i);
            }
            i += 1;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < 15 {
        assert!(Instant::now() < deadline, "writes did not progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let s = Server::start(t.path(), port, &[]);
    let ls = s.json(&["ls", "/k"]);
    let names: Vec<String> = ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    for i in &acked {
        assert!(
            names.contains(&format!("f{i}")),
            "acknowledged /k/f{i} lost after kill -9"
        );
    }
    // Nothing half-visible: every listed file reads back whole.
    for n in &names {
        s.ok(&["get", &format!("/k/{n}"), "x"]);
        assert_eq!(
            std::fs::read(t.path().join("x")).unwrap(),
            vec![42u8; 200_000]
        );
    }
    assert!(s.term().success());
}

/// Peak memory stays bounded: after a 1 GiB streaming ingest into ec:8+3 (eleven folder-disks)
/// and a full read back, the node's VmHWM is under 256 MiB.
#[test]
fn peak_memory_of_a_1_gib_ingest_is_bounded() {
    let t = tempfile::tempdir().unwrap();
    let mut args = Vec::new();
    for i in 0..11 {
        args.push("--disk".to_string());
        args.push(t.path().join(format!("d{i}")).display().to_string());
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::start(t.path(), free_port(), &a);
    let size = 1usize << 30;
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(t.path().join("big")).unwrap());
        let mut block = vec![0u8; 1 << 20];
        for i in 0..(size >> 20) {
            block
                .iter_mut()
                .enumerate()
                .for_each(|(j, b)| *b = (i * 31 + j * 7) as u8);
            f.write_all(&block).unwrap();
        }
    }
    s.ok(&["put", "big", "/big", "--policy", "ec:8+3"]);
    s.ok(&["get", "/big", "/dev/null"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    println!("node VmHWM after 1 GiB ec:8+3 ingest and read: {hwm_kib} KiB");
    assert!(hwm_kib < 256 * 1024, "peak RSS {hwm_kib} KiB");
    assert!(s.term().success());
}

/// The batched path (issue #20): a folder of small files put several at a time, so their
/// intents and commits share Raft entries (group commit), with the node killed (abort, as a
/// power cut would) at each crash point of the ingest and of the group commit. After a
/// restart: every file the CLI acknowledged is there, whole; every file there is whole (no
/// half-visible file); the sources are untouched; and after the sweep exactly the visible
/// files' parts remain.
#[test]
fn crash_points_of_a_batched_tree_put() {
    let fast_sweep = crash_test_sweep();
    // Each point is passed this many times before the crash, so that many files were
    // acknowledged by then and must survive it (a group commit point is reached once per
    // batch, a part's once per part, an ingest's once per file). With 16 files at once a batch
    // holds at most 16 commits (a small file's one Raft write), so the 96 files make at least 6.
    for (i, (point, skip)) in [
        ("group-commit-before-write", "3"),
        ("group-commit-after-write", "3"),
        ("part-renamed-before-sync", "90"),
        // (A small file has no intent: its parts are claimed by nothing until its commit.)
        ("ingest-after-parts", "30"),
        ("ingest-after-commit", "30"),
    ]
    .iter()
    .enumerate()
    {
        let t = tempfile::tempdir().unwrap();
        let port = free_port();
        let src = t.path().join("photos");
        std::fs::create_dir_all(&src).unwrap();
        let mut files = std::collections::BTreeMap::new();
        for f in 0..96u32 {
            let len = 1 + (f as usize * 977 + i * 131) % 6000;
            let data: Vec<u8> = (0..len)
                .map(|x| (x as u32 * 31 + f * 7 + i as u32) as u8)
                .collect();
            let name = format!("IMG_{f:04}.jpg");
            std::fs::write(src.join(&name), &data).unwrap();
            files.insert(name, data);
        }
        let mut env = fast_sweep.to_vec();
        env.push(("WORMFS_CRASH_AT", point));
        env.push(("WORMFS_CRASH_SKIP", skip));
        let mut s = Server::start_env(t.path(), port, &[], &env);
        let o = s.cli(&["put", "photos", "/Photos", "--jobs", "16"]);
        assert!(
            !o.status.success(),
            "{point}: the whole put should not be acknowledged"
        );
        let st = s.child.wait().unwrap();
        assert!(!st.success(), "{point}: the node should have aborted");
        // The files the CLI said were stored: "photos/IMG_0001.jpg -> /Photos/IMG_0001.jpg (..)".
        let acknowledged: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split(" -> /Photos/").nth(1))
            .filter_map(|rest| rest.split(' ').next().map(str::to_owned))
            .collect();
        for (name, data) in &files {
            assert_eq!(
                &std::fs::read(src.join(name)).unwrap(),
                data,
                "{point}: source {name} changed"
            );
        }
        let s = Server::start_env(t.path(), port, &[], &fast_sweep);
        let visible: Vec<String> = if s.ls_names("/").is_empty() {
            Vec::new()
        } else {
            s.ls_names("/Photos")
        };
        for name in &acknowledged {
            assert!(
                visible.contains(name),
                "{point}: acknowledged {name} lost after the crash (visible: {visible:?})"
            );
        }
        for name in &visible {
            let back = t.path().join("back");
            s.ok(&["get", &format!("/Photos/{name}"), back.to_str().unwrap()]);
            assert_eq!(
                &std::fs::read(&back).unwrap(),
                files
                    .get(name)
                    .unwrap_or_else(|| panic!("{point}: unknown {name}")),
                "{point}: {name} is not whole"
            );
        }
        assert!(
            !acknowledged.is_empty() && visible.len() < files.len(),
            "{point}: the crash should fall mid-put, after some files were acknowledged \
             ({} acknowledged, {} visible)",
            acknowledged.len(),
            visible.len()
        );
        s.ok(&["admin", "sweep"]);
        let parts = part_count(&t.path().join("wormfs-data/disks"));
        assert_eq!(
            parts,
            3 * visible.len(),
            "{point}: after the sweep, exactly the visible files' parts (copies:3) remain"
        );
        assert!(s.term().success());
    }
}

/// The crash tests' environment: leases and the orphan grace at 1 ms, so that the sweep after
/// a restart removes whatever a crash left. Fails loudly instead of skipping when the
/// crash-points feature is off.
fn crash_test_sweep() -> [(&'static str, &'static str); 2] {
    if !cfg!(feature = "crash-points") {
        panic!("this test needs the crash-points feature: run the suite with tests/run-all.sh (--features wormfs-server/crash-points)");
    }
    [
        ("WORMFS_INGEST__LEASE_MS", "1"),
        ("WORMFS_INGEST__ORPHAN_GRACE_MS", "1"),
    ]
}

fn part_count(dir: &Path) -> usize {
    fn walk(d: &Path, n: &mut usize) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, n);
            } else if p.extension().is_some_and(|x| x == "wp") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(dir, &mut n);
    n
}

/// Killed at each named point of the ingest protocol and restarted, the node shows the file
/// fully and exactly once (crash after commit) or not at all (before), the source is kept, and
/// no orphan part survives the sweep.
#[test]
fn crash_points_of_the_ingest_protocol() {
    let fast_sweep = crash_test_sweep();
    for (i, point) in [
        "ingest-after-intent",
        "ingest-after-parts",
        "ingest-after-commit",
    ]
    .iter()
    .enumerate()
    {
        let t = tempfile::tempdir().unwrap();
        let port = free_port();
        let data: Vec<u8> = (0..2_500_000u32)
            .map(|x| (x % 253) as u8 ^ i as u8)
            .collect();
        std::fs::write(t.path().join("src.mkv"), &data).unwrap();
        let mut env = fast_sweep.to_vec();
        env.push(("WORMFS_CRASH_AT", point));
        let mut s = Server::start_env(t.path(), port, &[], &env);
        let o = s.cli(&["put", "src.mkv", "/f.mkv"]);
        assert!(
            !o.status.success(),
            "{point}: the put should not be acknowledged"
        );
        let st = s.child.wait().unwrap();
        assert!(!st.success(), "{point}: the node should have aborted");
        assert_eq!(
            std::fs::read(t.path().join("src.mkv")).unwrap(),
            data,
            "{point}: source changed"
        );
        let s = Server::start_env(t.path(), port, &[], &fast_sweep);
        let ls = s.json(&["ls", "/"]);
        let names: Vec<&str> = ls["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        s.ok(&["admin", "sweep"]);
        let parts = part_count(&t.path().join("wormfs-data/disks"));
        if *point == "ingest-after-commit" {
            assert_eq!(names, vec!["f.mkv"], "{point}");
            s.ok(&["get", "/f.mkv", "back"]);
            assert_eq!(
                std::fs::read(t.path().join("back")).unwrap(),
                data,
                "{point}"
            );
            assert_eq!(
                parts, 6,
                "{point}: exactly the committed file's parts remain"
            );
        } else {
            assert!(names.is_empty(), "{point}: half-visible file {names:?}");
            assert_eq!(parts, 0, "{point}: orphan parts left after the sweep");
        }
        assert!(s.term().success());
    }
}
