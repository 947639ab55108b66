//! The mount's side of the node API: listings, ranges of a file's bytes, and the change feed,
//! each with a bounded wait, so a node that does not answer becomes `EIO`, never an empty
//! folder.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::{header, StatusCode};

use crate::api::types::{ChangesResponse, ErrorBody, ListResponse};
use wormfs_meta::DirEntry;

/// Why a call failed, as the mount tells the kernel.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// No such file or directory (404).
    #[error("not found")]
    NotFound,
    /// The file was replaced since it was looked up (412).
    #[error("replaced meanwhile")]
    Stale,
    /// The token was refused (401, 403).
    #[error("{0}")]
    Refused(String),
    /// The node did not answer in time, or answered an error: the cluster cannot answer now.
    #[error("{0}")]
    Unavailable(String),
}

/// A node's API for the mount.
#[derive(Clone)]
pub struct Remote {
    http: reqwest::Client,
    base: String,
    token: String,
    timeout: Duration,
}

/// A WormFS path for a URL (keeps `/`, encodes everything else but unreserved bytes).
fn enc(path: &str) -> String {
    let mut out = String::new();
    for b in path.trim_start_matches('/').bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Remote {
    /// The node at `base` (a URL without a trailing `/`), with `token`; every call gives up
    /// after `timeout`.
    pub fn new(base: String, token: String, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Remote {
            http: reqwest::Client::builder()
                .connect_timeout(timeout.min(Duration::from_secs(5)))
                .tcp_nodelay(true)
                .pool_max_idle_per_host(32)
                .build()?,
            base,
            token,
            timeout,
        })
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn error_of(r: reqwest::Response) -> RemoteError {
        let status = r.status();
        if status == StatusCode::NOT_FOUND {
            return RemoteError::NotFound;
        }
        if status == StatusCode::PRECONDITION_FAILED {
            return RemoteError::Stale;
        }
        let why = match r.json::<ErrorBody>().await {
            Ok(b) => b.error,
            Err(_) => String::new(),
        };
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return RemoteError::Refused(format!("the node refused the token ({status}): {why}"));
        }
        RemoteError::Unavailable(format!("the node answered {status}: {why}"))
    }

    fn unreachable(&self, e: reqwest::Error) -> RemoteError {
        if e.is_timeout() {
            RemoteError::Unavailable(format!(
                "{} did not answer within {:?}",
                self.base, self.timeout
            ))
        } else {
            RemoteError::Unavailable(format!("{}: {e}", self.base))
        }
    }

    /// `GET /api/v1/{route}/{path}` as JSON (the root is `/api/v1/{route}`: a trailing `/`
    /// names no route), within the timeout.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        route: &str,
        path: &str,
    ) -> Result<T, RemoteError> {
        let url = match enc(path) {
            e if e.is_empty() => format!("/api/v1/{route}"),
            e => format!("/api/v1/{route}/{e}"),
        };
        let r = self
            .get(&url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !r.status().is_success() {
            return Err(Self::error_of(r).await);
        }
        r.json().await.map_err(|e| self.unreachable(e))
    }

    /// A directory's entries (a file is listed as itself: ask [`Remote::is_dir`] first
    /// where the kind is not known).
    pub async fn list(&self, path: &str) -> Result<Vec<DirEntry>, RemoteError> {
        let v: ListResponse = self.get_json("list", path).await?;
        Ok(v.entries)
    }

    /// Whether `path` is a directory (`GET /api/v1/stat`).
    pub async fn is_dir(&self, path: &str) -> Result<bool, RemoteError> {
        let v: serde_json::Value = self.get_json("stat", path).await?;
        Ok(v.get("kind").and_then(serde_json::Value::as_str) == Some("dir"))
    }

    /// The bytes `start..end` of the file at `path`, as long as it is still the version with
    /// entity tag `etag`: a stream of pieces, each arriving within the timeout.
    pub async fn range(
        &self,
        path: &str,
        etag: &str,
        start: u64,
        end: u64,
    ) -> Result<impl Stream<Item = Result<Bytes, RemoteError>> + Send + 'static, RemoteError> {
        let url = format!("/api/v1/files/{}", enc(path));
        let r = tokio::time::timeout(
            self.timeout,
            self.get(&url)
                .header(header::RANGE, format!("bytes={start}-{}", end - 1))
                .header(header::IF_MATCH, format!("\"{etag}\""))
                .send(),
        )
        .await
        .map_err(|_| {
            RemoteError::Unavailable(format!(
                "{} did not answer within {:?}",
                self.base, self.timeout
            ))
        })?
        .map_err(|e| self.unreachable(e))?;
        // A 200 is the whole file from byte 0: right only when that is what was asked.
        let whole = r.status() == StatusCode::OK && start == 0 && r.content_length() == Some(end);
        if r.status() != StatusCode::PARTIAL_CONTENT && !whole {
            if r.status().is_success() {
                return Err(RemoteError::Unavailable(format!(
                    "{} answered {} to a range request",
                    self.base,
                    r.status()
                )));
            }
            return Err(Self::error_of(r).await);
        }
        let timeout = self.timeout;
        let base = self.base.clone();
        let body = r.bytes_stream();
        // Each piece must come within the timeout: a node that stops mid-file is an error.
        Ok(futures::stream::unfold(Box::pin(body), move |mut body| {
            let base = base.clone();
            async move {
                match tokio::time::timeout(timeout, body.next()).await {
                    Err(_) => Some((
                        Err(RemoteError::Unavailable(format!(
                            "{base} stopped sending for {timeout:?}"
                        ))),
                        body,
                    )),
                    Ok(None) => None,
                    Ok(Some(Ok(b))) => Some((Ok(b), body)),
                    Ok(Some(Err(e))) => {
                        Some((Err(RemoteError::Unavailable(format!("{base}: {e}"))), body))
                    }
                }
            }
        }))
    }

    /// The changes after `after` in `epoch`, waiting up to `wait` for one.
    pub async fn changes(
        &self,
        epoch: Option<u64>,
        after: u64,
        wait: Duration,
    ) -> Result<ChangesResponse, RemoteError> {
        let mut url = format!("/api/v1/changes?after={after}&wait_ms={}", wait.as_millis());
        if let Some(e) = epoch {
            url.push_str(&format!("&epoch={e}"));
        }
        let r = self
            .get(&url)
            .timeout(wait + self.timeout)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !r.status().is_success() {
            return Err(Self::error_of(r).await);
        }
        r.json().await.map_err(|e| self.unreachable(e))
    }

    /// The cluster's total and free bytes, for `statfs` (`df`).
    pub async fn space(&self) -> Result<(u64, u64), RemoteError> {
        let r = self
            .get("/api/v1/disks")
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !r.status().is_success() {
            return Err(Self::error_of(r).await);
        }
        let v: crate::api::types::DisksResponse =
            r.json().await.map_err(|e| self.unreachable(e))?;
        // Folder disks that share a filesystem count once.
        let mut seen = std::collections::HashSet::new();
        let (mut total, mut free) = (0u64, 0u64);
        for d in &v.disks {
            if seen.insert((d.node_id, d.filesystem)) {
                total = total.saturating_add(d.space.total_bytes);
                free = free.saturating_add(d.space.free_bytes);
            }
        }
        Ok((total, free))
    }
}

#[cfg(test)]
mod tests {
    use super::enc;

    #[test]
    fn paths_are_encoded_for_urls() {
        assert_eq!(enc("/Films/A b/été.mkv"), "Films/A%20b/%C3%A9t%C3%A9%2Emkv");
        assert_eq!(enc("/"), "");
    }
}
