//! Every command's outcome and rejections, applied as the state machine applies them (inside a
//! transaction, on a real SQLite file) and checked through the queries the engine uses and,
//! where no query shows it, the rows themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::command::{CommandV1, Conflict, DeadProp, Lock, Outcome, Rejection, SourceIdentity};
use crate::testutil::{commit, disk, geometry, segment, test_db, TestDb, T};
use crate::EntryKind;
use wormfs_parts::ids::{ClusterId, FileId};
use wormfs_parts::tree_path::TreePath;

fn f(n: u128) -> FileId {
    FileId(n)
}

fn p(s: &str) -> TreePath {
    TreePath::parse(s).unwrap()
}

fn rejected(r: Rejection) -> Outcome {
    Outcome::Rejected(r)
}

fn committed(path: &str, id: FileId, replaced: bool) -> Outcome {
    Outcome::Committed {
        path: path.into(),
        file_id: id,
        replaced,
    }
}

impl TestDb {
    /// The entry at `path`: its kind and file id.
    async fn at(&self, path: &str) -> Option<(EntryKind, Option<FileId>)> {
        self.db
            .lookup(&p(path))
            .await
            .unwrap()
            .map(|e| (e.kind, e.file_id))
    }

    /// The names in directory `path`.
    async fn names(&self, path: &str) -> Vec<String> {
        self.db
            .list(&p(path))
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect()
    }

    async fn mkdir(&self, path: &str, parents: bool) -> Outcome {
        self.apply(CommandV1::Mkdir {
            path: path.into(),
            parents,
            time_ms: T,
        })
        .await
    }

    async fn ingest(
        &self,
        id: FileId,
        writer: u64,
        lease_until_ms: u64,
        append_to: Option<FileId>,
    ) {
        let out = self
            .apply(CommandV1::BeginIngest {
                file_id: id,
                writer,
                path: "/x".into(),
                append_to,
                lease_until_ms,
                time_ms: T,
            })
            .await;
        assert_eq!(out, Outcome::Done);
    }

    /// The intents' ids, sorted.
    async fn intent_ids(&self) -> Vec<FileId> {
        let mut ids: Vec<FileId> = self
            .db
            .intents()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.file_id)
            .collect();
        ids.sort();
        ids
    }

    async fn prop(&self, path: &str, name: &str) {
        let out = self
            .apply(CommandV1::PatchProps {
                path: path.into(),
                patch: vec![(true, prop(name))],
            })
            .await;
        assert_eq!(out, Outcome::Done);
    }

    async fn prop_names(&self, path: &str) -> Option<Vec<String>> {
        self.db
            .props(&p(path))
            .await
            .unwrap()
            .map(|v| v.into_iter().map(|p| p.name).collect())
    }

    async fn file_exists(&self, id: FileId) -> bool {
        self.db.file(id).await.unwrap().is_some()
    }

    async fn lock_tokens(&self) -> Vec<String> {
        self.db
            .locks(0)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.token)
            .collect()
    }
}

fn prop(name: &str) -> DeadProp {
    DeadProp {
        namespace: "urn:t".into(),
        name: name.into(),
        prefix: Some("t".into()),
        xml: Some(format!("<t:{name}>v</t:{name}>").into_bytes()),
    }
}

fn lock(token: &str, path: &str, expires_ms: u64, shared: bool, deep: bool) -> Lock {
    Lock {
        token: token.into(),
        path: path.into(),
        href: path.into(),
        principal: Some("ann".into()),
        owner_xml: None,
        expires_ms,
        timeout_secs: 60,
        shared,
        deep,
    }
}

// InitCluster

#[tokio::test]
async fn init_cluster_records_the_id_once() {
    let t = test_db().await;
    let (a, b) = (
        ClusterId(uuid::Uuid::from_u128(1)),
        ClusterId(uuid::Uuid::from_u128(2)),
    );
    let init = |id| CommandV1::InitCluster {
        cluster_id: id,
        time_ms: T,
    };
    assert_eq!(t.db.cluster_id().await.unwrap(), None);
    assert_eq!(t.apply(init(a)).await, Outcome::Done);
    assert_eq!(t.apply(init(a)).await, Outcome::Done);
    assert_eq!(
        t.apply(init(b)).await,
        rejected(Rejection::AlreadyInitialised)
    );
    assert_eq!(t.db.cluster_id().await.unwrap(), Some(a.to_string()));
}

// RegisterNode, RemoveNode, RegisterDisk

fn register_node(node_id: u64, name: &str, time_ms: u64) -> CommandV1 {
    CommandV1::RegisterNode {
        node_id,
        name: name.into(),
        api_addr: format!("{name}:7070"),
        data_addr: format!("{name}:7072"),
        data_cert: format!("cert-{name}"),
        time_ms,
    }
}

fn register_disk(n: u128, node_id: u64, path: &str, fs_dev: u64, time_ms: u64) -> CommandV1 {
    CommandV1::RegisterDisk {
        disk_id: disk(n),
        node_id,
        path: path.into(),
        fs_dev,
        time_ms,
    }
}

#[tokio::test]
async fn register_node_adds_then_updates_a_machine_keeping_its_join_time() {
    let t = test_db().await;
    assert_eq!(t.apply(register_node(7, "a", T)).await, Outcome::Done);
    assert_eq!(t.apply(register_node(7, "b", T + 5)).await, Outcome::Done);
    // An id above i64::MAX is stored as its bit pattern and read back whole.
    let big = u64::MAX - 1;
    assert_eq!(t.apply(register_node(big, "c", T)).await, Outcome::Done);
    let nodes = t.db.nodes().await.unwrap();
    let seen: Vec<_> = nodes
        .iter()
        .map(|n| {
            (
                n.node_id,
                n.name.as_str(),
                n.api_addr.as_str(),
                n.data_addr.as_str(),
                n.data_cert.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (big, "c", "c:7070", "c:7072", "cert-c"),
            (7, "b", "b:7070", "b:7072", "cert-b"),
        ]
    );
    assert_eq!(
        t.int("SELECT joined_ms FROM nodes WHERE node_id = 7").await,
        T as i64
    );
}

#[tokio::test]
async fn remove_node_unregisters_it_and_marks_its_disks_removed() {
    let t = test_db().await;
    t.apply(register_node(7, "a", T)).await;
    t.apply(register_node(8, "b", T)).await;
    t.apply(register_disk(1, 7, "/d1", 1, T)).await;
    t.apply(register_disk(2, 8, "/d2", 2, T)).await;
    let remove = |node_id| CommandV1::RemoveNode {
        node_id,
        time_ms: T,
    };
    assert_eq!(t.apply(remove(7)).await, Outcome::Done);
    let nodes: Vec<u64> =
        t.db.nodes()
            .await
            .unwrap()
            .iter()
            .map(|n| n.node_id)
            .collect();
    assert_eq!(nodes, vec![8]);
    let states: Vec<_> =
        t.db.disks()
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.disk_id, d.state))
            .collect();
    assert_eq!(
        states,
        vec![(disk(1), "removed".to_owned()), (disk(2), "up".to_owned())]
    );
    assert_eq!(t.db.disk_nodes().await.unwrap(), vec![(disk(2), 8, 2)]);
    // An unknown machine: nothing to do, not a rejection.
    assert_eq!(t.apply(remove(99)).await, Outcome::Done);
    assert_eq!(t.db.nodes().await.unwrap().len(), 1);
}

#[tokio::test]
async fn register_disk_adds_an_up_disk_then_updates_where_it_is() {
    let t = test_db().await;
    assert_eq!(
        t.apply(register_disk(1, 7, "/a", 1, T)).await,
        Outcome::Done
    );
    let d = &t.db.disks().await.unwrap()[0];
    assert_eq!(
        (
            d.disk_id,
            d.node_id,
            d.path.as_str(),
            d.fs_dev,
            d.state.as_str(),
            d.parts
        ),
        (disk(1), 7, "/a", 1, "up", 0)
    );
    // Moved to another machine and path: its state and the time it was added stay.
    t.exec("UPDATE disks SET state = 'draining'").await;
    assert_eq!(
        t.apply(register_disk(1, 8, "/b", 2, T + 9)).await,
        Outcome::Done
    );
    let all = t.db.disks().await.unwrap();
    assert_eq!(all.len(), 1);
    let d = &all[0];
    assert_eq!(
        (d.node_id, d.path.as_str(), d.fs_dev, d.state.as_str()),
        (8, "/b", 2, "draining")
    );
    assert_eq!(t.int("SELECT added_ms FROM disks").await, T as i64);
}

// Mkdir, SetPolicy

#[tokio::test]
async fn mkdir_creates_a_directory_and_refuses_what_is_in_the_way() {
    let t = test_db().await;
    assert_eq!(t.mkdir("/a", false).await, Outcome::Done);
    assert_eq!(t.at("/a").await, Some((EntryKind::Dir, None)));
    assert_eq!(
        t.mkdir("/a", false).await,
        rejected(Rejection::AlreadyExists("/a".into()))
    );
    assert_eq!(t.mkdir("/a", true).await, Outcome::Done);
    t.put(f(1), "/f", Conflict::Fail).await;
    assert_eq!(
        t.mkdir("/f", true).await,
        rejected(Rejection::AlreadyExists("/f".into()))
    );
    assert_eq!(
        t.mkdir("/f/x", true).await,
        rejected(Rejection::NotADirectory("/f".into()))
    );
    assert_eq!(
        t.mkdir("/b/c/d", false).await,
        rejected(Rejection::NotFound("/b".into()))
    );
    assert_eq!(t.at("/b").await, None);
    assert!(matches!(
        t.mkdir("/a/../b", true).await,
        Outcome::Rejected(Rejection::Invalid(_))
    ));
    assert_eq!(
        t.mkdir("/", false).await,
        rejected(Rejection::AlreadyExists("/".into()))
    );
    assert_eq!(t.mkdir("/", true).await, Outcome::Done);
    assert_eq!(t.names("/").await, vec!["a", "f"]);
}

#[tokio::test]
async fn mkdir_with_parents_creates_every_missing_ancestor() {
    let t = test_db().await;
    t.mkdir("/a", false).await;
    assert_eq!(t.mkdir("/a/b/c", true).await, Outcome::Done);
    assert_eq!(t.names("/a").await, vec!["b"]);
    assert_eq!(t.names("/a/b").await, vec!["c"]);
    let e = t.db.lookup(&p("/a/b/c")).await.unwrap().unwrap();
    assert_eq!((e.kind, e.mtime_ms), (EntryKind::Dir, T));
}

#[tokio::test]
async fn set_policy_sets_and_clears_a_directorys_policy() {
    let t = test_db().await;
    t.mkdir("/a/b", true).await;
    let set = |path: &str, policy: Option<&str>| CommandV1::SetPolicy {
        path: path.into(),
        policy: policy.map(str::to_owned),
    };
    assert_eq!(t.apply(set("/a", Some("ec:4+2"))).await, Outcome::Done);
    assert_eq!(
        t.db.effective_policy(&p("/a/b")).await.unwrap(),
        Some("ec:4+2".into())
    );
    assert_eq!(t.apply(set("/", Some("copies:3"))).await, Outcome::Done);
    assert_eq!(t.apply(set("/a", None)).await, Outcome::Done);
    assert_eq!(
        t.db.effective_policy(&p("/a/b")).await.unwrap(),
        Some("copies:3".into())
    );
    t.put(f(1), "/a/f", Conflict::Fail).await;
    assert_eq!(
        t.apply(set("/a/f", Some("ec:4+2"))).await,
        rejected(Rejection::NotADirectory("/a/f".into()))
    );
    assert_eq!(
        t.apply(set("/nope", Some("ec:4+2"))).await,
        rejected(Rejection::NotFound("/nope".into()))
    );
}

// BeginIngest, RenewLease, AbortIngest, ExpireIntents

#[tokio::test]
async fn begin_ingest_records_an_intent_for_its_target() {
    let t = test_db().await;
    t.ingest(f(1), 7, T + 10, None).await;
    t.ingest(f(2), 8, T + 20, Some(f(9))).await;
    let mut i = t.db.intents().await.unwrap();
    i.sort_by_key(|i| i.file_id);
    let seen: Vec<_> = i
        .iter()
        .map(|i| {
            (
                i.file_id,
                i.target_file_id,
                i.writer,
                i.path.as_str(),
                i.lease_until_ms,
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![(f(1), f(1), 7, "/x", T + 10), (f(2), f(9), 8, "/x", T + 20)]
    );
    assert_eq!(t.int("SELECT SUM(append) FROM intents").await, 1);
    // The same intent again replaces it.
    t.ingest(f(1), 7, T + 30, None).await;
    assert_eq!(t.intent_ids().await, vec![f(1), f(2)]);
    assert_eq!(
        t.int(&format!(
            "SELECT lease_until_ms FROM intents WHERE file_id = X'{:032x}'",
            1
        ))
        .await,
        (T + 30) as i64
    );
}

#[tokio::test]
async fn renew_lease_moves_a_live_intents_lease_and_refuses_a_gone_one() {
    let t = test_db().await;
    t.ingest(f(1), 7, T + 10, None).await;
    let renew = |id, until| CommandV1::RenewLease {
        file_id: id,
        lease_until_ms: until,
    };
    assert_eq!(t.apply(renew(f(1), T + 99)).await, Outcome::Done);
    assert_eq!(t.db.intents().await.unwrap()[0].lease_until_ms, T + 99);
    assert_eq!(
        t.apply(renew(f(2), T + 99)).await,
        rejected(Rejection::NoIntent(f(2).to_string()))
    );
}

#[tokio::test]
async fn abort_ingest_drops_the_intent_and_accepts_a_gone_one() {
    let t = test_db().await;
    t.ingest(f(1), 7, T + 10, None).await;
    t.ingest(f(2), 7, T + 10, None).await;
    let abort = |id| CommandV1::AbortIngest { file_id: id };
    assert_eq!(t.apply(abort(f(1))).await, Outcome::Done);
    assert_eq!(t.intent_ids().await, vec![f(2)]);
    assert_eq!(t.apply(abort(f(1))).await, Outcome::Done);
    assert_eq!(t.intent_ids().await, vec![f(2)]);
}

#[tokio::test]
async fn expire_intents_drops_ended_leases_and_a_dead_writers_intents() {
    let t = test_db().await;
    t.ingest(f(1), 7, T + 10, None).await;
    t.ingest(f(2), 8, T + 20, None).await;
    t.ingest(f(3), 9, T + 30, None).await;
    let expire = |now_ms, writer| CommandV1::ExpireIntents { now_ms, writer };
    // A lease ending now is still live.
    assert_eq!(t.apply(expire(T + 10, None)).await, Outcome::Done);
    assert_eq!(t.intent_ids().await, vec![f(1), f(2), f(3)]);
    assert_eq!(t.apply(expire(T + 11, None)).await, Outcome::Done);
    assert_eq!(t.intent_ids().await, vec![f(2), f(3)]);
    // Every intent of the writer, whatever its lease.
    assert_eq!(t.apply(expire(T, Some(9))).await, Outcome::Done);
    assert_eq!(t.intent_ids().await, vec![f(2)]);
}

// CommitFile

#[tokio::test]
async fn commit_file_makes_the_file_visible_and_drops_its_intent() {
    let t = test_db().await;
    t.begin(f(1), "/d/e/a.txt").await;
    assert_eq!(
        t.apply(commit(f(1), "/d/e/a.txt", Conflict::Fail)).await,
        committed("/d/e/a.txt", f(1), false)
    );
    assert_eq!(t.at("/d/e").await, Some((EntryKind::Dir, None)));
    assert_eq!(
        t.at("/d/e/a.txt").await,
        Some((EntryKind::File, Some(f(1))))
    );
    assert!(t.intent_ids().await.is_empty());
    let rec = t.db.file(f(1)).await.unwrap().unwrap();
    assert_eq!(
        (rec.size, rec.policy.as_str(), rec.content_blake3.as_deref()),
        (100, "copies:2", Some("c0ffee"))
    );
    assert_eq!(rec.geometry, geometry());
    assert_eq!(
        rec.source,
        SourceIdentity::Upload {
            client: "test".into()
        }
    );
    assert_eq!((rec.created_ms, rec.mtime_ms), (T, T));
    assert_eq!(rec.etag.len(), 32);
    let seg = &rec.segments[0];
    assert_eq!(
        (rec.segments.len(), seg.index, seg.offset, seg.data_len),
        (1, 0, 0, 100)
    );
    let parts: Vec<_> = seg
        .parts
        .iter()
        .map(|p| (p.index, p.disk_id, p.missing))
        .collect();
    assert_eq!(
        parts,
        vec![(0, Some(disk(1)), false), (1, Some(disk(2)), false)]
    );
    let e = t.db.lookup(&p("/d/e/a.txt")).await.unwrap().unwrap();
    assert_eq!((e.size, e.etag), (100, Some(rec.etag)));
}

/// A lookup (one statement at any depth) finds the root, a name under it, and a deep file with
/// its size and tag; a missing name, a name below a missing folder, and a name below a file
/// find nothing.
#[tokio::test]
async fn lookup_finds_entries_at_every_depth_and_nothing_past_a_miss_or_a_file() {
    let t = test_db().await;
    t.begin(f(1), "/d/e/a.txt").await;
    t.apply(commit(f(1), "/d/e/a.txt", Conflict::Fail)).await;
    t.begin(f(2), "/top.txt").await;
    t.apply(commit(f(2), "/top.txt", Conflict::Fail)).await;
    let root = t.db.lookup(&p("/")).await.unwrap().unwrap();
    assert_eq!(root.kind, EntryKind::Dir);
    let d = t.db.lookup(&p("/d")).await.unwrap().unwrap();
    assert_eq!(
        (d.name.as_str(), d.kind, d.file_id),
        ("d", EntryKind::Dir, None)
    );
    let top = t.db.lookup(&p("/top.txt")).await.unwrap().unwrap();
    assert_eq!(
        (top.kind, top.file_id, top.size),
        (EntryKind::File, Some(f(2)), 100)
    );
    let deep = t.db.lookup(&p("/d/e/a.txt")).await.unwrap().unwrap();
    assert_eq!(
        (deep.name.as_str(), deep.file_id, deep.size, deep.mtime_ms),
        ("a.txt", Some(f(1)), 100, T)
    );
    assert_eq!(deep.etag.map(|e| e.len()), Some(32));
    for missing in [
        "/nope",
        "/d/nope",
        "/d/e/a.txt.bak",
        "/x/e/a.txt",
        "/d/e/a.txt/b",
        "/top.txt/b",
    ] {
        assert!(
            t.db.lookup(&p(missing)).await.unwrap().is_none(),
            "{missing}"
        );
    }
}

#[tokio::test]
async fn commit_file_records_a_missing_part_and_a_drop_folder_source() {
    let t = test_db().await;
    let src = SourceIdentity::DropFolder {
        path: "/drop/a".into(),
        size: 100,
        mtime_ns: -1,
        inode: 3,
        dev: 4,
    };
    let mut cmd = commit(f(1), "/a", Conflict::Fail);
    if let CommandV1::CommitFile {
        source, segments, ..
    } = &mut cmd
    {
        *source = src.clone();
        segments[0].parts[1] = None;
    }
    t.begin(f(1), "/a").await;
    assert_eq!(t.apply(cmd).await, committed("/a", f(1), false));
    assert_eq!(t.db.committed_source(&src).await.unwrap(), Some(f(1)));
    let rec = t.db.file(f(1)).await.unwrap().unwrap();
    assert_eq!(rec.source, src);
    let parts: Vec<_> = rec.segments[0]
        .parts
        .iter()
        .map(|p| (p.disk_id, p.missing))
        .collect();
    assert_eq!(parts, vec![(Some(disk(1)), false), (None, true)]);
    assert_eq!(t.db.degraded_files(10).await.unwrap(), vec![f(1)]);
}

#[tokio::test]
async fn commit_file_without_an_intent_is_refused_and_stores_nothing() {
    let t = test_db().await;
    assert_eq!(
        t.apply(commit(f(1), "/a", Conflict::Fail)).await,
        rejected(Rejection::NoIntent(f(1).to_string()))
    );
    assert_eq!(t.at("/a").await, None);
    assert!(!t.file_exists(f(1)).await);
}

#[tokio::test]
async fn a_refused_commit_still_drops_its_intent() {
    let t = test_db().await;
    t.begin(f(1), "/").await;
    assert_eq!(
        t.apply(commit(f(1), "/", Conflict::Fail)).await,
        rejected(Rejection::InvalidPath("/".into()))
    );
    assert!(t.intent_ids().await.is_empty());
    t.put(f(2), "/f", Conflict::Fail).await;
    t.begin(f(3), "/f/x").await;
    assert_eq!(
        t.apply(commit(f(3), "/f/x", Conflict::Fail)).await,
        rejected(Rejection::NotADirectory("/f".into()))
    );
    assert!(t.intent_ids().await.is_empty());
    assert!(!t.file_exists(f(3)).await);
}

#[tokio::test]
async fn commit_conflict_rename_picks_the_first_free_name() {
    let t = test_db().await;
    t.put(f(1), "/a.txt", Conflict::Rename).await;
    assert_eq!(
        t.put(f(2), "/a.txt", Conflict::Rename).await,
        committed("/a (1).txt", f(2), false)
    );
    assert_eq!(
        t.put(f(3), "/a.txt", Conflict::Rename).await,
        committed("/a (2).txt", f(3), false)
    );
    t.put(f(4), "/d/b", Conflict::Rename).await;
    assert_eq!(
        t.put(f(5), "/d/b", Conflict::Rename).await,
        committed("/d/b (1)", f(5), false)
    );
    t.put(f(6), "/.hidden", Conflict::Rename).await;
    assert_eq!(
        t.put(f(7), "/.hidden", Conflict::Rename).await,
        committed("/.hidden (1)", f(7), false)
    );
    assert_eq!(t.at("/a.txt").await, Some((EntryKind::File, Some(f(1)))));
    assert_eq!(
        t.at("/a (2).txt").await,
        Some((EntryKind::File, Some(f(3))))
    );
}

#[tokio::test]
async fn commit_conflict_rename_never_makes_a_name_or_path_too_long() {
    let t = test_db().await;
    // A 255-byte name (the limit) with an extension: the stem is shortened for " (1)".
    let long = format!("{}.mkv", "a".repeat(251));
    t.put(f(1), &format!("/{long}"), Conflict::Rename).await;
    let want = format!("/{} (1).mkv", "a".repeat(247));
    assert_eq!(
        t.put(f(2), &format!("/{long}"), Conflict::Rename).await,
        committed(&want, f(2), false)
    );
    // Multi-byte characters are cut whole: 127 "é" (2 bytes each) and "x" = 255 bytes.
    let wide = format!("{}x", "é".repeat(127));
    t.put(f(3), &format!("/{wide}"), Conflict::Rename).await;
    let Outcome::Committed { path, .. } = t.put(f(4), &format!("/{wide}"), Conflict::Rename).await
    else {
        panic!("not committed")
    };
    assert_eq!(path, format!("/{} (1)", "é".repeat(125)));
    // An extension that leaves no room is part of the stem.
    let dotted = format!("a.{}", "b".repeat(253));
    t.put(f(5), &format!("/{dotted}"), Conflict::Rename).await;
    let Outcome::Committed { path, .. } =
        t.put(f(6), &format!("/{dotted}"), Conflict::Rename).await
    else {
        panic!("not committed")
    };
    assert_eq!(path.len(), 256, "{path}");
    assert!(path.ends_with("b (1)"), "{path}");
    // A path at the 4096-byte limit keeps within it.
    let dir: String = (0..16)
        .map(|i| format!("/{}{i:02}", "d".repeat(250)))
        .collect();
    let name = "n".repeat(4096 - dir.len() - 1);
    let full = format!("{dir}/{name}");
    assert_eq!(full.len(), 4096);
    t.put(f(7), &full, Conflict::Rename).await;
    let Outcome::Committed { path, .. } = t.put(f(8), &full, Conflict::Rename).await else {
        panic!("not committed")
    };
    assert_eq!(path.len(), 4096);
    assert!(path.ends_with(" (1)"), "{path}");
    // Every renamed name is one a path check accepts, so it can be read and removed.
    for p in [want.as_str(), &path] {
        assert!(TreePath::parse(p).is_ok(), "{p}");
        assert!(t.at(p).await.is_some(), "{p}");
    }
}

#[test]
fn the_renaming_rule_keeps_within_the_limit_for_any_number() {
    use wormfs_parts::tree_path::numbered_name as renamed;
    assert_eq!(renamed("a.txt", 1, 255), "a (1).txt");
    assert_eq!(renamed(".hidden", 2, 255), ".hidden (2)");
    for n in [1, 9, 10, 99, 100, 12345, u64::MAX] {
        for name in [
            "é".repeat(127) + "x",
            "a".repeat(255),
            format!("{}.txt", "€".repeat(83)),
        ] {
            let r = renamed(&name, n, 255);
            assert!(r.len() <= 255, "{r}");
            assert!(r.contains(&format!(" ({n})")), "{r}");
        }
    }
}

#[tokio::test]
async fn commit_conflict_skip_stores_nothing() {
    let t = test_db().await;
    t.put(f(1), "/a", Conflict::Fail).await;
    assert_eq!(
        t.put(f(2), "/a", Conflict::Skip).await,
        Outcome::Skipped { path: "/a".into() }
    );
    assert_eq!(t.at("/a").await, Some((EntryKind::File, Some(f(1)))));
    assert!(!t.file_exists(f(2)).await);
    assert!(t.intent_ids().await.is_empty());
}

#[tokio::test]
async fn commit_conflict_fail_refuses_a_taken_name() {
    let t = test_db().await;
    t.put(f(1), "/a", Conflict::Fail).await;
    assert_eq!(
        t.put(f(2), "/a", Conflict::Fail).await,
        rejected(Rejection::AlreadyExists("/a".into()))
    );
    assert_eq!(t.at("/a").await, Some((EntryKind::File, Some(f(1)))));
    assert!(!t.file_exists(f(2)).await);
    assert!(t.intent_ids().await.is_empty());
}

#[tokio::test]
async fn commit_conflict_replace_replaces_a_file_and_keeps_its_dead_properties() {
    let t = test_db().await;
    t.put(f(1), "/a", Conflict::Fail).await;
    t.prop("/a", "color").await;
    assert_eq!(
        t.put(f(2), "/a", Conflict::Replace).await,
        committed("/a", f(2), true)
    );
    assert_eq!(t.at("/a").await, Some((EntryKind::File, Some(f(2)))));
    assert!(!t.file_exists(f(1)).await, "the replaced file is released");
    assert_eq!(t.prop_names("/a").await, Some(vec!["color".into()]));
    // A replaced file still named by a copy stays.
    t.apply(CommandV1::Copy {
        from: "/a".into(),
        to: "/b".into(),
        replace: false,
        time_ms: T,
    })
    .await;
    assert_eq!(
        t.put(f(3), "/a", Conflict::Replace).await,
        committed("/a", f(3), true)
    );
    assert!(t.file_exists(f(2)).await);
    assert_eq!(t.at("/b").await, Some((EntryKind::File, Some(f(2)))));
}

#[tokio::test]
async fn commit_conflict_replace_never_replaces_a_directory() {
    let t = test_db().await;
    t.mkdir("/d", false).await;
    assert_eq!(
        t.put(f(1), "/d", Conflict::Replace).await,
        rejected(Rejection::IsADirectory("/d".into()))
    );
    assert_eq!(t.at("/d").await, Some((EntryKind::Dir, None)));
    assert!(!t.file_exists(f(1)).await);
    assert!(t.intent_ids().await.is_empty());
}

// AppendSegments

fn append(intent: FileId, file: FileId, expected_size: u64, first: u32) -> CommandV1 {
    CommandV1::AppendSegments {
        intent_id: intent,
        file_id: file,
        expected_size,
        segments: vec![segment(first, 50), segment(first + 1, 7)],
        time_ms: T + 1,
    }
}

#[tokio::test]
async fn append_segments_extends_the_file_after_its_last_byte() {
    let t = test_db().await;
    t.put(f(1), "/a", Conflict::Fail).await;
    let before = t.db.file(f(1)).await.unwrap().unwrap();
    t.ingest(f(9), 7, T + 10, Some(f(1))).await;
    assert_eq!(t.apply(append(f(9), f(1), 100, 1)).await, Outcome::Done);
    let rec = t.db.file(f(1)).await.unwrap().unwrap();
    let segs: Vec<_> = rec
        .segments
        .iter()
        .map(|s| (s.index, s.offset, s.data_len))
        .collect();
    assert_eq!(segs, vec![(0, 0, 100), (1, 100, 50), (2, 150, 7)]);
    assert_eq!(
        (rec.size, rec.content_blake3, rec.mtime_ms),
        (157, None, T + 1)
    );
    assert_eq!(rec.created_ms, T);
    assert_ne!(rec.etag, before.etag);
    assert_eq!(
        t.db.lookup(&p("/a")).await.unwrap().unwrap().mtime_ms,
        T + 1
    );
    assert!(t.intent_ids().await.is_empty());
}

#[tokio::test]
async fn append_to_a_changed_file_is_refused_and_drops_the_intent() {
    let t = test_db().await;
    t.put(f(1), "/a", Conflict::Fail).await;
    // The size it started from is not the file's any more.
    t.ingest(f(9), 7, T + 10, Some(f(1))).await;
    assert_eq!(
        t.apply(append(f(9), f(1), 99, 1)).await,
        rejected(Rejection::Changed(f(1).to_string()))
    );
    assert!(t.intent_ids().await.is_empty());
    // The first new segment does not follow the last one.
    t.ingest(f(9), 7, T + 10, Some(f(1))).await;
    assert_eq!(
        t.apply(append(f(9), f(1), 100, 2)).await,
        rejected(Rejection::Changed(f(1).to_string()))
    );
    let rec = t.db.file(f(1)).await.unwrap().unwrap();
    assert_eq!((rec.size, rec.segments.len()), (100, 1));
    assert_eq!(rec.content_blake3.as_deref(), Some("c0ffee"));
}

#[tokio::test]
async fn append_without_an_intent_to_a_missing_or_shared_file_is_refused() {
    let t = test_db().await;
    t.put(f(1), "/a", Conflict::Fail).await;
    assert_eq!(
        t.apply(append(f(9), f(1), 100, 1)).await,
        rejected(Rejection::NoIntent(f(9).to_string()))
    );
    t.ingest(f(9), 7, T + 10, Some(f(2))).await;
    assert_eq!(
        t.apply(append(f(9), f(2), 0, 0)).await,
        rejected(Rejection::NotFound(f(2).to_string()))
    );
    t.apply(CommandV1::Copy {
        from: "/a".into(),
        to: "/b".into(),
        replace: false,
        time_ms: T,
    })
    .await;
    t.ingest(f(9), 7, T + 10, Some(f(1))).await;
    assert!(matches!(
        t.apply(append(f(9), f(1), 100, 1)).await,
        Outcome::Rejected(Rejection::Invalid(m)) if m.contains("shared with a copy")
    ));
    assert_eq!(t.db.file(f(1)).await.unwrap().unwrap().size, 100);
}

// Remove

fn remove(path: &str, recursive: bool) -> CommandV1 {
    CommandV1::Remove {
        path: path.into(),
        recursive,
        time_ms: T,
    }
}

#[tokio::test]
async fn remove_drops_a_files_name_and_releases_it() {
    let t = test_db().await;
    t.put(f(1), "/a", Conflict::Fail).await;
    t.put(f(2), "/b", Conflict::Fail).await;
    t.prop("/a", "color").await;
    assert_eq!(t.apply(remove("/a", false)).await, Outcome::Done);
    assert_eq!(t.at("/a").await, None);
    assert!(!t.file_exists(f(1)).await);
    assert_eq!(
        t.int("SELECT COUNT(*) FROM parts").await,
        2,
        "only /b's parts"
    );
    assert_eq!(t.int("SELECT COUNT(*) FROM props").await, 0);
    assert_eq!(
        t.apply(remove("/a", false)).await,
        rejected(Rejection::NotFound("/a".into()))
    );
    assert_eq!(
        t.apply(remove("/", true)).await,
        rejected(Rejection::InvalidPath("/".into()))
    );
    assert_eq!(t.names("/").await, vec!["b"]);
}

#[tokio::test]
async fn remove_of_a_directory_needs_recursive_unless_empty() {
    let t = test_db().await;
    t.mkdir("/e", false).await;
    t.put(f(1), "/d/x", Conflict::Fail).await;
    t.put(f(2), "/d/s/y", Conflict::Fail).await;
    t.prop("/d/s", "color").await;
    // A copy outside keeps its file alive.
    t.apply(CommandV1::Copy {
        from: "/d/x".into(),
        to: "/keep".into(),
        replace: false,
        time_ms: T,
    })
    .await;
    assert_eq!(
        t.apply(remove("/d", false)).await,
        rejected(Rejection::NotEmpty("/d".into()))
    );
    assert_eq!(t.names("/d").await, vec!["s", "x"]);
    assert_eq!(t.apply(remove("/e", false)).await, Outcome::Done);
    assert_eq!(t.apply(remove("/d", true)).await, Outcome::Done);
    assert_eq!(t.names("/").await, vec!["keep"]);
    assert!(t.file_exists(f(1)).await);
    assert!(!t.file_exists(f(2)).await);
    assert_eq!(
        t.int("SELECT COUNT(*) FROM entries").await,
        2,
        "root and /keep"
    );
    assert_eq!(t.int("SELECT COUNT(*) FROM props").await, 0);
}

// Rename

fn rename(from: &str, to: &str, replace: bool) -> CommandV1 {
    CommandV1::Rename {
        from: from.into(),
        to: to.into(),
        replace,
        time_ms: T + 1,
    }
}

#[tokio::test]
async fn rename_moves_an_entry_with_its_properties() {
    let t = test_db().await;
    t.put(f(1), "/d/a", Conflict::Fail).await;
    t.prop("/d", "color").await;
    t.mkdir("/e", false).await;
    assert_eq!(t.apply(rename("/d/a", "/e/b", false)).await, Outcome::Done);
    assert_eq!(t.at("/d/a").await, None);
    let e = t.db.lookup(&p("/e/b")).await.unwrap().unwrap();
    assert_eq!((e.file_id, e.mtime_ms), (Some(f(1)), T + 1));
    assert_eq!(t.apply(rename("/d", "/e/d", false)).await, Outcome::Done);
    assert_eq!(t.prop_names("/e/d").await, Some(vec!["color".into()]));
    // Onto itself: nothing to do.
    assert_eq!(t.apply(rename("/e/b", "/e/b", false)).await, Outcome::Done);
    assert_eq!(t.names("/e").await, vec!["b", "d"]);
}

#[tokio::test]
async fn rename_replaces_only_a_file_with_a_file_and_only_when_asked() {
    let t = test_db().await;
    t.put(f(1), "/a", Conflict::Fail).await;
    t.put(f(2), "/b", Conflict::Fail).await;
    t.mkdir("/d", false).await;
    assert_eq!(
        t.apply(rename("/a", "/b", false)).await,
        rejected(Rejection::AlreadyExists("/b".into()))
    );
    assert_eq!(
        t.apply(rename("/a", "/d", true)).await,
        rejected(Rejection::AlreadyExists("/d".into()))
    );
    assert_eq!(
        t.apply(rename("/d", "/b", true)).await,
        rejected(Rejection::AlreadyExists("/b".into()))
    );
    assert_eq!(t.apply(rename("/a", "/b", true)).await, Outcome::Done);
    assert_eq!(t.at("/b").await, Some((EntryKind::File, Some(f(1)))));
    assert_eq!(t.at("/a").await, None);
    assert!(!t.file_exists(f(2)).await, "the replaced file is released");
}

#[tokio::test]
async fn rename_refuses_the_root_a_directory_into_itself_and_missing_paths() {
    let t = test_db().await;
    t.mkdir("/d", false).await;
    t.put(f(1), "/f", Conflict::Fail).await;
    let cases = [
        ("/d", "/d/e", Rejection::InvalidPath("/d/e".into())),
        ("/", "/x", Rejection::InvalidPath("/x".into())),
        ("/d", "/", Rejection::InvalidPath("/".into())),
        ("/nope", "/x", Rejection::NotFound("/nope".into())),
        ("/d", "/x/y", Rejection::NotFound("/x".into())),
        ("/d", "/f/y", Rejection::NotADirectory("/f".into())),
    ];
    for (from, to, why) in cases {
        assert_eq!(
            t.apply(rename(from, to, false)).await,
            rejected(why),
            "{from} -> {to}"
        );
    }
    assert!(matches!(
        t.apply(rename("/d", "/a/./b", false)).await,
        Outcome::Rejected(Rejection::Invalid(_))
    ));
    assert_eq!(t.names("/").await, vec!["d", "f"]);
}

// Copy

fn copy(from: &str, to: &str, replace: bool) -> CommandV1 {
    CommandV1::Copy {
        from: from.into(),
        to: to.into(),
        replace,
        time_ms: T + 1,
    }
}

#[tokio::test]
async fn copy_shares_the_file_and_copies_its_dead_properties() {
    let t = test_db().await;
    t.put(f(1), "/a", Conflict::Fail).await;
    t.prop("/a", "color").await;
    t.mkdir("/d", false).await;
    assert_eq!(t.apply(copy("/a", "/d/b", false)).await, Outcome::Done);
    assert_eq!(t.at("/d/b").await, Some((EntryKind::File, Some(f(1)))));
    assert_eq!(t.prop_names("/d/b").await, Some(vec!["color".into()]));
    assert_eq!(
        t.int("SELECT COUNT(*) FROM files").await,
        1,
        "no part is copied"
    );
    // The file lives as long as one of its names.
    t.apply(remove("/a", false)).await;
    assert!(t.file_exists(f(1)).await);
    t.apply(remove("/d/b", false)).await;
    assert!(!t.file_exists(f(1)).await);
}

#[tokio::test]
async fn copy_replaces_a_file_only_when_asked_and_refuses_the_rest() {
    let t = test_db().await;
    t.put(f(1), "/a", Conflict::Fail).await;
    t.put(f(2), "/b", Conflict::Fail).await;
    t.mkdir("/d", false).await;
    let cases = [
        ("/a", "/b", false, Rejection::AlreadyExists("/b".into())),
        ("/a", "/d", true, Rejection::AlreadyExists("/d".into())),
        ("/d", "/c", false, Rejection::IsADirectory("/d".into())),
        ("/a", "/a", true, Rejection::InvalidPath("/a".into())),
        ("/a", "/", true, Rejection::InvalidPath("/".into())),
        ("/nope", "/c", false, Rejection::NotFound("/nope".into())),
        ("/a", "/x/c", false, Rejection::NotFound("/x".into())),
        ("/a", "/b/c", false, Rejection::NotADirectory("/b".into())),
    ];
    for (from, to, replace, why) in cases {
        assert_eq!(
            t.apply(copy(from, to, replace)).await,
            rejected(why),
            "{from} -> {to}"
        );
    }
    assert_eq!(t.apply(copy("/a", "/b", true)).await, Outcome::Done);
    assert_eq!(t.at("/b").await, Some((EntryKind::File, Some(f(1)))));
    assert!(!t.file_exists(f(2)).await, "the replaced file is released");
}

// PatchProps

#[tokio::test]
async fn patch_props_sets_and_removes_in_order() {
    let t = test_db().await;
    t.put(f(1), "/a", Conflict::Fail).await;
    let patch = |patch| CommandV1::PatchProps {
        path: "/a".into(),
        patch,
    };
    let out = t
        .apply(patch(vec![
            (true, prop("x")),
            (true, prop("y")),
            (false, prop("x")),
            (true, prop("z")),
        ]))
        .await;
    assert_eq!(out, Outcome::Done);
    assert_eq!(t.prop_names("/a").await, Some(vec!["y".into(), "z".into()]));
    let mut newer = prop("y");
    newer.xml = Some(b"<t:y>w</t:y>".to_vec());
    t.apply(patch(vec![(true, newer.clone())])).await;
    let props = t.db.props(&p("/a")).await.unwrap().unwrap();
    assert_eq!(props, vec![newer, prop("z")]);
    assert_eq!(
        t.apply(CommandV1::PatchProps {
            path: "/nope".into(),
            patch: vec![(true, prop("x"))],
        })
        .await,
        rejected(Rejection::NotFound("/nope".into()))
    );
    let mut by_name = t.db.child_props(&p("/")).await.unwrap().unwrap();
    assert_eq!(by_name.remove("a").map(|v| v.len()), Some(2));
}

// Lock, Unlock, RefreshLock, DeleteLocks

#[tokio::test]
async fn lock_grants_a_lock_unless_a_live_one_conflicts() {
    let t = test_db().await;
    let take = |l: &Lock, now_ms| CommandV1::Lock {
        lock: l.clone(),
        now_ms,
    };
    let a = lock("t1", "/a", T + 10, false, true);
    assert_eq!(t.apply(take(&a, T)).await, Outcome::Lock(a.clone()));
    // Exclusive and deep on /a: a lock below it conflicts.
    let b = lock("t2", "/a/b", T + 20, true, false);
    assert_eq!(t.apply(take(&b, T)).await, Outcome::LockConflict(a.clone()));
    // Once /a's lock has expired it is dropped and no longer conflicts.
    assert_eq!(t.apply(take(&b, T + 10)).await, Outcome::Lock(b.clone()));
    assert_eq!(t.lock_tokens().await, vec!["t2"]);
    // Shared locks coexist.
    let c = lock("t3", "/a/b", T + 20, true, false);
    assert_eq!(t.apply(take(&c, T + 10)).await, Outcome::Lock(c));
    assert!(matches!(
        t.apply(take(&lock("", "/a", T + 10, false, false), T))
            .await,
        Outcome::Rejected(Rejection::Invalid(_))
    ));
    assert!(matches!(
        t.apply(take(&lock("t4", "a/../b", T + 10, false, false), T))
            .await,
        Outcome::Rejected(Rejection::Invalid(_))
    ));
    assert_eq!(t.lock_tokens().await, vec!["t2", "t3"]);
}

#[tokio::test]
async fn unlock_drops_a_lock_and_refuses_an_unknown_token() {
    let t = test_db().await;
    t.apply(CommandV1::Lock {
        lock: lock("t1", "/a", T + 10, false, false),
        now_ms: T,
    })
    .await;
    let unlock = || CommandV1::Unlock { token: "t1".into() };
    assert_eq!(t.apply(unlock()).await, Outcome::Done);
    assert!(t.lock_tokens().await.is_empty());
    assert_eq!(
        t.apply(unlock()).await,
        rejected(Rejection::NotFound("lock t1".into()))
    );
}

#[tokio::test]
async fn refresh_lock_extends_a_live_lock_only() {
    let t = test_db().await;
    t.apply(CommandV1::Lock {
        lock: lock("t1", "/a", T + 10, false, false),
        now_ms: T,
    })
    .await;
    let refresh = |expires_ms, now_ms| CommandV1::RefreshLock {
        token: "t1".into(),
        expires_ms,
        timeout_secs: 120,
        now_ms,
    };
    let mut want = lock("t1", "/a", T + 500, false, false);
    want.timeout_secs = 120;
    assert_eq!(t.apply(refresh(T + 500, T + 9)).await, Outcome::Lock(want));
    assert_eq!(
        t.apply(refresh(T + 900, T + 500)).await,
        rejected(Rejection::NotFound("lock t1".into())),
        "expired at T + 500"
    );
    assert_eq!(t.db.locks(0).await.unwrap()[0].expires_ms, T + 500);
}

#[tokio::test]
async fn delete_locks_drops_the_locks_on_a_path_and_below() {
    let t = test_db().await;
    for (token, path) in [("t1", "/a"), ("t2", "/a/b"), ("t3", "/ab"), ("t4", "/c")] {
        t.apply(CommandV1::Lock {
            lock: lock(token, path, T + 10, true, false),
            now_ms: T,
        })
        .await;
    }
    let out = t.apply(CommandV1::DeleteLocks { path: "/a".into() }).await;
    assert_eq!(out, Outcome::Done);
    assert_eq!(t.lock_tokens().await, vec!["t3", "t4"]);
}

// RemoveTree, MoveTree, CopyTree

#[tokio::test]
async fn remove_tree_removes_everything_below_with_its_locks() {
    let t = test_db().await;
    t.put(f(1), "/d/s/x", Conflict::Fail).await;
    t.put(f(2), "/e", Conflict::Fail).await;
    for (token, path) in [("t1", "/d/s/x"), ("t2", "/e")] {
        t.apply(CommandV1::Lock {
            lock: lock(token, path, T + 10, true, false),
            now_ms: T,
        })
        .await;
    }
    let rm = |path: &str| CommandV1::RemoveTree {
        path: path.into(),
        time_ms: T,
    };
    assert_eq!(t.apply(rm("/d")).await, Outcome::Done);
    assert_eq!(t.names("/").await, vec!["e"]);
    assert!(!t.file_exists(f(1)).await);
    assert_eq!(t.lock_tokens().await, vec!["t2"]);
    assert_eq!(t.apply(rm("/e")).await, Outcome::Done);
    assert!(!t.file_exists(f(2)).await);
    assert_eq!(
        t.apply(rm("/e")).await,
        rejected(Rejection::NotFound("/e".into()))
    );
    assert_eq!(
        t.apply(rm("/")).await,
        rejected(Rejection::InvalidPath("/".into()))
    );
}

fn move_tree(from: &str, to: &str, replace: bool) -> CommandV1 {
    CommandV1::MoveTree {
        from: from.into(),
        to: to.into(),
        replace,
        time_ms: T + 1,
    }
}

#[tokio::test]
async fn move_tree_moves_a_directory_and_overwrites_only_when_asked() {
    let t = test_db().await;
    t.put(f(1), "/d/x", Conflict::Fail).await;
    t.put(f(2), "/e/y", Conflict::Fail).await;
    t.apply(CommandV1::Lock {
        lock: lock("t1", "/d/x", T + 10, true, false),
        now_ms: T,
    })
    .await;
    assert_eq!(
        t.apply(move_tree("/d", "/e", false)).await,
        rejected(Rejection::AlreadyExists("/e".into()))
    );
    assert_eq!(t.apply(move_tree("/d", "/e", true)).await, Outcome::Done);
    assert_eq!(t.names("/").await, vec!["e"]);
    assert_eq!(t.at("/e/x").await, Some((EntryKind::File, Some(f(1)))));
    assert!(
        !t.file_exists(f(2)).await,
        "the overwritten tree's files are released"
    );
    assert!(
        t.lock_tokens().await.is_empty(),
        "a lock never follows a move"
    );
    let cases = [
        ("/e", "/e/z", Rejection::InvalidPath("/e/z".into())),
        ("/e/x", "/e", Rejection::InvalidPath("/e".into())),
        ("/", "/z", Rejection::InvalidPath("/".into())),
        ("/nope", "/z", Rejection::NotFound("/nope".into())),
        ("/e", "/x/z", Rejection::NotFound("/x".into())),
    ];
    for (from, to, why) in cases {
        assert_eq!(
            t.apply(move_tree(from, to, true)).await,
            rejected(why),
            "{from} -> {to}"
        );
    }
    assert_eq!(t.names("/e").await, vec!["x"]);
}

#[tokio::test]
async fn copy_tree_copies_deep_or_shallow_sharing_files() {
    let t = test_db().await;
    t.put(f(1), "/d/x", Conflict::Fail).await;
    t.put(f(2), "/d/s/y", Conflict::Fail).await;
    t.prop("/d/s", "color").await;
    t.apply(CommandV1::SetPolicy {
        path: "/d".into(),
        policy: Some("ec:4+2".into()),
    })
    .await;
    let copy_tree = |to: &str, deep| CommandV1::CopyTree {
        from: "/d".into(),
        to: to.into(),
        replace: false,
        deep,
        time_ms: T + 1,
    };
    assert_eq!(t.apply(copy_tree("/deep", true)).await, Outcome::Done);
    assert_eq!(t.names("/deep").await, vec!["s", "x"]);
    assert_eq!(t.at("/deep/s/y").await, Some((EntryKind::File, Some(f(2)))));
    assert_eq!(t.prop_names("/deep/s").await, Some(vec!["color".into()]));
    assert_eq!(
        t.db.effective_policy(&p("/deep")).await.unwrap(),
        Some("ec:4+2".into())
    );
    assert_eq!(
        t.int("SELECT COUNT(*) FROM files").await,
        2,
        "files are shared"
    );
    assert_eq!(t.apply(copy_tree("/flat", false)).await, Outcome::Done);
    assert!(t.names("/flat").await.is_empty());
    assert_eq!(
        t.apply(copy_tree("/deep", true)).await,
        rejected(Rejection::AlreadyExists("/deep".into()))
    );
    assert_eq!(
        t.apply(copy_tree("/d/s/in", true)).await,
        rejected(Rejection::InvalidPath("/d/s/in".into()))
    );
    // The originals are untouched.
    assert_eq!(t.names("/d").await, vec!["s", "x"]);
}

// Determinism

#[tokio::test]
async fn the_same_commands_give_the_same_database() {
    async fn run() -> Vec<String> {
        let t = test_db().await;
        t.put(f(1), "/a.txt", Conflict::Fail).await;
        t.put(f(2), "/a.txt", Conflict::Rename).await;
        t.prop("/a.txt", "color").await;
        t.apply(copy("/a.txt", "/d/b", false)).await;
        t.mkdir("/d", true).await;
        t.apply(copy("/a.txt", "/d/b", false)).await;
        t.apply(rename("/a (1).txt", "/d/c", false)).await;
        t.texts(
            "SELECT id || '|' || parent || '|' || name || '|' || is_dir || '|' || \
             COALESCE(hex(file_id), '') || '|' || mtime_ms FROM entries ORDER BY id",
        )
        .await
        .into_iter()
        .chain(
            t.texts(
                "SELECT hex(file_id) || '|' || size || '|' || etag FROM files ORDER BY file_id",
            )
            .await,
        )
        .collect()
    }
    let (a, b) = (run().await, run().await);
    assert_eq!(a, b);
    // Entries: the root, /a.txt, /d, /d/b, /d/c (the first copy found no /d); two files.
    assert_eq!(a.len(), 5 + 2, "{a:?}");
}

// Commands that cannot be stored: refusals, never errors (an error stops every replica).

#[tokio::test]
async fn a_commit_that_cannot_be_stored_is_refused_not_an_error() {
    let t = test_db().await;
    t.put(f(1), "/a", Conflict::Fail).await;
    let taken = rejected(Rejection::Invalid(format!(
        "file {} is committed already",
        f(1)
    )));
    // A second intent for a committed file's id, then its commit elsewhere or over itself.
    t.begin(f(1), "/b").await;
    assert_eq!(
        t.try_apply(commit(f(1), "/b", Conflict::Fail))
            .await
            .unwrap(),
        taken
    );
    assert_eq!(t.at("/b").await, None);
    t.begin(f(1), "/a").await;
    assert_eq!(
        t.try_apply(commit(f(1), "/a", Conflict::Replace))
            .await
            .unwrap(),
        taken
    );
    assert_eq!(
        t.at("/a").await,
        Some((EntryKind::File, Some(f(1)))),
        "nothing replaced"
    );
    assert!(t.file_exists(f(1)).await);
    // A segment index twice.
    let mut cmd = commit(f(2), "/c", Conflict::Fail);
    if let CommandV1::CommitFile { segments, .. } = &mut cmd {
        *segments = vec![segment(0, 50), segment(0, 50)];
    }
    t.begin(f(2), "/c").await;
    assert_eq!(
        t.try_apply(cmd.clone()).await.unwrap(),
        rejected(Rejection::Invalid("segment 0 appears twice".into()))
    );
    assert_eq!(t.at("/c").await, None);
    assert!(!t.file_exists(f(2)).await);
    assert!(t.intent_ids().await.is_empty());
    // Every earlier refusal and the skip still come first.
    t.begin(f(2), "/a").await;
    if let CommandV1::CommitFile { path, conflict, .. } = &mut cmd {
        (*path, *conflict) = ("/a".into(), Conflict::Skip);
    }
    assert_eq!(t.apply(cmd).await, Outcome::Skipped { path: "/a".into() });
}

#[tokio::test]
async fn an_append_that_cannot_be_stored_is_refused_not_an_error() {
    let t = test_db().await;
    t.put(f(1), "/a", Conflict::Fail).await;
    for (indexes, why) in [
        ([1, 1], "segment 1 appears twice"),
        ([1, 0], "segment 0 exists already"),
    ] {
        t.ingest(f(9), 7, T + 10, Some(f(1))).await;
        let out = t
            .try_apply(CommandV1::AppendSegments {
                intent_id: f(9),
                file_id: f(1),
                expected_size: 100,
                segments: indexes.iter().map(|&i| segment(i, 10)).collect(),
                time_ms: T + 1,
            })
            .await
            .unwrap();
        assert_eq!(
            out,
            rejected(Rejection::Invalid(format!("{}: {why}", f(1))))
        );
        let rec = t.db.file(f(1)).await.unwrap().unwrap();
        assert_eq!((rec.size, rec.segments.len()), (100, 1));
        assert!(t.intent_ids().await.is_empty());
    }
}

#[tokio::test]
async fn a_lock_whose_token_is_in_use_is_refused_not_an_error() {
    let t = test_db().await;
    let take = |path: &str| CommandV1::Lock {
        lock: lock("t1", path, T + 10, true, false),
        now_ms: T,
    };
    assert!(matches!(t.apply(take("/a")).await, Outcome::Lock(_)));
    assert_eq!(
        t.try_apply(take("/b")).await.unwrap(),
        rejected(Rejection::Invalid("lock token t1 is in use".into()))
    );
    let locks = t.db.locks(0).await.unwrap();
    assert_eq!((locks.len(), locks[0].path.as_str()), (1, "/a"));
}

#[tokio::test]
async fn no_move_rename_or_copy_makes_a_path_below_it_too_long() {
    let t = test_db().await;
    // A file 4094 bytes deep under /a: "/a" + 16 folders of 1 + 250 bytes + the file's name.
    let dirs: String = (0..16)
        .map(|i| format!("/{}{i:02}", "d".repeat(248)))
        .collect();
    let name = "n".repeat(4094 - 2 - dirs.len() - 1);
    let file = format!("/a{dirs}/{name}");
    assert_eq!(file.len(), 4094);
    t.put(f(1), &file, Conflict::Fail).await;
    let too_long = |o: Outcome| {
        matches!(&o, Outcome::Rejected(Rejection::Invalid(m)) if m.contains("4097 bytes")) || {
            panic!("{o:?}")
        }
    };
    // Three more bytes in the folder's name would take the file to 4097.
    assert!(too_long(t.apply(rename("/a", "/abcd", false)).await));
    assert!(too_long(t.apply(move_tree("/a", "/abcd", false)).await));
    let copy = CommandV1::CopyTree {
        from: "/a".into(),
        to: "/abcd".into(),
        replace: false,
        deep: true,
        time_ms: T + 1,
    };
    assert!(too_long(t.apply(copy).await));
    assert!(t.at(&file).await.is_some());
    assert!(t.at("/abcd").await.is_none());
    // As long or shorter is fine.
    assert_eq!(t.apply(rename("/a", "/b", false)).await, Outcome::Done);
    assert!(t.at(&format!("/b{dirs}/{name}")).await.is_some());
    assert_eq!(t.apply(move_tree("/b", "/abc", false)).await, Outcome::Done);
}

/// Group commit: a batch applies its commands in order, as consecutive entries would, each
/// with its own outcome; a refused one (a taken name) does not stop the others, and the tree
/// changes of the whole batch are told in order.
#[tokio::test]
async fn a_batch_applies_each_command_with_its_own_outcome() {
    let t = test_db().await;
    assert_eq!(
        t.put(f(1), "/Photos/a.jpg", Conflict::Fail).await,
        committed("/Photos/a.jpg", f(1), false)
    );
    let begin = |id: u128, path: &str| CommandV1::BeginIngest {
        file_id: f(id),
        writer: 7,
        path: path.into(),
        append_to: None,
        lease_until_ms: T + 60_000,
        time_ms: T,
    };
    let out = t
        .apply(CommandV1::Batch {
            commands: vec![
                begin(2, "/Photos/a.jpg"),
                begin(3, "/Photos/b.jpg"),
                begin(4, "/Photos/c.jpg"),
            ],
        })
        .await;
    assert_eq!(
        out,
        Outcome::Batch(vec![Outcome::Done, Outcome::Done, Outcome::Done])
    );
    let batch = CommandV1::Batch {
        commands: vec![
            commit(f(2), "/Photos/a.jpg", Conflict::Fail),
            commit(f(3), "/Photos/b.jpg", Conflict::Fail),
            commit(f(9), "/Photos/never-begun.jpg", Conflict::Fail),
            commit(f(4), "/Photos/c.jpg", Conflict::Fail),
        ],
    };
    let out = t.apply(batch.clone()).await;
    assert_eq!(
        out,
        Outcome::Batch(vec![
            rejected(Rejection::AlreadyExists("/Photos/a.jpg".into())),
            committed("/Photos/b.jpg", f(3), false),
            rejected(Rejection::NoIntent(f(9).to_string())),
            committed("/Photos/c.jpg", f(4), false),
        ])
    );
    assert_eq!(t.names("/Photos").await, ["a.jpg", "b.jpg", "c.jpg"]);
    assert_eq!(t.at("/Photos/a.jpg").await.unwrap().1, Some(f(1)));
    // As for a single refused commit, the refused file's intent is consumed.
    assert_eq!(t.int("SELECT COUNT(*) FROM intents").await, 0);
    let changes: Vec<String> = crate::changes::tree_changes(&batch, &out)
        .into_iter()
        .map(|c| format!("{c:?}"))
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(changes[0].contains("/Photos/b.jpg") && changes[1].contains("/Photos/c.jpg"));
}

/// A batch holds at least one command and no batch: anything else is refused whole, with
/// nothing applied.
#[tokio::test]
async fn an_empty_or_nested_batch_is_refused_whole() {
    let t = test_db().await;
    let empty = t.apply(CommandV1::Batch { commands: vec![] }).await;
    assert!(matches!(empty, Outcome::Rejected(Rejection::Invalid(_))));
    let nested = t
        .apply(CommandV1::Batch {
            commands: vec![
                CommandV1::Mkdir {
                    path: "/a".into(),
                    parents: false,
                    time_ms: T,
                },
                CommandV1::Batch { commands: vec![] },
            ],
        })
        .await;
    assert!(matches!(nested, Outcome::Rejected(Rejection::Invalid(_))));
    assert!(
        t.at("/a").await.is_none(),
        "nothing of a refused batch applies"
    );
}

/// The one-statement walk finds what walking name by name finds, for paths that are there,
/// paths missing at every depth and paths that go on below a file, with names JSON and SQL
/// would quote.
#[tokio::test]
async fn walk_in_one_statement_agrees_with_walking_name_by_name() {
    use crate::apply::{walk, walk_stepwise, Walk};
    let t = test_db().await;
    let odd = "/a/b 'quoted' \"x\"/$[0] ü/[]*?:";
    assert_eq!(t.mkdir(odd, true).await, Outcome::Done);
    assert_eq!(t.mkdir("/a/c", false).await, Outcome::Done);
    let id = f(9);
    assert_eq!(
        t.put(id, "/a/c/file.txt", Conflict::Fail).await,
        committed("/a/c/file.txt", id, false)
    );
    let show = |w: Walk| match w {
        Walk::Found(r) => format!("found {} {} {:?}", r.id, r.is_dir, r.file_id),
        Walk::Missing { dir, at } => format!("missing under {dir} at {at}"),
        Walk::NotDir(i) => format!("not a folder at {i}"),
    };
    let paths = [
        "/",
        "/a",
        "/nope",
        "/a/b 'quoted' \"x\"",
        odd,
        "/a/b 'quoted' \"x\"/$[0] ü/[]*?:/deeper/still",
        "/a/b 'quoted' \"x\"/$[1] ü",
        "/a/c/file.txt",
        "/a/c/file.txt/below",
        "/a/c/file.txt/below/more",
        "/a/c/other",
        "/a/x/y/z",
    ];
    let mut c = t.db.pool().acquire().await.unwrap();
    let mut seen = std::collections::HashSet::new();
    for path in paths {
        let one = show(walk(&mut c, &p(path)).await.unwrap());
        let step = show(walk_stepwise(&mut c, &p(path)).await.unwrap());
        assert_eq!(one, step, "{path}");
        seen.insert(one.split(' ').next().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 3, "every kind of outcome was walked: {seen:?}");
}

/// The commit of a small file `id` at `path` whose writer had seen `sweeps_before` sweeps.
fn commit_small(id: FileId, path: &str, conflict: Conflict, sweeps_before: u64) -> CommandV1 {
    CommandV1::CommitSmallFile {
        file: crate::testutil::file_commit(id, path, conflict),
        sweeps_before,
    }
}

/// A file's rows go in one round trip when every part was written and it has few segments,
/// and in several (16 segments each) otherwise: both ways store the same segments at the
/// same offsets with the same parts, and a missing part is queued for repair.
#[tokio::test]
async fn a_commit_stores_every_segment_and_part_in_one_trip_or_in_several() {
    let t = test_db().await;
    let seg =
        |index: u32, parts: Vec<Option<wormfs_parts::ids::DiskId>>| crate::command::NewSegment {
            index,
            data_len: 10 + u64::from(index),
            blake3: format!("{index:064x}"),
            parts,
        };
    let shapes: [(u128, Vec<crate::command::NewSegment>); 2] = [
        (
            1,
            (0..3)
                .map(|i| seg(i, vec![Some(disk(1)), Some(disk(2))]))
                .collect(),
        ),
        (
            2,
            (0..20)
                .map(|i| seg(i, vec![Some(disk(1)), (i != 17).then(|| disk(2))]))
                .collect(),
        ),
    ];
    for (n, segments) in shapes {
        let mut file = crate::testutil::file_commit(f(n), &format!("/s/{n}"), Conflict::Fail);
        file.size = segments.iter().map(|s| s.data_len).sum();
        file.segments = segments.clone();
        assert_eq!(
            t.apply(CommandV1::CommitSmallFile {
                file,
                sweeps_before: 0
            })
            .await,
            committed(&format!("/s/{n}"), f(n), false)
        );
        let rec = t.db.file(f(n)).await.unwrap().unwrap();
        let mut offset = 0;
        assert_eq!(rec.segments.len(), segments.len());
        for (got, want) in rec.segments.iter().zip(&segments) {
            assert_eq!(
                (got.index, got.offset, got.data_len),
                (want.index, offset, want.data_len)
            );
            let parts: Vec<_> = got.parts.iter().map(|p| p.disk_id).collect();
            assert_eq!(parts, want.parts);
            offset += want.data_len;
        }
        let e = t.db.lookup(&p(&format!("/s/{n}"))).await.unwrap().unwrap();
        assert_eq!((e.file_id, e.size), (Some(f(n)), offset));
    }
    let queued = t.db.repair_queue(10).await.unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(t.int("SELECT COUNT(*) FROM parts").await, 2 * 3 + 2 * 20);
}

/// A small file commits without an intent, as a `CommitFile` would, unless a sweep began
/// after its writer looked: then it is refused and nothing of it is visible.
#[tokio::test]
async fn commit_small_file_needs_no_intent_and_is_refused_after_a_sweep_began() {
    let t = test_db().await;
    // No sweep yet: no intent is needed or made.
    assert_eq!(
        t.apply(commit_small(f(1), "/p/a.jpg", Conflict::Fail, 0))
            .await,
        committed("/p/a.jpg", f(1), false)
    );
    assert_eq!(t.at("/p/a.jpg").await, Some((EntryKind::File, Some(f(1)))));
    assert_eq!(t.int("SELECT COUNT(*) FROM intents").await, 0);
    // The conflict rules are CommitFile's.
    assert_eq!(
        t.apply(commit_small(f(2), "/p/a.jpg", Conflict::Fail, 0))
            .await,
        rejected(Rejection::AlreadyExists("/p/a.jpg".into()))
    );
    assert_eq!(
        t.apply(commit_small(f(2), "/p/a.jpg", Conflict::Rename, 0))
            .await,
        committed("/p/a (1).jpg", f(2), false)
    );

    // A sweep begins: writers that saw none are refused, and nothing of theirs is visible.
    let sweep = CommandV1::SweepBegins { node: 7 };
    assert_eq!(t.apply(sweep.clone()).await, Outcome::Done);
    assert_eq!(t.db.sweeps_begun().await.unwrap(), 1);
    assert_eq!(
        t.apply(commit_small(f(3), "/p/b.jpg", Conflict::Fail, 0))
            .await,
        rejected(Rejection::PartsMaybeSwept(f(3).to_string()))
    );
    assert_eq!(t.at("/p/b.jpg").await, None);
    // The same into a folder that does not exist yet: refused before it is made.
    assert_eq!(
        t.apply(commit_small(f(3), "/q/b.jpg", Conflict::Fail, 0))
            .await,
        rejected(Rejection::PartsMaybeSwept(f(3).to_string()))
    );
    assert_eq!(t.at("/q").await, None);
    assert_eq!(t.int("SELECT COUNT(*) FROM files").await, 2);
    // A writer that saw it commits, until the next sweep begins.
    assert_eq!(
        t.apply(commit_small(f(4), "/p/c.jpg", Conflict::Fail, 1))
            .await,
        committed("/p/c.jpg", f(4), false)
    );
    assert_eq!(t.apply(sweep).await, Outcome::Done);
    assert_eq!(
        t.apply(commit_small(f(5), "/p/d.jpg", Conflict::Fail, 1))
            .await,
        rejected(Rejection::PartsMaybeSwept(f(5).to_string()))
    );
    assert_eq!(
        t.apply(commit_small(f(5), "/p/d.jpg", Conflict::Fail, 2))
            .await,
        committed("/p/d.jpg", f(5), false)
    );
    // A CommitFile still needs its intent, whatever the sweeps.
    assert_eq!(
        t.apply(commit(f(6), "/p/e.jpg", Conflict::Fail)).await,
        rejected(Rejection::NoIntent(f(6).to_string()))
    );
}

/// The locks and the sweep count, which every write reads first, are served from memory
/// until a command that may change them is applied (an ingest's commands do not), and read
/// again after one.
#[tokio::test]
async fn locks_and_the_sweep_count_are_read_again_after_a_command_that_may_change_them() {
    let t = test_db().await;
    assert!(t.db.locks(T).await.unwrap().is_empty());
    assert_eq!(t.db.sweeps_begun().await.unwrap(), 0);
    let l = lock("t1", "/a", T + 10, false, false);
    t.apply(CommandV1::Lock {
        lock: l.clone(),
        now_ms: T,
    })
    .await;
    assert_eq!(t.db.locks(T).await.unwrap(), vec![l.clone()]);
    assert!(t.db.locks(T + 10).await.unwrap().is_empty(), "expired");
    t.apply(CommandV1::SweepBegins { node: 1 }).await;
    assert_eq!(t.db.sweeps_begun().await.unwrap(), 1);
    assert_eq!(t.db.locks(T).await.unwrap(), vec![l.clone()]);

    // A batch of ingests' commands leaves what was read alone: rows changed behind the
    // state machine's back (here, to tell the two apart) are not seen...
    let ingests = CommandV1::Batch {
        commands: vec![commit_small(f(1), "/p/a.jpg", Conflict::Fail, 1)],
    };
    assert!(ingests.only_ingests());
    t.apply(ingests).await;
    t.exec("DELETE FROM locks").await;
    t.exec("UPDATE kv SET value = '5' WHERE key = 'sweeps_begun'")
        .await;
    assert_eq!(t.db.locks(T).await.unwrap(), vec![l.clone()]);
    assert_eq!(t.db.sweeps_begun().await.unwrap(), 1);
    // ...until a command that may change them is applied, even in a batch with ingests.
    let mixed = CommandV1::Batch {
        commands: vec![
            commit_small(f(2), "/p/b.jpg", Conflict::Fail, 5),
            CommandV1::DeleteLocks {
                path: "/elsewhere".into(),
            },
        ],
    };
    assert!(!mixed.only_ingests());
    t.apply(mixed).await;
    assert!(t.db.locks(T).await.unwrap().is_empty());
    assert_eq!(t.db.sweeps_begun().await.unwrap(), 5);
}

/// A commit finds its folder at any depth, makes the missing ones, and is refused where a
/// file stands in the way: the same answers whether the folder existed (one statement reads
/// it) or not.
#[tokio::test]
async fn a_commit_finds_or_makes_its_folder_at_any_depth() {
    let t = test_db().await;
    assert_eq!(
        t.apply(commit_small(f(1), "/a/b/c/one", Conflict::Fail, 0))
            .await,
        committed("/a/b/c/one", f(1), false)
    );
    // The folder exists now: the name taken is seen, each conflict rule as before.
    assert_eq!(
        t.apply(commit_small(f(2), "/a/b/c/one", Conflict::Fail, 0))
            .await,
        rejected(Rejection::AlreadyExists("/a/b/c/one".into()))
    );
    assert_eq!(
        t.apply(commit_small(f(2), "/a/b/c/one", Conflict::Skip, 0))
            .await,
        Outcome::Skipped {
            path: "/a/b/c/one".into()
        }
    );
    assert_eq!(
        t.apply(commit_small(f(2), "/a/b/c/one", Conflict::Replace, 0))
            .await,
        committed("/a/b/c/one", f(2), true)
    );
    assert_eq!(
        t.at("/a/b/c/one").await,
        Some((EntryKind::File, Some(f(2))))
    );
    // Its own id again is refused, in an existing folder and in a new one.
    for path in ["/a/b/c/two", "/a/new/two"] {
        assert_eq!(
            t.apply(commit_small(f(2), path, Conflict::Fail, 0)).await,
            rejected(Rejection::Invalid(format!(
                "file {} is committed already",
                f(2)
            ))),
            "{path}"
        );
        assert_eq!(t.at(path).await, None, "{path}");
    }
    // A folder beside, a level up, and the root.
    for (n, path) in [(3, "/a/b/d/three"), (4, "/a/four"), (5, "/five")] {
        assert_eq!(
            t.apply(commit_small(f(n), path, Conflict::Fail, 0)).await,
            committed(path, f(n), false)
        );
        assert_eq!(t.at(path).await, Some((EntryKind::File, Some(f(n)))));
    }
    assert_eq!(t.at("/a/b/d").await, Some((EntryKind::Dir, None)));
    // A file on the way: refused, naming it, and nothing made.
    assert_eq!(
        t.apply(commit_small(f(6), "/a/b/c/one/x/six", Conflict::Fail, 0))
            .await,
        rejected(Rejection::NotADirectory("/a/b/c/one".into()))
    );
    // The name is a folder: refused with Replace as with Fail.
    assert_eq!(
        t.apply(commit_small(f(6), "/a/b", Conflict::Replace, 0))
            .await,
        rejected(Rejection::IsADirectory("/a/b".into()))
    );
    assert_eq!(t.int("SELECT COUNT(*) FROM files").await, 4);
}
