//! The node's tree as the WebDAV face's [`Backend`]: lookups and listings from the metadata,
//! reads through [`FileReader`] (verified blocks, degraded decoding, never zero-filled bytes).

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use wormfs_webdav::{Backend, BackendError, BoxFut, Entry, ReadFile};

use crate::meta::{DirEntry, EntryKind};
use crate::read::{FileReader, ReadError};
use crate::store::Store;
use crate::tree_path::TreePath;

/// The store seen through WebDAV.
pub struct StoreBackend {
    store: Arc<Store>,
}

impl StoreBackend {
    /// A backend over `store`.
    pub fn new(store: Arc<Store>) -> Arc<Self> {
        Arc::new(Self { store })
    }
}

fn parse(path: &str) -> Result<TreePath, BackendError> {
    TreePath::parse(path).map_err(|e| BackendError::BadPath(e.to_string()))
}

fn meta_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Other(format!("metadata: {e}"))
}

fn entry(d: DirEntry) -> Entry {
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
            match self.store.meta.lookup(&p).await.map_err(meta_err)? {
                Some(d) => Ok(entry(d)),
                None => Err(BackendError::NotFound),
            }
        })
    }

    fn list<'a>(&'a self, path: &'a str) -> BoxFut<'a, Vec<Entry>> {
        Box::pin(async move {
            let p = parse(path)?;
            match self.store.meta.list(&p).await.map_err(meta_err)? {
                Some(Ok(list)) => Ok(list.into_iter().map(entry).collect()),
                Some(Err(_)) => Err(BackendError::Forbidden(format!("{p} is a file"))),
                None => Err(BackendError::NotFound),
            }
        })
    }

    fn open<'a>(&'a self, path: &'a str) -> BoxFut<'a, Arc<dyn ReadFile>> {
        Box::pin(async move {
            let p = parse(path)?;
            let d = self
                .store
                .meta
                .lookup(&p)
                .await
                .map_err(meta_err)?
                .ok_or(BackendError::NotFound)?;
            let id = d
                .file_id
                .ok_or_else(|| BackendError::Forbidden(format!("{p} is a directory")))?;
            let rec = self
                .store
                .meta
                .file(id)
                .await
                .map_err(meta_err)?
                .ok_or(BackendError::NotFound)?;
            let file: Arc<dyn ReadFile> = Arc::new(OpenFile {
                entry: entry(d),
                reader: FileReader::new(self.store.clone(), rec),
                seq: tokio::sync::Mutex::new(Sequential::default()),
            });
            Ok(file)
        })
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
            let end = (offset + len as u64).min(size);
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
                return Ok(Bytes::from(v));
            }
            // A sequential reader: stream from here to the end with read-ahead.
            if seq.stream.is_none() {
                seq.stream = Some(Box::pin(self.reader.clone().stream(offset, size)));
            }
            let want = (end - offset) as usize;
            let mut out = bytes::BytesMut::with_capacity(want);
            while out.len() < want {
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
                        None => break,
                    }
                }
                let take = (want - out.len()).min(seq.pending.len());
                out.extend_from_slice(&seq.pending.split_to(take));
            }
            seq.next = Some(offset + out.len() as u64);
            Ok(out.freeze())
        })
    }
}
