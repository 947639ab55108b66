//! One message to one webhook, in the shape its receiver expects (docs/alerts.md): WormFS's
//! own JSON, ntfy (the text as the body, title, priority and tags as headers) or Gotify
//! (`{"title", "message", "priority"}`).

use std::time::Duration;

use serde::Serialize;

use wormfs_config::{WebhookConfig, WebhookFormat};

use super::conditions::{Condition, Severity};

/// How long one attempt may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a condition started or ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It holds (for at least `alerts.debounce_ms`).
    Firing,
    /// It has ended (for at least `alerts.debounce_ms`).
    Resolved,
    /// `wormfs alerts test`.
    Test,
}

impl Status {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
            Self::Test => "test",
        }
    }
}

/// The JSON body of `format = "json"`: stable field names, documented in docs/alerts.md.
#[derive(Clone, Debug, Serialize)]
pub struct AlertMessage {
    /// Always 1 (the body's version).
    pub wormfs_alert: u32,
    /// `firing`, `resolved` or `test`.
    pub status: Status,
    /// The condition's stable key.
    pub key: String,
    /// Its kind.
    pub kind: String,
    /// `info`, `warning` or `critical`.
    pub severity: Severity,
    /// One line.
    pub title: String,
    /// The details.
    pub message: String,
    /// The cluster's name.
    pub cluster: String,
    /// The machine that sent it.
    pub node: u64,
    /// When the condition started (ms since the epoch).
    pub since_ms: u64,
    /// When this message was made.
    pub at_ms: u64,
}

impl AlertMessage {
    /// The message for `c`.
    pub fn new(c: &Condition, status: Status, cluster: &str, node: u64, since_ms: u64) -> Self {
        Self {
            wormfs_alert: 1,
            status,
            key: c.key.clone(),
            kind: c.kind.clone(),
            severity: c.severity,
            title: c.title.clone(),
            message: c.message.clone(),
            cluster: cluster.to_owned(),
            node,
            since_ms,
            at_ms: wormfs_parts::fsutil::now_ms(),
        }
    }

    /// The title as a phone shows it.
    fn headline(&self) -> String {
        match self.status {
            Status::Firing => format!("[{}] {}", self.cluster, self.title),
            Status::Resolved => format!("[{}] Resolved: {}", self.cluster, self.title),
            Status::Test => format!("[{}] Test message from WormFS", self.cluster),
        }
    }

    /// ntfy's 1-5 and Gotify's 0-10 priorities.
    fn priorities(&self) -> (u8, u8) {
        match (self.status, self.severity) {
            (Status::Resolved | Status::Test, _) | (_, Severity::Info) => (3, 4),
            (_, Severity::Warning) => (4, 6),
            (_, Severity::Critical) => (5, 8),
        }
    }
}

/// Why a message was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The token file could not be read.
    #[error("read the token file {path}: {source}")]
    Token {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The request did not complete.
    #[error("POST {url}: {source}")]
    Request {
        /// The webhook.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The receiver answered with an error status.
    #[error("POST {url}: the receiver answered {status}: {body}")]
    Status {
        /// The webhook.
        url: String,
        /// Its answer.
        status: u16,
        /// The start of its body.
        body: String,
    },
}

/// Sends `m` to `hook` once; the receiver's status on success.
pub async fn send(
    http: &reqwest::Client,
    hook: &WebhookConfig,
    m: &AlertMessage,
) -> Result<u16, SendError> {
    let token = match &hook.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map(|t| t.trim().to_owned())
                .map_err(|source| SendError::Token {
                    path: path.display().to_string(),
                    source,
                })?,
        ),
        None => None,
    };
    let (ntfy_priority, gotify_priority) = m.priorities();
    let req = http.post(&hook.url).timeout(TIMEOUT);
    let req = match hook.format {
        WebhookFormat::Json => {
            let req = req.json(m);
            match &token {
                Some(t) => req.bearer_auth(t),
                None => req,
            }
        }
        WebhookFormat::Ntfy => {
            let tags = match (m.status, m.severity) {
                (Status::Resolved, _) => "white_check_mark",
                (Status::Test, _) => "information_source",
                (_, Severity::Critical) => "rotating_light",
                (_, Severity::Warning) => "warning",
                (_, Severity::Info) => "information_source",
            };
            // Header values must be visible ASCII: non-ASCII titles go as RFC 2047 words.
            let title = m.headline();
            let title = if title.is_ascii() {
                title
            } else {
                use base64::Engine;
                format!(
                    "=?UTF-8?B?{}?=",
                    base64::engine::general_purpose::STANDARD.encode(title)
                )
            };
            let req = req
                .header("Title", title)
                .header("Priority", ntfy_priority.to_string())
                .header("Tags", tags)
                .header("Content-Type", "text/plain; charset=utf-8")
                .body(m.message.clone());
            match &token {
                Some(t) => req.bearer_auth(t),
                None => req,
            }
        }
        WebhookFormat::Gotify => {
            #[derive(Serialize)]
            struct Gotify<'a> {
                title: String,
                message: &'a str,
                priority: u8,
            }
            let req = req.json(&Gotify {
                title: m.headline(),
                message: &m.message,
                priority: gotify_priority,
            });
            match &token {
                Some(t) => req.header("X-Gotify-Key", t),
                None => req,
            }
        }
    };
    let resp = req.send().await.map_err(|source| SendError::Request {
        url: hook.url.clone(),
        source,
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let body = resp.text().await.unwrap_or_default();
    Err(SendError::Status {
        url: hook.url.clone(),
        status: status.as_u16(),
        body: body.chars().take(200).collect(),
    })
}
