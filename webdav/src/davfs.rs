//! The dav-server filesystem over a [`Backend`].

use std::io::SeekFrom;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, FsError, FsFuture, FsResult, FsStream,
    OpenOptions, ReadDirMeta,
};
use futures::FutureExt;

use crate::backend::{Backend, BackendError, Entry, ReadFile};

/// dav-server's view of the tree.
#[derive(Clone)]
pub struct WormDavFs {
    backend: Arc<dyn Backend>,
}

impl WormDavFs {
    /// A filesystem over `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Box<Self> {
        Box::new(Self { backend })
    }
}

fn fs_err(e: BackendError) -> FsError {
    match e {
        BackendError::NotFound => FsError::NotFound,
        BackendError::BadPath(_) | BackendError::Forbidden(_) => FsError::Forbidden,
        BackendError::Unavailable(why) | BackendError::Other(why) => {
            tracing::warn!("webdav backend error: {why}");
            FsError::GeneralFailure
        }
    }
}

/// The path as the backend takes it: percent-decoded, UTF-8, without a trailing slash.
fn tree_path(path: &DavPath) -> FsResult<String> {
    let p = path.as_pathbuf();
    let s = p.to_str().ok_or(FsError::Forbidden)?;
    let s = s.trim_end_matches('/');
    Ok(if s.is_empty() {
        "/".to_owned()
    } else {
        s.to_owned()
    })
}

#[derive(Clone, Debug)]
struct Meta(Entry);

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.0.size
    }
    fn modified(&self) -> FsResult<SystemTime> {
        Ok(UNIX_EPOCH + Duration::from_millis(self.0.mtime_ms))
    }
    fn is_dir(&self) -> bool {
        self.0.is_dir
    }
    fn etag(&self) -> Option<String> {
        match &self.0.etag {
            Some(e) if !self.0.is_dir => Some(e.clone()),
            _ => Some(format!("d{:x}", self.0.mtime_ms)),
        }
    }
}

struct DirEnt(Entry);

impl DavDirEntry for DirEnt {
    fn name(&self) -> Vec<u8> {
        self.0.name.as_bytes().to_vec()
    }
    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m: Box<dyn DavMetaData> = Box::new(Meta(self.0.clone()));
        futures::future::ready(Ok(m)).boxed()
    }
}

/// A file open for reading: the position is only recorded by `seek`, and each read asks the
/// backend for exactly the bytes wanted.
struct ReadHandle {
    file: Arc<dyn ReadFile>,
    pos: u64,
}

impl std::fmt::Debug for ReadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHandle")
            .field("entry", self.file.entry())
            .field("pos", &self.pos)
            .finish()
    }
}

impl DavFile for ReadHandle {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m: Box<dyn DavMetaData> = Box::new(Meta(self.file.entry().clone()));
        futures::future::ready(Ok(m)).boxed()
    }
    fn write_buf(&mut self, _: Box<dyn bytes::Buf + Send>) -> FsFuture<'_, ()> {
        futures::future::ready(Err(FsError::Forbidden)).boxed()
    }
    fn write_bytes(&mut self, _: Bytes) -> FsFuture<'_, ()> {
        futures::future::ready(Err(FsError::Forbidden)).boxed()
    }
    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        async move {
            let size = self.file.entry().size;
            if self.pos >= size || count == 0 {
                return Ok(Bytes::new());
            }
            let want = count.min((size - self.pos) as usize);
            let got = self.file.read_at(self.pos, want).await.map_err(fs_err)?;
            // dav-server pads a short read with zeros and answers 200: refuse instead.
            if got.is_empty() {
                tracing::warn!(
                    pos = self.pos,
                    "webdav read returned nothing before the end of the file"
                );
                return Err(FsError::GeneralFailure);
            }
            self.pos += got.len() as u64;
            Ok(got)
        }
        .boxed()
    }
    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let size = self.file.entry().size as i128;
        let new = match pos {
            SeekFrom::Start(p) => i128::from(p),
            SeekFrom::End(d) => size + i128::from(d),
            SeekFrom::Current(d) => i128::from(self.pos) + i128::from(d),
        };
        let r = if new < 0 {
            Err(FsError::GeneralFailure)
        } else {
            self.pos = new as u64;
            Ok(self.pos)
        };
        futures::future::ready(r).boxed()
    }
    fn flush(&mut self) -> FsFuture<'_, ()> {
        futures::future::ready(Ok(())).boxed()
    }
}

impl DavFileSystem for WormDavFs {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            if options.write || options.append || options.create || options.truncate {
                // Writes arrive with the ingest-backed PUT; until then this face is read-only.
                return Err(FsError::Forbidden);
            }
            let p = tree_path(path)?;
            let file = self.backend.open(&p).await.map_err(fs_err)?;
            let f: Box<dyn DavFile> = Box::new(ReadHandle { file, pos: 0 });
            Ok(f)
        }
        .boxed()
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _meta: ReadDirMeta,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let p = tree_path(path)?;
            let entries = self.backend.list(&p).await.map_err(fs_err)?;
            let s: FsStream<Box<dyn DavDirEntry>> = Box::pin(futures::stream::iter(
                entries
                    .into_iter()
                    .map(|e| Ok(Box::new(DirEnt(e)) as Box<dyn DavDirEntry>)),
            ));
            Ok(s)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let p = tree_path(path)?;
            let e = self.backend.stat(&p).await.map_err(fs_err)?;
            Ok(Box::new(Meta(e)) as Box<dyn DavMetaData>)
        }
        .boxed()
    }
}
