//! The FUSE filesystem: the kernel's requests answered from the [`Tree`] and the node.
//!
//! fuser calls these on its session thread; anything that asks the node runs as a task on the
//! mount's tokio runtime and replies when done, so a slow listing never holds up a read. Reads
//! of one open file go, in the order the kernel sent them, to that file's own task (see
//! [`super::reader`]).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};
use tokio::sync::mpsc;
use wormfs_meta::EntryKind;

use super::reader::FileReader;
use super::remote::{Remote, RemoteError};
use super::tree::{Listing, Node, Tree};

/// What the filesystem needs, shared with the change follower.
pub struct Shared {
    /// The inodes and cached listings.
    pub tree: Tree,
    /// The node.
    pub remote: Remote,
    /// How long the kernel may keep names and attributes (changes invalidate them sooner).
    pub ttl: Duration,
    /// The owner shown for every entry.
    pub uid: u32,
    /// The group shown for every entry.
    pub gid: u32,
}

/// A read the kernel asked of an open file.
struct ReadRq {
    offset: u64,
    size: u32,
    reply: ReplyData,
}

/// The FUSE filesystem.
pub struct WormFs {
    shared: Arc<Shared>,
    rt: tokio::runtime::Handle,
    next_fh: AtomicU64,
    files: Mutex<HashMap<u64, mpsc::UnboundedSender<ReadRq>>>,
    dirs: Arc<Mutex<HashMap<u64, Listing>>>,
}

fn errno(e: &RemoteError) -> Errno {
    match e {
        RemoteError::NotFound => Errno::ENOENT,
        RemoteError::Stale => Errno::ESTALE,
        RemoteError::Refused(_) => Errno::EACCES,
        RemoteError::Unavailable(_) => Errno::EIO,
    }
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl Shared {
    /// The kernel's attributes of a node.
    pub fn attr(&self, ino: u64, n: &Node) -> FileAttr {
        let t = time(n.mtime_ms);
        let dir = n.kind == EntryKind::Dir;
        FileAttr {
            ino: INodeNo(ino),
            size: n.size,
            blocks: n.size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if dir { 0o555 } else { 0o444 },
            nlink: if dir { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            // Large reads: `stat` tells readers (ffmpeg, cp) to ask for 1 MiB at a time.
            blksize: 1 << 20,
            flags: 0,
        }
    }

    /// The listing of the directory `ino`: cached while the change feed is followed, else
    /// asked of the node.
    pub async fn listing(&self, ino: u64, fresh: bool) -> Result<Listing, Errno> {
        let node = self.tree.node(ino).ok_or(Errno::ENOENT)?;
        if node.kind != EntryKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if !fresh {
            if let Some(l) = self.tree.cached_listing(&node.path) {
                return Ok(l);
            }
        }
        // A change that arrives while the listing is on its way may postdate it: ask again
        // (the last answer is still given, not cached, if changes keep coming).
        let mut last = None;
        for _ in 0..3 {
            let generation = self.tree.generation();
            let entries = self.remote.list(&node.path).await.map_err(|e| {
                if let RemoteError::Unavailable(why) = &e {
                    tracing::warn!(path = %node.path, "listing failed: {why}");
                }
                errno(&e)
            })?;
            let (listing, current) = self
                .tree
                .store_listing(ino, entries, generation)
                .ok_or(Errno::ENOENT)?;
            if current {
                return Ok(listing);
            }
            last = Some(listing);
        }
        last.ok_or(Errno::EIO)
    }
}

impl WormFs {
    /// The filesystem over `shared`, running its requests on `rt`.
    pub fn new(shared: Arc<Shared>, rt: tokio::runtime::Handle) -> Self {
        WormFs {
            shared,
            rt,
            next_fh: AtomicU64::new(1),
            files: Mutex::new(HashMap::new()),
            dirs: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }
}

impl Filesystem for WormFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Background requests (read-ahead) in flight at once.
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let shared = self.shared.clone();
        let name = name.to_string_lossy().into_owned();
        self.rt.spawn(async move {
            let listing = match shared.listing(parent.0, false).await {
                Ok(l) => l,
                Err(e) => return reply.error(e),
            };
            let found = listing
                .binary_search_by(|c| c.name.as_str().cmp(&name))
                .ok()
                .or_else(|| listing.iter().position(|c| c.name == name));
            let Some(child) = found.map(|i| &listing[i]) else {
                return reply.error(Errno::ENOENT);
            };
            match shared.tree.node(child.ino) {
                Some(n) => {
                    let attr = shared.attr(child.ino, &n);
                    reply.entry(&shared.ttl, &attr, Generation(0));
                }
                None => reply.error(Errno::ENOENT),
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.shared.tree.node(ino.0) {
            Some(n) => reply.attr(&self.shared.ttl, &self.shared.attr(ino.0, &n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let Some(n) = self.shared.tree.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if n.kind == EntryKind::Dir {
            return reply.error(Errno::EISDIR);
        }
        let Some(etag) = n.etag.clone() else {
            return reply.error(Errno::EIO);
        };
        let fh = self.fh();
        let (tx, mut rx) = mpsc::unbounded_channel::<ReadRq>();
        let mut reader = FileReader::new(self.shared.remote.clone(), n.path.clone(), etag, n.size);
        let path = n.path;
        self.rt.spawn(tracing::Instrument::instrument(
            async move {
                while let Some(rq) = rx.recv().await {
                    match reader.read(rq.offset, rq.size).await {
                        Ok(bytes) => rq.reply.data(&bytes),
                        Err(e) => {
                            if let RemoteError::Unavailable(why) = &e {
                                tracing::warn!("read at {} failed: {why}", rq.offset);
                            }
                            rq.reply.error(errno(&e));
                        }
                    }
                }
            },
            tracing::info_span!("mount_read", %path),
        ));
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, tx);
        // Committed files never change: the page cache stays valid across opens. Never
        // FOPEN_DIRECT_IO (it breaks mmap).
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        match files.get(&fh.0) {
            Some(tx) => {
                if let Err(mpsc::error::SendError(rq)) = tx.send(ReadRq {
                    offset,
                    size,
                    reply,
                }) {
                    rq.reply.error(Errno::EIO);
                }
            }
            None => reply.error(Errno::EBADF),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let shared = self.shared.clone();
        let fh = self.fh();
        // Always asked of the node: a listing answers for the cluster now (an unreachable
        // node is EIO at once, never a cached or empty folder), and refreshes the names the
        // lookups that follow (ls -l, find) find in the cache.
        let dirs = self.dirs.clone();
        self.rt.spawn(async move {
            match shared.listing(ino.0, true).await {
                Ok(listing) => {
                    dirs.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(fh, listing);
                    reply.opened(FileHandle(fh), FopenFlags::empty());
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(listing) = self
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned()
        else {
            return reply.error(Errno::EBADF);
        };
        let parent = self.shared.tree.node(ino.0).map_or(ino.0, |n| n.parent);
        let dots = [(ino.0, "."), (parent, "..")];
        let mut i = offset as usize;
        while i < listing.len() + 2 {
            let full = if i < 2 {
                let (n, name) = dots[i];
                reply.add(INodeNo(n), (i + 1) as u64, FileType::Directory, name)
            } else {
                let c = &listing[i - 2];
                let kind = if c.kind == EntryKind::Dir {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                };
                reply.add(INodeNo(c.ino), (i + 1) as u64, kind, &c.name)
            };
            if full {
                break;
            }
            i += 1;
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let shared = self.shared.clone();
        self.rt.spawn(async move {
            match shared.remote.space().await {
                Ok((total, free)) => {
                    const BS: u64 = 4096;
                    let files = shared.tree.len() as u64;
                    reply.statfs(
                        total / BS,
                        free / BS,
                        free / BS,
                        files,
                        0,
                        BS as u32,
                        255,
                        BS as u32,
                    )
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }
}
