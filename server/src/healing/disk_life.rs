//! The life of a disk: add, drain, replace, remove, each checked before anything changes.
//!
//! A disk is added on the machine it is attached to (the node the command talks to): its
//! identity file is written, it is registered through Raft and joins the node's disk set at
//! once (the data server shares the set). Registered disks of this node are opened at every
//! start, whether or not the configuration lists them, so a disk added at run time stays.
//!
//! Draining marks the disk `draining`: the repair queue takes each of its segments and copies
//! the part elsewhere (reading it from the draining disk first); once the metadata places no
//! part on it, the leader marks it `drained`. Removing is refused while the disk holds parts,
//! unless forced (they then count as lost and are rebuilt), and refused even when forced while
//! it holds the last readable parts of anything, unless the disk is unreadable anyway.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};
use wormfs_meta::command::{CommandV1, DiskStatus};
use wormfs_parts::disk::{DiskState, LocalDisk};
use wormfs_parts::fsutil::now_ms;
use wormfs_parts::ids::DiskId;

/// What a disk command did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskChange {
    /// The disk changed (for a replacement, the new one).
    pub disk_id: DiskId,
    /// Its state now.
    pub state: DiskStatus,
    /// What happens next, in words.
    pub message: String,
}

fn bad(msg: impl Into<String>) -> StoreError {
    StoreError::BadRequest(msg.into())
}

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

impl Store {
    /// Adds the folder `path` of this machine as a new disk.
    pub async fn add_disk(&self, path: &Path) -> Result<DiskChange, StoreError> {
        if !path.is_absolute() {
            return Err(bad(format!(
                "{}: give the disk's absolute path on this machine",
                path.display()
            )));
        }
        let path: PathBuf = path.to_owned();
        if let Some(old) = self.disks.iter().find(|d| d.root == path) {
            if old.readable() {
                return Err(bad(format!(
                    "{} is already disk {} of this machine",
                    path.display(),
                    old.id
                )));
            }
            // The disk that was here is gone (its folder was emptied or replaced): detach it.
            self.disks.remove(old.id);
        }
        crate::startup_checks::check_disk(&path).map_err(|e| bad(format!("{e:#}")))?;
        std::fs::create_dir_all(&path)
            .map_err(|e| bad(format!("{}: cannot create the folder: {e}", path.display())))?;
        let (cluster, reserve) = (self.cluster_id, self.storage.reserve_free_bytes);
        let p = path.clone();
        let disk = tokio::task::spawn_blocking(move || LocalDisk::open(&p, cluster, None, reserve))
            .await
            .map_err(|e| StoreError::Other(e.into()))?
            .map_err(|e| bad(format!("{}: {e}", path.display())))?;
        if disk.state().0 == DiskState::Missing {
            return Err(bad(format!("{}: {}", path.display(), disk.state().1)));
        }
        if let Some(known) = self.disk_statuses().await?.get(&disk.id) {
            if matches!(known, DiskStatus::Removed) {
                return Err(bad(format!(
                    "{} holds disk {} which was removed from the cluster; give an empty folder",
                    path.display(),
                    disk.id
                )));
            }
        }
        let mut disk = disk;
        disk.domain = crate::startup_checks::failure_domain(&disk.root, disk.fs_dev);
        let disk = Arc::new(disk);
        self.propose(CommandV1::RegisterDisk {
            disk_id: disk.id,
            node_id: self.node_id,
            path: path.display().to_string(),
            fs_dev: disk.domain,
            time_ms: now_ms(),
        })
        .await?;
        self.disks.add(disk.clone()).map_err(bad)?;
        if let Err(e) = self.refresh_directory().await {
            tracing::warn!("data plane: cannot read the members: {e}");
        }
        tracing::info!(disk = %disk.id, path = %path.display(), "disk added");
        Ok(DiskChange {
            disk_id: disk.id,
            state: DiskStatus::Up,
            message: format!(
                "disk {} added at {}: new parts may go to it now",
                disk.id,
                path.display()
            ),
        })
    }

    /// The disks of the cluster that are up, other than `except`, with their free bytes where
    /// known (this node's disks, and other nodes' offers).
    async fn free_elsewhere(&self, except: DiskId) -> Result<(usize, u64), StoreError> {
        let statuses = self.disk_statuses().await?;
        let mut cands = self.candidates(0);
        cands.extend(self.remote_candidates(0).await);
        let up: Vec<_> = cands
            .into_iter()
            .filter(|c| c.disk != except && statuses.get(&c.disk) == Some(&DiskStatus::Up))
            .collect();
        Ok((up.len(), up.iter().map(|c| c.free_bytes).sum()))
    }

    /// Starts emptying a disk onto the others.
    pub async fn drain_disk(&self, id: DiskId) -> Result<DiskChange, StoreError> {
        let statuses = self.disk_statuses().await?;
        match statuses.get(&id) {
            None => return Err(StoreError::Rejected(wormfs_meta::command::Rejection::NotFound(format!("disk {id}")))),
            Some(DiskStatus::Up) => {}
            Some(DiskStatus::Draining) => {
                return Ok(DiskChange {
                    disk_id: id,
                    state: DiskStatus::Draining,
                    message: format!("disk {id} is already draining"),
                })
            }
            Some(s) => {
                return Err(bad(format!(
                    "disk {id} is {s}: only a disk that is up can be drained (one that is down or out is rebuilt from the others)"
                )))
            }
        }
        let needed = self.meta.bytes_on_disk(id).await?;
        let widest = self.meta.widest_policy().await?.unwrap_or(0);
        let (others, free) = self.free_elsewhere(id).await?;
        if others < widest {
            return Err(bad(format!(
                "the widest policy in use needs {widest} disks for a segment's parts; {others} other disk(s) are up: add a disk first"
            )));
        }
        if needed > free {
            return Err(bad(format!(
                "draining disk {id} needs {} free on the other disks; {} is",
                human(needed),
                human(free)
            )));
        }
        self.propose(CommandV1::SetDiskState {
            disk_id: id,
            state: DiskStatus::Draining,
            reason: "drain asked for".into(),
            time_ms: now_ms(),
        })
        .await?;
        self.healing.wake_repair.notify_waiters();
        Ok(DiskChange {
            disk_id: id,
            state: DiskStatus::Draining,
            message: format!(
                "disk {id} is draining: {} of parts are copied to the other disks; it shows `drained` when empty",
                human(needed)
            ),
        })
    }

    /// Removes a disk from the cluster.
    pub async fn remove_disk(&self, id: DiskId, force: bool) -> Result<DiskChange, StoreError> {
        let statuses = self.disk_statuses().await?;
        let Some(&state) = statuses.get(&id) else {
            return Err(StoreError::Rejected(
                wormfs_meta::command::Rejection::NotFound(format!("disk {id}")),
            ));
        };
        if state == DiskStatus::Removed {
            return Ok(DiskChange {
                disk_id: id,
                state,
                message: format!("disk {id} was removed already"),
            });
        }
        let held = self
            .meta
            .disks()
            .await?
            .iter()
            .find(|d| d.disk_id == id)
            .map_or(0, |d| d.parts);
        if held > 0 {
            let imp = self.meta.impact(&[id], 3).await?;
            let readable_here = state.available();
            if imp.unreadable_segments > 0 && readable_here {
                let examples: Vec<&str> = imp
                    .unreadable_files
                    .iter()
                    .map(|f| f.path.as_str())
                    .collect();
                return Err(bad(format!(
                    "disk {id} holds the only readable parts of {} segment(s) (such as {}): removing it would lose them; drain it instead (wormfs disk drain {id})",
                    imp.unreadable_segments,
                    examples.join(", ")
                )));
            }
            if !force {
                return Err(bad(format!(
                    "disk {id} still holds {held} part(s): drain it first (wormfs disk drain {id}), or --force to count them as lost and rebuild them ({} segment(s) would be left at tolerance 0{})",
                    imp.zero_tolerance_segments,
                    if imp.unreadable_segments > 0 {
                        format!(", {} unreadable until the disk comes back", imp.unreadable_segments)
                    } else {
                        String::new()
                    }
                )));
            }
        }
        self.propose(CommandV1::SetDiskState {
            disk_id: id,
            state: DiskStatus::Removed,
            reason: if force && held > 0 {
                "removed by the operator (forced): its parts are rebuilt".into()
            } else {
                "removed by the operator".into()
            },
            time_ms: now_ms(),
        })
        .await?;
        self.disks.remove(id);
        self.healing.wake_repair.notify_waiters();
        Ok(DiskChange {
            disk_id: id,
            state: DiskStatus::Removed,
            message: if held > 0 {
                format!("disk {id} removed; its {held} part(s) are being rebuilt elsewhere")
            } else {
                format!("disk {id} removed; it can be unplugged")
            },
        })
    }

    /// Puts a new disk at `path` of this machine in the place of `old`: the new one is added,
    /// and the old one drained (when it still reads) or removed (when it is gone); repair
    /// then refills the cluster, the new disk first as the emptiest.
    pub async fn replace_disk(&self, old: DiskId, path: &Path) -> Result<DiskChange, StoreError> {
        let statuses = self.disk_statuses().await?;
        let Some(&state) = statuses.get(&old) else {
            return Err(StoreError::Rejected(
                wormfs_meta::command::Rejection::NotFound(format!("disk {old}")),
            ));
        };
        let added = self.add_disk(path).await?;
        let then = match state {
            DiskStatus::Up | DiskStatus::Draining => {
                self.drain_disk(old).await?;
                "drained onto the others"
            }
            DiskStatus::Removed | DiskStatus::Drained => "already out of use",
            DiskStatus::Down | DiskStatus::Out => {
                self.remove_disk(old, true).await?;
                "removed; its parts are rebuilt"
            }
        };
        Ok(DiskChange {
            disk_id: added.disk_id,
            state: DiskStatus::Up,
            message: format!(
                "disk {} replaces disk {old}, which is {then}",
                added.disk_id
            ),
        })
    }
}
