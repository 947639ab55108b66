//! The `wormfs` binary: `serve` runs a node; every other command is a client of a node's API.

// No unsafe code here: the workspace lint is `deny` only so that one syscall in
// wormfs-parts (`fsutil::writeback_error`) can be allowed.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

mod api_listener;

use anyhow::Context;
use clap::Parser;
use wormfs_config::ConfigSource;
use wormfs_parts::ids::{ClusterId, NodeId};
use wormfs_server::api::{router, ApiState};
use wormfs_server::cli::{exit, exit_code, Cli, CliError, NodeHost, ServeArgs};
use wormfs_server::node::Node;

/// mimalloc instead of glibc malloc: glibc keeps per-thread arenas of freed multi-MiB buffers
/// (encode batches, decoded rows) that pushed a degraded 2 GiB read to 360-600 MiB of RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long a node may take to stop after SIGTERM before it stops at once: within Docker's
/// default 10 s, after which the platforms kill it and unmount its disks. Stopping at once is
/// safe (every acknowledged write is durable; what was in flight is swept at the next start),
/// only less tidy.
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(8);

/// SQLite's temporary files go to `SQLITE_TMPDIR` when set (a `FROM scratch` image has no
/// /tmp; the image sets `/data/tmp`): made here when missing, as the data folder may be a fresh
/// volume or host folder.
fn make_sqlite_tmpdir() {
    let Some(dir) = std::env::var_os("SQLITE_TMPDIR").map(PathBuf::from) else {
        return;
    };
    if dir.is_dir() {
        return;
    }
    match wormfs_parts::fsutil::create_private_dir_all(&dir) {
        Ok(()) => tracing::info!(dir = %dir.display(), "made SQLITE_TMPDIR"),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "SQLITE_TMPDIR cannot be made ({e}): SQLite falls back to /var/tmp, /tmp or the working folder")
        }
    }
}

/// Ends the process if the orderly shutdown has not within [`SHUTDOWN_DEADLINE`].
fn shutdown_watchdog() {
    let spawned = std::thread::Builder::new()
        .name("shutdown-watchdog".into())
        .spawn(|| {
            std::thread::sleep(SHUTDOWN_DEADLINE);
            tracing::warn!(
                "shutdown: not finished after {SHUTDOWN_DEADLINE:?}; stopping now (work in \
                 flight is abandoned and swept at the next start; nothing acknowledged is lost)"
            );
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        tracing::warn!("shutdown: no watchdog thread: {e}");
    }
}

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.cmd, wormfs_server::cli::Cmd::Serve(_)) {
        quiet_on_broken_pipe();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wormfs: cannot start the runtime: {e}");
            std::process::exit(exit::FAILURE);
        }
    };
    // Every command is dispatched in cli::run; this binary supplies what needs node.rs.
    if let Err(e) = rt.block_on(wormfs_server::cli::run(cli, &Binary)) {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        {
            std::process::exit(BROKEN_PIPE_EXIT);
        }
        eprintln!("wormfs: {e:#}");
        std::process::exit(exit_code(&e));
    }
}

/// The exit code of a command whose reader went away: 128 + SIGPIPE, what a shell reports for
/// a tool that SIGPIPE ended.
const BROKEN_PIPE_EXIT: i32 = 141;

/// A client command whose output reader goes away (`wormfs disks | head -1`) ends quietly, as
/// Unix tools do. Rust ignores SIGPIPE, so writing to a closed pipe is an error (EPIPE) that
/// `println!` turns into a panic: that panic ends the process here, without its message.
/// SIGPIPE itself stays ignored (the process's sockets are written with MSG_NOSIGNAL anyway),
/// and `serve` keeps its own hook: a node does not end silently.
fn quiet_on_broken_pipe() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload_as_str().unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(BROKEN_PIPE_EXIT);
        }
        default_hook(info);
    }));
}

/// The commands that need the node's composition root, which only the binary reaches.
struct Binary;

impl NodeHost for Binary {
    async fn serve(&self, args: ServeArgs) -> anyhow::Result<()> {
        serve(args).await
    }

    fn lock_node(&self, data_dir: &Path) -> anyhow::Result<(std::fs::File, NodeId)> {
        let lock = wormfs_server::node::lock_data_dir(data_dir)?;
        Ok((lock, wormfs_server::node::read_node_id(data_dir)?))
    }

    fn lock_data_dir(&self, data_dir: &Path) -> anyhow::Result<std::fs::File> {
        wormfs_parts::fsutil::create_private_dir_all(data_dir)?;
        wormfs_server::node::lock_data_dir(data_dir)
    }

    fn identity(&self, data_dir: &Path) -> anyhow::Result<Option<(NodeId, ClusterId)>> {
        wormfs_server::node::read_ids(data_dir)
    }

    fn write_identity(
        &self,
        data_dir: &Path,
        node_id: NodeId,
        cluster_id: ClusterId,
    ) -> anyhow::Result<()> {
        wormfs_server::node::write_ids(data_dir, node_id, cluster_id)
    }

    fn disk_roots(&self, cfg: &wormfs_config::Config) -> Vec<PathBuf> {
        wormfs_server::node::disk_roots(cfg)
    }
}

/// What the command line and the environment changed in the config, for the first log line.
fn overrides_given(o: &wormfs_config::Overrides) -> String {
    let mut given: Vec<String> = Vec::new();
    // A flag that has a variable too is named as the user gave it: the image sets
    // WORMFS_DATA_DIR, and its log must not send anyone looking for a --data-dir.
    let args: Vec<String> = std::env::args().collect();
    let mut flag = |set: bool, name: &str, var: Option<&str>| {
        if !set {
            return;
        }
        let flag_name = name.split(' ').next().unwrap_or(name);
        let on_line = args
            .iter()
            .any(|a| a == flag_name || a.starts_with(&format!("{flag_name}=")));
        match var {
            Some(var) if !on_line && std::env::var_os(var).is_some() => given.push(var.to_owned()),
            _ => given.push(name.to_owned()),
        }
    };
    flag(o.data_dir.is_some(), "--data-dir", Some("WORMFS_DATA_DIR"));
    flag(
        !o.disks.is_empty(),
        &format!("--disk (x{})", o.disks.len()),
        Some("WORMFS_DISKS"),
    );
    flag(o.listen.is_some(), "--listen", Some("WORMFS_LISTEN"));
    flag(
        o.webdav_listen.is_some(),
        "--webdav-listen",
        Some("WORMFS_WEBDAV_LISTEN"),
    );
    flag(o.anonymous.is_some(), "--anonymous", None);
    flag(o.mdns.is_some(), "--mdns", None);
    flag(!o.ingest.is_empty(), "--ingest", None);
    flag(!o.peers.is_empty(), "--peer", None);
    flag(
        o.peer_listen.is_some(),
        "--peer-listen",
        Some("WORMFS_PEER_LISTEN"),
    );
    flag(
        o.data_listen.is_some(),
        "--data-listen",
        Some("WORMFS_DATA_LISTEN"),
    );
    flag(
        o.secret_file.is_some(),
        "--cluster-secret-file",
        Some("WORMFS_CLUSTER_SECRET_FILE"),
    );
    flag(o.log_format.is_some(), "--log-format", None);
    let mut vars: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("WORMFS_") && k.contains("__"))
        .collect();
    vars.sort();
    given.extend(vars);
    if given.is_empty() {
        "no overrides".to_owned()
    } else {
        format!("overridden by {}", given.join(", "))
    }
}

/// Advertises the WebDAV face on the node's mDNS daemon, when mDNS is on and the face is to be
/// advertised. A failure is logged, not fatal: the node serves without being advertised.
fn advertise(cfg: &wormfs_config::Config, node: &Node, https: bool) {
    let mut guard = node.mdns.lock().unwrap_or_else(|p| p.into_inner());
    let Some(mdns) = guard.as_mut() else {
        tracing::info!("mDNS off");
        return;
    };
    if !cfg.webdav.advertise {
        return;
    }
    let machine = cfg
        .node
        .name
        .clone()
        .or_else(|| {
            rustix::system::uname()
                .nodename()
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "node".into());
    let ip = cfg.webdav.listen.ip();
    let advert = wormfs_discovery::Advert {
        service_type: if https {
            wormfs_discovery::WEBDAVS
        } else {
            wormfs_discovery::WEBDAV
        }
        .to_owned(),
        instance: format!("WormFS on {machine}"),
        host: wormfs_discovery::host_name(node.store.node_id),
        port: cfg.webdav.listen.port(),
        address: (!ip.is_unspecified()).then_some(ip),
        txt: vec![("path".into(), "/".into())],
    };
    if let Err(e) = mdns.advertise(&advert) {
        tracing::error!("mDNS: could not advertise WebDAV: {e}");
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = args.overrides();
    let cfg = wormfs_config::load(args.config.as_deref(), std::env::vars(), &overrides)
        .map_err(|e| CliError::usage(e.to_string()))?;
    wormfs_server::logging::init(&cfg.log.level, cfg.log.format);
    // The metrics token is read before anything starts: a bad file stops the node at once.
    let metrics = std::sync::Arc::new(
        wormfs_server::metrics::Exporter::from_config(&cfg.admin)
            .map_err(|e| CliError::usage(format!("{e:#}")))?,
    );
    // A panicking task must not leave a half-alive node: abort, and let the supervisor restart.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    let source = match &cfg.source {
        ConfigSource::Embedded => "the embedded default (no config file)".to_owned(),
        ConfigSource::File(p) => format!("config file {}", p.display()),
    };
    tracing::info!(
        data_dir = %cfg.node.data_dir.display(),
        mdns = cfg.discovery.mdns,
        "running {source}, {}; data folder {}; disks: {}; listening: {}",
        overrides_given(&overrides),
        cfg.node.data_dir.display(),
        cfg.disks_text(),
        cfg.listeners_text()
    );
    let node = Node::start(&cfg).await?;
    make_sqlite_tmpdir();
    let changes = wormfs_server::changes::ChangeFeed::start(&node.store.meta);
    let state = ApiState {
        store: node.store.clone(),
        accounts: node.accounts.clone(),
        drops: node.drops.clone(),
        sessions: Default::default(),
        metrics,
        changes: changes.clone(),
        reads: Default::default(),
        media: node.media.clone(),
    };
    // WebDAV is bound before the API, so a caller that sees the API up finds WebDAV up too.
    let face = wormfs_server::webdav_face::build(&cfg, node.store.clone(), &node.accounts).await?;
    let dav_listener = tokio::net::TcpListener::bind(cfg.webdav.listen)
        .await
        .with_context(|| format!("WebDAV: listen on {}", cfg.webdav.listen))?;
    let scheme = if face.tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %cfg.webdav.listen, %scheme, anonymous = %cfg.webdav.anonymous, "WebDAV listening");
    wormfs_server::logging::note(&format!(
        "WormFS WebDAV on {scheme}://{}",
        cfg.webdav.listen
    ));
    let listener = tokio::net::TcpListener::bind(cfg.api.listen)
        .await
        .with_context(|| format!("listen on {}", cfg.api.listen))?;
    tracing::info!(addr = %cfg.api.listen, "node API listening");
    wormfs_server::logging::note(&format!(
        "WormFS node {} serving the API on http://{}",
        node.store.node_id, cfg.api.listen
    ));
    advertise(&cfg, &node, face.tls.is_some());
    let dav_task = tokio::spawn(wormfs_webdav::serve(
        dav_listener,
        face,
        node.shutdown.child_token(),
    ));
    let stop = node.shutdown.clone();
    let app = router(state);
    let limits = api_listener::Limits::from_env();
    let server = api_listener::serve(listener, app, limits, async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot watch SIGTERM: {e}");
                    return std::future::pending().await;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
            _ = stop.cancelled() => {}
        }
        shutdown_watchdog();
        // Long polls of /api/v1/changes answer now, so they do not hold the shutdown.
        changes.close();
    });
    server.await;
    tracing::info!("shutdown: API stopped accepting requests");
    node.shutdown.cancel();
    let _ = dav_task.await;
    tracing::info!("shutdown: WebDAV stopped");
    node.stop().await;
    Ok(())
}
