//! `wormfs mount` processes for the tests: started, waited for, unmounted if a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::process::{free_port, wait_for, Server, BIN};

/// A `wormfs mount` process; unmounted (lazily) if the test fails.
pub struct Mount {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

/// Whether a wormfs FUSE filesystem is mounted at `dir`.
pub fn mounted(dir: &Path) -> bool {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    // `... MOUNTPOINT ... - fuse wormfs ...` (root mounts directly: type `fuse`, source `wormfs`;
    // through fusermount3 the type is `fuse.wormfs`).
    table.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let Some(dash) = f.iter().position(|x| *x == "-") else {
            return false;
        };
        f.get(4) == Some(&dir.to_str().unwrap())
            && f.get(dash + 1).is_some_and(|t| t.starts_with("fuse"))
            && f.get(dash + 2) == Some(&"wormfs")
    })
}

pub fn mount_cmd(s: &Server, dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--node")
        .arg(&s.url)
        .arg("mount")
        .arg(dir)
        .args(extra)
        .current_dir(&s.cwd)
        .env_remove("WORMFS_TOKEN");
    c
}

impl Mount {
    pub fn start(s: &Server, dir: &Path, extra: &[&str]) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let log = s.cwd.join(format!("mount-{}.log", free_port()));
        let child = mount_cmd(s, dir, extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mount {
            child,
            dir: dir.to_owned(),
            log,
        };
        wait_for(30, "the mount", || {
            if let Some(st) = m.child.try_wait().unwrap() {
                panic!(
                    "wormfs mount exited ({st}): {}",
                    std::fs::read_to_string(&m.log).unwrap_or_default()
                );
            }
            mounted(&m.dir).then_some(())
        });
        m
    }

    pub fn signal_term(&self) {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .unwrap();
    }

    /// Waits for the process to end by itself; its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        wait_for(30, "wormfs mount to exit", || {
            self.child.try_wait().unwrap()
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- mount log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.dir)
                .status();
        }
    }
}
