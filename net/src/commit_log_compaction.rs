//! Keeps `__consumer_offsets` from growing for ever. Every commit appends a record, and the
//! topic is kept whole (no age or size limit may drop a group's last commit), so without
//! this a consumer committing after each poll fills the disk, and each start replays it all.
//!
//! Kafka's log cleaner rewrites old segments keeping each key's last record. Spate does the
//! same in one step at the log's end: once a partition holds at least two closed segments and
//! four times what its last compaction kept, the coordinator shard reads every commit from the
//! log start, appends the live ones (each key's last value; deleted groups gone) as fresh
//! records, and moves the log start to the first of them. The segments below are deleted. A
//! replay from the new start therefore finds exactly what a replay of the whole log found.
//!
//! The live set is read in two passes. The first, up to the log end when it starts, runs
//! beside the commits. For the second, commits to the partition pause (see [`WriteGate`]):
//! it reads what they appended meanwhile, and the live records are appended and synced
//! before they resume, so no commit lands between what was read and what is written (a
//! commit there would be replayed before an older value of its key and lost). The new log
//! start is persisted only after that sync: a crash at any point leaves a log that replays to
//! the same offsets.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::sync::Semaphore;
use spate_engine::{AppendBatch, Durability, EngineError, PartitionLog};

use crate::commit_log::{self, CommitRecord};
use crate::groups::Committed;

/// A partition is compacted once its size is this many times what the last compaction kept
/// (and it has at least `MIN_SEGMENTS` segments).
const GROWTH_FACTOR: u64 = 4;
/// The active segment and two closed ones.
const MIN_SEGMENTS: usize = 3;

/// A shard's writer of the `__consumer_offsets` partitions it coordinates.
#[derive(Default)]
pub struct CommitLogWriter {
    partitions: RefCell<HashMap<u32, Rc<PartitionWriter>>>,
}

struct PartitionWriter {
    gate: WriteGate,
    /// One compaction at a time.
    compaction: Semaphore,
    /// A compaction is running or queued (the commit path starts no other).
    compacting: Cell<bool>,
    /// The partition's size that starts the next compaction.
    compact_at_bytes: Cell<u64>,
}

impl Default for PartitionWriter {
    fn default() -> Self {
        Self {
            gate: WriteGate::default(),
            compaction: Semaphore::new(1),
            compacting: Cell::new(false),
            compact_at_bytes: Cell::new(0),
        }
    }
}

/// What one compaction did, for the log and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    pub records_read: u64,
    pub live: u64,
    /// What the live records take in the log.
    pub live_bytes: u64,
    pub log_start_before: u64,
    pub log_start_after: u64,
    pub segments_deleted: usize,
}

impl CommitLogWriter {
    fn writer(&self, partition: u32) -> Rc<PartitionWriter> {
        self.partitions
            .borrow_mut()
            .entry(partition)
            .or_default()
            .clone()
    }

    /// Appends commits (a `None` value deletes) of `group` to offsets partition `partition`,
    /// then starts a compaction of it if it has grown enough.
    pub async fn append(
        &self,
        log: &PartitionLog,
        partition: u32,
        group: &str,
        entries: &[(String, i32, Option<Committed>)],
        leader_epoch: i32,
        compact: bool,
    ) -> Result<Option<u64>, EngineError> {
        let w = self.writer(partition);
        let end = {
            let _pass = w.gate.enter().await;
            commit_log::append(log, group, entries, leader_epoch).await?
        };
        // A replicated partition is not compacted yet: rewriting the leader's log alone would
        // leave gaps its followers cannot copy.
        if compact {
            self.compact_if_due(log, partition);
        }
        Ok(end)
    }

    /// Starts a compaction of offsets partition `partition` in the background if it has grown
    /// enough and none is running.
    pub fn compact_if_due(&self, log: &PartitionLog, partition: u32) {
        let w = self.writer(partition);
        if w.due(log) {
            w.compacting.set(true);
            let log = log.clone();
            glommio::spawn_local(async move {
                let _ = w.compact(&log).await;
                w.compacting.set(false);
            })
            .detach();
        }
    }

    /// Compacts offsets partition `partition` now, whatever its size (after any compaction
    /// already running).
    #[cfg(test)]
    pub async fn compact(
        &self,
        log: &PartitionLog,
        partition: u32,
    ) -> Result<Compaction, EngineError> {
        self.writer(partition).compact(log).await
    }
}

impl PartitionWriter {
    fn due(&self, log: &PartitionLog) -> bool {
        let s = log.stats();
        !self.compacting.get()
            && s.segments >= MIN_SEGMENTS
            && s.size_bytes >= self.compact_at_bytes.get()
    }

    async fn compact(&self, log: &PartitionLog) -> Result<Compaction, EngineError> {
        let _one = self
            .compaction
            .acquire_permit(1)
            .await
            .map_err(|e| EngineError::Metadata(format!("offsets compaction: {e}")))?;
        let result = compact_with(log, &self.gate).await;
        match &result {
            Ok(c) => {
                self.compact_at_bytes
                    .set(c.live_bytes.saturating_mul(GROWTH_FACTOR));
                tracing::info!(
                    partition = log.name(),
                    records_read = c.records_read,
                    live = c.live,
                    live_bytes = c.live_bytes,
                    log_start = c.log_start_after,
                    segments_deleted = c.segments_deleted,
                    "committed offsets compacted"
                );
            }
            Err(e) => {
                // Not tried again before the partition doubles.
                let size = log.stats().size_bytes;
                self.compact_at_bytes.set(size.saturating_mul(2));
                tracing::warn!(
                    partition = log.name(),
                    "committed offsets not compacted: {e}"
                );
            }
        }
        result
    }
}

/// Each key's last value, in key order; a tombstone removes the key.
type Live = BTreeMap<(String, String, i32), Committed>;

fn fold(live: &mut Live) -> impl FnMut(CommitRecord) + '_ {
    |(group, topic, partition, value)| {
        let key = (group, topic, partition);
        match value {
            Some(c) => {
                live.insert(key, c);
            }
            None => {
                live.remove(&key);
            }
        }
    }
}

async fn compact_with(log: &PartitionLog, gate: &WriteGate) -> Result<Compaction, EngineError> {
    let before = log.stats();
    let bases_before = log.segment_bases();
    let mut live = Live::new();
    let (mut records_read, cut) = commit_log::read_commits(
        log,
        before.log_start_offset,
        before.log_end_offset,
        fold(&mut live),
    )
    .await?;
    let (new_start, live_bytes) = {
        let _paused = gate.pause().await;
        let end = log.stats().log_end_offset;
        let (more, _) = commit_log::read_commits(log, cut, end, fold(&mut live)).await?;
        records_read += more;
        let batches = encode_live(&live, log.config().segment_bytes / 4)?;
        let bytes: u64 = batches.iter().map(|b| b.payload.len() as u64).sum();
        if batches.is_empty() {
            (end, 0)
        } else {
            let appended = log.append(batches, Durability::Durable).await?;
            (appended.base_offset, bytes)
        }
    };
    let log_start_after = log.delete_records(new_start).await?;
    let bases_after = log.segment_bases();
    Ok(Compaction {
        records_read,
        live: live.len() as u64,
        live_bytes,
        log_start_before: before.log_start_offset,
        log_start_after,
        segments_deleted: bases_before
            .iter()
            .filter(|b| !bases_after.contains(b))
            .count(),
    })
}

/// The live commits as record batches of at most about `max_batch_bytes` each.
fn encode_live(live: &Live, max_batch_bytes: u64) -> Result<Vec<AppendBatch>, EngineError> {
    let mut batches = Vec::new();
    let mut chunk: Vec<(Bytes, &Committed)> = Vec::new();
    let mut chunk_bytes = 0u64;
    let mut flush = |chunk: &mut Vec<(Bytes, &Committed)>| -> Result<(), EngineError> {
        if !chunk.is_empty() {
            batches.push(commit_log::encode_batch(
                chunk.drain(..).map(|(key, c)| (key, Some(c))),
            )?);
        }
        Ok(())
    };
    for ((group, topic, partition), c) in live {
        let key = commit_log::encode_key(group, topic, *partition);
        // Key, value (offset, epoch, metadata, time) and the record's own framing.
        let bytes = key.len() as u64 + c.metadata.len() as u64 + 48;
        if chunk_bytes + bytes > max_batch_bytes {
            flush(&mut chunk)?;
            chunk_bytes = 0;
        }
        chunk.push((key, c));
        chunk_bytes += bytes;
    }
    flush(&mut chunk)?;
    Ok(batches)
}

/// Lets appends through concurrently until a compaction pauses them: `pause` waits for the
/// appends in flight to finish and holds new ones until it is dropped.
#[derive(Default)]
struct WriteGate {
    state: RefCell<GateState>,
}

#[derive(Default)]
struct GateState {
    in_flight: usize,
    paused: bool,
    /// Appends waiting for the pause to end.
    held: Vec<oneshot::Sender<()>>,
    /// The pause waiting for the appends in flight.
    drained: Option<oneshot::Sender<()>>,
}

struct Pass<'a>(&'a WriteGate);
struct Paused<'a>(&'a WriteGate);

impl WriteGate {
    async fn enter(&self) -> Pass<'_> {
        loop {
            let wait = {
                let mut st = self.state.borrow_mut();
                if !st.paused {
                    st.in_flight += 1;
                    return Pass(self);
                }
                let (tx, rx) = oneshot::channel();
                st.held.push(tx);
                rx
            };
            let _ = wait.await;
        }
    }

    async fn pause(&self) -> Paused<'_> {
        let wait = {
            let mut st = self.state.borrow_mut();
            st.paused = true;
            (st.in_flight > 0).then(|| {
                let (tx, rx) = oneshot::channel();
                st.drained = Some(tx);
                rx
            })
        };
        let paused = Paused(self);
        if let Some(wait) = wait {
            let _ = wait.await;
        }
        paused
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.borrow_mut();
        st.in_flight -= 1;
        if st.in_flight == 0 {
            if let Some(tx) = st.drained.take() {
                let _ = tx.send(());
            }
        }
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        let held = {
            let mut st = self.0.state.borrow_mut();
            st.paused = false;
            st.drained = None;
            std::mem::take(&mut st.held)
        };
        for tx in held {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use spate_engine::cache::BatchCache;
    use spate_engine::io::dma::DmaStorage;
    use spate_engine::LogConfig;

    use super::*;
    use crate::config::NetConfig;
    use crate::groups::Coordinator;

    type Model = BTreeMap<(String, String, i32), i64>;

    fn run<F, Fut>(f: F)
    where
        F: FnOnce(std::path::PathBuf) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        spate_engine::shard::write_probe_file(&root).unwrap();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 * 1024)
            .spawn(move || async move {
                spate_engine::shard::read_probe_file(&DmaStorage, &root)
                    .await
                    .unwrap();
                f(root).await
            })
            .unwrap()
            .join()
            .unwrap();
    }

    async fn open(root: &Path) -> PartitionLog {
        let config = LogConfig {
            segment_bytes: 64 * 1024,
            preallocate_bytes: 64 * 1024,
            ..LogConfig::default()
        };
        let cache = Rc::new(RefCell::new(BatchCache::new(1024 * 1024)));
        let dir = root.join("__consumer_offsets").join("0");
        PartitionLog::open(Rc::new(DmaStorage), &dir, "offsets-0", config, cache, 0)
            .await
            .unwrap()
            .0
    }

    fn commit(offset: i64) -> Option<Committed> {
        Some(Committed {
            offset,
            leader_epoch: -1,
            metadata: format!("m{offset}"),
            commit_timestamp: 1_700_000_000_000 + offset,
        })
    }

    /// Commits of `group` for partitions 0..4 of topic "t" at `offset`, into the model too.
    async fn commit_all(
        w: &CommitLogWriter,
        log: &PartitionLog,
        model: &RefCell<Model>,
        group: &str,
        offset: i64,
    ) {
        let entries: Vec<_> = (0..4)
            .map(|p| ("t".to_string(), p, commit(offset)))
            .collect();
        w.append(log, 0, group, &entries, 0, true).await.unwrap();
        let mut m = model.borrow_mut();
        for p in 0..4 {
            m.insert((group.to_string(), "t".to_string(), p), offset);
        }
    }

    /// What a broker start finds: the log replayed from its start into a coordinator.
    async fn replayed(log: &PartitionLog) -> Model {
        let coordinator = Coordinator::new(&NetConfig::default());
        commit_log::replay(log, &coordinator).await.unwrap();
        let mut out = Model::new();
        for g in 0..20 {
            let group = format!("g{g}");
            for ((topic, p), c) in coordinator.committed(&group) {
                assert_eq!(c.metadata, format!("m{}", c.offset));
                assert_eq!(c.commit_timestamp, 1_700_000_000_000 + c.offset);
                out.insert((group.clone(), topic, p), c.offset);
            }
        }
        out
    }

    #[test]
    fn a_compacted_log_replays_to_the_same_offsets_and_loses_its_old_segments() {
        run(|root| async move {
            let log = open(&root).await;
            let w = CommitLogWriter::default();
            let model = RefCell::new(Model::new());
            for i in 0..3_000 {
                commit_all(&w, &log, &model, &format!("g{}", i % 10), i).await;
            }
            // A deleted group stays deleted.
            let tombstones: Vec<_> = (0..4).map(|p| ("t".to_string(), p, None)).collect();
            w.append(&log, 0, "g9", &tombstones, 0, true).await.unwrap();
            model.borrow_mut().retain(|(g, _, _), _| g != "g9");

            // The commits compacted themselves as they came (about 900 KB of them, in 64 KiB
            // segments): the first segments are gone. (How many remain depends on how many
            // commits arrived while the last compaction ran.)
            let s = log.stats();
            assert!(s.log_end_offset >= 12_000, "{s:?}");
            assert!(s.log_start_offset > 0, "{s:?}");
            assert_ne!(log.segment_bases()[0], 0, "{s:?}");

            // With no commits arriving, a compaction leaves the segment holding the new start
            // and perhaps the next one.
            let c = w.compact(&log, 0).await.unwrap();
            let after = log.stats();
            assert_eq!(c.live, 36, "{c:?}");
            assert_eq!(c.log_start_after, after.log_start_offset, "{c:?}");
            assert!(c.log_start_after > c.log_start_before, "{c:?}");
            assert!(after.segments <= 2, "{after:?}");
            assert!(after.size_bytes <= 2 * 64 * 1024, "{after:?}");
            assert_eq!(replayed(&log).await, *model.borrow());
            // And once more, from a log that starts with the previous compaction's output.
            commit_all(&w, &log, &model, "g3", 5_000).await;
            w.compact(&log, 0).await.unwrap();
            assert_eq!(replayed(&log).await, *model.borrow());
            log.close().await.unwrap();

            let log = open(&root).await;
            assert_eq!(replayed(&log).await, *model.borrow());
            log.close().await.unwrap();
        });
    }

    #[test]
    fn commits_during_a_compaction_are_neither_lost_nor_replayed_under_older_values() {
        run(|root| async move {
            let log = open(&root).await;
            let w = Rc::new(CommitLogWriter::default());
            let model = Rc::new(RefCell::new(Model::new()));
            for i in 0..500 {
                commit_all(&w, &log, &model, &format!("g{}", i % 5), i).await;
            }
            // Five committers on the same keys, each a commit at a time, while the log is
            // compacted again and again.
            let committers: Vec<_> = (0..5)
                .map(|g| {
                    let (w, log, model) = (w.clone(), log.clone(), model.clone());
                    glommio::spawn_local(async move {
                        for i in 0..300 {
                            commit_all(&w, &log, &model, &format!("g{g}"), 1_000 + i).await;
                        }
                    })
                })
                .collect();
            // Only this test's compactions: a replay must not race one started by a commit.
            w.writer(0).compact_at_bytes.set(u64::MAX);
            let mut compactions = 0;
            while model.borrow().values().any(|o| *o != 1_299) {
                w.compact(&log, 0).await.unwrap();
                compactions += 1;
                // Every commit answered before now is in the log: a replay finds it, or a
                // later commit of its key.
                let answered = model.borrow().clone();
                let found = replayed(&log).await;
                for (key, offset) in answered {
                    let got = found.get(&key).copied();
                    assert!(
                        got >= Some(offset),
                        "{key:?}: committed {offset}, replayed {got:?}"
                    );
                }
            }
            for c in committers {
                c.await;
            }
            assert!(compactions > 3, "{compactions} compactions");
            assert_eq!(replayed(&log).await, *model.borrow());
            log.close().await.unwrap();
        });
    }
}
