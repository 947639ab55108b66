//! The `_webdav._tcp` advertisement, seen by `wormfs discover` from inside a private network
//! namespace that holds only `lo` (mDNS never runs in the machine's own namespace in tests):
//! on when asked for, with the path and our own host name; absent when mDNS is off (the
//! embedded default) or the advertisement is switched off.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::process::BIN;

/// A node alone in a new user and network namespace (`unshare -rn`), loopback up.
struct IsolatedNode {
    child: Child,
    _dir: tempfile::TempDir,
}

impl IsolatedNode {
    fn start(flags: &[&str], env: &[(&str, &str)]) -> IsolatedNode {
        Self::start_after("", flags, env)
    }

    /// Starts the node after `prelude` (shell) has run inside its namespaces.
    fn start_after(prelude: &str, flags: &[&str], env: &[(&str, &str)]) -> IsolatedNode {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let child = Command::new("unshare")
            .args(["--user", "--map-root-user", "--net", "sh", "-c"])
            .arg(format!(
                "ip link set lo up && {prelude} exec '{BIN}' serve --listen 127.0.0.1:17710 --webdav-listen 127.0.0.1:17711 {}",
                flags.join(" ")
            ))
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("unshare runs (util-linux, installed by tests/install-test-tools.sh)");
        IsolatedNode { child, _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Runs the CLI inside the node's namespaces, with its token.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .args(["--target", &self.child.id().to_string()])
            .args(["--user", "--net", "--preserve-credentials", BIN])
            .args(["--node", "127.0.0.1:17710"])
            .args(args)
            .env("WORMFS_DATA_DIR", self._dir.path().join("wormfs-data"))
            .current_dir(self._dir.path())
            .output()
            .unwrap()
    }

    /// Runs `wormfs discover --json` inside the node's namespaces.
    fn discover(&mut self, wait_secs: u32) -> serde_json::Value {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("the node exited ({status}); see serve.log");
        }
        let o = Command::new("nsenter")
            .args(["--target", &self.child.id().to_string()])
            .args(["--user", "--net", "--preserve-credentials", BIN])
            .args(["discover", "--json", "--wait", &wait_secs.to_string()])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "discover: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Waits until the node answers on its API inside the namespace.
    fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the node exited ({status})");
            }
            // Any HTTP answer means the node is up (curl fails only when nothing listens).
            let ok = Command::new("nsenter")
                .args(["--target", &self.child.id().to_string()])
                .args([
                    "--user",
                    "--net",
                    "--preserve-credentials",
                    "curl",
                    "-s",
                    "-o",
                ])
                .args(["/dev/null", "http://127.0.0.1:17710/"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "node did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for IsolatedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn webdav_is_advertised_only_when_mdns_is_on() {
    let mut on = IsolatedNode::start(&["--mdns", "on"], &[]);
    on.wait_up();
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let v = on.discover(2);
        if let Some(f) = v.as_array().unwrap().first() {
            break f.clone();
        }
        assert!(Instant::now() < deadline, "never advertised");
    };
    assert_eq!(found["service_type"], "_webdav._tcp.local.", "{found}");
    assert_eq!(found["port"], 17711, "{found}");
    assert_eq!(found["txt"]["path"], "/", "{found}");
    assert_eq!(found["addresses"][0], "127.0.0.1", "{found}");
    let host = found["host"].as_str().unwrap();
    assert!(
        host.starts_with("wormfs-") && host.ends_with(".local."),
        "{found}"
    );
    assert!(
        found["instance"]
            .as_str()
            .unwrap()
            .starts_with("WormFS on "),
        "{found}"
    );
    drop(on);

    // The embedded default keeps mDNS off; a switched-off advertisement is absent too.
    for (flags, env) in [
        (&[][..], &[][..]),
        (
            &["--mdns", "on"][..],
            &[("WORMFS_WEBDAV__ADVERTISE", "false")][..],
        ),
    ] {
        let mut node = IsolatedNode::start(flags, env);
        node.wait_up();
        let v = node.discover(3);
        assert_eq!(v, serde_json::json!([]), "{flags:?} {env:?}");
    }
}

/// TrueNAS's own mDNS service holds UDP 5353 without sharing it. A node with mDNS on, started
/// beside such a holder, says so in one line that points to static peers, and everything else
/// works: it stores and serves files and reports healthy.
#[test]
fn mdns_port_held_exclusively_is_one_clear_line_and_nothing_else_breaks() {
    // A plain bind (no SO_REUSEADDR/SO_REUSEPORT) is exclusive; the ready file says it holds.
    // It ends with the node (its parent): it watches for being orphaned.
    let prelude = "python3 -c 'import os,socket,time\n\
p=os.getppid()\n\
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
s.bind((\"0.0.0.0\",5353))\n\
open(\"holder-ready\",\"w\").close()\n\
while os.getppid()==p: time.sleep(0.2)' & \
        for i in $(seq 100); do [ -e holder-ready ] && break; sleep 0.1; done; \
        [ -e holder-ready ] || { echo 'the 5353 holder did not start' >&2; exit 1; }; ";
    let mut node = IsolatedNode::start_after(prelude, &["--mdns", "on"], &[]);
    node.wait_up();
    let log = node.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("UDP port 5353"))
        .collect();
    assert_eq!(lines.len(), 1, "one line about the port, got: {log}");
    assert!(
        lines[0].contains("static peers") && lines[0].contains("WORMFS_CLUSTER__PEERS"),
        "{}",
        lines[0]
    );
    // Everything else works.
    std::fs::write(node._dir.path().join("f"), b"mdns or not").unwrap();
    let put = node.cli(&["put", "f", "/f"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = node.cli(&["get", "/f", "-"]);
    assert_eq!(get.stdout, b"mdns or not");
    let health = node.cli(&["healthcheck"]);
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stdout)
    );
    // Nothing more was logged about it while the node ran.
    let later = node.log();
    assert_eq!(later.matches("UDP port 5353").count(), 1, "{later}");
}
