//! Helpers for the engine's integration tests: a glommio executor on a temp data dir with the
//! probe file read first (as a shard does), and payload builders.
#![allow(dead_code)]

use std::cell::RefCell;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::BytesMut;
use glommio::{LocalExecutorBuilder, Placement};
use spate_engine::cache::BatchCache;
use spate_engine::io::dma::DmaStorage;
use spate_engine::io::fault::{FaultPlan, FaultyStorage};
use spate_engine::io::mem::{CrashMode, MemStorage};
use spate_engine::io::Storage;
use spate_engine::{AppendBatch, LogConfig, PartitionLog, RecoveryReport};

/// Runs `f` on a fresh glommio executor (small io_memory so parallel tests fit the memlock
/// limit) after the probe-file read.
pub fn run<F, Fut, T>(dir: &Path, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    spate_engine::shard::write_probe_file(dir).unwrap();
    let dir = dir.to_path_buf();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 * 1024)
        .spawn(move || async move {
            spate_engine::shard::read_probe_file(&DmaStorage, &dir)
                .await
                .unwrap();
            f().await
        })
        .unwrap()
        .join()
        .unwrap()
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024 * 1024,
        preallocate_bytes: 256 * 1024,
        index_interval_bytes: 4096,
        ..LogConfig::default()
    }
}

pub fn partition_dir(root: &Path) -> PathBuf {
    root.join("topics").join("t").join("0")
}

pub async fn open(root: &Path, config: LogConfig) -> (PartitionLog, RecoveryReport) {
    open_with(disk(), root, config, 64 * 1024 * 1024).await
}

thread_local! {
    /// The in-memory disk of the `on_each_disk` pass running on this thread, if any.
    static MEMORY: RefCell<Option<MemStorage>> = const { RefCell::new(None) };
}

/// Runs a crash test twice: on the real disk (a crash is the process dying: what was written
/// stays), then on the in-memory storage, where `power_loss` also drops everything no sync
/// covered. `body` gets whether it runs in memory.
pub async fn on_each_disk<F, Fut>(mut body: F)
where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = ()>,
{
    MEMORY.with(|m| *m.borrow_mut() = None);
    body(false).await;
    MEMORY.with(|m| *m.borrow_mut() = Some(MemStorage::new()));
    body(true).await;
    MEMORY.with(|m| *m.borrow_mut() = None);
}

/// The disk of this pass: the real one, or the in-memory one of `on_each_disk`.
pub fn disk() -> Rc<dyn Storage> {
    MEMORY.with(|m| match m.borrow().as_ref() {
        Some(mem) => Rc::new(mem.clone()) as Rc<dyn Storage>,
        None => Rc::new(DmaStorage),
    })
}

/// After a crash (the log dropped without a close): on the in-memory disk, the power goes
/// too, and what no sync covered is lost. On the real disk, nothing more happens.
pub fn power_loss() {
    MEMORY.with(|m| {
        if let Some(mem) = m.borrow().as_ref() {
            mem.crash(CrashMode::DropUnsynced);
        }
    })
}

/// The bytes of a file on this pass's disk.
pub fn file_bytes(path: &Path) -> Vec<u8> {
    MEMORY.with(|m| match m.borrow().as_ref() {
        Some(mem) => mem.file_bytes(path).unwrap_or_default(),
        None => std::fs::read(path).unwrap(),
    })
}

pub async fn open_with(
    storage: Rc<dyn Storage>,
    root: &Path,
    config: LogConfig,
    cache_bytes: usize,
) -> (PartitionLog, RecoveryReport) {
    let cache = Rc::new(RefCell::new(BatchCache::new(cache_bytes)));
    PartitionLog::open(storage, &partition_dir(root), "t-0", config, cache, 1)
        .await
        .unwrap()
}

pub fn faulty(plan: &Rc<FaultPlan>) -> Rc<dyn Storage> {
    Rc::new(FaultyStorage::new(disk(), plan.clone()))
}

/// A self-describing payload: `seq` repeated, so a reader can check it without a model.
pub fn payload(seq: u64, len: usize) -> BytesMut {
    let mut b = BytesMut::with_capacity(len);
    let pattern = seq.to_le_bytes();
    for i in 0..len {
        b.extend_from_slice(&[pattern[i % 8] ^ (i as u8)]);
    }
    b
}

pub fn batch(seq: u64, len: usize, ts: i64) -> AppendBatch {
    AppendBatch {
        payload: payload(seq, len).freeze(),
        record_count: 1 + (seq % 3) as u32,
        first_timestamp_ms: ts,
        max_timestamp_ms: ts,
        leader_epoch: 0,
        base_offset_field: None,
    }
}

/// Reads the whole log from `from` as (base offset, payload) pairs.
pub async fn read_all(log: &PartitionLog, from: u64) -> Vec<spate_engine::ReadBatch> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let batches = log.read(offset, 256 * 1024).await.unwrap();
        if batches.is_empty() {
            return out;
        }
        for b in batches {
            offset = b.next_offset();
            out.push(b);
        }
    }
}
