//! Scrub: every part on this node's disks is read whole, every block checked against its
//! checksum, on a schedule.
//!
//! A part is due once its last verification (its write, or its last scrub) is older than
//! `scrub.interval_days` (less a random offset of up to a tenth, chosen per machine at start,
//! so machines do not scrub in step), or older than a scrub asked for with `wormfs scrub now`.
//! The oldest-verified parts go first, a batch at a time; each batch's verifications are
//! committed through Raft (that is the checkpoint: a restarted node carries on with what is
//! still oldest). A part that fails is marked damaged and its segment queued for repair.
//!
//! A deep check (asked for, or on every `deep_every`-th interval) also reads the whole
//! segment from all its parts, re-encodes the parity from the data and compares it, and
//! checks the segment's BLAKE3; the node holding the segment's lowest-numbered part does it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Timelike;
use tokio_util::sync::CancellationToken;

use super::throttle::Throttle;
use crate::store::{Store, StoreError};
use wormfs_meta::command::{CommandV1, DiskStatus, PartRef, SegmentRef};
use wormfs_parts::codec;
use wormfs_parts::fsutil::now_ms;
use wormfs_parts::ids::DiskId;
use wormfs_parts::part_io::{PartReadError, PartReader};

/// Parts taken per batch.
const BATCH: u32 = 64;
/// A batch's verifications are committed at least this often.
const CHECKPOINT: Duration = Duration::from_secs(30);
/// Blocks read per request by the deep check.
const BLOCKS_PER_READ: u64 = 32;
/// Bytes read per throttled step of a part's verification.
const STEP_BYTES: u64 = 8 << 20;

/// The local time's minute of the day.
fn minute_of_day() -> u32 {
    let t = chrono::Local::now();
    t.hour() * 60 + t.minute()
}

/// Runs the scrub until `stop`.
pub async fn run(store: Arc<Store>, stop: CancellationToken) {
    let cfg = store.scrub.clone();
    if !cfg.enabled {
        store.healing.scrub_state("disabled", false);
        return;
    }
    let jitter = rand::random_range(0..=cfg.interval_ms / 10);
    let mut throttle = Throttle::new(cfg.max_bytes_per_sec, cfg.tranquility);
    loop {
        let idle = match batch(&store, jitter, &mut throttle, &stop).await {
            Ok(did) => !did,
            Err(e) => {
                tracing::warn!("scrub: {e}");
                true
            }
        };
        if stop.is_cancelled() {
            return;
        }
        if idle {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = store.healing.wake_scrub.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    }
}

/// Verifies one batch of due parts; `Ok(false)` when nothing was due.
async fn batch(
    store: &Arc<Store>,
    jitter: u64,
    throttle: &mut Throttle,
    stop: &CancellationToken,
) -> Result<bool, StoreError> {
    let cfg = &store.scrub;
    if let Some(w) = cfg.hours {
        if !w.contains(minute_of_day()) {
            let state = format!(
                "waiting for the window {:02}:{:02}-{:02}:{:02}",
                w.start_min / 60,
                w.start_min % 60,
                w.end_min / 60,
                w.end_min % 60
            );
            store.healing.scrub_state(&state, false);
            return Ok(false);
        }
    }
    let now = now_ms();
    let mut before = now.saturating_sub(cfg.interval_ms.saturating_sub(jitter));
    let mut asked_deep_before = 0;
    if let Some((asked, deep)) = store.meta.scrub_request().await? {
        if asked <= now && asked > before {
            before = asked;
        }
        if deep {
            asked_deep_before = asked;
        }
    }
    let auto_deep = cfg.deep_every > 0
        && (now / cfg.interval_ms.max(1)).is_multiple_of(u64::from(cfg.deep_every));
    let statuses = store.disk_statuses().await?;
    let disks: Vec<DiskId> = store
        .disks
        .iter()
        .filter(|d| d.readable() && statuses.get(&d.id).is_some_and(|s| s.available()))
        .map(|d| d.id)
        .collect();
    let due = store.meta.parts_to_verify(&disks, before, BATCH).await?;
    if due.is_empty() {
        store.healing.scrub_state("idle", false);
        return Ok(false);
    }
    let mut verified = Vec::new();
    let mut damaged = Vec::new();
    let mut deep_failed: Vec<SegmentRef> = Vec::new();
    let started_batch = Instant::now();
    for p in due {
        // The window ends within a batch too: the rest waits for the next one.
        if stop.is_cancelled() || cfg.hours.is_some_and(|w| !w.contains(minute_of_day())) {
            break;
        }
        let deep = auto_deep || p.verified_ms < asked_deep_before;
        store.healing.scrub_state("scrubbing", deep);
        let started = Instant::now();
        let part = p.part;
        let r = verify_local(store, part, throttle, stop).await?;
        let bytes = match r {
            Ok(n) => {
                verified.push(part);
                n
            }
            Err(Found::Damaged(why)) => {
                tracing::warn!(part = ?part, "scrub: damaged part: {why}");
                damaged.push(part);
                0
            }
            Err(Found::Unavailable(why)) => {
                tracing::debug!("scrub: skipped a part: {why}");
                0
            }
        };
        let mut deep_bytes = 0;
        if deep && bytes > 0 && leads_deep_check(store, part).await? {
            let seg = SegmentRef {
                file_id: part.file_id,
                seg: part.seg,
            };
            let s = store.clone();
            match tokio::task::spawn_blocking(move || deep_check(&s, seg)).await {
                Ok(Ok(DeepResult { bytes: b, bad })) => {
                    deep_bytes = b;
                    store.healing.scrub_read(b);
                    if let Some(bad) = bad {
                        tracing::warn!(segment = %seg, "deep scrub: {}", bad.why);
                        damaged.extend(bad.parts);
                        deep_failed.push(seg);
                    }
                }
                Ok(Err(e)) => tracing::debug!(segment = %seg, "deep scrub skipped: {e}"),
                Err(e) => tracing::warn!("deep scrub: {e}"),
            }
        }
        // The part's own reads paid their way as they went; a deep check pays here.
        if deep_bytes > 0
            && !throttle
                .after_step(deep_bytes, started.elapsed(), &store.healing, stop)
                .await
        {
            break;
        }
        if stop.is_cancelled() || started_batch.elapsed() > CHECKPOINT {
            break;
        }
    }
    store.healing.scrub_counted(
        verified.len() as u64,
        damaged.len() as u64,
        deep_failed.len() as u64,
    );
    if !damaged.is_empty() || !deep_failed.is_empty() {
        store
            .propose(CommandV1::QueueRepair {
                segments: deep_failed,
                damaged,
                reason: "scrub found damage".into(),
                time_ms: now_ms(),
            })
            .await?;
        store.healing.wake_repair.notify_one();
    }
    if !verified.is_empty() {
        store
            .propose(CommandV1::PartsVerified {
                parts: verified,
                time_ms: now_ms(),
            })
            .await?;
    }
    Ok(true)
}

/// What a scrub found wrong with a part.
enum Found {
    /// The part itself: missing, corrupt, a bad header, another part's header, an I/O error.
    Damaged(String),
    /// Its disk cannot be read now (the disk monitor's business, not the part's).
    Unavailable(String),
}

fn classify(e: PartReadError) -> Found {
    match e {
        PartReadError::Unavailable(_) | PartReadError::DiskNotHere(_) => {
            Found::Unavailable(e.to_string())
        }
        e => Found::Damaged(e.to_string()),
    }
}

/// Reads a local part whole, every block checked, a few MiB at a time, each step throttled
/// and counted as it goes (so the configured rate holds over any stretch, however large the
/// parts). Returns the bytes read, or what is wrong with the part.
async fn verify_local(
    store: &Arc<Store>,
    p: PartRef,
    throttle: &mut Throttle,
    stop: &CancellationToken,
) -> Result<Result<u64, Found>, StoreError> {
    let s = store.clone();
    let opened =
        tokio::task::spawn_blocking(move || s.disks.open_part(p.disk_id, p.file_id, p.seg, p.part))
            .await
            .map_err(|e| StoreError::Other(e.into()))?;
    let part = match opened {
        Ok(part) => Arc::new(part),
        Err(e) => return Ok(Err(classify(e))),
    };
    let block = u64::from(part.header.block_size.max(1));
    let blocks = part.header.part_data_len.div_ceil(block);
    let per_step = (STEP_BYTES / block).max(1);
    let mut first = 0;
    let mut bytes = 0;
    while first < blocks {
        let n = per_step.min(blocks - first);
        let started = Instant::now();
        let reader = part.clone();
        let got = tokio::task::spawn_blocking(move || reader.read_blocks(first, n))
            .await
            .map_err(|e| StoreError::Other(e.into()))?;
        let got = match got {
            Ok(g) => g.len() as u64,
            Err(e) => return Ok(Err(classify(e))),
        };
        bytes += got;
        first += n;
        store.healing.scrub_read(got);
        if !throttle
            .after_step(got, started.elapsed(), &store.healing, stop)
            .await
        {
            return Ok(Err(Found::Unavailable("stopped".into())));
        }
    }
    if bytes != part.header.part_data_len {
        return Ok(Err(Found::Damaged(format!(
            "{bytes} bytes of data, the header says {}",
            part.header.part_data_len
        ))));
    }
    Ok(Ok(bytes))
}

/// Whether this node does the deep check of `p`'s segment: `p` is the lowest-numbered part
/// of the segment on a disk that is up.
async fn leads_deep_check(store: &Store, p: PartRef) -> Result<bool, StoreError> {
    let Some(file) = store.meta.file(p.file_id).await? else {
        return Ok(false);
    };
    let statuses = store.disk_statuses().await?;
    let lowest = file
        .segments
        .iter()
        .filter(|s| s.index == p.seg)
        .flat_map(|s| s.parts.iter())
        .filter(|r| !r.missing)
        .filter(|r| {
            r.disk_id
                .is_some_and(|d| statuses.get(&d) == Some(&DiskStatus::Up))
        })
        .map(|r| r.index)
        .min();
    Ok(lowest == Some(p.part))
}

/// What a deep check found.
struct DeepResult {
    bytes: u64,
    bad: Option<Bad>,
}

struct Bad {
    why: String,
    parts: Vec<PartRef>,
}

/// Reads a whole segment from all its parts, wherever they are, and checks that the parity
/// is what the data encodes to (or that the copies agree) and that the data's BLAKE3 is the
/// segment's. Blocking.
fn deep_check(store: &Arc<Store>, s: SegmentRef) -> anyhow::Result<DeepResult> {
    let handle = tokio::runtime::Handle::current();
    let file = handle
        .block_on(store.meta.file(s.file_id))?
        .ok_or_else(|| anyhow::anyhow!("file gone"))?;
    let seg = file
        .segments
        .iter()
        .find(|x| x.index == s.seg)
        .ok_or_else(|| anyhow::anyhow!("segment gone"))?;
    let geo = file.geometry;
    let width = geo.width();
    let mut readers: Vec<(u16, wormfs_parts::ids::DiskId, Arc<dyn PartReader>)> = Vec::new();
    for p in &seg.parts {
        if p.missing {
            continue;
        }
        let Some(d) = p.disk_id else { continue };
        readers.push((p.index, d, store.open_part(d, s.file_id, s.seg, p.index)?));
    }
    anyhow::ensure!(readers.len() == width, "not every part is readable now");
    let part_ref = |i: u16, d| PartRef {
        file_id: s.file_id,
        seg: s.seg,
        part: i,
        disk_id: d,
    };
    let bs = u64::from(geo.block_size);
    let blocks = geo.part_data_len(seg.data_len).div_ceil(bs);
    let mut bytes = 0u64;
    let want = seg.blake3.clone();
    if geo.is_replica() {
        let mut bad = Vec::new();
        for (i, d, r) in &readers {
            let mut h = blake3::Hasher::new();
            let mut first = 0;
            while first < blocks {
                let n = BLOCKS_PER_READ.min(blocks - first);
                let b = r.read_blocks(first, n)?;
                bytes += b.len() as u64;
                h.update(&b);
                first += n;
            }
            if h.finalize().to_hex().as_str() != want {
                bad.push(part_ref(*i, *d));
            }
        }
        let bad = (!bad.is_empty()).then(|| Bad {
            why: format!("{} cop(ies) do not match the segment's BLAKE3", bad.len()),
            parts: bad,
        });
        return Ok(DeepResult { bytes, bad });
    }
    let k = usize::from(geo.k);
    let m = usize::from(geo.m);
    let mut enc = codec::Encoder::default();
    let mut hasher = blake3::Hasher::new();
    let mut hashed = 0u64;
    let mut parity_bad = vec![false; m];
    let mut first = 0;
    while first < blocks {
        let n = BLOCKS_PER_READ.min(blocks - first);
        let mut got = Vec::with_capacity(width);
        for (i, _, r) in &readers {
            let b = r.read_blocks(first, n)?;
            bytes += b.len() as u64;
            got.push((*i, b));
        }
        got.sort_by_key(|(i, _)| *i);
        let bsz = bs as usize;
        for row in 0..n as usize {
            let data: Vec<&[u8]> = got[..k]
                .iter()
                .map(|(_, b)| &b[row * bsz..(row + 1) * bsz])
                .collect();
            for d in &data {
                let take = (seg.data_len - hashed).min(d.len() as u64) as usize;
                hasher.update(&d[..take]);
                hashed += take as u64;
            }
            enc.encode_with(&data, m, |p, parity| {
                if got[k + p].1[row * bsz..(row + 1) * bsz] != *parity {
                    parity_bad[p] = true;
                }
            })?;
        }
        first += n;
    }
    let mut parts = Vec::new();
    for (p, bad) in parity_bad.iter().enumerate() {
        if *bad {
            let (i, d, _) = &readers[k + p];
            parts.push(part_ref(*i, *d));
        }
    }
    let hash_ok = hasher.finalize().to_hex().as_str() == want;
    let bad = if !parts.is_empty() || !hash_ok {
        Some(Bad {
            why: format!(
                "{} parity part(s) differ from the data's encoding{}",
                parts.len(),
                if hash_ok {
                    ""
                } else {
                    "; the data does not match the segment's BLAKE3"
                }
            ),
            parts,
        })
    } else {
        None
    };
    Ok(DeepResult { bytes, bad })
}
