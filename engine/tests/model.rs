//! A model-based property test of the partition log: random sequences of leader appends,
//! follower appends (with new leader epochs), bounded reads, rolls (small segments),
//! retention, DeleteRecords, truncate_suffix, clean reopens and power losses, run on the
//! in-memory storage and checked after every step against a plain list of batches.
//!
//! The model keeps every batch ever at each offset (`all`: a truncation replaces the tail),
//! the log start, and the offset below which every batch was acknowledged as durable. After a
//! power loss the log must end between that offset and the model's end, on a batch boundary,
//! and hold exactly the model's batches; retention's deletions may come back (they are not
//! synced: records deleted but never lost), DeleteRecords' may not.

mod common;

use std::path::PathBuf;
use std::rc::Rc;

use common::*;
use proptest::prelude::*;
use spate_engine::io::mem::{CrashMode, MemStorage};
use spate_engine::io::Storage;
use spate_engine::log::epochs::EpochEntry;
use spate_engine::{AppendBatch, Durability, LogConfig, PartitionLog, ReadBatch, ReadBound};

#[derive(Debug, Clone)]
enum Op {
    /// A leader's append of `count` batches in the current epoch.
    Append {
        count: usize,
        len: usize,
        durable: bool,
    },
    /// A follower's append of `count` batches at the log end, in a newer epoch if `bump`.
    Follow {
        count: usize,
        len: usize,
        bump: bool,
    },
    /// A read from a point of the log (`at` in thousandths of [start, end]).
    Read {
        at: u16,
        max_bytes: usize,
        to_end: bool,
    },
    /// Retention down to about `keep` bytes.
    Retention {
        keep: u64,
    },
    DeleteRecords {
        at: u16,
    },
    Truncate {
        at: u16,
    },
    Reopen,
    /// A power loss (torn writes if `torn`).
    Crash {
        torn: Option<u64>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..4usize, 100..7_000usize, any::<bool>())
            .prop_map(|(count, len, durable)| Op::Append { count, len, durable }),
        3 => (1..4usize, 100..7_000usize, prop::bool::weighted(0.3))
            .prop_map(|(count, len, bump)| Op::Follow { count, len, bump }),
        4 => (0..=1000u16, 1..40_000usize, any::<bool>())
            .prop_map(|(at, max_bytes, to_end)| Op::Read { at, max_bytes, to_end }),
        1 => (0..60_000u64).prop_map(|keep| Op::Retention { keep }),
        1 => (0..=1000u16).prop_map(|at| Op::DeleteRecords { at }),
        2 => (0..=1000u16).prop_map(|at| Op::Truncate { at }),
        1 => Just(Op::Reopen),
        2 => prop::option::of(any::<u64>()).prop_map(|torn| Op::Crash { torn }),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct MBatch {
    base: u64,
    count: u32,
    seq: u64,
    len: usize,
    epoch: i32,
}

impl MBatch {
    fn next(&self) -> u64 {
        self.base + u64::from(self.count)
    }
}

#[derive(Default)]
struct Model {
    all: Vec<MBatch>,
    start: u64,
    /// The log start DeleteRecords set.
    floor: u64,
    durable: u64,
    epoch: i32,
    seq: u64,
}

impl Model {
    fn end(&self) -> u64 {
        self.all.last().map_or(0, MBatch::next)
    }

    /// A point of [start, end] given in thousandths.
    fn point(&self, at: u16) -> u64 {
        let (s, e) = (self.start, self.end());
        s + (e - s) * u64::from(at) / 1000
    }

    fn truncate(&mut self, end: u64) {
        self.all.retain(|b| b.next() <= end);
        assert_eq!(
            self.end(),
            end,
            "the log ends on a batch boundary of the model"
        );
        self.durable = self.durable.min(end);
    }

    /// Epoch entries as the log must have them: where each epoch first appears.
    fn epochs(&self) -> Vec<EpochEntry> {
        let mut out: Vec<EpochEntry> = Vec::new();
        for b in &self.all {
            if out.last().is_none_or(|e| b.epoch > e.epoch) {
                out.push(EpochEntry {
                    epoch: b.epoch,
                    start_offset: b.base,
                });
            }
        }
        out
    }

    fn batch(&self, b: &MBatch) -> AppendBatch {
        AppendBatch {
            leader_epoch: b.epoch,
            ..batch(b.seq, b.len, 1_000 + b.seq as i64)
        }
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        preallocate_bytes: 8 * 1024,
        index_interval_bytes: 2048,
        ..LogConfig::default()
    }
}

async fn open(mem: &MemStorage, config: LogConfig) -> PartitionLog {
    let storage: Rc<dyn Storage> = Rc::new(mem.clone());
    open_with(storage, &PathBuf::from("/data"), config, 64 * 1024)
        .await
        .0
}

fn check_batch(got: &ReadBatch, want: &MBatch, step: usize) {
    assert_eq!(got.base_offset, want.base, "step {step}: offset");
    assert_eq!(
        got.record_count, want.count,
        "step {step}: count at {}",
        want.base
    );
    assert_eq!(
        got.leader_epoch, want.epoch,
        "step {step}: epoch at {}",
        want.base
    );
    assert!(
        got.payload[..] == payload(want.seq, want.len)[..],
        "step {step}: payload at {}",
        want.base
    );
}

/// The whole log equals the model from its start, and the offsets agree.
async fn check_all(log: &PartitionLog, m: &Model, step: usize) {
    let o = log.offsets();
    assert!(o.holds(), "step {step}: {o:?}");
    assert_eq!(o.log_end, m.end(), "step {step}: log end");
    assert_eq!(o.log_start, m.start, "step {step}: log start");
    assert_eq!(
        o.high_watermark, o.log_end,
        "step {step}: unmanaged high watermark"
    );
    let got = read_all(log, m.start).await;
    let want: Vec<&MBatch> = m.all.iter().filter(|b| b.next() > m.start).collect();
    assert_eq!(got.len(), want.len(), "step {step}: batches served");
    for (g, w) in got.iter().zip(want) {
        check_batch(g, w, step);
    }
    assert_eq!(log.leader_epochs(), m.epochs(), "step {step}: epochs");
}

async fn run_case(ops: Vec<Op>) {
    let mem = MemStorage::new();
    let mut log = open(&mem, config()).await;
    let mut m = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append {
                count,
                len,
                durable,
            } => {
                let batches: Vec<MBatch> = (0..count)
                    .map(|i| {
                        m.seq += 1;
                        MBatch {
                            base: 0,
                            count: 1 + (m.seq % 3) as u32,
                            seq: m.seq,
                            len: len + i * 13,
                            epoch: m.epoch,
                        }
                    })
                    .collect();
                let durability = if durable {
                    Durability::Durable
                } else {
                    Durability::Appended
                };
                let r = log
                    .append(batches.iter().map(|b| m.batch(b)).collect(), durability)
                    .await
                    .unwrap();
                assert_eq!(r.base_offset, m.end(), "step {step}: appended at the end");
                let mut at = r.base_offset;
                for mut b in batches {
                    b.base = at;
                    at = b.next();
                    m.all.push(b);
                }
                assert_eq!(r.last_offset + 1, m.end());
                if durable {
                    m.durable = m.end();
                }
            }
            Op::Follow { count, len, bump } => {
                if bump {
                    m.epoch += 1;
                }
                let mut at = m.end();
                let mut batches = Vec::new();
                for i in 0..count {
                    m.seq += 1;
                    let b = MBatch {
                        base: at,
                        count: 1 + (m.seq % 3) as u32,
                        seq: m.seq,
                        len: len + i * 7,
                        epoch: m.epoch,
                    };
                    at = b.next();
                    batches.push(b);
                }
                let leader_batches: Vec<ReadBatch> = batches
                    .iter()
                    .map(|b| {
                        let a = m.batch(b);
                        ReadBatch {
                            base_offset: b.base,
                            record_count: a.record_count,
                            first_timestamp_ms: a.first_timestamp_ms,
                            max_timestamp_ms: a.max_timestamp_ms,
                            leader_epoch: a.leader_epoch,
                            payload: a.payload,
                        }
                    })
                    .collect();
                log.append_replicated(leader_batches, Durability::Durable)
                    .await
                    .unwrap();
                m.all.extend(batches);
                m.durable = m.end();
            }
            Op::Read {
                at,
                max_bytes,
                to_end,
            } => {
                let offset = m.point(at);
                let bound = if to_end {
                    ReadBound::LogEnd
                } else {
                    ReadBound::HighWatermark
                };
                let got = log.read_to(offset, max_bytes, bound).await.unwrap();
                let want: Vec<&MBatch> = m.all.iter().filter(|b| b.next() > offset).collect();
                if want.is_empty() {
                    assert!(got.is_empty(), "step {step}: read at the end");
                } else {
                    assert!(
                        !got.is_empty(),
                        "step {step}: a read gets at least one batch"
                    );
                    let bytes: usize = got.iter().map(|b| b.payload.len()).sum();
                    assert!(
                        got.len() == 1 || bytes <= max_bytes,
                        "step {step}: {bytes} bytes for max {max_bytes}"
                    );
                    for (g, w) in got.iter().zip(want) {
                        check_batch(g, w, step);
                    }
                }
            }
            Op::Retention { keep } => {
                let mut c = config();
                c.retention_bytes = keep as i64;
                log.set_config(c);
                log.apply_retention(0).await.unwrap();
                log.set_config(config());
                let start = log.offsets().log_start;
                assert!(
                    start >= m.start,
                    "step {step}: retention moved the start back"
                );
                assert!(
                    start == m.start || start == m.end() || m.all.iter().any(|b| b.base == start),
                    "step {step}: retention cut at {start}, not a batch boundary"
                );
                m.start = start;
            }
            Op::DeleteRecords { at } => {
                let offset = m.point(at);
                let start = log.delete_records(offset).await.unwrap();
                assert_eq!(start, offset.max(m.start), "step {step}: new log start");
                // A start past the current one is persisted before it answers: a power loss
                // keeps it. One at or below changes nothing.
                if offset > m.start {
                    m.floor = start;
                }
                m.start = start;
            }
            Op::Truncate { at } => {
                let offset = m.point(at);
                let want = m
                    .all
                    .iter()
                    .find(|b| b.next() > offset)
                    .map_or(m.end(), |b| b.base);
                if want < m.start {
                    // Below the start: refused, nothing changes.
                    assert!(log.truncate_suffix(offset).await.is_err(), "step {step}");
                } else {
                    let end = log.truncate_suffix(offset).await.unwrap();
                    assert_eq!(end, want, "step {step}: truncated to the batch start");
                    m.truncate(end);
                    m.floor = m.floor.min(end);
                    if let Some(e) = m.all.last().map(|b| b.epoch) {
                        m.epoch = m.epoch.max(e);
                    }
                }
            }
            Op::Reopen => {
                log.close().await.unwrap();
                drop(log);
                log = open(&mem, config()).await;
                m.durable = m.end();
            }
            Op::Crash { torn } => {
                drop(log);
                mem.crash(match torn {
                    Some(seed) => CrashMode::Torn { seed },
                    None => CrashMode::DropUnsynced,
                });
                log = open(&mem, config()).await;
                let o = log.offsets();
                assert!(
                    o.log_end >= m.durable && o.log_end <= m.end(),
                    "step {step}: after a power loss the log ends at {}, acked durable up to {}, appended up to {}",
                    o.log_end,
                    m.durable,
                    m.end()
                );
                m.truncate(o.log_end);
                // Retention's unsynced deletions may be undone, DeleteRecords' may not (up to
                // what survived of the log).
                assert!(
                    o.log_start <= m.start && o.log_start >= m.floor.min(o.log_end),
                    "step {step}: start {o:?}, model start {}, floor {}",
                    m.start,
                    m.floor
                );
                m.start = o.log_start;
                m.floor = m.floor.min(o.log_end);
                m.durable = m.end();
            }
        }
        check_all(&log, &m, step).await;
    }
}

#[test]
fn the_partition_log_behaves_like_a_list_of_batches() {
    let cases: u32 = std::env::var("SPATE_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let dir = tempfile::tempdir().unwrap();
    spate_engine::shard::write_probe_file(dir.path()).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = prop::collection::vec(op(), 1..60);
    let root = dir.path().to_path_buf();
    let result = runner.run(&strategy, |ops| {
        let root = root.clone();
        run(&root, move || run_case(ops));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
