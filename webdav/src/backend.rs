//! What the WebDAV face needs from the node: a tree of directories and files to stat, list, read
//! and change, dead properties and locks. The node implements it over its store and its
//! replicated metadata; tests can implement it in memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

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
    /// No such file or directory (or a missing parent, for a create).
    #[error("not found")]
    NotFound,
    /// The name is taken.
    #[error("already exists")]
    Exists,
    /// The path is not acceptable (`..`, NUL, a backslash, an empty component).
    #[error("bad path: {0}")]
    BadPath(String),
    /// The operation is not allowed here.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A retained file (or a directory holding one) cannot change yet: answered 403 with
    /// this sentence (which says until when) as the body.
    #[error("{0}")]
    Retained(String),
    /// Not enough space to store the file.
    #[error("insufficient storage: {0}")]
    InsufficientStorage(String),
    /// The data cannot be served or stored now (too many parts lost, no quorum).
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

/// A new file being written. Nothing is visible until [`WriteFile::commit`] returns; a file
/// dropped without a commit is discarded (its parts removed, nothing left visible).
pub trait WriteFile: Send + Sync {
    /// Appends bytes (in order).
    fn write(&mut self, data: Bytes) -> BoxFut<'_, ()>;
    /// Ends the stream cleanly and waits until the file is durable and visible.
    fn commit(&mut self) -> BoxFut<'_, Entry>;
    /// Bytes written so far.
    fn written(&self) -> u64;
}

/// How a new file is created.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// The length the client announced; the commit is refused if the bytes differ.
    pub expected_size: Option<u64>,
    /// Refuse if the name is taken (`If-None-Match: *`); otherwise a whole new version
    /// replaces an existing file.
    pub create_new: bool,
    /// Who writes it (the authenticated user), recorded as the file's source.
    pub principal: Option<String>,
}

/// A dead property: any XML a client stored with PROPPATCH.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadProp {
    /// XML namespace (empty for none).
    pub namespace: String,
    /// Local name.
    pub name: String,
    /// The prefix the client used, if any.
    pub prefix: Option<String>,
    /// The whole property element as XML, if it has a value.
    pub xml: Option<Vec<u8>>,
}

/// A WebDAV lock as stored in the replicated metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The lock token (`urn:uuid:...`).
    pub token: String,
    /// The locked path in tree form (`/a/b`, no trailing slash; `/` for the root).
    pub path: String,
    /// The locked URL as the client wrote it (for `lockroot`).
    pub href: String,
    /// The user who holds it.
    pub principal: Option<String>,
    /// The client's `owner` element, as XML.
    pub owner_xml: Option<Vec<u8>>,
    /// When it expires (ms since the epoch).
    pub expires_ms: u64,
    /// Its timeout in seconds, as granted.
    pub timeout_secs: u64,
    /// A shared (not exclusive) lock.
    pub shared: bool,
    /// Depth infinity (covers everything below).
    pub deep: bool,
}

/// The tree as the WebDAV face sees it. Paths are absolute, `/`-separated, percent-decoded and
/// without a trailing slash (`/` is the root).
pub trait Backend: Send + Sync + 'static {
    /// The entry at `path`.
    fn stat<'a>(&'a self, path: &'a str) -> BoxFut<'a, Entry>;
    /// The entries of the directory at `path`.
    fn list<'a>(&'a self, path: &'a str) -> BoxFut<'a, Vec<Entry>>;
    /// Opens the file at `path` for reading.
    fn open<'a>(&'a self, path: &'a str) -> BoxFut<'a, Arc<dyn ReadFile>>;

    /// Starts a new file at `path` (its parent must be a directory).
    fn create<'a>(&'a self, path: &'a str, opts: CreateOptions) -> BoxFut<'a, Box<dyn WriteFile>>;
    /// Creates a directory (its parent must exist).
    fn mkdir<'a>(&'a self, path: &'a str) -> BoxFut<'a, ()>;
    /// Removes a file, or a directory with everything below it, and the locks on them, as one
    /// committed change (never the root): all of it goes, or nothing does.
    fn remove<'a>(&'a self, path: &'a str) -> BoxFut<'a, ()>;
    /// Renames a file or directory as one committed change; with `overwrite`, whatever is at
    /// `to` (a file or a whole directory) is replaced in the same change. Refused when either
    /// path is the root or one is inside the other.
    fn rename<'a>(&'a self, from: &'a str, to: &'a str, overwrite: bool) -> BoxFut<'a, ()>;
    /// Copies a file (metadata only where the store allows it), or a directory (with what is
    /// in it when `deep`), with dead properties, as one committed change; with `overwrite`,
    /// whatever is at `to` is replaced in the same change. Refused like [`Backend::rename`].
    fn copy<'a>(
        &'a self,
        from: &'a str,
        to: &'a str,
        overwrite: bool,
        deep: bool,
    ) -> BoxFut<'a, ()>;

    /// The dead properties of `path`.
    fn props<'a>(&'a self, path: &'a str) -> BoxFut<'a, Vec<DeadProp>>;
    /// The dead properties of every entry of the directory `dir` that has any, by entry name
    /// (one call for a whole PROPFIND listing).
    fn child_props<'a>(
        &'a self,
        dir: &'a str,
    ) -> BoxFut<'a, std::collections::HashMap<String, Vec<DeadProp>>>;
    /// Sets (`true`) and removes (`false`) dead properties of `path` in the order given, all
    /// or nothing.
    fn patch_props<'a>(&'a self, path: &'a str, patch: Vec<(bool, DeadProp)>) -> BoxFut<'a, ()>;

    /// Every lock that has not expired.
    fn locks(&self) -> BoxFut<'_, Vec<LockInfo>>;
    /// Takes a lock, unless a live lock conflicts (`Ok(Err(that lock))`). The conflict check
    /// and the insert are one step of the replicated metadata.
    fn lock(&self, lock: LockInfo) -> BoxFut<'_, Result<LockInfo, LockInfo>>;
    /// Drops the lock `token` (false if there is none).
    fn unlock<'a>(&'a self, token: &'a str) -> BoxFut<'a, bool>;
    /// Extends the lock `token` to `expires_ms` (None if there is none).
    fn refresh_lock<'a>(
        &'a self,
        token: &'a str,
        expires_ms: u64,
        timeout_secs: u64,
    ) -> BoxFut<'a, Option<LockInfo>>;
    /// Drops every lock on `path` and below (after a DELETE or MOVE).
    fn delete_locks<'a>(&'a self, path: &'a str) -> BoxFut<'a, ()>;

    /// The first of `locks` that stops the request `check` describes, if any. The rule is the
    /// one the replicated metadata grants locks by, so this face and the state machine decide
    /// alike; a backend applies it rather than this crate keeping a copy.
    fn lock_conflict(&self, locks: &[LockInfo], check: &LockCheck<'_>) -> Option<LockInfo>;
    /// The live ones of `locks` that cover `path` at `now_ms`: those on it, and deep ones on
    /// its ancestors.
    fn covering_locks(&self, locks: &[LockInfo], path: &str, now_ms: u64) -> Vec<LockInfo>;
}

/// A request to check against the locks (see [`Backend::lock_conflict`]).
#[derive(Clone, Copy, Debug)]
pub struct LockCheck<'a> {
    /// The path acted on, in tree form.
    pub path: &'a str,
    /// The user asking.
    pub principal: Option<&'a str>,
    /// Whether a submitted token counts whoever holds the lock.
    pub ignore_principal: bool,
    /// Whether locks on `path`'s descendants matter too (a DELETE or MOVE of a folder).
    pub deep: bool,
    /// The lock tokens the request submitted.
    pub tokens: &'a [String],
    /// Whether other shared locks may stay (a new shared lock coexists with them).
    pub shared_ok: bool,
    /// The time of the check (ms since the epoch); locks expired by then do not count.
    pub now_ms: u64,
}
