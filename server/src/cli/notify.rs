//! `wormfs notify test`, and the media servers' lines of `wormfs status`.

use super::client::{print_json, Client};
use super::{exit, CliError};
use crate::api::types::{MediaServerStatus, NotifyOutcome, NotifyTestResponse};
use wormfs_meta::command::rfc3339_ms;

/// `wormfs notify test`: one harmless request to every media server of that machine; fails
/// when any of them did not answer with a success (or none is configured).
pub(super) async fn test(c: &Client) -> anyhow::Result<()> {
    let r: NotifyTestResponse = c
        .send_json(c.req(reqwest::Method::POST, "/api/v1/notify/test"))
        .await?;
    if c.json {
        print_json(&r);
    }
    if r.servers.is_empty() {
        return Err(CliError::new(
            exit::FAILURE,
            "no media server is configured on that machine ([[media_servers]], \
             docs/media-servers.md)",
        )
        .into());
    }
    let failed = r.servers.iter().filter(|s| !s.ok).count();
    if !c.json {
        for s in &r.servers {
            let status = s.status.map(|c| format!(" ({c})")).unwrap_or_default();
            let verdict = if s.ok { "ok" } else { "FAILED" };
            println!("{} {}: {verdict}{status}: {}", s.kind, s.url, s.message);
        }
    }
    if failed > 0 {
        return Err(CliError::new(
            exit::FAILURE,
            format!("{failed} of {} media server(s) failed", r.servers.len()),
        )
        .into());
    }
    Ok(())
}

/// `wormfs status`'s line for one media server: its last notification.
pub(super) fn status_line(m: &MediaServerStatus) -> String {
    let pending = if m.pending_folders > 0 {
        format!(", {} folder(s) waiting", m.pending_folders)
    } else {
        String::new()
    };
    let last = match &m.last {
        None => "nothing sent yet".to_owned(),
        Some(r) => {
            let outcome = match r.outcome {
                NotifyOutcome::Sent => "sent",
                NotifyOutcome::Failed => "FAILED",
                NotifyOutcome::Refused => "REFUSED (fix the token file)",
            };
            format!(
                "last {} {outcome}, {} folder(s) [{}]: {}",
                rfc3339_ms(r.at_ms - r.at_ms % 1000),
                r.folders.len(),
                r.folders.join(", "),
                r.message
            )
        }
    };
    format!("media:    {} {}: {last}{pending}", m.kind, m.url)
}
