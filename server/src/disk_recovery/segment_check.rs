//! Reassembling a segment from the parts on this machine's disks and checking its BLAKE3
//! (docs/chunk-format.md, sections 4, 5 and 10): data parts when all are there, otherwise
//! any `k` verified parts decoded a few rows at a time, so memory stays bounded.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{bail, Context};

use wormfs_parts::codec::CodecId;
use wormfs_parts::part_format::PartHeader;
use wormfs_parts::part_io::{read_front_region, FrontRegion};

/// A part on a disk this machine reads.
#[derive(Clone, Debug)]
pub struct LocalPart {
    /// Its file.
    pub path: PathBuf,
    /// Its header (verified by the scan).
    pub header: PartHeader,
}

struct Opened {
    file: File,
    header: PartHeader,
    table: Vec<u32>,
}

fn open(p: &LocalPart) -> anyhow::Result<Opened> {
    let file = File::open(&p.path).with_context(|| format!("open {}", p.path.display()))?;
    let FrontRegion { header, table, .. } = read_front_region(&file)?;
    Ok(Opened {
        file,
        header,
        table,
    })
}

impl Opened {
    /// Blocks `first..end`, each checked against its CRC.
    fn blocks(&self, first: u64, end: u64) -> anyhow::Result<Vec<u8>> {
        let b = u64::from(self.header.block_size);
        let len: u64 = (first..end).map(|i| self.header.stored_block_len(i)).sum();
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, u64::from(self.header.header_len) + first * b)
            .context("the part is shorter than its header says")?;
        let mut at = 0usize;
        for i in first..end {
            let n = self.header.stored_block_len(i) as usize;
            if crc32c::crc32c(&buf[at..at + n]) != self.table[i as usize] {
                bail!("block {i} does not match its checksum");
            }
            at += n;
        }
        Ok(buf)
    }
}

/// Bytes of part data decoded per step.
const STEP_BYTES: u64 = 8 << 20;

/// Why a segment did not read back here, and which of the parts given were bad.
#[derive(Debug)]
pub struct SegmentFault {
    /// What went wrong, in words.
    pub why: String,
    /// Parts that failed (unreadable, a block that does not match its checksum, a copy whose
    /// BLAKE3 differs); the others may still be good.
    pub bad: Vec<u16>,
}

/// Reads the segment from `parts` (all of one segment and one version) and checks its BLAKE3.
pub fn check_segment(parts: &[LocalPart]) -> Result<(), SegmentFault> {
    let Some(first) = parts.first() else {
        return Err(SegmentFault {
            why: "no part of the segment is on the disks scanned here".into(),
            bad: Vec::new(),
        });
    };
    let h = &first.header;
    let want = blake3::Hash::from_bytes(h.segment_blake3);
    let mut why = Vec::new();
    let mut bad = Vec::new();
    if h.codec == CodecId::Replica {
        for p in parts {
            match open(p).and_then(|o| {
                let data = o.blocks(0, o.header.block_count())?;
                Ok(blake3::hash(&data[..o.header.segment_data_len as usize]))
            }) {
                Ok(got) if got == want => return Ok(()),
                Ok(_) => why.push(format!("copy {}: BLAKE3 differs", p.header.part_index)),
                Err(e) => why.push(format!("copy {}: {e:#}", p.header.part_index)),
            }
            bad.push(p.header.part_index);
        }
        return Err(SegmentFault {
            why: format!("no copy reads back whole: {}", why.join("; ")),
            bad,
        });
    }
    let (k, m) = (usize::from(h.k), usize::from(h.m));
    let mut usable: Vec<Option<Opened>> = (0..k + m).map(|_| None).collect();
    for p in parts {
        let i = usize::from(p.header.part_index);
        if i < k + m && usable[i].is_none() {
            match open(p) {
                Ok(o) => usable[i] = Some(o),
                Err(e) => {
                    why.push(format!("part {i}: {e:#}"));
                    bad.push(i as u16);
                }
            }
        }
    }
    loop {
        let have = usable.iter().filter(|o| o.is_some()).count();
        if have < k {
            return Err(SegmentFault {
                why: format!(
                    "{have} of the {k} parts needed read back here{}",
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", why.join("; "))
                    }
                ),
                bad,
            });
        }
        match hash_ec(&usable, k, m, h) {
            Ok(got) if got == want => return Ok(()),
            Ok(_) => {
                // Every part read verified block by block: the parts disagree with their
                // header's hash, which no choice of parts here can fix.
                return Err(SegmentFault {
                    why: "the segment decodes, but its BLAKE3 differs from its header's".into(),
                    bad: (0..(k + m) as u16).collect(),
                });
            }
            Err((i, e)) => {
                why.push(format!("part {i}: {e:#}"));
                bad.push(i as u16);
                usable[i] = None;
            }
        }
    }
}

/// The BLAKE3 of an erasure-coded segment from `k` of `usable`; a failing part is returned
/// with its index so the caller can try without it.
fn hash_ec(
    usable: &[Option<Opened>],
    k: usize,
    m: usize,
    h: &PartHeader,
) -> Result<blake3::Hash, (usize, anyhow::Error)> {
    let b = u64::from(h.block_size);
    let rows = h.part_data_len / b;
    let step = (STEP_BYTES / (b * k as u64)).max(1);
    // Data parts first: with all of them there is nothing to decode.
    let mut chosen: Vec<usize> = (0..k + m).filter(|&i| usable[i].is_some()).collect();
    chosen.truncate(k);
    let mut hasher = blake3::Hasher::new();
    let mut left = h.segment_data_len;
    let mut r0 = 0;
    while r0 < rows && left > 0 {
        let r1 = (r0 + step).min(rows);
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; k + m];
        for &i in &chosen {
            let o = usable[i].as_ref().expect("chosen parts are usable");
            shards[i] = Some(o.blocks(r0, r1).map_err(|e| (i, e))?);
        }
        let decoded;
        let data: Vec<&[u8]> = if shards[..k].iter().all(Option::is_some) {
            shards[..k].iter().flatten().map(Vec::as_slice).collect()
        } else {
            let views: Vec<Option<&[u8]>> = shards.iter().map(|s| s.as_deref()).collect();
            decoded = wormfs_parts::codec::reconstruct_data(k, m, &views)
                .map_err(|e| (chosen[0], anyhow::anyhow!("decode: {e}")))?;
            decoded.iter().map(Vec::as_slice).collect()
        };
        for row in 0..(r1 - r0) as usize {
            for shard in &data {
                let block = &shard[row * b as usize..(row + 1) * b as usize];
                let n = (block.len() as u64).min(left) as usize;
                hasher.update(&block[..n]);
                left -= n as u64;
            }
        }
        r0 = r1;
    }
    Ok(hasher.finalize())
}
