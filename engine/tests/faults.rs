//! The partition log against a failing disk, through the fault-injecting storage: EIO and
//! ENOSPC on writes, syncs and preallocation, torn writes, crashes at every operation, and
//! group commit. Nothing that was not durable may be acknowledged as durable, and after a
//! restart on a healthy disk every acknowledged batch must be there, intact.

mod common;

use common::*;
use spate_engine::frame::FRAME_HEADER_LEN;
use spate_engine::io::fault::FaultPlan;
use spate_engine::{Durability, EngineError, LogConfig, ReadBatch};

/// One batch sent to the log: the offset it got (or would have got) and what it holds.
#[derive(Debug, Clone, Copy)]
struct Sent {
    offset: u64,
    seq: u64,
    len: usize,
}

impl Sent {
    fn next_offset(&self) -> u64 {
        self.offset + 1 + self.seq % 3
    }
}

fn check_batch(b: &ReadBatch, s: &Sent) {
    assert_eq!(
        b.base_offset, s.offset,
        "batch seq {} is at the wrong offset",
        s.seq
    );
    assert_eq!(
        b.record_count,
        1 + (s.seq % 3) as u32,
        "record count of the batch at {}",
        s.offset
    );
    assert!(
        b.payload[..] == payload(s.seq, s.len)[..],
        "payload of the batch at {} is damaged",
        s.offset
    );
}

/// `got` holds every acked batch in order, then at most a prefix of the unacked ones (which a
/// failed append may or may not have left on disk), and nothing else.
fn check_log(got: &[ReadBatch], acked: &[Sent], unacked: &[Sent]) {
    assert!(
        got.len() >= acked.len(),
        "acked batches are missing: {} served, {} acked",
        got.len(),
        acked.len()
    );
    assert!(
        got.len() <= acked.len() + unacked.len(),
        "{} batches served but only {} were ever appended",
        got.len(),
        acked.len() + unacked.len()
    );
    for (b, s) in got.iter().zip(acked.iter().chain(unacked)) {
        check_batch(b, s);
    }
}

/// Appends `count` durable batches (seq from `first_seq`), all of which must succeed.
async fn append_acked(
    log: &spate_engine::PartitionLog,
    first_seq: u64,
    count: u64,
    len: impl Fn(u64) -> usize,
) -> Vec<Sent> {
    let mut out = Vec::new();
    for seq in first_seq..first_seq + count {
        let len = len(seq);
        let r = log
            .append(
                vec![batch(seq, len, 1_000 + seq as i64)],
                Durability::Durable,
            )
            .await
            .unwrap();
        let sent = Sent {
            offset: r.base_offset,
            seq,
            len,
        };
        assert_eq!(r.last_offset + 1, sent.next_offset());
        out.push(sent);
    }
    out
}

fn assert_refuses_writes(err: &EngineError, what: &str) {
    assert!(
        matches!(err, EngineError::PartitionFailed { partition, .. } if partition == "t-0"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("refuses writes until restart"), "{msg}");
    assert!(
        msg.contains(what),
        "the refusal should say why ({what}): {msg}"
    );
}

#[test]
fn eio_on_write_fails_the_append_and_the_partition_and_keeps_acked_data() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let plan = FaultPlan::new();
        plan.only_files_ending_with(".log");
        // A 1 KiB cache: reads of acked data go to the disk.
        let (log, _) = open_with(faulty(&plan), &root, small_config(), 1024).await;
        let acked = append_acked(&log, 0, 12, |seq| 1_000 + seq as usize * 700).await;
        let end = log.stats().log_end_offset;
        assert!(log.failure().is_none());

        plan.fail_writes(libc::EIO, 0);
        let err = log
            .append(vec![batch(12, 5_000, 2_000)], Durability::Durable)
            .await
            .expect_err("an append whose write failed must not be acknowledged");
        assert!(
            matches!(err, EngineError::PartitionFailed { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("Input/output error"), "{err}");
        let failure = log
            .failure()
            .expect("a write error must fail the partition");
        assert!(
            failure.contains("injected write failure") && failure.contains("Input/output error"),
            "{failure}"
        );
        assert_eq!(
            log.stats().log_end_offset,
            end,
            "nothing of the failed append is visible"
        );

        // Later appends are refused up front, at either durability, without touching the disk.
        let writes = plan.writes();
        for durability in [Durability::Durable, Durability::Appended] {
            let err = log
                .append(vec![batch(13, 100, 2_000)], durability)
                .await
                .unwrap_err();
            assert_refuses_writes(&err, "Input/output error");
        }
        assert_eq!(plan.writes(), writes);

        // What was acked before the fault is still served, from disk.
        check_log(&read_all(&log, 0).await, &acked, &[]);
        log.close().await.unwrap();
        drop(log);

        // Restart on a healthy disk: every acked batch and nothing else.
        let (log, report) = open(&root, small_config()).await;
        assert_eq!(report.next_offset, end, "{report:?}");
        check_log(&read_all(&log, 0).await, &acked, &[]);
        let r = log
            .append(vec![batch(14, 3_000, 3_000)], Durability::Durable)
            .await
            .unwrap();
        assert_eq!(r.base_offset, end);
        log.close().await.unwrap();
    });
}

#[test]
fn eio_on_fdatasync_acks_nothing_and_fails_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let plan = FaultPlan::new();
        plan.only_files_ending_with(".log");
        let (log, _) = open_with(faulty(&plan), &root, small_config(), 1024).await;
        let acked = append_acked(&log, 0, 8, |seq| 2_000 + seq as usize * 300).await;
        let end = log.stats().log_end_offset;

        plan.fail_syncs(libc::EIO);
        let err = log
            .append(vec![batch(8, 4_000, 2_000)], Durability::Durable)
            .await
            .expect_err("an append whose fdatasync failed must not be acknowledged as durable");
        assert!(
            matches!(err, EngineError::PartitionFailed { .. }),
            "{err:?}"
        );
        let failure = log.failure().expect("a sync error must fail the partition");
        assert!(
            failure.contains("injected fdatasync failure")
                && failure.contains("Input/output error"),
            "{failure}"
        );
        assert!(log.stats().durable_offset <= end, "{:?}", log.stats());
        let err = log
            .append(vec![batch(9, 100, 2_000)], Durability::Durable)
            .await
            .unwrap_err();
        assert_refuses_writes(&err, "Input/output error");

        // The failed batch was written (not synced): it may be served, but intact.
        let unacked = [Sent {
            offset: end,
            seq: 8,
            len: 4_000,
        }];
        check_log(&read_all(&log, 0).await, &acked, &unacked);
        log.close().await.unwrap();
        drop(log);

        let (log, report) = open(&root, small_config()).await;
        assert!(report.next_offset >= end, "{report:?}");
        check_log(&read_all(&log, 0).await, &acked, &unacked);
    });
}

#[test]
fn eio_on_fdatasync_fails_every_concurrent_durable_append() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let plan = FaultPlan::new();
        plan.only_files_ending_with(".log");
        let (log, _) = open_with(faulty(&plan), &root, small_config(), 1024).await;
        let acked = append_acked(&log, 0, 3, |_| 3_000).await;
        let end = log.stats().log_end_offset;

        plan.fail_syncs(libc::EIO);
        // Distinct lengths, so a batch found on disk later tells which task sent it.
        let len_of = |seq: u64| 4_000 + seq as usize;
        let tasks: Vec<_> = (100..124u64)
            .map(|seq| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    log.append(vec![batch(seq, len_of(seq), 5)], Durability::Durable)
                        .await
                })
            })
            .collect();
        let mut failed = 0;
        for task in tasks {
            match task.await {
                Ok(r) => panic!(
                    "append at {} acked although every fdatasync fails",
                    r.base_offset
                ),
                Err(e) => {
                    assert!(matches!(e, EngineError::PartitionFailed { .. }), "{e:?}");
                    failed += 1;
                }
            }
        }
        assert_eq!(failed, 24);
        assert!(log.failure().is_some());
        assert!(plan.syncs() >= 1, "the failure must come from a sync");
        drop(log);

        // After a restart: the acked batches, then possibly some of the failed ones (they were
        // written but never synced), each intact, at contiguous offsets, each at most once.
        let (log, _) = open(&root, small_config()).await;
        let got = read_all(&log, 0).await;
        check_log(&got[..acked.len().min(got.len())], &acked, &[]);
        let mut next = end;
        let mut seen = std::collections::HashSet::new();
        for b in &got[acked.len()..] {
            let seq = (b.payload.len() - 4_000) as u64;
            assert!(
                (100..124).contains(&seq) && seen.insert(seq),
                "unexpected batch at {}",
                b.base_offset
            );
            check_batch(
                b,
                &Sent {
                    offset: next,
                    seq,
                    len: len_of(seq),
                },
            );
            next = b.next_offset();
        }
    });
}

#[test]
fn enospc_on_write_refuses_the_append_and_the_partition_takes_writes_once_space_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let plan = FaultPlan::new();
        plan.only_files_ending_with(".log");
        // A 1 KiB cache: reads go to the disk, through the index.
        let (log, _) = open_with(faulty(&plan), &root, small_config(), 1024).await;
        let mut acked = append_acked(&log, 0, 5, |_| 2_500).await;
        let end = log.stats().log_end_offset;

        plan.fail_writes(libc::ENOSPC, 0);
        for durability in [Durability::Durable, Durability::Appended] {
            let err = log
                .append(vec![batch(5, 2_500, 5)], durability)
                .await
                .expect_err("an append whose write found no space must not be acknowledged");
            assert_disk_full(&err, &partition_dir(&root).join("00000000000000000000.log"));
        }
        // A round of several frames, indexed before its write: the index must forget them.
        let round = (5..9u64).map(|seq| batch(seq, 5_000, 6)).collect();
        let err = log.append(round, Durability::Appended).await.unwrap_err();
        assert!(err.is_disk_full(), "{err:?}");
        assert!(
            log.failure().is_none(),
            "a full disk must not fail the partition: {:?}",
            log.failure()
        );
        assert_eq!(
            log.stats().log_end_offset,
            end,
            "nothing refused is visible"
        );
        check_log(&read_all(&log, 0).await, &acked, &[]);

        // Space is back: the partition writes again, at the offset the refused append had,
        // without a restart.
        plan.heal();
        acked.extend(append_acked(&log, 6, 3, |_| 3_000).await);
        assert_eq!(acked[5].offset, end);
        check_log(&read_all(&log, 0).await, &acked, &[]);
        read_each(&log, &acked).await;
        log.close().await.unwrap();
        drop(log);

        let (log, report) = open(&root, small_config()).await;
        assert_eq!(report.bytes_cut, 0, "{report:?}");
        check_log(&read_all(&log, 0).await, &acked, &[]);
        read_each(&log, &acked).await;
        assert_eq!(report.next_offset, acked.last().unwrap().next_offset());
    });
}

/// A round of several frames whose write lands in part (its first piece) before ENOSPC: the
/// landed frames must never come back, even when the next write, after space is freed, is a
/// frame of exactly the first refused one's size (the landed ones would then follow it, valid
/// and at the right offsets, for recovery to find).
#[test]
fn a_write_that_lands_in_part_before_enospc_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        on_each_disk(|_memory| {
            let root = root.clone();
            async move {
                let plan = FaultPlan::new();
                plan.only_files_ending_with(".log");
                let cfg = small_config();
                let (log, _) = open_with(faulty(&plan), &root, cfg.clone(), 1024).await;
                let mut acked = append_acked(&log, 0, 2, |_| 1_000).await;
                let end = log.stats().log_end_offset;

                // Eight 60 KiB frames queued together: one write of several 256 KiB pieces, of which
                // only the first reaches the disk (the first four frames, whole).
                plan.fail_writes(libc::ENOSPC, 1);
                let len = 60_000;
                let round = (10..18u64).map(|seq| batch(seq, len, 7)).collect();
                let err = log
                    .append(round, Durability::Appended)
                    .await
                    .expect_err("nothing of a failed write is acked");
                assert!(err.is_disk_full(), "{err:?}");
                assert!(plan.writes() >= 2, "the write was not cut in pieces");
                assert!(log.failure().is_none(), "{:?}", log.failure());
                assert_eq!(log.stats().log_end_offset, end);

                // Frames like the first three refused ones (same sizes and record counts, so the same
                // offsets): the fourth refused frame, on disk, would follow them seamlessly.
                plan.heal();
                acked.extend(append_acked(&log, 19, 3, |_| len).await);
                assert_eq!(acked[2].offset, end);
                check_log(&read_all(&log, 0).await, &acked, &[]);
                // A crash now (no clean close): recovery must find exactly the acked frames.
                drop(log);
                power_loss();
                let (log, report) = open(&root, cfg.clone()).await;
                assert_eq!(
                    report.next_offset,
                    acked.last().unwrap().next_offset(),
                    "refused frames came back after a restart: {report:?}"
                );
                assert_eq!(report.bytes_cut, 0, "{report:?}");
                check_log(&read_all(&log, 0).await, &acked, &[]);
            }
        })
        .await;
    });
}

#[test]
fn enospc_on_fallocate_refuses_the_append_and_the_partition_takes_writes_once_space_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let plan = FaultPlan::new();
        plan.only_files_ending_with(".log");
        let cfg = small_config();
        let (log, _) = open_with(faulty(&plan), &root, cfg.clone(), 1024).await;
        let mut acked = append_acked(&log, 0, 2, |_| 1_000).await;
        let mut position = 2 * (FRAME_HEADER_LEN as u64 + 1_000);

        // The first append preallocated `preallocate_bytes`; appends within that space need no
        // fallocate and succeed, the first one beyond it is refused.
        plan.fail_allocations(libc::ENOSPC);
        let len = 20_000usize;
        let frame = FRAME_HEADER_LEN as u64 + len as u64;
        let mut seq = 2;
        let err = loop {
            assert!(
                seq < 100,
                "appends kept succeeding although fallocate fails"
            );
            match log
                .append(vec![batch(seq, len, 5)], Durability::Durable)
                .await
            {
                Ok(r) => {
                    acked.push(Sent {
                        offset: r.base_offset,
                        seq,
                        len,
                    });
                    position += frame;
                }
                Err(e) => break e,
            }
            seq += 1;
        };
        assert!(
            position <= cfg.preallocate_bytes && position + frame > cfg.preallocate_bytes,
            "failed at position {position}"
        );
        assert_disk_full(&err, &partition_dir(&root).join("00000000000000000000.log"));
        assert!(log.failure().is_none(), "{:?}", log.failure());
        let end = log.stats().log_end_offset;

        plan.heal();
        let more = append_acked(&log, seq + 1, 4, |_| len).await;
        assert_eq!(more[0].offset, end);
        acked.extend(more);
        let end = log.stats().log_end_offset;
        drop(log);

        let (log, report) = open(&root, cfg).await;
        assert_eq!(report.next_offset, end);
        check_log(&read_all(&log, 0).await, &acked, &[]);
    });
}

/// ENOSPC from an fdatasync is a sync failure like any other: the kernel may have dropped the
/// pages, so the partition refuses writes until restart, even once space is back.
#[test]
fn enospc_on_fdatasync_stays_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let plan = FaultPlan::new();
        plan.only_files_ending_with(".log");
        let (log, _) = open_with(faulty(&plan), &root, small_config(), 1024).await;
        let acked = append_acked(&log, 0, 4, |_| 2_000).await;
        let end = log.stats().log_end_offset;

        plan.fail_syncs(libc::ENOSPC);
        let err = log
            .append(vec![batch(4, 2_000, 5)], Durability::Durable)
            .await
            .expect_err("an append whose fdatasync failed must not be acknowledged");
        assert!(
            matches!(err, EngineError::PartitionFailed { .. }),
            "{err:?}"
        );
        assert!(
            log.failure().is_some(),
            "a failed sync must fail the partition"
        );
        plan.heal();
        let err = log
            .append(vec![batch(5, 100, 5)], Durability::Appended)
            .await
            .unwrap_err();
        assert_refuses_writes(&err, "disk full");
        let unacked = [Sent {
            offset: end,
            seq: 4,
            len: 2_000,
        }];
        check_log(&read_all(&log, 0).await, &acked, &unacked);
    });
}

/// A clean close on a disk with no space for the last index entries or the checkpoint still
/// succeeds (the data is durable; the next start scans the active segment) and loses nothing.
#[test]
fn close_on_a_full_disk_succeeds_and_keeps_every_acked_batch() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let plan = FaultPlan::new();
        let cfg = LogConfig {
            index_interval_bytes: 1024,
            ..small_config()
        };
        let (log, _) = open_with(faulty(&plan), &root, cfg.clone(), 1024).await;
        let acked = append_acked(&log, 0, 40, |seq| 1_500 + seq as usize).await;
        let end = log.stats().log_end_offset;

        // Every write fails from now on: index files, the checkpoint's temporary file.
        plan.fail_writes(libc::ENOSPC, 0);
        log.close().await.expect("a close on a full disk");
        drop(log);

        let (log, report) = open(&root, cfg).await;
        assert_eq!(report.next_offset, end, "{report:?}");
        check_log(&read_all(&log, 0).await, &acked, &[]);
    });
}

/// A roll that finds no room for the new segment's files refuses the appends that needed it
/// and tries again at the next append: once space is back the log rolls and goes on.
#[test]
fn a_roll_without_room_for_the_new_segment_is_tried_again_once_space_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let plan = FaultPlan::new();
        plan.only_files_ending_with(".log");
        let cfg = LogConfig {
            segment_bytes: 64 * 1024,
            preallocate_bytes: 64 * 1024,
            ..small_config()
        };
        let (log, _) = open_with(faulty(&plan), &root, cfg.clone(), 1024).await;
        // 60 000 bytes of frames: the next batch does not fit the 64 KiB segment.
        let mut acked = append_acked(&log, 0, 6, |_| 10_000 - FRAME_HEADER_LEN).await;
        assert_eq!(log.segment_bases().len(), 1);
        let end = log.stats().log_end_offset;

        plan.fail_creates(libc::ENOSPC);
        for seq in 6..8 {
            let err = log
                .append(vec![batch(seq, 10_000, 5)], Durability::Durable)
                .await
                .unwrap_err();
            assert!(err.is_disk_full(), "{err:?}");
            assert!(log.failure().is_none(), "{:?}", log.failure());
        }
        assert_eq!(log.stats().log_end_offset, end);
        check_log(&read_all(&log, 0).await, &acked, &[]);

        // A batch small enough for the old segment: it must still go to a new one (the old
        // one is closed, without an appender).
        plan.heal();
        acked.extend(append_acked(&log, 8, 3, |seq| if seq == 8 { 100 } else { 10_000 }).await);
        assert_eq!(acked[6].offset, end);
        assert_eq!(
            log.segment_bases(),
            vec![0, end],
            "rolled once space was back"
        );
        check_log(&read_all(&log, 0).await, &acked, &[]);
        log.close().await.unwrap();
        drop(log);
        let (log, report) = open(&root, cfg).await;
        assert_eq!(report.next_offset, acked.last().unwrap().next_offset());
        check_log(&read_all(&log, 0).await, &acked, &[]);
        read_each(&log, &acked).await;
    });
}

/// A start after a crash on a full disk: recovery has index entries to save and no room for
/// them. It must start anyway (they stay in memory; the next start scans again), serve every
/// acked batch, and take writes once space is back.
#[test]
fn a_start_after_a_crash_on_a_full_disk_serves_everything_and_writes_once_space_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        on_each_disk(|_memory| {
            let root = root.clone();
            async move {
                let plan = FaultPlan::new();
                let cfg = LogConfig {
                    index_interval_bytes: 1024,
                    ..small_config()
                };
                let (log, _) = open_with(faulty(&plan), &root, cfg.clone(), 1024).await;
                let mut acked = append_acked(&log, 0, 40, |seq| 1_500 + seq as usize).await;
                let end = log.stats().log_end_offset;
                // A crash: no close, so no index entries on disk and no checkpoint.
                drop(log);
                power_loss();

                plan.fail_writes(libc::ENOSPC, 0);
                let (log, report) = open_with(faulty(&plan), &root, cfg.clone(), 1024).await;
                assert_eq!(report.next_offset, end, "{report:?}");
                check_log(&read_all(&log, 0).await, &acked, &[]);
                read_each(&log, &acked).await;
                let err = log
                    .append(vec![batch(40, 1_000, 5)], Durability::Durable)
                    .await
                    .unwrap_err();
                assert!(err.is_disk_full(), "{err:?}");

                plan.heal();
                acked.extend(append_acked(&log, 41, 5, |_| 2_000).await);
                assert_eq!(acked[40].offset, end);
                log.close().await.unwrap();
                drop(log);
                let (log, report) = open(&root, cfg).await;
                assert_eq!(
                    report.bytes_scanned, 0,
                    "a clean close after all: {report:?}"
                );
                check_log(&read_all(&log, 0).await, &acked, &[]);
                read_each(&log, &acked).await;
            }
        })
        .await;
    });
}

/// An append below the disk's floor (`storage.min_free_bytes`) is refused before anything is
/// queued or written, as a retriable disk-full error naming the floor.
#[test]
fn appends_below_the_free_space_floor_are_refused_before_any_write() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let plan = FaultPlan::new();
        let (log, _) = open_with(faulty(&plan), &root, small_config(), 1024).await;
        let acked = append_acked(&log, 0, 3, |_| 1_000).await;
        let space = spate_engine::space::DiskSpace::open(
            &root,
            spate_engine::config::MinFreeBytes::Bytes(u64::MAX / 2),
        )
        .unwrap();
        log.use_disk_space(std::sync::Arc::new(space));
        let writes = plan.writes();
        let err = log
            .append(vec![batch(3, 1_000, 5)], Durability::Durable)
            .await
            .unwrap_err();
        assert!(err.is_disk_full(), "{err:?}");
        assert!(err.to_string().contains("storage.min_free_bytes"), "{err}");
        assert_eq!(plan.writes(), writes, "a refused append touched the disk");
        assert!(log.failure().is_none());
        check_log(&read_all(&log, 0).await, &acked, &[]);
    });
}

/// Reads each batch on its own, through the index: newest first, so that no read-ahead
/// resume point stands in for the lookup (a stale index entry would point into another
/// frame).
async fn read_each(log: &spate_engine::PartitionLog, acked: &[Sent]) {
    for s in acked.iter().rev() {
        let got = log.read(s.offset, 1).await.unwrap();
        check_batch(&got[0], s);
    }
}

fn assert_disk_full(err: &EngineError, segment: &std::path::Path) {
    assert!(
        matches!(err, EngineError::DiskFull { .. }),
        "a write that found no space is a disk-full refusal, not a failure: {err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("disk full"), "{msg}");
    assert!(
        msg.contains(&segment.display().to_string()),
        "the message should name {}: {msg}",
        segment.display()
    );
    assert!(!msg.contains("restart"), "no restart is needed: {msg}");
}

#[test]
fn torn_final_frame_is_cut_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        on_each_disk(|memory| {
            let root = root.clone();
            async move {
                let plan = FaultPlan::new();
                plan.only_files_ending_with(".log");
                let (log, _) = open_with(faulty(&plan), &root, small_config(), 1024).await;
                let mut acked = append_acked(&log, 0, 6, |seq| 5_000 + seq as usize * 11).await;
                let end = log.stats().log_end_offset;
                let data_end: u64 = acked
                    .iter()
                    .map(|s| FRAME_HEADER_LEN as u64 + s.len as u64)
                    .sum();

                // The next write (a 64 KiB frame) puts only its first 16 KiB (from the block holding
                // the old tail) on disk, then the disk "crashes".
                plan.tear_next_write(16 * 1024);
                let err = log
                    .append(vec![batch(6, 64 * 1024, 5)], Durability::Durable)
                    .await
                    .unwrap_err();
                assert!(
                    matches!(err, EngineError::PartitionFailed { .. }),
                    "{err:?}"
                );
                assert!(log.failure().is_some());
                drop(log);
                let torn_end = data_end - data_end % 4096 + 16 * 1024;
                if memory {
                    // The torn write was never synced: a power loss takes it all, and recovery finds a
                    // clean end where the process-crash pass finds a torn frame to cut.
                    power_loss();
                    let (log, report) = open(&root, small_config()).await;
                    assert_eq!(report.next_offset, end, "{report:?}");
                    check_log(&read_all(&log, 0).await, &acked, &[]);
                    let r = log
                        .append(vec![batch(7, 64 * 1024, 5)], Durability::Durable)
                        .await
                        .unwrap();
                    assert_eq!(r.base_offset, end);
                    return;
                }

                // The torn frame's start really is on disk.
                let bytes = file_bytes(&partition_dir(&root).join("00000000000000000000.log"));
                assert!(
                    bytes[data_end as usize..torn_end as usize]
                        .iter()
                        .any(|b| *b != 0),
                    "the torn write left nothing on disk"
                );
                assert!(
                    bytes[torn_end as usize..].iter().all(|b| *b == 0),
                    "more than the kept part of the torn write reached the disk"
                );

                let (log, report) = open(&root, small_config()).await;
                assert!(!report.from_checkpoint);
                assert!(
                    report.bytes_cut > 0 && report.bytes_cut <= torn_end - data_end,
                    "{report:?}"
                );
                assert!(report.cut_reason.is_some(), "{report:?}");
                assert_eq!(report.next_offset, end, "{report:?}");
                check_log(&read_all(&log, 0).await, &acked, &[]);
                assert_eq!(
                    file_bytes(&partition_dir(&root).join("00000000000000000000.log")).len() as u64,
                    data_end
                );

                // Appends continue at the offset after the last intact batch, and survive a restart.
                let r = log
                    .append(vec![batch(7, 64 * 1024, 5)], Durability::Durable)
                    .await
                    .unwrap();
                assert_eq!(r.base_offset, end);
                acked.push(Sent {
                    offset: end,
                    seq: 7,
                    len: 64 * 1024,
                });
                check_log(&read_all(&log, 0).await, &acked, &[]);
                drop(log);
                let (log, report) = open(&root, small_config()).await;
                assert_eq!(report.bytes_cut, 0, "{report:?}");
                assert!(report.cut_reason.is_none(), "{report:?}");
                check_log(&read_all(&log, 0).await, &acked, &[]);
                log.close().await.unwrap();
            }
        })
        .await;
    });
}

/// Small segments, so the sequence below rolls several times and crashes land in rolls too.
fn crash_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        preallocate_bytes: 32 * 1024,
        index_interval_bytes: 4096,
        ..LogConfig::default()
    }
}

#[test]
fn crash_at_every_operation_keeps_every_acked_batch() {
    const APPENDS: u64 = 14;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        on_each_disk(|_memory| {
            let root = root.clone();
            async move {
            let len_of = |seq: u64| 2_000 + (seq as usize * 7_919) % 14_000;
            // Crash after 0, 1, 2, ... storage operations, until a run completes without a crash:
            // every operation of the sequence (appends, syncs, preallocations, rolls, checkpoint
            // and index writes) is a crash point once.
            let mut crash_after = 0u64;
            let mut max_acked = 0;
            loop {
                assert!(crash_after < 1_000, "the sequence never completed");
                let case = root.join(format!("crash-{crash_after}"));
                std::fs::create_dir_all(&case).unwrap();
                let plan = FaultPlan::new();
                let (log, _) = open_with(faulty(&plan), &case, crash_config(), 64 * 1024).await;
                plan.crash_after(crash_after);
                let mut acked = Vec::new();
                let mut unacked = Vec::new();
                let mut next = 0u64;
                for seq in 0..APPENDS {
                    let len = len_of(seq);
                    match log
                        .append(
                            vec![batch(seq, len, 1_000 + seq as i64)],
                            Durability::Durable,
                        )
                        .await
                    {
                        Ok(r) => {
                            assert!(unacked.is_empty(), "crash point {crash_after}: append {seq} acked after an earlier one failed");
                            assert_eq!(r.base_offset, next);
                            acked.push(Sent {
                                offset: next,
                                seq,
                                len,
                            });
                        }
                        Err(e) => {
                            assert!(
                                matches!(e, EngineError::PartitionFailed { .. }),
                                "crash point {crash_after}: {e:?}"
                            );
                            // Only the first failed append got an offset; later ones are refused.
                            if unacked.is_empty() {
                                unacked.push(Sent {
                                    offset: next,
                                    seq,
                                    len,
                                });
                            }
                        }
                    }
                    next += 1 + seq % 3;
                }
                let completed = unacked.is_empty();
                if !completed {
                    assert!(log.failure().is_some());
                }
                max_acked = max_acked.max(acked.len());
                drop(log);
                power_loss();

                let (log, report) = open(&case, crash_config()).await;
                let got = read_all(&log, 0).await;
                check_log(&got, &acked, &unacked);
                assert_eq!(
                    report.next_offset,
                    got.last().map_or(0, |b| b.next_offset()),
                    "crash point {crash_after}: {report:?}"
                );
                // The recovered log takes appends at its end.
                let r = log
                    .append(vec![batch(999, 100, 5)], Durability::Durable)
                    .await
                    .unwrap();
                assert_eq!(r.base_offset, report.next_offset);
                drop(log);
                std::fs::remove_dir_all(&case).unwrap();
                if completed {
                    break;
                }
                crash_after += 1;
            }
            assert_eq!(max_acked, APPENDS as usize);
            assert!(
                crash_after > 30,
                "only {crash_after} crash points: the sequence should span several rolls"
            );
            }
        })
        .await;
    });
}

#[test]
fn group_commit_coalesces_concurrent_durable_appends() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let plan = FaultPlan::new(); // nothing armed: it only counts
        let cfg = LogConfig {
            segment_bytes: 64 * 1024 * 1024,
            preallocate_bytes: 4 * 1024 * 1024,
            ..small_config()
        };
        let (log, _) = open_with(faulty(&plan), &root, cfg.clone(), 1024).await;
        let syncs_before = plan.syncs();
        let writes_before = plan.writes();
        let tasks: Vec<_> = (0..64u64)
            .map(|seq| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let r = log
                        .append(vec![batch(seq, 16 * 1024, 5)], Durability::Durable)
                        .await;
                    (seq, r)
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            let (seq, r) = task.await;
            results.push((r.unwrap(), seq));
        }
        let syncs = plan.syncs() - syncs_before;
        let writes = plan.writes() - writes_before;
        assert!(
            syncs <= 8,
            "64 concurrent durable appends took {syncs} fdatasyncs"
        );
        assert!(
            writes <= 8,
            "64 concurrent durable appends took {writes} writes"
        );

        results.sort_by_key(|(r, _)| r.base_offset);
        let mut next = 0;
        let mut sent = Vec::new();
        for (r, seq) in &results {
            assert_eq!(
                r.base_offset, next,
                "offsets must be distinct and contiguous"
            );
            assert_eq!(r.last_offset, r.base_offset + seq % 3);
            sent.push(Sent {
                offset: r.base_offset,
                seq: *seq,
                len: 16 * 1024,
            });
            next = r.last_offset + 1;
        }
        assert_eq!(log.stats().durable_offset, next);
        check_log(&read_all(&log, 0).await, &sent, &[]);
        drop(log);
        let (log, report) = open(&root, cfg).await;
        assert_eq!(report.next_offset, next);
        check_log(&read_all(&log, 0).await, &sent, &[]);
    });
}

#[test]
fn a_failed_sync_fails_the_rounds_written_behind_it_even_if_a_later_sync_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let plan = FaultPlan::new();
        plan.only_files_ending_with(".log");
        // Rounds of at most 1 MiB, so that 16 MiB of appends make many rounds.
        let cfg = LogConfig {
            segment_bytes: 64 * 1024 * 1024,
            preallocate_bytes: 4 * 1024 * 1024,
            max_write_bytes: 1024 * 1024,
            ..small_config()
        };
        let (log, _) = open_with(faulty(&plan), &root, cfg.clone(), 1024).await;
        // The second fdatasync fails; the third would succeed (as Linux may, after dropping
        // the failed pages). All appends arrive at once, more than one round: while one sync
        // is in flight, the next rounds are written behind it.
        plan.fail_one_sync(1);
        let tasks: Vec<_> = (0..64u64)
            .map(|seq| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    log.append(vec![batch(seq, 256 * 1024, 5)], Durability::Durable)
                        .await
                })
            })
            .collect();
        let mut acked = Vec::new();
        let mut failed = 0;
        for task in tasks {
            match task.await {
                Ok(r) => acked.push(r),
                Err(_) => failed += 1,
            }
        }
        assert!(failed > 0, "the failed sync fails its appends");
        assert!(
            plan.writes_during_failed_syncs() > 0,
            "rounds were written behind the failing fdatasync (the case under test)"
        );
        assert!(log.failure().is_some(), "the partition refuses writes");
        // Every ack came from the first, successful sync: acked offsets are a prefix.
        acked.sort_by_key(|r| r.base_offset);
        let mut next = 0;
        for r in &acked {
            assert_eq!(r.base_offset, next, "acks form a prefix of the log");
            next = r.last_offset + 1;
        }
        drop(log);
        // Reopened on a healthy disk: everything acked is there, intact.
        plan.heal();
        let (log, _) = open(&root, cfg).await;
        let got = read_all(&log, 0).await;
        assert!(got.len() >= acked.len());
        for (r, b) in acked.iter().zip(&got) {
            assert_eq!(b.base_offset, r.base_offset);
        }
    });
}
