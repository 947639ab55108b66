//! A [`PartReader`] for a part on another node's disk: each read is a data-plane request to
//! the node that holds it, which reads and verifies the blocks there (its data server) and
//! sends them back. A part the holder reports missing, corrupt or naming another part comes back
//! as that same [`PartReadError`] (so the read path queues it for repair as it would a damaged
//! local part); any other failure is [`PartReadError::Unavailable`], naming the node.

use std::sync::Arc;

use bytes::Bytes;
use wormfs_parts::part_io::{PartReadError, PartReader};

use super::client::{DataClient, DataError, RemotePart};

/// A part on another node, read through the data plane.
pub struct RemotePartReader {
    client: Arc<DataClient>,
    part: RemotePart,
}

impl RemotePartReader {
    /// A reader for `part`; nothing is sent until the first read.
    pub fn new(client: Arc<DataClient>, part: RemotePart) -> Self {
        Self { client, part }
    }
}

impl PartReader for RemotePartReader {
    fn read_blocks(&self, first: u64, count: u64) -> Result<Bytes, PartReadError> {
        self.client
            .read_blocks_blocking(&self.part, first, count)
            .map_err(|e| match e {
                DataError::Refused { status: 404, .. } => PartReadError::Missing,
                DataError::Refused { status: 409, .. } => PartReadError::WrongPart,
                DataError::Refused { status: 422, .. } => PartReadError::Corrupt(first),
                e => PartReadError::Unavailable(format!("on node {}: {e}", self.part.node)),
            })
    }
}
