//! Crashes that lose what was not synced: the partition log on the in-memory storage, whose
//! crash keeps only the bytes and directory entries a completed sync covered (and, torn, a
//! block prefix of some unsynced writes). Unlike a crash that only stops the process, this
//! catches an ack given before its fdatasync, and a file whose directory entry was never
//! synced.

mod common;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use common::*;
use spate_engine::io::fault::{FaultPlan, FaultyStorage};
use spate_engine::io::mem::{CrashMode, MemStorage};
use spate_engine::io::Storage;
use spate_engine::log::sync_group::SyncGroup;
use spate_engine::{Durability, LogConfig, PartitionLog};

/// Small segments, so a short sequence rolls several times.
fn rolling_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        preallocate_bytes: 32 * 1024,
        index_interval_bytes: 4096,
        ..LogConfig::default()
    }
}

fn root() -> PathBuf {
    PathBuf::from("/data")
}

async fn open_on(
    storage: Rc<dyn Storage>,
    config: LogConfig,
    group: Option<&SyncGroup>,
) -> PartitionLog {
    let (log, _) = open_with(storage, &root(), config, 64 * 1024).await;
    if let Some(g) = group {
        log.use_sync_group(g.clone());
    }
    log
}

fn len_of(seq: u64) -> usize {
    2_000 + (seq as usize * 7_919) % 14_000
}

/// What a run acknowledged: (offset, seq) of every durable append that resolved Ok.
async fn append_until_failure(log: &PartitionLog, appends: u64) -> (Vec<(u64, u64)>, bool) {
    let mut acked = Vec::new();
    for seq in 0..appends {
        match log
            .append(
                vec![batch(seq, len_of(seq), 1_000 + seq as i64)],
                Durability::Durable,
            )
            .await
        {
            Ok(r) => acked.push((r.base_offset, seq)),
            Err(_) => return (acked, false),
        }
    }
    (acked, true)
}

/// Every acked batch is served after the restart, intact, at its offset.
async fn check_acked(log: &PartitionLog, acked: &[(u64, u64)], what: &str) {
    let got = read_all(log, 0).await;
    assert!(
        got.len() >= acked.len(),
        "{what}: {} acked batches, {} served after the power loss",
        acked.len(),
        got.len()
    );
    for (b, (offset, seq)) in got.iter().zip(acked) {
        assert_eq!(b.base_offset, *offset, "{what}: batch {seq}");
        assert!(
            b.payload[..] == payload(*seq, len_of(*seq))[..],
            "{what}: batch {seq} damaged"
        );
    }
}

/// For every point of a rolling sequence of durable appends, the process dies there (every
/// later operation fails) and then the power goes (unsynced writes and directory entries are
/// lost, or torn): every acked batch must be served after the restart, and the log takes
/// appends at its end. Run with and without the shard's group commit (syncfs).
#[test]
fn power_loss_at_every_operation_keeps_every_acked_batch() {
    const APPENDS: u64 = 12;
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), || async move {
        for grouped in [false, true] {
            let mut crash_after = 0u64;
            loop {
                assert!(crash_after < 2_000, "the sequence never completed");
                let mem = MemStorage::new();
                let plan = FaultPlan::new();
                let faulty: Rc<dyn Storage> =
                    Rc::new(FaultyStorage::new(Rc::new(mem.clone()), plan.clone()));
                let group = grouped.then(SyncGroup::new);
                let log = open_on(faulty, rolling_config(), group.as_ref()).await;
                plan.crash_after(crash_after);
                let (acked, completed) = append_until_failure(&log, APPENDS).await;
                drop(log);
                let mode = if crash_after % 2 == 0 {
                    CrashMode::DropUnsynced
                } else {
                    CrashMode::Torn { seed: crash_after }
                };
                mem.crash(mode);
                let what = format!("grouped={grouped} crash point {crash_after} ({mode:?})");
                let log = open_on(Rc::new(mem.clone()), rolling_config(), None).await;
                check_acked(&log, &acked, &what).await;
                let end = log.stats().log_end_offset;
                let r = log
                    .append(vec![batch(999, 100, 5)], Durability::Durable)
                    .await
                    .unwrap();
                assert_eq!(r.base_offset, end, "{what}");
                drop(log);
                if completed {
                    assert_eq!(acked.len() as u64, APPENDS);
                    break;
                }
                crash_after += 1;
            }
            assert!(
                crash_after > 30,
                "only {crash_after} crash points: the sequence should span several rolls"
            );
        }
    });
}

/// Appends that are only written (acks=1) may be lost by a power loss, but what survives is a
/// prefix of what was appended, at the offsets it was given.
#[test]
fn a_power_loss_after_unsynced_appends_keeps_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), || async move {
        for seed in 0..16 {
            let mem = MemStorage::new();
            let log = open_on(Rc::new(mem.clone()), rolling_config(), None).await;
            let durable = log
                .append(vec![batch(0, len_of(0), 1)], Durability::Durable)
                .await
                .unwrap();
            let mut sent = vec![(durable.base_offset, 0)];
            for seq in 1..20 {
                let r = log
                    .append(vec![batch(seq, len_of(seq), 1)], Durability::Appended)
                    .await
                    .unwrap();
                sent.push((r.base_offset, seq));
            }
            drop(log);
            mem.crash(CrashMode::Torn { seed });
            let log = open_on(Rc::new(mem.clone()), rolling_config(), None).await;
            let got = read_all(&log, 0).await;
            assert!(!got.is_empty(), "seed {seed}: the durable batch is lost");
            for (b, (offset, seq)) in got.iter().zip(&sent) {
                assert_eq!(
                    b.base_offset,
                    *offset,
                    "seed {seed}: served {:?}, sent {sent:?}",
                    got.iter().map(|b| b.base_offset).collect::<Vec<_>>()
                );
                assert!(
                    b.payload[..] == payload(*seq, len_of(*seq))[..],
                    "seed {seed}"
                );
            }
        }
    });
}

/// A new segment's directory entry must be synced before anything in it is acknowledged:
/// fdatasync of the file does not make the file findable after a power loss. Here the
/// recovery checkpoint (whose atomic rename would sync the directory as a side effect) cannot
/// be written, so only the segment's own directory sync stands between an ack and its loss.
#[test]
fn a_rolled_segment_survives_a_power_loss_without_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), || async move {
        let mem = MemStorage::new();
        let plan = FaultPlan::new();
        let faulty: Rc<dyn Storage> =
            Rc::new(FaultyStorage::new(Rc::new(mem.clone()), plan.clone()));
        let log = open_on(faulty, rolling_config(), None).await;
        // No checkpoint can be created (its temporary file is refused): rolls go on without.
        plan.only_files_ending_with("recovery.checkpoint.tmp");
        plan.fail_creates(libc::ENOSPC);
        let (acked, completed) = append_until_failure(&log, 30).await;
        assert!(completed);
        assert!(log.segment_bases().len() > 2, "the appends should roll");
        drop(log);
        mem.crash(CrashMode::DropUnsynced);
        let log = open_on(Rc::new(mem.clone()), rolling_config(), None).await;
        check_acked(&log, &acked, "after rolls without a checkpoint").await;
        assert!(
            mem.file_bytes(&partition_dir(Path::new("/data")).join("recovery.checkpoint"))
                .is_none(),
            "no checkpoint was meant to be written"
        );
    });
}
