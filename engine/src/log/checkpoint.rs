//! The recovery checkpoint of a partition: a known-good point in its active segment.
//!
//! Written at clean shutdown and at every roll, after the data and indexes it names are
//! durable. At start, recovery validates frames only from this point on, which makes a clean
//! restart fast. A checkpoint that names another segment, or lies beyond the file, is
//! ignored (recovery then starts from the last index entry).

use std::path::{Path, PathBuf};

use rkyv::{Archive, Deserialize, Serialize};

use crate::atomic_file;
use crate::io::Storage;

pub const CHECKPOINT_FILE: &str = "recovery.checkpoint";

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryCheckpoint {
    pub active_base_offset: u64,
    /// Every frame below this position of the active segment is valid and durable.
    pub position: u64,
    pub next_offset: u64,
    /// Offset index and time index entries durable in their files.
    pub index_entries: u64,
    pub time_index_entries: u64,
    pub log_start_offset: u64,
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
    let bytes =
        rkyv::to_bytes::<rkyv::rancor::Error>(cp).expect("serializing a checkpoint cannot fail");
    atomic_file::write_reserved(storage, &path(dir), &bytes, space).await
}

/// The checkpoint, if present and intact. A damaged one is reported and ignored.
pub async fn read(storage: &dyn Storage, dir: &Path) -> Option<RecoveryCheckpoint> {
    match atomic_file::read(storage, &path(dir)).await {
        Ok(Some(bytes)) => {
            let mut aligned = rkyv::util::AlignedVec::<16>::new();
            aligned.extend_from_slice(&bytes);
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
