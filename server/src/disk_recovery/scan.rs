//! What the disks hold: each disk's identity, every part header that verifies (header CRC and
//! block table; docs/chunk-format.md, section 7), and the metadata backups. A machine's scan
//! can be written to a file (`wormfs recover --from-disks --scan-out`) and joined on another
//! machine (`--scan`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::meta_backup::format::{self as backup_format, BackupHeader};
use wormfs_parts::disk::{read_identity, PARTS_DIR};
use wormfs_parts::ids::{ClusterId, DiskId, NodeId};
use wormfs_parts::part_format::PartHeader;

/// The scan file format this version writes and reads.
pub const SCAN_FORMAT: u32 = 1;

/// A disk found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FoundDisk {
    /// Its id (from `wormfs-disk.json`).
    pub disk_id: DiskId,
    /// Its cluster.
    pub cluster_id: ClusterId,
    /// Its root on the machine scanned.
    pub root: PathBuf,
    /// The device of its root (its failure domain).
    pub fs_dev: u64,
}

/// A part whose header and block table verify.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FoundPart {
    /// The disk it is on.
    pub disk_id: DiskId,
    /// Its header.
    pub header: PartHeader,
}

/// A metadata backup found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FoundBackup {
    /// The disk it is on.
    pub disk_id: DiskId,
    /// Its file.
    pub path: PathBuf,
    /// Its header, when that verifies (the database is checked when it is used).
    pub header: Option<BackupHeader>,
    /// Why it cannot be used.
    pub error: Option<String>,
}

/// What one machine's disks hold.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Scan {
    /// [`SCAN_FORMAT`].
    pub format: u32,
    /// The machine scanned (from its `node.json`, when there is one).
    pub node_id: Option<NodeId>,
    /// Its disks.
    pub disks: Vec<FoundDisk>,
    /// Their parts.
    pub parts: Vec<FoundPart>,
    /// Their metadata backups.
    pub backups: Vec<FoundBackup>,
    /// Part files that could not be used, with why (absent per the format: an unfinished
    /// write, a damaged header or table).
    pub unusable: Vec<String>,
    /// Roots given that are not WormFS disks, with why.
    pub not_disks: Vec<String>,
}

/// Scans `roots`.
pub fn scan_disks(roots: &[PathBuf], node_id: Option<NodeId>) -> anyhow::Result<Scan> {
    let mut scan = Scan {
        format: SCAN_FORMAT,
        node_id,
        ..Scan::default()
    };
    for root in roots {
        let ident = match read_identity(root) {
            Ok(Some(i)) => i,
            Ok(None) => {
                scan.not_disks.push(format!(
                    "{}: no {} (not a WormFS disk, or not mounted)",
                    root.display(),
                    wormfs_parts::disk::IDENTITY_FILE
                ));
                continue;
            }
            Err(e) => {
                scan.not_disks.push(format!("{}: {e}", root.display()));
                continue;
            }
        };
        let fs_dev = std::fs::metadata(root)
            .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
            .unwrap_or(0);
        scan.disks.push(FoundDisk {
            disk_id: ident.disk_id,
            cluster_id: ident.cluster_id,
            root: root.clone(),
            fs_dev,
        });
        scan_parts(root, ident.disk_id, &mut scan)?;
        for path in crate::meta_backup::list(&root.join(backup_format::DIR)) {
            let (header, error) = match backup_format::read_header(&path) {
                Ok((h, _)) => (Some(h), None),
                Err(e) => (None, Some(format!("{e:#}"))),
            };
            scan.backups.push(FoundBackup {
                disk_id: ident.disk_id,
                path,
                header,
                error,
            });
        }
    }
    Ok(scan)
}

fn scan_parts(root: &Path, disk_id: DiskId, scan: &mut Scan) -> anyhow::Result<()> {
    let parts = root.join(PARTS_DIR);
    let Ok(subs) = std::fs::read_dir(&parts) else {
        return Ok(());
    };
    let mut subs: Vec<PathBuf> = subs.flatten().map(|e| e.path()).collect();
    subs.sort();
    for sub in subs {
        let Ok(files) = std::fs::read_dir(&sub) else {
            continue;
        };
        let mut files: Vec<PathBuf> = files.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
            let Some(name) = name else { continue };
            // Temporary names start with '.': an unfinished write (section 2).
            if name.starts_with('.') || !name.ends_with(".wp") {
                continue;
            }
            match read_part_header(&f) {
                Ok(header) => {
                    let by_name = wormfs_parts::part_format::parse_part_file_name(&name);
                    if by_name != Some((header.file_id, header.segment_index, header.part_index)) {
                        scan.unusable
                            .push(format!("{}: its header names another part", f.display()));
                        continue;
                    }
                    scan.parts.push(FoundPart { disk_id, header });
                }
                Err(e) => scan.unusable.push(format!("{}: {e:#}", f.display())),
            }
        }
    }
    Ok(())
}

/// Reads and verifies a part's header and block table (either format version).
pub fn read_part_header(path: &Path) -> anyhow::Result<PartHeader> {
    let f = std::fs::File::open(path)?;
    Ok(wormfs_parts::part_io::read_front_region(&f)?.header)
}

/// Writes a scan to `path` (JSON).
pub fn write_scan(scan: &Scan, path: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_vec(scan)?;
    wormfs_parts::fsutil::write_durably(path, &json)
        .with_context(|| format!("write {}", path.display()))
}

/// Reads a scan another machine wrote.
pub fn read_scan(path: &Path) -> anyhow::Result<Scan> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let scan: Scan = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a WormFS disk scan", path.display()))?;
    anyhow::ensure!(
        scan.format == SCAN_FORMAT,
        "{}: scan format {} is unknown to this version (it reads {SCAN_FORMAT})",
        path.display(),
        scan.format
    );
    Ok(scan)
}
