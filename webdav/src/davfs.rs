//! The dav-server filesystem over a [`Backend`]: reads, whole-file writes through the backend's
//! ingest, namespace changes and dead properties.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsError, FsFuture, FsResult,
    FsStream, OpenOptions, ReadDirMeta,
};
use futures::FutureExt;

use http::StatusCode;
use unicode_normalization::UnicodeNormalization;

use crate::backend::{
    Backend, BackendError, BoxFut, CreateOptions, DeadProp, Entry, ReadFile, WriteFile,
};
use crate::tree_ops::TreeOp;

/// dav-server's view of the tree.
#[derive(Clone)]
pub struct WormDavFs {
    backend: Arc<dyn Backend>,
    discard_mac_metadata: bool,
    /// Caps on dead properties.
    limits: crate::Limits,
    /// For a read-only request (PROPFIND): the dead properties of each listed directory's
    /// entries, read in one call when the directory is listed.
    listed_props: Option<Arc<ListedProps>>,
    /// For a DELETE, COPY or MOVE: the one operation the request does, and whether it is done.
    tree: Option<Arc<TreeState>>,
}

/// A tree operation under way in one request (see [`crate::tree_ops`]).
struct TreeState {
    op: TreeOp,
    done: std::sync::atomic::AtomicBool,
}

impl TreeState {
    fn done(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::Acquire)
    }
    fn set_done(&self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
    }
    /// Whether `p` is the destination or below it: what an overwrite replaces, or what a copy
    /// already made.
    fn in_destination(&self, p: &str) -> bool {
        self.op
            .destination()
            .is_some_and(|to| crate::locks::is_ancestor_or_self(to, p))
    }
    /// Whether dav-server's walk below `p` is folded into the one call: what a DELETE removes,
    /// what an overwrite replaces, or anything once a COPY is done.
    fn folded(&self, p: &str) -> bool {
        match &self.op {
            TreeOp::Delete { path } => crate::locks::is_ancestor_or_self(path, p),
            _ => self.in_destination(p) || self.done(),
        }
    }
}

/// Dead properties by directory, then by entry name.
type ListedProps = std::sync::Mutex<HashMap<String, Arc<HashMap<String, Vec<DeadProp>>>>>;

impl WormDavFs {
    /// A filesystem over `backend`; with `discard_mac_metadata`, new macOS metadata files
    /// (`.DS_Store`, `._*`) are accepted and thrown away instead of stored.
    pub fn new(
        backend: Arc<dyn Backend>,
        discard_mac_metadata: bool,
        limits: crate::Limits,
    ) -> Box<Self> {
        Box::new(Self {
            backend,
            discard_mac_metadata,
            limits,
            listed_props: None,
            tree: None,
        })
    }

    /// A filesystem for one DELETE, COPY or MOVE: dav-server's walk over the tree is folded
    /// into the one backend call that does `op` whole (a recursive remove, a rename or copy
    /// that replaces the destination in the same change); the deletions it makes of an
    /// overwritten destination are part of that call, not separate steps.
    pub fn for_tree_op(backend: Arc<dyn Backend>, op: TreeOp) -> Box<Self> {
        Box::new(Self {
            backend,
            discard_mac_metadata: false,
            limits: crate::Limits::default(),
            listed_props: None,
            tree: Some(Arc::new(TreeState {
                op,
                done: Default::default(),
            })),
        })
    }

    /// A filesystem for one read-only request (PROPFIND): listing a directory also reads its
    /// entries' dead properties in one call, and their lookups are answered from that.
    pub fn for_one_read(backend: Arc<dyn Backend>) -> Box<Self> {
        Box::new(Self {
            backend,
            discard_mac_metadata: false,
            limits: crate::Limits::default(),
            listed_props: Some(Arc::default()),
            tree: None,
        })
    }

    /// A COPY's one backend call: the file or the whole subtree, replacing the destination when
    /// asked; the walk's later steps are then already done.
    async fn copy_whole(&self, t: &TreeState) -> FsResult<()> {
        if let TreeOp::Copy {
            from,
            to,
            overwrite,
            deep,
        } = &t.op
        {
            self.backend
                .copy(from, to, *overwrite, *deep)
                .await
                .map_err(fs_err)?;
            t.set_done();
        }
        Ok(())
    }

    /// The dead properties of `path` as read with its directory's listing, if it was listed.
    fn listed_props_of(&self, path: &str) -> Option<Vec<DeadProp>> {
        let listed = self.listed_props.as_ref()?;
        let (dir, name) = path.rsplit_once('/')?;
        let dir = if dir.is_empty() { "/" } else { dir };
        let map = listed.lock().ok()?.get(dir)?.clone();
        Some(map.get(name).cloned().unwrap_or_default())
    }

    async fn props_of(&self, path: &str) -> FsResult<Vec<DeadProp>> {
        match self.listed_props_of(path) {
            Some(p) => Ok(p),
            None => self.backend.props(path).await.map_err(fs_err),
        }
    }
}

/// Whether `name` is a file Finder writes beside the user's files: `.DS_Store` (folder view
/// settings) or `._name` (AppleDouble: extended attributes and resource fork of `name`).
fn is_mac_metadata(name: &str) -> bool {
    name == ".DS_Store" || (name.starts_with("._") && name.len() > 2)
}

/// A write that is answered as if stored and kept nowhere (macOS metadata, when configured).
struct Discarded {
    written: u64,
}

impl WriteFile for Discarded {
    fn write(&mut self, data: Bytes) -> BoxFut<'_, ()> {
        self.written += data.len() as u64;
        Box::pin(async { Ok(()) })
    }
    fn commit(&mut self) -> BoxFut<'_, Entry> {
        let size = self.written;
        Box::pin(async move {
            Ok(Entry {
                name: String::new(),
                is_dir: false,
                size,
                mtime_ms: crate::locks::now_ms(),
                etag: None,
            })
        })
    }
    fn written(&self) -> u64 {
        self.written
    }
}

fn fs_err(e: BackendError) -> FsError {
    match e {
        BackendError::NotFound => FsError::NotFound,
        BackendError::Exists => FsError::Exists,
        BackendError::BadPath(_) | BackendError::Forbidden(_) => FsError::Forbidden,
        BackendError::Retained(why) => {
            crate::note_refusal(&why);
            FsError::Forbidden
        }
        BackendError::InsufficientStorage(why) => {
            tracing::warn!("webdav: insufficient storage: {why}");
            FsError::InsufficientStorage
        }
        BackendError::Unavailable(why) | BackendError::Other(why) => {
            tracing::warn!("webdav backend error: {why}");
            FsError::GeneralFailure
        }
    }
}

/// The path as the backend takes it: percent-decoded, UTF-8 in NFC, without a trailing slash.
pub(crate) fn tree_path_of(path: &DavPath) -> FsResult<String> {
    let p = path.as_pathbuf();
    let s = p.to_str().ok_or(FsError::Forbidden)?;
    let s = s.trim_end_matches('/');
    Ok(if s.is_empty() {
        "/".to_owned()
    } else {
        s.nfc().collect()
    })
}

use tree_path_of as tree_path;

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

/// A new file being uploaded: bytes stream into the backend's ingest, and `flush` (which
/// dav-server calls at the end of the body) commits only if the body had the announced length.
/// Dropped without a commit (the client went away), the upload is discarded.
struct WriteHandle {
    file: Box<dyn WriteFile>,
    expected: Option<u64>,
    name: String,
    committed: Option<Entry>,
}

impl std::fmt::Debug for WriteHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHandle")
            .field("name", &self.name)
            .field("written", &self.file.written())
            .field("expected", &self.expected)
            .finish()
    }
}

impl DavFile for WriteHandle {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let e = self.committed.clone().unwrap_or_else(|| Entry {
            name: self.name.clone(),
            is_dir: false,
            size: self.file.written(),
            mtime_ms: 0,
            etag: None,
        });
        futures::future::ready(Ok(Box::new(Meta(e)) as Box<dyn DavMetaData>)).boxed()
    }
    fn write_buf(&mut self, mut buf: Box<dyn bytes::Buf + Send>) -> FsFuture<'_, ()> {
        let b = buf.copy_to_bytes(buf.remaining());
        self.write_bytes(b)
    }
    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        async move {
            if self.committed.is_some() {
                return Err(FsError::GeneralFailure);
            }
            if let Some(want) = self.expected {
                if self.file.written() + buf.len() as u64 > want {
                    // More than announced: never committed (dav-server then answers 400).
                    return Err(FsError::TooLarge);
                }
            }
            self.file.write(buf).await.map_err(fs_err)
        }
        .boxed()
    }
    fn read_bytes(&mut self, _: usize) -> FsFuture<'_, Bytes> {
        futures::future::ready(Err(FsError::Forbidden)).boxed()
    }
    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        // Write-once: only the start of a new file is a valid position.
        let r = match pos {
            SeekFrom::Start(0) if self.file.written() == 0 => Ok(0),
            _ => Err(FsError::Forbidden),
        };
        futures::future::ready(r).boxed()
    }
    fn flush(&mut self) -> FsFuture<'_, ()> {
        async move {
            if self.committed.is_some() {
                return Ok(());
            }
            if let Some(want) = self.expected {
                if self.file.written() != want {
                    // A short body: dav-server answers 400 after this; the upload is dropped
                    // with the handle and nothing becomes visible.
                    tracing::info!(
                        written = self.file.written(),
                        announced = want,
                        "webdav upload ended early; discarded"
                    );
                    return Ok(());
                }
            }
            let e = self.file.commit().await.map_err(fs_err)?;
            self.committed = Some(e);
            Ok(())
        }
        .boxed()
    }
}

/// dav-server asked for a change the request's tree operation does not explain: refused, and
/// logged, because doing it would be a step outside the one committed change.
fn unexpected(op: &TreeOp, what: &str, path: &str) -> FsError {
    tracing::error!(
        ?op,
        "webdav: unexpected {what} of {path} during a tree operation; refused"
    );
    FsError::Forbidden
}

/// A namespace change outside DELETE, COPY and MOVE (which always run as a tree operation).
fn unexpected_outside(what: &str, path: &str) -> FsError {
    tracing::error!("webdav: {what} of {path} outside a tree operation; refused");
    FsError::Forbidden
}

fn prop_key(p: &DavProp) -> DeadProp {
    DeadProp {
        namespace: p.namespace.clone().unwrap_or_default(),
        name: p.name.clone(),
        prefix: p.prefix.clone(),
        xml: p.xml.clone(),
    }
}

fn dav_prop(p: DeadProp, with_content: bool) -> DavProp {
    DavProp {
        name: p.name,
        prefix: p.prefix,
        namespace: (!p.namespace.is_empty()).then_some(p.namespace),
        xml: if with_content { p.xml } else { None },
    }
}

impl DavFileSystem for WormDavFs {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            let p = tree_path(path)?;
            if options.append {
                // Write-once: nothing is ever added to an existing file in place.
                return Err(FsError::Forbidden);
            }
            if options.write {
                let opts = CreateOptions {
                    expected_size: options.size,
                    create_new: options.create_new,
                    principal: None,
                };
                if !options.create {
                    // `If-Match: *`: only an existing file may be replaced.
                    let e = self.backend.stat(&p).await.map_err(fs_err)?;
                    if e.is_dir {
                        return Err(FsError::Forbidden);
                    }
                }
                let name = p.rsplit('/').next().unwrap_or_default().to_owned();
                let mut file: Box<dyn WriteFile> =
                    if self.discard_mac_metadata && is_mac_metadata(&name) {
                        tracing::debug!("discarding macOS metadata {p}");
                        Box::new(Discarded { written: 0 })
                    } else {
                        self.backend.create(&p, opts).await.map_err(fs_err)?
                    };
                if !options.truncate {
                    // Only LOCK on an unmapped URL opens without truncating (a partial PUT is
                    // refused before it gets here): it creates an empty file at once.
                    let e = file.commit().await.map_err(fs_err)?;
                    let h: Box<dyn DavFile> = Box::new(WriteHandle {
                        file,
                        expected: Some(0),
                        name,
                        committed: Some(e),
                    });
                    return Ok(h);
                }
                let h: Box<dyn DavFile> = Box::new(WriteHandle {
                    file,
                    expected: options.size,
                    name,
                    committed: None,
                });
                return Ok(h);
            }
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
            if let Some(t) = &self.tree {
                // An overwritten destination is replaced whole by the final call, and a copied
                // tree is copied whole by its first: dav-server need not walk either.
                if t.folded(&p) {
                    let none: FsStream<Box<dyn DavDirEntry>> = Box::pin(futures::stream::empty());
                    return Ok(none);
                }
            }
            let entries = self.backend.list(&p).await.map_err(fs_err)?;
            if let Some(listed) = &self.listed_props {
                let props = self.backend.child_props(&p).await.map_err(fs_err)?;
                if let Ok(mut l) = listed.lock() {
                    l.insert(p.clone(), Arc::new(props));
                }
            }
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

    fn create_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let p = tree_path(path)?;
            let Some(t) = &self.tree else {
                return self.backend.mkdir(&p).await.map_err(fs_err);
            };
            match &t.op {
                // COPY of a collection: the whole subtree in one change, at the first step.
                TreeOp::Copy { to, .. } if *to == p && !t.done() => self.copy_whole(t).await,
                TreeOp::Copy { .. } if t.done() && t.in_destination(&p) => Ok(()),
                _ => Err(unexpected(&t.op, "create_dir", &p)),
            }
        }
        .boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        self.remove_file(path)
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let p = tree_path(path)?;
            let Some(t) = &self.tree else {
                return Err(unexpected_outside("remove", &p));
            };
            match &t.op {
                TreeOp::Delete { path } if *path == p && p != "/" => {
                    self.backend.remove(&p).await.map_err(fs_err)
                }
                // The overwrite of a COPY or MOVE destination: done by the final call, in the
                // same change as the copy or rename (so a failure leaves it as it was).
                TreeOp::Move { .. } | TreeOp::Copy { .. } if t.in_destination(&p) => Ok(()),
                _ => Err(unexpected(&t.op, "remove", &p)),
            }
        }
        .boxed()
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let (f, d) = (tree_path(from)?, tree_path(to)?);
            let Some(t) = &self.tree else {
                return Err(unexpected_outside("rename", &f));
            };
            match &t.op {
                TreeOp::Move {
                    from,
                    to,
                    overwrite,
                } if *from == f && *to == d => self
                    .backend
                    .rename(from, to, *overwrite)
                    .await
                    .map_err(fs_err),
                _ => Err(unexpected(&t.op, "rename", &f)),
            }
        }
        .boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let (f, d) = (tree_path(from)?, tree_path(to)?);
            let Some(t) = &self.tree else {
                return Err(unexpected_outside("copy", &f));
            };
            match &t.op {
                TreeOp::Copy { from, to, .. } if *from == f && *to == d && !t.done() => {
                    self.copy_whole(t).await
                }
                TreeOp::Copy { .. } if t.done() && t.in_destination(&d) => Ok(()),
                _ => Err(unexpected(&t.op, "copy", &f)),
            }
        }
        .boxed()
    }

    fn have_props<'a>(
        &'a self,
        path: &'a DavPath,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        // Known to have none (read with its directory's listing): skip the lookups.
        let none = tree_path(path)
            .ok()
            .and_then(|p| self.listed_props_of(&p))
            .is_some_and(|p| p.is_empty());
        Box::pin(futures::future::ready(!none))
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
    ) -> FsFuture<'a, Vec<(StatusCode, DavProp)>> {
        async move {
            let p = tree_path(path)?;
            let ops: Vec<(bool, DeadProp)> = patch
                .iter()
                .map(|(set, prop)| (*set, prop_key(prop)))
                .collect();
            let current = self.backend.props(&p).await.map_err(fs_err)?;
            let cap = self.limits;
            if let Err(why) = crate::limits::check_props(
                &current,
                &ops,
                cap.dead_props_per_resource,
                cap.dead_prop_bytes_per_resource,
            ) {
                // All or nothing: the sets are refused for lack of room, the rest with them.
                tracing::warn!("PROPPATCH of {p} refused: {why}");
                return Ok(patch
                    .into_iter()
                    .map(|(set, prop)| {
                        let s = if set {
                            StatusCode::INSUFFICIENT_STORAGE
                        } else {
                            StatusCode::FAILED_DEPENDENCY
                        };
                        (s, DavProp { xml: None, ..prop })
                    })
                    .collect());
            }
            self.backend.patch_props(&p, ops).await.map_err(fs_err)?;
            Ok(patch
                .into_iter()
                .map(|(_, prop)| (StatusCode::OK, DavProp { xml: None, ..prop }))
                .collect())
        }
        .boxed()
    }

    fn get_props<'a>(&'a self, path: &'a DavPath, do_content: bool) -> FsFuture<'a, Vec<DavProp>> {
        async move {
            let p = tree_path(path)?;
            let props = self.props_of(&p).await?;
            Ok(props.into_iter().map(|d| dav_prop(d, do_content)).collect())
        }
        .boxed()
    }

    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp) -> FsFuture<'a, Vec<u8>> {
        async move {
            let p = tree_path(path)?;
            let want = prop_key(&prop);
            let props = self.props_of(&p).await?;
            props
                .into_iter()
                .find(|d| d.namespace == want.namespace && d.name == want.name)
                .and_then(|d| d.xml)
                .ok_or(FsError::NotFound)
        }
        .boxed()
    }
}
