//! Jellyfin's calls: `POST /Library/Media/Updated` (a scan of the folders named) and, for
//! `wormfs notify test`, `GET /System/Info`. Both authenticate with
//! `Authorization: MediaBrowser Token="..."`: Jellyfin 12 turns the old `X-Emby-Token` header
//! and `api_key` parameter off by default (docs/media-servers.md has the sources).

use serde::{Deserialize, Serialize};

use super::{check_answer, Failure, UpdateType};

/// The body of `POST /Library/Media/Updated` (Jellyfin's `MediaUpdateInfoDto`).
#[derive(Debug, Serialize)]
struct MediaUpdateInfo<'a> {
    #[serde(rename = "Updates")]
    updates: Vec<MediaUpdateInfoPath<'a>>,
}

/// One entry of it (Jellyfin's `MediaUpdateInfoPathDto`).
#[derive(Debug, Serialize)]
struct MediaUpdateInfoPath<'a> {
    #[serde(rename = "Path")]
    path: &'a str,
    #[serde(rename = "UpdateType")]
    update_type: &'static str,
}

/// The `Authorization` header's value for `token`.
fn authorization(token: &str) -> String {
    format!("MediaBrowser Token=\"{token}\"")
}

/// Asks Jellyfin to scan `updates` (server paths); the answer's status (204) on success.
pub async fn media_updated(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    updates: &[(String, UpdateType)],
) -> Result<u16, Failure> {
    let body = MediaUpdateInfo {
        updates: updates
            .iter()
            .map(|(path, kind)| MediaUpdateInfoPath {
                path,
                update_type: kind.jellyfin_name(),
            })
            .collect(),
    };
    let answer = http
        .post(format!("{base}/Library/Media/Updated"))
        .header(reqwest::header::AUTHORIZATION, authorization(token))
        .json(&body)
        .send()
        .await
        .map_err(Failure::from_request)?;
    check_answer(answer).await.map(|(status, _)| status)
}

/// What `GET /System/Info` says about the server (the fields shown; others are ignored).
#[derive(Debug, Deserialize)]
struct SystemInfo {
    #[serde(rename = "ServerName", default)]
    server_name: Option<String>,
    #[serde(rename = "Version", default)]
    version: Option<String>,
}

/// `GET /System/Info`: the status and a sentence naming the server and its version.
pub async fn system_info(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> Result<(u16, String), Failure> {
    let answer = http
        .get(format!("{base}/System/Info"))
        .header(reqwest::header::AUTHORIZATION, authorization(token))
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(Failure::from_request)?;
    let (status, body) = check_answer(answer).await?;
    let info: SystemInfo = serde_json::from_str(&body).map_err(|e| {
        Failure::Permanent(format!(
            "GET /System/Info answered {status} but not with Jellyfin's JSON ({e}); is this \
             Jellyfin's address?"
        ))
    })?;
    Ok((
        status,
        format!(
            "Jellyfin {:?}, version {}: the token is accepted",
            info.server_name.unwrap_or_default(),
            info.version.as_deref().unwrap_or("unknown")
        ),
    ))
}
