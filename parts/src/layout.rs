//! Segment geometry: how a file's bytes map onto segments, rows, blocks and parts.
//!
//! A segment holds up to `k x part_capacity` bytes. Inside it the bytes are cut into rows of `k`
//! blocks of `block_size` bytes: block `j` of row `r` sits at data offset `r x block_size` in data
//! part `j`. Every EC block is stored at full size (the last row is zero-padded); a copy stores
//! exactly the segment's bytes.

use serde::{Deserialize, Serialize};

use crate::codec::CodecId;
use crate::policy::Policy;

/// The fixed shape of a file's segments, chosen when the file is first written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    /// The code that made the parity (or `Replica` for copies).
    pub codec: CodecId,
    /// Data parts per segment (1 for copies).
    pub k: u16,
    /// Parity parts per segment (n-1 for copies).
    pub m: u16,
    /// Block size in bytes, a multiple of 64.
    pub block_size: u32,
    /// Most bytes of data one part holds.
    pub part_capacity: u64,
}

/// Where one block of a file lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockAddr {
    /// Row within the segment (also the block index within each part).
    pub row: u64,
    /// Data part holding the block (`0..k`).
    pub part: u16,
}

impl Geometry {
    /// The geometry for a resolved policy.
    pub fn for_policy(policy: Policy, block_size: u32, part_capacity: u64) -> Self {
        match policy {
            Policy::Ec { k, m } => Self {
                codec: CodecId::RsSimdGf16,
                k,
                m,
                block_size,
                part_capacity,
            },
            Policy::Copies { n } => Self {
                codec: CodecId::Replica,
                k: 1,
                m: n - 1,
                block_size,
                part_capacity,
            },
        }
    }

    /// Total parts per segment.
    pub fn width(&self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }

    /// Bytes of one row (`k` blocks).
    pub fn row_bytes(&self) -> u64 {
        u64::from(self.k) * u64::from(self.block_size)
    }

    /// Most logical bytes per segment.
    pub fn segment_capacity(&self) -> u64 {
        u64::from(self.k) * self.part_capacity
    }

    /// Most blocks one part can hold.
    pub fn max_blocks_per_part(&self) -> u64 {
        self.part_capacity.div_ceil(u64::from(self.block_size))
    }

    /// Rows in a segment of `len` bytes.
    pub fn rows(&self, len: u64) -> u64 {
        len.div_ceil(self.row_bytes())
    }

    /// Bytes stored in each part of a segment of `len` bytes.
    pub fn part_data_len(&self, segment_len: u64) -> u64 {
        match self.codec {
            CodecId::Replica => segment_len,
            CodecId::RsSimdGf16 => self.rows(segment_len) * u64::from(self.block_size),
        }
    }

    /// The block holding byte `offset` of a segment.
    pub fn block_of(&self, offset: u64) -> BlockAddr {
        let row = offset / self.row_bytes();
        let part = ((offset % self.row_bytes()) / u64::from(self.block_size)) as u16;
        BlockAddr { row, part }
    }

    /// Offset within the segment of the first byte of block `addr`.
    pub fn block_start(&self, addr: BlockAddr) -> u64 {
        addr.row * self.row_bytes() + u64::from(addr.part) * u64::from(self.block_size)
    }

    /// Whether this geometry is a plain copy set.
    pub fn is_replica(&self) -> bool {
        self.codec == CodecId::Replica
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_mapping() {
        let g = Geometry::for_policy(Policy::Ec { k: 4, m: 2 }, 1024, 8192);
        assert_eq!(g.segment_capacity(), 32768);
        assert_eq!(g.block_of(0), BlockAddr { row: 0, part: 0 });
        assert_eq!(g.block_of(1023), BlockAddr { row: 0, part: 0 });
        assert_eq!(g.block_of(1024), BlockAddr { row: 0, part: 1 });
        assert_eq!(g.block_of(4096 + 3000), BlockAddr { row: 1, part: 2 });
        assert_eq!(g.block_start(BlockAddr { row: 1, part: 2 }), 4096 + 2048);
        assert_eq!(g.part_data_len(4097), 2048);
        let c = Geometry::for_policy(Policy::Copies { n: 3 }, 1024, 8192);
        assert_eq!((c.k, c.m, c.width()), (1, 2, 3));
        assert_eq!(c.part_data_len(4097), 4097);
    }
}
