//! Starting and stopping a node: the data folder, identity, token, disks, Raft, and the
//! background tasks, in a written order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use wormfs_config::{Config, ConfigSource};

use crate::consensus::{ClusterParams, Consensus, Formation};
use crate::data_plane::tls::{server_config, CipherPreference};
use crate::data_plane::{DataClient, Directory, NodeCert};
use crate::peer::{ClusterSecret, PeerNet};
use crate::store::Store;
use wormfs_meta::command::{CommandV1, DiskStatus};
use wormfs_meta::MetaDb;
use wormfs_parts::disk::LocalDisk;
use wormfs_parts::fsutil::{now_ms, write_durably};
use wormfs_parts::ids::{ClusterId, NodeId};

pub use crate::peer::net::PEER_KEY_FILE;
/// Folder-disks made inside the data folder when no disk is configured.
pub const DEFAULT_FOLDER_DISKS: usize = 6;

/// Whether a node talks to other machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Network {
    /// The peer network, the data server and (when configured) mDNS.
    Peers,
    /// None of them: one machine with an in-process consensus.
    Alone,
}

/// The `node.json` format this version writes and reads.
const NODE_IDENTITY_FORMAT: u32 = 1;

/// The node's identity file, `node.json`.
#[derive(Debug, Serialize, Deserialize)]
struct NodeIdentity {
    format: u32,
    node_id: NodeId,
    cluster_id: ClusterId,
}

/// A running node.
pub struct Node {
    /// The storage engine.
    pub store: Arc<Store>,
    /// This machine's local API token (`DATA/admin-token`).
    pub token: String,
    /// The cluster's accounts (users and tokens).
    pub accounts: Arc<crate::accounts::Accounts>,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// The drop folders' ingest status.
    pub drops: Arc<crate::drop_folders::IngestStatus>,
    /// Where the data plane listens.
    pub data_addr: std::net::SocketAddr,
    /// The mDNS daemon when `discovery.mdns` is on: it advertises `_wormfs._tcp`, and the
    /// faces add their own records to it.
    pub mdns: std::sync::Mutex<Option<wormfs_discovery::Mdns>>,
    /// The media servers told about changes (`[[media_servers]]`) and their last results.
    pub media: Arc<crate::media_notify::MediaNotify>,
    tasks: TaskTracker,
    _lock: std::fs::File,
}

/// Locks the data folder for this process (refused while a node runs on it).
pub fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("wormfs.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| anyhow::anyhow!("another wormfs node is already using {}", dir.display()))?;
    Ok(f)
}

/// The identity in `path` (`node.json`), or `None` if there is none yet.
fn read_identity(path: &Path) -> anyhow::Result<Option<NodeIdentity>> {
    match std::fs::read(path) {
        Ok(b) => {
            let ident: NodeIdentity =
                serde_json::from_slice(&b).with_context(|| format!("parse {}", path.display()))?;
            if ident.format != NODE_IDENTITY_FORMAT {
                bail!(
                    "{}: format {} is unknown to this version of WormFS (it reads format \
                     {NODE_IDENTITY_FORMAT}); refusing to guess. Run the newer version that wrote it.",
                    path.display(),
                    ident.format
                );
            }
            Ok(Some(ident))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// The node id recorded in the data folder's `node.json`.
pub fn read_node_id(data_dir: &Path) -> anyhow::Result<NodeId> {
    let path = data_dir.join("node.json");
    read_identity(&path)?
        .map(|i| i.node_id)
        .with_context(|| format!("{} is missing: this folder holds no node", path.display()))
}

/// The node and cluster ids in `data_dir`'s `node.json`, if there is one.
pub fn read_ids(data_dir: &Path) -> anyhow::Result<Option<(NodeId, ClusterId)>> {
    Ok(read_identity(&data_dir.join("node.json"))?.map(|i| (i.node_id, i.cluster_id)))
}

/// Writes `data_dir`'s `node.json` (a recovery into a data folder that lost it).
pub fn write_ids(data_dir: &Path, node_id: NodeId, cluster_id: ClusterId) -> anyhow::Result<()> {
    let id = NodeIdentity {
        format: NODE_IDENTITY_FORMAT,
        node_id,
        cluster_id,
    };
    write_durably(
        &data_dir.join("node.json"),
        &serde_json::to_vec_pretty(&id)?,
    )
}

/// The disk roots to use: the configured ones, or six folder-disks in the data folder.
pub fn disk_roots(cfg: &Config) -> Vec<PathBuf> {
    if cfg.storage.disks.is_empty() {
        (0..DEFAULT_FOLDER_DISKS)
            .map(|i| cfg.node.data_dir.join("disks").join(format!("disk-{i}")))
            .collect()
    } else {
        cfg.storage.disks.clone()
    }
}

impl Node {
    /// Starts a node from its configuration.
    pub async fn start(cfg: &Config) -> anyhow::Result<Node> {
        Self::start_with(cfg, Network::Peers).await
    }

    /// Starts a node that runs alone: the engine, the metadata and a one-voter consensus in
    /// process, without the peer network, the data server or mDNS (no listener at all but
    /// what the caller serves). For engine tests and offline tools; a cluster cannot form.
    pub async fn start_alone(cfg: &Config) -> anyhow::Result<Node> {
        Self::start_with(cfg, Network::Alone).await
    }

    async fn start_with(cfg: &Config, network: Network) -> anyhow::Result<Node> {
        let data = &cfg.node.data_dir;
        crate::startup_checks::check(cfg)?;
        let lock = prepare_data_dir(cfg)?;
        let mut ident = load_or_create_identity(cfg)?;
        let token = crate::admin_token::read_or_create(data)?;
        let shutdown = CancellationToken::new();
        let secret = load_cluster_secret(cfg)?;
        // Media servers' token files are checked before anything starts, as secrets are.
        let media = Arc::new(crate::media_notify::MediaNotify::from_config(
            &cfg.media_servers,
        )?);
        let cert = NodeCert::load_or_create(data, ident.node_id)?;
        let (net, inbound, data_listener, data_addr, mdns, watcher) = match network {
            Network::Peers => {
                let key = crate::peer::net::load_identity(&data.join(PEER_KEY_FILE))?;
                let (net, inbound) = PeerNet::start(
                    key,
                    secret.psk(),
                    cfg.cluster.peer_listen,
                    shutdown.child_token(),
                )
                .await?;
                let listener = crate::data_plane::server::bind(cfg.cluster.data_listen).await?;
                let data_addr = listener.local_addr()?;
                let (mdns, watcher) = start_mdns(cfg, ident.node_id, &net, &secret);
                (net, inbound, Some(listener), data_addr, mdns, watcher)
            }
            Network::Alone => {
                let (net, inbound) = PeerNet::offline(shutdown.child_token());
                let nowhere = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
                (net, inbound, None, nowhere, None, None)
            }
        };
        let db = open_metadata(&data.join("meta")).await?;
        let fresh = db.cluster_id().await?.is_none();
        let params = ClusterParams {
            cluster_name: cfg.node.cluster_name.clone(),
            peers: cfg.cluster.peers.clone(),
            formation_wait: Duration::from_millis(cfg.cluster.formation_wait_ms),
            mdns: watcher.is_some(),
            fingerprint: secret.fingerprint(),
            voter_replace_after: Duration::from_millis(cfg.cluster.voter_replace_after_ms),
        };
        let consensus = Consensus::start(
            ident.node_id,
            &data.join("meta"),
            db.clone(),
            &cfg.raft,
            net,
            inbound,
            params,
            watcher,
            shutdown.clone(),
        )
        .await?;
        join_cluster(&consensus, &db, &mut ident, fresh, data, &shutdown).await?;
        let mut registration =
            registration_of_this_node(cfg, &db, &ident, data_addr, &cert).await?;
        let disks = open_disks(cfg, &db, &ident, &mut registration).await?;
        if fresh {
            // A new node registers before it serves; a restarted one does it in the background.
            for c in registration.drain(..) {
                consensus.write(c).await?;
            }
        }
        warn_about_disk_layout(cfg, &disks);
        let directory = Directory::new(ident.node_id, db.clone());
        directory
            .refresh(&consensus.control_ips())
            .await
            .context("read the cluster's members")?;
        let data_client = DataClient::new(cert.clone(), directory.clone(), CipherPreference::Auto);
        let store = Arc::new(Store::new(
            ident.cluster_id,
            ident.node_id,
            wormfs_parts::disk_set::DiskSet::new(disks),
            db,
            consensus,
            cfg,
            data_client,
        ));
        let accounts = Arc::new(crate::accounts::Accounts::new(
            store.meta.clone(),
            ident.node_id,
            &token,
            crate::accounts::bootstrap::Plan::of(cfg, ident.node_id).config_users,
        ));
        let node = Node {
            store,
            accounts,
            token,
            shutdown,
            drops: Arc::default(),
            data_addr,
            mdns: std::sync::Mutex::new(mdns),
            media,
            tasks: TaskTracker::new(),
            _lock: lock,
        };
        if let Some(listener) = data_listener {
            let tls = server_config(&cert, directory.allowed(), CipherPreference::Auto)?;
            crate::data_plane::server::start(
                node.store.disks.clone(),
                tls,
                directory.allowed(),
                listener,
                node.shutdown.child_token(),
                &node.tasks,
            )?;
        }
        node.spawn_registration(registration);
        node.start_accounts(cfg, fresh).await;
        node.spawn_background();
        crate::drop_folders::start(
            node.store.clone(),
            node.drops.clone(),
            cfg.ingest.folders.clone(),
            node.shutdown.clone(),
            &node.tasks,
        )?;
        Ok(node)
    }

    /// Proposes what a restarted node has to tell the cluster (a changed address or
    /// certificate, its dead intents, new disks), retrying until a majority takes it.
    fn spawn_registration(&self, commands: Vec<CommandV1>) {
        if commands.is_empty() {
            return;
        }
        let store = self.store.clone();
        let stop = self.shutdown.clone();
        let task = async move {
            for c in commands {
                let mut delay = Duration::from_secs(1);
                loop {
                    match store.consensus.write(c.clone()).await {
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(
                                "cannot register with the cluster yet (retrying in {delay:?}): {e}"
                            );
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                _ = tokio::time::sleep(delay) => {}
                            }
                            delay = (delay * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            }
            tracing::info!("registered with the cluster");
            if let Err(e) = store.refresh_directory().await {
                tracing::warn!("data plane: cannot read the members: {e}");
            }
        };
        self.tasks
            .spawn(task.instrument(tracing::info_span!("registration")));
    }

    /// Tells the cluster's accounts what this node brings (its token, its config's users, the
    /// first user): a new node before it serves (so the generated password is there when the
    /// API answers), a restarted one in the background.
    async fn start_accounts(&self, cfg: &Config, fresh: bool) {
        use crate::accounts::bootstrap;
        let plan = bootstrap::Plan::of(cfg, self.store.node_id);
        if fresh {
            let once = bootstrap::once(&self.store, &self.accounts, &plan);
            match tokio::time::timeout(Duration::from_secs(30), once).await {
                Ok(Ok(())) => return self.spawn_accounts_refresh(),
                Ok(Err(e)) => tracing::warn!("accounts: not yet told (retrying): {e:#}"),
                Err(_) => tracing::warn!("accounts: not yet told after 30 s (retrying)"),
            }
        }
        self.tasks.spawn(
            bootstrap::run(
                self.store.clone(),
                self.accounts.clone(),
                plan,
                self.shutdown.clone(),
            )
            .instrument(tracing::info_span!("accounts_bootstrap")),
        );
        self.spawn_accounts_refresh();
    }

    fn spawn_accounts_refresh(&self) {
        self.tasks.spawn(
            self.accounts
                .clone()
                .run(self.shutdown.clone())
                .instrument(tracing::info_span!("accounts")),
        );
    }

    fn spawn_background(&self) {
        let store = self.store.clone();
        let stop = self.shutdown.clone();
        let every = Duration::from_millis(self.store.ingest.sweep_interval_ms);
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(every) => {
                        match crate::sweeper::sweep(&store).await {
                            Ok(r) if r.removed > 0 => tracing::info!(removed = r.removed, "sweep done"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!("sweep failed: {e}"),
                        }
                    }
                }
            }
        });
        let store = self.store.clone();
        let stop = self.shutdown.clone();
        self.tasks.spawn(
            async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        // Cheap when nothing changed: the metadata's generation is compared first.
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {
                            if let Err(e) = store.refresh_directory().await {
                                tracing::warn!("data plane: cannot read the members: {e}");
                            }
                        }
                    }
                }
            }
            .instrument(tracing::info_span!("directory_refresh")),
        );
        // The disk monitor also re-checks each disk's identity, space and writability.
        self.tasks.spawn(
            crate::healing::disk_monitor::run(self.store.clone(), self.shutdown.clone())
                .instrument(tracing::info_span!("disk_monitor")),
        );
        self.tasks.spawn(
            crate::healing::repair_worker::run(self.store.clone(), self.shutdown.clone())
                .instrument(tracing::info_span!("repair")),
        );
        self.tasks.spawn(
            crate::healing::repair_worker::heal_on_read(self.store.clone(), self.shutdown.clone())
                .instrument(tracing::info_span!("heal_on_read")),
        );
        self.tasks.spawn(
            crate::healing::scrub::run(self.store.clone(), self.shutdown.clone())
                .instrument(tracing::info_span!("scrub")),
        );
        self.tasks.spawn(
            crate::meta_backup::run(self.store.clone(), self.shutdown.clone())
                .instrument(tracing::info_span!("meta_backup")),
        );
        self.tasks.spawn(
            crate::trash::run(self.store.clone(), self.shutdown.clone())
                .instrument(tracing::info_span!("trash")),
        );
        self.tasks.spawn(
            crate::events::run(
                self.store.clone(),
                self.store.alerts.member_lost_after_ms(),
                self.shutdown.clone(),
            )
            .instrument(tracing::info_span!("events")),
        );
        self.tasks.spawn(
            crate::alerts::run(self.store.clone(), self.shutdown.clone())
                .instrument(tracing::info_span!("alerts")),
        );
        // Follows the change feed and tells the media servers; stopped with the others.
        self.media
            .start(&self.store.meta, self.shutdown.clone(), &self.tasks);
    }

    /// Stops background tasks, then Raft, then closes the metadata, in that order.
    pub async fn stop(self) {
        tracing::info!("shutdown: stopping background tasks");
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let mdns = self.mdns.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(m) = mdns {
            let _ = tokio::task::spawn_blocking(move || m.shutdown()).await;
            tracing::info!("shutdown: mDNS records withdrawn");
        }
        tracing::info!("shutdown: stopping raft");
        self.store.consensus.shutdown().await;
        tracing::info!("shutdown: closing metadata");
        self.store.meta.close().await;
        tracing::info!("shutdown complete");
    }
}

/// The secret files a node reads at start (those that exist are checked: owned by this user,
/// closed to group and others): the API token, the WebDAV admin password, the peer key, the
/// data-plane key, the cluster secret (wherever it is), and the WebDAV TLS key when it lies in
/// the data folder (a key elsewhere, such as a certificate authority's, follows that place's
/// rules).
fn secret_files(cfg: &Config) -> Vec<PathBuf> {
    let data = &cfg.node.data_dir;
    let mut files = vec![
        data.join(crate::admin_token::TOKEN_FILE),
        data.join(crate::accounts::bootstrap::ADMIN_FILE),
        data.join(PEER_KEY_FILE),
        data.join(crate::data_plane::cert::KEY_FILE),
        cfg.cluster.secret_file.clone(),
    ];
    if let Some(tls) = &cfg.webdav.tls {
        if tls.key.starts_with(data) {
            files.push(tls.key.clone());
        }
    }
    files
}

/// Takes group and others' access away from the data folder and what the node keeps at its top
/// (files, `disks/`, set-aside `meta.broken-*` folders), logging each change; `meta/` is done
/// when it is opened, each disk's `parts/` by the disk. Secret files were checked before.
fn restrict_data_dir(data: &Path) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(data).with_context(|| format!("list {}", data.display()))?;
    for e in entries {
        let e = e.with_context(|| format!("list {}", data.display()))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = e.file_type() else { continue };
        let ours = kind.is_file()
            || (kind.is_dir() && (name == "disks" || name.starts_with("meta.broken-")));
        if ours {
            wormfs_parts::fsutil::restrict_mode_logged(&e.path())?;
        }
    }
    wormfs_parts::fsutil::restrict_mode_logged(data)
}

/// Takes group and others' access away from `dir` and everything in it (a small tree: the
/// metadata folder), children first, logging each change.
fn restrict_tree(dir: &Path) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let e = e.with_context(|| format!("list {}", dir.display()))?;
        match e.file_type() {
            Ok(k) if k.is_dir() => restrict_tree(&e.path())?,
            Ok(k) if k.is_file() => wormfs_parts::fsutil::restrict_mode_logged(&e.path())?,
            _ => {}
        }
    }
    wormfs_parts::fsutil::restrict_mode_logged(dir)
}

/// Starts mDNS when the config asks for it, advertising this node's control plane
/// (`_wormfs._tcp`, see [`wormfs_discovery::WORMFS`]) and watching for other nodes. A failure
/// is logged, not fatal: static peers still work.
fn start_mdns(
    cfg: &Config,
    node_id: NodeId,
    net: &PeerNet,
    secret: &ClusterSecret,
) -> (
    Option<wormfs_discovery::Mdns>,
    Option<wormfs_discovery::Watcher>,
) {
    if !cfg.discovery.mdns {
        return (None, None);
    }
    let mut mdns = match wormfs_discovery::Mdns::start() {
        Ok(m) => m,
        Err(e @ wormfs_discovery::DiscoveryError::PortTaken { .. }) => {
            tracing::error!("{e}");
            return (None, None);
        }
        Err(e) => {
            tracing::error!("mDNS could not start; only static peers will be found: {e}");
            return (None, None);
        }
    };
    let port = net
        .listen_addrs()
        .iter()
        .find_map(|a| {
            a.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
                _ => None,
            })
        })
        .unwrap_or(cfg.cluster.peer_listen.port());
    let ip = cfg.cluster.peer_listen.ip();
    let advert = wormfs_discovery::Advert {
        service_type: wormfs_discovery::WORMFS.to_owned(),
        instance: format!("wormfs-{node_id:016x}"),
        host: wormfs_discovery::host_name(node_id),
        port,
        address: (!ip.is_unspecified()).then_some(ip),
        txt: vec![
            ("v".into(), "1".into()),
            ("cluster".into(), cfg.node.cluster_name.clone()),
            ("node".into(), node_id.to_string()),
            ("peer".into(), net.peer_id().to_string()),
            ("fp".into(), secret.fingerprint()),
        ],
    };
    if let Err(e) = mdns.advertise(&advert) {
        tracing::error!("mDNS: could not advertise the peer network: {e}");
    }
    let watcher = match mdns.watch(&[wormfs_discovery::WORMFS]) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!("mDNS: cannot browse for peers: {e}");
            None
        }
    };
    (Some(mdns), watcher)
}

/// When the state machine failed last time (`meta/RESYNC`), sets the metadata folder aside so
/// that this node starts empty and catches up from the cluster (the log or a snapshot).
fn resync_if_marked(meta_dir: &Path) -> anyhow::Result<()> {
    let marker = meta_dir.join(wormfs_meta::RESYNC_MARKER);
    let Ok(why) = std::fs::read_to_string(&marker) else {
        return Ok(());
    };
    let aside = meta_dir.with_file_name(format!("meta.broken-{}", now_ms()));
    tracing::error!(
        "the metadata failed last time ({why}); moving it to {} and resyncing from the cluster",
        aside.display()
    );
    std::fs::rename(meta_dir, &aside)
        .with_context(|| format!("move {} to {}", meta_dir.display(), aside.display()))?;
    wormfs_parts::fsutil::sync_dir(meta_dir.parent().unwrap_or(Path::new(".")))
}

/// Waits until the cluster's id has been applied here (a joining machine gets it with the log).
async fn wait_for_cluster_id(db: &MetaDb, shutdown: &CancellationToken) -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    loop {
        if let Some(id) = db.cluster_id().await? {
            return Ok(id);
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the cluster's id has not reached this node after 120 s");
        }
        tokio::select! {
            _ = shutdown.cancelled() => bail!("stopped while joining"),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Makes the data folder (0700) and locks it for this process; checks the secret files' owner
/// and mode, and narrows the rest of the folder to its owner.
fn prepare_data_dir(cfg: &Config) -> anyhow::Result<std::fs::File> {
    let data = &cfg.node.data_dir;
    wormfs_parts::fsutil::create_private_dir_all(data)
        .with_context(|| format!("create data folder {}", data.display()))?;
    let lock = lock_data_dir(data)?;
    for secret in secret_files(cfg) {
        wormfs_parts::fsutil::check_secret(&secret)?;
    }
    restrict_data_dir(data)?;
    Ok(lock)
}

/// The node's identity from `node.json`, made (and written durably) at the first start; a
/// configured `node.id` must match it.
fn load_or_create_identity(cfg: &Config) -> anyhow::Result<NodeIdentity> {
    let ident_path = cfg.node.data_dir.join("node.json");
    let ident = match read_identity(&ident_path)? {
        Some(id) => id,
        None => {
            let id = NodeIdentity {
                format: NODE_IDENTITY_FORMAT,
                node_id: cfg.node.id.unwrap_or_else(|| rand::random::<u64>() >> 1),
                cluster_id: ClusterId::random(),
            };
            write_durably(&ident_path, &serde_json::to_vec_pretty(&id)?)?;
            id
        }
    };
    if let Some(want) = cfg.node.id {
        if want != ident.node_id {
            bail!(
                "node.id is {want} but {} says this node is {}",
                ident_path.display(),
                ident.node_id
            );
        }
    }
    Ok(ident)
}

/// The cluster secret, made (0600) at the first start of a cluster's first machine.
fn load_cluster_secret(cfg: &Config) -> anyhow::Result<ClusterSecret> {
    let (secret, made) = ClusterSecret::read_or_create(&cfg.cluster.secret_file)?;
    if made {
        tracing::info!(
            file = %cfg.cluster.secret_file.display(),
            fingerprint = %secret.fingerprint(),
            "made a new cluster secret (mode 0600); other machines join with `wormfs join-token`"
        );
    }
    Ok(secret)
}

/// Opens the metadata in `meta_dir`: a marked resync first, private folders, then SQLite.
async fn open_metadata(meta_dir: &Path) -> anyhow::Result<MetaDb> {
    resync_if_marked(meta_dir)?;
    // `snapshots/` too, before Raft's state machine makes it with the umask's mode.
    wormfs_parts::fsutil::create_private_dir_all(&meta_dir.join("snapshots"))
        .with_context(|| format!("create {}", meta_dir.display()))?;
    restrict_tree(meta_dir)?;
    MetaDb::open(&meta_dir.join("metadata.db")).await
}

/// Founds the cluster (its id the first command) or waits until the id of the cluster this
/// node joined has been applied here; a new machine that joined adopts that id in `node.json`.
async fn join_cluster(
    consensus: &Consensus,
    db: &MetaDb,
    ident: &mut NodeIdentity,
    fresh: bool,
    data: &Path,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    if consensus.formation() == Formation::Founded {
        consensus
            .write(CommandV1::InitCluster {
                cluster_id: ident.cluster_id,
                time_ms: now_ms(),
            })
            .await?;
    }
    let cluster_id = wait_for_cluster_id(db, shutdown).await?;
    if cluster_id != ident.cluster_id.to_string() {
        if !fresh {
            bail!(
                "metadata belongs to cluster {cluster_id}, node.json to {}",
                ident.cluster_id
            );
        }
        ident.cluster_id = ClusterId(
            cluster_id
                .parse()
                .with_context(|| format!("cluster id {cluster_id}"))?,
        );
        write_durably(&data.join("node.json"), &serde_json::to_vec_pretty(ident)?)?;
    }
    Ok(())
}

/// What this node tells the cluster about itself: only what changed (its name and addresses,
/// and the end of a restarted node's old ingests).
async fn registration_of_this_node(
    cfg: &Config,
    db: &MetaDb,
    ident: &NodeIdentity,
    data_addr: std::net::SocketAddr,
    cert: &NodeCert,
) -> anyhow::Result<Vec<CommandV1>> {
    let mut registration = Vec::new();
    let name = cfg.node.name.clone().unwrap_or_else(|| {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    });
    let (api_addr, data_text, data_cert) = (
        cfg.api.listen.to_string(),
        data_addr.to_string(),
        cert.fingerprint.to_string(),
    );
    let known_me = db
        .nodes()
        .await?
        .into_iter()
        .find(|n| n.node_id == ident.node_id);
    let same = known_me.is_some_and(|k| {
        (&k.name, &k.api_addr, &k.data_addr, &k.data_cert)
            == (&name, &api_addr, &data_text, &data_cert)
    });
    if !same {
        registration.push(CommandV1::RegisterNode {
            node_id: ident.node_id,
            name,
            api_addr,
            data_addr: data_text,
            data_cert,
            time_ms: now_ms(),
        });
    }
    // A restarted node has no live ingest: its old intents are dead.
    if db
        .intents()
        .await?
        .iter()
        .any(|i| i.writer == ident.node_id)
    {
        registration.push(CommandV1::ExpireIntents {
            now_ms: now_ms(),
            writer: Some(ident.node_id),
        });
    }
    Ok(registration)
}

/// Opens the configured disks (checking each identity file against what the metadata knows),
/// adding a registration for each new one.
async fn open_disks(
    cfg: &Config,
    db: &MetaDb,
    ident: &NodeIdentity,
    registration: &mut Vec<CommandV1>,
) -> anyhow::Result<Vec<Arc<LocalDisk>>> {
    let known = db.disk_states().await?;
    let mine: Vec<_> = known
        .iter()
        .filter(|d| d.node_id == ident.node_id)
        .collect();
    let mut roots = disk_roots(cfg);
    // Disks added while running (`wormfs disk add`) are opened too: the cluster's record of
    // this machine's disks counts, not only the configuration.
    for d in &mine {
        let p = PathBuf::from(&d.path);
        if !matches!(d.state, DiskStatus::Removed | DiskStatus::Drained) && !roots.contains(&p) {
            roots.push(p);
        }
    }
    let mut disks = Vec::new();
    for root in roots {
        let root_s = root.display().to_string();
        // The disk the metadata has at this path: the one the identity file names, if it
        // is this machine's; else the one not removed there (a path may have held a disk
        // that was replaced). An emptied folder of a disk that is out stays that disk,
        // missing: an unmounted mount point must never become a new disk by itself.
        let ident_id = wormfs_parts::disk::read_identity(&root)
            .ok()
            .flatten()
            .map(|i| i.disk_id);
        let prior = mine
            .iter()
            .find(|d| Some(d.disk_id) == ident_id)
            .or_else(|| {
                mine.iter().find(|d| {
                    d.path == root_s
                        && !matches!(d.state, DiskStatus::Removed | DiskStatus::Drained)
                })
            })
            .map(|d| d.disk_id);
        let disk = LocalDisk::open(
            &root,
            ident.cluster_id,
            prior,
            cfg.storage.reserve_free_bytes,
        )
        .with_context(|| format!("open disk {root_s}"))?;
        let mut disk = disk;
        disk.domain = crate::startup_checks::failure_domain(&disk.root, disk.fs_dev);
        if prior.is_none() {
            registration.push(CommandV1::RegisterDisk {
                disk_id: disk.id,
                node_id: ident.node_id,
                path: root_s,
                fs_dev: disk.domain,
                time_ms: now_ms(),
            });
        }
        disks.push(Arc::new(disk));
    }
    Ok(disks)
}

/// Says so when disk folders share a filesystem (they then protect against lost parts, not a
/// failed disk), and when there is only one disk.
fn warn_about_disk_layout(cfg: &Config, disks: &[Arc<LocalDisk>]) {
    let roots: Vec<PathBuf> = disks.iter().map(|d| d.root.clone()).collect();
    for (pool, members) in crate::startup_checks::shared_zfs_pools(&roots) {
        let names: Vec<String> = members.iter().map(|p| p.display().to_string()).collect();
        tracing::warn!(pool = %pool, disks = ?names, "disks are datasets of one ZFS pool: one failure domain");
        crate::logging::note(&format!(
            "\n  NOTE: disks {} are datasets of one ZFS pool ({pool}): one failure domain. WormFS\n  counts them as one disk when it spreads parts and says what a file survives; against a\n  failed drive, the pool's own redundancy (mirror, RAID-Z) protects them. For WormFS to spread\n  files over drives, give it one pool per drive.\n",
            names.join(", ")
        ));
    }
    let mut devs: Vec<u64> = disks.iter().map(|d| d.fs_dev).collect();
    devs.sort_unstable();
    devs.dedup();
    if matches!(cfg.source, ConfigSource::Embedded) || devs.len() < disks.len() {
        crate::logging::note(&format!(
            "\n  NOTE: {} disk folders share {} filesystem(s). Folders on one disk protect against lost or\n  corrupt parts, not against that disk failing. Give WormFS folders on separate disks for that.\n",
            disks.len(),
            devs.len()
        ));
    }
    if disks.len() == 1 {
        tracing::warn!("only one disk: files are stored as copies:1 and a disk failure loses them");
    }
}
