//! A file's bytes: put, get (and HEAD, ranges), append, delete.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{StreamExt, TryStreamExt};
use tokio_util::io::StreamReader;
use tracing::Instrument;

use super::locks::{done, honour_locks, lock_infos, with_parent};
use super::types::{ErrorKind, LocksQuery, PutQuery, RmQuery, WriteResponse};
use super::{bad, internal, parse_path, ApiError, ApiResult, ApiState};
use crate::ingest::IngestRequest;
use crate::read::FileReader;
use wormfs_meta::command::{Conflict, SourceIdentity};
use wormfs_parts::policy::Policy;

fn parse_conflict(s: &str) -> Result<Conflict, ApiError> {
    match s {
        "rename" => Ok(Conflict::Rename),
        "replace" => Ok(Conflict::Replace),
        "skip" => Ok(Conflict::Skip),
        "fail" => Ok(Conflict::Fail),
        other => Err(bad(format!(
            "conflict must be rename, replace, skip or fail, not {other:?}"
        ))),
    }
}

fn default_conflict(c: wormfs_config::ConflictRule) -> Conflict {
    match c {
        wormfs_config::ConflictRule::Rename => Conflict::Rename,
        wormfs_config::ConflictRule::Replace => Conflict::Replace,
        wormfs_config::ConflictRule::Skip => Conflict::Skip,
    }
}

fn announced_len(h: &HeaderMap) -> Result<Option<u64>, ApiError> {
    for name in [
        "x-wormfs-size",
        "x-expected-entity-length",
        "content-length",
    ] {
        if let Some(v) = h.get(name) {
            let s = v.to_str().map_err(|_| bad(format!("bad {name} header")))?;
            return s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| bad(format!("bad {name} header {s:?}")));
        }
    }
    Ok(None)
}

fn body_reader(body: Body) -> impl tokio::io::AsyncRead + Unpin + Send + 'static {
    StreamReader::new(body.into_data_stream().map_err(std::io::Error::other))
}

pub(super) async fn put_file(
    State(st): State<ApiState>,
    Path(p): Path<String>,
    Query(q): Query<PutQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let path = parse_path(&p)?;
    let broken = match honour_locks(&st.store, &with_parent(&path, false), q.break_locks).await {
        Ok(b) => b,
        Err(r) => return Ok(r),
    };
    let policy = q
        .policy
        .as_deref()
        .map(str::parse::<Policy>)
        .transpose()
        .map_err(bad)?;
    let conflict = match q.conflict.as_deref() {
        Some(c) => parse_conflict(c)?,
        None => default_conflict(st.store.storage.conflict),
    };
    let req = IngestRequest {
        path,
        policy,
        conflict,
        source: SourceIdentity::Upload {
            client: "api".into(),
        },
        expected_size: announced_len(&headers)?,
        retention_checked: false,
    };
    // The write runs in its own task: a client that goes away must not cancel it half-way.
    let store = st.store.clone();
    let reader = body_reader(body);
    // In the request's span, so the ingest's log lines say which request they belong to.
    let res = tokio::spawn(
        async move { store.ingest(req, reader).await }.instrument(tracing::Span::current()),
    )
    .await
    .map_err(internal)??;
    let status = if res.skipped {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = WriteResponse {
        result: res,
        broken_locks: lock_infos(&broken),
    };
    Ok((status, Json(body)).into_response())
}

pub(super) async fn append(
    State(st): State<ApiState>,
    Path(p): Path<String>,
    Query(q): Query<LocksQuery>,
    body: Body,
) -> ApiResult<Response> {
    let path = parse_path(&p)?;
    let broken = match honour_locks(&st.store, &[(path.clone(), false)], q.break_locks).await {
        Ok(b) => b,
        Err(r) => return Ok(r),
    };
    let store = st.store.clone();
    let reader = body_reader(body);
    let res = tokio::spawn(
        async move { store.append(&path, reader).await }.instrument(tracing::Span::current()),
    )
    .await
    .map_err(internal)??;
    let body = WriteResponse {
        result: res,
        broken_locks: lock_infos(&broken),
    };
    Ok(Json(body).into_response())
}

/// Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range. The numbers are the client's:
/// digits only, a number too large for a u64 saturates, and nothing here adds without a check.
/// A last position beyond the file is clamped to it (RFC 9110 14.1.2), so
/// `bytes=0-18446744073709551615` is the whole file.
fn parse_range(h: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // multiple ranges: serve the whole file
    }
    let (a, b) = spec.split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().unwrap_or(u64::MAX))
    };
    let r = match (a.trim(), b.trim()) {
        ("", n) => num(n)
            .filter(|&n| n > 0)
            .map(|n| (size.saturating_sub(n), size)),
        (a, "") => num(a).map(|a| (a, size)),
        (a, b) => match (num(a), num(b)) {
            (Some(a), Some(b)) if a <= b => Some((a, b.saturating_add(1).min(size))),
            _ => return Some(Err(())),
        },
    };
    Some(match r {
        Some((a, b)) if a < b && a < size => Ok((a, b)),
        _ => Err(()),
    })
}

/// The file at `path` with its segments and parts: from the recent reads while the metadata is
/// still good at `generation` (a player's or the FUSE mount's stream of range requests walks the
/// same path once), else from the metadata.
async fn file_record(
    st: &ApiState,
    path: &wormfs_parts::tree_path::TreePath,
    generation: crate::webdav_lookups::Generations,
) -> ApiResult<std::sync::Arc<wormfs_meta::FileRecord>> {
    let key = path.to_string();
    if let Some(rec) = st
        .reads
        .0
        .get(&key, generation)
        .flatten()
        .and_then(|f| f.file)
    {
        return Ok(rec);
    }
    let entry = st.store.entry_at(path).await?;
    let id = entry.file_id.ok_or_else(|| {
        crate::store::StoreError::from(wormfs_meta::command::Rejection::IsADirectory(key.clone()))
    })?;
    let rec = std::sync::Arc::new(
        st.store
            .meta
            .file(id)
            .await
            .map_err(crate::store::StoreError::from)?
            .ok_or_else(|| {
                crate::store::StoreError::from(wormfs_meta::command::Rejection::NotFound(
                    key.clone(),
                ))
            })?,
    );
    st.reads.0.put(
        &key,
        generation,
        crate::webdav_lookups::Found {
            entry,
            file: Some(rec.clone()),
        },
    );
    Ok(rec)
}

pub(super) async fn get_file(
    State(st): State<ApiState>,
    Path(p): Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let path = parse_path(&p)?;
    let generation = crate::webdav_lookups::Generations::of(&st.store.meta);
    let rec = file_record(&st, &path, generation).await?;
    let size = rec.size;
    let etag = format!("\"{}\"", rec.etag);
    if let Some(want) = headers.get(header::IF_MATCH) {
        let matches = want.to_str().is_ok_and(|w| {
            w.split(',')
                .any(|t| matches!(t.trim(), "*") || t.trim() == etag)
        });
        if !matches {
            return Err(ApiError(
                StatusCode::PRECONDITION_FAILED,
                ErrorKind::PreconditionFailed,
                format!("{path} was replaced: it is now {etag}"),
            ));
        }
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| parse_range(h, size));
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, size),
        Some(Ok((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Some(Err(())) => {
            let mut r = ApiError(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorKind::BadRange,
                format!("range not satisfiable for {size} bytes"),
            )
            .into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}"))
                    .unwrap_or(HeaderValue::from_static("bytes */0")),
            );
            return Ok(r);
        }
    };
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, etag)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{}", start, end - 1, size),
        );
    }
    let body = if method == axum::http::Method::HEAD {
        Body::empty()
    } else {
        let parts = st.reads.0.open_parts(rec.file_id, generation.all);
        let reader = FileReader::with_open_parts(st.store.clone(), rec, parts);
        let mut stream = Box::pin(reader.stream(start, end));
        // The first piece is read before answering, so a file that cannot be read (parts on
        // machines that are down) gets an error status and the reason, not a broken 200.
        let first = match stream.next().await {
            Some(Err(e)) => {
                tracing::error!("read failed: {e}");
                return Err(ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorKind::Unreadable,
                    e.to_string(),
                ));
            }
            first => first,
        };
        // A later failure ends the body with an error: the client sees a short, broken
        // transfer, never zero-filled bytes.
        Body::from_stream(futures::stream::iter(first).chain(stream).map_err(|e| {
            tracing::error!("read failed: {e}");
            std::io::Error::other(e.to_string())
        }))
    };
    b.body(body).map_err(internal)
}

pub(super) async fn delete(
    State(st): State<ApiState>,
    Path(p): Path<String>,
    Query(q): Query<RmQuery>,
) -> ApiResult<Response> {
    let path = parse_path(&p)?;
    // Everything below goes too: so do the locks there.
    let broken = match honour_locks(&st.store, &[(path.clone(), true)], q.break_locks).await {
        Ok(b) => b,
        Err(r) => return Ok(r),
    };
    st.store.remove(&path, q.recursive).await?;
    Ok(done(&broken))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 100))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 100))));
        assert_eq!(parse_range("bytes=95-200", 100), Some(Ok((95, 100))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=5-2", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        // The largest last position (and beyond) is the whole file, never a wrapped sum.
        let max = u64::MAX;
        assert_eq!(
            parse_range(&format!("bytes=0-{max}"), 100),
            Some(Ok((0, 100)))
        );
        assert_eq!(
            parse_range("bytes=10-99999999999999999999999", 100),
            Some(Ok((10, 100)))
        );
        assert_eq!(
            parse_range(&format!("bytes={max}-{max}"), 100),
            Some(Err(()))
        );
        assert_eq!(parse_range(&format!("bytes={max}-"), 100), Some(Err(())));
        assert_eq!(
            parse_range(&format!("bytes=-{max}"), 100),
            Some(Ok((0, 100)))
        );
        assert_eq!(parse_range("bytes=+1-5", 100), Some(Err(())));
    }
}
