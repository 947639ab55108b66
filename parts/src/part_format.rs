//! The part file format, version 1 (specified in docs/chunk-format.md).
//!
//! A part file is a front region of `header_len` bytes (a multiple of 4096) holding the header
//! and the table of one crc32c per block, followed by the part's data. All integers are
//! little-endian. The header is written last (the data is streamed first), so a part whose
//! header checksum does not verify is treated as absent.

use crate::codec::CodecId;
use crate::ids::{ClusterId, FileId};

/// The 8 magic bytes at the start of every part file.
pub const MAGIC: &[u8; 8] = b"WORMPART";
/// The format version written by this code.
pub const FORMAT_VERSION: u16 = 1;
/// Offset of the write-time path field.
const PATH_OFFSET: usize = 128;
/// Room for the write-time path (longer paths are truncated at a character boundary).
pub const PATH_MAX_BYTES: usize = 1024;
/// Offset of the crc32c of the block table.
const TABLE_CRC_OFFSET: usize = 1152;
/// Offset of the header crc32c (which covers bytes `0..1156`).
const HEADER_CRC_OFFSET: usize = 1156;
/// Offset of the block table.
pub const TABLE_OFFSET: usize = 2048;
/// Alignment of the front region.
pub const REGION_ALIGN: usize = 4096;

/// Everything the header of a part records.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartHeader {
    /// The codec of the segment.
    pub codec: CodecId,
    /// Length of the front region; data starts here.
    pub header_len: u32,
    /// The cluster the part belongs to.
    pub cluster_id: ClusterId,
    /// The file the part belongs to.
    pub file_id: FileId,
    /// Index of the segment within the file.
    pub segment_index: u32,
    /// Index of the part within the segment (`0..k` data, `k..k+m` parity; copies `0..n`).
    pub part_index: u16,
    /// Data parts per segment (1 for copies).
    pub k: u16,
    /// Parity parts per segment (n-1 for copies).
    pub m: u16,
    /// Block size in bytes.
    pub block_size: u32,
    /// Logical bytes of the segment.
    pub segment_data_len: u64,
    /// Bytes of data stored in this part after the front region.
    pub part_data_len: u64,
    /// Milliseconds since the Unix epoch when the part was written.
    pub created_ms: u64,
    /// BLAKE3 of the segment's logical bytes.
    pub segment_blake3: [u8; 32],
    /// The file's path in the tree when the part was written (for disaster recovery).
    pub path: String,
}

/// A part header or block table that does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// The file is shorter than its front region.
    #[error("part file too short ({0} bytes)")]
    TooShort(usize),
    /// The magic bytes are wrong.
    #[error("not a WormFS part file (bad magic)")]
    BadMagic,
    /// A newer format than this code knows.
    #[error("unsupported part format version {0}")]
    UnsupportedVersion(u16),
    /// The header checksum does not match.
    #[error("part header checksum mismatch")]
    HeaderChecksum,
    /// The block table checksum does not match.
    #[error("part block table checksum mismatch")]
    TableChecksum,
    /// A field holds an impossible value.
    #[error("invalid part header field {0}")]
    Invalid(&'static str),
}

/// Length of the front region for a part that can hold up to `max_blocks` blocks.
pub fn region_len(max_blocks: u64) -> u32 {
    let raw = TABLE_OFFSET as u64 + 4 * max_blocks;
    raw.div_ceil(REGION_ALIGN as u64) as u32 * REGION_ALIGN as u32
}

impl PartHeader {
    /// Number of blocks stored in the part.
    pub fn block_count(&self) -> u64 {
        self.part_data_len.div_ceil(u64::from(self.block_size))
    }

    /// Serialises the front region (header and block table), `header_len` bytes.
    pub fn encode(&self, block_crcs: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; self.header_len as usize];
        b[0..8].copy_from_slice(MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&self.codec.as_u16().to_le_bytes());
        b[12..16].copy_from_slice(&self.header_len.to_le_bytes());
        b[16..32].copy_from_slice(self.cluster_id.0.as_bytes());
        b[32..48].copy_from_slice(&self.file_id.to_bytes());
        b[48..52].copy_from_slice(&self.segment_index.to_le_bytes());
        b[52..54].copy_from_slice(&self.part_index.to_le_bytes());
        b[54..56].copy_from_slice(&self.k.to_le_bytes());
        b[56..58].copy_from_slice(&self.m.to_le_bytes());
        // 58..60 flags, zero.
        b[60..64].copy_from_slice(&self.block_size.to_le_bytes());
        b[64..72].copy_from_slice(&self.segment_data_len.to_le_bytes());
        b[72..80].copy_from_slice(&self.part_data_len.to_le_bytes());
        b[80..84].copy_from_slice(&(block_crcs.len() as u32).to_le_bytes());
        let path = truncate_at_char_boundary(&self.path, PATH_MAX_BYTES);
        b[84..86].copy_from_slice(&(path.len() as u16).to_le_bytes());
        b[88..96].copy_from_slice(&self.created_ms.to_le_bytes());
        b[96..128].copy_from_slice(&self.segment_blake3);
        b[PATH_OFFSET..PATH_OFFSET + path.len()].copy_from_slice(path.as_bytes());
        let mut table = Vec::with_capacity(block_crcs.len() * 4);
        for c in block_crcs {
            table.extend_from_slice(&c.to_le_bytes());
        }
        b[TABLE_OFFSET..TABLE_OFFSET + table.len()].copy_from_slice(&table);
        b[TABLE_CRC_OFFSET..TABLE_CRC_OFFSET + 4]
            .copy_from_slice(&crc32c::crc32c(&table).to_le_bytes());
        let hcrc = crc32c::crc32c(&b[..HEADER_CRC_OFFSET]);
        b[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&hcrc.to_le_bytes());
        b
    }

    /// Parses and verifies the fixed header from the first [`TABLE_OFFSET`] bytes of a part.
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < TABLE_OFFSET {
            return Err(FormatError::TooShort(b.len()));
        }
        if &b[0..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let version = u16_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        if crc32c::crc32c(&b[..HEADER_CRC_OFFSET]) != u32_at(b, HEADER_CRC_OFFSET) {
            return Err(FormatError::HeaderChecksum);
        }
        let codec = CodecId::from_u16(u16_at(b, 10)).ok_or(FormatError::Invalid("codec"))?;
        let path_len = usize::from(u16_at(b, 84));
        if path_len > PATH_MAX_BYTES {
            return Err(FormatError::Invalid("path_len"));
        }
        let path = std::str::from_utf8(&b[PATH_OFFSET..PATH_OFFSET + path_len])
            .map_err(|_| FormatError::Invalid("path"))?
            .to_owned();
        let mut cluster = [0u8; 16];
        cluster.copy_from_slice(&b[16..32]);
        let mut file = [0u8; 16];
        file.copy_from_slice(&b[32..48]);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&b[96..128]);
        let h = PartHeader {
            codec,
            header_len: u32_at(b, 12),
            cluster_id: ClusterId(uuid::Uuid::from_bytes(cluster)),
            file_id: FileId::from_bytes(file),
            segment_index: u32_at(b, 48),
            part_index: u16_at(b, 52),
            k: u16_at(b, 54),
            m: u16_at(b, 56),
            block_size: u32_at(b, 60),
            segment_data_len: u64_at(b, 64),
            part_data_len: u64_at(b, 72),
            created_ms: u64_at(b, 88),
            segment_blake3: hash,
            path,
        };
        if h.block_size == 0 || !h.block_size.is_multiple_of(64) {
            return Err(FormatError::Invalid("block_size"));
        }
        if h.k == 0 || h.part_index >= h.k.saturating_add(h.m) {
            return Err(FormatError::Invalid("part_index"));
        }
        if !(h.header_len as usize).is_multiple_of(REGION_ALIGN)
            || (h.header_len as u64) < TABLE_OFFSET as u64 + 4 * h.block_count()
        {
            return Err(FormatError::Invalid("header_len"));
        }
        if u64::from(u32_at(b, 80)) != h.block_count() {
            return Err(FormatError::Invalid("block_count"));
        }
        Ok(h)
    }

    /// Parses and verifies the block table from the whole front region.
    pub fn decode_table(&self, region: &[u8]) -> Result<Vec<u32>, FormatError> {
        let n = self.block_count() as usize;
        let end = TABLE_OFFSET + 4 * n;
        if region.len() < end {
            return Err(FormatError::TooShort(region.len()));
        }
        let table = &region[TABLE_OFFSET..end];
        if crc32c::crc32c(table) != u32_at(region, TABLE_CRC_OFFSET) {
            return Err(FormatError::TableChecksum);
        }
        Ok(table
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Stored length of block `b` (the last block of a copy may be short).
    pub fn stored_block_len(&self, b: u64) -> u64 {
        let bs = u64::from(self.block_size);
        (self.part_data_len - b * bs).min(bs)
    }
}

/// The file name of a part: `<file id>-s<segment>-p<part>.wp`.
pub fn part_file_name(file_id: FileId, segment: u32, part: u16) -> String {
    format!("{file_id}-s{segment}-p{part}.wp")
}

/// Parses a part file name back into its file id, segment and part.
pub fn parse_part_file_name(name: &str) -> Option<(FileId, u32, u16)> {
    let stem = name.strip_suffix(".wp")?;
    let (id, rest) = stem.split_once("-s")?;
    let (seg, part) = rest.split_once("-p")?;
    if id.len() != 32 {
        return None;
    }
    Some((id.parse().ok()?, seg.parse().ok()?, part.parse().ok()?))
}

fn truncate_at_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PartHeader {
        PartHeader {
            codec: CodecId::RsSimdGf16,
            header_len: region_len(256),
            cluster_id: ClusterId::random(),
            file_id: FileId::mint(),
            segment_index: 3,
            part_index: 5,
            k: 4,
            m: 2,
            block_size: 262_144,
            segment_data_len: 1_000_000,
            part_data_len: 262_144,
            created_ms: 1_700_000_000_000,
            segment_blake3: [7; 32],
            path: "/films/Le Voyage dans la Lune (1902).mkv".into(),
        }
    }

    #[test]
    fn header_round_trips_and_detects_damage() {
        let h = sample();
        let region = h.encode(&[0xdead_beef]);
        assert_eq!(region.len() % 4096, 0);
        let back = PartHeader::decode(&region).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.decode_table(&region).unwrap(), vec![0xdead_beef]);
        for flip in [0usize, 20, 60, 130, 1155] {
            let mut bad = region.clone();
            bad[flip] ^= 1;
            assert!(PartHeader::decode(&bad).is_err(), "flip at {flip}");
        }
        let mut bad = region.clone();
        bad[TABLE_OFFSET] ^= 1;
        assert_eq!(back.decode_table(&bad), Err(FormatError::TableChecksum));
    }

    #[test]
    fn names_round_trip() {
        let id = FileId::mint();
        let n = part_file_name(id, 12, 3);
        assert_eq!(parse_part_file_name(&n), Some((id, 12, 3)));
        assert_eq!(parse_part_file_name("x.wp"), None);
    }

    #[test]
    fn long_paths_truncate_on_char_boundary() {
        let mut h = sample();
        h.path = "é".repeat(800);
        let back = PartHeader::decode(&h.encode(&[1])).unwrap();
        assert!(back.path.len() <= PATH_MAX_BYTES);
        assert!(back.path.chars().all(|c| c == 'é'));
    }
}
