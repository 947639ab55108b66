//! An independent reader of the part file format, written from `docs/chunk-format.md` alone.
//!
//! The node (production code) writes files; the reader in [`spec`] finds the part files on the
//! disks, parses and verifies them, and reassembles the files, using only the document, the
//! `crc32c`, `blake3` and `reed-solomon-simd` crates. It deliberately does not use the server's
//! `part_format`, `part_io`, `read`, `codec` or `layout` modules: if the code and the document
//! disagree, these tests fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, ensure, Context};
use reed_solomon_simd::ReedSolomonEncoder;
use wormfs_meta::FileRecord;
use wormfs_server::node::Node;
use wormfs_server::store::Store;

/// The independent reader, following docs/chunk-format.md.
mod spec {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use reed_solomon_simd::ReedSolomonDecoder;

    pub const MAGIC: &[u8; 8] = b"WORMPART";
    pub const VERSION_1: u16 = 1;
    pub const VERSION_2: u16 = 2;
    pub const CODEC_REPLICA: u16 = 0;
    pub const CODEC_RS: u16 = 1;
    pub const V1_HEADER_CRC_END: usize = 1156;
    pub const V1_TABLE_OFFSET: usize = 2048;
    pub const MAX_HEADER_LEN: u64 = 67_112_960;

    fn le16(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes([b[o], b[o + 1]])
    }
    fn le32(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn le64(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    /// `P` of section 3.2: where a version-2 header's `table_crc` sits.
    pub fn v2_p(path_len: usize) -> usize {
        128 + path_len.div_ceil(4) * 4
    }

    /// The header fields of section 3.1, and where the version's layout puts the table.
    #[derive(Clone, Debug)]
    pub struct Header {
        pub version: u16,
        pub codec: u16,
        pub header_len: u32,
        pub cluster_id: [u8; 16],
        pub file_id: u128,
        pub segment_index: u32,
        pub part_index: u16,
        pub k: u16,
        pub m: u16,
        pub flags: u16,
        pub block_size: u32,
        pub segment_data_len: u64,
        pub part_data_len: u64,
        pub block_count: u32,
        pub created_ms: u64,
        pub segment_blake3: [u8; 32],
        pub path: String,
        /// Offset of the block table (2048 in version 1, `P + 8` in version 2).
        pub table_offset: usize,
        /// The `table_crc` field.
        pub table_crc: u32,
    }

    /// Steps 1-5 of section 7, on the start of the file (or all of it).
    pub fn parse_header(b: &[u8]) -> Result<Header, String> {
        if b.len() < 128 {
            return Err(format!("too short: {} bytes", b.len()));
        }
        if &b[0..8] != MAGIC {
            return Err("bad magic".into());
        }
        let version = le16(b, 8);
        let path_len = usize::from(le16(b, 84));
        let (table_offset, table_crc) = match version {
            VERSION_1 => {
                if b.len() < V1_TABLE_OFFSET {
                    return Err(format!("too short: {} bytes", b.len()));
                }
                if crc32c::crc32c(&b[..V1_HEADER_CRC_END]) != le32(b, 1156) {
                    return Err("header crc mismatch".into());
                }
                (V1_TABLE_OFFSET, le32(b, 1152))
            }
            VERSION_2 => {
                if path_len > 1024 {
                    return Err("path_len".into());
                }
                let p = v2_p(path_len);
                if b.len() < p + 8 {
                    return Err(format!("too short: {} bytes", b.len()));
                }
                if crc32c::crc32c(&b[..p + 4]) != le32(b, p + 4) {
                    return Err("header crc mismatch".into());
                }
                (p + 8, le32(b, p))
            }
            v => return Err(format!("unknown format_version {v}")),
        };
        if path_len > 1024 {
            return Err("path_len".into());
        }
        let path = std::str::from_utf8(&b[128..128 + path_len])
            .map_err(|_| "path not utf-8")?
            .to_owned();
        let h = Header {
            version,
            codec: le16(b, 10),
            header_len: le32(b, 12),
            cluster_id: b[16..32].try_into().unwrap(),
            file_id: u128::from_be_bytes(b[32..48].try_into().unwrap()),
            segment_index: le32(b, 48),
            part_index: le16(b, 52),
            k: le16(b, 54),
            m: le16(b, 56),
            flags: le16(b, 58),
            block_size: le32(b, 60),
            segment_data_len: le64(b, 64),
            part_data_len: le64(b, 72),
            block_count: le32(b, 80),
            created_ms: le64(b, 88),
            segment_blake3: b[96..128].try_into().unwrap(),
            path,
            table_offset,
            table_crc,
        };
        if h.codec != CODEC_REPLICA && h.codec != CODEC_RS {
            return Err(format!("unknown codec {}", h.codec));
        }
        if h.block_size == 0 || !h.block_size.is_multiple_of(64) {
            return Err("block_size".into());
        }
        if h.k == 0 || u32::from(h.part_index) >= u32::from(h.k) + u32::from(h.m) {
            return Err("part_index".into());
        }
        if u64::from(h.block_count) != h.part_data_len.div_ceil(u64::from(h.block_size)) {
            return Err("block_count".into());
        }
        let table_end = table_offset as u64 + 4 * u64::from(h.block_count);
        let aligned = version != VERSION_1 || h.header_len.is_multiple_of(4096);
        if !aligned
            || u64::from(h.header_len) < table_end
            || u64::from(h.header_len) > MAX_HEADER_LEN
        {
            return Err("header_len".into());
        }
        Ok(h)
    }

    /// An opened part: header, verified block table and the whole file's bytes.
    pub struct Part {
        pub header: Header,
        pub table: Vec<u32>,
        pub bytes: Vec<u8>,
    }

    impl Part {
        /// Steps 1-6 of section 7; an error means the part is missing.
        pub fn open(path: &Path) -> Result<Part, String> {
            let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
            let header = parse_header(&bytes)?;
            if bytes.len() < header.header_len as usize {
                return Err("front region truncated".into());
            }
            let table_bytes =
                &bytes[header.table_offset..header.table_offset + 4 * header.block_count as usize];
            if crc32c::crc32c(table_bytes) != header.table_crc {
                return Err("table crc mismatch".into());
            }
            let table = table_bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            Ok(Part {
                header,
                table,
                bytes,
            })
        }

        /// Stored length of block `b` (section 3.4).
        pub fn stored_len(&self, b: u64) -> usize {
            let bs = u64::from(self.header.block_size);
            (self.header.part_data_len - b * bs).min(bs) as usize
        }

        /// Block `b`'s stored bytes if they verify (step 7), else `None` (a missing block).
        pub fn block(&self, b: u64) -> Option<&[u8]> {
            if b >= u64::from(self.header.block_count) {
                return None;
            }
            let start =
                self.header.header_len as usize + (b * u64::from(self.header.block_size)) as usize;
            let bytes = self.bytes.get(start..start + self.stored_len(b))?;
            (crc32c::crc32c(bytes) == self.table[b as usize]).then_some(bytes)
        }
    }

    /// A part file name, `<file id 32 hex>-s<segment>-p<part>.wp` (section 2).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct PartName {
        pub file_id: u128,
        pub segment: u32,
        pub part: u16,
    }

    pub fn parse_name(name: &str) -> Option<PartName> {
        if name.starts_with('.') {
            return None;
        }
        let stem = name.strip_suffix(".wp")?;
        let (id, rest) = stem.split_once("-s")?;
        let (seg, part) = rest.split_once("-p")?;
        if id.len() != 32
            || !id
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return None;
        }
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        if !digits(seg) || !digits(part) {
            return None;
        }
        Some(PartName {
            file_id: u128::from_str_radix(id, 16).ok()?,
            segment: seg.parse().ok()?,
            part: part.parse().ok()?,
        })
    }

    /// A part file found on a disk.
    #[derive(Clone, Debug)]
    pub struct Found {
        pub disk_root: PathBuf,
        pub path: PathBuf,
        pub name: PartName,
    }

    /// What a scan of the disks found.
    #[derive(Default, Debug)]
    pub struct Scan {
        pub parts: Vec<Found>,
        /// Names starting with `.` (unfinished writes).
        pub temporaries: Vec<PathBuf>,
    }

    /// Lists `<disk>/parts/<xx>/*.wp` on every disk root.
    pub fn scan(disk_roots: &[PathBuf]) -> Scan {
        let mut out = Scan::default();
        for root in disk_roots {
            let Ok(prefixes) = std::fs::read_dir(root.join("parts")) else {
                continue;
            };
            for prefix in prefixes.flatten() {
                let dir = prefix.path();
                let pfx = prefix.file_name().to_string_lossy().into_owned();
                let Ok(files) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for f in files.flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') {
                        out.temporaries.push(f.path());
                        continue;
                    }
                    if let Some(n) = parse_name(&name) {
                        assert_eq!(pfx, name[..2], "part {name} is in folder {pfx}");
                        out.parts.push(Found {
                            disk_root: root.clone(),
                            path: f.path(),
                            name: n,
                        });
                    }
                }
            }
        }
        out
    }

    /// How a segment was read.
    #[derive(Debug, Default)]
    pub struct SegmentRead {
        pub bytes: Vec<u8>,
        /// Rows rebuilt with the decoder (EC) or blocks taken from a later copy (copies).
        pub degraded: u64,
    }

    /// Reads one segment from whatever parts are given (`parts[i]` = part index `i`, `None` when
    /// missing), per sections 4, 5 and 7, and checks its BLAKE3.
    pub fn read_segment(parts: &BTreeMap<u16, Part>) -> Result<SegmentRead, String> {
        let any = parts
            .values()
            .next()
            .ok_or("no part of the segment is usable")?;
        let h0 = any.header.clone();
        for p in parts.values() {
            let h = &p.header;
            if (
                h.codec,
                h.k,
                h.m,
                h.block_size,
                h.segment_data_len,
                h.segment_blake3,
                h.file_id,
                h.segment_index,
            ) != (
                h0.codec,
                h0.k,
                h0.m,
                h0.block_size,
                h0.segment_data_len,
                h0.segment_blake3,
                h0.file_id,
                h0.segment_index,
            ) {
                return Err(format!(
                    "part {} disagrees with part {}",
                    h.part_index, h0.part_index
                ));
            }
        }
        let k = usize::from(h0.k);
        let m = usize::from(h0.m);
        let bs = h0.block_size as usize;
        let seg_len = h0.segment_data_len as usize;
        let mut out = SegmentRead::default();
        if h0.codec == CODEC_REPLICA {
            let blocks = seg_len.div_ceil(bs) as u64;
            for b in 0..blocks {
                let mut got = None;
                for (i, p) in parts.values().enumerate() {
                    if p.header.part_data_len != h0.segment_data_len {
                        return Err("copy part_data_len != segment_data_len".into());
                    }
                    if let Some(d) = p.block(b) {
                        got = Some(d);
                        if i > 0 {
                            out.degraded += 1;
                        }
                        break;
                    }
                }
                out.bytes
                    .extend_from_slice(got.ok_or(format!("block {b}: no copy verifies"))?);
            }
        } else {
            let rows = seg_len.div_ceil(k * bs);
            for p in parts.values() {
                if p.header.part_data_len != (rows * bs) as u64 {
                    return Err(format!(
                        "part {} part_data_len {} != rows*B",
                        p.header.part_index, p.header.part_data_len
                    ));
                }
            }
            // Which parts have a verified block in each row.
            let avail = |r: usize| -> Vec<bool> {
                (0..k + m)
                    .map(|i| {
                        parts
                            .get(&(i as u16))
                            .is_some_and(|p| p.block(r as u64).is_some())
                    })
                    .collect()
            };
            out.bytes = vec![0u8; rows * k * bs];
            let mut r = 0;
            while r < rows {
                let mask = avail(r);
                if mask[..k].iter().all(|&a| a) {
                    for j in 0..k {
                        let blk = parts[&(j as u16)].block(r as u64).unwrap();
                        out.bytes[r * k * bs + j * bs..][..bs].copy_from_slice(blk);
                    }
                    r += 1;
                    continue;
                }
                // A run of rows with the same availability is decoded in one call (section 5).
                let mut end = r + 1;
                while end < rows && avail(end) == mask {
                    end += 1;
                }
                let have: Vec<usize> = (0..k + m).filter(|&i| mask[i]).collect();
                if have.len() < k {
                    return Err(format!(
                        "rows {r}..{end}: only {} of {} parts verify",
                        have.len(),
                        k
                    ));
                }
                let n = end - r;
                let shard = |i: usize| -> Vec<u8> {
                    let p = &parts[&(i as u16)];
                    (r..end)
                        .flat_map(|row| p.block(row as u64).unwrap().iter().copied())
                        .collect()
                };
                let mut dec = ReedSolomonDecoder::new(k, m, n * bs).map_err(|e| e.to_string())?;
                for &i in have.iter().take(k) {
                    if i < k {
                        dec.add_original_shard(i, shard(i))
                            .map_err(|e| e.to_string())?;
                    } else {
                        dec.add_recovery_shard(i - k, shard(i))
                            .map_err(|e| e.to_string())?;
                    }
                }
                let res = dec.decode().map_err(|e| e.to_string())?;
                for j in 0..k {
                    let data: Vec<u8> = if have.iter().take(k).any(|&i| i == j) {
                        shard(j)
                    } else {
                        res.restored_original(j)
                            .ok_or(format!("data part {j} not restored"))?
                            .to_vec()
                    };
                    for row in 0..n {
                        out.bytes[(r + row) * k * bs + j * bs..][..bs]
                            .copy_from_slice(&data[row * bs..(row + 1) * bs]);
                    }
                }
                out.degraded += n as u64;
                r = end;
            }
            // Bytes past the segment's end are zero padding.
            if out.bytes[seg_len..].iter().any(|&b| b != 0) {
                return Err("padding of the last row is not zero".into());
            }
            out.bytes.truncate(seg_len);
        }
        if *blake3::hash(&out.bytes).as_bytes() != h0.segment_blake3 {
            return Err(format!("segment {} BLAKE3 mismatch", h0.segment_index));
        }
        Ok(out)
    }
}

use spec::{Found, Part, PartName};

const BLOCK: u32 = 4096;
const PART_CAPACITY: u64 = 64 * 1024;

/// Deterministic pseudo-random bytes (splitmix64).
fn seeded(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A node on six folder-disks with a small block size and part capacity.
async fn start_node(dir: &Path) -> anyhow::Result<Node> {
    let overrides = wormfs_config::Overrides {
        data_dir: Some(dir.join("data")),
        // Any free port for the peer network: tests run side by side.
        peer_listen: Some("127.0.0.1:0".parse().unwrap()),
        data_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    let mut cfg = wormfs_config::load(None, Vec::<(String, String)>::new(), &overrides)?;
    cfg.storage.block_size_bytes = BLOCK;
    cfg.storage.segment_part_bytes = PART_CAPACITY;
    Node::start(&cfg).await
}

async fn put(
    store: &Arc<Store>,
    path: &str,
    policy: &str,
    data: &[u8],
) -> anyhow::Result<FileRecord> {
    let req = wormfs_server::ingest::IngestRequest {
        path: wormfs_parts::tree_path::TreePath::parse(path)?,
        policy: Some(policy.parse().map_err(anyhow::Error::msg)?),
        conflict: wormfs_meta::command::Conflict::Fail,
        source: wormfs_meta::command::SourceIdentity::Upload {
            client: "test".into(),
        },
        expected_size: None,
        retention_checked: false,
    };
    let res = store.ingest(req, data).await?;
    ensure!(res.size == data.len() as u64);
    store
        .meta
        .file(res.file_id)
        .await?
        .context("committed file has no record")
}

fn disk_roots(dir: &Path) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = std::fs::read_dir(dir.join("data").join("disks"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("disk-"))
                })
                .collect()
        })
        .unwrap_or_default();
    roots.sort();
    roots
}

/// The identity file of a disk (section 2): (cluster id bytes, disk id text).
fn disk_identity(root: &Path) -> anyhow::Result<([u8; 16], String)> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("wormfs-disk.json"))?)?;
    ensure!(v["format"] == 1, "identity format");
    let cluster = uuid::Uuid::parse_str(v["cluster_id"].as_str().context("cluster_id")?)?;
    let disk = v["disk_id"].as_str().context("disk_id")?.to_owned();
    Ok((*cluster.as_bytes(), disk))
}

/// The parts of one file found on the disks, by segment then part index.
fn parts_of(dir: &Path, file_id: u128) -> BTreeMap<u32, BTreeMap<u16, Found>> {
    let scan = spec::scan(&disk_roots(dir));
    assert!(
        scan.temporaries.is_empty(),
        "unfinished writes left behind: {:?}",
        scan.temporaries
    );
    let mut out: BTreeMap<u32, BTreeMap<u16, Found>> = BTreeMap::new();
    for f in scan.parts.into_iter().filter(|f| f.name.file_id == file_id) {
        let prev = out
            .entry(f.name.segment)
            .or_default()
            .insert(f.name.part, f.clone());
        assert!(prev.is_none(), "part {:?} found twice", f.name);
    }
    out
}

/// The file id as the 32 hex digits used in part names.
fn file_id_of(rec: &FileRecord) -> u128 {
    let text = rec.file_id.to_string();
    assert_eq!(text.len(), 32);
    u128::from_str_radix(&text, 16).unwrap()
}

/// The layout of section 3 on one part of either version: zeros where the writer writes zeros,
/// the file's length, and a `header_len` the sizing rule of section 3.5 allows for parts of
/// `part_capacity` bytes at most.
fn check_layout(part: &Part, part_capacity: u64) -> anyhow::Result<()> {
    let h = &part.header;
    let b = &part.bytes;
    ensure!(
        h.flags == 0 && b[86..88] == [0, 0],
        "flags / reserved not zero"
    );
    let table_end = h.table_offset + 4 * h.block_count as usize;
    ensure!(
        b[table_end..h.header_len as usize].iter().all(|&x| x == 0),
        "table padding not zero"
    );
    ensure!(
        b.len() as u64 == u64::from(h.header_len) + h.part_data_len,
        "file length != header_len + part_data_len"
    );
    let max_blocks = part_capacity.div_ceil(u64::from(h.block_size));
    let round = |x: u64| x.div_ceil(4096) * 4096;
    match h.version {
        spec::VERSION_1 => {
            ensure!(
                b[1160..2048].iter().all(|&x| x == 0),
                "reserved 1160..2048 not zero"
            );
            ensure!(
                b[128 + h.path.len()..1152].iter().all(|&x| x == 0),
                "path tail not zero"
            );
            ensure!(
                u64::from(h.header_len) == round(2048 + 4 * max_blocks),
                "version 1 header_len {}",
                h.header_len
            );
        }
        spec::VERSION_2 => {
            let p = spec::v2_p(h.path.len());
            ensure!(
                b[128 + h.path.len()..p].iter().all(|&x| x == 0),
                "path padding not zero"
            );
            ensure!(h.table_offset == p + 8 && p.is_multiple_of(4));
            // Sized for some max_blocks between the part's blocks and a full part, rounded to
            // 4096 or not (section 3.5).
            let raw = |mb: u64| (136 + h.path.len().div_ceil(4) * 4) as u64 + 4 * mb;
            let hl = u64::from(h.header_len);
            ensure!(
                (u64::from(h.block_count)..=max_blocks)
                    .any(|mb| hl == raw(mb) || hl == round(raw(mb))),
                "version 2 header_len {} does not follow the sizing rule",
                h.header_len
            );
        }
        v => anyhow::bail!("version {v}"),
    }
    Ok(())
}

/// Everything section 3 says a writer writes, checked on one healthy part.
fn check_conformance(found: &Found, part: &Part, want_path: &str) -> anyhow::Result<()> {
    let h = &part.header;
    ensure!(
        PartName {
            file_id: h.file_id,
            segment: h.segment_index,
            part: h.part_index
        } == found.name,
        "header names another part"
    );
    let (cluster, _) = disk_identity(&found.disk_root)?;
    ensure!(
        h.cluster_id == cluster,
        "cluster id differs from the disk's identity file"
    );
    ensure!(
        h.version == spec::VERSION_2,
        "the node writes version 2, found {}",
        h.version
    );
    check_layout(part, PART_CAPACITY)?;
    ensure!(h.path == want_path, "path {:?}", h.path);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    ensure!(
        h.created_ms <= now && h.created_ms + 600_000 > now,
        "created_ms {}",
        h.created_ms
    );
    ensure!(h.block_size == BLOCK);
    for blk in 0..u64::from(h.block_count) {
        ensure!(
            part.block(blk).is_some(),
            "block {blk} of a healthy part does not verify"
        );
    }
    Ok(())
}

/// Opens every part of a file; `None` for parts that fail steps 1-6.
fn open_all(found: &BTreeMap<u32, BTreeMap<u16, Found>>) -> BTreeMap<u32, BTreeMap<u16, Part>> {
    found
        .iter()
        .map(|(s, parts)| {
            (
                *s,
                parts
                    .iter()
                    .filter_map(|(i, f)| Part::open(&f.path).ok().map(|p| (*i, p)))
                    .collect(),
            )
        })
        .collect()
}

/// Reassembles a whole file from parts alone (section 10): segments in index order, offsets as
/// prefix sums of `segment_data_len`. Returns the bytes and the rows/blocks read degraded.
fn reassemble(parts: &BTreeMap<u32, BTreeMap<u16, Part>>) -> anyhow::Result<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    let mut degraded = 0;
    for (want, (s, seg)) in parts.iter().enumerate() {
        ensure!(*s as usize == want, "segment {want} missing");
        let r = spec::read_segment(seg).map_err(|e| anyhow!("segment {s}: {e}"))?;
        out.extend_from_slice(&r.bytes);
        degraded += r.degraded;
    }
    Ok((out, degraded))
}

/// The ETag of section 9.
fn etag(size: u64, segment_hashes: &[String]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"wormfs-etag-v1");
    h.update(&size.to_le_bytes());
    for s in segment_hashes {
        h.update(s.as_bytes());
    }
    h.finalize().to_hex()[..32].to_owned()
}

/// The metadata agrees with the headers: offsets are prefix sums, lengths and hashes match, and
/// each part is on the disk the metadata names (by the disk's identity file).
fn check_metadata(
    rec: &FileRecord,
    found: &BTreeMap<u32, BTreeMap<u16, Found>>,
    parts: &BTreeMap<u32, BTreeMap<u16, Part>>,
) -> anyhow::Result<()> {
    ensure!(
        rec.segments.len() == parts.len(),
        "{} segments in metadata, {} on disk",
        rec.segments.len(),
        parts.len()
    );
    let mut offset = 0;
    for seg in &rec.segments {
        let on_disk = &parts[&seg.index];
        let h = &on_disk.values().next().context("no parts")?.header;
        ensure!(
            seg.offset == offset,
            "segment {} offset {} != prefix sum {offset}",
            seg.index,
            seg.offset
        );
        ensure!(seg.data_len == h.segment_data_len);
        ensure!(seg.blake3 == hex::encode(h.segment_blake3));
        for p in &seg.parts {
            if let (Some(d), Some(f)) = (p.disk_id, found[&seg.index].get(&p.index)) {
                ensure!(
                    disk_identity(&f.disk_root)?.1 == d.to_string(),
                    "segment {} part {} on another disk",
                    seg.index,
                    p.index
                );
            }
        }
        offset += seg.data_len;
    }
    ensure!(offset == rec.size);
    let hashes: Vec<String> = rec.segments.iter().map(|s| s.blake3.clone()).collect();
    ensure!(
        rec.etag == etag(rec.size, &hashes),
        "etag {} differs from the documented derivation",
        rec.etag
    );
    Ok(())
}

/// Finds file offset `x` through section 4.4, reading the byte straight from the part file.
fn byte_at(rec: &FileRecord, parts: &BTreeMap<u32, BTreeMap<u16, Part>>, x: u64) -> u8 {
    let seg = rec
        .segments
        .iter()
        .find(|s| s.offset <= x && x < s.offset + s.data_len)
        .unwrap();
    let off = x - seg.offset;
    let seg_parts = &parts[&seg.index];
    let h = &seg_parts.values().next().unwrap().header;
    let bs = u64::from(h.block_size);
    let (part, at) = if h.codec == spec::CODEC_REPLICA {
        (&seg_parts[&0], off)
    } else {
        let row_bytes = u64::from(h.k) * bs;
        let row = off / row_bytes;
        let part = ((off % row_bytes) / bs) as u16;
        (&seg_parts[&part], row * bs + off % bs)
    };
    part.bytes[(u64::from(part.header.header_len) + at) as usize]
}

/// A file whose length is a multiple of nothing, written ec:4+2 in one go, is read back exactly
/// from its data parts alone; headers, names, offsets, parity, hashes and ETag are as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec_file_reads_back_from_data_parts_alone() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_node(dir.path()).await?;
    let data = seeded(1_000_003, 1);
    let rec = put(&node.store, "/a/film.mkv", "ec:4+2", &data).await?;
    node.stop().await;

    let id = file_id_of(&rec);
    let found = parts_of(dir.path(), id);
    let segment_capacity = 4 * PART_CAPACITY;
    assert_eq!(
        found.len() as u64,
        (data.len() as u64).div_ceil(segment_capacity)
    );
    for (s, seg) in &found {
        assert_eq!(
            seg.keys().copied().collect::<Vec<_>>(),
            (0..6).collect::<Vec<u16>>(),
            "segment {s}"
        );
    }
    let parts = open_all(&found);
    for (s, seg) in &parts {
        assert_eq!(seg.len(), 6, "segment {s}: a healthy part failed to open");
        for (i, p) in seg {
            check_conformance(&found[s][i], p, "/a/film.mkv")?;
            let h = &p.header;
            assert_eq!((h.codec, h.k, h.m), (spec::CODEC_RS, 4, 2));
            let want_len = if u64::from(*s) + 1 < found.len() as u64 {
                segment_capacity
            } else {
                data.len() as u64 % segment_capacity
            };
            assert_eq!(h.segment_data_len, want_len);
            assert_eq!(h.segment_data_len, rec.segments[*s as usize].data_len);
        }
    }
    check_metadata(&rec, &found, &parts)?;
    assert_eq!(
        rec.content_blake3.as_deref(),
        Some(blake3::hash(&data).to_hex().as_str())
    );

    // Parity part k+i is recovery shard i over the k whole data parts, and the code is
    // position-wise: encoding one row alone gives that row's parity blocks.
    for seg in parts.values() {
        let bs = BLOCK as usize;
        let len = seg[&0].header.part_data_len as usize;
        let data_of = |i: u16| &seg[&i].bytes[seg[&i].header.header_len as usize..];
        let mut enc = ReedSolomonEncoder::new(4, 2, len)?;
        for j in 0..4 {
            enc.add_original_shard(data_of(j))?;
        }
        let res = enc.encode()?;
        for i in 0..2u16 {
            assert!(
                res.recovery(usize::from(i)).unwrap() == data_of(4 + i),
                "parity part {} differs",
                4 + i
            );
        }
        let row = len / bs - 1;
        let mut enc = ReedSolomonEncoder::new(4, 2, bs)?;
        for j in 0..4 {
            enc.add_original_shard(&data_of(j)[row * bs..][..bs])?;
        }
        let res = enc.encode()?;
        assert!(res.recovery(1).unwrap() == &data_of(5)[row * bs..][..bs]);
    }

    // Healthy read: data parts only (parity removed from view), no decoding.
    let data_only: BTreeMap<u32, BTreeMap<u16, Part>> = parts
        .into_iter()
        .map(|(s, seg)| (s, seg.into_iter().filter(|(i, _)| *i < 4).collect()))
        .collect();
    let (back, degraded) = reassemble(&data_only)?;
    assert_eq!(degraded, 0);
    assert!(back == data, "reassembled bytes differ");

    // Byte lookups through row = off / (k*B), part = (off % (k*B)) / B.
    for x in [
        0u64, 1, 4095, 4096, 16_383, 16_384, 262_143, 262_144, 300_000, 999_999, 1_000_002,
    ] {
        assert_eq!(byte_at(&rec, &data_only, x), data[x as usize], "byte {x}");
    }
    Ok(())
}

/// With up to m parts of every segment deleted, or failing their header or block checksums,
/// the file is still rebuilt exactly by decoding from any k verified parts; one loss more fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec_file_survives_losing_m_parts_per_segment() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_node(dir.path()).await?;
    let data = seeded(1_000_003, 2);
    let rec = put(&node.store, "/a/film.mkv", "ec:4+2", &data).await?;
    node.stop().await;
    let id = file_id_of(&rec);
    let found = parts_of(dir.path(), id);
    assert_eq!(found.len(), 4);
    let path = |s: u32, p: u16| found[&s][&p].path.clone();
    let flip = |p: &Path, at: u64| -> anyhow::Result<()> {
        let mut b = std::fs::read(p)?;
        b[at as usize] ^= 0x40;
        std::fs::write(p, b)?;
        Ok(())
    };
    // Each part's own header_len (section 3.5: parts need not agree).
    let header_len = |s: u32, p: u16| -> anyhow::Result<u64> {
        Ok(u64::from(
            Part::open(&path(s, p))
                .map_err(anyhow::Error::msg)?
                .header
                .header_len,
        ))
    };
    // Segment 0: two data parts gone.
    std::fs::remove_file(path(0, 0))?;
    std::fs::remove_file(path(0, 1))?;
    // Segment 1: a data part gone, a parity part whose header no longer verifies.
    std::fs::remove_file(path(1, 2))?;
    flip(&path(1, 4), 100)?;
    assert!(
        Part::open(&path(1, 4)).is_err(),
        "a header with a bad checksum must be rejected"
    );
    // Segment 2: a parity part gone, and one corrupt block in each of two data parts (rows 3 and 5).
    std::fs::remove_file(path(2, 5))?;
    flip(&path(2, 3), header_len(2, 3)? + 3 * u64::from(BLOCK) + 17)?;
    flip(&path(2, 0), header_len(2, 0)? + 5 * u64::from(BLOCK) + 4000)?;
    // Segment 3 (short, last row mostly padding): data parts 0 and 3 gone.
    std::fs::remove_file(path(3, 0))?;
    std::fs::remove_file(path(3, 3))?;

    let mut parts = open_all(&parts_of(dir.path(), id));
    assert_eq!(
        parts.values().map(BTreeMap::len).collect::<Vec<_>>(),
        vec![4, 4, 5, 4]
    );
    assert!(
        parts[&2][&3].block(3).is_none() && parts[&2][&0].block(5).is_none(),
        "corrupt blocks must not verify"
    );
    assert!(
        parts[&2][&3].block(2).is_some(),
        "other blocks of a damaged part stay usable"
    );
    let (back, degraded) = reassemble(&parts)?;
    assert!(degraded > 0);
    assert!(back == data, "decoded bytes differ");

    // One loss more than m in a row: the read fails, never returns wrong or short data.
    parts.get_mut(&0).unwrap().remove(&4);
    let err = reassemble(&parts).expect_err("3 of 6 parts cannot rebuild a 4+2 segment");
    assert!(err.to_string().contains("segment 0"), "{err}");
    Ok(())
}

/// A copies:3 file is read back exactly from any single copy of each segment; a corrupt block is
/// read from another copy; each copy stores exactly the segment's bytes (last block short).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_file_reads_from_any_one_copy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_node(dir.path()).await?;
    let data = seeded(300_007, 3);
    let rec = put(&node.store, "/b/notes.txt", "copies:3", &data).await?;
    node.stop().await;
    let id = file_id_of(&rec);
    let found = parts_of(dir.path(), id);
    assert_eq!(
        found.len() as u64,
        (data.len() as u64).div_ceil(PART_CAPACITY)
    );
    let parts = open_all(&found);
    for (s, seg) in &parts {
        assert_eq!(seg.len(), 3);
        for (i, p) in seg {
            check_conformance(&found[s][i], p, "/b/notes.txt")?;
            let h = &p.header;
            assert_eq!((h.codec, h.k, h.m), (spec::CODEC_REPLICA, 1, 2));
            assert_eq!(
                h.part_data_len, h.segment_data_len,
                "a copy stores exactly the segment bytes"
            );
        }
    }
    check_metadata(&rec, &found, &parts)?;
    let last = &parts[&(found.len() as u32 - 1)][&0];
    assert!(
        last.stored_len(u64::from(last.header.block_count) - 1) < BLOCK as usize,
        "the last block of a copy is short"
    );
    assert_eq!(byte_at(&rec, &parts, 300_006), data[300_006]);

    for copy in 0..3u16 {
        let one: BTreeMap<u32, BTreeMap<u16, Part>> = open_all(&found)
            .into_iter()
            .map(|(s, seg)| (s, seg.into_iter().filter(|(i, _)| *i == copy).collect()))
            .collect();
        let (back, degraded) = reassemble(&one)?;
        assert_eq!(degraded, 0);
        assert!(back == data, "copy {copy} differs");
    }

    // Two copies of every segment but segment 1 gone (a different survivor each time). In
    // segment 1 copy 2 is gone and copy 0 has a corrupt block 2, which comes from copy 1.
    for (s, seg) in &found {
        for (i, f) in seg {
            if *s != 1 && *i != (*s % 3) as u16 {
                std::fs::remove_file(&f.path)?;
            }
        }
    }
    std::fs::remove_file(&found[&1][&2].path)?;
    let p10 = &found[&1][&0].path;
    let mut b = std::fs::read(p10)?;
    let hl = Part::open(p10)
        .map_err(anyhow::Error::msg)?
        .header
        .header_len as usize;
    b[hl + 2 * BLOCK as usize + 5] ^= 1;
    std::fs::write(p10, b)?;
    let (back, degraded) = reassemble(&open_all(&parts_of(dir.path(), id)))?;
    assert_eq!(
        degraded, 1,
        "exactly the corrupt block comes from the other copy"
    );
    assert!(back == data);
    Ok(())
}

/// A 0-byte file has no segments and no parts; its hash is BLAKE3("") and its ETag the
/// documented derivation over size 0 and no segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_file_has_no_segments_and_no_parts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_node(dir.path()).await?;
    let rec = put(&node.store, "/a/empty", "ec:4+2", &[]).await?;
    node.stop().await;
    assert_eq!(rec.size, 0);
    assert!(rec.segments.is_empty());
    assert!(parts_of(dir.path(), file_id_of(&rec)).is_empty());
    assert_eq!(
        rec.content_blake3.as_deref(),
        Some(blake3::hash(b"").to_hex().as_str())
    );
    assert_eq!(rec.etag, etag(0, &[]));
    Ok(())
}

/// An append starts a new segment after a short one; the file is rebuilt from parts alone with
/// offsets as prefix sums of segment lengths; the whole-content hash becomes unknown and the
/// ETag changes, following the documented derivation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_adds_segments_and_changes_the_etag() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_node(dir.path()).await?;
    let first = seeded(100_003, 4);
    let more = seeded(300_001, 5);
    let before = put(&node.store, "/a/log.bin", "ec:4+2", &first).await?;
    let path = wormfs_parts::tree_path::TreePath::parse("/a/log.bin")?;
    node.store.append(&path, &more[..]).await?;
    let after = node
        .store
        .meta
        .file(before.file_id)
        .await?
        .context("record")?;
    node.stop().await;

    assert_eq!(before.segments.len(), 1);
    assert_eq!(after.size, 400_004);
    assert_eq!(
        after
            .segments
            .iter()
            .map(|s| s.data_len)
            .collect::<Vec<_>>(),
        vec![100_003, 262_144, 37_857]
    );
    assert_eq!(after.content_blake3, None);
    assert_ne!(after.etag, before.etag);
    assert_eq!(
        after.segments[0].blake3, before.segments[0].blake3,
        "a segment's hash never changes"
    );

    let found = parts_of(dir.path(), file_id_of(&after));
    let parts = open_all(&found);
    for (s, seg) in &parts {
        for (i, p) in seg {
            check_conformance(&found[s][i], p, "/a/log.bin")?;
        }
    }
    check_metadata(&after, &found, &parts)?;
    let (back, _) = reassemble(&parts)?;
    let mut whole = first.clone();
    whole.extend_from_slice(&more);
    assert!(back == whole);
    assert_eq!(byte_at(&after, &parts, 100_003), more[0]);
    Ok(())
}

/// Writes one segment of `data` as part files in format `version` under `root` (a disk folder),
/// with the parts crate's encoders: version 1 as older nodes wrote it (sized for a full part),
/// version 2 sized for exactly its blocks (the sizing rule for a part whose length is known).
/// Only the writing uses the crate; the reading below is the spec reader's. Returns the file id.
fn write_segment_in_version(
    root: &Path,
    version: u16,
    policy: wormfs_parts::policy::Policy,
    data: &[u8],
    path: &str,
) -> anyhow::Result<u128> {
    use wormfs_parts::part_format::{front_region_len, part_file_name, region_len, PartHeader};
    let geo = wormfs_parts::layout::Geometry::for_policy(policy, BLOCK, PART_CAPACITY);
    let bs = BLOCK as usize;
    let k = usize::from(geo.k);
    let part_len = geo.part_data_len(data.len() as u64) as usize;
    let mut parts: Vec<Vec<u8>> = Vec::new();
    if geo.is_replica() {
        parts.resize(geo.width(), data.to_vec());
    } else {
        let rows = part_len / bs;
        let mut padded = data.to_vec();
        padded.resize(rows * k * bs, 0);
        for j in 0..k {
            parts.push(
                (0..rows)
                    .flat_map(|r| padded[(r * k + j) * bs..][..bs].to_vec())
                    .collect(),
            );
        }
        let mut enc = ReedSolomonEncoder::new(k, usize::from(geo.m), part_len)?;
        for p in &parts {
            enc.add_original_shard(p)?;
        }
        let res = enc.encode()?;
        let recovery: Vec<Vec<u8>> = res.recovery_iter().map(<[u8]>::to_vec).collect();
        parts.extend(recovery);
    }
    let file_id = wormfs_parts::ids::FileId::mint();
    let blocks = (part_len as u64).div_ceil(u64::from(BLOCK));
    for (i, bytes) in parts.iter().enumerate() {
        let header = PartHeader {
            codec: geo.codec,
            header_len: if version == 1 {
                region_len(geo.max_blocks_per_part())
            } else {
                front_region_len(blocks, path, part_len as u64)
            },
            cluster_id: wormfs_parts::ids::ClusterId::random(),
            file_id,
            segment_index: 0,
            part_index: i as u16,
            k: geo.k,
            m: geo.m,
            block_size: BLOCK,
            segment_data_len: data.len() as u64,
            part_data_len: part_len as u64,
            created_ms: 1_700_000_000_000,
            segment_blake3: *blake3::hash(data).as_bytes(),
            path: path.to_owned(),
        };
        let crcs: Vec<u32> = bytes.chunks(bs).map(crc32c::crc32c).collect();
        let mut file = if version == 1 {
            header.encode_v1(&crcs)?
        } else {
            header.encode(&crcs)?
        };
        file.extend_from_slice(bytes);
        let name = part_file_name(file_id, 0, i as u16);
        let dir = root.join("parts").join(&name[..2]);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), file)?;
    }
    Ok(u128::from_str_radix(&file_id.to_string(), 16)?)
}

/// Parts of both versions, copies and EC, side by side on one disk, are read by the spec
/// reader: version-1 parts (as older nodes wrote them) and compact version-2 parts, including a
/// 1-byte file whose part is shorter than 2048 bytes and a 3000-byte file whose front region is
/// under 200 bytes. The engine itself writes version 2 (the other tests read its parts).
#[test]
fn both_versions_are_read_side_by_side() -> anyhow::Result<()> {
    use wormfs_parts::policy::Policy;
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("disk-0");
    let copies = Policy::Copies { n: 3 };
    let ec = Policy::Ec { k: 4, m: 2 };
    let photo = "/photos/2024/holiday/img01.jpg";
    let cases: Vec<(u16, Policy, Vec<u8>, &str)> = vec![
        (1, copies, seeded(3000, 10), photo),
        (2, copies, seeded(3000, 11), photo),
        (2, copies, vec![0x5a], "/a"),
        (1, ec, seeded(100_003, 12), "/a/film.mkv"),
        (2, ec, seeded(100_003, 13), "/a/film.mkv"),
        (2, ec, seeded(5, 14), "/é/tiny"),
    ];
    let mut ids = Vec::new();
    for (version, policy, data, path) in &cases {
        ids.push(write_segment_in_version(
            &root, *version, *policy, data, path,
        )?);
    }
    let scan = spec::scan(std::slice::from_ref(&root));
    for ((version, policy, data, path), id) in cases.iter().zip(ids) {
        let mut seg: BTreeMap<u16, Part> = BTreeMap::new();
        for f in scan.parts.iter().filter(|f| f.name.file_id == id) {
            let part = Part::open(&f.path).map_err(anyhow::Error::msg)?;
            ensure!(part.header.version == *version, "{path}: version");
            ensure!(part.header.path == *path);
            check_layout(&part, PART_CAPACITY)?;
            seg.insert(f.name.part, part);
        }
        let width = match policy {
            Policy::Copies { n } => usize::from(*n),
            Policy::Ec { k, m } => usize::from(k + m),
        };
        ensure!(seg.len() == width, "{path} v{version}: {} parts", seg.len());
        let hl = seg[&0].header.header_len;
        match (*version, data.len()) {
            (1, _) => ensure!(hl == 4096),
            (2, 3000) => ensure!(hl == 172, "front region {hl}"),
            (2, 1) => ensure!(seg[&0].bytes.len() == 128 + 4 + 8 + 4 + 1),
            _ => ensure!(hl < 4096),
        }
        let back = spec::read_segment(&seg).map_err(anyhow::Error::msg)?;
        ensure!(back.bytes == *data, "{path} v{version} reads back");
        // A damaged version-2 header or path is a missing part, as in version 1.
        let any = scan.parts.iter().find(|f| f.name.file_id == id).unwrap();
        for at in [100usize, 130] {
            let mut b = std::fs::read(&any.path)?;
            b[at] ^= 0x20;
            ensure!(
                spec::parse_header(&b).is_err(),
                "{path} v{version}: flip at {at} not detected"
            );
        }
    }
    Ok(())
}
