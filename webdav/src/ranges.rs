//! GET with several ranges, bounded: ranges are coalesced, their number capped, and a multipart
//! answer gets a random boundary.
//!
//! dav-server answers every range asked for, in order, with the fixed boundary `BOUNDARY`:
//! 1,000 copies of `0-4999999` made a 5 GB answer from a 5 MB file, and a file containing
//! `--BOUNDARY` could forge parts. Here a Range header is planned before dav-server sees it:
//! one range (after coalescing) goes to dav-server as a single range; several are served here
//! as `multipart/byteranges`; too many, or a header that cannot be parsed, get the whole file
//! (RFC 9110 14.2 lets a server ignore Range).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};

use crate::backend::ReadFile;

/// The most ranges one request may ask for (Apache's `MaxRanges` default); beyond it the whole
/// file is sent.
pub const MAX_RANGES: usize = 200;

/// What to do with a request's Range header.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Leave it to dav-server as it is (no satisfiable range: dav-server answers 416).
    AsIs,
    /// Send the whole file (drop the header).
    Whole,
    /// One range, `[start, end)`, after coalescing.
    Single(u64, u64),
    /// Several disjoint ranges in ascending order, `[start, end)` each.
    Multi(Vec<(u64, u64)>),
}

/// Plans `spec` (the Range header's value) for a file of `size` bytes.
pub fn plan(spec: &str, size: u64) -> Plan {
    let Some(list) = spec.trim().strip_prefix("bytes=") else {
        return Plan::Whole;
    };
    let specs: Vec<&str> = list.split(',').map(str::trim).collect();
    if specs.len() > MAX_RANGES {
        return Plan::Whole;
    }
    let mut ranges = Vec::with_capacity(specs.len());
    for s in specs {
        let Some((a, b)) = s.split_once('-') else {
            return Plan::Whole;
        };
        let num = |t: &str| -> Option<u64> {
            (!t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()))
                .then(|| t.parse().ok())
                .flatten()
        };
        let r = match (a.trim(), b.trim()) {
            ("", n) => match num(n) {
                Some(0) => None,
                Some(n) => Some((size.saturating_sub(n), size)),
                None => return Plan::Whole,
            },
            (a, "") => match num(a) {
                Some(a) => Some((a, size)),
                None => return Plan::Whole,
            },
            (a, b) => match (num(a), num(b)) {
                (Some(a), Some(b)) if a <= b => Some((a, b.saturating_add(1).min(size))),
                _ => return Plan::Whole,
            },
        };
        if let Some((a, b)) = r {
            if a < size && a < b {
                ranges.push((a, b));
            }
        }
    }
    if ranges.is_empty() {
        return Plan::AsIs;
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match merged.last_mut() {
            // Overlapping or adjacent: one range.
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    match merged.as_slice() {
        [(a, b)] => Plan::Single(*a, *b),
        _ => Plan::Multi(merged),
    }
}

/// A fresh multipart boundary: random, so no file's content can forge one.
pub fn boundary() -> String {
    format!("wormfs-{}", uuid::Uuid::new_v4().simple())
}

/// The 206 `multipart/byteranges` answer for `ranges` of `file`, read through the backend as
/// the client takes it. `head` carries the validators (ETag, Last-Modified) to copy.
pub fn multipart(
    file: Arc<dyn ReadFile>,
    ranges: Vec<(u64, u64)>,
    content_type: &str,
    head: &http::HeaderMap,
) -> crate::Resp {
    let size = file.entry().size;
    let boundary = boundary();
    let part_head = |a: u64, b: u64| {
        format!(
            "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {a}-{}/{size}\r\n\r\n",
            b - 1
        )
    };
    let tail = format!("\r\n--{boundary}--\r\n");
    let length: u64 = ranges
        .iter()
        .map(|&(a, b)| part_head(a, b).len() as u64 + (b - a))
        .sum::<u64>()
        + tail.len() as u64;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let heads: Vec<String> = ranges.iter().map(|&(a, b)| part_head(a, b)).collect();
    tokio::spawn(async move {
        for ((a, b), h) in ranges.into_iter().zip(heads) {
            if tx.send(Ok(Bytes::from(h))).await.is_err() {
                return;
            }
            let mut pos = a;
            while pos < b {
                let want = ((b - pos) as usize).min(crate::READ_BUF_SIZE);
                match file.read_at(pos, want).await {
                    Ok(chunk) if !chunk.is_empty() => {
                        pos += chunk.len() as u64;
                        if tx.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(_) => {
                        tracing::warn!(pos, "webdav multipart read failed; answer cut short");
                        let _ = tx.send(Err(std::io::Error::other("read failed"))).await;
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Ok(Bytes::from(tail))).await;
    });
    let stream =
        futures::StreamExt::map(tokio_stream_from(rx), |r| r.map(hyper::body::Frame::data));
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}")) {
        h.insert(http::header::CONTENT_TYPE, v);
    }
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(
        http::header::ACCEPT_RANGES,
        HeaderValue::from_static("bytes"),
    );
    for name in [http::header::ETAG, http::header::LAST_MODIFIED] {
        if let Some(v) = head.get(&name) {
            h.insert(name, v.clone());
        }
    }
    r
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_coalesced_and_capped() {
        let big = vec!["0-4999999"; 1000].join(",");
        assert_eq!(plan(&format!("bytes={big}"), 5_000_000), Plan::Whole);
        let some = vec!["0-4999999"; 150].join(",");
        assert_eq!(
            plan(&format!("bytes={some}"), 5_000_000),
            Plan::Single(0, 5_000_000)
        );
        assert_eq!(plan("bytes=0-9,10-19", 100), Plan::Single(0, 20));
        assert_eq!(
            plan("bytes=50-59, 0-9,5-12", 100),
            Plan::Multi(vec![(0, 13), (50, 60)])
        );
        assert_eq!(
            plan("bytes=-10,0-0", 100),
            Plan::Multi(vec![(0, 1), (90, 100)])
        );
        assert_eq!(
            plan("bytes=0-18446744073709551615", 100),
            Plan::Single(0, 100)
        );
        assert_eq!(plan("bytes=200-300", 100), Plan::AsIs);
        assert_eq!(plan("bytes=5-2", 100), Plan::Whole);
        assert_eq!(plan("bytes=x-2", 100), Plan::Whole);
        assert_eq!(plan("items=0-1", 100), Plan::Whole);
        assert_ne!(boundary(), boundary());
    }
}
