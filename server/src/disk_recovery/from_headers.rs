//! Files the backup does not hold, brought back from their part headers: written after it (or
//! under way when it was written) at the path in their headers, segments appended to its files
//! after it, and what cannot be read whole under `/lost+found/`.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::report::{Appended, FromHeaders, Incomplete, MissingSegment, Report};
use super::segment_check::{self, LocalPart};
use super::{apply, Found, Options};
use wormfs_meta::command::{CommandV1, Conflict, NewSegment, Outcome, SourceIdentity};
use wormfs_meta::MetaDb;
use wormfs_parts::codec::CodecId;
use wormfs_parts::ids::{FileId, NodeId};
use wormfs_parts::layout::Geometry;
use wormfs_parts::part_format::PartHeader;
use wormfs_parts::policy::Policy;

/// Parts older than the backup by more than this are taken as deleted (or abandoned) before
/// it; younger ones are brought back. It covers clocks that differ between machines (a part
/// header has its writer's time, the backup its own machine's).
pub const CLOCK_MARGIN_MS: u64 = 300_000;

/// One segment's parts found, of one version.
struct SegmentFound {
    new: NewSegment,
    header: PartHeader,
    /// Its BLAKE3 was checked here.
    checked: bool,
}

/// What a segment's parts are worth.
enum Judged {
    /// Readable: `k` parts or more (checked here, or partly on other machines).
    Readable(SegmentFound),
    /// Not readable now; the parts found are kept with the file when there are any.
    Unreadable(MissingSegment, Option<NewSegment>),
}

/// The version of the segment to use: parts with the same header fields form a version (a
/// retried append writes its parts again under the same names); the one with the most parts,
/// then the newest, is used.
fn pick_version(parts: &[Found]) -> Vec<&Found> {
    let key = |h: &PartHeader| {
        (
            h.segment_blake3,
            h.segment_data_len,
            h.k,
            h.m,
            h.codec.as_u16(),
            h.block_size,
        )
    };
    let mut versions: BTreeMap<_, Vec<&Found>> = BTreeMap::new();
    for p in parts {
        versions.entry(key(&p.header)).or_default().push(p);
    }
    versions
        .into_values()
        .max_by_key(|v| {
            let mut idx: Vec<u16> = v.iter().map(|f| f.header.part_index).collect();
            idx.sort_unstable();
            idx.dedup();
            let newest = v.iter().map(|f| f.header.created_ms).max().unwrap_or(0);
            (idx.len(), newest)
        })
        .unwrap_or_default()
}

fn judge_segment(seg: u32, parts: &[Found]) -> Judged {
    let version = pick_version(parts);
    let h = version[0].header.clone();
    let k = usize::from(h.k);
    let width = k + usize::from(h.m);
    let mut by_index: Vec<Option<&Found>> = vec![None; width];
    for p in &version {
        let i = usize::from(p.header.part_index);
        // A part here first: it can be read to check the segment.
        if i < width
            && (by_index[i].is_none()
                || (p.local.is_some() && by_index[i].is_some_and(|b| b.local.is_none())))
        {
            by_index[i] = Some(p);
        }
    }
    let found: Vec<u16> = (0..width as u16)
        .filter(|&i| by_index[i as usize].is_some())
        .collect();
    let new = |by_index: &[Option<&Found>]| NewSegment {
        index: seg,
        data_len: h.segment_data_len,
        blake3: blake3::Hash::from_bytes(h.segment_blake3)
            .to_hex()
            .to_string(),
        parts: by_index.iter().map(|f| f.map(|f| f.disk_id)).collect(),
    };
    let unreadable = |by_index: &[Option<&Found>], error: Option<String>| {
        Judged::Unreadable(
            MissingSegment {
                segment: seg,
                k: h.k,
                parts_found: (0..width as u16)
                    .filter(|&i| by_index[i as usize].is_some())
                    .collect(),
                parts_missing: (0..width as u16)
                    .filter(|&i| by_index[i as usize].is_none())
                    .collect(),
                error,
            },
            Some(new(by_index)),
        )
    };
    if found.len() < k {
        return unreadable(&by_index, None);
    }
    let local: Vec<LocalPart> = by_index
        .iter()
        .flatten()
        .filter_map(|f| {
            f.local.as_ref().map(|p| LocalPart {
                path: p.clone(),
                header: f.header.clone(),
            })
        })
        .collect();
    let remote = found.len() - local.len();
    let mut checked = false;
    if local.len() >= k {
        match segment_check::check_segment(&local) {
            Ok(()) => checked = true,
            Err(fault) => {
                // Good parts here and parts on other machines may still make `k`: the deep
                // scrub after the start checks the segment whole.
                let good_here = local
                    .iter()
                    .filter(|p| !fault.bad.contains(&p.header.part_index))
                    .count();
                if remote == 0 || good_here + remote < k {
                    let mut kept = by_index.clone();
                    for b in &fault.bad {
                        if let Some(slot) = kept.get_mut(usize::from(*b)) {
                            *slot = None;
                        }
                    }
                    return unreadable(&kept, Some(fault.why));
                }
            }
        }
    }
    Judged::Readable(SegmentFound {
        new: new(&by_index),
        header: h,
        checked,
    })
}

fn policy_of(h: &PartHeader) -> Policy {
    if h.codec == CodecId::Replica {
        Policy::Copies { n: h.m + 1 }
    } else {
        Policy::Ec { k: h.k, m: h.m }
    }
}

/// A file found in headers, ready to commit.
struct NewFile {
    file_id: FileId,
    policy: String,
    geometry: Geometry,
    size: u64,
    segments: Vec<NewSegment>,
    time_ms: u64,
}

impl NewFile {
    /// Commits it at `path` (an intent first, as every commit has one).
    async fn commit(
        &self,
        db: &MetaDb,
        me: NodeId,
        path: &str,
        conflict: Conflict,
    ) -> anyhow::Result<Outcome> {
        apply(
            db,
            CommandV1::BeginIngest {
                file_id: self.file_id,
                writer: me,
                path: path.to_owned(),
                append_to: None,
                lease_until_ms: u64::MAX >> 1,
                time_ms: self.time_ms,
            },
        )
        .await?;
        apply(
            db,
            CommandV1::CommitFile {
                file_id: self.file_id,
                path: path.to_owned(),
                conflict,
                policy: self.policy.clone(),
                geometry: self.geometry,
                size: self.size,
                content_blake3: String::new(),
                segments: self.segments.clone(),
                source: SourceIdentity::Upload {
                    client: "recovered from disks".into(),
                },
                time_ms: self.time_ms,
            },
        )
        .await
    }
}

/// What the backup holds of one file: its segments and size, and its first path.
struct InBackup {
    segments: u32,
    size: u64,
    path: Option<String>,
}

/// Brings back what the backup does not hold (see the module doc).
#[allow(clippy::too_many_arguments)]
pub(super) async fn bring_back(
    db: &MetaDb,
    opts: &Options,
    me: NodeId,
    found: &BTreeMap<FileId, BTreeMap<u32, Vec<Found>>>,
    backup_created: u64,
    in_flight: &HashSet<FileId>,
    now: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut known: HashMap<FileId, InBackup> = db
        .file_paths()
        .await?
        .into_iter()
        .map(|(id, (size, paths))| {
            let entry = InBackup {
                segments: 0,
                size,
                path: paths.into_iter().next(),
            };
            (id, entry)
        })
        .collect();
    for s in db.all_segment_rows().await? {
        if let Some(f) = known.get_mut(&s.file_id) {
            f.segments = f.segments.max(s.seg + 1);
        }
    }
    let cutoff = backup_created.saturating_sub(CLOCK_MARGIN_MS);
    // Oldest first, so that of two files written to one path the older keeps the name.
    let mut order: Vec<(u64, FileId)> = found
        .iter()
        .map(|(id, segs)| {
            let newest = segs
                .values()
                .flatten()
                .map(|f| f.header.created_ms)
                .max()
                .unwrap_or(0);
            (newest, *id)
        })
        .collect();
    order.sort();
    for (newest, file_id) in order {
        let segs = &found[&file_id];
        let recent = newest >= cutoff || in_flight.contains(&file_id);
        if let Some(f) = known.get(&file_id) {
            if recent {
                append(db, me, file_id, f, segs, now, report).await?;
            }
            continue;
        }
        if !recent {
            report.deleted_before_backup += 1;
            continue;
        }
        one_file(db, opts, me, file_id, newest, segs, report).await?;
    }
    Ok(())
}

/// Segments of a backup's file beyond its last: appended after the backup.
async fn append(
    db: &MetaDb,
    me: NodeId,
    file_id: FileId,
    f: &InBackup,
    segs: &BTreeMap<u32, Vec<Found>>,
    now: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut added = Vec::new();
    let mut next = f.segments;
    let mut stopped = None;
    while let Some(parts) = segs.get(&next) {
        match judge_segment(next, parts) {
            Judged::Readable(s) => added.push(s.new),
            Judged::Unreadable(m, _) => {
                stopped = Some(m);
                break;
            }
        }
        next += 1;
    }
    let path = f.path.clone().unwrap_or_default();
    if added.is_empty() && stopped.is_none() {
        return Ok(());
    }
    let n = added.len() as u32;
    let mut note = stopped.map(|m| {
        format!(
            "segment {} appended after the backup cannot be read ({} of {} parts needed found); \
             it and any after it are left out",
            m.segment,
            m.parts_found.len(),
            m.k
        )
    });
    if !added.is_empty() {
        let intent = FileId::mint();
        apply(
            db,
            CommandV1::BeginIngest {
                file_id: intent,
                writer: me,
                path: path.clone(),
                append_to: Some(file_id),
                lease_until_ms: u64::MAX >> 1,
                time_ms: now,
            },
        )
        .await?;
        let out = apply(
            db,
            CommandV1::AppendSegments {
                intent_id: intent,
                file_id,
                expected_size: f.size,
                segments: added,
                time_ms: now,
            },
        )
        .await?;
        if let Outcome::Rejected(why) = out {
            note = Some(format!(
                "the segments appended after the backup could not be added: {why}"
            ));
        }
    }
    report.appended.push(Appended {
        path,
        file_id,
        segments_added: if note.is_some() && n == 0 { 0 } else { n },
        note,
    });
    Ok(())
}

/// A file written after the backup.
async fn one_file(
    db: &MetaDb,
    opts: &Options,
    me: NodeId,
    file_id: FileId,
    newest: u64,
    segs: &BTreeMap<u32, Vec<Found>>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let last = *segs.keys().next_back().expect("a found file has a segment");
    let header_path = segs[&last][0].header.path.clone();
    let mut readable: Vec<SegmentFound> = Vec::new();
    let mut kept_unreadable: Vec<NewSegment> = Vec::new();
    let mut missing: Vec<MissingSegment> = Vec::new();
    for seg in 0..=last {
        match segs.get(&seg) {
            None => missing.push(MissingSegment {
                segment: seg,
                k: segs[&last][0].header.k,
                parts_found: Vec::new(),
                parts_missing: Vec::new(),
                error: Some("no part of this segment was found".into()),
            }),
            Some(parts) => match judge_segment(seg, parts) {
                Judged::Readable(s) => readable.push(s),
                Judged::Unreadable(m, kept) => {
                    missing.push(m);
                    kept_unreadable.extend(kept);
                }
            },
        }
    }
    let basename = header_path
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("file")
        .to_owned();
    let aside = format!("/lost+found/{file_id}/{basename}");
    let Some(first) = readable.first().map(|s| s.header.clone()) else {
        // Nothing readable: the parts found are still kept, under lost+found, for the day
        // the missing ones come back (a disk not given here).
        if !kept_unreadable.is_empty() {
            let h = segs
                .values()
                .flatten()
                .next()
                .expect("parts")
                .header
                .clone();
            let file = new_file(opts, file_id, &h, kept_unreadable, newest);
            let out = file.commit(db, me, &aside, Conflict::Rename).await?;
            report.incomplete.push(Incomplete {
                file_id,
                header_path,
                put_at: committed_path(&out),
                bytes_kept: 0,
                missing,
                note: Some("no segment can be read: the parts found are kept there".into()),
            });
        } else {
            report.incomplete.push(Incomplete {
                file_id,
                header_path,
                put_at: None,
                bytes_kept: 0,
                missing,
                note: None,
            });
        }
        return Ok(());
    };
    let bytes_readable: u64 = readable.iter().map(|s| s.new.data_len).sum();
    let checked = readable.iter().filter(|s| s.checked).count() as u32;
    let n = readable.len() as u32;
    let mut segments: Vec<NewSegment> = readable.into_iter().map(|s| s.new).collect();
    segments.extend(kept_unreadable);
    segments.sort_by_key(|s| s.index);
    let complete = missing.is_empty();
    let file = new_file(opts, file_id, &first, segments, newest);
    let dest = if complete {
        header_path.clone()
    } else {
        aside.clone()
    };
    // Never over a file of the backup, nor over another file found here: a taken name gets
    // " (1)" (the header has the path the upload asked for, not the name it got).
    let out = file.commit(db, me, &dest, Conflict::Rename).await?;
    let (out, note) = match out {
        Outcome::Rejected(why) if complete => {
            // The path is not usable (its folder is a file in the backup): kept aside.
            let again = file.commit(db, me, &aside, Conflict::Rename).await?;
            (again, Some(format!("{dest} could not be used: {why}")))
        }
        other => (other, None),
    };
    db.forget_content_hash(file_id).await?;
    match (out, complete && note.is_none()) {
        (Outcome::Committed { path, .. }, true) => report.from_headers.push(FromHeaders {
            renamed: path != header_path,
            path,
            header_path,
            file_id,
            size: file.size,
            segments: n,
            segments_checked: checked,
        }),
        (out, _) => report.incomplete.push(Incomplete {
            file_id,
            header_path,
            put_at: committed_path(&out),
            bytes_kept: bytes_readable,
            missing,
            note: note.or_else(|| match &out {
                Outcome::Committed { .. } => None,
                other => Some(format!("could not be stored: {other:?}")),
            }),
        }),
    }
    Ok(())
}

fn committed_path(out: &Outcome) -> Option<String> {
    match out {
        Outcome::Committed { path, .. } => Some(path.clone()),
        _ => None,
    }
}

/// The file to commit: its geometry from the headers (the part capacity is the configured
/// one or the largest part found, whichever is larger, so later appends and repairs size
/// their parts as the writer did).
fn new_file(
    opts: &Options,
    file_id: FileId,
    h: &PartHeader,
    segments: Vec<NewSegment>,
    time_ms: u64,
) -> NewFile {
    let block = u64::from(h.block_size.max(1));
    let part_len = |data_len: u64| {
        if h.codec == CodecId::Replica {
            data_len.div_ceil(block) * block
        } else {
            data_len.div_ceil(block * u64::from(h.k.max(1))) * block
        }
    };
    let largest = segments
        .iter()
        .map(|s| part_len(s.data_len))
        .max()
        .unwrap_or(0);
    NewFile {
        file_id,
        policy: policy_of(h).to_string(),
        geometry: Geometry {
            codec: h.codec,
            k: h.k,
            m: h.m,
            block_size: h.block_size,
            part_capacity: opts.part_capacity.max(largest),
        },
        size: segments.iter().map(|s| s.data_len).sum(),
        segments,
        time_ms,
    }
}
