//! The node's tree as the WebDAV face's [`Backend`]: lookups and listings from the metadata,
//! reads through [`FileReader`] (verified blocks, degraded decoding, never zero-filled bytes),
//! uploads through the ingest pipeline, and namespace changes, dead properties and locks as
//! Raft commands.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use wormfs_webdav::{
    Backend, BackendError, BoxFut, CreateOptions, DeadProp, Entry, LockCheck, LockInfo, ReadFile,
    WriteFile,
};

use crate::ingest::IngestRequest;
use crate::read::{FileReader, ReadError};
use crate::store::{Store, StoreError};
use crate::webdav_lookups::{Found, Generations, Lookups};
use crate::webdav_records::{self, lock_from_log, lock_to_log, prop_from_log, prop_to_log};
use crate::webdav_upload::Upload;
use wormfs_meta::command::{CommandV1, Conflict, Outcome, Rejection, SourceIdentity};
use wormfs_meta::{DirEntry, EntryKind, FileRecord};
use wormfs_parts::fsutil::now_ms;
use wormfs_parts::tree_path::TreePath;

/// The store seen through WebDAV.
pub struct StoreBackend {
    store: Arc<Store>,
    lookups: Lookups,
}

impl StoreBackend {
    /// A backend over `store`.
    pub fn new(store: Arc<Store>) -> Arc<Self> {
        Arc::new(Self {
            store,
            lookups: Lookups::default(),
        })
    }

    /// The entry at `p`, from the recent lookups while their answer still holds at
    /// `generation` (read before this call).
    async fn lookup(&self, p: &TreePath, generation: Generations) -> Result<Found, BackendError> {
        let key = p.to_string();
        match self.lookups.get(&key, generation) {
            Some(Some(f)) => return Ok(f),
            Some(None) => return Err(BackendError::NotFound),
            None => {}
        }
        let Some(entry) = self.store.meta.lookup(p).await.map_err(meta_err)? else {
            self.lookups.put_missing(&key, generation);
            return Err(BackendError::NotFound);
        };
        let found = Found { entry, file: None };
        self.lookups.put(&key, generation, found.clone());
        Ok(found)
    }

    /// The entry at `p` and, for a file, its segments and parts, as [`Self::lookup`].
    async fn lookup_file(
        &self,
        p: &TreePath,
        generation: Generations,
    ) -> Result<(DirEntry, Arc<FileRecord>), BackendError> {
        let mut found = self.lookup(p, generation).await?;
        if let Some(file) = found.file {
            return Ok((found.entry, file));
        }
        let id = found
            .entry
            .file_id
            .ok_or_else(|| BackendError::Forbidden(format!("{p} is a directory")))?;
        let rec = Arc::new(
            self.store
                .meta
                .file(id)
                .await
                .map_err(meta_err)?
                .ok_or(BackendError::NotFound)?,
        );
        found.file = Some(rec.clone());
        self.lookups.put(&p.to_string(), generation, found.clone());
        Ok((found.entry, rec))
    }
}

fn parse(path: &str) -> Result<TreePath, BackendError> {
    TreePath::parse(path).map_err(|e| BackendError::BadPath(e.to_string()))
}

fn meta_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Other(format!("metadata: {e}"))
}

/// Maps a store error to the WebDAV face's kinds; `writing` turns a lack of healthy storage
/// into "insufficient storage".
pub(crate) fn store_err(e: StoreError, writing: bool) -> BackendError {
    match e {
        StoreError::Rejected(r) => match r {
            Rejection::NotFound(_) | Rejection::NotADirectory(_) => BackendError::NotFound,
            Rejection::AlreadyExists(_) => BackendError::Exists,
            Rejection::IsADirectory(_) | Rejection::NotEmpty(_) | Rejection::InvalidPath(_) => {
                BackendError::Forbidden(r.to_string())
            }
            Rejection::Retained { .. } => BackendError::Retained(r.to_string()),
            other => BackendError::Other(other.to_string()),
        },
        StoreError::Unavailable(why) if writing => BackendError::InsufficientStorage(why),
        StoreError::Unavailable(why) => BackendError::Unavailable(why),
        StoreError::Consensus(c) => BackendError::Unavailable(c.to_string()),
        other => BackendError::Other(other.to_string()),
    }
}

fn werr(e: StoreError) -> BackendError {
    store_err(e, false)
}

/// The WebDAV entry of a directory entry.
pub(crate) fn entry_of(d: DirEntry) -> Entry {
    Entry {
        name: d.name,
        is_dir: matches!(d.kind, EntryKind::Dir),
        size: d.size,
        mtime_ms: d.mtime_ms,
        etag: d.etag,
    }
}

fn root() -> Entry {
    Entry {
        name: String::new(),
        is_dir: true,
        size: 0,
        mtime_ms: 0,
        etag: None,
    }
}

impl Backend for StoreBackend {
    fn stat<'a>(&'a self, path: &'a str) -> BoxFut<'a, Entry> {
        Box::pin(async move {
            let p = parse(path)?;
            if p.is_root() {
                return Ok(root());
            }
            let generation = Generations::of(&self.store.meta);
            Ok(entry_of(self.lookup(&p, generation).await?.entry))
        })
    }

    fn list<'a>(&'a self, path: &'a str) -> BoxFut<'a, Vec<Entry>> {
        Box::pin(async move {
            let p = parse(path)?;
            match self.store.meta.list(&p).await.map_err(meta_err)? {
                Some(Ok(list)) => Ok(list.into_iter().map(entry_of).collect()),
                Some(Err(_)) => Err(BackendError::Forbidden(format!("{p} is a file"))),
                None => Err(BackendError::NotFound),
            }
        })
    }

    fn open<'a>(&'a self, path: &'a str) -> BoxFut<'a, Arc<dyn ReadFile>> {
        Box::pin(async move {
            let p = parse(path)?;
            let generation = Generations::of(&self.store.meta);
            let (d, rec) = self.lookup_file(&p, generation).await?;
            let parts = self.lookups.open_parts(rec.file_id, generation.all);
            let file: Arc<dyn ReadFile> = Arc::new(OpenFile {
                entry: entry_of(d),
                reader: FileReader::with_open_parts(self.store.clone(), rec, parts),
                seq: tokio::sync::Mutex::new(Sequential::default()),
            });
            Ok(file)
        })
    }

    fn create<'a>(&'a self, path: &'a str, opts: CreateOptions) -> BoxFut<'a, Box<dyn WriteFile>> {
        Box::pin(async move {
            let p = parse(path)?;
            if p.is_root() {
                return Err(BackendError::Forbidden("/ is a directory".into()));
            }
            // Refuse at once what the commit would refuse after the whole body. Through the
            // recent lookups: dav-server has just looked at the path itself.
            let generation = Generations::of(&self.store.meta);
            let found = |r: Result<Found, BackendError>| match r {
                Ok(f) => Ok(Some(f.entry)),
                Err(BackendError::NotFound) => Ok(None),
                Err(e) => Err(e),
            };
            match found(self.lookup(&p.parent(), generation).await)? {
                Some(d) if matches!(d.kind, EntryKind::Dir) => {}
                _ if p.parent().is_root() => {}
                _ => return Err(BackendError::NotFound),
            }
            if let Some(d) = found(self.lookup(&p, generation).await)? {
                if matches!(d.kind, EntryKind::Dir) {
                    return Err(BackendError::Forbidden(format!("{p} is a directory")));
                }
                if opts.create_new {
                    return Err(BackendError::Exists);
                }
                // A retained file: refused before the body, as the commit would after it.
                self.store.check_not_retained(&p).await.map_err(werr)?;
            }
            let client = match &opts.principal {
                Some(u) => format!("webdav:{u}"),
                None => "webdav".into(),
            };
            let req = IngestRequest {
                path: p,
                policy: None,
                // Write-once: a PUT over a file commits a whole new version in its place.
                conflict: if opts.create_new {
                    Conflict::Fail
                } else {
                    Conflict::Replace
                },
                source: SourceIdentity::Upload { client },
                expected_size: opts.expected_size,
                retention_checked: true,
            };
            let w: Box<dyn WriteFile> = Box::new(Upload::start(self.store.clone(), req));
            Ok(w)
        })
    }

    fn mkdir<'a>(&'a self, path: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let p = parse(path)?;
            if p.is_root() {
                return Err(BackendError::Exists);
            }
            self.store.mkdir(&p, false).await.map_err(werr)
        })
    }

    fn remove<'a>(&'a self, path: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let p = parse(path)?;
            self.store
                .propose(CommandV1::RemoveTree {
                    path: p.to_string(),
                    time_ms: now_ms(),
                })
                .await
                .map(|_| ())
                .map_err(werr)
        })
    }

    fn rename<'a>(&'a self, from: &'a str, to: &'a str, overwrite: bool) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let (f, t) = (parse(from)?, parse(to)?);
            self.store
                .propose(CommandV1::MoveTree {
                    from: f.to_string(),
                    to: t.to_string(),
                    replace: overwrite,
                    time_ms: now_ms(),
                })
                .await
                .map(|_| ())
                .map_err(werr)
        })
    }

    fn copy<'a>(
        &'a self,
        from: &'a str,
        to: &'a str,
        overwrite: bool,
        deep: bool,
    ) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let (f, t) = (parse(from)?, parse(to)?);
            self.store
                .propose(CommandV1::CopyTree {
                    from: f.to_string(),
                    to: t.to_string(),
                    replace: overwrite,
                    deep,
                    time_ms: now_ms(),
                })
                .await
                .map(|_| ())
                .map_err(werr)
        })
    }

    fn props<'a>(&'a self, path: &'a str) -> BoxFut<'a, Vec<DeadProp>> {
        Box::pin(async move {
            let p = parse(path)?;
            self.store
                .meta
                .props(&p)
                .await
                .map_err(meta_err)?
                .map(|props| props.into_iter().map(prop_from_log).collect())
                .ok_or(BackendError::NotFound)
        })
    }

    fn child_props<'a>(
        &'a self,
        dir: &'a str,
    ) -> BoxFut<'a, std::collections::HashMap<String, Vec<DeadProp>>> {
        Box::pin(async move {
            let p = parse(dir)?;
            self.store
                .meta
                .child_props(&p)
                .await
                .map_err(meta_err)?
                .map(|by_name| {
                    by_name
                        .into_iter()
                        .map(|(n, props)| (n, props.into_iter().map(prop_from_log).collect()))
                        .collect()
                })
                .ok_or(BackendError::NotFound)
        })
    }

    fn patch_props<'a>(&'a self, path: &'a str, patch: Vec<(bool, DeadProp)>) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let p = parse(path)?;
            self.store
                .propose(CommandV1::PatchProps {
                    path: p.to_string(),
                    patch: patch
                        .into_iter()
                        .map(|(set, prop)| (set, prop_to_log(prop)))
                        .collect(),
                })
                .await
                .map(|_| ())
                .map_err(werr)
        })
    }

    fn locks(&self) -> BoxFut<'_, Vec<LockInfo>> {
        Box::pin(async move {
            let locks = self.store.meta.locks(now_ms()).await.map_err(meta_err)?;
            Ok(locks.into_iter().map(lock_from_log).collect())
        })
    }

    fn lock(&self, lock: LockInfo) -> BoxFut<'_, Result<LockInfo, LockInfo>> {
        Box::pin(async move {
            let out = self
                .store
                .propose(CommandV1::Lock {
                    lock: lock_to_log(lock),
                    now_ms: now_ms(),
                })
                .await
                .map_err(werr)?;
            match out {
                Outcome::Lock(l) => Ok(Ok(lock_from_log(l))),
                Outcome::LockConflict(c) => Ok(Err(lock_from_log(c))),
                other => Err(BackendError::Other(format!(
                    "unexpected lock outcome {other:?}"
                ))),
            }
        })
    }

    fn unlock<'a>(&'a self, token: &'a str) -> BoxFut<'a, bool> {
        Box::pin(async move {
            match self
                .store
                .propose(CommandV1::Unlock {
                    token: token.to_owned(),
                })
                .await
            {
                Ok(_) => Ok(true),
                Err(StoreError::Rejected(Rejection::NotFound(_))) => Ok(false),
                Err(e) => Err(werr(e)),
            }
        })
    }

    fn refresh_lock<'a>(
        &'a self,
        token: &'a str,
        expires_ms: u64,
        timeout_secs: u64,
    ) -> BoxFut<'a, Option<LockInfo>> {
        Box::pin(async move {
            match self
                .store
                .propose(CommandV1::RefreshLock {
                    token: token.to_owned(),
                    expires_ms,
                    timeout_secs,
                    now_ms: now_ms(),
                })
                .await
            {
                Ok(Outcome::Lock(l)) => Ok(Some(lock_from_log(l))),
                Ok(_) | Err(StoreError::Rejected(_)) => Ok(None),
                Err(e) => Err(werr(e)),
            }
        })
    }

    fn delete_locks<'a>(&'a self, path: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let p = parse(path)?;
            self.store
                .propose(CommandV1::DeleteLocks {
                    path: p.to_string(),
                })
                .await
                .map(|_| ())
                .map_err(werr)
        })
    }

    fn lock_conflict(&self, locks: &[LockInfo], check: &LockCheck<'_>) -> Option<LockInfo> {
        webdav_records::lock_conflict(locks, check)
    }

    fn covering_locks(&self, locks: &[LockInfo], path: &str, now_ms: u64) -> Vec<LockInfo> {
        webdav_records::covering_locks(locks, path, now_ms)
    }
}

type BlockStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, ReadError>> + Send>>;

/// Where the last read ended and, once reads turn out sequential, a stream that keeps reading
/// ahead between them (a GET is many 1 MiB reads from dav-server).
#[derive(Default)]
struct Sequential {
    next: Option<u64>,
    stream: Option<BlockStream>,
    pending: Bytes,
}

struct OpenFile {
    entry: Entry,
    reader: Arc<FileReader>,
    seq: tokio::sync::Mutex<Sequential>,
}

fn read_err(e: ReadError) -> BackendError {
    match e {
        ReadError::Unavailable { .. } => BackendError::Unavailable(e.to_string()),
        other => BackendError::Other(other.to_string()),
    }
}

impl ReadFile for OpenFile {
    fn entry(&self) -> &Entry {
        &self.entry
    }

    fn read_at(&self, offset: u64, len: usize) -> BoxFut<'_, Bytes> {
        Box::pin(async move {
            let size = self.reader.file().size;
            if offset >= size {
                return Ok(Bytes::new());
            }
            // The offset comes from a client's Range: a sum that would wrap is clamped, never a
            // panic.
            let end = offset.saturating_add(len as u64).min(size);
            let mut seq = self.seq.lock().await;
            if seq.next != Some(offset) {
                // A first read or a seek: exactly the bytes asked for (a Range request reads no
                // more than its range).
                seq.stream = None;
                seq.pending = Bytes::new();
                let v = self
                    .reader
                    .clone()
                    .read_range(offset, end)
                    .await
                    .map_err(read_err)?;
                seq.next = Some(end);
                return Ok(v);
            }
            // A sequential reader: stream from here to the end with read-ahead.
            if seq.stream.is_none() {
                seq.stream = Some(Box::pin(self.reader.clone().stream(offset, size)));
            }
            // Hand out what the current block holds, up to `len`: a slice of it, not a copy
            // (dav-server asks again for the rest; a copy here cost a tenth of a GET's time).
            if seq.pending.is_empty() {
                let next = match seq.stream.as_mut() {
                    Some(s) => s.next().await,
                    None => None,
                };
                match next {
                    Some(Ok(b)) => seq.pending = b,
                    Some(Err(e)) => {
                        *seq = Sequential::default();
                        return Err(read_err(e));
                    }
                    None => {}
                }
            }
            let take = ((end - offset) as usize).min(seq.pending.len());
            let out = seq.pending.split_to(take);
            seq.next = Some(offset + out.len() as u64);
            Ok(out)
        })
    }
}
