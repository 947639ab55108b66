//! Real `wormfs serve` processes forming a cluster over the private peer network, each
//! node's control plane on its own loopback address (127.0.0.2, .3, ...) with static peers:
//! formation (the lowest id founds, the others join), one shared namespace written through any
//! node, a leader killed with SIGKILL and replaced, a restarted node catching up, machines
//! without the secret (or with a plain TCP connection) kept out, a join with the token, writes
//! refused without a majority while reads go on, and every machine killed and restarted.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::machines::{cluster, ls, peers_of, share_secret, start_all, voters, Machine};
use crate::common::process::{free_port, local, wait_for, Server, BIN};
use serde_json::Value;

#[test]
fn three_machines_form_one_cluster_survive_kills_and_keep_strangers_out() {
    let t = tempfile::tempdir().unwrap();
    // Ids out of start order: the lowest (1) must found the cluster wherever it starts.
    let ms: Vec<Machine> = [(1u8, 30u64), (2, 10), (3, 20)]
        .iter()
        .map(|&(n, id)| Machine::new(t.path(), n, id))
        .collect();
    // The documented way in: a secret made on one machine, its join token taken to the others.
    share_secret(&ms);
    let peers_of = |i: usize| peers_of(&ms, i);
    let mut servers = start_all(&ms);

    // One cluster: three voters, one leader, every member caught up, the same id everywhere.
    let v = wait_for(60, "three voters and a leader", || {
        let v = cluster(servers[0].as_ref().unwrap());
        (voters(&v).len() == 3 && v["leader"].is_u64()).then_some(v)
    });
    let cluster_id = v["cluster_id"].as_str().unwrap().to_owned();
    for (i, m) in ms.iter().enumerate() {
        let c = cluster(servers[i].as_ref().unwrap());
        assert_eq!(c["cluster_id"], cluster_id.as_str(), "node {}", m.id);
        let state = c["formation"]["state"].as_str().unwrap().to_owned();
        let want = if m.id == 10 { "founded" } else { "joined" };
        assert_eq!(state, want, "node {}: {c}", m.id);
        assert_eq!(c["node_id"], m.id);
    }
    // Member names are registered through whichever node is leader (writes are forwarded).
    wait_for(30, "every member registered", || {
        let c = cluster(servers[2].as_ref().unwrap());
        c["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["api_addr"].is_string())
            .then_some(())
    });

    // A write through each node is visible on every node.
    for (i, dir) in ["/from-a", "/from-b", "/from-c"].iter().enumerate() {
        servers[i].as_ref().unwrap().ok(&["mkdir", dir]);
    }
    for srv in servers.iter() {
        let srv = srv.as_ref().unwrap();
        wait_for(30, "directories replicated", || {
            let names = ls(srv, "/");
            ["from-a", "from-b", "from-c"]
                .iter()
                .all(|d| names.iter().any(|n| n == d))
                .then_some(())
        });
    }
    // A file stored through a follower: its record (size, hash) is on every node.
    let src = t.path().join("small.bin");
    std::fs::write(&src, b"written through one machine, known to all").unwrap();
    servers[1]
        .as_ref()
        .unwrap()
        .ok(&["put", src.to_str().unwrap(), "/from-b/small.bin"]);
    let hash = blake3::hash(b"written through one machine, known to all")
        .to_hex()
        .to_string();
    for srv in servers.iter() {
        let srv = srv.as_ref().unwrap();
        let st = wait_for(30, "file record replicated", || {
            let o = srv.cli(&["--json", "stat", "/from-b/small.bin"]);
            o.status
                .success()
                .then(|| serde_json::from_slice::<Value>(&o.stdout).unwrap())
        });
        assert_eq!(st["blake3"], hash.as_str(), "{st}");
    }

    // SIGKILL the leader: the other two elect a new one and take writes again.
    let leader_id = cluster(servers[0].as_ref().unwrap())["leader"]
        .as_u64()
        .unwrap();
    let li = ms.iter().position(|m| m.id == leader_id).unwrap();
    let killed_at = Instant::now();
    servers[li].take().unwrap().kill9();
    let survivor = (0..3).find(|&i| i != li).unwrap();
    let new_leader = wait_for(60, "a new leader", || {
        let o = servers[survivor]
            .as_ref()
            .unwrap()
            .cli(&["--json", "cluster"]);
        let v: Value = serde_json::from_slice(&o.stdout).ok()?;
        v["leader"].as_u64().filter(|l| *l != leader_id)
    });
    let took = killed_at.elapsed();
    eprintln!("new leader {new_leader} {took:?} after the leader was killed (target < 10 s)");
    servers[survivor]
        .as_ref()
        .unwrap()
        .ok(&["mkdir", "/after-failover"]);
    for i in (0..3).filter(|&i| i != li) {
        let srv = servers[i].as_ref().unwrap();
        wait_for(30, "failover write replicated", || {
            ls(srv, "/")
                .iter()
                .any(|n| n == "after-failover")
                .then_some(())
        });
    }
    // The killed machine comes back and catches up from the log.
    servers[li] = Some(ms[li].start(&peers_of(li)));
    wait_for(60, "the restarted node catches up", || {
        ls(servers[li].as_ref().unwrap(), "/")
            .iter()
            .any(|n| n == "after-failover")
            .then_some(())
    });
    assert_eq!(
        cluster(servers[li].as_ref().unwrap())["formation"]["state"],
        "member"
    );

    // A follower that misses entries the leader then purges from its log (after a snapshot)
    // comes back and catches up by installing the snapshot over the peer network.
    let lead = cluster(servers[survivor].as_ref().unwrap())["leader"]
        .as_u64()
        .unwrap();
    let lead_i = ms.iter().position(|m| m.id == lead).unwrap();
    let behind = (0..3).find(|&i| i != lead_i).unwrap();
    servers[behind].take().unwrap().kill9();
    for i in 0..20 {
        servers[lead_i]
            .as_ref()
            .unwrap()
            .ok(&["mkdir", &format!("/missed-{i}")]);
    }
    servers[lead_i].as_ref().unwrap().ok(&["admin", "snapshot"]);
    servers[behind] = Some(ms[behind].start(&peers_of(behind)));
    wait_for(60, "the returning node installs the snapshot", || {
        let names = ls(servers[behind].as_ref().unwrap(), "/");
        (0..20)
            .all(|i| names.iter().any(|n| *n == format!("missed-{i}")))
            .then_some(())
    });
    let st = servers[behind].as_ref().unwrap().json(&["status"]);
    assert!(
        st["raft"]["snapshot"].as_u64().is_some(),
        "no snapshot on the returning node: {st}"
    );

    // A plain TCP client on the peer port gets nowhere and breaks nothing.
    {
        let mut c = std::net::TcpStream::connect(ms[survivor].peer.as_str()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n/multistream/1.0.0\n");
        let mut buf = [0u8; 256];
        let _ = c.read(&mut buf);
    }
    // A machine with its own (wrong) secret pointed at the cluster: it says what is missing
    // and never founds a second cluster.
    let stranger = Machine::new(t.path(), 4, 5);
    let log = stranger.dir.join("stranger.log");
    let mut child = Command::new(BIN)
        .args(["serve", "--mdns", "off", "--listen"])
        .arg(format!("127.0.0.1:{}", stranger.api))
        .arg("--webdav-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(stranger.args(&[ms[survivor].peer.clone()]))
        .env("WORMFS_NODE__ID", "5")
        .current_dir(&stranger.dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("lacks the cluster's secret")
    {
        assert!(
            Instant::now() < deadline,
            "the stranger never said it lacks the secret: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the stranger must wait, not exit"
    );
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap()
            .contains("founded cluster"),
        "a machine without the secret founded a cluster"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let members = cluster(servers[survivor].as_ref().unwrap())["members"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(members, 3, "the stranger got in");

    // With the join token it gets in: `init --join` refuses to overwrite its own secret,
    // then takes the cluster's once that is moved away; the fourth machine joins as a learner.
    let token = local(&ms[0].dir, &["join-token"]);
    let token = token.trim();
    let init = |dir: &Path| {
        Command::new(BIN)
            .args(["init", "--join", token])
            .current_dir(dir)
            .output()
            .unwrap()
    };
    let o = init(&stranger.dir);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("another cluster's secret"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::remove_file(stranger.dir.join("wormfs-data/cluster-secret")).unwrap();
    let o = init(&stranger.dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let fourth = stranger.start(&[ms[survivor].peer.clone()]);
    let v = wait_for(60, "the fourth machine as a learner", || {
        let v = cluster(&fourth);
        (v["members"].as_array().unwrap().len() == 4).then_some(v)
    });
    assert_eq!(voters(&v).len(), 3, "{v}");
    assert_eq!(v["cluster_id"], cluster_id.as_str());
    wait_for(30, "the learner has the tree", || {
        ls(&fourth, "/")
            .iter()
            .any(|n| n == "after-failover")
            .then_some(())
    });

    // Two of the three voters killed: the survivor refuses writes, saying there is no
    // majority, and still answers reads of what was committed.
    let v = cluster(&fourth);
    let voter_ids = voters(&v);
    let mut killed = Vec::new();
    for (i, m) in ms.iter().enumerate() {
        if voter_ids.contains(&m.id) && killed.len() < 2 {
            servers[i].take().unwrap().kill9();
            killed.push(i);
        }
    }
    let alive = (0..3).find(|i| !killed.contains(i)).unwrap();
    let srv = servers[alive].as_ref().unwrap();
    let o = srv.cli(&["mkdir", "/without-majority"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("no majority"), "{err}");
    assert!(ls(srv, "/").iter().any(|n| n == "after-failover"));
    let st = srv.json(&["stat", "/from-b/small.bin"]);
    assert_eq!(st["blake3"], hash.as_str());

    // Every machine killed with SIGKILL, then all restarted together: every acknowledged write
    // is there, and writes work again.
    servers[alive].take().unwrap().kill9();
    fourth.kill9();
    let servers: Vec<Server> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..3)
            .map(|i| {
                let (m, p) = (&ms[i], peers_of(i));
                sc.spawn(move || m.start(&p))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for srv in &servers {
        let names = wait_for(60, "the tree after a restart of every machine", || {
            let names = ls(srv, "/");
            (!names.is_empty()).then_some(names)
        });
        for d in ["from-a", "from-b", "from-c", "after-failover"] {
            assert!(names.iter().any(|n| n == d), "{d} lost: {names:?}");
        }
        assert_eq!(
            srv.json(&["stat", "/from-b/small.bin"])["blake3"],
            hash.as_str()
        );
    }
    servers[0].ok(&["mkdir", "/after-full-restart"]);
}
