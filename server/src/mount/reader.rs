//! Reading one open file: the kernel's reads, in the order they came, served from a range
//! request that stays open while the reads follow each other.
//!
//! A read where the last one ended continues the open range; a read a little further on skips
//! ahead in it; anything else opens a new range at the read. Ranges start at the read's size
//! (at least [`FIRST_CHUNK`]) and double while reads stay sequential, up to [`MAX_CHUNK`], as rclone's
//! `--vfs-read-chunk-size` does: a seek costs one small range, a film streams in large ones.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::remote::{Remote, RemoteError};

/// The first range opened after a seek (or the kernel's read, if larger): a random read asks
/// the node for little more than it needs, and its range ends, so its connection is kept.
pub const FIRST_CHUNK: u64 = 64 * 1024;
/// The largest range.
pub const MAX_CHUNK: u64 = 64 * 1024 * 1024;
/// How far ahead of the open range's position a read may start and still use it.
const SKIP_AHEAD: u64 = 2 * 1024 * 1024;

type Body = Pin<Box<dyn Stream<Item = Result<Bytes, RemoteError>> + Send>>;

/// An open file's reader.
pub struct FileReader {
    remote: Remote,
    path: String,
    etag: String,
    size: u64,
    /// The open range: its body, the position of its next byte, and its end.
    open: Option<(Body, u64, u64)>,
    /// Bytes received past what was asked, at the open range's position.
    left: Bytes,
    /// The size of the next range if the reads stay sequential.
    chunk: u64,
    /// Where the last range ended (a read there is still sequential).
    last_end: u64,
}

impl FileReader {
    /// A reader of the file at `path`, as long as it is the version `etag` of `size` bytes.
    pub fn new(remote: Remote, path: String, etag: String, size: u64) -> Self {
        FileReader {
            remote,
            path,
            etag,
            size,
            open: None,
            left: Bytes::new(),
            chunk: FIRST_CHUNK,
            last_end: u64::MAX,
        }
    }

    /// `len` bytes at `offset` (fewer at the end of the file).
    pub async fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, RemoteError> {
        let end = offset.saturating_add(u64::from(len)).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut at = offset;
        let mut retried = false;
        while at < end {
            match self.fill(at, end, &mut out).await {
                Ok(n) => {
                    at += n;
                    retried = false;
                }
                // One more try on a fresh range: a connection the node closed while idle.
                Err(RemoteError::Unavailable(why)) if !retried => {
                    tracing::debug!(path = %self.path, "range failed ({why}); once more");
                    // What the failed range appended past `at` is asked for again.
                    out.truncate((at - offset) as usize);
                    self.open = None;
                    self.left = Bytes::new();
                    retried = true;
                }
                Err(e) => {
                    self.open = None;
                    self.left = Bytes::new();
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Appends bytes from `at` (up to `end`) to `out`, from the open range or a new one;
    /// returns how many.
    async fn fill(&mut self, at: u64, end: u64, out: &mut Vec<u8>) -> Result<u64, RemoteError> {
        let usable = matches!(&self.open, Some((_, pos, range_end))
            if at >= *pos && at - *pos <= SKIP_AHEAD && at < *range_end);
        if !usable {
            self.start(at, end).await?;
        }
        let Some((body, pos, range_end)) = self.open.as_mut() else {
            return Err(RemoteError::Unavailable("no range open".into()));
        };
        // Skip to `at`.
        while *pos < at {
            if self.left.is_empty() {
                self.left = next_piece(body).await?;
            }
            let skip = (at - *pos).min(self.left.len() as u64) as usize;
            let _ = self.left.split_to(skip);
            *pos += skip as u64;
        }
        let want = end.min(*range_end) - at;
        let mut got = 0u64;
        while got < want {
            if self.left.is_empty() {
                self.left = next_piece(body).await?;
            }
            let take = (want - got).min(self.left.len() as u64) as usize;
            out.extend_from_slice(&self.left.split_to(take));
            got += take as u64;
            *pos += take as u64;
        }
        if *pos >= *range_end {
            self.last_end = *range_end;
            self.open = None;
            self.left = Bytes::new();
        }
        Ok(got)
    }

    /// Opens a range at `at`, at least up to `end`.
    async fn start(&mut self, at: u64, end: u64) -> Result<(), RemoteError> {
        self.chunk = if at == self.last_end {
            (self.chunk * 2).min(MAX_CHUNK)
        } else {
            FIRST_CHUNK
        };
        let range_end = at.saturating_add(self.chunk.max(end - at)).min(self.size);
        // A read larger than the chunk sets the pace: the next range doubles from it.
        self.chunk = self.chunk.max(end - at).min(MAX_CHUNK);
        let body = self
            .remote
            .range(&self.path, &self.etag, at, range_end)
            .await?;
        self.open = Some((Box::pin(body), at, range_end));
        self.left = Bytes::new();
        Ok(())
    }
}

async fn next_piece(body: &mut Body) -> Result<Bytes, RemoteError> {
    loop {
        match body.next().await {
            Some(Ok(b)) if b.is_empty() => continue,
            Some(Ok(b)) => return Ok(b),
            Some(Err(e)) => return Err(e),
            None => {
                return Err(RemoteError::Unavailable(
                    "the node ended the range early".into(),
                ))
            }
        }
    }
}
