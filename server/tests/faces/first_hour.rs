//! Real-binary tests of the first hour with WormFS (issue #16): names `put` cannot store,
//! `--conflict rename` at the name limit, folder uploads that go on and rerun cleanly,
//! `--node` without a scheme, output into a pipe that closes, `config check`, the example
//! config's commented blocks, the first log line and `stat`'s sentence.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output, Stdio};

use crate::common::process::{free_port, Server, BIN};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `wormfs --node URL ARGS` with its standard output a pipe whose reader has already gone.
fn into_closed_pipe(s: &Server, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(BIN)
        .arg("--node")
        .arg(&s.url)
        .args(args)
        .current_dir(&s.cwd)
        .env_remove("WORMFS_TOKEN")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// A folder upload reports each file it cannot store (a name that is not UTF-8, shown escaped;
/// a name the tree refuses), stores the rest and fails at the end with a summary and the way to
/// finish; the rerun with `--conflict skip` stores only what is missing and says "skipped".
/// `--conflict rename` at the 255-byte limit makes a name every command accepts.
#[test]
fn tree_put_goes_on_past_bad_names_and_reruns_store_only_what_is_missing() {
    let t = tempfile::tempdir().unwrap();
    let s = Server::start(t.path(), free_port(), &[]);
    let tree = t.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), b"a").unwrap();
    let not_utf8 = tree.join(OsStr::from_bytes(b"b\xff.txt"));
    std::fs::write(&not_utf8, b"b").unwrap();
    std::fs::write(tree.join("c.txt"), b"c").unwrap();
    std::fs::write(tree.join("e\\f.txt"), b"e").unwrap();
    std::fs::write(tree.join("sub/d.txt"), b"d").unwrap();

    let o = s.cli(&["put", "tree", "/T"]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains("b\\xff.txt") && err.contains("not valid UTF-8") && err.contains("rename it"),
        "{err}"
    );
    assert!(
        !err.contains('\u{fffd}') && !out.contains('\u{fffd}'),
        "{out}\n{err}"
    );
    assert!(
        err.contains("e\\f.txt"),
        "the refused name is reported: {err}"
    );
    assert!(
        err.contains("2 file(s) of 5 not stored") && err.contains("--conflict skip"),
        "{err}"
    );
    for stored in ["/T/a.txt", "/T/c.txt", "/T/sub/d.txt"] {
        assert!(out.contains(&format!("-> {stored} ")), "{stored}: {out}");
    }
    assert!(
        out.contains("3 stored, 0 skipped (already there), 2 failed"),
        "{out}"
    );
    let names = |s: &Server| s.ls_names("/T");
    assert_eq!(names(&s), ["a.txt", "c.txt", "sub"]);

    // Fixed, and run again with --conflict skip: only what is missing is stored.
    std::fs::rename(&not_utf8, tree.join("b.txt")).unwrap();
    std::fs::remove_file(tree.join("e\\f.txt")).unwrap();
    let out = s.ok(&["put", "tree", "/T", "--conflict", "skip"]);
    assert!(out.contains("-> /T/b.txt "), "{out}");
    for kept in ["a.txt", "c.txt", "sub/d.txt"] {
        let line = out
            .lines()
            .find(|l| l.contains(kept))
            .unwrap_or_else(|| panic!("{kept}: {out}"));
        assert!(line.contains("skipped") && !line.contains("->"), "{line}");
    }
    assert!(out.contains("1 stored, 3 skipped"), "{out}");
    assert_eq!(names(&s), ["a.txt", "b.txt", "c.txt", "sub"]);

    // Renaming at the name limit keeps within it: the stem is shortened.
    let long = t.path().join("long");
    std::fs::create_dir_all(&long).unwrap();
    let name = format!("{}.mkv", "x".repeat(251));
    std::fs::write(long.join(&name), b"film").unwrap();
    s.ok(&["put", "long", "/L"]);
    let again = s.json(&["put", "long", "/L", "--conflict", "rename"]);
    let path = again[0]["path"].as_str().unwrap().to_owned();
    assert_eq!(path, format!("/L/{} (1).mkv", "x".repeat(247)));
    s.ok(&["stat", &path]);
    s.ok(&["get", &path, "back.mkv"]);
    assert_eq!(std::fs::read(t.path().join("back.mkv")).unwrap(), b"film");
    s.ok(&["mv", &path, "/L/moved.mkv"]);
    s.ok(&["rm", "/L/moved.mkv"]);
}

/// `--node` without a scheme; output into a pipe whose reader went away; `stat`'s sentence;
/// log lines in a file without colour codes; the first log line says what runs.
#[test]
fn cli_addresses_closed_pipes_stat_and_the_log() {
    let t = tempfile::tempdir().unwrap();
    for d in ["d0", "d1", "d2"] {
        std::fs::create_dir_all(t.path().join(d)).unwrap();
    }
    let s = Server::start(
        t.path(),
        free_port(),
        &["--disk", "d0", "--disk", "d1", "--disk", "d2"],
    );
    std::fs::write(t.path().join("f.bin"), vec![7u8; 200_000]).unwrap();
    s.ok(&["put", "f.bin", "/f.bin"]);

    // A node address without http://.
    let bare = s.url.trim_start_matches("http://").to_owned();
    let o = Command::new(BIN)
        .args(["--node", &bare, "ls", "/"])
        .current_dir(&s.cwd)
        .env_remove("WORMFS_TOKEN")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("f.bin"));
    let o = Command::new(BIN)
        .args(["--node", "not a node!", "ls", "/"])
        .current_dir(&s.cwd)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(text(&o.stderr).contains("\"not a node!\""), "{o:?}");
    assert!(!text(&o.stderr).contains("builder error"), "{o:?}");

    // A reader that goes away ends the command quietly.
    for args in [
        &["disks"][..],
        &["ls", "/"],
        &["stat", "/f.bin"],
        &["status"],
        &["get", "/f.bin", "-"],
        &["config", "example"],
    ] {
        let o = into_closed_pipe(&s, args);
        let err = text(&o.stderr);
        assert!(
            err.is_empty(),
            "wormfs {args:?} into a closed pipe said: {err}"
        );
        assert_eq!(o.status.code(), Some(141), "wormfs {args:?}: {o:?}");
    }

    // One sentence, one "survives".
    let stat = s.ok(&["stat", "/f.bin"]);
    let line = stat
        .lines()
        .find(|l| l.contains("surviv"))
        .unwrap_or_else(|| panic!("{stat}"));
    assert!(
        line.starts_with("survives ") && !line.contains("survives:"),
        "{line}"
    );
    assert_eq!(stat.matches("surviv").count(), 1, "{stat}");
    assert!(
        line.contains("lost part") && line.contains("share one disk"),
        "three folders on one filesystem: {line}"
    );

    // The log, written to a file: no colour codes, and the first line says what runs.
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(!log.contains('\u{1b}'), "colour codes in a log file");
    let first = log.lines().find(|l| l.contains("running")).unwrap();
    for says in [
        "the embedded default (no config file)",
        "--disk (x3)",
        "--listen",
        "disks: 3: ",
        &format!("API 127.0.0.1:{}", s.port),
    ] {
        assert!(first.contains(says), "{says:?} not in {first}");
    }
    assert!(!first.contains("folder-disks, 127.0.0.1"), "{first}");
}

/// `config check` prints a short summary; an address key names its value, key and line; the
/// example with its `[[webdav.users]]` table uncommented, as the README says, checks.
#[test]
fn config_check_summary_and_the_example_as_the_readme_uses_it() {
    let t = tempfile::tempdir().unwrap();
    let ex = Command::new(BIN)
        .args(["config", "example"])
        .output()
        .unwrap();
    let example = text(&ex.stdout);
    let check = |name: &str, body: &str| -> Output {
        let f = t.path().join(name);
        std::fs::write(&f, body).unwrap();
        Command::new(BIN)
            .args(["config", "check"])
            .arg(&f)
            .output()
            .unwrap()
    };
    let o = check("ex.toml", &example);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(out.contains(": OK"), "{out}");
    for says in [
        "data folder",
        "cluster:",
        "disks:",
        "listens:",
        "drop folders:",
        "policies:",
        "webdav users: none listed",
    ] {
        assert!(out.contains(says), "{says}: {out}");
    }
    assert!(
        !out.contains("Config {") && !out.contains("source:"),
        "{out}"
    );
    assert!(out.lines().count() <= 12, "{out}");

    let users = example
        .lines()
        .scan(false, |inside, l| {
            if l == "# [[webdav.users]]" {
                *inside = true;
            } else if !l.starts_with("# ") || l.starts_with("# #") {
                *inside = false;
            }
            let is_table_line = *inside
                && (l.starts_with("# [[")
                    || l.starts_with("# name")
                    || l.starts_with("# password_hash")
                    || l.starts_with("# role"));
            Some(if is_table_line {
                l.trim_start_matches("# ").to_owned()
            } else {
                l.to_owned()
            })
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(users.contains("\n[[webdav.users]]\nname = "), "{users}");
    let o = check("users.toml", &users);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("webdav users: 1"),
        "{}",
        text(&o.stdout)
    );

    let o = check("bad.toml", "[api]\nlisten = \"0.0.0.0:99999\"\n");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("api.listen") && err.contains("line 2") && err.contains("0.0.0.0:99999"),
        "{err}"
    );
}
