//! The health report: what is at risk, in numbers and in one sentence, with the repair and
//! scrub state behind it. `wormfs health`, the API and (later) the admin page read it.

use serde::{Deserialize, Serialize};

use super::{RepairCounters, RepairInProgress, ScrubCounters};
use crate::store::{Store, StoreError};
use wormfs_meta::command::DiskStatus;
use wormfs_meta::{DiskStateRecord, FileAtRisk, QueuedRepair, ToleranceCount};
use wormfs_parts::fsutil::now_ms;

/// Files listed by name in a report.
const LISTED: u32 = 20;

/// The verdict, as an exit status too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every segment at its policy's full redundancy (exit 0).
    Full,
    /// Some segment below it, everything readable (exit 1).
    Degraded,
    /// Some file cannot be read now (exit 2).
    Unreadable,
}

impl Verdict {
    /// The exit status of `wormfs health`.
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Full => 0,
            Self::Degraded => 1,
            Self::Unreadable => 2,
        }
    }
}

/// The repair queue and this node's repair work.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RepairStatus {
    /// Repair is paused cluster-wide.
    pub paused: bool,
    /// Segments queued.
    pub queued: u64,
    /// Queued segments by tolerance (lowest first).
    pub queued_by_tolerance: Vec<ToleranceCount>,
    /// Logical bytes of the queued segments.
    pub queued_bytes: u64,
    /// Seconds left at this node's current rate (`null` when idle or unknown).
    pub eta_secs: Option<u64>,
    /// The first queued segments, most endangered first.
    pub queue: Vec<QueuedRepair>,
    /// What this node is repairing now.
    pub in_progress: Vec<RepairInProgress>,
    /// This node's counters since it started.
    pub counters: RepairCounters,
    /// Why automatic `out` decisions are held back now.
    pub brakes: Vec<String>,
    /// Parts still to move off their disks (drains are counted in `queued`; these are
    /// rebalancing moves).
    pub moves_left: u64,
}

/// This node's scrub.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ScrubStatus {
    /// Scrub is enabled on this node.
    pub enabled: bool,
    /// The configured interval, in days.
    pub interval_days: f64,
    /// Healthy parts on this node's disks.
    pub parts: u64,
    /// Of those, verified within the interval (or since the last scrub asked for).
    pub parts_verified: u64,
    /// Bytes still to verify in this pass.
    pub bytes_left: u64,
    /// Seconds left at the current rate (`null` when idle or unknown).
    pub eta_secs: Option<u64>,
    /// Age in seconds of the oldest verification on this node (`null` without parts).
    pub oldest_verified_age_secs: Option<u64>,
    /// The last scrub asked for (ms since epoch), and whether deep.
    pub requested_ms: Option<u64>,
    /// Whether that request was deep.
    pub requested_deep: bool,
    /// This node's counters and state.
    pub counters: ScrubCounters,
}

/// The report behind `wormfs health`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HealthReport {
    /// The verdict.
    pub verdict: Verdict,
    /// One sentence for people.
    pub summary: String,
    /// Files stored.
    pub files: u64,
    /// Segments stored.
    pub segments: u64,
    /// Segments by tolerance (parts beyond `k` that count; 0: one more loss loses data;
    /// negative: unreadable now), lowest first.
    pub by_tolerance: Vec<ToleranceCount>,
    /// Files that can survive no more failures (or cannot be read), weakest first (the
    /// first 20).
    pub at_risk: Vec<FileAtRisk>,
    /// How many files that is in all.
    pub at_risk_count: u64,
    /// Disks that are not `up`.
    pub disks_not_up: Vec<DiskStateRecord>,
    /// The repair queue and this node's repair work.
    pub repair: RepairStatus,
    /// This node's scrub.
    pub scrub: ScrubStatus,
    /// Why automatic `out` decisions are held back now.
    pub brakes: Vec<String>,
    /// This node's last metadata backup to its disks.
    pub meta_backup: crate::meta_backup::BackupStatus,
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", group(n), if n == 1 { one } else { many })
}

/// `41230` as `41,230`.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration for people.
pub fn about(secs: u64) -> String {
    match secs {
        0..=59 => "under a minute".into(),
        60..=5399 => format!("about {} min", secs.div_ceil(60)),
        _ => format!("about {} h", secs.div_ceil(3600)),
    }
}

/// The repair status.
pub async fn repair_status(store: &Store) -> Result<RepairStatus, StoreError> {
    let meta = &store.meta;
    let queued_by_tolerance: Vec<ToleranceCount> = meta
        .repair_queue_counts()
        .await?
        .into_iter()
        .map(|(tolerance, segments)| ToleranceCount {
            tolerance,
            segments,
            below_policy: segments,
        })
        .collect();
    let queued = queued_by_tolerance.iter().map(|t| t.segments).sum();
    let queued_bytes = meta.repair_queue_bytes().await?;
    let counters = store.healing.repair_counters();
    let paused = meta.repair_paused().await?;
    let eta_secs = (queued > 0 && counters.rate_bytes_per_sec > 0 && !paused)
        .then(|| queued_bytes.div_ceil(counters.rate_bytes_per_sec));
    Ok(RepairStatus {
        paused,
        queued,
        queued_by_tolerance,
        queued_bytes,
        eta_secs,
        queue: meta.repair_queue(50).await?,
        in_progress: store.healing.in_progress(),
        counters,
        brakes: meta.brakes().await?,
        moves_left: meta.moves_left().await?.0,
    })
}

/// This node's scrub status.
pub async fn scrub_status(store: &Store) -> Result<ScrubStatus, StoreError> {
    let cfg = &store.scrub;
    let disks: Vec<_> = store.disks.iter().map(|d| d.id).collect();
    let now = now_ms();
    let request = store.meta.scrub_request().await?;
    let mut since = now.saturating_sub(cfg.interval_ms);
    if let Some((asked, _)) = request {
        since = since.max(asked.min(now));
    }
    let (parts, parts_verified, bytes_left, oldest) =
        store.meta.scrub_progress(&disks, since).await?;
    let counters = store.healing.scrub_counters();
    let eta_secs = (bytes_left > 0 && counters.rate_bytes_per_sec > 0)
        .then(|| bytes_left.div_ceil(counters.rate_bytes_per_sec));
    Ok(ScrubStatus {
        enabled: cfg.enabled,
        interval_days: cfg.interval_ms as f64 / 86_400_000.0,
        parts,
        parts_verified,
        bytes_left,
        eta_secs,
        oldest_verified_age_secs: oldest.map(|o| now.saturating_sub(o) / 1000),
        requested_ms: request.map(|r| r.0),
        requested_deep: request.is_some_and(|r| r.1),
        counters,
    })
}

/// The health report.
pub async fn report(store: &Store) -> Result<HealthReport, StoreError> {
    let meta = &store.meta;
    let totals = meta.totals().await?;
    let by_tolerance = meta.redundancy().await?;
    let below: u64 = by_tolerance.iter().map(|t| t.below_policy).sum();
    let unreadable: u64 = by_tolerance
        .iter()
        .filter(|t| t.tolerance < 0)
        .map(|t| t.segments)
        .sum();
    let weakest = by_tolerance.first().map(|t| t.tolerance);
    let at_risk = meta.files_at_risk(0, LISTED).await?;
    let at_risk_count = meta.count_files_at_risk(0).await?;
    let unreadable_files = meta.count_files_at_risk(-1).await?;
    let disks_not_up: Vec<DiskStateRecord> = meta
        .disk_states()
        .await?
        .into_iter()
        .filter(|d| d.state != DiskStatus::Up)
        .collect();
    let repair = repair_status(store).await?;
    let scrub = scrub_status(store).await?;
    let brakes = repair.brakes.clone();
    let verdict = if unreadable > 0 {
        Verdict::Unreadable
    } else if below > 0 {
        Verdict::Degraded
    } else {
        Verdict::Full
    };
    let doing = if repair.paused {
        "repair is paused (wormfs repair resume)".to_owned()
    } else if let Some(b) = brakes.first() {
        format!("repair waits: {b}")
    } else if repair.queued > 0 {
        match repair.eta_secs {
            Some(s) => format!("repair is rebuilding them, {}", about(s)),
            None => "repair is rebuilding them".to_owned(),
        }
    } else {
        let down: Vec<String> = disks_not_up
            .iter()
            .filter(|d| d.state == DiskStatus::Down)
            .map(|d| d.path.clone())
            .collect();
        if down.is_empty() {
            "nothing is queued for repair".to_owned()
        } else {
            format!(
                "disk(s) {} are down; their parts are rebuilt if they stay down (repair.disk_out_after_ms)",
                down.join(", ")
            )
        }
    };
    // Tolerance counts parts; folder-disks sharing a filesystem fail together, so say so
    // where there are fewer filesystems than the widest policy has parts.
    let widest = meta.widest_policy().await?.unwrap_or(0);
    let mut domains: Vec<(u64, u64)> = meta
        .disks()
        .await?
        .iter()
        .filter(|d| d.state == "up" || d.state == "draining")
        .map(|d| (d.node_id, d.fs_dev))
        .collect();
    domains.sort_unstable();
    domains.dedup();
    let shared = domains.len() < widest;
    let unit = |t: i64| match (shared, t == 1) {
        (false, true) => "disk failure",
        (false, false) => "disk failures",
        (true, true) => "lost part",
        (true, false) => "lost parts",
    };
    let caveat = if shared {
        format!(
            " The disks are folders on {} filesystem(s), fewer than the {widest} parts of the widest policy: one failing device loses several parts (wormfs stat shows what each file survives).",
            domains.len()
        )
    } else {
        String::new()
    };
    let summary = match verdict {
        Verdict::Full => match weakest {
            None => "No files stored yet.".to_owned(),
            Some(t) if totals.files == 1 => {
                format!(
                    "The one file stored can survive {t} more {}.{caveat}",
                    unit(t)
                )
            }
            Some(t) => format!(
                "All {} can survive {t} more {}.{caveat}",
                plural(totals.files, "file", "files"),
                unit(t)
            ),
        },
        Verdict::Degraded => {
            if at_risk_count > 0 {
                format!(
                    "{} can survive no more failures; {doing}.",
                    plural(at_risk_count, "file", "files")
                )
            } else {
                format!(
                    "{} of {} below their policy's redundancy (every file can still survive {} more {}); {doing}.",
                    plural(below, "segment is", "segments are"),
                    group(totals.segments),
                    weakest.unwrap_or(0),
                    unit(weakest.unwrap_or(0))
                )
            }
        }
        Verdict::Unreadable => format!(
            "{} cannot be read now: too few of their parts are available; {doing}.",
            plural(unreadable_files, "file", "files")
        ),
    };
    // A store too full for new files says so, whatever the redundancy.
    let summary = match store.full_reason(&store.disk_reports().await?) {
        Some(full) => format!(
            "{summary} {}{}; new files cannot be written until space is freed or disks are added (`wormfs disks` shows which are full).",
            full[..1].to_uppercase(),
            &full[1..]
        ),
        None => summary,
    };
    Ok(HealthReport {
        verdict,
        summary,
        files: totals.files,
        segments: totals.segments,
        by_tolerance,
        at_risk,
        at_risk_count,
        disks_not_up,
        repair,
        scrub,
        brakes,
        meta_backup: crate::meta_backup::status_now(store).await,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(group(41230), "41,230");
        assert_eq!(group(7), "7");
        assert_eq!(group(1_000_000), "1,000,000");
        assert_eq!(about(30), "under a minute");
        assert_eq!(about(230), "about 4 min");
        assert_eq!(about(9000), "about 3 h");
        assert_eq!(Verdict::Unreadable.exit_code(), 2);
    }
}
