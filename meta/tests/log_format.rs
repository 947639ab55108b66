//! The Raft log's format, pinned: `log-samples/command-v1.jsonl` holds one committed sample of
//! every command of version 1, as the log stores it (JSON, one per line). Each line must decode
//! to the command built here and encode back to the same bytes, so a renamed field, a changed
//! type or a dropped variant fails this test instead of making old logs unreadable or replay
//! differently. A new variant needs a new arm in `variant` (the match is exhaustive, so the
//! compiler asks for it) and a new sample: add it to `samples`, run once with
//! `WORMFS_BLESS_LOG_SAMPLES=1` to append its line, and review the diff: existing lines must
//! never change. A change of meaning is a new `Command::V2`, with its own sample file.
#![allow(missing_docs)]

use std::path::PathBuf;

use uuid::Uuid;
use wormfs_meta::command::{
    AccountRole, Command, CommandV1, Conflict, DeadProp, DiskStatus, EventSeverity, FileCommit,
    Lock, NewSegment, PartRef, PutMode, RepairedPart, SegmentRef, SourceIdentity, TokenRecord,
    UserRecord, UserSource,
};
use wormfs_parts::codec::CodecId;
use wormfs_parts::ids::{ClusterId, DiskId, FileId};
use wormfs_parts::layout::Geometry;

const VARIANTS: usize = 45;

fn variant(c: &CommandV1) -> &'static str {
    match c {
        CommandV1::InitCluster { .. } => "InitCluster",
        CommandV1::RegisterNode { .. } => "RegisterNode",
        CommandV1::RemoveNode { .. } => "RemoveNode",
        CommandV1::RegisterDisk { .. } => "RegisterDisk",
        CommandV1::Mkdir { .. } => "Mkdir",
        CommandV1::SetPolicy { .. } => "SetPolicy",
        CommandV1::BeginIngest { .. } => "BeginIngest",
        CommandV1::RenewLease { .. } => "RenewLease",
        CommandV1::AbortIngest { .. } => "AbortIngest",
        CommandV1::ExpireIntents { .. } => "ExpireIntents",
        CommandV1::CommitFile { .. } => "CommitFile",
        CommandV1::AppendSegments { .. } => "AppendSegments",
        CommandV1::Remove { .. } => "Remove",
        CommandV1::Rename { .. } => "Rename",
        CommandV1::Copy { .. } => "Copy",
        CommandV1::PatchProps { .. } => "PatchProps",
        CommandV1::Lock { .. } => "Lock",
        CommandV1::Unlock { .. } => "Unlock",
        CommandV1::RefreshLock { .. } => "RefreshLock",
        CommandV1::DeleteLocks { .. } => "DeleteLocks",
        CommandV1::RemoveTree { .. } => "RemoveTree",
        CommandV1::MoveTree { .. } => "MoveTree",
        CommandV1::CopyTree { .. } => "CopyTree",
        CommandV1::SetDiskState { .. } => "SetDiskState",
        CommandV1::QueueRepair { .. } => "QueueRepair",
        CommandV1::ClaimRepair { .. } => "ClaimRepair",
        CommandV1::CommitRepair { .. } => "CommitRepair",
        CommandV1::RepairFailed { .. } => "RepairFailed",
        CommandV1::PartsVerified { .. } => "PartsVerified",
        CommandV1::SetRepairPaused { .. } => "SetRepairPaused",
        CommandV1::RequestScrub { .. } => "RequestScrub",
        CommandV1::SetBrakes { .. } => "SetBrakes",
        CommandV1::MoveParts { .. } => "MoveParts",
        CommandV1::SetTrash { .. } => "SetTrash",
        CommandV1::RestoreTrash { .. } => "RestoreTrash",
        CommandV1::PurgeTrash { .. } => "PurgeTrash",
        CommandV1::SetRetention { .. } => "SetRetention",
        CommandV1::PutUser { .. } => "PutUser",
        CommandV1::RemoveUser { .. } => "RemoveUser",
        CommandV1::AddToken { .. } => "AddToken",
        CommandV1::RevokeToken { .. } => "RevokeToken",
        CommandV1::RecordEvent { .. } => "RecordEvent",
        CommandV1::Batch { .. } => "Batch",
        CommandV1::CommitSmallFile { .. } => "CommitSmallFile",
        CommandV1::SweepBegins { .. } => "SweepBegins",
    }
}

const T: u64 = 1_765_000_000_000;

fn disk(n: u128) -> DiskId {
    DiskId(Uuid::from_u128(n))
}

fn file(n: u128) -> FileId {
    FileId(n)
}

fn segments() -> Vec<NewSegment> {
    vec![
        NewSegment {
            index: 0,
            data_len: 4 << 20,
            blake3: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262".into(),
            parts: vec![Some(disk(1)), Some(disk(2)), None, Some(disk(4))],
        },
        NewSegment {
            index: 1,
            data_len: 17,
            blake3: "0000000000000000000000000000000000000000000000000000000000000000".into(),
            parts: vec![Some(disk(1)), Some(disk(2)), Some(disk(3)), Some(disk(4))],
        },
    ]
}

fn lock() -> Lock {
    Lock {
        token: "urn:uuid:6f1c0b5e-2f4a-4a7e-9b8e-3d2c1a0f9e8d".into(),
        path: "/Films/a b".into(),
        href: "/Films/a%20b".into(),
        principal: Some("ann".into()),
        owner_xml: Some(b"<D:owner xmlns:D=\"DAV:\">ann</D:owner>".to_vec()),
        expires_ms: T + 3_600_000,
        timeout_secs: 3600,
        shared: false,
        deep: true,
    }
}

/// One of every command, in the order of the sample file.
fn samples() -> Vec<CommandV1> {
    let geometry = Geometry {
        codec: CodecId::RsSimdGf16,
        k: 3,
        m: 1,
        block_size: 262_144,
        part_capacity: 64 << 20,
    };
    vec![
        CommandV1::InitCluster {
            cluster_id: ClusterId(Uuid::from_u128(0x1234)),
            time_ms: T,
        },
        CommandV1::RegisterNode {
            node_id: 5_081_679_830_525_481_491,
            name: "nas-1".into(),
            api_addr: "127.0.0.1:7070".into(),
            data_addr: "127.0.0.1:7072".into(),
            data_cert: "ab12".into(),
            time_ms: T,
        },
        CommandV1::RemoveNode {
            node_id: 7,
            time_ms: T,
        },
        CommandV1::RegisterDisk {
            disk_id: disk(1),
            node_id: 7,
            path: "/mnt/disk1/wormfs".into(),
            fs_dev: 2049,
            time_ms: T,
        },
        CommandV1::Mkdir {
            path: "/Films/2026".into(),
            parents: true,
            time_ms: T,
        },
        CommandV1::SetPolicy {
            path: "/Photos".into(),
            policy: Some("ec:4+2".into()),
        },
        CommandV1::BeginIngest {
            file_id: file(0xfeed),
            writer: 7,
            path: "/Films/a.mkv".into(),
            append_to: Some(file(0xbeef)),
            lease_until_ms: T + 60_000,
            time_ms: T,
        },
        CommandV1::RenewLease {
            file_id: file(0xfeed),
            lease_until_ms: T + 120_000,
        },
        CommandV1::AbortIngest {
            file_id: file(0xfeed),
        },
        CommandV1::ExpireIntents {
            now_ms: T,
            writer: Some(7),
        },
        CommandV1::CommitFile {
            file_id: file(0xfeed),
            path: "/Films/a.mkv".into(),
            conflict: Conflict::Rename,
            policy: "ec:3+1".into(),
            geometry,
            size: (4 << 20) + 17,
            content_blake3: "9f0c".into(),
            segments: segments(),
            source: SourceIdentity::DropFolder {
                path: "/srv/drop/a.mkv".into(),
                size: (4 << 20) + 17,
                mtime_ns: -1_500_000_000,
                inode: 42,
                dev: 2049,
            },
            time_ms: T,
        },
        CommandV1::AppendSegments {
            intent_id: file(0xfeed),
            file_id: file(0xbeef),
            expected_size: 17,
            segments: segments(),
            time_ms: T,
        },
        CommandV1::Remove {
            path: "/old".into(),
            recursive: true,
            time_ms: T,
        },
        CommandV1::Rename {
            from: "/a".into(),
            to: "/b".into(),
            replace: false,
            time_ms: T,
        },
        CommandV1::Copy {
            from: "/a".into(),
            to: "/c".into(),
            replace: true,
            time_ms: T,
        },
        CommandV1::PatchProps {
            path: "/a".into(),
            patch: vec![
                (
                    true,
                    DeadProp {
                        namespace: "urn:x".into(),
                        name: "colour".into(),
                        prefix: Some("x".into()),
                        xml: Some(b"<x:colour xmlns:x=\"urn:x\">blue</x:colour>".to_vec()),
                    },
                ),
                (
                    false,
                    DeadProp {
                        namespace: String::new(),
                        name: "gone".into(),
                        prefix: None,
                        xml: None,
                    },
                ),
            ],
        },
        CommandV1::Lock {
            lock: lock(),
            now_ms: T,
        },
        CommandV1::Unlock {
            token: lock().token,
        },
        CommandV1::RefreshLock {
            token: lock().token,
            expires_ms: T + 7_200_000,
            timeout_secs: 3600,
            now_ms: T,
        },
        CommandV1::DeleteLocks {
            path: "/Films".into(),
        },
        CommandV1::RemoveTree {
            path: "/Films/old".into(),
            time_ms: T,
        },
        CommandV1::MoveTree {
            from: "/Films/new".into(),
            to: "/Films/sorted".into(),
            replace: true,
            time_ms: T,
        },
        CommandV1::CopyTree {
            from: "/Photos".into(),
            to: "/Photos copy".into(),
            replace: false,
            deep: true,
            time_ms: T,
        },
        CommandV1::SetDiskState {
            disk_id: disk(3),
            state: DiskStatus::Out,
            reason: "down for 10 min: identity file missing".into(),
            time_ms: T,
        },
        CommandV1::QueueRepair {
            segments: vec![SegmentRef {
                file_id: file(0x42),
                seg: 1,
            }],
            damaged: vec![PartRef {
                file_id: file(0x43),
                seg: 0,
                part: 5,
                disk_id: disk(2),
            }],
            reason: "scrub: block 17 checksum mismatch".into(),
            time_ms: T,
        },
        CommandV1::ClaimRepair {
            segment: SegmentRef {
                file_id: file(0x42),
                seg: 1,
            },
            node: 7,
            until_ms: T + 600_000,
            now_ms: T,
        },
        CommandV1::CommitRepair {
            segment: SegmentRef {
                file_id: file(0x42),
                seg: 1,
            },
            parts: vec![
                RepairedPart {
                    part: 2,
                    from: Some(disk(3)),
                    to: disk(5),
                },
                RepairedPart {
                    part: 4,
                    from: None,
                    to: disk(6),
                },
            ],
            time_ms: T,
            cancelled_moves: vec![],
        },
        CommandV1::RepairFailed {
            segment: SegmentRef {
                file_id: file(0x42),
                seg: 1,
            },
            error: "only 3 of 4 needed parts readable".into(),
            retry_at_ms: T + 60_000,
        },
        CommandV1::PartsVerified {
            parts: vec![PartRef {
                file_id: file(0x44),
                seg: 2,
                part: 0,
                disk_id: disk(1),
            }],
            time_ms: T,
        },
        CommandV1::SetRepairPaused { paused: true },
        CommandV1::RequestScrub {
            deep: true,
            time_ms: T,
        },
        CommandV1::SetBrakes {
            brakes: vec!["2 disks down; at most 1 may go out at once".into()],
        },
        CommandV1::MoveParts {
            parts: vec![PartRef {
                file_id: file(0x45),
                seg: 3,
                part: 1,
                disk_id: disk(4),
            }],
            reason: "rebalance: disk 4 at 12% free, the cluster at 31%".into(),
            time_ms: T,
        },
        CommandV1::SetTrash { enabled: true },
        CommandV1::RestoreTrash {
            id: 17,
            to: "/films/restored.mkv".into(),
            time_ms: T,
        },
        CommandV1::PurgeTrash {
            ids: vec![3, 5],
            deleted_before_ms: Some(T - 30 * 86_400_000),
        },
        CommandV1::SetRetention {
            path: "/archive".into(),
            retain_ms: Some(30 * 86_400_000),
        },
        CommandV1::PutUser {
            user: UserRecord {
                name: "ann".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
                role: AccountRole::Rw,
                source: UserSource::Config { node: 3 },
            },
            mode: PutMode::Upsert,
            time_ms: T,
        },
        CommandV1::RemoveUser { name: "ann".into() },
        CommandV1::AddToken {
            token: TokenRecord {
                name: "backup-script".into(),
                hash: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262".into(),
                read_only: true,
                node: Some(2),
            },
            time_ms: T,
        },
        CommandV1::RevokeToken {
            name: "backup-script".into(),
            time_ms: T,
        },
        CommandV1::RecordEvent {
            kind: "leader_changed".into(),
            severity: EventSeverity::Info,
            node: Some(7),
            message: "machine 7 leads the cluster (term 3)".into(),
            time_ms: T,
        },
        CommandV1::Batch {
            commands: vec![
                CommandV1::BeginIngest {
                    file_id: file(9),
                    writer: 1,
                    path: "/Photos/IMG_0001.jpg".into(),
                    append_to: None,
                    lease_until_ms: T + 60_000,
                    time_ms: T,
                },
                CommandV1::AbortIngest { file_id: file(8) },
            ],
        },
        CommandV1::CommitSmallFile {
            file: FileCommit {
                file_id: file(0xcafe),
                path: "/Photos/IMG_0002.jpg".into(),
                conflict: Conflict::Fail,
                policy: "copies:3".into(),
                geometry,
                size: 3000,
                content_blake3: "77ab".into(),
                segments: vec![NewSegment {
                    index: 0,
                    data_len: 3000,
                    blake3: "77ab".into(),
                    parts: vec![Some(disk(1)), Some(disk(2)), Some(disk(3))],
                }],
                source: SourceIdentity::DropFolder {
                    path: "/srv/drop/IMG_0002.jpg".into(),
                    size: 3000,
                    mtime_ns: -1_500_000_000,
                    inode: 43,
                    dev: 2049,
                },
                time_ms: T,
            },
            sweeps_before: 4,
        },
        CommandV1::SweepBegins { node: 7 },
    ]
}

fn sample_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/log-samples/command-v1.jsonl")
}

#[test]
fn every_command_of_version_1_decodes_from_its_committed_bytes() {
    let samples = samples();
    let mut names: Vec<&str> = samples.iter().map(variant).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        (names.len(), samples.len()),
        (VARIANTS, VARIANTS),
        "one sample of each command, none twice"
    );
    let path = sample_file();
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if std::env::var_os("WORMFS_BLESS_LOG_SAMPLES").is_some() {
        // Only ever append: a line once committed is the format.
        for cmd in samples.iter().skip(lines.len()) {
            lines.push(serde_json::to_string(&Command::V1(cmd.clone())).unwrap());
        }
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }
    assert_eq!(
        lines.len(),
        samples.len(),
        "{} holds {} samples for {} commands (see this file's header)",
        path.display(),
        lines.len(),
        samples.len()
    );
    for (line, want) in lines.iter().zip(samples) {
        let name = variant(&want);
        let got: Command = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{name}: the committed sample no longer decodes: {e}"));
        assert_eq!(
            got,
            Command::V1(want.clone()),
            "{name}: decodes to something else"
        );
        assert_eq!(
            &serde_json::to_string(&Command::V1(want)).unwrap(),
            line,
            "{name}: encodes differently from the committed sample"
        );
    }
}
