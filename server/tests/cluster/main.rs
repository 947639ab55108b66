//! Clusters of real `wormfs` processes on 127.0.0.x (and mDNS inside network namespaces):
//! formation, the data plane, kills, partitions, voters and recovery.
//!
//! One test binary per group, so the suite compiles and links a few binaries rather than one
//! per file (docs/ARCHITECTURE.md "Tests").

#[path = "../common/mod.rs"]
mod common;

mod cluster_accounts;
mod cluster_data_plane;
mod cluster_events;
mod cluster_healing;
mod cluster_mdns;
mod cluster_processes;
mod cluster_recovery;
mod cluster_trash;
mod mdns_namespace;
