//! Read-side queries on the namespace database.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use sqlx::Row;

use crate::command::{DeadProp, Lock};

use super::apply::{walk, Walk};
use super::MetaDb;
use crate::command::SourceIdentity;
use crate::error::{DbContext, MetaError, Res};
use wormfs_parts::ids::{DiskId, FileId, NodeId};
use wormfs_parts::layout::Geometry;
use wormfs_parts::tree_path::TreePath;

/// Whether an entry is a file or a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A file.
    File,
}

/// One entry of a directory listing (or a stat of a directory).
#[derive(Clone, Debug, Serialize)]
pub struct DirEntry {
    /// The name.
    pub name: String,
    /// File or directory.
    pub kind: EntryKind,
    /// Bytes (0 for a directory).
    pub size: u64,
    /// Last change, ms since epoch.
    pub mtime_ms: u64,
    /// The file id, for a file.
    pub file_id: Option<FileId>,
    /// The entity tag, for a file.
    pub etag: Option<String>,
    /// The directory's own policy, if set.
    pub policy: Option<String>,
}

/// A part of a segment.
#[derive(Clone, Debug, Serialize)]
pub struct PartRecord {
    /// Index in the segment.
    pub index: u16,
    /// The disk holding it, `None` if missing.
    pub disk_id: Option<DiskId>,
    /// Whether it needs repair.
    pub missing: bool,
}

/// A segment of a file.
#[derive(Clone, Debug, Serialize)]
pub struct SegmentRecord {
    /// Index within the file.
    pub index: u32,
    /// Offset of its first byte in the file.
    pub offset: u64,
    /// Bytes.
    pub data_len: u64,
    /// BLAKE3 of its bytes, hex.
    pub blake3: String,
    /// Its parts, by index.
    pub parts: Vec<PartRecord>,
}

/// A committed file with its segments.
#[derive(Clone, Debug, Serialize)]
pub struct FileRecord {
    /// The id.
    pub file_id: FileId,
    /// Bytes.
    pub size: u64,
    /// The policy it was written with.
    pub policy: String,
    /// Its segment geometry.
    pub geometry: Geometry,
    /// BLAKE3 of the whole content (unknown after an append).
    pub content_blake3: Option<String>,
    /// Entity tag.
    pub etag: String,
    /// Created, ms since epoch.
    pub created_ms: u64,
    /// Last change, ms since epoch.
    pub mtime_ms: u64,
    /// Where it came from.
    pub source: SourceIdentity,
    /// Segments in order.
    pub segments: Vec<SegmentRecord>,
}

/// A registered disk.
#[derive(Clone, Debug, Serialize)]
pub struct DiskRecord {
    /// The id.
    pub disk_id: DiskId,
    /// Its node.
    pub node_id: NodeId,
    /// Its path on that node.
    pub path: String,
    /// Its failure domain (filesystem device).
    pub fs_dev: u64,
    /// Replicated state (active, draining, failed).
    pub state: String,
    /// Parts it holds per the metadata.
    pub parts: u64,
}

/// An ingest intent.
#[derive(Clone, Debug, Serialize)]
pub struct IntentRecord {
    /// The intent's id.
    pub file_id: FileId,
    /// The file whose parts it writes.
    pub target_file_id: FileId,
    /// The writer.
    pub writer: NodeId,
    /// The destination.
    pub path: String,
    /// Lease end.
    pub lease_until_ms: u64,
}

/// A registered machine.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRecord {
    /// Its node id.
    pub node_id: NodeId,
    /// Its name (host name unless configured).
    pub name: String,
    /// Its node API address.
    pub api_addr: String,
    /// Where it serves part data (empty before it registered one).
    pub data_addr: String,
    /// The SHA-256 fingerprint of its data-plane certificate, hex (empty before registered).
    pub data_cert: String,
}

/// Totals for `status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    /// Files.
    pub files: u64,
    /// Directories (without the root).
    pub dirs: u64,
    /// Logical bytes.
    pub logical_bytes: u64,
    /// Segments.
    pub segments: u64,
    /// Parts recorded as missing.
    pub missing_parts: u64,
    /// Live intents.
    pub intents: u64,
}

fn fid(row: &sqlx::sqlite::SqliteRow, i: usize) -> Option<FileId> {
    row.get::<Option<Vec<u8>>, _>(i)
        .and_then(|b| FileId::from_slice(&b))
}

fn parse_disk(s: Option<String>) -> Option<DiskId> {
    s.and_then(|s| s.parse().ok()).map(DiskId)
}

impl MetaDb {
    /// Resolves a path to a directory entry (for a stat).
    pub async fn lookup(&self, path: &TreePath) -> Res<Option<DirEntry>> {
        let mut c = self.pool().acquire().await.db("acquire a connection")?;
        let r = match walk(&mut c, path).await? {
            Walk::Found(r) => r,
            _ => return Ok(None),
        };
        let row = sqlx::query(
            "SELECT e.name, e.is_dir, e.file_id, e.mtime_ms, e.policy, f.size, f.etag
             FROM entries e LEFT JOIN files f ON f.file_id = e.file_id WHERE e.id = ?",
        )
        .bind(r.id)
        .fetch_one(&mut *c)
        .await
        .db("read an entry")?;
        Ok(Some(entry_from_row(&row)))
    }

    /// The dead properties of `path`; `None` if nothing is there.
    pub async fn props(&self, path: &TreePath) -> Res<Option<Vec<DeadProp>>> {
        let mut c = self.pool().acquire().await.db("acquire a connection")?;
        let id = match walk(&mut c, path).await? {
            Walk::Found(r) => r.id,
            _ => return Ok(None),
        };
        let rows = sqlx::query(
            "SELECT ns, name, prefix, xml FROM props WHERE entry = ? ORDER BY ns, name",
        )
        .bind(id)
        .fetch_all(&mut *c)
        .await
        .db("read dead properties")?;
        Ok(Some(
            rows.iter()
                .map(|r| DeadProp {
                    namespace: r.get(0),
                    name: r.get(1),
                    prefix: r.get(2),
                    xml: r.get(3),
                })
                .collect(),
        ))
    }

    /// The dead properties of every entry in the directory `dir` that has any, by name, in one
    /// query (a PROPFIND of a large directory would otherwise make one query per entry).
    pub async fn child_props(&self, dir: &TreePath) -> Res<Option<HashMap<String, Vec<DeadProp>>>> {
        let mut c = self.pool().acquire().await.db("acquire a connection")?;
        let id = match walk(&mut c, dir).await? {
            Walk::Found(r) => r.id,
            _ => return Ok(None),
        };
        let rows = sqlx::query(
            "SELECT e.name, p.ns, p.name, p.prefix, p.xml FROM entries e \
             JOIN props p ON p.entry = e.id WHERE e.parent = ? ORDER BY e.name, p.ns, p.name",
        )
        .bind(id)
        .fetch_all(&mut *c)
        .await
        .db("read dead properties")?;
        let mut out: HashMap<String, Vec<DeadProp>> = HashMap::new();
        for r in &rows {
            out.entry(r.get(0)).or_default().push(DeadProp {
                namespace: r.get(1),
                name: r.get(2),
                prefix: r.get(3),
                xml: r.get(4),
            });
        }
        Ok(Some(out))
    }

    /// Every WebDAV lock that has not expired at `now_ms`.
    pub async fn locks(&self, now_ms: u64) -> Res<Vec<Lock>> {
        let mut c = self.pool().acquire().await.db("acquire a connection")?;
        Ok(super::apply_dav::all_locks(&mut c)
            .await?
            .into_iter()
            .filter(|l| l.expires_ms > now_ms)
            .collect())
    }

    /// Lists a directory; `None` if it does not exist, `Some(Err)` if it is a file.
    pub async fn list(&self, path: &TreePath) -> Res<Option<Result<Vec<DirEntry>, DirEntry>>> {
        let mut c = self.pool().acquire().await.db("acquire a connection")?;
        let r = match walk(&mut c, path).await? {
            Walk::Found(r) => r,
            _ => return Ok(None),
        };
        if !r.is_dir {
            drop(c);
            return Ok(self.lookup(path).await?.map(Err));
        }
        let rows = sqlx::query(
            "SELECT e.name, e.is_dir, e.file_id, e.mtime_ms, e.policy, f.size, f.etag
             FROM entries e LEFT JOIN files f ON f.file_id = e.file_id WHERE e.parent = ? ORDER BY e.name",
        )
        .bind(r.id)
        .fetch_all(&mut *c)
        .await.db("list a directory")?;
        Ok(Some(Ok(rows.iter().map(entry_from_row).collect())))
    }

    /// The policy that applies to new files in `dir`: the nearest ancestor's (or its own).
    pub async fn effective_policy(&self, dir: &TreePath) -> Res<Option<String>> {
        let mut c = self.pool().acquire().await.db("acquire a connection")?;
        let mut cur = 1i64;
        let mut found: Option<String> = sqlx::query("SELECT policy FROM entries WHERE id = 1")
            .fetch_one(&mut *c)
            .await
            .db("read the root's policy")?
            .get(0);
        for name in dir.components() {
            let row =
                sqlx::query("SELECT id, is_dir, policy FROM entries WHERE parent = ? AND name = ?")
                    .bind(cur)
                    .bind(name)
                    .fetch_optional(&mut *c)
                    .await
                    .db("read a directory's policy")?;
            let Some(row) = row else { break };
            if row.get::<i64, _>(1) == 0 {
                break;
            }
            cur = row.get(0);
            if let Some(p) = row.get::<Option<String>, _>(2) {
                found = Some(p);
            }
        }
        Ok(found)
    }

    /// A file with all its segments and parts.
    pub async fn file(&self, file_id: FileId) -> Res<Option<FileRecord>> {
        let mut c = self.pool().acquire().await.db("acquire a connection")?;
        let id = file_id.to_bytes().to_vec();
        let Some(row) = sqlx::query(
            "SELECT size, policy, geometry, content_blake3, etag, created_ms, mtime_ms, source FROM files WHERE file_id = ?",
        )
        .bind(&id)
        .fetch_optional(&mut *c)
        .await.db("read a file")?
        else {
            return Ok(None);
        };
        let decode = |col: &str, e: serde_json::Error| {
            MetaError::corrupt(format!("files.{col} (file_id {file_id})"), e)
        };
        let geometry: Geometry =
            serde_json::from_str(&row.get::<String, _>(2)).map_err(|e| decode("geometry", e))?;
        let source: SourceIdentity =
            serde_json::from_str(&row.get::<String, _>(7)).map_err(|e| decode("source", e))?;
        let segs = sqlx::query(
            "SELECT seg, offset, data_len, blake3 FROM segments WHERE file_id = ? ORDER BY seg",
        )
        .bind(&id)
        .fetch_all(&mut *c)
        .await
        .db("read a file's segments")?;
        let parts = sqlx::query(
            "SELECT seg, part, disk_id, state FROM parts WHERE file_id = ? ORDER BY seg, part",
        )
        .bind(&id)
        .fetch_all(&mut *c)
        .await
        .db("read a file's parts")?;
        let mut segments: Vec<SegmentRecord> = segs
            .iter()
            .map(|s| SegmentRecord {
                index: s.get::<i64, _>(0) as u32,
                offset: s.get::<i64, _>(1) as u64,
                data_len: s.get::<i64, _>(2) as u64,
                blake3: s.get(3),
                parts: Vec::new(),
            })
            .collect();
        for p in &parts {
            let seg = p.get::<i64, _>(0) as u32;
            if let Some(s) = segments.iter_mut().find(|s| s.index == seg) {
                s.parts.push(PartRecord {
                    index: p.get::<i64, _>(1) as u16,
                    disk_id: parse_disk(p.get(2)),
                    missing: p.get::<i64, _>(3) != 0,
                });
            }
        }
        Ok(Some(FileRecord {
            file_id,
            size: row.get::<i64, _>(0) as u64,
            policy: row.get(1),
            geometry,
            content_blake3: row.get(3),
            etag: row.get(4),
            created_ms: row.get::<i64, _>(5) as u64,
            mtime_ms: row.get::<i64, _>(6) as u64,
            source,
            segments,
        }))
    }

    /// All registered disks with their part counts.
    pub async fn disks(&self) -> Res<Vec<DiskRecord>> {
        let rows = sqlx::query(
            "SELECT d.disk_id, d.node_id, d.path, d.fs_dev, d.state,
                    (SELECT COUNT(*) FROM parts p WHERE p.disk_id = d.disk_id)
             FROM disks d ORDER BY d.path",
        )
        .fetch_all(&self.pool())
        .await
        .db("read disks")?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(DiskRecord {
                    disk_id: parse_disk(r.get(0))?,
                    node_id: r.get::<i64, _>(1) as u64,
                    path: r.get(2),
                    fs_dev: r.get::<i64, _>(3) as u64,
                    state: r.get(4),
                    parts: r.get::<i64, _>(5) as u64,
                })
            })
            .collect())
    }

    /// Each registered disk's node and failure domain (without the part counts of
    /// [`Self::disks`]).
    pub async fn disk_nodes(&self) -> Res<Vec<(DiskId, NodeId, u64)>> {
        let rows =
            sqlx::query("SELECT disk_id, node_id, fs_dev FROM disks WHERE state != 'removed'")
                .fetch_all(&self.pool())
                .await
                .db("read disks")?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some((
                    parse_disk(r.get(0))?,
                    r.get::<i64, _>(1) as NodeId,
                    r.get::<i64, _>(2) as u64,
                ))
            })
            .collect())
    }

    /// Every (file, segment, part) the metadata places on `disk`.
    pub async fn parts_on_disk(&self, disk: DiskId) -> Res<HashSet<(FileId, u32, u16)>> {
        let rows = sqlx::query("SELECT file_id, seg, part FROM parts WHERE disk_id = ?")
            .bind(disk.to_string())
            .fetch_all(&self.pool())
            .await
            .db("read parts on a disk")?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some((
                    fid(r, 0)?,
                    r.get::<i64, _>(1) as u32,
                    r.get::<i64, _>(2) as u16,
                ))
            })
            .collect())
    }

    /// All intents.
    pub async fn intents(&self) -> Res<Vec<IntentRecord>> {
        let rows = sqlx::query(
            "SELECT file_id, target_file_id, writer, path, lease_until_ms FROM intents",
        )
        .fetch_all(&self.pool())
        .await
        .db("read intents")?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(IntentRecord {
                    file_id: fid(r, 0)?,
                    target_file_id: fid(r, 1)?,
                    writer: r.get::<i64, _>(2) as u64,
                    path: r.get(3),
                    lease_until_ms: r.get::<i64, _>(4) as u64,
                })
            })
            .collect())
    }

    /// The file committed from a drop-folder source, if any, and its current path.
    pub async fn committed_source(&self, source: &SourceIdentity) -> Res<Option<FileId>> {
        let Some(key) = super::apply::source_key(source) else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT file_id FROM sources WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool())
            .await
            .db("read a drop-folder source")?;
        Ok(row.and_then(|r| fid(&r, 0)))
    }

    /// The machines registered in the cluster: id, name and API address.
    pub async fn nodes(&self) -> Res<Vec<NodeRecord>> {
        let rows = sqlx::query(
            "SELECT node_id, name, api_addr, data_addr, data_cert FROM nodes ORDER BY node_id",
        )
        .fetch_all(&self.pool())
        .await
        .db("read nodes")?;
        Ok(rows
            .iter()
            .map(|r| NodeRecord {
                node_id: r.get::<i64, _>(0) as NodeId,
                name: r.get(1),
                api_addr: r.get(2),
                data_addr: r.get(3),
                data_cert: r.get(4),
            })
            .collect())
    }

    /// The cluster id, once initialised.
    pub async fn cluster_id(&self) -> Res<Option<String>> {
        let r = sqlx::query("SELECT value FROM kv WHERE key = 'cluster_id'")
            .fetch_optional(&self.pool())
            .await
            .db("read the cluster id")?;
        Ok(r.map(|r| r.get(0)))
    }

    /// Counts for `status`.
    pub async fn totals(&self) -> Res<Totals> {
        let pool = self.pool();
        let one = |sql: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query(sql)
                    .fetch_one(&pool)
                    .await
                    .db("count for status")
                    .map(|r| r.get::<i64, _>(0) as u64)
            }
        };
        Ok(Totals {
            files: one("SELECT COUNT(*) FROM files").await?,
            dirs: one("SELECT COUNT(*) FROM entries WHERE is_dir = 1 AND id != 1").await?,
            logical_bytes: one("SELECT COALESCE(SUM(size), 0) FROM files").await?,
            segments: one("SELECT COUNT(*) FROM segments").await?,
            missing_parts: one("SELECT COUNT(*) FROM parts WHERE state != 0").await?,
            intents: one("SELECT COUNT(*) FROM intents").await?,
        })
    }

    /// Files with at least one missing part, for health reports.
    pub async fn degraded_files(&self, limit: u32) -> Res<Vec<FileId>> {
        let rows = sqlx::query("SELECT DISTINCT file_id FROM parts WHERE state != 0 LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool())
            .await
            .db("read degraded files")?;
        Ok(rows.iter().filter_map(|r| fid(r, 0)).collect())
    }
}

fn entry_from_row(row: &sqlx::sqlite::SqliteRow) -> DirEntry {
    let is_dir = row.get::<i64, _>(1) != 0;
    DirEntry {
        name: row.get(0),
        kind: if is_dir {
            EntryKind::Dir
        } else {
            EntryKind::File
        },
        file_id: fid(row, 2),
        mtime_ms: row.get::<i64, _>(3) as u64,
        policy: row.get(4),
        size: row.get::<Option<i64>, _>(5).unwrap_or(0) as u64,
        etag: row.get(6),
    }
}
