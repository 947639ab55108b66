//! The storage engine of one node: its disks, the metadata, and consensus, with the namespace
//! operations that go through Raft. Ingest and reads are in `ingest.rs` and `read.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use wormfs_config::{
    Config, IngestConfig, RepairConfig, RetentionConfig, ScrubConfig, StorageConfig,
};

use crate::consensus::{Consensus, ConsensusError};
use crate::data_plane::wire::DiskOffer;
use wormfs_meta::command::{CommandV1, DiskStatus, Outcome, Rejection};
use wormfs_meta::{DirEntry, FileRecord, MetaDb, MetaError};
use wormfs_parts::disk::{DiskState, LocalDisk, MountInfo, Space};
use wormfs_parts::disk_set::DiskSet;
use wormfs_parts::fsutil::now_ms;
use wormfs_parts::ids::{ClusterId, DiskId, FileId, NodeId};
use wormfs_parts::part_io::{PartReadError, PartReader};
use wormfs_parts::placement::Candidate;
use wormfs_parts::policy::Policy;
use wormfs_parts::tree_path::TreePath;

/// An error of a namespace operation; the API maps each kind to a status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The command was refused (not found, exists...).
    #[error("{0}")]
    Rejected(#[from] Rejection),
    /// A bad request.
    #[error("{0}")]
    BadRequest(String),
    /// Consensus failed.
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
    /// The metadata store failed.
    #[error("metadata: {0}")]
    Meta(#[from] MetaError),
    /// Not enough healthy storage.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

/// Counters exported by status and metrics.
#[derive(Debug, Default, Serialize)]
pub struct Counters {
    /// Files committed.
    pub ingests_committed: AtomicU64,
    /// Ingests that failed.
    pub ingests_failed: AtomicU64,
    /// Parts found missing, unreadable or corrupt during reads.
    pub damaged_part_reads: AtomicU64,
    /// Rows decoded around a damaged part.
    pub degraded_rows: AtomicU64,
    /// Reads that could not be served.
    pub unreadable: AtomicU64,
    /// Orphan parts removed by the sweeper.
    pub orphans_swept: AtomicU64,
    /// Sweeps finished (the trash's space check waits for one after it purges).
    pub sweeps: AtomicU64,
}

/// One node's storage engine.
pub struct Store {
    /// The cluster.
    pub cluster_id: ClusterId,
    /// This node.
    pub node_id: NodeId,
    /// This node's disks.
    pub disks: DiskSet,
    /// The metadata database.
    pub meta: MetaDb,
    /// Raft.
    pub consensus: Consensus,
    /// Storage settings.
    pub storage: StorageConfig,
    /// Ingest settings.
    pub ingest: IngestConfig,
    /// Counters.
    pub counters: Counters,
    /// The data plane's client (other nodes' disks), with its directory of members.
    pub data: Arc<crate::data_plane::DataClient>,
    /// Repair settings.
    pub repair: RepairConfig,
    /// Scrub settings.
    pub scrub: ScrubConfig,
    /// The trash's settings (this node's; the leader's apply).
    pub retention: RetentionConfig,
    /// Self-healing's runtime state (what runs now, counters, heal on read).
    pub healing: crate::healing::Healing,
    /// Metadata backups on this node's disks: settings and the last result.
    pub backups: crate::meta_backup::MetaBackups,
    /// The alerts: settings, the conditions this machine sees, its deliveries.
    pub alerts: crate::alerts::Alerts,
    /// The disks' replicated states, read once per metadata generation.
    disk_status_cache: std::sync::Mutex<(u64, Arc<HashMap<DiskId, DiskStatus>>)>,
}

impl Store {
    /// The engine of one node from its parts (node.rs calls this once at start).
    pub fn new(
        cluster_id: ClusterId,
        node_id: NodeId,
        disks: DiskSet,
        meta: MetaDb,
        consensus: Consensus,
        cfg: &Config,
        data: Arc<crate::data_plane::DataClient>,
    ) -> Self {
        Self {
            cluster_id,
            node_id,
            disks,
            meta,
            consensus,
            storage: cfg.storage.clone(),
            ingest: cfg.ingest.clone(),
            counters: Counters::default(),
            data,
            repair: cfg.repair.clone(),
            scrub: cfg.scrub.clone(),
            retention: cfg.retention.clone(),
            healing: crate::healing::Healing::default(),
            backups: crate::meta_backup::MetaBackups::new(cfg.meta.clone()),
            alerts: crate::alerts::Alerts::new(cfg.alerts.clone()),
            disk_status_cache: std::sync::Mutex::new((u64::MAX, Arc::default())),
        }
    }

    /// Every registered disk's replicated state (cached until a change that may touch the
    /// machines or disks: a file's commit does not).
    pub async fn disk_statuses(&self) -> Result<Arc<HashMap<DiskId, DiskStatus>>, StoreError> {
        let generation = self.meta.topology_generation();
        {
            let c = self
                .disk_status_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if c.0 == generation {
                return Ok(c.1.clone());
            }
        }
        let map: Arc<HashMap<DiskId, DiskStatus>> = Arc::new(
            self.meta
                .disk_states()
                .await?
                .into_iter()
                .map(|d| (d.disk_id, d.state))
                .collect(),
        );
        *self
            .disk_status_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = (generation, map.clone());
        Ok(map)
    }

    /// Proposes a command; a rejection becomes `Err(StoreError::Rejected)`.
    pub async fn propose(&self, cmd: CommandV1) -> Result<Outcome, StoreError> {
        match self.consensus.write(cmd).await? {
            Outcome::Rejected(r) => Err(StoreError::Rejected(r)),
            o => Ok(o),
        }
    }

    /// The local disk with this id.
    pub fn disk(&self, id: DiskId) -> Option<Arc<LocalDisk>> {
        self.disks.get(id)
    }

    /// A reader for part `part` of segment `segment` of `file` on disk `disk`, wherever that
    /// disk is: this node's (the part file opened and its header and block table verified) or
    /// another node's (read through the data plane). Blocking (it may open a file). The read
    /// path opens every part through it, wherever the part lies.
    pub fn open_part(
        &self,
        disk: DiskId,
        file: FileId,
        segment: u32,
        part: u16,
    ) -> Result<Arc<dyn PartReader>, PartReadError> {
        if self.disk(disk).is_some() {
            return Ok(Arc::new(self.disks.open_part(disk, file, segment, part)?));
        }
        match self.data.directory().disk(disk) {
            Some((node, _)) if node != self.node_id => {
                Ok(Arc::new(crate::data_plane::RemotePartReader::new(
                    self.data.clone(),
                    crate::data_plane::RemotePart {
                        node,
                        disk,
                        file,
                        segment,
                        part,
                    },
                )))
            }
            _ => Err(PartReadError::Unavailable(format!(
                "disk {disk} not attached"
            ))),
        }
    }

    /// A map of this node's disks by id.
    pub fn disk_map(&self) -> HashMap<DiskId, Arc<LocalDisk>> {
        self.disks.iter().map(|d| (d.id, d.clone())).collect()
    }

    /// Disks that can take a part of `part_bytes`, for placement (only disks the cluster
    /// knows: a part on an unregistered disk could not be found by the other nodes).
    pub fn candidates(&self, part_bytes: u64) -> Vec<Candidate> {
        let dir = self.data.directory();
        self.disks
            .iter()
            .filter(|d| dir.disk(d.id).is_some())
            .filter_map(|d| {
                let space = d.placement_space(part_bytes).ok()?;
                Some(Candidate {
                    disk: d.id,
                    node: self.node_id,
                    domain: d.domain,
                    free_bytes: space.free_bytes.saturating_sub(d.reserve_bytes),
                    total_bytes: space.total_bytes,
                })
            })
            .collect()
    }

    /// Rereads the data plane's directory of members and disks if the metadata changed.
    pub async fn refresh_directory(&self) -> Result<(), MetaError> {
        let ips = self.consensus.control_ips();
        self.data.directory().refresh(&ips).await
    }

    /// Disks of other nodes that can take a part of `part_bytes` now, asked of each node's
    /// data server in parallel (an unreachable node offers none).
    pub async fn remote_candidates(&self, part_bytes: u64) -> Vec<Candidate> {
        let peers = self.data.directory().peers();
        let asks = peers.iter().map(|(node, _)| async move {
            match self.data.disk_offers(*node).await {
                Ok(offers) => offers
                    .into_iter()
                    .filter(|o| o.writable && o.free_bytes >= part_bytes)
                    .map(|o| Candidate {
                        disk: o.disk_id,
                        node: *node,
                        domain: o.fs_dev,
                        free_bytes: o.free_bytes,
                        total_bytes: o.total_bytes,
                    })
                    .collect(),
                Err(e) => {
                    tracing::debug!("placement: node {node} offers no disks: {e}");
                    Vec::new()
                }
            }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Disks registered in the whole cluster (at least this node's), for default policies and
    /// the width check of a policy.
    pub fn cluster_disks(&self) -> usize {
        self.data.directory().disk_count().max(self.disks.len())
    }

    /// Number of disks that can take parts now.
    pub fn writable_disks(&self) -> usize {
        self.disks
            .iter()
            .filter(|d| d.state().0 == DiskState::Active)
            .count()
    }

    /// Resolves the policy for a new file at `path`.
    pub async fn policy_for(
        &self,
        path: &TreePath,
        small: bool,
        explicit: Option<Policy>,
    ) -> Result<Policy, StoreError> {
        if let Some(p) = explicit {
            return Ok(p);
        }
        let disks = self.cluster_disks();
        if small {
            return Ok(Policy::resolve(self.storage.small_file_policy, disks, true));
        }
        match self.meta.effective_policy(&path.parent()).await? {
            Some(text) => text.parse().map_err(StoreError::BadRequest),
            None => Ok(Policy::resolve(self.storage.default_policy, disks, false)),
        }
    }

    /// The entry at `path`: `NotFound` if nothing is there.
    pub async fn entry_at(&self, path: &TreePath) -> Result<DirEntry, StoreError> {
        Ok(self
            .meta
            .lookup(path)
            .await?
            .ok_or_else(|| Rejection::NotFound(path.to_string()))?)
    }

    /// The committed file at `path`: `NotFound` if nothing is there, `IsADirectory` for a directory.
    pub async fn file_at(&self, path: &TreePath) -> Result<FileRecord, StoreError> {
        let entry = self.entry_at(path).await?;
        let file_id = entry
            .file_id
            .ok_or_else(|| Rejection::IsADirectory(path.to_string()))?;
        Ok(self
            .meta
            .file(file_id)
            .await?
            .ok_or_else(|| Rejection::NotFound(path.to_string()))?)
    }

    /// Refuses at once, before any byte is written, a change the commit would refuse: the file
    /// at `path` is retained (its retention ends after now).
    pub async fn check_not_retained(&self, path: &TreePath) -> Result<(), StoreError> {
        let until = self
            .meta
            .retention(path)
            .await?
            .and_then(|r| r.retain_until_ms)
            .filter(|&u| u > now_ms());
        match until {
            Some(until_ms) => Err(Rejection::Retained {
                path: path.to_string(),
                until_ms,
            }
            .into()),
            None => Ok(()),
        }
    }

    /// Creates a directory.
    pub async fn mkdir(&self, path: &TreePath, parents: bool) -> Result<(), StoreError> {
        self.propose(CommandV1::Mkdir {
            path: path.to_string(),
            parents,
            time_ms: now_ms(),
        })
        .await?;
        Ok(())
    }

    /// Removes a file or directory.
    pub async fn remove(&self, path: &TreePath, recursive: bool) -> Result<(), StoreError> {
        self.propose(CommandV1::Remove {
            path: path.to_string(),
            recursive,
            time_ms: now_ms(),
        })
        .await?;
        Ok(())
    }

    /// Renames a file or directory.
    pub async fn rename(
        &self,
        from: &TreePath,
        to: &TreePath,
        replace: bool,
    ) -> Result<(), StoreError> {
        self.propose(CommandV1::Rename {
            from: from.to_string(),
            to: to.to_string(),
            replace,
            time_ms: now_ms(),
        })
        .await?;
        Ok(())
    }

    /// The live WebDAV locks a change would break, each once: for every `(path, below)` in
    /// `paths`, the locks on `path`, the depth-infinity locks on its ancestors and, with
    /// `below`, every lock under it.
    pub async fn locks_in_the_way(
        &self,
        paths: &[(TreePath, bool)],
    ) -> Result<Vec<wormfs_meta::command::Lock>, StoreError> {
        use wormfs_meta::lock_rules::is_ancestor_or_self;
        let locks = self.meta.locks(now_ms()).await?;
        Ok(locks
            .into_iter()
            .filter(|l| {
                paths.iter().any(|(p, below)| {
                    let p = p.to_string();
                    l.path == p
                        || (l.deep && is_ancestor_or_self(&l.path, &p))
                        || (*below && is_ancestor_or_self(&p, &l.path))
                })
            })
            .collect())
    }

    /// Removes the WebDAV lock `token` (an API write told to break locks); `false` if it had
    /// already gone.
    pub async fn break_lock(&self, token: &str) -> Result<bool, StoreError> {
        match self
            .propose(CommandV1::Unlock {
                token: token.to_owned(),
            })
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::Rejected(Rejection::NotFound(_))) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets or clears a directory's policy, refusing one that cannot be placed.
    pub async fn set_policy(
        &self,
        path: &TreePath,
        policy: Option<Policy>,
    ) -> Result<(), StoreError> {
        if let Some(p) = policy {
            p.check_fits(self.cluster_disks())
                .map_err(|e| StoreError::BadRequest(e.to_string()))?;
        }
        self.propose(CommandV1::SetPolicy {
            path: path.to_string(),
            policy: policy.map(|p| p.to_string()),
        })
        .await?;
        Ok(())
    }

    /// Whether the store is full, from its disks' reports: some disks full and too few of the
    /// others (active and `up`) for a write of the default policy (its data parts and the write
    /// quorum). `Some` with the sentence that says so.
    pub fn full_reason(&self, reports: &[DiskReport]) -> Option<String> {
        let counted =
            |d: &&DiskReport| !matches!(d.status, DiskStatus::Removed | DiskStatus::Drained);
        let full = reports
            .iter()
            .filter(counted)
            .filter(|d| d.state == DiskState::Full)
            .count();
        let writable = reports
            .iter()
            .filter(|d| d.state == DiskState::Active && d.status == DiskStatus::Up)
            .count();
        let policy = Policy::resolve(self.storage.default_policy, self.cluster_disks(), false);
        let k = policy.width() - policy.redundancy();
        let needed = k + usize::from(self.storage.write_quorum_extra).min(policy.redundancy());
        (full > 0 && writable < needed).then(|| {
            format!(
                "the store is full: {full} disk(s) full, {writable} can take new parts, a write of {policy} needs {needed}"
            )
        })
    }

    /// Every registered disk as `wormfs disks` shows it, with its state as its own machine
    /// sees it: this node's disks read here, the other machines' asked of their data servers
    /// (in parallel; an answer is reused for a moment), a disk of a machine that does not
    /// answer shown as [`DiskState::MachineDown`].
    pub async fn disk_reports(&self) -> Result<Vec<DiskReport>, StoreError> {
        let records = self.meta.disks().await?;
        let states: HashMap<DiskId, (DiskStatus, String)> = self
            .meta
            .disk_states()
            .await?
            .into_iter()
            .map(|d| (d.disk_id, (d.state, d.reason)))
            .collect();
        let names: HashMap<NodeId, String> = self
            .meta
            .nodes()
            .await?
            .into_iter()
            .map(|n| (n.node_id, n.name))
            .collect();
        // The other machines' own view of their disks.
        let mut others: Vec<NodeId> = records
            .iter()
            .map(|r| r.node_id)
            .filter(|n| *n != self.node_id)
            .collect();
        others.sort_unstable();
        others.dedup();
        let asks = others.iter().map(|node| async move {
            let r = match self.data.disk_offers(*node).await {
                Ok(offers) => Ok(offers
                    .into_iter()
                    .map(|o| (o.disk_id, o))
                    .collect::<HashMap<_, _>>()),
                Err(e) => Err(e.to_string()),
            };
            (*node, r)
        });
        let remote: HashMap<NodeId, Result<HashMap<DiskId, DiskOffer>, String>> =
            futures::future::join_all(asks).await.into_iter().collect();
        let local_mounts: HashMap<DiskId, Option<MountInfo>> = self
            .disks
            .iter()
            .map(|d| (d.id, wormfs_parts::disk::mount_of(&d.root, d.fs_dev)))
            .collect();
        Ok(records
            .into_iter()
            .map(|r| {
                let local = self.disk(r.disk_id);
                let local = local.as_ref();
                let machine = names.get(&r.node_id).cloned().unwrap_or_default();
                let (space, state, reason, mount) = match local {
                    Some(d) => {
                        let (state, reason) = d.state();
                        (
                            // As last measured: a status call wakes no disk.
                            d.known_space(),
                            state,
                            reason,
                            local_mounts.get(&d.id).cloned().flatten(),
                        )
                    }
                    None if r.node_id == self.node_id => (
                        Space::default(),
                        DiskState::Missing,
                        "not attached".to_owned(),
                        None,
                    ),
                    None => match remote.get(&r.node_id) {
                        Some(Ok(offers)) => match offers.get(&r.disk_id) {
                            Some(o) => (
                                Space {
                                    total_bytes: o.total_bytes,
                                    free_bytes: o.free_bytes,
                                },
                                o.state.unwrap_or(if o.writable {
                                    DiskState::Active
                                } else if o.reason.contains("full") {
                                    DiskState::Full
                                } else if o.reason.contains("read-only") {
                                    DiskState::ReadOnly
                                } else {
                                    DiskState::Missing
                                }),
                                o.reason.clone(),
                                o.mount.clone(),
                            ),
                            None => (
                                Space::default(),
                                DiskState::Missing,
                                format!("not attached on machine {machine} (node {})", r.node_id),
                                None,
                            ),
                        },
                        Some(Err(e)) => (
                            Space::default(),
                            DiskState::MachineDown,
                            format!(
                                "machine {machine} (node {}) does not answer: {e}",
                                r.node_id
                            ),
                            None,
                        ),
                        None => (
                            Space::default(),
                            DiskState::MachineDown,
                            format!("machine {machine} (node {}) does not answer", r.node_id),
                            None,
                        ),
                    },
                };
                let (status, status_reason) = states
                    .get(&r.disk_id)
                    .cloned()
                    .unwrap_or((DiskStatus::Up, String::new()));
                // This node's counters of its own disks (0 for another machine's).
                let counter = |c: fn(&LocalDisk) -> &AtomicU64| {
                    local.map_or(0, |d| c(d).load(Ordering::Relaxed))
                };
                DiskReport {
                    status,
                    status_reason,
                    disk_id: r.disk_id,
                    node_id: r.node_id,
                    machine,
                    path: r.path,
                    filesystem: r.fs_dev,
                    mount,
                    space,
                    state,
                    reason,
                    parts: r.parts,
                    part_bytes: r.part_bytes,
                    oldest_verified_ms: r.oldest_verified_ms,
                    bytes_read: counter(|d| &d.bytes_read),
                    bytes_written: counter(|d| &d.bytes_written),
                    read_errors: counter(|d| &d.read_errors),
                    checksum_failures: counter(|d| &d.checksum_failures),
                    write_errors: counter(|d| &d.write_errors),
                }
            })
            .collect())
    }
}

/// A disk as `wormfs disks` shows it.
#[derive(Debug, Serialize)]
pub struct DiskReport {
    /// Id.
    pub disk_id: DiskId,
    /// Node.
    pub node_id: NodeId,
    /// Its machine's name.
    pub machine: String,
    /// Path on the node.
    pub path: String,
    /// Filesystem device (failure domain).
    pub filesystem: u64,
    /// Where that filesystem is mounted on its machine (`null` where unknown).
    pub mount: Option<MountInfo>,
    /// Capacity and free space of its filesystem (free: what the machine reports, after the
    /// reserve for another machine's disk).
    pub space: Space,
    /// Observed state, as its own machine sees it (`machine_down` when that machine does not
    /// answer).
    pub state: DiskState,
    /// Why, when not active.
    pub reason: String,
    /// Its state in the replicated metadata (`up`, `down`, `out`, `draining`, `drained`,
    /// `removed`).
    pub status: DiskStatus,
    /// Why it has that state.
    pub status_reason: String,
    /// Parts it holds.
    pub parts: u64,
    /// About how many bytes of WormFS part data it holds (from the metadata).
    pub part_bytes: u64,
    /// The oldest verification (write, repair or scrub) of its healthy parts, ms since the
    /// epoch: every part on it was checked since (`None`: it holds none).
    pub oldest_verified_ms: Option<u64>,
    /// Bytes read since start.
    pub bytes_read: u64,
    /// Bytes written since start.
    pub bytes_written: u64,
    /// Corrupt or failed block reads since start.
    pub read_errors: u64,
    /// Of those, blocks whose checksum did not match.
    pub checksum_failures: u64,
    /// Failed part writes since start.
    pub write_errors: u64,
}
