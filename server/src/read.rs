//! Reads: any byte range of a committed file.
//!
//! A range maps to segments, rows and blocks. A healthy read touches only the data parts that
//! hold the range, one block each, with a bounded read-ahead window for sequential readers.
//! A block whose part is missing, unreadable or corrupt is decoded from any `k` parts of its row
//! (several rows per decode call, kept in a small per-reader cache); the damage is logged and
//! counted. With fewer than `k` parts left the read fails with a clear error, never short or
//! zero-filled data.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::healing::ReadDamage;
use crate::store::Store;
use wormfs_meta::command::{PartRef, SegmentRef};
use wormfs_meta::FileRecord;
use wormfs_parts::codec;
use wormfs_parts::ids::FileId;
use wormfs_parts::part_io::{PartReadError, PartReader};

/// Blocks fetched ahead of the reader.
const READ_AHEAD_BLOCKS: usize = 8;
/// Rows decoded per call when a part is damaged (a decode window; windows are aligned).
const DEGRADED_ROWS: u64 = 4;
/// Windows decoded ahead of a sequential degraded reader, on other cores.
const DECODE_AHEAD_WINDOWS: u64 = 2;

/// A read that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Fewer than k parts of a row are readable.
    #[error("file {file}: segment {segment} row {row} is unreadable: {have} of {need} needed parts readable ({detail})")]
    Unavailable {
        /// File.
        file: FileId,
        /// Segment.
        segment: u32,
        /// Row.
        row: u64,
        /// Readable parts.
        have: usize,
        /// Parts needed.
        need: usize,
        /// What went wrong with the others.
        detail: String,
    },
    /// The range is outside the file.
    #[error("range {start}-{end} outside a file of {size} bytes")]
    Range {
        /// Start.
        start: u64,
        /// End (exclusive).
        end: u64,
        /// File size.
        size: u64,
    },
    /// Internal failure.
    #[error("read task failed: {0}")]
    Internal(String),
}

/// The lock one decode window is decoded under.
type WindowGate = Arc<Mutex<()>>;

#[derive(Clone)]
enum PartSlot {
    Open(PartHandle),
    Bad(PartFailure),
}

/// Why a part could not be used, and whether the part itself is damaged (missing from its
/// disk, corrupt, a bad header, another part's header, an I/O error) rather than out of reach
/// for now (its disk or machine down): a damaged part is reported for repair.
#[derive(Clone, Debug)]
struct PartFailure {
    why: String,
    damaged: bool,
}

impl std::fmt::Display for PartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

impl From<&str> for PartFailure {
    fn from(why: &str) -> Self {
        Self {
            why: why.to_owned(),
            damaged: false,
        }
    }
}

impl From<PartReadError> for PartFailure {
    fn from(e: PartReadError) -> Self {
        let damaged = !matches!(
            e,
            PartReadError::Unavailable(_) | PartReadError::DiskNotHere(_)
        );
        Self {
            why: e.to_string(),
            damaged,
        }
    }
}

/// Where a part's blocks come from: this node's disk or another node's, behind one trait.
type PartHandle = Arc<dyn PartReader>;

#[derive(Clone, Copy, Debug)]
struct BlockRef {
    seg: usize,
    row: u64,
    part: u16,
    /// Offset within the block of the first byte wanted.
    from: usize,
    /// Bytes wanted from the block.
    len: usize,
    /// Whether the requested range goes on past this block's decode window in its segment.
    more: bool,
}

/// The parts of one file opened so far (or found bad), by segment and part index. Readers of
/// the same file may share them, so a stream of Range requests opens each part once.
#[derive(Default)]
pub struct OpenParts(Mutex<HashMap<(u32, u16), PartSlot>>);

/// Reads one file; cheap to create, holds open parts and a small block cache.
pub struct FileReader {
    store: Arc<Store>,
    file: Arc<FileRecord>,
    parts: Arc<OpenParts>,
    cache: Mutex<BlockCache>,
    /// Decode windows in flight, each behind its own lock so that a window is decoded once
    /// while different windows decode in parallel.
    windows: Mutex<HashMap<(u32, u64), WindowGate>>,
    /// Reusable decoders.
    decoders: Mutex<Vec<codec::Decoder>>,
}

struct BlockCache {
    map: HashMap<(u32, u64, u16), Bytes>,
    order: VecDeque<(u32, u64, u16)>,
    cap: usize,
}

impl BlockCache {
    fn get(&self, k: &(u32, u64, u16)) -> Option<Bytes> {
        self.map.get(k).cloned()
    }
    fn put(&mut self, k: (u32, u64, u16), v: Bytes) {
        if self.map.insert(k, v).is_none() {
            self.order.push_back(k);
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The pieces of a range as one buffer: the piece itself when there is one (no copy).
fn concat(mut pieces: Vec<Bytes>, len: u64) -> Bytes {
    if pieces.len() <= 1 {
        return pieces.pop().unwrap_or_default();
    }
    let mut out = bytes::BytesMut::with_capacity(len as usize);
    for p in pieces {
        out.extend_from_slice(&p);
    }
    out.freeze()
}

impl FileReader {
    /// A reader for `file`.
    pub fn new(store: Arc<Store>, file: impl Into<Arc<FileRecord>>) -> Arc<Self> {
        Self::with_open_parts(store, file, Arc::default())
    }

    /// A reader for `file` that uses (and adds to) `parts`, opened by earlier readers of the
    /// same file. A part found bad stays bad for every reader sharing them.
    pub fn with_open_parts(
        store: Arc<Store>,
        file: impl Into<Arc<FileRecord>>,
        parts: Arc<OpenParts>,
    ) -> Arc<Self> {
        let file = file.into();
        // The window being read, the windows decoded ahead of it, and the read-ahead.
        let cap = usize::from(file.geometry.k)
            * (DEGRADED_ROWS * (1 + DECODE_AHEAD_WINDOWS)) as usize
            + 2 * READ_AHEAD_BLOCKS;
        Arc::new(Self {
            store,
            file,
            parts,
            windows: Mutex::new(HashMap::new()),
            decoders: Mutex::new(Vec::new()),
            cache: Mutex::new(BlockCache {
                map: HashMap::new(),
                order: VecDeque::new(),
                cap,
            }),
        })
    }

    /// The file being read.
    pub fn file(&self) -> &FileRecord {
        &self.file
    }

    fn blocks(&self, start: u64, end: u64) -> Vec<BlockRef> {
        let g = self.file.geometry;
        let bs = u64::from(g.block_size);
        let mut out = Vec::new();
        let mut pos = start;
        let first = self
            .file
            .segments
            .partition_point(|s| s.offset + s.data_len <= start);
        for (si, seg) in self.file.segments.iter().enumerate().skip(first) {
            if pos >= end {
                break;
            }
            let seg_end = seg.offset + seg.data_len;
            while pos < end && pos < seg_end {
                let local = pos - seg.offset;
                let addr = g.block_of(local);
                let bstart = g.block_start(addr);
                let bend = (bstart + bs).min(seg.data_len);
                let take_end = (end - seg.offset).min(bend);
                let window_end = (addr.row - addr.row % DEGRADED_ROWS + DEGRADED_ROWS)
                    .saturating_mul(g.row_bytes())
                    .min(seg.data_len);
                out.push(BlockRef {
                    seg: si,
                    row: if g.is_replica() { local / bs } else { addr.row },
                    part: if g.is_replica() { 0 } else { addr.part },
                    from: (local - bstart) as usize,
                    len: (take_end - local) as usize,
                    more: end > seg.offset + window_end,
                });
                pos = seg.offset + take_end;
            }
        }
        out
    }

    /// Streams bytes `start..end` of the file.
    pub fn stream(
        self: Arc<Self>,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = Result<Bytes, ReadError>> + Send + 'static {
        let size = self.file.size;
        let bad = (start > end || end > size).then_some(ReadError::Range { start, end, size });
        let blocks = if bad.is_some() {
            Vec::new()
        } else {
            self.blocks(start, end)
        };
        let head = futures::stream::iter(bad.map(Err));
        let body = futures::stream::iter(blocks)
            .map(move |b| {
                let me = self.clone();
                async move {
                    me.store.healing.foreground();
                    let r = tokio::task::spawn_blocking(move || me.read_block(&b))
                        .await
                        .map_err(|e| ReadError::Internal(e.to_string()))?;
                    r.map(|blk| blk.slice(b.from..b.from + b.len))
                }
            })
            .buffered(READ_AHEAD_BLOCKS);
        head.chain(body)
    }

    /// Reads `start..end` into memory (small ranges). A range within one block is that
    /// block's bytes, not a copy. A range of one or two blocks already in the page cache is
    /// read on the calling thread; anything else goes through [`Self::stream`] on the blocking
    /// pool, so a slow disk never stalls the runtime.
    pub async fn read_range(self: Arc<Self>, start: u64, end: u64) -> Result<Bytes, ReadError> {
        self.store.healing.foreground();
        if start < end && end <= self.file.size {
            let blocks = self.blocks(start, end);
            if blocks.len() <= 2 {
                let mut got = Vec::with_capacity(blocks.len());
                for b in &blocks {
                    match self.read_block_now(b) {
                        Some(blk) => got.push(blk.slice(b.from..b.from + b.len)),
                        None => break,
                    }
                }
                if got.len() == blocks.len() {
                    return Ok(concat(got, end - start));
                }
            }
        }
        let mut got = Vec::new();
        let mut s = Box::pin(self.stream(start, end));
        while let Some(b) = s.next().await {
            got.push(b?);
        }
        Ok(concat(got, end.saturating_sub(start)))
    }

    /// A block that can be had without waiting for a disk: from the block cache, or from an
    /// already opened, healthy part whose bytes are in the page cache. `None` leaves the block
    /// to [`Self::read_block`]; a corrupt block marks its part bad first, so that read decodes
    /// around it.
    fn read_block_now(&self, b: &BlockRef) -> Option<Bytes> {
        let seg = &self.file.segments[b.seg];
        let key = (seg.index, b.row, b.part);
        if let Some(hit) = lock(&self.cache).get(&key) {
            return (!self.is_bad(seg.index, b.part)).then_some(hit);
        }
        let part = match lock(&self.parts.0).get(&(seg.index, b.part)) {
            Some(PartSlot::Open(p)) => p.clone(),
            _ => return None,
        };
        match part.read_blocks_now(b.row, 1)? {
            Ok(v) => Some(v),
            Err(e) => {
                self.mark_bad(seg.index, b.part, e.into());
                None
            }
        }
    }

    fn open_part(&self, seg: u32, part: u16) -> Result<PartHandle, PartFailure> {
        if let Some(slot) = lock(&self.parts.0).get(&(seg, part)) {
            return match slot {
                PartSlot::Open(p) => Ok(p.clone()),
                PartSlot::Bad(why) => Err(why.clone()),
            };
        }
        let rec = self
            .file
            .segments
            .iter()
            .find(|s| s.index == seg)
            .and_then(|s| s.parts.get(usize::from(part)));
        let res = match rec.and_then(|p| p.disk_id) {
            None => Err(PartFailure::from("recorded as missing")),
            Some(d) => self
                .store
                .open_part(d, self.file.file_id, seg, part)
                .map_err(PartFailure::from),
        };
        let slot = match &res {
            Ok(p) => PartSlot::Open(p.clone()),
            Err(why) => {
                self.damaged(seg, part, why);
                PartSlot::Bad(why.clone())
            }
        };
        lock(&self.parts.0).insert((seg, part), slot);
        res
    }

    /// Reads `count` blocks from block `first` of a part, wherever it is. Blocking.
    fn read_part(&self, seg: u32, part: u16, first: u64, count: u64) -> Result<Bytes, PartFailure> {
        self.open_part(seg, part)?
            .read_blocks(first, count)
            .map_err(PartFailure::from)
    }

    /// Counts and logs a part that failed; one that is damaged is reported for repair (heal
    /// on read), and the read goes on around it.
    fn damaged(&self, seg: u32, part: u16, why: &PartFailure) {
        self.store
            .counters
            .damaged_part_reads
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(file = %self.file.file_id, segment = seg, part, "damaged part, reading around it: {why}");
        if why.damaged {
            let disk = self
                .file
                .segments
                .iter()
                .find(|s| s.index == seg)
                .and_then(|s| s.parts.iter().find(|p| p.index == part))
                .and_then(|p| p.disk_id);
            let segment = SegmentRef {
                file_id: self.file.file_id,
                seg,
            };
            self.store.healing.report_read_damage(ReadDamage {
                segment,
                part: disk.map(|disk_id| PartRef {
                    file_id: self.file.file_id,
                    seg,
                    part,
                    disk_id,
                }),
            });
        }
    }

    fn mark_bad(&self, seg: u32, part: u16, why: PartFailure) {
        self.damaged(seg, part, &why);
        lock(&self.parts.0).insert((seg, part), PartSlot::Bad(why));
    }

    /// Counts and builds the error for a row that cannot be served.
    fn unreadable(
        &self,
        segment: u32,
        row: u64,
        have: usize,
        need: usize,
        why: &[String],
    ) -> ReadError {
        self.store
            .counters
            .unreadable
            .fetch_add(1, Ordering::Relaxed);
        ReadError::Unavailable {
            file: self.file.file_id,
            segment,
            row,
            have,
            need,
            detail: why.join("; "),
        }
    }

    fn read_block(self: &Arc<Self>, b: &BlockRef) -> Result<Bytes, ReadError> {
        let seg = &self.file.segments[b.seg];
        let key = (seg.index, b.row, b.part);
        let cached = lock(&self.cache).get(&key);
        if let Some(hit) = cached {
            if !self.file.geometry.is_replica() && self.is_bad(seg.index, b.part) {
                self.decode_ahead(b);
            }
            return Ok(hit);
        }
        let g = self.file.geometry;
        if g.is_replica() {
            let mut why = Vec::new();
            for copy in 0..g.width() as u16 {
                match self.read_part(seg.index, copy, b.row, 1) {
                    Ok(v) => return Ok(v),
                    Err(e) => {
                        why.push(format!("copy {copy}: {e}"));
                        self.mark_bad(seg.index, copy, e);
                    }
                }
            }
            return Err(self.unreadable(seg.index, b.row, 0, 1, &why));
        }
        match self.read_part(seg.index, b.part, b.row, 1) {
            Ok(v) => return Ok(v),
            Err(e) => self.mark_bad(seg.index, b.part, e),
        }
        self.decode_ahead(b);
        let window = b.row - b.row % DEGRADED_ROWS;
        self.decode_window(b.seg, window, Some((b.row, b.part)))?
            .ok_or_else(|| ReadError::Internal("decoded block missing".into()))
    }

    fn is_bad(&self, seg: u32, part: u16) -> bool {
        matches!(
            lock(&self.parts.0).get(&(seg, part)),
            Some(PartSlot::Bad(_))
        )
    }

    /// Starts decoding the windows after `b`'s on other threads, when the reader's range goes
    /// on there: a sequential degraded read then keeps both cores decoding.
    fn decode_ahead(self: &Arc<Self>, b: &BlockRef) {
        if !b.more {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let seg = &self.file.segments[b.seg];
        let rows = self.file.geometry.rows(seg.data_len);
        let window = b.row - b.row % DEGRADED_ROWS;
        for ahead in 1..=DECODE_AHEAD_WINDOWS {
            let w = window + ahead * DEGRADED_ROWS;
            if w >= rows {
                break;
            }
            if lock(&self.windows).contains_key(&(seg.index, w))
                || lock(&self.cache).get(&(seg.index, w, b.part)).is_some()
            {
                continue;
            }
            let me = self.clone();
            let si = b.seg;
            rt.spawn_blocking(move || {
                if let Err(e) = me.decode_window(si, w, None) {
                    tracing::debug!("decode ahead: {e}");
                }
            });
        }
    }

    /// Decodes window `window` (its first row) of segment `si` once, however many threads ask
    /// for it; returns the block `want` (row, data part) of the window if asked.
    fn decode_window(
        &self,
        si: usize,
        window: u64,
        want: Option<(u64, u16)>,
    ) -> Result<Option<Bytes>, ReadError> {
        let seg_index = self.file.segments[si].index;
        let gate = lock(&self.windows)
            .entry((seg_index, window))
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone();
        let _decoding = lock(&gate);
        let (row, part) = want.unwrap_or((window, 0));
        let cached = lock(&self.cache).get(&(seg_index, row, part));
        let res = match cached {
            Some(hit) => Ok(Some(hit)),
            None => {
                let mut decoder = lock(&self.decoders).pop().unwrap_or_default();
                let r = self.decode_rows(si, window, want, &mut decoder);
                lock(&self.decoders).push(decoder);
                r
            }
        };
        lock(&self.windows).remove(&(seg_index, window));
        res
    }

    /// Decodes a window of rows around a damaged block from any k readable parts.
    fn decode_rows(
        &self,
        si: usize,
        row: u64,
        want_block: Option<(u64, u16)>,
        decoder: &mut codec::Decoder,
    ) -> Result<Option<Bytes>, ReadError> {
        let seg = &self.file.segments[si];
        let g = self.file.geometry;
        let k = usize::from(g.k);
        let m = usize::from(g.m);
        let bs = g.block_size as usize;
        let rows_in_seg = g.rows(seg.data_len);
        let n = DEGRADED_ROWS.min(rows_in_seg - row);
        let mut shards: Vec<Option<Bytes>> = vec![None; k + m];
        let mut have = 0;
        let mut why = Vec::new();
        let mut next = 0usize;
        // Read k parts at once (they may be on several machines), then more for any that
        // failed, until k are in hand or none are left.
        while have < k && next < k + m {
            let batch: Vec<usize> = (next..k + m).take(k - have).collect();
            next += batch.len();
            let results: Vec<(usize, Result<Bytes, PartFailure>)> = if batch.len() == 1 {
                batch
                    .iter()
                    .map(|&p| (p, self.read_part(seg.index, p as u16, row, n)))
                    .collect()
            } else {
                std::thread::scope(|sc| {
                    let hs: Vec<_> = batch
                        .iter()
                        .map(|&p| {
                            (
                                p,
                                sc.spawn(move || self.read_part(seg.index, p as u16, row, n)),
                            )
                        })
                        .collect();
                    hs.into_iter()
                        .map(|(p, h)| (p, h.join().unwrap_or_else(|_| Err("read panicked".into()))))
                        .collect()
                })
            };
            for (p, r) in results {
                match r {
                    Ok(v) => {
                        shards[p] = Some(v);
                        have += 1;
                    }
                    Err(e) => {
                        why.push(format!("part {p}: {e}"));
                        self.mark_bad(seg.index, p as u16, e);
                    }
                }
            }
        }
        if have < k {
            return Err(self.unreadable(seg.index, row, have, k, &why));
        }
        let refs: Vec<Option<&[u8]>> = shards.iter().map(|s| s.as_deref()).collect();
        let restored = decoder
            .restore(k, m, &refs)
            .map_err(|e| ReadError::Internal(e.to_string()))?;
        self.store
            .counters
            .degraded_rows
            .fetch_add(n, Ordering::Relaxed);
        drop(refs);
        // Keep the healthy data blocks read for the decode too: the reader asks for them next.
        let healthy = shards
            .into_iter()
            .enumerate()
            .take(k)
            .filter_map(|(j, s)| s.map(|s| (j, s)));
        let mut cache = lock(&self.cache);
        let mut want = None;
        let restored = restored.into_iter().map(|(j, d)| (j, Bytes::from(d)));
        for (j, whole) in restored.chain(healthy) {
            for r in 0..n {
                let blk = whole.slice(r as usize * bs..(r as usize + 1) * bs);
                if Some((row + r, j as u16)) == want_block {
                    want = Some(blk.clone());
                }
                cache.put((seg.index, row + r, j as u16), blk);
            }
        }
        Ok(want)
    }
}
