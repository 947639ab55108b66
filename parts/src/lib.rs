//! WormFS's storage layer, the part of a node that knows bytes and disks and nothing else: ids,
//! tree paths, segment geometry, Reed-Solomon, the part file format, writing and reading parts,
//! disks and their identity, placement and policies.
//!
//! It has no SQL, no networking and no Raft (Cargo.toml enforces it): the metadata crate, the
//! engine and the data plane build on it, and a part on another machine is reached through the
//! same [`part_io::PartWriter`] and [`part_io::PartReader`] traits as a local one.
//! See docs/ARCHITECTURE.md for the code map.

pub mod codec;
pub mod crash_point;
pub mod disk;
pub mod disk_set;
pub mod fsutil;
pub mod ids;
pub mod layout;
pub mod part_format;
pub mod part_io;
pub mod placement;
pub mod policy;
pub mod sync_group;
pub mod tree_path;
