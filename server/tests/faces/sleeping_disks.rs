//! Disks that may sleep (docs/operations.md): on one real node with six folder-disks, every
//! disk folder is watched with inotify (IN_OPEN, IN_ACCESS) while the whole tree is listed and
//! stat'ed through the API, walked with PROPFIND through WebDAV and with `find` through
//! `wormfs mount`, and the admin API's status calls are made: no event on any disk, over a window long enough for the node's own
//! timer-driven work (the disk monitor, the sweeper, both on short timers here) to run several
//! rounds. Then a healthy read of one file, through the API, WebDAV and the mount: it opens
//! only that file's data parts, never a parity part nor another file's part.
//!
//! The background work that legitimately wakes disks is out of the window: scrub is off,
//! metadata backups are off (`meta.backup_interval_ms = 0`), nothing needs repair.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::inotify;
use serde_json::Value;

use crate::common::dav::Dav;
use crate::common::mount::Mount;
use crate::common::process::{free_port, wait_for, Server};

/// Small segments (1 MiB of ec:4+2), the disk monitor's tick at its shortest (a tenth of
/// `repair.disk_out_after_ms`, at least 200 ms), a sweep every 200 ms, no scrub, no backups,
/// and the two background loops' rounds in the log.
const ENV: [(&str, &str); 10] = [
    ("WORMFS_STORAGE__BLOCK_SIZE_BYTES", "65536"),
    ("WORMFS_STORAGE__SEGMENT_PART_BYTES", "262144"),
    ("WORMFS_STORAGE__RESERVE_FREE_BYTES", "0"),
    ("WORMFS_REPAIR__DISK_OUT_AFTER_MS", "2000"),
    ("WORMFS_INGEST__SWEEP_INTERVAL_MS", "200"),
    ("WORMFS_INGEST__LEASE_MS", "2000"),
    ("WORMFS_INGEST__ORPHAN_GRACE_MS", "2000"),
    ("WORMFS_SCRUB__ENABLED", "false"),
    ("WORMFS_META__BACKUP_INTERVAL_MS", "0"),
    (
        "WORMFS_LOG",
        "info,openraft=warn,wormfs_server::healing::disk_monitor=debug,wormfs_server::sweeper=debug",
    ),
];

/// Rounds of each background loop a watch window must span.
const ROUNDS: usize = 8;

/// One inotify instance watching every folder under the disks.
struct DiskWatch {
    fd: OwnedFd,
    dirs: HashMap<i32, PathBuf>,
}

/// One event seen on a disk: the path (the folder itself when no name) and what happened.
#[derive(Debug)]
struct Seen {
    path: PathBuf,
    what: String,
}

impl DiskWatch {
    /// Watches `roots` and every folder below them (listed before any watch is added, so the
    /// listing is not seen).
    fn new(roots: &[PathBuf]) -> DiskWatch {
        let mut folders = Vec::new();
        for r in roots {
            folders.extend(folders_under(r));
        }
        let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
            .expect("inotify_init1");
        let mut dirs = HashMap::new();
        for f in folders {
            let wd = inotify::add_watch(
                &fd,
                &f,
                inotify::WatchFlags::OPEN | inotify::WatchFlags::ACCESS,
            )
            .unwrap_or_else(|e| panic!("watch {}: {e}", f.display()));
            dirs.insert(wd, f);
        }
        DiskWatch { fd, dirs }
    }

    /// The events queued since the last call.
    fn drain(&mut self) -> Vec<Seen> {
        let mut buf = [MaybeUninit::uninit(); 8192];
        let mut r = inotify::Reader::new(&self.fd, &mut buf);
        let mut out = Vec::new();
        loop {
            match r.next() {
                Ok(e) => {
                    let flags = e.events();
                    assert!(
                        !flags.contains(inotify::ReadFlags::QUEUE_OVERFLOW),
                        "the inotify queue overflowed"
                    );
                    let Some(dir) = self.dirs.get(&e.wd()) else {
                        continue;
                    };
                    let path = match e.file_name() {
                        Some(n) if !n.to_bytes().is_empty() => {
                            dir.join(n.to_string_lossy().into_owned())
                        }
                        _ => dir.clone(),
                    };
                    out.push(Seen {
                        path,
                        what: format!("{flags:?}"),
                    });
                }
                Err(rustix::io::Errno::AGAIN) => return out,
                Err(e) => panic!("read inotify events: {e}"),
            }
        }
    }
}

/// `dir` and every folder below it.
fn folders_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(folders_under(&e.path()));
        }
    }
    out
}

/// The node's log: how many rounds of the disk monitor and the sweeper it shows, and whether
/// any of them, after line `from`, did a full disk check or listed a disk.
struct Rounds {
    lines: usize,
    monitor: usize,
    sweeps: usize,
    touched: Vec<String>,
}

fn rounds(log: &Path, from: usize) -> Rounds {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let after = &lines[from.min(lines.len())..];
    let monitor: Vec<&&str> = after
        .iter()
        .filter(|l| l.contains("disk monitor round"))
        .collect();
    let sweeps: Vec<&&str> = after.iter().filter(|l| l.contains("sweep round")).collect();
    let touched = monitor
        .iter()
        .filter(|l| !l.contains("full=0"))
        .chain(sweeps.iter().filter(|l| !l.contains("listed=0")))
        .map(|l| l.to_string())
        .collect();
    Rounds {
        lines: lines.len(),
        monitor: monitor.len(),
        sweeps: sweeps.len(),
        touched,
    }
}

/// Waits until both background loops ran [`ROUNDS`] rounds after log line `from`.
fn wait_rounds(log: &Path, from: usize, what: &str) -> Rounds {
    wait_for(60, what, || {
        let r = rounds(log, from);
        (r.monitor >= ROUNDS && r.sweeps >= ROUNDS).then_some(r)
    })
}

/// Waits until the disks have been quiet (no event) for [`ROUNDS`] rounds of both loops,
/// failing after 60 s: a node that keeps touching its idle disks never gets there.
fn settle(w: &mut DiskWatch, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut from = rounds(log, 0).lines;
    let mut last = Vec::new();
    loop {
        let seen = w.drain();
        if !seen.is_empty() {
            from = rounds(log, 0).lines;
            last = seen;
        } else {
            let r = rounds(log, from);
            if r.monitor >= ROUNDS && r.sweeps >= ROUNDS {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the idle disks never went quiet; the last events: {last:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GET `path` on the node's API, with its token when given; the answer must be 200.
fn api_get(s: &Server, token: Option<&str>, path: &str) -> String {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-s", "-S", "-f"]);
    if let Some(token) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {token}"));
    }
    let o = cmd.arg(format!("{}{path}", s.url)).output().unwrap();
    assert!(
        o.status.success(),
        "GET {path}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every file under `dir` in the tree (through the API's listing), and every folder.
fn walk(s: &Server, dir: &str, files: &mut Vec<String>, dirs: &mut Vec<String>) {
    dirs.push(dir.to_owned());
    let ls = s.json(&["ls", dir]);
    for e in ls["entries"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let path = format!("{}/{name}", dir.trim_end_matches('/'));
        if e["kind"] == "dir" {
            walk(s, &path, files, dirs);
        } else {
            files.push(path);
        }
    }
}

/// Percent-encodes a tree path for a URL (the names here are plain ASCII).
fn url(path: &str) -> String {
    path.replace(' ', "%20")
}

/// Part files opened by a read: (segment, part) of `file_id` by their names; any other file
/// opened fails the test.
fn opened_parts(seen: &[Seen], file_id: &str) -> BTreeSet<(u32, u16)> {
    let mut out = BTreeSet::new();
    for e in seen {
        let name = e
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed = name
            .strip_suffix(".wp")
            .and_then(|s| s.split_once("-s"))
            .and_then(|(id, rest)| {
                let (seg, part) = rest.split_once("-p")?;
                Some((id.to_owned(), seg.parse().ok()?, part.parse().ok()?))
            });
        match parsed {
            Some((id, seg, part)) if id == file_id => {
                out.insert((seg, part));
            }
            _ => panic!(
                "a read of file {file_id} touched {} ({}): not one of its parts",
                e.path.display(),
                e.what
            ),
        }
    }
    out
}

/// Checks that a read of the file `stat` describes opened only its data parts (index below
/// `k`), at least one in each segment.
fn only_data_parts(seen: &[Seen], stat: &Value, how: &str) {
    let fid = stat["file_id"].as_str().unwrap();
    let k = stat["geometry"]["k"].as_u64().expect("geometry.k") as u16;
    let m = stat["geometry"]["m"].as_u64().expect("geometry.m") as u16;
    assert!(m > 0, "the file has parity parts: {stat:#}");
    let opened = opened_parts(seen, fid);
    let segments = stat["segments"].as_array().unwrap().len() as u32;
    assert!(segments > 1, "a multi-segment file: {stat:#}");
    for seg in 0..segments {
        assert!(
            opened.iter().any(|(s, _)| *s == seg),
            "{how}: no part of segment {seg} opened: {opened:?} (events: {seen:#?})"
        );
    }
    let parity: Vec<_> = opened.iter().filter(|(_, p)| *p >= k).collect();
    assert!(
        parity.is_empty(),
        "{how}: a healthy read opened parity parts {parity:?} (k = {k}); all opened: {opened:?}"
    );
}

#[test]
fn listings_stats_propfind_and_status_wake_no_disk_and_a_read_wakes_only_its_data_parts() {
    let t = tempfile::tempdir().unwrap();
    let disks: Vec<PathBuf> = (0..6).map(|i| t.path().join(format!("disk{i}"))).collect();
    let mut args = Vec::new();
    for d in &disks {
        args.push("--disk".to_string());
        args.push(d.display().to_string());
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::start_env(t.path(), free_port(), &a, &ENV);
    let token = std::fs::read_to_string(t.path().join("wormfs-data/admin-token"))
        .unwrap()
        .trim()
        .to_owned();

    // Phase 1: a tree of several folders, multi-segment ec:4+2 files (parity on disk) and
    // small files.
    let mut written = BTreeMap::new();
    for (i, (path, size, policy)) in [
        ("/Films/Big One.mkv", 2_500_000usize, Some("ec:4+2")),
        ("/Films/Second.mkv", 2_200_000, Some("ec:4+2")),
        ("/Shows/S1/e1.mkv", 1_500_000, Some("ec:4+2")),
        ("/Shows/S1/e1.srt", 20_000, None),
        ("/Shows/S2/e1.nfo", 900, None),
        ("/Music/Album/track.flac", 300_000, None),
        ("/readme.txt", 10, None),
    ]
    .into_iter()
    .enumerate()
    {
        let parent = &path[..path.rfind('/').unwrap()];
        if !parent.is_empty() {
            s.ok(&["mkdir", "-p", parent]);
        }
        let local = t.path().join(format!("upload{i}"));
        let bytes = crate::common::random_bytes(size, i as u64);
        std::fs::write(&local, &bytes).unwrap();
        let mut put = vec!["put", local.to_str().unwrap(), path];
        if let Some(p) = policy {
            put.extend(["--policy", p]);
        }
        s.ok(&put);
        written.insert(path.to_owned(), bytes);
    }
    // Settled: every file at its policy, nothing queued.
    wait_for(60, "a full health report", || {
        (s.cli(&["health"]).status.code() == Some(0)).then_some(())
    });

    // Phase 2: the watch, and the disks quiet for several rounds of the node's own loops.
    let mut w = DiskWatch::new(&disks);
    settle(&mut w, &s.log);

    // Phase 3: the whole tree listed and every file stat'ed through the API, PROPFIND over
    // WebDAV, the status calls: no event on any disk, until both loops ran again.
    let from = rounds(&s.log, 0).lines;
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(&s, "/", &mut files, &mut dirs);
    assert_eq!(
        files.iter().cloned().collect::<BTreeSet<_>>(),
        written.keys().cloned().collect::<BTreeSet<_>>()
    );
    let mut stats = BTreeMap::new();
    for f in &files {
        stats.insert(f.clone(), s.json(&["stat", f]));
    }
    let dav = Dav::of(&s);
    // Depth: infinity is refused before anything is looked up (docs/clients.md): a client walks
    // the tree with Depth: 1, as done below, folder by folder.
    let inf = dav.curl(&["-X", "PROPFIND", "-H", "Depth: infinity"], "/");
    assert!(
        inf.status == 207 || inf.status == 403,
        "PROPFIND Depth: infinity: {}",
        inf.headers
    );
    for d in &dirs {
        let path = format!("{}/", url(d).trim_end_matches('/'));
        let a = dav.curl(&["-X", "PROPFIND", "-H", "Depth: 1"], &path);
        assert_eq!(a.status, 207, "PROPFIND {path}: {}", a.headers);
    }
    for f in &files {
        let a = dav.curl(&["-X", "PROPFIND", "-H", "Depth: 0"], &url(f));
        assert_eq!(a.status, 207, "PROPFIND {f}: {}", a.headers);
        assert!(a.text().contains("getcontentlength"), "{}", a.text());
    }
    for call in [
        "/api/v1/status",
        "/api/v1/disks",
        "/api/v1/health",
        "/api/v1/health/report",
        "/api/v1/cluster",
    ] {
        api_get(&s, Some(&token), call);
    }
    // `find` over the FUSE mount: every lookup, attribute and listing of the tree.
    let mp = t.path().join("mnt");
    let mount = Mount::start(&s, &mp, &[]);
    let o = std::process::Command::new("find")
        .arg(&mp)
        .args(["-printf", "%y %s %P\n"])
        .output()
        .unwrap();
    assert!(o.status.success(), "find over the mount: {o:?}");
    let found = String::from_utf8_lossy(&o.stdout);
    let found_files: BTreeSet<String> = found
        .lines()
        .filter_map(|l| l.strip_prefix("f "))
        .filter_map(|l| l.split_once(' '))
        .map(|(_, p)| format!("/{p}"))
        .collect();
    assert_eq!(
        found_files,
        written.keys().cloned().collect::<BTreeSet<_>>(),
        "{found}"
    );
    // Loopback needs no token for the metrics (none is configured).
    let metrics = api_get(&s, None, "/metrics");
    assert!(metrics.contains("wormfs_disk_free_bytes"), "{metrics}");
    let seen = w.drain();
    assert!(
        seen.is_empty(),
        "listings, stat, PROPFIND or status calls touched the disks: {seen:#?}"
    );
    let r = wait_rounds(
        &s.log,
        from,
        "the disk monitor and the sweeper to run in the window",
    );
    let seen = w.drain();
    assert!(
        seen.is_empty(),
        "the node touched its idle disks during {} disk monitor and {} sweeper rounds: {seen:#?}",
        r.monitor,
        r.sweeps
    );
    assert!(
        r.touched.is_empty(),
        "a background round checked or listed a disk: {:#?}",
        r.touched
    );

    // Phase 4: a healthy read through the API opens only that file's data parts.
    let big = "/Films/Big One.mkv";
    let out = t.path().join("read-back");
    s.ok(&["get", big, out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == written[big], "bytes differ");
    only_data_parts(&w.drain(), &stats[big], "a GET through the API");

    // And through WebDAV, of another file.
    let second = "/Films/Second.mkv";
    let a = dav.curl(&[], &url(second));
    assert_eq!(a.status, 200, "{}", a.headers);
    assert!(a.body == written[second], "bytes differ");
    only_data_parts(&w.drain(), &stats[second], "a GET through WebDAV");

    // And through the mount, of a third file (never read before: not in any page cache).
    let third = "/Shows/S1/e1.mkv";
    let got = std::fs::read(mp.join("Shows/S1/e1.mkv")).unwrap();
    assert!(got == written[third], "bytes differ");
    only_data_parts(&w.drain(), &stats[third], "a read through the mount");

    mount.signal_term();
    let mut mount = mount;
    assert!(mount.wait_exit().success());
    assert!(s.term().success());
}
