//! When writing fails: a full disk refuses the appends not yet written and leaves the log
//! writable; any other write or sync error fails the partition, which refuses writes until it
//! is reopened and never acks what was not durable.

use std::path::PathBuf;

use crate::error::{EngineError, Result};
use crate::log::partition::PartitionLog;
use crate::log::pending::Pending;

impl PartitionLog {
    pub(super) fn check_writable(&self) -> Result<()> {
        let st = self.inner.state.borrow();
        if st.closed {
            return Err(EngineError::Closed);
        }
        if let Some(reason) = &st.failed {
            return Err(EngineError::PartitionFailed {
                partition: self.inner.name.clone(),
                reason: reason.clone(),
            });
        }
        if st.truncating {
            return Err(EngineError::InvalidAppend(
                "the log's tail is being truncated; append again once it is done".into(),
            ));
        }
        Ok(())
    }

    pub(super) fn failed_error(&self) -> EngineError {
        let reason = self
            .inner
            .state
            .borrow()
            .failed
            .clone()
            .unwrap_or_else(|| "append abandoned".into());
        EngineError::PartitionFailed {
            partition: self.inner.name.clone(),
            reason,
        }
    }

    /// Refuses `round` and every append queued behind it, none of them written, after a write
    /// or roll found no space. Their offsets are given out again; the partition stays
    /// writable.
    pub(super) fn refuse_unwritten(&self, err: &EngineError, round: Vec<Pending>) {
        let pending = {
            let mut st = self.inner.state.borrow_mut();
            st.next_offset = st.written_offset;
            let end = st.written_offset;
            st.epochs.truncate_from(end);
            st.pending.take_all()
        };
        for mut p in round.into_iter().chain(pending) {
            if let Some(w) = p.waiter.take() {
                let _ = w.send(Err(disk_full_copy(err)));
            }
        }
    }

    /// Marks the partition failed and fails `round` and everything pending.
    pub(super) fn fail(&self, err: EngineError, round: Vec<Pending>) {
        let reason = err.to_string();
        tracing::error!(partition = %self.inner.name, "partition refuses writes until restart: {reason}");
        let pending: Vec<Pending> = {
            let mut st = self.inner.state.borrow_mut();
            if st.failed.is_none() {
                st.failed = Some(reason.clone());
            }
            st.pending.take_all()
        };
        self.fail_waiters(round.into_iter().chain(pending).collect(), &reason);
    }

    pub(super) fn fail_waiters(&self, pending: Vec<Pending>, reason: &str) {
        for mut p in pending {
            if let Some(w) = p.waiter.take() {
                let _ = w.send(Err(EngineError::PartitionFailed {
                    partition: self.inner.name.clone(),
                    reason: reason.to_string(),
                }));
            }
        }
    }
}

/// Why a write step failed: a full disk leaves the log's state known and writable later;
/// anything else fails the partition.
pub(super) enum WriteFault {
    NoSpace(EngineError),
    Fatal(EngineError),
}

impl WriteFault {
    /// Sorts a write or allocation error (never a sync error: those are always fatal).
    pub(super) fn of_write(e: EngineError) -> Self {
        if e.is_disk_full() {
            WriteFault::NoSpace(e)
        } else {
            WriteFault::Fatal(e)
        }
    }
}

/// A copy of a disk-full error for each refused append.
pub(super) fn disk_full_copy(e: &EngineError) -> EngineError {
    match e {
        EngineError::DiskFull { path, detail } => EngineError::DiskFull {
            path: path.clone(),
            detail: detail.clone(),
        },
        other => EngineError::DiskFull {
            path: PathBuf::new(),
            detail: other.to_string(),
        },
    }
}
