//! WormFS node: storage, erasure coding, metadata, Raft, ingest, reads, the node API and the CLI.
//!
//! See docs/ARCHITECTURE.md for the code map.

pub mod api;
pub mod cli;
pub mod codec;
pub mod command;
pub mod consensus;
pub mod crash_point;
pub mod data_plane;
pub mod disk;
pub mod drop_folders;
pub mod fsutil;
pub mod ids;
pub mod ingest;
pub mod layout;
pub mod meta;
pub mod node;
pub mod part_format;
pub mod part_io;
pub mod peer;
pub mod placement;
pub mod policy;
pub mod raft_types;
pub mod read;
pub mod store;
pub mod sweeper;
pub mod tree_path;
pub mod webdav_backend;
pub mod webdav_face;
mod webdav_lookups;
mod webdav_upload;
