//! Commands on this machine that need no running node: `init`, `join-token`, `recover`,
//! `config example|check`, `webdav hash-password`, `discover`; and `serve`'s arguments, which
//! `init`, `join-token` and `recover` share to find the config and the data folder.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::{CliError, NodeHost};
use crate::peer::ClusterSecret;

/// Options shared by `serve` and by token discovery.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Config file (without one, the embedded default: one node on ./wormfs-data, 127.0.0.1).
    #[arg(long, env = "WORMFS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data folder.
    #[arg(long, env = "WORMFS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A disk root (repeatable).
    #[arg(long = "disk", env = "WORMFS_DISKS", value_delimiter = ',')]
    pub disks: Vec<PathBuf>,
    /// Node API address.
    #[arg(long, env = "WORMFS_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// WebDAV address.
    #[arg(long, env = "WORMFS_WEBDAV_LISTEN")]
    pub webdav_listen: Option<std::net::SocketAddr>,
    /// WebDAV access without a password: off, ro or rw (a trusted LAN or a test bench).
    #[arg(long, value_name = "off|ro|rw")]
    pub anonymous: Option<wormfs_config::Anonymous>,
    /// mDNS on the LAN: on or off (default: off with no config file, on with one).
    #[arg(long, value_name = "on|off", value_parser = on_off)]
    pub mdns: Option<bool>,
    /// Turn mDNS off (the same as `--mdns off`).
    #[arg(long, conflicts_with = "mdns")]
    pub no_mdns: bool,
    /// A drop folder, PATH or PATH=TREE_PREFIX (repeatable; replaces the config's folders).
    #[arg(long = "ingest", value_name = "PATH[=TREE]")]
    pub ingest: Vec<String>,
    /// A peer machine, HOST:PORT (repeatable; replaces `cluster.peers`).
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub peers: Vec<String>,
    /// Where this node listens for its peers (default port 7712).
    #[arg(long, env = "WORMFS_PEER_LISTEN")]
    pub peer_listen: Option<std::net::SocketAddr>,
    /// Where to serve part data to the other nodes (mutual TLS; default port 7713).
    #[arg(long, env = "WORMFS_DATA_LISTEN")]
    pub data_listen: Option<std::net::SocketAddr>,
    /// The cluster secret file (default DATA_DIR/cluster-secret).
    #[arg(long, env = "WORMFS_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Log lines as text for people or one JSON object per line (replaces `log.format`).
    #[arg(long, value_name = "text|json")]
    pub log_format: Option<wormfs_config::LogFormat>,
}

impl ServeArgs {
    /// The command-line values as config overrides.
    pub fn overrides(&self) -> wormfs_config::Overrides {
        wormfs_config::Overrides {
            data_dir: self.data_dir.clone(),
            disks: self.disks.clone(),
            listen: self.listen,
            ingest: self.ingest.clone(),
            webdav_listen: self.webdav_listen,
            anonymous: self.anonymous,
            mdns: if self.no_mdns { Some(false) } else { self.mdns },
            peer_listen: self.peer_listen,
            data_listen: self.data_listen,
            peers: self.peers.clone(),
            secret_file: self.cluster_secret_file.clone(),
            log_format: self.log_format,
        }
    }
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected on or off, got {s:?}")),
    }
}

/// `wormfs config ...`
#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print a complete, commented example config.
    Example,
    /// Check a config file and print the result.
    Check {
        /// The file.
        file: PathBuf,
    },
}

/// `wormfs webdav ...`
#[derive(Subcommand, Debug)]
pub enum WebdavCmd {
    /// Read a password (first line of standard input, or typed at a prompt) and print its
    /// Argon2id hash for a `[[webdav.users]]` entry.
    HashPassword,
}

/// Loads the config for a local command, as `serve` would.
pub(super) fn local_config(args: &ServeArgs) -> anyhow::Result<wormfs_config::Config> {
    wormfs_config::load(args.config.as_deref(), std::env::vars(), &args.overrides())
        .map_err(|e| CliError::usage(e.to_string()).into())
}

/// `wormfs init [--join TOKEN]`.
pub(super) fn init(args: &ServeArgs, join: Option<&str>) -> anyhow::Result<()> {
    let cfg = local_config(args)?;
    let path = &cfg.cluster.secret_file;
    match join {
        Some(token) => {
            let (name, secret) = ClusterSecret::from_join_token(token)
                .map_err(|e| CliError::usage(e.to_string()))?;
            if name != cfg.node.cluster_name {
                bail!(CliError::usage(format!(
                    "the token is for cluster {name:?} but this machine's node.cluster_name is \
                     {:?}: set node.cluster_name = \"{name}\" in its config first",
                    cfg.node.cluster_name
                )));
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
pub(super) async fn recover(
    host: &impl NodeHost,
    args: &ServeArgs,
    force: bool,
) -> anyhow::Result<()> {
    if !force {
        bail!(CliError::usage(
            "this makes this machine the only voter of its cluster, dropping the others from the \
             membership; they must never run again with their old data. Stop this node, read \
             docs/cluster.md (\"When the survivors lack a majority\"), then run again with --force"
        ));
    }
    let cfg = local_config(args)?;
    let data = &cfg.node.data_dir;
    let (_lock, node_id) = host.lock_node(data)?;
    let r = wormfs_meta::recovery::force_single_voter(&data.join("meta"), node_id).await?;
    println!(
        "node {node_id} is now the only voter (the voters were {:?}; new membership at log index \
         {}). Start it: it elects itself and takes writes. Then run `wormfs node remove ID` for \
         each lost machine, and never start those machines again with their old data folder.",
        r.old_voters, r.index
    );
    Ok(())
}

/// `wormfs recover --from-disks`'s options besides the config.
pub struct FromDisks {
    /// Only scan, to this file.
    pub scan_out: Option<PathBuf>,
    /// Other machines' scans.
    pub scans: Vec<PathBuf>,
    /// Backup files to consider too.
    pub backups: Vec<PathBuf>,
    /// Write nothing.
    pub dry_run: bool,
    /// Print the report as JSON.
    pub json: bool,
}

/// `wormfs recover --from-disks`: rebuilds a stopped node's lost metadata from its disks
/// (see `crate::disk_recovery`).
pub(super) async fn recover_from_disks(
    host: &impl NodeHost,
    args: &ServeArgs,
    r: FromDisks,
) -> anyhow::Result<()> {
    use crate::disk_recovery;
    let cfg = local_config(args)?;
    let data = cfg.node.data_dir.clone();
    let roots = host.disk_roots(&cfg);
    let ident = if data.join("node.json").exists() {
        host.identity(&data)?
    } else {
        None
    };
    let machine = ident.map(|(n, _)| n).or(cfg.node.id);
    let scan_roots = roots.clone();
    let local =
        tokio::task::spawn_blocking(move || disk_recovery::scan_disks(&scan_roots, machine))
            .await??;
    if let Some(out) = &r.scan_out {
        disk_recovery::write_scan(&local, out)?;
        println!(
            "scanned {} disk(s) of this machine{}: {} part(s), {} unusable, {} metadata backup(s);              wrote {}. Copy it to the machine that recovers and pass it there with --scan.",
            local.disks.len(),
            machine.map(|n| format!(" (node {n})")).unwrap_or_default(),
            local.parts.len(),
            local.unusable.len(),
            local.backups.len(),
            out.display()
        );
        for n in &local.not_disks {
            println!("not a disk: {n}");
        }
        return Ok(());
    }
    if let Some((_, cluster)) = ident {
        if let Some(d) = local.disks.iter().find(|d| d.cluster_id != cluster) {
            bail!(
                "disk {} belongs to cluster {}, but {} says this node is in cluster {cluster}",
                d.root.display(),
                d.cluster_id,
                data.join("node.json").display()
            );
        }
    }
    let remote = r
        .scans
        .iter()
        .map(|p| disk_recovery::read_scan(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let _lock = if r.dry_run {
        None
    } else {
        Some(host.lock_data_dir(&data)?)
    };
    let peer = cfg.cluster.peer_listen;
    let proto = if peer.is_ipv4() { "ip4" } else { "ip6" };
    // A member's address ends with its peer id (consensus::network): the key the node will
    // start with (made now, as its first start would, when the data folder has none).
    let peer_id = if r.dry_run {
        None
    } else {
        let key = crate::peer::net::load_identity(&data.join(crate::peer::net::PEER_KEY_FILE))?;
        Some(key.public().to_peer_id())
    };
    let opts = disk_recovery::Options {
        data_dir: data.clone(),
        local,
        remote,
        backups: r.backups,
        dry_run: r.dry_run,
        node_id: machine,
        peer_addr: format!("/{proto}/{}/tcp/{}", peer.ip(), peer.port()),
        peer_id: peer_id.map(|p| p.to_string()),
        part_capacity: cfg.storage.segment_part_bytes,
    };
    // A data folder without node.json gets one, written before the new metadata is moved
    // into place (it names this node as the only voter).
    let write = |n, c| host.write_identity(&data, n, c);
    let writer: disk_recovery::IdentityWriter<'_> = &write;
    let report =
        disk_recovery::recover(opts, (!r.dry_run && ident.is_none()).then_some(writer)).await?;
    if r.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
        if !r.dry_run {
            println!(
                "The report is in {}. Start the node: it is the only voter of the recovered \
                 cluster; start the other machines after it (their meta/ removed) and they \
                 join it.",
                data.join("recovery-report.txt").display()
            );
        }
    }
    Ok(())
}

/// `wormfs join-token`.
pub(super) fn join_token(args: &ServeArgs) -> anyhow::Result<()> {
    let cfg = local_config(args)?;
    let secret = ClusterSecret::read(&cfg.cluster.secret_file)?;
    println!("{}", secret.join_token(&cfg.node.cluster_name));
    Ok(())
}

/// `wormfs discover [--wait SECS]`: WebDAV faces advertised over mDNS.
pub(super) async fn discover(wait: f64, json: bool) -> anyhow::Result<()> {
    if !(0.0..=600.0).contains(&wait) {
        bail!(CliError::usage(format!(
            "--wait: expected 0 to 600 seconds, got {wait}"
        )));
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

/// `wormfs config example|check`.
pub(super) fn config(cmd: ConfigCmd) -> anyhow::Result<()> {
    match cmd {
        ConfigCmd::Example => print!("{}", wormfs_config::example()),
        ConfigCmd::Check { file } => {
            let cfg = wormfs_config::load(
                Some(&file),
                std::env::vars(),
                &wormfs_config::Overrides::default(),
            )
            .map_err(|e| CliError::usage(e.to_string()))?;
            println!("{}: OK", file.display());
            for line in cfg.summary().iter().skip(1) {
                println!("  {line}");
            }
        }
    }
    Ok(())
}

/// `wormfs webdav hash-password`.
pub(super) fn hash_password() -> anyhow::Result<()> {
    println!("{}", crate::webdav_face::hash_password_from_stdin()?);
    Ok(())
}
