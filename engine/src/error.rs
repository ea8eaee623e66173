//! Errors of the engine. Each says what failed and where; the network layer maps them to
//! protocol error codes, the command line to messages.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// No space for a write (ENOSPC), or less free space than `storage.min_free_bytes`:
    /// nothing was written, and writes resume once space is freed (no restart needed).
    #[error("disk full: {}: {detail}", path.display())]
    DiskFull { path: PathBuf, detail: String },
    /// The partition saw a write or sync failure and takes no more writes until restart.
    #[error("partition {partition} is failed and refuses writes until restart: {reason}")]
    PartitionFailed { partition: String, reason: String },
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: u64,
        log_start: u64,
        log_end: u64,
    },
    #[error("corrupt data in {path} at position {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// A replicated append whose first offset is not the log end: the follower must
    /// truncate or fetch from `log_end` instead.
    #[error("replicated batches start at offset {got} but the log ends at {log_end}")]
    NotContiguous { got: u64, log_end: u64 },
    /// A batch of an older leader epoch than the log already holds: it comes from a deposed
    /// leader and is never applied.
    #[error("leader epoch {epoch} is older than the log's latest epoch {latest}")]
    StaleEpoch { epoch: i32, latest: i32 },
    #[error("metadata: {0}")]
    Metadata(String),
    #[error("unknown topic or partition: {0}")]
    UnknownPartition(String),
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    #[error("partition log is closed")]
    Closed,
    /// The cold tier failed or did not answer in time: a retry may succeed.
    #[error("cold tier: {0}")]
    Tier(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    /// Wraps an I/O error, recognising a full disk so the message can say which one.
    pub fn from_io(err: io::Error, path: &std::path::Path) -> Self {
        if crate::io::raw_os_error(&err) == Some(libc::ENOSPC)
            || err.kind() == io::ErrorKind::StorageFull
        {
            EngineError::DiskFull {
                path: path.to_path_buf(),
                detail: "no space left on that filesystem; free space there (delete topics or \
                         records, lower retention) and writes resume"
                    .into(),
            }
        } else {
            EngineError::Io(err)
        }
    }

    /// Whether this is a lack of space (ENOSPC or the `storage.min_free_bytes` floor) rather
    /// than a failing disk: the state of the log is known, and a retry may succeed later.
    pub fn is_disk_full(&self) -> bool {
        match self {
            EngineError::DiskFull { .. } => true,
            EngineError::Io(e) => crate::io::is_enospc(e),
            _ => false,
        }
    }
}
