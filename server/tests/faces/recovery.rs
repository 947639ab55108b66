//! Recovery from the disks alone, on one real node: metadata backups written to the disks,
//! then `meta/` deleted and rebuilt by `wormfs recover --from-disks` from the newest backup
//! that verifies and the part headers; the files are read back byte for byte through the
//! restarted node, and the report is checked against what was done.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::process::{files_under, free_port, local, Server};

/// Small segments (1 MiB of ec:4+2, 256 KiB of copies:3); backups only when asked; no sweep
/// and no scrub during the test.
const ENV: [(&str, &str); 7] = [
    ("WORMFS_STORAGE__BLOCK_SIZE_BYTES", "65536"),
    ("WORMFS_STORAGE__SEGMENT_PART_BYTES", "262144"),
    ("WORMFS_STORAGE__RESERVE_FREE_BYTES", "0"),
    ("WORMFS_META__BACKUP_INTERVAL_MS", "0"),
    ("WORMFS_INGEST__SWEEP_INTERVAL_MS", "3600000"),
    ("WORMFS_SCRUB__ENABLED", "false"),
    ("WORMFS_REPAIR__ENABLED", "false"),
];

struct One {
    dir: PathBuf,
    port: u16,
    disks: Vec<PathBuf>,
    /// Path -> the bytes it must hold.
    files: BTreeMap<String, Vec<u8>>,
}

impl One {
    fn new(dir: &Path) -> One {
        One {
            dir: dir.to_owned(),
            port: free_port(),
            disks: (0..6).map(|i| dir.join(format!("d{i}"))).collect(),
            files: BTreeMap::new(),
        }
    }

    fn disk_args(&self) -> Vec<String> {
        self.disks
            .iter()
            .flat_map(|d| ["--disk".to_string(), d.display().to_string()])
            .collect()
    }

    fn start(&self) -> Server {
        let args = self.disk_args();
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start_env(&self.dir, self.port, &a, &ENV)
    }

    fn put(&mut self, s: &Server, path: &str, policy: &str, bytes: Vec<u8>, extra: &[&str]) {
        let up = self.dir.join("upload");
        std::fs::write(&up, &bytes).unwrap();
        let mut args = vec!["put", up.to_str().unwrap(), path, "--policy", policy];
        args.extend_from_slice(extra);
        s.ok(&args);
        self.files.insert(path.to_owned(), bytes);
    }

    /// `wormfs [--json] recover --from-disks ...` in the node's folder (the node stopped).
    fn recover(&self, extra: &[&str]) -> Value {
        let mut args: Vec<String> = vec!["--json".into(), "recover".into(), "--from-disks".into()];
        args.extend(self.disk_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        serde_json::from_str(&local(&self.dir, &a)).unwrap()
    }

    fn meta(&self) -> PathBuf {
        self.dir.join("wormfs-data").join("meta")
    }
}

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    crate::common::random_bytes(n, seed)
}

fn check(s: &Server, dir: &Path, path: &str, want: &[u8]) {
    let out = dir.join("readback");
    let _ = std::fs::remove_file(&out);
    s.ok(&["get", path, out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == want, "{path} differs");
}

fn paths(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect()
}

fn backup(s: &Server) -> u64 {
    let b = s.json(&["admin", "backup"]);
    assert!(b["disks"].as_array().unwrap().len() >= 3, "{b}");
    b["log_index"].as_u64().unwrap()
}

fn file_id(s: &Server, path: &str) -> String {
    s.json(&["stat", path])["file_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Files before and after a backup, renames, a delete, a replace and an append after it;
/// `meta/` deleted; a dry run writes nothing; the recovery brings every file back where the
/// report says, byte for byte, and the node works on.
#[test]
fn recover_from_disks_after_the_metadata_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = One::new(tmp.path());
    let s = n.start();
    n.put(
        &s,
        "/keep/a.bin",
        "ec:4+2",
        bytes(3 * 1024 * 1024 + 123, 1),
        &[],
    );
    n.put(&s, "/keep/b.bin", "copies:3", bytes(5000, 2), &[]);
    n.put(&s, "/keep/log.txt", "copies:3", bytes(100, 3), &[]);
    n.put(&s, "/ren/r.bin", "copies:3", bytes(7000, 4), &[]);
    n.put(&s, "/del/d.bin", "ec:4+2", bytes(300_000, 5), &[]);
    n.put(&s, "/repl/x.bin", "copies:3", bytes(4000, 6), &[]);
    let index = backup(&s);
    let health = s.ok(&["health"]);
    assert!(health.contains("metadata backup:"), "{health}");
    // After the backup.
    n.put(&s, "/late/c.bin", "ec:4+2", bytes(2_500_000, 7), &[]);
    n.put(&s, "/late/deep/e.bin", "copies:3", bytes(9000, 8), &[]);
    s.ok(&["mv", "/ren/r.bin", "/ren/r2.bin"]);
    s.ok(&["rm", "/del/d.bin"]);
    let old_x = n.files["/repl/x.bin"].clone();
    n.put(
        &s,
        "/repl/x.bin",
        "copies:3",
        bytes(6000, 9),
        &["--conflict", "replace"],
    );
    let tail = bytes(50, 10);
    std::fs::write(n.dir.join("tail"), &tail).unwrap();
    s.ok(&[
        "append",
        n.dir.join("tail").to_str().unwrap(),
        "/keep/log.txt",
    ]);
    n.files.get_mut("/keep/log.txt").unwrap().extend(&tail);
    let status = s.json(&["status"]);
    assert!(
        status["meta_backup"]["changes_since"].as_u64().unwrap() > 0,
        "{status}"
    );
    assert!(s.term().success());

    std::fs::remove_dir_all(n.meta()).unwrap();
    let dry = n.recover(&["--dry-run"]);
    assert!(!n.meta().exists(), "a dry run wrote {}", n.meta().display());
    let r = n.recover(&[]);
    for v in [&dry, &r] {
        assert_eq!(v["backup"]["log_index"].as_u64(), Some(index), "{v}");
        assert!(v["backups_refused"].as_array().unwrap().is_empty(), "{v}");
        assert_eq!(v["from_backup"].as_u64(), Some(6), "{v}");
        assert_eq!(
            paths(&v["from_headers"]),
            ["/late/c.bin", "/late/deep/e.bin", "/repl/x (1).bin"]
                .map(String::from)
                .into(),
            "{v}"
        );
        assert_eq!(paths(&v["appended"]), ["/keep/log.txt".to_string()].into());
        assert!(v["incomplete"].as_array().unwrap().is_empty(), "{v}");
        assert!(v["damaged"].as_array().unwrap().is_empty(), "{v}");
    }
    assert_eq!(dry["dry_run"], true);
    // The replacing file is brought back beside the backup's version, never over it.
    let renamed = r["from_headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["header_path"] == "/repl/x.bin")
        .unwrap();
    assert_eq!(renamed["path"], "/repl/x (1).bin", "{r}");
    assert_eq!(renamed["renamed"], true, "{r}");
    for f in r["from_headers"].as_array().unwrap() {
        // One machine holds every part: each segment was read and its BLAKE3 checked here.
        assert_eq!(f["segments_checked"], f["segments"], "{f}");
    }
    let text = std::fs::read_to_string(n.dir.join("wormfs-data/recovery-report.txt")).unwrap();
    assert!(text.contains("deletions after the backup"), "{text}");

    let s = n.start();
    // What the backup cannot know: the rename is undone (the file is at its old path), the
    // deleted file is back, the replaced version is back beside its replacement.
    let newer = n.files.insert("/repl/x.bin".into(), old_x).unwrap();
    n.files.insert("/repl/x (1).bin".into(), newer);
    for (path, want) in &n.files {
        check(&s, &n.dir, path, want);
    }
    let listed = s.ok(&["ls", "/ren"]);
    assert!(!listed.contains("r2.bin"), "{listed}");
    // The node works on: a new file, and nothing is at risk.
    n.put(&s, "/after/f.bin", "ec:4+2", bytes(70_000, 11), &[]);
    check(&s, &n.dir, "/after/f.bin", &n.files["/after/f.bin"]);
    let h = s.cli(&["health"]);
    assert_eq!(h.status.code(), Some(0), "{h:?}");
    // The recovered log continues after the backup's: a new backup sorts after the old ones
    // (pruning keeps the newest), it is not pruned at once.
    let after = backup(&s);
    assert!(after > index, "{after} <= {index}");
    for d in &n.disks {
        let mut names: Vec<String> = files_under(&d.join("meta-backups"))
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        if let Some(last) = names.last() {
            assert!(last.starts_with(&format!("meta-{after:020}-")), "{names:?}");
        }
    }
    // A second recovery into a folder that has metadata again is refused.
    drop(s);
    let o = std::process::Command::new(crate::common::process::BIN)
        .args(["recover", "--from-disks"])
        .args(n.disk_args())
        .current_dir(&n.dir)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("holds metadata already"),
        "{o:?}"
    );
}

/// The newest backup is damaged on every disk: the previous generation is used and the report
/// says so; what came after it is found in the headers; a file that lost a segment's parts
/// keeps its readable beginning under /lost+found/.
#[test]
fn a_damaged_backup_falls_back_to_the_previous_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = One::new(tmp.path());
    let s = n.start();
    n.put(&s, "/a.bin", "copies:3", bytes(20_000, 21), &[]);
    let first = backup(&s);
    n.put(&s, "/b.bin", "ec:4+2", bytes(1_500_000, 22), &[]);
    let second = backup(&s);
    assert!(second > first);
    n.put(&s, "/c.bin", "copies:3", bytes(3000, 23), &[]);
    let inc = bytes(2_600_000, 24);
    n.put(&s, "/inc.bin", "ec:4+2", inc.clone(), &[]);
    let inc_id = file_id(&s, "/inc.bin");
    assert!(s.term().success());

    // Damage the newest backup on every disk that holds it, in its database bytes.
    let mut damaged = 0;
    for d in &n.disks {
        for f in files_under(&d.join("meta-backups")) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(&format!("meta-{second:020}-")) {
                let mut b = std::fs::read(&f).unwrap();
                let at = b.len() - 100;
                b[at] ^= 0x55;
                std::fs::write(&f, b).unwrap();
                damaged += 1;
            }
        }
    }
    assert!(damaged >= 3, "the second backup is on {damaged} disks");
    // /inc.bin loses every part of segment 1 and three of the six of segment 2.
    let mut gone = 0;
    for d in &n.disks {
        for f in files_under(&d.join("parts")) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let seg2_part = |p: u32| name.ends_with(&format!("-s2-p{p}.wp"));
            if name.starts_with(&inc_id)
                && (name.contains("-s1-") || seg2_part(0) || seg2_part(1) || seg2_part(5))
            {
                std::fs::remove_file(&f).unwrap();
                gone += 1;
            }
        }
    }
    assert_eq!(gone, 9);
    // The whole data folder is lost this time (node.json, keys, token): it is made anew.
    let old_id = std::fs::read_to_string(n.dir.join("wormfs-data/node.json")).unwrap();
    std::fs::remove_dir_all(n.dir.join("wormfs-data")).unwrap();

    let r = n.recover(&[]);
    assert_eq!(r["backup"]["log_index"].as_u64(), Some(first), "{r}");
    let refused = r["backups_refused"].as_array().unwrap();
    assert_eq!(refused.len(), damaged, "{r}");
    for b in refused {
        assert!(b["error"].as_str().unwrap().contains("BLAKE3"), "{b}");
    }
    assert_eq!(r["from_backup"].as_u64(), Some(1), "{r}");
    assert_eq!(
        paths(&r["from_headers"]),
        ["/b.bin", "/c.bin"].map(String::from).into(),
        "{r}"
    );
    let incomplete = r["incomplete"].as_array().unwrap();
    assert_eq!(incomplete.len(), 1, "{r}");
    let i = &incomplete[0];
    assert_eq!(i["header_path"], "/inc.bin");
    let kept = format!("/lost+found/{inc_id}/inc.bin");
    assert_eq!(i["put_at"].as_str(), Some(kept.as_str()), "{i}");
    assert_eq!(i["bytes_kept"].as_u64(), Some(1024 * 1024), "{i}");
    let missing: Vec<(u64, usize)> = i["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["segment"].as_u64().unwrap(),
                m["parts_found"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(missing, vec![(1, 0), (2, 3)], "{i}");
    let text = std::fs::read_to_string(n.dir.join("wormfs-data/recovery-report.txt")).unwrap();
    assert!(text.contains("newer backup refused"), "{text}");

    // The backup's only machine's node id is kept.
    let new_id = std::fs::read_to_string(n.dir.join("wormfs-data/node.json")).unwrap();
    let id = |j: &str| serde_json::from_str::<Value>(j).unwrap()["node_id"].clone();
    assert_eq!(id(&old_id), id(&new_id));
    let s = n.start();
    for path in ["/a.bin", "/b.bin", "/c.bin"] {
        check(&s, &n.dir, path, &n.files[path]);
    }
    // Its first segment reads back; segment 2's three parts are kept with it (unreadable
    // until a fourth comes back), so the sweeper leaves them; segment 1 left nothing.
    let out = n.dir.join("first");
    s.ok(&["get", &kept, out.to_str().unwrap(), "--range", "0-1048575"]);
    assert!(std::fs::read(&out).unwrap() == inc[..1024 * 1024]);
    let size = s.json(&["stat", &kept])["size"].as_u64().unwrap();
    assert_eq!(size, 1024 * 1024 + (inc.len() as u64 - 2 * 1024 * 1024));
    let o = s.cli(&["get", &kept, out.to_str().unwrap()]);
    assert!(!o.status.success(), "the unreadable segment read back");
    assert_eq!(s.cli(&["health"]).status.code(), Some(2));
}

/// Backups without being asked: one soon after changes (every `meta.backup_interval_ms`), a
/// new one only when something changed, at most `meta.backup_keep` on each disk.
#[test]
fn backups_are_written_by_themselves_and_pruned() {
    let tmp = tempfile::tempdir().unwrap();
    let n = One::new(tmp.path());
    let args = n.disk_args();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut env: Vec<(&str, &str)> = ENV
        .iter()
        .copied()
        .filter(|(k, _)| *k != "WORMFS_META__BACKUP_INTERVAL_MS")
        .collect();
    env.extend([
        ("WORMFS_META__BACKUP_INTERVAL_MS", "1000"),
        ("WORMFS_META__BACKUP_KEEP", "2"),
    ]);
    let s = Server::start_env(&n.dir, n.port, &a, &env);
    let generations = || -> BTreeSet<String> {
        n.disks
            .iter()
            .flat_map(|d| files_under(&d.join("meta-backups")))
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    let mut seen = BTreeSet::new();
    for i in 0..4u64 {
        s.ok(&["mkdir", &format!("/d{i}")]);
        let index = crate::common::process::wait_for(60, "a backup of the change", || {
            let st = s.json(&["status"]);
            let b = &st["meta_backup"];
            (b["changes_since"] == 0 && b["log_index"].as_u64().is_some())
                .then(|| b["log_index"].as_u64().unwrap())
        });
        seen.insert(index);
        let per_disk: BTreeMap<String, usize> = n
            .disks
            .iter()
            .map(|d| {
                (
                    d.display().to_string(),
                    files_under(&d.join("meta-backups")).len(),
                )
            })
            .collect();
        assert!(per_disk.values().all(|&c| c <= 2), "{per_disk:?}");
    }
    assert!(seen.len() >= 2, "{seen:?}");
    // Nothing changes: no new backup.
    let before = generations();
    let st = s.json(&["status"]);
    let t = st["meta_backup"]["last_ms"].as_u64().unwrap();
    let waited = std::time::Instant::now();
    crate::common::process::wait_for(30, "three more ticks", || {
        (waited.elapsed() > std::time::Duration::from_millis(1500)).then_some(())
    });
    assert_eq!(
        s.json(&["status"])["meta_backup"]["last_ms"].as_u64(),
        Some(t)
    );
    assert_eq!(generations(), before);
    let text = s.ok(&["health"]);
    assert!(
        text.contains("metadata backup:") && text.contains("nothing changed since"),
        "{text}"
    );
}
