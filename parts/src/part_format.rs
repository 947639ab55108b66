//! The part file format (specified in docs/chunk-format.md), versions 1 and 2.
//!
//! A part file is a front region of `header_len` bytes holding the header and the table of one
//! crc32c per block, followed by the part's data. All integers are little-endian. The header is
//! written last (the data is streamed first), so a part whose header checksum does not verify is
//! treated as absent.
//!
//! Both versions share the first 128 bytes field for field, so a reader learns the version (and
//! `header_len`) before it knows the layout of the rest:
//!
//! - **Version 1** (read only): a fixed 2048-byte header (the path in a 1024-byte field), the
//!   table from byte 2048, `header_len` a multiple of 4096.
//! - **Version 2** (written by this code): the path (`path_len` bytes, zero-padded to a multiple
//!   of 4), then `table_crc` and `header_crc`, then the table; `header_len` is at least the end of
//!   the table (see [`front_region_len`] for how writers size it). A part of a small file has a
//!   front region of a few hundred bytes instead of 4096.
//!
//! Readers go through [`crate::part_io::read_front_region`], which reads and verifies either
//! version from an open file.

use crate::codec::CodecId;
use crate::ids::{ClusterId, FileId};

/// The 8 magic bytes at the start of every part file.
pub const MAGIC: &[u8; 8] = b"WORMPART";
/// The format version written by this code.
pub const FORMAT_VERSION: u16 = 2;
/// The first format version, no longer written, read forever.
pub const FORMAT_VERSION_1: u16 = 1;
/// Bytes of the fixed fields both versions share (`magic` .. `segment_blake3`).
pub const FIXED_LEN: usize = 128;
/// Offset of the write-time path field.
const PATH_OFFSET: usize = 128;
/// Room for the write-time path (longer paths are truncated at a character boundary).
pub const PATH_MAX_BYTES: usize = 1024;
/// Version 1: offset of the crc32c of the block table.
const V1_TABLE_CRC_OFFSET: usize = 1152;
/// Version 1: offset of the header crc32c (which covers bytes `0..1156`).
const V1_HEADER_CRC_OFFSET: usize = 1156;
/// Version 1: offset of the block table (and length of the header).
pub const V1_TABLE_OFFSET: usize = 2048;
/// Version 1: alignment of the front region. Version 2 writers use it for parts of more than
/// [`PAGE_ALIGN_ABOVE`] bytes of data.
pub const REGION_ALIGN: usize = 4096;
/// Version 2: parts expected to hold more than this many data bytes get a front region rounded
/// up to [`REGION_ALIGN`], so their data stays page-aligned.
pub const PAGE_ALIGN_ABOVE: u64 = 64 * 1024;
/// The largest `header_len` either version allows: the version-1 region of a table of 16 Mi
/// blocks (1 GiB parts of 64-byte blocks). Readers refuse larger values before reading them.
pub const MAX_REGION_LEN: u32 = 64 * 1024 * 1024 + 4096;
/// Bytes a reader reads first: a whole header of either version (at most 2048 bytes), and the
/// whole front region of most parts.
pub const HEADER_PROBE_LEN: usize = 4096;

/// Version 2: offset of `table_crc` for a path of `path_len` bytes; `header_crc` follows it and
/// the block table starts 8 bytes after it.
pub fn v2_table_crc_offset(path_len: usize) -> usize {
    PATH_OFFSET + path_len.next_multiple_of(4)
}

/// Version 2: offset of the block table for a path of `path_len` bytes (a multiple of 4).
pub fn v2_table_offset(path_len: usize) -> usize {
    v2_table_crc_offset(path_len) + 8
}

/// Everything the header of a part records.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartHeader {
    /// The codec of the segment.
    pub codec: CodecId,
    /// Length of the front region; data starts here. Chosen by the writer before it writes the
    /// data ([`front_region_len`]).
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

/// Version 1's front region length for a part that can hold up to `max_blocks` blocks:
/// `round_up(2048 + 4 * max_blocks, 4096)`. A version-2 header always fits in it (whatever the
/// path), but [`front_region_len`] is what writers should use: it is much smaller for small parts.
pub fn region_len(max_blocks: u64) -> u32 {
    let raw = (V1_TABLE_OFFSET as u64)
        .saturating_add(max_blocks.saturating_mul(4))
        .min(u64::from(u32::MAX));
    let len = raw.div_ceil(REGION_ALIGN as u64) * REGION_ALIGN as u64;
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// The `header_len` a writer chooses for a version-2 part, before writing its data:
///
/// ```text
/// raw = 136 + round_up(len(path), 4) + 4 * max_blocks     (path cut at 1024 bytes)
/// header_len = round_up(raw, 4096)  if part_data_estimate > 64 KiB
///            = raw                  otherwise
/// ```
///
/// - `max_blocks` MUST be at least the number of blocks the part will hold: the exact count when
///   the part's length is known (`ceil(part_data_len / block_size)`), otherwise the most a part
///   can hold (`Geometry::max_blocks_per_part`).
/// - `path` is the path that will go in the header. If [`PartHeader::encode`] is later given a
///   longer one, it is cut (at a character boundary) to what fits, never an error.
/// - `part_data_estimate` is the data the part is expected to hold; it only decides the rounding,
///   so big parts keep page-aligned data and small parts waste nothing.
pub fn front_region_len(max_blocks: u64, path: &str, part_data_estimate: u64) -> u32 {
    let path_len = truncate_at_char_boundary(path, PATH_MAX_BYTES).len();
    let raw = (v2_table_offset(path_len) as u64)
        .saturating_add(max_blocks.saturating_mul(4))
        .min(u64::from(u32::MAX));
    let len = if part_data_estimate > PAGE_ALIGN_ABOVE {
        raw.div_ceil(REGION_ALIGN as u64) * REGION_ALIGN as u64
    } else {
        raw
    };
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl PartHeader {
    /// Number of blocks stored in the part.
    pub fn block_count(&self) -> u64 {
        self.part_data_len.div_ceil(u64::from(self.block_size))
    }

    /// Serialises the front region (header and block table) in the current format (version 2),
    /// exactly `header_len` bytes.
    ///
    /// The path is cut at a character boundary to at most [`PATH_MAX_BYTES`] and to what fits
    /// in `header_len` with the table (so a path longer than the one the region was sized for
    /// is shortened, not refused). Fails when the table alone does not fit, when `header_len`
    /// is over [`MAX_REGION_LEN`], or when `block_crcs` does not have one entry per block.
    pub fn encode(&self, block_crcs: &[u32]) -> Result<Vec<u8>, FormatError> {
        let n = self.check_table(block_crcs)?;
        let hl = self.header_len as usize;
        let fixed = v2_table_offset(0) + 4 * n;
        if self.header_len > MAX_REGION_LEN || hl < fixed {
            return Err(FormatError::Invalid("header_len"));
        }
        // Room for the path, in whole 4-byte words so the table stays aligned.
        let room = ((hl - fixed) & !3).min(PATH_MAX_BYTES);
        let path = truncate_at_char_boundary(&self.path, room);
        let mut b = vec![0u8; hl];
        self.put_fixed(&mut b, FORMAT_VERSION, path.len(), n);
        b[PATH_OFFSET..PATH_OFFSET + path.len()].copy_from_slice(path.as_bytes());
        let crc_at = v2_table_crc_offset(path.len());
        let table_at = v2_table_offset(path.len());
        put_table(&mut b[table_at..table_at + 4 * n], block_crcs);
        let tcrc = crc32c::crc32c(&b[table_at..table_at + 4 * n]);
        b[crc_at..crc_at + 4].copy_from_slice(&tcrc.to_le_bytes());
        let hcrc = crc32c::crc32c(&b[..crc_at + 4]);
        b[crc_at + 4..crc_at + 8].copy_from_slice(&hcrc.to_le_bytes());
        Ok(b)
    }

    /// Serialises the front region in format version 1, which this code no longer writes: for
    /// tests and tools that must produce the parts older nodes wrote. `header_len` must be a
    /// multiple of 4096 holding the 2048-byte header and the table ([`region_len`]).
    pub fn encode_v1(&self, block_crcs: &[u32]) -> Result<Vec<u8>, FormatError> {
        let n = self.check_table(block_crcs)?;
        let hl = self.header_len as usize;
        if self.header_len > MAX_REGION_LEN
            || !hl.is_multiple_of(REGION_ALIGN)
            || hl < V1_TABLE_OFFSET + 4 * n
        {
            return Err(FormatError::Invalid("header_len"));
        }
        let path = truncate_at_char_boundary(&self.path, PATH_MAX_BYTES);
        let mut b = vec![0u8; hl];
        self.put_fixed(&mut b, FORMAT_VERSION_1, path.len(), n);
        b[PATH_OFFSET..PATH_OFFSET + path.len()].copy_from_slice(path.as_bytes());
        let table = V1_TABLE_OFFSET..V1_TABLE_OFFSET + 4 * n;
        put_table(&mut b[table.clone()], block_crcs);
        let tcrc = crc32c::crc32c(&b[table]);
        b[V1_TABLE_CRC_OFFSET..V1_TABLE_CRC_OFFSET + 4].copy_from_slice(&tcrc.to_le_bytes());
        let hcrc = crc32c::crc32c(&b[..V1_HEADER_CRC_OFFSET]);
        b[V1_HEADER_CRC_OFFSET..V1_HEADER_CRC_OFFSET + 4].copy_from_slice(&hcrc.to_le_bytes());
        Ok(b)
    }

    /// The number of table entries, checked against the header's length and block size.
    fn check_table(&self, block_crcs: &[u32]) -> Result<usize, FormatError> {
        if self.block_size == 0 || block_crcs.len() as u64 != self.block_count() {
            return Err(FormatError::Invalid("block_count"));
        }
        Ok(block_crcs.len())
    }

    /// Writes the fixed fields both versions share (bytes `0..128`).
    fn put_fixed(&self, b: &mut [u8], version: u16, path_len: usize, blocks: usize) {
        b[0..8].copy_from_slice(MAGIC);
        b[8..10].copy_from_slice(&version.to_le_bytes());
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
        b[80..84].copy_from_slice(&(blocks as u32).to_le_bytes());
        b[84..86].copy_from_slice(&(path_len as u16).to_le_bytes());
        // 86..88 reserved, zero.
        b[88..96].copy_from_slice(&self.created_ms.to_le_bytes());
        b[96..128].copy_from_slice(&self.segment_blake3);
    }

    /// Parses and verifies the header (either version) from the start of a part: `b` must hold
    /// at least the whole header (version 1: 2048 bytes; version 2: up to the block table, at
    /// most 1160 bytes), and may hold more (the whole front region, the whole file). The block
    /// table is checked by [`Self::decode_table`].
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < FIXED_LEN {
            return Err(FormatError::TooShort(b.len()));
        }
        if &b[0..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let version = u16_at(b, 8);
        let path_len = usize::from(u16_at(b, 84));
        // Where the block table starts (the header ends there).
        let table_at = match version {
            FORMAT_VERSION_1 => {
                if b.len() < V1_TABLE_OFFSET {
                    return Err(FormatError::TooShort(b.len()));
                }
                if crc32c::crc32c(&b[..V1_HEADER_CRC_OFFSET]) != u32_at(b, V1_HEADER_CRC_OFFSET) {
                    return Err(FormatError::HeaderChecksum);
                }
                if path_len > PATH_MAX_BYTES {
                    return Err(FormatError::Invalid("path_len"));
                }
                V1_TABLE_OFFSET
            }
            FORMAT_VERSION => {
                // The checksum's place depends on `path_len`: a damaged one is refused here,
                // or finds no matching checksum below.
                if path_len > PATH_MAX_BYTES {
                    return Err(FormatError::Invalid("path_len"));
                }
                let crc_at = v2_table_crc_offset(path_len);
                let end = v2_table_offset(path_len);
                if b.len() < end {
                    return Err(FormatError::TooShort(b.len()));
                }
                if crc32c::crc32c(&b[..crc_at + 4]) != u32_at(b, crc_at + 4) {
                    return Err(FormatError::HeaderChecksum);
                }
                end
            }
            v => return Err(FormatError::UnsupportedVersion(v)),
        };
        let codec = CodecId::from_u16(u16_at(b, 10)).ok_or(FormatError::Invalid("codec"))?;
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
        if u64::from(u32_at(b, 80)) != h.block_count() {
            return Err(FormatError::Invalid("block_count"));
        }
        let aligned = version != FORMAT_VERSION_1 || (h.header_len as usize).is_multiple_of(4096);
        if !aligned
            || h.header_len > MAX_REGION_LEN
            || u64::from(h.header_len) < table_at as u64 + 4 * h.block_count()
        {
            return Err(FormatError::Invalid("header_len"));
        }
        Ok(h)
    }

    /// Parses and verifies the block table from the whole front region (at least `header_len`
    /// bytes from the start of the part; the version and path length are taken from it).
    pub fn decode_table(&self, region: &[u8]) -> Result<Vec<u32>, FormatError> {
        if region.len() < FIXED_LEN || region.len() < self.header_len as usize {
            return Err(FormatError::TooShort(region.len()));
        }
        let (crc_at, table_at) = match u16_at(region, 8) {
            FORMAT_VERSION_1 => (V1_TABLE_CRC_OFFSET, V1_TABLE_OFFSET),
            FORMAT_VERSION => {
                let path_len = usize::from(u16_at(region, 84)).min(PATH_MAX_BYTES);
                (v2_table_crc_offset(path_len), v2_table_offset(path_len))
            }
            v => return Err(FormatError::UnsupportedVersion(v)),
        };
        let end = table_at + 4 * self.block_count() as usize;
        if region.len() < end {
            return Err(FormatError::TooShort(region.len()));
        }
        let table = &region[table_at..end];
        if crc32c::crc32c(table) != u32_at(region, crc_at) {
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

/// The format version of a part from its first bytes (at least 10), if it is a part at all.
pub fn format_version_of(b: &[u8]) -> Option<u16> {
    (b.len() >= 10 && &b[0..8] == MAGIC).then(|| u16_at(b, 8))
}

/// Verifies a whole front region (the first `header_len` bytes of a part, or more) of either
/// version: its header, then its table.
pub fn decode_front_region(region: &[u8]) -> Result<(PartHeader, Vec<u32>), FormatError> {
    let header = PartHeader::decode(region)?;
    let table = header.decode_table(region)?;
    Ok((header, table))
}

fn put_table(dst: &mut [u8], crcs: &[u32]) {
    for (d, c) in dst.chunks_exact_mut(4).zip(crcs) {
        d.copy_from_slice(&c.to_le_bytes());
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
    use crate::part_io::{read_front_region, FrontRegion, PartReadError};

    const FILM: &str = "/films/Le Voyage dans la Lune (1902).mkv";

    fn sample() -> PartHeader {
        PartHeader {
            codec: CodecId::RsSimdGf16,
            header_len: front_region_len(256, FILM, 262_144),
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
            path: FILM.into(),
        }
    }

    /// A one-block copy of `data`, its header sized by [`front_region_len`].
    fn copy_of(data: &[u8], path: &str) -> (PartHeader, Vec<u32>) {
        let h = PartHeader {
            codec: CodecId::Replica,
            header_len: front_region_len(1, path, data.len() as u64),
            cluster_id: ClusterId::random(),
            file_id: FileId::mint(),
            segment_index: 0,
            part_index: 1,
            k: 1,
            m: 2,
            block_size: 4096,
            segment_data_len: data.len() as u64,
            part_data_len: data.len() as u64,
            created_ms: 1_700_000_000_000,
            segment_blake3: *blake3_stub(data),
            path: path.into(),
        };
        (h, vec![crc32c::crc32c(data)])
    }

    /// Any 32 bytes will do for the format; not the real hash (blake3 is not a dependency).
    fn blake3_stub(data: &[u8]) -> &'static [u8; 32] {
        if data.is_empty() {
            &[0; 32]
        } else {
            &[9; 32]
        }
    }

    /// Writes a part file (front region then data) and reads it back through the one reader.
    fn through_file(region: &[u8], data: &[u8]) -> Result<FrontRegion, PartReadError> {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, region).unwrap();
        std::io::Write::write_all(&mut f, data).unwrap();
        read_front_region(&f)
    }

    /// Recomputes a version-2 header's checksum after a test edited a field.
    fn reseal_v2(b: &mut [u8]) {
        let at = v2_table_crc_offset(usize::from(u16_at(b, 84)));
        let crc = crc32c::crc32c(&b[..at + 4]);
        b[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn v2_round_trips() {
        let h = sample();
        assert_eq!(
            h.header_len, 4096,
            "a part of more than 64 KiB keeps page-aligned data"
        );
        let region = h.encode(&[0xdead_beef]).unwrap();
        assert_eq!(region.len(), 4096);
        assert_eq!(format_version_of(&region), Some(2));
        let back = PartHeader::decode(&region).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.decode_table(&region).unwrap(), vec![0xdead_beef]);
        // The table follows the path and the two checksums, 4-byte aligned.
        let at = v2_table_offset(FILM.len());
        assert_eq!(at, 128 + 40 + 8);
        assert_eq!(u32_at(&region, at), 0xdead_beef);
        // The header alone (up to the table) is enough to decode it.
        assert_eq!(PartHeader::decode(&region[..at]).unwrap(), h);
        assert_eq!(
            PartHeader::decode(&region[..at - 1]),
            Err(FormatError::TooShort(at - 1))
        );
        // Through a file, as readers see it.
        let got = through_file(&region, &[0; 16]).unwrap();
        assert_eq!(
            (got.header, got.table, got.version),
            (h, vec![0xdead_beef], 2)
        );
    }

    #[test]
    fn v1_parts_are_still_read() {
        let mut h = sample();
        h.header_len = region_len(256);
        let region = h.encode_v1(&[0x0123_4567]).unwrap();
        assert_eq!(region.len(), 4096);
        assert_eq!(format_version_of(&region), Some(1));
        assert_eq!(u32_at(&region, V1_TABLE_OFFSET), 0x0123_4567);
        let back = PartHeader::decode(&region).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.decode_table(&region).unwrap(), vec![0x0123_4567]);
        assert_eq!(
            decode_front_region(&region).unwrap(),
            (h.clone(), vec![0x0123_4567])
        );
        let got = through_file(&region, &[1; 100]).unwrap();
        assert_eq!(
            (got.header, got.table, got.version),
            (h.clone(), vec![0x0123_4567], 1)
        );
        // A version-1 region larger than the first read (a table of 2000 blocks).
        h.part_data_len = 2000 * u64::from(h.block_size);
        h.header_len = region_len(2000);
        assert_eq!(h.header_len, 12_288);
        let crcs: Vec<u32> = (0..2000).collect();
        let got = through_file(&h.encode_v1(&crcs).unwrap(), &[]).unwrap();
        assert_eq!((got.header, got.table, got.version), (h.clone(), crcs, 1));
        // Version 1 still refuses a front region that is not a multiple of 4096.
        h.header_len = 12_288 + 4;
        assert!(h.encode_v1(&(0..2000).collect::<Vec<_>>()).is_err());
    }

    #[test]
    fn v1_damage_is_detected() {
        let mut h = sample();
        h.header_len = region_len(256);
        let region = h.encode_v1(&[0xdead_beef]).unwrap();
        for flip in [0usize, 20, 60, 130, 1155] {
            let mut bad = region.clone();
            bad[flip] ^= 1;
            assert!(PartHeader::decode(&bad).is_err(), "flip at {flip}");
        }
        let mut bad = region.clone();
        bad[V1_TABLE_OFFSET] ^= 1;
        assert_eq!(h.decode_table(&bad), Err(FormatError::TableChecksum));
    }

    #[test]
    fn v2_damage_is_detected_in_header_path_and_table() {
        let h = sample();
        let crcs: Vec<u32> = vec![0x1111_2222];
        let region = h.encode(&crcs).unwrap();
        let crc_at = v2_table_crc_offset(FILM.len());
        let table_at = v2_table_offset(FILM.len());
        let mut flips = vec![
            0usize, 8, 12, 20, 40, 50, 53, 60, 66, 75, 80, 84, 85, 90, 100, 127,
        ];
        flips.extend(128..crc_at + 8); // the path, its padding and both checksums
        for flip in flips {
            let mut bad = region.clone();
            bad[flip] ^= 0x10;
            assert!(
                decode_front_region(&bad).is_err(),
                "flip at {flip} not detected"
            );
        }
        let mut bad = region.clone();
        bad[8] = 3;
        assert_eq!(
            PartHeader::decode(&bad),
            Err(FormatError::UnsupportedVersion(3))
        );
        let mut bad = region.clone();
        bad[0] = b'X';
        assert_eq!(PartHeader::decode(&bad), Err(FormatError::BadMagic));
        for flip in table_at..table_at + 4 {
            let mut bad = region.clone();
            bad[flip] ^= 1;
            assert_eq!(
                PartHeader::decode(&bad).as_ref(),
                Ok(&h),
                "the header is intact"
            );
            assert_eq!(h.decode_table(&bad), Err(FormatError::TableChecksum));
        }
        // The zero padding after the table is covered by no checksum.
        let mut pad = region.clone();
        pad[4000] = 1;
        assert!(decode_front_region(&pad).is_ok());
        // A region cut short of its `header_len`.
        assert_eq!(
            h.decode_table(&region[..4095]),
            Err(FormatError::TooShort(4095))
        );
        assert!(matches!(
            through_file(&region[..4000], &[]),
            Err(PartReadError::Format(FormatError::TooShort(4000)))
        ));
        assert!(matches!(
            through_file(&region[..100], &[]),
            Err(PartReadError::Format(FormatError::TooShort(100)))
        ));
        assert!(matches!(
            through_file(&[], &[]),
            Err(PartReadError::Format(FormatError::TooShort(0)))
        ));
    }

    #[test]
    fn v2_refuses_impossible_header_lens() {
        let (h, crcs) = copy_of(b"abc", "/x");
        let good = h.encode(&crcs).unwrap();
        assert_eq!(good.len(), 128 + 4 + 8 + 4);
        let with_len = |len: u32| {
            let mut b = good.clone();
            b[12..16].copy_from_slice(&len.to_le_bytes());
            reseal_v2(&mut b);
            b.resize(good.len().max(len as usize).min(1 << 20), 0);
            PartHeader::decode(&b)
        };
        assert!(with_len(good.len() as u32).is_ok());
        assert!(
            with_len(good.len() as u32 + 1).is_ok(),
            "v2 needs no alignment"
        );
        assert_eq!(
            with_len(good.len() as u32 - 1),
            Err(FormatError::Invalid("header_len")),
            "a table that ends past the region"
        );
        assert_eq!(with_len(0), Err(FormatError::Invalid("header_len")));
        assert_eq!(
            with_len(MAX_REGION_LEN + 1),
            Err(FormatError::Invalid("header_len"))
        );
        // The writer refuses too: a table that does not fit is an error, not a panic.
        let mut small = h.clone();
        small.header_len = 128 + 8 + 3;
        assert_eq!(small.encode(&crcs), Err(FormatError::Invalid("header_len")));
        assert_eq!(h.encode(&[1, 2]), Err(FormatError::Invalid("block_count")));
        // A path_len past the limit.
        let mut b = good.clone();
        b[84..86].copy_from_slice(&1025u16.to_le_bytes());
        assert_eq!(
            PartHeader::decode(&b),
            Err(FormatError::Invalid("path_len"))
        );
    }

    #[test]
    fn tiny_part_is_shorter_than_2048_bytes_and_reads() {
        let data = [0x5a_u8];
        let (h, crcs) = copy_of(&data, "/notes/a.txt");
        let region = h.encode(&crcs).unwrap();
        assert_eq!(region.len(), h.header_len as usize);
        let file_len = region.len() + data.len();
        assert!(file_len < 2048, "{file_len}");
        let got = through_file(&region, &data).unwrap();
        assert_eq!(got.version, FORMAT_VERSION);
        assert_eq!(got.header, h);
        assert_eq!(got.table, vec![crc32c::crc32c(&data)]);
        assert_eq!(got.header.stored_block_len(0), 1);
    }

    #[test]
    fn sizes() {
        // A 3000-byte copy with a 30-byte path: one block, a front region under 200 bytes.
        let path = "/photos/2024/holiday/img01.jpg";
        assert_eq!(path.len(), 30);
        let data = vec![3u8; 3000];
        let (h, crcs) = copy_of(&data, path);
        assert_eq!(h.header_len, 128 + 32 + 8 + 4);
        assert!(h.header_len < 200);
        assert_eq!(h.encode(&crcs).unwrap().len(), 172);
        // Big parts keep page-aligned data: 64 MiB parts of 256 KiB blocks, 4 KiB blocks.
        assert_eq!(front_region_len(256, FILM, 64 << 20), 4096);
        assert_eq!(front_region_len(16_384, FILM, 64 << 20), 4096 * 17);
        assert_eq!(front_region_len(16, FILM, 64 * 1024), 128 + 40 + 8 + 64);
        assert_eq!(front_region_len(17, FILM, 64 * 1024 + 1), 4096);
        // The path counts as written: cut at 1024 bytes.
        assert_eq!(
            front_region_len(0, &"a".repeat(5000), 0),
            (128 + 1024 + 8) as u32
        );
        // Version 1's sizing, kept for writers not yet switched, holds any version-2 header.
        assert_eq!(region_len(16), 4096);
        assert_eq!(region_len(512), 4096);
        assert_eq!(region_len(513), 8192);
        assert_eq!(region_len(u64::MAX), u32::MAX);
        assert_eq!(front_region_len(u64::MAX, FILM, u64::MAX), u32::MAX);
        let mut big = sample();
        big.header_len = region_len(1);
        big.path = "é".repeat(800);
        let back = PartHeader::decode(&big.encode(&[1]).unwrap()).unwrap();
        assert_eq!(back.path.len(), 1024);
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
        for region in [h.encode(&[1]).unwrap(), h.encode_v1(&[1]).unwrap()] {
            let back = PartHeader::decode(&region).unwrap();
            assert!(back.path.len() <= PATH_MAX_BYTES);
            assert!(back.path.len() >= PATH_MAX_BYTES - 1);
            assert!(back.path.chars().all(|c| c == 'é'));
        }
    }

    #[test]
    fn a_path_longer_than_sized_for_is_cut_to_fit() {
        // Sized for a 6-byte path (8 bytes of room); finished with a longer one.
        let (mut h, crcs) = copy_of(b"hello", "/a/b.c");
        assert_eq!(h.header_len, 128 + 8 + 8 + 4);
        h.path = "/a/ééééé.txt".into();
        let region = h.encode(&crcs).unwrap();
        assert_eq!(region.len(), h.header_len as usize);
        let (back, table) = decode_front_region(&region).unwrap();
        assert_eq!(
            back.path, "/a/éé",
            "cut at the last char boundary within 8 bytes"
        );
        assert_eq!(table, crcs);
        assert_eq!(back.header_len, h.header_len);
        // No room at all for a path: the part is still written, with an empty one.
        h.header_len = 128 + 8 + 4 + 3;
        let (back, _) = decode_front_region(&h.encode(&crcs).unwrap()).unwrap();
        assert_eq!(back.path, "");
    }
}
