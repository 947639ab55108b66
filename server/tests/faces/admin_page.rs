//! The admin page of a real `wormfs serve` (the embedded default: six folder-disks, a drop
//! folder), driven in headless Chromium by `tests/ui/admin_page.py` (Debian's chromium,
//! chromium-driver and python3-selenium; `tests/install-test-tools.sh` installs them).
//!
//! The script logs in (a file user refused, a read-only token that sees but cannot act, the
//! admin user), watches a dropped file go through the ingest panel to done, finds it in the
//! files panel with its parts' map, pauses repair, is refused (403) for actions without the
//! CSRF token and finds nothing changed, drains a disk through the confirmation dialog, deletes
//! a disk's folder and sees the overview turn degraded and the file's tolerance drop, checks a
//! phone's width and logs out; without a session the API answers 401 and the page shows only
//! the login form; the browser's console must stay free of errors. Screenshots of each panel
//! go to `target/ui-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::dav::admin_login;
use crate::common::process::{free_port, wait_for, Server};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The script's run, waited for with a deadline (its own waits have theirs).
fn run_script(config: &serde_json::Value, shots: &Path) -> (bool, String) {
    let log = shots.join("admin_page.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("/usr/bin/python3")
        .arg(workspace().join("tests/ui/admin_page.py"))
        .env("WORMFS_UI_TEST", config.to_string())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .expect("run /usr/bin/python3 (bash tests/install-test-tools.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the browser script did not finish: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    (
        status.success(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

#[test]
fn admin_page_in_headless_chromium_logs_in_shows_every_panel_and_acts_only_with_csrf() {
    let t = tempfile::tempdir().unwrap();
    let drop = t.path().join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    let ingest = format!("{}=/incoming", drop.display());
    let s = Server::start_env(
        t.path(),
        free_port(),
        &["--ingest", &ingest],
        &[
            ("WORMFS_STORAGE__BLOCK_SIZE_BYTES", "65536"),
            ("WORMFS_STORAGE__SEGMENT_PART_BYTES", "262144"),
            ("WORMFS_STORAGE__RESERVE_FREE_BYTES", "0"),
            ("WORMFS_SCRUB__ENABLED", "false"),
            // A deleted disk is soon `out` and its segments queued (repair is paused by then).
            ("WORMFS_REPAIR__DISK_OUT_AFTER_MS", "1000"),
        ],
    );
    let data = t.path().join("wormfs-data");
    wait_for(60, "the generated admin user", || {
        data.join("webdav-admin.txt").exists().then_some(())
    });
    let admin = admin_login(&data);
    let rw = s.json(&["user", "add", "filer", "--role", "rw", "--generate"]);
    let rw_login = format!("filer:{}", rw["password"].as_str().unwrap());
    let ro = s.json(&["token", "create", "watcher", "--read-only"]);
    let disks = s.json(&["disks"]);
    let paths: Vec<String> = disks["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths.len(), 6, "{disks:#}");
    let absolute = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            t.path().join(p)
        }
    };
    let shots = workspace().join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let config = serde_json::json!({
        "url": s.url,
        "admin": admin,
        "rw": rw_login,
        "ro_token": ro["token"],
        "drop": drop,
        "lost_disk": absolute(&paths[0]),
        "drain_disk": paths[1],
        "extra_disk": t.path().join("extra-disk"),
        "shots": shots,
    });

    let (ok, log) = run_script(&config, &shots);
    eprintln!("{log}");
    assert!(
        ok,
        "the browser script failed (screenshots in {})",
        shots.display()
    );
    assert!(log.contains("ALL CHECKS PASSED"), "{log}");

    // What the page did, as the CLI sees it.
    let after = s.json(&["disks"]);
    let drained = after["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == paths[1].as_str())
        .unwrap();
    assert_eq!(drained["status"], "draining", "{after:#}");
    let repair = s.json(&["repair", "status"]);
    assert_eq!(repair["paused"], true, "{repair:#}");
    let health = s.cli(&["health"]);
    assert_eq!(health.status.code(), Some(1), "{health:?}");
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(log.contains("admin page: logged in"), "the login is logged");
    assert!(
        log.contains("admin page: refused: no valid CSRF token"),
        "the CSRF refusals are logged"
    );
}
