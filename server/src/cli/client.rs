//! The API client the commands share: the token, requests, error answers to exit codes, and
//! output helpers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{exit, CliError};
use crate::api::types::{BrokenLocks, ErrorBody, ErrorKind, LockInfo};

/// A node's API, with the token and the output mode.
pub(super) struct Client {
    http: reqwest::Client,
    /// The node's base URL.
    pub(super) base: String,
    token: String,
    /// Print JSON for scripts.
    pub(super) json: bool,
}

/// Finds the token: the flag or env; else `admin-token` in `WORMFS_DATA_DIR`; else in
/// `./wormfs-data` (the embedded default); else in the data folder of the config file a
/// service runs (`WORMFS_CONFIG`, or the packages' `/etc/wormfs/wormfs.toml`).
fn find_token(flag: Option<String>) -> anyhow::Result<String> {
    if let Some(t) = flag {
        return Ok(t);
    }
    let refused = |e: anyhow::Error, tried: &str| -> anyhow::Error {
        CliError::new(
            exit::AUTH,
            format!("no API token: {e:#} ({tried}; give --token, WORMFS_TOKEN or WORMFS_DATA_DIR)"),
        )
        .into()
    };
    if let Some(dir) = std::env::var_os("WORMFS_DATA_DIR").map(PathBuf::from) {
        return crate::admin_token::read_token(&dir)
            .map_err(|e| refused(e, "from WORMFS_DATA_DIR"));
    }
    let local = PathBuf::from("wormfs-data");
    let local_err = match crate::admin_token::read_token(&local) {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    match service_data_dir() {
        Some((config, dir)) => crate::admin_token::read_token(&dir).map_err(|e| {
            refused(
                e,
                &format!(
                    "the data folder of {}; ./wormfs-data has none",
                    config.display()
                ),
            )
        }),
        None => Err(refused(local_err, "./wormfs-data")),
    }
}

/// The config file a service runs and its data folder, when there is one: `WORMFS_CONFIG`, or
/// the Debian package's `/etc/wormfs/wormfs.toml`.
fn service_data_dir() -> Option<(PathBuf, PathBuf)> {
    let config = std::env::var_os("WORMFS_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/wormfs/wormfs.toml"));
    if !config.is_file() {
        return None;
    }
    let cfg = wormfs_config::load(
        Some(&config),
        std::env::vars(),
        &wormfs_config::Overrides::default(),
    )
    .ok()?;
    Some((config, cfg.node.data_dir))
}

/// The base URL for `--node`: a URL (`http://` or `https://`), or `HOST:PORT`, `IP:PORT`,
/// `[IPV6]:PORT` (or a host alone, on port 7710), taken as `http://`.
pub(super) fn node_url(node: &str) -> anyhow::Result<String> {
    let refused = |why: &str| {
        CliError::usage(format!(
            "--node {node:?} (or WORMFS_NODE): {why}; expected a node's API address such as \
             127.0.0.1:7710, nas.local:7710, [::1]:7710 or http://HOST:PORT"
        ))
    };
    let text = node.trim();
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| refused(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refused("the scheme must be http or https").into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refused("no host").into());
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(refused("a user, password or query has no place there").into());
    }
    let mut url = url;
    if !text.contains("://") && url.port().is_none() {
        let _ = url.set_port(Some(7710));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

impl Client {
    /// A client of the node at `node`, with the token given or found.
    pub(super) fn new(node: &str, token: Option<String>, json: bool) -> anyhow::Result<Self> {
        Ok(Client {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()?,
            base: node_url(node)?,
            token: find_token(token)?,
            json,
        })
    }

    /// The token this client sends.
    pub(super) fn token(&self) -> &str {
        &self.token
    }

    /// The answer if it is a success; else its [`ErrorBody`]'s message with the exit code
    /// its status maps to.
    pub(super) async fn check(&self, r: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let (msg, kind) = match r.json::<ErrorBody>().await {
            Ok(body) => (body.error, Some(body.kind)),
            Err(_) => (status.as_str().to_owned(), None),
        };
        let code = match status.as_u16() {
            // A retained file: a conflict, not a matter of credentials.
            _ if kind == Some(ErrorKind::Retained) => exit::CONFLICT,
            400 | 416 => exit::USAGE,
            401 | 403 => exit::AUTH,
            404 => exit::NOT_FOUND,
            // 423: a WebDAV lock is in the way (the message names it and --break-locks).
            409 | 412 | 423 => exit::CONFLICT,
            503 | 507 => exit::UNAVAILABLE,
            _ => exit::FAILURE,
        };
        Err(CliError::new(code, msg).into())
    }

    /// A request to `path` (and its query, if any) with the token.
    pub(super) fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        // "/api/v1/list/" (the root) is "/api/v1/list".
        let path = path.trim_end_matches('/');
        self.http
            .request(m, format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
    }

    /// A GET answered with JSON of type `T`.
    pub(super) async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let r = self
            .req(reqwest::Method::GET, path)
            .send()
            .await
            .with_context(|| format!("connect to {}", self.base))?;
        Ok(self.check(r).await?.json().await?)
    }

    /// Sends `rq` and reads its JSON answer of type `T`.
    pub(super) async fn send_json<T: DeserializeOwned>(
        &self,
        rq: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let r = rq.send().await?;
        Ok(self.check(r).await?.json().await?)
    }

    /// Says on standard error which WebDAV locks a write broke (`--break-locks`).
    pub(super) fn report_broken(&self, locks: &[LockInfo]) {
        if self.json {
            return;
        }
        for l in locks {
            eprintln!(
                "broke the WebDAV lock on {} held by {}",
                l.path,
                l.principal.as_deref().unwrap_or("an anonymous client")
            );
        }
    }

    /// Sends a change answered without a body (204), or with the locks it broke (200).
    pub(super) async fn send_change(&self, rq: reqwest::RequestBuilder) -> anyhow::Result<()> {
        let r = self.check(rq.send().await?).await?;
        if r.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(());
        }
        if let Ok(b) = r.json::<BrokenLocks>().await {
            if self.json {
                print_json(&b);
            } else {
                self.report_broken(&b.broken_locks);
            }
        }
        Ok(())
    }
}

/// Percent-encodes a WormFS path for a URL (keeps `/`).
pub(super) fn enc(path: &str) -> anyhow::Result<String> {
    // Checked here too: a URL library would quietly resolve "a/../b" to "b".
    wormfs_parts::tree_path::TreePath::parse(path).map_err(|e| CliError::usage(e.to_string()))?;
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

/// A progress bar of `len` bytes.
pub(super) fn bar(len: u64, msg: String) -> ProgressBar {
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

/// Bytes for people: `512 B`, `1.5 MiB`.
pub(super) fn human(n: u64) -> String {
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

/// Prints an answer as pretty JSON (`--json`).
pub(super) fn print_json<T: Serialize + ?Sized>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// An optional value as the JSON answer printed it: the value, or `null`.
pub(super) fn or_null<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod node_url_tests {
    use super::node_url;

    #[test]
    fn node_addresses_without_a_scheme_are_http_and_garbage_is_named() {
        for (given, want) in [
            ("127.0.0.1:7710", "http://127.0.0.1:7710"),
            ("[::1]:7710", "http://[::1]:7710"),
            ("nas.local:7720", "http://nas.local:7720"),
            ("nas.local", "http://nas.local:7710"),
            ("http://127.0.0.1:7710/", "http://127.0.0.1:7710"),
            ("https://nas.local:7710", "https://nas.local:7710"),
        ] {
            assert_eq!(node_url(given).expect(given), want, "{given}");
        }
        for bad in ["not a node!", "ftp://x:1", "127.0.0.1:99999", "http://", ""] {
            let e = node_url(bad).expect_err(bad).to_string();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("--node"),
                "{e}"
            );
        }
    }
}
