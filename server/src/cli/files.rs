//! A file's bytes: `put` (a file or a folder tree), `get` (to a file, a device or standard
//! output; see docs/cli.md "get"), `append`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use futures::StreamExt;
use indicatif::ProgressBar;

use super::client::{bar, enc, human, print_json, Client};
use super::{exit, CliError};
use crate::api::types::{LocksQuery, PutQuery, WriteResponse};
use wormfs_parts::fsutil::escaped;

/// How `put` stores each file.
pub(super) struct Put<'a> {
    /// `--policy`.
    pub(super) policy: Option<&'a str>,
    /// `--conflict`.
    pub(super) conflict: &'a str,
    /// `--break-locks`.
    pub(super) break_locks: bool,
    /// `--jobs`: files of a tree sent at once.
    pub(super) jobs: usize,
}

/// The size up to which a tree's files go several at a time; a larger one goes alone.
const PARALLEL_UP_TO: u64 = 4 << 20;

/// `wormfs put SRC DEST`: a file, or every file of a folder tree under DEST.
pub(super) async fn put(c: &Client, src: &Path, dest: &str, how: &Put<'_>) -> anyhow::Result<()> {
    let meta = std::fs::metadata(src).with_context(|| format!("read {}", src.display()))?;
    if meta.is_dir() {
        return put_tree(c, src, dest, how).await;
    }
    let r = put_file(c, src, dest, how, None).await?;
    c.report_broken(&r.broken_locks);
    if c.json {
        print_json(&[&r]);
    } else if r.result.skipped {
        println!("{} skipped: {} exists", src.display(), r.result.path);
    } else {
        println!(
            "{} -> {} ({}, {}, blake3 {})",
            src.display(),
            r.result.path,
            human(r.result.size),
            r.result.policy,
            r.result.blake3
        );
        warn_protection(&r);
    }
    Ok(())
}

/// `put` of a folder tree: every file, reported in name order. Small files go `how.jobs` at
/// a time (their commits then share Raft entries on the node, and their parts' fsyncs
/// overlap); a file above [`PARALLEL_UP_TO`] waits for the others and goes alone. A file that
/// cannot be stored (a name that is not UTF-8 or that the tree refuses, a taken name under
/// `--conflict fail`, an unreadable file) is reported and the rest go on; the command then
/// fails with a summary. A failure that every later file would meet too (no node, a wrong
/// token, no quorum or space) stops it at once, with the same summary.
async fn put_tree(c: &Client, src: &Path, dest: &str, how: &Put<'_>) -> anyhow::Result<()> {
    let mut files = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    walk_files(src, &mut files, &mut failed);
    files.sort();
    let mut jobs = Vec::with_capacity(files.len());
    for f in files {
        let rel = f.strip_prefix(src).unwrap_or(&f);
        let Some(rel) = rel.to_str() else {
            failed.push(format!(
                "{}: the name is not valid UTF-8 (WormFS names are UTF-8); rename it",
                escaped(&f)
            ));
            eprintln!("wormfs: {}", failed.last().map_or("", String::as_str));
            continue;
        };
        let d = format!("{}/{}", dest.trim_end_matches('/'), rel);
        // Checked here too, so a name the tree refuses costs no upload.
        if let Err(e) = wormfs_parts::tree_path::TreePath::parse(&d) {
            failed.push(format!("{}: not a name WormFS can store: {e}", escaped(&f)));
            eprintln!("wormfs: {}", failed.last().map_or("", String::as_str));
            continue;
        }
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        jobs.push((f, d, len));
    }
    let total: u64 = jobs.iter().map(|j| j.2).sum();
    let count = jobs.len();
    let pb = if c.json {
        ProgressBar::hidden()
    } else {
        bar(total, format!("0/{count} files"))
    };
    let say = |line: String| {
        if pb.is_hidden() {
            println!("{line}");
        } else {
            pb.println(line);
        }
    };
    let width = how.jobs.max(1);
    let slots = tokio::sync::Semaphore::new(width);
    let mut uploads = futures::stream::iter(jobs)
        .map(|(f, d, len)| {
            let (slots, pb) = (&slots, &pb);
            async move {
                let need = if len <= PARALLEL_UP_TO {
                    1
                } else {
                    width as u32
                };
                let _slot = slots.acquire_many(need).await;
                let r = put_file(c, &f, &d, how, Some(pb)).await;
                (f, r)
            }
        })
        .buffered(width);
    let (mut stored, mut skipped) = (0usize, 0usize);
    let mut results = Vec::new();
    let mut stop = None;
    while let Some((f, r)) = uploads.next().await {
        let r = match r {
            Ok(r) => r,
            Err(e) if stops_a_tree(&e) => {
                stop = Some(e);
                break;
            }
            Err(e) => {
                failed.push(format!("{}: {e:#}", escaped(&f)));
                pb.suspend(|| eprintln!("wormfs: {}", failed.last().map_or("", String::as_str)));
                continue;
            }
        };
        c.report_broken(&r.broken_locks);
        if r.result.skipped {
            skipped += 1;
            if !c.json {
                say(format!("{} skipped: {} exists", f.display(), r.result.path));
            }
        } else {
            stored += 1;
            if !c.json {
                say(format!(
                    "{} -> {} ({})",
                    f.display(),
                    r.result.path,
                    human(r.result.size)
                ));
                pb.suspend(|| warn_protection(&r));
            }
        }
        pb.set_message(format!("{}/{count} files", stored + skipped));
        results.push(r);
    }
    // A stop drops the uploads still running: the node discards what they sent.
    drop(uploads);
    pb.finish_and_clear();
    if c.json {
        print_json(&results);
    } else if !failed.is_empty() || stop.is_some() || skipped > 0 {
        println!(
            "{stored} stored, {skipped} skipped (already there), {} failed",
            failed.len()
        );
    }
    let rerun = format!(
        "run the same put again with --conflict skip to store only what is missing{}",
        if how.conflict == "rename" {
            " (--conflict rename would store every file again under a new name)"
        } else {
            ""
        }
    );
    if let Some(e) = stop {
        let code = super::exit_code(&e);
        return Err(CliError::new(
            code,
            format!(
                "{e:#}\nstopped after {stored} stored, {skipped} skipped, {} failed (uploads \
                 under way when it stopped may have been stored too); once the node is back, \
                 {rerun}",
                failed.len()
            ),
        )
        .into());
    }
    if !failed.is_empty() {
        bail!(CliError::new(
            exit::FAILURE,
            format!(
                "{} file(s) of {} not stored (see above); fix them, then {rerun}",
                failed.len(),
                failed.len() + stored + skipped
            ),
        ));
    }
    Ok(())
}

/// Whether a file's failure would be every later file's too: the node cannot be reached, the
/// token is refused, or the node cannot store now (no quorum, no space).
fn stops_a_tree(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<CliError>() {
        Some(c) => matches!(c.code, exit::AUTH | exit::UNAVAILABLE),
        None => e.downcast_ref::<reqwest::Error>().is_some(),
    }
}

/// On standard error: a file stored with less protection than its policy gives, and what
/// repairs it (parts that could not be written are queued for repair; parts on a machine that
/// holds more than its share, written while a machine was down, are queued to move).
pub(super) fn warn_protection(r: &WriteResponse) {
    let r = &r.result;
    if r.skipped {
        return;
    }
    if r.machines_tolerated < r.policy_machines_tolerated {
        eprintln!(
            "warning: {}: stored with reduced protection: survives {} machine{} until repaired (its policy gives {}){}",
            r.path,
            r.machines_tolerated,
            if r.machines_tolerated == 1 { "" } else { "s" },
            r.policy_machines_tolerated,
            if r.respread_parts > 0 {
                format!(
                    "; {} part(s) queued to move to a machine holding none of their segment, once one is back",
                    r.respread_parts
                )
            } else {
                String::new()
            }
        );
    }
    if r.missing_parts > 0 {
        eprintln!(
            "warning: {}: {} part(s) could not be written: stored with reduced protection; they are queued for repair (`wormfs repair status`)",
            r.path, r.missing_parts
        );
    }
}

/// Streams one local file to DEST, with a progress bar of its own or, in a tree, the tree's.
async fn put_file(
    c: &Client,
    src: &Path,
    dest: &str,
    how: &Put<'_>,
    shared: Option<&ProgressBar>,
) -> anyhow::Result<WriteResponse> {
    let (len, body) = open_for_upload(src).await?;
    let pb = match shared {
        Some(b) => b.clone(),
        None if c.json => ProgressBar::hidden(),
        None => bar(len, dest.to_owned()),
    };
    let body = match body {
        Body::Whole(bytes) => {
            pb.inc(len);
            reqwest::Body::from(bytes)
        }
        Body::Stream(f) => {
            let f = tokio::fs::File::from_std(f);
            let pb2 = pb.clone();
            reqwest::Body::wrap_stream(
                tokio_util::io::ReaderStream::with_capacity(f, 1 << 20).inspect(move |c| {
                    if let Ok(c) = c {
                        pb2.inc(c.len() as u64);
                    }
                }),
            )
        }
    };
    let query = PutQuery {
        policy: how.policy.map(str::to_owned),
        conflict: Some(how.conflict.to_owned()),
        break_locks: how.break_locks,
    };
    let r = c
        .req(
            reqwest::Method::PUT,
            &format!("/api/v1/files/{}", enc(dest)?),
        )
        .query(&query)
        .header("x-wormfs-size", len)
        .body(body)
        .send()
        .await
        .with_context(|| format!("upload to {}", c.base))?;
    let r = c.check(r).await;
    if shared.is_none() {
        pb.finish_and_clear();
    }
    Ok(r?.json().await?)
}

/// A file's bytes to upload: all of them at once, or streamed.
#[derive(Debug)]
enum Body {
    Whole(Vec<u8>),
    Stream(std::fs::File),
}

/// Regular files up to this size are read whole and sent with their length, in one blocking
/// call (open, stat, read, close) rather than a stream of reads each handed to the blocking
/// pool: a folder of small files is mostly that hand-off otherwise (docs/performance.md, "Many
/// small files"). At most `--jobs` of them are in memory at once.
const READ_WHOLE_UP_TO: u64 = 1 << 20;

/// Opens `src` for an upload: its length as first seen, and its bytes, read whole for a
/// regular file of at most [`READ_WHOLE_UP_TO`] bytes, else the open file to stream from its
/// start (a larger file, a pipe or a device: what is announced is the length first seen, and
/// the node refuses an upload whose length differs). A file whose length changed while it was
/// read is streamed from its start through the same descriptor (never opened again: a pipe
/// would lose what was read).
async fn open_for_upload(src: &Path) -> anyhow::Result<(u64, Body)> {
    let path = src.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, Body)> {
        use std::io::{Read, Seek};
        let mut f =
            std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
        let meta = f
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?;
        let len = meta.len();
        if meta.is_file() && len <= READ_WHOLE_UP_TO {
            let mut bytes = Vec::with_capacity(len as usize + 1);
            f.by_ref()
                .take(READ_WHOLE_UP_TO + 1)
                .read_to_end(&mut bytes)
                .with_context(|| format!("read {}", path.display()))?;
            if bytes.len() as u64 == len {
                return Ok((len, Body::Whole(bytes)));
            }
            f.rewind()
                .with_context(|| format!("read {}", path.display()))?;
        }
        Ok((len, Body::Stream(f)))
    })
    .await
    .context("read task")?
}

/// `wormfs append SRC DEST`.
pub(super) async fn append(
    c: &Client,
    src: &Path,
    dest: &str,
    break_locks: bool,
) -> anyhow::Result<()> {
    let f = tokio::fs::File::open(src)
        .await
        .with_context(|| format!("open {}", src.display()))?;
    let rq = c
        .req(
            reqwest::Method::POST,
            &format!("/api/v1/append/{}", enc(dest)?),
        )
        .query(&LocksQuery { break_locks })
        .body(reqwest::Body::wrap_stream(
            tokio_util::io::ReaderStream::with_capacity(f, 1 << 20),
        ));
    let v: WriteResponse = c.send_json(rq).await?;
    c.report_broken(&v.broken_locks);
    if c.json {
        print_json(&v);
    } else {
        println!("{} now {}", dest, human(v.result.size));
        warn_protection(&v);
    }
    Ok(())
}

/// `wormfs get SRC DEST [--range R]`.
pub(super) async fn get(
    c: &Client,
    src: &str,
    dest: &Path,
    range: Option<&str>,
) -> anyhow::Result<()> {
    let mut rq = c.req(
        reqwest::Method::GET,
        &format!("/api/v1/files/{}", enc(src)?),
    );
    if let Some(r) = range {
        rq = rq.header("range", format!("bytes={}", check_range(r)?));
    }
    let to_stdout = dest.as_os_str() == "-";
    // A regular file is written under a temporary name and renamed when complete; an
    // existing device or pipe (/dev/null, a FIFO, /dev/stdout) is written directly,
    // never replaced. A symbolic link to a regular file is replaced by the file (its
    // target is never written); one to a device or pipe is written through.
    let existing = if to_stdout {
        None
    } else {
        std::fs::metadata(dest).ok()
    };
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        bail!(CliError::usage(format!(
            "{} is a folder: name the file to write, such as {}",
            dest.display(),
            dest.join(src.rsplit('/').next().unwrap_or("file"))
                .display()
        )));
    }
    let special = existing.is_some_and(|m| !m.is_file());
    let resp = c
        .check(
            rq.send()
                .await
                .with_context(|| format!("connect to {}", c.base))?,
        )
        .await?;
    if range.is_some() && resp.status() != reqwest::StatusCode::PARTIAL_CONTENT {
        bail!(CliError::new(
            exit::FAILURE,
            format!(
                "the node answered {} without the range; nothing written",
                resp.status()
            )
        ));
    }
    let len = resp.content_length().unwrap_or(0);
    let pb = if c.json || to_stdout {
        ProgressBar::hidden()
    } else {
        bar(len, src.to_owned())
    };
    let (sink, tmp) = if to_stdout {
        (Sink::Stdout, None)
    } else if special {
        let f = tokio::fs::OpenOptions::new()
            .write(true)
            .open(dest)
            .await
            .with_context(|| format!("open {}", dest.display()))?;
        // Swapped for a regular file since it was looked at: never written through.
        if f.metadata().await.is_ok_and(|m| m.is_file()) {
            bail!(
                "{} changed while it was opened; nothing written",
                dest.display()
            );
        }
        (Sink::File(f.into_std().await), None)
    } else {
        let (path, f) = create_temp_beside(dest).await?;
        (Sink::File(f.into_std().await), Some(path))
    };
    let res = download(resp, sink, &pb, src, len).await;
    pb.finish_and_clear();
    let res = match (&tmp, res) {
        (Some(path), Ok((got, Sink::File(f)))) => {
            // The mode a downloaded file has (0666 less the umask), then the name.
            use std::os::unix::fs::PermissionsExt;
            let mode = 0o666 & !umask();
            let named = async {
                f.set_permissions(std::fs::Permissions::from_mode(mode))
                    .with_context(|| format!("chmod {}", path.display()))?;
                drop(f);
                tokio::fs::rename(path, dest)
                    .await
                    .with_context(|| format!("rename to {}", dest.display()))
            };
            named.await.map(|()| got)
        }
        (_, res) => res.map(|(got, _)| got),
    };
    let got = match res {
        Ok(got) => got,
        Err(e) => {
            if let Some(path) = &tmp {
                let _ = tokio::fs::remove_file(path).await;
            }
            return Err(e);
        }
    };
    if c.json && !to_stdout {
        print_json(&serde_json::json!({"path": src, "dest": dest, "bytes": got}));
    }
    Ok(())
}

/// Checks `get --range`: `START-END` (inclusive), `START-` or `-N` (the last N bytes), in
/// digits; anything else (several ranges, signs, spaces, START after END) is a usage error
/// rather than a request the node might answer with the whole file.
fn check_range(r: &str) -> anyhow::Result<&str> {
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let ok = match r.split_once('-') {
        Some(("", n)) => num(n).is_some_and(|n| n > 0),
        Some((a, "")) => num(a).is_some(),
        Some((a, b)) => matches!((num(a), num(b)), (Some(a), Some(b)) if a <= b),
        None => false,
    };
    if !ok {
        bail!(CliError::usage(format!(
            "--range {r:?}: expected one range, START-END (inclusive, START <= END), \
             START- or -COUNT, in bytes; several ranges are not supported"
        )));
    }
    Ok(r)
}

/// The process's umask (set and put back at once: nothing else creates files meanwhile).
fn umask() -> u32 {
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    rustix::process::umask(old);
    old.bits()
}

/// Creates the temporary file for `dest` in `dest`'s folder: a random name, opened with
/// `O_CREAT|O_EXCL|O_NOFOLLOW` and mode 0600, so nothing planted under any name (a symbolic
/// link, a file) is ever followed or reused.
async fn create_temp_beside(dest: &Path) -> anyhow::Result<(PathBuf, tokio::fs::File)> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for _ in 0..16 {
        let tmp = dest.with_file_name(format!(
            ".{name}.{:016x}.wormfs-part",
            rand::random::<u64>()
        ));
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC;
        match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(flags.bits() as i32)
            .open(&tmp)
            .await
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("create {}", tmp.display())),
        }
    }
    bail!("cannot make a temporary file beside {}", dest.display())
}

/// Where a read's bytes go.
enum Sink {
    /// Standard output (`get SRC -`).
    Stdout,
    /// A file: the temporary file beside DEST, or a device or pipe written through.
    File(std::fs::File),
}

impl Sink {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match self {
            Sink::Stdout => std::io::stdout().lock().write_all(buf),
            Sink::File(f) => f.write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        match self {
            Sink::Stdout => std::io::stdout().lock().flush(),
            Sink::File(f) => f.flush(),
        }
    }
}

/// Chunks smaller than this are gathered into writes of four times as much.
const GATHER: usize = 256 << 10;

/// Writes a read's body to `sink`; the bytes written and the sink, or why the read fell short.
///
/// The writes are plain blocking writes from this task: the bytes hyper received go to the
/// kernel as they are, without a copy into an async buffer, a hop through the runtime's
/// blocking pool or a wake-up of another thread per write (`get` ran at 0.64x of nginx + curl
/// with those). A CLI runs nothing else meanwhile, and the connection is driven by another
/// worker while a write waits (on a slow pipe, for instance).
async fn download(
    resp: reqwest::Response,
    mut sink: Sink,
    pb: &ProgressBar,
    src: &str,
    len: u64,
) -> anyhow::Result<(u64, Sink)> {
    let mut got = 0u64;
    let mut body = resp.bytes_stream();
    let mut gathered: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            CliError::new(
                exit::UNAVAILABLE,
                format!(
                    "read of {src} failed after {got} bytes: the node cut the transfer short \
                     ({e}); a part of the file may be unreadable there: its log says which"
                ),
            )
        })?;
        if gathered.is_empty() && chunk.len() >= GATHER {
            sink.write_all(&chunk)?;
        } else {
            gathered.extend_from_slice(&chunk);
            if gathered.len() >= 4 * GATHER {
                sink.write_all(&gathered)?;
                gathered.clear();
            }
        }
        got += chunk.len() as u64;
        pb.inc(chunk.len() as u64);
    }
    sink.write_all(&gathered)?;
    sink.flush()?;
    if got != len {
        bail!(CliError::new(
            exit::UNAVAILABLE,
            format!("read of {src} ended after {got} of {len} bytes")
        ));
    }
    Ok((got, sink))
}

/// Every regular file under `root`; a folder that cannot be read is noted in `failed` (and on
/// standard error) and the rest is walked.
fn walk_files(root: &Path, out: &mut Vec<PathBuf>, failed: &mut Vec<String>) {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) => {
            failed.push(format!("{}: cannot read the folder: {e}", escaped(root)));
            eprintln!("wormfs: {}", failed.last().map_or("", String::as_str));
            return;
        }
    };
    for e in entries {
        let e = match e {
            Ok(e) => e,
            Err(e) => {
                failed.push(format!("{}: cannot read the folder: {e}", escaped(root)));
                eprintln!("wormfs: {}", failed.last().map_or("", String::as_str));
                continue;
            }
        };
        match e.file_type() {
            Ok(t) if t.is_dir() => walk_files(&e.path(), out, failed),
            Ok(t) if t.is_file() => out.push(e.path()),
            Ok(_) => {}
            Err(err) => {
                failed.push(format!("{}: {err}", escaped(&e.path())));
                eprintln!("wormfs: {}", failed.last().map_or("", String::as_str));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regular files up to the limit are read whole (every byte); larger ones are streamed
    /// from their start, announcing their length; a missing file is an error that names it.
    #[tokio::test]
    async fn small_files_are_read_whole_and_larger_ones_streamed() {
        let t = tempfile::tempdir().unwrap();
        let at_limit = t.path().join("at-limit");
        let bytes: Vec<u8> = (0..READ_WHOLE_UP_TO).map(|i| (i % 251) as u8).collect();
        std::fs::write(&at_limit, &bytes).unwrap();
        match open_for_upload(&at_limit).await.unwrap() {
            (len, Body::Whole(got)) => {
                assert_eq!(len, READ_WHOLE_UP_TO);
                assert_eq!(got, bytes);
            }
            other => panic!("{other:?}"),
        }
        let empty = t.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            open_for_upload(&empty).await.unwrap(),
            (0, Body::Whole(b)) if b.is_empty()
        ));
        let over = t.path().join("over");
        std::fs::write(&over, vec![1u8; READ_WHOLE_UP_TO as usize + 1]).unwrap();
        match open_for_upload(&over).await.unwrap() {
            (len, Body::Stream(mut f)) => {
                assert_eq!(len, READ_WHOLE_UP_TO + 1);
                let mut all = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut all).unwrap();
                assert_eq!(
                    all.len() as u64,
                    READ_WHOLE_UP_TO + 1,
                    "streamed from the start"
                );
            }
            other => panic!("{other:?}"),
        }
        let missing = t.path().join("missing");
        let err = format!("{:#}", open_for_upload(&missing).await.unwrap_err());
        assert!(err.contains("open") && err.contains("missing"), "{err}");
    }

    /// A pipe is never read whole (its length says nothing): it is streamed through the one
    /// descriptor, every byte of it, and announced as its stat says (0), so the node refuses a
    /// non-empty one rather than storing part of it.
    #[tokio::test]
    async fn a_pipe_is_streamed_whole_never_read_twice() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let n = READ_WHOLE_UP_TO as usize + 1;
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::write(&fifo, vec![9u8; n]).unwrap())
        };
        match open_for_upload(&fifo).await.unwrap() {
            (0, Body::Stream(mut f)) => {
                let mut all = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut all).unwrap();
                assert_eq!(all.len(), n, "every byte of the pipe");
            }
            other => panic!("{other:?}"),
        }
        writer.join().unwrap();
    }
}
