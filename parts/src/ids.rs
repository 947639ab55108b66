//! Identifiers: cluster, node, disk and file ids.
//!
//! Cluster and disk ids are UUIDs; a node id is a stable, orderable `u64`; a file id is 128
//! random bits minted by the writer before any of its parts is written.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The id of a cluster, made when the cluster is initialised; in every part header and disk identity file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterId(pub Uuid);

/// The id of a disk, stored in the disk's identity file. A part's location is a disk id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DiskId(pub Uuid);

/// A stable node id; the lowest id initialises a new cluster.
pub type NodeId = u64;

/// A 128-bit file id, minted by the writer before any part is written.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u128);

impl ClusterId {
    /// A new random cluster id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl DiskId {
    /// A new random disk id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl FileId {
    /// Mints a new random file id.
    pub fn mint() -> Self {
        Self(rand::random::<u128>())
    }

    /// The id as 16 big-endian bytes (the order used in part headers and SQLite).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The id from 16 big-endian bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(u128::from_be_bytes(b))
    }

    /// The id from a byte slice; `None` unless it is exactly 16 bytes.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(Self::from_bytes(b.try_into().ok()?))
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({self})")
    }
}

impl FromStr for FileId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s, 16).map(Self)
    }
}

impl Serialize for FileId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for FileId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for DiskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_id_text_and_bytes_round_trip() {
        let id = FileId::mint();
        assert_eq!(id.to_string().parse::<FileId>().unwrap(), id);
        assert_eq!(FileId::from_bytes(id.to_bytes()), id);
        assert_eq!(id.to_string().len(), 32);
    }
}
