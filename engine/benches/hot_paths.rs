//! Criterion benches of the engine's hot paths: frame encode and check, offset index lookup,
//! and a batch cache hit. `cargo bench -p spate-engine --bench hot_paths`

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use spate_engine::cache::BatchCache;
use spate_engine::frame::{decode_frame, FrameHeader, FrameMeta};
use spate_engine::log::index::OffsetIndex;
use spate_engine::ReadBatch;

fn meta(offset: u64) -> FrameMeta {
    FrameMeta {
        base_offset: offset,
        record_count: 16,
        first_timestamp_ms: 1,
        max_timestamp_ms: 2,
        leader_epoch: 0,
    }
}

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    for size in [1024usize, 16 * 1024, 1 << 20] {
        let payload = vec![0xabu8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("encode {size} B"), |b| {
            b.iter(|| FrameHeader::new(meta(7), black_box(&payload)).encode())
        });
        let mut frame = FrameHeader::new(meta(7), &payload).encode().to_vec();
        frame.extend_from_slice(&payload);
        g.bench_function(format!("check {size} B"), |b| {
            b.iter(|| decode_frame(black_box(&frame)).map(|(h, _)| h.base_offset))
        });
    }
    g.finish();
}

fn index(c: &mut Criterion) {
    // A 1 GiB segment's index: one entry per 4 KiB.
    let mut idx = OffsetIndex::new(4096);
    for i in 0..262_144u32 {
        idx.maybe_add(i * 4, u64::from(i) * 4096);
    }
    let mut i = 0u32;
    c.bench_function("index lookup (262144 entries)", |b| {
        b.iter(|| {
            i = i.wrapping_add(7919) % (262_144 * 4);
            idx.lookup(black_box(i))
        })
    });
}

fn cache(c: &mut Criterion) {
    let mut cache = BatchCache::new(256 << 20);
    for n in 0..4096u64 {
        cache.insert(
            1,
            ReadBatch {
                base_offset: n * 16,
                record_count: 16,
                first_timestamp_ms: 1,
                max_timestamp_ms: 1,
                leader_epoch: 0,
                payload: Bytes::from(vec![n as u8; 16 * 1024]),
            },
        );
    }
    let mut n = 0u64;
    c.bench_function("batch cache hit (1 MiB read)", |b| {
        b.iter_batched(
            || {
                n = (n + 61) % 4000;
                n * 16
            },
            |offset| cache.read(1, offset, 1 << 20),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, frames, index, cache);
criterion_main!(benches);
