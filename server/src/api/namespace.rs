//! The namespace: listings, stats, directories, moves, policies.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;

use super::locks::{done, honour_locks, with_parent};
use super::types::{
    ChangesQuery, ChangesResponse, DirStat, FileStat, ListResponse, LocksQuery, MkdirQuery,
    MvRequest, PartStat, PolicyRequest, PolicyResponse, SegmentStat, StatResponse, Tolerance,
};
use super::{bad, parse_path, ApiResult, ApiState};
use crate::store::StoreError;
use wormfs_meta::command::{DiskStatus, Rejection};
use wormfs_meta::EntryKind;
use wormfs_parts::placement::domains_tolerated;
use wormfs_parts::policy::Policy;

pub(super) async fn mkdir(
    State(st): State<ApiState>,
    Path(p): Path<String>,
    Query(q): Query<MkdirQuery>,
) -> ApiResult<StatusCode> {
    st.store.mkdir(&parse_path(&p)?, q.parents).await?;
    Ok(StatusCode::CREATED)
}

pub(super) async fn mv(
    State(st): State<ApiState>,
    Query(q): Query<LocksQuery>,
    Json(b): Json<MvRequest>,
) -> ApiResult<Response> {
    let (from, to) = (parse_path(&b.from)?, parse_path(&b.to)?);
    // The source and all below it, the destination (and what it replaces) and its parent.
    let mut paths = vec![(from.clone(), true)];
    paths.extend(with_parent(&to, true));
    let broken = match honour_locks(&st.store, &paths, q.break_locks || b.break_locks).await {
        Ok(b) => b,
        Err(r) => return Ok(r),
    };
    st.store.rename(&from, &to, b.replace).await?;
    Ok(done(&broken))
}

/// The tree's changes after `after`, waiting up to `wait_ms` for one (a long poll).
pub(super) async fn changes(
    State(st): State<ApiState>,
    Query(q): Query<ChangesQuery>,
) -> ApiResult<Json<ChangesResponse>> {
    let wait = std::time::Duration::from_millis(q.wait_ms);
    Ok(Json(st.changes.since(q.epoch, q.after, wait).await))
}

pub(super) async fn list_root(st: State<ApiState>) -> ApiResult<Json<ListResponse>> {
    list(st, Path(String::new())).await
}

pub(super) async fn list(
    State(st): State<ApiState>,
    Path(p): Path<String>,
) -> ApiResult<Json<ListResponse>> {
    let path = parse_path(&p)?;
    let entries = match st.store.meta.list(&path).await.map_err(StoreError::from)? {
        None => return Err(StoreError::from(Rejection::NotFound(path.to_string())).into()),
        Some(Ok(entries)) => entries,
        Some(Err(file)) => vec![file],
    };
    Ok(Json(ListResponse {
        path: path.to_string(),
        entries,
    }))
}

pub(super) async fn stat_root(st: State<ApiState>) -> ApiResult<Json<StatResponse>> {
    stat(st, Path(String::new())).await
}

pub(super) async fn stat(
    State(st): State<ApiState>,
    Path(p): Path<String>,
) -> ApiResult<Json<StatResponse>> {
    let path = parse_path(&p)?;
    let entry = st.store.entry_at(&path).await?;
    if entry.kind == EntryKind::Dir {
        let policy = st
            .store
            .meta
            .effective_policy(&path)
            .await
            .map_err(StoreError::from)?;
        let retention = st
            .store
            .meta
            .retention(&path)
            .await
            .map_err(StoreError::from)?
            .unwrap_or_default();
        return Ok(Json(StatResponse::Dir(DirStat {
            path: path.to_string(),
            mtime_ms: entry.mtime_ms,
            policy: entry.policy,
            effective_policy: policy,
            retain_ms: retention.retain_ms,
            effective_retain_ms: retention.effective_ms,
        })));
    }
    let Some(fid) = entry.file_id else {
        return Err(bad("entry without file"));
    };
    let rec = st
        .store
        .meta
        .file(fid)
        .await
        .map_err(StoreError::from)?
        .ok_or_else(|| StoreError::from(Rejection::NotFound(path.to_string())))?;
    let disks = st.store.meta.disks().await.map_err(StoreError::from)?;
    let names: HashMap<u64, String> = st
        .store
        .meta
        .nodes()
        .await
        .map_err(StoreError::from)?
        .into_iter()
        .map(|n| (n.node_id, n.name))
        .collect();
    let k = usize::from(rec.geometry.k);
    let mut tol = Tolerance {
        policy_parts: usize::from(rec.geometry.m),
        parts: usize::MAX,
        disks: usize::MAX,
        machines: usize::MAX,
        summary: String::new(),
    };
    let mut segments = Vec::new();
    for s in &rec.segments {
        let mut per_domain: HashMap<(u64, u64), usize> = Default::default();
        let mut per_node: HashMap<u64, usize> = Default::default();
        let mut healthy = 0usize;
        let mut parts = Vec::new();
        for p in &s.parts {
            let d = p
                .disk_id
                .and_then(|id| disks.iter().find(|d| d.disk_id == id));
            let disk_state = d.and_then(|d| d.state.parse::<DiskStatus>().ok());
            let state = match (p.disk_id, p.missing, disk_state) {
                (None, ..) => "missing",
                (Some(_), true, _) => "damaged",
                (Some(_), false, None) => "disk unknown",
                (Some(_), false, Some(DiskStatus::Up)) => "ok",
                (Some(_), false, Some(DiskStatus::Draining)) => "ok, disk draining",
                (Some(_), false, Some(DiskStatus::Down)) => "disk down",
                (Some(_), false, Some(_)) => "lost with its disk",
            };
            if let (Some(d), false, Some(true)) =
                (d, p.missing, disk_state.map(DiskStatus::available))
            {
                healthy += 1;
                *per_domain.entry((d.node_id, d.fs_dev)).or_default() += 1;
                *per_node.entry(d.node_id).or_default() += 1;
            }
            parts.push(PartStat {
                index: p.index,
                disk_id: p.disk_id,
                disk_path: d.map(|d| d.path.clone()),
                node_id: d.map(|d| d.node_id),
                node_name: d.and_then(|d| names.get(&d.node_id).cloned()),
                missing: p.missing,
                state: state.to_owned(),
            });
        }
        tol.parts = tol.parts.min(healthy.saturating_sub(k));
        tol.disks = tol.disks.min(domains_tolerated(
            &per_domain.values().copied().collect::<Vec<_>>(),
            k,
        ));
        tol.machines = tol.machines.min(domains_tolerated(
            &per_node.values().copied().collect::<Vec<_>>(),
            k,
        ));
        segments.push(SegmentStat {
            index: s.index,
            offset: s.offset,
            size: s.data_len,
            blake3: s.blake3.clone(),
            parts,
        });
    }
    if rec.segments.is_empty() {
        tol = Tolerance {
            policy_parts: 0,
            parts: 0,
            disks: 0,
            machines: 0,
            summary: String::new(),
        };
    }
    tol.summary = if rec.segments.is_empty() {
        "empty file: nothing to lose".into()
    } else {
        tolerance_sentence(&tol)
    };
    Ok(Json(StatResponse::File(Box::new(FileStat {
        path: path.to_string(),
        file_id: rec.file_id,
        size: rec.size,
        mtime_ms: rec.mtime_ms,
        created_ms: rec.created_ms,
        policy: rec.policy,
        geometry: rec.geometry,
        blake3: rec.content_blake3,
        etag: rec.etag,
        source: rec.source,
        segments,
        tolerance: tol,
        retained_until_ms: st
            .store
            .meta
            .retention(&path)
            .await
            .map_err(StoreError::from)?
            .and_then(|r| r.retain_until_ms),
    }))))
}

pub(super) async fn policy_get_root(st: State<ApiState>) -> ApiResult<Json<PolicyResponse>> {
    policy_get(st, Path(String::new())).await
}

pub(super) async fn policy_get(
    State(st): State<ApiState>,
    Path(p): Path<String>,
) -> ApiResult<Json<PolicyResponse>> {
    let path = parse_path(&p)?;
    let entry = st.store.entry_at(&path).await?;
    if entry.kind != EntryKind::Dir {
        return Err(StoreError::from(Rejection::NotADirectory(path.to_string())).into());
    }
    let eff = st
        .store
        .meta
        .effective_policy(&path)
        .await
        .map_err(StoreError::from)?;
    let n = st.store.disks.len();
    let default = Policy::resolve(st.store.storage.default_policy, n, false).to_string();
    let small = Policy::resolve(st.store.storage.small_file_policy, n, true).to_string();
    Ok(Json(PolicyResponse {
        path: path.to_string(),
        inherited: entry.policy.is_none(),
        policy: entry.policy,
        effective: eff.unwrap_or_else(|| default.clone()),
        default,
        small_files: small,
        small_file_threshold_bytes: st.store.storage.small_file_threshold_bytes,
    }))
}

pub(super) async fn policy_set_root(
    st: State<ApiState>,
    b: Json<PolicyRequest>,
) -> ApiResult<StatusCode> {
    policy_set(st, Path(String::new()), b).await
}

pub(super) async fn policy_set(
    State(st): State<ApiState>,
    Path(p): Path<String>,
    Json(b): Json<PolicyRequest>,
) -> ApiResult<StatusCode> {
    let path = parse_path(&p)?;
    let policy = b
        .policy
        .as_deref()
        .map(str::parse::<Policy>)
        .transpose()
        .map_err(bad)?;
    st.store.set_policy(&path, policy).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a file survives now, in words a person reads without the glossary: failed disks and
/// machines where the parts are spread over them, else lost parts and why a disk failure is
/// not survived; and whether repair is due.
pub(crate) fn tolerance_sentence(t: &Tolerance) -> String {
    let n = |count: usize, one: &str, many: &str| {
        format!("{count} {}", if count == 1 { one } else { many })
    };
    let mut s = if t.disks > 0 {
        let mut s = format!("survives {}", n(t.disks, "failed disk", "failed disks"));
        if t.machines > 0 {
            s.push_str(&format!(", or {}", n(t.machines, "machine", "machines")));
        }
        s
    } else if t.parts > 0 {
        format!(
            "survives {}; these folders share one disk, so a disk failure would lose it",
            n(t.parts, "lost part", "lost parts")
        )
    } else {
        "survives no further loss: one more lost part and it cannot be read".to_owned()
    };
    if t.parts < t.policy_parts {
        s.push_str(&format!(
            " (its policy allows {}: repair is due)",
            n(t.policy_parts, "lost part", "lost parts")
        ));
    }
    s
}

#[cfg(test)]
mod tolerance_tests {
    use super::*;

    fn tol(policy_parts: usize, parts: usize, disks: usize, machines: usize) -> Tolerance {
        Tolerance {
            policy_parts,
            parts,
            disks,
            machines,
            summary: String::new(),
        }
    }

    #[test]
    fn the_tolerance_reads_as_one_sentence() {
        assert_eq!(
            tolerance_sentence(&tol(2, 2, 2, 1)),
            "survives 2 failed disks, or 1 machine"
        );
        assert_eq!(
            tolerance_sentence(&tol(1, 1, 1, 0)),
            "survives 1 failed disk"
        );
        assert_eq!(
            tolerance_sentence(&tol(2, 2, 0, 0)),
            "survives 2 lost parts; these folders share one disk, so a disk failure would lose it"
        );
        assert_eq!(
            tolerance_sentence(&tol(2, 1, 0, 0)),
            "survives 1 lost part; these folders share one disk, so a disk failure would lose it \
             (its policy allows 2 lost parts: repair is due)"
        );
        assert!(tolerance_sentence(&tol(2, 0, 0, 0)).starts_with("survives no further loss"));
        for t in [tol(2, 2, 2, 1), tol(2, 2, 0, 0), tol(1, 0, 0, 0)] {
            assert_eq!(tolerance_sentence(&t).matches("surviv").count(), 1);
        }
    }
}
