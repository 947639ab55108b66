//! Prometheus metrics: what `GET /metrics` on the API port serves (docs/metrics.md lists every
//! name, its type, labels and meaning; [`DEFS`] is that list in code, and a test keeps the two
//! equal).
//!
//! One recorder per process (metrics-exporter-prometheus's, installed on first use by
//! [`handle`]; a process running several nodes, as the in-process tests do, shares it, and a
//! recorder someone else installed first leaves `/metrics` answering 503). It has no listener of
//! its own: the API serves [`Exporter::render`]'s text, and a thread runs the recorder's upkeep.
//!
//! Events are counted where they happen with the `metrics` macros and the names below (repairs
//! done and failed, corruptions found by scrub, ingests and their bytes, request durations).
//! State is read from the node when scraped ([`Exporter::render`]): the cheap figures (this
//! node's disks, Raft, the repair queue, backups) at every scrape, the ones that scan the
//! metadata's tables (segments by tolerance, the bytes on each disk, scrub progress) at most
//! once a minute ([`SLOW_EVERY`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use metrics::Label;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use wormfs_meta::command::DiskStatus;
use wormfs_parts::disk::DiskState;
use wormfs_parts::fsutil::now_ms;

use crate::consensus::RaftRole;
use crate::drop_folders::IngestStatus;
use crate::store::{Store, StoreError};

/// What a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (since the node started).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

impl Kind {
    /// Its name in docs/metrics.md and in the `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric: its name, kind, labels and meaning (the `# HELP` line).
pub struct Def {
    /// The name, `wormfs_...`.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Its labels.
    pub labels: &'static [&'static str],
    /// What it means.
    pub help: &'static str,
}

macro_rules! names {
    ($($(#[$doc:meta])* $id:ident = $name:literal;)*) => {
        $($(#[$doc])* pub const $id: &str = $name;)*
    };
}

names! {
    /// Build information.
    BUILD_INFO = "wormfs_build_info";
    /// This node and its cluster.
    NODE_INFO = "wormfs_node_info";
    /// A disk's filesystem capacity.
    DISK_TOTAL = "wormfs_disk_total_bytes";
    /// A disk's free space.
    DISK_FREE = "wormfs_disk_free_bytes";
    /// The bytes of WormFS parts on a disk.
    DISK_USED = "wormfs_disk_used_bytes";
    /// Parts on a disk.
    DISK_PARTS = "wormfs_disk_parts";
    /// A disk's observed state, one-hot.
    DISK_STATE = "wormfs_disk_state";
    /// A disk's replicated status, one-hot.
    DISK_STATUS = "wormfs_disk_status";
    /// Failed or corrupt reads.
    DISK_READ_ERRORS = "wormfs_disk_read_errors_total";
    /// Failed writes.
    DISK_WRITE_ERRORS = "wormfs_disk_write_errors_total";
    /// Blocks whose checksum did not match.
    DISK_CHECKSUM_FAILURES = "wormfs_disk_checksum_failures_total";
    /// Bytes read from part files.
    DISK_READ_BYTES = "wormfs_disk_read_bytes_total";
    /// Bytes written to part files.
    DISK_WRITTEN_BYTES = "wormfs_disk_written_bytes_total";
    /// Files in the namespace.
    FILES = "wormfs_files";
    /// Logical bytes of the files.
    LOGICAL_BYTES = "wormfs_logical_bytes";
    /// Segments by tolerance.
    SEGMENTS = "wormfs_segments";
    /// Segments below their policy's redundancy.
    SEGMENTS_BELOW_POLICY = "wormfs_segments_below_policy";
    /// Segments queued for repair.
    REPAIR_QUEUE = "wormfs_repair_queue_segments";
    /// Logical bytes of the queued segments.
    REPAIR_QUEUE_BYTES = "wormfs_repair_queue_bytes";
    /// Repairs running on this node.
    REPAIR_IN_PROGRESS = "wormfs_repair_in_progress";
    /// Repair is paused.
    REPAIR_PAUSED = "wormfs_repair_paused";
    /// Segments repaired (or moved).
    REPAIR_DONE = "wormfs_repair_segments_done_total";
    /// Repair attempts that failed.
    REPAIR_FAILURES = "wormfs_repair_failures_total";
    /// Parts written by repair.
    REPAIR_PARTS_WRITTEN = "wormfs_repair_parts_written_total";
    /// Bytes read and written by repair.
    REPAIR_BYTES = "wormfs_repair_bytes_total";
    /// Healthy parts on this node's disks.
    SCRUB_PARTS = "wormfs_scrub_parts";
    /// Of those, verified within the interval.
    SCRUB_PARTS_VERIFIED = "wormfs_scrub_parts_verified";
    /// The share verified.
    SCRUB_PROGRESS = "wormfs_scrub_progress_ratio";
    /// Bytes still to verify.
    SCRUB_BYTES_LEFT = "wormfs_scrub_bytes_left";
    /// When the scrub last completed a pass.
    SCRUB_PASS_TIME = "wormfs_scrub_last_pass_complete_timestamp_seconds";
    /// How long the least recently verified part has gone unverified.
    SCRUB_OLDEST_AGE = "wormfs_scrub_oldest_unverified_age_seconds";
    /// Parts verified.
    SCRUB_PARTS_TOTAL = "wormfs_scrub_verified_parts_total";
    /// Bytes verified.
    SCRUB_BYTES = "wormfs_scrub_verified_bytes_total";
    /// Damaged parts found.
    SCRUB_CORRUPTIONS = "wormfs_scrub_corruptions_total";
    /// Segments whose deep check failed.
    SCRUB_DEEP_MISMATCHES = "wormfs_scrub_deep_mismatches_total";
    /// Drop-folder files waiting.
    INGEST_QUEUED = "wormfs_ingest_queued";
    /// Drop-folder files settling.
    INGEST_SETTLING = "wormfs_ingest_settling";
    /// Ingests running on this node.
    INGEST_IN_PROGRESS = "wormfs_ingest_in_progress";
    /// Ingests committed.
    INGEST_FILES = "wormfs_ingest_files_total";
    /// Bytes ingested.
    INGEST_BYTES = "wormfs_ingest_bytes_total";
    /// Ingests that failed.
    INGEST_FAILURES = "wormfs_ingest_failures_total";
    /// Parts reads found missing, unreadable or corrupt.
    READ_DAMAGED = "wormfs_read_damaged_parts_total";
    /// Rows decoded around a damaged part.
    READ_DEGRADED_ROWS = "wormfs_read_degraded_rows_total";
    /// Reads that could not be served.
    READ_UNREADABLE = "wormfs_read_unreadable_total";
    /// Request durations.
    REQUEST_DURATION = "wormfs_request_duration_seconds";
    /// Answers with a status of 400 or more.
    REQUEST_ERRORS = "wormfs_request_errors_total";
    /// This node's Raft role, one-hot.
    RAFT_ROLE = "wormfs_raft_role";
    /// The Raft term.
    RAFT_TERM = "wormfs_raft_term";
    /// The last log index written here.
    RAFT_LAST_LOG = "wormfs_raft_last_log_index";
    /// The commit index this node knows.
    RAFT_COMMIT = "wormfs_raft_commit_index";
    /// The last log index applied here.
    RAFT_APPLIED = "wormfs_raft_applied_index";
    /// Voters.
    RAFT_VOTERS = "wormfs_raft_voters";
    /// Seconds since each other member was heard from.
    RAFT_CONTACT = "wormfs_raft_member_last_contact_seconds";
    /// Log entries this node's writes went in (group commit).
    RAFT_WRITES = "wormfs_raft_writes_total";
    /// Commands in them.
    RAFT_WRITE_COMMANDS = "wormfs_raft_write_commands_total";
    /// Age of this node's last metadata backup.
    BACKUP_AGE = "wormfs_meta_backup_age_seconds";
    /// When it was written.
    BACKUP_TIME = "wormfs_meta_backup_last_timestamp_seconds";
    /// Whether the last attempt failed.
    BACKUP_FAILING = "wormfs_meta_backup_failing";
    /// Metadata changes since it.
    BACKUP_CHANGES = "wormfs_meta_backup_changes_since";
}

const DISK: &[&str] = &["disk", "path"];

/// Every metric `/metrics` serves. docs/metrics.md documents exactly these (the
/// `metrics_md_documents_every_metric` test).
pub const DEFS: &[Def] = &[
    Def { name: BUILD_INFO, kind: Kind::Gauge, labels: &["version"], help: "Always 1; the label says which WormFS this node runs." },
    Def { name: NODE_INFO, kind: Kind::Gauge, labels: &["node", "cluster"], help: "Always 1; this node's id and its cluster's id." },
    Def { name: DISK_TOTAL, kind: Kind::Gauge, labels: DISK, help: "Capacity of the filesystem holding this node's disk, in bytes." },
    Def { name: DISK_FREE, kind: Kind::Gauge, labels: DISK, help: "Free bytes on that filesystem, as the machine reports them." },
    Def { name: DISK_USED, kind: Kind::Gauge, labels: DISK, help: "Bytes of WormFS part data on the disk, from the metadata (refreshed at most once a minute)." },
    Def { name: DISK_PARTS, kind: Kind::Gauge, labels: DISK, help: "Parts on the disk, from the metadata (refreshed at most once a minute)." },
    Def { name: DISK_STATE, kind: Kind::Gauge, labels: &["disk", "path", "state"], help: "1 for the disk's observed state (active, full, read_only, missing, machine_down), 0 for the others." },
    Def { name: DISK_STATUS, kind: Kind::Gauge, labels: &["disk", "path", "status"], help: "1 for the disk's status in the replicated metadata (up, down, out, draining, drained, removed), 0 for the others." },
    Def { name: DISK_READ_ERRORS, kind: Kind::Counter, labels: DISK, help: "Reads of part files that failed or found a corrupt block." },
    Def { name: DISK_WRITE_ERRORS, kind: Kind::Counter, labels: DISK, help: "Writes of part files that failed (create, write, fsync, rename; a full disk included)." },
    Def { name: DISK_CHECKSUM_FAILURES, kind: Kind::Counter, labels: DISK, help: "Blocks read whose crc32c did not match (also counted in the read errors)." },
    Def { name: DISK_READ_BYTES, kind: Kind::Counter, labels: DISK, help: "Bytes read from part files." },
    Def { name: DISK_WRITTEN_BYTES, kind: Kind::Counter, labels: DISK, help: "Bytes written to part files." },
    Def { name: FILES, kind: Kind::Gauge, labels: &[], help: "Files in the cluster's namespace (refreshed at most once a minute)." },
    Def { name: LOGICAL_BYTES, kind: Kind::Gauge, labels: &[], help: "Bytes of those files, as their users see them (refreshed at most once a minute)." },
    Def { name: SEGMENTS, kind: Kind::Gauge, labels: &["tolerance"], help: "Segments by remaining tolerance: parts beyond k that count (0: one more loss loses data; negative: unreadable now). Refreshed at most once a minute." },
    Def { name: SEGMENTS_BELOW_POLICY, kind: Kind::Gauge, labels: &[], help: "Segments below their policy's full redundancy (refreshed at most once a minute)." },
    Def { name: REPAIR_QUEUE, kind: Kind::Gauge, labels: &[], help: "Segments in the cluster's repair queue." },
    Def { name: REPAIR_QUEUE_BYTES, kind: Kind::Gauge, labels: &[], help: "Logical bytes of the queued segments." },
    Def { name: REPAIR_IN_PROGRESS, kind: Kind::Gauge, labels: &[], help: "Segments this node is repairing now." },
    Def { name: REPAIR_PAUSED, kind: Kind::Gauge, labels: &[], help: "1 while repair is paused cluster-wide (wormfs repair pause)." },
    Def { name: REPAIR_DONE, kind: Kind::Counter, labels: &[], help: "Segments this node brought back to full redundancy (or moved)." },
    Def { name: REPAIR_FAILURES, kind: Kind::Counter, labels: &[], help: "Repair attempts on this node that failed (retried later)." },
    Def { name: REPAIR_PARTS_WRITTEN, kind: Kind::Counter, labels: &[], help: "Parts this node's repairs wrote." },
    Def { name: REPAIR_BYTES, kind: Kind::Counter, labels: &[], help: "Bytes this node's repairs read and wrote." },
    Def { name: SCRUB_PARTS, kind: Kind::Gauge, labels: &[], help: "Healthy parts on this node's disks (refreshed at most once a minute)." },
    Def { name: SCRUB_PARTS_VERIFIED, kind: Kind::Gauge, labels: &[], help: "Of those, the parts verified within scrub.interval_days (refreshed at most once a minute)." },
    Def { name: SCRUB_PROGRESS, kind: Kind::Gauge, labels: &[], help: "Verified parts over parts, 0 to 1 (1 without parts)." },
    Def { name: SCRUB_BYTES_LEFT, kind: Kind::Gauge, labels: &[], help: "Bytes still to verify in this pass (refreshed at most once a minute)." },
    Def { name: SCRUB_PASS_TIME, kind: Kind::Gauge, labels: &[], help: "When this node's scrub last found every local part verified within the interval (Unix seconds; 0: not since the node started)." },
    Def { name: SCRUB_OLDEST_AGE, kind: Kind::Gauge, labels: &[], help: "Seconds since the least recently verified local part was verified (0 without parts)." },
    Def { name: SCRUB_PARTS_TOTAL, kind: Kind::Counter, labels: &[], help: "Parts this node's scrub verified." },
    Def { name: SCRUB_BYTES, kind: Kind::Counter, labels: &[], help: "Bytes this node's scrub read." },
    Def { name: SCRUB_CORRUPTIONS, kind: Kind::Counter, labels: &[], help: "Damaged parts (missing, corrupt) this node's scrub found and queued for repair." },
    Def { name: SCRUB_DEEP_MISMATCHES, kind: Kind::Counter, labels: &[], help: "Segments whose deep check (parity, BLAKE3) failed." },
    Def { name: INGEST_QUEUED, kind: Kind::Gauge, labels: &[], help: "Drop-folder files waiting for their turn." },
    Def { name: INGEST_SETTLING, kind: Kind::Gauge, labels: &[], help: "Drop-folder files still being written or settling." },
    Def { name: INGEST_IN_PROGRESS, kind: Kind::Gauge, labels: &[], help: "Ingests (uploads, WebDAV PUTs, drop-folder files, appends) running on this node." },
    Def { name: INGEST_FILES, kind: Kind::Counter, labels: &[], help: "Ingests and appends this node committed." },
    Def { name: INGEST_BYTES, kind: Kind::Counter, labels: &[], help: "Bytes of those ingests and appends." },
    Def { name: INGEST_FAILURES, kind: Kind::Counter, labels: &[], help: "Ingests and appends on this node that failed." },
    Def { name: READ_DAMAGED, kind: Kind::Counter, labels: &[], help: "Parts this node's reads found missing, unreadable or corrupt (each queued for repair: heal on read)." },
    Def { name: READ_DEGRADED_ROWS, kind: Kind::Counter, labels: &[], help: "Rows this node's reads decoded around a damaged or missing part." },
    Def { name: READ_UNREADABLE, kind: Kind::Counter, labels: &[], help: "Reads this node could not serve: fewer than k readable parts." },
    Def { name: REQUEST_DURATION, kind: Kind::Histogram, labels: &["face", "method", "route"], help: "Seconds from a request's arrival to its answer's head, by face (api, webdav), method and route template." },
    Def { name: REQUEST_ERRORS, kind: Kind::Counter, labels: &["face", "route", "status"], help: "Answers with a status of 400 or more, by face, route template and status." },
    Def { name: RAFT_ROLE, kind: Kind::Gauge, labels: &["role"], help: "1 for this node's Raft role (leader, follower, candidate, learner, shutdown), 0 for the others." },
    Def { name: RAFT_TERM, kind: Kind::Gauge, labels: &[], help: "The current Raft term." },
    Def { name: RAFT_LAST_LOG, kind: Kind::Gauge, labels: &[], help: "The last Raft log index written here." },
    Def {
        name: RAFT_COMMIT,
        kind: Kind::Gauge,
        labels: &[],
        help: "The commit index this node knows: on the leader, the highest log index a majority of voters hold; elsewhere the applied index.",
    },
    Def { name: RAFT_APPLIED, kind: Kind::Gauge, labels: &[], help: "The last Raft log index committed and applied to the metadata here." },
    Def { name: RAFT_VOTERS, kind: Kind::Gauge, labels: &[], help: "Voting members of the cluster." },
    Def { name: RAFT_CONTACT, kind: Kind::Gauge, labels: &["member"], help: "Seconds since this node last heard from each member (0 for itself; -1: not since it started)." },
    Def { name: RAFT_WRITES, kind: Kind::Counter, labels: &[], help: "Log entries this node's writes were proposed in: writes that queued while another was being committed go together in one entry (group commit)." },
    Def { name: RAFT_WRITE_COMMANDS, kind: Kind::Counter, labels: &[], help: "Commands in those entries; divided by wormfs_raft_writes_total, the mean batch size." },
    Def { name: BACKUP_AGE, kind: Kind::Gauge, labels: &[], help: "Seconds since this node's last metadata backup to its disks (-1: none since it started)." },
    Def { name: BACKUP_TIME, kind: Kind::Gauge, labels: &[], help: "When that backup was written (Unix seconds; 0: none since the node started)." },
    Def { name: BACKUP_FAILING, kind: Kind::Gauge, labels: &[], help: "1 when this node's last backup attempt failed." },
    Def { name: BACKUP_CHANGES, kind: Kind::Gauge, labels: &[], help: "Metadata changes applied since that backup." },
];

/// Buckets of the request durations, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How often the recorder's upkeep runs.
const UPKEEP: Duration = Duration::from_secs(5);

/// The figures that scan the metadata's tables are refreshed at most this often.
pub const SLOW_EVERY: Duration = Duration::from_secs(60);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use; `None` when another recorder was installed
/// first (logged once).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get_or_init(install).as_ref()
}

fn install() -> Option<PrometheusHandle> {
    let built = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), DURATION_BUCKETS)
        .and_then(|b| b.install_recorder());
    let h = match built {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("metrics: cannot install the recorder ({e}); /metrics answers 503");
            return None;
        }
    };
    for d in DEFS {
        match d.kind {
            Kind::Counter => metrics::describe_counter!(d.name, d.help),
            Kind::Gauge => metrics::describe_gauge!(d.name, d.help),
            Kind::Histogram => metrics::describe_histogram!(d.name, d.help),
        }
        // Counters without labels are shown from the start, at 0.
        if d.kind == Kind::Counter && d.labels.is_empty() {
            metrics::counter!(d.name).increment(0);
        }
    }
    metrics::gauge!(INGEST_IN_PROGRESS).increment(0.0);
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let upkeep = h.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP);
            upkeep.run_upkeep();
        });
    if let Err(e) = spawned {
        // Rendering drains the histograms too; without the thread they grow between scrapes.
        tracing::warn!("metrics: cannot start the upkeep thread: {e}");
    }
    Some(h)
}

/// Counts an ingest running on this node while alive.
pub struct IngestRunning(());

impl IngestRunning {
    /// An ingest starts.
    pub fn start() -> Self {
        metrics::gauge!(INGEST_IN_PROGRESS).increment(1.0);
        IngestRunning(())
    }
}

impl Drop for IngestRunning {
    fn drop(&mut self) {
        metrics::gauge!(INGEST_IN_PROGRESS).decrement(1.0);
    }
}

/// Counts an ingest's end: its bytes when it committed.
pub fn ingest_done<E>(result: Result<u64, E>) {
    match result {
        Ok(bytes) => {
            metrics::counter!(INGEST_FILES).increment(1);
            metrics::counter!(INGEST_BYTES).increment(bytes);
        }
        Err(_) => metrics::counter!(INGEST_FAILURES).increment(1),
    }
}

/// Records one answered request: `face` `api` or `webdav`, `route` a route template (never a
/// raw path).
pub fn record_request(face: &'static str, method: &str, route: &str, status: u16, took: Duration) {
    let method = wormfs_webdav::RECORDED_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other");
    metrics::histogram!(REQUEST_DURATION, "face" => face, "method" => method, "route" => route.to_owned())
        .record(took.as_secs_f64());
    if status >= 400 {
        metrics::counter!(REQUEST_ERRORS, "face" => face, "route" => route.to_owned(), "status" => status.to_string())
            .increment(1);
    }
}

/// Why a scrape was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401: the token is needed and missing or wrong.
    Unauthorized(&'static str),
    /// 403: no token is set and the client is not on this machine.
    Forbidden(String),
}

/// The node's side of `/metrics`: who may scrape, and the figures read at scrape time.
pub struct Exporter {
    token: Option<String>,
    slow: tokio::sync::Mutex<Slow>,
}

/// What the slow refresh keeps between scrapes.
#[derive(Default)]
struct Slow {
    /// When it last ran.
    at: Option<Instant>,
    /// The tolerances it exported (a bucket that empties is set to 0, not left stale).
    tolerances: BTreeSet<i64>,
    /// The oldest verification of a local part (ms since epoch).
    oldest_verified_ms: Option<u64>,
}

/// Reads the token file of `admin.metrics_token_file`: its owner and mode checked as the
/// cluster secret's are, its first line trimmed, never empty.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    wormfs_parts::fsutil::check_secret(path)
        .with_context(|| format!("admin.metrics_token_file {}", path.display()))?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("admin.metrics_token_file: read {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    anyhow::ensure!(
        !token.is_empty(),
        "admin.metrics_token_file: {} holds no token (its first line is empty)",
        path.display()
    );
    Ok(token)
}

/// Equal without an early exit (the token's bytes are compared through their SHA-256).
fn same_secret(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

impl Exporter {
    /// With the token `/metrics` asks for (`None`: loopback clients only, no token).
    pub fn new(token: Option<String>) -> Self {
        // Installs the recorder now, so events are counted from the node's start.
        let _ = handle();
        Exporter {
            token,
            slow: tokio::sync::Mutex::new(Slow::default()),
        }
    }

    /// From `[admin]`: reads the token file, if one is set.
    pub fn from_config(cfg: &wormfs_config::AdminConfig) -> anyhow::Result<Self> {
        let token = cfg
            .metrics_token_file
            .as_deref()
            .map(read_token)
            .transpose()?;
        Ok(Self::new(token))
    }

    /// Whether a client at `peer` sending `authorization` (the header's value) may scrape.
    pub fn check(
        &self,
        peer: Option<SocketAddr>,
        authorization: Option<&str>,
    ) -> Result<(), Refusal> {
        match &self.token {
            Some(token) => {
                let given = authorization
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim);
                match given {
                    None => Err(Refusal::Unauthorized(
                        "missing metrics token (Authorization: Bearer ..., the token of admin.metrics_token_file)",
                    )),
                    Some(g) if same_secret(g, token) => Ok(()),
                    Some(_) => Err(Refusal::Unauthorized("wrong metrics token")),
                }
            }
            None => match peer {
                Some(p) if p.ip().to_canonical().is_loopback() => Ok(()),
                other => Err(Refusal::Forbidden(format!(
                    "/metrics answers only this machine (loopback) while admin.metrics_token_file is not set; {} is not loopback (docs/metrics.md)",
                    other.map_or_else(|| "this client".to_owned(), |p| p.ip().to_string())
                ))),
            },
        }
    }

    /// The Prometheus text, after reading the node's state; `None` without a recorder.
    pub async fn render(&self, store: &Store, drops: &IngestStatus) -> Option<String> {
        let h = handle()?;
        if let Err(e) = self.refresh(store, drops).await {
            // The figures already there are served; the next scrape tries again.
            tracing::warn!("metrics: reading the node's state: {e}");
        }
        Some(h.render())
    }

    #[tracing::instrument(name = "metrics_refresh", skip_all)]
    async fn refresh(&self, store: &Store, drops: &IngestStatus) -> Result<(), StoreError> {
        let node = store.node_id.to_string();
        metrics::gauge!(NODE_INFO, "node" => node, "cluster" => store.cluster_id.to_string())
            .set(1.0);
        raft(store);
        disks(store).await?;
        // The repair queue is small (its own table); the healing counters are in memory.
        let queued: u64 = store
            .meta
            .repair_queue_counts()
            .await?
            .iter()
            .map(|(_, n)| *n)
            .sum();
        metrics::gauge!(REPAIR_QUEUE).set(queued as f64);
        metrics::gauge!(REPAIR_QUEUE_BYTES).set(store.meta.repair_queue_bytes().await? as f64);
        metrics::gauge!(REPAIR_IN_PROGRESS).set(store.healing.in_progress().len() as f64);
        metrics::gauge!(REPAIR_PAUSED).set(flag(store.meta.repair_paused().await?));
        metrics::gauge!(SCRUB_PASS_TIME).set(
            store
                .healing
                .scrub_pass_done_ms()
                .map_or(0.0, |t| t as f64 / 1000.0),
        );
        let b = crate::meta_backup::status_now(store).await;
        let now = now_ms();
        metrics::gauge!(BACKUP_AGE).set(
            b.last_ms
                .map_or(-1.0, |t| now.saturating_sub(t) as f64 / 1000.0),
        );
        metrics::gauge!(BACKUP_TIME).set(b.last_ms.map_or(0.0, |t| t as f64 / 1000.0));
        metrics::gauge!(BACKUP_FAILING).set(flag(b.last_error.is_some()));
        metrics::gauge!(BACKUP_CHANGES).set(b.changes_since as f64);
        let c = &store.counters;
        for (name, a) in [
            (READ_DAMAGED, &c.damaged_part_reads),
            (READ_DEGRADED_ROWS, &c.degraded_rows),
            (READ_UNREADABLE, &c.unreadable),
        ] {
            metrics::counter!(name).absolute(a.load(Ordering::Relaxed));
        }
        let d = drops.snapshot();
        let count = |k: &str| d.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as f64;
        metrics::gauge!(INGEST_QUEUED).set(count("queued"));
        metrics::gauge!(INGEST_SETTLING).set(count("settling"));

        let mut slow = self.slow.lock().await;
        if slow.at.is_none_or(|t| t.elapsed() >= SLOW_EVERY) {
            refresh_slow(store, &mut slow).await?;
            slow.at = Some(Instant::now());
        }
        metrics::gauge!(SCRUB_OLDEST_AGE).set(
            slow.oldest_verified_ms
                .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0),
        );
        Ok(())
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Raft: role, term, indexes, and the contact with each other member.
fn raft(store: &Store) {
    let st = store.consensus.status();
    for (role, name) in [
        (RaftRole::Leader, "leader"),
        (RaftRole::Follower, "follower"),
        (RaftRole::Candidate, "candidate"),
        (RaftRole::Learner, "learner"),
        (RaftRole::Shutdown, "shutdown"),
    ] {
        metrics::gauge!(RAFT_ROLE, "role" => name).set(flag(st.role == role));
    }
    metrics::gauge!(RAFT_TERM).set(st.term as f64);
    metrics::gauge!(RAFT_LAST_LOG).set(st.last_log.unwrap_or(0) as f64);
    metrics::gauge!(RAFT_APPLIED).set(st.last_applied.unwrap_or(0) as f64);
    metrics::gauge!(RAFT_COMMIT).set(store.consensus.commit_index().unwrap_or(0) as f64);
    metrics::gauge!(RAFT_VOTERS).set(st.voters.len() as f64);
    // This node itself, so the series exists on a cluster of one too.
    metrics::gauge!(RAFT_CONTACT, "member" => store.node_id.to_string()).set(0.0);
    for (id, since) in store.consensus.member_contacts() {
        metrics::gauge!(RAFT_CONTACT, "member" => id.to_string())
            .set(since.map_or(-1.0, |d| d.as_secs_f64()));
    }
}

/// The labels of one of this node's disks.
fn disk_labels(d: &wormfs_parts::disk::LocalDisk) -> Vec<Label> {
    vec![
        Label::new("disk", d.id.to_string()),
        Label::new("path", d.root.display().to_string()),
    ]
}

fn with(mut labels: Vec<Label>, key: &'static str, value: &'static str) -> Vec<Label> {
    labels.push(Label::new(key, value));
    labels
}

/// This node's disks: space as last measured (a scrape wakes no disk: docs/operations.md,
/// "Disks that may sleep"), states, and the counters kept in memory.
async fn disks(store: &Store) -> Result<(), StoreError> {
    let statuses = store.disk_statuses().await?;
    for d in store.disks.iter() {
        let l = disk_labels(&d);
        let space = d.known_space();
        metrics::gauge!(DISK_TOTAL, l.clone()).set(space.total_bytes as f64);
        metrics::gauge!(DISK_FREE, l.clone()).set(space.free_bytes as f64);
        let (state, _) = d.state();
        for (s, name) in [
            (DiskState::Active, "active"),
            (DiskState::Full, "full"),
            (DiskState::ReadOnly, "read_only"),
            (DiskState::Missing, "missing"),
            (DiskState::MachineDown, "machine_down"),
        ] {
            metrics::gauge!(DISK_STATE, with(l.clone(), "state", name)).set(flag(state == s));
        }
        let status = statuses.get(&d.id).copied().unwrap_or(DiskStatus::Up);
        for s in [
            DiskStatus::Up,
            DiskStatus::Down,
            DiskStatus::Out,
            DiskStatus::Draining,
            DiskStatus::Drained,
            DiskStatus::Removed,
        ] {
            metrics::gauge!(DISK_STATUS, with(l.clone(), "status", s.as_str()))
                .set(flag(status == s));
        }
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        metrics::counter!(DISK_READ_ERRORS, l.clone()).absolute(n(&d.read_errors));
        metrics::counter!(DISK_WRITE_ERRORS, l.clone()).absolute(n(&d.write_errors));
        metrics::counter!(DISK_CHECKSUM_FAILURES, l.clone()).absolute(n(&d.checksum_failures));
        metrics::counter!(DISK_READ_BYTES, l.clone()).absolute(n(&d.bytes_read));
        metrics::counter!(DISK_WRITTEN_BYTES, l).absolute(n(&d.bytes_written));
    }
    Ok(())
}

/// The figures that scan tables: segments by tolerance, totals, each disk's parts, scrub.
async fn refresh_slow(store: &Store, slow: &mut Slow) -> Result<(), StoreError> {
    let meta = &store.meta;
    let by_tolerance = meta.redundancy().await?;
    let now: BTreeSet<i64> = by_tolerance.iter().map(|t| t.tolerance).collect();
    for gone in slow.tolerances.difference(&now) {
        metrics::gauge!(SEGMENTS, "tolerance" => gone.to_string()).set(0.0);
    }
    for t in &by_tolerance {
        metrics::gauge!(SEGMENTS, "tolerance" => t.tolerance.to_string()).set(t.segments as f64);
    }
    slow.tolerances.extend(now);
    let below: u64 = by_tolerance.iter().map(|t| t.below_policy).sum();
    metrics::gauge!(SEGMENTS_BELOW_POLICY).set(below as f64);
    let totals = meta.totals().await?;
    metrics::gauge!(FILES).set(totals.files as f64);
    metrics::gauge!(LOGICAL_BYTES).set(totals.logical_bytes as f64);
    let records = meta.disks().await?;
    for d in store.disks.iter() {
        if let Some(r) = records.iter().find(|r| r.disk_id == d.id) {
            metrics::gauge!(DISK_USED, disk_labels(&d)).set(r.part_bytes as f64);
            metrics::gauge!(DISK_PARTS, disk_labels(&d)).set(r.parts as f64);
        }
    }
    let scrub = crate::healing::health::scrub_status(store).await?;
    metrics::gauge!(SCRUB_PARTS).set(scrub.parts as f64);
    metrics::gauge!(SCRUB_PARTS_VERIFIED).set(scrub.parts_verified as f64);
    metrics::gauge!(SCRUB_PROGRESS).set(if scrub.parts == 0 {
        1.0
    } else {
        scrub.parts_verified as f64 / scrub.parts as f64
    });
    metrics::gauge!(SCRUB_BYTES_LEFT).set(scrub.bytes_left as f64);
    slow.oldest_verified_ms = scrub
        .oldest_verified_age_secs
        .map(|age| now_ms().saturating_sub(age * 1000));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/metrics.md has a table row for every metric, with its kind and labels, and names
    /// none that does not exist.
    #[test]
    fn metrics_md_documents_every_metric() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
        let doc = std::fs::read_to_string(path).expect("docs/metrics.md");
        let mut documented = std::collections::BTreeMap::new();
        for line in doc.lines() {
            let Some(rest) = line.strip_prefix("| `wormfs_") else {
                continue;
            };
            let cells: Vec<&str> = rest.split('|').map(str::trim).collect();
            let name = format!("wormfs_{}", cells[0].trim_end_matches('`'));
            documented.insert(name, (cells[1].to_owned(), cells[2].to_owned()));
        }
        let mut problems = Vec::new();
        for d in DEFS {
            match documented.remove(d.name) {
                None => problems.push(format!("{} is not in docs/metrics.md", d.name)),
                Some((kind, labels)) => {
                    if kind != d.kind.as_str() {
                        problems.push(format!(
                            "{}: documented as {kind}, is {}",
                            d.name,
                            d.kind.as_str()
                        ));
                    }
                    let want = if d.labels.is_empty() {
                        "-".to_owned()
                    } else {
                        d.labels
                            .iter()
                            .map(|l| format!("`{l}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    if labels != want {
                        problems.push(format!(
                            "{}: labels documented as {labels}, are {want}",
                            d.name
                        ));
                    }
                }
            }
        }
        for name in documented.keys() {
            problems.push(format!(
                "docs/metrics.md lists {name}, which is not exported"
            ));
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn names_are_unique_and_prefixed() {
        let mut seen = BTreeSet::new();
        for d in DEFS {
            assert!(d.name.starts_with("wormfs_"), "{}", d.name);
            assert!(seen.insert(d.name), "{} twice", d.name);
            assert_eq!(
                d.kind == Kind::Counter,
                d.name.ends_with("_total"),
                "{}",
                d.name
            );
        }
    }

    #[test]
    fn the_token_or_loopback_decides() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let lan: SocketAddr = "192.168.1.20:5000".parse().unwrap();
        let open = Exporter {
            token: None,
            slow: Default::default(),
        };
        assert_eq!(open.check(Some(local), None), Ok(()));
        assert_eq!(open.check(Some(mapped), None), Ok(()));
        assert!(
            matches!(open.check(Some(lan), None), Err(Refusal::Forbidden(m)) if m.contains("192.168.1.20"))
        );
        assert!(matches!(open.check(None, None), Err(Refusal::Forbidden(_))));
        let closed = Exporter {
            token: Some("s3cret".into()),
            slow: Default::default(),
        };
        assert!(matches!(
            closed.check(Some(local), None),
            Err(Refusal::Unauthorized(_))
        ));
        assert_eq!(
            closed.check(Some(local), Some("Bearer nope")),
            Err(Refusal::Unauthorized("wrong metrics token"))
        );
        assert_eq!(closed.check(Some(lan), Some("Bearer s3cret")), Ok(()));
        assert!(closed.check(Some(lan), Some("Basic s3cret")).is_err());
    }
}
