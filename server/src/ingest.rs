//! The ingest pipeline (docs/ARCHITECTURE.md "A write": intent, streaming encode, quorum, commit).
//!
//! 1. record an intent with a lease (renewed while the ingest runs);
//! 2. stream the bytes through the encoder, writing parts as rows fill, hashing on the way;
//!    every part is fsynced with its directory before it counts;
//! 3. commit the file through Raft (only then is it visible);
//! 4. the caller removes the source, if it has one.
//!
//! Memory is bounded: one batch of rows is encoded while the next is read.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use crate::data_plane::wire::NewUpload;
use crate::data_plane::RemotePartWriter;
use crate::store::{Store, StoreError};
use wormfs_meta::command::{
    CommandV1, Conflict, FileCommit, NewSegment, Outcome, Rejection, SourceIdentity,
};
use wormfs_parts::codec;
use wormfs_parts::crash_point::crash_point;
use wormfs_parts::disk::DiskState;
use wormfs_parts::fsutil::now_ms;
use wormfs_parts::ids::{DiskId, FileId, NodeId};
use wormfs_parts::layout::Geometry;
use wormfs_parts::part_format::{front_region_len, PartHeader};
use wormfs_parts::part_io::{finish_together, LocalPartWriter, PartWriter};
use wormfs_parts::placement::place;
use wormfs_parts::policy::Policy;
use wormfs_parts::tree_path::TreePath;

/// Bytes of file data encoded per batch (rounded to whole rows).
const BATCH_TARGET_BYTES: u64 = 8 << 20;

/// What to ingest.
#[derive(Clone, Debug)]
pub struct IngestRequest {
    /// Destination.
    pub path: TreePath,
    /// A policy chosen by the client (else the directory's or the default).
    pub policy: Option<Policy>,
    /// The conflict rule.
    pub conflict: Conflict,
    /// Where the bytes come from.
    pub source: SourceIdentity,
    /// The size announced by the client, checked at the end if given.
    pub expected_size: Option<u64>,
    /// The caller has just checked that no retained file is at `path` (the WebDAV face's
    /// create looks there before the body): a `Replace` is not checked again before the
    /// bytes. The commit refuses to replace a retained file whatever this says.
    pub retention_checked: bool,
}

/// A command proposed just before the commit of a given path (tests of what comes between
/// an ingest's parts and its commit; built with the `crash-points` feature only).
#[cfg(feature = "crash-points")]
mod test_hook {
    use std::sync::Mutex;
    use wormfs_meta::command::CommandV1;

    static NEXT: Mutex<Option<(String, CommandV1)>> = Mutex::new(None);

    /// Sets (or clears) the command proposed before the commit of `path`, once.
    pub fn set(hook: Option<(String, CommandV1)>) {
        *NEXT.lock().unwrap_or_else(|p| p.into_inner()) = hook;
    }

    pub(super) fn take(path: &str) -> Option<CommandV1> {
        let mut g = NEXT.lock().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some((p, _)) if p == path => g.take().map(|(_, c)| c),
            _ => None,
        }
    }
}

/// Proposes `cmd` once, just before the commit of `path` (tests only: the `crash-points`
/// feature).
#[cfg(feature = "crash-points")]
pub fn before_commit_for_tests(path: &str, cmd: CommandV1) {
    test_hook::set(Some((path.to_owned(), cmd)));
}

/// What keeps a new file's parts from the sweeper while they are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    /// An intent with a lease, renewed while the parts are written (`CommitFile`).
    Intent,
    /// Nothing (a small file, wholly in memory: `CommitSmallFile`).
    None,
}

/// A committed ingest.
#[derive(Clone, Debug, serde::Serialize)]
pub struct IngestResult {
    /// Where the file is now (or the taken path, if skipped).
    pub path: String,
    /// Its id.
    pub file_id: FileId,
    /// Bytes.
    pub size: u64,
    /// BLAKE3 of the content, hex.
    pub blake3: String,
    /// The policy used.
    pub policy: String,
    /// Whether the name was taken and the "skip" rule dropped the file.
    pub skipped: bool,
    /// Whether an existing file was replaced.
    pub replaced: bool,
    /// Parts that could not be written; they are queued for repair.
    pub missing_parts: usize,
    /// Machines the file survives as written (each segment's parts by machine).
    pub machines_tolerated: usize,
    /// Machines its policy lets it survive spread over the cluster's machines.
    pub policy_machines_tolerated: usize,
    /// Parts queued to move to a machine that holds none of their segment (the file was
    /// written while a machine was down): repair moves them once it is back.
    pub respread_parts: usize,
    /// The new entry's time and ETag, as the commit stored them (a new file committed, not
    /// skipped or appended to): a face answers with them without reading the entry back.
    #[serde(skip)]
    pub committed: Option<CommittedEntry>,
}

/// What a commit stored in a new file's entry, beside its path and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedEntry {
    /// Its modification time (the commit's time), milliseconds since the epoch.
    pub mtime_ms: u64,
    /// Its ETag ([`wormfs_meta::etag_for`]).
    pub etag: String,
}

/// How a file written as `segments` is spread over machines: the machines it survives, those
/// its policy would survive spread over `machines` machines, and the parts to move for that
/// (on a machine holding more than its even share of a segment, the highest-numbered ones).
pub(crate) fn machine_spread(
    geo: &Geometry,
    file_id: FileId,
    segments: &[NewSegment],
    machines: usize,
    node_of: impl Fn(DiskId) -> Option<NodeId>,
) -> (usize, usize, Vec<wormfs_meta::command::PartRef>) {
    use wormfs_parts::placement::domains_tolerated;
    let (w, k) = (geo.width(), usize::from(geo.k));
    let spread_over = machines.clamp(1, w.max(1));
    let even: Vec<usize> = (0..spread_over)
        .map(|i| w / spread_over + usize::from(i < w % spread_over))
        .collect();
    let possible = domains_tolerated(&even, k);
    let cap = w.div_ceil(spread_over);
    let mut tolerated = possible;
    let mut moves = Vec::new();
    for s in segments {
        let mut by_node: std::collections::BTreeMap<NodeId, Vec<(u16, DiskId)>> =
            Default::default();
        for (i, d) in s.parts.iter().enumerate() {
            if let Some(d) = d {
                if let Some(n) = node_of(*d) {
                    by_node.entry(n).or_default().push((i as u16, *d));
                }
            }
        }
        let counts: Vec<usize> = by_node.values().map(Vec::len).collect();
        let t = domains_tolerated(&counts, k);
        tolerated = tolerated.min(t);
        if t < possible {
            for parts in by_node.values() {
                for &(part, disk_id) in parts.iter().skip(cap) {
                    moves.push(wormfs_meta::command::PartRef {
                        file_id,
                        seg: s.index,
                        part,
                        disk_id,
                    });
                }
            }
        }
    }
    if segments.is_empty() {
        tolerated = possible;
    }
    (tolerated, possible, moves)
}

/// The bytes in: a buffered head (used to tell small files) then the rest of the stream.
struct Source<R> {
    head: Vec<u8>,
    head_pos: usize,
    rest: R,
    eof: bool,
    total: u64,
    /// The size the client announced, if any (to size the space checks of each segment).
    size_hint: Option<u64>,
}

impl<R: AsyncRead + Unpin> Source<R> {
    fn new(rest: R) -> Self {
        Self {
            head: Vec::new(),
            head_pos: 0,
            rest,
            eof: false,
            total: 0,
            size_hint: None,
        }
    }

    /// Reads until `buf` holds `want` bytes or the stream ends.
    async fn fill(&mut self, buf: &mut Vec<u8>, want: usize) -> std::io::Result<()> {
        while buf.len() < want {
            if self.head_pos < self.head.len() {
                let n = (want - buf.len()).min(self.head.len() - self.head_pos);
                buf.extend_from_slice(&self.head[self.head_pos..self.head_pos + n]);
                self.head_pos += n;
                self.total += n as u64;
                continue;
            }
            if self.eof {
                break;
            }
            // Read into spare capacity: no zero-filling of the rest of the batch per read.
            let room = want - buf.len();
            buf.reserve(room);
            let n = (&mut self.rest).take(room as u64).read_buf(buf).await?;
            self.total += n as u64;
            if n == 0 {
                self.eof = true;
            }
        }
        Ok(())
    }

    fn exhausted(&self) -> bool {
        self.eof && self.head_pos >= self.head.len()
    }
}

/// The parts of one segment being written.
struct SegmentWriter {
    geo: Geometry,
    index: u32,
    file_id: FileId,
    disks: Vec<Option<DiskId>>,
    writers: Vec<Option<Box<dyn PartWriter>>>,
    hasher: blake3::Hasher,
    len: u64,
    quorum: usize,
    /// A zero-padded copy of a short last row.
    pad: Vec<u8>,
    encoder: codec::Encoder,
    /// Why parts failed, for the error when too few are left.
    failures: Vec<String>,
    /// The parts' front region, sized when they were opened (format version 2).
    header_len: u32,
}

impl SegmentWriter {
    fn live(&self) -> usize {
        self.writers.iter().filter(|w| w.is_some()).count()
    }

    fn fail_part(&mut self, i: usize, err: &anyhow::Error) {
        tracing::warn!(file = %self.file_id, segment = self.index, part = i, "part write failed: {err:#}");
        if let Some(w) = self.writers[i].take() {
            w.abort();
        }
        self.failures.push(format!("{err:#}"));
        self.disks[i] = None;
    }

    /// Encodes and writes one batch (whole rows, the last one zero-padded). Blocking.
    fn write_batch(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.hasher.update(data);
        self.len += data.len() as u64;
        if self.geo.is_replica() {
            for i in 0..self.writers.len() {
                if let Some(w) = self.writers[i].as_mut() {
                    if let Err(e) = w.write(data) {
                        self.fail_part(i, &e);
                    }
                }
            }
        } else {
            // Rows are encoded one at a time straight from the batch (each row's k blocks are
            // already contiguous there), so data blocks reach the part files without a gather
            // copy; only a short last row is copied, into a zero-padded row buffer.
            let k = usize::from(self.geo.k);
            let m = usize::from(self.geo.m);
            let bs = self.geo.block_size as usize;
            let row_bytes = k * bs;
            let mut failed: Vec<(usize, anyhow::Error)> = Vec::new();
            for row in data.chunks(row_bytes) {
                let row: &[u8] = if row.len() == row_bytes {
                    row
                } else {
                    self.pad.clear();
                    self.pad.extend_from_slice(row);
                    self.pad.resize(row_bytes, 0);
                    &self.pad
                };
                let blocks: Vec<&[u8]> = row.chunks(bs).collect();
                for (i, block) in blocks.iter().enumerate() {
                    if let Some(w) = self.writers[i].as_mut() {
                        if let Err(e) = w.write(block) {
                            failed.push((i, e));
                        }
                    }
                }
                // Parity goes from the encoder's buffers straight to the part files.
                let writers = &mut self.writers;
                self.encoder.encode_with(&blocks, m, |p, bytes| {
                    if let Some(w) = writers[k + p].as_mut() {
                        if let Err(e) = w.write(bytes) {
                            failed.push((k + p, e));
                        }
                    }
                })?;
                for (i, e) in failed.drain(..) {
                    self.fail_part(i, &e);
                }
            }
        }
        anyhow::ensure!(
            self.live() >= self.quorum,
            "only {} of {} parts still writable, {} needed{}",
            self.live(),
            self.geo.width(),
            self.quorum,
            failure_reasons(&self.failures)
        );
        Ok(())
    }

    /// Makes every part durable, all at once in the blocking pool (pooled threads, not a
    /// thread started for each part). Parts that one group sync makes durable (small local
    /// parts on one filesystem) are finished together by one task and one sync
    /// ([`finish_together`]); every other part (a large one, a remote one) by its own task.
    /// A small file's three parts on folders of one filesystem were three tasks, each waiting
    /// for the same sync (docs/performance.md, "Many small files").
    async fn finish(
        mut self,
        cluster: wormfs_parts::ids::ClusterId,
        path: String,
    ) -> anyhow::Result<NewSegment> {
        let hash = self.hasher.finalize();
        let created = now_ms();
        let header_len = self.header_len;
        // Parts by their group-sync key (`None`: a group of one).
        let mut groups: Vec<(Option<u64>, Vec<PartToFinish>)> = Vec::new();
        for (i, w) in self
            .writers
            .iter_mut()
            .enumerate()
            .filter_map(|(i, w)| w.take().map(|w| (i, w)))
        {
            let header = PartHeader {
                codec: self.geo.codec,
                header_len,
                cluster_id: cluster,
                file_id: self.file_id,
                segment_index: self.index,
                part_index: i as u16,
                k: self.geo.k,
                m: self.geo.m,
                block_size: self.geo.block_size,
                segment_data_len: self.len,
                part_data_len: self.geo.part_data_len(self.len),
                created_ms: created,
                segment_blake3: *hash.as_bytes(),
                path: path.clone(),
            };
            let key = w.sync_group_key();
            match groups.iter_mut().find(|g| key.is_some() && g.0 == key) {
                Some(g) => g.1.push((i, w, header)),
                None => groups.push((key, vec![(i, w, header)])),
            }
        }
        let handles: Vec<_> = groups
            .into_iter()
            .map(|(_, parts)| {
                let indexes: Vec<usize> = parts.iter().map(|p| p.0).collect();
                let parts: Vec<_> = parts.into_iter().map(|(_, w, h)| (w, h)).collect();
                (
                    indexes,
                    tokio::task::spawn_blocking(move || finish_together(parts)),
                )
            })
            .collect();
        let mut results = Vec::with_capacity(self.writers.len());
        for (indexes, h) in handles {
            match h.await {
                Ok(rs) => results.extend(indexes.into_iter().zip(rs)),
                Err(_) => results.extend(
                    indexes
                        .into_iter()
                        .map(|i| (i, Err(anyhow::anyhow!("part writer panicked")))),
                ),
            }
        }
        for (i, r) in results {
            if let Err(e) = r {
                tracing::warn!(file = %self.file_id, segment = self.index, part = i, "part finish failed: {e:#}");
                self.failures.push(format!("{e:#}"));
                self.disks[i] = None;
            }
        }
        let durable = self.disks.iter().filter(|d| d.is_some()).count();
        anyhow::ensure!(
            durable >= self.quorum,
            "only {durable} parts durable, {} needed{}",
            self.quorum,
            failure_reasons(&self.failures)
        );
        Ok(NewSegment {
            index: self.index,
            data_len: self.len,
            blake3: hash.to_hex().to_string(),
            parts: self.disks,
        })
    }

    fn abort(mut self) {
        for w in self.writers.iter_mut() {
            if let Some(w) = w.take() {
                w.abort();
            }
        }
    }
}

/// A part's index in its segment, its writer and its header, to be finished.
type PartToFinish = (usize, Box<dyn PartWriter>, PartHeader);

/// The reasons parts failed, for an error: "disk full" first where that is why.
fn failure_reasons(failures: &[String]) -> String {
    let full = failures.iter().filter(|f| f.contains("disk full")).count();
    if full > 0 {
        format!(": disk full ({full} part(s) found no space left; `wormfs disks` shows which)")
    } else if let Some(f) = failures.first() {
        format!(": {f}")
    } else {
        String::new()
    }
}

/// Where a part is to be written.
#[derive(Clone, Copy, Debug)]
pub struct PartTarget {
    /// The disk.
    pub disk_id: DiskId,
    /// Its node.
    pub node: NodeId,
    /// The file whose part it is.
    pub file_id: FileId,
    /// The segment.
    pub segment: u32,
    /// The part's index.
    pub part: u16,
}

impl Store {
    /// Starts a part on a disk of this node or, through the data plane, of another: the one
    /// way ingest and repair open a part for writing.
    pub async fn open_part_writer(
        &self,
        t: PartTarget,
        header_len: u32,
        block_size: u32,
        part_bytes: u64,
    ) -> anyhow::Result<Box<dyn PartWriter>> {
        if t.node != self.node_id {
            let req = NewUpload {
                disk_id: t.disk_id,
                file_id: t.file_id,
                segment: t.segment,
                part: t.part,
                header_len,
                block_size,
                expected_bytes: part_bytes,
            };
            let w = RemotePartWriter::create(self.data.clone(), t.node, req).await?;
            return Ok(Box::new(w));
        }
        let disk = self
            .disk(t.disk_id)
            .ok_or_else(|| anyhow::anyhow!("disk {} is not attached here", t.disk_id))?;
        let dest = disk.part_path(t.file_id, t.segment, t.part);
        let w = LocalPartWriter::create(disk.clone(), dest, header_len, block_size, part_bytes)
            .with_context(|| format!("disk {}", disk.root.display()))?;
        Ok(Box::new(w))
    }

    /// Why too few disks could take a part of `part_bytes`, counted over the cluster's disks
    /// as each machine reports them: "disk full" first where that is why.
    async fn why_no_room(&self, part_bytes: u64) -> String {
        let mut full = 0;
        let mut other = 0;
        let mut reasons = Vec::new();
        for d in self.disks.iter() {
            match d.verify_for_write(part_bytes) {
                Ok(()) => {}
                Err(wormfs_parts::disk::DiskError::Full { .. }) => full += 1,
                Err(e) => {
                    other += 1;
                    reasons.push(e.to_string());
                }
            }
        }
        for (node, _) in self.data.directory().peers() {
            match self.data.disk_offers(node).await {
                Ok(offers) => {
                    for o in offers {
                        if o.state == Some(DiskState::Full)
                            || (o.writable && o.free_bytes < part_bytes)
                            || o.reason.contains("full")
                        {
                            full += 1;
                        } else if !o.writable {
                            other += 1;
                            reasons.push(o.reason);
                        }
                    }
                }
                Err(e) => reasons.push(format!("node {node}: {e}")),
            }
        }
        let mut out = Vec::new();
        if full > 0 {
            out.push(format!(
                "disk full: {full} disk(s) have less than {part_bytes} bytes free beyond their reserve"
            ));
        }
        if other > 0 || !reasons.is_empty() {
            reasons.truncate(3);
            out.push(reasons.join("; "));
        }
        if out.is_empty() {
            "disks missing, read-only or not up".to_owned()
        } else {
            out.join("; ")
        }
    }

    fn quorum(&self, geo: &Geometry) -> usize {
        usize::from(geo.k) + usize::from(self.storage.write_quorum_extra).min(usize::from(geo.m))
    }

    /// Opens part writers for segment `index` on disks chosen by placement: this node's and
    /// other nodes' (through the data plane), distinct machines first. `segment_estimate` is
    /// the segment's expected length, exact when `exact` (the whole rest of the input is in
    /// memory): the front region is then sized for exactly the blocks the parts will hold, so
    /// a small file's parts carry a header of a few hundred bytes, not a 4 KiB region
    /// (docs/chunk-format.md, version 2).
    #[allow(clippy::too_many_arguments)]
    async fn open_segment(
        self: &Arc<Self>,
        geo: Geometry,
        file_id: FileId,
        index: u32,
        segment_estimate: u64,
        exact: bool,
        path: &str,
    ) -> Result<SegmentWriter, StoreError> {
        let part_estimate = geo.part_data_len(segment_estimate);
        let max_blocks = if exact {
            part_estimate.div_ceil(u64::from(geo.block_size))
        } else {
            geo.max_blocks_per_part()
        };
        let header_len = front_region_len(max_blocks, path, part_estimate);
        // Each chosen disk must have room for its part of a segment of the estimated size.
        let part_bytes = part_estimate + u64::from(header_len);
        let mut cands = self.candidates(part_bytes);
        cands.extend(self.remote_candidates(part_bytes).await);
        // Only disks the cluster has `up` (not draining, out or removed) take new parts.
        let statuses = self.disk_statuses().await?;
        cands.retain(|c| statuses.get(&c.disk) == Some(&wormfs_meta::command::DiskStatus::Up));
        let nodes: std::collections::HashMap<DiskId, wormfs_parts::ids::NodeId> =
            cands.iter().map(|c| (c.disk, c.node)).collect();
        let mut order = place(&cands, cands.len(), &mut rand::rng())
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
            .into_iter();
        let width = geo.width();
        let quorum = self.quorum(&geo);
        let mut disks = Vec::with_capacity(width);
        let mut writers: Vec<Option<Box<dyn PartWriter>>> = Vec::with_capacity(width);
        for part in 0..width {
            let mut opened: Option<(DiskId, Box<dyn PartWriter>)> = None;
            for disk_id in order.by_ref() {
                let node = nodes.get(&disk_id).copied().unwrap_or(self.node_id);
                let target = PartTarget {
                    disk_id,
                    node,
                    file_id,
                    segment: index,
                    part: part as u16,
                };
                match self
                    .open_part_writer(target, header_len, geo.block_size, part_bytes)
                    .await
                {
                    Ok(w) => {
                        opened = Some((disk_id, w));
                        break;
                    }
                    Err(e) => tracing::warn!(node, disk = %disk_id, "cannot start a part: {e:#}"),
                }
            }
            match opened {
                Some((d, w)) => {
                    disks.push(Some(d));
                    writers.push(Some(w));
                }
                None => {
                    disks.push(None);
                    writers.push(None);
                }
            }
        }
        let live = writers.iter().filter(|w| w.is_some()).count();
        if live < quorum {
            for w in writers.into_iter().flatten() {
                w.abort();
            }
            return Err(StoreError::Unavailable(format!(
                "only {live} disks can take a part of a {} segment, {quorum} needed ({})",
                if geo.is_replica() {
                    format!("copies:{width}")
                } else {
                    format!("ec:{}+{}", geo.k, geo.m)
                },
                self.why_no_room(part_bytes).await
            )));
        }
        Ok(SegmentWriter {
            geo,
            index,
            file_id,
            disks,
            writers,
            hasher: blake3::Hasher::new(),
            len: 0,
            quorum,
            pad: Vec::new(),
            encoder: codec::Encoder::default(),
            failures: Vec::new(),
            header_len,
        })
    }

    /// Streams `src` into segments, starting at segment `first_index`. Returns the segments,
    /// the byte count and the BLAKE3 of everything read.
    async fn write_segments<R: AsyncRead + Unpin>(
        self: &Arc<Self>,
        geo: Geometry,
        file_id: FileId,
        first_index: u32,
        path: &str,
        src: &mut Source<R>,
    ) -> Result<(Vec<NewSegment>, blake3::Hash), StoreError> {
        let mut finishing = None;
        let r = self
            .write_segments_with(geo, file_id, first_index, path, src, &mut finishing)
            .await;
        if r.is_err() {
            // A segment still being finished must land before the caller discards the parts.
            if let Some(h) = finishing.take() {
                let _ = h.await;
            }
        }
        r
    }

    async fn write_segments_with<R: AsyncRead + Unpin>(
        self: &Arc<Self>,
        geo: Geometry,
        file_id: FileId,
        first_index: u32,
        path: &str,
        src: &mut Source<R>,
        finishing: &mut Option<tokio::task::JoinHandle<anyhow::Result<NewSegment>>>,
    ) -> Result<(Vec<NewSegment>, blake3::Hash), StoreError> {
        let rows_per_batch = (BATCH_TARGET_BYTES / geo.row_bytes()).max(1);
        let batch = (rows_per_batch * geo.row_bytes()) as usize;
        let mut hasher = blake3::Hasher::new();
        let mut segments = Vec::new();
        let mut index = first_index;
        let mut spare: Option<Vec<u8>> = None;
        // A file already all in memory (a small one) needs no batch-sized buffer.
        let mut next = if src.eof {
            Vec::with_capacity(src.head.len() - src.head_pos)
        } else {
            Vec::with_capacity(batch)
        };
        src.fill(&mut next, batch.min(geo.segment_capacity() as usize))
            .await
            .map_err(read_err)?;
        while !next.is_empty() {
            let cap = geo.segment_capacity();
            let estimate = if src.exhausted() {
                next.len() as u64
            } else {
                let before = src.total - next.len() as u64;
                src.size_hint.map_or(cap, |h| {
                    h.saturating_sub(before).clamp(next.len() as u64, cap)
                })
            };
            let exact = src.exhausted();
            let mut seg = self
                .open_segment(geo, file_id, index, estimate, exact, path)
                .await?;
            let mut seg_len = 0u64;
            loop {
                self.healing.foreground();
                let buf = std::mem::take(&mut next);
                seg_len += buf.len() as u64;
                hasher.update(&buf);
                let mut w = seg;
                let h = tokio::task::spawn_blocking(move || {
                    let r = w.write_batch(&buf);
                    (w, buf, r)
                });
                // Read the next batch while this one is encoded and written.
                let room = geo.segment_capacity() - seg_len;
                // A source read to its end (a small file, most often) needs no second buffer.
                let mut nb = match spare.take() {
                    Some(v) => v,
                    None if src.exhausted() => Vec::new(),
                    None => Vec::with_capacity(batch),
                };
                nb.clear();
                let read = src.fill(&mut nb, batch.min(room as usize)).await;
                let (w, old, r) = join_handle(h).await?;
                seg = w;
                spare = Some(old);
                if let Err(e) = r {
                    seg.abort();
                    return Err(StoreError::Unavailable(format!("{e:#}")));
                }
                if let Err(e) = read {
                    seg.abort();
                    return Err(read_err(e));
                }
                next = nb;
                if next.is_empty() || room == 0 {
                    break;
                }
            }
            let cluster = self.cluster_id;
            let p = path.to_owned();
            // The segment's fsyncs run while the next segment is written (one in flight).
            if let Some(prev) = finishing.take() {
                segments.push(finished(prev).await?);
            }
            *finishing = Some(tokio::spawn(seg.finish(cluster, p)));
            index += 1;
            if next.is_empty() && !src.exhausted() {
                src.fill(&mut next, batch.min(geo.segment_capacity() as usize))
                    .await
                    .map_err(read_err)?;
            }
        }
        if let Some(prev) = finishing.take() {
            segments.push(finished(prev).await?);
        }
        Ok((segments, hasher.finalize()))
    }

    /// Records an intent and keeps its lease alive until the returned token is cancelled.
    async fn begin_intent(
        self: &Arc<Self>,
        file_id: FileId,
        path: &TreePath,
        append_to: Option<FileId>,
    ) -> Result<CancellationToken, StoreError> {
        let lease = self.ingest.lease_ms;
        self.propose(CommandV1::BeginIngest {
            file_id,
            writer: self.node_id,
            path: path.to_string(),
            append_to,
            lease_until_ms: now_ms() + lease,
            time_ms: now_ms(),
        })
        .await?;
        let stop = CancellationToken::new();
        let me = self.clone();
        let s = stop.clone();
        tokio::spawn(async move {
            let every = Duration::from_millis((lease / 3).max(100));
            loop {
                tokio::select! {
                    _ = s.cancelled() => break,
                    _ = tokio::time::sleep(every) => {
                        let cmd = CommandV1::RenewLease { file_id, lease_until_ms: now_ms() + lease };
                        if let Err(e) = me.propose(cmd).await {
                            tracing::warn!(file = %file_id, "lease renewal failed: {e}");
                        }
                    }
                }
            }
        });
        Ok(stop)
    }

    /// Ingests a byte stream as a new file.
    #[tracing::instrument(skip_all, fields(path = %req.path))]
    pub async fn ingest<R: AsyncRead + Unpin>(
        self: &Arc<Self>,
        req: IngestRequest,
        src: R,
    ) -> Result<IngestResult, StoreError> {
        let res = {
            let _running = crate::metrics::IngestRunning::start();
            self.ingest_inner(req, src).await
        };
        crate::metrics::ingest_done(res.as_ref().map(|r| r.size));
        match &res {
            Ok(r) => {
                self.counters
                    .ingests_committed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(path = %r.path, size = r.size, policy = %r.policy, skipped = r.skipped, "ingest committed");
            }
            Err(e) => {
                self.counters
                    .ingests_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!("ingest failed: {e}");
            }
        }
        res
    }

    async fn ingest_inner<R: AsyncRead + Unpin>(
        self: &Arc<Self>,
        req: IngestRequest,
        rest: R,
    ) -> Result<IngestResult, StoreError> {
        if req.path.is_root() {
            return Err(StoreError::BadRequest("cannot write a file at /".into()));
        }
        if req.conflict == Conflict::Replace && !req.retention_checked {
            self.check_not_retained(&req.path).await?;
        }
        let threshold = self.storage.small_file_threshold_bytes;
        let mut src = Source::new(rest);
        let mut head = Vec::new();
        src.fill(&mut head, (threshold + 1) as usize)
            .await
            .map_err(read_err)?;
        let small = (head.len() as u64) <= threshold && src.eof;
        src.head = head;
        src.total = 0;
        src.size_hint = req.expected_size;
        self.refresh_directory().await?;
        let policy = self.policy_for(&req.path, small, req.policy).await?;
        policy
            .check_fits(self.cluster_disks())
            .map_err(|e| StoreError::BadRequest(e.to_string()))?;
        let geo = Geometry::for_policy(
            policy,
            self.storage.block_size_bytes,
            self.storage.segment_part_bytes,
        );
        if small {
            // All of it is in memory: kept for the rare retry below.
            let bytes = src.head.clone();
            match self
                .store_new(&req, policy, geo, Claim::None, &mut src)
                .await
            {
                Err(StoreError::Rejected(Rejection::PartsMaybeSwept(id))) => {
                    // Its commit came after a sweep's horizon passed its parts (a commit
                    // delayed for most of the orphan grace time, or clocks far apart): its
                    // parts are gone or may go. Stored again, claimed by an intent.
                    tracing::warn!(path = %req.path, file = %id, "a small file's commit came too late for its parts: storing it again with an intent");
                    let mut again = Source::new(&bytes[..]);
                    again.size_hint = req.expected_size;
                    self.store_new(&req, policy, geo, Claim::Intent, &mut again)
                        .await
                }
                other => other,
            }
        } else {
            self.store_new(&req, policy, geo, Claim::Intent, &mut src)
                .await
        }
    }

    /// Writes a new file's parts and commits it: claimed by an intent (a lease the ingest
    /// renews while it writes), or, for a small file wholly in memory, by nothing: its parts
    /// take milliseconds, and the commit is refused if a sweep may have removed them
    /// (`CommitSmallFile`; docs/performance.md, "Many small files").
    async fn store_new<R: AsyncRead + Unpin>(
        self: &Arc<Self>,
        req: &IngestRequest,
        policy: Policy,
        geo: Geometry,
        claim: Claim,
        src: &mut Source<R>,
    ) -> Result<IngestResult, StoreError> {
        let file_id = FileId::mint();
        let path_s = req.path.to_string();
        let sweeps_before = match claim {
            Claim::None => self.meta.sweeps_begun().await?,
            Claim::Intent => 0,
        };
        let lease = match claim {
            Claim::Intent => {
                let lease = self.begin_intent(file_id, &req.path, None).await?;
                crash_point("ingest-after-intent");
                Some(lease.drop_guard())
            }
            Claim::None => None,
        };
        let abandon = |me: &Arc<Self>| {
            let me = me.clone();
            async move {
                if claim == Claim::Intent {
                    me.abandon(file_id).await;
                }
            }
        };
        let written = self.write_segments(geo, file_id, 0, &path_s, src).await;
        let (segments, hash) = match written {
            Ok(v) => v,
            Err(e) => {
                abandon(self).await;
                self.discard_parts(file_id, geo.width());
                return Err(e);
            }
        };
        if let Some(want) = req.expected_size {
            if want != src.total {
                abandon(self).await;
                self.delete_parts(file_id, &segments);
                return Err(StoreError::BadRequest(format!(
                    "received {} bytes, {} announced",
                    src.total, want
                )));
            }
        }
        crash_point("ingest-after-parts");
        let missing_parts = segments
            .iter()
            .map(|s| s.parts.iter().filter(|p| p.is_none()).count())
            .sum();
        let file = FileCommit {
            file_id,
            path: req.path.to_string(),
            conflict: req.conflict,
            policy: policy.to_string(),
            geometry: geo,
            size: src.total,
            content_blake3: hash.to_hex().to_string(),
            segments: segments.clone(),
            source: req.source.clone(),
            time_ms: now_ms(),
        };
        let hashes: Vec<String> = segments.iter().map(|s| s.blake3.clone()).collect();
        let entry = CommittedEntry {
            mtime_ms: file.time_ms,
            etag: wormfs_meta::etag_for(file.size, &hashes),
        };
        let cmd = match claim {
            Claim::Intent => file.with_intent(),
            Claim::None => CommandV1::CommitSmallFile {
                file,
                sweeps_before,
            },
        };
        #[cfg(feature = "crash-points")]
        if let Some(before) = test_hook::take(&req.path.to_string()) {
            self.propose(before).await?;
        }
        let outcome = self.propose(cmd).await;
        drop(lease);
        crash_point("ingest-after-commit");
        let (path, skipped, replaced) = match outcome {
            Ok(Outcome::Committed { path, replaced, .. }) => (path, false, replaced),
            Ok(Outcome::Skipped { path }) => {
                self.delete_parts(file_id, &segments);
                (path, true, false)
            }
            Ok(other) => {
                return Err(StoreError::Other(anyhow::anyhow!(
                    "unexpected commit outcome {other:?}"
                )))
            }
            Err(e) => {
                if matches!(e, StoreError::Rejected(_)) {
                    self.delete_parts(file_id, &segments);
                }
                return Err(e);
            }
        };
        let (machines_tolerated, policy_machines_tolerated, respread_parts) = if skipped {
            (0, 0, 0)
        } else {
            self.respread(&geo, file_id, &segments).await
        };
        Ok(IngestResult {
            path,
            file_id,
            size: src.total,
            blake3: hash.to_hex().to_string(),
            policy: policy.to_string(),
            skipped,
            replaced,
            missing_parts,
            machines_tolerated,
            policy_machines_tolerated,
            respread_parts,
            committed: (!skipped).then_some(entry),
        })
    }

    /// Appends a byte stream to an existing file as new segments.
    #[tracing::instrument(skip_all, fields(path = %path))]
    pub async fn append<R: AsyncRead + Unpin>(
        self: &Arc<Self>,
        path: &TreePath,
        rest: R,
    ) -> Result<IngestResult, StoreError> {
        let res = {
            let _running = crate::metrics::IngestRunning::start();
            self.append_inner(path, rest).await
        };
        // The bytes appended were counted by append_inner (the result has the file's size).
        crate::metrics::ingest_done(res.as_ref().map(|_| 0));
        res
    }

    async fn append_inner<R: AsyncRead + Unpin>(
        self: &Arc<Self>,
        path: &TreePath,
        rest: R,
    ) -> Result<IngestResult, StoreError> {
        let rec = self.file_at(path).await?;
        self.check_not_retained(path).await?;
        let file_id = rec.file_id;
        let intent = FileId::mint();
        let lease = self.begin_intent(intent, path, Some(file_id)).await?;
        let _stop_lease = lease.drop_guard();
        let mut src = Source::new(rest);
        let first = rec.segments.last().map_or(0, |s| s.index + 1);
        let (segments, _appended_hash) = match self
            .write_segments(rec.geometry, file_id, first, &path.to_string(), &mut src)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                self.abandon(intent).await;
                return Err(e);
            }
        };
        if segments.is_empty() {
            self.abandon(intent).await;
            return Ok(IngestResult {
                path: path.to_string(),
                file_id,
                size: rec.size,
                blake3: rec.content_blake3.unwrap_or_default(),
                policy: rec.policy,
                skipped: false,
                replaced: false,
                missing_parts: 0,
                machines_tolerated: 0,
                policy_machines_tolerated: 0,
                respread_parts: 0,
                committed: None,
            });
        }
        let missing_parts = segments
            .iter()
            .map(|s| s.parts.iter().filter(|p| p.is_none()).count())
            .sum();
        let res = self
            .propose(CommandV1::AppendSegments {
                intent_id: intent,
                file_id,
                expected_size: rec.size,
                segments: segments.clone(),
                time_ms: now_ms(),
            })
            .await;
        if let Err(e) = res {
            if matches!(e, StoreError::Rejected(_)) {
                self.delete_parts(file_id, &segments);
            }
            return Err(e);
        }
        let (machines_tolerated, policy_machines_tolerated, respread_parts) =
            self.respread(&rec.geometry, file_id, &segments).await;
        metrics::counter!(crate::metrics::INGEST_BYTES).increment(src.total);
        Ok(IngestResult {
            path: path.to_string(),
            file_id,
            size: rec.size + src.total,
            blake3: String::new(),
            policy: rec.policy,
            skipped: false,
            replaced: false,
            missing_parts,
            machines_tolerated,
            policy_machines_tolerated,
            respread_parts,
            committed: None,
        })
    }

    /// After a commit: how the new segments are spread over machines and, where that is less
    /// than the cluster could give (a machine was down), the parts asked to move (`MoveParts`,
    /// recorded in the metadata): repair moves each to a machine holding no part of its
    /// segment once there is one. Returns the machines tolerated, the policy's, and the parts
    /// queued. A failure to queue is logged: the file is stored either way.
    async fn respread(
        &self,
        geo: &Geometry,
        file_id: FileId,
        segments: &[NewSegment],
    ) -> (usize, usize, usize) {
        let dir = self.data.directory();
        let machines = dir.machines().len().max(1);
        let (tolerated, possible, moves) = machine_spread(geo, file_id, segments, machines, |d| {
            dir.disk(d).map(|(n, _)| n)
        });
        if moves.is_empty() {
            return (tolerated, possible, 0);
        }
        let reason = format!(
            "written while a machine was down: survives {tolerated} machine(s), its policy {possible}; moved once a machine holding none of its parts is back"
        );
        let n = moves.len();
        for chunk in moves.chunks(256) {
            if let Err(e) = self
                .propose(CommandV1::MoveParts {
                    parts: chunk.to_vec(),
                    reason: reason.clone(),
                    time_ms: now_ms(),
                })
                .await
            {
                tracing::warn!(file = %file_id, "could not queue the file's re-placement: {e}");
                return (tolerated, possible, 0);
            }
        }
        tracing::info!(file = %file_id, parts = n, "{reason}");
        (tolerated, possible, n)
    }

    async fn abandon(&self, intent: FileId) {
        if let Err(e) = self
            .consensus
            .write(CommandV1::AbortIngest { file_id: intent })
            .await
        {
            if self.consensus.stopping() {
                tracing::info!(file = %intent, "shutting down: the unfinished upload's intent is dropped by the sweeper after the next start");
            } else {
                tracing::warn!(file = %intent, "could not drop the intent (the sweeper will): {e}");
            }
        }
    }

    /// Deletes every local part of an ingest that failed part-way (segments written before the
    /// failure included), so an upload cut off leaves nothing behind for the sweeper.
    fn discard_parts(&self, file_id: FileId, width: usize) {
        for seg in 0u32.. {
            let mut found = false;
            for part in 0..width as u16 {
                for d in &self.disks {
                    found |= std::fs::remove_file(d.part_path(file_id, seg, part)).is_ok();
                }
            }
            if !found {
                break;
            }
        }
    }

    /// Deletes the local parts of segments that will never be committed (best effort; the
    /// sweeper removes anything left).
    fn delete_parts(&self, file_id: FileId, segments: &[NewSegment]) {
        for s in segments {
            for (i, d) in s.parts.iter().enumerate() {
                if let Some(disk) = d.and_then(|d| self.disk(d)) {
                    let _ = std::fs::remove_file(disk.part_path(file_id, s.index, i as u16));
                }
            }
        }
    }
}

async fn finished(
    h: tokio::task::JoinHandle<anyhow::Result<NewSegment>>,
) -> Result<NewSegment, StoreError> {
    h.await
        .map_err(|e| StoreError::Other(e.into()))?
        .map_err(|e| StoreError::Unavailable(format!("{e:#}")))
}

fn read_err(e: std::io::Error) -> StoreError {
    StoreError::BadRequest(format!("reading the upload failed: {e}"))
}

type Joined = (SegmentWriter, Vec<u8>, anyhow::Result<()>);

async fn join_handle(h: tokio::task::JoinHandle<Joined>) -> Result<Joined, StoreError> {
    h.await
        .map_err(|e| StoreError::Other(anyhow::anyhow!("encoder task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u128) -> DiskId {
        DiskId(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn a_segment_on_fewer_machines_than_the_cluster_has_gets_its_surplus_parts_moved() {
        let geo = Geometry::for_policy(Policy::Ec { k: 2, m: 1 }, 65536, 1 << 20);
        // Disk n is on machine n / 10.
        let node_of = |x: DiskId| Some((x.0.as_u128() / 10) as NodeId);
        let seg = |parts: Vec<Option<u128>>| NewSegment {
            index: 0,
            data_len: 10,
            blake3: String::new(),
            parts: parts.into_iter().map(|p| p.map(d)).collect(),
        };
        // Machine 3 was down: parts 0 and 1 on machine 1, part 2 on machine 2.
        let (t, p, moves) = machine_spread(
            &geo,
            FileId(1),
            &[seg(vec![Some(10), Some(11), Some(20)])],
            3,
            node_of,
        );
        assert_eq!((t, p), (0, 1));
        assert_eq!(moves.len(), 1);
        assert_eq!((moves[0].part, moves[0].disk_id), (1, d(11)));
        // Spread over the three: nothing to move.
        let (t, p, moves) = machine_spread(
            &geo,
            FileId(1),
            &[seg(vec![Some(10), Some(20), Some(30)])],
            3,
            node_of,
        );
        assert_eq!((t, p, moves.len()), (1, 1, 0));
        // Two machines in all: as good as it gets.
        let (t, p, moves) = machine_spread(
            &geo,
            FileId(1),
            &[seg(vec![Some(10), Some(11), Some(20)])],
            2,
            node_of,
        );
        assert_eq!((t, p, moves.len()), (0, 0, 0));
    }
}
