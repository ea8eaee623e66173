//! The partition log through its public API on real O_DIRECT files: appends, reads from the
//! cache and from disk, rolls, retention, time lookups, reopen after close and after a crash.

mod common;

use common::*;
use spate_engine::{Durability, EngineError};

#[test]
fn append_then_read_from_disk_and_cache() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        // A 1 KiB cache forces most reads through the index and DMA reads.
        let (log, report) = open_with(
            std::rc::Rc::new(spate_engine::io::dma::DmaStorage),
            &root,
            small_config(),
            1024,
        )
        .await;
        assert_eq!(report.next_offset, 0);
        let mut expected = Vec::new();
        for seq in 0..300u64 {
            let len = 1 + (seq as usize * 37) % 9000;
            let durability = if seq % 2 == 0 {
                Durability::Durable
            } else {
                Durability::Appended
            };
            let r = log
                .append(vec![batch(seq, len, 1000 + seq as i64)], durability)
                .await
                .unwrap();
            expected.push((r.base_offset, payload(seq, len)));
        }
        let got = read_all(&log, 0).await;
        assert_eq!(got.len(), expected.len());
        for (b, (off, p)) in got.iter().zip(&expected) {
            assert_eq!(b.base_offset, *off);
            assert_eq!(&b.payload[..], &p[..]);
        }
        // Reads starting in the middle of a multi-record batch return that batch.
        let mid = got[10].base_offset + 1;
        if got[10].record_count > 1 {
            assert_eq!(
                log.read(mid, 1).await.unwrap()[0].base_offset,
                got[10].base_offset
            );
        }
        // Every offset resolves to the batch containing it.
        for b in got.iter().step_by(7) {
            for o in b.base_offset..b.next_offset() {
                let r = log.read(o, 1).await.unwrap();
                assert_eq!(r[0].base_offset, b.base_offset);
            }
        }
        let end = log.stats().log_end_offset;
        assert!(log.read(end, 100).await.unwrap().is_empty());
        assert!(matches!(
            log.read(end + 1, 100).await,
            Err(EngineError::OffsetOutOfRange { .. })
        ));
        assert!(log.stats().segments > 1, "1 MiB segments must have rolled");
        log.close().await.unwrap();
    });
}

#[test]
fn writes_cut_into_aligned_pieces_read_back_intact_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let plan = spate_engine::io::fault::FaultPlan::new();
        let config = spate_engine::LogConfig {
            segment_bytes: 64 * 1024 * 1024,
            preallocate_bytes: 4 * 1024 * 1024,
            ..small_config()
        };
        let (log, _) = open_with(faulty(&plan), &root, config.clone(), 1024).await;
        // Sizes around and across the 256 KiB write pieces, each appended alone and durable,
        // so each is one write of the appender, starting inside the previous write's block.
        let piece = spate_engine::log::appender::WRITE_ALIGN as usize;
        let sizes = [
            1,
            piece - 100,
            piece,
            piece + 1,
            3 * piece + 77,
            5000,
            2 * piece - 1,
        ];
        let writes_before = plan.writes();
        let mut expected = Vec::new();
        for (seq, len) in sizes.iter().cycle().take(21).enumerate() {
            let r = log
                .append(vec![batch(seq as u64, *len, 0)], Durability::Durable)
                .await
                .unwrap();
            expected.push((r.base_offset, payload(seq as u64, *len)));
        }
        assert!(
            plan.writes() - writes_before > expected.len() as u64,
            "large appends were written in several pieces"
        );
        log.close().await.unwrap();
        // From disk only: a new log over the same files, with a cache too small to help.
        let (log, _) = open_with(faulty(&plan), &root, config, 1024).await;
        let got = read_all(&log, 0).await;
        assert_eq!(got.len(), expected.len());
        for (b, (off, p)) in got.iter().zip(&expected) {
            assert_eq!(b.base_offset, *off);
            assert_eq!(&b.payload[..], &p[..]);
        }
        log.close().await.unwrap();
    });
}

#[test]
fn close_while_appends_keep_arriving_fails_nothing_and_loses_no_ack() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let config = spate_engine::LogConfig {
            segment_bytes: 64 * 1024 * 1024,
            ..small_config()
        };
        for round in 0..20u64 {
            let sub = root.join(format!("r{round}"));
            let (log, _) = open(&sub, config.clone()).await;
            // Appenders that keep going until the log refuses them.
            let tasks: Vec<_> = (0..8u64)
                .map(|t| {
                    let log = log.clone();
                    glommio::spawn_local(async move {
                        let mut acked = Vec::new();
                        for i in 0.. {
                            let durability = if i % 3 == 0 {
                                Durability::Durable
                            } else {
                                Durability::Appended
                            };
                            match log
                                .append(vec![batch(t * 1_000_000 + i, 3000, 0)], durability)
                                .await
                            {
                                Ok(r) => acked.push(r.base_offset),
                                Err(_) => break,
                            }
                        }
                        acked
                    })
                })
                .collect();
            glommio::timer::sleep(std::time::Duration::from_micros(300 * (round + 1))).await;
            // Bounded: a close that waits for appenders to pause would wait forever.
            let closed = futures_lite::future::or(async { Some(log.close().await) }, async {
                glommio::timer::sleep(std::time::Duration::from_secs(20)).await;
                None
            })
            .await;
            closed
                .expect("close returns while appends keep arriving")
                .unwrap();
            assert_eq!(
                log.failure(),
                None,
                "round {round}: closing failed the partition"
            );
            let mut acked = Vec::new();
            for t in tasks {
                acked.extend(t.await);
            }
            // Reopened: every acked append is there.
            let (log, report) = open(&sub, config.clone()).await;
            let got = read_all(&log, 0).await;
            let offsets: std::collections::HashSet<u64> =
                got.iter().map(|b| b.base_offset).collect();
            for o in &acked {
                assert!(offsets.contains(o), "round {round}: acked offset {o} lost");
            }
            assert_eq!(report.bytes_cut, 0, "round {round}: {report:?}");
            assert!(
                report.from_checkpoint,
                "round {round}: a clean close leaves a checkpoint"
            );
            log.close().await.unwrap();
        }
    });
}

#[test]
fn clean_close_reopens_from_checkpoint_without_scanning() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let (log, _) = open(&root, small_config()).await;
        for seq in 0..50 {
            log.append(vec![batch(seq, 3000, 5)], Durability::Durable)
                .await
                .unwrap();
        }
        let end = log.stats().log_end_offset;
        log.close().await.unwrap();
        assert!(matches!(
            log.append(vec![batch(99, 10, 0)], Durability::Durable)
                .await,
            Err(EngineError::Closed)
        ));
        let (log, report) = open(&root, small_config()).await;
        assert!(report.from_checkpoint);
        assert_eq!(report.bytes_scanned, 0);
        assert_eq!(report.bytes_cut, 0);
        assert_eq!(report.next_offset, end);
        assert_eq!(read_all(&log, 0).await.len(), 50);
        // Appends continue after the reopened end.
        let r = log
            .append(vec![batch(50, 100, 5)], Durability::Durable)
            .await
            .unwrap();
        assert_eq!(r.base_offset, end);
        log.close().await.unwrap();
    });
}

#[test]
fn reopen_without_close_recovers_everything_durable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let (log, _) = open(&root, small_config()).await;
        for seq in 0..40 {
            log.append(vec![batch(seq, 10_000, 5)], Durability::Durable)
                .await
                .unwrap();
        }
        let end = log.stats().log_end_offset;
        drop(log); // no close: like a crash after the acks
        let (log, report) = open(&root, small_config()).await;
        assert!(!report.from_checkpoint);
        assert_eq!(report.next_offset, end);
        assert_eq!(report.bytes_cut, 0, "{report:?}");
        let all = read_all(&log, 0).await;
        assert_eq!(all.len(), 40);
        for (seq, b) in all.iter().enumerate() {
            assert_eq!(&b.payload[..], &payload(seq as u64, 10_000)[..]);
        }
    });
}

#[test]
fn a_lowered_flush_interval_applies_at_once_and_the_periodic_sync_does_not_roll() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let mut cfg = small_config();
        cfg.flush_interval_ms = 3_600_000;
        cfg.segment_ms = 60_000;
        let (log, _) = open(&root, cfg.clone()).await;
        log.append(vec![batch(0, 100, 1_000)], Durability::Appended)
            .await
            .unwrap();
        // An hour's timer is armed. Lowered on the open partition (flush.ms altered), the
        // interval holds from the next write on.
        cfg.flush_interval_ms = 10;
        log.set_config(cfg);
        log.append(vec![batch(1, 100, 2_000)], Durability::Appended)
            .await
            .unwrap();
        let end = log.stats().log_end_offset;
        assert_eq!(log.stats().durable_offset, 0);
        // No await before this: the 10 ms timer cannot have fired yet. The active segment is
        // now past segment_ms, with nothing to append.
        log.set_active_segment_created_at(
            std::time::Instant::now() - std::time::Duration::from_secs(120),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while log.stats().durable_offset < end {
            assert!(
                std::time::Instant::now() < deadline,
                "not synced: {:?}",
                log.stats()
            );
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(
            log.stats().segments,
            1,
            "a periodic sync of an idle partition starts no empty segment"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn rolls_by_age_and_applies_retention_by_size_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let mut cfg = small_config();
        cfg.segment_ms = 60_000;
        let (log, _) = open(&root, cfg.clone()).await;
        log.append(vec![batch(0, 100, 1_000)], Durability::Durable)
            .await
            .unwrap();
        log.set_active_segment_created_at(
            std::time::Instant::now() - std::time::Duration::from_secs(120),
        );
        log.append(vec![batch(1, 100, 2_000)], Durability::Durable)
            .await
            .unwrap();
        assert_eq!(
            log.stats().segments,
            2,
            "an old segment rolls at the next append"
        );
        log.close().await.unwrap();

        // Retention by age: segment 0's newest record (ts 1000) is older than now - 10s.
        cfg.retention_ms = 10_000;
        let (log, _) = open(&root, cfg.clone()).await;
        assert_eq!(log.apply_retention(1_000 + 10_500).await.unwrap(), 1);
        assert_eq!(log.stats().log_start_offset, 1);
        assert!(matches!(
            log.read(0, 10).await,
            Err(EngineError::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.read(1, 10).await.unwrap()[0].base_offset, 1);
        log.close().await.unwrap();

        // Retention by size keeps the newest segments within the limit.
        let mut cfg = small_config();
        cfg.retention_bytes = 2 * 1024 * 1024;
        let (log, _) = open(&root, cfg).await;
        for seq in 0..200 {
            log.append(vec![batch(seq, 40_000, 3_000)], Durability::Appended)
                .await
                .unwrap();
        }
        let before = log.stats();
        let deleted = log.apply_retention(0).await.unwrap();
        let after = log.stats();
        assert!(deleted > 0 && after.segments < before.segments);
        assert!(
            after.size_bytes <= 2 * 1024 * 1024 + 1024 * 1024,
            "{after:?}"
        );
        assert!(after.log_start_offset > 0);
        let first = log.read(after.log_start_offset, 10).await.unwrap();
        assert_eq!(first[0].base_offset, after.log_start_offset);
        log.close().await.unwrap();
        let (log, _) = open(&root, small_config()).await;
        assert_eq!(
            log.stats().log_start_offset,
            after.log_start_offset,
            "deleted segments stay deleted"
        );
    });
}

#[test]
fn finds_offsets_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let (log, _) = open(&root, small_config()).await;
        let mut offsets = Vec::new();
        for seq in 0..500u64 {
            let r = log
                .append(
                    vec![batch(seq, 2000, 10_000 + seq as i64 * 10)],
                    Durability::Appended,
                )
                .await
                .unwrap();
            offsets.push(r.base_offset);
        }
        for seq in [0u64, 1, 77, 250, 499] {
            let ts = 10_000 + seq as i64 * 10;
            assert_eq!(
                log.offset_for_timestamp(ts).await.unwrap(),
                Some((offsets[seq as usize], ts))
            );
            // A time between two batches gives the later one.
            if seq < 499 {
                assert_eq!(
                    log.offset_for_timestamp(ts + 5).await.unwrap().unwrap().0,
                    offsets[seq as usize + 1]
                );
            }
        }
        assert_eq!(log.offset_for_timestamp(0).await.unwrap().unwrap().0, 0);
        assert_eq!(log.offset_for_timestamp(1_000_000).await.unwrap(), None);
        log.close().await.unwrap();
        let (log, _) = open(&root, small_config()).await;
        assert_eq!(
            log.offset_for_timestamp(10_000 + 2500).await.unwrap(),
            Some((offsets[250], 12_500))
        );
    });
}

#[test]
fn multi_batch_append_patches_base_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let (log, _) = open(&root, small_config()).await;
        let mk = |n: u32| {
            let mut b =
                spate_engine::AppendBatch::opaque(bytes::Bytes::from_static(&[0xffu8; 64]), n);
            b.base_offset_field = Some(0);
            b
        };
        let r = log
            .append(vec![mk(3), mk(2), mk(5)], Durability::Durable)
            .await
            .unwrap();
        assert_eq!((r.base_offset, r.last_offset), (0, 9));
        let all = read_all(&log, 0).await;
        let bases: Vec<u64> = all.iter().map(|b| b.base_offset).collect();
        assert_eq!(bases, vec![0, 3, 5]);
        // From the cache: the caller's bytes, unpatched (patching would be a copy).
        for b in &all {
            assert_eq!(&b.payload[..8], &[0xff; 8]);
        }
        // From disk: the field holds the assigned offset, under a valid payload checksum.
        log.close().await.unwrap();
        let (log, _) = open(&root, small_config()).await;
        let all = read_all(&log, 0).await;
        assert_eq!(all.len(), 3);
        for b in &all {
            assert_eq!(
                i64::from_be_bytes(b.payload[..8].try_into().unwrap()),
                b.base_offset as i64
            );
            assert!(b.payload[8..].iter().all(|x| *x == 0xff));
        }
        assert!(matches!(
            log.append(vec![mk(0)], Durability::Durable).await,
            Err(EngineError::InvalidAppend(_))
        ));
        let mut bad = mk(1);
        bad.base_offset_field = Some(60);
        assert!(matches!(
            log.append(vec![bad], Durability::Durable).await,
            Err(EngineError::InvalidAppend(_))
        ));
        assert!(matches!(
            log.append(vec![], Durability::Durable).await,
            Err(EngineError::InvalidAppend(_))
        ));
    });
}

#[test]
fn delete_records_moves_the_start_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let mut cfg = small_config();
        cfg.segment_bytes = 64 * 1024;
        let (log, _) = open(&root, cfg.clone()).await;
        let mut ends = Vec::new();
        for i in 0..60 {
            let r = log
                .append(vec![batch(i, 4000, 1_000 + i as i64)], Durability::Durable)
                .await
                .unwrap();
            ends.push(r.last_offset + 1);
        }
        let end = log.stats().log_end_offset;
        assert!(log.stats().segments > 2);
        let target = ends[30];
        assert!(matches!(
            log.delete_records(end + 1).await,
            Err(EngineError::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.delete_records(target).await.unwrap(), target);
        assert_eq!(log.stats().log_start_offset, target);
        assert!(matches!(
            log.read(target - 1, 10).await,
            Err(EngineError::OffsetOutOfRange { .. })
        ));
        assert_eq!(read_all(&log, target).await[0].base_offset, target);
        let segments_after = log.stats().segments;
        assert!(
            segments_after < 16,
            "whole segments below the start are deleted"
        );
        // Moving the start back is a no-op.
        assert_eq!(log.delete_records(3).await.unwrap(), target);
        drop(log);
        // Reopened without a clean close: the start is still there.
        let (log, _) = open(&root, cfg).await;
        assert_eq!(log.stats().log_start_offset, target);
        assert_eq!(log.stats().log_end_offset, end);
        assert!(log.read(0, 10).await.is_err());
        log.close().await.unwrap();
    });
}

#[test]
fn waiters_wake_on_append_and_settings_change_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let (log, _) = open(&root, small_config()).await;
        // Nothing at offset 0 yet: the wait ends only when an append lands.
        let waiter = {
            let log = log.clone();
            glommio::spawn_local(async move {
                log.wait_for_data(0).await;
                log.stats().log_end_offset
            })
        };
        glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
        log.append(vec![batch(0, 100, 5)], Durability::Appended)
            .await
            .unwrap();
        assert!(waiter.await > 0);
        // Already past: returns at once.
        log.wait_for_data(0).await;

        let mut cfg = log.config();
        cfg.segment_bytes = 64 * 1024;
        log.set_config(cfg);
        for i in 1..40 {
            log.append(vec![batch(i, 4000, 5)], Durability::Appended)
                .await
                .unwrap();
        }
        assert!(log.stats().segments > 1, "the smaller segment size applies");
        log.close().await.unwrap();
    });
}

#[test]
fn waits_given_up_do_not_pile_up_on_an_idle_partition() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let (log, _) = open(&root, small_config()).await;
        // A long poll on an idle partition gives up on its timer, again and again.
        for _ in 0..1000 {
            futures_lite::future::or(
                log.wait_for_data(0),
                glommio::timer::sleep(std::time::Duration::from_micros(1)),
            )
            .await;
        }
        assert!(log.data_waiters() <= 1, "{} waits kept", log.data_waiters());
        // A live wait is kept, and woken by the next append.
        let waiter = {
            let log = log.clone();
            glommio::spawn_local(async move { log.wait_for_data(0).await })
        };
        glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(log.data_waiters(), 1);
        log.append(vec![batch(0, 100, 5)], Durability::Appended)
            .await
            .unwrap();
        waiter.await;
        assert_eq!(log.data_waiters(), 0);
        log.close().await.unwrap();
    });
}

#[test]
fn the_largest_timestamp_is_found_across_segments_and_after_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let (log, _) = open(&root, small_config()).await;
        assert_eq!(log.offset_of_max_timestamp().await.unwrap(), None);
        // Timestamps out of order over several segments: the largest (900) twice, first in
        // batch 30; a larger one (950) in batch 5, which DeleteRecords will drop.
        let mut cfg = log.config();
        cfg.segment_bytes = 64 * 1024;
        log.set_config(cfg);
        let mut bases = Vec::new();
        for i in 0..60u64 {
            let ts = match i {
                5 => 950,
                30 | 45 => 900,
                _ => (i as i64 * 7) % 500,
            };
            let r = log
                .append(vec![batch(i, 4000, ts)], Durability::Appended)
                .await
                .unwrap();
            bases.push(r.base_offset);
        }
        assert!(log.stats().segments > 2);
        assert_eq!(
            log.offset_of_max_timestamp().await.unwrap(),
            Some((bases[5], 950))
        );
        log.delete_records(bases[6]).await.unwrap();
        assert_eq!(
            log.offset_of_max_timestamp().await.unwrap(),
            Some((bases[30], 900))
        );
        // The same after a reopen (the indexes come from disk).
        log.close().await.unwrap();
        let (log, _) = open(&root, small_config()).await;
        assert_eq!(
            log.offset_of_max_timestamp().await.unwrap(),
            Some((bases[30], 900))
        );
        log.close().await.unwrap();
    });
}

#[test]
fn offset_before_end_covers_the_last_bytes_asked_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let (log, _) = open(&root, small_config()).await;
        // 10 KiB batches (each indexed: the interval is 4 KiB) into 1 MiB segments.
        for seq in 0..300u64 {
            log.append(vec![batch(seq, 10 * 1024, 1000)], Durability::Durable)
                .await
                .unwrap();
        }
        let stats = log.stats();
        assert!(stats.segments >= 3, "{stats:?}");
        for want in [1u64, 50 * 1024, 1536 * 1024, 2500 * 1024] {
            let from = log.offset_before_end(want);
            let batches = read_all(&log, from).await;
            assert_eq!(batches[0].base_offset, from, "a batch starts at {from}");
            let payload: u64 = batches.iter().map(|b| b.payload.len() as u64).sum();
            // At least `want` bytes of log (each frame adds its header to the payload)...
            assert!(
                payload + batches.len() as u64 * 256 >= want,
                "{want}: {payload} bytes from {from}"
            );
            // ...and not a batch more than it takes.
            assert!(
                payload - (batches[0].payload.len() as u64) < want,
                "{want}: {payload} bytes from {from}"
            );
        }
        assert_eq!(log.offset_before_end(u64::MAX), stats.log_start_offset);
        log.close().await.unwrap();
    });
}
