//! A `wormfs serve` process driven through the `wormfs` CLI, for real-binary tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_wormfs");

/// A port free on 127.0.0.1 now, never one this test process handed out before: a node's API,
/// WebDAV, peer and data ports all come from here, so none of them can be given a port
/// another of them was promised (a node binding port 0 once took the API port it was about to
/// get, and the CLI then spoke HTTP to the peer network).
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub cwd: PathBuf,
    pub port: u16,
    /// The node's log (its standard error).
    pub log: PathBuf,
}

/// A node left running by a failing test is stopped when its `Server` goes out of scope.
impl Drop for Server {
    fn drop(&mut self) {
        // A failing test shows the end of each node's log.
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of {}:", self.log.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    pub fn start(cwd: &Path, port: u16, extra: &[&str]) -> Server {
        Self::start_env(cwd, port, extra, &[])
    }

    pub fn start_env(cwd: &Path, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(serve_args(port, extra)).envs(env.iter().copied());
        Self::spawn(cmd, cwd, port)
    }

    /// Starts the node in its own user and mount namespace (`unshare -rm`, no root needed where
    /// user namespaces are allowed) with a tmpfs of the given size mounted at each directory, so
    /// a test has real filesystems of chosen sizes that vanish with the process.
    pub fn start_with_tmpfs(
        cwd: &Path,
        port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
        mounts: &[(PathBuf, u64)],
    ) -> Server {
        let mut script = String::from("set -e\n");
        for (dir, size) in mounts {
            std::fs::create_dir_all(dir).unwrap();
            script.push_str(&format!(
                "mount -t tmpfs -o size={size} wormfs-test '{}'\n",
                dir.display()
            ));
        }
        script.push_str("exec \"$0\" \"$@\"\n");
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            &script,
            BIN,
        ])
        .args(serve_args(port, extra))
        .envs(env.iter().copied());
        Self::spawn(cmd, cwd, port)
    }

    /// Lazily unmounts `dir` inside the node's mount namespace, as a disk pulled out would.
    pub fn unmount(&self, dir: &Path) {
        let pid = self.child.id().to_string();
        let o = Command::new("nsenter")
            .args([
                "--target",
                &pid,
                "--user",
                "--mount",
                "--preserve-credentials",
                "umount",
                "-l",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "umount {}: {}",
            dir.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn spawn(mut cmd: Command, cwd: &Path, port: u16) -> Server {
        let log_path = cwd.join(format!("serve-{port}-{}.log", rand_suffix()));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = cmd
            .current_dir(cwd)
            .env_remove("WORMFS_TOKEN")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut s = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            cwd: cwd.to_owned(),
            port,
            log: log_path,
        };
        s.wait_healthy();
        s
    }

    /// Waits until the API port accepts connections; fails at once if the process died.
    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if answers_http(self.port) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                // The end of its log says why (the folder goes when the test fails).
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                panic!("node exited at start ({status}); its log ends:\n{tail}");
            }
            assert!(Instant::now() < deadline, "node did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--node")
            .arg(&self.url)
            .args(args)
            .current_dir(&self.cwd)
            .env_remove("WORMFS_TOKEN")
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "wormfs {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs `wormfs ARGS`, which must fail with exit code `code` and say `says` on stderr.
    pub fn fails(&self, args: &[&str], code: i32, says: &str) -> Output {
        let o = self.cli(args);
        assert_eq!(o.status.code(), Some(code), "{o:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(says), "{o:?}");
        o
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// The names `wormfs ls PATH` lists.
    pub fn ls_names(&self, path: &str) -> Vec<String> {
        self.json(&["ls", path])["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn term(mut self) -> std::process::ExitStatus {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve_args(port: u16, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["serve".to_string()];
    // The API on 127.0.0.1 unless the test places it (on all interfaces, say): the harness
    // reaches it on 127.0.0.1 either way.
    if !extra.contains(&"--listen") {
        args.push("--listen".into());
        args.push(format!("127.0.0.1:{port}"));
    }
    let ports = harness_ports(port);
    // Each node its own WebDAV port (one above the API port when free), so nodes run side by side.
    if !extra.contains(&"--webdav-listen") {
        args.push("--webdav-listen".into());
        args.push(format!("127.0.0.1:{}", ports.webdav));
    }
    // mDNS only ever runs inside a network namespace a test made: off unless asked for.
    if !extra.contains(&"--mdns") {
        args.push("--mdns".into());
        args.push("off".into());
    }
    // Its own peer and data ports unless the test places them: named, not port 0, so the
    // kernel cannot hand one of them the API port the harness promised (the same across restarts).
    if !extra.contains(&"--peer-listen") {
        args.push("--peer-listen".into());
        args.push(format!("127.0.0.1:{}", ports.peer));
    }
    if !extra.contains(&"--data-listen") {
        args.push("--data-listen".into());
        args.push(format!("127.0.0.1:{}", ports.data));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The other ports the harness gives the node whose API is on `port`, the same each time.
#[derive(Clone, Copy)]
struct HarnessPorts {
    webdav: u16,
    peer: u16,
    data: u16,
}

fn harness_ports(port: u16) -> HarnessPorts {
    use std::sync::Mutex;
    static PORTS: Mutex<Vec<(u16, HarnessPorts)>> = Mutex::new(Vec::new());
    let mut ports = PORTS.lock().unwrap();
    if let Some((_, p)) = ports.iter().find(|(a, _)| *a == port) {
        return *p;
    }
    let p = HarnessPorts {
        webdav: free_port(),
        peer: free_port(),
        data: free_port(),
    };
    ports.push((port, p));
    p
}

/// The WebDAV port the harness gives the node whose API is on `port`.
pub fn webdav_port(port: u16) -> u16 {
    harness_ports(port).webdav
}

/// Whether an HTTP server answers on the port (not merely something listening there).
fn answers_http(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 8];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

fn rand_suffix() -> u32 {
    rand::random::<u32>()
}

/// Runs a local `wormfs` command (one that needs no node, such as `init`) in `dir`, which it
/// creates; fails the test unless it succeeds, and returns its output.
pub fn local(dir: &Path, args: &[&str]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let o = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "wormfs {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Polls `f` until it returns `Some`, failing with `what` after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
