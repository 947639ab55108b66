//! Self-healing: disk states, repair, scrub and what they tell the user.
//!
//! - `disk_life.rs`: adding, draining, replacing and removing a disk, with their checks.
//! - `disk_monitor.rs`: each node reports its own disks `down` and `up`; the leader also marks a
//!   silent machine's disks `down`, and turns `down` into `out` after the configured time,
//!   within the brakes.
//! - `repair_job.rs`: rebuilding (or moving) the parts of one segment; `repair_worker.rs`: the
//!   loop that takes queued segments, most endangered first, and commits what it rebuilt.
//! - `scrub.rs`: reading every local part on a schedule and queueing what fails.
//! - `throttle.rs`: the byte-rate limit and tranquility shared by repair and scrub, and the
//!   yield to foreground reads and ingests.
//! - `rebalance.rs`: moving parts toward an even fill.
//! - `health.rs`: the report behind `wormfs health` and the API.
//!
//! [`Healing`] is the runtime side every part shares: what is running now, its rates and
//! counters (the durable side, the queue and each part's last verification, is in the
//! metadata), and the heal-on-read channel.

pub mod disk_life;
pub mod disk_monitor;
pub mod health;
pub mod rebalance;
pub mod repair_job;
pub mod repair_worker;
pub mod scrub;
pub mod throttle;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use wormfs_meta::command::{PartRef, SegmentRef};
use wormfs_parts::fsutil::now_ms;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A damaged part (or a segment to look at) found by a read.
#[derive(Clone, Copy, Debug)]
pub struct ReadDamage {
    /// The segment.
    pub segment: SegmentRef,
    /// The part, when the part itself is damaged (missing, corrupt, naming another part).
    pub part: Option<PartRef>,
}

/// A repair in progress on this node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepairInProgress {
    /// The segment.
    pub segment: SegmentRef,
    /// One of the file's paths.
    pub path: String,
    /// Parts being written.
    pub parts: Vec<u16>,
    /// Bytes to read and write in all.
    pub bytes_total: u64,
    /// Bytes done.
    pub bytes_done: u64,
    /// When it started (ms since epoch).
    pub started_ms: u64,
}

/// Counters and rates of this node's repair.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RepairCounters {
    /// Segments brought back to full redundancy (or moved) since start.
    pub segments_repaired: u64,
    /// Parts written since start.
    pub parts_written: u64,
    /// Bytes read and written since start.
    pub bytes: u64,
    /// Attempts that failed since start.
    pub failures: u64,
    /// Bytes per second over the last minute.
    pub rate_bytes_per_sec: u64,
}

/// Counters and state of this node's scrub.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ScrubCounters {
    /// What the scrub is doing: `scrubbing`, `idle` (nothing due), `waiting for the window
    /// HH:MM-HH:MM`, `disabled`.
    pub state: String,
    /// Whether the parts now being read get a deep check.
    pub deep: bool,
    /// Parts verified since start.
    pub parts_verified: u64,
    /// Bytes read since start.
    pub bytes_verified: u64,
    /// Damaged parts found since start (queued for repair).
    pub damaged_found: u64,
    /// Segments whose deep check failed since start.
    pub deep_mismatches: u64,
    /// Bytes per second over the last minute.
    pub rate_bytes_per_sec: u64,
}

/// A byte rate over a sliding minute.
#[derive(Default)]
struct Rate(Mutex<Vec<(Instant, u64)>>);

impl Rate {
    fn add(&self, n: u64) {
        let mut v = lock(&self.0);
        let now = Instant::now();
        v.push((now, n));
        v.retain(|(t, _)| now.duration_since(*t) < Duration::from_secs(60));
    }

    fn per_sec(&self) -> u64 {
        let v = lock(&self.0);
        let Some(first) = v.first() else { return 0 };
        let span = first.0.elapsed().as_secs_f64().max(1.0);
        (v.iter().map(|(_, n)| *n).sum::<u64>() as f64 / span) as u64
    }
}

/// The runtime side of self-healing on one node.
pub struct Healing {
    damage_tx: mpsc::UnboundedSender<ReadDamage>,
    damage_rx: Mutex<Option<mpsc::UnboundedReceiver<ReadDamage>>>,
    /// Segments reported by reads lately (reported again after a minute).
    reported: Mutex<HashMap<SegmentRef, Instant>>,
    /// The last foreground read or ingest (ms since epoch).
    foreground_ms: AtomicU64,
    in_progress: Mutex<Vec<RepairInProgress>>,
    repair: Mutex<RepairCounters>,
    repair_rate: Rate,
    scrub: Mutex<ScrubCounters>,
    scrub_rate: Rate,
    /// When the scrub last found nothing due (ms since epoch; 0: not since start).
    scrub_pass_ms: AtomicU64,
    /// Wakes the repair worker (a segment was queued here).
    pub wake_repair: tokio::sync::Notify,
    /// Wakes the scrub (a scrub was asked for).
    pub wake_scrub: tokio::sync::Notify,
    /// Rounds of rebalancing are running on this node.
    pub rebalancing: std::sync::atomic::AtomicBool,
}

impl Default for Healing {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            damage_tx: tx,
            damage_rx: Mutex::new(Some(rx)),
            reported: Mutex::default(),
            foreground_ms: AtomicU64::new(0),
            in_progress: Mutex::default(),
            repair: Mutex::default(),
            repair_rate: Rate::default(),
            scrub: Mutex::default(),
            scrub_rate: Rate::default(),
            scrub_pass_ms: AtomicU64::new(0),
            wake_repair: tokio::sync::Notify::new(),
            wake_scrub: tokio::sync::Notify::new(),
            rebalancing: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Healing {
    /// A read met a damaged part or could not use one: queue the segment (once a minute at
    /// most). Callable from any thread.
    pub fn report_read_damage(&self, d: ReadDamage) {
        {
            let mut r = lock(&self.reported);
            let now = Instant::now();
            if r.get(&d.segment)
                .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(60))
            {
                return;
            }
            r.retain(|_, t| now.duration_since(*t) < Duration::from_secs(60));
            r.insert(d.segment, now);
        }
        let _ = self.damage_tx.send(d);
    }

    /// The receiving end of the heal-on-read channel (taken once, by the task that proposes).
    pub(crate) fn take_damage_receiver(&self) -> Option<mpsc::UnboundedReceiver<ReadDamage>> {
        lock(&self.damage_rx).take()
    }

    /// Notes foreground work (a client's read or an ingest), which repair and scrub yield to.
    pub fn foreground(&self) {
        self.foreground_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether a client read or ingest ran within the last `window`.
    pub fn foreground_recently(&self, window: Duration) -> bool {
        now_ms().saturating_sub(self.foreground_ms.load(Ordering::Relaxed))
            < window.as_millis() as u64
    }

    /// Repairs running now on this node.
    pub fn in_progress(&self) -> Vec<RepairInProgress> {
        lock(&self.in_progress).clone()
    }

    pub(crate) fn start_repair(&self, job: RepairInProgress) {
        lock(&self.in_progress).push(job);
    }

    pub(crate) fn repair_progress(&self, segment: SegmentRef, bytes: u64) {
        if let Some(j) = lock(&self.in_progress)
            .iter_mut()
            .find(|j| j.segment == segment)
        {
            j.bytes_done += bytes;
        }
        lock(&self.repair).bytes += bytes;
        self.repair_rate.add(bytes);
        metrics::counter!(crate::metrics::REPAIR_BYTES).increment(bytes);
    }

    pub(crate) fn end_repair(&self, segment: SegmentRef, parts_written: Option<u64>) {
        lock(&self.in_progress).retain(|j| j.segment != segment);
        let mut c = lock(&self.repair);
        match parts_written {
            Some(n) => {
                c.segments_repaired += 1;
                c.parts_written += n;
                metrics::counter!(crate::metrics::REPAIR_DONE).increment(1);
                metrics::counter!(crate::metrics::REPAIR_PARTS_WRITTEN).increment(n);
            }
            None => {
                c.failures += 1;
                metrics::counter!(crate::metrics::REPAIR_FAILURES).increment(1);
            }
        }
    }

    /// This node's repair counters.
    pub fn repair_counters(&self) -> RepairCounters {
        let mut c = lock(&self.repair).clone();
        c.rate_bytes_per_sec = self.repair_rate.per_sec();
        c
    }

    pub(crate) fn scrub_state(&self, state: &str, deep: bool) {
        let mut s = lock(&self.scrub);
        // Nothing due after scrubbing (or at the first look after start): a pass is complete.
        if state == "idle" && s.state != "idle" {
            self.scrub_pass_ms.store(now_ms(), Ordering::Relaxed);
        }
        s.state = state.to_owned();
        s.deep = deep;
    }

    pub(crate) fn scrub_read(&self, bytes: u64) {
        lock(&self.scrub).bytes_verified += bytes;
        self.scrub_rate.add(bytes);
        metrics::counter!(crate::metrics::SCRUB_BYTES).increment(bytes);
    }

    pub(crate) fn scrub_counted(&self, verified: u64, damaged: u64, deep_mismatches: u64) {
        let mut s = lock(&self.scrub);
        s.parts_verified += verified;
        s.damaged_found += damaged;
        s.deep_mismatches += deep_mismatches;
        metrics::counter!(crate::metrics::SCRUB_PARTS).increment(verified);
        metrics::counter!(crate::metrics::SCRUB_CORRUPTIONS).increment(damaged);
        metrics::counter!(crate::metrics::SCRUB_DEEP_MISMATCHES).increment(deep_mismatches);
    }

    /// When this node's scrub last completed a pass: found every local part verified within
    /// the interval (ms since epoch), if it has since the node started.
    pub fn scrub_pass_done_ms(&self) -> Option<u64> {
        Some(self.scrub_pass_ms.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// This node's scrub counters.
    pub fn scrub_counters(&self) -> ScrubCounters {
        let mut c = lock(&self.scrub).clone();
        c.rate_bytes_per_sec = self.scrub_rate.per_sec();
        c
    }
}
