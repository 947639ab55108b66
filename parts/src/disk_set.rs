//! The disks attached to this node, as one cheap, shared set: the engine and the data server
//! both hold it, and both open local parts through [`DiskSet::open_part`], which verifies that
//! the header names the part asked for.

use std::ops::Deref;
use std::sync::Arc;

use crate::disk::LocalDisk;
use crate::ids::{DiskId, FileId};
use crate::part_io::{OpenPart, PartReadError};

/// This node's disks (cloning shares them).
#[derive(Clone, Default)]
pub struct DiskSet(Arc<[Arc<LocalDisk>]>);

impl DiskSet {
    /// The set of these disks.
    pub fn new(disks: Vec<Arc<LocalDisk>>) -> Self {
        Self(disks.into())
    }

    /// The disk with this id, if it is attached here.
    pub fn get(&self, id: DiskId) -> Option<&Arc<LocalDisk>> {
        self.0.iter().find(|d| d.id == id)
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

impl Deref for DiskSet {
    type Target = [Arc<LocalDisk>];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a> IntoIterator for &'a DiskSet {
    type Item = &'a Arc<LocalDisk>;
    type IntoIter = std::slice::Iter<'a, Arc<LocalDisk>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
