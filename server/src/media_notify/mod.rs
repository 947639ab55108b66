//! Telling media servers (Jellyfin, Plex) which folders changed, so they scan just those
//! (docs/media-servers.md).
//!
//! Every node applies every Raft command, so every node sees every change in the cluster
//! (`MetaDb::subscribe_changes`): a node with `[[media_servers]]` entries tells its servers
//! about all of them, whichever machine and face took the file. One task reads the change feed
//! and turns each change into a folder (the folder of a committed file, a new folder that holds
//! files, the folder that lost an entry); each server has its own task that collects its mapped
//! folders, waits until no change came for `notify_delay_ms` (at most five times that since the
//! first one), then sends them in one request (Jellyfin) or one request per folder (Plex), with
//! bounded retries on 5xx answers and connection errors. A 401 or 403 is not retried: it is
//! logged as an error saying which token file to fix, and shown in `wormfs status`.

pub mod jellyfin;
pub mod path_map;
pub mod plex;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use wormfs_config::{MediaServerConfig, MediaServerKind};
use wormfs_meta::changes::TreeChange;
use wormfs_meta::{EntryKind, MetaDb};
use wormfs_parts::fsutil::now_ms;
use wormfs_parts::tree_path::TreePath;

use path_map::PathMap;

/// One HTTP request may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of one request before giving up (5xx answers and connection errors).
const ATTEMPTS: u32 = 5;
/// The wait before the first retry; doubled after each.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// A batch waits at most this many times `notify_delay_ms` after its first change, even while
/// changes keep coming.
const MAX_DELAYS: u32 = 5;
/// Folders listed at most when checking whether a new folder holds a file (past that it is
/// taken to hold one).
const EMPTY_CHECK_LISTINGS: usize = 1_000;

/// What happened in a folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateType {
    /// A file arrived in it (or it arrived, holding files).
    Created,
    /// It lost a file or a folder.
    Deleted,
}

impl UpdateType {
    /// Jellyfin's `UpdateType`.
    pub fn jellyfin_name(self) -> &'static str {
        match self {
            UpdateType::Created => "Created",
            UpdateType::Deleted => "Deleted",
        }
    }
}

/// How the last notification of a server ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOutcome {
    /// The server took every folder (Plex: every folder under one of its libraries).
    Sent,
    /// The server did not answer, or answered with an error, after the retries.
    Failed,
    /// The server refused the token (401 or 403): fix the token file.
    Refused,
}

/// The last notification of a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyResult {
    /// When it ended (ms since the epoch).
    pub at_ms: u64,
    /// The folders it named, as the media server sees them.
    pub folders: Vec<String>,
    /// How it ended.
    pub outcome: NotifyOutcome,
    /// Requests made, retries included.
    pub attempts: u32,
    /// What the server said, or why it failed, in words.
    pub message: String,
}

/// A media server as `wormfs status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaServerStatus {
    /// `jellyfin` or `plex`.
    pub kind: String,
    /// Its URL.
    pub url: String,
    /// Folders waiting for `notify_delay_ms` to pass.
    pub pending_folders: u64,
    /// The last notification (`null` before the first).
    pub last: Option<NotifyResult>,
}

/// The answer of one server to `wormfs notify test`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyTestResult {
    /// `jellyfin` or `plex`.
    pub kind: String,
    /// Its URL.
    pub url: String,
    /// Whether it answered with a success.
    pub ok: bool,
    /// Its HTTP status, when it answered.
    pub status: Option<u16>,
    /// What it said, or why the request failed.
    pub message: String,
}

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth another try: a 5xx answer, no connection, a timeout.
    Transient(String),
    /// The token was refused (401 or 403).
    Refused(u16, String),
    /// Another error that a retry will not change (a 404 from a wrong URL, a bad answer).
    Permanent(String),
}

impl Failure {
    /// A request that got no answer.
    pub fn from_request(e: reqwest::Error) -> Self {
        // reqwest's Display leaves the cause out ("error sending request for url ...").
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        Failure::Transient(text)
    }

    /// The HTTP status, when the server answered.
    fn status(&self) -> Option<u16> {
        match self {
            Failure::Refused(s, _) => Some(*s),
            Failure::Transient(m) | Failure::Permanent(m) => m
                .strip_prefix("answered ")
                .and_then(|r| r.get(..3))
                .and_then(|s| s.parse().ok()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transient(m) | Failure::Permanent(m) => f.write_str(m),
            Failure::Refused(status, m) => write!(f, "answered {status}, the token is refused{m}"),
        }
    }
}

/// A success status and the body, or the failure an error status means.
pub async fn check_answer(answer: reqwest::Response) -> Result<(u16, String), Failure> {
    let status = answer.status().as_u16();
    let body = answer.text().await.map_err(Failure::from_request)?;
    if (200..300).contains(&status) {
        return Ok((status, body));
    }
    let start: String = body.trim().chars().take(200).collect();
    let said = if start.is_empty() {
        String::new()
    } else {
        format!(": {start}")
    };
    Err(match status {
        401 | 403 => Failure::Refused(status, said),
        500..=599 => Failure::Transient(format!("answered {status}{said}")),
        _ => Failure::Permanent(format!("answered {status}{said}")),
    })
}

/// Reads a media server's token file: owner and mode checked as for every secret file, the
/// first line trimmed, not empty, fit for an HTTP header.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    if !path.exists() {
        anyhow::bail!(
            "the token file {} does not exist; write the server's token in it (mode 0600)",
            path.display()
        );
    }
    wormfs_parts::fsutil::check_secret(path)?;
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} holds no token (its first line is empty)",
        path.display()
    );
    anyhow::ensure!(
        token.bytes().all(|b| b.is_ascii_graphic() && b != b'"'),
        "the token in {} has a character a token cannot have (a space, a quote or a \
         non-ASCII character)",
        path.display()
    );
    Ok(token)
}

/// Folders waiting to be sent to one server.
#[derive(Debug, Default)]
struct Pending {
    /// Server paths and what happened in each.
    folders: BTreeSet<(String, UpdateType)>,
    /// When the first of them came.
    first: Option<Instant>,
    /// When the last change came.
    last: Option<Instant>,
}

/// When a batch whose first change came at `first` and last at `last` is sent: `delay` after
/// the last change, but never later than [`MAX_DELAYS`] times `delay` after the first.
fn due_at(first: Instant, last: Instant, delay: Duration) -> Instant {
    (last + delay).min(first + delay * MAX_DELAYS)
}

/// One configured media server.
struct Server {
    cfg: MediaServerConfig,
    map: PathMap,
    http: reqwest::Client,
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
    last: Mutex<Option<NotifyResult>>,
}

/// Locks `m`, taking the value of a poisoned lock (a panic aborts the process anyway).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Server {
    /// `kind url`, for log lines.
    fn name(&self) -> String {
        format!("{} {}", self.cfg.kind, self.cfg.url)
    }

    /// Queues the changed WormFS folders this server maps.
    fn add(&self, changes: &[(String, UpdateType)]) {
        let mapped: Vec<(String, UpdateType)> = changes
            .iter()
            .filter_map(|(folder, kind)| Some((self.map.map(folder)?, *kind)))
            .collect();
        if mapped.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut p = lock(&self.pending);
        p.folders.extend(mapped);
        p.first.get_or_insert(now);
        p.last = Some(now);
        drop(p);
        self.wake.notify_one();
    }

    /// When the pending folders are due, if there are any.
    fn due(&self) -> Option<Instant> {
        let p = lock(&self.pending);
        let (first, last) = (p.first?, p.last?);
        Some(due_at(
            first,
            last,
            Duration::from_millis(self.cfg.notify_delay_ms),
        ))
    }

    /// Takes the pending folders, leaving out those below another folder of the same kind
    /// (a scan of a folder covers what is below it).
    fn take(&self) -> Vec<(String, UpdateType)> {
        let folders = std::mem::take(&mut *lock(&self.pending)).folders;
        let all: Vec<(String, UpdateType)> = folders.into_iter().collect();
        all.iter()
            .filter(|(f, k)| {
                !all.iter().any(|(g, l)| {
                    l == k && g != f && path_map::server_path_under(f, g) && g.len() < f.len()
                })
            })
            .cloned()
            .collect()
    }

    fn pending_count(&self) -> u64 {
        lock(&self.pending).folders.len() as u64
    }

    /// Runs `request` until it succeeds, fails for good or runs out of attempts, waiting longer
    /// after each failure. Counts the attempts in `attempts`.
    async fn with_retries<T, F, Fut>(
        &self,
        stop: &CancellationToken,
        attempts: &mut u32,
        mut request: F,
    ) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut wait = FIRST_RETRY;
        for n in 1..=ATTEMPTS {
            *attempts += 1;
            match request().await {
                Err(Failure::Transient(e)) if n < ATTEMPTS => {
                    tracing::warn!(
                        "media server {}: {e} (attempt {n} of {ATTEMPTS}; again in {wait:?})",
                        self.name()
                    );
                    tokio::select! {
                        _ = stop.cancelled() => return Err(Failure::Transient(e)),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait *= 2;
                }
                other => return other,
            }
        }
        Err(Failure::Transient("no attempt made".to_owned()))
    }

    /// Sends `batch` (server paths) and says how it went.
    async fn deliver(
        &self,
        batch: &[(String, UpdateType)],
        stop: &CancellationToken,
    ) -> NotifyResult {
        let mut attempts = 0;
        let folders: Vec<String> = batch
            .iter()
            .map(|(f, _)| f.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let result = match read_token(&self.cfg.token_file) {
            Err(e) => Err(Failure::Permanent(format!("{e:#}"))),
            Ok(token) => match self.cfg.kind {
                MediaServerKind::Jellyfin => self
                    .with_retries(stop, &mut attempts, || {
                        jellyfin::media_updated(&self.http, &self.cfg.url, &token, batch)
                    })
                    .await
                    .map(|status| format!("answered {status} for {} update(s)", batch.len())),
                MediaServerKind::Plex => {
                    self.deliver_plex(&folders, &token, stop, &mut attempts)
                        .await
                }
            },
        };
        let (outcome, message) = match result {
            Ok(m) => (NotifyOutcome::Sent, m),
            Err(f @ Failure::Refused(..)) => (NotifyOutcome::Refused, f.to_string()),
            Err(f) => (NotifyOutcome::Failed, f.to_string()),
        };
        NotifyResult {
            at_ms: now_ms(),
            folders,
            outcome,
            attempts,
            message,
        }
    }

    /// Plex: the sections, then one refresh per folder, each in the section that holds it.
    async fn deliver_plex(
        &self,
        folders: &[String],
        token: &str,
        stop: &CancellationToken,
        attempts: &mut u32,
    ) -> Result<String, Failure> {
        let (_, sections) = self
            .with_retries(stop, attempts, || {
                plex::sections(&self.http, &self.cfg.url, token)
            })
            .await?;
        let mut sent = 0;
        let mut outside = Vec::new();
        let mut failed = Vec::new();
        for folder in folders {
            let Some(section) = plex::section_for(&sections, folder) else {
                tracing::warn!(
                    "media server {}: {folder:?} is in no Plex library's folders; not sent \
                     (check path_map against the libraries' folders)",
                    self.name()
                );
                outside.push(folder.as_str());
                continue;
            };
            // One folder failing (a library removed since the sections were read) does not
            // keep the others from being sent; a refused token stops them all.
            match self
                .with_retries(stop, attempts, || {
                    plex::refresh(&self.http, &self.cfg.url, token, &section.key, folder)
                })
                .await
            {
                Ok(_) => sent += 1,
                Err(f @ Failure::Refused(..)) => return Err(f),
                Err(f) => failed.push(format!("{folder}: {f}")),
            }
        }
        if !failed.is_empty() {
            return Err(Failure::Permanent(format!(
                "{sent} folder(s) refreshed, {} failed: {}",
                failed.len(),
                failed.join("; ")
            )));
        }
        let mut message = format!("{sent} folder(s) refreshed");
        if !outside.is_empty() {
            message.push_str(&format!(
                "; {} in no library's folders, not sent: {}",
                outside.len(),
                outside.join(", ")
            ));
        }
        Ok(message)
    }

    /// Logs and keeps the result.
    fn record(&self, r: NotifyResult) {
        match r.outcome {
            NotifyOutcome::Sent => tracing::info!(
                "media server {}: asked to scan {} folder(s): {}",
                self.name(),
                r.folders.len(),
                r.message
            ),
            NotifyOutcome::Refused => tracing::error!(
                "media server {}: {}; not retried. Put a valid token in {} ({}); it is read \
                 again at the next change. Folders not scanned: {}",
                self.name(),
                r.message,
                self.cfg.token_file.display(),
                match self.cfg.kind {
                    MediaServerKind::Jellyfin => "a Jellyfin API key: Dashboard > API Keys",
                    MediaServerKind::Plex => "the X-Plex-Token of the server's owner",
                },
                r.folders.join(", ")
            ),
            NotifyOutcome::Failed => tracing::error!(
                "media server {}: gave up after {} attempt(s): {}. Folders not scanned: {}",
                self.name(),
                r.attempts,
                r.message,
                r.folders.join(", ")
            ),
        }
        *lock(&self.last) = Some(r);
    }

    /// `wormfs notify test`: one harmless request.
    async fn test(&self) -> NotifyTestResult {
        let result = match read_token(&self.cfg.token_file) {
            Err(e) => Err(Failure::Permanent(format!("{e:#}"))),
            Ok(token) => match self.cfg.kind {
                MediaServerKind::Jellyfin => {
                    jellyfin::system_info(&self.http, &self.cfg.url, &token).await
                }
                MediaServerKind::Plex => plex::sections(&self.http, &self.cfg.url, &token)
                    .await
                    .map(|(status, sections)| (status, self.describe_sections(&sections))),
            },
        };
        let (ok, status, message) = match result {
            Ok((status, m)) => (true, Some(status), m),
            Err(f) => (false, f.status(), f.to_string()),
        };
        NotifyTestResult {
            kind: self.cfg.kind.to_string(),
            url: self.cfg.url.clone(),
            ok,
            status,
            message,
        }
    }

    /// Plex's libraries in words, and the mapped folders no library holds.
    fn describe_sections(&self, sections: &[plex::Section]) -> String {
        let libraries: Vec<String> = sections
            .iter()
            .map(|s| format!("{:?} ({})", s.title, s.locations.join(", ")))
            .collect();
        let mut m = format!(
            "Plex answered with {} library section(s): {}",
            sections.len(),
            libraries.join("; ")
        );
        let outside: Vec<String> = self
            .map
            .folders()
            .filter_map(|f| {
                let server = self.map.map(f)?;
                plex::section_for(sections, &server)
                    .is_none()
                    .then(|| format!("{f} -> {server}"))
            })
            .collect();
        if !outside.is_empty() {
            m.push_str(&format!(
                "; mapped folders in no library (changes there are not sent): {}",
                outside.join(", ")
            ));
        }
        m
    }

    /// Waits for folders, for their delay, sends them; until `stop`.
    async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            // Something pending, and its time come.
            loop {
                let wait = match self.due() {
                    Some(due) if due <= Instant::now() => break,
                    Some(due) => tokio::time::sleep_until(due),
                    // Not woken by a timer: a far deadline that `wake` interrupts.
                    None => tokio::time::sleep(Duration::from_secs(3600)),
                };
                tokio::select! {
                    _ = stop.cancelled() => {
                        let left = self.pending_count();
                        if left > 0 {
                            tracing::info!(
                                "media server {}: stopping with {left} folder(s) not sent",
                                self.name()
                            );
                        }
                        return;
                    }
                    _ = wait => {}
                    _ = self.wake.notified() => {}
                }
            }
            let batch = self.take();
            if batch.is_empty() {
                continue;
            }
            let result = self.deliver(&batch, &stop).await;
            self.record(result);
        }
    }
}

/// The media servers of this node and their state.
pub struct MediaNotify {
    servers: Vec<Arc<Server>>,
}

impl MediaNotify {
    /// From `[[media_servers]]`: each token file is read and checked now, so a node with a
    /// missing or open token file does not start.
    pub fn from_config(cfgs: &[MediaServerConfig]) -> anyhow::Result<Self> {
        let mut servers = Vec::with_capacity(cfgs.len());
        for (i, cfg) in cfgs.iter().enumerate() {
            read_token(&cfg.token_file).with_context(|| {
                format!(
                    "media_servers[{}] ({} {}): token_file",
                    i + 1,
                    cfg.kind,
                    cfg.url
                )
            })?;
            let http = reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .connect_timeout(REQUEST_TIMEOUT)
                .user_agent(concat!("WormFS/", env!("CARGO_PKG_VERSION")))
                .build()
                .context("make an HTTP client for the media servers")?;
            servers.push(Arc::new(Server {
                cfg: cfg.clone(),
                map: PathMap::new(cfg.path_map.clone()),
                http,
                pending: Mutex::default(),
                wake: tokio::sync::Notify::new(),
                last: Mutex::default(),
            }));
        }
        Ok(MediaNotify { servers })
    }

    /// Each server's pending folders and last notification, in the config's order.
    pub fn status(&self) -> Vec<MediaServerStatus> {
        self.servers
            .iter()
            .map(|s| MediaServerStatus {
                kind: s.cfg.kind.to_string(),
                url: s.cfg.url.clone(),
                pending_folders: s.pending_count(),
                last: lock(&s.last).clone(),
            })
            .collect()
    }

    /// One harmless request to each server, at once; their answers in the config's order.
    pub async fn test(&self) -> Vec<NotifyTestResult> {
        futures::future::join_all(self.servers.iter().map(|s| s.test())).await
    }

    /// Starts following the change feed of `meta` and one sender per server (nothing when no
    /// server is configured). They end when `stop` is cancelled.
    pub fn start(&self, meta: &MetaDb, stop: CancellationToken, tasks: &TaskTracker) {
        if self.servers.is_empty() {
            return;
        }
        // Subscribed now, so changes applied from here on are seen.
        let rx = meta.subscribe_changes();
        let servers = self.servers.clone();
        tasks.spawn(
            follow(meta.clone(), rx, servers, stop.clone())
                .instrument(tracing::info_span!("media_notify")),
        );
        for s in &self.servers {
            tasks.spawn(
                s.clone()
                    .run(stop.clone())
                    .instrument(tracing::info_span!("media_notify_send")),
            );
        }
        tracing::info!(
            "media servers: telling {} about changes in the cluster",
            self.servers
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// Reads the change feed and queues each change's folder on every server.
async fn follow(
    meta: MetaDb,
    mut rx: tokio::sync::broadcast::Receiver<Arc<wormfs_meta::changes::ChangeBatch>>,
    servers: Vec<Arc<Server>>,
    stop: CancellationToken,
) {
    loop {
        let batch = tokio::select! {
            _ = stop.cancelled() => return,
            b = rx.recv() => b,
        };
        match batch {
            Ok(batch) => {
                let folders = folders_of(&meta, &batch.changes).await;
                if !folders.is_empty() {
                    for s in &servers {
                        s.add(&folders);
                    }
                }
            }
            Err(RecvError::Lagged(n)) => tracing::warn!(
                "media servers: {n} batch(es) of changes were lost (this node fell behind the \
                 change feed); their folders are not sent: a scan of the library finds them"
            ),
            Err(RecvError::Closed) => return,
        }
    }
}

/// The WormFS folders `changes` touched, and what happened in each.
async fn folders_of(meta: &MetaDb, changes: &[TreeChange]) -> Vec<(String, UpdateType)> {
    let mut out = Vec::new();
    for c in changes {
        match c {
            TreeChange::Created { path } => {
                if let Some(f) = created_folder(meta, path).await {
                    out.push((f, UpdateType::Created));
                }
            }
            TreeChange::Deleted { path } => out.push((parent(path), UpdateType::Deleted)),
            TreeChange::Moved { from, to } => {
                out.push((parent(from), UpdateType::Deleted));
                if let Some(f) = created_folder(meta, to).await {
                    out.push((f, UpdateType::Created));
                }
            }
            TreeChange::Reset => tracing::info!(
                "media servers: the change feed was reset (a snapshot installed or a file \
                 appended to); what changed in it is not known here"
            ),
        }
    }
    out
}

/// The folder of `path` (`/` for the root and its children).
fn parent(path: &str) -> String {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/".to_owned(),
        Some((p, _)) => p.to_owned(),
    }
}

/// The folder to scan for something created at `path`: a file's folder, a new folder itself
/// when it holds a file somewhere below; `None` for an empty folder or one already gone.
async fn created_folder(meta: &MetaDb, path: &str) -> Option<String> {
    let tp = match TreePath::parse(path) {
        Ok(tp) => tp,
        Err(e) => {
            tracing::warn!("media servers: a change names {path:?}, not a WormFS path: {e}");
            return None;
        }
    };
    let entry = match meta.lookup(&tp).await {
        Ok(e) => e?,
        Err(e) => {
            tracing::warn!("media servers: cannot look {path:?} up: {e}");
            return None;
        }
    };
    match entry.kind {
        EntryKind::File => Some(parent(&tp.to_string())),
        EntryKind::Dir => match holds_a_file(meta, tp.clone()).await {
            Ok(true) => Some(tp.to_string()),
            Ok(false) => None,
            Err(e) => {
                tracing::warn!("media servers: cannot list {path:?}: {e}");
                None
            }
        },
    }
}

/// Whether a file lies anywhere below the folder `dir` (a tree of empty folders is no news for
/// a media server). Past [`EMPTY_CHECK_LISTINGS`] listings, it is taken to.
async fn holds_a_file(meta: &MetaDb, dir: TreePath) -> anyhow::Result<bool> {
    let mut todo = vec![dir];
    let mut listed = 0;
    while let Some(d) = todo.pop() {
        if listed == EMPTY_CHECK_LISTINGS {
            return Ok(true);
        }
        listed += 1;
        let Some(Ok(entries)) = meta.list(&d).await? else {
            continue;
        };
        for e in entries {
            match e.kind {
                EntryKind::File => return Ok(true),
                EntryKind::Dir => todo.push(d.join(&e.name)?),
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_of_paths() {
        assert_eq!(parent("/Films/A/x.mkv"), "/Films/A");
        assert_eq!(parent("/x.mkv"), "/");
        assert_eq!(parent("/"), "/");
    }

    fn server(delay_ms: u64) -> Server {
        let cfg = MediaServerConfig {
            kind: MediaServerKind::Jellyfin,
            url: "http://127.0.0.1:1".into(),
            token_file: "/nonexistent".into(),
            path_map: vec![wormfs_config::PathMapEntry {
                wormfs: "/Films".into(),
                server: "/media/films".into(),
            }],
            notify_delay_ms: delay_ms,
        };
        Server {
            map: PathMap::new(cfg.path_map.clone()),
            cfg,
            http: reqwest::Client::new(),
            pending: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            last: Mutex::default(),
        }
    }

    #[tokio::test]
    async fn folders_are_mapped_grouped_and_covered_by_their_ancestors() {
        let s = server(1000);
        assert!(s.due().is_none());
        s.add(&[
            ("/Films/A".into(), UpdateType::Created),
            ("/Films/A".into(), UpdateType::Created),
            ("/Music".into(), UpdateType::Created),
            ("/Films/B".into(), UpdateType::Created),
            ("/Films/B/Extras".into(), UpdateType::Created),
            ("/Films/B/Extras".into(), UpdateType::Deleted),
        ]);
        assert_eq!(s.pending_count(), 4);
        assert!(s.due().is_some());
        assert_eq!(
            s.take(),
            vec![
                ("/media/films/A".to_owned(), UpdateType::Created),
                ("/media/films/B".to_owned(), UpdateType::Created),
                ("/media/films/B/Extras".to_owned(), UpdateType::Deleted),
            ]
        );
        assert!(s.due().is_none());
        // Only unmapped folders: nothing queued.
        s.add(&[("/Music/X".into(), UpdateType::Created)]);
        assert!(s.due().is_none());
    }

    #[test]
    fn a_batch_is_due_after_a_quiet_delay_but_never_later_than_five_delays() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(due_at(t0, t0, s(1)), t0 + s(1));
        assert_eq!(due_at(t0, t0 + s(2), s(1)), t0 + s(3));
        assert_eq!(due_at(t0, t0 + s(9), s(1)), t0 + s(5));
        assert_eq!(due_at(t0, t0 + s(9), s(0)), t0);
    }

    #[test]
    fn statuses_are_read_from_failures() {
        assert_eq!(
            Failure::Transient("answered 503: busy".into()).status(),
            Some(503)
        );
        assert_eq!(Failure::Refused(401, String::new()).status(), Some(401));
        assert_eq!(
            Failure::Transient("connection refused".into()).status(),
            None
        );
    }
}
