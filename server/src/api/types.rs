//! The contract of the node API (`/api/v1`): every query, request body and JSON answer as a
//! Rust type. The API builds its answers from these types and the CLI reads them back into the
//! same types, so a field renamed on one side is a compile error on the other. docs/api.md
//! documents each type; a test (`api::doc_check`) fails when a field here is missing there or
//! the other way round.
//!
//! Types the engine already has (the Raft status, the cluster view, disk reports, ingest
//! results, sweep reports, drop-folder items, directory entries) are reused, not copied: their
//! wire form is spelled out here with serde's remote derive (the private `*Wire` types). The
//! names on the wire are therefore fixed in this file, whatever the engine's own `Serialize`
//! says, and a field added to or renamed in an engine type is a compile error here until the
//! contract (and docs/api.md) follows.
//!
//! Every field is always present in an answer (`null` when it has no value), except where a
//! field says it is left out.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::consensus::{ClusterView, Formation, Member, RaftRole, RaftStatus};
use crate::drop_folders::{Item, ItemState};
use crate::ingest::{CommittedEntry, IngestResult};
use crate::store::DiskReport;
use crate::sweeper::SweepReport;
use wormfs_meta::command::{Lock, SourceIdentity};
use wormfs_meta::{DirEntry, EntryKind};
use wormfs_parts::disk::{DiskState, MountInfo, Space};
use wormfs_parts::ids::{ClusterId, DiskId, FileId, NodeId};
use wormfs_parts::layout::Geometry;

// ---------------------------------------------------------------------------------------------
// Errors

/// The body of every error answer (any status of 400 or more).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// What went wrong, for programs.
    pub kind: ErrorKind,
    /// The WebDAV locks in the way (`kind` `locked` only; left out otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<LockInfo>,
}

/// The `kind` of an error answer; docs/api.md gives the status of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 400: a bad path, policy, query or header.
    BadRequest,
    /// 401: the token is missing, wrong or revoked.
    Unauthorized,
    /// 403: a read-only token asked for a change.
    Forbidden,
    /// 404: no such file, directory or endpoint.
    NotFound,
    /// 409: the name is taken.
    AlreadyExists,
    /// 409: not a directory, is a directory, not empty, or changed meanwhile.
    Conflict,
    /// 409: a node removal refused (the node was heard from recently).
    Refused,
    /// 403: a retained file (or a directory holding one) cannot be deleted, replaced, moved,
    /// renamed or appended to yet; the message says until when (RFC 3339, UTC).
    Retained,
    /// 416: a range that starts past the end of the file.
    BadRange,
    /// 412: `If-Match` names another version of the file (it was replaced meanwhile).
    PreconditionFailed,
    /// 423: a WebDAV lock is in the way.
    Locked,
    /// 500: a fault of the node (its log says more).
    Internal,
    /// 500: a node removal that failed.
    Failed,
    /// 503: no Raft quorum.
    NoQuorum,
    /// 503: this node's metadata failed; it serves reads only.
    ReadOnly,
    /// 503: Raft cannot serve the request now.
    Unavailable,
    /// 503: the file cannot be read (too few readable parts).
    Unreadable,
    /// 503: a node removal without a majority of voters.
    NoMajority,
    /// 507: not enough writable disks or space.
    InsufficientStorage,
    /// 429: too many failed logins from this address (the admin page's login); retry later.
    Throttled,
    /// A kind this client does not know (from a newer node); never sent.
    #[serde(other)]
    Other,
}

/// A WebDAV lock, as error and write answers list it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The locked path.
    pub path: String,
    /// The user holding it (`null`: an anonymous client).
    pub principal: Option<String>,
    /// The client's `owner` XML.
    pub owner: Option<String>,
    /// The lock token.
    pub token: String,
    /// A shared (not exclusive) lock.
    pub shared: bool,
    /// It covers everything below the path too.
    pub depth_infinity: bool,
    /// When it expires, ms since the epoch.
    pub expires_ms: u64,
    /// Seconds until it expires (rounded up).
    pub expires_in_secs: u64,
}

impl LockInfo {
    /// A lock as answers show it, `now_ms` being the time now.
    pub fn new(l: &Lock, now_ms: u64) -> Self {
        LockInfo {
            path: l.path.clone(),
            principal: l.principal.clone(),
            owner: l
                .owner_xml
                .as_deref()
                .map(|x| String::from_utf8_lossy(x).into_owned()),
            token: l.token.clone(),
            shared: l.shared,
            depth_infinity: l.deep,
            expires_ms: l.expires_ms,
            expires_in_secs: l.expires_ms.saturating_sub(now_ms).div_ceil(1000),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Queries and request bodies

/// Query of `PUT /api/v1/files/...`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PutQuery {
    /// `ec:K+M` or `copies:N`; default: the directory's policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// If the name is taken: `rename`, `replace`, `skip` or `fail`; default: the node's
    /// `storage.conflict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
    /// Remove the WebDAV locks in the way instead of answering 423.
    #[serde(default)]
    pub break_locks: bool,
}

/// Query of an append or a move.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LocksQuery {
    /// Remove the WebDAV locks in the way instead of answering 423.
    #[serde(default)]
    pub break_locks: bool,
}

/// Query of `GET /api/v1/trash`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrashQuery {
    /// Only the files deleted at this path or below it (their original paths).
    #[serde(default)]
    pub path: Option<String>,
}

/// Body of `POST /api/v1/trash/restore`: the trash entry `id`, or else the newest one whose
/// original path is `path`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrashRestoreRequest {
    /// The file's original path.
    #[serde(default)]
    pub path: Option<String>,
    /// The trash entry's id (as `GET /api/v1/trash` lists it).
    #[serde(default)]
    pub id: Option<u64>,
    /// Where it goes (its original path by default); refused if something is there.
    #[serde(default)]
    pub to: Option<String>,
}

/// Body of `POST /api/v1/trash/empty`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrashEmptyRequest {
    /// Only what was deleted more than this many days ago (fractions allowed); all by default.
    #[serde(default)]
    pub older_than_days: Option<f64>,
}

/// Body of `PUT /api/v1/retention/...`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RetentionRequest {
    /// A duration such as `30d`, `12h`, `90s`, `1y` (units s, m, h, d, w, y), or `null` (or
    /// `none`) to inherit the parent's again. Applies to files written afterwards.
    pub retain: Option<String>,
}

/// Query of `DELETE /api/v1/files/...`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RmQuery {
    /// Remove a directory and everything in it.
    #[serde(default)]
    pub recursive: bool,
    /// Remove the WebDAV locks in the way instead of answering 423.
    #[serde(default)]
    pub break_locks: bool,
}

/// Query of `POST /api/v1/mkdir/...`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MkdirQuery {
    /// Make missing parents; no error if the directory exists.
    #[serde(default)]
    pub parents: bool,
}

/// Query of a node removal.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RemoveQuery {
    /// Remove it even though it was heard from in the last few seconds.
    #[serde(default)]
    pub force: bool,
}

/// Body of `POST /api/v1/mv`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MvRequest {
    /// The path to move.
    pub from: String,
    /// Where to.
    pub to: String,
    /// Replace an existing file at `to`.
    #[serde(default)]
    pub replace: bool,
    /// Break WebDAV locks in the way (as the `break_locks` query parameter).
    #[serde(default)]
    pub break_locks: bool,
}

/// Body of `PUT /api/v1/policy/...`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyRequest {
    /// `ec:K+M` or `copies:N`; `null` to inherit the parent's.
    pub policy: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Answers

/// Answer of `GET /api/v1/health`.
pub use crate::alerts::node_health::{HealthResponse, NodeHealth};

/// Answer of `GET /api/v1/alerts`.
pub use crate::alerts::{ActiveAlert, AlertsResponse, Delivery};
pub use crate::media_notify::{MediaServerStatus, NotifyOutcome, NotifyResult, NotifyTestResult};

/// One event (`GET /api/v1/events`).
pub use wormfs_meta::command::EventSeverity;
pub use wormfs_meta::EventRecord;

/// Query of `GET /api/v1/events`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EventsQuery {
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Only events with an id below this one (paging back).
    pub before: Option<u64>,
    /// Only events with an id above this one (following).
    pub after: Option<u64>,
}

/// Answer of `GET /api/v1/events`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventsResponse {
    /// Newest first.
    pub events: Vec<EventRecord>,
}

/// Answer of `POST /api/v1/alerts/test`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AlertTestResponse {
    /// One per webhook, in the configured order.
    pub deliveries: Vec<Delivery>,
}

/// Answer of `POST /api/v1/notify/test`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NotifyTestResponse {
    /// One per media server of the node answering, in its config's order (empty: none).
    pub servers: Vec<NotifyTestResult>,
}

/// Answer of `GET /api/v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusResponse {
    /// The cluster's id.
    pub cluster_id: ClusterId,
    /// The node answering.
    pub node_id: NodeId,
    /// Whether anything is missing, a disk is not active, or the store is full.
    pub health: Health,
    /// Why `health` is not `healthy`, in words (empty when it is).
    #[serde(default)]
    pub health_reason: String,
    /// Files in the namespace.
    pub files: u64,
    /// Directories (without the root).
    pub directories: u64,
    /// Bytes of all files.
    pub logical_bytes: u64,
    /// Segments of all files.
    pub segments: u64,
    /// Parts recorded as missing (waiting for repair).
    pub missing_parts: u64,
    /// Writes under way in the cluster.
    pub ingests_in_progress: u64,
    /// Disks in the cluster (not removed).
    pub disks: usize,
    /// Of those, disks that take new parts, on every machine (each as its machine reports it).
    pub disks_active: usize,
    /// Of those, disks that are full.
    #[serde(default)]
    pub disks_full: usize,
    /// Of those, disks whose machine does not answer.
    #[serde(default)]
    pub disks_machine_down: usize,
    /// Bytes used on the disks' filesystems (each filesystem counted once), WormFS's and
    /// anything else's.
    pub disk_bytes_used: u64,
    /// About how many bytes of WormFS parts the disks hold.
    #[serde(default)]
    pub part_bytes: u64,
    /// Why this node serves reads only (its metadata failed); `null` when it does not.
    pub read_only: Option<String>,
    /// This node's Raft state.
    #[serde(with = "RaftStatusWire")]
    pub raft: RaftStatus,
    /// This node's counters since it started.
    pub counters: StatusCounters,
    /// This node's last metadata backup to its disks.
    pub meta_backup: BackupStatus,
    /// What the trash holds (not counted in `files` and `logical_bytes`).
    #[serde(default)]
    pub trash: TrashFigures,
    /// The media servers this node tells about changes, with their last notification (empty
    /// when it has none).
    #[serde(default)]
    pub media_servers: Vec<MediaServerStatus>,
}

/// `health` of the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Nothing missing, every disk active.
    Healthy,
    /// Missing parts or a disk that is not active.
    Degraded,
    /// Too few disks have room for a new file's parts: writes fail until space is freed or
    /// disks are added.
    Full,
}

/// `counters` of the status: this node's, since it started.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatusCounters {
    /// Files committed.
    pub ingests_committed: u64,
    /// Ingests that failed.
    pub ingests_failed: u64,
    /// Parts found missing, unreadable or corrupt during reads.
    pub damaged_part_reads: u64,
    /// Rows decoded around a damaged part.
    pub degraded_rows: u64,
    /// Reads that could not be served.
    pub unreadable: u64,
    /// Orphan parts removed by the sweeper.
    pub orphans_swept: u64,
}

/// Answer of `GET /api/v1/cluster`: the cluster as the node answering sees it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterResponse(#[serde(with = "ClusterViewWire")] pub ClusterView);

/// Answer of `GET /api/v1/disks`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DisksResponse {
    /// Every disk of the cluster, with what this node sees of its own.
    #[serde(with = "disk_reports")]
    pub disks: Vec<DiskReport>,
    /// What the trash holds (its parts are on these disks until it is emptied).
    #[serde(default)]
    pub trash: TrashFigures,
}

/// What the trash holds, in `status` and `disks`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashFigures {
    /// Whether deletes go to the trash now (the replicated setting).
    pub enabled: bool,
    /// Trash entries.
    pub entries: u64,
    /// Files named only by the trash: what emptying it frees.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Their parts' bytes on the disks (parity or copies included).
    pub stored_bytes: u64,
}

impl From<wormfs_meta::TrashTotals> for TrashFigures {
    fn from(t: wormfs_meta::TrashTotals) -> Self {
        Self {
            enabled: t.enabled,
            entries: t.entries,
            files: t.files,
            bytes: t.bytes,
            stored_bytes: t.stored_bytes,
        }
    }
}

/// A file in the trash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashItem {
    /// The trash entry's id.
    pub id: u64,
    /// Its full path when it was deleted or replaced.
    pub path: String,
    /// When (ms since the epoch).
    pub deleted_ms: u64,
    /// Its last change before (ms since the epoch).
    pub mtime_ms: u64,
    /// The file's id.
    pub file_id: FileId,
    /// Bytes.
    pub size: u64,
    /// Bytes its parts take on the disks.
    pub stored_bytes: u64,
    /// The file still has a name outside the trash (a copy): purging this entry frees nothing.
    pub shared: bool,
}

impl From<wormfs_meta::TrashEntry> for TrashItem {
    fn from(e: wormfs_meta::TrashEntry) -> Self {
        Self {
            id: e.id,
            path: e.path,
            deleted_ms: e.deleted_ms,
            mtime_ms: e.mtime_ms,
            file_id: e.file_id,
            size: e.size,
            stored_bytes: e.stored_bytes,
            shared: e.shared,
        }
    }
}

/// Answer of `GET /api/v1/trash`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrashResponse {
    /// The entries, oldest first.
    pub entries: Vec<TrashItem>,
    /// The whole trash's figures (not only the entries listed).
    pub totals: TrashFigures,
    /// Days a file stays in the trash on this node's config (0: the trash is off).
    pub trash_days: f64,
}

/// Answer of `POST /api/v1/trash/restore`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrashRestoreResponse {
    /// The trash entry restored.
    pub id: u64,
    /// Its original path.
    pub from: String,
    /// Where it is now.
    pub to: String,
}

/// Answer of `POST /api/v1/trash/empty`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrashEmptyResponse {
    /// Trash entries dropped.
    pub entries: u64,
    /// Bytes of the files freed (their parts go at the sweeper's next pass).
    pub bytes: u64,
}

/// Answer of `GET /api/v1/ingest`: this node's drop folders.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IngestStatusResponse {
    /// The folders watched.
    pub folders: Vec<DropFolderInfo>,
    /// Files found but still being written or settling.
    pub settling: usize,
    /// Files waiting for their turn.
    pub queued: usize,
    /// Files being stored.
    pub in_progress: usize,
    /// Files stored (the most recent ones).
    pub done: usize,
    /// Files that failed (tried again later).
    pub failed: usize,
    /// The files, oldest change first.
    #[serde(with = "drop_items")]
    pub items: Vec<Item>,
}

/// A watched drop folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DropFolderInfo {
    /// The folder.
    pub path: PathBuf,
    /// Where its files go in the tree.
    pub tree: String,
    /// What happens to a file once stored: `delete`, `move` or `keep`.
    pub after: String,
    /// Where stored files are moved (`after` `move`).
    pub done_dir: Option<PathBuf>,
    /// How it is watched: `inotify` or `poll`.
    pub watch: String,
    /// How long a file must stay unchanged before it is taken, ms.
    pub settle_ms: u64,
    /// What happens when the name is taken.
    pub conflict: String,
    /// The folder's policy (`null`: the tree's).
    pub policy: Option<String>,
}

/// Answer of a write (`PUT /api/v1/files/...`, `POST /api/v1/append/...`): the engine's
/// [`IngestResult`] and the locks the write broke.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WriteResponse {
    /// What was stored.
    #[serde(flatten, with = "IngestResultWire")]
    pub result: IngestResult,
    /// The WebDAV locks removed (`break_locks`); left out when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broken_locks: Vec<LockInfo>,
}

/// Answer of a removal or move that broke WebDAV locks (status 200; without broken locks the
/// answer is 204 with no body).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BrokenLocks {
    /// The locks removed.
    pub broken_locks: Vec<LockInfo>,
}

/// Answer of `GET /api/v1/list/...`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListResponse {
    /// The directory (or file) listed.
    pub path: String,
    /// Its entries by name (a file: the file itself).
    #[serde(with = "dir_entries")]
    pub entries: Vec<DirEntry>,
}

/// Query of `GET /api/v1/changes`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChangesQuery {
    /// The epoch of the numbers the client follows (from an earlier answer); without it, or
    /// from another epoch, the answer is a reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The last number the client has seen.
    #[serde(default)]
    pub after: u64,
    /// How long to wait for a change when there is none yet, in ms (at most 30,000).
    #[serde(default)]
    pub wait_ms: u64,
}

/// Answer of `GET /api/v1/changes`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangesResponse {
    /// This node process's numbering (a new one at each start).
    pub epoch: u64,
    /// The newest number: ask for changes after it next.
    pub seq: u64,
    /// Drop everything cached: the changes since `after` are not all known.
    pub reset: bool,
    /// The changes after `after`, oldest first.
    pub changes: Vec<ChangeItem>,
}

/// One change in a [`ChangesResponse`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangeItem {
    /// Its number.
    pub seq: u64,
    /// What changed.
    pub change: wormfs_meta::changes::TreeChange,
}

/// Answer of `GET /api/v1/stat/...`: a directory or a file, told apart by `kind`.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StatResponse {
    /// `kind` `dir`.
    Dir(DirStat),
    /// `kind` `file`.
    File(Box<FileStat>),
}

/// Read by hand: serde's derive for a tagged enum buffers the fields in a form without 128-bit
/// integers, and a drop-folder file's `source` has one (`mtime_ns`).
impl<'de> Deserialize<'de> for StatResponse {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        match v.get("kind").and_then(serde_json::Value::as_str) {
            Some("dir") => serde_json::from_value(v).map(StatResponse::Dir),
            Some("file") => serde_json::from_value(v).map(StatResponse::File),
            other => return Err(D::Error::custom(format!("unknown stat kind {other:?}"))),
        }
        .map_err(D::Error::custom)
    }
}

/// A directory's stat (with `"kind": "dir"`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DirStat {
    /// The directory.
    pub path: String,
    /// Last change, ms since the epoch.
    pub mtime_ms: u64,
    /// Its own policy (`null`: inherited).
    pub policy: Option<String>,
    /// The policy new files in it get (`null`: the node's default).
    pub effective_policy: Option<String>,
    /// Its own retention in ms (`null`: inherited).
    #[serde(default)]
    pub retain_ms: Option<u64>,
    /// The retention files written in it get, in ms (`null`: none).
    #[serde(default)]
    pub effective_retain_ms: Option<u64>,
}

/// A file's stat (with `"kind": "file"`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileStat {
    /// The file.
    pub path: String,
    /// Its id (32 hex digits).
    pub file_id: FileId,
    /// Bytes.
    pub size: u64,
    /// Last change, ms since the epoch.
    pub mtime_ms: u64,
    /// Created, ms since the epoch.
    pub created_ms: u64,
    /// The policy it was written with.
    pub policy: String,
    /// Its segment geometry.
    pub geometry: Geometry,
    /// BLAKE3 of the whole content, hex (`null` after an append).
    pub blake3: Option<String>,
    /// Entity tag.
    pub etag: String,
    /// Where it came from.
    pub source: SourceIdentity,
    /// Its segments in order.
    pub segments: Vec<SegmentStat>,
    /// The failures it survives.
    pub tolerance: Tolerance,
    /// Until when (ms since the epoch) it cannot be deleted, replaced, moved or renamed
    /// (`null`: never retained; a past time: its retention has ended).
    #[serde(default)]
    pub retained_until_ms: Option<u64>,
}

/// A segment of a file's stat.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SegmentStat {
    /// Index within the file.
    pub index: u32,
    /// Offset of its first byte in the file.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
    /// BLAKE3 of its bytes, hex.
    pub blake3: String,
    /// Its parts, by index.
    pub parts: Vec<PartStat>,
}

/// A part of a segment, and where it is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartStat {
    /// Index in the segment.
    pub index: u16,
    /// The disk holding it (`null`: never written).
    pub disk_id: Option<DiskId>,
    /// That disk's path on its machine.
    pub disk_path: Option<String>,
    /// That disk's machine.
    pub node_id: Option<NodeId>,
    /// That machine's name.
    pub node_name: Option<String>,
    /// Whether it is missing or damaged (waiting for repair).
    pub missing: bool,
    /// In words: `ok`, `ok, disk draining`, `missing`, `damaged`, `disk down`, `lost with
    /// its disk`, `disk unknown`.
    pub state: String,
}

/// What `stat` says about how many failures a file survives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tolerance {
    /// Parts of any one segment that its policy lets it lose (`m`).
    pub policy_parts: usize,
    /// Parts of any one segment that can be lost now.
    pub parts: usize,
    /// Disks (failure domains: filesystems) that can fail.
    pub disks: usize,
    /// Machines that can fail.
    pub machines: usize,
    /// A sentence for people.
    pub summary: String,
}

/// Answer of `GET /api/v1/policy/...`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyResponse {
    /// The directory.
    pub path: String,
    /// Its own policy (`null`: inherited).
    pub policy: Option<String>,
    /// The policy files written in it get.
    pub effective: String,
    /// Whether `effective` comes from a parent or the default.
    pub inherited: bool,
    /// The node's default policy.
    pub default: String,
    /// The policy of files under `small_file_threshold_bytes`.
    pub small_files: String,
    /// Files smaller than this get `small_files`.
    pub small_file_threshold_bytes: u64,
}

/// Answer of `POST /api/v1/admin/snapshot`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotResponse {
    /// The log index the snapshot covers (the log is purged up to it).
    pub snapshot_index: u64,
}

/// Answer of `POST /api/v1/admin/sweep`: the sweeper's report.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SweepResponse(#[serde(with = "SweepReportWire")] pub SweepReport);

/// Answer of `POST /api/v1/admin/nodes/{id}/remove`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoveResponse {
    /// The node removed.
    pub removed: NodeId,
}

impl Health {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Full => "full",
        }
    }
}

/// A disk state's name on the wire (`read_only`), for people.
pub fn disk_state_name(s: DiskState) -> String {
    wire_str(DiskStateWire::serialize(&s, serde_json::value::Serializer))
}

/// A drop-folder item state's name on the wire (`in_progress`), for people.
pub fn item_state_name(s: ItemState) -> String {
    wire_str(ItemStateWire::serialize(&s, serde_json::value::Serializer))
}

fn wire_str(v: Result<serde_json::Value, serde_json::Error>) -> String {
    match v {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// The wire form of the engine's types (serde's remote derive: each field list is checked
// against the type it names at compile time).

#[derive(Serialize, Deserialize)]
#[serde(remote = "RaftRole", rename_all = "snake_case")]
pub(crate) enum RaftRoleWire {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "RaftStatus")]
pub(crate) struct RaftStatusWire {
    term: u64,
    leader: Option<NodeId>,
    #[serde(with = "RaftRoleWire")]
    role: RaftRole,
    last_log: Option<u64>,
    last_applied: Option<u64>,
    snapshot: Option<u64>,
    purged: Option<u64>,
    voters: Vec<NodeId>,
    learners: Vec<NodeId>,
}

#[derive(Serialize, Deserialize)]
#[serde(
    remote = "Formation",
    rename_all = "snake_case",
    tag = "state",
    content = "detail"
)]
pub(crate) enum FormationWire {
    Starting,
    Searching,
    Blocked(String),
    Founded,
    Joined(u64),
    Member,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "ClusterView")]
pub(crate) struct ClusterViewWire {
    cluster_name: String,
    cluster_id: Option<String>,
    node_id: NodeId,
    peer_id: String,
    listen: Vec<String>,
    #[serde(with = "FormationWire")]
    formation: Formation,
    term: u64,
    leader: Option<NodeId>,
    last_log_index: Option<u64>,
    last_applied: Option<u64>,
    millis_since_quorum_ack: Option<u64>,
    #[serde(with = "members")]
    members: Vec<Member>,
}

/// `&'static str` under another name: serde borrows a field written `&str` from its input,
/// which a role read from an answer cannot be.
type StaticStr = &'static str;

/// A member's role, read back as the engine's static strings.
fn member_role<'de, D: Deserializer<'de>>(d: D) -> Result<StaticStr, D::Error> {
    match String::deserialize(d)?.as_str() {
        "voter" => Ok("voter"),
        "learner" => Ok("learner"),
        other => Err(serde::de::Error::custom(format!(
            "unknown member role {other:?}"
        ))),
    }
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Member")]
pub(crate) struct MemberWire {
    node_id: NodeId,
    name: Option<String>,
    #[serde(deserialize_with = "member_role")]
    role: StaticStr,
    leader: bool,
    addr: String,
    api_addr: Option<String>,
    data_addr: Option<String>,
    data_cert: Option<String>,
    connected: bool,
    last_contact_ms: Option<u64>,
    matched: Option<u64>,
    lag: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Space")]
pub(crate) struct SpaceWire {
    total_bytes: u64,
    free_bytes: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "DiskState", rename_all = "snake_case")]
pub(crate) enum DiskStateWire {
    Active,
    Full,
    ReadOnly,
    Missing,
    MachineDown,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "DiskReport")]
pub(crate) struct DiskReportWire {
    disk_id: DiskId,
    node_id: NodeId,
    machine: String,
    path: String,
    filesystem: u64,
    mount: Option<MountInfo>,
    #[serde(with = "SpaceWire")]
    space: Space,
    #[serde(with = "DiskStateWire")]
    state: DiskState,
    reason: String,
    status: DiskStatus,
    status_reason: String,
    parts: u64,
    part_bytes: u64,
    oldest_verified_ms: Option<u64>,
    bytes_read: u64,
    bytes_written: u64,
    read_errors: u64,
    checksum_failures: u64,
    write_errors: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "IngestResult")]
pub(crate) struct IngestResultWire {
    path: String,
    file_id: FileId,
    size: u64,
    blake3: String,
    policy: String,
    skipped: bool,
    replaced: bool,
    missing_parts: usize,
    machines_tolerated: usize,
    policy_machines_tolerated: usize,
    respread_parts: usize,
    #[serde(skip)]
    committed: Option<CommittedEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "SweepReport")]
pub(crate) struct SweepReportWire {
    scanned: u64,
    removed: u64,
    temp_removed: u64,
    kept_young: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "ItemState", rename_all = "snake_case")]
pub(crate) enum ItemStateWire {
    Queued,
    InProgress,
    Done,
    Failed,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Item")]
pub(crate) struct ItemWire {
    source: String,
    dest: String,
    #[serde(with = "ItemStateWire")]
    state: ItemState,
    size: u64,
    bytes_done: u64,
    rate: u64,
    updated_ms: u64,
    note: Option<String>,
    attempts: u32,
    next_try_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "EntryKind", rename_all = "lowercase")]
pub(crate) enum EntryKindWire {
    Dir,
    File,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "DirEntry")]
pub(crate) struct DirEntryWire {
    name: String,
    #[serde(with = "EntryKindWire")]
    kind: EntryKind,
    size: u64,
    mtime_ms: u64,
    file_id: Option<FileId>,
    etag: Option<String>,
    policy: Option<String>,
}

/// `#[serde(with = "...")]` for a `Vec` of an engine type, through its `*Wire` form.
macro_rules! wire_vec {
    ($module:ident, $t:ty, $wire:ident) => {
        mod $module {
            use super::*;

            struct Out<'a>(&'a $t);

            impl Serialize for Out<'_> {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    $wire::serialize(self.0, s)
                }
            }

            struct In($t);

            impl<'de> Deserialize<'de> for In {
                fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    $wire::deserialize(d).map(In)
                }
            }

            pub(super) fn serialize<S: serde::Serializer>(
                v: &[$t],
                s: S,
            ) -> Result<S::Ok, S::Error> {
                s.collect_seq(v.iter().map(Out))
            }

            pub(super) fn deserialize<'de, D: Deserializer<'de>>(
                d: D,
            ) -> Result<Vec<$t>, D::Error> {
                Ok(Vec::<In>::deserialize(d)?
                    .into_iter()
                    .map(|i| i.0)
                    .collect())
            }
        }
    };
}

wire_vec!(members, Member, MemberWire);
wire_vec!(disk_reports, DiskReport, DiskReportWire);
wire_vec!(drop_items, Item, ItemWire);
wire_vec!(dir_entries, DirEntry, DirEntryWire);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The wire form of an engine type is what the engine's own `Serialize` gives (the answers
    /// kept their shape when they became types), and it reads back into the same.
    fn same_as_engine<E: Serialize, W: Serialize + for<'de> Deserialize<'de>>(
        engine: &E,
        wrap: impl FnOnce() -> W,
    ) {
        let want = serde_json::to_value(engine).unwrap();
        let got = serde_json::to_value(wrap()).unwrap();
        assert_eq!(got, want);
        let back: W = serde_json::from_value(got.clone()).unwrap();
        assert_eq!(serde_json::to_value(back).unwrap(), got);
    }

    #[derive(Serialize, Deserialize)]
    struct Raft(#[serde(with = "RaftStatusWire")] RaftStatus);

    fn member(role: &'static str) -> Member {
        Member {
            node_id: 2,
            name: Some("b".into()),
            role,
            leader: false,
            addr: "/ip4/127.0.0.2/tcp/7712".into(),
            api_addr: None,
            data_addr: Some("127.0.0.2:7713".into()),
            data_cert: None,
            connected: true,
            last_contact_ms: Some(12),
            matched: None,
            lag: Some(3),
        }
    }

    fn view(formation: Formation) -> ClusterView {
        ClusterView {
            cluster_name: "home".into(),
            cluster_id: None,
            node_id: 1,
            peer_id: "12D3".into(),
            listen: vec!["/ip4/127.0.0.1/tcp/7712".into()],
            formation,
            term: 4,
            leader: Some(1),
            last_log_index: Some(9),
            last_applied: None,
            millis_since_quorum_ack: Some(5),
            members: vec![member("voter"), member("learner")],
        }
    }

    #[test]
    fn engine_types_keep_their_shape() {
        let raft = || RaftStatus {
            term: 3,
            leader: None,
            role: RaftRole::Follower,
            last_log: Some(7),
            last_applied: Some(7),
            snapshot: None,
            purged: Some(2),
            voters: vec![1, 2, 3],
            learners: vec![],
        };
        same_as_engine(&raft(), || Raft(raft()));
        for f in [
            Formation::Starting,
            Formation::Searching,
            Formation::Blocked("why".into()),
            Formation::Founded,
            Formation::Joined(3),
            Formation::Member,
        ] {
            same_as_engine(&view(f.clone()), || ClusterResponse(view(f)));
        }
        let disk = |state| DiskReport {
            status: DiskStatus::Up,
            status_reason: String::new(),
            disk_id: DiskId(uuid::Uuid::from_u128(7)),
            node_id: 1,
            machine: "nas1".into(),
            path: "/d0".into(),
            filesystem: 2049,
            mount: Some(MountInfo {
                mount_point: "/".into(),
                device: "/dev/sda1".into(),
            }),
            space: Space {
                total_bytes: 100,
                free_bytes: 40,
            },
            state,
            reason: String::new(),
            parts: 5,
            part_bytes: 500,
            oldest_verified_ms: Some(9),
            bytes_read: 1,
            bytes_written: 2,
            read_errors: 0,
            checksum_failures: 0,
            write_errors: 0,
        };
        for s in [
            DiskState::Active,
            DiskState::Full,
            DiskState::ReadOnly,
            DiskState::Missing,
            DiskState::MachineDown,
        ] {
            same_as_engine(
                &json!({ "disks": [disk(s)], "trash": TrashFigures::default() }),
                || DisksResponse {
                    disks: vec![disk(s)],
                    trash: TrashFigures::default(),
                },
            );
        }
        let result = IngestResult {
            path: "/a".into(),
            file_id: FileId(0xabc),
            size: 3,
            blake3: "00".into(),
            policy: "copies:3".into(),
            skipped: false,
            replaced: true,
            missing_parts: 1,
            machines_tolerated: 0,
            policy_machines_tolerated: 1,
            respread_parts: 1,
            committed: None,
        };
        same_as_engine(&result, || WriteResponse {
            result: result.clone(),
            broken_locks: vec![],
        });
        let sweep = || SweepReport {
            scanned: 4,
            removed: 3,
            temp_removed: 2,
            kept_young: 1,
        };
        same_as_engine(&sweep(), || SweepResponse(sweep()));
        let entry = |kind| DirEntry {
            name: "n".into(),
            kind,
            size: 0,
            mtime_ms: 5,
            file_id: None,
            etag: None,
            policy: Some("ec:4+2".into()),
        };
        same_as_engine(
            &json!({"path": "/", "entries": [entry(EntryKind::Dir), entry(EntryKind::File)]}),
            || ListResponse {
                path: "/".into(),
                entries: vec![entry(EntryKind::Dir), entry(EntryKind::File)],
            },
        );
        let item = |state| Item {
            source: "/in/a".into(),
            dest: "/a".into(),
            state,
            size: 9,
            bytes_done: 4,
            rate: 2,
            updated_ms: 8,
            note: None,
            attempts: 1,
            next_try_ms: None,
        };
        let items: Vec<Item> = [
            ItemState::Queued,
            ItemState::InProgress,
            ItemState::Done,
            ItemState::Failed,
        ]
        .into_iter()
        .map(item)
        .collect();
        let folder = json!({
            "path": "/in", "tree": "/", "after": "keep", "done_dir": null, "watch": "poll",
            "settle_ms": 500, "conflict": "rename", "policy": null,
        });
        let status = json!({
            "folders": [folder], "settling": 1, "queued": 1, "in_progress": 1, "done": 1,
            "failed": 1, "items": items,
        });
        let read: IngestStatusResponse = serde_json::from_value(status.clone()).unwrap();
        same_as_engine(&status, || read);
    }

    #[test]
    fn a_drop_folder_file_stat_reads_back() {
        let file = FileStat {
            path: "/films/a.mkv".into(),
            file_id: FileId(1),
            size: 2,
            mtime_ms: 3,
            created_ms: 4,
            policy: "copies:2".into(),
            geometry: Geometry {
                codec: wormfs_parts::codec::CodecId::Replica,
                k: 1,
                m: 1,
                block_size: 4096,
                part_capacity: 1 << 20,
            },
            blake3: None,
            etag: "e".into(),
            source: SourceIdentity::DropFolder {
                path: "/in/a.mkv".into(),
                size: 2,
                mtime_ns: 1_765_000_000_123_456_789,
                inode: 5,
                dev: 6,
            },
            segments: vec![],
            tolerance: Tolerance {
                policy_parts: 0,
                parts: 0,
                disks: 0,
                machines: 0,
                summary: "empty file: nothing to lose".into(),
            },
            retained_until_ms: None,
        };
        let text = serde_json::to_string(&StatResponse::File(Box::new(file))).unwrap();
        let back: StatResponse = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        assert!(matches!(back, StatResponse::File(f) if f.path == "/films/a.mkv"));
        let bad = serde_json::from_str::<StatResponse>(r#"{"kind": "link"}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn optional_fields_are_left_out_only_where_documented() {
        let e = ErrorBody {
            error: "no".into(),
            kind: ErrorKind::NotFound,
            locks: vec![],
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"error": "no", "kind": "not_found"})
        );
        let unknown: ErrorBody =
            serde_json::from_value(json!({"error": "x", "kind": "from_the_future"})).unwrap();
        assert_eq!(unknown.kind, ErrorKind::Other);
        let dir = StatResponse::Dir(DirStat {
            path: "/".into(),
            mtime_ms: 1,
            policy: None,
            effective_policy: None,
            retain_ms: None,
            effective_retain_ms: None,
        });
        assert_eq!(
            serde_json::to_value(&dir).unwrap(),
            json!({"kind": "dir", "path": "/", "mtime_ms": 1, "policy": null, "effective_policy": null,
                   "retain_ms": null, "effective_retain_ms": null})
        );
        let v: Value = serde_json::to_value(PolicyRequest { policy: None }).unwrap();
        assert_eq!(v, json!({ "policy": null }));
        for h in [Health::Healthy, Health::Degraded] {
            assert_eq!(serde_json::to_value(h).unwrap(), h.as_str());
        }
        assert_eq!(disk_state_name(DiskState::ReadOnly), "read_only");
        assert_eq!(item_state_name(ItemState::InProgress), "in_progress");
    }
}

pub use crate::healing::health::{HealthReport, RepairStatus, ScrubStatus, Verdict};
pub use crate::healing::{RepairCounters, RepairInProgress, ScrubCounters};
pub use crate::meta_backup::BackupStatus;
pub use wormfs_meta::command::{DiskStatus, SegmentRef};
pub use wormfs_meta::{DiskStateRecord, FileAtRisk, Impact, QueuedRepair, ToleranceCount};

/// Body of `POST /api/v1/repair/now`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepairNowRequest {
    /// `FILEID:SEGMENT` (as `wormfs stat` shows it) or a file's path.
    pub target: String,
}

/// Answer of `POST /api/v1/repair/now`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepairNowResponse {
    /// The segments queued.
    pub segments: Vec<SegmentRef>,
}

/// Body of `POST /api/v1/scrub`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ScrubRequest {
    /// Also re-encode parity and check each segment's BLAKE3.
    #[serde(default)]
    pub deep: bool,
}

/// Query of `GET /api/v1/impact`: one of the two.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ImpactQuery {
    /// A disk.
    pub disk: Option<DiskId>,
    /// A machine (all its disks).
    pub node: Option<NodeId>,
}

/// Answer of `GET /api/v1/impact`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImpactResponse {
    /// The disks whose loss is considered.
    pub disks: Vec<DiskId>,
    /// What it would cost now.
    pub impact: Impact,
}

pub use crate::healing::disk_life::DiskChange;

/// Body of `POST /api/v1/disks` and `POST /api/v1/disks/{id}/replace`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiskPathRequest {
    /// The new disk's folder: an absolute path on the machine answering, empty or missing.
    pub path: String,
}

/// Query of `POST /api/v1/disks/{id}/remove`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ForceQuery {
    /// Remove it although it still holds parts (they count as lost and are rebuilt).
    #[serde(default)]
    pub force: bool,
}

pub use crate::healing::rebalance::{DiskFill, RebalanceReport};

/// Query of `POST /api/v1/rebalance`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RebalanceQuery {
    /// Only say what would move.
    #[serde(default)]
    pub dry_run: bool,
}

// ---------------------------------------------------------------------------------------------
// Accounts: the cluster's WebDAV users and API tokens

/// A WebDAV user as the API shows it (never its password hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The name.
    pub name: String,
    /// `ro`, `rw` or `admin`.
    pub role: String,
    /// Where it came from: `cli`, `generated`, or `config node N`.
    pub source: String,
    /// When it was made (ms).
    pub created_ms: u64,
    /// When it last changed (ms).
    pub changed_ms: u64,
}

/// Answer of `GET /api/v1/users`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersResponse {
    /// Every user, by name.
    pub users: Vec<UserInfo>,
}

/// Body of `POST /api/v1/users`: a new user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRequest {
    /// The name.
    pub name: String,
    /// The password's Argon2id hash (PHC string), as `wormfs webdav hash-password` prints it.
    pub password_hash: String,
    /// `ro`, `rw` (the default) or `admin`.
    #[serde(default)]
    pub role: Option<String>,
}

/// Body of `PUT /api/v1/users/{name}`: what changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserChange {
    /// A new password hash.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// A new role.
    #[serde(default)]
    pub role: Option<String>,
}

/// Answer of a change to a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAnswer {
    /// The user as it now is.
    pub user: UserInfo,
    /// What the operator should know (a user a config file defines comes back at its node's
    /// next start).
    pub notes: Vec<String>,
}

/// An API token as the API shows it (never the token or its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The name.
    pub name: String,
    /// May only read (GET and HEAD).
    pub read_only: bool,
    /// The machine whose local `admin-token` file it is, if it is one.
    pub machine: Option<NodeId>,
    /// When it was made (ms).
    pub created_ms: u64,
    /// When it was revoked (ms), if it was.
    pub revoked_ms: Option<u64>,
    /// It is the token of this request.
    pub this_request: bool,
}

/// Answer of `GET /api/v1/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokensResponse {
    /// Every token, revoked ones included, oldest first.
    pub tokens: Vec<TokenInfo>,
}

/// Body of `POST /api/v1/tokens`: a new token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    /// Its name (unique among live tokens).
    pub name: String,
    /// May only read.
    #[serde(default)]
    pub read_only: bool,
}

/// Answer of `POST /api/v1/tokens`: the token, shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    /// Its name.
    pub name: String,
    /// The token (64 hex digits). Only its hash is kept: it cannot be shown again.
    pub token: String,
    /// May only read.
    pub read_only: bool,
}

/// Answer of a removal or a revocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountChange {
    /// The user or token.
    pub name: String,
    /// What the operator should know.
    pub notes: Vec<String>,
}

// The admin page's login.

/// `POST /api/v1/session`: a login, with a user's password or an API token.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// A user of the cluster with the admin role (with `password`).
    #[serde(default)]
    pub user: Option<String>,
    /// The user's password.
    #[serde(default)]
    pub password: Option<String>,
    /// An API token (instead of `user` and `password`).
    #[serde(default)]
    pub token: Option<String>,
}

/// An admin page session, as the page sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The user's or the token's name.
    pub name: String,
    /// `user` (a password login) or `token`.
    pub login: String,
    /// The session may only look: actions are hidden on the page and refused (403).
    pub read_only: bool,
    /// The token to send as `X-CSRF-Token` with every request that is not a GET or HEAD.
    pub csrf_token: String,
    /// When the session ends (ms since the epoch).
    pub expires_ms: u64,
    /// This node's id (each node has its own sessions).
    pub node_id: NodeId,
}
