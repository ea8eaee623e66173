//! Where a quorum node keeps what it must not lose: its Raft log is an engine partition log
//! (`DATA/__cluster_metadata/0`, as KRaft keeps `__cluster_metadata-0`), one batch per entry
//! at offset `index - 1` with the entry's term as the batch's leader epoch, so the engine's
//! recovery, checksums, truncation and fdatasync are the quorum's too; its hard state (term,
//! vote, commit) is an atomic file beside it (`raft-state`). Everything goes through the
//! engine's storage interface, so the in-memory storage's power loss tests it.
//!
//! Its latest snapshot (the cluster image as of an index) is a third file, `snapshot`,
//! written atomically before the log's entries it stands for are let go: a snapshot from the
//! leader replaces the log (`truncate_fully`), the node's own lets go of the entries before
//! the ones it keeps (`delete_records`). A crash between the two leaves entries the snapshot
//! already covers, which `open` skips.
//!
//! [`QuorumStore::persist`] returns once the entries and the hard state are durable: only
//! then may the node's `send_after_persist` go out.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState};

use spate_engine::atomic_file::{self, AtomicFileError};
use spate_engine::cache::BatchCache;
use spate_engine::io::Storage;
use spate_engine::{Durability, EngineError, LogConfig, PartitionLog, ReadBatch, ReadBound};

use super::{Compaction, Durable, Persist, SnapshotData};

pub const STATE_FILE: &str = "raft-state";
pub const SNAPSHOT_FILE: &str = "snapshot";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata log: {0}")]
    Log(#[from] EngineError),
    #[error("metadata quorum state: {0}")]
    State(#[from] AtomicFileError),
    #[error("metadata log {dir}: {what}")]
    Corrupt { dir: PathBuf, what: String },
}

pub struct QuorumStore {
    log: PartitionLog,
    storage: Rc<dyn Storage>,
    dir: PathBuf,
}

/// The engine settings of the metadata log: no retention of its own (snapshots bound it),
/// small segments.
fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 << 20,
        retention_ms: -1,
        retention_bytes: -1,
        segment_ms: i64::MAX as u64 / 2,
        preallocate_bytes: 1 << 20,
        max_pending_bytes: 8 << 20,
        ..LogConfig::default()
    }
}

impl QuorumStore {
    /// Opens (recovering) the store in `dir` and returns what it holds.
    pub async fn open(storage: Rc<dyn Storage>, dir: &Path) -> Result<(Self, Durable), StoreError> {
        let cache = Rc::new(RefCell::new(BatchCache::new(1 << 20)));
        let (log, _report) = PartitionLog::open(
            storage.clone(),
            dir,
            "__cluster_metadata-0",
            log_config(),
            cache,
            0,
        )
        .await?;
        let corrupt = |what: String| StoreError::Corrupt {
            dir: dir.to_path_buf(),
            what,
        };
        let snapshot = match atomic_file::read(&*storage, &dir.join(SNAPSHOT_FILE)).await? {
            Some(bytes) => Some(
                decode_snapshot(&bytes)
                    .ok_or_else(|| corrupt(format!("{SNAPSHOT_FILE} is short")))?,
            ),
            None => None,
        };
        let snap_index = snapshot.as_ref().map_or(0, |s| s.index);
        // A crash after the snapshot was saved and before the log let go of what it covers:
        // finish that now. The entry after the snapshot is at offset `snap_index`.
        if snap_index > 0 {
            let o = log.offsets();
            if o.log_end < snap_index {
                log.truncate_fully(snap_index).await?;
            } else if o.log_start < snap_index {
                log.delete_records(snap_index).await?;
            }
        }
        let mut entries = Vec::new();
        let mut next = log.offsets().log_start;
        let end = log.offsets().log_end;
        while next < end {
            let batches = log.read_to(next, 1 << 20, ReadBound::LogEnd).await?;
            if batches.is_empty() {
                break;
            }
            for b in batches {
                let e: Entry = super::wire::parse_bounded(&b.payload)
                    .map_err(|e| corrupt(format!("entry at offset {}: {e}", b.base_offset)))?;
                if e.index != b.base_offset + 1 || e.term != b.leader_epoch as u64 {
                    return Err(corrupt(format!(
                        "entry {} (term {}) stored at offset {} of epoch {}",
                        e.index, e.term, b.base_offset, b.leader_epoch
                    )));
                }
                next = b.next_offset();
                entries.push(e);
            }
        }
        let hard_state = match atomic_file::read(&*storage, &dir.join(STATE_FILE)).await? {
            Some(bytes) => super::wire::parse_bounded::<HardState>(&bytes)
                .map_err(|e| corrupt(format!("{STATE_FILE}: {e}")))?,
            None => HardState::default(),
        };
        // The commit index may be ahead of a log that lost an unsynced tail only if the
        // store broke its promise; raft-rs would stop on it. Say so plainly instead.
        let last = entries.last().map_or(snap_index, |e| e.index);
        if hard_state.commit > last {
            return Err(corrupt(format!(
                "committed up to {} but the log ends at {last}",
                hard_state.commit
            )));
        }
        let store = QuorumStore {
            log,
            storage,
            dir: dir.to_path_buf(),
        };
        Ok((
            store,
            Durable {
                hard_state,
                snapshot,
                entries,
            },
        ))
    }

    /// Makes `p` durable: the log's tail from the first new entry is replaced, then the hard
    /// state is written.
    pub async fn persist(&self, p: &Persist) -> Result<(), StoreError> {
        if let Some(snap) = &p.snapshot {
            self.save_snapshot(snap).await?;
            self.log.truncate_fully(snap.index).await?;
        }
        if let Some(first) = p.entries.first() {
            let at = first.index.saturating_sub(1);
            if at < self.log.offsets().log_end {
                self.log.truncate_suffix(at).await?;
            }
            let batches = p
                .entries
                .iter()
                .map(|e| ReadBatch {
                    base_offset: e.index.saturating_sub(1),
                    record_count: 1,
                    first_timestamp_ms: 0,
                    max_timestamp_ms: 0,
                    leader_epoch: e.term.min(i32::MAX as u64) as i32,
                    payload: Bytes::from(e.write_to_bytes().unwrap_or_default()),
                })
                .collect();
            self.log
                .append_replicated(batches, Durability::Durable)
                .await?;
        }
        if let Some(hs) = &p.hard_state {
            let bytes = hs.write_to_bytes().unwrap_or_default();
            atomic_file::write(&*self.storage, &self.dir.join(STATE_FILE), &bytes).await?;
        }
        Ok(())
    }

    /// Saves the node's own snapshot, then lets go of the entries before `keep_from`.
    pub async fn compact(&self, c: &Compaction) -> Result<(), StoreError> {
        self.save_snapshot(&c.snapshot).await?;
        let offset = c
            .keep_from
            .saturating_sub(1)
            .min(self.log.offsets().log_end);
        self.log.delete_records(offset).await?;
        Ok(())
    }

    async fn save_snapshot(&self, snap: &SnapshotData) -> Result<(), StoreError> {
        atomic_file::write(
            &*self.storage,
            &self.dir.join(SNAPSHOT_FILE),
            &encode_snapshot(snap),
        )
        .await?;
        Ok(())
    }

    pub async fn close(self) {
        let _ = self.log.close().await;
    }
}

/// `index u64 | term u64 | data`, little-endian (the atomic file checks its integrity).
fn encode_snapshot(s: &SnapshotData) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + s.data.len());
    out.extend_from_slice(&s.index.to_le_bytes());
    out.extend_from_slice(&s.term.to_le_bytes());
    out.extend_from_slice(&s.data);
    out
}

fn decode_snapshot(bytes: &[u8]) -> Option<SnapshotData> {
    let index = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let term = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some(SnapshotData {
        index,
        term,
        data: bytes[16..].to_vec(),
    })
}
