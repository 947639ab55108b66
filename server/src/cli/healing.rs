//! Self-healing from the command line: `health`, `repair status|pause|resume|now`,
//! `scrub status|now`, `disk impact`.

use clap::Subcommand;

use super::client::{enc, human, print_json, Client};
use super::CliError;
use crate::api::types::{
    DiskChange, DiskPathRequest, HealthReport, ImpactResponse, RebalanceReport, RepairNowRequest,
    RepairNowResponse, RepairStatus, ScrubRequest, ScrubStatus,
};
use crate::healing::health::about;

/// `wormfs repair ...`
#[derive(Subcommand, Debug)]
pub enum RepairCmd {
    /// The queue by priority, what runs now with its rate and time left, and errors.
    Status,
    /// Pause repair on every node (the queue keeps filling).
    Pause,
    /// Resume repair.
    Resume,
    /// Queue a segment (FILEID:SEGMENT, as `wormfs stat` shows) or a file's path for repair
    /// now.
    Now {
        /// FILEID:SEGMENT or a path.
        target: String,
    },
}

/// `wormfs scrub [--deep]` (scrub now) or `wormfs scrub status|now`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ScrubArgs {
    /// Also re-encode parity and compare it, and check each segment's BLAKE3.
    #[arg(long)]
    pub deep: bool,
    /// What to do (default: scrub every part now, on every node).
    #[command(subcommand)]
    pub cmd: Option<ScrubCmd>,
}

/// `wormfs scrub ...`
#[derive(Subcommand, Debug)]
pub enum ScrubCmd {
    /// This node's scrub: progress, rate, time left, the oldest verification, what it found.
    Status,
    /// Scrub every part now, on every node (the same as `wormfs scrub`).
    Now {
        /// Also re-encode parity and compare it, and check each segment's BLAKE3.
        #[arg(long)]
        deep: bool,
    },
}

/// `wormfs disk ...`
#[derive(Subcommand, Debug)]
pub enum DiskCmd {
    /// Add a disk (a folder of the machine `--node` points at: absolute, empty or missing)
    /// while the node runs; new parts go to it at once.
    Add {
        /// The folder.
        path: String,
    },
    /// Copy a disk's parts to the other disks; it shows `drained` when empty.
    Drain {
        /// The disk's id (see `wormfs disks`).
        id: String,
    },
    /// Put a new disk (a folder of the machine `--node` points at) in the place of another:
    /// the old one is drained if it still reads, else removed; repair refills the new one.
    Replace {
        /// The old disk's id.
        old: String,
        /// The new disk's folder.
        path: String,
    },
    /// Remove a disk from the cluster (refused while it holds parts, unless --force).
    Remove {
        /// The disk's id.
        id: String,
        /// Count its parts as lost and rebuild them.
        #[arg(long)]
        force: bool,
    },
    /// What would become unreadable, or drop to tolerance 0, if this disk (or with
    /// --machine, this machine) failed now.
    Impact {
        /// The disk's id (see `wormfs disks`); omit with --node.
        id: Option<String>,
        /// A machine's node id instead (all its disks).
        #[arg(long, value_name = "NODE_ID")]
        machine: Option<u64>,
    },
}

fn secs(s: Option<u64>) -> String {
    s.map_or_else(|| "-".to_owned(), about)
}

/// `wormfs health`: exit 0 when every segment is at full redundancy, 1 when any is below
/// it, 2 when any file cannot be read.
pub(super) async fn health(c: &Client) -> anyhow::Result<()> {
    let r: HealthReport = c.get_json("/api/v1/health/report").await?;
    if c.json {
        print_json(&r);
    } else {
        println!("{}", r.summary);
        println!(
            "files {}, segments {}; segments by tolerance (parts that may still be lost):",
            r.files, r.segments
        );
        for t in &r.by_tolerance {
            let label = if t.tolerance < 0 {
                "unreadable now".to_owned()
            } else {
                t.tolerance.to_string()
            };
            println!(
                "  {label:>14}: {} ({} below policy)",
                t.segments, t.below_policy
            );
        }
        if !r.at_risk.is_empty() {
            println!(
                "files that can survive no more failures ({} in all):",
                r.at_risk_count
            );
            for f in &r.at_risk {
                let what = if f.tolerance < 0 {
                    "unreadable"
                } else {
                    "tolerance 0"
                };
                println!("  {what:<12} {}", f.path);
            }
        }
        for d in &r.disks_not_up {
            println!("disk {} {} ({}): {}", d.path, d.state, d.disk_id, d.reason);
        }
        print_repair_line(&r.repair);
        print_scrub(&r.scrub);
        println!("{}", backup_line(&r.meta_backup));
        for b in &r.brakes {
            println!("brake: {b}");
        }
    }
    let code = r.verdict.exit_code();
    if code != 0 {
        std::io::Write::flush(&mut std::io::stdout())?;
        let what = if code == 2 {
            "some files cannot be read now"
        } else {
            "some segments are below their policy's redundancy"
        };
        return Err(CliError::new(code, what).into());
    }
    Ok(())
}

fn print_repair_line(r: &RepairStatus) {
    println!(
        "repair: {}{} queued ({}), {} running here, {}/s, time left {}",
        if r.paused { "PAUSED, " } else { "" },
        r.queued,
        human(r.queued_bytes),
        r.in_progress.len(),
        human(r.counters.rate_bytes_per_sec),
        secs(r.eta_secs)
    );
}

fn print_repair(r: &RepairStatus) {
    print_repair_line(r);
    for t in &r.queued_by_tolerance {
        println!("  tolerance {:>3}: {} segment(s)", t.tolerance, t.segments);
    }
    for j in &r.in_progress {
        println!(
            "  running {} {} parts {:?}: {} of {}",
            j.segment,
            j.path,
            j.parts,
            human(j.bytes_done),
            human(j.bytes_total)
        );
    }
    for q in r.queue.iter().take(20) {
        let err = if q.last_error.is_empty() {
            String::new()
        } else {
            format!("  attempts {}: {}", q.attempts, q.last_error)
        };
        println!(
            "  queued {} tolerance {} ({}){err}",
            q.segment, q.tolerance, q.reason
        );
    }
    println!(
        "  since start: {} segments repaired, {} parts written, {} failures; {} rebalancing move(s) left",
        r.counters.segments_repaired, r.counters.parts_written, r.counters.failures, r.moves_left
    );
    for b in &r.brakes {
        println!("brake: {b}");
    }
}

/// `wormfs repair ...`.
pub(super) async fn repair(c: &Client, cmd: RepairCmd) -> anyhow::Result<()> {
    let post = |path: &str| c.req(reqwest::Method::POST, path);
    match cmd {
        RepairCmd::Status => {
            let r: RepairStatus = c.get_json("/api/v1/repair").await?;
            if c.json {
                print_json(&r)
            } else {
                print_repair(&r)
            }
        }
        RepairCmd::Pause | RepairCmd::Resume => {
            let path = if matches!(cmd, RepairCmd::Pause) {
                "/api/v1/repair/pause"
            } else {
                "/api/v1/repair/resume"
            };
            let r: RepairStatus = c.send_json(post(path)).await?;
            if c.json {
                print_json(&r)
            } else {
                print_repair_line(&r)
            }
        }
        RepairCmd::Now { target } => {
            let r: RepairNowResponse = c
                .send_json(post("/api/v1/repair/now").json(&RepairNowRequest { target }))
                .await?;
            if c.json {
                print_json(&r)
            } else {
                println!("queued {} segment(s) for repair", r.segments.len());
            }
        }
    }
    Ok(())
}

/// This node's last metadata backup, in one line.
pub(super) fn backup_line(b: &crate::meta_backup::BackupStatus) -> String {
    let now = wormfs_parts::fsutil::now_ms();
    let mut line = match (b.interval_ms, b.last_ms, b.log_index) {
        (0, _, _) => "metadata backup: off (meta.backup_interval_ms = 0)".to_owned(),
        (_, Some(t), Some(i)) => format!(
            "metadata backup: {} ago, log index {i}, on {} disk(s){}",
            about_secs(now.saturating_sub(t) / 1000),
            b.disks.len(),
            match b.changes_since {
                0 => "; nothing changed since".to_owned(),
                n => format!("; {n} change(s) since"),
            }
        ),
        _ => "metadata backup: none written since this node started".to_owned(),
    };
    if let Some(e) = &b.last_error {
        line.push_str(&format!("; the last attempt failed: {e}"));
    }
    line
}

fn about_secs(s: u64) -> String {
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

fn print_scrub(s: &ScrubStatus) {
    let c = &s.counters;
    println!(
        "scrub: {}{}; every {} days; {} of {} parts verified this pass, {} left, {}/s, time left {}",
        if s.enabled { c.state.as_str() } else { "disabled" },
        if c.deep { " (deep)" } else { "" },
        s.interval_days,
        s.parts_verified,
        s.parts,
        human(s.bytes_left),
        human(c.rate_bytes_per_sec),
        secs(s.eta_secs)
    );
    println!(
        "  oldest verification: {}",
        s.oldest_verified_age_secs.map_or_else(
            || "-".to_owned(),
            |a| format!("{} ago", about(a).trim_start_matches("about "))
        )
    );
    println!(
        "  since start: {} parts and {} verified, {} damaged parts found, {} deep mismatches",
        c.parts_verified,
        human(c.bytes_verified),
        c.damaged_found,
        c.deep_mismatches
    );
}

/// `wormfs scrub ...`.
pub(super) async fn scrub(c: &Client, args: ScrubArgs) -> anyhow::Result<()> {
    let cmd = args.cmd.unwrap_or(ScrubCmd::Now { deep: args.deep });
    let s: ScrubStatus = match cmd {
        ScrubCmd::Status => c.get_json("/api/v1/scrub").await?,
        ScrubCmd::Now { deep } => {
            c.send_json(
                c.req(reqwest::Method::POST, "/api/v1/scrub")
                    .json(&ScrubRequest { deep }),
            )
            .await?
        }
    };
    if c.json {
        print_json(&s)
    } else {
        print_scrub(&s)
    }
    Ok(())
}

/// `wormfs disk ...`.
pub(super) async fn disk(c: &Client, cmd: DiskCmd) -> anyhow::Result<()> {
    let post = |path: String| c.req(reqwest::Method::POST, &path);
    let absolute = |p: &str| -> anyhow::Result<String> {
        let path = std::path::Path::new(p);
        Ok(if path.is_absolute() {
            p.to_owned()
        } else {
            std::env::current_dir()?.join(path).display().to_string()
        })
    };
    let change: DiskChange = match cmd {
        DiskCmd::Add { path } => {
            let path = absolute(&path)?;
            c.send_json(post("/api/v1/disks".into()).json(&DiskPathRequest { path }))
                .await?
        }
        DiskCmd::Drain { id } => {
            c.send_json(post(format!("/api/v1/disks/{}/drain", enc(&id)?)))
                .await?
        }
        DiskCmd::Replace { old, path } => {
            let path = absolute(&path)?;
            c.send_json(
                post(format!("/api/v1/disks/{}/replace", enc(&old)?))
                    .json(&DiskPathRequest { path }),
            )
            .await?
        }
        DiskCmd::Remove { id, force } => {
            c.send_json(post(format!(
                "/api/v1/disks/{}/remove?force={force}",
                enc(&id)?
            )))
            .await?
        }
        DiskCmd::Impact { id, machine } => return impact(c, id, machine).await,
    };
    if c.json {
        print_json(&change);
    } else {
        println!("{}", change.message);
    }
    Ok(())
}

async fn impact(c: &Client, id: Option<String>, node: Option<u64>) -> anyhow::Result<()> {
    {
        {
            let query = match (id, node) {
                (Some(id), None) => format!("disk={id}"),
                (None, Some(n)) => format!("node={n}"),
                _ => return Err(CliError::usage("give a disk id, or --machine N").into()),
            };
            let r: ImpactResponse = c.get_json(&format!("/api/v1/impact?{query}")).await?;
            if c.json {
                print_json(&r);
                return Ok(());
            }
            let i = &r.impact;
            println!(
                "if {} failed now: {} segment(s) affected; {} would become unreadable, {} would be left at tolerance 0",
                if r.disks.len() == 1 { "this disk".to_owned() } else { format!("these {} disks", r.disks.len()) },
                i.segments,
                i.unreadable_segments,
                i.zero_tolerance_segments
            );
            for f in &i.unreadable_files {
                println!("  unreadable   {}", f.path);
            }
            for f in &i.zero_tolerance_files {
                println!("  tolerance 0  {}", f.path);
            }
        }
    }
    Ok(())
}

/// `wormfs rebalance [--dry-run]`.
pub(super) async fn rebalance(c: &Client, dry_run: bool) -> anyhow::Result<()> {
    let r: RebalanceReport = c
        .send_json(c.req(
            reqwest::Method::POST,
            &format!("/api/v1/rebalance?dry_run={dry_run}"),
        ))
        .await?;
    if c.json {
        print_json(&r);
        return Ok(());
    }
    println!("{}", r.message);
    println!(
        "{:<36} {:>10} {:>10} {:>6} {:>10}",
        "DISK", "FREE", "SIZE", "FREE%", "TO MOVE"
    );
    for d in &r.disks {
        println!(
            "{:<36} {:>10} {:>10} {:>5.1}% {:>10}",
            d.disk_id.to_string(),
            human(d.free_bytes),
            human(d.total_bytes),
            d.free_fraction * 100.0,
            human(d.to_move_bytes)
        );
    }
    Ok(())
}
