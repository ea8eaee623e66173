//! Rolling a partition log: sealing the active segment, writing the index entries its files
//! lack, starting the next segment, and the recovery checkpoint written at each roll and at a
//! clean close.

use crate::error::{EngineError, Result};
use crate::log::checkpoint::{self, RecoveryCheckpoint};
use crate::log::failure::WriteFault;
use crate::log::partition::PartitionLog;
use crate::log::segment::Segment;

impl PartitionLog {
    /// Closes the active segment and starts a new one at the next offset to write.
    /// A full disk leaves the log as it was or with the last segment closed (sealed, its
    /// indexes perhaps short: they are rebuilt from the log at the next start), and the next
    /// flush tries again.
    pub(super) async fn roll(&self) -> std::result::Result<(), WriteFault> {
        let (appender, base) = {
            let mut st = self.inner.state.borrow_mut();
            let base = st.written_offset;
            let app = st
                .segments
                .values_mut()
                .next_back()
                .and_then(|s| s.active.as_mut())
                .and_then(|a| a.appender.take());
            (app, base)
        };
        if let Some(mut app) = appender {
            let path = app.file().path().to_path_buf();
            let closed = app.seal().await;
            if let Err(e) = closed {
                self.put_back_appender(Some(app));
                // A failed fdatasync is never retried, whatever its errno.
                return Err(WriteFault::Fatal(EngineError::from_io(e, &path)));
            }
        }
        // The closed segment stays in the map while its indexes are written: readers and
        // the log start must see it throughout (a fetch there must not look out of range).
        let closing = {
            let mut st = self.inner.state.borrow_mut();
            match st.segments.values_mut().next_back() {
                Some(seg) => seg.take_active(),
                None => return Err(WriteFault::Fatal(EngineError::Closed)),
            }
        };
        if let Some(mut closing) = closing {
            if let Err(e) = self.write_index_tails(&mut closing, false).await {
                if !e.is_disk_full() {
                    return Err(WriteFault::Fatal(e));
                }
                crate::warn_limited!("roll: disk full", partition = %self.inner.name, "a closed segment's indexes are short (rebuilt from the log at the next start): {e}");
            }
            let mut files = closing.into_files();
            let trimmed = match files.index_file.trim().await {
                Ok(()) => files.time_index_file.trim().await,
                Err(e) => Err(e),
            };
            if let Err(e) = trimmed {
                return Err(WriteFault::Fatal(EngineError::from_io(
                    e,
                    files.index_file.path(),
                )));
            }
        }
        let config = self.config();
        let new = Segment::create(&*self.inner.storage, &self.inner.dir, base, &config)
            .await
            .map_err(WriteFault::of_write)?;
        tracing::debug!(partition = %self.inner.name, base, "rolled to a new segment");
        self.inner.state.borrow_mut().segments.insert(base, new);
        // Without it the previous checkpoint, which names the closed segment, is ignored at the
        // next start, and recovery scans the new segment from its last index entry.
        if let Err(e) = self.write_checkpoint(false).await {
            crate::warn_limited!("checkpoint failed", partition = %self.inner.name, "recovery checkpoint not written at roll: {e}");
        }
        Ok(())
    }

    /// Writes the index entries a closing segment's files lack; on a full disk, with
    /// `reserve` (a clean close), once more after releasing the disk's reserve. A roll does
    /// without: its index entries can be rebuilt, and the reserve is kept for what frees space
    /// (deletions, retention changes) and for the stop.
    pub(super) async fn write_index_tails(
        &self,
        closing: &mut crate::log::segment::ClosingFiles,
        reserve: bool,
    ) -> Result<()> {
        match closing.write().await {
            Err(e) if e.is_disk_full() && reserve => match self.space() {
                Some(space) => {
                    space.release_reserve(&format!("the indexes of {}", self.inner.name));
                    closing.write().await
                }
                None => Err(e),
            },
            r => r,
        }
    }

    /// Writes the recovery checkpoint; on a full disk with `reserve` (a clean close) once more
    /// after releasing the disk's reserve (see [`PartitionLog::write_index_tails`]).
    pub(super) async fn write_checkpoint(&self, reserve: bool) -> Result<()> {
        let cp = {
            let st = self.inner.state.borrow();
            let Some(active) = st.segments.values().next_back() else {
                return Ok(());
            };
            RecoveryCheckpoint {
                active_base_offset: active.base_offset,
                position: active.size_bytes,
                next_offset: active.next_offset,
                index_entries: active.index.entries().len() as u64,
                time_index_entries: active.time_index.entries().len() as u64,
                max_timestamp_ms: active.max_timestamp_ms,
            }
        };
        let space = self.space().filter(|_| reserve);
        checkpoint::write(&*self.inner.storage, &self.inner.dir, &cp, space.as_deref())
            .await
            .map_err(|e| {
                if e.is_disk_full() {
                    EngineError::DiskFull {
                        path: checkpoint::path(&self.inner.dir),
                        detail: format!("the recovery checkpoint could not be written: {e}"),
                    }
                } else {
                    EngineError::Metadata(e.to_string())
                }
            })
    }
}
