//! The engine fuzz targets' corpora (`fuzz/corpus/<target>/`) and every input that ever
//! crashed one (`fuzz/regressions/<target>/`), replayed through the same checks the targets
//! run (`spate_engine::fuzzing`), as ordinary tests. A target with no corpus files fails.
//!
//! `cargo test -p spate-engine --test fuzz_corpus -- --ignored write_seeds` writes the seed
//! inputs (segment images, frames, checkpoint files as the engine writes them) to
//! `fuzz/seeds/<target>/`. The `atomic_file` corpus also holds the network layer's topic
//! metadata files: `net/tests/fuzz_corpus.rs` writes those seeds and replays the corpus
//! through its own check, which adds the metadata decode to this one's.

use std::path::{Path, PathBuf};

use spate_engine::atomic_file;
use spate_engine::frame::{FrameHeader, FrameMeta};
use spate_engine::fuzzing::{self, CountingAlloc};
use spate_engine::log::checkpoint::RecoveryCheckpoint;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Replays the target's corpus and regressions (see `fuzzing::replay_corpus`).
fn replay(target: &str, check: fn(&[u8])) {
    spate_engine::fuzzing::replay_corpus(&fuzz_dir(), target, check);
}

#[test]
fn scan() {
    replay("scan", fuzzing::check_scan);
}

#[test]
fn frame() {
    replay("frame", fuzzing::check_frame);
}

#[test]
fn atomic_file() {
    replay("atomic_file", fuzzing::check_atomic_file);
}

#[test]
fn manifest() {
    replay("manifest", fuzzing::check_manifest);
}

fn encode_frame(base_offset: u64, record_count: u32, payload: &[u8]) -> Vec<u8> {
    let h = FrameHeader::new(
        FrameMeta {
            base_offset,
            record_count,
            first_timestamp_ms: 1_700_000_000_000,
            max_timestamp_ms: 1_700_000_000_000 + i64::from(record_count),
            leader_epoch: 1,
        },
        payload,
    );
    [&h.encode()[..], payload].concat()
}

/// Writes the seed inputs of the engine targets to `fuzz/seeds/<target>/`.
#[test]
#[ignore = "writes fuzz/seeds; run by scripts/fuzz.sh --seed"]
fn write_seeds() {
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };
    let f0 = encode_frame(100, 3, b"a kafka batch would be here");
    let f1 = encode_frame(103, 1, &[7u8; 200]);
    let f2 = encode_frame(104, 5, b"");
    write("frame", "one", &f0);
    write("frame", "empty-payload", &f2);
    let segment = [&f0[..], &f1, &f2].concat();
    // scan: the first byte picks the layout (even: the image alone; odd: behind a filler
    // frame ending the next two bytes (little-endian) before the first chunk boundary).
    write("scan", "three-frames", &[&[0u8][..], &segment].concat());
    write(
        "scan",
        "zero-tail",
        &[&[0u8][..], &segment, &[0u8; 300]].concat(),
    );
    let torn = &segment[..segment.len() - 30];
    write("scan", "torn-tail", &[&[0u8][..], torn].concat());
    let gap = [&f0[..], &encode_frame(200, 1, b"x")].concat();
    write("scan", "offset-gap", &[&[0u8][..], &gap].concat());
    for back in [10u16, 60, 120, 230] {
        write(
            "scan",
            &format!("straddle-{back}"),
            &[&[1u8][..], &back.to_le_bytes(), &segment].concat(),
        );
    }

    let cp = RecoveryCheckpoint {
        active_base_offset: 1000,
        position: 65_536,
        next_offset: 1234,
        index_entries: 12,
        time_index_entries: 11,
        max_timestamp_ms: 1_700_000_000_000,
    };
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&cp).unwrap();
    write("atomic_file", "checkpoint", &atomic_file::encode(&bytes));
    write("atomic_file", "checkpoint-bare", &bytes);

    let mut m = spate_engine::tier::Manifest {
        version: 3,
        epoch: 2,
        log_start: 5,
        ..Default::default()
    };
    // The last one overlaps the one before (a new leader's segment).
    for (base, next) in [(0u64, 967u64), (967, 1934), (1500, 2048)] {
        m.segments.insert(
            base,
            spate_engine::tier::RemoteSegment {
                base_offset: base,
                next_offset: next,
                size_bytes: 999_927,
                first_timestamp_ms: 1_700_000_000_000,
                max_timestamp_ms: 1_700_000_000_500,
                leader_epoch: 0,
                checksum: 0x1234_5678,
            },
        );
    }
    write("manifest", "three-segments", &m.encode());
    write(
        "manifest",
        "empty",
        &spate_engine::tier::Manifest::default().encode(),
    );
}
