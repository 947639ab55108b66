//! Recovery from the disks alone (`wormfs recover --from-disks`): when the metadata is lost,
//! the newest metadata backup that verifies is taken from the disks, compared with every part
//! header found, and completed with the files committed after it, by the paths in their
//! headers. The result is a new `meta/` for a stopped node's data folder (the disks' parts
//! are only read), the state of a cluster of one voter, and a report. docs/operations.md
//! ("When things go wrong") has the steps, for one machine and for a cluster.

mod from_headers;
mod report;
mod scan;
mod segment_check;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

pub use report::Report;
pub use scan::{read_scan, scan_disks, write_scan, FoundPart, Scan};

use crate::meta_backup::format as backup_format;
use report::{BackupRefused, BackupUsed, Damaged};
use wormfs_meta::command::{CommandV1, Outcome, PartRef, SegmentRef};
use wormfs_meta::restore::{PartRow, SegmentRow};
use wormfs_meta::MetaDb;
use wormfs_parts::disk::PARTS_DIR;
use wormfs_parts::ids::{ClusterId, DiskId, FileId, NodeId};
use wormfs_parts::part_format::{part_file_name, PartHeader};

/// What to recover from, and where to.
pub struct Options {
    /// The data folder to write `meta/` into (it must hold no metadata).
    pub data_dir: PathBuf,
    /// This machine's scan (its disks are read to check segments).
    pub local: Scan,
    /// Other machines' scans (`--scan`).
    pub remote: Vec<Scan>,
    /// Backup files given explicitly (`--backup`), tried with those on the disks.
    pub backups: Vec<PathBuf>,
    /// Write nothing: only the report.
    pub dry_run: bool,
    /// The node id of the data folder, if it has one (`node.json`) or the config names one.
    pub node_id: Option<NodeId>,
    /// This node's peer-network address for the membership (`/ip4/IP/tcp/PORT`), when the
    /// backup does not have one for it.
    pub peer_addr: String,
    /// This node's peer id, which ends its membership address (its peer key may be new).
    pub peer_id: Option<String>,
    /// `storage.segment_part_bytes`: the smallest part capacity of files found only in headers.
    pub part_capacity: u64,
}

/// Writes a data folder's identity (`node.json`) for the node and cluster ids a recovery
/// settles on: called before the new `meta/` is moved into place.
pub type IdentityWriter<'a> = &'a dyn Fn(NodeId, ClusterId) -> anyhow::Result<()>;

/// A part found, with where it can be read when it is on this machine.
#[derive(Clone, Debug)]
struct Found {
    disk_id: DiskId,
    header: PartHeader,
    local: Option<PathBuf>,
}

const CANNOT_KNOW: [&str; 4] = [
    "renames and moves after the backup: such files are at the path they had in the backup (or, \
     if written after it, the path they were written to)",
    "deletions after the backup: files deleted since (and not yet swept) are back; check and \
     delete them again",
    "folders made after the backup that held no file, dead properties and locks set after it, \
     users' trash entries after it, and 0-byte files written after it (they have no parts)",
    "a file written after the backup whose last segments lost every part looks complete: its \
     size is the sum of the segments found",
];

/// Runs the recovery (see the module doc).
///
/// `on_identity`, when given, writes the data folder's `node.json` (one that has none).
pub async fn recover(
    opts: Options,
    on_identity: Option<IdentityWriter<'_>>,
) -> anyhow::Result<Report> {
    let meta_dir = opts.data_dir.join("meta");
    let leftovers = std::fs::read_dir(&meta_dir).map_or(0, |d| d.count());
    if leftovers > 0 {
        bail!(
            "{} holds metadata already: recovery writes a new one. Move it aside first \
             (mv {} {}.old), or give another --data-dir",
            meta_dir.display(),
            meta_dir.display(),
            meta_dir.display()
        );
    }
    // Every disk found, local or on another machine's scan.
    let mut disks: HashMap<DiskId, Option<NodeId>> = HashMap::new();
    let mut cluster_ids: HashSet<ClusterId> = HashSet::new();
    let mut report = Report {
        dry_run: opts.dry_run,
        data_dir: opts.data_dir.display().to_string(),
        cannot_know: CANNOT_KNOW.iter().map(|s| (*s).to_owned()).collect(),
        ..Report::default()
    };
    let mut found: BTreeMap<FileId, BTreeMap<u32, Vec<Found>>> = BTreeMap::new();
    let mut local_roots: HashMap<DiskId, PathBuf> = HashMap::new();
    for (scan, local) in
        std::iter::once((&opts.local, true)).chain(opts.remote.iter().map(|s| (s, false)))
    {
        for d in &scan.disks {
            let machine = if local { None } else { scan.node_id };
            disks.insert(d.disk_id, machine);
            cluster_ids.insert(d.cluster_id);
            report.disks.push(format!(
                "{} ({}){}",
                d.root.display(),
                d.disk_id,
                match (local, scan.node_id) {
                    (true, _) => String::new(),
                    (false, Some(n)) => format!(" on node {n}"),
                    (false, None) => " on another machine".to_owned(),
                }
            ));
            if local {
                local_roots.insert(d.disk_id, d.root.clone());
            }
        }
        for p in &scan.parts {
            let h = &p.header;
            let path = local_roots.get(&p.disk_id).filter(|_| local).map(|root| {
                let name = part_file_name(h.file_id, h.segment_index, h.part_index);
                root.join(PARTS_DIR).join(&name[..2]).join(name)
            });
            found
                .entry(h.file_id)
                .or_default()
                .entry(h.segment_index)
                .or_default()
                .push(Found {
                    disk_id: p.disk_id,
                    header: h.clone(),
                    local: path,
                });
            report.parts_found += 1;
        }
        report.parts_unusable_count += scan.unusable.len() as u64;
        for u in &scan.unusable {
            if report.parts_unusable.len() < 50 {
                report.parts_unusable.push(u.clone());
            }
        }
        report.not_disks.extend(scan.not_disks.iter().cloned());
        if !local {
            for b in &scan.backups {
                if let Some(h) = &b.header {
                    report.remote_backups.push(report::RemoteBackup {
                        node_id: scan.node_id,
                        disk_id: b.disk_id,
                        path: b.path.display().to_string(),
                        log_index: h.log_index,
                        created_ms: h.created_ms,
                    });
                }
            }
        }
    }
    if !opts.dry_run && !report.not_disks.is_empty() {
        bail!(
            "{}: mount the disk, or leave it out of the disks given (--disk or \
             storage.disks), then run again (--dry-run shows the whole report first)",
            report.not_disks.join("; ")
        );
    }
    let cluster_id = match cluster_ids.len() {
        0 => bail!("no WormFS disk among the folders given (each holds a wormfs-disk.json)"),
        1 => *cluster_ids.iter().next().expect("one"),
        _ => bail!(
            "the disks belong to {} clusters ({:?}): give the disks of one cluster",
            cluster_ids.len(),
            cluster_ids
        ),
    };
    report.cluster_id = cluster_id.to_string();
    report.cluster = Some(cluster_id);
    // Parts of another cluster's id cannot be on these disks' (the scan checked the header).
    for segs in found.values_mut() {
        for parts in segs.values_mut() {
            parts.retain(|p| p.header.cluster_id == cluster_id);
        }
    }

    // What an interrupted recovery left.
    if !opts.dry_run {
        for e in std::fs::read_dir(&opts.data_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name()
                .to_string_lossy()
                .starts_with("meta.recovering-")
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let work = if opts.dry_run {
        std::env::temp_dir().join(format!("wormfs-recover-{:016x}", rand::random::<u64>()))
    } else {
        opts.data_dir.join(format!(
            "meta.recovering-{}",
            wormfs_parts::fsutil::now_ms()
        ))
    };
    wormfs_parts::fsutil::create_private_dir_all(&work)
        .with_context(|| format!("create {}", work.display()))?;
    let result = rebuild(&opts, &work, cluster_id, &disks, &found, &mut report).await;
    if opts.dry_run || result.is_err() {
        let _ = std::fs::remove_dir_all(&work);
        result?;
        return Ok(report);
    }
    // Everything durable before the new metadata takes its place: the identity it names,
    // the report, the folders' entries.
    let finish = || -> anyhow::Result<()> {
        if let (Some(write), Some(cluster)) = (on_identity, report.cluster) {
            write(report.node_id, cluster)?;
        }
        let json = serde_json::to_vec_pretty(&report)?;
        wormfs_parts::fsutil::write_durably(&opts.data_dir.join("recovery-report.json"), &json)?;
        wormfs_parts::fsutil::write_durably(
            &opts.data_dir.join("recovery-report.txt"),
            report.text().as_bytes(),
        )?;
        wormfs_parts::fsutil::sync_dir(&work.join("snapshots"))?;
        wormfs_parts::fsutil::sync_dir(&work)?;
        std::fs::rename(&work, &meta_dir)
            .with_context(|| format!("move {} to {}", work.display(), meta_dir.display()))?;
        wormfs_parts::fsutil::sync_dir(&opts.data_dir)
    };
    if let Err(e) = finish() {
        let _ = std::fs::remove_dir_all(&work);
        return Err(e);
    }
    Ok(report)
}

/// A backup to try: its file, its disk, and its (log index, creation time) when its header
/// reads.
type Candidate = (PathBuf, Option<DiskId>, Option<(u64, u64)>);

/// The backup candidates, newest first: those on the disks scanned here and those given.
fn backup_candidates(opts: &Options) -> Vec<Candidate> {
    let mut c: Vec<Candidate> = opts
        .local
        .backups
        .iter()
        .map(|b| {
            (
                b.path.clone(),
                Some(b.disk_id),
                b.header.as_ref().map(|h| (h.log_index, h.created_ms)),
            )
        })
        .collect();
    for p in &opts.backups {
        let order = backup_format::read_header(p)
            .ok()
            .map(|(h, _)| (h.log_index, h.created_ms));
        c.push((p.clone(), None, order));
    }
    // A backup whose header is damaged sorts by its name (meta-INDEX-CREATED-...).
    let by_name = |p: &Path| -> (u64, u64) {
        let n = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut it = n.trim_start_matches("meta-").split('-');
        let a = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let b = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        (a, b)
    };
    c.sort_by_key(|(p, _, o)| std::cmp::Reverse(o.unwrap_or_else(|| by_name(p))));
    c
}

async fn rebuild(
    opts: &Options,
    work: &Path,
    cluster_id: ClusterId,
    disks: &HashMap<DiskId, Option<NodeId>>,
    found: &BTreeMap<FileId, BTreeMap<u32, Vec<Found>>>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let db_path = work.join("metadata.db");
    let mut backup = None;
    for (path, disk_id, _) in backup_candidates(opts) {
        let extracted = backup_format::extract(&path, &db_path).and_then(|h| {
            anyhow::ensure!(
                h.cluster_id == cluster_id,
                "it belongs to cluster {}, the disks to {cluster_id}",
                h.cluster_id
            );
            Ok(h)
        });
        match extracted {
            Ok(h) => {
                backup = Some(BackupUsed {
                    path: path.display().to_string(),
                    disk_id,
                    node_id: h.node_id,
                    log_index: h.log_index,
                    log_term: h.log_term,
                    created_ms: h.created_ms,
                });
                break;
            }
            Err(e) => {
                let _ = std::fs::remove_file(&db_path);
                report.backups_refused.push(BackupRefused {
                    path: path.display().to_string(),
                    error: format!("{e:#}"),
                });
            }
        }
    }
    let now = wormfs_parts::fsutil::now_ms();
    // Filled without an fsync per change, then synced as a whole below.
    let db = MetaDb::open_unsynced(&db_path).await?;
    let outcome = async {
        if backup.is_none() {
            apply(
                &db,
                CommandV1::InitCluster {
                    cluster_id,
                    time_ms: now,
                },
            )
            .await?;
        }
        let me = match opts.node_id {
            Some(n) => n,
            None => {
                let nodes = db.nodes().await?;
                match nodes.as_slice() {
                    [only] => only.node_id,
                    _ => rand::random::<u64>() >> 1,
                }
            }
        };
        report.node_id = me;
        report.backup = backup.clone();
        apply(
            &db,
            CommandV1::ExpireIntents {
                now_ms: u64::MAX >> 1,
                writer: None,
            },
        )
        .await?;
        // The backup's intents name ingests under way when it was written: those may have
        // committed after it.
        let backup_created = backup.as_ref().map_or(0, |b| b.created_ms);
        let in_flight: HashSet<FileId> = match &backup {
            Some(b) => intents_in_backup(Path::new(&b.path), work).await?,
            None => HashSet::new(),
        };
        check_backup_files(&db, disks, found, now, report).await?;
        from_headers::bring_back(
            &db,
            opts,
            me,
            found,
            backup_created,
            &in_flight,
            now,
            report,
        )
        .await?;
        register_disks(&db, opts, me, now).await?;
        // Every part is read whole and every segment's BLAKE3 checked by the first scrub.
        apply(
            &db,
            CommandV1::RequestScrub {
                deep: true,
                time_ms: now,
            },
        )
        .await?;
        let transport = wormfs_meta::restore::member_addr(&db, me)
            .await?
            .map(|a| a.split("/p2p/").next().unwrap_or_default().to_owned())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| opts.peer_addr.clone());
        let addr = match &opts.peer_id {
            Some(p) => format!("{transport}/p2p/{p}"),
            None => transport,
        };
        anyhow::Ok((me, addr))
    }
    .await;
    db.close().await;
    let (me, addr) = outcome?;
    if !opts.dry_run {
        std::fs::File::open(&db_path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("sync {}", db_path.display()))?;
        // The new log continues after the newest log index known, so that backups written
        // from now on sort after every one written before the disaster.
        let after = backup
            .as_ref()
            .map(|b| (b.log_index, b.log_term))
            .into_iter()
            .chain(report.remote_backups.iter().map(|b| (b.log_index, 0)))
            .max()
            .unwrap_or((0, 0));
        wormfs_meta::restore::make_single_voter(work, me, &addr, after.0 + 1, after.1 + 1).await?;
    }
    Ok(())
}

async fn apply(db: &MetaDb, cmd: CommandV1) -> anyhow::Result<Outcome> {
    db.apply_offline(&cmd).await
}

/// The files of ingests under way when the backup was written (read from a second copy,
/// before the intents are dropped from the working one).
async fn intents_in_backup(path: &Path, work: &Path) -> anyhow::Result<HashSet<FileId>> {
    let copy = work.join("intents.db");
    backup_format::extract(path, &copy)?;
    let db = MetaDb::open(&copy).await?;
    let ids = db.intents().await.map(|v| {
        v.into_iter()
            .flat_map(|i| [i.file_id, i.target_file_id])
            .collect()
    });
    db.close().await;
    for ext in ["", "-wal", "-shm"] {
        let mut p = copy.clone().into_os_string();
        p.push(ext);
        let _ = std::fs::remove_file(p);
    }
    Ok(ids?)
}

fn header_matches(h: &PartHeader, seg: &SegmentRow) -> bool {
    h.segment_data_len == seg.data_len
        && blake3::Hash::from_bytes(h.segment_blake3).to_hex().as_str() == seg.blake3
}

/// The backup's files against the disks: parts found elsewhere are recorded there, parts not
/// found on a scanned disk are queued for repair, segments below `k` are reported.
async fn check_backup_files(
    db: &MetaDb,
    disks: &HashMap<DiskId, Option<NodeId>>,
    found: &BTreeMap<FileId, BTreeMap<u32, Vec<Found>>>,
    now: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let segments: HashMap<(FileId, u32), SegmentRow> = db
        .all_segment_rows()
        .await?
        .into_iter()
        .map(|s| ((s.file_id, s.seg), s))
        .collect();
    let paths = db.file_paths().await?;
    report.from_backup = paths.len() as u64;
    let mut rows: BTreeMap<(FileId, u32), Vec<PartRow>> = BTreeMap::new();
    for r in db.all_part_rows().await? {
        rows.entry((r.file_id, r.seg)).or_default().push(r);
    }
    let mut not_scanned: HashSet<DiskId> = HashSet::new();
    let mut damaged: BTreeMap<FileId, Damaged> = BTreeMap::new();
    for ((file, seg), parts) in &rows {
        let Some(srow) = segments.get(&(*file, *seg)) else {
            continue;
        };
        let here: Vec<&Found> = found
            .get(file)
            .and_then(|s| s.get(seg))
            .map(|v| {
                v.iter()
                    .filter(|f| header_matches(&f.header, srow))
                    .collect()
            })
            .unwrap_or_default();
        let mut readable = 0usize;
        let mut unknown = false;
        let mut lost: Vec<PartRef> = Vec::new();
        let k = here.first().map(|f| usize::from(f.header.k));
        for r in parts {
            let at = |d: DiskId| {
                here.iter()
                    .any(|f| f.disk_id == d && f.header.part_index == r.part)
            };
            match r.disk_id {
                Some(d) if at(d) => readable += 1,
                other => {
                    if let Some(f) = here.iter().find(|f| f.header.part_index == r.part) {
                        db.set_part_row(PartRow {
                            disk_id: Some(f.disk_id),
                            state: 0,
                            ..*r
                        })
                        .await?;
                        readable += 1;
                        report.parts_relocated += 1;
                    } else if let Some(d) = other {
                        if disks.contains_key(&d) {
                            lost.push(PartRef {
                                file_id: *file,
                                seg: *seg,
                                part: r.part,
                                disk_id: d,
                            });
                        } else {
                            not_scanned.insert(d);
                            unknown = true;
                        }
                    }
                }
            }
        }
        let need = k.unwrap_or(1);
        if !lost.is_empty() || (readable < need && !unknown) {
            let e = damaged.entry(*file).or_insert_with(|| Damaged {
                path: paths
                    .get(file)
                    .and_then(|(_, p)| p.first().cloned())
                    .unwrap_or_else(|| format!("(file {file}, in the trash)")),
                file_id: *file,
                parts_missing: Vec::new(),
                unreadable_segments: Vec::new(),
            });
            e.parts_missing.extend(
                lost.iter()
                    .map(|p| format!("{}:{} on {}", p.seg, p.part, p.disk_id)),
            );
            if readable < need && !unknown {
                e.unreadable_segments.push(*seg);
            }
        }
        if !lost.is_empty() {
            apply(
                db,
                CommandV1::QueueRepair {
                    segments: vec![SegmentRef {
                        file_id: *file,
                        seg: *seg,
                    }],
                    damaged: lost,
                    reason: "recovery: part not found on its disk".into(),
                    time_ms: now,
                },
            )
            .await?;
        }
    }
    report.damaged = damaged.into_values().collect();
    let mut ns: Vec<String> = not_scanned.iter().map(ToString::to_string).collect();
    ns.sort();
    report.disks_not_scanned = ns;
    Ok(())
}

/// Records this machine's disks as its own, and other machines' disks as theirs where their
/// scan names the machine (each also registers its disks when it starts).
async fn register_disks(db: &MetaDb, opts: &Options, me: NodeId, now: u64) -> anyhow::Result<()> {
    for (scan, node) in
        std::iter::once((&opts.local, Some(me))).chain(opts.remote.iter().map(|s| (s, s.node_id)))
    {
        let Some(node) = node else { continue };
        for d in &scan.disks {
            apply(
                db,
                CommandV1::RegisterDisk {
                    disk_id: d.disk_id,
                    node_id: node,
                    path: d.root.display().to_string(),
                    fs_dev: d.fs_dev,
                    time_ms: now,
                },
            )
            .await?;
        }
    }
    Ok(())
}
