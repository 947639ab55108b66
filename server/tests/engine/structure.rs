//! The architecture's rules, checked (docs/ARCHITECTURE.md "Architecture invariants"): which
//! crate may depend on which, where openraft and sqlx may appear, that lower layers never
//! reach the composition root, and that comments cite files that exist. Each rule once held
//! only by convention; this test fails the day one is broken again.
#![allow(missing_docs)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The names of a crate's normal (not dev) dependencies.
fn deps(krate: &str) -> BTreeSet<String> {
    let path = root().join(krate).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    doc.get("dependencies")
        .and_then(|d| d.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

fn members() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    doc["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn crates_depend_only_inward() {
    let wormfs = |k: &str| -> BTreeSet<String> {
        deps(k)
            .into_iter()
            .filter(|d| d.starts_with("wormfs-"))
            .collect()
    };
    let set =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|s| s.to_string()).collect() };
    assert_eq!(wormfs("config"), set(&[]), "config is a leaf");
    for k in ["discovery", "watcher", "webdav"] {
        assert!(
            wormfs(k).is_subset(&set(&["wormfs-config"])),
            "{k}: {:?}",
            wormfs(k)
        );
    }
    assert!(
        wormfs("parts").is_subset(&set(&["wormfs-config"])),
        "{:?}",
        wormfs("parts")
    );
    assert_eq!(
        wormfs("meta"),
        set(&["wormfs-parts"]),
        "meta builds on parts only"
    );

    // The parts crate: no SQL, no networking, no Raft.
    let parts = deps("parts");
    for banned in [
        "sqlx",
        "openraft",
        "libp2p",
        "reqwest",
        "axum",
        "hyper",
        "hyper-util",
        "tokio-rustls",
        "mdns-sd",
        "dav-server",
        "tokio",
    ] {
        assert!(!parts.contains(banned), "wormfs-parts depends on {banned}");
    }
    // The metadata crate: no networking, nothing of the WebDAV face.
    let meta = deps("meta");
    for banned in [
        "libp2p",
        "reqwest",
        "axum",
        "hyper",
        "dav-server",
        "wormfs-webdav",
    ] {
        assert!(!meta.contains(banned), "wormfs-meta depends on {banned}");
    }
    // sqlx in the metadata crate alone; openraft there and in the server's consensus.
    for k in members() {
        let d = deps(&k);
        if k != "meta" {
            assert!(!d.contains("sqlx"), "{k} depends on sqlx");
        }
        if k != "meta" && k != "server" {
            assert!(!d.contains("openraft"), "{k} depends on openraft");
        }
    }
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Lines of code (not comments) of a file that match `pred`, as "file:line: text".
fn code_lines(file: &Path, pred: impl Fn(&str) -> bool) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//") && pred(l))
        .map(|(i, l)| format!("{}:{}: {}", file.display(), i + 1, l.trim()))
        .collect()
}

#[test]
fn openraft_stays_inside_consensus_and_the_metadata_crate() {
    let server = root().join("server/src");
    let mut found = Vec::new();
    for f in sources(&server) {
        if f.starts_with(server.join("consensus")) {
            continue;
        }
        // Code paths, not the log filter's directive strings in main.rs.
        found.extend(code_lines(&f, |l| {
            l.contains("openraft::") && !l.contains('"') && !l.contains("=off")
        }));
    }
    assert!(
        found.is_empty(),
        "openraft outside consensus:\n{}",
        found.join("\n")
    );
}

#[test]
fn lower_layers_never_reach_the_composition_root_and_the_data_plane_not_the_engine() {
    let server = root().join("server/src");
    let mut found = Vec::new();
    for f in sources(&server) {
        let name = f
            .strip_prefix(&server)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if name != "node.rs" && name != "main.rs" {
            found.extend(code_lines(&f, |l| l.contains("crate::node")));
        }
        if name.starts_with("data_plane/") {
            found.extend(code_lines(&f, |l| {
                l.contains("crate::store") || l.contains("Store>") || l.contains("crate::ingest")
            }));
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn comments_cite_files_that_exist_in_the_repository() {
    let mut bad = Vec::new();
    for krate in members() {
        for f in sources(&root().join(&krate)) {
            if f.ends_with("server/tests/engine/structure.rs") {
                continue; // it names what it looks for
            }
            let text = std::fs::read_to_string(&f).unwrap();
            for (i, line) in text.lines().enumerate() {
                // Design documents that live outside the repository.
                for outside in ["DESIGN.md", "STACK.md", "STYLE.md"] {
                    if line.contains(outside) {
                        bad.push(format!("{}:{}: cites {outside}", f.display(), i + 1));
                    }
                }
                // docs/<name>.md must exist.
                let mut rest = line;
                while let Some(at) = rest.find("docs/") {
                    let tail = &rest[at..];
                    let end = tail
                        .find(|c: char| !(c.is_ascii_alphanumeric() || "/-_.".contains(c)))
                        .unwrap_or(tail.len());
                    let cited = tail[..end].trim_end_matches('.');
                    if cited.ends_with(".md") && !root().join(cited).exists() {
                        bad.push(format!("{}:{}: {cited} does not exist", f.display(), i + 1));
                    }
                    rest = &tail[end.max(5)..];
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Rows read from disk never panic: sqlx's `Row` trait (whose `get` panics on a value that does
/// not decode) is imported only by the metadata crate's checked accessors (`row.rs`) and its
/// test helpers.
#[test]
fn only_the_checked_accessors_read_sqlite_rows() {
    let meta = root().join("meta/src");
    let mut found = Vec::new();
    for f in sources(&meta) {
        let name = f
            .strip_prefix(&meta)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if name == "row.rs" || name == "testutil.rs" {
            continue;
        }
        found.extend(code_lines(&f, |l| {
            (l.contains("use sqlx") && l.contains("Row") && !l.contains("SqliteRow"))
                || l.contains("sqlx::Row")
                || l.contains(".get::<")
        }));
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
