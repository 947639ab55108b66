//! The disks attached to this node, as one cheap, shared set: the engine and the data server
//! both hold it, and both open local parts through [`DiskSet::open_part`], which verifies that
//! the header names the part asked for. A disk added while the node runs (`wormfs disk add`)
//! joins the set every holder sees; iterating takes a snapshot.

use std::sync::{Arc, RwLock};

use crate::disk::LocalDisk;
use crate::ids::{DiskId, FileId};
use crate::part_io::{OpenPart, PartReadError};

/// This node's disks (cloning shares them).
#[derive(Clone, Default)]
pub struct DiskSet(Arc<RwLock<Arc<[Arc<LocalDisk>]>>>);

impl DiskSet {
    /// The set of these disks.
    pub fn new(disks: Vec<Arc<LocalDisk>>) -> Self {
        Self(Arc::new(RwLock::new(disks.into())))
    }

    /// The disks now.
    pub fn snapshot(&self) -> Arc<[Arc<LocalDisk>]> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The disks now, one by one.
    pub fn iter(&self) -> std::vec::IntoIter<Arc<LocalDisk>> {
        self.snapshot().to_vec().into_iter()
    }

    /// How many disks are attached.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Attaches another disk (refused if one with its id or root is attached already).
    pub fn add(&self, disk: Arc<LocalDisk>) -> Result<(), String> {
        let mut g = self.0.write().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = g.iter().find(|d| d.id == disk.id || d.root == disk.root) {
            return Err(format!(
                "disk {} ({}) is already attached",
                d.id,
                d.root.display()
            ));
        }
        let mut v = g.to_vec();
        v.push(disk);
        *g = v.into();
        Ok(())
    }

    /// Detaches a disk (nothing is read from or written to it afterwards); `false` if it was
    /// not attached.
    pub fn remove(&self, id: DiskId) -> bool {
        let mut g = self.0.write().unwrap_or_else(|p| p.into_inner());
        let before = g.len();
        let v: Vec<_> = g.iter().filter(|d| d.id != id).cloned().collect();
        let removed = v.len() != before;
        *g = v.into();
        removed
    }

    /// The disk with this id, if it is attached here.
    pub fn get(&self, id: DiskId) -> Option<Arc<LocalDisk>> {
        self.snapshot().iter().find(|d| d.id == id).cloned()
    }

    /// Opens part `part` of segment `segment` of `file` on local disk `disk`, its header and
    /// block table verified and checked to name that part. Blocking.
    pub fn open_part(
        &self,
        disk: DiskId,
        file: FileId,
        segment: u32,
        part: u16,
    ) -> Result<OpenPart, PartReadError> {
        let d = self.get(disk).ok_or(PartReadError::DiskNotHere(disk))?;
        if !d.readable() {
            return Err(PartReadError::Unavailable(format!(
                "disk {} missing",
                d.root.display()
            )));
        }
        let p = OpenPart::open(d.clone(), &d.part_path(file, segment, part))?;
        if p.header.file_id != file
            || p.header.segment_index != segment
            || p.header.part_index != part
        {
            return Err(PartReadError::WrongPart);
        }
        Ok(p)
    }
}

impl IntoIterator for &DiskSet {
    type Item = Arc<LocalDisk>;
    type IntoIter = std::vec::IntoIter<Arc<LocalDisk>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}
