//! The namespace: `ls`, `stat`, `rm`, `mkdir`, `mv`, `policy get|set`.

use clap::Subcommand;

use super::client::{enc, human, print_json, Client};
use crate::api::types::{
    FileStat, ListResponse, MkdirQuery, MvRequest, PolicyRequest, PolicyResponse, RetentionRequest,
    RmQuery, StatResponse,
};
use crate::trash::format_retain;
use wormfs_meta::command::rfc3339_ms;
use wormfs_meta::EntryKind;

/// `wormfs policy ...`
#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Show a directory's policy.
    Get {
        /// Directory.
        #[arg(default_value = "/")]
        dir: String,
    },
    /// Set a directory's policy (ec:K+M, copies:N, or inherit), or its retention
    /// (retain:30d, retain:12h, retain:none) without touching the storage policy.
    Set {
        /// Directory.
        dir: String,
        /// The policy.
        policy: String,
    },
}

/// `wormfs ls [DIR]`.
pub(super) async fn ls(c: &Client, path: &str) -> anyhow::Result<()> {
    let v: ListResponse = c.get_json(&format!("/api/v1/list/{}", enc(path)?)).await?;
    if c.json {
        print_json(&v);
        return Ok(());
    }
    for e in &v.entries {
        let dir = e.kind == EntryKind::Dir;
        println!(
            "{:>10}  {}{}",
            if dir { "-".into() } else { human(e.size) },
            e.name,
            if dir { "/" } else { "" }
        );
    }
    Ok(())
}

/// `wormfs stat PATH`.
pub(super) async fn stat(c: &Client, path: &str) -> anyhow::Result<()> {
    let v: StatResponse = c.get_json(&format!("/api/v1/stat/{}", enc(path)?)).await?;
    if c.json {
        print_json(&v);
        return Ok(());
    }
    match v {
        StatResponse::Dir(d) => println!(
            "{}: directory, policy {}{}",
            d.path,
            d.effective_policy.as_deref().unwrap_or("default"),
            match (d.effective_retain_ms, d.retain_ms) {
                (Some(r), Some(_)) => format!(", retain:{}", format_retain(r)),
                (Some(r), None) => format!(", retain:{} (inherited)", format_retain(r)),
                (None, _) => String::new(),
            }
        ),
        StatResponse::File(f) => print_file_stat(&f),
    }
    Ok(())
}

fn print_file_stat(f: &FileStat) {
    println!("path:     {}", f.path);
    println!("size:     {} ({} bytes)", human(f.size), f.size);
    println!("policy:   {}", f.policy);
    println!(
        "blake3:   {}",
        f.blake3
            .as_deref()
            .unwrap_or("(not kept after an append; see segment hashes)")
    );
    println!("etag:     {}", f.etag);
    println!("file id:  {}", f.file_id);
    if let Some(until) = f.retained_until_ms {
        let now = wormfs_parts::fsutil::now_ms();
        println!(
            "retained until {}{}",
            rfc3339_ms(until),
            if until <= now { " (ended)" } else { "" }
        );
    }
    // A sentence of its own ("survives 2 failed disks, or 1 machine").
    println!("{}", f.tolerance.summary);
    for s in &f.segments {
        println!(
            "segment {}:{} @{} {} blake3 {}",
            f.file_id,
            s.index,
            s.offset,
            human(s.size),
            s.blake3
        );
        for p in &s.parts {
            let machine = match (p.node_id, &p.node_name) {
                (Some(id), Some(name)) => format!("node {id} ({name}) "),
                (Some(id), None) => format!("node {id} "),
                _ => String::new(),
            };
            // The index unpadded, as this line has always printed it.
            println!(
                "  part {}: {machine}{}{}",
                p.index,
                p.disk_path.as_deref().unwrap_or("(none)"),
                if p.state == "ok" || p.state.is_empty() {
                    String::new()
                } else {
                    format!("  {}", p.state.to_uppercase())
                }
            );
        }
    }
}

/// `wormfs rm PATH [-r] [--break-locks]`.
pub(super) async fn rm(
    c: &Client,
    path: &str,
    recursive: bool,
    break_locks: bool,
) -> anyhow::Result<()> {
    let rq = c
        .req(
            reqwest::Method::DELETE,
            &format!("/api/v1/files/{}", enc(path)?),
        )
        .query(&RmQuery {
            recursive,
            break_locks,
        });
    c.send_change(rq).await
}

/// `wormfs mkdir PATH [-p]`.
pub(super) async fn mkdir(c: &Client, path: &str, parents: bool) -> anyhow::Result<()> {
    let rq = c
        .req(
            reqwest::Method::POST,
            &format!("/api/v1/mkdir/{}", enc(path)?),
        )
        .query(&MkdirQuery { parents });
    c.check(rq.send().await?).await?;
    Ok(())
}

/// `wormfs mv FROM TO [--break-locks]`.
pub(super) async fn mv(
    c: &Client,
    from: String,
    to: String,
    break_locks: bool,
) -> anyhow::Result<()> {
    let rq = c.req(reqwest::Method::POST, "/api/v1/mv").json(&MvRequest {
        from,
        to,
        replace: false,
        break_locks,
    });
    c.send_change(rq).await
}

/// `wormfs policy get|set`.
pub(super) async fn policy(c: &Client, cmd: PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Get { dir } => {
            let v: PolicyResponse = c
                .get_json(&format!("/api/v1/policy/{}", enc(&dir)?))
                .await?;
            if c.json {
                print_json(&v);
            } else {
                println!(
                    "{}: {}{} (files under {} bytes: {})",
                    v.path,
                    v.effective,
                    if v.inherited { " (inherited)" } else { "" },
                    v.small_file_threshold_bytes,
                    v.small_files
                );
                let st: StatResponse = c.get_json(&format!("/api/v1/stat/{}", enc(&dir)?)).await?;
                if let StatResponse::Dir(d) = st {
                    if let Some(r) = d.effective_retain_ms {
                        println!(
                            "{}: retain:{}{}",
                            v.path,
                            format_retain(r),
                            if d.retain_ms.is_none() {
                                " (inherited)"
                            } else {
                                ""
                            }
                        );
                    }
                }
            }
        }
        PolicyCmd::Set { dir, policy } if policy.starts_with("retain:") => {
            let retain = &policy["retain:".len()..];
            if let Err(e) = crate::trash::parse_retain(retain) {
                anyhow::bail!(super::CliError::usage(e));
            }
            let body = RetentionRequest {
                retain: (retain != "none").then(|| retain.to_owned()),
            };
            let rq = c
                .req(
                    reqwest::Method::PUT,
                    &format!("/api/v1/retention/{}", enc(&dir)?),
                )
                .json(&body);
            c.check(rq.send().await?).await?;
        }
        PolicyCmd::Set { dir, policy } => {
            let body = PolicyRequest {
                policy: (policy != "inherit").then_some(policy),
            };
            let rq = c
                .req(
                    reqwest::Method::PUT,
                    &format!("/api/v1/policy/{}", enc(&dir)?),
                )
                .json(&body);
            c.check(rq.send().await?).await?;
        }
    }
    Ok(())
}
