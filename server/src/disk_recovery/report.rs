//! What a recovery found and did, for people (text) and tools (JSON, kept in the data folder
//! as `recovery-report.json`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use wormfs_parts::ids::{DiskId, FileId, NodeId};

/// The backup a recovery started from, or one it could not use.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupUsed {
    /// Its file.
    pub path: String,
    /// Its disk.
    pub disk_id: Option<DiskId>,
    /// The machine that wrote it.
    pub node_id: NodeId,
    /// The Raft log index it holds.
    pub log_index: u64,
    /// That entry's term.
    pub log_term: u64,
    /// When it was written (ms since the epoch).
    pub created_ms: u64,
}

/// A backup on another machine's disk (listed in its scan).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteBackup {
    /// The machine.
    pub node_id: Option<NodeId>,
    /// Its disk.
    pub disk_id: DiskId,
    /// Its file there.
    pub path: String,
    /// The Raft log index it holds.
    pub log_index: u64,
    /// When it was written.
    pub created_ms: u64,
}

/// A backup newer than the one used, and why it was not.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupRefused {
    /// Its file.
    pub path: String,
    /// Why.
    pub error: String,
}

/// A file brought back from part headers (committed after the backup).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FromHeaders {
    /// Where it is now.
    pub path: String,
    /// The path in its headers (the one the upload asked for).
    pub header_path: String,
    /// The header's path was taken (by a file of the backup, or one found earlier): it got
    /// the next free name, " (1)" and so on.
    pub renamed: bool,
    /// Its id.
    pub file_id: FileId,
    /// Bytes.
    pub size: u64,
    /// Segments.
    pub segments: u32,
    /// Segments whose BLAKE3 was checked here; the rest (parts on other machines) are checked
    /// by the deep scrub the recovery asks for.
    pub segments_checked: u32,
}

/// A file of the backup that grew after it (an append).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Appended {
    /// Its path.
    pub path: String,
    /// Its id.
    pub file_id: FileId,
    /// Segments added from the headers.
    pub segments_added: u32,
    /// What could not be added, if anything.
    pub note: Option<String>,
}

/// A segment that cannot be read whole.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MissingSegment {
    /// Its index.
    pub segment: u32,
    /// Parts needed.
    pub k: u16,
    /// Parts found (indexes).
    pub parts_found: Vec<u16>,
    /// Parts not found (indexes); empty when the segment left no part at all.
    pub parts_missing: Vec<u16>,
    /// What went wrong reading it, if it was read.
    pub error: Option<String>,
}

/// A file found only in headers that cannot be brought back whole.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Incomplete {
    /// Its id.
    pub file_id: FileId,
    /// The path in its headers.
    pub header_path: String,
    /// Where its readable beginning was put (`/lost+found/ID/NAME`), if any segment was.
    pub put_at: Option<String>,
    /// Bytes kept there.
    pub bytes_kept: u64,
    /// The segments that could not be used.
    pub missing: Vec<MissingSegment>,
    /// Anything else to know (its path was taken by a folder, it could not be stored).
    pub note: Option<String>,
}

/// A file of the backup some of whose parts were not found on the disks scanned.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Damaged {
    /// Its path.
    pub path: String,
    /// Its id.
    pub file_id: FileId,
    /// Parts not found where the backup places them (`SEG:PART` on a disk), queued for repair.
    pub parts_missing: Vec<String>,
    /// Segments with fewer than `k` parts found: unreadable until their parts come back.
    pub unreadable_segments: Vec<u32>,
}

/// Everything a recovery found and did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Nothing was written (`--dry-run`).
    pub dry_run: bool,
    /// Where the recovered data folder is (or would be).
    pub data_dir: String,
    /// The node the recovered metadata names as the only voter.
    pub node_id: NodeId,
    /// The cluster.
    pub cluster_id: String,
    /// The same, typed (not in the JSON twice).
    #[serde(skip)]
    pub cluster: Option<wormfs_parts::ids::ClusterId>,
    /// The disks scanned, by machine (`None`: this one).
    pub disks: Vec<String>,
    /// Part files found and usable.
    pub parts_found: u64,
    /// Part files unusable (unfinished writes, damaged headers), with why (the first 50).
    pub parts_unusable: Vec<String>,
    /// How many were unusable in all.
    pub parts_unusable_count: u64,
    /// The backup used (`None`: none was found; everything comes from the headers).
    pub backup: Option<BackupUsed>,
    /// Newer backups that could not be used.
    pub backups_refused: Vec<BackupRefused>,
    /// Files restored as the backup has them.
    pub from_backup: u64,
    /// Files brought back from the part headers (committed after the backup).
    pub from_headers: Vec<FromHeaders>,
    /// Files of the backup that grew after it.
    pub appended: Vec<Appended>,
    /// Files found only in headers that could not be brought back whole.
    pub incomplete: Vec<Incomplete>,
    /// Files of the backup with parts not found.
    pub damaged: Vec<Damaged>,
    /// Parts moved since the backup (found on another disk than it says), recorded where found.
    pub parts_relocated: u64,
    /// Files whose parts predate the backup but which it does not hold (deleted before it):
    /// not brought back; the sweeper removes their parts.
    pub deleted_before_backup: u64,
    /// Disks the backup names that were not scanned: their parts were not checked.
    pub disks_not_scanned: Vec<String>,
    /// Folders given that are not WormFS disks, with why.
    pub not_disks: Vec<String>,
    /// Backups on other machines' disks (from their scans), to copy here and pass with
    /// `--backup` when one is newer than the one used.
    pub remote_backups: Vec<RemoteBackup>,
    /// What a recovery cannot know.
    pub cannot_know: Vec<String>,
}

impl Report {
    /// The report for people.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} cluster {} into {} (node {} is its only voter)",
            if self.dry_run {
                "Would recover"
            } else {
                "Recovered"
            },
            self.cluster_id,
            self.data_dir,
            self.node_id
        );
        let _ = writeln!(
            s,
            "disks scanned: {}; part files usable: {}, unusable: {}",
            self.disks.len(),
            self.parts_found,
            self.parts_unusable_count
        );
        for u in &self.parts_unusable {
            let _ = writeln!(s, "  unusable: {u}");
        }
        for n in &self.not_disks {
            let _ = writeln!(s, "not a disk: {n} (mount it, or leave it out)");
        }
        for r in &self.backups_refused {
            let _ = writeln!(
                s,
                "newer backup refused: {}: {} (the previous generation is used; a good copy \
                 of a newer one, from another disk or machine, can be given with --backup FILE)",
                r.path, r.error
            );
        }
        match &self.backup {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "metadata backup used: {} (log index {}, written by node {} at {})",
                    b.path,
                    b.log_index,
                    b.node_id,
                    rfc3339(b.created_ms)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "no metadata backup found: every file comes from its part headers"
                );
            }
        }
        let used = self.backup.as_ref().map_or(0, |b| b.log_index);
        for r in self.remote_backups.iter().filter(|r| r.log_index > used) {
            let _ =
                writeln!(
                s,
                "a newer backup (log index {}) is on {}disk {}: {}; copy it here and run again \
                 with --backup FILE to start from it",
                r.log_index,
                r.node_id.map(|n| format!("node {n}'s ")).unwrap_or_default(),
                r.disk_id,
                r.path
            );
        }
        let _ = writeln!(s, "files restored from the backup: {}", self.from_backup);
        let _ = writeln!(
            s,
            "files restored from part headers (committed after the backup): {}",
            self.from_headers.len()
        );
        for f in &self.from_headers {
            let _ = writeln!(
                s,
                "  {} ({} bytes, {} segment(s), {} checked here{})",
                f.path,
                f.size,
                f.segments,
                f.segments_checked,
                if f.renamed {
                    format!("; {} was taken, so it got this name", f.header_path)
                } else {
                    String::new()
                }
            );
        }
        for a in &self.appended {
            let _ = writeln!(
                s,
                "appended after the backup: {} (+{} segment(s)){}",
                a.path,
                a.segments_added,
                a.note
                    .as_ref()
                    .map(|n| format!(": {n}"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(s, "files found incomplete: {}", self.incomplete.len());
        for i in &self.incomplete {
            let _ = writeln!(
                s,
                "  {} (file {}): {}",
                i.header_path,
                i.file_id,
                match &i.put_at {
                    Some(p) => format!("its first {} bytes are at {p}", i.bytes_kept),
                    None => "nothing of it could be read".to_owned(),
                }
            );
            if let Some(n) = &i.note {
                let _ = writeln!(s, "    {n}");
            }
            for m in &i.missing {
                let _ = writeln!(
                    s,
                    "    segment {}: {} of {} parts needed found ({:?}){}{}",
                    m.segment,
                    m.parts_found.len(),
                    m.k,
                    m.parts_found,
                    if m.parts_missing.is_empty() {
                        String::new()
                    } else {
                        format!(", missing parts {:?}", m.parts_missing)
                    },
                    m.error
                        .as_ref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                );
            }
        }
        for d in &self.damaged {
            let _ = writeln!(
                s,
                "damaged: {}: parts not found {:?} (queued for repair){}",
                d.path,
                d.parts_missing,
                if d.unreadable_segments.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; segments {:?} are unreadable until their parts come back",
                        d.unreadable_segments
                    )
                }
            );
        }
        if self.parts_relocated > 0 {
            let _ = writeln!(
                s,
                "parts found on another disk than the backup says (moved after it): {}",
                self.parts_relocated
            );
        }
        if self.deleted_before_backup > 0 {
            let _ = writeln!(
                s,
                "files deleted before the backup (their parts are left to the sweeper): {}",
                self.deleted_before_backup
            );
        }
        for d in &self.disks_not_scanned {
            let _ = writeln!(
                s,
                "not scanned: disk {d}, which the backup names (its parts were not checked): \
                 mount it and run again, or pass --scan from its machine"
            );
        }
        let _ = writeln!(s, "what a recovery cannot know:");
        for c in &self.cannot_know {
            let _ = writeln!(s, "  - {c}");
        }
        s
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}
