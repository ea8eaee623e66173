//! Errors of the engine. Each says what failed and where; the network layer maps them to
//! protocol error codes, the command line to messages.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("disk full: {path} has no space left; free space on that filesystem or lower retention, then restart")]
    DiskFull { path: PathBuf },
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
            }
        } else {
            EngineError::Io(err)
        }
    }
}
