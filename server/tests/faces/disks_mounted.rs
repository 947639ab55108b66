//! Disk tests on real filesystems: tmpfs mounts of chosen sizes, made in the node's own mount
//! namespace (`unshare`), so they need no root where user namespaces are allowed and vanish
//! with the process.

use std::path::PathBuf;

use crate::common::process::{files_under, free_port, Server};

const MIB: u64 = 1 << 20;
/// Small disks: keep 1 MiB free instead of the default 256 MiB.
const RESERVE: [(&str, &str); 1] = [("WORMFS_STORAGE__RESERVE_FREE_BYTES", "1048576")];

fn disk_args(dirs: &[PathBuf]) -> Vec<String> {
    dirs.iter()
        .flat_map(|d| ["--disk".to_string(), d.display().to_string()])
        .collect()
}

/// Disks of unequal sizes fill in proportion to their free space, and once they are full an
/// ingest fails cleanly: an error, nothing visible, the local source untouched.
#[test]
fn unequal_disks_fill_in_proportion_and_full_fails_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let sizes = [24 * MIB, 24 * MIB, 48 * MIB, 48 * MIB, 96 * MIB, 96 * MIB];
    let dirs: Vec<PathBuf> = (0..sizes.len())
        .map(|i| t.path().join(format!("disk{i}")))
        .collect();
    let mounts: Vec<(PathBuf, u64)> = dirs.iter().cloned().zip(sizes).collect();
    let args = disk_args(&dirs);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::start_with_tmpfs(t.path(), free_port(), &a, &RESERVE, &mounts);
    let data = vec![7u8; 3 * MIB as usize];
    std::fs::write(t.path().join("f"), &data).unwrap();
    // ec:2+1 over six disks: each file puts 1.5 MiB-ish parts on three of them.
    for i in 0..40 {
        s.ok(&["put", "f", &format!("/fill/f{i}"), "--policy", "ec:2+1"]);
    }
    let disks = s.json(&["disks"]);
    let used: Vec<f64> = disks["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let total = d["space"]["total_bytes"].as_u64().unwrap() as f64;
            let free = d["space"]["free_bytes"].as_u64().unwrap() as f64;
            (total - free) / total
        })
        .collect();
    let mean = used.iter().sum::<f64>() / used.len() as f64;
    for u in &used {
        assert!(
            *u > mean * 0.5 && *u < mean * 1.6,
            "fill fractions not proportional: {used:?}"
        );
    }
    // Keep writing until the disks are full: the failure is clean.
    let mut failed = None;
    for i in 40..200 {
        let o = s.cli(&["put", "f", &format!("/fill/f{i}"), "--policy", "ec:2+1"]);
        if !o.status.success() {
            failed = Some((i, o));
            break;
        }
    }
    let (i, o) = failed.expect("the disks never filled up");
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("disks") || err.contains("full"), "{err}");
    assert_eq!(
        std::fs::read(t.path().join("f")).unwrap(),
        data,
        "source changed"
    );
    let st = s.cli(&["stat", &format!("/fill/f{i}")]);
    assert_eq!(
        st.status.code(),
        Some(3),
        "a failed ingest left a visible file"
    );
    assert_eq!(s.json(&["status"])["ingests_in_progress"], 0);
    assert!(s.term().success());
}

/// A disk that is unmounted while the node runs gets no part: its mount point (now a plain
/// folder on the parent filesystem) stays empty, the disk shows as missing, and ingest goes on
/// with the other disks.
#[test]
fn unmounted_disk_receives_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..6).map(|i| t.path().join(format!("disk{i}"))).collect();
    let mounts: Vec<(PathBuf, u64)> = dirs.iter().map(|d| (d.clone(), 64 * MIB)).collect();
    let args = disk_args(&dirs);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::start_with_tmpfs(t.path(), free_port(), &a, &RESERVE, &mounts);
    std::fs::write(t.path().join("f"), vec![1u8; 400_000]).unwrap();
    s.ok(&["put", "f", "/before", "--policy", "ec:3+2"]);
    s.unmount(&dirs[5]);
    for i in 0..12 {
        s.ok(&["put", "f", &format!("/after{i}"), "--policy", "ec:3+2"]);
    }
    // Outside the node's namespace the mount point is the bare folder underneath.
    let under: Vec<_> = files_under(&dirs[5]);
    assert!(
        under.is_empty(),
        "parts landed on the parent filesystem: {under:?}"
    );
    let disks = s.json(&["disks"]);
    let gone = disks["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"].as_str() == Some(dirs[5].to_str().unwrap()))
        .unwrap()
        .clone();
    assert_eq!(gone["state"], "missing", "{gone}");
    for i in 0..12 {
        let st = s.json(&["stat", &format!("/after{i}")]);
        for p in st["segments"][0]["parts"].as_array().unwrap() {
            assert_ne!(
                p["disk_path"].as_str(),
                dirs[5].to_str(),
                "a part was placed on the unmounted disk"
            );
        }
    }
    // Files written before still read (from the surviving parts).
    s.ok(&["get", "/before", "back"]);
    assert_eq!(
        std::fs::read(t.path().join("back")).unwrap(),
        vec![1u8; 400_000]
    );
    assert!(s.term().success());
}

/// Two empty disks added to six half-full ones: `rebalance` moves parts onto them until every
/// disk is within 5% of the cluster's free fraction, with every file whole and at full
/// redundancy throughout.
#[test]
fn rebalance_fills_new_disks_until_every_disk_is_within_five_percent() {
    let t = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..8).map(|i| t.path().join(format!("disk{i}"))).collect();
    let mounts: Vec<(PathBuf, u64)> = dirs.iter().cloned().map(|d| (d, 32 * MIB)).collect();
    let args = disk_args(&dirs[..6]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = [
        ("WORMFS_STORAGE__RESERVE_FREE_BYTES", "0"),
        ("WORMFS_STORAGE__BLOCK_SIZE_BYTES", "65536"),
        ("WORMFS_STORAGE__SEGMENT_PART_BYTES", "262144"),
        ("WORMFS_REPAIR__TRANQUILITY", "0"),
        ("WORMFS_SCRUB__ENABLED", "false"),
    ];
    let s = Server::start_with_tmpfs(t.path(), free_port(), &a, &env, &mounts);
    let mut files = Vec::new();
    for i in 0..12u64 {
        let bytes = crate::common::random_bytes(5 * MIB as usize, i);
        std::fs::write(t.path().join("f"), &bytes).unwrap();
        s.ok(&["put", "f", &format!("/r/f{i}"), "--policy", "ec:4+2"]);
        files.push(bytes);
    }
    for d in &dirs[6..] {
        s.ok(&["disk", "add", d.to_str().unwrap()]);
    }
    let dry = s.json(&["rebalance", "--dry-run"]);
    assert!(dry["parts_queued"].as_u64().unwrap() > 0, "{dry:#}");
    assert_eq!(dry["moves_left"], 0, "a dry run asks for nothing: {dry:#}");
    let r = s.json(&["rebalance"]);
    assert!(r["parts_queued"].as_u64().unwrap() > 0, "{r:#}");
    // Rounds follow until nothing is left to move.
    let after = crate::common::process::wait_for(120, "the rounds of moves to finish", || {
        let st = s.json(&["repair", "status"]);
        let after = s.json(&["rebalance", "--dry-run"]);
        (st["queued"] == 0 && st["moves_left"] == 0 && after["parts_queued"] == 0).then_some(after)
    });
    let f = after["cluster_free_fraction"].as_f64().unwrap();
    for d in after["disks"].as_array().unwrap() {
        let frac = d["free_fraction"].as_f64().unwrap();
        assert!(
            (frac - f).abs() <= 0.05 + 1e-9,
            "disk at {frac}, cluster at {f}: {after:#}"
        );
    }
    let o = s.cli(&["--json", "health"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    for (i, want) in files.iter().enumerate() {
        s.ok(&["get", &format!("/r/f{i}"), "back"]);
        assert!(
            std::fs::read(t.path().join("back")).unwrap() == *want,
            "f{i}"
        );
    }
}

/// A store filled up says so: `put` fails with "disk full", `disks` marks the full disks
/// `full` (not `active`), and `status` says the store is full.
#[test]
fn a_full_store_says_disk_full_in_put_disks_and_status() {
    let t = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..3).map(|i| t.path().join(format!("disk{i}"))).collect();
    let mounts: Vec<(PathBuf, u64)> = dirs.iter().map(|d| (d.clone(), 8 * MIB)).collect();
    let args = disk_args(&dirs);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = [
        ("WORMFS_STORAGE__RESERVE_FREE_BYTES", "0"),
        ("WORMFS_META__BACKUP_INTERVAL_MS", "0"),
        ("WORMFS_RETENTION__TRASH_DAYS", "0"),
        ("WORMFS_INGEST__LEASE_MS", "2000"),
        ("WORMFS_INGEST__ORPHAN_GRACE_MS", "2000"),
    ];
    let s = Server::start_with_tmpfs(t.path(), free_port(), &a, &env, &mounts);
    let status = s.json(&["status"]);
    assert_eq!(status["health"], "healthy", "{status:#}");
    // A copy on each disk leaves each with well under a MiB.
    let big = vec![3u8; (7 * MIB + MIB / 4) as usize];
    std::fs::write(t.path().join("big"), &big).unwrap();
    s.ok(&["put", "big", "/big", "--policy", "copies:3"]);
    std::fs::write(t.path().join("small"), vec![1u8; 300_000]).unwrap();
    let o = s.cli(&["put", "small", "/small", "--policy", "copies:3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("disk full"), "{err}");
    let disks = s.json(&["disks"]);
    for d in disks["disks"].as_array().unwrap() {
        assert_eq!(d["state"], "full", "{disks:#}");
        assert!(d["part_bytes"].as_u64().unwrap() >= 7 * MIB, "{disks:#}");
        assert_eq!(d["mount"]["device"], "wormfs-test", "{disks:#}");
    }
    let text = s.ok(&["disks"]);
    let rows: Vec<&str> = text.lines().filter(|l| l.contains("/disk")).collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows.iter().all(|l| l.contains(" full ")), "{text}");
    assert!(!text.contains(" up "), "{text}");
    let status = s.json(&["status"]);
    assert_eq!(status["health"], "full", "{status:#}");
    assert_eq!(status["disks_full"], 3, "{status:#}");
    let text = s.ok(&["status"]);
    assert!(text.contains("health:   full (the store is full"), "{text}");
    let text = String::from_utf8_lossy(&s.cli(&["health"]).stdout).into_owned();
    assert!(text.contains("The store is full"), "{text}");
    // Freed space is taken again.
    s.ok(&["rm", "/big"]);
    crate::common::process::wait_for(30, "the disks active again", || {
        s.ok(&["admin", "sweep"]);
        let v = s.json(&["status"]);
        (v["health"] == "healthy").then_some(())
    });
    s.ok(&["put", "small", "/small", "--policy", "copies:3"]);
    assert!(s.term().success());
}
