//! Configuration of a WormFS node.
//!
//! Settings are layered, highest first: command-line flags ([`Overrides`]), `WORMFS_<SECTION>__<KEY>`
//! environment variables, the TOML config file, built-in defaults. With no config file the node
//! runs on the embedded default: data in `./wormfs-data`, six folder-disks inside it, the API on
//! 127.0.0.1.
//!
//! Loading has two stages. The file is first read into serde structs that reject unknown keys
//! and fill missing ones with defaults (`raw`); [`load`] then builds the validated [`Config`] by
//! destructuring every raw field, so a key cannot be added without being validated. Every error
//! names where the value came from (file and line, variable, or flag), the key, and what was
//! expected; see [`ConfigError`].

// No unsafe code here: the workspace lint is `deny` only so that one syscall in
// wormfs-parts (`fsutil::writeback_error`) can be allowed.
#![forbid(unsafe_code)]

mod error;
mod policy;
mod raw;
mod summary;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};

pub use error::ConfigError;
pub use policy::{
    AfterIngest, AlertSeverity, Anonymous, ConflictRule, LogFormat, MacMetadata, MediaServerKind,
    ParseChoiceError, PolicyParseError, PolicySpec, Role, WebhookFormat, MAX_COPIES, MAX_EC_DATA,
    MAX_EC_PARITY,
};

use raw::{
    RawAdmin, RawAlerts, RawApi, RawCluster, RawConfig, RawDropFolder, RawIngest, RawLog,
    RawMediaServer, RawMeta, RawNode, RawRaft, RawRepair, RawRetention, RawScrub, RawStorage,
    RawWebdav, SetError,
};

/// Where the config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// No config file: the built-in single-machine default.
    Embedded,
    /// This config file.
    File(PathBuf),
}

/// Validated, complete configuration (every field filled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the config came from.
    pub source: ConfigSource,
    /// `[node]`.
    pub node: NodeConfig,
    /// `[api]`.
    pub api: ApiConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[webdav]`.
    pub webdav: WebdavConfig,
    /// `[discovery]`.
    pub discovery: DiscoveryConfig,
    /// `[cluster]`.
    pub cluster: ClusterConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[ingest]`.
    pub ingest: IngestConfig,
    /// `[raft]`.
    pub raft: RaftConfig,
    /// `[repair]`.
    pub repair: RepairConfig,
    /// `[scrub]`.
    pub scrub: ScrubConfig,
    /// `[meta]`.
    pub meta: MetaConfig,
    /// `[retention]`.
    pub retention: RetentionConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[alerts]`.
    pub alerts: AlertsConfig,
    /// `[[media_servers]]`.
    pub media_servers: Vec<MediaServerConfig>,
}

/// One `[[media_servers]]` entry: a Jellyfin or Plex server asked to scan the folders where
/// files were committed, deleted or moved (docs/media-servers.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaServerConfig {
    /// Jellyfin or Plex.
    pub kind: MediaServerKind,
    /// The server's base URL, without a trailing `/`.
    pub url: String,
    /// The file holding the server's token (resolved against the config file's folder); read
    /// and checked at start, read again before each request.
    pub token_file: PathBuf,
    /// WormFS folders and the media server's paths for them, longest WormFS folder first (a
    /// change is mapped by the longest folder that holds it; a change under none is not sent).
    pub path_map: Vec<PathMapEntry>,
    /// Wait this long (ms) after the last change before asking for a scan.
    pub notify_delay_ms: u64,
}

/// One `path_map` entry of a `[[media_servers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMapEntry {
    /// The WormFS folder: absolute, without a trailing `/` (the root is `/`).
    pub wormfs: String,
    /// Where the media server sees it, as written (a POSIX or a Windows path).
    pub server: String,
}

/// `[alerts]`: messages sent when something needs attention (docs/alerts.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsConfig {
    /// A condition must hold (or have cleared) this long before its message goes out.
    pub debounce_ms: u64,
    /// A member not heard from for this long is lost.
    pub member_lost_after_ms: u64,
    /// A machine's newest metadata backup older than this is stale (0: four times
    /// `meta.backup_interval_ms`; never when backups are off).
    pub backup_stale_after_ms: u64,
    /// A segment whose repair failed this many times in a row is stuck.
    pub repair_stuck_attempts: u32,
    /// Where the messages go.
    pub webhooks: Vec<WebhookConfig>,
}

/// One `[[alerts.webhooks]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The URL the messages are POSTed to.
    pub url: String,
    /// The body's shape.
    pub format: WebhookFormat,
    /// A file holding the token sent with each message (read at each send).
    pub token_file: Option<PathBuf>,
    /// Conditions below this severity are not sent.
    pub min_severity: AlertSeverity,
}

/// `[retention]`: the trash (docs/operations.md, "Trash").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// How long a deleted or replaced file stays in the trash, in ms (`trash_days`; 0: the
    /// trash is off and deletes free space at once).
    pub trash_ms: u64,
    /// Below this free space the oldest trash is freed first.
    pub trash_min_free: MinFree,
}

/// A free-space floor: bytes, or a share of the capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinFree {
    /// Bytes.
    Bytes(u64),
    /// Hundredths of a percent of the capacity (0 to 10000: "5%" is 500).
    Basis(u32),
}

impl MinFree {
    /// Parses "50GiB", "500 MB", "1T", "123" (bytes) or "5%".
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let bad =
            || format!("expected a size such as \"50GiB\" or a share such as \"5%\", got {s:?}");
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(v.is_finite() && (0.0..=100.0).contains(&v)) {
                return Err(format!("a share must be from 0% to 100%, got {s:?}"));
            }
            return Ok(Self::Basis((v * 100.0).round() as u32));
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = (t[..split].trim(), t[split..].trim());
        let v: f64 = num.parse().map_err(|_| bad())?;
        let mult: f64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kib" => 1024.0,
            "kb" => 1e3,
            "m" | "mib" => 1024.0 * 1024.0,
            "mb" => 1e6,
            "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
            "gb" => 1e9,
            "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            "tb" => 1e12,
            _ => return Err(bad()),
        };
        let bytes = v * mult;
        if !(bytes.is_finite() && (0.0..1.8e19).contains(&bytes)) {
            return Err(bad());
        }
        Ok(Self::Bytes(bytes as u64))
    }

    /// The floor in bytes for a store of `capacity` bytes.
    pub fn bytes(self, capacity: u64) -> u64 {
        match self {
            Self::Bytes(b) => b,
            Self::Basis(p) => (u128::from(capacity) * u128::from(p) / 10_000) as u64,
        }
    }
}

impl std::fmt::Display for MinFree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(b) => write!(f, "{b} bytes"),
            Self::Basis(p) => write!(f, "{}%", f64::from(*p) / 100.0),
        }
    }
}

/// `[node]`: who this machine is and where it keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Fixed node id; `None` means the server picks one and remembers it in `data_dir`.
    pub id: Option<u64>,
    /// Human-readable machine name; `None` means the host name.
    pub name: Option<String>,
    /// Folder for metadata, the local token and, by default, the folder-disks. A relative path
    /// from a config file is already resolved against the file's folder.
    pub data_dir: PathBuf,
    /// Cluster name: 1 to 63 characters of `a-z`, `0-9` and `-`.
    pub cluster_name: String,
}

/// `[api]`: the node API and admin page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Listen address: 127.0.0.1:7710 with no config file, 0.0.0.0:7710 for a file run.
    pub listen: SocketAddr,
}

/// `[admin]`: the operator's face on the API port: `/metrics` (docs/metrics.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// The file holding the bearer token `/metrics` asks for (resolved against the config
    /// file's folder). `None`: `/metrics` answers loopback clients only, without a token.
    pub metrics_token_file: Option<PathBuf>,
}

/// `[webdav]`: the WebDAV face.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebdavConfig {
    /// Listen address: 127.0.0.1:7711 with no config file, 0.0.0.0:7711 for a file run.
    pub listen: SocketAddr,
    /// Access without a password (off unless asked for).
    pub anonymous: Anonymous,
    /// Users; empty means the node's generated `admin` user (see docs/webdav.md).
    pub users: Vec<WebdavUser>,
    /// Certificate and key files: the face speaks HTTPS when set.
    pub tls: Option<TlsFiles>,
    /// What happens to Finder's `.DS_Store` and `._name` files.
    pub macos_metadata: MacMetadata,
    /// Advertise the face over mDNS (when `discovery.mdns` is on).
    pub advertise: bool,
    /// Caps on what clients may store beside files: locks and dead properties.
    pub limits: WebdavLimits,
}

/// `webdav.max_*`: caps on locks and dead properties (docs/webdav.md, "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebdavLimits {
    /// Live locks on one path.
    pub locks_per_resource: u32,
    /// Live locks held by one user (anonymous clients count as one).
    pub locks_per_user: u32,
    /// Dead properties on one file or directory.
    pub dead_props_per_resource: u32,
    /// Bytes of dead properties on one file or directory.
    pub dead_prop_bytes_per_resource: u64,
}

/// `[discovery]`: finding and being found on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// mDNS: off with no config file, on for a file run unless set.
    pub mdns: bool,
}

/// `[cluster]`: the peer network and how a cluster forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Where this node listens for its peers (the private control plane): 127.0.0.1:7712 with
    /// no config file, 0.0.0.0:7712 for a file run. Port 0 means any free port.
    pub peer_listen: SocketAddr,
    /// Where this node serves part data to its peers (the TLS data plane, mutual TLS with
    /// certificates pinned in the cluster membership): 127.0.0.1:7713 with no config file,
    /// 0.0.0.0:7713 for a file run. Port 0 means any free port.
    pub data_listen: SocketAddr,
    /// Static peers, each `HOST:PORT`: HOST an IPv4 address, a bracketed IPv6 address
    /// (`[fe80::1]:7712`) or a DNS name, PORT from 1 to 65535. Empty by default.
    pub peers: Vec<String>,
    /// The file holding the cluster secret; by default `cluster-secret` in `node.data_dir`. A
    /// relative path from a config file is already resolved against the file's folder.
    pub secret_file: PathBuf,
    /// How long a node with no cluster state looks for peers (static peers and mDNS) before it
    /// founds a cluster on its own, in milliseconds (0 to 600000).
    pub formation_wait_ms: u64,
    /// How long the leader waits before it replaces a voter it has not heard from by a
    /// reachable learner (the dead voter stays a member, as a learner, until
    /// `wormfs node remove`), in milliseconds (5000 to 86400000).
    pub voter_replace_after_ms: u64,
}

/// A WebDAV user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebdavUser {
    /// The name.
    pub name: String,
    /// The password's Argon2id hash, a PHC string (`$argon2id$v=19$...`).
    pub password_hash: String,
    /// What the user may do.
    pub role: Role,
}

/// PEM files for TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// `[storage]`: disks, policies and part layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// Disk folders, distinct. Empty means the server makes six folder-disks inside `data_dir`
    /// (`disks/disk-0` to `disks/disk-5`). Relative paths from a config file are already
    /// resolved against the file's folder.
    pub disks: Vec<PathBuf>,
    /// Policy for files at or above `small_file_threshold_bytes`.
    pub default_policy: PolicySpec,
    /// Files smaller than this many bytes use `small_file_policy`.
    pub small_file_threshold_bytes: u64,
    /// Policy for small files; `Auto` means `copies:min(3, disks)`.
    pub small_file_policy: PolicySpec,
    /// Erasure-coding block size: a multiple of 64 from 4096 to 16 MiB.
    pub block_size_bytes: u32,
    /// Size of one segment part: a positive multiple of `block_size_bytes`, at most 1 GiB.
    pub segment_part_bytes: u64,
    /// A segment commits once k + this many parts are durable (the server caps it at k+m).
    pub write_quorum_extra: u8,
    /// A disk with less free space than this gets no new parts.
    pub reserve_free_bytes: u64,
    /// What happens when a new file's name already exists.
    pub conflict: ConflictRule,
}

/// `[ingest]`: uploads in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    /// How long an upload keeps its claim without progress, in milliseconds.
    pub lease_ms: u64,
    /// How often abandoned uploads and orphan parts are swept, in milliseconds.
    pub sweep_interval_ms: u64,
    /// Minimum age of an unreferenced part before a sweep deletes it, in milliseconds
    /// (at least `lease_ms`).
    pub orphan_grace_ms: u64,
    /// Drop folders (`[[ingest.folders]]`, `--ingest PATH[=TREE]`).
    pub folders: Vec<DropFolderConfig>,
}

/// One drop folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropFolderConfig {
    /// The folder watched (absolute; relative paths in a file are resolved against its folder).
    pub path: PathBuf,
    /// Where its files go in the tree: an absolute tree path such as `/` or `/films`.
    pub tree: String,
    /// Policy for its files; `None` means the tree's own (the nearest directory policy).
    pub policy: Option<PolicySpec>,
    /// What happens to an original once it is committed.
    pub after: AfterIngest,
    /// Where originals are moved with `after = "move"` (absolute).
    pub done_dir: Option<PathBuf>,
    /// The rule when a name is taken.
    pub conflict: ConflictRule,
    /// Poll (network mounts) instead of inotify.
    pub poll: bool,
    /// A file is taken after this long closed and unchanged, in milliseconds.
    pub settle_ms: u64,
    /// How often a polled folder is scanned, in milliseconds.
    pub poll_interval_ms: u64,
}

/// `[repair]`: keeping every file at its policy's redundancy (docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairConfig {
    /// Repair runs on this node.
    pub enabled: bool,
    /// A disk down this long goes out and its parts are rebuilt elsewhere.
    pub disk_out_after_ms: u64,
    /// A machine not answering this long has its disks go out.
    pub machine_out_after_ms: u64,
    /// Bytes per second read and written by repair on this node (0: no limit).
    pub max_bytes_per_sec: u64,
    /// After each step, sleep this many times the step's duration.
    pub tranquility: u32,
    /// The first retry of a failed repair after this long; doubled each time.
    pub retry_min_ms: u64,
    /// Retries never wait longer than this.
    pub retry_max_ms: u64,
    /// The leader moves parts toward an even fill by itself when nothing else is queued.
    pub auto_rebalance: bool,
}

/// A daily window of local time, minutes since midnight; `start > end` wraps past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyWindow {
    /// First minute inside.
    pub start_min: u32,
    /// First minute after.
    pub end_min: u32,
}

impl DailyWindow {
    /// Whether minute-of-day `m` is inside the window.
    pub fn contains(&self, m: u32) -> bool {
        if self.start_min <= self.end_min {
            (self.start_min..self.end_min).contains(&m)
        } else {
            m >= self.start_min || m < self.end_min
        }
    }

    /// Parses `HH:MM-HH:MM`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let minute = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
        };
        let bad = || format!("expected a window such as \"01:00-06:00\", got {s:?}");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (start_min, end_min) = (minute(a).ok_or_else(bad)?, minute(b).ok_or_else(bad)?);
        if start_min == end_min {
            return Err(format!("the window {s:?} is empty"));
        }
        Ok(Self { start_min, end_min })
    }
}

/// `[meta]`: backups of the metadata on the data disks (docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaConfig {
    /// A backup this often, when anything changed (0: off).
    pub backup_interval_ms: u64,
    /// A backup sooner, after this many applied metadata changes.
    pub backup_after_changes: u64,
    /// Backups kept on each disk (the newest).
    pub backup_keep: u32,
}

/// `[scrub]`: reading every part on a schedule (docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubConfig {
    /// Scrub runs on this node.
    pub enabled: bool,
    /// Every part is verified at least this often, in milliseconds (`interval_days`).
    pub interval_ms: u64,
    /// Bytes per second read by scrub on this node (0: no limit).
    pub max_bytes_per_sec: u64,
    /// After each step, sleep this many times the step's duration.
    pub tranquility: u32,
    /// Only scrub (and repair, except segments one lost part away from unreadable) inside this
    /// daily window of local time (`None`: any time).
    pub hours: Option<DailyWindow>,
    /// Every Nth pass is deep (0: only when asked).
    pub deep_every: u32,
}

/// `[raft]`: the replicated metadata log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftConfig {
    /// Leader heartbeat interval in milliseconds; below `election_timeout_min_ms`.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election timeout in milliseconds.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout in milliseconds; above the lower bound.
    pub election_timeout_max_ms: u64,
    /// Take a snapshot after this many log entries.
    pub snapshot_every_logs: u64,
    /// Log entries kept after a snapshot, for followers that fall behind.
    pub max_logs_kept: u64,
}

/// `[log]`: the server's own log output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `tracing_subscriber::EnvFilter` directives, e.g. `info` or `info,wormfs=debug`.
    pub level: String,
    /// Text or JSON lines.
    pub format: LogFormat,
}

/// Values given on the command line (clap already merged `WORMFS_DATA_DIR`, `WORMFS_DISKS` and
/// `WORMFS_LISTEN` into these). They beat `WORMFS_<SECTION>__<KEY>` variables and the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--data-dir` / `WORMFS_DATA_DIR`: replaces `node.data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `--disk PATH` (repeatable) / `WORMFS_DISKS`: when non-empty, replaces `storage.disks`.
    pub disks: Vec<PathBuf>,
    /// `--listen ADDR` / `WORMFS_LISTEN`: replaces `api.listen`.
    pub listen: Option<SocketAddr>,
    /// `--ingest PATH[=TREE]` (repeatable): when non-empty, replaces `ingest.folders`.
    pub ingest: Vec<String>,
    /// `--webdav-listen ADDR` / `WORMFS_WEBDAV_LISTEN`: replaces `webdav.listen`.
    pub webdav_listen: Option<SocketAddr>,
    /// `--anonymous ro|rw|off`: replaces `webdav.anonymous`.
    pub anonymous: Option<Anonymous>,
    /// `--mdns on|off`: replaces `discovery.mdns`.
    pub mdns: Option<bool>,
    /// `--peer-listen ADDR`: replaces `cluster.peer_listen`.
    pub peer_listen: Option<SocketAddr>,
    /// `--data-listen ADDR`: replaces `cluster.data_listen`.
    pub data_listen: Option<SocketAddr>,
    /// `--peer HOST:PORT` (repeatable): when non-empty, replaces `cluster.peers`.
    pub peers: Vec<String>,
    /// `--cluster-secret-file PATH`: replaces `cluster.secret_file`.
    pub secret_file: Option<PathBuf>,
    /// `--log-format text|json`: replaces `log.format`.
    pub log_format: Option<LogFormat>,
}

/// The complete, commented example config.
const EXAMPLE: &str = include_str!("example.toml");

/// A complete, commented example config: every key with its default and a sentence each. It
/// parses back to the defaults of a file run. Printed by `wormfs config example`.
pub fn example() -> &'static str {
    EXAMPLE
}

/// Prefix of the environment variables that set config keys.
const ENV_PREFIX: &str = "WORMFS_";

/// Loads and validates the configuration.
///
/// `path` `None` uses the embedded default (data in `./wormfs-data`, API on 127.0.0.1:7710, no
/// disks listed); `Some` reads that TOML file, where `api.listen` defaults to 0.0.0.0:7710 and
/// relative paths are resolved against the file's folder. Then `WORMFS_<SECTION>__<KEY>`
/// variables from `env` are applied (pass `std::env::vars()`; variables without `__` are
/// ignored), then `overrides`.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let (mut raw, file) = match path {
        None => (RawConfig::default(), None),
        Some(path) => {
            let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let raw = raw::parse_file(&text).map_err(|message| ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            })?;
            (raw, Some(ConfigFile::new(path, text)))
        }
    };
    let mut origins = BTreeMap::new();
    apply_env(&mut raw, env, &mut origins)?;
    apply_overrides(&mut raw, overrides, &mut origins);
    let ctx = Ctx {
        file: file.as_ref(),
        origins: &origins,
    };
    build(raw, &ctx)
}

/// Where a value that did not come from the file came from.
#[derive(Debug, Clone)]
enum Origin {
    /// This environment variable.
    Env(String),
    /// This command-line flag (and its variable).
    Flag(&'static str),
}

/// The config file's path, folder and text, kept to locate keys for error messages.
struct ConfigFile {
    path: PathBuf,
    dir: PathBuf,
    text: String,
    doc: Option<toml_edit::ImDocument<String>>,
}

impl ConfigFile {
    fn new(path: &Path, text: String) -> Self {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let doc = toml_edit::ImDocument::parse(text.clone()).ok();
        ConfigFile {
            path: path.to_path_buf(),
            dir,
            text,
            doc,
        }
    }

    /// The 1-based line of `key` (`section.key`) in the file, or of its `index`th list element.
    fn line_of(&self, key: &str, index: Option<usize>) -> Option<usize> {
        let (section, field) = key.split_once('.')?;
        let item = self.doc.as_ref()?.get(section)?.get(field)?;
        let item = index.and_then(|i| item.get(i)).unwrap_or(item);
        let span = item.span()?;
        Some(raw::line_column(&self.text, span.start).0)
    }

    /// The 1-based line of `field` in the `index`th table of the top-level array `array`
    /// (`[[media_servers]]`), or of that table's header when the field is not written.
    fn line_of_entry(&self, array: &str, index: usize, field: &str) -> Option<usize> {
        let entry = self
            .doc
            .as_ref()?
            .get(array)?
            .as_array_of_tables()?
            .get(index)?;
        let span = entry
            .get(field)
            .and_then(toml_edit::Item::span)
            .or_else(|| entry.span())?;
        Some(raw::line_column(&self.text, span.start).0)
    }

    /// Resolves a relative path against the file's folder.
    fn resolve(&self, path: &Path) -> PathBuf {
        normalize(&self.dir.join(path))
    }
}

/// Removes `.` components and trailing slashes without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for (i, component) in path.components().enumerate() {
        if component == Component::CurDir && i > 0 {
            continue;
        }
        out.push(component);
    }
    out
}

/// Applies `WORMFS_<SECTION>__<KEY>` variables, in name order.
fn apply_env(
    raw: &mut RawConfig,
    env: impl IntoIterator<Item = (String, String)>,
    origins: &mut BTreeMap<&'static str, Origin>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name.contains("__"))
        .collect();
    vars.sort();
    for (var, value) in vars {
        let rest = &var[ENV_PREFIX.len()..];
        let Some((section, key)) = rest.split_once("__") else {
            return Err(unknown_env_key(var, None));
        };
        let path = format!(
            "{}.{}",
            section.to_ascii_lowercase(),
            key.to_ascii_lowercase()
        );
        match raw::set_key(raw, &path, &value) {
            Ok(key) => {
                origins.insert(key, Origin::Env(var));
            }
            Err(SetError::Unknown) => return Err(unknown_env_key(var, Some(&path))),
            Err(SetError::Invalid(message)) => {
                return Err(ConfigError::Env {
                    message: format!("{path}: {message}"),
                    var,
                })
            }
        }
    }
    Ok(())
}

/// The error for a `WORMFS_..__..` variable that names no key.
fn unknown_env_key(var: String, path: Option<&str>) -> ConfigError {
    let mut message = match path {
        Some(path) => format!("names no configuration key (`{path}` does not exist)"),
        None => "names no configuration key".to_owned(),
    };
    message.push_str("; expected WORMFS_<SECTION>__<KEY>, e.g. WORMFS_STORAGE__BLOCK_SIZE_BYTES");
    if let Some((section, _)) = path.and_then(|p| p.split_once('.')) {
        let keys: Vec<String> = raw::KEYS
            .iter()
            .filter_map(|k| k.strip_prefix(section)?.strip_prefix('.'))
            .map(|k| format!("WORMFS_{}__{}", section, k).to_ascii_uppercase())
            .collect();
        if !keys.is_empty() {
            message.push_str(&format!("; section [{section}] has {}", keys.join(", ")));
        }
    }
    ConfigError::Env { var, message }
}

/// Applies command-line values.
fn apply_overrides(
    raw: &mut RawConfig,
    overrides: &Overrides,
    origins: &mut BTreeMap<&'static str, Origin>,
) {
    let Overrides {
        data_dir,
        disks,
        listen,
        ingest,
        webdav_listen,
        anonymous,
        mdns,
        peer_listen,
        data_listen,
        peers,
        secret_file,
        log_format,
    } = overrides;
    if let Some(f) = log_format {
        raw.log.format = *f;
        origins.insert("log.format", Origin::Flag("--log-format"));
    }
    if let Some(m) = mdns {
        raw.discovery.mdns = Some(*m);
        origins.insert("discovery.mdns", Origin::Flag("--mdns"));
    }
    if let Some(listen) = peer_listen {
        raw.cluster.peer_listen = Some(*listen);
        origins.insert("cluster.peer_listen", Origin::Flag("--peer-listen"));
    }
    if let Some(listen) = data_listen {
        raw.cluster.data_listen = Some(*listen);
        origins.insert("cluster.data_listen", Origin::Flag("--data-listen"));
    }
    if !peers.is_empty() {
        raw.cluster.peers = peers.clone();
        origins.insert("cluster.peers", Origin::Flag("--peer"));
    }
    if let Some(path) = secret_file {
        raw.cluster.secret_file = Some(path.clone());
        origins.insert("cluster.secret_file", Origin::Flag("--cluster-secret-file"));
    }
    if let Some(a) = anonymous {
        raw.webdav.anonymous = *a;
        origins.insert("webdav.anonymous", Origin::Flag("--anonymous"));
    }
    if let Some(data_dir) = data_dir {
        raw.node.data_dir = data_dir.clone();
        origins.insert(
            "node.data_dir",
            Origin::Flag("--data-dir / WORMFS_DATA_DIR"),
        );
    }
    if !disks.is_empty() {
        raw.storage.disks = disks.clone();
        origins.insert("storage.disks", Origin::Flag("--disk / WORMFS_DISKS"));
    }
    if let Some(listen) = listen {
        raw.api.listen = Some(*listen);
        origins.insert("api.listen", Origin::Flag("--listen / WORMFS_LISTEN"));
    }
    if let Some(listen) = webdav_listen {
        raw.webdav.listen = Some(*listen);
        origins.insert(
            "webdav.listen",
            Origin::Flag("--webdav-listen / WORMFS_WEBDAV_LISTEN"),
        );
    }
    if !ingest.is_empty() {
        raw.ingest.folders = ingest.iter().map(|s| RawDropFolder::from_spec(s)).collect();
        origins.insert("ingest.folders", Origin::Flag("--ingest"));
    }
}

/// What validation needs to know to word an error and resolve paths.
struct Ctx<'a> {
    file: Option<&'a ConfigFile>,
    origins: &'a BTreeMap<&'static str, Origin>,
}

impl Ctx<'_> {
    /// The file a value came from, if it came from (or defaulted in) the file.
    fn file_for(&self, key: &str) -> Option<&ConfigFile> {
        if self.origins.contains_key(key) {
            None
        } else {
            self.file
        }
    }

    /// Resolves a path value against the config file's folder if it came from the file.
    fn resolve(&self, key: &str, path: PathBuf) -> PathBuf {
        match self.file_for(key) {
            Some(file) if path.is_relative() => file.resolve(&path),
            _ => path,
        }
    }

    /// An error about `key` (and its `index`th element), worded for where the value came from.
    fn err(&self, key: &'static str, index: Option<usize>, message: String) -> ConfigError {
        match self.origins.get(key) {
            Some(Origin::Env(var)) => ConfigError::Env {
                var: var.clone(),
                message: format!("{key}: {message}"),
            },
            Some(Origin::Flag(flag)) => ConfigError::Invalid {
                path: None,
                key: key.to_owned(),
                line: None,
                message: format!("{message} (given by {flag})"),
            },
            None => {
                let line = self.file.and_then(|f| f.line_of(key, index));
                let message = if line.is_none() {
                    format!("{message} (the default value)")
                } else {
                    message
                };
                ConfigError::Invalid {
                    path: self.file.map(|f| f.path.clone()),
                    key: key.to_owned(),
                    line,
                    message,
                }
            }
        }
    }

    /// Whether `key` was given anywhere (file, environment or flag) rather than defaulted.
    fn is_set(&self, key: &str) -> bool {
        self.origins.contains_key(key) || self.file.is_some_and(|f| f.line_of(key, None).is_some())
    }

    /// Fails with `message` unless `ok`, for a rule relating two keys. The error is about
    /// `first` unless only `second` was set by the user.
    fn check_pair(
        &self,
        ok: bool,
        first: &'static str,
        second: &'static str,
        message: impl FnOnce() -> String,
    ) -> Result<(), ConfigError> {
        let key = if !self.is_set(first) && self.is_set(second) {
            second
        } else {
            first
        };
        self.check(ok, key, message)
    }

    /// Fails with `message` about `key` unless `ok`.
    fn check(
        &self,
        ok: bool,
        key: &'static str,
        message: impl FnOnce() -> String,
    ) -> Result<(), ConfigError> {
        if ok {
            Ok(())
        } else {
            Err(self.err(key, None, message()))
        }
    }
}

/// Builds the validated config, destructuring every raw field.
fn build(raw: RawConfig, ctx: &Ctx<'_>) -> Result<Config, ConfigError> {
    let RawConfig {
        node,
        api,
        admin,
        webdav,
        discovery,
        cluster,
        storage,
        ingest,
        raft,
        repair,
        scrub,
        meta,
        retention,
        log,
        alerts,
        media_servers,
    } = raw;
    // Ingest is checked first, against the raw data folder, as it always was; `cluster` needs
    // the validated, resolved `node.data_dir` for its default secret file.
    let source = match ctx.file {
        Some(file) => ConfigSource::File(file.path.clone()),
        None => ConfigSource::Embedded,
    };
    let ingest = {
        let data_dir = normalize(&ctx.resolve("node.data_dir", node.data_dir.clone()));
        let disks: Vec<PathBuf> = storage
            .disks
            .iter()
            .flat_map(|d| {
                let d = normalize(&ctx.resolve("storage.disks", d.clone()));
                // A bad glob is reported by build_storage, naming the key.
                expand_disk_glob(&d).unwrap_or_default()
            })
            .collect();
        build_ingest(ingest, storage.conflict, &data_dir, &disks, ctx)?
    };
    let node = build_node(node, ctx)?;
    let api = build_api(api, ctx);
    let admin = build_admin(admin, ctx)?;
    let webdav = build_webdav(webdav, ctx)?;
    let discovery = DiscoveryConfig {
        mdns: discovery.mdns.unwrap_or(ctx.file.is_some()),
    };
    let cluster = build_cluster(cluster, &node.data_dir, ctx)?;
    Ok(Config {
        source,
        node,
        api,
        admin,
        webdav,
        discovery,
        cluster,
        storage: build_storage(storage, ctx)?,
        ingest,
        raft: build_raft(raft, ctx)?,
        repair: build_repair(repair, ctx)?,
        scrub: build_scrub(scrub, ctx)?,
        meta: build_meta(meta, ctx)?,
        retention: build_retention(retention, ctx)?,
        log: build_log(log, ctx)?,
        alerts: build_alerts(alerts, ctx)?,
        media_servers: build_media_servers(media_servers, ctx)?,
    })
}

fn build_node(node: RawNode, ctx: &Ctx<'_>) -> Result<NodeConfig, ConfigError> {
    let RawNode {
        id,
        name,
        data_dir,
        cluster_name,
    } = node;
    if let Some(name) = &name {
        ctx.check(
            !name.trim().is_empty() && !name.chars().any(char::is_control),
            "node.name",
            || format!("must be a non-empty name without control characters, got {name:?}"),
        )?;
    }
    ctx.check(!data_dir.as_os_str().is_empty(), "node.data_dir", || {
        "must not be empty".to_owned()
    })?;
    let data_dir = ctx.resolve("node.data_dir", data_dir);
    ctx.check(
        (1..=63).contains(&cluster_name.len())
            && cluster_name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "node.cluster_name",
        || format!("must be 1 to 63 characters of a-z, 0-9 and '-', got {cluster_name:?}"),
    )?;
    Ok(NodeConfig {
        id,
        name,
        data_dir,
        cluster_name,
    })
}

/// A listener's default: all interfaces for a file run, 127.0.0.1 for the embedded default.
fn default_listen(ctx: &Ctx<'_>, port: u16) -> SocketAddr {
    let ip = if ctx.file.is_some() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    };
    SocketAddr::new(ip, port)
}

fn build_api(api: RawApi, ctx: &Ctx<'_>) -> ApiConfig {
    let RawApi { listen } = api;
    ApiConfig {
        listen: listen.unwrap_or_else(|| default_listen(ctx, raw::DEFAULT_API_PORT)),
    }
}

fn build_admin(admin: RawAdmin, ctx: &Ctx<'_>) -> Result<AdminConfig, ConfigError> {
    let RawAdmin { metrics_token_file } = admin;
    let metrics_token_file = match metrics_token_file {
        Some(path) => {
            ctx.check(
                !path.as_os_str().is_empty(),
                "admin.metrics_token_file",
                || "must not be empty (leave it unset for /metrics on loopback only)".to_owned(),
            )?;
            Some(absolute(&ctx.resolve("admin.metrics_token_file", path)))
        }
        None => None,
    };
    Ok(AdminConfig { metrics_token_file })
}

fn build_webdav(webdav: RawWebdav, ctx: &Ctx<'_>) -> Result<WebdavConfig, ConfigError> {
    let RawWebdav {
        listen,
        anonymous,
        users,
        tls_cert,
        tls_key,
        macos_metadata,
        advertise,
        max_locks_per_resource,
        max_locks_per_user,
        max_dead_props_per_resource,
        max_dead_prop_bytes_per_resource,
    } = webdav;
    for (key, v) in [
        (
            "webdav.max_locks_per_resource",
            u64::from(max_locks_per_resource),
        ),
        ("webdav.max_locks_per_user", u64::from(max_locks_per_user)),
        (
            "webdav.max_dead_props_per_resource",
            u64::from(max_dead_props_per_resource),
        ),
        (
            "webdav.max_dead_prop_bytes_per_resource",
            max_dead_prop_bytes_per_resource,
        ),
    ] {
        ctx.check(v >= 1, key, || "must be at least 1".to_owned())?;
    }
    let mut out = Vec::with_capacity(users.len());
    for (i, u) in users.into_iter().enumerate() {
        let bad = |m: String| Err(ctx.err("webdav.users", Some(i), m));
        if u.name.is_empty() || u.name.contains(':') || u.name.chars().any(char::is_control) {
            return bad(format!(
                "user name {:?}: must be non-empty, without `:` or control characters",
                u.name
            ));
        }
        if out.iter().any(|o: &WebdavUser| o.name == u.name) {
            return bad(format!("user {:?} is listed twice", u.name));
        }
        if !u.password_hash.starts_with("$argon2") {
            return bad(format!(
                "user {:?}: password_hash must be an Argon2 hash ($argon2id$...) as printed by `wormfs webdav hash-password`, not a password",
                u.name
            ));
        }
        out.push(WebdavUser {
            name: u.name,
            password_hash: u.password_hash,
            role: u.role,
        });
    }
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: absolute(&ctx.resolve("webdav.tls_cert", cert)),
            key: absolute(&ctx.resolve("webdav.tls_key", key)),
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ctx.err(
                "webdav.tls_cert",
                None,
                "is set but webdav.tls_key is not: HTTPS needs both".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(ctx.err(
                "webdav.tls_key",
                None,
                "is set but webdav.tls_cert is not: HTTPS needs both".into(),
            ))
        }
    };
    Ok(WebdavConfig {
        listen: listen.unwrap_or_else(|| default_listen(ctx, raw::DEFAULT_WEBDAV_PORT)),
        anonymous,
        users: out,
        tls,
        macos_metadata,
        advertise,
        limits: WebdavLimits {
            locks_per_resource: max_locks_per_resource,
            locks_per_user: max_locks_per_user,
            dead_props_per_resource: max_dead_props_per_resource,
            dead_prop_bytes_per_resource: max_dead_prop_bytes_per_resource,
        },
    })
}

/// Largest allowed `cluster.formation_wait_ms` (10 minutes).
const MAX_FORMATION_WAIT_MS: u64 = 600_000;
/// Smallest allowed `cluster.voter_replace_after_ms` (5 s).
const MIN_VOTER_REPLACE_AFTER_MS: u64 = 5_000;
/// Largest allowed `cluster.voter_replace_after_ms` (one day).
const MAX_VOTER_REPLACE_AFTER_MS: u64 = 86_400_000;

/// Validates `[cluster]`; `data_dir` is the validated, resolved `node.data_dir`, which holds the
/// secret file by default.
fn build_cluster(
    cluster: RawCluster,
    data_dir: &Path,
    ctx: &Ctx<'_>,
) -> Result<ClusterConfig, ConfigError> {
    let RawCluster {
        peer_listen,
        data_listen,
        peers,
        secret_file,
        formation_wait_ms,
        voter_replace_after_ms,
    } = cluster;
    for (i, peer) in peers.iter().enumerate() {
        if !is_peer_address(peer) {
            return Err(ctx.err(
                "cluster.peers",
                Some(i),
                format!(
                    "must be HOST:PORT like nas2.local:7712 or 192.168.1.20:7712, got {peer:?}"
                ),
            ));
        }
    }
    let secret_file = match secret_file {
        Some(path) => {
            ctx.check(!path.as_os_str().is_empty(), "cluster.secret_file", || {
                "must not be empty (leave it unset for cluster-secret in node.data_dir)".to_owned()
            })?;
            ctx.resolve("cluster.secret_file", path)
        }
        None => data_dir.join(raw::DEFAULT_SECRET_FILE_NAME),
    };
    ctx.check(
        formation_wait_ms <= MAX_FORMATION_WAIT_MS,
        "cluster.formation_wait_ms",
        || format!("must be at most {MAX_FORMATION_WAIT_MS} (10 minutes), got {formation_wait_ms}"),
    )?;
    ctx.check(
        voter_replace_after_ms >= MIN_VOTER_REPLACE_AFTER_MS,
        "cluster.voter_replace_after_ms",
        || {
            format!(
                "must be at least {MIN_VOTER_REPLACE_AFTER_MS} (5 s), got {voter_replace_after_ms}"
            )
        },
    )?;
    ctx.check(
        voter_replace_after_ms <= MAX_VOTER_REPLACE_AFTER_MS,
        "cluster.voter_replace_after_ms",
        || {
            format!(
                "must be at most {MAX_VOTER_REPLACE_AFTER_MS} (one day), got {voter_replace_after_ms}"
            )
        },
    )?;
    Ok(ClusterConfig {
        peer_listen: peer_listen.unwrap_or_else(|| default_listen(ctx, raw::DEFAULT_PEER_PORT)),
        data_listen: data_listen.unwrap_or_else(|| default_listen(ctx, raw::DEFAULT_DATA_PORT)),
        peers,
        secret_file,
        formation_wait_ms,
        voter_replace_after_ms,
    })
}

/// Whether `text` is `HOST:PORT`: HOST an IPv4 address, a bracketed IPv6 address or a DNS name
/// (labels of letters, digits and `-`, joined by `.`), PORT from 1 to 65535.
fn is_peer_address(text: &str) -> bool {
    let Some((host, port)) = text.rsplit_once(':') else {
        return false;
    };
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    if !port_ok {
        return false;
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    // Digits and dots only but not an IPv4 address (`192.168.1.300`): a mistyped address, not
    // a name.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return false;
    }
    host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Smallest allowed block size.
const MIN_BLOCK: u32 = 4096;
/// Largest allowed block size (16 MiB).
const MAX_BLOCK: u32 = 16 * 1024 * 1024;
/// Largest allowed segment part (1 GiB).
const MAX_SEGMENT_PART: u64 = 1024 * 1024 * 1024;
/// Largest allowed `write_quorum_extra` (the largest parity count).
const MAX_QUORUM_EXTRA: u8 = 16;

/// A disk entry whose last component is `*` (`/disks/*`) stands for every folder in its parent,
/// in name order (names starting with `.` left out): one per mounted volume in a container.
/// Any other entry is itself. Matching no folder is an error, never an empty list.
fn expand_disk_glob(disk: &Path) -> Result<Vec<PathBuf>, String> {
    if disk.file_name().is_none_or(|n| n != "*") {
        return Ok(vec![disk.to_owned()]);
    }
    let parent = disk.parent().unwrap_or(Path::new("/"));
    let entries = std::fs::read_dir(parent).map_err(|e| {
        format!(
            "{} stands for every folder in {}, which cannot be read: {e}",
            disk.display(),
            parent.display()
        )
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(format!(
            "{} matches no folder: mount each disk as a folder of {} (e.g. {}/disk1)",
            disk.display(),
            parent.display(),
            parent.display()
        ));
    }
    Ok(found)
}

fn build_storage(storage: RawStorage, ctx: &Ctx<'_>) -> Result<StorageConfig, ConfigError> {
    let RawStorage {
        disks,
        default_policy,
        small_file_threshold_bytes,
        small_file_policy,
        block_size_bytes,
        segment_part_bytes,
        write_quorum_extra,
        reserve_free_bytes,
        conflict,
    } = storage;

    let mut seen = HashSet::new();
    let mut resolved = Vec::with_capacity(disks.len());
    for (i, disk) in disks.into_iter().enumerate() {
        if disk.as_os_str().is_empty() {
            return Err(ctx.err(
                "storage.disks",
                Some(i),
                "disk paths must not be empty".to_owned(),
            ));
        }
        let disk = normalize(&ctx.resolve("storage.disks", disk));
        for disk in expand_disk_glob(&disk).map_err(|m| ctx.err("storage.disks", Some(i), m))? {
            if !seen.insert(disk.clone()) {
                return Err(ctx.err(
                    "storage.disks",
                    Some(i),
                    format!("disk {} is listed twice", disk.display()),
                ));
            }
            resolved.push(disk);
        }
    }

    ctx.check(
        block_size_bytes % 64 == 0,
        "storage.block_size_bytes",
        || format!("must be a multiple of 64, got {block_size_bytes}"),
    )?;
    ctx.check(
        (MIN_BLOCK..=MAX_BLOCK).contains(&block_size_bytes),
        "storage.block_size_bytes",
        || format!("must be between {MIN_BLOCK} and {MAX_BLOCK} (16 MiB), got {block_size_bytes}"),
    )?;
    ctx.check(
        segment_part_bytes > 0 && segment_part_bytes <= MAX_SEGMENT_PART,
        "storage.segment_part_bytes",
        || format!("must be between 1 and {MAX_SEGMENT_PART} (1 GiB), got {segment_part_bytes}"),
    )?;
    ctx.check_pair(
        segment_part_bytes % u64::from(block_size_bytes) == 0,
        "storage.segment_part_bytes",
        "storage.block_size_bytes",
        || {
            format!(
                "storage.segment_part_bytes ({segment_part_bytes}) must be a multiple of \
                 storage.block_size_bytes ({block_size_bytes})"
            )
        },
    )?;
    ctx.check(
        write_quorum_extra <= MAX_QUORUM_EXTRA,
        "storage.write_quorum_extra",
        || format!("must be at most {MAX_QUORUM_EXTRA}, got {write_quorum_extra}"),
    )?;

    Ok(StorageConfig {
        disks: resolved,
        default_policy,
        small_file_threshold_bytes,
        small_file_policy,
        block_size_bytes,
        segment_part_bytes,
        write_quorum_extra,
        reserve_free_bytes,
        conflict,
    })
}

fn build_ingest(
    ingest: RawIngest,
    default_conflict: ConflictRule,
    data_dir: &Path,
    disks: &[PathBuf],
    ctx: &Ctx<'_>,
) -> Result<IngestConfig, ConfigError> {
    let RawIngest {
        lease_ms,
        sweep_interval_ms,
        orphan_grace_ms,
        folders,
    } = ingest;
    ctx.check(lease_ms > 0, "ingest.lease_ms", || {
        "must be positive, got 0".to_owned()
    })?;
    ctx.check(sweep_interval_ms > 0, "ingest.sweep_interval_ms", || {
        "must be positive, got 0".to_owned()
    })?;
    ctx.check_pair(
        orphan_grace_ms >= lease_ms,
        "ingest.orphan_grace_ms",
        "ingest.lease_ms",
        || {
            format!(
                "ingest.orphan_grace_ms ({orphan_grace_ms}) must be at least ingest.lease_ms \
                 ({lease_ms}) so a live upload's parts are never swept"
            )
        },
    )?;
    let mut built: Vec<DropFolderConfig> = Vec::with_capacity(folders.len());
    for (i, f) in folders.into_iter().enumerate() {
        let folder = build_drop_folder(f, i, default_conflict, data_dir, disks, ctx)?;
        for (j, other) in built.iter().enumerate() {
            if folder.path.starts_with(&other.path) || other.path.starts_with(&folder.path) {
                return Err(ctx.err(
                    "ingest.folders",
                    Some(i),
                    format!(
                        "drop folder {} overlaps drop folder {} ({}); drop folders must not be \
                         inside one another",
                        i + 1,
                        j + 1,
                        other.path.display()
                    ),
                ));
            }
        }
        built.push(folder);
    }
    Ok(IngestConfig {
        lease_ms,
        sweep_interval_ms,
        orphan_grace_ms,
        folders: built,
    })
}

/// Validates drop folder `i` (0-based; messages count from 1).
fn build_drop_folder(
    f: RawDropFolder,
    i: usize,
    default_conflict: ConflictRule,
    data_dir: &Path,
    disks: &[PathBuf],
    ctx: &Ctx<'_>,
) -> Result<DropFolderConfig, ConfigError> {
    let RawDropFolder {
        path,
        tree,
        policy,
        after,
        done_dir,
        conflict,
        poll,
        settle_ms,
        poll_interval_ms,
    } = f;
    let n = i + 1;
    let bad = |message: String| {
        ctx.err(
            "ingest.folders",
            Some(i),
            format!("drop folder {n}: {message}"),
        )
    };
    if path.as_os_str().is_empty() {
        return Err(bad(
            "path must not be empty (expected PATH or PATH=TREE_PREFIX)".into(),
        ));
    }
    let path = absolute(&ctx.resolve("ingest.folders", path));
    if path.starts_with(data_dir) || data_dir.starts_with(&path) {
        return Err(bad(format!(
            "{} overlaps the data folder {}; a drop folder must be outside it",
            path.display(),
            data_dir.display()
        )));
    }
    if let Some(d) = disks
        .iter()
        .find(|d| path.starts_with(d) || d.starts_with(&path))
    {
        return Err(bad(format!(
            "{} overlaps the disk {}; a drop folder must be outside every disk folder",
            path.display(),
            d.display()
        )));
    }
    if !tree.starts_with('/')
        || tree
            .split('/')
            .any(|c| c == ".." || c == "." || c.contains('\\') || c.contains('\0'))
    {
        return Err(bad(format!(
            "tree = {tree:?}: expected an absolute tree path such as \"/\" or \"/films\""
        )));
    }
    let done_dir = match (after, done_dir) {
        (AfterIngest::Move, None) => {
            return Err(bad(
                r#"after = "move" needs done_dir, the folder originals go to"#.into(),
            ))
        }
        (AfterIngest::Move, Some(d)) => {
            let d = absolute(&ctx.resolve("ingest.folders", d));
            if d == path {
                return Err(bad("done_dir must not be the drop folder itself".into()));
            }
            Some(d)
        }
        (_, Some(_)) => {
            return Err(bad(format!(
                r#"done_dir is only used with after = "move" (after = "{after}")"#
            )))
        }
        (_, None) => None,
    };
    if settle_ms == 0 || poll_interval_ms == 0 {
        return Err(bad("settle_ms and poll_interval_ms must be positive".into()));
    }
    Ok(DropFolderConfig {
        path,
        tree: trim_tree(&tree),
        policy,
        after,
        done_dir,
        conflict: conflict.unwrap_or(default_conflict),
        poll,
        settle_ms,
        poll_interval_ms,
    })
}

/// `path` made absolute against the working directory, without touching the file system.
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        normalize(path)
    } else {
        normalize(&std::env::current_dir().unwrap_or_default().join(path))
    }
}

/// `"/films/"` -> `"/films"`, `"/"` stays `"/"`.
fn trim_tree(tree: &str) -> String {
    match tree.trim_end_matches('/') {
        "" => "/".to_owned(),
        t => t.to_owned(),
    }
}

fn build_raft(raft: RawRaft, ctx: &Ctx<'_>) -> Result<RaftConfig, ConfigError> {
    let RawRaft {
        heartbeat_interval_ms,
        election_timeout_min_ms,
        election_timeout_max_ms,
        snapshot_every_logs,
        max_logs_kept,
    } = raft;
    ctx.check(
        heartbeat_interval_ms > 0,
        "raft.heartbeat_interval_ms",
        || "must be positive, got 0".to_owned(),
    )?;
    ctx.check_pair(
        heartbeat_interval_ms < election_timeout_min_ms,
        "raft.heartbeat_interval_ms",
        "raft.election_timeout_min_ms",
        || {
            format!(
                "raft.heartbeat_interval_ms ({heartbeat_interval_ms}) must be less than \
                 raft.election_timeout_min_ms ({election_timeout_min_ms})"
            )
        },
    )?;
    ctx.check_pair(
        election_timeout_min_ms < election_timeout_max_ms,
        "raft.election_timeout_max_ms",
        "raft.election_timeout_min_ms",
        || {
            format!(
                "raft.election_timeout_max_ms ({election_timeout_max_ms}) must be greater than \
                 raft.election_timeout_min_ms ({election_timeout_min_ms})"
            )
        },
    )?;
    ctx.check(snapshot_every_logs > 0, "raft.snapshot_every_logs", || {
        "must be positive, got 0".to_owned()
    })?;
    Ok(RaftConfig {
        heartbeat_interval_ms,
        election_timeout_min_ms,
        election_timeout_max_ms,
        snapshot_every_logs,
        max_logs_kept,
    })
}

fn build_repair(r: RawRepair, ctx: &Ctx<'_>) -> Result<RepairConfig, ConfigError> {
    let RawRepair {
        enabled,
        disk_out_after_ms,
        machine_out_after_ms,
        max_bytes_per_sec,
        tranquility,
        retry_min_ms,
        retry_max_ms,
        auto_rebalance,
    } = r;
    ctx.check(disk_out_after_ms > 0, "repair.disk_out_after_ms", || {
        "must be positive, got 0".to_owned()
    })?;
    ctx.check(
        machine_out_after_ms > 0,
        "repair.machine_out_after_ms",
        || "must be positive, got 0".to_owned(),
    )?;
    check_tranquility(tranquility, "repair.tranquility", ctx)?;
    ctx.check(retry_min_ms > 0, "repair.retry_min_ms", || {
        "must be positive, got 0".to_owned()
    })?;
    ctx.check_pair(
        retry_min_ms <= retry_max_ms,
        "repair.retry_max_ms",
        "repair.retry_min_ms",
        || {
            format!(
                "repair.retry_max_ms ({retry_max_ms}) must not be below repair.retry_min_ms ({retry_min_ms})"
            )
        },
    )?;
    Ok(RepairConfig {
        enabled,
        disk_out_after_ms,
        machine_out_after_ms,
        max_bytes_per_sec,
        tranquility,
        retry_min_ms,
        retry_max_ms,
        auto_rebalance,
    })
}

fn check_tranquility(t: u32, key: &'static str, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    ctx.check(t <= 100, key, || {
        format!("must be a whole number from 0 to 100, got {t}")
    })
}

fn build_scrub(s: RawScrub, ctx: &Ctx<'_>) -> Result<ScrubConfig, ConfigError> {
    let RawScrub {
        enabled,
        interval_days,
        max_bytes_per_sec,
        tranquility,
        hours,
        deep_every,
    } = s;
    ctx.check(
        interval_days.is_finite() && interval_days > 0.0 && interval_days <= 3650.0,
        "scrub.interval_days",
        || format!("must be a number of days above 0 and at most 3650, got {interval_days}"),
    )?;
    check_tranquility(tranquility, "scrub.tranquility", ctx)?;
    let hours = match hours {
        None => None,
        Some(h) => Some(DailyWindow::parse(&h).map_err(|e| ctx.err("scrub.hours", None, e))?),
    };
    Ok(ScrubConfig {
        enabled,
        interval_ms: (interval_days * 86_400_000.0) as u64,
        max_bytes_per_sec,
        tranquility,
        hours,
        deep_every,
    })
}

fn build_meta(m: RawMeta, ctx: &Ctx<'_>) -> Result<MetaConfig, ConfigError> {
    let RawMeta {
        backup_interval_ms,
        backup_after_changes,
        backup_keep,
    } = m;
    ctx.check(
        backup_interval_ms == 0 || backup_interval_ms >= 1000,
        "meta.backup_interval_ms",
        || format!("must be 0 (off) or at least 1000 ms, got {backup_interval_ms}"),
    )?;
    ctx.check(
        backup_after_changes > 0,
        "meta.backup_after_changes",
        || "must be positive, got 0".to_owned(),
    )?;
    ctx.check((1..=100).contains(&backup_keep), "meta.backup_keep", || {
        format!("must be 1 to 100, got {backup_keep}")
    })?;
    Ok(MetaConfig {
        backup_interval_ms,
        backup_after_changes,
        backup_keep,
    })
}

fn build_retention(r: RawRetention, ctx: &Ctx<'_>) -> Result<RetentionConfig, ConfigError> {
    let RawRetention {
        trash_days,
        trash_min_free,
    } = r;
    ctx.check(
        trash_days.is_finite() && (0.0..=36_500.0).contains(&trash_days),
        "retention.trash_days",
        || format!("must be a number of days from 0 (no trash) to 36500, got {trash_days}"),
    )?;
    let trash_min_free = MinFree::parse(&trash_min_free)
        .map_err(|e| ctx.err("retention.trash_min_free", None, e))?;
    Ok(RetentionConfig {
        trash_ms: (trash_days * 86_400_000.0) as u64,
        trash_min_free,
    })
}

fn build_log(log: RawLog, ctx: &Ctx<'_>) -> Result<LogConfig, ConfigError> {
    let RawLog { level, format } = log;
    ctx.check(!level.trim().is_empty(), "log.level", || {
        "must be a filter directive such as \"info\" or \"info,wormfs=debug\", got \"\"".to_owned()
    })?;
    Ok(LogConfig { level, format })
}

fn build_alerts(a: RawAlerts, ctx: &Ctx<'_>) -> Result<AlertsConfig, ConfigError> {
    let RawAlerts {
        debounce_ms,
        member_lost_after_ms,
        backup_stale_after_ms,
        repair_stuck_attempts,
        webhooks,
    } = a;
    ctx.check(
        member_lost_after_ms > 0,
        "alerts.member_lost_after_ms",
        || "must be positive, got 0".to_owned(),
    )?;
    ctx.check(
        repair_stuck_attempts > 0,
        "alerts.repair_stuck_attempts",
        || "must be at least 1, got 0".to_owned(),
    )?;
    let mut built = Vec::with_capacity(webhooks.len());
    for (i, w) in webhooks.into_iter().enumerate() {
        let url = w.url.trim().to_owned();
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
        if !host.is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace)) {
            return Err(ctx.err(
                "alerts.webhooks",
                Some(i),
                format!(
                    "webhook {}: url must be an http:// or https:// URL with a host, got {url:?}",
                    i + 1
                ),
            ));
        }
        built.push(WebhookConfig {
            url,
            format: w.format,
            token_file: w
                .token_file
                .map(|f| normalize(&ctx.resolve("alerts.webhooks", f))),
            min_severity: w.min_severity,
        });
    }
    Ok(AlertsConfig {
        debounce_ms,
        member_lost_after_ms,
        backup_stale_after_ms,
        repair_stuck_attempts,
        webhooks: built,
    })
}

/// An error about `field` of the `index`th `[[media_servers]]` entry: these are set in the file
/// only, so the error names the file, the key (`media_servers[N].field`, counted from 1) and
/// the line.
fn media_server_err(ctx: &Ctx<'_>, index: usize, field: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        path: ctx.file.map(|f| f.path.clone()),
        key: format!("media_servers[{}].{field}", index + 1),
        line: ctx
            .file
            .and_then(|f| f.line_of_entry("media_servers", index, field)),
        message,
    }
}

/// A WormFS folder of a `path_map`: absolute, no `.`, `..` or empty component, no control
/// character; returned without a trailing `/`.
fn wormfs_folder(text: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!("the WormFS folder {text:?} {why}; write it as an absolute path such as \"/Films\"")
    };
    if !text.starts_with('/') {
        return Err(bad("is not absolute"));
    }
    if text.chars().any(char::is_control) {
        return Err(bad("has a control character"));
    }
    let trimmed = text.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok("/".to_owned());
    }
    if trimmed[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad("has an empty, \".\" or \"..\" component"));
    }
    Ok(trimmed.to_owned())
}

fn build_media_servers(
    servers: Vec<RawMediaServer>,
    ctx: &Ctx<'_>,
) -> Result<Vec<MediaServerConfig>, ConfigError> {
    let mut built = Vec::with_capacity(servers.len());
    for (i, s) in servers.into_iter().enumerate() {
        let RawMediaServer {
            kind,
            url,
            token_file,
            path_map,
            notify_delay_ms,
        } = s;
        let url = url.trim().trim_end_matches('/').to_owned();
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
        if !host.is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace))
            || url.contains(['?', '#'])
        {
            return Err(media_server_err(
                ctx,
                i,
                "url",
                format!(
                    "must be the server's http:// or https:// address with a host and no query, \
                     such as \"http://127.0.0.1:{}\", got {url:?}",
                    match kind {
                        MediaServerKind::Jellyfin => 8096,
                        MediaServerKind::Plex => 32400,
                    }
                ),
            ));
        }
        if token_file.as_os_str().is_empty() {
            return Err(media_server_err(
                ctx,
                i,
                "token_file",
                "must name the file holding the server's token".to_owned(),
            ));
        }
        let token_file = absolute(&match ctx.file {
            Some(file) if token_file.is_relative() => file.resolve(&token_file),
            _ => token_file,
        });
        if path_map.is_empty() {
            return Err(media_server_err(
                ctx,
                i,
                "path_map",
                "must map at least one WormFS folder to the server's path for it, such as \
                 path_map = { \"/Films\" = \"/media/films\" }"
                    .to_owned(),
            ));
        }
        let mut map = Vec::with_capacity(path_map.len());
        for (from, to) in path_map {
            let wormfs =
                wormfs_folder(&from).map_err(|e| media_server_err(ctx, i, "path_map", e))?;
            let server = to.trim().to_owned();
            if server.is_empty() || server.chars().any(char::is_control) {
                return Err(media_server_err(
                    ctx,
                    i,
                    "path_map",
                    format!(
                        "the server's path for {from:?} must be a path such as \"/media/films\", \
                         got {to:?}"
                    ),
                ));
            }
            if map.iter().any(|e: &PathMapEntry| e.wormfs == wormfs) {
                return Err(media_server_err(
                    ctx,
                    i,
                    "path_map",
                    format!("the WormFS folder {wormfs:?} is mapped twice"),
                ));
            }
            map.push(PathMapEntry { wormfs, server });
        }
        // Longest first: the first entry that holds a path is the longest prefix.
        map.sort_by(|a, b| {
            b.wormfs
                .len()
                .cmp(&a.wormfs.len())
                .then(a.wormfs.cmp(&b.wormfs))
        });
        if notify_delay_ms > 86_400_000 {
            return Err(media_server_err(
                ctx,
                i,
                "notify_delay_ms",
                format!("must be at most 86400000 (a day), got {notify_delay_ms}"),
            ));
        }
        built.push(MediaServerConfig {
            kind,
            url,
            token_file,
            path_map: map,
            notify_delay_ms,
        });
    }
    Ok(built)
}
