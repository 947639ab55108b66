//! Codec benchmark: encode and reconstruct with reed-solomon-simd, 4+2 and 8+3, 64 KiB and 1 MiB
//! shards. Run with `cargo bench -p wormfs-parts --bench codec`; figures go to docs/performance.md.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wormfs_parts::codec::{encode, Decoder, Encoder};

fn shards(k: usize, len: usize) -> Vec<Vec<u8>> {
    (0..k)
        .map(|i| (0..len).map(|j| ((i * 31 + j * 7) % 251) as u8).collect())
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.sample_size(20);
    for (k, m) in [(4usize, 2usize), (8, 3)] {
        for len in [64 * 1024usize, 1024 * 1024] {
            let data = shards(k, len);
            let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            g.throughput(Throughput::Bytes((k * len) as u64));
            let id = format!("{k}+{m}/{}KiB", len / 1024);
            // The production path: a reused encoder, parity handed out without copies.
            let mut enc = Encoder::default();
            g.bench_with_input(BenchmarkId::new("encode", &id), &refs, |b, refs| {
                b.iter(|| {
                    enc.encode_with(refs, m, |_, p| assert!(!p.is_empty()))
                        .unwrap()
                })
            });
            let parity = encode(&refs, m).unwrap();
            // Lose m data parts: the worst case for reconstruction.
            let avail: Vec<Option<&[u8]>> = (0..k + m)
                .map(|i| {
                    if i < m {
                        None
                    } else if i < k {
                        Some(refs[i])
                    } else {
                        Some(parity[i - k].as_slice())
                    }
                })
                .collect();
            g.bench_with_input(BenchmarkId::new("reconstruct", &id), &avail, |b, avail| {
                let mut dec = Decoder::default();
                b.iter(|| dec.restore(k, m, avail).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
