//! Named crash points for the crash-safety tests (feature `crash-points`).
//!
//! With the feature on, setting `WORMFS_CRASH_AT=<name>` makes the process abort the moment it
//! reaches that point, as a power cut or `kill -9` would. Without the feature this compiles to
//! nothing.

/// Aborts the process if `WORMFS_CRASH_AT` names this point (feature `crash-points` only).
#[inline]
pub fn crash_point(name: &str) {
    #[cfg(feature = "crash-points")]
    if std::env::var("WORMFS_CRASH_AT").is_ok_and(|v| v == name) {
        eprintln!("crash point {name}: aborting");
        std::process::abort();
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
