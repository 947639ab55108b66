//! The trash and retention locks, applied on a real SQLite file: every way an entry goes
//! records a trash row (when the trash is on), restore and purge, and every change to a
//! retained file refused with nothing changed until its retention ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::command::{CommandV1, Conflict, Outcome, Rejection};
use crate::testutil::{commit, segment, test_db, TestDb, T};
use wormfs_parts::ids::FileId;
use wormfs_parts::tree_path::TreePath;

fn f(n: u128) -> FileId {
    FileId(n)
}

fn p(s: &str) -> TreePath {
    TreePath::parse(s).unwrap()
}

const DAY: u64 = 86_400_000;

impl TestDb {
    async fn trash_on(&self) {
        assert_eq!(
            self.apply(CommandV1::SetTrash { enabled: true }).await,
            Outcome::Done
        );
    }

    /// The trash's `(path, file)` pairs, oldest first.
    async fn trashed(&self) -> Vec<(String, FileId)> {
        self.db
            .trash(None)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.path, e.file_id))
            .collect()
    }

    async fn exists(&self, id: FileId) -> bool {
        self.db.file(id).await.unwrap().is_some()
    }

    async fn file_at(&self, path: &str) -> Option<FileId> {
        self.db
            .lookup(&p(path))
            .await
            .unwrap()
            .and_then(|e| e.file_id)
    }

    /// Every entry and trash row, to compare before and after a refusal.
    async fn dump(&self) -> Vec<String> {
        let mut v = self
            .texts(
                "SELECT parent || '/' || name || ':' || hex(COALESCE(file_id, x'')) || ':' ||
                 COALESCE(retain_until_ms, '') || ':' || mtime_ms FROM entries ORDER BY id",
            )
            .await;
        v.extend(
            self.texts("SELECT path || ':' || hex(file_id) FROM trash ORDER BY id")
                .await,
        );
        v.extend(
            self.texts("SELECT hex(file_id) || ':' || size FROM files ORDER BY file_id")
                .await,
        );
        v
    }

    async fn put_at(&self, id: FileId, path: &str, conflict: Conflict, time_ms: u64) -> Outcome {
        self.begin(id, path).await;
        let mut cmd = commit(id, path, conflict);
        if let CommandV1::CommitFile { time_ms: t, .. } = &mut cmd {
            *t = time_ms;
        }
        self.apply(cmd).await
    }

    async fn retain(&self, dir: &str, ms: Option<u64>) {
        let out = self
            .apply(CommandV1::SetRetention {
                path: dir.into(),
                retain_ms: ms,
            })
            .await;
        assert_eq!(out, Outcome::Done);
    }
}

fn remove(path: &str, recursive: bool, time_ms: u64) -> CommandV1 {
    CommandV1::Remove {
        path: path.into(),
        recursive,
        time_ms,
    }
}

#[tokio::test]
async fn with_the_trash_off_a_remove_frees_the_file_at_once() {
    let t = test_db().await;
    t.put(f(1), "/a", Conflict::Fail).await;
    assert_eq!(t.apply(remove("/a", false, T)).await, Outcome::Done);
    assert!(!t.exists(f(1)).await);
    assert!(t.trashed().await.is_empty());
    assert!(!t.db.trash_totals().await.unwrap().enabled);
}

#[tokio::test]
async fn a_removed_file_goes_to_the_trash_and_comes_back() {
    let t = test_db().await;
    t.trash_on().await;
    t.put(f(1), "/d/a.mkv", Conflict::Fail).await;
    assert_eq!(
        t.apply(remove("/d/a.mkv", false, T + 5)).await,
        Outcome::Done
    );
    assert_eq!(t.file_at("/d/a.mkv").await, None);
    assert!(t.exists(f(1)).await, "the trash keeps the file's rows");
    let list = t.db.trash(None).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].path.as_str(), list[0].deleted_ms, list[0].size),
        ("/d/a.mkv", T + 5, 100)
    );
    let totals = t.db.trash_totals().await.unwrap();
    assert_eq!((totals.entries, totals.files, totals.bytes), (1, 1, 100));
    // Health and repair still name it (by the path it had).
    assert_eq!(
        t.db.path_of_file(f(1)).await.unwrap().as_deref(),
        Some("/d/a.mkv")
    );
    assert_eq!(t.db.trash(Some(&p("/d"))).await.unwrap().len(), 1);
    assert!(t.db.trash(Some(&p("/e"))).await.unwrap().is_empty());
    assert!(t.db.trash(Some(&p("/d/a"))).await.unwrap().is_empty());
    // Restored elsewhere, with its parents made.
    let out = t
        .apply(CommandV1::RestoreTrash {
            id: list[0].id,
            to: "/x/y/a.mkv".into(),
            time_ms: T + 6,
        })
        .await;
    assert_eq!(out, Outcome::Done);
    assert_eq!(t.file_at("/x/y/a.mkv").await, Some(f(1)));
    assert!(t.trashed().await.is_empty());
    // The same id again: gone.
    let out = t
        .apply(CommandV1::RestoreTrash {
            id: list[0].id,
            to: "/b".into(),
            time_ms: T + 6,
        })
        .await;
    assert_eq!(
        out,
        Outcome::Rejected(Rejection::NotFound(format!("trash entry {}", list[0].id)))
    );
}

#[tokio::test]
async fn restore_refuses_a_taken_name() {
    let t = test_db().await;
    t.trash_on().await;
    t.put(f(1), "/a", Conflict::Fail).await;
    t.apply(remove("/a", false, T)).await;
    t.put(f(2), "/a", Conflict::Fail).await;
    let id = t.db.trash(None).await.unwrap()[0].id;
    let before = t.dump().await;
    let out = t
        .apply(CommandV1::RestoreTrash {
            id,
            to: "/a".into(),
            time_ms: T,
        })
        .await;
    assert_eq!(
        out,
        Outcome::Rejected(Rejection::AlreadyExists("/a".into()))
    );
    let out = t
        .apply(CommandV1::RestoreTrash {
            id,
            to: "/a/b".into(),
            time_ms: T,
        })
        .await;
    assert_eq!(
        out,
        Outcome::Rejected(Rejection::NotADirectory("/a".into()))
    );
    assert_eq!(t.dump().await, before);
}

#[tokio::test]
async fn every_way_an_entry_goes_records_it_with_its_full_path() {
    let t = test_db().await;
    t.trash_on().await;
    // A recursive remove.
    t.put(f(1), "/d/e/one", Conflict::Fail).await;
    t.put(f(2), "/d/two", Conflict::Fail).await;
    t.apply(remove("/d", true, T)).await;
    // A commit that replaces.
    t.put(f(3), "/r", Conflict::Fail).await;
    t.put(f(4), "/r", Conflict::Replace).await;
    // A rename that replaces.
    t.put(f(5), "/s", Conflict::Fail).await;
    t.put(f(6), "/s2", Conflict::Fail).await;
    let out = t
        .apply(CommandV1::Rename {
            from: "/s2".into(),
            to: "/s".into(),
            replace: true,
            time_ms: T,
        })
        .await;
    assert_eq!(out, Outcome::Done);
    // A COPY that replaces.
    t.put(f(7), "/c", Conflict::Fail).await;
    let out = t
        .apply(CommandV1::Copy {
            from: "/r".into(),
            to: "/c".into(),
            replace: true,
            time_ms: T,
        })
        .await;
    assert_eq!(out, Outcome::Done);
    // WebDAV: DELETE, a MOVE over a directory, a COPY over a file.
    t.put(f(8), "/w/del", Conflict::Fail).await;
    t.apply(CommandV1::RemoveTree {
        path: "/w/del".into(),
        time_ms: T,
    })
    .await;
    t.put(f(9), "/m/src", Conflict::Fail).await;
    t.put(f(10), "/m/dst/inner", Conflict::Fail).await;
    let out = t
        .apply(CommandV1::MoveTree {
            from: "/m/src".into(),
            to: "/m/dst".into(),
            replace: true,
            time_ms: T,
        })
        .await;
    assert_eq!(out, Outcome::Done);
    t.put(f(11), "/k/dst", Conflict::Fail).await;
    let out = t
        .apply(CommandV1::CopyTree {
            from: "/m/dst".into(),
            to: "/k/dst".into(),
            replace: true,
            deep: true,
            time_ms: T,
        })
        .await;
    assert_eq!(out, Outcome::Done);
    let mut got = t.trashed().await;
    got.sort();
    let mut want = vec![
        ("/d/e/one".to_owned(), f(1)),
        ("/d/two".to_owned(), f(2)),
        ("/r".to_owned(), f(3)),
        ("/s".to_owned(), f(5)),
        ("/c".to_owned(), f(7)),
        ("/w/del".to_owned(), f(8)),
        ("/m/dst/inner".to_owned(), f(10)),
        ("/k/dst".to_owned(), f(11)),
    ];
    want.sort();
    assert_eq!(got, want);
    for n in 1..=11 {
        assert!(t.exists(f(n)).await, "file {n} kept");
    }
}

#[tokio::test]
async fn purge_releases_files_named_only_by_the_trash() {
    let t = test_db().await;
    t.trash_on().await;
    t.put_at(f(1), "/old", Conflict::Fail, T).await;
    t.put_at(f(2), "/new", Conflict::Fail, T).await;
    t.put_at(f(3), "/shared", Conflict::Fail, T).await;
    t.apply(CommandV1::Copy {
        from: "/shared".into(),
        to: "/twin".into(),
        replace: false,
        time_ms: T,
    })
    .await;
    t.apply(remove("/old", false, T)).await;
    t.apply(remove("/shared", false, T + 1)).await;
    t.apply(remove("/new", false, T + DAY)).await;
    let totals = t.db.trash_totals().await.unwrap();
    assert_eq!(
        (totals.entries, totals.files),
        (3, 2),
        "the shared file frees nothing"
    );
    // By age: the two entries deleted before T + 2.
    let out = t
        .apply(CommandV1::PurgeTrash {
            ids: vec![],
            deleted_before_ms: Some(T + 2),
        })
        .await;
    assert_eq!(out, Outcome::Done);
    assert!(!t.exists(f(1)).await);
    assert!(t.exists(f(3)).await, "still named by /twin");
    assert_eq!(t.trashed().await, vec![("/new".to_owned(), f(2))]);
    // By id; an unknown id is no error.
    let id = t.db.trash(None).await.unwrap()[0].id;
    let out = t
        .apply(CommandV1::PurgeTrash {
            ids: vec![id, 999],
            deleted_before_ms: None,
        })
        .await;
    assert_eq!(out, Outcome::Done);
    assert!(!t.exists(f(2)).await);
    assert!(t.trashed().await.is_empty());
    // A purged file's trash id is never given again.
    t.put(f(4), "/again", Conflict::Fail).await;
    t.apply(remove("/again", false, T)).await;
    assert!(t.db.trash(None).await.unwrap()[0].id > id);
}

#[tokio::test]
async fn an_append_to_a_file_only_the_trash_names_is_refused() {
    let t = test_db().await;
    t.trash_on().await;
    t.put(f(1), "/a", Conflict::Fail).await;
    t.apply(remove("/a", false, T)).await;
    t.apply(CommandV1::BeginIngest {
        file_id: f(9),
        writer: 7,
        path: "/a".into(),
        append_to: Some(f(1)),
        lease_until_ms: T + 60_000,
        time_ms: T,
    })
    .await;
    let out = t
        .apply(CommandV1::AppendSegments {
            intent_id: f(9),
            file_id: f(1),
            expected_size: 100,
            segments: vec![segment(1, 10)],
            time_ms: T,
        })
        .await;
    assert_eq!(
        out,
        Outcome::Rejected(Rejection::NotFound(f(1).to_string()))
    );
}

fn retained(path: &str, until_ms: u64) -> Outcome {
    Outcome::Rejected(Rejection::Retained {
        path: path.into(),
        until_ms,
    })
}

#[tokio::test]
async fn a_retained_file_refuses_every_change_until_its_retention_ends() {
    let t = test_db().await;
    t.trash_on().await;
    t.apply(CommandV1::Mkdir {
        path: "/vault/sub".into(),
        parents: true,
        time_ms: T,
    })
    .await;
    t.retain("/vault", Some(DAY)).await;
    assert_eq!(
        t.put_at(f(1), "/vault/sub/a", Conflict::Fail, T).await,
        Outcome::Committed {
            path: "/vault/sub/a".into(),
            file_id: f(1),
            replaced: false
        }
    );
    t.put_at(f(2), "/other", Conflict::Fail, T).await;
    let until = T + DAY;
    let now = T + DAY - 1;
    let rename = |from: &str, to: &str, replace: bool| CommandV1::Rename {
        from: from.into(),
        to: to.into(),
        replace,
        time_ms: now,
    };
    let cases: Vec<(CommandV1, &str)> = vec![
        (remove("/vault/sub/a", false, now), "/vault/sub/a"),
        (remove("/vault", true, now), "/vault/sub/a"),
        (rename("/vault/sub/a", "/b", false), "/vault/sub/a"),
        (
            rename("/vault/sub/a", "/vault/sub/b", false),
            "/vault/sub/a",
        ),
        (rename("/vault", "/vault2", false), "/vault/sub/a"),
        (rename("/other", "/vault/sub/a", true), "/vault/sub/a"),
        (
            CommandV1::Copy {
                from: "/other".into(),
                to: "/vault/sub/a".into(),
                replace: true,
                time_ms: now,
            },
            "/vault/sub/a",
        ),
        (
            CommandV1::RemoveTree {
                path: "/vault/sub".into(),
                time_ms: now,
            },
            "/vault/sub/a",
        ),
        (
            CommandV1::MoveTree {
                from: "/vault".into(),
                to: "/elsewhere".into(),
                replace: false,
                time_ms: now,
            },
            "/vault/sub/a",
        ),
        (
            CommandV1::MoveTree {
                from: "/other".into(),
                to: "/vault/sub/a".into(),
                replace: true,
                time_ms: now,
            },
            "/vault/sub/a",
        ),
        (
            CommandV1::CopyTree {
                from: "/other".into(),
                to: "/vault".into(),
                replace: true,
                deep: true,
                time_ms: now,
            },
            "/vault/sub/a",
        ),
    ];
    let before = t.dump().await;
    for (cmd, path) in &cases {
        assert_eq!(t.apply(cmd.clone()).await, retained(path, until), "{cmd:?}");
        assert_eq!(t.dump().await, before, "{cmd:?} changed something");
    }
    // A commit that would replace it (its intent goes, as for any refused commit).
    t.begin(f(3), "/vault/sub/a").await;
    let mut cmd = commit(f(3), "/vault/sub/a", Conflict::Replace);
    if let CommandV1::CommitFile { time_ms, .. } = &mut cmd {
        *time_ms = now;
    }
    assert_eq!(t.apply(cmd).await, retained("/vault/sub/a", until));
    assert_eq!(t.dump().await, before);
    // An append.
    t.apply(CommandV1::BeginIngest {
        file_id: f(9),
        writer: 7,
        path: "/vault/sub/a".into(),
        append_to: Some(f(1)),
        lease_until_ms: T + 2 * DAY,
        time_ms: now,
    })
    .await;
    let out = t
        .apply(CommandV1::AppendSegments {
            intent_id: f(9),
            file_id: f(1),
            expected_size: 100,
            segments: vec![segment(1, 10)],
            time_ms: now,
        })
        .await;
    assert_eq!(out, retained("/vault/sub/a", until));
    assert_eq!(t.dump().await, before);
    // Reading it, copying it out, and a commit with another rule are fine.
    let out = t
        .apply(CommandV1::Copy {
            from: "/vault/sub/a".into(),
            to: "/copy".into(),
            replace: false,
            time_ms: now,
        })
        .await;
    assert_eq!(out, Outcome::Done);
    // Once it ends (a retention ending at `time_ms` has ended), everything works again.
    let later = until;
    let out = t
        .apply(CommandV1::Rename {
            from: "/vault/sub/a".into(),
            to: "/vault/sub/b".into(),
            replace: false,
            time_ms: later,
        })
        .await;
    assert_eq!(out, Outcome::Done);
    assert_eq!(t.apply(remove("/vault", true, later)).await, Outcome::Done);
    assert_eq!(t.trashed().await, vec![("/vault/sub/b".to_owned(), f(1))]);
}

#[tokio::test]
async fn a_retention_applies_to_files_written_afterwards_and_is_inherited() {
    let t = test_db().await;
    t.apply(CommandV1::Mkdir {
        path: "/v/deep".into(),
        parents: true,
        time_ms: T,
    })
    .await;
    t.put_at(f(1), "/v/before", Conflict::Fail, T).await;
    t.retain("/v", Some(DAY)).await;
    t.put_at(f(2), "/v/deep/inherited", Conflict::Fail, T).await;
    // A copy landing in a retained directory is retained from the copy's time; a file moved
    // in keeps its own (none).
    t.put_at(f(3), "/free", Conflict::Fail, T).await;
    t.put_at(f(4), "/moved", Conflict::Fail, T).await;
    t.apply(CommandV1::Copy {
        from: "/free".into(),
        to: "/v/copied".into(),
        replace: false,
        time_ms: T + 10,
    })
    .await;
    t.apply(CommandV1::Rename {
        from: "/moved".into(),
        to: "/v/moved".into(),
        replace: false,
        time_ms: T,
    })
    .await;
    // Shortened: files written before keep theirs.
    t.retain("/v", Some(1000)).await;
    t.put_at(f(5), "/v/short", Conflict::Fail, T).await;
    // Cleared on the subdirectory only: still inherited from /v.
    t.retain("/v/deep", None).await;
    t.put_at(f(6), "/v/deep/still", Conflict::Fail, T).await;
    t.retain("/v", None).await;
    t.put_at(f(7), "/v/none", Conflict::Fail, T).await;
    let got = t
        .texts(
            "SELECT name || ' ' || COALESCE(retain_until_ms, 'none') FROM entries
             WHERE is_dir = 0 ORDER BY name",
        )
        .await;
    let want: Vec<String> = [
        ("before", "none".to_owned()),
        ("copied", (T + 10 + DAY).to_string()),
        ("free", "none".to_owned()),
        ("inherited", (T + DAY).to_string()),
        ("moved", "none".to_owned()),
        ("none", "none".to_owned()),
        ("short", (T + 1000).to_string()),
        ("still", (T + 1000).to_string()),
    ]
    .iter()
    .map(|(n, u)| format!("{n} {u}"))
    .collect();
    assert_eq!(got, want);
    // A retention on a file, or a missing directory, is refused.
    let out = t
        .apply(CommandV1::SetRetention {
            path: "/free".into(),
            retain_ms: Some(1),
        })
        .await;
    assert_eq!(
        out,
        Outcome::Rejected(Rejection::NotADirectory("/free".into()))
    );
    let out = t
        .apply(CommandV1::SetRetention {
            path: "/nope".into(),
            retain_ms: Some(1),
        })
        .await;
    assert_eq!(out, Outcome::Rejected(Rejection::NotFound("/nope".into())));
}

#[test]
fn the_refusal_says_until_when() {
    let r = Rejection::Retained {
        path: "/v/a".into(),
        until_ms: T,
    };
    assert_eq!(r.to_string(), "/v/a: retained until 2025-12-06T05:46:40Z");
}

#[tokio::test]
async fn an_empty_file_is_not_retained_nor_trashed_so_a_lock_then_put_can_replace_it() {
    let t = test_db().await;
    t.trash_on().await;
    t.apply(CommandV1::Mkdir {
        path: "/v".into(),
        parents: true,
        time_ms: T,
    })
    .await;
    t.retain("/v", Some(DAY)).await;
    // The empty file a WebDAV LOCK makes, then the PUT's version over it.
    t.begin(f(1), "/v/doc").await;
    let mut empty = commit(f(1), "/v/doc", Conflict::Fail);
    if let CommandV1::CommitFile { size, segments, .. } = &mut empty {
        *size = 0;
        segments.clear();
    }
    assert!(matches!(t.apply(empty).await, Outcome::Committed { .. }));
    let out = t.put_at(f(2), "/v/doc", Conflict::Replace, T + 1).await;
    assert!(
        matches!(out, Outcome::Committed { replaced: true, .. }),
        "{out:?}"
    );
    assert!(
        t.trashed().await.is_empty(),
        "an empty file is not kept in the trash"
    );
    // The real content is retained.
    assert_eq!(
        t.apply(remove("/v/doc", false, T + 2)).await,
        retained("/v/doc", T + 1 + DAY)
    );
}
