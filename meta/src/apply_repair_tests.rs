//! The self-healing commands applied as the state machine applies them, checked through the
//! queries the repair, scrub and health code use.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::command::{
    CommandV1, Conflict, DiskStatus, Outcome, PartRef, Rejection, RepairedPart, SegmentRef,
};
use crate::testutil::{commit, disk, test_db, TestDb, T};
use wormfs_parts::ids::FileId;

fn seg(n: u128) -> SegmentRef {
    SegmentRef {
        file_id: FileId(n),
        seg: 0,
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

/// Disks 1..=3 on node 1 and files 10 and 11 in `copies:2` on disks 1 and 2.
async fn two_files() -> TestDb {
    let db = test_db().await;
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
    for (n, path) in [(10u128, "/a"), (11, "/b")] {
        assert!(matches!(
            db.put(FileId(n), path, Conflict::Fail).await,
            Outcome::Committed { .. }
        ));
    }
    db
}

#[tokio::test]
async fn a_disk_going_out_queues_its_segments_and_a_committed_repair_drops_them() {
    let db = two_files().await;
    assert_eq!(db.db.repair_queue(10).await.unwrap(), vec![]);
    let full = db.db.redundancy().await.unwrap();
    assert_eq!(full.len(), 1);
    assert_eq!(
        (full[0].tolerance, full[0].segments, full[0].below_policy),
        (1, 2, 0)
    );

    // Down: counted as unavailable, nothing queued yet.
    db.apply(state(2, DiskStatus::Down, T + 1)).await;
    assert_eq!(db.db.repair_queue(10).await.unwrap(), vec![]);
    let r = db.db.redundancy().await.unwrap();
    assert_eq!(
        (r[0].tolerance, r[0].segments, r[0].below_policy),
        (0, 2, 2)
    );
    let states = db.db.disk_states().await.unwrap();
    let d2 = states.iter().find(|d| d.disk_id == disk(2)).unwrap();
    assert_eq!((d2.state, d2.since_ms), (DiskStatus::Down, T + 1));

    // Out: both segments queued with tolerance 0; the state keeps its first time.
    db.apply(state(2, DiskStatus::Out, T + 5)).await;
    db.apply(state(2, DiskStatus::Out, T + 9)).await;
    let q = db.db.repair_queue(10).await.unwrap();
    assert_eq!(q.len(), 2);
    assert!(q.iter().all(|e| e.tolerance == 0 && e.due_ms == T + 5));
    let d2 = db.db.disk_states().await.unwrap();
    assert_eq!(
        d2.iter().find(|d| d.disk_id == disk(2)).unwrap().since_ms,
        T + 5
    );
    assert_eq!(db.db.due_repairs(1, T + 4, 10).await.unwrap(), vec![]);
    assert_eq!(db.db.due_repairs(1, T + 5, 10).await.unwrap().len(), 2);

    // A repair of file 10's part 1 onto disk 3 commits and drops the entry.
    let out = db
        .apply(CommandV1::CommitRepair {
            segment: seg(10),
            parts: vec![RepairedPart {
                part: 1,
                from: Some(disk(2)),
                to: disk(3),
            }],
            time_ms: T + 20,
            cancelled_moves: vec![],
        })
        .await;
    assert_eq!(
        out,
        Outcome::Repaired {
            applied: vec![1],
            skipped: vec![]
        }
    );
    let q = db.db.repair_queue(10).await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].segment, seg(11));
    let f = db.db.file(FileId(10)).await.unwrap().unwrap();
    assert_eq!(f.segments[0].parts[1].disk_id, Some(disk(3)));

    // A stale repair (the part moved meanwhile) is skipped, and the entry stays queued.
    let out = db
        .apply(CommandV1::CommitRepair {
            segment: seg(11),
            parts: vec![RepairedPart {
                part: 1,
                from: Some(disk(3)),
                to: disk(1),
            }],
            time_ms: T + 21,
            cancelled_moves: vec![],
        })
        .await;
    assert_eq!(
        out,
        Outcome::Repaired {
            applied: vec![],
            skipped: vec![1]
        }
    );
    assert_eq!(db.db.repair_queue(10).await.unwrap().len(), 1);

    // The disk coming back does not un-queue (its parts are still counted lost until it is
    // up; then the worker finds nothing to do), but recomputes the tolerance.
    db.apply(state(2, DiskStatus::Up, T + 30)).await;
    assert_eq!(db.db.repair_queue(10).await.unwrap()[0].tolerance, 1);
}

#[tokio::test]
async fn claims_exclude_other_nodes_until_they_expire_and_a_deleted_file_drops_its_repair() {
    let db = two_files().await;
    db.apply(state(2, DiskStatus::Out, T)).await;
    let claim = |node: u64, now: u64| CommandV1::ClaimRepair {
        segment: seg(10),
        node,
        until_ms: now + 100,
        now_ms: now,
    };
    assert_eq!(db.apply(claim(1, T)).await, Outcome::Done);
    assert!(matches!(
        db.apply(claim(2, T + 50)).await,
        Outcome::Rejected(Rejection::Claimed(_))
    ));
    // Not due for node 2 while node 1's claim runs; due for node 1 (a restarted node takes its
    // claims back).
    assert_eq!(db.db.due_repairs(2, T + 50, 10).await.unwrap().len(), 1);
    assert!(db
        .db
        .due_repairs(2, T + 50, 10)
        .await
        .unwrap()
        .iter()
        .all(|e| e.segment != seg(10)));
    assert_eq!(db.db.due_repairs(1, T + 50, 10).await.unwrap().len(), 2);
    assert_eq!(db.apply(claim(1, T + 60)).await, Outcome::Done);
    assert_eq!(db.apply(claim(2, T + 200)).await, Outcome::Done);

    // A failure releases the claim, counts and delays.
    db.apply(CommandV1::RepairFailed {
        segment: seg(10),
        error: "no disk".into(),
        retry_at_ms: T + 1000,
    })
    .await;
    let e = &db.db.repair_queue(10).await.unwrap();
    let e = e.iter().find(|e| e.segment == seg(10)).unwrap();
    assert_eq!(
        (e.attempts, e.last_error.as_str(), e.due_ms, e.claimed_by),
        (1, "no disk", T + 1000, None)
    );

    // The file goes: its queue entry goes with it; a claim of it is refused.
    db.apply(CommandV1::Remove {
        path: "/a".into(),
        recursive: false,
        time_ms: T,
    })
    .await;
    assert!(db
        .db
        .repair_queue(10)
        .await
        .unwrap()
        .iter()
        .all(|e| e.segment != seg(10)));
    assert!(matches!(
        db.apply(claim(1, T + 2000)).await,
        Outcome::Rejected(Rejection::NotFound(_))
    ));
    assert!(matches!(
        db.apply(CommandV1::CommitRepair {
            segment: seg(10),
            parts: vec![],
            time_ms: T,
            cancelled_moves: vec![],
        })
        .await,
        Outcome::Rejected(Rejection::NotFound(_))
    ));
}

#[tokio::test]
async fn damaged_parts_are_marked_and_queued_and_verified_parts_are_dated() {
    let db = two_files().await;
    let part = PartRef {
        file_id: FileId(11),
        seg: 0,
        part: 0,
        disk_id: disk(1),
    };
    // A report naming the wrong disk marks nothing but still queues the segment.
    db.apply(CommandV1::QueueRepair {
        segments: vec![],
        damaged: vec![PartRef {
            disk_id: disk(3),
            ..part
        }],
        reason: "read".into(),
        time_ms: T,
    })
    .await;
    assert_eq!(
        db.int("SELECT COUNT(*) FROM parts WHERE state = 2").await,
        0
    );
    assert_eq!(db.db.repair_queue(10).await.unwrap()[0].tolerance, 1);
    db.apply(CommandV1::QueueRepair {
        segments: vec![seg(99)],
        damaged: vec![part],
        reason: "scrub".into(),
        time_ms: T,
    })
    .await;
    assert_eq!(
        db.int("SELECT COUNT(*) FROM parts WHERE state = 2").await,
        1
    );
    let q = db.db.repair_queue(10).await.unwrap();
    assert_eq!(
        q.len(),
        1,
        "a segment that does not exist is not queued: {q:?}"
    );
    assert_eq!(q[0].tolerance, 0);
    let risk = db.db.files_at_risk(0, 10).await.unwrap();
    assert_eq!(risk.len(), 1);
    assert_eq!((risk[0].file_id, risk[0].path.as_str()), (FileId(11), "/b"));

    // Parts are verified at their commit; a scrub's record only moves forward.
    let due = db
        .db
        .parts_to_verify(&[disk(1), disk(2)], T + 1, 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 3, "the damaged part is not scrubbed again");
    db.apply(CommandV1::PartsVerified {
        parts: vec![PartRef {
            file_id: FileId(10),
            seg: 0,
            part: 0,
            disk_id: disk(1),
        }],
        time_ms: T + 500,
    })
    .await;
    let due = db
        .db
        .parts_to_verify(&[disk(1), disk(2)], T + 1, 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 2);
    let (all, verified, _, oldest) = db.db.scrub_progress(&[disk(1)], T + 100).await.unwrap();
    assert_eq!((all, verified, oldest), (1, 1, Some(T + 500)));
}

#[tokio::test]
async fn a_file_committed_with_a_missing_part_is_queued_and_impact_counts_what_a_loss_costs() {
    let db = two_files().await;
    db.begin(FileId(12), "/c").await;
    let mut cmd = commit(FileId(12), "/c", Conflict::Fail);
    if let CommandV1::CommitFile { segments, .. } = &mut cmd {
        segments[0].parts[1] = None;
    }
    db.apply(cmd).await;
    let q = db.db.repair_queue(10).await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!((q[0].segment, q[0].tolerance), (seg(12), 0));

    let imp = db.db.impact(&[disk(1)], 10).await.unwrap();
    assert_eq!(
        (
            imp.segments,
            imp.unreadable_segments,
            imp.zero_tolerance_segments
        ),
        (3, 1, 2)
    );
    assert_eq!(imp.unreadable_files[0].path, "/c");
    assert_eq!(db.db.smallest_m().await.unwrap(), Some(1));
}

#[tokio::test]
async fn removing_a_machine_queues_its_disks_and_settings_are_kept() {
    let db = two_files().await;
    db.apply(CommandV1::RemoveNode {
        node_id: 1,
        time_ms: T,
    })
    .await;
    assert_eq!(db.db.repair_queue(10).await.unwrap().len(), 2);
    assert!(db
        .db
        .disk_states()
        .await
        .unwrap()
        .iter()
        .all(|d| d.state == DiskStatus::Removed));
    assert!(matches!(
        db.apply(state(9, DiskStatus::Out, T)).await,
        Outcome::Rejected(Rejection::NotFound(_))
    ));

    assert!(!db.db.repair_paused().await.unwrap());
    db.apply(CommandV1::SetRepairPaused { paused: true }).await;
    assert!(db.db.repair_paused().await.unwrap());
    db.apply(CommandV1::RequestScrub {
        deep: true,
        time_ms: T,
    })
    .await;
    assert_eq!(db.db.scrub_request().await.unwrap(), Some((T, true)));
    db.apply(CommandV1::SetBrakes {
        brakes: vec!["held".into()],
    })
    .await;
    assert_eq!(db.db.brakes().await.unwrap(), vec!["held".to_string()]);
}

#[tokio::test]
async fn moved_parts_are_queued_and_forgotten_once_they_left_their_disk() {
    let db = two_files().await;
    let part = PartRef {
        file_id: FileId(10),
        seg: 0,
        part: 0,
        disk_id: disk(1),
    };
    // A move naming the wrong disk is ignored.
    db.apply(CommandV1::MoveParts {
        parts: vec![PartRef {
            disk_id: disk(3),
            ..part
        }],
        reason: "rebalance".into(),
        time_ms: T,
    })
    .await;
    assert_eq!(db.db.repair_queue(10).await.unwrap(), vec![]);
    db.apply(CommandV1::MoveParts {
        parts: vec![part],
        reason: "rebalance".into(),
        time_ms: T,
    })
    .await;
    assert_eq!(
        db.db.pending_moves(seg(10)).await.unwrap(),
        vec![(0, disk(1))]
    );
    assert_eq!(db.db.repair_queue(10).await.unwrap().len(), 1);
    assert_eq!(db.db.moves_left().await.unwrap(), (1, 100));
    // An empty commit leaves it queued (the move is still to do).
    db.apply(CommandV1::CommitRepair {
        segment: seg(10),
        parts: vec![],
        time_ms: T,
        cancelled_moves: vec![],
    })
    .await;
    assert_eq!(db.db.repair_queue(10).await.unwrap().len(), 1);
    // The move done: forgotten, and the segment leaves the queue.
    db.apply(CommandV1::CommitRepair {
        segment: seg(10),
        parts: vec![RepairedPart {
            part: 0,
            from: Some(disk(1)),
            to: disk(3),
        }],
        time_ms: T,
        cancelled_moves: vec![],
    })
    .await;
    assert_eq!(db.db.pending_moves(seg(10)).await.unwrap(), vec![]);
    assert_eq!(db.db.repair_queue(10).await.unwrap(), vec![]);
    assert_eq!(db.db.moves_left().await.unwrap(), (0, 0));
    // A move no disk can take is dropped by the commit that says so.
    db.apply(CommandV1::MoveParts {
        parts: vec![PartRef {
            file_id: FileId(11),
            seg: 0,
            part: 1,
            disk_id: disk(2),
        }],
        reason: "rebalance".into(),
        time_ms: T,
    })
    .await;
    assert_eq!(db.db.moves_left().await.unwrap().0, 1);
    db.apply(CommandV1::CommitRepair {
        segment: seg(11),
        parts: vec![],
        time_ms: T,
        cancelled_moves: vec![1],
    })
    .await;
    assert_eq!(db.db.moves_left().await.unwrap().0, 0);
    assert_eq!(db.db.repair_queue(10).await.unwrap(), vec![]);
    let biggest = db.db.parts_with_sizes(disk(2), 10).await.unwrap();
    assert_eq!(biggest.len(), 2);
}
