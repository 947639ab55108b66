//! The metadata backup file (`.wmb`): a self-describing, checksummed copy of the namespace
//! database, written to data disks so that `wormfs recover --from-disks` can start from it.
//!
//! ```text
//! 0..8            magic "WORMMETA"
//! 8..10           format version, u16 little-endian (1)
//! 10..14          header length L, u32 little-endian (at most 64 KiB)
//! 14..14+L        the header, JSON (BackupHeader)
//! 14+L..18+L      CRC-32C of bytes 0..14+L
//! 18+L..          the SQLite database, db_len bytes, whose BLAKE3 is db_blake3
//! ```

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use wormfs_parts::ids::{ClusterId, NodeId};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"WORMMETA";
/// The format this version writes and reads.
pub const FORMAT: u16 = 1;
/// The folder on each data disk.
pub const DIR: &str = "meta-backups";
/// The extension of a finished backup.
pub const EXT: &str = "wmb";
const MAX_HEADER: u32 = 64 * 1024;

/// What a backup says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The cluster.
    pub cluster_id: ClusterId,
    /// The machine that wrote it.
    pub node_id: NodeId,
    /// The Raft log index of the last entry the copy holds.
    pub log_index: u64,
    /// That entry's term.
    pub log_term: u64,
    /// When it was written (ms since the epoch).
    pub created_ms: u64,
    /// Bytes of the database that follows.
    pub db_len: u64,
    /// BLAKE3 of those bytes, hex.
    pub db_blake3: String,
}

impl BackupHeader {
    /// The file name a backup gets: newest sorts last.
    pub fn file_name(&self) -> String {
        format!(
            "meta-{:020}-{:013}-{:016x}.{EXT}",
            self.log_index, self.created_ms, self.node_id
        )
    }
}

/// Writes a backup of the database file `db` to `out` (header, then the bytes).
pub fn write(out: &mut impl Write, header: &BackupHeader, db: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_vec(header)?;
    let mut head = Vec::with_capacity(18 + json.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&FORMAT.to_le_bytes());
    head.extend_from_slice(&(json.len() as u32).to_le_bytes());
    head.extend_from_slice(&json);
    let crc = crc32c::crc32c(&head);
    head.extend_from_slice(&crc.to_le_bytes());
    out.write_all(&head)?;
    let mut f = std::fs::File::open(db).with_context(|| format!("open {}", db.display()))?;
    let n = std::io::copy(&mut f, out)?;
    if n != header.db_len {
        bail!("{} changed while it was copied", db.display());
    }
    Ok(())
}

/// The BLAKE3 (hex) and length of a file.
pub fn hash_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut h = blake3::Hasher::new();
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let n = std::io::copy(&mut f, &mut h)?;
    Ok((h.finalize().to_hex().to_string(), n))
}

/// Reads and checks a backup's header (magic, version, CRC), without the database.
pub fn read_header(path: &Path) -> anyhow::Result<(BackupHeader, u64)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut fixed = [0u8; 14];
    f.read_exact(&mut fixed)
        .context("shorter than a backup's header")?;
    if &fixed[..8] != MAGIC {
        bail!("not a WormFS metadata backup (no WORMMETA magic)");
    }
    let format = u16::from_le_bytes([fixed[8], fixed[9]]);
    if format != FORMAT {
        bail!("backup format {format} is unknown to this version (it reads {FORMAT})");
    }
    let len = u32::from_le_bytes([fixed[10], fixed[11], fixed[12], fixed[13]]);
    if len > MAX_HEADER {
        bail!("header length {len} is implausible");
    }
    let mut rest = vec![0u8; len as usize + 4];
    f.read_exact(&mut rest).context("the header is cut short")?;
    let (json, crc) = rest.split_at(len as usize);
    let mut all = fixed.to_vec();
    all.extend_from_slice(json);
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(&all) != want {
        bail!("the header's checksum does not match");
    }
    let header: BackupHeader = serde_json::from_slice(json).context("the header is not JSON")?;
    Ok((header, 18 + u64::from(len)))
}

/// Checks a whole backup: its header and the database's length and BLAKE3.
pub fn verify(path: &Path) -> anyhow::Result<BackupHeader> {
    let (header, offset) = read_header(path)?;
    let mut f = std::fs::File::open(path)?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))?;
    let mut h = blake3::Hasher::new();
    let n = std::io::copy(&mut f, &mut h)?;
    if n != header.db_len {
        bail!(
            "the database is {n} bytes, the header says {}",
            header.db_len
        );
    }
    if h.finalize().to_hex().as_str() != header.db_blake3 {
        bail!("the database's BLAKE3 does not match its header (the file is damaged)");
    }
    Ok(header)
}

/// Copies a verified backup's database to `dest`.
pub fn extract(path: &Path, dest: &Path) -> anyhow::Result<BackupHeader> {
    let header = verify(path)?;
    let (_, offset) = read_header(path)?;
    let mut f = std::fs::File::open(path)?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))?;
    let mut out =
        std::fs::File::create(dest).with_context(|| format!("create {}", dest.display()))?;
    std::io::copy(&mut f, &mut out)?;
    out.sync_all()?;
    // Checked again as written: the bytes read for the check may not be the bytes copied.
    let (hash, n) = hash_file(dest)?;
    if hash != header.db_blake3 || n != header.db_len {
        bail!("{} changed while it was copied", path.display());
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(db_len: u64, db_blake3: String) -> BackupHeader {
        BackupHeader {
            cluster_id: ClusterId::random(),
            node_id: 7,
            log_index: 42,
            log_term: 3,
            created_ms: 1_700_000_000_000,
            db_len,
            db_blake3,
        }
    }

    #[test]
    fn a_backup_reads_back_and_any_flipped_byte_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::write(&db, b"not really sqlite, but bytes").unwrap();
        let (hash, n) = hash_file(&db).unwrap();
        let h = header(n, hash);
        let path = dir.path().join(h.file_name());
        let mut out = std::fs::File::create(&path).unwrap();
        write(&mut out, &h, &db).unwrap();
        drop(out);
        assert_eq!(verify(&path).unwrap(), h);
        let dest = dir.path().join("out.db");
        extract(&path, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&db).unwrap());
        let good = std::fs::read(&path).unwrap();
        for i in [0, 9, 20, good.len() - 30, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(verify(&path).is_err(), "byte {i} flipped was accepted");
        }
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(verify(&path).is_err(), "a cut file was accepted");
    }
}
