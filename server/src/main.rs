//! The `wormfs` binary: `serve` runs a node; every other command is a client of a node's API.

use std::sync::Arc;

mod api_listener;

use anyhow::Context;
use clap::Parser;
use wormfs_config::{ConfigSource, LogFormat, Overrides};
use wormfs_server::api::{router, ApiState};
use wormfs_server::cli::{exit, run_client, Cli, CliError, Cmd, ConfigCmd, ServeArgs, WebdavCmd};
use wormfs_server::node::Node;
use wormfs_server::peer::ClusterSecret;

/// mimalloc instead of glibc malloc: glibc keeps per-thread arenas of freed multi-MiB buffers
/// (encode batches, decoded rows) that pushed a degraded 2 GiB read to 360-600 MiB of RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
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
    let res = rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve(args) => serve(args).await,
            Cmd::Config(ConfigCmd::Example) => {
                print!("{}", wormfs_config::example());
                Ok(())
            }
            Cmd::Config(ConfigCmd::Check { file }) => {
                let cfg = wormfs_config::load(Some(&file), std::env::vars(), &Overrides::default())
                    .map_err(|e| CliError {
                        code: exit::USAGE,
                        message: e.to_string(),
                    })?;
                println!("{}: OK\n{cfg:#?}", file.display());
                Ok(())
            }
            Cmd::Discover { wait } => discover(wait, cli.json).await,
            Cmd::Init { join, serve } => init(&serve, join.as_deref()),
            Cmd::JoinToken { serve } => join_token(&serve),
            Cmd::Recover { force, serve } => recover(&serve, force).await,
            Cmd::Webdav(WebdavCmd::HashPassword) => {
                println!(
                    "{}",
                    wormfs_server::webdav_face::hash_password_from_stdin()?
                );
                Ok(())
            }
            _ => run_client(cli).await,
        }
    });
    if let Err(e) = res {
        let code = e
            .downcast_ref::<CliError>()
            .map_or(exit::FAILURE, |c| c.code);
        eprintln!("wormfs: {e:#}");
        std::process::exit(code);
    }
}

fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WORMFS_LOG").unwrap_or_else(|_| {
        // openraft is chatty at info; keep it at warn unless the level names it. Its
        // replication warnings repeat several times a second while a member is down; the
        // leader logs that member's going and coming back once instead (consensus/membership.rs).
        let directive = if level.contains("openraft") {
            level.to_owned()
        } else {
            format!(
                "{level},openraft=warn,openraft::replication=off,\
                 openraft::network::snapshot_transport=off,\
                 openraft::engine::handler::replication_handler=off"
            )
        };
        tracing_subscriber::EnvFilter::new(directive)
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
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

async fn discover(wait: f64, json: bool) -> anyhow::Result<()> {
    if !(0.0..=600.0).contains(&wait) {
        return Err(CliError {
            code: exit::USAGE,
            message: format!("--wait: expected 0 to 600 seconds, got {wait}"),
        }
        .into());
    }
    let found = tokio::task::spawn_blocking(move || {
        wormfs_discovery::browse(
            &[wormfs_discovery::WEBDAV, wormfs_discovery::WEBDAVS],
            std::time::Duration::from_secs_f64(wait),
        )
    })
    .await??;
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(());
    }
    if found.is_empty() {
        println!("nothing found in {wait} s");
    }
    for f in &found {
        let scheme = if f.service_type == wormfs_discovery::WEBDAVS {
            "https"
        } else {
            "http"
        };
        let path = f.txt.get("path").map_or("/", String::as_str);
        let name = f.instance.split("._").next().unwrap_or(&f.instance);
        for a in &f.addresses {
            let host = match a {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                std::net::IpAddr::V4(v4) => v4.to_string(),
            };
            println!("{name}\t{scheme}://{host}:{}{path}\t({})", f.port, f.host);
        }
    }
    Ok(())
}

/// Loads the config for a local command, as `serve` would.
fn local_config(args: &ServeArgs) -> anyhow::Result<wormfs_config::Config> {
    wormfs_config::load(args.config.as_deref(), std::env::vars(), &args.overrides()).map_err(|e| {
        CliError {
            code: exit::USAGE,
            message: e.to_string(),
        }
        .into()
    })
}

/// `wormfs init [--join TOKEN]`.
fn init(args: &ServeArgs, join: Option<&str>) -> anyhow::Result<()> {
    let cfg = local_config(args)?;
    let path = &cfg.cluster.secret_file;
    match join {
        Some(token) => {
            let (name, secret) = ClusterSecret::from_join_token(token).map_err(|e| CliError {
                code: exit::USAGE,
                message: e.to_string(),
            })?;
            if name != cfg.node.cluster_name {
                return Err(CliError {
                    code: exit::USAGE,
                    message: format!(
                        "the token is for cluster {name:?} but this machine's node.cluster_name is \
                         {:?}: set node.cluster_name = \"{name}\" in its config first",
                        cfg.node.cluster_name
                    ),
                }
                .into());
            }
            secret.write(path)?;
            println!(
                "{}: the secret of cluster {name} (fingerprint {}). Start the node; it joins \
                 the cluster when it sees a member.",
                path.display(),
                secret.fingerprint()
            );
        }
        None => {
            let (secret, made) = ClusterSecret::read_or_create(path)?;
            let what = if made { "made" } else { "already there" };
            println!(
                "{}: cluster secret {what} (fingerprint {}). Other machines join with the \
                 token `wormfs join-token` prints.",
                path.display(),
                secret.fingerprint()
            );
        }
    }
    Ok(())
}

/// `wormfs recover --force`: this stopped machine becomes the only voter.
async fn recover(args: &ServeArgs, force: bool) -> anyhow::Result<()> {
    if !force {
        return Err(CliError {
            code: exit::USAGE,
            message: "this makes this machine the only voter of its cluster, dropping the others \
                      from the membership; they must never run again with their old data. Stop \
                      this node, read docs/cluster.md (\"When the survivors lack a majority\"), \
                      then run again with --force"
                .into(),
        }
        .into());
    }
    let cfg = local_config(args)?;
    let data = &cfg.node.data_dir;
    let _lock = wormfs_server::node::lock_data_dir(data)?;
    let node_id = wormfs_server::node::read_node_id(data)?;
    let r = wormfs_meta::recovery::force_single_voter(&data.join("meta"), node_id).await?;
    println!(
        "node {node_id} is now the only voter (the voters were {:?}; new membership at log index \
         {}). Start it: it elects itself and takes writes. Then run `wormfs node remove ID` for \
         each lost machine, and never start those machines again with their old data folder.",
        r.old_voters, r.index
    );
    Ok(())
}

/// `wormfs join-token`.
fn join_token(args: &ServeArgs) -> anyhow::Result<()> {
    let cfg = local_config(args)?;
    let secret = ClusterSecret::read(&cfg.cluster.secret_file)?;
    println!("{}", secret.join_token(&cfg.node.cluster_name));
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = args.overrides();
    let cfg =
        wormfs_config::load(args.config.as_deref(), std::env::vars(), &overrides).map_err(|e| {
            CliError {
                code: exit::USAGE,
                message: e.to_string(),
            }
        })?;
    init_tracing(&cfg.log.level, cfg.log.format);
    // A panicking task must not leave a half-alive node: abort, and let the supervisor restart.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    if matches!(cfg.source, ConfigSource::Embedded) {
        tracing::info!(data_dir = %cfg.node.data_dir.display(), mdns = cfg.discovery.mdns, "no config file: running the embedded default (one node, folder-disks, 127.0.0.1)");
    }
    let node = Node::start(&cfg).await?;
    let state = ApiState {
        store: node.store.clone(),
        token: Arc::new(node.token.clone()),
        drops: node.drops.clone(),
    };
    // WebDAV is bound before the API, so a caller that sees the API up finds WebDAV up too.
    let face = wormfs_server::webdav_face::build(&cfg, node.store.clone())?;
    let dav_listener = tokio::net::TcpListener::bind(cfg.webdav.listen)
        .await
        .with_context(|| format!("WebDAV: listen on {}", cfg.webdav.listen))?;
    let scheme = if face.tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %cfg.webdav.listen, %scheme, anonymous = %cfg.webdav.anonymous, "WebDAV listening");
    eprintln!("WormFS WebDAV on {scheme}://{}", cfg.webdav.listen);
    let listener = tokio::net::TcpListener::bind(cfg.api.listen)
        .await
        .with_context(|| format!("listen on {}", cfg.api.listen))?;
    tracing::info!(addr = %cfg.api.listen, "node API listening");
    eprintln!(
        "WormFS node {} serving the API on http://{}",
        node.store.node_id, cfg.api.listen
    );
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
    });
    server.await;
    tracing::info!("shutdown: API stopped accepting requests");
    node.shutdown.cancel();
    let _ = dav_task.await;
    tracing::info!("shutdown: WebDAV stopped");
    node.stop().await;
    Ok(())
}
