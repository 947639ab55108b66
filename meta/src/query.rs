//! Read-side queries on the namespace database.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::command::{DeadProp, Lock};

use super::apply::{walk, Walk};
use super::MetaDb;
use crate::command::SourceIdentity;
use crate::error::{DbContext, Res};
use crate::row::Cols;
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
    /// About how many bytes of part data those hold (each part's share of its segment).
    pub part_bytes: u64,
    /// The oldest verification (write, repair or scrub) of its healthy parts, ms since the
    /// epoch: every part on it was checked since. `None` when it holds none.
    pub oldest_verified_ms: Option<u64>,
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

// Damaged rows: most reads return the error (a `Corrupt` naming the table, column and row), so
// that nothing acts on a partial view. A few reads skip the row instead, log it and count it
// (`MetaDb::skip_row`), where the caller stays correct without it and an error would stop
// more than the damaged row: each says why at the spot.

impl MetaDb {
    /// Resolves a path to a directory entry (for a stat).
    ///
    /// One statement, whatever the depth: the walk of `apply::walk` with the entry read at its
    /// end (each statement is a round trip to sqlx's connection thread, and a WebDAV PUT
    /// looks up several paths).
    pub async fn lookup(&self, path: &TreePath) -> Res<Option<DirEntry>> {
        macro_rules! entry_of {
            ($from_where:literal) => {
                concat!(
                    "SELECT e.name, e.is_dir, e.file_id, e.mtime_ms, e.policy, f.size, f.etag, e.id ",
                    $from_where
                )
            };
        }
        let names = path.components();
        let q = match names.len() {
            0 => sqlx::query(entry_of!(
                "FROM entries e LEFT JOIN files f ON f.file_id = e.file_id WHERE e.id = 1"
            )),
            1 => sqlx::query(entry_of!(
                "FROM entries e LEFT JOIN files f ON f.file_id = e.file_id
                 WHERE e.parent = 1 AND e.name = ?"
            ))
            .bind(names[0].as_str()),
            n => sqlx::query(concat!(
                crate::apply::walk_cte!(),
                " ",
                entry_of!(
                    "FROM w JOIN entries e ON e.id = w.id
                       LEFT JOIN files f ON f.file_id = e.file_id
                     WHERE w.depth = ?2"
                )
            ))
            .bind(crate::apply::names_json(path)?)
            .bind(n as i64),
        };
        let row = q.fetch_optional(&self.pool()).await.db("look up a path")?;
        row.as_ref().map(entry_from_row).transpose()
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
        rows.iter()
            .map(|r| dead_prop(&Cols::new(r, "props").key(format!("entry {id}")), 0))
            .collect::<Res<Vec<_>>>()
            .map(Some)
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
            "SELECT e.name, p.ns, p.name, p.prefix, p.xml, e.id FROM entries e \
             JOIN props p ON p.entry = e.id WHERE e.parent = ? ORDER BY e.name, p.ns, p.name",
        )
        .bind(id)
        .fetch_all(&mut *c)
        .await
        .db("read dead properties")?;
        let mut out: HashMap<String, Vec<DeadProp>> = HashMap::new();
        for r in &rows {
            let r = Cols::new(r, "props").key_col("entry", 5);
            out.entry(r.col(0, "entries.name")?)
                .or_default()
                .push(dead_prop(&r, 1)?);
        }
        Ok(Some(out))
    }

    /// Every WebDAV lock that has not expired at `now_ms`.
    pub async fn locks(&self, now_ms: u64) -> Res<Vec<Lock>> {
        Ok(self
            .rare_state()
            .await?
            .locks
            .iter()
            .filter(|l| l.expires_ms > now_ms)
            .cloned()
            .collect())
    }

    /// Lists a directory; `None` if it does not exist, `Some(Err)` if it is a file.
    ///
    /// A damaged entry fails the listing rather than being left out: a client syncing a
    /// folder (rclone, a WebDAV mount) takes a name missing from a listing for a deleted file.
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
            "SELECT e.name, e.is_dir, e.file_id, e.mtime_ms, e.policy, f.size, f.etag, e.id
             FROM entries e LEFT JOIN files f ON f.file_id = e.file_id WHERE e.parent = ? ORDER BY e.name",
        )
        .bind(r.id)
        .fetch_all(&mut *c)
        .await
        .db("list a directory")?;
        rows.iter()
            .map(entry_from_row)
            .collect::<Res<Vec<_>>>()
            .map(|l| Some(Ok(l)))
    }

    /// The policy that applies to new files in `dir`: the nearest ancestor's (or its own).
    pub async fn effective_policy(&self, dir: &TreePath) -> Res<Option<String>> {
        let mut c = self.pool().acquire().await.db("acquire a connection")?;
        let mut cur = 1i64;
        let root = sqlx::query("SELECT policy FROM entries WHERE id = 1")
            .fetch_one(&mut *c)
            .await
            .db("read the root's policy")?;
        let mut found: Option<String> = Cols::new(&root, "entries").key("id 1").col(0, "policy")?;
        for name in dir.components() {
            let row =
                sqlx::query("SELECT id, is_dir, policy FROM entries WHERE parent = ? AND name = ?")
                    .bind(cur)
                    .bind(name)
                    .fetch_optional(&mut *c)
                    .await
                    .db("read a directory's policy")?;
            let Some(row) = row else { break };
            let row = Cols::new(&row, "entries").key_col("id", 0);
            if !row.flag(1, "is_dir")? {
                break;
            }
            cur = row.col(0, "id")?;
            if let Some(p) = row.col::<Option<String>>(2, "policy")? {
                found = Some(p);
            }
        }
        Ok(found)
    }

    /// A file with all its segments and parts.
    ///
    /// A part whose disk id does not decode is logged, counted and reported as missing
    /// (`disk_id: None`): the read decodes around it as around a lost disk, which is what the
    /// erasure code is for, instead of refusing a file whose other parts are whole. A part
    /// row of a segment the file does not have is skipped the same way. Anything else that
    /// does not decode (the file's row, a segment, a part's index) is an error: without it the
    /// file's bytes cannot be placed.
    pub async fn file(&self, file_id: FileId) -> Res<Option<FileRecord>> {
        let mut c = self.pool().acquire().await.db("acquire a connection")?;
        let id = file_id.to_bytes().to_vec();
        let Some(row) = sqlx::query(
            "SELECT size, policy, geometry, content_blake3, etag, created_ms, mtime_ms, source FROM files WHERE file_id = ?",
        )
        .bind(&id)
        .fetch_optional(&mut *c)
        .await
        .db("read a file")?
        else {
            return Ok(None);
        };
        let key = format!("file_id {file_id}");
        let row = Cols::new(&row, "files").key(&key);
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
            .map(|s| {
                let s = Cols::new(s, "segments").key(&key);
                Ok(SegmentRecord {
                    index: s.int(0, "seg")?,
                    offset: s.int(1, "offset")?,
                    data_len: s.int(2, "data_len")?,
                    blake3: s.col(3, "blake3")?,
                    parts: Vec::new(),
                })
            })
            .collect::<Res<_>>()?;
        for p in &parts {
            let p = Cols::new(p, "parts").key(&key);
            let seg: u32 = p.int(0, "seg")?;
            let index: u16 = p.int(1, "part")?;
            let Some(s) = segments.iter_mut().find(|s| s.index == seg) else {
                self.skip_row(
                    "read a file",
                    &p.corrupt(
                        "seg",
                        format!("part {index} of segment {seg}, which is not in segments"),
                    ),
                );
                continue;
            };
            let missing = p.flag(3, "state")?;
            let (disk_id, missing) = match p.opt_disk_id(2, "disk_id") {
                Ok(d) => (d, missing),
                Err(e) => {
                    self.skip_row("read a file", &e);
                    (None, true)
                }
            };
            s.parts.push(PartRecord {
                index,
                disk_id,
                missing,
            });
        }
        Ok(Some(FileRecord {
            file_id,
            size: row.int(0, "size")?,
            policy: row.col(1, "policy")?,
            geometry: row.json(2, "geometry")?,
            content_blake3: row.col(3, "content_blake3")?,
            etag: row.col(4, "etag")?,
            created_ms: row.int(5, "created_ms")?,
            mtime_ms: row.int(6, "mtime_ms")?,
            source: row.json(7, "source")?,
            segments,
        }))
    }

    /// All registered disks with their part counts.
    ///
    /// A damaged row is an error: the node's start-up finds its disks' ids here, and a disk
    /// left out of the status would hide exactly the damage an operator must see.
    pub async fn disks(&self) -> Res<Vec<DiskRecord>> {
        let rows = sqlx::query(
            "SELECT d.disk_id, d.node_id, d.path, d.fs_dev, d.state,
                    (SELECT COUNT(*) FROM parts p WHERE p.disk_id = d.disk_id),
                    (SELECT COALESCE(SUM((s.data_len + json_extract(f.geometry, '$.k') - 1) / json_extract(f.geometry, '$.k')), 0)
                       FROM parts p JOIN segments s ON s.file_id = p.file_id AND s.seg = p.seg
                       JOIN files f ON f.file_id = p.file_id
                      WHERE p.disk_id = d.disk_id AND p.state = 0),
                    (SELECT MIN(p.verified_ms) FROM parts p WHERE p.disk_id = d.disk_id AND p.state = 0)
             FROM disks d ORDER BY d.path",
        )
        .fetch_all(&self.pool())
        .await
        .db("read disks")?;
        rows.iter()
            .map(|r| {
                let r = Cols::new(r, "disks").key_col("disk_id", 0);
                Ok(DiskRecord {
                    disk_id: r.disk_id(0, "disk_id")?,
                    node_id: r.id_bits(1, "node_id")?,
                    path: r.col(2, "path")?,
                    fs_dev: r.id_bits(3, "fs_dev")?,
                    state: r.col(4, "state")?,
                    parts: r.int(5, "part count")?,
                    part_bytes: r.int(6, "part bytes")?,
                    oldest_verified_ms: r.opt_int(7, "oldest verification")?,
                })
            })
            .collect()
    }

    /// Each registered disk's node and failure domain (without the part counts of
    /// [`Self::disks`]).
    ///
    /// A damaged row is skipped (logged and counted): this feeds the data plane's directory,
    /// refreshed before every ingest, and an error would stop every write and remote read;
    /// without the row only that disk is left out of placement, and reads decode around its
    /// parts as around a missing disk.
    pub async fn disk_nodes(&self) -> Res<Vec<(DiskId, NodeId, u64)>> {
        let rows =
            sqlx::query("SELECT disk_id, node_id, fs_dev FROM disks WHERE state != 'removed'")
                .fetch_all(&self.pool())
                .await
                .db("read disks")?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let r = Cols::new(r, "disks").key_col("disk_id", 0);
            let read = || -> Res<_> {
                Ok((
                    r.disk_id(0, "disk_id")?,
                    r.id_bits(1, "node_id")?,
                    r.id_bits(2, "fs_dev")?,
                ))
            };
            match read() {
                Ok(d) => out.push(d),
                Err(e) => self.skip_row("read disks' nodes", &e),
            }
        }
        Ok(out)
    }

    /// Every (file, segment, part) the metadata places on `disk`.
    ///
    /// A damaged row is an error: the sweeper deletes every part file not in this set, so a
    /// row left out would delete a part the metadata still names.
    pub async fn parts_on_disk(&self, disk: DiskId) -> Res<HashSet<(FileId, u32, u16)>> {
        let rows = sqlx::query("SELECT file_id, seg, part FROM parts WHERE disk_id = ?")
            .bind(disk.to_string())
            .fetch_all(&self.pool())
            .await
            .db("read parts on a disk")?;
        rows.iter()
            .map(|r| {
                let r = Cols::new(r, "parts").key_col("file_id", 0);
                Ok((
                    r.file_id(0, "file_id")?,
                    r.int(1, "seg")?,
                    r.int(2, "part")?,
                ))
            })
            .collect()
    }

    /// How many sweeps have begun (`SweepBegins`), as this machine's metadata says now: a
    /// small file's writer reads it before its parts, and its commit is refused if a sweep
    /// began since.
    ///
    /// Served from memory while no command but a file's ingest or commit has been applied
    /// since it was read. A count read before a `SweepBegins` whose apply has committed but
    /// not yet returned is lower than the truth, which only makes a commit be refused (and
    /// the file stored again); never higher.
    pub async fn sweeps_begun(&self) -> Res<u64> {
        Ok(self.rare_state().await?.sweeps_begun)
    }

    /// The locks and the sweep count, from memory when no command that may change them has
    /// been applied since they were read (`rare_generation`).
    async fn rare_state(&self) -> Res<crate::RareState> {
        use std::sync::atomic::Ordering;
        let generation = self.inner.rare_generation.load(Ordering::Acquire);
        if let Some(s) = self
            .inner
            .rare_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|s| s.generation == generation)
        {
            return Ok(s.clone());
        }
        // Read in one transaction, so the two agree; read after `generation` was loaded, so
        // a change committed meanwhile is either seen or bumps the generation past it.
        let mut tx = self.pool().begin().await.db("begin a read")?;
        let locks = super::apply_dav::all_locks(&mut tx).await?;
        let sweeps_begun = crate::apply::sweeps_begun(&mut tx).await?;
        drop(tx);
        let s = crate::RareState {
            generation,
            locks: std::sync::Arc::new(locks),
            sweeps_begun,
        };
        *self
            .inner
            .rare_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(s.clone());
        Ok(s)
    }

    /// All intents.
    ///
    /// A damaged row is an error: the sweeper spares the parts of live intents only, so an
    /// intent left out would let it delete the parts of an ingest still running.
    pub async fn intents(&self) -> Res<Vec<IntentRecord>> {
        let rows = sqlx::query(
            "SELECT file_id, target_file_id, writer, path, lease_until_ms FROM intents",
        )
        .fetch_all(&self.pool())
        .await
        .db("read intents")?;
        rows.iter()
            .map(|r| {
                let r = Cols::new(r, "intents").key_col("file_id", 0);
                Ok(IntentRecord {
                    file_id: r.file_id(0, "file_id")?,
                    target_file_id: r.file_id(1, "target_file_id")?,
                    writer: r.id_bits(2, "writer")?,
                    path: r.col(3, "path")?,
                    lease_until_ms: r.int(4, "lease_until_ms")?,
                })
            })
            .collect()
    }

    /// The file committed from a drop-folder source, if any, and its current path.
    ///
    /// A damaged row is an error, not "never committed": that answer would ingest the
    /// original a second time.
    pub async fn committed_source(&self, source: &SourceIdentity) -> Res<Option<FileId>> {
        let Some(key) = super::apply::source_key(source) else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT file_id FROM sources WHERE key = ?")
            .bind(&key)
            .fetch_optional(&self.pool())
            .await
            .db("read a drop-folder source")?;
        row.map(|r| {
            Cols::new(&r, "sources")
                .key(format!("key {key:?}"))
                .file_id(0, "file_id")
        })
        .transpose()
    }

    /// The machines registered in the cluster: id, name and API address.
    ///
    /// A damaged row is skipped (logged and counted): this feeds the data plane's directory
    /// (see [`Self::disk_nodes`]); without the row only that machine's data plane is refused,
    /// and a restarting machine registers itself again.
    pub async fn nodes(&self) -> Res<Vec<NodeRecord>> {
        let rows = sqlx::query(
            "SELECT node_id, name, api_addr, data_addr, data_cert FROM nodes ORDER BY node_id",
        )
        .fetch_all(&self.pool())
        .await
        .db("read nodes")?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let r = Cols::new(r, "nodes").key_col("node_id", 0);
            let read = || -> Res<_> {
                Ok(NodeRecord {
                    node_id: r.id_bits(0, "node_id")?,
                    name: r.col(1, "name")?,
                    api_addr: r.col(2, "api_addr")?,
                    data_addr: r.col(3, "data_addr")?,
                    data_cert: r.col(4, "data_cert")?,
                })
            };
            match read() {
                Ok(n) => out.push(n),
                Err(e) => self.skip_row("read nodes", &e),
            }
        }
        Ok(out)
    }

    /// The cluster id, once initialised.
    pub async fn cluster_id(&self) -> Res<Option<String>> {
        let r = sqlx::query("SELECT value FROM kv WHERE key = 'cluster_id'")
            .fetch_optional(&self.pool())
            .await
            .db("read the cluster id")?;
        r.map(|r| Cols::new(&r, "kv").key("key cluster_id").col(0, "value"))
            .transpose()
    }

    /// Counts for `status`.
    pub async fn totals(&self) -> Res<Totals> {
        let pool = self.pool();
        let one = |sql: &'static str| {
            let pool = pool.clone();
            async move {
                let r = sqlx::query(sql)
                    .fetch_one(&pool)
                    .await
                    .db("count for status")?;
                Cols::new(&r, "status").key(sql).int::<u64>(0, "count")
            }
        };
        Ok(Totals {
            // Files with a name: those only the trash names are its own figure.
            files: one("SELECT COUNT(*) FROM files f WHERE EXISTS (SELECT 1 FROM entries e WHERE e.file_id = f.file_id)").await?,
            dirs: one("SELECT COUNT(*) FROM entries WHERE is_dir = 1 AND id != 1").await?,
            logical_bytes: one("SELECT COALESCE(SUM(size), 0) FROM files f WHERE EXISTS (SELECT 1 FROM entries e WHERE e.file_id = f.file_id)").await?,
            segments: one("SELECT COUNT(*) FROM segments").await?,
            missing_parts: one("SELECT COUNT(*) FROM parts WHERE state != 0").await?,
            intents: one("SELECT COUNT(*) FROM intents").await?,
        })
    }

    /// Files with at least one missing part, for health reports.
    ///
    /// A file id that does not decode is skipped (logged and counted): a health report that
    /// lists the other degraded files serves better than none, and the log names the row.
    pub async fn degraded_files(&self, limit: u32) -> Res<Vec<FileId>> {
        let rows = sqlx::query("SELECT DISTINCT file_id FROM parts WHERE state != 0 LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool())
            .await
            .db("read degraded files")?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            match Cols::new(r, "parts").file_id(0, "file_id") {
                Ok(f) => out.push(f),
                Err(e) => self.skip_row("read degraded files", &e),
            }
        }
        Ok(out)
    }
}

/// A dead property from columns `first..first + 4` (ns, name, prefix, xml).
fn dead_prop(r: &Cols<'_>, first: usize) -> Res<DeadProp> {
    Ok(DeadProp {
        namespace: r.col(first, "ns")?,
        name: r.col(first + 1, "name")?,
        prefix: r.col(first + 2, "prefix")?,
        xml: r.col(first + 3, "xml")?,
    })
}

/// An entry from `name, is_dir, file_id, mtime_ms, policy, size, etag, id` (the last two from
/// the file's row, NULL for a directory).
fn entry_from_row(row: &sqlx::sqlite::SqliteRow) -> Res<DirEntry> {
    let r = Cols::new(row, "entries").key_col("id", 7);
    let is_dir = r.flag(1, "is_dir")?;
    Ok(DirEntry {
        name: r.col(0, "name")?,
        kind: if is_dir {
            EntryKind::Dir
        } else {
            EntryKind::File
        },
        file_id: r.opt_file_id(2, "file_id")?,
        mtime_ms: r.int(3, "mtime_ms")?,
        policy: r.col(4, "policy")?,
        size: r.opt_int::<u64>(5, "files.size")?.unwrap_or(0),
        etag: r.col(6, "files.etag")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CommandV1, Conflict};
    use crate::testutil::{disk, test_db, T};

    fn f(n: u128) -> FileId {
        FileId(n)
    }

    fn p(s: &str) -> TreePath {
        TreePath::parse(s).unwrap()
    }

    #[tokio::test]
    async fn a_damaged_file_row_is_a_corrupt_error_naming_column_and_file() {
        let t = test_db().await;
        t.put(f(1), "/a", Conflict::Fail).await;
        assert_eq!(t.db.file(f(1)).await.unwrap().unwrap().size, 100);
        t.exec("UPDATE files SET size = -1").await;
        let e = t.db.file(f(1)).await.unwrap_err();
        assert!(e.is_corrupt(), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("files.size (file_id {})", f(1))),
            "{e}"
        );
        t.exec("UPDATE files SET size = 100, geometry = '{'").await;
        let e = t.db.file(f(1)).await.unwrap_err();
        assert!(e.to_string().contains("files.geometry"), "{e}");
        // A segment index out of u32's range, not wrapped.
        t.exec("UPDATE files SET geometry = (SELECT geometry FROM files)")
            .await;
        t.exec("UPDATE segments SET seg = 4294967296").await;
        let e = t.db.file(f(1)).await.unwrap_err();
        assert!(e.to_string().contains("segments.seg"), "{e}");
    }

    #[tokio::test]
    async fn a_damaged_entry_fails_the_listing_and_the_lookup() {
        let t = test_db().await;
        t.put(f(1), "/d/a", Conflict::Fail).await;
        t.put(f(2), "/d/b", Conflict::Fail).await;
        assert_eq!(
            t.db.list(&p("/d")).await.unwrap().unwrap().unwrap().len(),
            2
        );
        // Text where an integer belongs: sqlx's `get` would have panicked here.
        t.exec("UPDATE entries SET mtime_ms = 'soon' WHERE name = 'b'")
            .await;
        let e = t.db.list(&p("/d")).await.unwrap_err();
        assert!(e.to_string().contains("entries.mtime_ms (id "), "{e}");
        assert!(t.db.lookup(&p("/d/b")).await.is_err());
        assert!(t.db.lookup(&p("/d/a")).await.unwrap().is_some());
        t.exec("UPDATE entries SET mtime_ms = 0, file_id = X'01' WHERE name = 'b'")
            .await;
        let e = t.db.list(&p("/d")).await.unwrap_err();
        assert!(e.to_string().contains("1 bytes, not 16"), "{e}");
    }

    #[tokio::test]
    async fn the_sweepers_reads_refuse_damaged_rows() {
        let t = test_db().await;
        t.put(f(1), "/a", Conflict::Fail).await;
        t.begin(f(2), "/b").await;
        assert_eq!(
            t.db.parts_on_disk(disk(1)).await.unwrap(),
            HashSet::from([(f(1), 0, 0)])
        );
        assert_eq!(t.db.intents().await.unwrap().len(), 1);
        t.exec("UPDATE parts SET file_id = X'00' WHERE part = 0")
            .await;
        let e = t.db.parts_on_disk(disk(1)).await.unwrap_err();
        assert!(e.to_string().contains("parts.file_id"), "{e}");
        t.exec("UPDATE intents SET lease_until_ms = -5").await;
        let e = t.db.intents().await.unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("intents.lease_until_ms (file_id {})", f(2))),
            "{e}"
        );
        assert_eq!(t.db.skipped_rows(), 0);
    }

    #[tokio::test]
    async fn the_directorys_reads_skip_and_count_damaged_rows() {
        let t = test_db().await;
        for (n, node) in [(1, 7), (2, 8)] {
            t.apply(CommandV1::RegisterDisk {
                disk_id: disk(n),
                node_id: node,
                path: format!("/d{n}"),
                fs_dev: 1,
                time_ms: T,
            })
            .await;
            t.apply(CommandV1::RegisterNode {
                node_id: node,
                name: format!("n{node}"),
                api_addr: "a".into(),
                data_addr: "d".into(),
                data_cert: "c".into(),
                time_ms: T,
            })
            .await;
        }
        t.exec("UPDATE disks SET disk_id = 'not a uuid' WHERE path = '/d1'")
            .await;
        t.exec("UPDATE nodes SET name = X'ff' WHERE node_id = 7")
            .await;
        let d = t.db.disk_nodes().await.unwrap();
        assert_eq!(d, vec![(disk(2), 8, 1)]);
        let n = t.db.nodes().await.unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].node_id, 8);
        assert_eq!(t.db.skipped_rows(), 2);
        // The status and start-up's read of disks is an error instead.
        let e = t.db.disks().await.unwrap_err();
        assert!(e.to_string().contains("disks.disk_id"), "{e}");
    }

    #[tokio::test]
    async fn a_part_on_an_unreadable_disk_id_reads_as_missing() {
        let t = test_db().await;
        t.put(f(1), "/a", Conflict::Fail).await;
        t.exec("UPDATE parts SET disk_id = 'garbage' WHERE part = 0")
            .await;
        let rec = t.db.file(f(1)).await.unwrap().unwrap();
        let parts = &rec.segments[0].parts;
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].index, parts[0].disk_id, parts[0].missing),
            (0, None, true)
        );
        assert_eq!(
            (parts[1].index, parts[1].disk_id, parts[1].missing),
            (1, Some(disk(2)), false)
        );
        assert_eq!(t.db.skipped_rows(), 1);
    }

    #[tokio::test]
    async fn degraded_files_skip_a_damaged_id_and_committed_sources_refuse_it() {
        let t = test_db().await;
        t.put(f(1), "/a", Conflict::Fail).await;
        t.put(f(2), "/b", Conflict::Fail).await;
        t.exec("UPDATE parts SET state = 1 WHERE part = 1").await;
        t.exec(&format!(
            "UPDATE parts SET file_id = X'0102' WHERE file_id = X'{:032x}'",
            2
        ))
        .await;
        assert_eq!(t.db.degraded_files(10).await.unwrap(), vec![f(1)]);
        assert_eq!(t.db.skipped_rows(), 1);
        let src = SourceIdentity::DropFolder {
            path: "/drop/x".into(),
            size: 1,
            mtime_ns: 2,
            inode: 3,
            dev: 4,
        };
        let key = crate::apply::source_key(&src).unwrap();
        t.exec(&format!(
            "INSERT INTO sources (key, file_id) VALUES ('{key}', X'00')"
        ))
        .await;
        let e = t.db.committed_source(&src).await.unwrap_err();
        assert!(e.to_string().contains("sources.file_id"), "{e}");
    }
}
