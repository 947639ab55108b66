//! WormFS node: storage, erasure coding, metadata, Raft, ingest, reads, the node API and the CLI.
//!
//! See docs/ARCHITECTURE.md for the code map.

// No unsafe code here: the workspace lint is `deny` only so that one syscall in
// wormfs-parts (`fsutil::writeback_error`) can be allowed.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod admin_session;
pub mod admin_token;
pub mod alerts;
pub mod api;
pub mod changes;
pub mod cli;
pub mod consensus;
pub mod data_plane;
pub mod disk_recovery;
pub mod drop_folders;
pub mod events;
pub mod healing;
pub mod ingest;
pub mod logging;
pub mod media_notify;
pub mod meta_backup;
pub mod metrics;
pub mod mount;
pub mod node;
pub mod peer;
pub mod read;
pub mod startup_checks;
pub mod store;
pub mod sweeper;
pub mod trash;
pub mod webdav_backend;
pub mod webdav_face;
mod webdav_lookups;
mod webdav_records;
mod webdav_upload;
