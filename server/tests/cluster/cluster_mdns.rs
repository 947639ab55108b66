//! Formation over real mDNS: three nodes with the same cluster name and secret, and no peer
//! list, inside a private network namespace that holds only `lo` (mDNS never runs in the
//! machine's own namespace in tests), find each other and form one cluster, the lowest id
//! founding it. A fourth machine with another secret sees the cluster's record and says it
//! lacks the secret, instead of founding a second cluster of the same name.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::process::{local, wait_for, BIN};
use serde_json::Value;

/// A user and network namespace (`unshare -rn`, loopback up) kept alive by a shell.
struct Namespace {
    shell: Child,
}

impl Namespace {
    fn new() -> Namespace {
        let shell = Command::new("unshare")
            .args(["--user", "--map-root-user", "--net", "sh", "-c"])
            .arg("ip link set lo up && exec sleep 100000")
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare runs (util-linux, installed by tests/install-test-tools.sh)");
        let ns = Namespace { shell };
        // Wait until loopback is up inside.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let o = ns
                .cmd("ip")
                .args(["-o", "link", "show", "lo"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&o.stdout).contains("UP") {
                return ns;
            }
            assert!(
                Instant::now() < deadline,
                "loopback never came up in the namespace"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A command that runs inside the namespace.
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["--target", &self.shell.id().to_string()]).args([
            "--user",
            "--net",
            "--preserve-credentials",
            program,
        ]);
        c
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

/// A node process inside the namespace; killed when dropped.
struct NsNode {
    child: Child,
    dir: PathBuf,
    api: u16,
}

impl Drop for NsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(ns: &Namespace, dir: &Path, id: u64, base: u16) -> NsNode {
    std::fs::create_dir_all(dir).unwrap();
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child = ns
        .cmd(BIN)
        .args(["serve", "--mdns", "on"])
        .args(["--listen", &format!("127.0.0.1:{base}")])
        .args(["--webdav-listen", &format!("127.0.0.1:{}", base + 1)])
        .args(["--peer-listen", &format!("127.0.0.1:{}", base + 2)])
        .args(["--data-listen", &format!("127.0.0.1:{}", base + 3)])
        .env("WORMFS_NODE__ID", id.to_string())
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    NsNode {
        child,
        dir: dir.to_owned(),
        api: base,
    }
}

/// `wormfs cluster --json` against `node`, from inside the namespace; `None` until it answers.
fn cluster(ns: &Namespace, node: &mut NsNode) -> Option<Value> {
    if let Some(status) = node.child.try_wait().unwrap() {
        panic!(
            "node exited ({status}): {}",
            std::fs::read_to_string(node.dir.join("serve.log")).unwrap_or_default()
        );
    }
    let o = ns
        .cmd(BIN)
        .args(["--node", &format!("http://127.0.0.1:{}", node.api)])
        .args(["--json", "cluster"])
        .current_dir(&node.dir)
        .output()
        .unwrap();
    o.status
        .success()
        .then(|| serde_json::from_slice(&o.stdout).unwrap())
}

#[test]
fn three_nodes_find_each_other_over_mdns_and_a_stranger_is_told_what_it_lacks() {
    let t = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..3).map(|i| t.path().join(format!("n{i}"))).collect();
    local(&dirs[0], &["init"]);
    let token = local(&dirs[0], &["join-token"]);
    for d in &dirs[1..] {
        local(d, &["init", "--join", token.trim()]);
    }
    let ns = Namespace::new();
    let mut nodes: Vec<NsNode> = [(30u64, 17600u16), (10, 17610), (20, 17620)]
        .iter()
        .zip(&dirs)
        .map(|(&(id, base), d)| start(&ns, d, id, base))
        .collect();
    let v = wait_for(90, "three voters found over mDNS", || {
        let v = cluster(&ns, &mut nodes[0])?;
        let voters = v["members"]
            .as_array()?
            .iter()
            .filter(|m| m["role"] == "voter")
            .count();
        (voters == 3 && v["leader"].is_u64()).then_some(v)
    });
    let cid = v["cluster_id"].as_str().unwrap().to_owned();
    for n in nodes.iter_mut() {
        let c = wait_for(30, "every node answering", || cluster(&ns, n));
        assert_eq!(c["cluster_id"], cid.as_str());
        let want = if c["node_id"] == 10 {
            "founded"
        } else {
            "joined"
        };
        assert_eq!(c["formation"]["state"], want, "{c}");
    }

    // A machine with its own secret: it sees the cluster's record and waits, saying why.
    let stranger_dir = t.path().join("stranger");
    let mut stranger = start(&ns, &stranger_dir, 5, 17630);
    wait_for(60, "the stranger to say it lacks the secret", || {
        if let Some(s) = stranger.child.try_wait().unwrap() {
            panic!("the stranger exited ({s})");
        }
        let log = std::fs::read_to_string(stranger_dir.join("serve.log")).unwrap_or_default();
        log.contains("cluster wormfs is here").then_some(())
    });
    let log = std::fs::read_to_string(stranger_dir.join("serve.log")).unwrap();
    assert!(log.contains("lacks its secret"), "{log}");
    assert!(!log.contains("founded cluster"), "{log}");
    let members = cluster(&ns, &mut nodes[1]).unwrap()["members"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(members, 3);
}
