//! Stage one: the configuration exactly as written, before validation.
//!
//! Every struct denies unknown fields and fills missing ones from its `Default`, so an empty
//! file is a complete configuration. The same structs receive environment overrides through
//! [`set_key`], which knows the type of every key.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::policy::{
    AfterIngest, AlertSeverity, Anonymous, ConflictRule, LogFormat, MacMetadata, MediaServerKind,
    ParseChoiceError, PolicySpec, Role, WebhookFormat,
};

/// One MiB.
const MIB: u64 = 1024 * 1024;

/// Default data folder, relative to the working directory (embedded default) or to the config
/// file's folder (file run).
pub(crate) const DEFAULT_DATA_DIR: &str = "./wormfs-data";
/// Default `node.cluster_name`.
pub(crate) const DEFAULT_CLUSTER_NAME: &str = "wormfs";
/// Default API port.
pub(crate) const DEFAULT_API_PORT: u16 = 7710;
/// Default WebDAV port.
pub(crate) const DEFAULT_WEBDAV_PORT: u16 = 7711;
/// Default peer port (the private control plane between nodes).
pub(crate) const DEFAULT_PEER_PORT: u16 = 7712;
/// Default data port (the TLS data plane: part data served to peers).
pub(crate) const DEFAULT_DATA_PORT: u16 = 7713;
/// Default `cluster.formation_wait_ms`.
pub(crate) const DEFAULT_FORMATION_WAIT_MS: u64 = 3_000;
/// Default `cluster.voter_replace_after_ms` (2 minutes).
pub(crate) const DEFAULT_VOTER_REPLACE_AFTER_MS: u64 = 120_000;
/// Name of the cluster secret file inside `node.data_dir`, the default `cluster.secret_file`.
pub(crate) const DEFAULT_SECRET_FILE_NAME: &str = "cluster-secret";

/// Every key, as `section.key`, in file order. Used for error hints and tests.
pub(crate) const KEYS: &[&str] = &[
    "node.id",
    "node.name",
    "node.data_dir",
    "node.cluster_name",
    "api.listen",
    "admin.metrics_token_file",
    "webdav.listen",
    "webdav.anonymous",
    "webdav.users",
    "webdav.tls_cert",
    "webdav.tls_key",
    "webdav.macos_metadata",
    "webdav.advertise",
    "webdav.max_locks_per_resource",
    "webdav.max_locks_per_user",
    "webdav.max_dead_props_per_resource",
    "webdav.max_dead_prop_bytes_per_resource",
    "discovery.mdns",
    "cluster.peer_listen",
    "cluster.data_listen",
    "cluster.peers",
    "cluster.secret_file",
    "cluster.formation_wait_ms",
    "cluster.voter_replace_after_ms",
    "storage.disks",
    "storage.default_policy",
    "storage.small_file_threshold_bytes",
    "storage.small_file_policy",
    "storage.block_size_bytes",
    "storage.segment_part_bytes",
    "storage.write_quorum_extra",
    "storage.reserve_free_bytes",
    "storage.conflict",
    "ingest.lease_ms",
    "ingest.sweep_interval_ms",
    "ingest.orphan_grace_ms",
    "ingest.folders",
    "raft.heartbeat_interval_ms",
    "raft.election_timeout_min_ms",
    "raft.election_timeout_max_ms",
    "raft.snapshot_every_logs",
    "raft.max_logs_kept",
    "repair.enabled",
    "repair.disk_out_after_ms",
    "repair.machine_out_after_ms",
    "repair.max_bytes_per_sec",
    "repair.tranquility",
    "repair.retry_min_ms",
    "repair.retry_max_ms",
    "repair.auto_rebalance",
    "scrub.enabled",
    "scrub.interval_days",
    "scrub.max_bytes_per_sec",
    "scrub.tranquility",
    "scrub.hours",
    "scrub.deep_every",
    "meta.backup_interval_ms",
    "meta.backup_after_changes",
    "meta.backup_keep",
    "retention.trash_days",
    "retention.trash_min_free",
    "log.level",
    "log.format",
    "alerts.debounce_ms",
    "alerts.member_lost_after_ms",
    "alerts.backup_stale_after_ms",
    "alerts.repair_stuck_attempts",
    "alerts.webhooks",
];

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    /// `[node]`: who this machine is and where it keeps its data.
    pub node: RawNode,
    /// `[api]`: the node API and admin page.
    pub api: RawApi,
    /// `[admin]`: the operator's face on the API port (`/metrics`).
    pub admin: RawAdmin,
    /// `[webdav]`: the WebDAV face.
    pub webdav: RawWebdav,
    /// `[discovery]`: mDNS.
    pub discovery: RawDiscovery,
    /// `[cluster]`: the peer network and how a cluster forms.
    pub cluster: RawCluster,
    /// `[storage]`: disks, policies and part layout.
    pub storage: RawStorage,
    /// `[ingest]`: uploads in progress.
    pub ingest: RawIngest,
    /// `[raft]`: the replicated metadata log.
    pub raft: RawRaft,
    /// `[repair]`: keeping every file at its policy's redundancy.
    pub repair: RawRepair,
    /// `[scrub]`: reading every part on a schedule.
    pub scrub: RawScrub,
    /// `[meta]`: backups of the metadata on the data disks.
    pub meta: RawMeta,
    /// `[retention]`: the trash.
    pub retention: RawRetention,
    /// `[log]`: the server's own log output.
    pub log: RawLog,
    /// `[alerts]`: messages to a phone when something needs attention.
    pub alerts: RawAlerts,
    /// `[[media_servers]]`: Jellyfin and Plex servers asked to scan the folders that changed.
    /// A top-level array of tables, so it comes last when written out.
    pub media_servers: Vec<RawMediaServer>,
}

/// `[node]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawNode {
    /// Fixed node id in the cluster; unset means the server picks and remembers one.
    pub id: Option<u64>,
    /// Human-readable machine name; unset means the host name.
    pub name: Option<String>,
    /// Folder for metadata, the local token and (by default) the folder-disks.
    pub data_dir: PathBuf,
    /// Name of the cluster; nodes only join a cluster of the same name.
    pub cluster_name: String,
}

impl Default for RawNode {
    fn default() -> Self {
        RawNode {
            id: None,
            name: None,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            cluster_name: DEFAULT_CLUSTER_NAME.to_owned(),
        }
    }
}

/// `[api]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawApi {
    /// Address of the node API; unset means 127.0.0.1:7710 (no file) or 0.0.0.0:7710 (file run).
    #[serde(deserialize_with = "address::<_, 7710>")]
    pub listen: Option<SocketAddr>,
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAdmin {
    /// A file holding the bearer token `/metrics` asks for; unset means `/metrics` answers
    /// loopback clients only, without a token.
    pub metrics_token_file: Option<PathBuf>,
}

/// `[webdav]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawWebdav {
    /// Address of the WebDAV face; unset means 127.0.0.1:7711 (no file) or 0.0.0.0:7711.
    #[serde(deserialize_with = "address::<_, 7711>")]
    pub listen: Option<SocketAddr>,
    /// Access without a password.
    pub anonymous: Anonymous,
    /// `[[webdav.users]]`.
    pub users: Vec<RawUser>,
    /// PEM certificate chain; with `tls_key`, the face speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// `.DS_Store` and `._name` files: stored or discarded.
    pub macos_metadata: MacMetadata,
    /// Advertise the face as `_webdav._tcp` (`_webdavs._tcp` with TLS) when mDNS is on.
    pub advertise: bool,
    /// Live locks on one path.
    pub max_locks_per_resource: u32,
    /// Live locks held by one user (anonymous clients count as one).
    pub max_locks_per_user: u32,
    /// Dead properties on one file or directory.
    pub max_dead_props_per_resource: u32,
    /// Bytes of dead properties (names, namespaces and values) on one file or directory.
    pub max_dead_prop_bytes_per_resource: u64,
}

/// Default `webdav.max_locks_per_resource`.
pub const DEFAULT_MAX_LOCKS_PER_RESOURCE: u32 = 32;
/// Default `webdav.max_locks_per_user`.
pub const DEFAULT_MAX_LOCKS_PER_USER: u32 = 1_000;
/// Default `webdav.max_dead_props_per_resource`.
pub const DEFAULT_MAX_DEAD_PROPS_PER_RESOURCE: u32 = 100;
/// Default `webdav.max_dead_prop_bytes_per_resource` (64 KiB).
pub const DEFAULT_MAX_DEAD_PROP_BYTES_PER_RESOURCE: u64 = 64 * 1024;

impl Default for RawWebdav {
    fn default() -> Self {
        Self {
            listen: None,
            anonymous: Anonymous::default(),
            users: Vec::new(),
            tls_cert: None,
            tls_key: None,
            macos_metadata: MacMetadata::default(),
            advertise: true,
            max_locks_per_resource: DEFAULT_MAX_LOCKS_PER_RESOURCE,
            max_locks_per_user: DEFAULT_MAX_LOCKS_PER_USER,
            max_dead_props_per_resource: DEFAULT_MAX_DEAD_PROPS_PER_RESOURCE,
            max_dead_prop_bytes_per_resource: DEFAULT_MAX_DEAD_PROP_BYTES_PER_RESOURCE,
        }
    }
}

/// `[discovery]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawDiscovery {
    /// mDNS on the LAN; unset means off with no config file, on for a file run.
    pub mdns: Option<bool>,
}

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCluster {
    /// Address where this node listens for its peers; unset means 127.0.0.1:7712 (no file) or
    /// 0.0.0.0:7712 (file run).
    #[serde(deserialize_with = "address::<_, 7712>")]
    pub peer_listen: Option<SocketAddr>,
    /// Address where this node serves part data to its peers (the TLS data plane); unset means
    /// 127.0.0.1:7713 (no file) or 0.0.0.0:7713 (file run).
    #[serde(deserialize_with = "address::<_, 7713>")]
    pub data_listen: Option<SocketAddr>,
    /// Static peers, each `HOST:PORT`.
    pub peers: Vec<String>,
    /// The file holding the cluster secret; unset means `cluster-secret` in `node.data_dir`.
    pub secret_file: Option<PathBuf>,
    /// How long a node with no cluster state looks for peers before founding a cluster alone,
    /// in milliseconds.
    pub formation_wait_ms: u64,
    /// How long the leader waits before it replaces an unheard-from voter by a reachable
    /// learner, in milliseconds.
    pub voter_replace_after_ms: u64,
}

impl Default for RawCluster {
    fn default() -> Self {
        RawCluster {
            peer_listen: None,
            data_listen: None,
            peers: Vec::new(),
            secret_file: None,
            formation_wait_ms: DEFAULT_FORMATION_WAIT_MS,
            voter_replace_after_ms: DEFAULT_VOTER_REPLACE_AFTER_MS,
        }
    }
}

/// One `[[webdav.users]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUser {
    /// The user name.
    pub name: String,
    /// The password's Argon2id hash (PHC string), as `wormfs webdav hash-password` prints it.
    pub password_hash: String,
    /// What the user may do.
    #[serde(default = "default_role")]
    pub role: Role,
}

fn default_role() -> Role {
    Role::ReadWrite
}

impl RawUser {
    /// Users given as `NAME:ROLE:HASH` separated by `;` (environment).
    fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        text.split(';')
            .filter(|s| !s.trim().is_empty())
            .map(|u| {
                let mut it = u.trim().splitn(3, ':');
                match (it.next(), it.next(), it.next()) {
                    (Some(name), Some(role), Some(hash)) => Ok(Self {
                        name: name.to_owned(),
                        password_hash: hash.to_owned(),
                        role: role.parse().map_err(|e: ParseChoiceError| e.to_string())?,
                    }),
                    _ => Err(format!(
                        "expected users as NAME:ROLE:HASH separated by `;`, got {u:?}"
                    )),
                }
            })
            .collect()
    }
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawStorage {
    /// Disk folders; empty means six folder-disks inside `data_dir`.
    pub disks: Vec<PathBuf>,
    /// Policy for files at or above the small-file threshold.
    pub default_policy: PolicySpec,
    /// Files smaller than this many bytes use `small_file_policy`.
    pub small_file_threshold_bytes: u64,
    /// Policy for small files.
    pub small_file_policy: PolicySpec,
    /// Erasure-coding block size in bytes.
    pub block_size_bytes: u32,
    /// Size in bytes of one part of a segment.
    pub segment_part_bytes: u64,
    /// Parts beyond k that must be durable before a segment commits.
    pub write_quorum_extra: u8,
    /// Free bytes a disk keeps; below this it gets no new parts.
    pub reserve_free_bytes: u64,
    /// What to do when a new file's name already exists.
    pub conflict: ConflictRule,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            disks: Vec::new(),
            default_policy: PolicySpec::Auto,
            small_file_threshold_bytes: MIB,
            small_file_policy: PolicySpec::Auto,
            block_size_bytes: 262_144,
            segment_part_bytes: 64 * MIB,
            write_quorum_extra: 1,
            reserve_free_bytes: 256 * MIB,
            conflict: ConflictRule::Rename,
        }
    }
}

/// `[ingest]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawIngest {
    /// How long an upload keeps its claim without progress, in milliseconds.
    pub lease_ms: u64,
    /// How often leftovers are swept, in milliseconds.
    pub sweep_interval_ms: u64,
    /// How old an unreferenced part must be before the sweep deletes it, in milliseconds.
    pub orphan_grace_ms: u64,
    /// `[[ingest.folders]]`: drop folders.
    pub folders: Vec<RawDropFolder>,
}

/// Default settle time of a drop folder, in milliseconds.
pub(crate) const DEFAULT_SETTLE_MS: u64 = 5_000;
/// Default poll interval of a polled drop folder, in milliseconds.
pub(crate) const DEFAULT_POLL_INTERVAL_MS: u64 = 10_000;

/// One `[[ingest.folders]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDropFolder {
    /// The folder watched.
    pub path: PathBuf,
    /// Where its files go in the tree.
    #[serde(default = "default_tree")]
    pub tree: String,
    /// Policy for its files; unset means the tree's own.
    #[serde(default)]
    pub policy: Option<PolicySpec>,
    /// What happens to an original once committed.
    #[serde(default = "default_after")]
    pub after: AfterIngest,
    /// Where originals go with `after = "move"`.
    #[serde(default)]
    pub done_dir: Option<PathBuf>,
    /// The conflict rule for its files; unset means `storage.conflict`.
    #[serde(default)]
    pub conflict: Option<ConflictRule>,
    /// Poll instead of inotify.
    #[serde(default)]
    pub poll: bool,
    /// Settle time in milliseconds.
    #[serde(default = "default_settle")]
    pub settle_ms: u64,
    /// Poll interval in milliseconds.
    #[serde(default = "default_poll_interval")]
    pub poll_interval_ms: u64,
}

fn default_tree() -> String {
    "/".to_owned()
}
fn default_after() -> AfterIngest {
    AfterIngest::Delete
}
fn default_settle() -> u64 {
    DEFAULT_SETTLE_MS
}
fn default_poll_interval() -> u64 {
    DEFAULT_POLL_INTERVAL_MS
}

impl RawDropFolder {
    /// A folder given as `PATH[=TREE]` (command line, environment), with every other setting
    /// at its default. An empty path is refused by validation, which names the folder.
    pub(crate) fn from_spec(spec: &str) -> Self {
        let (path, tree) = match spec.split_once('=') {
            Some((p, t)) => (p.trim(), t.trim().to_owned()),
            None => (spec.trim(), default_tree()),
        };
        Self {
            path: PathBuf::from(path),
            tree,
            policy: None,
            after: default_after(),
            done_dir: None,
            conflict: None,
            poll: false,
            settle_ms: DEFAULT_SETTLE_MS,
            poll_interval_ms: DEFAULT_POLL_INTERVAL_MS,
        }
    }
}

impl Default for RawIngest {
    fn default() -> Self {
        RawIngest {
            lease_ms: 120_000,
            sweep_interval_ms: 300_000,
            orphan_grace_ms: 600_000,
            folders: Vec::new(),
        }
    }
}

/// `[raft]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRaft {
    /// Leader heartbeat interval in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election timeout in milliseconds.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout in milliseconds.
    pub election_timeout_max_ms: u64,
    /// Take a snapshot after this many log entries.
    pub snapshot_every_logs: u64,
    /// Log entries kept after a snapshot, for slow followers.
    pub max_logs_kept: u64,
}

impl Default for RawRaft {
    fn default() -> Self {
        RawRaft {
            heartbeat_interval_ms: 250,
            election_timeout_min_ms: 1500,
            election_timeout_max_ms: 3000,
            snapshot_every_logs: 5000,
            max_logs_kept: 1000,
        }
    }
}

/// `[repair]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRepair {
    /// Repair runs on this node (it still serves reads for other nodes' repairs).
    pub enabled: bool,
    /// A disk down this long (ms) goes out and its parts are rebuilt elsewhere.
    pub disk_out_after_ms: u64,
    /// A machine not answering this long (ms) has its disks go out.
    pub machine_out_after_ms: u64,
    /// Bytes per second read and written by repair on this node (0: no limit).
    pub max_bytes_per_sec: u64,
    /// After each step, sleep this many times the step's duration.
    pub tranquility: u32,
    /// The first retry of a failed repair after this long (ms); doubled each time.
    pub retry_min_ms: u64,
    /// Retries never wait longer than this (ms).
    pub retry_max_ms: u64,
    /// The leader moves parts toward an even fill by itself when nothing else is queued.
    pub auto_rebalance: bool,
}

impl Default for RawRepair {
    fn default() -> Self {
        RawRepair {
            enabled: true,
            disk_out_after_ms: 600_000,
            machine_out_after_ms: 3_600_000,
            max_bytes_per_sec: 0,
            tranquility: 1,
            retry_min_ms: 60_000,
            retry_max_ms: 3_840_000,
            auto_rebalance: false,
        }
    }
}

/// `[scrub]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawScrub {
    /// Scrub runs on this node.
    pub enabled: bool,
    /// Every part is verified at least this often (days, fractions allowed).
    pub interval_days: f64,
    /// Bytes per second read by scrub on this node (0: no limit).
    pub max_bytes_per_sec: u64,
    /// After each step, sleep this many times the step's duration.
    pub tranquility: u32,
    /// Only scrub (and repair, except segments one lost part away from unreadable) inside this
    /// daily window of local time, e.g. "01:00-06:00" (unset: any time).
    pub hours: Option<String>,
    /// Every Nth pass is deep (0: only when asked).
    pub deep_every: u32,
}

impl Default for RawScrub {
    fn default() -> Self {
        RawScrub {
            enabled: true,
            interval_days: 30.0,
            max_bytes_per_sec: 64 << 20,
            tranquility: 1,
            hours: None,
            deep_every: 4,
        }
    }
}

/// `[meta]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMeta {
    /// A backup of the metadata to the data disks this often (0: off).
    pub backup_interval_ms: u64,
    /// A backup sooner, after this many metadata changes.
    pub backup_after_changes: u64,
    /// Backups kept on each disk.
    pub backup_keep: u32,
}

impl Default for RawMeta {
    fn default() -> Self {
        RawMeta {
            backup_interval_ms: 900_000,
            backup_after_changes: 10_000,
            backup_keep: 3,
        }
    }
}

/// `[retention]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRetention {
    /// Days a deleted or replaced file stays in the trash (fractions allowed; 0: no trash).
    pub trash_days: f64,
    /// Below this free space (bytes with a unit, such as "50GiB", or a share such as "5%"),
    /// the oldest trash goes first.
    pub trash_min_free: String,
}

impl Default for RawRetention {
    fn default() -> Self {
        RawRetention {
            trash_days: 30.0,
            trash_min_free: "5%".into(),
        }
    }
}

/// `[alerts]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAlerts {
    /// A condition must hold (or have cleared) this long before a message goes out.
    pub debounce_ms: u64,
    /// A member not heard from for this long is lost.
    pub member_lost_after_ms: u64,
    /// A machine's newest metadata backup older than this is stale (0: four times
    /// `meta.backup_interval_ms`).
    pub backup_stale_after_ms: u64,
    /// A segment whose repair failed this many times in a row is stuck.
    pub repair_stuck_attempts: u32,
    /// `[[alerts.webhooks]]`: where the messages go.
    pub webhooks: Vec<RawWebhook>,
}

impl Default for RawAlerts {
    fn default() -> Self {
        RawAlerts {
            debounce_ms: 60_000,
            member_lost_after_ms: 60_000,
            backup_stale_after_ms: 0,
            repair_stuck_attempts: 5,
            webhooks: Vec::new(),
        }
    }
}

/// One `[[alerts.webhooks]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    /// The URL the messages are POSTed to (`http://` or `https://`).
    pub url: String,
    /// `json`, `ntfy` or `gotify`.
    #[serde(default = "default_webhook_format")]
    pub format: WebhookFormat,
    /// A file holding the token sent with each message (ntfy: `Authorization: Bearer`;
    /// gotify: `X-Gotify-Key`; json: `Authorization: Bearer`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Conditions below this severity are not sent.
    #[serde(default = "default_min_severity")]
    pub min_severity: AlertSeverity,
}

fn default_webhook_format() -> WebhookFormat {
    WebhookFormat::Json
}

fn default_min_severity() -> AlertSeverity {
    AlertSeverity::Warning
}

impl RawWebhook {
    /// From `FORMAT=URL` or `URL` (`WORMFS_ALERTS__WEBHOOKS="ntfy=https://ntfy.sh/t,..."`).
    pub(crate) fn from_spec(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        let (format, url) = match spec.split_once('=') {
            Some((f, u)) if !f.contains(':') && !f.contains('/') => {
                (f.parse::<WebhookFormat>().map_err(|e| e.to_string())?, u)
            }
            _ => (WebhookFormat::Json, spec),
        };
        Ok(Self {
            url: url.trim().to_owned(),
            format,
            token_file: None,
            min_severity: default_min_severity(),
        })
    }
}

/// The fields of one `[[media_servers]]` entry, in file order (the entries have no
/// `section.key` names of their own, so they are not in [`KEYS`]; set them in the file only).
/// Kept in step with [`RawMediaServer`] and the example by a test.
#[cfg(test)]
pub(crate) const MEDIA_SERVER_KEYS: &[&str] =
    &["kind", "url", "token_file", "path_map", "notify_delay_ms"];

/// Default `notify_delay_ms` of a `[[media_servers]]` entry: a season arriving file by file is
/// one scan.
pub(crate) const DEFAULT_NOTIFY_DELAY_MS: u64 = 60_000;

/// One `[[media_servers]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMediaServer {
    /// `jellyfin` or `plex`.
    pub kind: MediaServerKind,
    /// The server's base URL (`http://127.0.0.1:8096`, `http://127.0.0.1:32400`).
    pub url: String,
    /// A file holding the server's API key (Jellyfin) or `X-Plex-Token` (Plex).
    pub token_file: PathBuf,
    /// WormFS folders and where the media server sees them: `{ "/Films" = "/media/films" }`.
    #[serde(default)]
    pub path_map: std::collections::BTreeMap<String, String>,
    /// Wait this long (ms) after the last change of a batch before asking for the scan.
    #[serde(default = "default_notify_delay")]
    pub notify_delay_ms: u64,
}

fn default_notify_delay() -> u64 {
    DEFAULT_NOTIFY_DELAY_MS
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLog {
    /// `EnvFilter` directives, e.g. `info` or `info,wormfs=debug`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// An address key (`IP:PORT`, `PORT` the key's default): the value is echoed when it is not
/// one, as serde's own message ("invalid socket address syntax") does not say which value was
/// refused.
fn address<'de, D: serde::Deserializer<'de>, const PORT: u16>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    parse_address(&text, PORT)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Parses an `IP:PORT` address; the error names the value and the expected form, with `port`
/// (the key's default) in the example.
pub(crate) fn parse_address(text: &str, port: u16) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        let hint = match text.trim().rsplit_once(':') {
            Some((_, p)) if p.parse::<u16>().is_err() => {
                "; the port must be a whole number from 0 to 65535"
            }
            _ => "; an IP address, not a host name",
        };
        format!(
            "expected an address and port like 0.0.0.0:{port} or [::]:{port}, got {text:?}{hint}"
        )
    })
}

/// Parses a config file's text. On failure returns a message starting with the line and
/// column, then the key path, then toml's description.
pub(crate) fn parse_file(text: &str) -> Result<RawConfig, String> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.inner();
        let mut message = match inner.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                format!("line {line}, column {column}: ")
            }
            None => "(position unknown): ".to_owned(),
        };
        // serde_path_to_error renders the root as ".".
        if !key.is_empty() && key != "." {
            message.push_str(&key);
            message.push_str(": ");
        }
        message.push_str(&friendly(inner.message()));
        message
    })
}

/// Rewords serde's integer type names for people and joins toml's multi-line messages.
fn friendly(message: &str) -> String {
    let message = message.trim_end().replace('\n', "; ");
    [
        ("expected u8", "expected a whole number from 0 to 255"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        (
            "expected u64",
            "expected a whole number from 0 to 18446744073709551615",
        ),
    ]
    .iter()
    .fold(message, |m, (from, to)| m.replace(from, to))
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |tail| tail.chars().count())
        + 1;
    (line, column)
}

/// Why [`set_key`] refused a value.
pub(crate) enum SetError {
    /// No such key.
    Unknown,
    /// The key exists but the text is not a valid value for it.
    Invalid(String),
}

impl From<String> for SetError {
    fn from(message: String) -> Self {
        SetError::Invalid(message)
    }
}

/// Parses an unsigned integer of type `T` (digits, `_` separators allowed as in TOML).
fn int<T: TryFrom<u64>>(text: &str) -> Result<T, String> {
    let clean = text.trim().replace('_', "");
    if clean.is_empty() || !clean.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a whole number, got {text:?}"));
    }
    let wide: u64 = clean
        .parse()
        .map_err(|_| format!("{clean} is too large for a 64-bit number"))?;
    T::try_from(wide).map_err(|_| format!("{wide} is out of range for this key"))
}

/// Parses a value with `FromStr`, passing its error message through.
fn text_value<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.trim().parse::<T>().map_err(|e| e.to_string())
}

/// `true`/`false` (also `on`/`off`, `yes`/`no`, `1`/`0`), as environment variables spell them.
fn boolean(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(format!("expected true or false, got {text:?}")),
    }
}

fn non_empty_path(text: &str) -> Option<PathBuf> {
    let t = text.trim();
    (!t.is_empty()).then(|| PathBuf::from(t))
}

/// Sets the key `path` (`section.key`, lower case) from its text form, as given in an
/// environment variable. Returns the canonical key path.
pub(crate) fn set_key(
    raw: &mut RawConfig,
    path: &str,
    text: &str,
) -> Result<&'static str, SetError> {
    let key = KEYS
        .iter()
        .copied()
        .find(|k| *k == path)
        .ok_or(SetError::Unknown)?;
    match key {
        "node.id" => {
            raw.node.id = if text.trim().is_empty() {
                None
            } else {
                Some(int(text)?)
            }
        }
        "node.name" => {
            raw.node.name = if text.is_empty() {
                None
            } else {
                Some(text.to_owned())
            }
        }
        "node.data_dir" => raw.node.data_dir = PathBuf::from(text),
        "node.cluster_name" => raw.node.cluster_name = text.to_owned(),
        "api.listen" => raw.api.listen = Some(parse_address(text, 7710)?),
        "admin.metrics_token_file" => raw.admin.metrics_token_file = non_empty_path(text),
        "webdav.listen" => raw.webdav.listen = Some(parse_address(text, 7711)?),
        "webdav.anonymous" => raw.webdav.anonymous = text_value(text)?,
        "webdav.users" => raw.webdav.users = RawUser::parse_list(text)?,
        "webdav.tls_cert" => raw.webdav.tls_cert = non_empty_path(text),
        "webdav.tls_key" => raw.webdav.tls_key = non_empty_path(text),
        "webdav.macos_metadata" => raw.webdav.macos_metadata = text_value(text)?,
        "webdav.advertise" => raw.webdav.advertise = boolean(text)?,
        "webdav.max_locks_per_resource" => raw.webdav.max_locks_per_resource = int(text)?,
        "webdav.max_locks_per_user" => raw.webdav.max_locks_per_user = int(text)?,
        "webdav.max_dead_props_per_resource" => raw.webdav.max_dead_props_per_resource = int(text)?,
        "webdav.max_dead_prop_bytes_per_resource" => {
            raw.webdav.max_dead_prop_bytes_per_resource = int(text)?
        }
        "discovery.mdns" => {
            raw.discovery.mdns = if text.trim().is_empty() {
                None
            } else {
                Some(boolean(text)?)
            }
        }
        "cluster.peer_listen" => raw.cluster.peer_listen = Some(parse_address(text, 7712)?),
        "cluster.data_listen" => raw.cluster.data_listen = Some(parse_address(text, 7713)?),
        "cluster.peers" => {
            raw.cluster.peers = text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        }
        "cluster.secret_file" => raw.cluster.secret_file = non_empty_path(text),
        "cluster.formation_wait_ms" => raw.cluster.formation_wait_ms = int(text)?,
        "cluster.voter_replace_after_ms" => raw.cluster.voter_replace_after_ms = int(text)?,
        "storage.disks" => {
            raw.storage.disks = text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect()
        }
        "storage.default_policy" => raw.storage.default_policy = text_value(text)?,
        "storage.small_file_threshold_bytes" => raw.storage.small_file_threshold_bytes = int(text)?,
        "storage.small_file_policy" => raw.storage.small_file_policy = text_value(text)?,
        "storage.block_size_bytes" => raw.storage.block_size_bytes = int(text)?,
        "storage.segment_part_bytes" => raw.storage.segment_part_bytes = int(text)?,
        "storage.write_quorum_extra" => raw.storage.write_quorum_extra = int(text)?,
        "storage.reserve_free_bytes" => raw.storage.reserve_free_bytes = int(text)?,
        "storage.conflict" => raw.storage.conflict = text_value(text)?,
        "ingest.lease_ms" => raw.ingest.lease_ms = int(text)?,
        "ingest.sweep_interval_ms" => raw.ingest.sweep_interval_ms = int(text)?,
        "ingest.orphan_grace_ms" => raw.ingest.orphan_grace_ms = int(text)?,
        "ingest.folders" => {
            raw.ingest.folders = text
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(RawDropFolder::from_spec)
                .collect()
        }
        "raft.heartbeat_interval_ms" => raw.raft.heartbeat_interval_ms = int(text)?,
        "raft.election_timeout_min_ms" => raw.raft.election_timeout_min_ms = int(text)?,
        "raft.election_timeout_max_ms" => raw.raft.election_timeout_max_ms = int(text)?,
        "raft.snapshot_every_logs" => raw.raft.snapshot_every_logs = int(text)?,
        "raft.max_logs_kept" => raw.raft.max_logs_kept = int(text)?,
        "repair.enabled" => raw.repair.enabled = boolean(text)?,
        "repair.disk_out_after_ms" => raw.repair.disk_out_after_ms = int(text)?,
        "repair.machine_out_after_ms" => raw.repair.machine_out_after_ms = int(text)?,
        "repair.max_bytes_per_sec" => raw.repair.max_bytes_per_sec = int(text)?,
        "repair.tranquility" => raw.repair.tranquility = int(text)?,
        "repair.retry_min_ms" => raw.repair.retry_min_ms = int(text)?,
        "repair.retry_max_ms" => raw.repair.retry_max_ms = int(text)?,
        "repair.auto_rebalance" => raw.repair.auto_rebalance = boolean(text)?,
        "scrub.enabled" => raw.scrub.enabled = boolean(text)?,
        "scrub.interval_days" => {
            raw.scrub.interval_days = text
                .trim()
                .parse()
                .map_err(|_| format!("expected a number of days such as 30 or 0.5, got {text:?}"))?
        }
        "scrub.max_bytes_per_sec" => raw.scrub.max_bytes_per_sec = int(text)?,
        "scrub.tranquility" => raw.scrub.tranquility = int(text)?,
        "scrub.hours" => {
            raw.scrub.hours = if text.trim().is_empty() {
                None
            } else {
                Some(text.trim().to_owned())
            }
        }
        "scrub.deep_every" => raw.scrub.deep_every = int(text)?,
        "meta.backup_interval_ms" => raw.meta.backup_interval_ms = int(text)?,
        "meta.backup_after_changes" => raw.meta.backup_after_changes = int(text)?,
        "meta.backup_keep" => raw.meta.backup_keep = int(text)?,
        "retention.trash_days" => {
            raw.retention.trash_days = text
                .trim()
                .parse()
                .map_err(|_| format!("expected a number of days such as 30 or 0.5, got {text:?}"))?
        }
        "retention.trash_min_free" => raw.retention.trash_min_free = text.trim().to_owned(),
        "log.level" => raw.log.level = text.to_owned(),
        "log.format" => raw.log.format = text_value(text)?,
        "alerts.debounce_ms" => raw.alerts.debounce_ms = int(text)?,
        "alerts.member_lost_after_ms" => raw.alerts.member_lost_after_ms = int(text)?,
        "alerts.backup_stale_after_ms" => raw.alerts.backup_stale_after_ms = int(text)?,
        "alerts.repair_stuck_attempts" => raw.alerts.repair_stuck_attempts = int(text)?,
        "alerts.webhooks" => {
            raw.alerts.webhooks = text
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(RawWebhook::from_spec)
                .collect::<Result<_, _>>()?
        }
        // KEYS and this match are kept in step by the `every_key_is_settable` test.
        _ => return Err(SetError::Unknown),
    }
    Ok(key)
}
