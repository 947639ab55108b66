//! Recovery from the disks on three machines whose metadata is gone on every one: each of
//! the others scans its disks (`--scan-out`), one machine recovers with their scans, starts
//! as the only voter, and the others, started after it with an empty `meta/`, join it and
//! get the namespace; every file reads back byte for byte through each machine.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::common::machines::{cluster, peers_of, share_secret, start_all, voters, Machine};
use crate::common::process::{local, wait_for, Server};

const ENV: [(&str, &str); 7] = [
    ("WORMFS_STORAGE__BLOCK_SIZE_BYTES", "65536"),
    ("WORMFS_STORAGE__SEGMENT_PART_BYTES", "262144"),
    ("WORMFS_STORAGE__RESERVE_FREE_BYTES", "0"),
    ("WORMFS_META__BACKUP_INTERVAL_MS", "0"),
    ("WORMFS_INGEST__SWEEP_INTERVAL_MS", "3600000"),
    ("WORMFS_SCRUB__ENABLED", "false"),
    ("WORMFS_REPAIR__ENABLED", "false"),
];

fn put(
    s: &Server,
    dir: &Path,
    files: &mut BTreeMap<String, Vec<u8>>,
    path: &str,
    policy: &str,
    n: usize,
    seed: u64,
) {
    let bytes = crate::common::random_bytes(n, seed);
    let up = dir.join("upload");
    std::fs::write(&up, &bytes).unwrap();
    s.ok(&["put", up.to_str().unwrap(), path, "--policy", policy]);
    files.insert(path.to_owned(), bytes);
}

fn check_all(s: &Server, dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (path, want) in files {
        let out = dir.join("readback");
        let _ = std::fs::remove_file(&out);
        s.ok(&["get", path, out.to_str().unwrap()]);
        assert!(std::fs::read(&out).unwrap() == *want, "{path} differs");
    }
}

fn disk_args(m: &Machine) -> Vec<String> {
    m.disks
        .iter()
        .flat_map(|d| ["--disk".to_string(), d.clone()])
        .collect()
}

#[test]
fn three_machines_recover_from_their_disks() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ms: Vec<Machine> = (1u8..=3)
        .map(|n| Machine::new(tmp.path(), n, u64::from(n) * 10))
        .collect();
    for m in &mut ms {
        m.disks = (0..2)
            .map(|i| m.dir.join(format!("d{i}")).display().to_string())
            .collect();
        m.env = ENV
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    }
    share_secret(&ms);
    let mut servers = start_all(&ms);
    let first = servers[0].as_ref().unwrap();
    wait_for(60, "three voters", || {
        (voters(&cluster(first)).len() == 3).then_some(())
    });
    wait_for(60, "six disks registered", || {
        let v = first.json(&["disks"]);
        (v["disks"].as_array().unwrap().len() == 6).then_some(())
    });
    let dir = ms[0].dir.clone();
    let mut files = BTreeMap::new();
    put(
        first,
        &dir,
        &mut files,
        "/films/a.mkv",
        "ec:4+2",
        2_300_000,
        1,
    );
    put(
        first,
        &dir,
        &mut files,
        "/photos/b.jpg",
        "copies:3",
        40_000,
        2,
    );
    // Every machine writes its backup (each to its own disks).
    let mut index = 0;
    for s in servers.iter().flatten() {
        let b = s.json(&["admin", "backup"]);
        index = index.max(b["log_index"].as_u64().unwrap());
    }
    put(
        first,
        &dir,
        &mut files,
        "/films/late.mkv",
        "ec:4+2",
        1_200_000,
        3,
    );
    put(
        first,
        &dir,
        &mut files,
        "/photos/late.jpg",
        "copies:3",
        9_000,
        4,
    );
    for s in servers.iter_mut() {
        assert!(s.take().unwrap().term().success());
    }
    for m in &ms {
        std::fs::remove_dir_all(m.dir.join("wormfs-data/meta")).unwrap();
    }

    // The others scan their disks; the first recovers with their scans.
    let mut scans = Vec::new();
    for m in &ms[1..] {
        let out = m.dir.join("scan.json");
        let mut a = vec!["recover".to_string(), "--from-disks".into()];
        a.extend(disk_args(m));
        a.extend(["--scan-out".into(), out.display().to_string()]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let said = local(&m.dir, &a);
        assert!(said.contains(&format!("node {}", m.id)), "{said}");
        scans.push(out);
    }
    let mut a = vec![
        "--json".to_string(),
        "recover".into(),
        "--from-disks".into(),
    ];
    a.extend(disk_args(&ms[0]));
    for s in &scans {
        a.extend(["--scan".into(), s.display().to_string()]);
    }
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let r: Value = serde_json::from_str(&local(&ms[0].dir, &a)).unwrap();
    assert!(r["backup"]["log_index"].as_u64().unwrap() <= index, "{r}");
    assert_eq!(r["node_id"].as_u64(), Some(ms[0].id), "{r}");
    assert_eq!(r["disks"].as_array().unwrap().len(), 6, "{r}");
    assert_eq!(r["from_backup"].as_u64(), Some(2), "{r}");
    let late: Vec<&str> = r["from_headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(late, ["/films/late.mkv", "/photos/late.jpg"], "{r}");
    assert!(r["incomplete"].as_array().unwrap().is_empty(), "{r}");
    assert!(r["damaged"].as_array().unwrap().is_empty(), "{r}");
    assert!(r["disks_not_scanned"].as_array().unwrap().is_empty(), "{r}");

    // The recovered machine first, then the others join it.
    let s1 = ms[0].start(&peers_of(&ms, 0));
    wait_for(60, "the recovered machine leads", || {
        (cluster(&s1)["leader"].as_u64() == Some(ms[0].id)).then_some(())
    });
    let listed = s1.ok(&["ls", "/films"]);
    assert!(listed.contains("late.mkv"), "{listed}");
    let s2 = ms[1].start(&peers_of(&ms, 1));
    let s3 = ms[2].start(&peers_of(&ms, 2));
    wait_for(90, "the others joined as voters", || {
        (voters(&cluster(&s1)).len() == 3).then_some(())
    });
    for s in [&s2, &s3] {
        wait_for(60, "the namespace on a joined machine", || {
            let o = s.cli(&["stat", "/films/late.mkv"]);
            o.status.success().then_some(())
        });
        check_all(s, &dir, &files);
    }
    check_all(&s1, &dir, &files);
    // The cluster takes writes again.
    let mut more = BTreeMap::new();
    put(&s3, &dir, &mut more, "/after.bin", "ec:4+2", 300_000, 5);
    check_all(&s1, &dir, &more);
}
