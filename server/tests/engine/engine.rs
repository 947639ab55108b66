//! In-process tests of the storage engine: round trips, ranges, damage, disks, restarts.

use std::sync::atomic::Ordering;

use crate::common::*;
use rand::{Rng, SeedableRng};
use wormfs_parts::tree_path::TreePath;
use wormfs_server::store::StoreError;

/// The engine runs alone, on the parts and metadata crates and an in-process consensus: no
/// peer network and no data server, so not one listening socket; and it stores and reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_alone_listens_on_nothing_and_stores() {
    let t = tempfile::tempdir().unwrap();
    let node = start(&config(t.path(), 4096, 64 * 1024)).await;
    assert_eq!(listening_ports(), Vec::<u16>::new());
    let data = vec![5u8; 100_000];
    put(&node.store, "/alone.bin", Some("ec:4+2"), &data)
        .await
        .unwrap();
    let back = read(&node.store, "/alone.bin", 0, data.len() as u64).await;
    assert_eq!(back.unwrap(), data);
    node.stop().await;
}

/// Every size, under every policy, reads back whole and in random ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_under_several_policies() {
    let t = tempfile::tempdir().unwrap();
    let node = start(&config(t.path(), 4096, 64 * 1024)).await;
    let store = node.store.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let sizes = [0usize, 1, 4095, 4096, 16_384, 100_003, 1_048_577, 3_000_001];
    for policy in [
        "ec:4+2", "ec:2+1", "ec:3+2", "copies:2", "copies:1", "ec:5+1",
    ] {
        for (i, &size) in sizes.iter().enumerate() {
            let data = random_bytes(size, i as u64);
            let path = format!("/{policy}/f{i}");
            let r = put(&store, &path, Some(policy), &data).await.unwrap();
            assert_eq!(r.size, size as u64);
            assert_eq!(r.blake3, blake3::hash(&data).to_hex().to_string());
            assert_eq!(
                read(&store, &path, 0, size as u64).await.unwrap(),
                data,
                "{path}"
            );
            for _ in 0..8 {
                if size == 0 {
                    break;
                }
                let a = rng.random_range(0..size);
                let b = rng.random_range(a..=size.min(a + 200_000));
                assert_eq!(
                    read(&store, &path, a as u64, b as u64).await.unwrap(),
                    &data[a..b],
                    "{path} {a}..{b}"
                );
            }
        }
    }
    // Beyond the end is an error, not a short read.
    assert!(read(&store, "/ec:4+2/f4", 0, 16_385).await.is_err());
    node.stop().await;
}

/// A file of several hundred MB crosses segment boundaries with the default geometry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let mut cfg = config(t.path(), 256 * 1024, 16 << 20);
    cfg.storage.block_size_bytes = 256 * 1024;
    let node = start(&cfg).await;
    let store = node.store.clone();
    let size = 300 * 1024 * 1024 + 12_345;
    let data = random_bytes(size, 77);
    let r = put(&store, "/big.mkv", Some("ec:4+2"), &data)
        .await
        .unwrap();
    assert_eq!(r.blake3, blake3::hash(&data).to_hex().to_string());
    let rec = store.meta.file(r.file_id).await.unwrap().unwrap();
    assert_eq!(rec.segments.len(), 5, "300 MiB in 64 MiB segments");
    let back = read(&store, "/big.mkv", 0, size as u64).await.unwrap();
    assert!(back == data, "content differs");
    node.stop().await;
}

/// A healthy 64 KiB range reads at most two blocks; a degraded one at most k blocks per row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_touch_only_the_blocks_they_need() {
    let t = tempfile::tempdir().unwrap();
    let bs = 64 * 1024u64;
    let mut cfg = config(t.path(), bs as u32, 4 << 20);
    // The counters are the node's: a repair that the degraded read's report starts, or a
    // scrub, would read the same disks meanwhile. This test measures the reader alone.
    cfg.repair.enabled = false;
    cfg.scrub.enabled = false;
    let node = start(&cfg).await;
    let store = node.store.clone();
    let data = random_bytes(6 << 20, 5);
    let r = put(&store, "/f", Some("ec:4+2"), &data).await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for _ in 0..20 {
        let a = rng.random_range(0..data.len() as u64 - bs);
        let before = bytes_read(&store);
        let got = read(&store, "/f", a, a + bs).await.unwrap();
        assert_eq!(got, &data[a as usize..(a + bs) as usize]);
        assert!(
            bytes_read(&store) - before <= 2 * bs,
            "healthy 64 KiB range read {} bytes",
            bytes_read(&store) - before
        );
    }
    // Delete data part 1 of segment 0: a block of it is decoded from k parts per row.
    let rec = store.meta.file(r.file_id).await.unwrap().unwrap();
    let d = store
        .disk(rec.segments[0].parts[1].disk_id.unwrap())
        .unwrap();
    std::fs::remove_file(d.part_path(r.file_id, 0, 1)).unwrap();
    let before = bytes_read(&store);
    let rows_before = store.counters.degraded_rows.load(Ordering::Relaxed);
    let a = bs; // block 1 of row 0 lives in part 1
    assert_eq!(
        read(&store, "/f", a, a + bs).await.unwrap(),
        &data[a as usize..(a + bs) as usize]
    );
    let rows = store.counters.degraded_rows.load(Ordering::Relaxed) - rows_before;
    assert!(rows >= 1);
    let used = bytes_read(&store) - before;
    assert!(
        used <= 4 * bs * rows,
        "degraded read used {used} bytes for {rows} rows"
    );
    node.stop().await;
}

fn damage(kind: &str, path: &std::path::Path) {
    match kind {
        "delete" => std::fs::remove_file(path).unwrap(),
        "truncate" => {
            let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len / 2).unwrap();
        }
        "corrupt" => {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
            let len = f.metadata().unwrap().len();
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, len - 100).unwrap();
            f.write_all_at(&[b[0] ^ 0xff], len - 100).unwrap();
            f.write_all_at(b"garbage", 4096 + 10).unwrap();
        }
        "header" => {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            f.write_all_at(b"XXXX", 40).unwrap();
        }
        _ => unreachable!(),
    }
}

/// Up to m damaged parts per segment (deleted, truncated, corrupt, bad header) are read
/// around and reported; m+1 is a clear error, never wrong bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_parts_are_decoded_around_up_to_m() {
    let t = tempfile::tempdir().unwrap();
    let node = start(&config(t.path(), 4096, 64 * 1024)).await;
    let store = node.store.clone();
    for (n, kind) in ["delete", "truncate", "corrupt", "header"]
        .iter()
        .enumerate()
    {
        let data = random_bytes(700_001, n as u64);
        let path = format!("/d/{kind}");
        let r = put(&store, &path, Some("ec:4+2"), &data).await.unwrap();
        let rec = store.meta.file(r.file_id).await.unwrap().unwrap();
        // Damage two parts (a data and a parity part, then two data parts) of every segment.
        for s in &rec.segments {
            for p in [0usize, if n % 2 == 0 { 5 } else { 2 }] {
                let d = store.disk(s.parts[p].disk_id.unwrap()).unwrap();
                damage(kind, &d.part_path(r.file_id, s.index, p as u16));
            }
        }
        let before = store.counters.damaged_part_reads.load(Ordering::Relaxed);
        assert_eq!(
            read(&store, &path, 0, data.len() as u64).await.unwrap(),
            data,
            "{kind}"
        );
        assert!(
            store.counters.damaged_part_reads.load(Ordering::Relaxed) > before,
            "{kind}: damage not reported"
        );
        // One more part lost in segment 0: unreadable, with a clear error.
        let s = &rec.segments[0];
        let d = store.disk(s.parts[3].disk_id.unwrap()).unwrap();
        std::fs::remove_file(d.part_path(r.file_id, s.index, 3)).unwrap();
        let err = read(&store, &path, 0, data.len() as u64).await.unwrap_err();
        assert!(
            err.contains("unreadable") && err.contains("needed"),
            "{kind}: {err}"
        );
    }
    // Copies: all but one copy lost still reads; all lost is an error.
    let data = random_bytes(50_000, 99);
    let r = put(&store, "/c", Some("copies:3"), &data).await.unwrap();
    let rec = store.meta.file(r.file_id).await.unwrap().unwrap();
    for p in 0..2 {
        let d = store
            .disk(rec.segments[0].parts[p].disk_id.unwrap())
            .unwrap();
        damage(
            if p == 0 { "corrupt" } else { "delete" },
            &d.part_path(r.file_id, 0, p as u16),
        );
    }
    assert_eq!(read(&store, "/c", 0, 50_000).await.unwrap(), data);
    let d = store
        .disk(rec.segments[0].parts[2].disk_id.unwrap())
        .unwrap();
    damage("delete", &d.part_path(r.file_id, 0, 2));
    assert!(read(&store, "/c", 0, 50_000).await.is_err());
    node.stop().await;
}

/// A reader whose parts are already open (as WebDAV shares them between requests) serves
/// page-cached blocks without the blocking pool; it must still verify every block: a block
/// corrupted after the part was opened is noticed once, counted, and decoded around.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_parts_still_verify_every_block() {
    use std::os::unix::fs::FileExt;
    let t = tempfile::tempdir().unwrap();
    let node = start(&config(t.path(), 4096, 64 * 1024)).await;
    let store = node.store.clone();
    let data = random_bytes(300_000, 17);
    let r = put(&store, "/o", Some("ec:4+2"), &data).await.unwrap();
    let rec = store.meta.file(r.file_id).await.unwrap().unwrap();
    let parts = std::sync::Arc::new(wormfs_server::read::OpenParts::default());
    let reader =
        |rec| wormfs_server::read::FileReader::with_open_parts(store.clone(), rec, parts.clone());
    // Block 1 of data part 1 (bytes 20480..24576 of segment 0 with 4 KiB blocks, 4 data parts).
    let (start, end) = (20_480 + 100, 20_480 + 3_000);
    let first = reader(rec.clone()).read_range(start, end).await.unwrap();
    assert_eq!(&first[..], &data[start as usize..end as usize]);
    let seg = &rec.segments[0];
    let disk = store.disk(seg.parts[1].disk_id.unwrap()).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(disk.part_path(r.file_id, seg.index, 1))
        .unwrap();
    let header_len = {
        let head = std::fs::read(disk.part_path(r.file_id, seg.index, 1)).unwrap();
        wormfs_parts::part_format::PartHeader::decode(&head)
            .unwrap()
            .header_len
    };
    f.write_all_at(b"rot", u64::from(header_len) + 4096 + 7)
        .unwrap();
    let errors = disk.read_errors.load(Ordering::Relaxed);
    let damaged = store.counters.damaged_part_reads.load(Ordering::Relaxed);
    for _ in 0..3 {
        let again = reader(rec.clone()).read_range(start, end).await.unwrap();
        assert_eq!(&again[..], &data[start as usize..end as usize]);
    }
    assert_eq!(
        disk.read_errors.load(Ordering::Relaxed),
        errors + 1,
        "the corrupt block is found once, then its part is read around"
    );
    assert!(store.counters.damaged_part_reads.load(Ordering::Relaxed) > damaged);
    node.stop().await;
}

/// A long sequential read with a data part missing in every segment decodes windows ahead on
/// other threads: it must finish with the right bytes (a deadlock here once hung reads), and a
/// short range must not decode beyond its own window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_degraded_reads_decode_ahead_and_finish() {
    let t = tempfile::tempdir().unwrap();
    // 4 KiB blocks, 1 MiB parts: 256 rows (32 decode windows) per ec:4+2 segment.
    let node = start(&config(t.path(), 4096, 1024 * 1024)).await;
    let store = node.store.clone();
    let data = random_bytes(9 * 1024 * 1024 + 12_345, 5);
    let r = put(&store, "/long", Some("ec:4+2"), &data).await.unwrap();
    let rec = store.meta.file(r.file_id).await.unwrap().unwrap();
    assert!(rec.segments.len() >= 3);
    for s in &rec.segments {
        let d = store.disk(s.parts[0].disk_id.unwrap()).unwrap();
        damage("delete", &d.part_path(r.file_id, s.index, 0));
    }
    let whole = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        read(&store, "/long", 0, data.len() as u64),
    )
    .await
    .expect("degraded read finishes")
    .unwrap();
    assert!(whole == data, "degraded read returned wrong bytes");
    // A fresh reader of 10 KiB in the middle decodes one window (8 rows), nothing ahead.
    let before = store.counters.degraded_rows.load(Ordering::Relaxed);
    let mid = 5 * 1024 * 1024 + 100;
    let got = read(&store, "/long", mid, mid + 10_000).await.unwrap();
    assert_eq!(got, &data[mid as usize..mid as usize + 10_000]);
    let decoded = store.counters.degraded_rows.load(Ordering::Relaxed) - before;
    assert!(
        (1..=8).contains(&decoded),
        "decoded {decoded} rows for a 10 KB range"
    );
    node.stop().await;
}

/// A full disk set fails the ingest cleanly: nothing visible, no intent, no part left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disks_fail_the_ingest_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let mut cfg = config(t.path(), 4096, 64 * 1024);
    cfg.storage.reserve_free_bytes = u64::MAX / 4;
    let node = start(&cfg).await;
    let store = node.store.clone();
    let err = put(&store, "/x", Some("ec:4+2"), &random_bytes(300_000, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(store
        .meta
        .lookup(&TreePath::parse("/x").unwrap())
        .await
        .unwrap()
        .is_none());
    assert!(store.meta.intents().await.unwrap().is_empty());
    assert!(part_files(&store).is_empty(), "{:?}", part_files(&store));
    node.stop().await;
}

/// A disk whose identity vanished (unmounted) gets no parts; ingest goes on with the others
/// as long as the policy fits, and a policy wider than the disks is refused clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_disk_gets_no_parts() {
    let t = tempfile::tempdir().unwrap();
    let node = start(&config(t.path(), 4096, 64 * 1024)).await;
    let store = node.store.clone();
    let gone = store.disks.snapshot()[2].clone();
    std::fs::remove_file(gone.root.join(wormfs_parts::disk::IDENTITY_FILE)).unwrap();
    for i in 0..10 {
        let r = put(
            &store,
            &format!("/f{i}"),
            Some("ec:3+2"),
            &random_bytes(100_000, i),
        )
        .await
        .unwrap();
        let rec = store.meta.file(r.file_id).await.unwrap().unwrap();
        assert!(rec
            .segments
            .iter()
            .all(|s| s.parts.iter().all(|p| p.disk_id != Some(gone.id))));
    }
    let err = put(&store, "/wide", Some("ec:8+3"), &random_bytes(10, 1))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("needs 11 disks but only 6"),
        "{err}"
    );
    node.stop().await;
}

/// Append adds segments; the earlier parts keep their inodes and bytes; ETag changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_adds_segments_without_rewriting() {
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().unwrap();
    let node = start(&config(t.path(), 4096, 64 * 1024)).await;
    let store = node.store.clone();
    let a = random_bytes(300_000, 1);
    let b = random_bytes(200_000, 2);
    let r = put(&store, "/log", Some("ec:4+2"), &a).await.unwrap();
    let before = store.meta.file(r.file_id).await.unwrap().unwrap();
    let snap: Vec<_> = part_files(&store)
        .into_iter()
        .map(|p| {
            (
                p.clone(),
                std::fs::metadata(&p).unwrap().ino(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    store
        .append(&TreePath::parse("/log").unwrap(), &b[..])
        .await
        .unwrap();
    let after = store.meta.file(r.file_id).await.unwrap().unwrap();
    assert_eq!(after.size, 500_000);
    assert!(after.segments.len() > before.segments.len());
    assert_ne!(after.etag, before.etag);
    assert!(after.content_blake3.is_none());
    for (p, ino, bytes) in snap {
        assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
        assert_eq!(std::fs::read(&p).unwrap(), bytes);
    }
    let mut all = a.clone();
    all.extend_from_slice(&b);
    assert_eq!(read(&store, "/log", 0, 500_000).await.unwrap(), all);
    assert_eq!(
        read(&store, "/log", 299_000, 301_000).await.unwrap(),
        &all[299_000..301_000]
    );
    node.stop().await;
}

/// The conflict rules: fail, rename ("name (1).ext"), skip, replace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_rules() {
    use wormfs_meta::command::Conflict;
    let t = tempfile::tempdir().unwrap();
    let node = start(&config(t.path(), 4096, 64 * 1024)).await;
    let store = node.store.clone();
    put(&store, "/a/film.mkv", None, b"one").await.unwrap();
    assert!(put(&store, "/a/film.mkv", None, b"two").await.is_err());
    let mut r = req("/a/film.mkv", None);
    r.conflict = Conflict::Rename;
    assert_eq!(
        store.ingest(r.clone(), &b"two"[..]).await.unwrap().path,
        "/a/film (1).mkv"
    );
    assert_eq!(
        store.ingest(r, &b"three"[..]).await.unwrap().path,
        "/a/film (2).mkv"
    );
    let mut r = req("/a/film.mkv", None);
    r.conflict = Conflict::Skip;
    assert!(store.ingest(r, &b"four"[..]).await.unwrap().skipped);
    let mut r = req("/a/film.mkv", None);
    r.conflict = Conflict::Replace;
    assert!(store.ingest(r, &b"five"[..]).await.unwrap().replaced);
    assert_eq!(read(&store, "/a/film.mkv", 0, 4).await.unwrap(), b"five");
    assert_eq!(read(&store, "/a/film (1).mkv", 0, 3).await.unwrap(), b"two");
    // The skipped and replaced files' parts are gone after a sweep (grace 0).
    node.stop().await;
}

/// Everything committed survives a restart, also after a snapshot and log purge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything_also_after_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let cfg = config(t.path(), 4096, 64 * 1024);
    let node = start(&cfg).await;
    let store = node.store.clone();
    let data = random_bytes(123_457, 3);
    for i in 0..20 {
        put(&store, &format!("/dir{}/f{i}", i % 3), None, &data)
            .await
            .unwrap();
    }
    store
        .mkdir(&TreePath::parse("/empty").unwrap(), false)
        .await
        .unwrap();
    store.consensus.snapshot_and_purge().await.unwrap();
    for i in 20..25 {
        put(&store, &format!("/late/f{i}"), None, &data)
            .await
            .unwrap();
    }
    drop(store);
    node.stop().await;
    let node = start(&cfg).await;
    let store = node.store.clone();
    for i in 0..20 {
        assert_eq!(
            read(&store, &format!("/dir{}/f{i}", i % 3), 0, data.len() as u64)
                .await
                .unwrap(),
            data
        );
    }
    for i in 20..25 {
        assert_eq!(
            read(&store, &format!("/late/f{i}"), 0, data.len() as u64)
                .await
                .unwrap(),
            data
        );
    }
    assert!(store
        .meta
        .lookup(&TreePath::parse("/empty").unwrap())
        .await
        .unwrap()
        .is_some());
    node.stop().await;
}

/// The namespace syncs no batch on its own (the log does): after a power loss it may be a
/// few batches behind the log. Set back like that (an older copy of the database put in
/// place), a node applies the rest again from the log at its start, and every file it had
/// acknowledged reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_set_back_behind_the_log_catches_up_at_the_start() {
    let t = tempfile::tempdir().unwrap();
    let cfg = config(t.path(), 4096, 64 * 1024);
    let db = cfg.node.data_dir.join("meta").join("metadata.db");
    let older = t.path().join("metadata-older.db");
    let data = random_bytes(20_000, 9);
    let node = start(&cfg).await;
    for i in 0..5 {
        put(&node.store, &format!("/early/f{i}"), None, &data)
            .await
            .unwrap();
    }
    node.stop().await;
    // Stopped cleanly, the database file holds everything (its WAL was checkpointed).
    std::fs::copy(&db, &older).unwrap();
    let node = start(&cfg).await;
    for i in 0..5 {
        put(&node.store, &format!("/late/f{i}"), None, &data)
            .await
            .unwrap();
    }
    node.stop().await;
    std::fs::copy(&older, &db).unwrap();
    for ext in ["-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(ext);
        let _ = std::fs::remove_file(p);
    }
    let node = start(&cfg).await;
    let store = node.store.clone();
    // Applied again once this node, alone, leads and commits an entry of its term.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store
        .meta
        .lookup(&TreePath::parse("/late/f4").unwrap())
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the files acknowledged after the older copy never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for dir in ["early", "late"] {
        for i in 0..5 {
            let p = format!("/{dir}/f{i}");
            assert_eq!(
                read(&store, &p, 0, data.len() as u64).await.unwrap(),
                data,
                "{p}"
            );
        }
    }
    drop(store);
    node.stop().await;
}

/// Orphan parts (a removed file's, an abandoned intent's) are swept; live ones are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_removes_orphans_only() {
    let t = tempfile::tempdir().unwrap();
    let mut cfg = config(t.path(), 4096, 64 * 1024);
    cfg.ingest.orphan_grace_ms = cfg.ingest.lease_ms;
    // No trash: the removed file's parts are orphans at once.
    cfg.retention.trash_ms = 0;
    let node = start(&cfg).await;
    let store = node.store.clone();
    put(&store, "/keep", Some("ec:4+2"), &random_bytes(100_000, 1))
        .await
        .unwrap();
    put(&store, "/gone", Some("ec:4+2"), &random_bytes(100_000, 2))
        .await
        .unwrap();
    let all = part_files(&store).len();
    store
        .remove(&TreePath::parse("/gone").unwrap(), false)
        .await
        .unwrap();
    // Young orphans are kept for the grace time.
    let r = wormfs_server::sweeper::sweep(&store).await.unwrap();
    assert_eq!((r.removed, r.kept_young), (0, 6));
    drop(store);
    node.stop().await;
    cfg.ingest.orphan_grace_ms = 0;
    cfg.ingest.lease_ms = 1;
    let node = start(&cfg).await;
    let store = node.store.clone();
    let r = wormfs_server::sweeper::sweep(&store).await.unwrap();
    assert_eq!(r.removed, 6);
    assert_eq!(part_files(&store).len(), all - 6);
    assert_eq!(
        read(&store, "/keep", 0, 100_000).await.unwrap(),
        random_bytes(100_000, 1)
    );
    node.stop().await;
}

/// A small file commits without an intent; when a sweep began while its parts were written
/// (here: a sweep counted between its parts and its commit), the commit is refused, its parts are removed, and the file is stored again under an
/// intent: the put succeeds, and only the second write's parts remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_whose_commit_follows_a_sweep_is_stored_again_with_an_intent() {
    let t = tempfile::tempdir().unwrap();
    let node = start(&config(t.path(), 4096, 64 * 1024)).await;
    let store = node.store.clone();
    let first = random_bytes(3000, 7);
    let r = put(&store, "/a.jpg", None, &first).await.unwrap();
    assert_eq!(r.policy, "copies:3");
    // A sweep begins between the writer's look and its commit.
    let sweep = wormfs_meta::command::CommandV1::SweepBegins {
        node: store.node_id,
    };
    before_commit("/b.jpg", sweep);
    let second = random_bytes(3000, 8);
    let r = put(&store, "/b.jpg", None, &second).await.unwrap();
    assert_eq!(store.meta.sweeps_begun().await.unwrap(), 1);
    assert_eq!(read(&store, "/b.jpg", 0, 3000).await.unwrap(), second);
    assert_eq!(read(&store, "/a.jpg", 0, 3000).await.unwrap(), first);
    let id = r.file_id.to_string();
    let parts: Vec<_> = part_files(&store)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&id))
        .collect();
    assert_eq!(parts.len(), 3, "{parts:?}");
    assert_eq!(
        part_files(&store).len(),
        6,
        "the refused write's parts were removed"
    );
    assert!(store.meta.intents().await.unwrap().is_empty());
    node.stop().await;
}

/// Proposes `cmd` just before the commit of `path` (the `crash-points` feature's hook; the
/// suite runs with it, tests/run-all.sh).
fn before_commit(path: &str, cmd: wormfs_meta::command::CommandV1) {
    #[cfg(feature = "crash-points")]
    wormfs_server::ingest::before_commit_for_tests(path, cmd);
    #[cfg(not(feature = "crash-points"))]
    panic!("this test needs the crash-points feature: run the suite with tests/run-all.sh (--features wormfs-server/crash-points); {path} {cmd:?}");
}
