//! What crosses the data plane (HTTP/1.1 over mutual TLS 1.3; JSON for control messages,
//! raw bytes for part data).
//!
//! | request | body | answer |
//! | --- | --- | --- |
//! | `GET /v1/disks` | | `[DiskOffer]` |
//! | `POST /v1/uploads` | `NewUpload` | `UploadCreated` |
//! | `PUT /v1/uploads/{id}?offset=N` | part bytes, at most [`MAX_CHUNK`] | `UploadOffset` (409 with the server's offset when N is not it) |
//! | `POST /v1/uploads/{id}/finish` | `PartHeader` | 204 once the part is durable |
//! | `DELETE /v1/uploads/{id}` | | 204 |
//! | `GET /v1/parts/{disk}/{file}/{segment}/{part}?first=B&count=N` | | the blocks' bytes, checksums verified, `x-wormfs-crc32c` over the body |

use serde::{Deserialize, Serialize};

use wormfs_parts::ids::{DiskId, FileId};

/// Bytes of part data per upload request (a chunk is applied whole or not at all, so an
/// interrupted upload resumes at a chunk boundary).
pub const CHUNK: usize = 1 << 20;
/// The largest chunk a server accepts.
pub const MAX_CHUNK: usize = 8 << 20;
/// The header carrying the CRC-32C of a block response's body.
pub const CRC_HEADER: &str = "x-wormfs-crc32c";

/// A disk a node offers for new parts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiskOffer {
    /// The disk.
    pub disk_id: DiskId,
    /// Its failure domain on its node.
    pub fs_dev: u64,
    /// Bytes free for parts (after the reserve).
    pub free_bytes: u64,
    /// The filesystem's size (0 from a node that did not say).
    #[serde(default)]
    pub total_bytes: u64,
    /// Whether it takes new parts now.
    pub writable: bool,
    /// Why not, when it does not.
    pub reason: String,
    /// Its state as its node sees it (absent from a node that did not say).
    #[serde(default)]
    pub state: Option<wormfs_parts::disk::DiskState>,
    /// Where its filesystem is mounted on its node (absent where unknown).
    #[serde(default)]
    pub mount: Option<wormfs_parts::disk::MountInfo>,
}

/// Starts a part on a disk of the serving node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewUpload {
    /// The disk.
    pub disk_id: DiskId,
    /// The file.
    pub file_id: FileId,
    /// The segment.
    pub segment: u32,
    /// The part.
    pub part: u16,
    /// The front region's length.
    pub header_len: u32,
    /// The block size.
    pub block_size: u32,
    /// Bytes the part will take, checked against the disk's free space.
    pub expected_bytes: u64,
}

/// An upload started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UploadCreated {
    /// Its id on the serving node.
    pub upload: u64,
}

/// Where an upload stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UploadOffset {
    /// Bytes of part data received and written.
    pub offset: u64,
}
