//! Machines of a test cluster: real `wormfs serve` processes, each on its own loopback
//! address (127.0.0.2, .3, ...) for its control and data planes, with static peers.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::process::{free_port, Server};

/// A free TCP port on `ip` (a loopback address other than 127.0.0.1).
pub fn free_port_on(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One machine of the test cluster: its folder, API port, node id and peer address.
pub struct Machine {
    /// Its folder (the working directory of its process).
    pub dir: PathBuf,
    /// Its node API port (on 127.0.0.1).
    pub api: u16,
    /// Its node id.
    pub id: u64,
    /// Its peer (control plane) address.
    pub peer: String,
    /// Its data-plane address.
    pub data: String,
    /// Disk folders (none: the embedded six folder-disks).
    pub disks: Vec<String>,
    /// More environment for its process (`WORMFS_*` settings).
    pub env: Vec<(String, String)>,
}

impl Machine {
    pub fn new(root: &Path, n: u8, id: u64) -> Machine {
        let ip = format!("127.0.0.{}", n + 1);
        let dir = root.join(format!("m{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port_on(&ip);
        Machine {
            dir,
            api: free_port(),
            id,
            peer: format!("{ip}:{port}"),
            data: format!("{ip}:{}", free_port_on(&ip)),
            disks: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn args<'a>(&'a self, others: &'a [String]) -> Vec<&'a str> {
        let mut a = vec![
            "--peer-listen",
            self.peer.as_str(),
            "--data-listen",
            self.data.as_str(),
        ];
        for d in &self.disks {
            a.push("--disk");
            a.push(d.as_str());
        }
        for o in others {
            a.push("--peer");
            a.push(o.as_str());
        }
        a
    }

    pub fn start(&self, others: &[String]) -> Server {
        let id = self.id.to_string();
        let mut env = vec![("WORMFS_NODE__ID", id.as_str())];
        env.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Server::start_env(&self.dir, self.api, &self.args(others), &env)
    }
}

pub fn cluster(s: &Server) -> Value {
    s.json(&["cluster"])
}

pub fn voters(v: &Value) -> Vec<u64> {
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "voter")
        .map(|m| m["node_id"].as_u64().unwrap())
        .collect()
}

pub fn ls(s: &Server, dir: &str) -> Vec<String> {
    let o = s.cli(&["--json", "ls", dir]);
    if !o.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .or(v["entries"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect()
}

/// Makes the cluster secret on the first machine and takes its join token to the others, the
/// documented way (`init`, `join-token`, `init --join`).
pub fn share_secret(ms: &[Machine]) {
    super::process::local(&ms[0].dir, &["init"]);
    let token = super::process::local(&ms[0].dir, &["join-token"]);
    for m in &ms[1..] {
        super::process::local(&m.dir, &["init", "--join", token.trim()]);
    }
}

/// The peer addresses of every machine but `i`.
pub fn peers_of(ms: &[Machine], i: usize) -> Vec<String> {
    ms.iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, m)| m.peer.clone())
        .collect()
}

/// Starts every machine at once, each with the others as static peers (each waits for the
/// others, `cluster.formation_wait_ms`, before founding).
pub fn start_all(ms: &[Machine]) -> Vec<Option<Server>> {
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..ms.len())
            .map(|i| {
                let (m, p) = (&ms[i], peers_of(ms, i));
                sc.spawn(move || m.start(&p))
            })
            .collect();
        hs.into_iter().map(|h| Some(h.join().unwrap())).collect()
    })
}
