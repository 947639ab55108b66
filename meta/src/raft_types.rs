//! The openraft type configuration shared by the metadata store and the consensus module.

use crate::command::{Command, Outcome};

openraft::declare_raft_types!(
    /// WormFS's Raft types: commands in, outcomes out, snapshots as SQLite files.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);
