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

use crate::codec;
use crate::ids::FileId;
use crate::meta::FileRecord;
use crate::part_io::{OpenPart, PartReadError};
use crate::store::Store;

/// Blocks fetched ahead of the reader.
const READ_AHEAD_BLOCKS: usize = 8;
/// Rows decoded per call when a part is damaged.
const DEGRADED_ROWS: u64 = 8;

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

#[derive(Clone)]
enum PartSlot {
    Open(Arc<OpenPart>),
    Bad(String),
}

#[derive(Clone, Copy, Debug)]
struct BlockRef {
    seg: usize,
    row: u64,
    part: u16,
    /// Offset within the block of the first byte wanted.
    from: usize,
    /// Bytes wanted from the block.
    len: usize,
}

/// Reads one file; cheap to create, holds open parts and a small block cache.
pub struct FileReader {
    store: Arc<Store>,
    file: FileRecord,
    parts: Mutex<HashMap<(u32, u16), PartSlot>>,
    cache: Mutex<BlockCache>,
    /// Held while decoding (one decode at a time per reader), with its reusable decoder.
    decoding: Mutex<codec::Decoder>,
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

impl FileReader {
    /// A reader for `file`.
    pub fn new(store: Arc<Store>, file: FileRecord) -> Arc<Self> {
        let cap = usize::from(file.geometry.k) * DEGRADED_ROWS as usize + 2 * READ_AHEAD_BLOCKS;
        Arc::new(Self {
            store,
            file,
            parts: Mutex::new(HashMap::new()),
            decoding: Mutex::new(codec::Decoder::default()),
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
                out.push(BlockRef {
                    seg: si,
                    row: if g.is_replica() { local / bs } else { addr.row },
                    part: if g.is_replica() { 0 } else { addr.part },
                    from: (local - bstart) as usize,
                    len: (take_end - local) as usize,
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
                    let r = tokio::task::spawn_blocking(move || me.read_block(b))
                        .await
                        .map_err(|e| ReadError::Internal(e.to_string()))?;
                    r.map(|blk| blk.slice(b.from..b.from + b.len))
                }
            })
            .buffered(READ_AHEAD_BLOCKS);
        head.chain(body)
    }

    /// Reads `start..end` into memory (small ranges).
    pub async fn read_range(self: Arc<Self>, start: u64, end: u64) -> Result<Vec<u8>, ReadError> {
        let mut out = Vec::with_capacity((end.saturating_sub(start)) as usize);
        let mut s = Box::pin(self.stream(start, end));
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b?);
        }
        Ok(out)
    }

    fn open_part(&self, seg: u32, part: u16) -> Result<Arc<OpenPart>, String> {
        if let Some(slot) = lock(&self.parts).get(&(seg, part)) {
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
            None => Err("recorded as missing".to_owned()),
            Some(d) => match self.store.disk(d) {
                None => Err(format!("disk {d} not attached")),
                Some(disk) if !disk.readable() => {
                    Err(format!("disk {} missing", disk.root.display()))
                }
                Some(disk) => {
                    let path = disk.part_path(self.file.file_id, seg, part);
                    match OpenPart::open(disk.clone(), &path) {
                        Ok(p)
                            if p.header.file_id == self.file.file_id
                                && p.header.segment_index == seg
                                && p.header.part_index == part =>
                        {
                            Ok(Arc::new(p))
                        }
                        Ok(_) => Err(PartReadError::WrongPart.to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        };
        let slot = match &res {
            Ok(p) => PartSlot::Open(p.clone()),
            Err(why) => {
                self.damaged(seg, part, why);
                PartSlot::Bad(why.clone())
            }
        };
        lock(&self.parts).insert((seg, part), slot);
        res
    }

    fn damaged(&self, seg: u32, part: u16, why: &str) {
        self.store
            .counters
            .damaged_part_reads
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(file = %self.file.file_id, segment = seg, part, "damaged part, reading around it: {why}");
    }

    fn mark_bad(&self, seg: u32, part: u16, why: String) {
        self.damaged(seg, part, &why);
        lock(&self.parts).insert((seg, part), PartSlot::Bad(why));
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

    fn read_block(&self, b: BlockRef) -> Result<Bytes, ReadError> {
        let seg = &self.file.segments[b.seg];
        let key = (seg.index, b.row, b.part);
        if let Some(hit) = lock(&self.cache).get(&key) {
            return Ok(hit);
        }
        let g = self.file.geometry;
        if g.is_replica() {
            let mut why = Vec::new();
            for copy in 0..g.width() as u16 {
                match self
                    .open_part(seg.index, copy)
                    .and_then(|p| p.read_blocks(b.row, 1).map_err(|e| e.to_string()))
                {
                    Ok(v) => return Ok(Bytes::from(v)),
                    Err(e) => {
                        why.push(format!("copy {copy}: {e}"));
                        self.mark_bad(seg.index, copy, e);
                    }
                }
            }
            return Err(self.unreadable(seg.index, b.row, 0, 1, &why));
        }
        match self
            .open_part(seg.index, b.part)
            .and_then(|p| p.read_blocks(b.row, 1).map_err(|e| e.to_string()))
        {
            Ok(v) => return Ok(Bytes::from(v)),
            Err(e) => self.mark_bad(seg.index, b.part, e),
        }
        // One decode at a time per reader: concurrent read-ahead of blocks in the same window
        // would otherwise decode it several times over (and hold that much memory).
        let mut decoder = lock(&self.decoding);
        if let Some(hit) = lock(&self.cache).get(&key) {
            return Ok(hit);
        }
        self.decode_rows(b, &mut decoder)
    }

    /// Decodes a window of rows around a damaged block from any k readable parts.
    fn decode_rows(&self, b: BlockRef, decoder: &mut codec::Decoder) -> Result<Bytes, ReadError> {
        let seg = &self.file.segments[b.seg];
        let g = self.file.geometry;
        let k = usize::from(g.k);
        let m = usize::from(g.m);
        let bs = g.block_size as usize;
        let rows_in_seg = g.rows(seg.data_len);
        let n = DEGRADED_ROWS.min(rows_in_seg - b.row);
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; k + m];
        let mut have = 0;
        let mut why = Vec::new();
        #[allow(clippy::needless_range_loop)] // p is also the part index on disk
        for p in 0..(k + m) {
            if have == k {
                break;
            }
            match self
                .open_part(seg.index, p as u16)
                .and_then(|op| op.read_blocks(b.row, n).map_err(|e| e.to_string()))
            {
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
        if have < k {
            return Err(self.unreadable(seg.index, b.row, have, k, &why));
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
        for (j, d) in restored.into_iter().chain(healthy) {
            let whole = Bytes::from(d);
            for r in 0..n {
                let blk = whole.slice(r as usize * bs..(r as usize + 1) * bs);
                if j == usize::from(b.part) && r == 0 {
                    want = Some(blk.clone());
                }
                cache.put((seg.index, b.row + r, j as u16), blk);
            }
        }
        want.ok_or_else(|| ReadError::Internal("decoded block missing".into()))
    }
}
