//! Recovery of a partition log at open.
//!
//! Closed segments are loaded with their indexes (rebuilt if missing or inconsistent). The
//! active segment is validated frame by frame from the recovery checkpoint, or else from its
//! last index entry that still points at a valid frame, or else from its start; at the first
//! torn or corrupt frame the file is cut, so that nothing after it can ever be served. What was
//! done is logged and returned.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::LogConfig;
use crate::error::{EngineError, Result};
use crate::frame::FrameError;
use crate::io::{OpenMode, Storage};
use crate::log::checkpoint;
use crate::log::scan::nonzero_bytes_after;
use crate::log::segment::{self, frame_at, read_indexes, Segment};

/// What recovery did to one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub partition: String,
    pub segments: usize,
    pub next_offset: u64,
    /// Recovery started from a checkpoint (a clean shutdown) rather than an index entry.
    pub from_checkpoint: bool,
    /// Bytes of frames validated in the active segment.
    pub bytes_scanned: u64,
    /// Bytes removed after the last valid frame (a torn or corrupt tail).
    pub bytes_cut: u64,
    /// Why the tail was cut, if it was.
    pub cut_reason: Option<String>,
    pub indexes_rebuilt: usize,
}

pub async fn recover(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    config: &LogConfig,
) -> Result<(BTreeMap<u64, Segment>, RecoveryReport)> {
    let mut report = RecoveryReport {
        partition: name.to_string(),
        ..Default::default()
    };
    crate::log::swap::recover(storage, dir, name).await?;
    let bases = list_segments(storage, dir, name).await?;
    let mut segments = BTreeMap::new();
    let Some((&last_base, closed)) = bases.split_last() else {
        let seg = Segment::create(storage, dir, 0, config).await?;
        segments.insert(0, seg);
        report.segments = 1;
        return Ok((segments, report));
    };
    for &base in closed {
        let (seg, outcome, rebuilt) = Segment::load_closed(storage, dir, base, config).await?;
        if let Some((pos, why)) = &outcome.stop {
            tracing::error!(
                partition = name,
                segment = base,
                position = pos,
                "closed segment has an invalid frame ({why}); data after it is not served"
            );
        }
        report.indexes_rebuilt += usize::from(rebuilt);
        segments.insert(base, seg);
    }
    let active = recover_active(storage, dir, last_base, config, &mut report).await?;
    report.next_offset = active.next_offset;
    segments.insert(last_base, active);
    report.segments = segments.len();
    if report.bytes_cut > 0 || report.cut_reason.is_some() {
        tracing::warn!(
            partition = name,
            bytes_cut = report.bytes_cut,
            next_offset = report.next_offset,
            "recovery cut a torn or corrupt tail: {}",
            report.cut_reason.as_deref().unwrap_or("unknown")
        );
    }
    Ok((segments, report))
}

/// Base offsets of the segment files in `dir`, in order. Foreign files are reported and left.
async fn list_segments(storage: &dyn Storage, dir: &Path, name: &str) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    let names = storage
        .list_dir(dir)
        .await
        .map_err(|e| EngineError::from_io(e, dir))?;
    for file_name in names {
        if let Some(base) = segment::parse_segment_name(&file_name) {
            bases.push(base);
        } else if file_name.ends_with(".tmp")
            || file_name.ends_with(crate::log::retention::DELETED_SUFFIX)
        {
            // A write that never completed, or a deleted segment whose delay a stop cut short.
            let _ = storage.remove(&dir.join(&file_name)).await;
        } else if !(file_name.ends_with(".index")
            || file_name.ends_with(".timeindex")
            || file_name == checkpoint::CHECKPOINT_FILE
            || file_name == crate::log::retention::START_FILE
            || file_name == crate::log::epochs::EPOCHS_FILE
            || file_name == crate::log::tiered::MANIFEST_COPY
            || file_name == crate::log::clean::CLEANER_OFFSET_FILE)
        {
            tracing::warn!(partition = name, file = %dir.join(&file_name).display(), "ignoring a file that is not part of the log");
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

async fn recover_active(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    config: &LogConfig,
    report: &mut RecoveryReport,
) -> Result<Segment> {
    let path = segment::log_path(dir, base);
    let file = storage
        .open(&path, OpenMode::ReadWrite)
        .await
        .map_err(|e| EngineError::from_io(e, &path))?;
    let file_size = file.size().await?;
    let (mut index, mut time_index) = read_indexes(storage, dir, base, config).await;
    let cp = checkpoint::read(storage, dir).await.filter(|cp| {
        cp.active_base_offset == base && cp.position <= file_size && cp.next_offset >= base
    });
    // Where to start validating: (position, offset, index entries persisted and trusted).
    let mut checkpoint_max_ts = i64::MIN;
    let (start_pos, start_offset) = match cp {
        Some(cp) if cp.position == 0 || frame_at(&*file, 0, base).await => {
            report.from_checkpoint = true;
            index.truncate_at_position(cp.position);
            time_index.truncate_at_offset((cp.next_offset - base) as u32);
            checkpoint_max_ts = cp.max_timestamp_ms;
            (cp.position, cp.next_offset)
        }
        _ => {
            index.truncate_at_position(file_size);
            loop {
                match index.last() {
                    Some(e)
                        if frame_at(
                            &*file,
                            u64::from(e.position),
                            base + u64::from(e.relative_offset),
                        )
                        .await =>
                    {
                        break (u64::from(e.position), base + u64::from(e.relative_offset));
                    }
                    Some(e) => {
                        index.truncate_at_position(u64::from(e.position));
                        report.indexes_rebuilt = report.indexes_rebuilt.max(1);
                    }
                    None => break (0, base),
                }
            }
        }
    };
    time_index.truncate_at_offset((start_offset - base) as u32 + 1);
    let trusted_index = index.entries().len();
    let trusted_time = time_index.entries().len();
    let mut seg = Segment {
        base_offset: base,
        file: file.clone(),
        index,
        time_index,
        size_bytes: 0,
        next_offset: base,
        max_timestamp_ms: i64::MIN,
        created_at: std::time::Instant::now(),
        active: None,
    };
    seg.max_timestamp_ms = seg
        .time_index
        .entries()
        .last()
        .map_or(i64::MIN, |e| e.timestamp_ms)
        .max(checkpoint_max_ts);
    let outcome = seg.scan_from(start_pos, start_offset, file_size).await?;
    if start_pos == 0 && seg.size_bytes == 0 {
        // Bad magic at the start, or a few non-zero bytes shorter than a block (our writes are
        // whole blocks, so a torn write never leaves that): someone else's file.
        let foreign = match &outcome.stop {
            Some((_, FrameError::BadMagic(_) | FrameError::BadVersion(_))) => true,
            Some((_, FrameError::Short { .. })) => file_size < crate::io::BLOCK_SIZE,
            _ => false,
        };
        if foreign {
            return Err(EngineError::Corrupt {
                path,
                position: 0,
                reason: "this is not a Spate segment (it does not start with a frame); move it out of the data directory".into(),
            });
        }
    }
    report.bytes_scanned = outcome.end_position - start_pos;
    report.bytes_cut = nonzero_bytes_after(&*file, outcome.end_position, file_size).await?;
    report.cut_reason = outcome
        .stop
        .as_ref()
        .map(|(pos, why)| format!("invalid frame at position {pos}: {why}"));
    // Cut: nothing beyond the last valid frame may survive, not even preallocated zeros that a
    // torn write could have filled in part.
    file.truncate(seg.size_bytes)
        .await
        .map_err(|e| EngineError::from_io(e, &path))?;
    if report.bytes_cut > 0 || outcome.stop.is_some() {
        file.fdatasync()
            .await
            .map_err(|e| EngineError::from_io(e, &path))?;
    }
    seg.open_active_files(
        storage,
        dir,
        trusted_index,
        trusted_time,
        config.preallocate_step(),
    )
    .await?;
    // On a full disk the index tail stays in memory only (the next start scans it again):
    // a start must not need space.
    match seg.persist_indexes().await {
        Err(e) if e.is_disk_full() => crate::warn_limited!(
            "index not persisted: disk full",
            segment = %path.display(),
            "the active segment's index tail is not saved: {e}"
        ),
        r => r?,
    }
    Ok(seg)
}
