//! The `wormfs` command line: the arguments, the one place every command is dispatched
//! ([`run`]), exit codes and errors. One module per group of commands:
//!
//! - `local`: commands on this machine, without a node: `init`, `join-token`, `recover`,
//!   `config`, `webdav hash-password`, `discover`, and `serve`'s arguments;
//! - `files`: a file's bytes: `put`, `get`, `append`;
//! - `namespace`: `ls`, `stat`, `rm`, `mkdir`, `mv`, `policy`;
//! - `cluster`: `cluster`, `status`, `disks`, `admin`, `node remove`;
//! - `ingest`: the drop folders' status;
//! - `healing`: `health`, `repair`, `scrub`, `disk impact`;
//! - `client`: the API client they share (token, requests, errors to exit codes, output).
//!
//! `serve` itself, and the part of `recover` that opens the node's data folder, need the
//! node's composition root (`node.rs`), which only the binary reaches: it supplies them as a
//! [`NodeHost`].

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use wormfs_parts::ids::{ClusterId, NodeId};

mod accounts;
mod client;
mod cluster;
mod events;
mod files;
mod healing;
mod ingest;
mod local;
mod namespace;
mod notify;
mod trash;

pub use cluster::{AdminCmd, NodeCmd};
pub use healing::{DiskCmd, RepairCmd, ScrubArgs, ScrubCmd};
pub use local::{ConfigCmd, ServeArgs, WebdavCmd};
pub use namespace::PolicyCmd;
pub use trash::TrashCmd;

use client::Client;

/// Exit codes (documented in docs/cli.md).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Any other failure.
    pub const FAILURE: i32 = 1;
    /// Bad usage or a bad request.
    pub const USAGE: i32 = 2;
    /// No such file or directory.
    pub const NOT_FOUND: i32 = 3;
    /// Exists or conflicts.
    pub const CONFLICT: i32 = 4;
    /// The node cannot serve it now (no quorum, not enough disks, unreadable).
    pub const UNAVAILABLE: i32 = 5;
    /// Wrong or missing token.
    pub const AUTH: i32 = 6;
}

/// A failed command, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// Exit code.
    pub code: i32,
    /// Message.
    pub message: String,
}

impl CliError {
    /// A failure with exit code `code`.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }

    /// Bad usage or a bad request (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }
}

/// The exit code for an error: its [`CliError`]'s, else [`exit::FAILURE`].
pub fn exit_code(e: &anyhow::Error) -> i32 {
    e.downcast_ref::<CliError>()
        .map_or(exit::FAILURE, |c| c.code)
}

/// The node the CLI talks to when neither `--node` nor `WORMFS_NODE` says.
pub const DEFAULT_NODE: &str = "http://127.0.0.1:7710";

/// WormFS: a write-once storage cluster for home media.
#[derive(Parser, Debug)]
#[command(name = "wormfs", version, about)]
pub struct Cli {
    /// The node to talk to.
    #[arg(
        long,
        global = true,
        env = "WORMFS_NODE",
        default_value = DEFAULT_NODE
    )]
    pub node: String,
    /// API token (default: read from DATA_DIR/admin-token).
    #[arg(long, global = true, env = "WORMFS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run a node.
    Serve(ServeArgs),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// WebDAV helpers.
    #[command(subcommand)]
    Webdav(WebdavCmd),
    /// Make this machine's cluster secret (DATA_DIR/cluster-secret by default), or take the
    /// one a member printed with `wormfs join-token`.
    Init {
        /// A join token from `wormfs join-token` on a member of the cluster to join.
        #[arg(
            long,
            value_name = "TOKEN",
            env = "WORMFS_JOIN_TOKEN",
            hide_env_values = true
        )]
        join: Option<String>,
        /// Config and data folder, as for `serve`.
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Print what another machine needs to join this cluster (its name and secret: keep it
    /// private).
    JoinToken {
        /// Config and data folder, as for `serve`.
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Last resort when most voters are gone for good: make this (stopped) machine the only
    /// voter of its cluster. See docs/cluster.md before using it.
    Recover {
        /// Confirms that the other voters will never come back with their old data.
        #[arg(long, conflicts_with = "from_disks")]
        force: bool,
        /// Rebuild this (stopped) node's lost metadata from its disks: the newest metadata
        /// backup on them, completed from every part header. Writes DATA_DIR/meta and a
        /// report; never changes a part. See docs/operations.md, "When things go wrong".
        #[arg(long)]
        from_disks: bool,
        /// Only scan this machine's disks and write what they hold to FILE, for a recovery
        /// run on another machine of the cluster (`--scan FILE` there).
        #[arg(long, value_name = "FILE", requires = "from_disks")]
        scan_out: Option<PathBuf>,
        /// Another machine's scan, from `--scan-out` (repeatable).
        #[arg(long = "scan", value_name = "FILE", requires = "from_disks")]
        scans: Vec<PathBuf>,
        /// A metadata backup file to consider too (repeatable), e.g. copied from another
        /// machine's disk.
        #[arg(long = "backup", value_name = "FILE", requires = "from_disks")]
        backups: Vec<PathBuf>,
        /// Print the report; write nothing.
        #[arg(long, requires = "from_disks")]
        dry_run: bool,
        /// Config and data folder, as for `serve`.
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// The cluster: members, roles, leader, term, each member's lag.
    Cluster,
    /// List WormFS WebDAV faces advertised on the LAN over mDNS.
    Discover {
        /// How long to listen for answers, in seconds.
        #[arg(long, default_value_t = 3.0)]
        wait: f64,
    },
    /// Store a local file or folder tree at DEST.
    Put {
        /// Local file or folder.
        src: PathBuf,
        /// Destination path in WormFS.
        dest: String,
        /// Policy (ec:K+M, copies:N); default: the directory's.
        #[arg(long)]
        policy: Option<String>,
        /// If DEST exists: rename, replace, skip or fail.
        #[arg(long, default_value = "fail")]
        conflict: String,
        /// Remove WebDAV locks in the way (and go ahead) instead of failing with "locked".
        #[arg(long)]
        break_locks: bool,
        /// For a folder: files up to 4 MiB sent at once (larger ones go one at a time).
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=64))]
        jobs: u16,
    },
    /// Read a file (to a local path, or - for stdout).
    Get {
        /// Path in WormFS.
        src: String,
        /// Local destination, or -.
        dest: PathBuf,
        /// A byte range START-END (inclusive) or START-.
        #[arg(long)]
        range: Option<String>,
    },
    /// Append a local file to a file in WormFS.
    Append {
        /// Local file.
        src: PathBuf,
        /// Path in WormFS.
        dest: String,
        /// Remove WebDAV locks in the way (and go ahead) instead of failing with "locked".
        #[arg(long)]
        break_locks: bool,
    },
    /// List a directory.
    Ls {
        /// Directory.
        #[arg(default_value = "/")]
        path: String,
    },
    /// Show a file's size, hash, policy, segments, parts and fault tolerance.
    Stat {
        /// Path.
        path: String,
    },
    /// Remove a file or directory.
    Rm {
        /// Path.
        path: String,
        /// Remove a directory and everything in it.
        #[arg(short, long)]
        recursive: bool,
        /// Remove WebDAV locks in the way (and go ahead) instead of failing with "locked".
        #[arg(long)]
        break_locks: bool,
    },
    /// Make a directory.
    Mkdir {
        /// Path.
        path: String,
        /// Make parents as needed; no error if it exists.
        #[arg(short, long)]
        parents: bool,
    },
    /// Move or rename.
    Mv {
        /// From.
        from: String,
        /// To.
        to: String,
        /// Remove WebDAV locks in the way (and go ahead) instead of failing with "locked".
        #[arg(long)]
        break_locks: bool,
    },
    /// Directory policies: storage (ec:K+M, copies:N) and retention (retain:30d).
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// The cluster's WebDAV users (every machine accepts them): add, remove, passwd, list.
    #[command(subcommand)]
    User(accounts::UserCmd),
    /// The cluster's API tokens (every machine accepts them): create, revoke, list.
    #[command(subcommand)]
    Token(accounts::TokenCmd),
    /// The trash: deleted and replaced files, kept `retention.trash_days`.
    #[command(subcommand)]
    Trash(TrashCmd),
    /// List disks.
    Disks,
    /// Show the node's status.
    Status,
    /// Show the drop folders' ingest status: queued, in progress, done, failed (with reasons).
    Ingest {
        /// Show progress bars until nothing is settling, queued or in progress.
        #[arg(long)]
        wait: bool,
    },
    /// Maintenance.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Machines of the cluster.
    #[command(subcommand)]
    Node(NodeCmd),
    /// What is at risk: segments by remaining tolerance, files that can survive no more
    /// failures, repair and scrub. Exit 0: all at full redundancy; 1: some below; 2: some
    /// file unreadable now.
    Health,
    /// Repair: status, pause, resume, now.
    #[command(subcommand)]
    Repair(RepairCmd),
    /// Scrub every part now on every node (`--deep`: parity re-encoded and compared, BLAKE3
    /// checked), or `scrub status`.
    Scrub(ScrubArgs),
    /// The life of a disk: add, drain, replace, remove; and what its loss would cost.
    #[command(subcommand)]
    Disk(DiskCmd),
    /// Move parts toward an even fill: every disk within 5% of the cluster's free fraction.
    Rebalance {
        /// Only say what would move.
        #[arg(long)]
        dry_run: bool,
    },
    /// What happened: disks down, out and back, corruption found and repaired, machines
    /// joining and leaving, leader changes, backups (oldest first; the cluster keeps 10,000).
    Events {
        /// How many of the newest to show.
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: u32,
        /// Keep printing new events as they come (Ctrl-C stops).
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// What needs attention now (the conditions the alerts send), and the last deliveries;
    /// `alerts test` sends a test message to every webhook.
    Alerts {
        #[command(subcommand)]
        /// What to do (nothing: list the conditions).
        what: Option<AlertsCmd>,
    },
    /// The media servers told about changes (`[[media_servers]]`): `notify test` sends one
    /// harmless request to each and says what it answered (exit 1 if any failed).
    #[command(subcommand)]
    Notify(NotifyCmd),
    /// Mount the cluster's tree (or a folder of it) read-only with FUSE, for media servers
    /// (docs/mount.md). Runs until SIGTERM, Ctrl-C or `fusermount -u MOUNTPOINT`.
    Mount {
        /// An empty folder to mount on.
        mountpoint: PathBuf,
        /// The WormFS folder shown at the mount point.
        #[arg(long, default_value = "/")]
        root: String,
        /// Seconds the kernel may cache names and attributes (changes reach the mount within
        /// a second or two anyway, through the node's change feed).
        #[arg(long, default_value_t = 3600)]
        cache_ttl: u64,
        /// Seconds any call to the node may take before the operation fails with EIO.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Let other users read the mount (a media server running as its own user); as a
        /// user other than root it needs `user_allow_other` in /etc/fuse.conf.
        #[arg(long)]
        allow_other: bool,
        /// The kernel's read-ahead for the mount in KiB (needs root; 0 leaves it).
        #[arg(long, default_value_t = 4096)]
        read_ahead_kb: u32,
    },
    /// Exit 0 when the node is healthy, 1 when degraded (an alert condition holds), 2 when
    /// down (no leader, or not answering). Needs no token: for container health checks.
    Healthcheck {
        /// Give up after this many seconds (counted as down).
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// For a container's HEALTHCHECK (Docker reserves exit 2): exit 0 when healthy or
        /// degraded (the node works; an alert says what needs a hand), 1 when down.
        #[arg(long)]
        container: bool,
    },
}

/// `wormfs alerts ...`.
#[derive(Debug, Subcommand)]
pub enum AlertsCmd {
    /// Sends a test message to every webhook of that machine now.
    Test,
}

/// `wormfs notify ...`.
#[derive(Debug, Subcommand)]
pub enum NotifyCmd {
    /// Sends one harmless request to every media server of that machine (Jellyfin:
    /// `GET /System/Info`; Plex: `GET /library/sections`) and prints what each answered.
    Test,
}

/// What only the binary can do, because it needs the node's composition root (`node.rs`,
/// which nothing in the library reaches): run a node, and open a stopped node's data folder.
pub trait NodeHost {
    /// `wormfs serve`: runs a node until SIGTERM.
    fn serve(&self, args: ServeArgs) -> impl Future<Output = anyhow::Result<()>>;

    /// Locks `data_dir` for this process (refused while a node runs on it) and reads the node
    /// id recorded there; the lock holds until the file is dropped.
    fn lock_node(&self, data_dir: &Path) -> anyhow::Result<(std::fs::File, NodeId)>;

    /// Makes `data_dir` (0700) if needed and locks it for this process (refused while a node
    /// runs on it).
    fn lock_data_dir(&self, data_dir: &Path) -> anyhow::Result<std::fs::File>;

    /// The node and cluster ids in `data_dir`'s `node.json`, if it has one.
    fn identity(&self, data_dir: &Path) -> anyhow::Result<Option<(NodeId, ClusterId)>>;

    /// Writes `data_dir`'s `node.json` (recovery into a data folder that lost it).
    fn write_identity(
        &self,
        data_dir: &Path,
        node_id: NodeId,
        cluster_id: ClusterId,
    ) -> anyhow::Result<()>;

    /// The disk roots a node with `cfg` uses.
    fn disk_roots(&self, cfg: &wormfs_config::Config) -> Vec<PathBuf>;
}

/// Runs a command: every command of the CLI is dispatched here.
pub async fn run(cli: Cli, host: &impl NodeHost) -> anyhow::Result<()> {
    let Cli {
        node,
        token,
        json,
        cmd,
    } = cli;
    // Client commands find the token first, before looking at their own arguments.
    let client = || Client::new(&node, token.clone(), json);
    match cmd {
        // On this machine, without a node.
        Cmd::Serve(args) => host.serve(args).await?,
        Cmd::Init { join, serve } => local::init(&serve, join.as_deref())?,
        Cmd::JoinToken { serve } => local::join_token(&serve)?,
        Cmd::Recover {
            from_disks: true,
            scan_out,
            scans,
            backups,
            dry_run,
            serve,
            ..
        } => {
            let r = local::FromDisks {
                scan_out,
                scans,
                backups,
                dry_run,
                json,
            };
            local::recover_from_disks(host, &serve, r).await?
        }
        Cmd::Recover { force, serve, .. } => local::recover(host, &serve, force).await?,
        Cmd::Admin(AdminCmd::Unlock { path, serve }) => trash::unlock(host, &serve, &path).await?,
        Cmd::Config(c) => local::config(c)?,
        Cmd::Webdav(WebdavCmd::HashPassword) => local::hash_password()?,
        Cmd::Discover { wait } => local::discover(wait, json).await?,
        // Clients of a node's API.
        Cmd::Put {
            src,
            dest,
            policy,
            conflict,
            break_locks,
            jobs,
        } => {
            let put = files::Put {
                policy: policy.as_deref(),
                conflict: &conflict,
                break_locks,
                jobs: usize::from(jobs),
            };
            files::put(&client()?, &src, &dest, &put).await?
        }
        Cmd::Get { src, dest, range } => {
            files::get(&client()?, &src, &dest, range.as_deref()).await?
        }
        Cmd::Append {
            src,
            dest,
            break_locks,
        } => files::append(&client()?, &src, &dest, break_locks).await?,
        Cmd::Mount {
            mountpoint,
            root,
            cache_ttl,
            timeout,
            allow_other,
            read_ahead_kb,
        } => {
            let c = client()?;
            let args = crate::mount::MountArgs {
                base: c.base.clone(),
                token: c.token().to_owned(),
                mountpoint,
                root,
                cache_ttl: Duration::from_secs(cache_ttl),
                timeout: Duration::from_secs(timeout.max(1)),
                allow_other,
                read_ahead_kb,
            };
            crate::mount::run(args).await.map_err(|e| {
                let code = match e.downcast_ref::<crate::mount::MountError>() {
                    Some(crate::mount::MountError::Usage(_)) => exit::USAGE,
                    Some(crate::mount::MountError::Refused(_)) => exit::AUTH,
                    Some(crate::mount::MountError::Unavailable(_)) => exit::UNAVAILABLE,
                    None => exit::FAILURE,
                };
                CliError::new(code, format!("{e:#}"))
            })?
        }
        Cmd::Ls { path } => namespace::ls(&client()?, &path).await?,
        Cmd::Stat { path } => namespace::stat(&client()?, &path).await?,
        Cmd::Rm {
            path,
            recursive,
            break_locks,
        } => namespace::rm(&client()?, &path, recursive, break_locks).await?,
        Cmd::Mkdir { path, parents } => namespace::mkdir(&client()?, &path, parents).await?,
        Cmd::Mv {
            from,
            to,
            break_locks,
        } => namespace::mv(&client()?, from, to, break_locks).await?,
        Cmd::Policy(p) => namespace::policy(&client()?, p).await?,
        Cmd::Trash(t) => trash::trash(&client()?, t).await?,
        Cmd::User(u) => accounts::user(&client()?, u).await?,
        Cmd::Token(t) => accounts::token(&client()?, t).await?,
        Cmd::Cluster => cluster::cluster(&client()?).await?,
        Cmd::Status => cluster::status(&client()?).await?,
        Cmd::Disks => cluster::disks(&client()?).await?,
        Cmd::Admin(a) => cluster::admin(&client()?, a).await?,
        Cmd::Node(n) => cluster::node(&client()?, n).await?,
        Cmd::Ingest { wait } => ingest::ingest(&client()?, wait).await?,
        Cmd::Health => healing::health(&client()?).await?,
        Cmd::Repair(r) => healing::repair(&client()?, r).await?,
        Cmd::Scrub(s) => healing::scrub(&client()?, s).await?,
        Cmd::Disk(d) => healing::disk(&client()?, d).await?,
        Cmd::Rebalance { dry_run } => healing::rebalance(&client()?, dry_run).await?,
        Cmd::Events { limit, follow } => events::events(&client()?, limit, follow).await?,
        Cmd::Alerts { what: None } => events::alerts(&client()?).await?,
        Cmd::Alerts {
            what: Some(AlertsCmd::Test),
        } => events::alerts_test(&client()?).await?,
        Cmd::Notify(NotifyCmd::Test) => notify::test(&client()?).await?,
        Cmd::Healthcheck { timeout, container } => {
            events::healthcheck(&node, json, timeout, container).await?
        }
    }
    std::io::stdout().flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        // A subcommand argument named like a global one is a run-time panic in clap: parse
        // the commands that have their own ids.
        for args in [
            vec!["wormfs", "disk", "impact", "--machine", "3"],
            vec!["wormfs", "disk", "impact", "x"],
            vec!["wormfs", "disk", "remove", "x", "--force"],
            vec!["wormfs", "repair", "now", "/a"],
            vec!["wormfs", "scrub", "now", "--deep"],
            vec!["wormfs", "scrub", "--deep"],
            vec!["wormfs", "scrub"],
            vec!["wormfs", "scrub", "status"],
            vec!["wormfs", "health"],
            vec!["wormfs", "events", "-n", "5", "--follow"],
            vec!["wormfs", "alerts"],
            vec!["wormfs", "alerts", "test"],
            vec!["wormfs", "healthcheck", "--timeout", "3"],
            vec!["wormfs", "trash", "ls", "/a"],
            vec!["wormfs", "trash", "restore", "/a", "--to", "/b"],
            vec!["wormfs", "trash", "restore", "--id", "3"],
            vec!["wormfs", "trash", "empty", "--older-than", "2.5"],
            vec!["wormfs", "admin", "unlock", "--config", "c.toml", "/a"],
            vec!["wormfs", "admin", "unlock", "--data-dir", "d", "/a"],
            vec!["wormfs", "policy", "set", "/a", "retain:30d"],
            vec!["wormfs", "user", "add", "ann", "--role", "ro", "--generate"],
            vec!["wormfs", "user", "passwd", "ann", "--role", "admin"],
            vec!["wormfs", "token", "create", "backup", "--read-only"],
        ] {
            Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
}
