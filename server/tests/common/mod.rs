//! Shared helpers for the in-process engine tests.
#![allow(dead_code, missing_docs)]

use std::path::Path;
use std::sync::Arc;

use rand::{RngCore, SeedableRng};
use wormfs_meta::command::{Conflict, SourceIdentity};
use wormfs_parts::tree_path::TreePath;
use wormfs_server::ingest::{IngestRequest, IngestResult};
use wormfs_server::node::Node;
use wormfs_server::read::FileReader;
use wormfs_server::store::{Store, StoreError};

/// A config for a node in `dir` with small blocks and segments, so tests cross many boundaries.
pub fn config(dir: &Path, block: u32, part_bytes: u64) -> wormfs_config::Config {
    let overrides = wormfs_config::Overrides {
        data_dir: Some(dir.join("data")),
        // Any free port for the peer network: tests run side by side.
        peer_listen: Some("127.0.0.1:0".parse().unwrap()),
        data_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    let mut cfg = wormfs_config::load(None, Vec::<(String, String)>::new(), &overrides)
        .expect("embedded config");
    cfg.storage.block_size_bytes = block;
    cfg.storage.segment_part_bytes = part_bytes;
    cfg.storage.reserve_free_bytes = 0;
    cfg
}

pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

pub fn req(path: &str, policy: Option<&str>) -> IngestRequest {
    IngestRequest {
        path: TreePath::parse(path).unwrap(),
        policy: policy.map(|p| p.parse().unwrap()),
        conflict: Conflict::Fail,
        source: SourceIdentity::Upload {
            client: "test".into(),
        },
        expected_size: None,
        retention_checked: false,
    }
}

pub async fn put(
    store: &Arc<Store>,
    path: &str,
    policy: Option<&str>,
    data: &[u8],
) -> Result<IngestResult, StoreError> {
    store.ingest(req(path, policy), data).await
}

pub async fn read(store: &Arc<Store>, path: &str, start: u64, end: u64) -> Result<Vec<u8>, String> {
    let e = store
        .meta
        .lookup(&TreePath::parse(path).unwrap())
        .await
        .unwrap()
        .ok_or("not found")?;
    let rec = store
        .meta
        .file(e.file_id.ok_or("dir")?)
        .await
        .unwrap()
        .ok_or("no file")?;
    FileReader::new(store.clone(), rec)
        .read_range(start, end)
        .await
        .map(|b| b.to_vec())
        .map_err(|e| e.to_string())
}

pub fn bytes_read(store: &Store) -> u64 {
    store
        .disks
        .iter()
        .map(|d| d.bytes_read.load(std::sync::atomic::Ordering::Relaxed))
        .sum()
}

/// A node alone: the engine with an in-process consensus, no peer network or data server.
pub async fn start(cfg: &wormfs_config::Config) -> Node {
    Node::start_alone(cfg).await.expect("node starts")
}

/// The TCP ports this process listens on (its own sockets in LISTEN state, from /proc).
pub fn listening_ports() -> Vec<u16> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(link) = std::fs::read_link(fd.path()) {
            let link = link.to_string_lossy().into_owned();
            if let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
            {
                inodes.insert(inode.to_owned());
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, st (0A = LISTEN), inode
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

/// Part files currently on the node's disks.
pub fn part_files(store: &Store) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for d in &store.disks {
        let Ok(top) = std::fs::read_dir(d.parts_dir()) else {
            continue;
        };
        for sub in top.flatten() {
            for f in std::fs::read_dir(sub.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                out.push(f.path());
            }
        }
    }
    out
}
pub mod dav;
pub mod machines;
pub mod mount;
pub mod process;
pub mod receiver;
