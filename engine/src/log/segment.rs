//! One segment of a partition log: `{base:020}.log` with its `.index` and `.timeindex`.
//!
//! A segment knows its files, its in-memory indexes and how far it is readable. Only the
//! active (last) segment has an appender and open index files; closed segments are
//! immutable until retention deletes them whole.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use crate::config::LogConfig;
use crate::error::{EngineError, Result};
use crate::frame::{FrameHeader, FRAME_HEADER_LEN};
use crate::io::{OpenMode, Storage, StorageFile};
use crate::log::appender::Appender;
use crate::log::index::{offset_entry_follows, OffsetEntry, OffsetIndex};
use crate::log::index_file::{decode_entries, Entry, IndexFile, IndexTail};
use crate::log::scan::{scan_frames, ScanOutcome};
use crate::log::time_index::{time_entry_follows, TimeEntry, TimeIndex};

pub fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
pub fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}
pub fn time_index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}

/// The base offset named by a segment file name (`00000000000000000042.log` -> 42).
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Index files of the active segment.
pub struct ActiveFiles {
    pub appender: Option<Appender>,
    pub index_file: IndexFile,
    pub time_index_file: IndexFile,
}

pub struct Segment {
    pub base_offset: u64,
    pub file: Rc<dyn StorageFile>,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Bytes readable: every complete frame below this position is on disk (written).
    pub size_bytes: u64,
    /// Offset after the last readable frame.
    pub next_offset: u64,
    pub max_timestamp_ms: i64,
    pub created_at: Instant,
    pub active: Option<ActiveFiles>,
}

impl Segment {
    pub fn relative(&self, offset: u64) -> u32 {
        (offset - self.base_offset) as u32
    }

    /// Records a frame about to be written at `position` in the indexes and the segment's
    /// max timestamp.
    pub fn index_frame(&mut self, header: &FrameHeader, position: u64) {
        let rel = self.relative(header.base_offset);
        self.max_timestamp_ms = self.max_timestamp_ms.max(header.max_timestamp_ms);
        if self.index.maybe_add(rel, position) {
            self.time_index.maybe_add(self.max_timestamp_ms, rel);
        }
    }

    /// Creates a new, empty active segment.
    pub async fn create(
        storage: &dyn Storage,
        dir: &Path,
        base: u64,
        config: &LogConfig,
    ) -> Result<Segment> {
        let file = create_empty(storage, &log_path(dir, base)).await?;
        let index = open_index_file::<OffsetEntry>(storage, &index_path(dir, base), 0).await?;
        let time_index =
            open_index_file::<TimeEntry>(storage, &time_index_path(dir, base), 0).await?;
        storage
            .sync_dir(dir)
            .await
            .map_err(|e| EngineError::from_io(e, dir))?;
        let appender = Appender::new(file.clone(), 0, Vec::new(), 0, config.preallocate_step());
        Ok(Segment {
            base_offset: base,
            file,
            index: OffsetIndex::new(config.index_interval_bytes),
            time_index: TimeIndex::default(),
            size_bytes: 0,
            next_offset: base,
            max_timestamp_ms: i64::MIN,
            created_at: Instant::now(),
            active: Some(ActiveFiles {
                appender: Some(appender),
                index_file: index,
                time_index_file: time_index,
            }),
        })
    }

    /// Loads a closed segment: reads its indexes (rebuilding them if they are missing or do
    /// not match the log) and scans its tail from the last index entry.
    pub async fn load_closed(
        storage: &dyn Storage,
        dir: &Path,
        base: u64,
        config: &LogConfig,
    ) -> Result<(Segment, ScanOutcome, bool)> {
        let path = log_path(dir, base);
        let file = storage
            .open(&path, OpenMode::Read)
            .await
            .map_err(|e| EngineError::from_io(e, &path))?;
        let size = file.size().await?;
        let (mut index, mut time_index) = read_indexes(storage, dir, base, config).await;
        index.truncate_at_position(size);
        let mut rebuilt = false;
        let (start_rel, start_pos) = index
            .last()
            .map_or((0, 0), |e| (e.relative_offset, u64::from(e.position)));
        if start_pos > 0 && !frame_at(&*file, start_pos, base + u64::from(start_rel)).await {
            index = OffsetIndex::new(config.index_interval_bytes);
            time_index = TimeIndex::default();
            rebuilt = true;
        }
        let (start_rel, start_pos) = index
            .last()
            .map_or((0, 0), |e| (e.relative_offset, u64::from(e.position)));
        let mut seg = Segment {
            base_offset: base,
            file: file.clone(),
            index,
            time_index,
            size_bytes: 0,
            next_offset: base,
            max_timestamp_ms: i64::MIN,
            created_at: Instant::now(),
            active: None,
        };
        let outcome = seg
            .scan_from(start_pos, base + u64::from(start_rel), size)
            .await?;
        seg.max_timestamp_ms = seg.max_timestamp_ms.max(
            seg.time_index
                .entries()
                .last()
                .map_or(i64::MIN, |e| e.timestamp_ms),
        );
        if rebuilt {
            match persist_rebuilt(storage, dir, base, &seg).await {
                // The rebuilt index is in memory; the next start rebuilds it again.
                Err(e) if e.is_disk_full() => crate::warn_limited!(
                    "index not persisted: disk full",
                    segment = %path.display(),
                    "a rebuilt index is not saved: {e}"
                ),
                r => r?,
            }
        }
        Ok((seg, outcome, rebuilt))
    }

    /// Scans frames from `position`, indexing them, and sets the readable end to where valid
    /// frames stop.
    pub async fn scan_from(
        &mut self,
        position: u64,
        offset: u64,
        file_size: u64,
    ) -> Result<ScanOutcome> {
        let file = self.file.clone();
        let mut frames = Vec::new();
        let outcome = scan_frames(&*file, position, offset, file_size, |h, pos| {
            frames.push((*h, pos))
        })
        .await?;
        for (h, pos) in &frames {
            self.index_frame(h, *pos);
        }
        self.size_bytes = outcome.end_position;
        self.next_offset = outcome.next_offset;
        Ok(outcome)
    }

    /// Index entries to rebuild a segment's file images from, exposed for recovery.
    pub async fn open_active_files(
        &mut self,
        storage: &dyn Storage,
        dir: &Path,
        persisted_index: usize,
        persisted_time: usize,
        preallocate_bytes: u64,
    ) -> Result<()> {
        let index_file = open_index_file::<OffsetEntry>(
            storage,
            &index_path(dir, self.base_offset),
            persisted_index,
        )
        .await?;
        let time_index_file = open_index_file::<TimeEntry>(
            storage,
            &time_index_path(dir, self.base_offset),
            persisted_time,
        )
        .await?;
        let file_size = self.file.size().await?;
        let appender = Appender::open(
            self.file.clone(),
            self.size_bytes,
            file_size,
            preallocate_bytes,
        )
        .await?;
        self.active = Some(ActiveFiles {
            appender: Some(appender),
            index_file,
            time_index_file,
        });
        Ok(())
    }

    /// Persists the in-memory indexes of the active segment.
    /// The files stay with the segment whatever happens (its appender among them).
    pub async fn persist_indexes(&mut self) -> Result<()> {
        if let Some(mut closing) = self.take_active() {
            let written = closing.write().await;
            self.active = Some(closing.into_files());
            written?;
        }
        Ok(())
    }

    /// Takes the active segment's files, with the index entries they lack encoded, so that
    /// they can be written while the segment stays in its log, readable (a roll, a close).
    pub fn take_active(&mut self) -> Option<ClosingFiles> {
        let files = self.active.take()?;
        Some(ClosingFiles {
            index: files.index_file.unwritten(self.index.entries()),
            time_index: files.time_index_file.unwritten(self.time_index.entries()),
            files,
        })
    }
}

/// The files of a segment taken out of it (see [`Segment::take_active`]), with the index
/// entries still to be written to them.
pub struct ClosingFiles {
    files: ActiveFiles,
    index: IndexTail,
    time_index: IndexTail,
}

impl ClosingFiles {
    /// Writes and fdatasyncs the index entries the files lack; gives the files back.
    pub async fn persist(mut self) -> Result<ActiveFiles> {
        self.write().await?;
        Ok(self.files)
    }

    /// Writes and fdatasyncs the index entries the files lack. May be called again after an
    /// error (a full disk, then space freed).
    pub async fn write(&mut self) -> Result<()> {
        let dir_file = |f: &IndexFile| f.path().to_path_buf();
        self.files
            .index_file
            .write(&self.index)
            .await
            .map_err(|e| EngineError::from_io(e, &dir_file(&self.files.index_file)))?;
        self.files
            .time_index_file
            .write(&self.time_index)
            .await
            .map_err(|e| EngineError::from_io(e, &dir_file(&self.files.time_index_file)))?;
        Ok(())
    }

    /// The files, written or not.
    pub fn into_files(self) -> ActiveFiles {
        self.files
    }
}

async fn open_index_file<E: Entry>(
    storage: &dyn Storage,
    path: &Path,
    persisted: usize,
) -> Result<IndexFile> {
    let file = storage
        .open(path, OpenMode::Create)
        .await
        .map_err(|e| EngineError::from_io(e, path))?;
    Ok(IndexFile::open::<E>(file, persisted).await?)
}

/// Opens `path` as an empty file (created, or cut to nothing if it was there).
pub(crate) async fn create_empty(
    storage: &dyn Storage,
    path: &Path,
) -> Result<Rc<dyn StorageFile>> {
    let file = storage
        .open(path, OpenMode::Create)
        .await
        .map_err(|e| EngineError::from_io(e, path))?;
    file.truncate(0)
        .await
        .map_err(|e| EngineError::from_io(e, path))?;
    Ok(file)
}

/// Reads a segment's index files; missing or unreadable files give empty indexes.
pub async fn read_indexes(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    config: &LogConfig,
) -> (OffsetIndex, TimeIndex) {
    let index_bytes = read_whole(storage, &index_path(dir, base)).await;
    let time_bytes = read_whole(storage, &time_index_path(dir, base)).await;
    let index = OffsetIndex::from_entries(
        decode_entries(&index_bytes, offset_entry_follows),
        config.index_interval_bytes,
    );
    let mut time_entries = decode_entries(&time_bytes, time_entry_follows);
    // Time entries are written only at offset index entries; any other entry means the file
    // is damaged, and an empty time index (scan from the segment start) is slower but right.
    let indexed: std::collections::HashSet<u32> =
        index.entries().iter().map(|e| e.relative_offset).collect();
    if time_entries
        .iter()
        .any(|t| !indexed.contains(&t.relative_offset))
    {
        time_entries.clear();
    }
    let time_index = TimeIndex::from_entries(time_entries);
    (index, time_index)
}

async fn read_whole(storage: &dyn Storage, path: &Path) -> Vec<u8> {
    let Ok(file) = storage.open(path, OpenMode::Read).await else {
        return Vec::new();
    };
    let Ok(size) = file.size().await else {
        return Vec::new();
    };
    file.read_at(0, size as usize)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

/// Whether a valid frame header holding `offset` starts at `position`.
pub async fn frame_at(file: &dyn StorageFile, position: u64, offset: u64) -> bool {
    match file.read_at(position, FRAME_HEADER_LEN).await {
        Ok(bytes) => FrameHeader::decode(&bytes).is_ok_and(|h| h.base_offset == offset),
        Err(_) => false,
    }
}

/// Writes a segment's index files anew from its in-memory indexes.
pub(crate) async fn persist_rebuilt(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    seg: &Segment,
) -> Result<()> {
    persist_indexes(
        storage,
        dir,
        base,
        seg.index.entries(),
        seg.time_index.entries(),
    )
    .await
}

/// Writes a closed segment's index files anew from these entries.
pub(crate) async fn persist_indexes(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    index: &[OffsetEntry],
    time: &[TimeEntry],
) -> Result<()> {
    let mut index_file = open_index_file::<OffsetEntry>(storage, &index_path(dir, base), 0).await?;
    index_file.persist(index).await?;
    index_file.trim().await?;
    let mut time_file =
        open_index_file::<TimeEntry>(storage, &time_index_path(dir, base), 0).await?;
    time_file.persist(time).await?;
    time_file.trim().await?;
    Ok(())
}
