//! Named crash points for the crash-safety tests (feature `crash-points`).
//!
//! With the feature on, setting `WORMFS_CRASH_AT=<name>` makes the process abort the moment it
//! reaches that point, as a power cut or `kill -9` would. Without the feature this compiles to
//! nothing.

/// Aborts the process if `WORMFS_CRASH_AT` names this point (feature `crash-points` only),
/// the first time it is reached or, with `WORMFS_CRASH_SKIP=N`, the time after the first N
/// (so a test can crash in the middle of a run of many files, after some were acknowledged).
#[inline]
pub fn crash_point(name: &str) {
    #[cfg(feature = "crash-points")]
    if std::env::var("WORMFS_CRASH_AT").is_ok_and(|v| v == name) {
        static REACHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let skip: u64 = std::env::var("WORMFS_CRASH_SKIP")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if REACHED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= skip {
            eprintln!("crash point {name}: aborting");
            std::process::abort();
        }
    }
    #[cfg(not(feature = "crash-points"))]
    let _ = name;
}

/// Whether applying `mkdir PATH` should fail, as a corrupt or full metadata disk would make an
/// apply fail (`WORMFS_FAIL_APPLY_MKDIR=PATH`; feature `crash-points` only).
#[inline]
pub fn fail_apply_mkdir(path: &str) -> bool {
    #[cfg(feature = "crash-points")]
    {
        std::env::var("WORMFS_FAIL_APPLY_MKDIR").is_ok_and(|v| v == path)
    }
    #[cfg(not(feature = "crash-points"))]
    {
        let _ = path;
        false
    }
}

/// Whether the peer network must act as if `peer` (a libp2p peer id) were unreachable: a
/// network partition for the tests. `WORMFS_TEST_PARTITION_FILE` names a file listing such
/// peers, one per line, read at every request so a test can cut and heal the network while the
/// node runs (feature `crash-points` only).
pub fn partitioned(peer: &str) -> bool {
    #[cfg(feature = "crash-points")]
    {
        std::env::var_os("WORMFS_TEST_PARTITION_FILE")
            .and_then(|f| std::fs::read_to_string(f).ok())
            .is_some_and(|text| text.lines().any(|l| l.trim() == peer))
    }
    #[cfg(not(feature = "crash-points"))]
    {
        let _ = peer;
        false
    }
}

/// A fault for the data plane's part finishes: a delay (a slow fsync) and whether it then
/// fails (`WORMFS_TEST_DATA_FINISH_DELAY_MS`; `WORMFS_TEST_DATA_FINISH_FAIL_IF` names a file
/// whose existence makes finishes fail, so a test can turn failures on while the node runs;
/// feature `crash-points` only).
pub fn data_finish_fault() -> (Option<std::time::Duration>, bool) {
    #[cfg(feature = "crash-points")]
    {
        let delay = std::env::var("WORMFS_TEST_DATA_FINISH_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis);
        let fail = std::env::var_os("WORMFS_TEST_DATA_FINISH_FAIL_IF")
            .is_some_and(|f| std::path::Path::new(&f).exists());
        (delay, fail)
    }
    #[cfg(not(feature = "crash-points"))]
    {
        (None, false)
    }
}

/// How long a data-plane request may take, when a test shortens it
/// (`WORMFS_TEST_DATA_REQUEST_TIMEOUT_MS`; feature `crash-points` only).
pub fn data_request_timeout() -> Option<std::time::Duration> {
    #[cfg(feature = "crash-points")]
    {
        std::env::var("WORMFS_TEST_DATA_REQUEST_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis)
    }
    #[cfg(not(feature = "crash-points"))]
    {
        None
    }
}
