//! In-process tests: the storage engine, the part format read from its specification alone,
//! openraft's storage suite and Raft nodes in one process, and the repository's structure rules.
//!
//! One test binary per group, so the suite compiles and links a few binaries rather than one
//! per file (docs/ARCHITECTURE.md "Tests").

#[path = "../common/mod.rs"]
mod common;

mod engine;
mod raft_in_process;
mod raft_storage_suite;
mod spec_reader;
mod structure;
