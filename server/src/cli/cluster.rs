//! The node and its cluster: `cluster`, `status`, `disks`, `admin snapshot|sweep`,
//! `node remove`.

use clap::Subcommand;

use super::client::{human, or_null, print_json, Client};
use crate::api::types::{
    disk_state_name, ClusterResponse, DisksResponse, RemoveQuery, RemoveResponse, SnapshotResponse,
    StatusResponse, SweepResponse,
};
use crate::consensus::{ClusterView, Formation};
use wormfs_meta::command::DiskStatus;
use wormfs_parts::disk::DiskState;

/// `wormfs admin ...`
#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Build a metadata snapshot and purge the Raft log up to it.
    Snapshot,
    /// Remove orphan parts now.
    Sweep,
    /// Write a backup of the metadata to this node's disks now (docs/operations.md).
    Backup,
    /// Offline, on a stopped node: clear the retention of the files at PATH and below (each
    /// logged to stderr and DATA_DIR/unlock.log). In a cluster: on every machine, all stopped.
    Unlock {
        /// The file or directory.
        path: String,
        /// Config and data folder, as for `serve`.
        #[command(flatten)]
        serve: Box<super::local::ServeArgs>,
    },
}

/// `wormfs node ...`
#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Remove a dead machine from the cluster (its parts then count as lost).
    Remove {
        /// Its node id (see `wormfs cluster`).
        id: u64,
        /// Remove it even though it was heard from in the last few seconds.
        #[arg(long)]
        force: bool,
    },
}

/// `wormfs cluster`.
pub(super) async fn cluster(c: &Client) -> anyhow::Result<()> {
    let v: ClusterResponse = c.get_json("/api/v1/cluster").await?;
    if c.json {
        print_json(&v);
    } else {
        print_cluster(&v.0);
    }
    Ok(())
}

/// An optional value, or `-`.
fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn print_cluster(v: &ClusterView) {
    println!(
        "cluster:  {} ({})",
        v.cluster_name,
        opt(v.cluster_id.as_ref())
    );
    println!(
        "this node: {}   term {}   leader {}   applied {}",
        v.node_id,
        v.term,
        opt(v.leader),
        opt(v.last_applied)
    );
    if let Formation::Blocked(why) = &v.formation {
        println!("BLOCKED:  {why}");
    }
    println!(
        "{:<20} {:<16} {:<8} {:<7} {:<9} {:>6} {:>8}  {:<21}  peer address",
        "node", "name", "role", "leader", "connected", "lag", "contact", "data"
    );
    for m in &v.members {
        // The node id unpadded, as this table has always printed it.
        println!(
            "{} {:<16} {:<8} {:<7} {:<9} {:>6} {:>8}  {:<21}  {}",
            m.node_id,
            opt(m.name.as_ref()),
            m.role,
            if m.leader { "yes" } else { "" },
            if m.connected { "yes" } else { "no" },
            opt(m.lag),
            m.last_contact_ms
                .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            opt(m.data_addr.as_ref()),
            m.addr
        );
    }
}

/// `wormfs status`.
pub(super) async fn status(c: &Client) -> anyhow::Result<()> {
    let v: StatusResponse = c.get_json("/api/v1/status").await?;
    if c.json {
        print_json(&v);
        return Ok(());
    }
    println!("cluster:  {}  node {}", v.cluster_id, v.node_id);
    if v.health_reason.is_empty() {
        println!("health:   {}", v.health.as_str());
    } else {
        println!("health:   {} ({})", v.health.as_str(), v.health_reason);
    }
    println!(
        "files:    {} in {} directories, {}",
        v.files,
        v.directories,
        human(v.logical_bytes)
    );
    let mut counts = vec![format!("{} active", v.disks_active)];
    if v.disks_full > 0 {
        counts.push(format!("{} full", v.disks_full));
    }
    if v.disks_machine_down > 0 {
        counts.push(format!("{} on machines down", v.disks_machine_down));
    }
    println!(
        "disks:    {} ({}), WormFS parts {}, filesystems {} used",
        v.disks,
        counts.join(", "),
        human(v.part_bytes),
        human(v.disk_bytes_used)
    );
    println!(
        "missing parts: {}   ingests in progress: {}",
        v.missing_parts, v.ingests_in_progress
    );
    let t = v.trash;
    println!(
        "trash:    {} file(s), {} ({} on the disks){}",
        t.files,
        human(t.bytes),
        human(t.stored_bytes),
        if t.enabled { "" } else { "; the trash is off" }
    );
    println!(
        "raft:     term {} leader {} applied {}",
        v.raft.term,
        or_null(v.raft.leader),
        or_null(v.raft.last_applied)
    );
    println!("{}", super::healing::backup_line(&v.meta_backup));
    for m in &v.media_servers {
        println!("{}", super::notify::status_line(m));
    }
    Ok(())
}

/// A disk's STATE in `wormfs disks`: what its machine sees when that says more than the
/// replicated state (`full`, `read-only`, `missing`, `machine down`), else the replicated
/// state (`up`, `down`, `out`, `draining`, ...).
fn disk_state_label(state: DiskState, status: DiskStatus) -> String {
    match (state, status) {
        (DiskState::MachineDown, _) => "machine down".to_owned(),
        (DiskState::Active, s) => s.as_str().to_owned(),
        (DiskState::Full, DiskStatus::Up) => "full".to_owned(),
        (DiskState::ReadOnly, DiskStatus::Up) => "read-only".to_owned(),
        (DiskState::Missing, DiskStatus::Up) => "missing".to_owned(),
        (_, s) => s.as_str().to_owned(),
    }
}

/// `wormfs disks`.
pub(super) async fn disks(c: &Client) -> anyhow::Result<()> {
    let v: DisksResponse = c.get_json("/api/v1/disks").await?;
    if c.json {
        print_json(&v);
        return Ok(());
    }
    // Grouped by machine (this table is sorted by machine, then path).
    let mut disks: Vec<_> = v.disks.iter().collect();
    disks.sort_by(|a, b| (a.node_id, &a.path).cmp(&(b.node_id, &b.path)));
    // A name two machines share (host names alike) is followed by the node id.
    let mut by_name: std::collections::HashMap<&str, std::collections::HashSet<u64>> =
        Default::default();
    for d in &disks {
        by_name
            .entry(d.machine.as_str())
            .or_default()
            .insert(d.node_id);
    }
    let shared_names: Vec<&str> = by_name
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(n, _)| *n)
        .collect();
    println!(
        "{:<12} {:<36}  {:<16} {:>10} {:>10} {:>10} {:>7}  {:<12} PATH",
        "MACHINE", "ID", "MOUNT", "SIZE", "FREE", "WORMFS", "PARTS", "STATE"
    );
    for d in disks {
        let (total, free) = (d.space.total_bytes, d.space.free_bytes);
        let unknown = d.state == DiskState::MachineDown;
        let size = |n: u64| if unknown { "-".to_owned() } else { human(n) };
        let mount = match &d.mount {
            Some(m) => m.mount_point.clone(),
            None if unknown => "-".to_owned(),
            None => format!("dev {:x}", d.filesystem),
        };
        let machine = if d.machine.is_empty() {
            format!("node {}", d.node_id)
        } else if shared_names.contains(&d.machine.as_str()) {
            format!("{} ({})", d.machine, d.node_id)
        } else {
            d.machine.clone()
        };
        println!(
            "{:<12} {:<36}  {:<16} {:>10} {:>10} {:>10} {:>7}  {:<12} {}{}",
            machine,
            d.disk_id.to_string(),
            mount,
            size(total),
            size(free),
            human(d.part_bytes),
            d.parts,
            disk_state_label(d.state, d.status),
            d.path,
            match (d.status_reason.is_empty(), d.reason.is_empty()) {
                (true, true) => String::new(),
                (false, _) => format!("  ({})", d.status_reason),
                (true, false) => format!("  ({}: {})", disk_state_name(d.state), d.reason),
            }
        );
    }
    let t = v.trash;
    println!(
        "trash: {} file(s), {} ({} of the disks' space, freed when they expire or on `wormfs trash empty`)",
        t.files,
        human(t.bytes),
        human(t.stored_bytes)
    );
    Ok(())
}

/// `wormfs admin snapshot|sweep|backup`: prints the node's answer (JSON for the first two).
pub(super) async fn admin(c: &Client, cmd: AdminCmd) -> anyhow::Result<()> {
    let post = |path| c.req(reqwest::Method::POST, path);
    match cmd {
        AdminCmd::Snapshot => {
            let v: SnapshotResponse = c.send_json(post("/api/v1/admin/snapshot")).await?;
            print_json(&v);
        }
        AdminCmd::Sweep => {
            let v: SweepResponse = c.send_json(post("/api/v1/admin/sweep")).await?;
            print_json(&v);
        }
        AdminCmd::Backup => {
            let v: crate::meta_backup::BackupStatus =
                c.send_json(post("/api/v1/admin/backup")).await?;
            if c.json {
                print_json(&v);
            } else {
                println!("{}", super::healing::backup_line(&v));
            }
        }
        // Offline: `run` dispatches it before any client is made.
        AdminCmd::Unlock { .. } => {
            anyhow::bail!(super::CliError::usage("admin unlock runs offline"))
        }
    }
    Ok(())
}

/// `wormfs node remove ID [--force]`.
pub(super) async fn node(c: &Client, cmd: NodeCmd) -> anyhow::Result<()> {
    let NodeCmd::Remove { id, force } = cmd;
    let rq = c
        .req(
            reqwest::Method::POST,
            &format!("/api/v1/admin/nodes/{id}/remove"),
        )
        .query(&RemoveQuery { force });
    let v: RemoveResponse = c.send_json(rq).await?;
    if c.json {
        print_json(&v);
    } else {
        println!("node {id} removed from the cluster");
    }
    Ok(())
}
