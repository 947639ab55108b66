//! The `wormfs` command line: `serve`, and client commands that talk to a node's API.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

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

/// WormFS: a write-once storage cluster for home media.
#[derive(Parser, Debug)]
#[command(name = "wormfs", version, about)]
pub struct Cli {
    /// The node to talk to.
    #[arg(
        long,
        global = true,
        env = "WORMFS_NODE",
        default_value = "http://127.0.0.1:7710"
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

fn print_cluster(v: &Value) {
    let opt = |x: &Value| {
        if x.is_null() {
            "-".to_owned()
        } else {
            x.to_string().trim_matches('"').to_owned()
        }
    };
    println!(
        "cluster:  {} ({})",
        v["cluster_name"].as_str().unwrap_or(""),
        opt(&v["cluster_id"])
    );
    println!(
        "this node: {}   term {}   leader {}   applied {}",
        v["node_id"],
        v["term"],
        opt(&v["leader"]),
        opt(&v["last_applied"])
    );
    if let Some(f) = v["formation"]["state"].as_str() {
        if f == "blocked" {
            println!("BLOCKED:  {}", opt(&v["formation"]["detail"]));
        }
    }
    println!(
        "{:<20} {:<16} {:<8} {:<7} {:<9} {:>6} {:>8}  {:<21}  peer address",
        "node", "name", "role", "leader", "connected", "lag", "contact", "data"
    );
    for m in v["members"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<16} {:<8} {:<7} {:<9} {:>6} {:>8}  {:<21}  {}",
            m["node_id"],
            opt(&m["name"]),
            m["role"].as_str().unwrap_or(""),
            if m["leader"].as_bool() == Some(true) {
                "yes"
            } else {
                ""
            },
            if m["connected"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            opt(&m["lag"]),
            m["last_contact_ms"]
                .as_u64()
                .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            opt(&m["data_addr"]),
            m["addr"].as_str().unwrap_or("")
        );
    }
}

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
        #[arg(long)]
        force: bool,
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
    /// Directory policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
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
}

/// `wormfs node ...`
#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Remove a dead machine from the cluster (its parts then count as lost).
    Remove {
        /// Its node id (see `wormfs cluster`).
        id: u64,
        /// Remove it even though it was heard from in the last few seconds.
        #[arg(long)]
        force: bool,
    },
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

/// `wormfs policy ...`
#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Show a directory's policy.
    Get {
        /// Directory.
        #[arg(default_value = "/")]
        dir: String,
    },
    /// Set a directory's policy (ec:K+M, copies:N, or inherit).
    Set {
        /// Directory.
        dir: String,
        /// The policy.
        policy: String,
    },
}

/// `wormfs admin ...`
#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Build a metadata snapshot and purge the Raft log up to it.
    Snapshot,
    /// Remove orphan parts now.
    Sweep,
}

/// A failed API call, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// Exit code.
    pub code: i32,
    /// Message.
    pub message: String,
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    json: bool,
}

/// Checks `get --range`: `START-END` (inclusive), `START-` or `-N` (the last N bytes), in
/// digits; anything else (several ranges, signs, spaces, START after END) is a usage error
/// rather than a request the node might answer with the whole file.
fn check_range(r: &str) -> anyhow::Result<&str> {
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let ok = match r.split_once('-') {
        Some(("", n)) => num(n).is_some_and(|n| n > 0),
        Some((a, "")) => num(a).is_some(),
        Some((a, b)) => matches!((num(a), num(b)), (Some(a), Some(b)) if a <= b),
        None => false,
    };
    if !ok {
        bail!(CliError {
            code: exit::USAGE,
            message: format!(
                "--range {r:?}: expected one range, START-END (inclusive, START <= END), \
                 START- or -COUNT, in bytes; several ranges are not supported"
            )
        });
    }
    Ok(r)
}

/// The process's umask (set and put back at once: nothing else creates files meanwhile).
fn umask() -> u32 {
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    rustix::process::umask(old);
    old.bits()
}

/// Creates the temporary file for `dest` in `dest`'s folder: a random name, opened with
/// `O_CREAT|O_EXCL|O_NOFOLLOW` and mode 0600, so nothing planted under any name (a symbolic
/// link, a file) is ever followed or reused.
async fn create_temp_beside(dest: &Path) -> anyhow::Result<(PathBuf, tokio::fs::File)> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for _ in 0..16 {
        let tmp = dest.with_file_name(format!(
            ".{name}.{:016x}.wormfs-part",
            rand::random::<u64>()
        ));
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC;
        match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(flags.bits() as i32)
            .open(&tmp)
            .await
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("create {}", tmp.display())),
        }
    }
    bail!("cannot make a temporary file beside {}", dest.display())
}

/// Writes a read's body to `out`; the bytes written, or why the read fell short.
async fn download(
    resp: reqwest::Response,
    file: Box<dyn tokio::io::AsyncWrite + Unpin>,
    pb: &ProgressBar,
    src: &str,
    len: u64,
) -> anyhow::Result<u64> {
    let mut out = tokio::io::BufWriter::with_capacity(4 << 20, file);
    let mut got = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| CliError {
            code: exit::UNAVAILABLE,
            message: format!(
                "read of {src} failed after {got} bytes: the node cut the transfer short ({e}); \
                 a part of the file may be unreadable there: its log says which"
            ),
        })?;
        out.write_all(&chunk).await?;
        got += chunk.len() as u64;
        pb.inc(chunk.len() as u64);
    }
    out.flush().await?;
    if got != len {
        bail!(CliError {
            code: exit::UNAVAILABLE,
            message: format!("read of {src} ended after {got} of {len} bytes")
        });
    }
    Ok(got)
}

/// Percent-encodes a WormFS path for a URL (keeps `/`).
fn enc(path: &str) -> anyhow::Result<String> {
    // Checked here too: a URL library would quietly resolve "a/../b" to "b".
    wormfs_parts::tree_path::TreePath::parse(path).map_err(|e| CliError {
        code: exit::USAGE,
        message: e.to_string(),
    })?;
    let p = path.trim_start_matches('/');
    let mut out = String::new();
    for b in p.bytes() {
        match b {
            // '.' is encoded too, so no URL normalisation can turn "a/../b" into "b": the node refuses it.
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    Ok(out)
}

fn bar(len: u64, msg: String) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    b.set_message(msg);
    b
}

impl Client {
    async fn check(&self, r: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let msg = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or(status.as_str())
            .to_owned();
        let code = match status.as_u16() {
            400 | 416 => exit::USAGE,
            401 | 403 => exit::AUTH,
            404 => exit::NOT_FOUND,
            // 423: a WebDAV lock is in the way (the message names it and --break-locks).
            409 | 423 => exit::CONFLICT,
            503 | 507 => exit::UNAVAILABLE,
            _ => exit::FAILURE,
        };
        Err(CliError { code, message: msg }.into())
    }

    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        // "/api/v1/list/" (the root) is "/api/v1/list"; a query may follow.
        let path = match path.split_once('?') {
            Some((p, q)) => format!("{}?{q}", p.trim_end_matches('/')),
            None => path.trim_end_matches('/').to_owned(),
        };
        self.http
            .request(m, format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
    }

    async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .req(reqwest::Method::GET, path)
            .send()
            .await
            .with_context(|| format!("connect to {}", self.base))?;
        Ok(self.check(r).await?.json().await?)
    }

    async fn put_file(
        &self,
        src: &Path,
        dest: &str,
        policy: Option<&str>,
        conflict: &str,
        break_locks: bool,
    ) -> anyhow::Result<Value> {
        let f = tokio::fs::File::open(src)
            .await
            .with_context(|| format!("open {}", src.display()))?;
        let len = f.metadata().await?.len();
        let pb = if self.json {
            ProgressBar::hidden()
        } else {
            bar(len, dest.to_owned())
        };
        let pb2 = pb.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(f, 1 << 20).inspect(move |c| {
            if let Ok(c) = c {
                pb2.inc(c.len() as u64);
            }
        });
        let mut url = format!(
            "/api/v1/files/{}?conflict={conflict}&break_locks={break_locks}",
            enc(dest)?
        );
        if let Some(p) = policy {
            // '+' would arrive as a space in a query string.
            url.push_str(&format!("&policy={}", p.replace('+', "%2B")));
        }
        let r = self
            .req(reqwest::Method::PUT, &url)
            .header("x-wormfs-size", len)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .with_context(|| format!("upload to {}", self.base))?;
        let r = self.check(r).await;
        pb.finish_and_clear();
        Ok(r?.json().await?)
    }
}

fn walk_files(root: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(root).with_context(|| format!("read {}", root.display()))? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            walk_files(&e.path(), out)?;
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// Says on standard error which WebDAV locks a write broke (`--break-locks`).
fn report_broken(c: &Client, v: &Value) {
    let Some(locks) = v["broken_locks"].as_array() else {
        return;
    };
    if c.json {
        return;
    }
    for l in locks {
        eprintln!(
            "broke the WebDAV lock on {} held by {}",
            l["path"].as_str().unwrap_or("?"),
            l["principal"].as_str().unwrap_or("an anonymous client")
        );
    }
}

/// For a change answered without a body (204), or with the locks it broke (200).
async fn report_broken_body(c: &Client, r: reqwest::Response) {
    if r.status() == reqwest::StatusCode::NO_CONTENT {
        return;
    }
    if let Ok(v) = r.json::<Value>().await {
        if c.json {
            print_json(&v);
        } else {
            report_broken(c, &v);
        }
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Finds the token: the flag or env, else `DATA_DIR/admin-token`.
fn find_token(flag: Option<String>) -> anyhow::Result<String> {
    if let Some(t) = flag {
        return Ok(t);
    }
    let dir = std::env::var_os("WORMFS_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("wormfs-data"));
    crate::admin_token::read_token(&dir).map_err(|e| {
        CliError {
            code: exit::AUTH,
            message: format!("no API token: {e:#} (give --token, WORMFS_TOKEN or WORMFS_DATA_DIR)"),
        }
        .into()
    })
}

/// Runs a client command.
pub async fn run_client(cli: Cli) -> anyhow::Result<()> {
    let c = Client {
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?,
        base: cli.node.trim_end_matches('/').to_owned(),
        token: find_token(cli.token)?,
        json: cli.json,
    };
    match cli.cmd {
        Cmd::Serve(_)
        | Cmd::Config(_)
        | Cmd::Webdav(_)
        | Cmd::Discover { .. }
        | Cmd::Init { .. }
        | Cmd::JoinToken { .. }
        | Cmd::Recover { .. } => {
            unreachable!("handled in main")
        }
        Cmd::Put {
            src,
            dest,
            policy,
            conflict,
            break_locks,
        } => {
            let meta =
                std::fs::metadata(&src).with_context(|| format!("read {}", src.display()))?;
            let mut results = Vec::new();
            if meta.is_dir() {
                let mut files = Vec::new();
                walk_files(&src, &mut files)?;
                files.sort();
                for f in files {
                    let rel = f.strip_prefix(&src)?.to_string_lossy().into_owned();
                    let d = format!("{}/{}", dest.trim_end_matches('/'), rel);
                    let r = c
                        .put_file(&f, &d, policy.as_deref(), &conflict, break_locks)
                        .await?;
                    report_broken(&c, &r);
                    if !c.json {
                        println!(
                            "{} -> {} ({})",
                            f.display(),
                            r["path"].as_str().unwrap_or(&d),
                            human(r["size"].as_u64().unwrap_or(0))
                        );
                    }
                    results.push(r);
                }
            } else {
                let r = c
                    .put_file(&src, &dest, policy.as_deref(), &conflict, break_locks)
                    .await?;
                report_broken(&c, &r);
                if !c.json {
                    println!(
                        "{} -> {} ({}, {}, blake3 {})",
                        src.display(),
                        r["path"].as_str().unwrap_or(&dest),
                        human(r["size"].as_u64().unwrap_or(0)),
                        r["policy"].as_str().unwrap_or(""),
                        r["blake3"].as_str().unwrap_or("")
                    );
                    if r["missing_parts"].as_u64().unwrap_or(0) > 0 {
                        println!(
                            "warning: {} part(s) could not be written and wait for repair",
                            r["missing_parts"]
                        );
                    }
                }
                results.push(r);
            }
            if c.json {
                print_json(&Value::Array(results));
            }
        }
        Cmd::Append {
            src,
            dest,
            break_locks,
        } => {
            let f = tokio::fs::File::open(&src)
                .await
                .with_context(|| format!("open {}", src.display()))?;
            let r = c
                .req(
                    reqwest::Method::POST,
                    &format!("/api/v1/append/{}?break_locks={break_locks}", enc(&dest)?),
                )
                .body(reqwest::Body::wrap_stream(
                    tokio_util::io::ReaderStream::with_capacity(f, 1 << 20),
                ))
                .send()
                .await?;
            let v: Value = c.check(r).await?.json().await?;
            report_broken(&c, &v);
            if c.json {
                print_json(&v);
            } else {
                println!("{} now {}", dest, human(v["size"].as_u64().unwrap_or(0)));
            }
        }
        Cmd::Get { src, dest, range } => {
            let mut rq = c.req(
                reqwest::Method::GET,
                &format!("/api/v1/files/{}", enc(&src)?),
            );
            if let Some(r) = &range {
                rq = rq.header("range", format!("bytes={}", check_range(r)?));
            }
            let to_stdout = dest.as_os_str() == "-";
            // A regular file is written under a temporary name and renamed when complete; an
            // existing device or pipe (/dev/null, a FIFO, /dev/stdout) is written directly,
            // never replaced. A symbolic link to a regular file is replaced by the file (its
            // target is never written); one to a device or pipe is written through.
            let existing = if to_stdout {
                None
            } else {
                std::fs::metadata(&dest).ok()
            };
            if existing.as_ref().is_some_and(|m| m.is_dir()) {
                bail!(CliError {
                    code: exit::USAGE,
                    message: format!(
                        "{} is a folder: name the file to write, such as {}",
                        dest.display(),
                        dest.join(src.rsplit('/').next().unwrap_or("file"))
                            .display()
                    )
                });
            }
            let special = existing.is_some_and(|m| !m.is_file());
            let resp = c
                .check(
                    rq.send()
                        .await
                        .with_context(|| format!("connect to {}", c.base))?,
                )
                .await?;
            if range.is_some() && resp.status() != reqwest::StatusCode::PARTIAL_CONTENT {
                bail!(CliError {
                    code: exit::FAILURE,
                    message: format!(
                        "the node answered {} without the range; nothing written",
                        resp.status()
                    )
                });
            }
            let len = resp.content_length().unwrap_or(0);
            let pb = if c.json || to_stdout {
                ProgressBar::hidden()
            } else {
                bar(len, src.clone())
            };
            let (file, tmp): (Box<dyn tokio::io::AsyncWrite + Unpin>, _) = if to_stdout {
                (Box::new(tokio::io::stdout()), None)
            } else if special {
                let f = tokio::fs::OpenOptions::new()
                    .write(true)
                    .open(&dest)
                    .await
                    .with_context(|| format!("open {}", dest.display()))?;
                // Swapped for a regular file since it was looked at: never written through.
                if f.metadata().await.is_ok_and(|m| m.is_file()) {
                    bail!(
                        "{} changed while it was opened; nothing written",
                        dest.display()
                    );
                }
                (Box::new(f), None)
            } else {
                let (path, f) = create_temp_beside(&dest).await?;
                let keep = f
                    .try_clone()
                    .await
                    .with_context(|| format!("open {}", path.display()))?;
                (Box::new(f), Some((path, keep)))
            };
            let res = download(resp, file, &pb, &src, len).await;
            pb.finish_and_clear();
            let res = match (&tmp, res) {
                (Some((path, keep)), Ok(got)) => {
                    // The mode a downloaded file has (0666 less the umask), then the name.
                    use std::os::unix::fs::PermissionsExt;
                    let mode = 0o666 & !umask();
                    let named = async {
                        keep.set_permissions(std::fs::Permissions::from_mode(mode))
                            .await
                            .with_context(|| format!("chmod {}", path.display()))?;
                        tokio::fs::rename(path, &dest)
                            .await
                            .with_context(|| format!("rename to {}", dest.display()))
                    };
                    named.await.map(|()| got)
                }
                (_, res) => res,
            };
            let got = match res {
                Ok(got) => got,
                Err(e) => {
                    if let Some((path, _)) = &tmp {
                        let _ = tokio::fs::remove_file(path).await;
                    }
                    return Err(e);
                }
            };
            if c.json && !to_stdout {
                print_json(&serde_json::json!({"path": src, "dest": dest, "bytes": got}));
            }
        }
        Cmd::Ls { path } => {
            let v = c.get_json(&format!("/api/v1/list/{}", enc(&path)?)).await?;
            if c.json {
                print_json(&v);
            } else {
                for e in v["entries"].as_array().into_iter().flatten() {
                    let dir = e["kind"] == "dir";
                    println!(
                        "{:>10}  {}{}",
                        if dir {
                            "-".into()
                        } else {
                            human(e["size"].as_u64().unwrap_or(0))
                        },
                        e["name"].as_str().unwrap_or(""),
                        if dir { "/" } else { "" }
                    );
                }
            }
        }
        Cmd::Stat { path } => {
            let v = c.get_json(&format!("/api/v1/stat/{}", enc(&path)?)).await?;
            if c.json {
                print_json(&v);
            } else if v["kind"] == "dir" {
                println!(
                    "{}: directory, policy {}",
                    v["path"].as_str().unwrap_or(""),
                    v["effective_policy"].as_str().unwrap_or("default")
                );
            } else {
                println!("path:     {}", v["path"].as_str().unwrap_or(""));
                println!(
                    "size:     {} ({} bytes)",
                    human(v["size"].as_u64().unwrap_or(0)),
                    v["size"]
                );
                println!("policy:   {}", v["policy"].as_str().unwrap_or(""));
                println!(
                    "blake3:   {}",
                    v["blake3"]
                        .as_str()
                        .unwrap_or("(not kept after an append; see segment hashes)")
                );
                println!("etag:     {}", v["etag"].as_str().unwrap_or(""));
                println!("file id:  {}", v["file_id"].as_str().unwrap_or(""));
                println!(
                    "survives: {}",
                    v["tolerance"]["summary"].as_str().unwrap_or("")
                );
                for s in v["segments"].as_array().into_iter().flatten() {
                    println!(
                        "segment {} @{} {} blake3 {}",
                        s["index"],
                        s["offset"],
                        human(s["size"].as_u64().unwrap_or(0)),
                        s["blake3"].as_str().unwrap_or("")
                    );
                    for p in s["parts"].as_array().into_iter().flatten() {
                        let machine = match (p["node_id"].as_u64(), p["node_name"].as_str()) {
                            (Some(id), Some(name)) => format!("node {id} ({name}) "),
                            (Some(id), None) => format!("node {id} "),
                            _ => String::new(),
                        };
                        println!(
                            "  part {:>2}: {machine}{}{}",
                            p["index"],
                            p["disk_path"].as_str().unwrap_or("(none)"),
                            if p["missing"] == true {
                                "  MISSING"
                            } else {
                                ""
                            }
                        );
                    }
                }
            }
        }
        Cmd::Rm {
            path,
            recursive,
            break_locks,
        } => {
            let r = c
                .req(
                    reqwest::Method::DELETE,
                    &format!(
                        "/api/v1/files/{}?recursive={recursive}&break_locks={break_locks}",
                        enc(&path)?
                    ),
                )
                .send()
                .await?;
            let r = c.check(r).await?;
            report_broken_body(&c, r).await;
        }
        Cmd::Mkdir { path, parents } => {
            let r = c
                .req(
                    reqwest::Method::POST,
                    &format!("/api/v1/mkdir/{}?parents={parents}", enc(&path)?),
                )
                .send()
                .await?;
            c.check(r).await?;
        }
        Cmd::Mv {
            from,
            to,
            break_locks,
        } => {
            let r = c
                .req(reqwest::Method::POST, "/api/v1/mv")
                .json(&serde_json::json!({"from": from, "to": to, "break_locks": break_locks}))
                .send()
                .await?;
            let r = c.check(r).await?;
            report_broken_body(&c, r).await;
        }
        Cmd::Policy(PolicyCmd::Get { dir }) => {
            let v = c
                .get_json(&format!("/api/v1/policy/{}", enc(&dir)?))
                .await?;
            if c.json {
                print_json(&v);
            } else {
                println!(
                    "{}: {}{} (files under {} bytes: {})",
                    v["path"].as_str().unwrap_or(""),
                    v["effective"].as_str().unwrap_or(""),
                    if v["inherited"] == true {
                        " (inherited)"
                    } else {
                        ""
                    },
                    v["small_file_threshold_bytes"],
                    v["small_files"].as_str().unwrap_or("")
                );
            }
        }
        Cmd::Policy(PolicyCmd::Set { dir, policy }) => {
            let p = if policy == "inherit" {
                Value::Null
            } else {
                Value::String(policy)
            };
            let r = c
                .req(
                    reqwest::Method::PUT,
                    &format!("/api/v1/policy/{}", enc(&dir)?),
                )
                .json(&serde_json::json!({"policy": p}))
                .send()
                .await?;
            c.check(r).await?;
        }
        Cmd::Disks => {
            let v = c.get_json("/api/v1/disks").await?;
            if c.json {
                print_json(&v);
            } else {
                println!(
                    "{:<36}  {:<8} {:>10} {:>10} {:>7}  {:<8} PATH",
                    "ID", "FS", "CAPACITY", "USED", "PARTS", "STATE"
                );
                for d in v["disks"].as_array().into_iter().flatten() {
                    let total = d["space"]["total_bytes"].as_u64().unwrap_or(0);
                    let free = d["space"]["free_bytes"].as_u64().unwrap_or(0);
                    println!(
                        "{:<36}  {:<8x} {:>10} {:>10} {:>7}  {:<8} {}{}",
                        d["disk_id"].as_str().unwrap_or(""),
                        d["filesystem"].as_u64().unwrap_or(0),
                        human(total),
                        human(total.saturating_sub(free)),
                        d["parts"].as_u64().unwrap_or(0),
                        d["state"].as_str().unwrap_or(""),
                        d["path"].as_str().unwrap_or(""),
                        d["reason"]
                            .as_str()
                            .filter(|r| !r.is_empty())
                            .map(|r| format!("  ({r})"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        Cmd::Ingest { wait } => ingest_status(&c, wait).await?,
        Cmd::Cluster => {
            let v = c.get_json("/api/v1/cluster").await?;
            if c.json {
                print_json(&v);
            } else {
                print_cluster(&v);
            }
        }
        Cmd::Status => {
            let v = c.get_json("/api/v1/status").await?;
            if c.json {
                print_json(&v);
            } else {
                println!(
                    "cluster:  {}  node {}",
                    v["cluster_id"].as_str().unwrap_or(""),
                    v["node_id"]
                );
                println!("health:   {}", v["health"].as_str().unwrap_or(""));
                println!(
                    "files:    {} in {} directories, {}",
                    v["files"],
                    v["directories"],
                    human(v["logical_bytes"].as_u64().unwrap_or(0))
                );
                println!(
                    "disks:    {} ({} active), {} used",
                    v["disks"],
                    v["disks_active"],
                    human(v["disk_bytes_used"].as_u64().unwrap_or(0))
                );
                println!(
                    "missing parts: {}   ingests in progress: {}",
                    v["missing_parts"], v["ingests_in_progress"]
                );
                println!(
                    "raft:     term {} leader {} applied {}",
                    v["raft"]["term"], v["raft"]["leader"], v["raft"]["last_applied"]
                );
            }
        }
        Cmd::Admin(a) => {
            let path = match a {
                AdminCmd::Snapshot => "/api/v1/admin/snapshot",
                AdminCmd::Sweep => "/api/v1/admin/sweep",
            };
            let r = c.req(reqwest::Method::POST, path).send().await?;
            let v: Value = c.check(r).await?.json().await?;
            print_json(&v);
        }
        Cmd::Node(NodeCmd::Remove { id, force }) => {
            let path = format!("/api/v1/admin/nodes/{id}/remove?force={force}");
            let r = c.req(reqwest::Method::POST, &path).send().await?;
            let v: Value = c.check(r).await?.json().await?;
            if c.json {
                print_json(&v);
            } else {
                println!("node {id} removed from the cluster");
            }
        }
    }
    std::io::stdout().flush()?;
    Ok(())
}

fn print_ingest(v: &serde_json::Value) {
    for f in v["folders"].as_array().into_iter().flatten() {
        println!(
            "folder {} -> {}  ({}, after: {})",
            f["path"].as_str().unwrap_or(""),
            f["tree"].as_str().unwrap_or(""),
            f["watch"].as_str().unwrap_or(""),
            f["after"].as_str().unwrap_or("")
        );
    }
    println!(
        "settling {}  queued {}  in progress {}  done {}  failed {}",
        v["settling"], v["queued"], v["in_progress"], v["done"], v["failed"]
    );
    for it in v["items"].as_array().into_iter().flatten() {
        let state = it["state"].as_str().unwrap_or("");
        let size = it["size"].as_u64().unwrap_or(0);
        let extra = match state {
            "in_progress" => format!(
                " {}/{} {}/s",
                human(it["bytes_done"].as_u64().unwrap_or(0)),
                human(size),
                human(it["rate"].as_u64().unwrap_or(0))
            ),
            _ => format!(" {}", human(size)),
        };
        println!(
            "{:<11} {}{}{}{}",
            state,
            it["source"].as_str().unwrap_or(""),
            it["dest"]
                .as_str()
                .filter(|d| !d.is_empty())
                .map(|d| format!(" -> {d}"))
                .unwrap_or_default(),
            extra,
            it["note"]
                .as_str()
                .map(|n| format!("  ({n})"))
                .unwrap_or_default()
        );
    }
}

/// `wormfs ingest [--wait]`.
async fn ingest_status(c: &Client, wait: bool) -> anyhow::Result<()> {
    let mut v = c.get_json("/api/v1/ingest").await?;
    if wait {
        let multi = indicatif::MultiProgress::new();
        if c.json {
            multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let mut bars: std::collections::HashMap<String, ProgressBar> = Default::default();
        loop {
            let busy = ["settling", "queued", "in_progress"]
                .iter()
                .map(|k| v[*k].as_u64().unwrap_or(0))
                .sum::<u64>();
            for it in v["items"].as_array().into_iter().flatten() {
                let src = it["source"].as_str().unwrap_or("").to_owned();
                let state = it["state"].as_str().unwrap_or("");
                let b = bars.entry(src.clone()).or_insert_with(|| {
                    let name = std::path::Path::new(&src)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    multi.add(bar(it["size"].as_u64().unwrap_or(0), name))
                });
                match state {
                    "in_progress" => b.set_position(it["bytes_done"].as_u64().unwrap_or(0)),
                    "done" => {
                        b.finish_with_message(format!("{} done", it["dest"].as_str().unwrap_or("")))
                    }
                    "failed" => b.abandon_with_message(format!(
                        "failed: {}",
                        it["note"].as_str().unwrap_or("")
                    )),
                    _ => {}
                }
            }
            if busy == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            v = c.get_json("/api/v1/ingest").await?;
        }
        for b in bars.values() {
            if !b.is_finished() {
                b.finish();
            }
        }
        drop(multi);
    }
    if c.json {
        print_json(&v);
    } else {
        print_ingest(&v);
    }
    if wait && v["failed"].as_u64().unwrap_or(0) > 0 {
        bail!(CliError {
            code: exit::FAILURE,
            message: format!("{} drop-folder file(s) failed; see above", v["failed"]),
        });
    }
    Ok(())
}
