//! The part data plane between real `wormfs serve` processes on 127.0.0.2-.4, two disks each:
//! a file stored through one machine has its parts spread over all three (at most m on one),
//! reads through any machine return the same bytes, only members' pinned certificates get
//! past the TLS handshake, a dead machine's parts are decoded around, a write that cannot reach
//! its quorum fails cleanly, and a machine that comes back reads again.

use std::io::{Read, Write};
use std::path::Path;

use crate::common::machines::{cluster, ls, peers_of, share_secret, start_all, voters, Machine};
use crate::common::process::{wait_for, Server};
use serde_json::Value;
use wormfs_server::data_plane::tls::{client_config, CipherPreference};
use wormfs_server::data_plane::{Fingerprint, NodeCert};

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Stores `bytes` at `/NAME` through `s` with `policy` (from a file written in `dir`).
fn put(s: &Server, dir: &Path, name: &str, bytes: &[u8], policy: &str) {
    let src = dir.join(name);
    std::fs::write(&src, bytes).unwrap();
    let dest = format!("/{name}");
    s.ok(&["put", src.to_str().unwrap(), &dest, "--policy", policy]);
}

/// `wormfs get` through `s` into memory.
fn get(s: &Server, path: &str, range: Option<&str>) -> Vec<u8> {
    let mut args = vec!["get", path, "-"];
    if let Some(r) = range {
        args.extend(["--range", r]);
    }
    let o = s.cli(&args);
    assert!(
        o.status.success(),
        "get {path} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// The registered data-plane certificate of node `id`, as `cluster` shows it.
fn pinned(v: &Value, id: u64) -> Fingerprint {
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node_id"] == id)
        .and_then(|m| m["data_cert"].as_str())
        .unwrap()
        .parse()
        .unwrap()
}

/// GET `path` on a data server as a member: the status.
fn ask_status(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    cert: &NodeCert,
    server: Fingerprint,
    path: &str,
) -> u16 {
    let tls = client_config(cert, server, CipherPreference::Auto).unwrap();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    rt.block_on(async {
        let r = client.get(format!("https://{addr}{path}")).send().await;
        r.unwrap().status().as_u16()
    })
}

/// GET /v1/disks on a data server, presenting `cert` and expecting `server`'s fingerprint.
fn ask_disks(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    cert: &NodeCert,
    server: Fingerprint,
) -> Result<Vec<Value>, String> {
    let tls = client_config(cert, server, CipherPreference::Auto).unwrap();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    rt.block_on(async {
        let r = client
            .get(format!("https://{addr}/v1/disks"))
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        if !r.status().is_success() {
            return Err(format!("status {}", r.status()));
        }
        r.json::<Vec<Value>>().await.map_err(|e| e.to_string())
    })
}

fn part_files(dir: &Path) -> usize {
    crate::common::process::files_under(dir)
        .iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.') && n.ends_with(".wp"))
        })
        .count()
}

/// Three machines with two disk folders each, sharing a secret, started together; waits until
/// every node knows every member's data address and all six disks.
fn three_machines(root: &Path, env: &[(&str, &str)]) -> (Vec<Machine>, Vec<Option<Server>>) {
    machines(root, 3, env)
}

/// `n` machines like [`three_machines`].
fn machines(root: &Path, n: u8, env: &[(&str, &str)]) -> (Vec<Machine>, Vec<Option<Server>>) {
    let mut ms: Vec<Machine> = (1u8..=n)
        .map(|n| Machine::new(root, n, u64::from(n)))
        .collect();
    for m in &mut ms {
        m.disks = (0..2)
            .map(|d| m.dir.join(format!("d{d}")).display().to_string())
            .collect();
        m.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }
    share_secret(&ms);
    let servers = start_all(&ms);
    for s in servers.iter().flatten() {
        wait_for(60, "three voters with data addresses", || {
            let v = cluster(s);
            let all = v["members"].as_array()?.iter().all(|m| {
                m["data_addr"].is_string() && m["data_cert"].as_str().is_some_and(|c| c.len() == 64)
            });
            let want = match n {
                1 | 2 => 1,
                3 | 4 => 3,
                _ => 5,
            };
            (voters(&v).len() == want && v["members"].as_array()?.len() == usize::from(n) && all)
                .then_some(())
        });
        wait_for(60, "six disks registered", || {
            let d = s.json(&["disks"]);
            let count = d.as_array().or(d["disks"].as_array())?.len();
            (count == 2 * ms.len()).then_some(())
        });
    }
    (ms, servers)
}

#[test]
fn parts_spread_over_machines_and_any_machine_reads_them() {
    let t = tempfile::tempdir().unwrap();
    let (ms, mut servers) = three_machines(t.path(), &[]);

    // A small file with a copy on each machine.
    let a = servers[0].as_ref().unwrap();
    put(a, t.path(), "note.txt", b"one copy per machine", "copies:3");

    // 12 MiB into ec:4+2 through machine 1: six parts per segment over six disks, two per
    // machine (at most m = 2 on one machine).
    let data = random_bytes(12 << 20, 7);
    let src = t.path().join("film.bin");
    std::fs::write(&src, &data).unwrap();
    let a = servers[0].as_ref().unwrap();
    a.ok(&[
        "put",
        src.to_str().unwrap(),
        "/film.bin",
        "--policy",
        "ec:4+2",
    ]);
    let b = servers[1].as_ref().unwrap();
    let st = wait_for(30, "the file's record on machine 2", || {
        let o = b.cli(&["--json", "stat", "/film.bin"]);
        o.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&o.stdout).unwrap())
    });
    let segments = st["segments"].as_array().unwrap();
    assert!(!segments.is_empty());
    for seg in segments {
        let mut per_node = std::collections::HashMap::<u64, usize>::new();
        for p in seg["parts"].as_array().unwrap() {
            assert_eq!(p["missing"], false, "{seg}");
            *per_node.entry(p["node_id"].as_u64().unwrap()).or_default() += 1;
        }
        assert_eq!(per_node.len(), 3, "parts on every machine: {seg}");
        assert!(per_node.values().all(|&c| c == 2), "two per machine: {seg}");
    }
    // The human view names the machine of each part.
    let human = b.ok(&["stat", "/film.bin"]);
    for m in &ms {
        assert!(human.contains(&format!("node {} (", m.id)), "{human}");
    }
    // Any two parts, or one machine; the two folders of a machine share a filesystem here, so
    // they count as one disk.
    assert_eq!(st["tolerance"]["parts"], 2, "{st}");
    assert_eq!(st["tolerance"]["machines"], 1, "{st}");
    assert_eq!(st["tolerance"]["disks"], 1, "{st}");
    // The other machines really hold parts on their own disks.
    for m in &ms {
        assert!(part_files(&m.dir.join("d0")) + part_files(&m.dir.join("d1")) >= 2);
    }

    // Read through each of the other machines: the same bytes, whole and in a range.
    let want = blake3::hash(&data);
    for s in &servers[1..] {
        let s = s.as_ref().unwrap();
        assert_eq!(blake3::hash(&get(s, "/film.bin", None)), want);
        let r = get(s, "/film.bin", Some("3000000-3999999"));
        assert_eq!(r, &data[3_000_000..4_000_000]);
    }

    // Only members' certificates get in, and a client trusts only the pinned one.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let v = cluster(b);
    let member = NodeCert::load_or_create(&ms[0].dir.join("wormfs-data"), 1).unwrap();
    std::fs::create_dir_all(t.path().join("stranger")).unwrap();
    let stranger = NodeCert::load_or_create(&t.path().join("stranger"), 99).unwrap();
    let fp2 = pinned(&v, 2);
    let disks = ask_disks(&rt, &ms[1].data, &member, fp2).expect("a member is served");
    assert_eq!(disks.len(), 2);
    // A block request outside the part is the peer's mistake (400), never a wrapped sum or
    // a panic; inside it, the blocks come.
    let seg0 = &st["segments"][0];
    let (pi, p) = seg0["parts"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .find(|(_, p)| p["node_id"] == ms[1].id)
        .unwrap();
    let part = format!(
        "/v1/parts/{}/{}/{}/{pi}",
        p["disk_id"].as_str().unwrap(),
        st["file_id"].as_str().unwrap(),
        seg0["index"]
    );
    for q in [
        "first=0&count=0",
        "first=18446744073709551615&count=18446744073709551615",
        "first=1&count=18446744073709551615",
        "first=100000000&count=1",
    ] {
        let status = ask_status(&rt, &ms[1].data, &member, fp2, &format!("{part}?{q}"));
        assert_eq!(status, 400, "{part}?{q}");
    }
    let status = ask_status(
        &rt,
        &ms[1].data,
        &member,
        fp2,
        &format!("{part}?first=0&count=1"),
    );
    assert_eq!(status, 200, "{part}");
    let e = ask_disks(&rt, &ms[1].data, &stranger, fp2).unwrap_err();
    assert!(e.contains("AccessDenied"), "stranger's certificate: {e}");
    let e = ask_disks(&rt, &ms[1].data, &member, stranger.fingerprint).unwrap_err();
    assert!(
        e.contains("InvalidCertificate"),
        "wrong pinned server certificate: {e}"
    );
    // Plain HTTP on the TLS port gets no answer but a closed connection.
    let mut tcp = std::net::TcpStream::connect(&ms[1].data).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    tcp.write_all(b"GET /v1/disks HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("disk_id"));
    // Nothing of this hurt the node.
    assert_eq!(voters(&cluster(b)).len(), 3);

    // Machine 3 dies: its two parts of every segment are decoded around.
    let leader = cluster(a)["leader"].as_u64().unwrap();
    let victim = (0..3).rev().find(|&i| ms[i].id != leader).unwrap();
    let reader = (0..3).find(|&i| i != victim).unwrap();
    servers[victim].take().unwrap().kill9();
    let r = servers[reader].as_ref().unwrap();
    assert_eq!(blake3::hash(&get(r, "/film.bin", None)), want);
    let status = r.json(&["status"]);
    assert!(
        status["counters"]["damaged_part_reads"].as_u64().unwrap() >= 2,
        "{status}"
    );

    // With four disks left, an ec:4+2 write (quorum 5) fails cleanly and leaves no file.
    let small = random_bytes(3 << 20, 8);
    let src2 = t.path().join("second.bin");
    std::fs::write(&src2, &small).unwrap();
    let o = r.cli(&[
        "put",
        src2.to_str().unwrap(),
        "/second.bin",
        "--policy",
        "ec:4+2",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("needed"), "{err}");
    assert!(!r.cli(&["stat", "/second.bin"]).status.success());
    // A narrower policy fits the machines left.
    r.ok(&[
        "put",
        src2.to_str().unwrap(),
        "/second.bin",
        "--policy",
        "ec:2+1",
    ]);

    // Machine 3 comes back and reads both files, its own parts and the others'.
    servers[victim] = Some(ms[victim].start(&peers_of(&ms, victim)));
    let back = servers[victim].as_ref().unwrap();
    wait_for(60, "the second file on the returning machine", || {
        back.cli(&["stat", "/second.bin"])
            .status
            .success()
            .then_some(())
    });
    assert_eq!(blake3::hash(&get(back, "/film.bin", None)), want);
    assert_eq!(get(back, "/second.bin", None), small);

    // Every machine stops; one comes back alone. Without a majority it still starts and
    // serves what its own disks hold, and refuses writes, saying why.
    for s in servers.iter_mut() {
        s.take().unwrap().kill9();
    }
    let lone = ms[0].start(&peers_of(&ms, 0));
    assert_eq!(get(&lone, "/note.txt", None), b"one copy per machine");
    lone.fails(&["mkdir", "/no-majority"], 5, "no majority");
    // A file needing parts from the missing machines fails, rather than returning bytes: at
    // once with the reason when its first block cannot be read, or as a transfer cut short
    // where a later one cannot (the first may be on this machine's disks).
    let o = lone.cli(&["get", "/film.bin", "-"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unreadable") || err.contains("failed after"),
        "{err}"
    );
    assert!(o.stdout.len() < data.len());
}

/// Files under a machine's disks whose names mark a part or a part being written.
fn parts_and_temps(m: &Machine) -> Vec<String> {
    m.disks
        .iter()
        .flat_map(|d| crate::common::process::files_under(Path::new(d)))
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
        .filter(|n| n.ends_with(".wp") || n.contains(".tmp"))
        .collect()
}

#[test]
fn a_machine_killed_mid_ingest_fails_it_cleanly_and_the_sweep_leaves_no_orphans() {
    let t = tempfile::tempdir().unwrap();
    let (ms, mut servers) = three_machines(
        t.path(),
        &[
            ("WORMFS_INGEST__LEASE_MS", "1000"),
            ("WORMFS_INGEST__ORPHAN_GRACE_MS", "1000"),
        ],
    );
    let leader = cluster(servers[0].as_ref().unwrap())["leader"]
        .as_u64()
        .unwrap();
    // Write through a machine that stays; kill one that is neither it nor the leader (so the
    // cluster keeps its majority and the failure is the data plane's alone).
    let writer = (0..3).find(|&i| ms[i].id == leader).unwrap();
    let victim = (0..3).find(|&i| i != writer).unwrap();
    let token = std::fs::read_to_string(ms[writer].dir.join("wormfs-data/admin-token")).unwrap();
    let data = random_bytes(24 << 20, 9);
    let mut http = std::net::TcpStream::connect(("127.0.0.1", ms[writer].api)).unwrap();
    write!(
        http,
        "PUT /api/v1/files/big.bin?policy=ec:4%2B2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        token.trim(),
        data.len()
    )
    .unwrap();
    http.write_all(&data[..12 << 20]).unwrap();
    // The victim is receiving its parts when it dies.
    wait_for(60, "parts being written on the victim", || {
        (!parts_and_temps(&ms[victim]).is_empty()).then_some(())
    });
    servers[victim].take().unwrap().kill9();
    // The rest of the body (the node may already have given up and closed the connection).
    let _ = http.write_all(&data[12 << 20..]);
    http.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = http.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let status_line = answer.lines().next().unwrap_or("").to_owned();
    eprintln!("ingest with a machine killed under it: {status_line}");
    // Four parts per segment left, five needed (k + 1): the ingest fails, nothing is visible.
    assert!(
        status_line.is_empty() || !status_line.contains(" 201 "),
        "{answer}"
    );
    let w = servers[writer].as_ref().unwrap();
    assert!(!w.cli(&["stat", "/big.bin"]).status.success());

    // The victim returns; after a sweep on every machine no part of the failed ingest is left,
    // neither finished parts nor the victim's half-written ones.
    servers[victim] = Some(ms[victim].start(&peers_of(&ms, victim)));
    let left = wait_for(60, "no orphans after sweeps", || {
        for s in servers.iter().flatten() {
            s.cli(&["admin", "sweep"]);
        }
        let left: Vec<_> = ms.iter().flat_map(parts_and_temps).collect();
        left.is_empty().then_some(left)
    });
    assert!(left.is_empty());
}

#[test]
fn a_dead_voter_is_replaced_by_a_learner_and_then_removed() {
    let t = tempfile::tempdir().unwrap();
    // Four machines: three voters and a learner.
    let (ms, mut servers) = machines(
        t.path(),
        4,
        &[("WORMFS_CLUSTER__VOTER_REPLACE_AFTER_MS", "5000")],
    );
    let v = cluster(servers[0].as_ref().unwrap());
    let leader = v["leader"].as_u64().unwrap();
    let vs = voters(&v);
    let learner = ms.iter().map(|m| m.id).find(|id| !vs.contains(id)).unwrap();
    let dead = *vs.iter().find(|id| **id != leader).unwrap();
    let di = ms.iter().position(|m| m.id == dead).unwrap();
    let alive = ms.iter().position(|m| m.id == leader).unwrap();
    // A machine that is up is not removed without --force.
    servers[alive]
        .as_ref()
        .unwrap()
        .fails(&["node", "remove", &dead.to_string()], 4, "is up");

    let victim = servers[di].take().unwrap();
    victim.kill9();
    let a = servers[alive].as_ref().unwrap();
    // After voter_replace_after_ms the learner votes in its place; the dead one is a learner.
    let v = wait_for(90, "the learner promoted in the dead voter's place", || {
        let v = cluster(a);
        let vs = voters(&v);
        (vs.len() == 3 && vs.contains(&learner) && !vs.contains(&dead)).then_some(v)
    });
    let m = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node_id"] == dead)
        .unwrap()
        .clone();
    assert_eq!(m["role"], "learner", "{v}");
    assert!(
        m["last_contact_ms"].as_u64().is_none_or(|ms| ms >= 5000),
        "{m}"
    );

    // Removed: gone from the members and from the registered nodes, its certificate refused.
    let fp_alive = pinned(&v, leader);
    a.ok(&["node", "remove", &dead.to_string()]);
    let v = wait_for(30, "the dead machine gone", || {
        let v = cluster(a);
        let n = v["members"].as_array()?.len();
        (n == 3).then_some(v)
    });
    assert_eq!(voters(&v).len(), 3, "{v}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let removed = NodeCert::load_or_create(&ms[di].dir.join("wormfs-data"), dead).unwrap();
    let e = wait_for(30, "the removed machine's certificate refused", || {
        ask_disks(&rt, &ms[alive].data, &removed, fp_alive).err()
    });
    assert!(e.contains("AccessDenied"), "{e}");
    // Writes go on with the three left.
    a.ok(&["mkdir", "/after-removal"]);
}

#[test]
fn a_lone_survivor_made_the_only_voter_by_force_takes_writes_again() {
    let t = tempfile::tempdir().unwrap();
    let (ms, mut servers) = three_machines(t.path(), &[]);
    let a = servers[0].as_ref().unwrap();
    put(
        a,
        t.path(),
        "note.txt",
        b"kept through the disaster",
        "copies:3",
    );
    // Two machines are lost for good, and the survivor is stopped too.
    for s in servers.iter_mut() {
        s.take().unwrap().kill9();
    }
    let me = &ms[0];
    // Without --force it only says what it would do.
    let o = std::process::Command::new(crate::common::process::BIN)
        .arg("recover")
        .current_dir(&me.dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    let out = crate::common::process::local(&me.dir, &["recover", "--force"]);
    assert!(out.contains("only voter"), "{out}");

    let s = me.start(&peers_of(&ms, 0));
    wait_for(60, "the survivor leads", || {
        (cluster(&s)["leader"].as_u64() == Some(me.id)).then_some(())
    });
    s.ok(&["mkdir", "/after-recovery"]);
    assert_eq!(get(&s, "/note.txt", None), b"kept through the disaster");
    for m in &ms[1..] {
        s.ok(&["node", "remove", &m.id.to_string()]);
    }
    let v = cluster(&s);
    assert_eq!(voters(&v), vec![me.id], "{v}");
    assert_eq!(v["members"].as_array().unwrap().len(), 1, "{v}");
}

#[test]
fn five_machines_vote_five_and_lose_two_without_losing_writes_or_files() {
    let t = tempfile::tempdir().unwrap();
    let (ms, mut servers) = machines(t.path(), 5, &[]);
    let v = cluster(servers[0].as_ref().unwrap());
    assert_eq!(voters(&v).len(), 5, "{v}");
    // ec:3+2 over five machines: one part on each, so any two machines can go.
    let data = random_bytes(6 << 20, 11);
    let src = t.path().join("five.bin");
    std::fs::write(&src, &data).unwrap();
    servers[1].as_ref().unwrap().ok(&[
        "put",
        src.to_str().unwrap(),
        "/five.bin",
        "--policy",
        "ec:3+2",
    ]);
    let st = servers[3].as_ref().unwrap().json(&["stat", "/five.bin"]);
    assert_eq!(st["tolerance"]["machines"], 2, "{st}");
    let leader = v["leader"].as_u64().unwrap();
    let lost: Vec<usize> = (0..5).filter(|&i| ms[i].id != leader).take(2).collect();
    for &i in &lost {
        servers[i].take().unwrap().kill9();
    }
    let reader = (0..5)
        .find(|i| !lost.contains(i) && ms[*i].id != leader)
        .unwrap();
    let r = servers[reader].as_ref().unwrap();
    assert_eq!(
        blake3::hash(&get(r, "/five.bin", None)),
        blake3::hash(&data)
    );
    // Three of five voters: writes go on.
    r.ok(&["mkdir", "/two-lost"]);
}

#[test]
fn a_node_whose_metadata_cannot_apply_turns_read_only_and_resyncs_at_restart() {
    let t = tempfile::tempdir().unwrap();
    let (mut ms, mut servers) = three_machines(t.path(), &[]);
    let leader = cluster(servers[0].as_ref().unwrap())["leader"]
        .as_u64()
        .unwrap();
    let li = ms.iter().position(|m| m.id == leader).unwrap();
    let vi = (0..3).find(|&i| i != li).unwrap();
    // The victim restarts with a metadata that fails to apply `mkdir /poison`.
    servers[vi].take().unwrap().term();
    ms[vi]
        .env
        .push(("WORMFS_FAIL_APPLY_MKDIR".into(), "/poison".into()));
    servers[vi] = Some(ms[vi].start(&peers_of(&ms, vi)));
    let l = servers[li].as_ref().unwrap();
    l.ok(&["mkdir", "/poison"]);
    let v = servers[vi].as_ref().unwrap();
    let why = wait_for(60, "the victim read-only", || {
        v.json(&["status"])["read_only"].as_str().map(str::to_owned)
    });
    assert!(why.contains("restart"), "{why}");
    // Writes through it are refused, saying why; reads go on.
    v.fails(&["mkdir", "/through-victim"], 5, "read-only");
    v.ok(&["ls", "/"]);
    // The others go on.
    l.ok(&["mkdir", "/after"]);

    // Restarted (the fault gone), it sets its metadata aside and catches up from the cluster.
    servers[vi].take().unwrap().term();
    ms[vi].env.clear();
    servers[vi] = Some(ms[vi].start(&peers_of(&ms, vi)));
    let v = servers[vi].as_ref().unwrap();
    wait_for(60, "the victim resynced", || {
        let names = ls(v, "/");
        (names.iter().any(|n| n == "poison") && names.iter().any(|n| n == "after")).then_some(())
    });
    assert!(v.json(&["status"])["read_only"].is_null());
    v.ok(&["mkdir", "/through-victim"]);
    let aside = std::fs::read_dir(ms[vi].dir.join("wormfs-data"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("meta.broken-"));
    assert!(aside, "the failed metadata kept aside");
}

#[test]
fn a_partitioned_minority_refuses_writes_and_catches_up_after_healing() {
    let t = tempfile::tempdir().unwrap();
    // Each node reads `partition` in its folder: the peers it cannot reach (test fault
    // injection in the peer network, feature crash-points).
    let (ms, servers) = three_machines(t.path(), &[("WORMFS_TEST_PARTITION_FILE", "partition")]);
    let s = |i: usize| servers[i].as_ref().unwrap();
    let leader = cluster(s(0))["leader"].as_u64().unwrap();
    let li = ms.iter().position(|m| m.id == leader).unwrap();
    let mi = (0..3).find(|&i| i != li).unwrap();
    let peer_ids: Vec<String> = (0..3)
        .map(|i| cluster(s(i))["peer_id"].as_str().unwrap().to_owned())
        .collect();
    // Cut the minority off: it ignores the others, they ignore it.
    let others: Vec<usize> = (0..3).filter(|&i| i != mi).collect();
    let cut = |on: bool| {
        for (i, m) in ms.iter().enumerate() {
            let text = if !on {
                String::new()
            } else if i == mi {
                others
                    .iter()
                    .map(|&o| format!("{}\n", peer_ids[o]))
                    .collect()
            } else {
                format!("{}\n", peer_ids[mi])
            };
            std::fs::write(m.dir.join("partition"), text).unwrap();
        }
    };
    cut(true);
    let minority = s(mi);
    minority.fails(&["mkdir", "/from-the-minority"], 5, "no majority");
    // Reads go on there; the majority goes on writing.
    minority.ok(&["ls", "/"]);
    let l = s(li);
    for i in 0..20 {
        l.ok(&["mkdir", &format!("/during-{i}")]);
    }
    l.ok(&["mkdir", "/after-snapshot"]);
    // Both majority nodes purge their logs behind a snapshot (whichever leads after the healing
    // election), so the minority must install one.
    for &i in &others {
        wait_for(30, "the majority node applied everything", || {
            ls(s(i), "/")
                .iter()
                .any(|n| n == "after-snapshot")
                .then_some(())
        });
        s(i).ok(&["admin", "snapshot"]);
    }
    assert!(!ls(minority, "/").iter().any(|n| n == "after-snapshot"));

    cut(false);
    wait_for(60, "the minority caught up", || {
        let names = ls(minority, "/");
        (names.iter().any(|n| n == "after-snapshot") && names.iter().any(|n| n == "during-19"))
            .then_some(())
    });
    let st = minority.json(&["status"]);
    assert!(st["raft"]["snapshot"].as_u64().is_some(), "{st}");
    assert!(!ls(l, "/").iter().any(|n| n == "from-the-minority"));
    minority.ok(&["mkdir", "/from-the-minority"]);
}

#[test]
fn a_retried_finish_waits_for_the_fsync_and_a_failed_one_is_reported() {
    // Every remote finish takes 2.5 s (a loaded disk's fsync) and a writer gives up on a
    // request after 1 s: each finish is retried while the first is still running.
    let t = tempfile::tempdir().unwrap();
    let fail = t.path().join("fail-finishes");
    let fail_s = fail.display().to_string();
    let (ms, servers) = three_machines(
        t.path(),
        &[
            ("WORMFS_TEST_DATA_FINISH_DELAY_MS", "2500"),
            ("WORMFS_TEST_DATA_REQUEST_TIMEOUT_MS", "1000"),
            ("WORMFS_TEST_DATA_FINISH_FAIL_IF", fail_s.as_str()),
        ],
    );
    let s = servers[0].as_ref().unwrap();
    let data = random_bytes(1 << 20, 21);
    // The retries wait for the same finish: the file is stored with all three copies, and
    // the other machines hold real, renamed part files.
    put(s, t.path(), "slow.bin", &data, "copies:3");
    let st = s.json(&["stat", "/slow.bin"]);
    assert_eq!(st["tolerance"]["machines"], 2, "{st}");
    for m in &ms[1..] {
        assert!(
            part_files(&m.dir) >= 1,
            "no durable part on {}",
            m.dir.display()
        );
    }
    assert_eq!(get(s, "/slow.bin", None), data);
    // Now the finishes fail after the delay, as a failed fsync would. A retry that came in
    // while one was running must report that failure, never "finished": the write falls
    // below its quorum and fails, or its missing parts are recorded, never counted.
    std::fs::write(&fail, b"").unwrap();
    let src = t.path().join("failing.bin");
    std::fs::write(&src, &data).unwrap();
    let o = s.cli(&[
        "put",
        src.to_str().unwrap(),
        "/failing.bin",
        "--policy",
        "copies:3",
    ]);
    if o.status.success() {
        let st = s.json(&["stat", "/failing.bin"]);
        assert_eq!(
            st["tolerance"]["machines"], 0,
            "failed finishes counted as parts: {st}"
        );
    } else {
        assert!(!s.cli(&["stat", "/failing.bin"]).status.success());
    }
    for m in &ms[1..] {
        assert_eq!(
            part_files(&m.dir),
            1,
            "a failed finish left a part on {}",
            m.dir.display()
        );
    }
}
