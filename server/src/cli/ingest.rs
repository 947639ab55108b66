//! `wormfs ingest [--wait]`: the drop folders' files, with progress bars until they are done.

use std::collections::HashMap;

use anyhow::bail;
use indicatif::ProgressBar;

use super::client::{bar, human, print_json, Client};
use super::{exit, CliError};
use crate::api::types::{item_state_name, IngestStatusResponse};
use crate::drop_folders::ItemState;

/// `wormfs ingest [--wait]`.
pub(super) async fn ingest(c: &Client, wait: bool) -> anyhow::Result<()> {
    let mut v: IngestStatusResponse = c.get_json("/api/v1/ingest").await?;
    if wait {
        let multi = indicatif::MultiProgress::new();
        if c.json {
            multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let mut bars: HashMap<String, ProgressBar> = Default::default();
        loop {
            let busy = v.settling + v.queued + v.in_progress;
            for it in &v.items {
                let b = bars.entry(it.source.clone()).or_insert_with(|| {
                    let name = std::path::Path::new(&it.source)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    multi.add(bar(it.size, name))
                });
                match it.state {
                    ItemState::InProgress => b.set_position(it.bytes_done),
                    ItemState::Done => b.finish_with_message(format!("{} done", it.dest)),
                    ItemState::Failed => b.abandon_with_message(format!(
                        "failed: {}",
                        it.note.as_deref().unwrap_or("")
                    )),
                    ItemState::Queued => {}
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
    if wait && v.failed > 0 {
        bail!(CliError::new(
            exit::FAILURE,
            format!("{} drop-folder file(s) failed; see above", v.failed),
        ));
    }
    Ok(())
}

fn print_ingest(v: &IngestStatusResponse) {
    for f in &v.folders {
        println!(
            "folder {} -> {}  ({}, after: {})",
            f.path.display(),
            f.tree,
            f.watch,
            f.after
        );
    }
    println!(
        "settling {}  queued {}  in progress {}  done {}  failed {}",
        v.settling, v.queued, v.in_progress, v.done, v.failed
    );
    for it in &v.items {
        let extra = match it.state {
            ItemState::InProgress => format!(
                " {}/{} {}/s",
                human(it.bytes_done),
                human(it.size),
                human(it.rate)
            ),
            _ => format!(" {}", human(it.size)),
        };
        println!(
            "{:<11} {}{}{}{}",
            item_state_name(it.state),
            it.source,
            if it.dest.is_empty() {
                String::new()
            } else {
                format!(" -> {}", it.dest)
            },
            extra,
            it.note
                .as_deref()
                .map(|n| format!("  ({n})"))
                .unwrap_or_default()
        );
    }
}
