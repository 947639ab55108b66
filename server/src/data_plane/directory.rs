//! Who is where on the data plane: each member's part-data address and pinned certificate,
//! and the node each disk is attached to, read from the replicated metadata and kept fresh by
//! a background task. The data server's list of accepted certificates is updated with it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use super::cert::Fingerprint;
use super::tls::Allowed;
use wormfs_meta::{MetaDb, MetaError};
use wormfs_parts::ids::{DiskId, NodeId};

/// How to reach a node's data server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Its address.
    pub addr: SocketAddr,
    /// Its certificate.
    pub fingerprint: Fingerprint,
}

#[derive(Default)]
struct Inner {
    generation: Option<u64>,
    ips: HashMap<NodeId, IpAddr>,
    nodes: HashMap<NodeId, Endpoint>,
    disks: HashMap<DiskId, (NodeId, u64)>,
}

/// The data plane's view of the membership.
pub struct Directory {
    me: NodeId,
    meta: MetaDb,
    inner: RwLock<Inner>,
    allowed: Allowed,
}

impl Directory {
    /// An empty directory for node `me`; [`Self::refresh`] fills it.
    pub fn new(me: NodeId, meta: MetaDb) -> Arc<Self> {
        Arc::new(Self {
            me,
            meta,
            inner: RwLock::default(),
            allowed: Allowed::default(),
        })
    }

    /// The certificates the data server accepts (the members').
    pub fn allowed(&self) -> Allowed {
        self.allowed.clone()
    }

    /// Rereads the metadata if it changed. `control_ips` gives each member's address on the
    /// control plane, used for a data address registered with an unspecified IP.
    pub async fn refresh(&self, control_ips: &HashMap<NodeId, IpAddr>) -> Result<(), MetaError> {
        let generation = self.meta.topology_generation();
        {
            let inner = self.read();
            if inner.generation == Some(generation) && inner.ips == *control_ips {
                return Ok(());
            }
        }
        let nodes = self.meta.nodes().await?;
        let disks = self.meta.disk_nodes().await?;
        let mut map = HashMap::new();
        for n in nodes {
            let (Ok(mut addr), Ok(fingerprint)) = (
                n.data_addr.parse::<SocketAddr>(),
                n.data_cert.parse::<Fingerprint>(),
            ) else {
                continue;
            };
            if addr.ip().is_unspecified() {
                match control_ips.get(&n.node_id) {
                    Some(ip) => addr.set_ip(*ip),
                    // Not reachable until the membership says where it is.
                    None if n.node_id != self.me => continue,
                    None => {}
                }
            }
            map.insert(n.node_id, Endpoint { addr, fingerprint });
        }
        {
            let mut allowed = self.allowed.write().unwrap_or_else(|p| p.into_inner());
            *allowed = map.iter().map(|(id, e)| (e.fingerprint, *id)).collect();
        }
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if inner.nodes != map || inner.disks.len() != disks.len() {
            tracing::info!(
                members = map.len(),
                disks = disks.len(),
                "data plane: members' addresses and disks updated"
            );
        }
        inner.generation = Some(generation);
        inner.ips = control_ips.clone();
        inner.nodes = map;
        inner.disks = disks.into_iter().map(|(d, n, dev)| (d, (n, dev))).collect();
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The node a disk is attached to, and its failure domain.
    pub fn disk(&self, disk: DiskId) -> Option<(NodeId, u64)> {
        self.read().disks.get(&disk).copied()
    }

    /// The machines with registered disks (not removed), sorted.
    pub fn machines(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.read().disks.values().map(|(n, _)| *n).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// How to reach `node`.
    pub fn endpoint(&self, node: NodeId) -> Option<Endpoint> {
        self.read().nodes.get(&node).cloned()
    }

    /// The other members with a data server.
    pub fn peers(&self) -> Vec<(NodeId, Endpoint)> {
        let mut v: Vec<_> = self
            .read()
            .nodes
            .iter()
            .filter(|(id, _)| **id != self.me)
            .map(|(id, e)| (*id, e.clone()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// Disks registered in the cluster.
    pub fn disk_count(&self) -> usize {
        self.read().disks.len()
    }
}
