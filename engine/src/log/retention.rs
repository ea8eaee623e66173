//! Where a partition log starts and how it shrinks from the front: retention by size and
//! age, and DeleteRecords, whose new start is persisted in the `log-start` file before any
//! segment goes.

use std::path::Path;

use crate::error::{EngineError, Result};
use crate::io::Storage;
use crate::log::partition::{PartitionLog, State};
use crate::log::segment::{self};

impl PartitionLog {
    /// Deletes closed segments beyond the size and age limits. Returns how many it deleted.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        if self.has_tier() {
            // Retention of a tiered log covers the tier too: its tier pass applies it.
            return Ok(0);
        }
        let cfg = self.inner.config.borrow().clone();
        let mut deleted = 0;
        loop {
            let victim = {
                let st = self.inner.state.borrow();
                // A truncation owns the segments while it runs; the next pass catches up.
                if st.segments.len() < 2 || st.truncating {
                    None
                } else {
                    let total: u64 = st.segments.values().map(|s| s.size_bytes).sum();
                    st.segments.values().next().and_then(|oldest| {
                        let by_size = cfg.retention_bytes >= 0
                            && total.saturating_sub(oldest.size_bytes)
                                >= cfg.retention_bytes as u64;
                        let by_age = cfg.retention_ms >= 0
                            && oldest.max_timestamp_ms >= 0
                            && oldest.max_timestamp_ms < now_ms.saturating_sub(cfg.retention_ms);
                        (by_size || by_age).then_some(oldest.base_offset)
                    })
                }
            };
            let Some(base) = victim else { break };
            self.delete_segment(base).await?;
            deleted += 1;
        }
        Ok(deleted)
    }

    pub(super) async fn delete_segment(&self, base: u64) -> Result<()> {
        let seg = self.inner.state.borrow_mut().segments.remove(&base);
        let Some(seg) = seg else { return Ok(()) };
        let new_start = {
            let st = self.inner.state.borrow();
            log_start(&st)
        };
        self.inner
            .cache
            .borrow_mut()
            .evict_below(self.inner.cache_key, new_start);
        drop(seg);
        let dir = &self.inner.dir;
        let paths = [
            segment::log_path(dir, base),
            segment::index_path(dir, base),
            segment::time_index_path(dir, base),
        ];
        let delay = self.inner.config.borrow().file_delete_delay_ms;
        if delay == 0 {
            for path in &paths {
                remove_if_present(&*self.inner.storage, path).await?;
            }
            tracing::info!(partition = %self.inner.name, base, "retention deleted segment");
            return Ok(());
        }
        // Out of the log now, off the disk later: renamed so that a restart meanwhile finds
        // them marked (recovery removes `*.deleted` files).
        let mut marked = Vec::with_capacity(paths.len());
        for path in &paths {
            let to = deleted_path(path);
            match self.inner.storage.rename(path, &to).await {
                Ok(()) => marked.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(EngineError::from_io(e, path)),
            }
        }
        let storage = self.inner.storage.clone();
        let name = self.inner.name.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(std::time::Duration::from_millis(delay)).await;
            for path in &marked {
                if let Err(e) = remove_if_present(&*storage, path).await {
                    tracing::warn!(partition = %name, "cannot remove {}: {e}", path.display());
                }
            }
        })
        .detach();
        tracing::info!(partition = %self.inner.name, base, delay_ms = delay, "retention deleted segment; its files go after the delay");
        Ok(())
    }

    /// Makes `offset` the new log start (Kafka's DeleteRecords): offsets below it are no
    /// longer served and segments wholly below it are deleted. The new start is persisted
    /// before anything is deleted. `offset` may not pass the high watermark (the log end
    /// without replication). Returns the log start.
    pub async fn delete_records(&self, offset: u64) -> Result<u64> {
        self.check_writable()?;
        let (start, end) = {
            let st = self.inner.state.borrow();
            (log_start(&st), st.high_watermark)
        };
        if offset > end {
            return Err(EngineError::OffsetOutOfRange {
                offset,
                log_start: start,
                log_end: end,
            });
        }
        if offset <= start {
            return Ok(start);
        }
        let path = self.inner.dir.join(START_FILE);
        let space = self.space();
        crate::atomic_file::write_reserved(
            &*self.inner.storage,
            &path,
            &offset.to_le_bytes(),
            space.as_deref(),
        )
        .await
        .map_err(|e| {
            if e.is_disk_full() {
                EngineError::DiskFull {
                    path: path.clone(),
                    detail: format!("the new log start could not be saved: {e}"),
                }
            } else {
                EngineError::Metadata(e.to_string())
            }
        })?;
        self.inner.state.borrow_mut().start_floor = offset;
        self.inner
            .cache
            .borrow_mut()
            .evict_below(self.inner.cache_key, offset);
        loop {
            let victim = {
                let st = self.inner.state.borrow();
                let mut it = st.segments.iter();
                match (it.next(), it.next()) {
                    (Some((base, _)), Some((next_base, _))) if *next_base <= offset => Some(*base),
                    _ => None,
                }
            };
            let Some(base) = victim else { break };
            self.delete_segment(base).await?;
        }
        Ok(self.stats().log_start_offset)
    }
}

/// File holding the log start set by `delete_records` (8 bytes, little-endian).
pub const START_FILE: &str = "log-start";

/// Suffix of a deleted segment's files while they wait for `file_delete_delay_ms`.
pub const DELETED_SUFFIX: &str = ".deleted";

fn deleted_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(DELETED_SUFFIX);
    std::path::PathBuf::from(name)
}

/// Removes `path`; one already gone is no error.
pub(crate) async fn remove_if_present(storage: &dyn Storage, path: &Path) -> Result<()> {
    match storage.remove(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(EngineError::from_io(e, path)),
        _ => Ok(()),
    }
}

/// The log start DeleteRecords saved, at most `log_end`. A missing or damaged file means no
/// floor: the log then starts at its first segment, which serves records that were deleted
/// but never loses any. A floor past the recovered end (records deleted that a power loss
/// then took, unsynced) is lowered to the end and saved so: otherwise it would hide the
/// records appended next, at those offsets.
pub(super) async fn read_start_floor(
    storage: &dyn Storage,
    dir: &Path,
    log_end: u64,
) -> Result<u64> {
    let path = dir.join(START_FILE);
    let floor = match crate::atomic_file::read(storage, &path).await {
        Ok(Some(b)) => <[u8; 8]>::try_from(b.as_slice()).map_or(0, u64::from_le_bytes),
        Ok(None) => 0,
        Err(e) => {
            tracing::warn!("ignoring {}: {e}", path.display());
            0
        }
    };
    if floor <= log_end {
        return Ok(floor);
    }
    tracing::warn!(
        path = %path.display(),
        floor,
        log_end,
        "the saved log start is past the recovered log end; lowering it to the end"
    );
    crate::atomic_file::write(storage, &path, &log_end.to_le_bytes())
        .await
        .map_err(|e| EngineError::Metadata(e.to_string()))?;
    Ok(log_end)
}

pub(super) fn log_start(st: &State) -> u64 {
    let local = local_first(st);
    st.remote
        .first_offset()
        .map_or(local, |remote| remote.min(local))
        .max(st.start_floor.min(st.written_offset))
}

/// The first offset of the local segments (the log end if there are none).
pub(super) fn local_first(st: &State) -> u64 {
    st.segments
        .values()
        .next()
        .map_or(st.written_offset, |s| s.base_offset)
}
