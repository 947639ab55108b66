//! What every packaging test needs: Docker answering, the artefacts built (by the project's own
//! scripts, which cache), names no other test uses, and containers and networks removed even
//! when a test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs a command, returning its output; panics if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout (trimmed).
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `docker ARGS` that must succeed.
pub fn docker(args: &[&str]) -> String {
    ok(Command::new("docker").args(args))
}

/// `docker ARGS`, whatever it answers.
pub fn docker_any(args: &[&str]) -> Output {
    run(Command::new("docker").args(args))
}

/// Fails the test clearly when Docker does not answer (never skips it).
pub fn require_docker() {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "this test needs a Docker engine, and `docker info` failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("this test needs a Docker engine, and `docker` cannot run: {e}"),
    }
}

/// Runs one of the project's packaging scripts (they cache), returning its stdout's last line.
pub fn script(path: &str, args: &[&str]) -> String {
    let out = ok(Command::new("bash")
        .arg(repo().join(path))
        .args(args)
        .current_dir(repo()));
    out.lines().last().unwrap_or_default().to_owned()
}

/// The workspace's version (Cargo.toml), which every package is built as.
pub fn workspace_version() -> String {
    std::fs::read_to_string(repo().join("Cargo.toml"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .map(|v| v.trim_end_matches('"').to_owned())
        .expect("a version in Cargo.toml")
}

/// The image, built if needed: `ghcr.io/wormfs/wormfs:VERSION`.
pub fn image() -> String {
    require_docker();
    script("packaging/container/build.sh", &[])
}

/// The release binary every package ships (target/packaging/bin/wormfs).
pub fn packaged_binary() -> PathBuf {
    script("packaging/build-binary.sh", &[]);
    target_dir().join("packaging/bin/wormfs")
}

/// The debootstrap tree (made once, never changed: copy it before use).
pub fn rootfs() -> PathBuf {
    PathBuf::from(script("packaging/rootfs.sh", &[]))
}

/// The debootstrap tree as a Docker image.
pub fn rootfs_image() -> String {
    require_docker();
    script("packaging/rootfs.sh", &["--image"])
}

/// Cargo's target folder.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// A name no other test (or run) uses: `wormfs-t-PID-N-what`.
pub fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "wormfs-t-{}-{}-{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Waits for `f` to give a value, up to `secs` (a deadline, not a sleep).
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A container removed (with its anonymous volumes) when dropped.
pub struct Container(pub String);

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = docker_any(&["logs", "--tail", "60", &self.0]);
            eprintln!(
                "--- last logs of {}:\n{}{}",
                self.0,
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        let _ = docker_any(&["rm", "-f", "-v", &self.0]);
    }
}

/// A Docker network removed when dropped (after the containers on it: declare it first).
pub struct Network(pub String);

impl Network {
    /// A new network; `internal` keeps it from reaching beyond the host.
    pub fn create(internal: bool) -> Network {
        let name = unique("net");
        let mut args = vec!["network", "create"];
        if internal {
            args.push("--internal");
        }
        args.push(&name);
        docker(&args);
        Network(name)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker_any(&["network", "rm", &self.0]);
    }
}

/// A named Docker volume removed when dropped.
pub struct Volume(pub String);

impl Volume {
    /// A new named volume.
    pub fn create(what: &str) -> Volume {
        let name = unique(what);
        docker(&["volume", "create", &name]);
        Volume(name)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = docker_any(&["volume", "rm", "-f", &self.0]);
    }
}

/// The HTTP status `curl ARGS` got ("000" when nothing answered), within 10 s.
pub fn http_code(args: &[&str]) -> String {
    ok(Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(args))
}

/// The health Docker reports for a container ("starting", "healthy", "unhealthy").
pub fn health(container: &str) -> String {
    docker(&["inspect", "-f", "{{.State.Health.Status}}", container])
}

/// Waits until Docker calls the container healthy (its HEALTHCHECK, `wormfs healthcheck`).
pub fn wait_healthy(container: &str, secs: u64) {
    wait_for(secs, &format!("{container} to be healthy"), || {
        (health(container) == "healthy").then_some(())
    });
}

/// A folder removed when dropped (tests run as root and may leave root-owned files).
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wormfs-pkg-")
        .tempdir()
        .expect("temp dir")
}
