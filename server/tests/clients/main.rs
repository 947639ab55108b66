//! Real WebDAV clients (litmus, rclone, cadaver, ffmpeg) against a real `wormfs` process, and
//! the same programs reading through `wormfs mount`.
//!
//! One test binary per group, so the suite compiles and links a few binaries rather than one
//! per file (docs/ARCHITECTURE.md "Tests").

#[path = "../common/mod.rs"]
mod common;

mod mount;
mod webdav_clients;
