//! `wormfs trash ls|restore|empty` and `wormfs admin unlock` (offline).

use anyhow::bail;
use clap::Subcommand;

use super::client::{human, print_json, Client};
use super::local::{local_config, ServeArgs};
use super::{CliError, NodeHost};
use crate::api::types::{
    TrashEmptyRequest, TrashEmptyResponse, TrashQuery, TrashResponse, TrashRestoreRequest,
    TrashRestoreResponse,
};
use wormfs_meta::command::rfc3339_ms;

/// `wormfs trash ...`
#[derive(Subcommand, Debug)]
pub enum TrashCmd {
    /// List the files in the trash (those deleted at PATH or below it), oldest first.
    Ls {
        /// Only files whose original path is this or below it.
        path: Option<String>,
    },
    /// Give a file in the trash its name back (or another with --to).
    Restore {
        /// The file's original path (several trash entries with that path: the newest).
        path: Option<String>,
        /// Where it goes (default: its original path); refused if something is there.
        #[arg(long, value_name = "DEST")]
        to: Option<String>,
        /// The trash entry's id (see `wormfs trash ls`) instead of a path.
        #[arg(long, conflicts_with = "path")]
        id: Option<u64>,
    },
    /// Free the files in the trash now (only those deleted more than DAYS ago with
    /// --older-than).
    Empty {
        /// Days (fractions allowed).
        #[arg(long, value_name = "DAYS")]
        older_than: Option<f64>,
    },
}

/// `wormfs trash ...`.
pub(super) async fn trash(c: &Client, cmd: TrashCmd) -> anyhow::Result<()> {
    match cmd {
        TrashCmd::Ls { path } => {
            let rq = c
                .req(reqwest::Method::GET, "/api/v1/trash")
                .query(&TrashQuery { path });
            let v: TrashResponse = c.send_json(rq).await?;
            if c.json {
                print_json(&v);
                return Ok(());
            }
            println!("{:>6}  {:<20}  {:>10}  PATH", "ID", "DELETED (UTC)", "SIZE");
            for e in &v.entries {
                let deleted = rfc3339_ms(e.deleted_ms - e.deleted_ms % 1000);
                println!(
                    "{:>6}  {:<20}  {:>10}  {}{}",
                    e.id,
                    deleted,
                    human(e.size),
                    e.path,
                    if e.shared {
                        "  (also named elsewhere)"
                    } else {
                        ""
                    }
                );
            }
            let t = v.totals;
            println!(
                "trash: {} file(s), {} ({} on the disks){}",
                t.files,
                human(t.bytes),
                human(t.stored_bytes),
                if t.enabled {
                    format!("; kept {} day(s)", v.trash_days)
                } else {
                    "; the trash is off: deletes free space at once".into()
                }
            );
        }
        TrashCmd::Restore { path, to, id } => {
            if path.is_none() && id.is_none() {
                bail!(CliError::usage(
                    "name the file to restore: its original path, or --id ID"
                ));
            }
            let rq = c
                .req(reqwest::Method::POST, "/api/v1/trash/restore")
                .json(&TrashRestoreRequest { path, id, to });
            let v: TrashRestoreResponse = c.send_json(rq).await?;
            if c.json {
                print_json(&v);
            } else {
                println!("restored {} to {}", v.from, v.to);
            }
        }
        TrashCmd::Empty { older_than } => {
            if let Some(d) = older_than {
                if !(d.is_finite() && d >= 0.0) {
                    bail!(CliError::usage(format!(
                        "--older-than: expected a number of days, got {d}"
                    )));
                }
            }
            let rq = c
                .req(reqwest::Method::POST, "/api/v1/trash/empty")
                .json(&TrashEmptyRequest {
                    older_than_days: older_than,
                });
            let v: TrashEmptyResponse = c.send_json(rq).await?;
            if c.json {
                print_json(&v);
            } else {
                println!(
                    "emptied {} trash entr{}, {} freed (the parts go at the next sweep)",
                    v.entries,
                    if v.entries == 1 { "y" } else { "ies" },
                    human(v.bytes)
                );
            }
        }
    }
    Ok(())
}

/// `wormfs admin unlock PATH`: on a stopped node's data folder, clears the retention of the
/// files at PATH and below, logging each to stderr and to DATA_DIR/unlock.log.
pub(super) async fn unlock(
    host: &impl NodeHost,
    args: &ServeArgs,
    path: &str,
) -> anyhow::Result<()> {
    use std::io::Write;
    let path = wormfs_parts::tree_path::TreePath::parse(path)
        .map_err(|e| CliError::usage(format!("{path:?}: {e}")))?;
    let cfg = local_config(args)?;
    let data = &cfg.node.data_dir;
    // Refused while a node runs on this data folder.
    let (_lock, node_id) = host.lock_node(data)?;
    let db = wormfs_meta::MetaDb::open(&data.join("meta").join("metadata.db")).await?;
    let now = wormfs_parts::fsutil::now_ms();
    let unlocked = db.unlock_retention(&path).await;
    db.close().await;
    let Some(unlocked) = unlocked? else {
        bail!(CliError::new(
            super::exit::NOT_FOUND,
            format!("{path}: no such file or directory")
        ));
    };
    let log_path = data.join("unlock.log");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut lines = Vec::new();
    for (p, until) in &unlocked {
        let state = if *until > now {
            "retained until"
        } else {
            "had ended"
        };
        lines.push(format!(
            "{} node {node_id} unlocked {p} ({state} {})",
            rfc3339_ms(now - now % 1000),
            rfc3339_ms(*until)
        ));
    }
    for l in &lines {
        eprintln!("{l}");
        writeln!(log, "{l}")?;
    }
    log.sync_all()?;
    eprintln!(
        "{} file(s) unlocked at {path} on node {node_id} (logged in {}). In a cluster, run the \
         same on every machine while all are stopped: each keeps its own copy of the metadata.",
        unlocked.len(),
        log_path.display()
    );
    Ok(())
}
