//! Writing and reading parts.
//!
//! [`PartWriter`] and [`PartReader`] are the seams for the cluster: a part on another machine's
//! disk is written and read through other implementations of the same two traits (the data
//! plane's), so ingest, reads, repair and scrub do not care where a part lives. A local part is
//! written to a temporary name (data first, header last), fsynced, renamed and its directory
//! fsynced; a failed or aborted write leaves nothing behind.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;

use crate::crash_point::crash_point;
use crate::disk::LocalDisk;
use crate::part_format::{FormatError, PartHeader, HEADER_PROBE_LEN};

/// Writes one part: blocks in, then `finish` (durable) or `abort` (nothing left).
pub trait PartWriter: Send {
    /// Appends part data (whole blocks; a copy's last block may be short).
    fn write(&mut self, data: &[u8]) -> anyhow::Result<()>;
    /// Writes the header, makes the part durable and gives it its final name.
    fn finish(self: Box<Self>, header: PartHeader) -> anyhow::Result<()>;
    /// Discards the part.
    fn abort(self: Box<Self>);
    /// The filesystem whose group sync makes this part durable, if it is a local part small
    /// enough for one ([`crate::sync_group`]): parts with the same key can be finished
    /// together by [`finish_together`], with one sync for all of them. `None` (the default,
    /// and a remote part's answer) finishes the part on its own.
    fn sync_group_key(&self) -> Option<u64> {
        None
    }
    /// [`Self::finish`] up to the group sync: the part is renamed and waits for its
    /// filesystem's sync, which the caller runs ([`finish_together`]). `None` when the part
    /// is durable already. The default finishes the part.
    fn finish_before_sync(
        self: Box<Self>,
        header: PartHeader,
    ) -> anyhow::Result<Option<UnsyncedPart>> {
        self.finish(header).map(|()| None)
    }
}

/// A part renamed into place whose durability waits for its filesystem's group sync. Dropped
/// without [`UnsyncedPart::complete`], the part is removed (it is not known durable).
pub struct UnsyncedPart {
    disk: Arc<LocalDisk>,
    file: Option<File>,
    dest: PathBuf,
}

impl UnsyncedPart {
    /// After the group sync that covers this part (`synced`, its result): the part's own
    /// writeback error, if it had one (the kernel reports a writeback error once per
    /// descriptor: this one, open since before the write, is asked too, without another
    /// flush of the device; [`crate::fsutil::writeback_error`]). On any error the part is
    /// removed, never left where it could be taken for a good part.
    pub fn complete(mut self, synced: std::io::Result<()>) -> anyhow::Result<()> {
        let f = self.file.take();
        let r = synced.and_then(|()| f.as_ref().map_or(Ok(()), crate::fsutil::writeback_error));
        if let Err(e) = r {
            let _ = std::fs::remove_file(&self.dest);
            self.disk.count_write_error();
            let full = crate::disk::is_no_space(&e);
            if full {
                self.disk.mark_full(&e.to_string());
            }
            return Err(anyhow::Error::new(e).context(format!(
                "{}syncfs or writeback of {} on {}",
                if full { "disk full: " } else { "" },
                self.dest.display(),
                self.disk.root.display()
            )));
        }
        Ok(())
    }

    /// Runs the group sync of this part's filesystem for it alone, then completes it.
    fn sync_alone(self) -> anyhow::Result<()> {
        let dir = self.dest.parent().unwrap_or(Path::new(".")).to_owned();
        let synced = crate::sync_group::for_device(self.disk.fs_dev).sync(&dir);
        self.complete(synced)
    }
}

impl Drop for UnsyncedPart {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.dest);
        }
    }
}

/// Finishes `parts` (writer and header) that share one [`PartWriter::sync_group_key`] in
/// the calling thread: each is renamed into place, then one group sync of their filesystem
/// covers them all, instead of a thread per part each waiting for the sync (docs/performance.md,
/// "Many small files"). Blocking. Each part's result, in order.
pub fn finish_together(parts: Vec<(Box<dyn PartWriter>, PartHeader)>) -> Vec<anyhow::Result<()>> {
    let mut results: Vec<Option<anyhow::Result<()>>> = Vec::with_capacity(parts.len());
    let mut waiting: Vec<(usize, UnsyncedPart)> = Vec::new();
    for (i, (w, header)) in parts.into_iter().enumerate() {
        match w.finish_before_sync(header) {
            Ok(Some(u)) => {
                results.push(None);
                waiting.push((i, u));
            }
            Ok(None) => results.push(Some(Ok(()))),
            Err(e) => results.push(Some(Err(e))),
        }
    }
    if let Some((_, first)) = waiting.first() {
        let dir = first.dest.parent().unwrap_or(Path::new(".")).to_owned();
        let synced = crate::sync_group::for_device(first.disk.fs_dev).sync(&dir);
        let why = synced.as_ref().err().map(|e| (e.kind(), e.to_string()));
        for (i, u) in waiting {
            let r = match &why {
                None => Ok(()),
                Some((kind, msg)) => Err(std::io::Error::new(*kind, msg.clone())),
            };
            results[i] = Some(u.complete(r));
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("part not finished"))))
        .collect()
}

/// Reads one part's blocks, each checked against its checksum, wherever the part is: a file on
/// this machine's disk ([`OpenPart`]) or a part on another machine's disk.
pub trait PartReader: Send + Sync {
    /// Reads `count` consecutive blocks from block `first` (clamped to the part). Blocking.
    fn read_blocks(&self, first: u64, count: u64) -> Result<Bytes, PartReadError>;
    /// The same blocks, only if they can be had without waiting for a disk or the network
    /// (bytes already in the page cache), so the call may run on an async thread. `None`
    /// leaves them to [`Self::read_blocks`], which reports what went wrong if anything did.
    fn read_blocks_now(&self, first: u64, count: u64) -> Option<Result<Bytes, PartReadError>> {
        let _ = (first, count);
        None
    }
}

/// A part being written on a local disk.
pub struct LocalPartWriter {
    disk: Arc<LocalDisk>,
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    header_len: u32,
    block_size: u64,
    written: u64,
    crcs: Vec<u32>,
    partial_crc: u32,
}

impl LocalPartWriter {
    /// Starts a part at `dest` on `disk`, after checking the disk's identity and space.
    pub fn create(
        disk: Arc<LocalDisk>,
        dest: PathBuf,
        header_len: u32,
        block_size: u32,
        expected_bytes: u64,
    ) -> anyhow::Result<Self> {
        // A peer's request reaches here: a zero block size would divide by zero below.
        anyhow::ensure!(block_size > 0, "block size 0");
        disk.verify_for_write(expected_bytes)?;
        let dir = dest.parent().context("part path has no parent")?;
        crate::fsutil::create_private_dir_all(dir)
            .with_context(|| format!("create {}", dir.display()))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp{:08x}", rand::random::<u32>()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| {
                disk.count_write_error();
                if crate::disk::is_no_space(&e) {
                    disk.mark_full(&e.to_string());
                    anyhow::Error::new(e).context(format!("disk full: create {}", tmp.display()))
                } else {
                    anyhow::Error::new(e).context(format!("create {}", tmp.display()))
                }
            })?;
        file.seek(SeekFrom::Start(u64::from(header_len)))?;
        Ok(Self {
            disk,
            file: Some(file),
            tmp,
            dest,
            header_len,
            block_size: u64::from(block_size),
            written: 0,
            crcs: Vec::new(),
            partial_crc: 0,
        })
    }

    /// An I/O failure of `what`, named; one that found no space left marks the disk full and
    /// says "disk full".
    fn io_failure(&self, e: std::io::Error, what: &str) -> anyhow::Error {
        self.disk.count_write_error();
        if crate::disk::is_no_space(&e) {
            self.disk.mark_full(&e.to_string());
            anyhow::Error::new(e).context(format!(
                "disk full: {what} {} on {}",
                self.tmp.display(),
                self.disk.root.display()
            ))
        } else {
            anyhow::Error::new(e).context(format!("{what} {}", self.tmp.display()))
        }
    }

    fn update_crcs(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let in_block = (self.written % self.block_size) as usize;
            let take = data.len().min(self.block_size as usize - in_block);
            self.partial_crc = crc32c::crc32c_append(self.partial_crc, &data[..take]);
            self.written += take as u64;
            if self.written.is_multiple_of(self.block_size) {
                self.crcs.push(self.partial_crc);
                self.partial_crc = 0;
            }
            data = &data[take..];
        }
    }
}

impl PartWriter for LocalPartWriter {
    fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        let f = self.file.as_mut().context("part already closed")?;
        if let Err(e) = f.write_all(data) {
            return Err(self.io_failure(e, "write"));
        }
        self.disk
            .bytes_written
            .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.update_crcs(data);
        Ok(())
    }

    fn finish(self: Box<Self>, header: PartHeader) -> anyhow::Result<()> {
        match self.finish_before_sync(header)? {
            Some(u) => u.sync_alone(),
            None => Ok(()),
        }
    }

    fn sync_group_key(&self) -> Option<u64> {
        // Never grouped on an unknown device: the sync must be of the part's filesystem.
        (self.written <= crate::sync_group::GROUP_SYNC_UP_TO && self.disk.fs_dev != 0)
            .then_some(self.disk.fs_dev)
    }

    fn finish_before_sync(
        mut self: Box<Self>,
        header: PartHeader,
    ) -> anyhow::Result<Option<UnsyncedPart>> {
        let grouped = self.sync_group_key().is_some();
        let res = (|| -> anyhow::Result<Option<UnsyncedPart>> {
            if !self.written.is_multiple_of(self.block_size) {
                self.crcs.push(self.partial_crc);
            }
            anyhow::ensure!(
                self.written == header.part_data_len,
                "part length {} != header {}",
                self.written,
                header.part_data_len
            );
            // The data was written from `header_len`: a header saying otherwise would misplace it.
            anyhow::ensure!(
                header.header_len == self.header_len,
                "header_len {} != {} the part was started with",
                header.header_len,
                self.header_len
            );
            let region = header
                .encode(&self.crcs)
                .context("the part header does not fit its front region")?;
            let f = self.file.take().context("part already closed")?;
            if let Err(e) = f.write_all_at(&region, 0) {
                return Err(self.io_failure(e, "write header"));
            }
            // A small part is made durable with the other small parts written meanwhile on
            // its filesystem, by one syncfs after its rename (crate::sync_group); a larger one
            // by its own fsync, then its folder's after the rename.
            if !grouped {
                if let Err(e) = f.sync_all() {
                    return Err(self.io_failure(e, "fsync"));
                }
            }
            if let Err(e) = std::fs::rename(&self.tmp, &self.dest) {
                self.disk.count_write_error();
                return Err(
                    anyhow::Error::new(e).context(format!("rename {}", self.dest.display()))
                );
            }
            crash_point("part-renamed-before-sync");
            if grouped {
                // Durable once its filesystem's group sync has run (UnsyncedPart::complete).
                return Ok(Some(UnsyncedPart {
                    disk: self.disk.clone(),
                    file: Some(f),
                    dest: self.dest.clone(),
                }));
            }
            drop(f);
            crate::fsutil::sync_dir(self.dest.parent().unwrap_or(Path::new(".")))?;
            Ok(None)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        res
    }

    fn abort(mut self: Box<Self>) {
        self.file.take();
        let _ = std::fs::remove_file(&self.tmp);
    }
}

impl Drop for LocalPartWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Why a block could not be read from a part.
#[derive(Debug, thiserror::Error)]
pub enum PartReadError {
    /// The part file is absent.
    #[error("part missing")]
    Missing,
    /// An I/O error.
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
    /// The header does not verify.
    #[error("bad header: {0}")]
    Format(#[from] FormatError),
    /// The header names another part.
    #[error("header names another part")]
    WrongPart,
    /// A block's checksum does not match (or the file is truncated).
    #[error("block {0} corrupt or truncated")]
    Corrupt(u64),
    /// The part's disk is not attached to this node.
    #[error("disk {0} is not attached here")]
    DiskNotHere(crate::ids::DiskId),
    /// The part's disk cannot be reached: missing (unmounted), or on another machine
    /// that did not deliver the blocks (unreachable, timed out, or it answered with an error).
    #[error("{0}")]
    Unavailable(String),
}

/// An open, verified part file.
pub struct OpenPart {
    file: File,
    /// Its header.
    pub header: PartHeader,
    table: Vec<u32>,
    disk: Arc<LocalDisk>,
}

impl OpenPart {
    /// Opens `path` on `disk` and verifies its header and block table.
    pub fn open(disk: Arc<LocalDisk>, path: &Path) -> Result<Self, PartReadError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PartReadError::Missing)
            }
            Err(e) => return Err(e.into()),
        };
        let FrontRegion { header, table, .. } = read_front_region(&file)?;
        Ok(Self {
            file,
            header,
            table,
            disk,
        })
    }

    /// The blocks `first..end` (clamped to the part) and their stored length; an empty span
    /// is a corrupt request.
    fn span(&self, first: u64, count: u64) -> Result<(u64, u64, u64), PartReadError> {
        // `first` and `count` come from a peer's request: no sum may wrap.
        let end = first.saturating_add(count).min(self.header.block_count());
        if first >= end {
            return Err(PartReadError::Corrupt(first));
        }
        let len: u64 = (first..end).map(|b| self.header.stored_block_len(b)).sum();
        let base = u64::from(self.header.header_len) + first * u64::from(self.header.block_size);
        Ok((end, len, base))
    }

    /// Reads `count` consecutive blocks from block `first`, verifying each checksum.
    pub fn read_blocks(&self, first: u64, count: u64) -> Result<Vec<u8>, PartReadError> {
        let (end, len, base) = self.span(first, count)?;
        // Read into uninitialised capacity: zero-filling first cost 15% of a sequential read.
        let mut buf = Vec::with_capacity(len as usize);
        while (buf.len() as u64) < len {
            let off = base + buf.len() as u64;
            match rustix::io::pread(&self.file, rustix::buffer::spare_capacity(&mut buf), off) {
                Ok(0) => {
                    self.disk.count_read_error(false);
                    return Err(PartReadError::Corrupt(first));
                }
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    self.disk.count_read_error(false);
                    return Err(std::io::Error::from(e).into());
                }
            }
        }
        // The allocation may be larger than asked; never keep bytes beyond the range.
        buf.truncate(len as usize);
        self.verify(first, end, buf)
    }

    /// Like [`Self::read_blocks`], but only when every byte is already in the page cache
    /// (`preadv2` with `RWF_NOWAIT`), so it never waits for a disk and may run on an async
    /// thread. `None` when anything would have to come from the disk or the read fails (the
    /// caller then reads the usual way, which reports what went wrong); a checksum mismatch is
    /// an error as from [`Self::read_blocks`].
    pub fn read_blocks_cached(
        &self,
        first: u64,
        count: u64,
    ) -> Option<Result<Vec<u8>, PartReadError>> {
        #[cfg(target_os = "linux")]
        {
            use rustix::io::{preadv2, Errno, ReadWriteFlags};
            let (end, len, base) = self.span(first, count).ok()?;
            let mut buf = vec![0u8; len as usize];
            let mut done = 0usize;
            while done < buf.len() {
                let mut io = [std::io::IoSliceMut::new(&mut buf[done..])];
                match preadv2(
                    &self.file,
                    &mut io,
                    base + done as u64,
                    ReadWriteFlags::NOWAIT,
                ) {
                    Ok(0) => return None,
                    Ok(n) => done += n,
                    Err(Errno::INTR) => {}
                    // EAGAIN: not cached; EOPNOTSUPP: a filesystem without RWF_NOWAIT.
                    Err(_) => return None,
                }
            }
            Some(self.verify(first, end, buf))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (first, count);
            None
        }
    }

    /// Counts the read and checks each block's checksum.
    fn verify(&self, first: u64, end: u64, buf: Vec<u8>) -> Result<Vec<u8>, PartReadError> {
        self.disk.count_read(buf.len() as u64);
        let mut off = 0usize;
        for b in first..end {
            let l = self.header.stored_block_len(b) as usize;
            if crc32c::crc32c(&buf[off..off + l]) != self.table[b as usize] {
                self.disk.count_read_error(true);
                return Err(PartReadError::Corrupt(b));
            }
            off += l;
        }
        Ok(buf)
    }
}

impl PartReader for OpenPart {
    fn read_blocks(&self, first: u64, count: u64) -> Result<Bytes, PartReadError> {
        OpenPart::read_blocks(self, first, count).map(Bytes::from)
    }

    fn read_blocks_now(&self, first: u64, count: u64) -> Option<Result<Bytes, PartReadError>> {
        OpenPart::read_blocks_cached(self, first, count).map(|r| r.map(Bytes::from))
    }
}

/// A part's verified front region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontRegion {
    /// The header.
    pub header: PartHeader,
    /// The block table: one crc32c per block.
    pub table: Vec<u32>,
    /// The format version the part was written in (1 or 2).
    pub version: u16,
}

/// Reads and verifies the front region of an open part file, of any version this code knows:
/// the one way every reader of parts on a disk starts (docs/chunk-format.md, section 7).
///
/// It reads the first [`HEADER_PROBE_LEN`] bytes (or the whole file if shorter), which hold a
/// whole header of either version, checks the magic, the version (an unknown one is
/// [`FormatError::UnsupportedVersion`]) and the header checksum, and only then trusts
/// `header_len` (itself at most [`crate::part_format::MAX_REGION_LEN`]) to read the rest of the
/// region, if any, and verify the table. Most parts take one read. A file too short for its
/// header or its front region is [`FormatError::TooShort`].
pub fn read_front_region(file: &File) -> Result<FrontRegion, PartReadError> {
    let mut buf = vec![0u8; HEADER_PROBE_LEN];
    let got = read_up_to(file, &mut buf, 0)?;
    buf.truncate(got);
    let header = PartHeader::decode(&buf)?;
    let version = crate::part_format::format_version_of(&buf).unwrap_or_default();
    let region_len = header.header_len as usize;
    if region_len > got {
        if got < HEADER_PROBE_LEN {
            // The file ended before its front region did.
            return Err(FormatError::TooShort(got).into());
        }
        buf.resize(region_len, 0);
        let more = read_up_to(file, &mut buf[got..], got as u64)?;
        if got + more < region_len {
            return Err(FormatError::TooShort(got + more).into());
        }
    }
    let table = header.decode_table(&buf[..region_len])?;
    Ok(FrontRegion {
        header,
        table,
        version,
    })
}

/// Reads into `buf` from `off` until it is full or the file ends; the bytes read.
fn read_up_to(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CodecId;
    use crate::ids::{ClusterId, FileId};

    /// A copy's header for part `part` of `data`.
    fn header(cluster: ClusterId, file: FileId, part: u16, data: &[u8]) -> PartHeader {
        PartHeader {
            codec: CodecId::Replica,
            header_len: 512,
            cluster_id: cluster,
            file_id: file,
            segment_index: 0,
            part_index: part,
            k: 1,
            m: 2,
            block_size: 4096,
            segment_data_len: data.len() as u64,
            part_data_len: data.len() as u64,
            created_ms: 1,
            segment_blake3: [1; 32],
            path: "/p/a.jpg".into(),
        }
    }

    /// Part `i` of `file` with `data` written, on a disk of its own in folder `d{i}` of `root`:
    /// its disk, its final path and its writer (not finished).
    fn written_part(
        root: &Path,
        cluster: ClusterId,
        file: FileId,
        i: u16,
        data: &[u8],
    ) -> (Arc<LocalDisk>, PathBuf, LocalPartWriter) {
        let disk =
            Arc::new(LocalDisk::open(&root.join(format!("d{i}")), cluster, None, 0).unwrap());
        let dest = disk.part_path(file, 0, i);
        let mut w = LocalPartWriter::create(disk.clone(), dest.clone(), 512, 4096, 4096).unwrap();
        w.write(data).unwrap();
        (disk, dest, w)
    }

    /// Three small parts on folders of one filesystem: finished together, each is in place
    /// and reads back, and one group sync covered all three (not one per part).
    #[test]
    fn small_parts_on_one_filesystem_finish_together_with_one_sync() {
        let t = tempfile::tempdir().unwrap();
        let cluster = ClusterId::random();
        let file = FileId::mint();
        let data = b"a small file's bytes".repeat(150);
        let mut parts: Vec<(Box<dyn PartWriter>, PartHeader)> = Vec::new();
        let mut disks = Vec::new();
        for i in 0..3u16 {
            let (disk, _, w) = written_part(t.path(), cluster, file, i, &data);
            let key = PartWriter::sync_group_key(&w);
            assert_eq!(key, Some(disk.fs_dev), "a small local part is grouped");
            parts.push((Box::new(w), header(cluster, file, i, &data)));
            disks.push(disk);
        }
        let group = crate::sync_group::for_device(disks[0].fs_dev);
        let before = group.syncs_started();
        let results = finish_together(parts);
        assert_eq!(results.len(), 3);
        for r in &results {
            r.as_ref().unwrap();
        }
        assert_eq!(
            group.syncs_started() - before,
            1,
            "one sync for the three parts"
        );
        for (i, disk) in disks.iter().enumerate() {
            let path = disk.part_path(file, 0, i as u16);
            let part = OpenPart::open(disk.clone(), &path).unwrap();
            assert_eq!(part.header.part_index, i as u16);
            assert_eq!(part.read_blocks(0, 1).unwrap(), data);
            // Nothing temporary is left beside it.
            let dir = path.parent().unwrap();
            let names: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names.len(), 1, "{names:?}");
        }
    }

    /// A part whose finish fails (its length disagrees with its header) fails alone: the
    /// others finished with it are in place, and it leaves nothing behind.
    #[test]
    fn a_part_failing_among_parts_finished_together_fails_alone() {
        let t = tempfile::tempdir().unwrap();
        let cluster = ClusterId::random();
        let file = FileId::mint();
        let data = vec![7u8; 3000];
        let mut parts: Vec<(Box<dyn PartWriter>, PartHeader)> = Vec::new();
        let mut dests = Vec::new();
        for i in 0..2u16 {
            let (_, dest, w) = written_part(t.path(), cluster, file, i, &data);
            let mut h = header(cluster, file, i, &data);
            if i == 1 {
                h.part_data_len += 1;
            }
            parts.push((Box::new(w), h));
            dests.push(dest);
        }
        let results = finish_together(parts);
        assert!(results[0].is_ok());
        let err = format!("{:#}", results[1].as_ref().unwrap_err());
        assert!(err.contains("part length"), "{err}");
        assert!(dests[0].exists());
        assert!(!dests[1].exists());
        let dir = dests[1].parent().unwrap();
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            0,
            "no temporary file left"
        );
    }

    /// A filesystem whose device fails writes once [`FailingFs::fill`] has run: ext4 on a
    /// loop device, its backing file on a small tmpfs that `fill` fills. Unmounted when
    /// dropped.
    struct FailingFs {
        dir: tempfile::TempDir,
    }

    fn run(args: &[&str]) {
        let o = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    impl FailingFs {
        fn mount() -> Self {
            assert!(
                rustix::process::geteuid().is_root(),
                "this test mounts a loop device and needs root (CI runs the suite as root)"
            );
            let me = FailingFs {
                dir: tempfile::tempdir().unwrap(),
            };
            std::fs::create_dir_all(me.back()).unwrap();
            std::fs::create_dir_all(me.root()).unwrap();
            let back = me.back().display().to_string();
            run(&[
                "mount",
                "-t",
                "tmpfs",
                "-o",
                "size=24m",
                "wormfs-test",
                &back,
            ]);
            let img = me.back().join("img");
            std::fs::File::create(&img)
                .unwrap()
                .set_len(256 << 20)
                .unwrap();
            let img = img.display().to_string();
            // No journal: a journal write failing would turn the filesystem read-only, and
            // the test would show that rather than the part's own failed writeback.
            // Its inode tables written now, not by a kernel thread after the fill.
            run(&[
                "mkfs.ext4",
                "-q",
                "-F",
                "-O",
                "^has_journal",
                "-E",
                "lazy_itable_init=0",
                &img,
            ]);
            run(&[
                "mount",
                "-o",
                "loop",
                &img,
                &me.root().display().to_string(),
            ]);
            me
        }

        fn back(&self) -> PathBuf {
            self.dir.path().join("back")
        }

        /// The ext4 filesystem's mount point.
        fn root(&self) -> PathBuf {
            self.dir.path().join("mnt")
        }

        /// Fills the tmpfs under the image: from now on a write to a block of the image not
        /// written before fails on the device.
        fn fill(&self) {
            let mut f = std::fs::File::create(self.back().join("fill")).unwrap();
            let mb = vec![0x5a; 1 << 20];
            loop {
                if let Err(e) = f.write_all(&mb) {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                    return;
                }
            }
        }
    }

    impl Drop for FailingFs {
        fn drop(&mut self) {
            // Lazily: nothing of the test may keep them mounted (the loop device goes with
            // the first, mounted with autoclear).
            for dir in [self.root(), self.back()] {
                let _ = std::process::Command::new("umount")
                    .arg("--lazy")
                    .arg(&dir)
                    .status();
            }
        }
    }

    /// A part whose writeback failed before its group sync began (background writeback,
    /// reported to the descriptors open at the time, not to the sync's own) is not taken for
    /// durable: `complete` asks the part's descriptor, fails, and removes it. A good part on
    /// the same filesystem completes.
    #[test]
    fn a_part_whose_writeback_failed_before_the_group_sync_is_not_kept() {
        let fs = FailingFs::mount();
        let cluster = ClusterId::random();
        let file = FileId::mint();
        let data = b"a photo's bytes ".repeat(8 << 10);
        assert!(data.len() as u64 <= crate::sync_group::GROUP_SYNC_UP_TO);
        let disk = Arc::new(LocalDisk::open(&fs.root().join("d0"), cluster, None, 0).unwrap());
        let sync = |p: &Path| crate::sync_group::for_device(disk.fs_dev).sync(p.parent().unwrap());
        let part = |i: u16| {
            let dest = disk.part_path(file, 0, i);
            let mut w =
                LocalPartWriter::create(disk.clone(), dest.clone(), 512, 4096, 4096).unwrap();
            w.write(&data).unwrap();
            let header = header(cluster, file, i, &data);
            let unsynced = Box::new(w).finish_before_sync(header).unwrap();
            (
                dest,
                unsynced.expect("a small part waits for the group sync"),
            )
        };

        let (good, unsynced) = part(0);
        unsynced.complete(sync(&good)).unwrap();
        assert_eq!(
            OpenPart::open(disk.clone(), &good)
                .unwrap()
                .read_blocks(0, 1)
                .unwrap(),
            data[..4096]
        );

        fs.fill();
        let (bad, unsynced) = part(1);
        // Written back now, through another descriptor: the device refuses the blocks.
        let other = std::fs::File::open(&bad).unwrap();
        assert!(other.sync_data().is_err(), "the device took the write");
        // The group sync's own descriptor is opened after that error: whatever it reports,
        // the part's descriptor must report the error.
        let _ = sync(&bad);
        let err = format!("{:#}", unsynced.complete(Ok(())).unwrap_err());
        assert!(err.contains("writeback of"), "{err}");
        assert!(
            !bad.exists(),
            "a part that failed its writeback was left in place"
        );
        assert!(good.exists());
    }
}
