//! The events recorded by apply: each caused by its command on a real SQLite file, none for a
//! command that changes nothing, the same history however often a state is repeated, and a
//! bounded history.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::command::{
    CommandV1, Conflict, DiskStatus, EventSeverity, Outcome, PartRef, RepairedPart, SegmentRef,
};
use crate::testutil::{disk, test_db, TestDb, T};
use crate::EVENT_HISTORY;
use wormfs_parts::ids::FileId;

impl TestDb {
    async fn kinds(&self) -> Vec<String> {
        let mut k: Vec<String> = self
            .db
            .events(1000, None, None)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        k.reverse();
        k
    }
}

fn state(d: u128, s: DiskStatus, t: u64) -> CommandV1 {
    CommandV1::SetDiskState {
        disk_id: disk(d),
        state: s,
        reason: "test".into(),
        time_ms: t,
    }
}

#[tokio::test]
async fn machines_disks_and_corruption_leave_events_once_each() {
    let db = test_db().await;
    let node = CommandV1::RegisterNode {
        node_id: 1,
        name: "nas".into(),
        api_addr: "127.0.0.1:7710".into(),
        data_addr: String::new(),
        data_cert: String::new(),
        time_ms: T,
    };
    db.apply(node.clone()).await;
    db.apply(node).await; // an update: no second "joined"
    for d in 1..=3u128 {
        db.apply(CommandV1::RegisterDisk {
            disk_id: disk(d),
            node_id: 1,
            path: format!("/d{d}"),
            fs_dev: d as u64,
            time_ms: T,
        })
        .await;
    }
    assert_eq!(
        db.kinds().await,
        ["member_joined", "disk_added", "disk_added", "disk_added"]
    );
    assert!(matches!(
        db.put(FileId(10), "/film.mkv", Conflict::Fail).await,
        Outcome::Committed { .. }
    ));

    // A state repeated (the health checker re-proposes it) is one event; "back" when up again.
    db.apply(state(2, DiskStatus::Down, T + 1)).await;
    db.apply(state(2, DiskStatus::Down, T + 2)).await;
    db.apply(state(2, DiskStatus::Out, T + 3)).await;
    db.apply(state(2, DiskStatus::Up, T + 4)).await;
    // An unknown disk is refused: no event.
    assert!(matches!(
        db.apply(state(99, DiskStatus::Down, T + 5)).await,
        Outcome::Rejected(_)
    ));
    let all = db.db.events(1000, None, None).await.unwrap();
    let kinds: Vec<&str> = all.iter().rev().skip(4).map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["disk_down", "disk_out", "disk_back"]);
    let out = &all[1];
    assert_eq!(out.severity, EventSeverity::Critical);
    assert_eq!(out.node, Some(1));
    assert_eq!(out.disk.as_deref(), Some(disk(2).to_string().as_str()));
    assert!(
        out.message.contains("/d2") && out.message.contains("was down"),
        "{out:?}"
    );
    assert_eq!(out.at_ms, T + 3);

    // Corruption found once per part, however often it is reported; a part the metadata
    // does not place on that disk is no corruption of ours.
    let part = PartRef {
        file_id: FileId(10),
        seg: 0,
        part: 0,
        disk_id: disk(1),
    };
    let report = |p: PartRef| CommandV1::QueueRepair {
        segments: vec![],
        damaged: vec![p],
        reason: "scrub".into(),
        time_ms: T + 10,
    };
    db.apply(report(PartRef {
        disk_id: disk(3),
        ..part
    }))
    .await;
    db.apply(report(part)).await;
    db.apply(report(part)).await;
    let e = &db.db.events(1, None, None).await.unwrap()[0];
    assert_eq!(e.kind, "corruption_found");
    assert_eq!(e.path.as_deref(), Some("/film.mkv"));
    assert!(
        e.message.contains("/film.mkv") && e.message.contains("/d1"),
        "{e:?}"
    );
    assert_eq!(db.kinds().await.len(), 8);

    // Its repair writes the damaged part elsewhere: "corruption_repaired".
    db.apply(CommandV1::CommitRepair {
        segment: SegmentRef {
            file_id: FileId(10),
            seg: 0,
        },
        parts: vec![RepairedPart {
            part: 0,
            from: Some(disk(1)),
            to: disk(3),
        }],
        time_ms: T + 20,
        cancelled_moves: vec![],
    })
    .await;
    assert_eq!(db.kinds().await.last().unwrap(), "corruption_repaired");

    // Removing the machine: one "member_left" (its disks' removals are part of it).
    db.apply(CommandV1::RemoveNode {
        node_id: 1,
        time_ms: T + 30,
    })
    .await;
    assert_eq!(db.kinds().await.last().unwrap(), "member_left");
    db.apply(CommandV1::RemoveNode {
        node_id: 1,
        time_ms: T + 31,
    })
    .await;
    assert_eq!(db.kinds().await.len(), 10);

    // Paging: after and before an id.
    let newest = db.db.events(3, None, None).await.unwrap();
    assert_eq!(newest.len(), 3);
    let older = db.db.events(100, Some(newest[2].id), None).await.unwrap();
    assert_eq!(older.len(), 7);
    assert!(older.iter().all(|e| e.id < newest[2].id));
    let newer = db.db.events(100, None, Some(newest[1].id)).await.unwrap();
    assert_eq!(newer.len(), 1);
}

#[tokio::test]
async fn recorded_events_are_checked_and_the_history_is_bounded() {
    let db = test_db().await;
    let ev = |kind: &str, n: u64| CommandV1::RecordEvent {
        kind: kind.into(),
        severity: EventSeverity::Info,
        node: Some(2),
        message: format!("event {n}"),
        time_ms: T + n,
    };
    for bad in ["", "Leader", "leader changed", &"x".repeat(65)] {
        assert!(
            matches!(db.apply(ev(bad, 0)).await, Outcome::Rejected(_)),
            "{bad:?}"
        );
    }
    assert!(db.kinds().await.is_empty());
    // A message longer than the cap is cut at a character boundary.
    db.apply(CommandV1::RecordEvent {
        kind: "backup_written".into(),
        severity: EventSeverity::Info,
        node: None,
        message: "é".repeat(2000),
        time_ms: T,
    })
    .await;
    let e = &db.db.events(1, None, None).await.unwrap()[0];
    assert!(e.message.len() <= 1000 && e.message.chars().all(|c| c == 'é'));

    let total = EVENT_HISTORY as u64 + 5;
    let mut tx = db.db.pool().begin().await.unwrap();
    for n in 1..total {
        let out = crate::apply::apply_command(&mut tx, &ev("leader_changed", n))
            .await
            .unwrap();
        assert_eq!(out, Outcome::Done);
    }
    tx.commit().await.unwrap();
    assert_eq!(db.int("SELECT COUNT(*) FROM events").await, EVENT_HISTORY);
    let newest = &db.db.events(1, None, None).await.unwrap()[0];
    assert_eq!(newest.id, total);
    assert_eq!(newest.message, format!("event {}", total - 1));
    assert_eq!(newest.node, Some(2));
}
