//! Repairing one segment: which parts to write, from which, to where; then the bytes.
//!
//! A part is rewritten when it is lost (missing, damaged, or on a disk that is `out`,
//! `removed`, `drained` or unknown) or moved (on a `draining` disk). A part on a `down` disk is
//! left alone: the disk may come back. The job reads `k` readable parts window by window (every
//! block checked against its checksum by the reader; a part that fails is replaced by another),
//! rebuilds the data rows, re-encodes the parity it needs, checks the whole segment's BLAKE3
//! before anything counts, writes the new parts to disks chosen by the ingest's placement rules
//! (spread away from the surviving parts), and makes them durable. Committing them is the
//! worker's step: see `repair_worker.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::throttle::Throttle;
use super::RepairInProgress;
use crate::ingest::PartTarget;
use crate::store::{Store, StoreError};
use wormfs_meta::command::{DiskStatus, RepairedPart, SegmentRef};
use wormfs_meta::FileRecord;
use wormfs_parts::codec;
use wormfs_parts::crash_point::crash_point;
use wormfs_parts::fsutil::now_ms;
use wormfs_parts::ids::{DiskId, NodeId};
use wormfs_parts::layout::Geometry;
use wormfs_parts::part_format::{front_region_len, PartHeader};
use wormfs_parts::part_io::{PartReader, PartWriter};
use wormfs_parts::placement::{place_beside, Candidate};

/// Bytes of segment data handled per step (rounded to whole rows).
const WINDOW_BYTES: u64 = 8 << 20;

/// Why a repair attempt failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// The segment's file is gone (deleted meanwhile): nothing to do.
    #[error("the segment no longer exists")]
    Gone,
    /// Fewer than `k` parts could be read.
    #[error("only {have} of the {need} parts needed could be read: {detail}")]
    NotEnoughParts {
        /// Readable parts.
        have: usize,
        /// Needed.
        need: usize,
        /// What failed.
        detail: String,
    },
    /// No disk could take a part.
    #[error("no disk can take part(s) {parts:?}: {detail}")]
    NoDisk {
        /// The parts left unwritten.
        parts: Vec<u16>,
        /// Why.
        detail: String,
    },
    /// The rebuilt segment does not match its BLAKE3: nothing was committed.
    #[error(
        "the rebuilt segment's BLAKE3 is {got}, the metadata says {want}; nothing written counts"
    )]
    Mismatch {
        /// What was computed.
        got: String,
        /// What the metadata holds.
        want: String,
    },
    /// Writing or finishing new parts failed.
    #[error("writing the new parts failed: {0}")]
    Write(String),
    /// Stopped (shutdown or pause).
    #[error("stopped")]
    Stopped,
    /// The metadata or the cluster failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<wormfs_meta::MetaError> for RepairError {
    fn from(e: wormfs_meta::MetaError) -> Self {
        Self::Store(e.into())
    }
}

/// What a finished job wrote.
#[derive(Debug, Default)]
pub struct JobResult {
    /// Parts now durable at their new place.
    pub written: Vec<RepairedPart>,
    /// Parts that needed rewriting but found no disk (committed later, by another attempt).
    pub unplaced: Vec<u16>,
    /// Why they found none.
    pub unplaced_why: String,
    /// Moves (rebalancing) that no disk could take: their requests are dropped.
    pub cancelled_moves: Vec<u16>,
}

/// What a segment's parts need, from the metadata and the disks' states.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Readable parts, best sources first: `(part, disk)`.
    pub sources: Vec<(u16, DiskId)>,
    /// Parts to write: `(part, where the metadata has it now)`.
    pub rewrite: Vec<(u16, Option<DiskId>)>,
    /// Disks that keep a part of this segment (no new part goes there).
    pub kept: Vec<DiskId>,
    /// Parts damaged on a disk that is up: the only ones that may be rewritten in place.
    pub damaged_in_place: Vec<(u16, DiskId)>,
    /// Parts asked to move off a disk that is up (a rebalance): dropped, not failed, when no
    /// emptier disk can take them.
    pub moves: Vec<u16>,
}

/// Decides what to do for a segment (pure: the metadata's view, the disks' states and the
/// parts asked to move off their disks).
pub(crate) fn plan(
    file: &FileRecord,
    seg: u32,
    statuses: &HashMap<DiskId, DiskStatus>,
    moves: &[(u16, DiskId)],
    is_local: impl Fn(DiskId) -> bool,
) -> Option<Plan> {
    let s = file.segments.iter().find(|s| s.index == seg)?;
    let width = file.geometry.width();
    let mut p = Plan::default();
    for i in 0..width as u16 {
        let rec = s.parts.iter().find(|r| r.index == i);
        let Some((disk, missing)) = rec.and_then(|r| r.disk_id.map(|d| (d, r.missing))) else {
            p.rewrite.push((i, None));
            continue;
        };
        let moving = moves.contains(&(i, disk));
        match statuses.get(&disk).copied() {
            Some(DiskStatus::Up) if !missing && moving => {
                p.sources.push((i, disk));
                p.rewrite.push((i, Some(disk)));
                p.moves.push(i);
            }
            Some(DiskStatus::Up) if missing => {
                p.rewrite.push((i, Some(disk)));
                p.damaged_in_place.push((i, disk));
            }
            Some(DiskStatus::Up) if !missing => {
                p.sources.push((i, disk));
                p.kept.push(disk);
            }
            Some(DiskStatus::Draining) => {
                if !missing {
                    p.sources.push((i, disk));
                }
                p.rewrite.push((i, Some(disk)));
            }
            Some(DiskStatus::Down) => p.kept.push(disk),
            // Damaged on a disk that is up, or lost with its disk.
            _ => p.rewrite.push((i, Some(disk))),
        }
    }
    // Local parts first (no network), then data parts (no decoding), then the parts being
    // moved last (a draining disk is busy emptying).
    let k = file.geometry.k;
    let draining: Vec<u16> = p
        .rewrite
        .iter()
        .filter(|(i, d)| {
            d.is_some_and(|d| {
                statuses.get(&d) == Some(&DiskStatus::Draining) || moves.contains(&(*i, d))
            })
        })
        .map(|(i, _)| *i)
        .collect();
    p.sources
        .sort_by_key(|(i, d)| (draining.contains(i), !is_local(*d), *i >= k, *i));
    Some(p)
}

/// The moves of `plan` that spread the segment over more machines: a part asked to move off a
/// machine that keeps another part of the segment while a machine with disks (`machines`)
/// holds none of it (a file written while a machine was down, queued by the ingest). Such a
/// move goes only to a machine holding no part of the segment, and waits (retried with the
/// repair's backoff) while there is none, instead of being dropped as a rebalancing move is.
pub(crate) fn spread_moves(
    plan: &Plan,
    existing: &[(NodeId, u64)],
    machines: &[NodeId],
    node_of: impl Fn(DiskId) -> Option<(NodeId, u64)>,
) -> Vec<u16> {
    let holding: std::collections::HashSet<NodeId> = existing.iter().map(|(n, _)| *n).collect();
    let mut free_machines = machines.iter().filter(|m| !holding.contains(m)).count();
    let mut out = Vec::new();
    for &i in &plan.moves {
        let from = plan
            .rewrite
            .iter()
            .find(|(p, _)| *p == i)
            .and_then(|(_, d)| *d);
        let shared = from
            .and_then(&node_of)
            .is_some_and(|(n, _)| holding.contains(&n));
        if shared && free_machines > 0 {
            free_machines -= 1;
            out.push(i);
        }
    }
    out
}

/// A part being written: its index, its new disk, where the metadata had it, its writer.
type NewPart = (u16, DiskId, Option<DiskId>, Box<dyn PartWriter>);

/// The bytes side of a job, run on a blocking thread.
struct Pipe {
    geo: Geometry,
    data_len: u64,
    readers: Vec<(u16, Arc<dyn PartReader>)>,
    /// Readers in use: indices into `readers`.
    using: Vec<usize>,
    next_reader: usize,
    failures: Vec<String>,
    writers: Vec<NewPart>,
    hasher: blake3::Hasher,
    hashed: u64,
    decoder: codec::Decoder,
    encoder: codec::Encoder,
}

impl Pipe {
    /// Units (rows, or blocks for copies) of the segment.
    fn units(&self) -> u64 {
        if self.geo.is_replica() {
            self.data_len.div_ceil(u64::from(self.geo.block_size))
        } else {
            self.geo.rows(self.data_len)
        }
    }

    fn need(&self) -> usize {
        usize::from(self.geo.k)
    }

    /// Reads `count` units from `first` off `need()` readable parts, replacing any that fail.
    fn read_window(&mut self, first: u64, count: u64) -> Result<Vec<(u16, Bytes)>, RepairError> {
        loop {
            while self.using.len() < self.need() && self.next_reader < self.readers.len() {
                self.using.push(self.next_reader);
                self.next_reader += 1;
            }
            if self.using.len() < self.need() {
                return Err(RepairError::NotEnoughParts {
                    have: self.using.len(),
                    need: self.need(),
                    detail: self.failures.join("; "),
                });
            }
            let got: Vec<(usize, Result<Bytes, String>)> = std::thread::scope(|s| {
                let hs: Vec<_> = self
                    .using
                    .iter()
                    .map(|&r| {
                        let reader = self.readers[r].1.clone();
                        (r, s.spawn(move || reader.read_blocks(first, count)))
                    })
                    .collect();
                hs.into_iter()
                    .map(|(r, h)| {
                        let res = h
                            .join()
                            .unwrap_or_else(|_| {
                                Err(wormfs_parts::part_io::PartReadError::Unavailable(
                                    "reader panicked".into(),
                                ))
                            })
                            .map_err(|e| e.to_string());
                        (r, res)
                    })
                    .collect()
            });
            let mut ok = Vec::new();
            let mut failed = false;
            for (r, res) in got {
                match res {
                    Ok(b) => ok.push((self.readers[r].0, b)),
                    Err(e) => {
                        tracing::warn!(
                            part = self.readers[r].0,
                            "repair: a source part failed: {e}"
                        );
                        self.failures
                            .push(format!("part {}: {e}", self.readers[r].0));
                        self.using.retain(|&u| u != r);
                        failed = true;
                    }
                }
            }
            if !failed {
                return Ok(ok);
            }
        }
    }

    fn hash(&mut self, data: &[u8]) {
        let take = (self.data_len - self.hashed).min(data.len() as u64) as usize;
        self.hasher.update(&data[..take]);
        self.hashed += take as u64;
    }

    /// Handles one window: read, rebuild, write. Returns the bytes read and written.
    fn window(&mut self, first: u64, count: u64) -> Result<u64, RepairError> {
        let shards = self.read_window(first, count)?;
        let read: u64 = shards.iter().map(|(_, b)| b.len() as u64).sum();
        let mut written = 0u64;
        if self.geo.is_replica() {
            let bytes = shards[0].1.clone();
            self.hash(&bytes);
            for (_, _, _, w) in self.writers.iter_mut() {
                w.write(&bytes)
                    .map_err(|e| RepairError::Write(format!("{e:#}")))?;
                written += bytes.len() as u64;
            }
            return Ok(read + written);
        }
        let k = usize::from(self.geo.k);
        let m = usize::from(self.geo.m);
        let bs = self.geo.block_size as usize;
        let rows = shards.iter().map(|(_, b)| b.len() / bs).min().unwrap_or(0);
        let want_parity = self.writers.iter().any(|(i, ..)| usize::from(*i) >= k);
        for r in 0..rows {
            let mut row: Vec<Option<&[u8]>> = vec![None; k + m];
            for (i, b) in &shards {
                row[usize::from(*i)] = Some(&b[r * bs..(r + 1) * bs]);
            }
            let restored =
                self.decoder
                    .restore(k, m, &row)
                    .map_err(|e| RepairError::NotEnoughParts {
                        have: shards.len(),
                        need: k,
                        detail: e.to_string(),
                    })?;
            let mut data: Vec<&[u8]> = Vec::with_capacity(k);
            for (j, have) in row.iter().enumerate().take(k) {
                match *have {
                    Some(b) => data.push(b),
                    None => match restored.iter().find(|(i, _)| *i == j) {
                        Some((_, v)) => data.push(v),
                        None => {
                            return Err(RepairError::NotEnoughParts {
                                have: shards.len(),
                                need: k,
                                detail: format!("data part {j} not restored"),
                            })
                        }
                    },
                }
            }
            for d in &data {
                self.hash(d);
            }
            let mut failed: Option<String> = None;
            for (i, _, _, w) in self.writers.iter_mut() {
                let i = usize::from(*i);
                if i < k {
                    if let Err(e) = w.write(data[i]) {
                        failed = Some(format!("{e:#}"));
                    }
                    written += bs as u64;
                }
            }
            if want_parity {
                let writers = &mut self.writers;
                self.encoder
                    .encode_with(&data, m, |p, bytes| {
                        for (i, _, _, w) in writers.iter_mut() {
                            if usize::from(*i) == k + p {
                                if let Err(e) = w.write(bytes) {
                                    failed = Some(format!("{e:#}"));
                                }
                                written += bytes.len() as u64;
                            }
                        }
                    })
                    .map_err(|e| RepairError::Write(e.to_string()))?;
            }
            if let Some(e) = failed {
                return Err(RepairError::Write(e));
            }
        }
        Ok(read + written)
    }

    fn abort(self) {
        for (.., w) in self.writers {
            w.abort();
        }
    }
}

/// Rebuilds (or moves) what segment `segment` needs. `Ok` with nothing written when there is
/// nothing to do. The new parts are durable but not yet committed.
pub async fn repair_segment(
    store: &Arc<Store>,
    segment: SegmentRef,
    throttle: &mut Throttle,
    stop: &CancellationToken,
) -> Result<JobResult, RepairError> {
    let file = store
        .meta
        .file(segment.file_id)
        .await?
        .ok_or(RepairError::Gone)?;
    let seg = file
        .segments
        .iter()
        .find(|s| s.index == segment.seg)
        .cloned()
        .ok_or(RepairError::Gone)?;
    let statuses = store.disk_statuses().await?;
    let moves = store.meta.pending_moves(segment).await?;
    let Some(plan) = plan(&file, segment.seg, &statuses, &moves, |d| {
        store.disk(d).is_some()
    }) else {
        return Err(RepairError::Gone);
    };
    if plan.rewrite.is_empty() {
        return Ok(JobResult::default());
    }
    let geo = file.geometry;
    let k = usize::from(geo.k);
    if plan.sources.len() < k {
        return Err(RepairError::NotEnoughParts {
            have: plan.sources.len(),
            need: k,
            detail: "the other parts are lost or on disks that are down".into(),
        });
    }
    let path = store
        .meta
        .path_of_file(segment.file_id)
        .await?
        .unwrap_or_default();
    let part_data_len = geo.part_data_len(seg.data_len);
    // The new parts' length is known: a front region for exactly their blocks and this path.
    let header_len = front_region_len(
        part_data_len.div_ceil(u64::from(geo.block_size)),
        &path,
        part_data_len,
    );
    let part_bytes = part_data_len + u64::from(header_len);

    // Where the new parts go: disks that are up, hold no other part of this segment, and have
    // room; spread away from the parts that stay.
    let dir = store.data.directory();
    let mut cands: Vec<Candidate> = store.candidates(part_bytes);
    cands.extend(store.remote_candidates(part_bytes).await);
    let rewritten_from: Vec<DiskId> = plan.rewrite.iter().filter_map(|(_, d)| *d).collect();
    let fraction = super::rebalance::free_fraction(&cands);
    cands.retain(|c| {
        statuses.get(&c.disk) == Some(&DiskStatus::Up)
            && !plan.kept.contains(&c.disk)
            && !rewritten_from.contains(&c.disk)
    });
    let existing: Vec<(NodeId, u64)> = plan.kept.iter().filter_map(|d| dir.disk(*d)).collect();
    let spread = spread_moves(&plan, &existing, &dir.machines(), |d| dir.disk(d));
    if plan.moves.iter().any(|m| !spread.contains(m)) {
        // A rebalancing move only goes to a disk emptier than the cluster as a whole.
        cands.retain(|c| {
            c.total_bytes == 0 || c.free_bytes as f64 / c.total_bytes as f64 >= fraction
        });
    }
    if !spread.is_empty() {
        // The machines a spread move waits for are asked afresh: one just back may still be
        // remembered as silent for a moment.
        let holding: std::collections::HashSet<NodeId> = existing.iter().map(|(n, _)| *n).collect();
        for m in dir.machines() {
            if m == store.node_id || holding.contains(&m) || cands.iter().any(|c| c.node == m) {
                continue;
            }
            if let Ok(offers) = store.data.disk_offers_now(m).await {
                cands.extend(
                    offers
                        .into_iter()
                        .filter(|o| {
                            o.writable
                                && o.free_bytes >= part_bytes
                                && statuses.get(&o.disk_id) == Some(&DiskStatus::Up)
                                && !plan.kept.contains(&o.disk_id)
                        })
                        .map(|o| Candidate {
                            disk: o.disk_id,
                            node: m,
                            domain: o.fs_dev,
                            free_bytes: o.free_bytes,
                            total_bytes: o.total_bytes,
                        }),
                );
            }
        }
    }
    let nodes: HashMap<DiskId, NodeId> = cands.iter().map(|c| (c.disk, c.node)).collect();
    let mut pool: Vec<DiskId> =
        place_beside(&cands, cands.len(), &existing, &mut rand::rng()).unwrap_or_default();
    // A part damaged on a disk that is still up may be rewritten in place, last.
    for (_, d) in &plan.damaged_in_place {
        if store.disk(*d).is_some() {
            pool.push(*d);
        }
    }
    let mut writers = Vec::new();
    let mut unplaced = Vec::new();
    let mut cancelled_moves = Vec::new();
    let mut why = Vec::new();
    // Machines holding a part of this segment, the new ones included as they are chosen.
    let mut used: std::collections::HashSet<NodeId> = existing.iter().map(|(n, _)| *n).collect();
    // Spread moves first: they take the machines that hold nothing of this segment.
    let mut rewrite = plan.rewrite.clone();
    rewrite.sort_by_key(|(p, _)| !spread.contains(p));
    for &(part, from) in &rewrite {
        let to_spread = spread.contains(&part);
        let mut opened = None;
        let mut i = 0;
        while i < pool.len() {
            let disk_id = pool[i];
            let node = nodes.get(&disk_id).copied().unwrap_or(store.node_id);
            if to_spread && used.contains(&node) {
                i += 1;
                continue;
            }
            pool.remove(i);
            let t = PartTarget {
                disk_id,
                node,
                file_id: segment.file_id,
                segment: segment.seg,
                part,
            };
            match store
                .open_part_writer(t, header_len, geo.block_size, part_bytes)
                .await
            {
                Ok(w) => {
                    used.insert(node);
                    opened = Some((disk_id, w));
                    break;
                }
                Err(e) => why.push(format!("disk {disk_id}: {e:#}")),
            }
        }
        match opened {
            Some((d, w)) => writers.push((part, d, from, w)),
            None if to_spread => {
                why.push(format!(
                    "part {part} waits for a machine holding no part of this segment (it was written while one was down)"
                ));
                unplaced.push(part)
            }
            None if plan.moves.contains(&part) => cancelled_moves.push(part),
            None => unplaced.push(part),
        }
    }
    if writers.is_empty() && unplaced.is_empty() {
        // Only moves, and no emptier disk free of this segment's parts: nothing to do.
        return Ok(JobResult {
            cancelled_moves,
            ..JobResult::default()
        });
    }
    if writers.is_empty() {
        return Err(RepairError::NoDisk {
            parts: unplaced,
            detail: if why.is_empty() {
                format!(
                    "no disk that is up holds no part of this segment and has {part_bytes} bytes free"
                )
            } else {
                why.join("; ")
            },
        });
    }
    let mut readers = Vec::new();
    for &(part, disk) in &plan.sources {
        let s = store.clone();
        let opened = tokio::task::spawn_blocking(move || {
            s.open_part(disk, segment.file_id, segment.seg, part)
        })
        .await
        .map_err(|e| RepairError::Write(e.to_string()))?;
        match opened {
            Ok(r) => readers.push((part, r)),
            Err(e) => tracing::warn!(part, disk = %disk, "repair: cannot open a source part: {e}"),
        }
    }
    let bytes_total = part_data_len * (k + writers.len()) as u64;
    store.healing.start_repair(RepairInProgress {
        segment,
        path: path.clone(),
        parts: writers.iter().map(|(p, ..)| *p).collect(),
        bytes_total,
        bytes_done: 0,
        started_ms: now_ms(),
    });
    let mut pipe = Box::new(Pipe {
        geo,
        data_len: seg.data_len,
        readers,
        using: Vec::new(),
        next_reader: 0,
        failures: Vec::new(),
        writers,
        hasher: blake3::Hasher::new(),
        hashed: 0,
        decoder: codec::Decoder::default(),
        encoder: codec::Encoder::default(),
    });
    let unit_bytes = if geo.is_replica() {
        u64::from(geo.block_size)
    } else {
        geo.row_bytes()
    };
    let per_window = (WINDOW_BYTES / unit_bytes).max(1);
    let units = pipe.units();
    let mut first = 0;
    let run = async {
        while first < units {
            let count = per_window.min(units - first);
            let started = Instant::now();
            let (p, r) = tokio::task::spawn_blocking(move || {
                let r = pipe.window(first, count);
                (pipe, r)
            })
            .await
            .map_err(|e| (None, RepairError::Write(e.to_string())))?;
            pipe = p;
            let moved = match r {
                Ok(n) => n,
                Err(e) => return Err((Some(pipe), e)),
            };
            store.healing.repair_progress(segment, moved);
            first += count;
            if !throttle
                .after_step(moved, started.elapsed(), &store.healing, stop)
                .await
            {
                return Err((Some(pipe), RepairError::Stopped));
            }
        }
        Ok(pipe)
    };
    let pipe = match run.await {
        Ok(p) => p,
        Err((p, e)) => {
            if let Some(p) = p {
                p.abort();
            }
            return Err(e);
        }
    };
    let got = pipe.hasher.finalize().to_hex().to_string();
    if got != seg.blake3 || pipe.hashed != seg.data_len {
        pipe.abort();
        return Err(RepairError::Mismatch {
            got,
            want: seg.blake3,
        });
    }
    crash_point("repair_before_finish");
    let segment_blake3 = *pipe.hasher.finalize().as_bytes();
    let created = now_ms();
    let cluster = store.cluster_id;
    let writers = pipe.writers;
    let finished = tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            let hs: Vec<_> = writers
                .into_iter()
                .map(|(part, to, from, w)| {
                    let header = PartHeader {
                        codec: geo.codec,
                        header_len,
                        cluster_id: cluster,
                        file_id: segment.file_id,
                        segment_index: segment.seg,
                        part_index: part,
                        k: geo.k,
                        m: geo.m,
                        block_size: geo.block_size,
                        segment_data_len: seg.data_len,
                        part_data_len,
                        created_ms: created,
                        segment_blake3,
                        path: path.clone(),
                    };
                    (part, to, from, s.spawn(move || w.finish(header)))
                })
                .collect();
            hs.into_iter()
                .map(|(part, to, from, h)| {
                    let r = h
                        .join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("part writer panicked")));
                    (part, to, from, r)
                })
                .collect::<Vec<_>>()
        })
    })
    .await
    .map_err(|e| RepairError::Write(e.to_string()))?;
    let mut result = JobResult {
        unplaced,
        unplaced_why: why.join("; "),
        cancelled_moves,
        ..JobResult::default()
    };
    let mut errors = Vec::new();
    for (part, to, from, r) in finished {
        match r {
            Ok(()) => result.written.push(RepairedPart { part, from, to }),
            Err(e) => {
                errors.push(format!("part {part} on disk {to}: {e:#}"));
                result.unplaced.push(part);
            }
        }
    }
    if result.written.is_empty() {
        return Err(RepairError::Write(errors.join("; ")));
    }
    if !errors.is_empty() {
        result.unplaced_why = errors.join("; ");
    }
    crash_point("repair_after_finish");
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wormfs_meta::{PartRecord, SegmentRecord};
    use wormfs_parts::codec::CodecId;
    use wormfs_parts::ids::FileId;

    fn d(n: u128) -> DiskId {
        DiskId(uuid::Uuid::from_u128(n))
    }

    fn file(parts: Vec<(Option<u128>, bool)>, k: u16, m: u16) -> FileRecord {
        FileRecord {
            file_id: FileId(1),
            size: 10,
            policy: format!("ec:{k}+{m}"),
            geometry: Geometry {
                codec: CodecId::RsSimdGf16,
                k,
                m,
                block_size: 64,
                part_capacity: 1 << 20,
            },
            content_blake3: None,
            etag: String::new(),
            created_ms: 0,
            mtime_ms: 0,
            source: wormfs_meta::command::SourceIdentity::Upload { client: "t".into() },
            segments: vec![SegmentRecord {
                index: 0,
                offset: 0,
                data_len: 10,
                blake3: String::new(),
                parts: parts
                    .into_iter()
                    .enumerate()
                    .map(|(i, (disk, missing))| PartRecord {
                        index: i as u16,
                        disk_id: disk.map(d),
                        missing,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn the_plan_rewrites_lost_damaged_and_draining_parts_and_waits_for_down_ones() {
        let f = file(
            vec![
                (Some(1), false), // up
                (Some(2), false), // out: lost
                (Some(3), true),  // damaged on an up disk
                (Some(4), false), // draining: moved, still a source
                (Some(5), false), // down: waited for
                (None, true),     // never written
            ],
            4,
            2,
        );
        let statuses: HashMap<DiskId, DiskStatus> = [
            (d(1), DiskStatus::Up),
            (d(2), DiskStatus::Out),
            (d(3), DiskStatus::Up),
            (d(4), DiskStatus::Draining),
            (d(5), DiskStatus::Down),
        ]
        .into_iter()
        .collect();
        let p = plan(&f, 0, &statuses, &[], |disk| disk == d(4)).unwrap();
        assert_eq!(
            p.rewrite,
            vec![(1, Some(d(2))), (2, Some(d(3))), (3, Some(d(4))), (5, None)]
        );
        // The draining part is the last choice of source even though it is local.
        assert_eq!(p.sources, vec![(0, d(1)), (3, d(4))]);
        assert_eq!(p.kept, vec![d(1), d(5)]);
        assert_eq!(p.damaged_in_place, vec![(2, d(3))]);
        assert!(plan(&f, 1, &statuses, &[], |_| false).is_none());
        // A part asked to move off an up disk is rewritten and read from where it is.
        let p = plan(&f, 0, &statuses, &[(0, d(1))], |_| false).unwrap();
        assert_eq!(p.rewrite[0], (0, Some(d(1))));
        assert!(p.sources.contains(&(0, d(1))));
        assert!(!p.kept.contains(&d(1)));
    }

    #[test]
    fn a_move_off_a_machine_holding_two_parts_waits_for_a_machine_holding_none() {
        // ec:2+1 written while machine 3 was down: parts 0 and 1 on machine 1, part 2 on 2.
        let f = file(
            vec![(Some(1), false), (Some(2), false), (Some(3), false)],
            2,
            1,
        );
        let statuses: HashMap<DiskId, DiskStatus> =
            (1..=3).map(|i| (d(i), DiskStatus::Up)).collect();
        let node_of = |disk: DiskId| match disk.0.as_u128() {
            1 | 2 => Some((1, 10)),
            3 => Some((2, 20)),
            _ => Some((3, 30)),
        };
        let p = plan(&f, 0, &statuses, &[(1, d(2))], |_| false).unwrap();
        let existing: Vec<_> = p.kept.iter().filter_map(|x| node_of(*x)).collect();
        assert_eq!(spread_moves(&p, &existing, &[1, 2, 3], node_of), vec![1]);
        // With only the two machines registered it is an ordinary (rebalancing) move.
        assert!(spread_moves(&p, &existing, &[1, 2], node_of).is_empty());
        // A move off the machine that holds only that part spreads nothing.
        let p = plan(&f, 0, &statuses, &[(2, d(3))], |_| false).unwrap();
        let existing: Vec<_> = p.kept.iter().filter_map(|x| node_of(*x)).collect();
        assert!(spread_moves(&p, &existing, &[1, 2, 3], node_of).is_empty());
    }
}
