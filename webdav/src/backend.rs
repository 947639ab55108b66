//! What the WebDAV face needs from the node: a tree of directories and files to stat, list and
//! read. The node implements it over its store; tests can implement it in memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

/// A boxed future returning a [`BackendError`] on failure.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

/// A directory or file of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its name (empty for the root).
    pub name: String,
    /// A directory.
    pub is_dir: bool,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time, milliseconds since the epoch.
    pub mtime_ms: u64,
    /// A strong validator of the content (files), if known.
    pub etag: Option<String>,
}

/// Why the backend could not answer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No such file or directory.
    #[error("not found")]
    NotFound,
    /// The path is not acceptable (`..`, NUL, a backslash, an empty component).
    #[error("bad path: {0}")]
    BadPath(String),
    /// The operation is not allowed here.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The data cannot be served (too many parts lost, no quorum).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// An open file: its entry and reads at any offset.
pub trait ReadFile: Send + Sync {
    /// The file as it was opened.
    fn entry(&self) -> &Entry;
    /// Up to `len` bytes from `offset`; never empty before the end of the file (a read that
    /// cannot be served is an error, never short or zero-filled data).
    fn read_at(&self, offset: u64, len: usize) -> BoxFut<'_, Bytes>;
}

/// The tree as the WebDAV face sees it. Paths are absolute, `/`-separated and percent-decoded.
pub trait Backend: Send + Sync + 'static {
    /// The entry at `path`.
    fn stat<'a>(&'a self, path: &'a str) -> BoxFut<'a, Entry>;
    /// The entries of the directory at `path`.
    fn list<'a>(&'a self, path: &'a str) -> BoxFut<'a, Vec<Entry>>;
    /// Opens the file at `path` for reading.
    fn open<'a>(&'a self, path: &'a str) -> BoxFut<'a, Arc<dyn ReadFile>>;
}
