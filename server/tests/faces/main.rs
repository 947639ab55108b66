//! One real `wormfs` process per test, driven through its faces: the CLI and API, drop folders,
//! mounted disks, files on disk, and WebDAV over raw HTTP.
//!
//! One test binary per group, so the suite compiles and links a few binaries rather than one
//! per file (docs/ARCHITECTURE.md "Tests").

#[path = "../common/mod.rs"]
mod common;

mod accounts;
mod admin_page;
mod alerts_events;
mod api_safety;
mod cli_process;
mod disks_mounted;
mod drop_folders;
mod files_on_disk;
mod first_hour;
mod media_servers;
mod metrics;
mod platform;
mod recovery;
mod self_healing;
mod sleeping_disks;
mod trash_retention;
mod webdav_http;
mod webdav_safety;
