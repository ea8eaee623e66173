//! Reads while the log rolls: the segment being closed stays readable while its indexes are
//! written, so a reader never sees its offsets vanish (an empty read, or a log start that jumps
//! past it and makes a consumer's position "out of range").

mod common;

use std::cell::Cell;
use std::rc::Rc;

use common::*;
use spate_engine::Durability;

#[test]
fn a_reader_sees_every_offset_throughout_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        // A 1 KiB cache: reads go through the segment map, the index and the disk.
        let (log, _) = open_with(
            Rc::new(spate_engine::io::dma::DmaStorage),
            &root,
            small_config(),
            1024,
        )
        .await;
        let done = Rc::new(Cell::new(false));
        let reader = glommio::spawn_local({
            let (log, done) = (log.clone(), done.clone());
            async move {
                // The segment counts the reader saw: it read around each roll.
                let mut seen = std::collections::BTreeSet::new();
                while !done.get() {
                    let stats = log.stats();
                    assert_eq!(stats.log_start_offset, 0, "the log start moved");
                    if stats.log_end_offset > 0 {
                        // The first offset, and the last one written: both in a segment that
                        // may be closing right now.
                        for offset in [0, stats.log_end_offset - 1] {
                            let got = log.read(offset, 1).await.unwrap_or_else(|e| {
                                panic!("read at {offset} (end {}): {e}", stats.log_end_offset)
                            });
                            let first = got.first().unwrap_or_else(|| {
                                panic!(
                                    "nothing read at {offset} below the end {}",
                                    stats.log_end_offset
                                )
                            });
                            assert!(first.base_offset <= offset && offset < first.next_offset());
                        }
                        seen.insert(stats.segments);
                    }
                    futures_lite::future::yield_now().await;
                }
                seen
            }
        });
        // 64 KiB batches into 1 MiB segments: a roll every 16 appends.
        for seq in 0..200u64 {
            log.append(vec![batch(seq, 64 * 1024, 1000)], Durability::Durable)
                .await
                .unwrap();
        }
        done.set(true);
        let seen = reader.await;
        let segments = log.stats().segments;
        assert!(segments >= 10, "the log must have rolled");
        // The reader read while the log held each of its segment counts, from 1 to the last
        // (the append that completes a segment rolls it: the reader sees it with a new
        // empty active segment).
        assert_eq!(
            seen,
            (1..=segments).collect(),
            "the reader did not read between every roll"
        );
        log.close().await.unwrap();
    });
}
