//! The erasure codec: Reed-Solomon over GF(2^16) from `reed-solomon-simd`.
//!
//! Chosen over `reed-solomon-erasure` because it is pure Rust with run-time SIMD detection
//! (SSSE3, AVX2, NEON): one binary runs at full speed on an AVX2 desktop, on a Celeron
//! J4125/N5105 NAS chip without AVX2, and on ARM boxes, where `reed-solomon-erasure`'s
//! `simd-accel` is compiled for AVX2 unconditionally (SIGILL on those CPUs). Figures are in
//! docs/performance.md; the benchmark is `benches/codec.rs`.
//!
//! The code works position by position in 64-byte units, so encoding the concatenation of many
//! rows equals concatenating the encodings of each row, provided the block size is a multiple of
//! 64. This lets the writer encode, and the reader decode, many rows in one call (each decode call
//! has a fixed cost of about 140 us).

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// Which code produced a segment's parity; stored in every part header and in the metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CodecId {
    /// `copies:n`: every part is an identical full copy of the segment.
    Replica = 0,
    /// Reed-Solomon over GF(2^16) as implemented by reed-solomon-simd 3 (Leopard-RS layout).
    RsSimdGf16 = 1,
}

impl CodecId {
    /// The numeric id used in part headers and SQLite.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The codec for a numeric id, if known.
    pub fn from_u16(v: u16) -> Option<Self> {
        match v {
            0 => Some(Self::Replica),
            1 => Some(Self::RsSimdGf16),
            _ => None,
        }
    }
}

/// An error from the codec.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Fewer than k shards were available.
    #[error("cannot decode: {have} parts available, {need} needed")]
    NotEnoughShards {
        /// Shards given.
        have: usize,
        /// Shards needed (k).
        need: usize,
    },
    /// The library refused the parameters or shards.
    #[error("reed-solomon: {0}")]
    Library(#[from] reed_solomon_simd::Error),
}

/// Computes the `m` parity shards of `k` data shards of equal length (a multiple of 64 bytes).
///
/// With `m == 0` nothing is computed.
pub fn encode(data: &[&[u8]], m: usize) -> Result<Vec<Vec<u8>>, CodecError> {
    if m == 0 {
        return Ok(Vec::new());
    }
    let shard_len = data.first().map_or(0, |d| d.len());
    let mut enc = ReedSolomonEncoder::new(data.len(), m, shard_len)?;
    for d in data {
        enc.add_original_shard(d)?;
    }
    let result = enc.encode()?;
    Ok(result.recovery_iter().map(<[u8]>::to_vec).collect())
}

/// A reusable encoder: its work buffers are kept between calls of the same shape.
#[derive(Default)]
pub struct Encoder {
    inner: Option<(usize, usize, usize, ReedSolomonEncoder)>,
}

impl Encoder {
    /// Encodes `data` (k shards of equal length, a multiple of 64 bytes) and hands each of the
    /// `m` parity shards to `sink(parity_index, bytes)` without copying them.
    pub fn encode_with(
        &mut self,
        data: &[&[u8]],
        m: usize,
        mut sink: impl FnMut(usize, &[u8]),
    ) -> Result<(), CodecError> {
        if m == 0 {
            return Ok(());
        }
        let k = data.len();
        let len = data.first().map_or(0, |d| d.len());
        let enc = match &mut self.inner {
            Some((ik, im, il, enc)) if (*ik, *im, *il) == (k, m, len) => enc,
            Some((ik, im, il, enc)) => {
                enc.reset(k, m, len)?;
                (*ik, *im, *il) = (k, m, len);
                enc
            }
            None => {
                &mut self
                    .inner
                    .insert((k, m, len, ReedSolomonEncoder::new(k, m, len)?))
                    .3
            }
        };
        for d in data {
            enc.add_original_shard(d)?;
        }
        let result = enc.encode()?;
        for (i, p) in result.recovery_iter().enumerate() {
            sink(i, p);
        }
        Ok(())
    }
}

/// A reusable decoder.
#[derive(Default)]
pub struct Decoder {
    inner: Option<ReedSolomonDecoder>,
}

impl Decoder {
    /// Rebuilds the missing data shards of a `k+m` code.
    ///
    /// `shards[i]` is `Some` for every available shard (indices `0..k` data, `k..k+m` parity), all
    /// of the same length. Returns `(index, bytes)` for each data shard that was missing.
    pub fn restore(
        &mut self,
        k: usize,
        m: usize,
        shards: &[Option<&[u8]>],
    ) -> Result<Vec<(usize, Vec<u8>)>, CodecError> {
        let have = shards.iter().filter(|s| s.is_some()).count();
        if have < k {
            return Err(CodecError::NotEnoughShards { have, need: k });
        }
        if shards[..k].iter().all(Option::is_some) {
            return Ok(Vec::new());
        }
        let len = shards.iter().flatten().next().map_or(0, |s| s.len());
        let dec = match &mut self.inner {
            Some(d) => {
                d.reset(k, m, len)?;
                d
            }
            None => self.inner.insert(ReedSolomonDecoder::new(k, m, len)?),
        };
        for (i, s) in shards.iter().enumerate() {
            if let Some(s) = s {
                if i < k {
                    dec.add_original_shard(i, s)?;
                } else {
                    dec.add_recovery_shard(i - k, s)?;
                }
            }
        }
        let result = dec.decode()?;
        let mut out = Vec::new();
        for i in (0..k).filter(|&i| shards[i].is_none()) {
            let r = result
                .restored_original(i)
                .ok_or(CodecError::NotEnoughShards { have, need: k })?;
            out.push((i, r.to_vec()));
        }
        Ok(out)
    }
}

/// Rebuilds all `k` data shards, in order (tests and tools; the reader uses [`Decoder`]).
pub fn reconstruct_data(
    k: usize,
    m: usize,
    shards: &[Option<&[u8]>],
) -> Result<Vec<Vec<u8>>, CodecError> {
    let restored = Decoder::default().restore(k, m, shards)?;
    let mut out: Vec<Vec<u8>> = shards[..k]
        .iter()
        .map(|s| s.map(<[u8]>::to_vec).unwrap_or_default())
        .collect();
    for (i, v) in restored {
        out[i] = v;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn random_shards(k: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..k)
            .map(|_| (0..len).map(|_| rng.random()).collect())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Any m of the k+m shards can be lost and the data comes back, for many rows per call.
        #[test]
        fn any_m_lost_decodes(k in 1usize..9, m in 1usize..4, rows in 1usize..6, seed in any::<u64>(), lost_seed in any::<u64>()) {
            let block = 128usize;
            let data = random_shards(k, block * rows, seed);
            let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let parity = encode(&refs, m).unwrap();
            let all: Vec<&[u8]> = refs.iter().copied().chain(parity.iter().map(Vec::as_slice)).collect();
            // Choose m distinct shards to lose.
            let mut idx: Vec<usize> = (0..k + m).collect();
            use rand::{seq::SliceRandom, SeedableRng};
            idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(lost_seed));
            let lost = &idx[..m];
            let avail: Vec<Option<&[u8]>> = (0..k + m).map(|i| if lost.contains(&i) { None } else { Some(all[i]) }).collect();
            let back = reconstruct_data(k, m, &avail).unwrap();
            prop_assert_eq!(back, data);
        }

        /// Encoding many rows at once equals encoding each row and concatenating.
        #[test]
        fn batch_encoding_equals_per_row(k in 1usize..7, m in 1usize..4, rows in 2usize..5, seed in any::<u64>()) {
            let block = 192usize;
            let data = random_shards(k, block * rows, seed);
            let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let whole = encode(&refs, m).unwrap();
            for r in 0..rows {
                let row: Vec<&[u8]> = data.iter().map(|d| &d[r * block..(r + 1) * block]).collect();
                let p = encode(&row, m).unwrap();
                for (i, pi) in p.iter().enumerate() {
                    prop_assert_eq!(&whole[i][r * block..(r + 1) * block], pi.as_slice());
                }
            }
        }
    }

    #[test]
    fn m_plus_one_lost_is_an_error() {
        let data = random_shards(4, 256, 7);
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let parity = encode(&refs, 2).unwrap();
        let avail = vec![
            None,
            None,
            None,
            Some(refs[3]),
            Some(&parity[0][..]),
            Some(&parity[1][..]),
        ];
        assert!(matches!(
            reconstruct_data(4, 2, &avail),
            Err(CodecError::NotEnoughShards { have: 3, need: 4 })
        ));
    }
}
