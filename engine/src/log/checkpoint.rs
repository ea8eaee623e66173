//! The recovery checkpoint of a partition: a known-good point in its active segment.
//!
//! Written at clean shutdown and at every roll, after the data and indexes it names are
//! durable. At start, recovery validates frames only from this point on, which makes a clean
//! restart fast. A checkpoint that names another segment, or lies beyond the file, is
//! ignored (recovery then starts from the last index entry), as is one of another format
//! version: the file starts with [`VERSION`] and holds nothing else but the checkpoint.
//! The log start is not kept here: its one home is the `log-start` file (see `retention.rs`).

use std::path::{Path, PathBuf};

use rkyv::{Archive, Deserialize, Serialize};

use crate::atomic_file;
use crate::io::Storage;

pub const CHECKPOINT_FILE: &str = "recovery.checkpoint";

/// Format version, the first four bytes of the file (little-endian). Version 1 had no
/// version field and also held a log start; it is ignored (recovery scans instead).
pub const VERSION: u32 = 2;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryCheckpoint {
    pub active_base_offset: u64,
    /// Every frame below this position of the active segment is valid and durable.
    pub position: u64,
    pub next_offset: u64,
    /// Offset index and time index entries durable in their files.
    pub index_entries: u64,
    pub time_index_entries: u64,
    /// Greatest frame timestamp in the active segment below `position`.
    pub max_timestamp_ms: i64,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// Writes the checkpoint; on a full disk once more after releasing `space`'s reserve.
pub async fn write(
    storage: &dyn Storage,
    dir: &Path,
    cp: &RecoveryCheckpoint,
    space: Option<&crate::space::DiskSpace>,
) -> Result<(), atomic_file::AtomicFileError> {
    let archived =
        rkyv::to_bytes::<rkyv::rancor::Error>(cp).expect("serializing a checkpoint cannot fail");
    let mut bytes = VERSION.to_le_bytes().to_vec();
    bytes.extend_from_slice(&archived);
    atomic_file::write_reserved(storage, &path(dir), &bytes, space).await
}

/// The checkpoint, if present and intact. A damaged one is reported and ignored.
pub async fn read(storage: &dyn Storage, dir: &Path) -> Option<RecoveryCheckpoint> {
    match atomic_file::read(storage, &path(dir)).await {
        Ok(Some(bytes)) => {
            let archived_len = std::mem::size_of::<ArchivedRecoveryCheckpoint>();
            let version = bytes
                .get(..4)
                .map(|v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]));
            if version != Some(VERSION) || bytes.len() != 4 + archived_len {
                tracing::info!(dir = %dir.display(), "recovery checkpoint of another format version ignored; the active segment is scanned instead");
                return None;
            }
            let mut aligned = rkyv::util::AlignedVec::<16>::new();
            aligned.extend_from_slice(&bytes[4..]);
            match rkyv::from_bytes::<RecoveryCheckpoint, rkyv::rancor::Error>(&aligned) {
                Ok(cp) => Some(cp),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "ignoring unreadable recovery checkpoint: {e}");
                    None
                }
            }
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("ignoring recovery checkpoint: {e}");
            None
        }
    }
}
