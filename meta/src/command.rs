//! Raft commands and their results: the serialized, versioned vocabulary of the metadata log.
//!
//! The proposer decides everything that is not deterministic (ids, times, placement, the resolved
//! policy); apply only reads these values. A command that cannot apply is answered with a
//! [`Rejection`], never an error (openraft treats a state-machine error as fatal). New variants
//! may be added to `CommandV1`; a change of meaning needs a `V2`.

use serde::{Deserialize, Serialize};

use wormfs_parts::ids::{ClusterId, DiskId, FileId, NodeId};
use wormfs_parts::layout::Geometry;

/// A dead property as the log records it: any XML a WebDAV client stored with PROPPATCH. The
/// log's own type (the WebDAV face converts at its edge), so that no change in another crate
/// can change what the log holds or what replaying it produces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadProp {
    /// XML namespace (empty for none).
    pub namespace: String,
    /// Local name.
    pub name: String,
    /// The prefix the client used, if any.
    pub prefix: Option<String>,
    /// The whole property element as XML, if it has a value.
    pub xml: Option<Vec<u8>>,
}

/// A WebDAV lock as the log records it (the rules deciding conflicts are in
/// [`crate::lock_rules`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// The lock token (`urn:uuid:...`).
    pub token: String,
    /// The locked path in tree form (`/a/b`, no trailing slash; `/` for the root).
    pub path: String,
    /// The locked URL as the client wrote it (for `lockroot`).
    pub href: String,
    /// The user who holds it.
    pub principal: Option<String>,
    /// The client's `owner` element, as XML.
    pub owner_xml: Option<Vec<u8>>,
    /// When it expires (ms since the epoch).
    pub expires_ms: u64,
    /// Its timeout in seconds, as granted.
    pub timeout_secs: u64,
    /// A shared (not exclusive) lock.
    pub shared: bool,
    /// Depth infinity (covers everything below).
    pub deep: bool,
}

/// A command in the Raft log, with its format version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Version 1 of the command set.
    V1(CommandV1),
}

/// What to do when a file is committed under a name that is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Conflict {
    /// Store as "name (1).ext", "name (2).ext", ...
    Rename,
    /// Replace the existing file (never a directory).
    Replace,
    /// Keep the existing file and drop the new one.
    Skip,
    /// Refuse with `AlreadyExists`.
    Fail,
}

/// Where a file came from; recorded at commit so a restarted drop folder can recognise it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceIdentity {
    /// Uploaded by a client (CLI, API, WebDAV).
    Upload {
        /// Who uploaded it (user or "api").
        client: String,
    },
    /// Taken from a drop folder.
    DropFolder {
        /// The absolute path of the original.
        path: String,
        /// Its size in bytes.
        size: u64,
        /// Its mtime in nanoseconds since the epoch.
        mtime_ns: i128,
        /// Its inode number.
        inode: u64,
        /// Its device number.
        dev: u64,
    },
}

/// What a commit of a new file carries: [`CommandV1::CommitFile`]'s fields, and
/// [`CommandV1::CommitSmallFile`]'s `file`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileCommit {
    /// The file.
    pub file_id: FileId,
    /// Where it goes.
    pub path: String,
    /// What to do if the name is taken.
    pub conflict: Conflict,
    /// The resolved policy, as text.
    pub policy: String,
    /// Its segment geometry.
    pub geometry: Geometry,
    /// Total bytes.
    pub size: u64,
    /// BLAKE3 of the whole content, hex.
    pub content_blake3: String,
    /// The segments.
    pub segments: Vec<NewSegment>,
    /// Where it came from.
    pub source: SourceIdentity,
    /// When.
    pub time_ms: u64,
}

impl FileCommit {
    /// The `CommitFile` of an ingest claimed by an intent.
    pub fn with_intent(self) -> CommandV1 {
        CommandV1::CommitFile {
            file_id: self.file_id,
            path: self.path,
            conflict: self.conflict,
            policy: self.policy,
            geometry: self.geometry,
            size: self.size,
            content_blake3: self.content_blake3,
            segments: self.segments,
            source: self.source,
            time_ms: self.time_ms,
        }
    }
}

/// A segment written by an ingest, ready to commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSegment {
    /// Index of the segment within the file.
    pub index: u32,
    /// Logical bytes in the segment.
    pub data_len: u64,
    /// BLAKE3 of the segment's bytes, hex.
    pub blake3: String,
    /// For each part index, the disk holding it, or `None` if the part is missing (to repair).
    pub parts: Vec<Option<DiskId>>,
}

/// A disk's state in the replicated metadata (see docs/operations.md, "The life of a disk").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskStatus {
    /// In use: its parts count, new parts may go to it (when it has room).
    Up,
    /// Unreadable for now (missing, I/O errors, its machine not answering): its parts do not
    /// count, nothing is rebuilt yet.
    Down,
    /// No longer counted: its parts are being rebuilt elsewhere. It may come back.
    Out,
    /// The operator asked to empty it: still read, its parts are copied elsewhere.
    Draining,
    /// Emptied: holds no part the metadata names; it can be removed or unplugged.
    Drained,
    /// Gone for good.
    Removed,
}

impl DiskStatus {
    /// Its name in the metadata and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Out => "out",
            Self::Draining => "draining",
            Self::Drained => "drained",
            Self::Removed => "removed",
        }
    }

    /// Whether its parts count toward a segment's redundancy.
    pub fn available(self) -> bool {
        matches!(self, Self::Up | Self::Draining)
    }

    /// Whether its parts are counted lost (to rebuild elsewhere).
    pub fn lost(self) -> bool {
        matches!(self, Self::Out | Self::Removed)
    }
}

impl std::fmt::Display for DiskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DiskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "up" => Self::Up,
            "down" => Self::Down,
            "out" => Self::Out,
            "draining" => Self::Draining,
            "drained" => Self::Drained,
            "removed" => Self::Removed,
            other => return Err(format!("unknown disk state {other:?}")),
        })
    }
}

/// One segment of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SegmentRef {
    /// The file.
    pub file_id: FileId,
    /// The segment's index.
    pub seg: u32,
}

impl std::fmt::Display for SegmentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file_id, self.seg)
    }
}

impl std::str::FromStr for SegmentRef {
    type Err = String;
    /// `FILEID:SEG`, as `wormfs stat` and `wormfs repair status` print it.
    fn from_str(s: &str) -> Result<Self, String> {
        let (f, n) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not FILEID:SEGMENT"))?;
        Ok(Self {
            file_id: f.parse().map_err(|_| format!("{f:?} is not a file id"))?,
            seg: n
                .parse()
                .map_err(|_| format!("{n:?} is not a segment index"))?,
        })
    }
}

/// One part of a segment on one disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartRef {
    /// The file.
    pub file_id: FileId,
    /// The segment's index.
    pub seg: u32,
    /// The part's index.
    pub part: u16,
    /// The disk it was found on.
    pub disk_id: DiskId,
}

/// A part written by a repair (or moved off a draining disk), ready to commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairedPart {
    /// The part's index.
    pub part: u16,
    /// Where the metadata placed it when the repair started (`None`: missing). The new
    /// location is committed only if this is still so.
    pub from: Option<DiskId>,
    /// Where it is now, durable.
    pub to: DiskId,
}

/// Version 1 of the commands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommandV1 {
    /// Records the cluster id; applied once, first.
    InitCluster {
        /// The new cluster's id.
        cluster_id: ClusterId,
        /// When.
        time_ms: u64,
    },
    /// Registers or updates a node.
    RegisterNode {
        /// The node.
        node_id: NodeId,
        /// Its display name.
        name: String,
        /// Its API address.
        api_addr: String,
        /// Where it serves part data (`IP:PORT`; an unspecified IP means the address its
        /// peers reach it at on the control plane).
        #[serde(default)]
        data_addr: String,
        /// The SHA-256 fingerprint of its data-plane certificate, hex: the only certificate
        /// its peers accept from it.
        #[serde(default)]
        data_cert: String,
        /// When.
        time_ms: u64,
    },
    /// Removes a machine: it is no longer registered (its data-plane certificate is refused)
    /// and its disks are marked removed (their parts count as lost).
    RemoveNode {
        /// The machine.
        node_id: NodeId,
        /// When.
        time_ms: u64,
    },
    /// Registers a disk (or records its new path or node).
    RegisterDisk {
        /// The disk.
        disk_id: DiskId,
        /// The node it is attached to.
        node_id: NodeId,
        /// Its path on that node.
        path: String,
        /// The failure domain: folders on one filesystem share it.
        fs_dev: u64,
        /// When.
        time_ms: u64,
    },
    /// Creates a directory (and, with `parents`, its missing ancestors).
    Mkdir {
        /// The directory.
        path: String,
        /// Create missing ancestors and accept an existing directory.
        parents: bool,
        /// When.
        time_ms: u64,
    },
    /// Sets (or clears, with `None`) the policy of a directory for files written afterwards.
    SetPolicy {
        /// The directory.
        path: String,
        /// The policy text (`ec:4+2`, `copies:3`) or `None` to inherit.
        policy: Option<String>,
    },
    /// Records an ingest intent before any part is written.
    BeginIngest {
        /// The file id minted by the writer.
        file_id: FileId,
        /// The writing node.
        writer: NodeId,
        /// The destination path.
        path: String,
        /// The file appended to, for an append (whose parts carry that file's id).
        append_to: Option<FileId>,
        /// The lease end (ms since epoch); the writer renews it.
        lease_until_ms: u64,
        /// When.
        time_ms: u64,
    },
    /// Extends an intent's lease.
    RenewLease {
        /// The intent.
        file_id: FileId,
        /// The new lease end.
        lease_until_ms: u64,
    },
    /// Drops an intent (the writer gave up); its parts become orphans for the sweeper.
    AbortIngest {
        /// The intent.
        file_id: FileId,
    },
    /// Drops intents whose lease ended before `now_ms`, and every intent of `writer` if given
    /// (a restarted node has no live ingest).
    ExpireIntents {
        /// The proposer's clock.
        now_ms: u64,
        /// A writer whose every intent is dead.
        writer: Option<NodeId>,
    },
    /// Makes an ingested file visible.
    CommitFile {
        /// The file (must have an intent).
        file_id: FileId,
        /// Where it goes.
        path: String,
        /// What to do if the name is taken.
        conflict: Conflict,
        /// The resolved policy, as text.
        policy: String,
        /// Its segment geometry.
        geometry: Geometry,
        /// Total bytes.
        size: u64,
        /// BLAKE3 of the whole content, hex.
        content_blake3: String,
        /// The segments.
        segments: Vec<NewSegment>,
        /// Where it came from.
        source: SourceIdentity,
        /// When.
        time_ms: u64,
    },
    /// Makes visible a file whose parts were written without an intent: a small file, wholly
    /// in memory, whose parts take milliseconds to write (one Raft entry per file instead of
    /// two; docs/performance.md, "Many small files"). Nothing claimed its parts while they
    /// were written, so it is refused (`PartsMaybeSwept`) when a sweep began after the writer
    /// last looked ([`CommandV1::SweepBegins`]): that sweep may have removed them. Otherwise
    /// exactly as [`CommandV1::CommitFile`].
    CommitSmallFile {
        /// The file (no intent), as a `CommitFile` would carry it. (Nested, not flattened:
        /// serde's flatten cannot carry a drop folder's 128-bit modification time.)
        file: FileCommit,
        /// How many sweeps had begun, as the writer's metadata said before it started the
        /// first part.
        sweeps_before: u64,
    },
    /// A sweep is about to remove unowned parts: counted, and every
    /// [`CommandV1::CommitSmallFile`] whose writer had seen fewer sweeps begin is refused
    /// from now on. Ordered by the log, so no clocks are compared.
    SweepBegins {
        /// The sweeping machine.
        node: NodeId,
    },
    /// Adds segments to the end of a committed file.
    AppendSegments {
        /// The appending ingest's intent.
        intent_id: FileId,
        /// The file appended to.
        file_id: FileId,
        /// The size the appender started from (refused if the file changed meanwhile).
        expected_size: u64,
        /// The new segments.
        segments: Vec<NewSegment>,
        /// When.
        time_ms: u64,
    },
    /// Removes a file or directory.
    Remove {
        /// What to remove.
        path: String,
        /// Remove a non-empty directory and all inside it.
        recursive: bool,
        /// When.
        time_ms: u64,
    },
    /// Renames a file or directory (metadata only).
    Rename {
        /// From.
        from: String,
        /// To (must not exist unless `replace`).
        to: String,
        /// Replace an existing file at `to`.
        replace: bool,
        /// When.
        time_ms: u64,
    },
    /// Copies a file: a new entry naming the same immutable file (no part is copied), with the
    /// source's dead properties.
    Copy {
        /// The file copied.
        from: String,
        /// The new name (must not exist unless `replace`, and never a directory).
        to: String,
        /// Replace an existing file at `to`.
        replace: bool,
        /// When.
        time_ms: u64,
    },
    /// Sets and removes dead properties of an entry in order, all or nothing.
    PatchProps {
        /// The file or directory.
        path: String,
        /// `(true, p)` sets `p` (replacing one of the same namespace and name); `(false, p)`
        /// removes the property of `p`'s namespace and name.
        patch: Vec<(bool, DeadProp)>,
    },
    /// Takes a WebDAV lock unless a live lock conflicts; locks expired at `now_ms` are dropped.
    Lock {
        /// The lock (token, path, owner, expiry...).
        lock: Lock,
        /// The proposer's clock.
        now_ms: u64,
    },
    /// Drops a lock.
    Unlock {
        /// Its token.
        token: String,
    },
    /// Extends a lock.
    RefreshLock {
        /// Its token.
        token: String,
        /// The new expiry.
        expires_ms: u64,
        /// The timeout granted, in seconds.
        timeout_secs: u64,
        /// The proposer's clock (an expired lock cannot be refreshed).
        now_ms: u64,
    },
    /// Drops every lock on a path and below (after a DELETE or MOVE).
    DeleteLocks {
        /// The path.
        path: String,
    },
    /// WebDAV DELETE: removes a file, or a directory with everything below it, and the locks
    /// on them, in one step (never the root).
    RemoveTree {
        /// What to remove.
        path: String,
        /// When.
        time_ms: u64,
    },
    /// WebDAV MOVE: renames a file or directory; with `replace`, whatever is at `to` (a file
    /// or a whole directory) goes in the same step. Refused for the root and when one path is
    /// inside the other.
    MoveTree {
        /// From.
        from: String,
        /// To.
        to: String,
        /// Replace what is at `to` (`Overwrite: T`).
        replace: bool,
        /// When.
        time_ms: u64,
    },
    /// WebDAV COPY: copies a file, or a directory (with everything below it when `deep`),
    /// sharing the files; with `replace`, whatever is at `to` goes in the same step. Refused
    /// for the root and when one path is inside the other.
    CopyTree {
        /// From.
        from: String,
        /// To.
        to: String,
        /// Replace what is at `to` (`Overwrite: T`).
        replace: bool,
        /// Copy the members of a directory too (`Depth: infinity`).
        deep: bool,
        /// When.
        time_ms: u64,
    },
    /// Records a disk's state (see [`DiskStatus`]). Going `out` or `removed` queues every
    /// segment with a part on it for repair; every change recomputes the queued segments'
    /// tolerance. Refused for an unknown disk.
    SetDiskState {
        /// The disk.
        disk_id: DiskId,
        /// Its new state.
        state: DiskStatus,
        /// Why, in words (shown by `wormfs disks` and `wormfs health`).
        reason: String,
        /// When.
        time_ms: u64,
    },
    /// Queues segments for repair now (found damaged by a read or a scrub, or asked for), and
    /// marks `damaged` parts as such (only where the metadata still places them on that disk).
    QueueRepair {
        /// The segments.
        segments: Vec<SegmentRef>,
        /// Parts found corrupt or unreadable on a readable disk.
        damaged: Vec<PartRef>,
        /// Why, in words.
        reason: String,
        /// When.
        time_ms: u64,
    },
    /// A node takes a queued segment to repair until `until_ms`. Refused while another node's
    /// claim runs, and (dropping the entry) when the segment no longer exists.
    ClaimRepair {
        /// The segment.
        segment: SegmentRef,
        /// The repairing node.
        node: NodeId,
        /// The claim's end.
        until_ms: u64,
        /// The proposer's clock.
        now_ms: u64,
    },
    /// Commits the parts a repair wrote (each only if its old location is unchanged), then
    /// drops the segment from the queue when nothing is left to do, or releases the claim.
    CommitRepair {
        /// The segment.
        segment: SegmentRef,
        /// The parts written.
        parts: Vec<RepairedPart>,
        /// When.
        time_ms: u64,
        /// Parts asked to move (`MoveParts`) that no disk can take: the request is dropped.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        cancelled_moves: Vec<u16>,
    },
    /// A repair attempt failed: counted, its error kept, retried at `retry_at_ms`.
    RepairFailed {
        /// The segment.
        segment: SegmentRef,
        /// What went wrong.
        error: String,
        /// The next attempt.
        retry_at_ms: u64,
    },
    /// Records that these parts were read whole and every block matched its checksum.
    PartsVerified {
        /// The parts (each only where the metadata still places it on that disk).
        parts: Vec<PartRef>,
        /// When.
        time_ms: u64,
    },
    /// Pauses or resumes repair on every node.
    SetRepairPaused {
        /// Paused.
        paused: bool,
    },
    /// Asks every node to scrub all its parts now (a deep scrub re-encodes parity and checks
    /// each segment's BLAKE3 too).
    RequestScrub {
        /// Deep.
        deep: bool,
        /// When.
        time_ms: u64,
    },
    /// The brakes that hold back automatic `out` decisions now, in words (empty: none).
    SetBrakes {
        /// One sentence each.
        brakes: Vec<String>,
    },
    /// Asks for parts to be moved off their disks (rebalancing): each is rewritten elsewhere
    /// by the repair queue, read from where it is (only where the metadata still places it
    /// there).
    MoveParts {
        /// The parts, each with the disk it is to leave.
        parts: Vec<PartRef>,
        /// Why, in words.
        reason: String,
        /// When.
        time_ms: u64,
    },
    /// Turns the trash on or off for the deletes applied after it (the leader proposes it when
    /// its `retention.trash_days` disagrees with the replicated value). Off: a deleted or
    /// replaced file's rows go at once, as before the trash existed.
    SetTrash {
        /// On.
        enabled: bool,
    },
    /// Gives a file in the trash a name again, at `to` (refused if `to` exists; missing
    /// parent directories are created). The trash entry goes.
    RestoreTrash {
        /// The trash entry.
        id: u64,
        /// Where it goes.
        to: String,
        /// When.
        time_ms: u64,
    },
    /// Drops trash entries: those listed, and with `deleted_before_ms` every entry deleted
    /// before that time. A file whose last name (entry or trash entry) goes is released: its
    /// rows go and the sweeper removes its parts.
    PurgeTrash {
        /// The entries.
        ids: Vec<u64>,
        /// Also every entry deleted before this time (ms).
        deleted_before_ms: Option<u64>,
    },
    /// Sets (or clears, with `None`: inherited again) a directory's retention: files committed
    /// below it afterwards cannot be deleted, replaced, moved or renamed for `retain_ms`.
    SetRetention {
        /// The directory.
        path: String,
        /// The retention in ms, or `None`.
        retain_ms: Option<u64>,
    },
    /// Adds or changes a WebDAV user (see [`PutMode`]).
    PutUser {
        /// The user.
        user: UserRecord,
        /// What happens if the name exists.
        mode: PutMode,
        /// When.
        time_ms: u64,
    },
    /// Removes a WebDAV user.
    RemoveUser {
        /// The name.
        name: String,
    },
    /// Adds an API token. The same hash again changes nothing (a machine registering its local
    /// token twice); a live token of the same name is refused.
    AddToken {
        /// The token.
        token: TokenRecord,
        /// When.
        time_ms: u64,
    },
    /// Revokes the live API token of that name: it stops working on every machine.
    RevokeToken {
        /// The name.
        name: String,
        /// When.
        time_ms: u64,
    },
    /// Records an event that no other command records: a leader change, a metadata backup
    /// written, a machine that stopped answering (docs/operations.md, "Events").
    RecordEvent {
        /// What happened, as a stable name (`leader_changed`, `backup_written`, ...).
        kind: String,
        /// How much it matters.
        severity: EventSeverity,
        /// The machine it is about, if one.
        node: Option<NodeId>,
        /// In words.
        message: String,
        /// When.
        time_ms: u64,
    },
    /// Several commands in one log entry (group commit: one log fsync and one apply for all of
    /// them). They apply exactly as the same commands would as consecutive entries: in order,
    /// each with its own outcome (`Outcome::Batch`, in the same order), a rejected one not
    /// stopping the others. An empty batch, or a batch inside a batch, is rejected whole.
    Batch {
        /// The commands, in the order they apply.
        commands: Vec<CommandV1>,
    },
}

impl CommandV1 {
    /// Whether this command only records or ends a file's ingest or commits a file (a
    /// batch: if all its commands do): such a command changes neither WebDAV locks nor the
    /// sweep count nor anything but files, entries and intents. Caches of what every write
    /// reads first (`MetaDb::locks`, `MetaDb::sweeps_begun`) outlive such commands.
    pub fn only_ingests(&self) -> bool {
        match self {
            CommandV1::Batch { commands } => commands.iter().all(Self::only_ingests),
            CommandV1::BeginIngest { .. }
            | CommandV1::RenewLease { .. }
            | CommandV1::AbortIngest { .. }
            | CommandV1::CommitFile { .. }
            | CommandV1::CommitSmallFile { .. }
            | CommandV1::AppendSegments { .. } => true,
            _ => false,
        }
    }

    /// Whether applying this command may change a machine's or a disk's row (its address,
    /// its state): every command but those known to touch only the tree, its files, ingests
    /// and locks (a batch: if any of its commands may).
    pub fn may_touch_topology(&self) -> bool {
        match self {
            CommandV1::Batch { commands } => commands.iter().any(Self::may_touch_topology),
            CommandV1::Mkdir { .. }
            | CommandV1::SetPolicy { .. }
            | CommandV1::BeginIngest { .. }
            | CommandV1::RenewLease { .. }
            | CommandV1::AbortIngest { .. }
            | CommandV1::ExpireIntents { .. }
            | CommandV1::CommitFile { .. }
            | CommandV1::CommitSmallFile { .. }
            | CommandV1::SweepBegins { .. }
            | CommandV1::AppendSegments { .. }
            | CommandV1::Remove { .. }
            | CommandV1::Rename { .. }
            | CommandV1::Copy { .. }
            | CommandV1::PatchProps { .. }
            | CommandV1::Lock { .. }
            | CommandV1::Unlock { .. }
            | CommandV1::RefreshLock { .. }
            | CommandV1::DeleteLocks { .. }
            | CommandV1::RemoveTree { .. }
            | CommandV1::MoveTree { .. }
            | CommandV1::CopyTree { .. } => false,
            _ => true,
        }
    }
}

/// How much an event matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventSeverity {
    /// Worth knowing: a disk came back, a machine joined, a backup was written.
    Info,
    /// Needs attention soon: a disk is down, corruption was found (and is being repaired).
    Warning,
    /// Data is at risk now: a disk is out, a file cannot survive another failure.
    Critical,
}

impl EventSeverity {
    /// Its name in the metadata and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    /// The severity named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Self::Info),
            "warning" => Some(Self::Warning),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }
}

/// What a WebDAV user may do (the cluster's accounts; docs/cluster.md, "Accounts").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountRole {
    /// Read only: GET, HEAD, OPTIONS and PROPFIND.
    Ro,
    /// Read and write.
    Rw,
    /// Read and write, and administer the cluster (the admin page).
    Admin,
}

impl AccountRole {
    /// The role's name, as the config file and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountRole::Ro => "ro",
            AccountRole::Rw => "rw",
            AccountRole::Admin => "admin",
        }
    }

    /// The role named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ro" => Some(AccountRole::Ro),
            "rw" => Some(AccountRole::Rw),
            "admin" => Some(AccountRole::Admin),
            _ => None,
        }
    }

    /// May write over WebDAV.
    pub fn can_write(self) -> bool {
        self != AccountRole::Ro
    }
}

/// Where a user came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserSource {
    /// Made with `wormfs user add` (or the API).
    Cli,
    /// The `admin` user a cluster's first machine generates when no user exists.
    Generated,
    /// A `[[webdav.users]]` entry of this node's config file, imported at its start.
    Config {
        /// The node.
        node: u64,
    },
}

impl UserSource {
    /// As the `users.source` column holds it: `cli`, `generated`, `config node N`.
    pub fn to_column(self) -> String {
        match self {
            UserSource::Cli => "cli".into(),
            UserSource::Generated => "generated".into(),
            UserSource::Config { node } => format!("config node {node}"),
        }
    }

    /// From the `users.source` column.
    pub fn from_column(s: &str) -> Option<Self> {
        match s {
            "cli" => Some(UserSource::Cli),
            "generated" => Some(UserSource::Generated),
            _ => s
                .strip_prefix("config node ")
                .and_then(|n| n.parse().ok())
                .map(|node| UserSource::Config { node }),
        }
    }
}

/// A WebDAV user, as the log carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The name: 1 to 64 bytes, no `:` and no control characters.
    pub name: String,
    /// The password's Argon2 hash (PHC string, `$argon2id$...`); never the password.
    pub password_hash: String,
    /// What the user may do.
    pub role: AccountRole,
    /// Where it came from.
    pub source: UserSource,
}

/// How `PutUser` treats an existing user of that name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PutMode {
    /// A new user: refused if the name exists.
    Create,
    /// A change: refused if the name does not exist.
    Replace,
    /// Either (a config file's users, imported at start: the file wins).
    Upsert,
    /// The cluster's first user: refused once any user was ever put (the generated `admin`).
    First,
}

/// An API token, as the log carries it: its BLAKE3, never the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The name: 1 to 64 bytes, no control characters; unique among live tokens.
    pub name: String,
    /// BLAKE3 of the token, hex (64 digits).
    pub hash: String,
    /// May only read (GET and HEAD on the API).
    pub read_only: bool,
    /// The machine whose local `admin-token` file it is, if it is one.
    pub node: Option<u64>,
}

/// Why a command was not applied (a normal result).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// No such file or directory.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// The name is taken.
    #[error("{0}: already exists")]
    AlreadyExists(String),
    /// A path component is a file.
    #[error("{0}: not a directory")]
    NotADirectory(String),
    /// A file operation named a directory.
    #[error("{0}: is a directory")]
    IsADirectory(String),
    /// A directory is not empty.
    #[error("{0}: directory not empty")]
    NotEmpty(String),
    /// The path is unusable (root, or inside itself).
    #[error("{0}: invalid path for this operation")]
    InvalidPath(String),
    /// The ingest's intent is gone (its lease ran out).
    #[error("ingest {0} has no live intent (lease expired?)")]
    NoIntent(String),
    /// A sweep began while a small file's parts were written: it may have removed them.
    #[error("ingest {0}: a sweep began while its parts were written, and they may be gone")]
    PartsMaybeSwept(String),
    /// An append raced another change.
    #[error("{0}: changed since the append started")]
    Changed(String),
    /// The cluster id was already set to another value.
    #[error("cluster already initialised")]
    AlreadyInitialised,
    /// A value in the command is invalid.
    #[error("invalid command: {0}")]
    Invalid(String),
    /// Another node is repairing this segment.
    #[error("{0}")]
    Claimed(String),
    /// A retained file (or a directory holding one) cannot be deleted, replaced, moved,
    /// renamed or appended to before its retention ends.
    #[error("{path}: retained until {}", rfc3339_ms(*until_ms))]
    Retained {
        /// The retained file.
        path: String,
        /// Its retention's end (ms since the epoch).
        until_ms: u64,
    },
}

/// `ms` since the epoch as an RFC 3339 UTC time (`2026-12-06T11:20:00Z`; milliseconds shown
/// only when not zero).
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let frac = ms % 1000;
    if frac == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:03}Z")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(super::rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339_ms(1_765_000_000_000), "2025-12-06T05:46:40Z");
        assert_eq!(
            super::rfc3339_ms(951_782_400_123),
            "2000-02-29T00:00:00.123Z"
        );
    }
}

/// The result of applying one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Outcome {
    /// Applied; nothing more to say.
    #[default]
    Done,
    /// A file was committed at `path` (which the rename rule may have changed).
    Committed {
        /// The final path.
        path: String,
        /// The file id that now lives there.
        file_id: FileId,
        /// Whether an existing file was replaced.
        replaced: bool,
    },
    /// The name was taken and the rule was "skip": nothing was stored.
    Skipped {
        /// The path that was taken.
        path: String,
    },
    /// A lock was granted or refreshed.
    Lock(Lock),
    /// A lock was refused: this live lock conflicts.
    LockConflict(Lock),
    /// A repair's parts: those committed, and those left out because the part had moved
    /// meanwhile (their new copies are surplus).
    Repaired {
        /// Parts now at their new location.
        applied: Vec<u16>,
        /// Parts not committed.
        skipped: Vec<u16>,
    },
    /// Not applied.
    Rejected(Rejection),
    /// The outcomes of a `Batch`'s commands, in their order.
    Batch(Vec<Outcome>),
}
