//! Spotting a `#fragment` in a raw request line.
//!
//! The URL parser under hyper drops a fragment silently, so `DELETE /dir/#frag` would arrive as
//! `DELETE /dir/` and remove the whole directory. [`FragmentSniffer`] wraps a connection's
//! stream and, on the bytes as they arrive, notes every line shaped like an HTTP/1 request line
//! whose target holds a `#`. The service then refuses the request with that method and path.
//! A false match needs a request body holding such a line followed by the same request on the
//! same connection, and then costs only a 400.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest request line looked at.
const MAX_LINE: usize = 16 * 1024;

/// Request lines (method, path before the `#`) seen with a fragment, oldest first.
#[derive(Clone, Default)]
pub struct Fragments(Arc<Mutex<VecDeque<(String, String)>>>);

impl Fragments {
    /// Whether the request `method path` was written with a fragment (and forgets it).
    pub fn take(&self, method: &str, path: &str) -> bool {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = q.iter().position(|(m, p)| m == method && p == path) {
            q.remove(i);
            true
        } else {
            false
        }
    }

    fn push(&self, method: String, path: String) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= 64 {
            q.pop_front();
        }
        q.push_back((method, path));
    }
}

/// A stream that watches incoming bytes for request lines with a fragment.
pub struct FragmentSniffer<T> {
    inner: T,
    tail: Vec<u8>,
    overflow: bool,
    seen: Fragments,
}

impl<T> FragmentSniffer<T> {
    /// Wraps `inner`; matches are reported to `seen`.
    pub fn new(inner: T, seen: Fragments) -> Self {
        Self {
            inner,
            tail: Vec::new(),
            overflow: false,
            seen,
        }
    }

    fn scan(&mut self, data: &[u8]) {
        let mut rest = data;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let (seg, after) = rest.split_at(nl);
            if !self.overflow {
                if self.tail.is_empty() {
                    self.check_line(seg);
                } else {
                    let mut line = std::mem::take(&mut self.tail);
                    line.extend_from_slice(seg);
                    self.check_line(&line);
                }
            }
            self.tail.clear();
            self.overflow = false;
            rest = &after[1..];
        }
        if !self.overflow {
            if self.tail.len() + rest.len() > MAX_LINE {
                self.overflow = true;
                self.tail.clear();
            } else {
                self.tail.extend_from_slice(rest);
            }
        }
    }

    fn check_line(&self, line: &[u8]) {
        if memchr::memchr(b'#', line).is_none() {
            return;
        }
        if let Some((m, p)) = parse_request_line(line) {
            self.seen.push(m, p);
        }
    }
}

/// `METHOD SP target SP HTTP/1.x` with a `#` in the target: the method and the target's path
/// up to the `#` (or `?`).
fn parse_request_line(line: &[u8]) -> Option<(String, String)> {
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !version.starts_with("HTTP/1.")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase() || b == b'-')
    {
        return None;
    }
    let (before, _) = target.split_once('#')?;
    let before = before.split('?').next().unwrap_or_default();
    let path = match before.find("://") {
        Some(i) => {
            let after = &before[i + 3..];
            after.find('/').map_or("/", |j| &after[j..])
        }
        None => before,
    };
    let path = if path.is_empty() { "/" } else { path };
    Some((method.to_owned(), path.to_owned()))
}

impl<T: AsyncRead + Unpin> AsyncRead for FragmentSniffer<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            this.scan(&buf.filled()[before..]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FragmentSniffer<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_with_fragments_are_noted_even_when_split() {
        let seen = Fragments::default();
        let mut s = FragmentSniffer::new((), seen.clone());
        s.scan(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nDELETE /fr");
        s.scan(b"ag/#ment HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(!seen.take("GET", "/a"));
        assert!(seen.take("DELETE", "/frag/"));
        assert!(!seen.take("DELETE", "/frag/"));
    }

    #[test]
    fn body_bytes_and_headers_are_not_request_lines() {
        let seen = Fragments::default();
        let mut s = FragmentSniffer::new((), seen.clone());
        s.scan(b"Referer: http://x/#y\r\nsome # body\nPUT /x#y HTTP/2\r\n");
        assert!(seen.0.lock().unwrap().is_empty());
        assert_eq!(
            parse_request_line(b"MOVE http://h:1/a/b?q#f HTTP/1.1\r"),
            Some(("MOVE".into(), "/a/b".into()))
        );
    }
}
