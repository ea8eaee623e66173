//! Read-ahead: sequential readers behind the cache get every batch intact, in order, across
//! segments, with a chunk read ahead of them; other readers are unaffected; the memory is
//! given back.

mod common;

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use common::*;
use spate_engine::cache::BatchCache;
use spate_engine::io::dma::DmaStorage;
use spate_engine::io::fault::FaultPlan;
use spate_engine::io::Storage;
use spate_engine::readahead_budget::ReadAheadBudget;
use spate_engine::{Durability, PartitionLog};

const BATCH: usize = 40 * 1024;
const BATCHES: u64 = 160; // 6.4 MB: several 1 MiB segments, most of it behind a 2 MiB cache

/// Checks a batch against what `fill` appended for it.
fn check(b: &spate_engine::ReadBatch, seq_of: &[(u64, u64)]) {
    let seq = seq_of
        .iter()
        .find(|(base, _)| *base == b.base_offset)
        .map(|(_, s)| *s)
        .unwrap_or_else(|| panic!("no batch was appended at offset {}", b.base_offset));
    assert_eq!(
        b.payload,
        payload(seq, BATCH).freeze(),
        "payload at offset {}",
        b.base_offset
    );
}

/// Appends the batches; returns (base offset, seq) of each.
async fn fill(log: &PartitionLog) -> Vec<(u64, u64)> {
    let mut seq_of = Vec::new();
    for seq in 0..BATCHES {
        let r = log
            .append(
                vec![batch(seq, BATCH, 1_000 + seq as i64)],
                Durability::Appended,
            )
            .await
            .unwrap();
        seq_of.push((r.base_offset, seq));
    }
    seq_of
}

/// The log on a cache of `cache_bytes`, and that cache's read-ahead budget.
async fn open_with_cache(root: &Path, cache_bytes: usize) -> (PartitionLog, Rc<ReadAheadBudget>) {
    open_on(Rc::new(DmaStorage), root, cache_bytes).await
}

async fn open_on(
    storage: Rc<dyn Storage>,
    root: &Path,
    cache_bytes: usize,
) -> (PartitionLog, Rc<ReadAheadBudget>) {
    let cache = Rc::new(RefCell::new(BatchCache::new(cache_bytes)));
    let budget = cache.borrow().readahead_budget();
    let (log, _) = PartitionLog::open(
        storage,
        &partition_dir(root),
        "t-0",
        small_config(),
        cache,
        1,
    )
    .await
    .unwrap();
    (log, budget)
}

#[test]
fn sequential_readers_get_every_batch_with_a_chunk_read_ahead() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    run(tmp.path(), move || async move {
        let (log, budget) = open_with_cache(&root, 2 << 20).await;
        let seq_of = fill(&log).await;
        let end = log.stats().log_end_offset;
        assert!(
            log.stats().segments >= 5,
            "the batches span several segments"
        );

        // Two readers, interleaved, at different positions: each has its own resume point.
        let (mut a, mut b) = (0u64, seq_of[40].0);
        let (mut seen_a, mut seen_b) = (0u64, 0u64);
        let mut read_ahead_seen = false;
        while a < end || b < end {
            for (at, seen) in [(&mut a, &mut seen_a), (&mut b, &mut seen_b)] {
                if *at >= end {
                    continue;
                }
                let batches = log.read(*at, 100 * 1024).await.unwrap();
                assert!(!batches.is_empty(), "nothing read at {at} before the end");
                assert_eq!(batches[0].base_offset, *at, "a read starts at its offset");
                for x in &batches {
                    check(x, &seq_of);
                    assert_eq!(x.base_offset, *at, "batches are contiguous");
                    *at = x.next_offset();
                    *seen += 1;
                }
                read_ahead_seen |= budget.used() > 0;
            }
        }
        assert_eq!(seen_a, BATCHES);
        assert_eq!(seen_b, BATCHES - 40);
        assert!(
            read_ahead_seen,
            "a disk read left a chunk read ahead (budget in use)"
        );

        // A reader that jumps (no resume point there) reads from the index as before, and
        // one that goes back over what it read gets the same batches again.
        for i in [7usize, 3, 120, 121, 0] {
            let got = log.read(seq_of[i].0, 1).await.unwrap();
            assert_eq!(got.len(), 1);
            check(&got[0], &seq_of);
            assert_eq!(got[0].base_offset, seq_of[i].0);
        }

        log.close().await.unwrap();
        assert_eq!(budget.used(), 0, "a closed log holds no read-ahead");
    });
}

#[test]
fn read_ahead_stays_within_the_shard_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    run(tmp.path(), move || async move {
        // 1 MiB of cache: 256 KiB of read-ahead for the shard.
        let (log, budget) = open_with_cache(&root, 1 << 20).await;
        let seq_of = fill(&log).await;
        // Four readers each reading 200 KiB at a time: at most one chunk fits the budget, and
        // the others still read correctly without one.
        let mut at: Vec<u64> = [0usize, 10, 20, 30].iter().map(|i| seq_of[*i].0).collect();
        for _ in 0..30 {
            for pos in at.iter_mut() {
                let batches = log.read(*pos, 200 * 1024).await.unwrap();
                for x in &batches {
                    check(x, &seq_of);
                    *pos = x.next_offset();
                }
                assert!(budget.used() <= 256 * 1024, "used {}", budget.used());
            }
        }
        log.close().await.unwrap();
        assert_eq!(budget.used(), 0);
    });
}

#[test]
fn a_sequential_reader_reads_each_byte_from_disk_about_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    run(tmp.path(), move || async move {
        let plan = FaultPlan::new();
        plan.only_files_ending_with(".log");
        // A cache far smaller than the data: the reader is behind it all the way.
        let (log, _) = open_on(faulty(&plan), &root, 1 << 20).await;
        let seq_of = fill(&log).await;
        let end = log.stats().log_end_offset;
        let before = plan.read_bytes();
        let mut at = seq_of[0].0;
        let mut returned = 0u64;
        while at < end {
            // 2.5 batches' worth: every read and every chunk read ahead ends in a batch that
            // does not fit, which must not be read in full just to be left out.
            let batches = log.read(at, 100 * 1024).await.unwrap();
            assert!(!batches.is_empty(), "nothing read at {at} before the end");
            for x in &batches {
                check(x, &seq_of);
                at = x.next_offset();
                returned += x.payload.len() as u64;
            }
        }
        let read = plan.read_bytes() - before;
        assert!(
            read < returned * 13 / 10,
            "{read} bytes read from disk to return {returned}"
        );
        log.close().await.unwrap();
    });
}
