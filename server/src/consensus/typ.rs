//! openraft's message types for WormFS's configuration, named once (the shape of openraft's
//! examples' `typ` module): the peer protocol carries these without importing openraft, so
//! openraft's types stay inside consensus and the metadata crate.

use wormfs_meta::raft_types::TypeConfig;
use wormfs_parts::ids::NodeId;

/// Raft: replicate entries (and heartbeats).
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
/// The answer to [`AppendEntriesRequest`].
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
/// Raft: a request for a vote.
pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
/// The answer to [`VoteRequest`].
pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
/// Raft: one chunk of a snapshot.
pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
/// The answer to [`InstallSnapshotRequest`].
pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
/// Raft refused a request.
pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
/// Raft refused a snapshot chunk.
pub type InstallSnapshotError = RaftError<openraft::error::InstallSnapshotError>;
/// A vote, as seen in a message.
pub type Vote = openraft::Vote<NodeId>;
