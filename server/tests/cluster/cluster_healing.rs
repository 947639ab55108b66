//! Self-healing across machines: a machine killed for longer than
//! `repair.machine_out_after_ms` has its parts rebuilt on the others, and when it comes back
//! its now-surplus parts go only after the rebuilt ones are committed; disks of one and then
//! two machines unreadable at once, where the brakes hold (at most `m` disks out at a time,
//! never the last readable parts of anything) and say why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::machines::{cluster, share_secret, start_all, voters, Machine};
use crate::common::process::{files_under, wait_for, Server};

const ENV: [(&str, &str); 12] = [
    ("WORMFS_STORAGE__BLOCK_SIZE_BYTES", "65536"),
    ("WORMFS_STORAGE__SEGMENT_PART_BYTES", "262144"),
    ("WORMFS_STORAGE__RESERVE_FREE_BYTES", "0"),
    ("WORMFS_REPAIR__DISK_OUT_AFTER_MS", "1500"),
    ("WORMFS_REPAIR__MACHINE_OUT_AFTER_MS", "3000"),
    ("WORMFS_REPAIR__TRANQUILITY", "0"),
    ("WORMFS_REPAIR__RETRY_MIN_MS", "300"),
    ("WORMFS_REPAIR__RETRY_MAX_MS", "2000"),
    ("WORMFS_INGEST__LEASE_MS", "2000"),
    ("WORMFS_INGEST__ORPHAN_GRACE_MS", "2000"),
    ("WORMFS_SCRUB__ENABLED", "false"),
    ("WORMFS_RETENTION__TRASH_DAYS", "0"),
];

/// Three machines with two folder-disks each.
fn three_machines(root: &Path) -> (Vec<Machine>, Vec<Option<Server>>) {
    let mut ms: Vec<Machine> = (1u8..=3)
        .map(|n| Machine::new(root, n, u64::from(n) * 10))
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
    let servers = start_all(&ms);
    wait_for(60, "three voters and a leader", || {
        let v = cluster(servers[0].as_ref().unwrap());
        (voters(&v).len() == 3 && v["leader"].is_u64()).then_some(())
    });
    wait_for(60, "six disks registered", || {
        let v = servers[0].as_ref().unwrap().json(&["disks"]);
        (v["disks"].as_array().unwrap().len() == 6).then_some(())
    });
    (ms, servers)
}

fn put(s: &Server, dir: &Path, path: &str, policy: &str, bytes: &[u8]) {
    let local = dir.join("upload");
    std::fs::write(&local, bytes).unwrap();
    s.ok(&["put", local.to_str().unwrap(), path, "--policy", policy]);
}

fn health(s: &Server) -> (i32, Value) {
    let o = s.cli(&["--json", "health"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {o:?}"));
    (o.status.code().unwrap_or(-1), v)
}

fn check_files(s: &Server, dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (path, want) in files {
        let out = dir.join("readback");
        s.ok(&["get", path, out.to_str().unwrap()]);
        assert!(std::fs::read(&out).unwrap() == *want, "{path} differs");
    }
}

/// `(disk id, node, path, status, parts)` of every disk.
fn disks(s: &Server) -> Vec<(String, u64, String, String, u64)> {
    s.json(&["disks"])["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["disk_id"].as_str().unwrap().to_owned(),
                d["node_id"].as_u64().unwrap(),
                d["path"].as_str().unwrap().to_owned(),
                d["status"].as_str().unwrap().to_owned(),
                d["parts"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn part_files(disk: &Path) -> usize {
    files_under(&disk.join("parts"))
        .iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .count()
}

#[test]
fn a_machine_gone_longer_than_its_timeout_is_rebuilt_on_the_others_and_its_surplus_goes_after() {
    let t = tempfile::tempdir().unwrap();
    let (ms, mut servers) = three_machines(t.path());
    let leader = cluster(servers[0].as_ref().unwrap())["leader"]
        .as_u64()
        .unwrap();
    let a = servers
        .iter()
        .position(|s| cluster(s.as_ref().unwrap())["node_id"].as_u64() == Some(leader))
        .unwrap();
    // The machine to kill is not the leader (a new election would only add time here).
    let gone = (a + 1) % 3;
    let s_owned = servers[a].take().unwrap();
    let s = &s_owned;
    let mut files = BTreeMap::new();
    for (i, policy) in ["ec:2+1", "copies:3", "ec:2+1"].iter().enumerate() {
        let bytes = crate::common::random_bytes(600_000 + i * 1000, i as u64);
        let path = format!("/f{i}");
        put(s, t.path(), &path, policy, &bytes);
        files.insert(path, bytes);
    }
    let (code, v) = health(s);
    assert_eq!(code, 0, "{v:#}");
    // Every machine holds a part of every segment (one per machine, spread by placement).
    let gone_id = ms[gone].id;
    let held_before: u64 = disks(s)
        .iter()
        .filter(|d| d.1 == gone_id)
        .map(|d| d.4)
        .sum();
    assert!(held_before > 0);

    servers[gone].take().unwrap().kill9();
    // Down first (the machine is silent), out after machine_out_after_ms, then rebuilt.
    wait_for(60, "the silent machine's disks down or out", || {
        disks(s)
            .iter()
            .filter(|d| d.1 == gone_id)
            .all(|d| d.3 == "down" || d.3 == "out")
            .then_some(())
    });
    let v = wait_for(120, "full redundancy rebuilt on the two others", || {
        let (code, v) = health(s);
        (code == 0).then_some(v)
    });
    assert_eq!(v["verdict"], "full");
    let after = disks(s);
    assert!(
        after
            .iter()
            .filter(|d| d.1 == gone_id)
            .all(|d| d.3 == "out" && d.4 == 0),
        "{after:?}"
    );
    check_files(s, t.path(), &files);
    // Within the placement rules: never two parts of a segment on one disk; with two machines
    // left for three parts, the files show their real machine tolerance (0).
    let stat = s.json(&["stat", "/f0"]);
    for seg in stat["segments"].as_array().unwrap() {
        let mut disks_used: Vec<&str> = seg["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["disk_id"].as_str().unwrap())
            .collect();
        disks_used.sort_unstable();
        disks_used.dedup();
        assert_eq!(disks_used.len(), 3, "{stat:#}");
    }
    assert_eq!(stat["tolerance"]["machines"], 0, "{stat:#}");
    assert_eq!(stat["tolerance"]["parts"], 1, "{stat:#}");

    // The machine comes back: its disks are up again; its old parts are surplus (the
    // metadata names the rebuilt ones) and the sweep removes them; nothing else is lost.
    let gone_dir = ms[gone].dir.clone();
    let before_on_disk: usize = (0..2)
        .map(|i| part_files(&gone_dir.join(format!("d{i}"))))
        .sum();
    assert_eq!(
        before_on_disk as u64, held_before,
        "its parts stayed on its disks while it was away"
    );
    let others: Vec<String> = ms
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != gone)
        .map(|(_, m)| m.peer.clone())
        .collect();
    let back_owned = ms[gone].start(&others);
    wait_for(60, "the returning machine's disks up", || {
        disks(s)
            .iter()
            .filter(|d| d.1 == gone_id)
            .all(|d| d.3 == "up")
            .then_some(())
    });
    let back = &back_owned;
    wait_for(
        60,
        "the surplus parts swept on the returning machine",
        || {
            back.ok(&["admin", "sweep"]);
            let on_disk: usize = (0..2)
                .map(|i| part_files(&gone_dir.join(format!("d{i}"))))
                .sum();
            let named: u64 = disks(s)
                .iter()
                .filter(|d| d.1 == gone_id)
                .map(|d| d.4)
                .sum();
            (on_disk as u64 == named).then_some(())
        },
    );
    let (code, v) = health(s);
    assert_eq!(code, 0, "{v:#}");
    check_files(back, &ms[gone].dir, &files);
}

fn away(dir: &Path) -> PathBuf {
    let to = dir.with_extension("away");
    std::fs::rename(dir, &to).unwrap();
    to
}

#[test]
fn the_brakes_hold_when_disks_of_one_then_two_machines_go_and_say_why() {
    let t = tempfile::tempdir().unwrap();
    let (ms, servers) = three_machines(t.path());
    let s = servers[0].as_ref().unwrap();
    let mut files = BTreeMap::new();
    // Twelve one-segment files: each machine holds twelve parts, so both of its disks hold
    // some (placement picks the disk within a machine).
    for i in 0..12 {
        let bytes = crate::common::random_bytes(300_000, 50 + i);
        let path = format!("/b{i}");
        put(s, t.path(), &path, "ec:2+1", &bytes);
        // Under load a machine may miss a placement (its offer late): the file is then stored
        // with two parts on one machine, which this test's brakes are not about. Write it
        // again until its three parts are on three machines (the old version is freed: the
        // trash is off here).
        let mut tries = 0;
        while s.json(&["stat", &path])["tolerance"]["machines"].as_u64() != Some(1) {
            tries += 1;
            assert!(tries < 10, "{path} never spread over the three machines");
            let local = t.path().join("upload");
            std::fs::write(&local, &bytes).unwrap();
            s.ok(&[
                "put",
                local.to_str().unwrap(),
                &path,
                "--policy",
                "ec:2+1",
                "--conflict",
                "replace",
            ]);
        }
        files.insert(path, bytes);
    }
    assert_eq!(health(s).0, 0);

    // Two machines' disks all unreadable at once (their processes run on, so Raft has its
    // majority): every segment has one readable part of the two it needs. Nothing may go
    // out: those disks hold the last readable parts.
    let (b, c) = (&ms[1], &ms[2]);
    let moved: Vec<(PathBuf, PathBuf)> = [b, c]
        .iter()
        .flat_map(|m| (0..2).map(move |i| m.dir.join(format!("d{i}"))))
        .map(|d| {
            let to = away(&d);
            (d, to)
        })
        .collect();
    let v = wait_for(
        60,
        "health to say files are unreadable and why nothing moves",
        || {
            let (code, v) = health(s);
            (code == 2 && !v["brakes"].as_array().unwrap().is_empty()).then_some(v)
        },
    );
    let brakes = v["brakes"].to_string();
    assert!(brakes.contains("last readable parts"), "{v:#}");
    // Well past disk_out_after_ms, still no disk holding parts is out (an empty one may be:
    // it costs nothing).
    std::thread::sleep(std::time::Duration::from_millis(3000));
    assert!(
        disks(s).iter().all(|d| d.3 != "out" || d.4 == 0),
        "{:?}",
        disks(s)
    );
    // They come back: up again, nothing was moved, every file reads.
    for (d, to) in &moved {
        std::fs::rename(to, d).unwrap();
    }
    wait_for(60, "full redundancy again", || {
        (health(s).0 == 0).then_some(())
    });
    check_files(s, t.path(), &files);

    let b_id = ms[1].id;
    assert!(
        disks(s).iter().filter(|d| d.1 == b_id).all(|d| d.4 > 0),
        "both of the machine's disks hold parts: {:?}",
        disks(s)
    );
    // One machine's two disks unreadable: the smallest m in use is 1, so one disk goes out
    // and is rebuilt while the other waits, with the reason shown; then the other.
    // Repair paused meanwhile, so the moment with one disk out and the other held is seen.
    s.ok(&["repair", "pause"]);
    for i in 0..2 {
        away(&b.dir.join(format!("d{i}")));
    }
    let v = wait_for(60, "one disk out and the brake on the other", || {
        let (_, v) = health(s);
        let outs = disks(s).iter().filter(|d| d.3 == "out" && d.4 > 0).count();
        let held = v["brakes"].to_string().contains("allows no more at once");
        (outs == 1 && held).then_some(v)
    });
    assert!(v["summary"].as_str().unwrap().contains("repair"), "{v:#}");
    s.ok(&["repair", "resume"]);
    wait_for(120, "both rebuilt in turn", || {
        let outs = disks(s)
            .iter()
            .filter(|d| d.1 == b_id && d.3 == "out")
            .count();
        (health(s).0 == 0 && outs == 2).then_some(())
    });
    assert_eq!(health(s).1["brakes"].as_array().unwrap().len(), 0);
    check_files(s, t.path(), &files);
}

/// Three machines named m1, m2, m3 with two folder-disks each.
fn three_named_machines(root: &Path) -> (Vec<Machine>, Vec<Option<Server>>) {
    three_named_machines_with(root, |_| Vec::new())
}

/// Three machines named m1, m2, m3 with two folder-disks each, machine `i` with `extra(i)` in
/// its environment too.
fn three_named_machines_with(
    root: &Path,
    extra: impl Fn(usize) -> Vec<(String, String)>,
) -> (Vec<Machine>, Vec<Option<Server>>) {
    let mut ms: Vec<Machine> = (1u8..=3)
        .map(|n| Machine::new(root, n, u64::from(n) * 10))
        .collect();
    for (i, m) in ms.iter_mut().enumerate() {
        m.disks = (0..2)
            .map(|d| m.dir.join(format!("d{d}")).display().to_string())
            .collect();
        m.env = ENV
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        m.env
            .push(("WORMFS_NODE__NAME".to_owned(), format!("m{}", i + 1)));
        m.env.extend(extra(i));
    }
    share_secret(&ms);
    let servers = start_all(&ms);
    wait_for(60, "three voters and a leader", || {
        let v = cluster(servers[0].as_ref().unwrap());
        (voters(&v).len() == 3 && v["leader"].is_u64()).then_some(())
    });
    wait_for(60, "six disks registered", || {
        let v = servers[0].as_ref().unwrap().json(&["disks"]);
        (v["disks"].as_array().unwrap().len() == 6).then_some(())
    });
    (ms, servers)
}

/// The index of a machine that is not the leader (stopping it needs no election).
fn not_the_leader(servers: &[Option<Server>], ms: &[Machine]) -> usize {
    let leader = cluster(servers[0].as_ref().unwrap())["leader"]
        .as_u64()
        .unwrap();
    ms.iter().position(|m| m.id != leader).unwrap()
}

/// `(machine, state)` of every disk, as `disks --json` on `s` says.
fn disk_states(s: &Server) -> Vec<(String, String)> {
    s.json(&["disks"])["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["machine"].as_str().unwrap_or_default().to_owned(),
                d["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Every node of a healthy cluster says so and counts all six disks active, listing each with
/// its machine, its mount and WormFS's bytes; a machine stopped shows its disks as
/// "machine down" (not "missing") on the others.
#[test]
fn status_and_disks_tell_every_machines_disks_as_that_machine_sees_them() {
    let t = tempfile::tempdir().unwrap();
    let (ms, mut servers) = three_named_machines(t.path());
    let bytes = crate::common::random_bytes(400_000, 7);
    put(
        servers[0].as_ref().unwrap(),
        t.path(),
        "/a",
        "ec:2+1",
        &bytes,
    );
    for s in servers.iter().flatten() {
        wait_for(30, "every disk active as its machine reports it", || {
            let v = s.json(&["status"]);
            (v["disks"] == 6 && v["disks_active"] == 6).then_some(v)
        });
        let v = s.json(&["status"]);
        assert_eq!(v["health"], "healthy", "{v:#}");
        assert!(v["part_bytes"].as_u64().unwrap() >= 400_000, "{v:#}");
        let states = disk_states(s);
        assert_eq!(states.len(), 6);
        for n in 1..=3 {
            let of: Vec<_> = states.iter().filter(|d| d.0 == format!("m{n}")).collect();
            assert_eq!(of.len(), 2, "{states:?}");
            assert!(of.iter().all(|d| d.1 == "active"), "{states:?}");
        }
        let text = s.ok(&["disks"]);
        assert!(text.contains("MACHINE"), "{text}");
        assert!(!text.contains("missing"), "{text}");
        assert!(!text.contains("not attached"), "{text}");
        for n in 1..=3 {
            assert!(text.contains(&format!("m{n} ")), "{text}");
        }
        // WormFS's bytes are the parts (about 200 KB on each of three disks), not the
        // filesystems' use.
        let d = s.json(&["disks"]);
        let parts: u64 = d["disks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["part_bytes"].as_u64().unwrap())
            .sum();
        assert!((390_000..1_000_000).contains(&parts), "{d:#}");
        assert!(d["disks"][0]["mount"]["mount_point"].is_string(), "{d:#}");
        let text = s.ok(&["status"]);
        assert!(text.contains("health:   healthy"), "{text}");
        assert!(text.contains("disks:    6 (6 active)"), "{text}");
    }
    let gone = not_the_leader(&servers, &ms);
    let name = format!("m{}", gone + 1);
    servers[gone].take().unwrap().kill9();
    for s in servers.iter().flatten() {
        wait_for(
            30,
            "the stopped machine's disks shown as machine down",
            || {
                disk_states(s)
                    .iter()
                    .filter(|d| d.0 == name)
                    .all(|d| d.1 == "machine_down")
                    .then_some(())
            },
        );
        let text = s.ok(&["disks"]);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&name)).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines.iter().all(|l| l.contains("machine down")), "{text}");
        assert!(!text.contains("missing"), "{text}");
        let v = s.json(&["status"]);
        assert_eq!(v["disks_machine_down"], 2, "{v:#}");
        assert_eq!(v["disks_active"], 4, "{v:#}");
        assert_eq!(v["health"], "degraded", "{v:#}");
    }
}

/// A file written while one of three machines is down is stored on the other two (surviving no
/// machine): `put` warns on stderr, and once the machine is back (its disks `up` again) repair
/// moves a part to it at once, not after its backoff, without the file being written again,
/// until the file survives one machine as its policy gives.
#[test]
fn a_file_written_while_a_machine_is_down_is_moved_to_it_once_it_is_back() {
    let t = tempfile::tempdir().unwrap();
    // A failed move is retried only after ten minutes: the machine's return must make it due.
    let (ms, mut servers) = three_named_machines_with(t.path(), |_| {
        vec![
            (
                "WORMFS_REPAIR__RETRY_MIN_MS".to_owned(),
                "600000".to_owned(),
            ),
            (
                "WORMFS_REPAIR__RETRY_MAX_MS".to_owned(),
                "600000".to_owned(),
            ),
        ]
    });
    let gone = not_the_leader(&servers, &ms);
    servers[gone].take().unwrap().kill9();
    let s = servers.iter().flatten().next().unwrap();
    let bytes = crate::common::random_bytes(700_000, 11);
    let local = t.path().join("upload");
    std::fs::write(&local, &bytes).unwrap();
    let o = s.cli(&[
        "put",
        local.to_str().unwrap(),
        "/while-down",
        "--policy",
        "ec:2+1",
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}{err}");
    assert!(
        err.contains("stored with reduced protection: survives 0 machines until repaired"),
        "{err}"
    );
    assert!(!out.contains("warning"), "{out}");
    let v = s.json(&[
        "put",
        local.to_str().unwrap(),
        "/while-down-2",
        "--policy",
        "ec:2+1",
    ]);
    assert_eq!(v[0]["machines_tolerated"], 0, "{v:#}");
    assert_eq!(v[0]["policy_machines_tolerated"], 1, "{v:#}");
    assert!(v[0]["respread_parts"].as_u64().unwrap() >= 1, "{v:#}");
    let st = s.json(&["stat", "/while-down"]);
    assert_eq!(st["tolerance"]["machines"], 0, "{st:#}");
    let file_id = st["file_id"].clone();

    // Back once the cluster has its disks down (as after any real absence).
    let gone_id = ms[gone].id;
    wait_for(30, "the stopped machine's disks down", || {
        disks(s)
            .iter()
            .filter(|d| d.1 == gone_id)
            .all(|d| d.3 != "up")
            .then_some(())
    });
    let _back = ms[gone].start(&crate::common::machines::peers_of(&ms, gone));
    for path in ["/while-down", "/while-down-2"] {
        wait_for(
            120,
            "the file spread over the three machines by repair",
            || {
                let st = s.json(&["stat", path]);
                (st["tolerance"]["machines"] == 1).then_some(())
            },
        );
    }
    // The same file, not a new one, and whole.
    assert_eq!(s.json(&["stat", "/while-down"])["file_id"], file_id);
    let back = t.path().join("readback");
    s.ok(&["get", "/while-down", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == bytes);
}

/// A part that could not be written is what `put` says it is: queued for repair, which writes
/// it once the disk takes writes again (here a machine whose part finishes fail, then work).
#[test]
fn a_part_that_could_not_be_written_is_queued_and_repaired_as_put_says() {
    let t = tempfile::tempdir().unwrap();
    let fail = |i: usize| t.path().join(format!("fail-finishes-{i}"));
    let (ms, servers) = three_named_machines_with(t.path(), |i| {
        vec![(
            "WORMFS_TEST_DATA_FINISH_FAIL_IF".to_owned(),
            fail(i).display().to_string(),
        )]
    });
    let s = servers[0].as_ref().unwrap();
    // The finishes of machine 2's parts fail (as a failed fsync would): one part of each of
    // the file's two segments.
    std::fs::write(fail(1), b"").unwrap();
    let bytes = crate::common::random_bytes(500_000, 13);
    let local = t.path().join("upload");
    std::fs::write(&local, &bytes).unwrap();
    let o = s.cli(&[
        "put",
        local.to_str().unwrap(),
        "/one-short",
        "--policy",
        "copies:3",
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}{err}");
    assert!(
        err.contains(
            "2 part(s) could not be written: stored with reduced protection; they are queued for repair"
        ),
        "{out}{err}"
    );
    assert!(!out.contains("warning"), "{out}");
    let st = s.json(&["stat", "/one-short"]);
    assert_eq!(st["tolerance"]["parts"], 1, "{st:#}");
    // Queued, as said.
    let r = s.json(&["repair", "status"]);
    assert!(
        r["queued"].as_u64().unwrap() >= 1 || !r["in_progress"].as_array().unwrap().is_empty(),
        "{r:#}"
    );
    // Once machine 2 takes writes again, repair writes the part there.
    std::fs::remove_file(fail(1)).unwrap();
    wait_for(90, "the missing part written by repair", || {
        let st = s.json(&["stat", "/one-short"]);
        (st["tolerance"]["parts"] == 2 && st["tolerance"]["machines"] == 2).then_some(())
    });
    let held: Vec<u64> = s.json(&["stat", "/one-short"])["segments"][0]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["node_id"].as_u64())
        .collect();
    assert!(held.contains(&ms[1].id), "{held:?}");
}
