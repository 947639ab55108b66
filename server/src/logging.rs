//! The node's log: `tracing` to standard error, as text lines for people or one JSON object
//! per line for log collectors (`log.format`, `--log-format`; the JSON fields are listed in
//! docs/operations.md, "Logs"), and the few notes written for the person at the terminal.

use std::sync::atomic::{AtomicBool, Ordering};

use wormfs_config::LogFormat;

/// Whether the log is JSON: the notes for people then go to the log as events too, so every
/// line on standard error is one JSON object.
static JSON: AtomicBool = AtomicBool::new(false);

/// Sets up the process's `tracing` subscriber. `WORMFS_LOG`, when set, replaces `level`.
pub fn init(level: &str, format: LogFormat) {
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
        LogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            // One object per line: `timestamp`, `level`, `target`, `message` and the event's
            // own fields at the top level, and `spans`, the spans it happened in (outermost
            // first), each with its `name` and fields. Pinned by the `json_log` test.
            b.json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .with_target(true)
                .with_ansi(false)
                .init()
        }
        LogFormat::Text => b.with_ansi(colour_logs()).init(),
    }
}

/// Whether log lines get terminal colours: only when they go to a terminal (standard error),
/// and never with `NO_COLOR` set (https://no-color.org).
fn colour_logs() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether the log is JSON lines.
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// A note for the person who started the node (the shared-filesystem banner, where the first
/// WebDAV password is): on standard error as it is with a text log; a warning event with a
/// JSON log, so a collector reading standard error sees only JSON.
pub fn note(text: &str) {
    if JSON.load(Ordering::Relaxed) {
        tracing::warn!(note = true, "{}", text.trim());
    } else {
        eprintln!("{text}");
    }
}
