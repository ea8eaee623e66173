//! Compaction in the engine: a pass keeps the last record of every key at its offset, on any
//! sequence of puts and deletes and any segment size, and a crash at any step of a pass
//! leaves each group of segments it rewrites as it was or as cleaned, never a mix.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use common::{open_with, read_all, run};
use proptest::prelude::*;
use spate_engine::compaction::throttle::Throttle;
use spate_engine::compaction::{
    CleanReport, CleanerConfig, CompactionPolicy, KeyedRecord, RecordKeys, Retained,
};
use spate_engine::io::fault::{FaultPlan, FaultyStorage};
use spate_engine::io::mem::{CrashMode, MemStorage};
use spate_engine::io::Storage;
use spate_engine::{AppendBatch, Durability, LogConfig, PartitionLog};

/// A record of the test format: `[u32 relative offset][i64 timestamp][u16 key length][key]
/// [u8 has value][u32 value length][value]`, records one after another.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    offset: u64,
    ts: i64,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

fn encode(base: u64, recs: &[Rec]) -> Bytes {
    let mut b = BytesMut::new();
    for r in recs {
        b.put_u32_le((r.offset - base) as u32);
        b.put_i64_le(r.ts);
        b.put_u16_le(r.key.len() as u16);
        b.put_slice(&r.key);
        match &r.value {
            Some(v) => {
                b.put_u8(1);
                b.put_u32_le(v.len() as u32);
                b.put_slice(v);
            }
            None => {
                b.put_u8(0);
                b.put_u32_le(0);
            }
        }
    }
    b.freeze()
}

fn decode(base: u64, mut p: &[u8]) -> Result<Vec<Rec>, String> {
    let mut out = Vec::new();
    let take = |p: &mut &[u8], n: usize| -> Result<Vec<u8>, String> {
        if p.len() < n {
            return Err("short".into());
        }
        let (a, b) = p.split_at(n);
        *p = b;
        Ok(a.to_vec())
    };
    while !p.is_empty() {
        let rel = u32::from_le_bytes(take(&mut p, 4)?.try_into().unwrap());
        let ts = i64::from_le_bytes(take(&mut p, 8)?.try_into().unwrap());
        let klen = u16::from_le_bytes(take(&mut p, 2)?.try_into().unwrap()) as usize;
        let key = take(&mut p, klen)?;
        let has = take(&mut p, 1)?[0] == 1;
        let vlen = u32::from_le_bytes(take(&mut p, 4)?.try_into().unwrap()) as usize;
        let value = take(&mut p, vlen)?;
        out.push(Rec {
            offset: base + u64::from(rel),
            ts,
            key,
            value: has.then_some(value),
        });
    }
    Ok(out)
}

struct TestKeys;

impl RecordKeys for TestKeys {
    fn records(
        &self,
        base: u64,
        payload: &[u8],
        each: &mut dyn FnMut(KeyedRecord<'_>),
    ) -> Result<(), String> {
        for r in decode(base, payload)? {
            each(KeyedRecord {
                offset: r.offset,
                key: Some(&r.key),
                tombstone: r.value.is_none(),
                timestamp_ms: r.ts,
            });
        }
        Ok(())
    }

    fn retain(
        &self,
        base: u64,
        payload: &Bytes,
        keep: &mut dyn FnMut(KeyedRecord<'_>) -> bool,
    ) -> Result<Retained, String> {
        let recs = decode(base, payload)?;
        let n = recs.len();
        let kept: Vec<Rec> = recs
            .into_iter()
            .filter(|r| {
                keep(KeyedRecord {
                    offset: r.offset,
                    key: Some(&r.key),
                    tombstone: r.value.is_none(),
                    timestamp_ms: r.ts,
                })
            })
            .collect();
        Ok(match kept.len() {
            0 => Retained::Nothing,
            k if k == n => Retained::All,
            _ => Retained::Some {
                payload: encode(base, &kept),
                first_timestamp_ms: kept[0].ts,
                max_timestamp_ms: kept.iter().map(|r| r.ts).max().unwrap(),
            },
        })
    }
}

const NOW: i64 = 1_000_000;

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        preallocate_bytes: 4096,
        index_interval_bytes: 64,
        compaction: Some(CompactionPolicy {
            min_cleanable_dirty_ppm: 0,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 0,
        }),
        ..LogConfig::default()
    }
}

fn root() -> PathBuf {
    PathBuf::from("/data")
}

async fn open(storage: Rc<dyn Storage>, segment_bytes: u64) -> PartitionLog {
    open_with(storage, &root(), config(segment_bytes), 64 * 1024)
        .await
        .0
}

/// Appends `ops` (key, value or delete) in batches of the given sizes; returns every record
/// written, by offset.
async fn write(log: &PartitionLog, ops: &[(u8, Option<u16>)], sizes: &[usize]) -> Vec<Rec> {
    let mut all = Vec::new();
    let mut i = 0;
    let mut s = 0;
    while i < ops.len() {
        let n = sizes[s % sizes.len()].clamp(1, ops.len() - i);
        s += 1;
        let base = log.next_offset();
        let recs: Vec<Rec> = ops[i..i + n]
            .iter()
            .enumerate()
            .map(|(j, (k, v))| Rec {
                offset: base + j as u64,
                ts: 1_000 + (i + j) as i64,
                key: format!("key-{k}").into_bytes(),
                value: v.map(|v| format!("value-{v}-{}", "x".repeat(v as usize % 40)).into_bytes()),
            })
            .collect();
        let payload = encode(base, &recs);
        log.append(
            vec![AppendBatch {
                payload,
                record_count: n as u32,
                first_timestamp_ms: recs[0].ts,
                max_timestamp_ms: recs[n - 1].ts,
                leader_epoch: 0,
                base_offset_field: None,
            }],
            Durability::Durable,
        )
        .await
        .unwrap();
        all.extend(recs);
        i += n;
    }
    all
}

async fn clean_once(log: &PartitionLog) -> spate_engine::Result<Option<CleanReport>> {
    let cleaner = CleanerConfig {
        dedupe_buffer_bytes: 1 << 20,
        ..CleanerConfig::default()
    };
    log.clean(&TestKeys, &cleaner, NOW, &mut Throttle::new(0))
        .await
}

/// Cleans until a pass finds nothing to do; returns the offset below which the log is clean.
async fn clean_fully(log: &PartitionLog) -> u64 {
    let mut clean_to = 0;
    for _ in 0..50 {
        match clean_once(log).await.unwrap() {
            Some(r) => clean_to = clean_to.max(r.clean_to),
            None => return clean_to,
        }
    }
    panic!("the cleaner never ran out of work");
}

async fn read_records(log: &PartitionLog) -> Vec<Rec> {
    let start = log.offsets().log_start;
    let mut out = Vec::new();
    for b in read_all(log, start).await {
        let recs = decode(b.base_offset, &b.payload).unwrap();
        assert!(
            recs.iter().all(|r| r.offset < b.next_offset()),
            "a record past its frame's span"
        );
        out.extend(recs);
    }
    out
}

/// What every compacted log must show, whatever was cleaned: records at their offsets as
/// written, in strictly increasing offsets, each key's last record the one last written
/// (a deleted key's: none, or its tombstone), and below `clean_to` each key once at most
/// and no tombstone (their retention is 0 here).
fn check(read: &[Rec], written: &[Rec], clean_to: u64, what: &str) {
    let by_offset: HashMap<u64, &Rec> = written.iter().map(|r| (r.offset, r)).collect();
    for w in read.windows(2) {
        assert!(w[0].offset < w[1].offset, "{what}: offsets not increasing");
    }
    for r in read {
        assert_eq!(by_offset.get(&r.offset), Some(&r), "{what}: record changed");
    }
    let mut last_written: HashMap<&[u8], &Rec> = HashMap::new();
    for r in written {
        last_written.insert(&r.key, r);
    }
    let mut last_read: HashMap<&[u8], &Rec> = HashMap::new();
    for r in read {
        last_read.insert(&r.key, r);
    }
    for (k, w) in &last_written {
        match (&w.value, last_read.get(k)) {
            (Some(_), Some(r)) => assert_eq!(r, w, "{what}: a key's last value"),
            (Some(_), None) => panic!("{what}: a live key is gone"),
            (None, Some(r)) => assert_eq!(r, w, "{what}: a deleted key's last record"),
            (None, None) => {}
        }
    }
    let mut seen = std::collections::HashSet::new();
    for r in read.iter().filter(|r| r.offset < clean_to) {
        assert!(seen.insert(&r.key), "{what}: a key twice in the clean part");
        assert!(r.value.is_some(), "{what}: a tombstone past its retention");
    }
}

/// Puts and deletes (key, value or none), the sizes of the batches they go in, and the
/// segment size. Some batches are longer than the cleaner's slice (`SLICE_RECORDS`, 128):
/// their records are mapped and judged in slices, the rest in one walk.
type Workload = (Vec<(u8, Option<u16>)>, Vec<usize>, u64);

fn ops_strategy() -> impl Strategy<Value = Workload> {
    (
        proptest::collection::vec(
            (0u8..12, proptest::option::weighted(0.8, 0u16..500)),
            1..1_200,
        ),
        proptest::collection::vec(prop_oneof![3 => 1usize..6, 1 => 129usize..160], 1..8),
        600u64..4_000,
    )
        .prop_map(|(ops, sizes, segment_bytes)| {
            // A long batch (up to 160 records of at most 75 bytes) fits in a segment.
            let long = sizes.iter().any(|n| *n > 6);
            let segment_bytes = if long {
                segment_bytes.max(12_500)
            } else {
                segment_bytes
            };
            (ops, sizes, segment_bytes)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_compacted_log_keeps_the_last_value_of_every_key_at_its_offset(
        (ops, sizes, segment_bytes) in ops_strategy()
    ) {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), move || async move {
            let mem: Rc<dyn Storage> = Rc::new(MemStorage::new());
            let log = open(mem.clone(), segment_bytes).await;
            let written = write(&log, &ops, &sizes).await;
            let before = read_records(&log).await;
            check(&before, &written, 0, "before");
            let clean_to = clean_fully(&log).await;
            let after = read_records(&log).await;
            check(&after, &written, clean_to, "after cleaning");
            // Every closed segment below the high watermark was cleanable: what stays dirty
            // is the active segment's.
            let active = *log.segment_bases().last().unwrap();
            assert!(clean_to >= active.min(written.len() as u64) || log.segment_bases().len() == 1);
            // Reopened, the log reads the same (the swaps are durable, the indexes right).
            log.close().await.unwrap();
            let log = open(mem.clone(), segment_bytes).await;
            assert_eq!(read_records(&log).await, after);
            // More writes and another pass keep it right.
            let more = write(&log, &ops, &sizes).await;
            let all: Vec<Rec> = written.iter().cloned().chain(more).collect();
            let clean_to = clean_fully(&log).await;
            let after = read_records(&log).await;
            check(&after, &all, clean_to, "after a second round");
            // The second round merged shrunken segments into one: reopened, the log reads
            // the same (no segment it replaced is back).
            log.close().await.unwrap();
            let log = open(mem, segment_bytes).await;
            assert_eq!(read_records(&log).await, after, "reopened after merges");
        });
    }
}

/// A fixed workload: 40 keys, 10 rounds of updates, every fifth key deleted in the last round.
fn workload() -> Vec<(u8, Option<u16>)> {
    let mut ops = Vec::new();
    for round in 0..10u16 {
        for k in 0..40u8 {
            let delete = round == 9 && k % 5 == 0;
            ops.push((k, (!delete).then_some(round * 7 + u16::from(k))));
        }
    }
    ops
}

#[test]
fn a_crash_at_any_step_of_a_pass_leaves_each_segment_group_old_or_new() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), || async move {
        // The log before the crashed pass and after it, from a run without faults.
        let (old, new) = {
            let log = open(Rc::new(MemStorage::new()), 2_048).await;
            write(&log, &workload(), &[3, 1, 4]).await;
            clean_fully(&log).await;
            write(&log, &workload(), &[2, 5]).await;
            let old = read_records(&log).await;
            clean_once(&log).await.unwrap();
            (old, read_records(&log).await)
        };
        assert_ne!(old, new);
        let mut crash_after = 0u64;
        let mut crashed_swaps = 0;
        loop {
            assert!(crash_after < 5_000, "the pass never completed");
            let mem = MemStorage::new();
            let plan = FaultPlan::new();
            let faulty: Rc<dyn Storage> =
                Rc::new(FaultyStorage::new(Rc::new(mem.clone()), plan.clone()));
            let log = open(faulty, 2_048).await;
            // A first round cleaned without faults shrinks the segments: the crashed pass,
            // after a second round, merges several of them into one.
            let mut written = write(&log, &workload(), &[3, 1, 4]).await;
            clean_fully(&log).await;
            written.extend(write(&log, &workload(), &[2, 5]).await);
            plan.crash_after(crash_after);
            let outcome = clean_once(&log).await;
            if let Ok(Some(r)) = &outcome {
                assert!(r.segments_in > r.segments_out, "the pass merges segments");
            }
            drop(log);
            let mode = if crash_after % 2 == 0 {
                CrashMode::DropUnsynced
            } else {
                CrashMode::Torn { seed: crash_after }
            };
            mem.crash(mode);
            let what = format!("crash point {crash_after} ({mode:?})");
            let names = mem_names(&mem).await;
            if names.iter().any(|n| n.ends_with(".swap")) {
                crashed_swaps += 1;
            }
            let log = open(Rc::new(mem.clone()), 2_048).await;
            let read = read_records(&log).await;
            check(&read, &written, 0, &what);
            // Each group of segments is swapped whole: below some offset the log is the new
            // one, from there the old one.
            let mixed = (0..=written.len() as u64).any(|cut| {
                let below = |r: &&Rec| r.offset < cut;
                let above = |r: &&Rec| r.offset >= cut;
                read.iter().filter(below).eq(new.iter().filter(below))
                    && read.iter().filter(above).eq(old.iter().filter(above))
            });
            assert!(
                mixed,
                "{what}: not the new log up to a point and the old after it"
            );
            assert!(
                !mem_names(&mem)
                    .await
                    .iter()
                    .any(|n| n.ends_with(".swap") || n.ends_with(".cleaned")),
                "{what}: a swap left behind"
            );
            // The log cleans to the end after the restart.
            let clean_to = clean_fully(&log).await;
            check(&read_records(&log).await, &written, clean_to, &what);
            if outcome.is_ok() {
                break;
            }
            crash_after += 1;
        }
        assert!(crash_after > 20, "the pass is more than a few operations");
        assert!(
            crashed_swaps > 0,
            "some crash fell between the commit and its completion"
        );
    });
}

async fn mem_names(mem: &MemStorage) -> Vec<String> {
    mem.list_dir(&common::partition_dir(&root()))
        .await
        .unwrap_or_default()
}

#[test]
fn a_follower_copies_a_compacted_log_with_its_gaps() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), || async move {
        let leader = open(Rc::new(MemStorage::new()), 2_048).await;
        let written = write(&leader, &workload(), &[3, 1, 4]).await;
        clean_fully(&leader).await;
        let leader_batches = read_all(&leader, 0).await;
        assert!(
            leader_batches
                .windows(2)
                .any(|w| w[1].base_offset > w[0].next_offset()),
            "the compacted log has gaps"
        );
        // A new replica copies it as the pipeline does: fetch from its log end, append what
        // comes back at the leader's offsets, in chunks.
        let follower_mem = MemStorage::new();
        let follower = open(Rc::new(follower_mem.clone()), 2_048).await;
        loop {
            let from = follower.next_offset();
            let batches = leader
                .read_to(from, 4_096, spate_engine::ReadBound::LogEnd)
                .await
                .unwrap();
            if batches.is_empty() {
                break;
            }
            assert!(batches[0].base_offset >= from);
            follower
                .append_replicated(batches, Durability::Durable)
                .await
                .unwrap();
        }
        assert_eq!(follower.offsets().log_end, leader.offsets().log_end);
        assert_eq!(read_all(&follower, 0).await, leader_batches);
        // Its active segment holds gaps too: recovered after a crash, it reads the same.
        drop(follower);
        follower_mem.crash(CrashMode::DropUnsynced);
        let follower = open(Rc::new(follower_mem.clone()), 2_048).await;
        assert_eq!(read_all(&follower, 0).await, leader_batches);
        check(
            &read_records(&follower).await,
            &written,
            0,
            "the follower's copy",
        );
        // And it compacts its own copy (nothing more to drop: it was the leader's, cleaned).
        clean_fully(&follower).await;
        check(
            &read_records(&follower).await,
            &written,
            0,
            "the follower cleaned",
        );
    });
}
