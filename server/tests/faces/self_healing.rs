//! Self-healing on one real node with folder-disks: disks deleted in rounds and repaired, bit
//! rot found by scrub and repaired, heal on read, a repair and a drain killed at named crash
//! points, and the life of a disk (drain, remove, replace) with its refusals. Faults are
//! real: folders deleted, bytes flipped in part files, processes aborted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::process::{files_under, free_port, wait_for, Server};

/// Small segments (1 MiB of ec:4+2, 256 KiB of copies:3), quick decisions, no scrub unless a
/// test turns it on.
const FAST: [(&str, &str); 9] = [
    ("WORMFS_STORAGE__BLOCK_SIZE_BYTES", "65536"),
    ("WORMFS_STORAGE__SEGMENT_PART_BYTES", "262144"),
    ("WORMFS_STORAGE__RESERVE_FREE_BYTES", "0"),
    ("WORMFS_REPAIR__DISK_OUT_AFTER_MS", "1000"),
    ("WORMFS_REPAIR__TRANQUILITY", "0"),
    ("WORMFS_REPAIR__RETRY_MIN_MS", "300"),
    ("WORMFS_REPAIR__RETRY_MAX_MS", "2000"),
    ("WORMFS_INGEST__LEASE_MS", "2000"),
    ("WORMFS_INGEST__ORPHAN_GRACE_MS", "2000"),
];

struct Node {
    s: Server,
    disks: Vec<PathBuf>,
    /// Path in WormFS -> the bytes it must hold.
    files: BTreeMap<String, Vec<u8>>,
    dir: PathBuf,
}

fn env_with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env: Vec<(&str, &str)> = FAST.to_vec();
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k, v));
    }
    if !extra.iter().any(|(k, _)| *k == "WORMFS_SCRUB__ENABLED") {
        env.push(("WORMFS_SCRUB__ENABLED", "false"));
    }
    env
}

fn disk_args(disks: &[PathBuf]) -> Vec<String> {
    disks
        .iter()
        .flat_map(|d| ["--disk".to_string(), d.display().to_string()])
        .collect()
}

fn start(dir: &Path, port: u16, disks: &[PathBuf], env: &[(&str, &str)]) -> Server {
    let args = disk_args(disks);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_env(dir, port, &a, env)
}

fn random(n: usize, seed: u64) -> Vec<u8> {
    crate::common::random_bytes(n, seed)
}

impl Node {
    fn new(dir: &Path, n_disks: usize, extra_env: &[(&str, &str)]) -> Node {
        let disks: Vec<PathBuf> = (0..n_disks).map(|i| dir.join(format!("d{i}"))).collect();
        let s = start(dir, free_port(), &disks, &env_with(extra_env));
        Node {
            s,
            disks,
            files: BTreeMap::new(),
            dir: dir.to_owned(),
        }
    }

    /// Stores `bytes` at `path` with `policy`.
    fn put(&mut self, path: &str, policy: &str, bytes: Vec<u8>) {
        let local = self.dir.join("upload");
        std::fs::write(&local, &bytes).unwrap();
        self.s
            .ok(&["put", local.to_str().unwrap(), path, "--policy", policy]);
        self.files.insert(path.to_owned(), bytes);
    }

    /// A few files of both policies, of several sizes and segment counts.
    fn fill(&mut self) {
        self.s.ok(&["mkdir", "-p", "/ec"]);
        self.s.ok(&["mkdir", "-p", "/c3"]);
        for (i, size) in [2_500_000usize, 700_000, 65_536, 10].iter().enumerate() {
            self.put(&format!("/ec/f{i}"), "ec:4+2", random(*size, i as u64));
            self.put(
                &format!("/c3/f{i}"),
                "copies:3",
                random(*size, 100 + i as u64),
            );
        }
    }

    /// `wormfs health --json`: its exit code and report.
    fn health(&self) -> (i32, Value) {
        let o = self.s.cli(&["--json", "health"]);
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("health --json: {e}: {o:?}"));
        (o.status.code().unwrap_or(-1), v)
    }

    fn wait_full(&self, secs: u64, what: &str) -> Value {
        wait_for(secs, what, || {
            let (code, v) = self.health();
            (code == 0).then_some(v)
        })
    }

    /// `(id, path, status, parts)` of every disk.
    fn disks(&self) -> Vec<(String, String, String, u64)> {
        let v = self.s.json(&["disks"]);
        v["disks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["disk_id"].as_str().unwrap().to_owned(),
                    d["path"].as_str().unwrap().to_owned(),
                    d["status"].as_str().unwrap().to_owned(),
                    d["parts"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    fn disk_id(&self, path: &Path) -> String {
        let p = path.display().to_string();
        self.disks()
            .into_iter()
            .find(|d| d.1 == p && d.2 != "removed")
            .unwrap_or_else(|| panic!("no disk at {p}"))
            .0
    }

    fn status_of(&self, id: &str) -> String {
        self.disks().into_iter().find(|d| d.0 == id).unwrap().2
    }

    /// Every stored file reads back byte for byte.
    fn check_files(&self) {
        for (path, want) in &self.files {
            let out = self.dir.join("readback");
            self.s.ok(&["get", path, out.to_str().unwrap()]);
            let got = std::fs::read(&out).unwrap();
            assert!(got == *want, "{path}: {} bytes read back differ", got.len());
        }
    }

    /// Part files on the disks that are not temporary files.
    fn part_files(&self) -> Vec<PathBuf> {
        self.part_files_on(&self.disks)
    }

    /// Part files on the disks still in the cluster (a removed disk keeps what it held).
    fn part_files_in_use(&self) -> Vec<PathBuf> {
        let live: Vec<PathBuf> = self
            .disks()
            .into_iter()
            .filter(|d| d.2 != "removed")
            .map(|d| PathBuf::from(d.1))
            .collect();
        let in_use: Vec<PathBuf> = self
            .disks
            .iter()
            .filter(|d| live.contains(d))
            .cloned()
            .collect();
        self.part_files_on(&in_use)
    }

    fn part_files_on(&self, disks: &[PathBuf]) -> Vec<PathBuf> {
        disks
            .iter()
            .flat_map(|d| files_under(&d.join("parts")))
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                !n.starts_with('.')
            })
            .collect()
    }
}

/// No segment below its policy: `health` says full and every tolerance bucket is at the
/// policy's (2 for both ec:4+2 and copies:3).
fn assert_full(v: &Value) {
    assert_eq!(v["verdict"], "full", "{v:#}");
    for t in v["by_tolerance"].as_array().unwrap() {
        assert_eq!(t["below_policy"], 0, "{v:#}");
        assert_eq!(t["tolerance"], 2, "{v:#}");
    }
}

#[test]
fn disks_lost_two_at_a_time_are_rebuilt_each_time_and_every_file_reads_back() {
    let t = tempfile::tempdir().unwrap();
    let mut n = Node::new(t.path(), 8, &[]);
    n.fill();
    let v = n.wait_full(30, "a full health report after the writes");
    assert_full(&v);
    assert!(
        v["summary"].as_str().unwrap().starts_with(
            "All 8 files can survive 2 more lost parts. The disks are folders on 1 filesystem"
        ),
        "{v:#}"
    );

    for round in 0..3 {
        let lost = [n.disks[2 * round].clone(), n.disks[2 * round + 1].clone()];
        let ids: Vec<String> = lost.iter().map(|d| n.disk_id(d)).collect();
        for d in &lost {
            std::fs::remove_dir_all(d).unwrap();
        }
        // Seen down or out, with health below full, then repaired.
        wait_for(30, "the deleted disks to go out", || {
            ids.iter().all(|id| n.status_of(id) == "out").then_some(())
        });
        let v = n.wait_full(120, "the repair of two lost disks");
        assert_full(&v);
        n.check_files();
        // The lost disks are replaced by fresh, empty ones at the same paths (the next round
        // needs six disks for ec:4+2).
        if round < 2 {
            for (id, d) in ids.iter().zip(&lost) {
                let out = n.s.ok(&["disk", "replace", id, d.to_str().unwrap()]);
                assert!(out.contains("replaces disk"), "{out}");
                assert_eq!(n.status_of(id), "removed");
            }
        }
    }
    let v = n.wait_full(60, "a full report at the end");
    assert_full(&v);
    n.check_files();
    let r = n.s.json(&["repair", "status"]);
    assert_eq!(r["queued"], 0, "{r:#}");
    assert!(
        r["counters"]["segments_repaired"].as_u64().unwrap() > 0,
        "{r:#}"
    );
    assert!(n.s.term().success());
}

/// Flips one byte in the data region of a part file (past its header and block table).
fn flip_byte(part: &Path, seed: u64) {
    let mut bytes = std::fs::read(part).unwrap();
    // Part files start with a 4 KiB-aligned region (header and block table); data follows.
    let header = 4096usize.min(bytes.len() - 1);
    let data = bytes.len() - header;
    let at = header + (seed as usize * 7919) % data.max(1);
    bytes[at] ^= 0x5a;
    std::fs::write(part, &bytes).unwrap();
}

#[test]
fn scrub_finds_every_flipped_byte_and_repair_fixes_each_one() {
    let t = tempfile::tempdir().unwrap();
    let mut n = Node::new(t.path(), 6, &[("WORMFS_SCRUB__ENABLED", "true")]);
    n.fill();
    n.wait_full(30, "a full report after the writes");
    // Let the first pass see the healthy parts (verified at their write: nothing due yet).
    let mut parts = n.part_files();
    parts.sort();
    let chosen: Vec<PathBuf> = parts
        .iter()
        .step_by(parts.len() / 5)
        .take(5)
        .cloned()
        .collect();
    for (i, p) in chosen.iter().enumerate() {
        flip_byte(p, i as u64 + 1);
    }
    let s = n.s.json(&["scrub", "now"]);
    assert!(s["requested_ms"].as_u64().is_some(), "{s:#}");
    let found = wait_for(120, "the scrub to find the five damaged parts", || {
        let s = n.s.json(&["scrub", "status"]);
        let found = s["counters"]["damaged_found"].as_u64().unwrap();
        (found >= chosen.len() as u64 && s["parts_verified"] == s["parts"]).then_some(found)
    });
    assert_eq!(found, chosen.len() as u64, "each flipped byte counted once");
    let v = n.wait_full(120, "repair of the damaged parts");
    assert_full(&v);
    n.check_files();
    // Every part on disk verifies again: a second scrub finds nothing new.
    n.s.ok(&["scrub", "--deep"]);
    wait_for(120, "a second, deep scrub", || {
        let s = n.s.json(&["scrub", "status"]);
        (s["parts_verified"] == s["parts"] && s["counters"]["state"] == "idle").then_some(())
    });
    let s = n.s.json(&["scrub", "status"]);
    assert_eq!(
        s["counters"]["damaged_found"].as_u64().unwrap(),
        found,
        "{s:#}"
    );
    assert_eq!(s["counters"]["deep_mismatches"], 0, "{s:#}");
    assert!(n.s.term().success());
}

#[test]
fn a_read_over_a_corrupt_part_returns_the_right_bytes_and_queues_its_repair() {
    let t = tempfile::tempdir().unwrap();
    let mut n = Node::new(
        t.path(),
        6,
        // Repair held back, so the queued segment can be seen before it is repaired.
        &[("WORMFS_REPAIR__ENABLED", "false")],
    );
    n.put("/a", "ec:4+2", random(900_000, 9));
    let stat = n.s.json(&["stat", "/a"]);
    let file_id = stat["file_id"].as_str().unwrap().to_owned();
    // Corrupt data part 0 of segment 0.
    let name = format!("{file_id}-s0-p0.wp");
    let part0 = n
        .part_files()
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy() == name)
        .unwrap();
    flip_byte(&part0, 3);
    n.check_files();
    let q = wait_for(30, "the damaged segment in the repair queue", || {
        let r = n.s.json(&["repair", "status"]);
        (r["queued"].as_u64().unwrap() >= 1).then_some(r)
    });
    assert_eq!(
        q["queue"][0]["segment"]["file_id"],
        file_id.as_str(),
        "{q:#}"
    );
    let (code, v) = n.health();
    assert_eq!(code, 1, "a damaged part is below policy: {v:#}");
    // stat names the damaged part.
    let stat = n.s.json(&["stat", "/a"]);
    let states: Vec<&str> = stat["segments"][0]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states.iter().filter(|s| **s == "damaged").count(),
        1,
        "{stat:#}"
    );
    assert_eq!(stat["tolerance"]["parts"], 1, "{stat:#}");
    assert_eq!(stat["tolerance"]["policy_parts"], 2, "{stat:#}");
    assert!(n.s.term().success());

    // With repair on, the node repairs it after a restart (the queue is in the metadata).
    let s = start(t.path(), free_port(), &n.disks, &env_with(&[]));
    n.s = s;
    let v = n.wait_full(60, "the queued repair after a restart");
    assert_full(&v);
    n.check_files();
    assert!(n.s.term().success());
}

#[test]
fn a_repair_killed_at_each_crash_point_resumes_and_leaves_no_orphan_or_duplicate() {
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut n = Node::new(t.path(), 7, &[]);
    n.fill();
    n.wait_full(30, "a full report after the writes");
    for (round, point) in [
        "repair_before_finish",
        "repair_after_finish",
        "repair_before_commit",
    ]
    .iter()
    .enumerate()
    {
        let lost = n.disks[round].clone();
        let id = n.disk_id(&lost);
        assert!(n.s.term().success());
        std::fs::remove_dir_all(&lost).unwrap();
        // The first repair to reach the point aborts the node there.
        let crash = env_with(&[("WORMFS_CRASH_AT", point)]);
        let mut s = start(t.path(), port, &n.disks, &crash);
        wait_for(60, "the node to abort at the crash point", || {
            s.child.try_wait().unwrap().map(|_| ())
        });
        let log = std::fs::read_to_string(&s.log).unwrap();
        assert!(log.contains(&format!("crash point {point}")), "{log}");
        n.s = start(t.path(), port, &n.disks, &env_with(&[]));
        let v = n.wait_full(120, "the repair to resume after the crash");
        assert_full(&v);
        n.check_files();
        // The parts written before the crash are orphans: swept once older than the grace
        // time; then every part file on the disks is one the metadata names, once.
        wait_for(30, "the sweep of the crashed repair's parts", || {
            n.s.ok(&["admin", "sweep"]);
            let on_disk = n.part_files_in_use().len() as u64;
            let named: u64 = n.disks().iter().filter(|d| d.2 == "up").map(|d| d.3).sum();
            (on_disk == named).then_some(())
        });
        // A fresh disk in the lost one's slot for the next round.
        n.s.ok(&["disk", "replace", &id, lost.to_str().unwrap()]);
        n.wait_full(60, "full after the replacement");
    }
    assert!(n.s.term().success());
}

#[test]
fn drain_then_remove_a_disk_and_the_refusals_say_why() {
    let t = tempfile::tempdir().unwrap();
    let mut n = Node::new(t.path(), 7, &[]);
    n.fill();
    n.wait_full(30, "a full report after the writes");
    let d0 = n.disk_id(&n.disks[0].clone());
    let d1 = n.disk_id(&n.disks[1].clone());
    let d2 = n.disk_id(&n.disks[2].clone());
    // Removing a disk that holds parts is refused without --force, naming drain.
    n.s.fails(&["disk", "remove", &d0], 2, "drain it first");
    // Impact of a disk: nothing becomes unreadable, some segments drop to tolerance 1.
    let imp = n.s.json(&["disk", "impact", &d0]);
    assert_eq!(imp["impact"]["unreadable_segments"], 0, "{imp:#}");
    assert!(imp["impact"]["segments"].as_u64().unwrap() > 0, "{imp:#}");

    // Drain d0: its parts are copied; it shows drained; then it can be removed.
    let out = n.s.ok(&["disk", "drain", &d0]);
    assert!(out.contains("draining"), "{out}");
    wait_for(120, "disk 0 to be drained", || {
        (n.status_of(&d0) == "drained").then_some(())
    });
    assert_full(&n.wait_full(30, "full redundancy during and after the drain"));
    n.check_files();
    let out = n.s.ok(&["disk", "remove", &d0]);
    assert!(out.contains("can be unplugged"), "{out}");
    assert_eq!(n.status_of(&d0), "removed");

    // Six disks are left for ec:4+2: draining another is refused with the numbers.
    n.s.fails(&["disk", "drain", &d1], 2, "needs 6 disks");

    // Killed during a drain, at the crash point before the commit: it resumes after a restart.
    let port = n.s.port;
    n.s.ok(&["disk", "add", t.path().join("d7").to_str().unwrap()]);
    n.disks.push(t.path().join("d7"));
    assert!(n.s.term().success());
    let crash = env_with(&[("WORMFS_CRASH_AT", "repair_before_commit")]);
    let mut s = start(t.path(), port, &n.disks, &crash);
    s.ok(&["disk", "drain", &d2]);
    wait_for(60, "the node to abort during the drain", || {
        s.child.try_wait().unwrap().map(|_| ())
    });
    n.s = start(t.path(), port, &n.disks, &env_with(&[]));
    wait_for(120, "disk 2 drained after the restart", || {
        (n.status_of(&d2) == "drained").then_some(())
    });
    assert_full(&n.wait_full(30, "full redundancy after the drain"));
    n.check_files();
    // The disk added at run time is still there after the restart.
    assert!(n
        .disks()
        .iter()
        .any(|d| d.1.ends_with("/d7") && d.2 == "up"));
    wait_for(30, "no part left twice after the sweep", || {
        n.s.ok(&["admin", "sweep"]);
        let on_disk = n.part_files_in_use().len() as u64;
        let named: u64 = n.disks().iter().map(|d| d.3).sum();
        (on_disk == named).then_some(())
    });
    assert!(n.s.term().success());
}
