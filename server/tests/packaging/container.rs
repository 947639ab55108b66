//! The container image (packaging/container/), built by its own script and run for real: one
//! node with a data volume and three disks that keeps a file across a new container, a clean
//! `docker stop` in the middle of an ingest, a cluster of three containers on a private Docker
//! network that lives through a real partition (`docker network disconnect`) and the loss of
//! its leader (`docker kill`), and the docker-compose example started as users get it.
//!
//! Disks are host folders bind-mounted at /disks/diskN and given to the image's user first, as
//! docs/install.md tells users (a disk is a host filesystem; a named volume would live on
//! Docker's own disk); the data folder is a named volume, which takes the image's /data owner.
//! Every wait has a deadline; nothing asserts a duration.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    docker, docker_any, image, ok, repo, require_docker, run, temp_dir, unique, wait_for,
    wait_healthy, Container, Network, Volume,
};

/// The image's default user (TrueNAS's apps user).
const UID: u32 = 568;

/// The largest the image may be (issue 18: under 40 MB).
const MAX_IMAGE_BYTES: u64 = 40_000_000;

const MIB: usize = 1024 * 1024;

// ---- helpers ----------------------------------------------------------------------------

/// `len` bytes that look random (BLAKE3's output stream of `seed`): no compression or
/// deduplication can shorten them.
fn random_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// A host folder owned by the image's user, as the docs tell users to make their disks and
/// data folder (`mkdir`, `chown 568:568`).
fn owned_dir(parent: &Path, name: &str) -> PathBuf {
    let d = parent.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(UID), Some(UID)).unwrap();
    d
}

/// The `-v` arguments of a node: its data volume at /data and each disk folder at
/// /disks/disk1, /disks/disk2, ...
fn mounts(data: &Volume, disks: &[PathBuf]) -> Vec<String> {
    let mut v = vec!["-v".to_owned(), format!("{}:/data", data.0)];
    for (i, d) in disks.iter().enumerate() {
        v.push("-v".to_owned());
        v.push(format!("{}:/disks/disk{}", d.display(), i + 1));
    }
    v
}

/// Starts a node from the image (`docker run -d`, the image's own command, `serve`) with
/// Docker's health check every 2 s (the image's interval is 30 s).
fn start(img: &str, name: &str, extra: &[String]) -> Container {
    let mut args: Vec<String> = ["run", "-d", "--name", name, "--health-interval", "2s"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().cloned());
    args.push(img.to_owned());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&a);
    Container(name.to_owned())
}

/// `docker run --rm` of a one-off command of the image (`init`, `join-token`) on a node's
/// volumes, with no network; its stdout.
fn one_off(img: &str, vols: &[String], cmd: &[&str]) -> String {
    let mut args: Vec<&str> = vec!["run", "--rm", "--network", "none"];
    args.extend(vols.iter().map(String::as_str));
    args.push(img);
    args.extend(cmd);
    docker(&args)
}

/// `docker exec C /wormfs ARGS` (the CLI in the container finds the token in /data).
fn exec(c: &str, args: &[&str]) -> Output {
    run(Command::new("docker")
        .args(["exec", c, "/wormfs"])
        .args(args))
}

/// `docker exec C /wormfs ARGS` that must succeed; its stdout.
fn exec_ok(c: &str, args: &[&str]) -> String {
    ok(Command::new("docker")
        .args(["exec", c, "/wormfs"])
        .args(args))
}

/// `docker exec C /wormfs --json ARGS`, parsed; `None` when it fails.
fn exec_json(c: &str, args: &[&str]) -> Option<Value> {
    let o = run(Command::new("docker")
        .args(["exec", c, "/wormfs", "--json"])
        .args(args));
    if !o.status.success() {
        return None;
    }
    serde_json::from_slice(&o.stdout).ok()
}

/// Stores a host file at `dest` through the CLI in the container: `docker cp` puts it in the
/// container (scratch has no shell), `wormfs put` stores it.
fn put(c: &str, src: &Path, dest: &str) -> Output {
    let inside = format!("/upload-{}", unique("file"));
    docker(&["cp", src.to_str().unwrap(), &format!("{c}:{inside}")]);
    exec(c, &["put", &inside, dest])
}

/// Like [`put`], and it must succeed.
fn put_ok(c: &str, src: &Path, dest: &str) {
    let o = put(c, src, dest);
    assert!(
        o.status.success(),
        "put {dest} through {c} failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A file's bytes read through the CLI in the container (`wormfs get PATH -`).
fn get(c: &str, path: &str) -> Option<Vec<u8>> {
    let o = exec(c, &["get", path, "-"]);
    o.status.success().then_some(o.stdout)
}

/// The host port Docker published for the container's `port`/tcp (on 127.0.0.1).
fn published(c: &str, port: u16) -> u16 {
    let out = docker(&["port", c, &format!("{port}/tcp")]);
    let line = out.lines().next().unwrap_or_default();
    line.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("docker port {c} {port}: {out:?}"))
}

/// The generated WebDAV login (`admin:PASSWORD`), from /data/webdav-admin.txt, which the
/// first start writes (`docker cp` it out: the container has no cat).
fn admin_login(c: &str, scratch: &Path) -> String {
    let dest = scratch.join(unique("admin.txt"));
    wait_for(60, "webdav-admin.txt", || {
        docker_any(&[
            "cp",
            &format!("{c}:/data/webdav-admin.txt"),
            dest.to_str().unwrap(),
        ])
        .status
        .success()
        .then_some(())
    });
    let text = std::fs::read_to_string(&dest).unwrap();
    let pw = text
        .lines()
        .find_map(|l| l.strip_prefix("password = "))
        .unwrap_or_else(|| panic!("no password line in webdav-admin.txt: {text}"));
    format!("admin:{}", pw.trim())
}

/// GET over WebDAV from the host with curl; the body, or `None` unless 200.
fn dav_get(port: u16, login: &str, path: &str, scratch: &Path) -> Option<Vec<u8>> {
    let out = scratch.join(unique("dav-get"));
    let o = run(Command::new("curl")
        .args(["-sS", "-f", "--max-time", "60", "-u", login, "-o"])
        .arg(&out)
        .arg(format!("http://127.0.0.1:{port}{path}")));
    let body = o.status.success().then(|| std::fs::read(&out).unwrap());
    let _ = std::fs::remove_file(&out);
    body
}

/// The uid the container's main process runs as, read from /proc on the host.
fn process_uid(c: &str) -> u32 {
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", c]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let uids: Vec<u32> = line[4..]
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect();
    assert!(
        uids.iter().all(|u| *u == uids[0]),
        "{c} runs with mixed uids: {line}"
    );
    uids[0]
}

/// Every file under `dir` with its owner, for checking what the node wrote.
fn owners_under(dir: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                todo.push(e.path());
            }
            out.push((e.path(), m.uid()));
        }
    }
    out
}

/// The image's filesystem as `tar -tv --numeric-owner` lists it (`docker export` of a
/// created, never started, container).
fn image_listing(img: &str) -> String {
    let c = Container(unique("listing"));
    docker(&["create", "--name", &c.0, img]);
    let mut export = Command::new("docker")
        .args(["export", c.0.as_str()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let o = run(Command::new("tar")
        .args(["-tv", "--numeric-owner", "-f", "-"])
        .stdin(export.stdout.take().unwrap()));
    assert!(export.wait().unwrap().success(), "docker export failed");
    assert!(o.status.success(), "tar of the exported image failed");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The owner (`uid/gid`) of `path` (as tar names it, e.g. `data/`) in a listing.
fn listed_owner(listing: &str, path: &str) -> String {
    listing
        .lines()
        .find(|l| l.split_whitespace().last() == Some(path))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("{path} is not in the image:\n{listing}"))
        .to_owned()
}

/// `wormfs --json cluster` through `c`.
fn cluster(c: &str) -> Option<Value> {
    exec_json(c, &["cluster"])
}

fn voters(v: &Value) -> usize {
    v["members"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["role"] == "voter").count())
        .unwrap_or(0)
}

/// A private (`--internal`) Docker network with a subnet of its own, so that a container can
/// be reconnected at the address it had; and the subnet's first three octets.
fn private_network() -> (Network, String) {
    let seed = blake3::hash(format!("{}-{:?}", std::process::id(), Instant::now()).as_bytes());
    for attempt in 0..64u8 {
        let b = seed.as_bytes()[attempt as usize % 32].wrapping_add(attempt);
        let prefix = format!("10.213.{b}");
        let name = unique("net");
        let o = docker_any(&[
            "network",
            "create",
            "--internal",
            "--subnet",
            &format!("{prefix}.0/24"),
            &name,
        ]);
        if o.status.success() {
            return (Network(name), prefix);
        }
        // Another network holds that subnet: try another.
    }
    panic!("no free 10.213.X.0/24 subnet for a test network");
}

/// A docker-compose project, taken down (with its volumes) when dropped.
struct Compose {
    project: String,
    files: Vec<PathBuf>,
}

impl Compose {
    fn cmd(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.arg("-p").arg(&self.project);
        for f in &self.files {
            c.arg("-f").arg(f);
        }
        c
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let o = run(self.cmd().args(["logs", "--no-color", "--tail", "60"]));
            eprintln!(
                "--- compose logs:\n{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let _ = run(self
            .cmd()
            .args(["down", "-v", "--remove-orphans", "-t", "20"]));
    }
}

fn show(o: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---- tests ------------------------------------------------------------------------------

/// The image as built (size, user, environment, health check, owners), then one node from it:
/// a file stored through the CLI in the container, read over WebDAV from the host, still there
/// (byte for byte) in a new container on the same volumes.
#[test]
fn one_node_keeps_a_file_across_a_new_container() {
    let img = image();
    let kind = std::fs::read_to_string(crate::support::target_dir().join("packaging/bin/KIND"))
        .unwrap_or_default();
    let size: u64 = docker(&["image", "inspect", "-f", "{{.Size}}", &img])
        .parse()
        .unwrap();
    eprintln!(
        "image {img}: {size} bytes ({:.1} MB), binary {}",
        size as f64 / 1e6,
        kind.trim()
    );
    assert!(
        size < MAX_IMAGE_BYTES,
        "the image is {size} bytes, over 40 MB"
    );
    assert_eq!(
        docker(&["image", "inspect", "-f", "{{.Config.User}}", &img]),
        "568:568",
        "the image's default user"
    );
    let env = docker(&["image", "inspect", "-f", "{{json .Config.Env}}", &img]);
    for want in [
        "SQLITE_TMPDIR=/data/tmp",
        "WORMFS_DATA_DIR=/data",
        "WORMFS_CONFIG=/etc/wormfs/wormfs.toml",
    ] {
        assert!(
            env.contains(want),
            "{want} missing from the image's environment: {env}"
        );
    }
    let hc = docker(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Healthcheck}}",
        &img,
    ]);
    assert!(
        hc.contains(r#""CMD","/wormfs","healthcheck","--container""#),
        "the image's HEALTHCHECK must run the binary's container check: {hc}"
    );
    let listing = image_listing(&img);
    for dir in ["data/", "data/tmp/", "disks/"] {
        assert_eq!(
            listed_owner(&listing, dir),
            "568/568",
            "owner of /{dir} in the image"
        );
    }
    assert!(
        listing
            .lines()
            .any(|l| l.ends_with(" data/") && l.starts_with("drwx------")),
        "/data should be private to the node (0700):\n{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.ends_with(" wormfs") && l.starts_with("-rwxr-xr-x")),
        "no executable /wormfs in the image:\n{listing}"
    );

    let t = temp_dir();
    let data = Volume::create("data");
    let disks: Vec<PathBuf> = (1..=3)
        .map(|n| owned_dir(t.path(), &format!("disk{n}")))
        .collect();
    let mut args = mounts(&data, &disks);
    args.extend(["-p".to_owned(), "127.0.0.1::7711".to_owned()]);
    // Any key by environment (`WORMFS_<SECTION>__<KEY>`), over the image's file.
    args.extend(["-e".to_owned(), "WORMFS_NODE__NAME=films-box".to_owned()]);

    let c = start(&img, &unique("one"), &args);
    wait_healthy(&c.0, 120);
    let logs = docker_any(&["logs", &c.0]);
    let logs = String::from_utf8_lossy(&logs.stderr);
    assert!(
        !logs.contains("open to other users"),
        "the image's /data should need no fixing at start:\n{logs}"
    );
    let v = cluster(&c.0).expect("wormfs cluster");
    assert_eq!(
        v["members"][0]["name"], "films-box",
        "WORMFS_NODE__NAME: {v}"
    );
    assert_eq!(
        process_uid(&c.0),
        UID,
        "the node must run as the image's user"
    );
    let disks_json = exec_json(&c.0, &["disks"]).expect("wormfs disks");
    let text = disks_json.to_string();
    for n in 1..=3 {
        assert!(
            text.contains(&format!("/disks/disk{n}")),
            "disk{n} is not one of the node's disks: {text}"
        );
    }

    let bytes = random_bytes("one node", 6 * MIB + 12_345);
    let src = t.path().join("film.bin");
    std::fs::write(&src, &bytes).unwrap();
    exec_ok(&c.0, &["mkdir", "-p", "/films"]);
    put_ok(&c.0, &src, "/films/film.bin");
    let login = admin_login(&c.0, t.path());
    let port = published(&c.0, 7711);
    let got = dav_get(port, &login, "/films/film.bin", t.path()).expect("WebDAV GET");
    assert!(
        got == bytes,
        "WebDAV gave other bytes ({} of {})",
        got.len(),
        bytes.len()
    );
    // What the node wrote on the disks belongs to its user (the host sees the same owner).
    let written: Vec<_> = disks.iter().flat_map(|d| owners_under(d)).collect();
    assert!(!written.is_empty(), "nothing written on the disks");
    let foreign: Vec<_> = written.iter().filter(|(_, u)| *u != UID).collect();
    assert!(
        foreign.is_empty(),
        "files on the disks not owned by {UID}: {foreign:?}"
    );

    // A new container (as after an upgrade: `docker rm -f`, then `docker run` again on the
    // same volumes).
    let name = c.0.clone();
    drop(c);
    assert!(
        !docker_any(&["inspect", &name]).status.success(),
        "the first container is still there"
    );
    let c2 = start(&img, &unique("one-again"), &args);
    wait_healthy(&c2.0, 120);
    let port = published(&c2.0, 7711);
    let got = wait_for(60, "the file over WebDAV from the new container", || {
        dav_get(port, &login, "/films/film.bin", t.path())
    });
    assert!(
        got == bytes,
        "after a new container: other bytes ({} of {})",
        got.len(),
        bytes.len()
    );
    let st = exec_json(&c2.0, &["stat", "/films/film.bin"]).expect("stat");
    assert_eq!(st["blake3"], blake3::hash(&bytes).to_hex().as_str(), "{st}");
}

/// `docker stop -t 10` while a large upload is streaming in over WebDAV: the node exits by
/// itself (status 0), not killed at the deadline (137); nothing half-written is visible after,
/// and the node starts again on the same volumes and takes writes.
#[test]
fn docker_stop_during_an_ingest_is_clean_and_the_node_starts_again() {
    let img = image();
    let t = temp_dir();
    let data = Volume::create("data");
    let disks: Vec<PathBuf> = (1..=3)
        .map(|n| owned_dir(t.path(), &format!("disk{n}")))
        .collect();
    // A config file mounted over the image's: the image's own, with WebDAV moved to 8711.
    let image_cfg =
        std::fs::read_to_string(repo().join("packaging/container/wormfs.toml")).unwrap();
    assert!(image_cfg.contains(r#"listen = "0.0.0.0:7711""#));
    let cfg = t.path().join("wormfs.toml");
    std::fs::write(
        &cfg,
        image_cfg.replace(r#"listen = "0.0.0.0:7711""#, r#"listen = "0.0.0.0:8711""#),
    )
    .unwrap();
    let mut args = mounts(&data, &disks);
    args.extend(
        [
            "-v",
            &format!("{}:/etc/wormfs/wormfs.toml:ro", cfg.display()),
            "-p",
            "127.0.0.1::8711",
        ]
        .map(str::to_owned),
    );
    let c = start(&img, &unique("stop"), &args);
    wait_healthy(&c.0, 120);
    let login = admin_login(&c.0, t.path());
    let port = published(&c.0, 8711);

    // curl PUTs its stdin (chunked), which this test feeds: the upload is still under way,
    // by construction, when the stop comes.
    let mut curl = Command::new("curl")
        .args(["-sS", "-f", "-u", login.as_str(), "-T", "-"])
        .arg(format!("http://127.0.0.1:{port}/big.bin"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = curl.stdin.take().unwrap();
    let (fed_tx, fed_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let feeder = std::thread::spawn(move || {
        let chunk = random_bytes("big", MIB);
        for _ in 0..48 {
            if stdin.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = fed_tx.send(());
        // Holds the upload open until the node has been stopped, then ends it.
        let _ = go_rx.recv();
        let _ = stdin.write_all(&chunk);
    });
    fed_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("48 MiB of the upload taken by the node within 120 s");
    assert!(
        curl.try_wait().unwrap().is_none(),
        "the upload ended before the stop"
    );

    let stopping = Instant::now();
    docker(&["stop", "-t", "10", &c.0]);
    eprintln!(
        "docker stop -t 10 during the upload returned after {:?}",
        stopping.elapsed()
    );
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &c.0]);
    let logs = docker_any(&["logs", "--tail", "30", &c.0]);
    assert_eq!(
        code,
        "0",
        "docker stop during an ingest: exit status {code} (137: killed at the deadline)\n{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    let _ = go_tx.send(());
    feeder.join().unwrap();
    let curl_out = curl.wait_with_output().unwrap();
    assert!(
        !curl_out.status.success(),
        "the interrupted upload was acknowledged: {}",
        show(&curl_out)
    );

    // The same container started again (what `restart: unless-stopped` does after a reboot).
    docker(&["start", &c.0]);
    wait_healthy(&c.0, 120);
    let names = exec_json(&c.0, &["ls", "/"]).expect("ls /").to_string();
    assert!(
        !names.contains("big.bin"),
        "the interrupted upload is visible: {names}"
    );
    let small = random_bytes("after the stop", 2 * MIB + 7);
    let src = t.path().join("after.bin");
    std::fs::write(&src, &small).unwrap();
    put_ok(&c.0, &src, "/after.bin");
    assert!(get(&c.0, "/after.bin").as_deref() == Some(&small[..]));
}

/// Three containers on a private network (static peers by container name, the secret shared
/// with `init` / `join-token` / `init --join`): written through one, read through another; one
/// cut off with `docker network disconnect` while the other two take writes, then reconnected
/// (it catches up); the leader killed with `docker kill`: the two left elect a leader and every
/// acknowledged file reads back byte for byte through them.
#[test]
fn three_containers_survive_a_partition_and_the_loss_of_the_leader() {
    let img = image();
    let t0 = Instant::now();
    let (net, prefix) = private_network();
    let t = temp_dir();
    let names: Vec<String> = ["a", "b", "c"].iter().map(|n| unique(n)).collect();
    let ips: Vec<String> = (0..3).map(|i| format!("{prefix}.{}", 11 + i)).collect();
    let datas: Vec<Volume> = (0..3).map(|_| Volume::create("data")).collect();
    // Three disks each: nine in the cluster, so `auto` is ec:4+2 and two machines can take a
    // write quorum (k + 1 = 5 parts) while the third is cut off.
    let vols: Vec<Vec<String>> = (0..3)
        .map(|i| {
            let disks: Vec<PathBuf> = (1..=3)
                .map(|n| owned_dir(t.path(), &format!("m{i}-disk{n}")))
                .collect();
            mounts(&datas[i], &disks)
        })
        .collect();

    // The secret, the documented way: made on the first, its token taken to the others.
    one_off(&img, &vols[0], &["init"]);
    let token = one_off(&img, &vols[0], &["join-token"]);
    let token = token.lines().last().unwrap().trim().to_owned();
    assert!(
        token.starts_with("wormfs-join-"),
        "join-token printed {token:?}"
    );
    for v in &vols[1..] {
        one_off(&img, v, &["init", "--join", &token]);
    }

    let mut cs: Vec<Option<Container>> = (0..3)
        .map(|i| {
            let peers: Vec<String> = (0..3)
                .filter(|&j| j != i)
                .map(|j| format!("{}:7712", names[j]))
                .collect();
            let mut args: Vec<String> = vec![
                "--network".into(),
                net.0.clone(),
                "--ip".into(),
                ips[i].clone(),
                "--hostname".into(),
                names[i].clone(),
                "-e".into(),
                format!("WORMFS_CLUSTER__PEERS={}", peers.join(",")),
            ];
            args.extend(vols[i].iter().cloned());
            Some(start(&img, &names[i], &args))
        })
        .collect();
    let name = |i: usize| names[i].as_str();

    let v = wait_for(120, "three voters and a leader", || {
        let v = cluster(name(0))?;
        (voters(&v) == 3 && v["leader"].is_u64()).then_some(v)
    });
    let cluster_id = v["cluster_id"].clone();
    let mut ids = Vec::new();
    for i in 0..3 {
        let c = wait_for(60, "each node in the cluster", || cluster(name(i)));
        assert_eq!(
            c["cluster_id"],
            cluster_id,
            "{} is in another cluster: {c}",
            name(i)
        );
        ids.push(c["node_id"].as_u64().unwrap());
    }
    for i in 0..3 {
        wait_healthy(name(i), 120);
    }
    eprintln!("{:?}: three voters, a leader, all healthy", t0.elapsed());
    let index_of = |id: u64| ids.iter().position(|x| *x == id).unwrap();

    // Written through one, read through another.
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    let f1 = random_bytes("cluster one", 5 * MIB + 3);
    let src = t.path().join("f1");
    std::fs::write(&src, &f1).unwrap();
    put_ok(name(0), &src, "/one.bin");
    let got = wait_for(60, "/one.bin through the second node", || {
        get(name(1), "/one.bin")
    });
    assert!(got == f1, "the second node read other bytes");
    acked.push(("/one.bin".into(), f1));

    // A real partition: a follower loses its network.
    let leader = index_of(cluster(name(0)).unwrap()["leader"].as_u64().unwrap());
    let cut = (0..3).find(|&i| i != leader).unwrap();
    let other = (0..3).find(|&i| i != leader && i != cut).unwrap();
    docker(&["network", "disconnect", &net.0, name(cut)]);
    for (path, seed, len) in [
        ("/during-1.bin", "during one", 4 * MIB + 1),
        ("/during-2.bin", "during two", 300 * 1024),
    ] {
        let bytes = random_bytes(seed, len);
        let src = t.path().join(seed.replace(' ', "-"));
        std::fs::write(&src, &bytes).unwrap();
        put_ok(name(other), &src, path);
        acked.push((path.into(), bytes));
    }
    // The cut-off machine took no part: a segment of ec:4+2 on two machines (three parts each)
    // survives no machine until repair spreads it again.
    let st = exec_json(name(other), &["stat", "/during-1.bin"]).expect("stat /during-1.bin");
    assert_eq!(
        st["tolerance"]["machines"], 0,
        "written during the partition, /during-1.bin should be on two machines only: {}",
        st["tolerance"]
    );
    eprintln!(
        "{:?}: two files written without the cut-off node",
        t0.elapsed()
    );
    // Cut off, it knows no leader: its health check says down (exit 1 with --container).
    wait_for(90, "the cut-off node's health check to say down", || {
        let o = exec(name(cut), &["healthcheck", "--container", "--timeout", "3"]);
        (o.status.code() == Some(1)).then_some(())
    });

    // Reconnected at its address: it catches up (reads what was written without it).
    eprintln!("{:?}: the cut-off node says down", t0.elapsed());
    docker(&["network", "connect", "--ip", &ips[cut], &net.0, name(cut)]);
    for (path, bytes) in &acked {
        let got = wait_for(120, &format!("{path} through the reconnected node"), || {
            get(name(cut), path)
        });
        assert!(
            got == *bytes,
            "{path}: the reconnected node read other bytes"
        );
    }
    // What was written without it is spread back over the three machines (repair moves the
    // surplus parts to it): each file survives the loss of any one machine again.
    for (path, _) in &acked {
        wait_for(180, &format!("{path} to survive one machine again"), || {
            let st = exec_json(name(leader), &["stat", path])?;
            (st["tolerance"]["machines"].as_u64()? >= 1).then_some(())
        });
    }
    wait_healthy(name(cut), 120);
    eprintln!(
        "{:?}: reconnected, caught up, files spread again",
        t0.elapsed()
    );

    // The leader killed.
    let leader = index_of(cluster(name(other)).unwrap()["leader"].as_u64().unwrap());
    let old_leader_id = ids[leader];
    docker(&["kill", name(leader)]);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let new_leader = wait_for(120, "a new leader", || {
        let v = cluster(name(survivors[0]))?;
        v["leader"].as_u64().filter(|l| *l != old_leader_id)
    });
    assert!(survivors.contains(&index_of(new_leader)));
    eprintln!(
        "{:?}: leader {old_leader_id} killed, {new_leader} leads",
        t0.elapsed()
    );
    for &s in &survivors {
        for (path, bytes) in &acked {
            let reading = Instant::now();
            let got = wait_for(60, &format!("{path} through {}", name(s)), || {
                get(name(s), path)
            });
            eprintln!("{path} read through {} in {:?}", name(s), reading.elapsed());
            assert!(
                got == *bytes,
                "{path} through {} after the leader was killed: other bytes",
                name(s)
            );
        }
    }
    // And the two take writes.
    let f4 = random_bytes("after the leader", 2 * MIB);
    let src = t.path().join("f4");
    std::fs::write(&src, &f4).unwrap();
    put_ok(name(survivors[0]), &src, "/after.bin");
    eprintln!("{:?}: written after the failover", t0.elapsed());
    let got = wait_for(60, "/after.bin through the other survivor", || {
        get(name(survivors[1]), "/after.bin")
    });
    assert!(got == f4);
    // Removed before the network (declared first, dropped last).
    cs.iter_mut().for_each(|c| drop(c.take()));
    drop(net);
}

/// The two mistakes a container makes easy, each stopping the node before it writes anything,
/// with a message that names the folder and the fix: a disk folder the image's user cannot
/// write (a bind mount left to root), and a "disk" that is a folder of the container's own
/// filesystem (no volume mounted there: it would go away with the container).
#[test]
fn folders_the_node_cannot_use_stop_it_with_the_fix() {
    let img = image();
    let t = temp_dir();
    let good = owned_dir(t.path(), "disk1");
    let roots = t.path().join("disk2");
    std::fs::create_dir_all(&roots).unwrap();
    // The container stops by itself, not 0, its log saying each of `wants`, and nothing was
    // written on the good disk first.
    let refused = |c: &Container, ran: &str, wants: &[&str]| {
        wait_for(60, &format!("{} to stop by itself", c.0), || {
            (docker(&["inspect", "-f", "{{.State.Running}}", &c.0]) == "false").then_some(())
        });
        let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &c.0]);
        let logs = String::from_utf8_lossy(&docker_any(&["logs", &c.0]).stderr).into_owned();
        assert_ne!(code, "0", "{ran}: {logs}");
        for want in wants {
            assert!(
                logs.contains(want),
                "the error should say {want:?}:\n{logs}"
            );
        }
        let written: Vec<_> = owners_under(&good);
        assert!(
            written.is_empty(),
            "written before the refusal: {written:?}"
        );
    };

    // A bind-mounted disk owned by root.
    let c = Container(unique("root-disk"));
    docker(&[
        "run",
        "-d",
        "--name",
        &c.0,
        "-v",
        &format!("{}:/disks/disk1", good.display()),
        "-v",
        &format!("{}:/disks/disk2", roots.display()),
        &img,
    ]);
    refused(
        &c,
        "a node with a disk it cannot write ran",
        &[
            "/disks/disk2",
            "uid 568",
            "chown -R 568:568 /disks/disk2",
            "--user",
        ],
    );
    drop(c);

    // A folder of the container's own layer under /disks (made with `docker cp` before the
    // start; as root, so that only the mount check can refuse it).
    let c = Container(unique("layer-disk"));
    docker(&[
        "create",
        "--name",
        &c.0,
        "--user",
        "0:0",
        "-v",
        &format!("{}:/disks/disk1", good.display()),
        &img,
    ]);
    let empty = t.path().join("disk9");
    std::fs::create_dir_all(&empty).unwrap();
    docker(&[
        "cp",
        empty.to_str().unwrap(),
        &format!("{}:/disks/disk9", c.0),
    ]);
    docker(&["start", &c.0]);
    refused(
        &c,
        "a node with an unmounted disk ran",
        &["/disks/disk9", "not a mounted volume"],
    );
}

/// packaging/container/docker-compose.yaml as users get it, with an override the test adds
/// (a bridge network with published 127.0.0.1 ports instead of the host's network, mDNS off,
/// its folders, the image just built, checks every 2 s): it starts, Docker calls it healthy
/// with the example's own health check, and WebDAV answers.
#[test]
fn the_compose_example_starts_and_is_healthy() {
    require_docker();
    let img = image();
    let base = repo().join("packaging/container/docker-compose.yaml");
    let version = img.rsplit(':').next().unwrap();

    // The example as written: valid, host networking with mDNS on, the image's health check,
    // time to stop, the version being built.
    let cfg = ok(Command::new("docker-compose")
        .arg("-f")
        .arg(&base)
        .arg("config"));
    for want in [
        "network_mode: host",
        r#"WORMFS_DISCOVERY__MDNS: "true""#,
        "stop_grace_period: ",
        "- /wormfs\n      - healthcheck\n      - --container",
        "user: 568:568",
        "/disks/disk1",
        ":/data",
    ] {
        assert!(
            cfg.contains(want),
            "the compose example lacks {want:?}:\n{cfg}"
        );
    }
    assert!(
        cfg.contains(&format!("image: ghcr.io/wormfs/wormfs:{version}")),
        "the compose example should name the version being built ({version}):\n{cfg}"
    );

    let t = temp_dir();
    let data = owned_dir(t.path(), "data");
    let disks: Vec<PathBuf> = (1..=3)
        .map(|n| owned_dir(t.path(), &format!("disk{n}")))
        .collect();
    let container = unique("compose");
    let over = t.path().join("override.yaml");
    let mut text = format!(
        "services:\n  wormfs:\n    image: {img}\n    container_name: {container}\n    \
         restart: \"no\"\n    network_mode: bridge\n    \
         ports: [\"127.0.0.1::7710\", \"127.0.0.1::7711\"]\n    \
         environment:\n      WORMFS_DISCOVERY__MDNS: \"false\"\n    \
         healthcheck:\n      interval: 2s\n    volumes:\n      - {}:/data\n",
        data.display()
    );
    for (i, d) in disks.iter().enumerate() {
        text.push_str(&format!("      - {}:/disks/disk{}\n", d.display(), i + 1));
    }
    std::fs::write(&over, text).unwrap();
    let compose = Compose {
        project: unique("compose").replace('-', ""),
        files: vec![base, over],
    };
    // The test's override must leave mDNS off and the host's network alone.
    let merged = ok(compose.cmd().arg("config"));
    assert!(
        merged.contains("network_mode: bridge")
            && merged.contains(r#"WORMFS_DISCOVERY__MDNS: "false""#),
        "{merged}"
    );
    let up = run(compose.cmd().args(["up", "-d"]));
    assert!(up.status.success(), "docker-compose up: {}", show(&up));
    wait_healthy(&container, 120);
    assert_eq!(process_uid(&container), UID);
    let o = exec(
        &container,
        &["healthcheck", "--container", "--timeout", "5"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    // WebDAV answers with the generated login on the published port.
    let login = admin_login(&container, t.path());
    let port = published(&container, 7711);
    let o = run(Command::new("curl")
        .args([
            "-sS",
            "-f",
            "-o",
            "/dev/null",
            "-u",
            login.as_str(),
            "-X",
            "PROPFIND",
            "-H",
            "Depth: 0",
        ])
        .arg(format!("http://127.0.0.1:{port}/")));
    assert!(o.status.success(), "PROPFIND / over WebDAV: {}", show(&o));
    // SQLite's temporary folder was made in the bind-mounted data folder.
    assert!(
        data.join("tmp").is_dir(),
        "no /data/tmp in the bind-mounted data folder"
    );
    drop(compose);
}
