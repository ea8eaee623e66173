//! The engine API that replication and tiering build on: a follower's append at the leader's
//! offsets and epochs, `truncate_suffix`, the leader-epoch index, a high watermark separate
//! from the log end with reads and waits bounded by it, and `LogOffsets`.

mod common;

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use common::*;
use spate_engine::io::mem::{CrashMode, MemStorage};
use spate_engine::io::Storage;
use spate_engine::log::epochs::EpochEntry;
use spate_engine::{
    AppendBatch, Durability, EngineError, LogConfig, LogOffsets, PartitionLog, ReadBatch, ReadBound,
};

fn rolling() -> LogConfig {
    LogConfig {
        segment_bytes: 32 * 1024,
        preallocate_bytes: 16 * 1024,
        index_interval_bytes: 4096,
        ..LogConfig::default()
    }
}

async fn open_mem(mem: &MemStorage) -> PartitionLog {
    let storage: Rc<dyn Storage> = Rc::new(mem.clone());
    open_with(storage, &PathBuf::from("/data"), rolling(), 1 << 20)
        .await
        .0
}

fn epoch_batch(seq: u64, epoch: i32) -> AppendBatch {
    AppendBatch {
        leader_epoch: epoch,
        ..batch(
            seq,
            3_000 + (seq as usize * 997) % 5_000,
            1_000 + seq as i64,
        )
    }
}

async fn append_epochs(log: &PartitionLog, seqs: std::ops::Range<u64>, epoch: i32) {
    for seq in seqs {
        log.append(vec![epoch_batch(seq, epoch)], Durability::Durable)
            .await
            .unwrap();
    }
}

#[test]
fn a_follower_appends_the_leaders_batches_verbatim_and_refuses_overlaps_and_old_epochs() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), || async move {
        let leader_mem = MemStorage::new();
        let leader = open_mem(&leader_mem).await;
        append_epochs(&leader, 0..6, 1).await;
        append_epochs(&leader, 6..12, 3).await;
        let from_leader = read_all(&leader, 0).await;

        let follower_mem = MemStorage::new();
        let follower = open_mem(&follower_mem).await;
        // Going back among themselves. (Going forward past a batch's end is a gap that a
        // compacted leader's log has: `compaction.rs` copies one.)
        let back = vec![from_leader[2].clone(), from_leader[0].clone()];
        let err = follower
            .append_replicated(back, Durability::Durable)
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::InvalidAppend(_)), "{err:?}");
        assert_eq!(
            follower.offsets().log_end,
            0,
            "a refused append leaves nothing"
        );
        for chunk in from_leader.chunks(5) {
            let r = follower
                .append_replicated(chunk.to_vec(), Durability::Durable)
                .await
                .unwrap();
            assert_eq!(r.base_offset, chunk[0].base_offset);
        }
        // Below the follower's log end.
        let err = follower
            .append_replicated(from_leader[2..4].to_vec(), Durability::Durable)
            .await
            .unwrap_err();
        let end = follower.offsets().log_end;
        assert!(
            matches!(err, EngineError::NotContiguous { got, log_end } if got == from_leader[2].base_offset && log_end == end),
            "{err:?}"
        );
        let copied = read_all(&follower, 0).await;
        assert_eq!(
            copied, from_leader,
            "offsets, epochs, timestamps and bytes as the leader's"
        );
        assert_eq!(follower.leader_epochs(), leader.leader_epochs());
        assert_eq!(
            follower.leader_epochs(),
            vec![
                EpochEntry {
                    epoch: 1,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 3,
                    start_offset: from_leader[6].base_offset
                },
            ]
        );
        // A deposed leader's batch (epoch 2 < 3) is never applied, nor a leader's of epoch 2.
        let end = follower.offsets().log_end;
        let stale = ReadBatch {
            base_offset: end,
            leader_epoch: 2,
            ..from_leader[0].clone()
        };
        let err = follower
            .append_replicated(vec![stale], Durability::Durable)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                EngineError::StaleEpoch {
                    epoch: 2,
                    latest: 3
                }
            ),
            "{err:?}"
        );
        let err = leader
            .append(vec![epoch_batch(50, 2)], Durability::Durable)
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::StaleEpoch { .. }), "{err:?}");
        // OffsetsForLeaderEpoch answers.
        let e3 = from_leader[6].base_offset;
        assert_eq!(follower.end_offset_for_epoch(1), Some((1, e3)));
        assert_eq!(follower.end_offset_for_epoch(2), Some((1, e3)));
        assert_eq!(follower.end_offset_for_epoch(3), Some((3, end)));
        assert_eq!(follower.end_offset_for_epoch(0), None);

        // The epochs survive a power loss (the index is saved before its epoch's frames).
        drop(follower);
        follower_mem.crash(CrashMode::DropUnsynced);
        let follower = open_mem(&follower_mem).await;
        assert_eq!(follower.leader_epochs(), leader.leader_epochs());
        assert_eq!(read_all(&follower, 0).await, from_leader);
    });
}

#[test]
fn truncate_suffix_cuts_whole_batches_across_segments_and_the_log_goes_on_from_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), || async move {
        let mem = MemStorage::new();
        let log = open_mem(&mem).await;
        append_epochs(&log, 0..10, 1).await;
        append_epochs(&log, 10..30, 2).await;
        let before = read_all(&log, 0).await;
        assert!(log.segment_bases().len() >= 4, "{:?}", log.segment_bases());
        // Cut inside a batch of an older segment, in epoch 1's range: the whole batch goes.
        let victim = &before[7];
        assert!(victim.record_count > 1 || before[8].record_count > 1);
        let (victim, inside) = before[7..9]
            .iter()
            .find(|b| b.record_count > 1)
            .map(|b| (b.clone(), b.base_offset + 1))
            .unwrap();
        let end = log.truncate_suffix(inside).await.unwrap();
        assert_eq!(end, victim.base_offset);
        let kept: Vec<ReadBatch> = before
            .iter()
            .take_while(|b| b.base_offset < end)
            .cloned()
            .collect();
        assert_eq!(read_all(&log, 0).await, kept);
        let o = log.offsets();
        assert_eq!((o.log_end, o.high_watermark), (end, end));
        assert!(o.durable <= end);
        assert_eq!(
            log.leader_epochs(),
            vec![EpochEntry {
                epoch: 1,
                start_offset: 0
            }]
        );
        assert!(log.segment_bases().iter().all(|b| *b <= end));
        // Reading past the new end is out of range; appends go on at the cut, in a new epoch.
        assert!(matches!(
            log.read(end + 1, 1024).await,
            Err(EngineError::OffsetOutOfRange { .. })
        ));
        let r = log
            .append(vec![epoch_batch(100, 4)], Durability::Durable)
            .await
            .unwrap();
        assert_eq!(r.base_offset, end);
        append_epochs(&log, 101..110, 4).await;
        let after = read_all(&log, 0).await;
        assert_eq!(&after[..kept.len()], &kept[..]);
        assert_eq!(after[kept.len()].base_offset, end);
        assert_eq!(after.len(), kept.len() + 10);
        // A cut at or past the end changes nothing.
        let end2 = log.offsets().log_end;
        assert_eq!(log.truncate_suffix(end2 + 5).await.unwrap(), end2);

        // A clean restart and a power loss both find the same log and epochs.
        log.close().await.unwrap();
        let log = open_mem(&mem).await;
        assert_eq!(read_all(&log, 0).await, after);
        let epochs = log.leader_epochs();
        assert_eq!(
            epochs,
            vec![
                EpochEntry {
                    epoch: 1,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 4,
                    start_offset: end
                },
            ]
        );
        drop(log);
        mem.crash(CrashMode::DropUnsynced);
        let log = open_mem(&mem).await;
        assert_eq!(read_all(&log, 0).await, after);
        assert_eq!(log.leader_epochs(), epochs);

        // Down to nothing: the log restarts at its start.
        assert_eq!(log.truncate_suffix(0).await.unwrap(), 0);
        assert!(read_all(&log, 0).await.is_empty());
        let r = log
            .append(vec![epoch_batch(200, 5)], Durability::Durable)
            .await
            .unwrap();
        assert_eq!(r.base_offset, 0);
    });
}

/// A power loss in the middle of a truncation leaves the old log or a prefix of it that still
/// reaches the cut: never a hole, never a lost batch below the cut.
#[test]
fn a_power_loss_during_truncation_leaves_a_prefix_that_reaches_the_cut() {
    use spate_engine::io::fault::{FaultPlan, FaultyStorage};
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), || async move {
        let mut crash_after = 0;
        loop {
            assert!(crash_after < 500, "the truncation never completed");
            let mem = MemStorage::new();
            let plan = FaultPlan::new();
            let storage: Rc<dyn Storage> =
                Rc::new(FaultyStorage::new(Rc::new(mem.clone()), plan.clone()));
            let (log, _) = open_with(storage, &PathBuf::from("/data"), rolling(), 1 << 20).await;
            append_epochs(&log, 0..8, 1).await;
            append_epochs(&log, 8..24, 2).await;
            let before = read_all(&log, 0).await;
            let cut = before[5].base_offset;
            plan.crash_after(crash_after);
            let done = log.truncate_suffix(cut).await.is_ok();
            drop(log);
            // A completed truncation must survive the strictest power loss.
            mem.crash(if done || crash_after % 2 == 0 {
                CrashMode::DropUnsynced
            } else {
                CrashMode::Torn { seed: crash_after }
            });
            let log = open_mem(&mem).await;
            let got = read_all(&log, 0).await;
            assert!(
                got.len() >= 5 && got[..] == before[..got.len()],
                "crash point {crash_after}: {} batches, a prefix of the {} before, reaching {cut}",
                got.len(),
                before.len()
            );
            if done {
                assert_eq!(got.len(), 5, "a completed truncation is durable");
                assert_eq!(
                    log.leader_epochs(),
                    vec![EpochEntry {
                        epoch: 1,
                        start_offset: 0
                    }]
                );
                break;
            }
            crash_after += 1;
        }
        assert!(crash_after > 5, "only {crash_after} crash points");
    });
}

#[test]
fn a_managed_high_watermark_bounds_consumer_reads_and_wakes_their_waits() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), || async move {
        let mem = MemStorage::new();
        let log = open_mem(&mem).await;
        append_epochs(&log, 0..3, 1).await;
        let auto = log.offsets();
        assert_eq!(
            auto.high_watermark, auto.log_end,
            "without replication it follows the end"
        );
        let hw0 = auto.log_end;
        log.manage_high_watermark(hw0);
        append_epochs(&log, 3..6, 1).await;
        let o: LogOffsets = log.offsets();
        assert_eq!(o.high_watermark, hw0);
        assert!(o.log_end > hw0 && o.holds());
        // A consumer sees up to the high watermark, a follower up to the end.
        let consumer = log.read(0, 1 << 20).await.unwrap();
        assert_eq!(consumer.last().unwrap().next_offset(), hw0);
        assert!(log.read(hw0, 1 << 20).await.unwrap().is_empty());
        let follower = log.read_to(hw0, 1 << 20, ReadBound::LogEnd).await.unwrap();
        assert_eq!(follower.last().unwrap().next_offset(), o.log_end);

        // A consumer's wait is not woken by writes, only by the high watermark.
        let waiter = {
            let log = log.clone();
            glommio::spawn_local(async move { log.wait_for_data(hw0).await })
        };
        append_epochs(&log, 6..7, 1).await;
        glommio::timer::sleep(Duration::from_millis(20)).await;
        assert_eq!(log.data_waiters(), 1, "still waiting after a write");
        let mid = follower[0].next_offset();
        log.advance_high_watermark(mid).unwrap();
        waiter.await;
        assert_eq!(log.offsets().high_watermark, mid);
        // Never backwards, never past the end.
        log.advance_high_watermark(hw0).unwrap();
        assert_eq!(log.offsets().high_watermark, mid);
        let end = log.offsets().log_end;
        assert!(matches!(
            log.advance_high_watermark(end + 1),
            Err(EngineError::OffsetOutOfRange { .. })
        ));
        // DeleteRecords may not pass the high watermark.
        assert!(log.delete_records(mid + 1).await.is_err());
        assert_eq!(log.delete_records(mid).await.unwrap(), mid);
        let o = log.offsets();
        assert_eq!((o.log_start, o.local_start), (mid, mid));
        // A truncation below it brings it back.
        let cut = log.truncate_suffix(mid).await.unwrap();
        assert_eq!(log.offsets().high_watermark, cut.min(mid));
    });
}

/// `truncate_fully` empties the log and starts it at an offset past its end (a follower
/// whose leader's log starts there, a metadata log replaced by a snapshot); a power loss at
/// any point leaves a prefix of the old log or the new empty one, and a completed one is
/// durable, appends going on from the new start.
#[test]
fn truncate_fully_starts_the_log_again_at_an_offset_and_survives_a_power_loss_at_every_step() {
    use spate_engine::io::fault::{FaultPlan, FaultyStorage};
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), || async move {
        let mut crash_after = 0;
        loop {
            assert!(crash_after < 500, "the truncation never completed");
            let mem = MemStorage::new();
            let plan = FaultPlan::new();
            let storage: Rc<dyn Storage> =
                Rc::new(FaultyStorage::new(Rc::new(mem.clone()), plan.clone()));
            let (log, _) = open_with(storage, &PathBuf::from("/data"), rolling(), 1 << 20).await;
            append_epochs(&log, 0..16, 1).await;
            let before = read_all(&log, 0).await;
            let start = log.offsets().log_end + 1_000;
            plan.crash_after(crash_after);
            let done = log.truncate_fully(start).await.is_ok();
            drop(log);
            mem.crash(if done || crash_after % 2 == 0 {
                CrashMode::DropUnsynced
            } else {
                CrashMode::Torn { seed: crash_after }
            });
            let log = open_mem(&mem).await;
            let o = log.offsets();
            if o.log_start == start {
                assert_eq!(o.log_end, start, "crash point {crash_after}: {o:?}");
                assert!(read_all(&log, start).await.is_empty());
                assert!(log.leader_epochs().is_empty());
            } else {
                let got = read_all(&log, 0).await;
                assert!(
                    got[..] == before[..got.len()],
                    "crash point {crash_after}: {} batches are not a prefix of the {} before",
                    got.len(),
                    before.len()
                );
                assert!(!done, "a completed truncation is durable");
            }
            if done {
                // The log goes on from its new start.
                let r = log
                    .append(vec![epoch_batch(99, 3)], Durability::Durable)
                    .await
                    .unwrap();
                assert_eq!(r.base_offset, start);
                drop(log);
                mem.crash(CrashMode::DropUnsynced);
                let log = open_mem(&mem).await;
                let got = read_all(&log, start).await;
                assert_eq!(got.len(), 1);
                assert_eq!(got[0].base_offset, start);
                assert_eq!(log.offsets().log_start, start);
                assert_eq!(
                    log.leader_epochs(),
                    vec![EpochEntry {
                        epoch: 3,
                        start_offset: start
                    }]
                );
                break;
            }
            crash_after += 1;
        }
        assert!(crash_after > 5, "only {crash_after} crash points");
    });
}
