//! Group commit across partitions: with a shard's sync group, one syncfs makes the durable
//! appends of several partitions durable together, and a failed one fails them all.

mod common;

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use common::*;
use spate_engine::cache::BatchCache;
use spate_engine::io::fault::FaultPlan;
use spate_engine::io::Storage;
use spate_engine::log::sync_group::SyncGroup;
use spate_engine::{Durability, EngineError, PartitionLog};

const PARTITIONS: u64 = 8;
const ROUNDS: u64 = 20;

async fn open_partitions(
    storage: Rc<dyn Storage>,
    root: &Path,
    group: Option<&SyncGroup>,
) -> Vec<PartitionLog> {
    let cache = Rc::new(RefCell::new(BatchCache::new(16 * 1024 * 1024)));
    let mut logs = Vec::new();
    for p in 0..PARTITIONS {
        let dir = root.join("topics").join("t").join(p.to_string());
        let (log, _) = PartitionLog::open(
            storage.clone(),
            &dir,
            &format!("t-{p}"),
            small_config(),
            cache.clone(),
            p,
        )
        .await
        .unwrap();
        if let Some(group) = group {
            log.use_sync_group(group.clone());
        }
        logs.push(log);
    }
    logs
}

/// The partitions on storage that counts (and can fail) syncs of ".log" files, sharing one
/// sync group.
async fn grouped_partitions(root: &Path) -> (Rc<FaultPlan>, SyncGroup, Vec<PartitionLog>) {
    let plan = FaultPlan::new();
    plan.only_files_ending_with(".log");
    let group = SyncGroup::new();
    let logs = open_partitions(faulty(&plan), root, Some(&group)).await;
    (plan, group, logs)
}

/// Reopens the partitions (recovering them) and checks that each holds its batches in order
/// and intact; returns how many each holds.
async fn reopened_batch_counts(root: &Path) -> Vec<(String, usize)> {
    let logs = open_partitions(faulty(&FaultPlan::new()), root, None).await;
    let mut counts = Vec::new();
    for log in &logs {
        let batches = read_all(log, 0).await;
        for (seq, b) in batches.iter().enumerate() {
            assert_eq!(b.payload, payload(seq as u64, 3_000), "{}", log.name());
        }
        counts.push((log.name().to_string(), batches.len()));
    }
    counts
}

/// One durable append to every partition at once; returns each one's result.
async fn append_to_all(
    logs: impl AsRef<[PartitionLog]>,
    seq: u64,
) -> Vec<spate_engine::Result<spate_engine::AppendResult>> {
    let tasks: Vec<_> = logs
        .as_ref()
        .iter()
        .map(|log| {
            let log = log.clone();
            glommio::spawn_local(async move {
                log.append(vec![batch(seq, 3_000, 1_000)], Durability::Durable)
                    .await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await);
    }
    out
}

#[test]
fn one_syncfs_makes_the_durable_appends_of_many_partitions_durable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let (plan, group, logs) = grouped_partitions(&root).await;
        for seq in 0..ROUNDS {
            // The first partition whose write completes starts a round; its syncfs is held
            // until the seven others have written and wait for the next round, which then
            // covers them all. (Left to the clock, how many rounds an append takes depends on
            // when each write completes against the running syncfs.)
            plan.hold_syncs();
            let appends = glommio::spawn_local(append_to_all(logs.clone(), seq));
            wait_until(|| plan.held_syncs() == 1 && group.waiting() == PARTITIONS as usize - 1)
                .await;
            plan.release_syncs();
            for r in appends.await {
                r.unwrap();
            }
            for log in &logs {
                let s = log.stats();
                assert_eq!(s.durable_offset, s.log_end_offset, "{}: {s:?}", log.name());
            }
        }
        // Every sync was a round of the group, and two rounds made each append to all eight
        // partitions durable: one per partition would take PARTITIONS syncs.
        let syncs = plan.syncs();
        assert_eq!(syncs, group.rounds(), "syncs that were not the group's");
        assert_eq!(
            syncs,
            2 * ROUNDS,
            "{syncs} syncs for {ROUNDS} appends to each of {PARTITIONS} partitions"
        );
        for log in &logs {
            log.close().await.unwrap();
        }
        drop(logs);

        for (name, count) in reopened_batch_counts(&root).await {
            assert_eq!(count as u64, ROUNDS, "{name}");
        }
    });
}

/// Polls `ready` (a millisecond apart) until it holds; panics after ten seconds.
async fn wait_until(ready: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if ready() {
            return;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("the partitions never lined up behind one held syncfs");
}

#[test]
fn a_failed_syncfs_acks_nothing_it_covered_and_fails_every_partition_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(&root.clone(), move || async move {
        let (plan, _group, logs) = grouped_partitions(&root).await;
        for seq in 0..3 {
            for r in append_to_all(&logs, seq).await {
                r.unwrap();
            }
        }
        let durable: Vec<u64> = logs.iter().map(|l| l.stats().durable_offset).collect();

        plan.fail_syncs(libc::EIO);
        for (log, r) in logs.iter().zip(append_to_all(&logs, 3).await) {
            match r {
                Ok(a) => panic!(
                    "{}: append at {} acked although its syncfs failed",
                    log.name(),
                    a.base_offset
                ),
                Err(e) => assert!(matches!(e, EngineError::PartitionFailed { .. }), "{e:?}"),
            }
            let failure = log.failure().expect("a failed syncfs fails the partition");
            assert!(failure.contains("Input/output error"), "{failure}");
        }
        for (log, before) in logs.iter().zip(&durable) {
            assert_eq!(log.stats().durable_offset, *before, "{}", log.name());
        }
        drop(logs);

        // What was acknowledged before is all there after a restart.
        for (name, count) in reopened_batch_counts(&root).await {
            assert!(count >= 3, "{name}: {count} batches");
        }
    });
}
