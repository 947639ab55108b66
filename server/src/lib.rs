//! WormFS node: storage, erasure coding, metadata, Raft, ingest, reads, the node API and the CLI.
//!
//! See docs/ARCHITECTURE.md for the code map.

pub mod codec;
pub mod command;
pub mod fsutil;
pub mod ids;
pub mod layout;
pub mod meta;
pub mod part_format;
pub mod policy;
pub mod raft_types;
pub mod tree_path;
pub mod consensus;
pub mod disk;
pub mod part_io;
pub mod placement;
pub mod crash_point;
pub mod ingest;
pub mod store;
pub mod read;
pub mod node;
pub mod sweeper;
pub mod api;
pub mod cli;
