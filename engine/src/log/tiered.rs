//! A partition log with a cold tier (see `crate::tier`): closed segments below the high
//! watermark are uploaded (log, offset index, time index), then a new manifest version names
//! them, and only then may the local copy go under `local_retention_*`. Retention
//! (`retention_*`, DeleteRecords) bounds the whole log, local and remote: the manifest drops a
//! segment first, its objects go after. Reads below the local start come from the tier
//! through the local read path.
//!
//! Crash safety: objects are put before the manifest that names them and deleted after the
//! manifest that drops them, so the newest manifest only ever names objects that exist. A
//! crash between leaves objects no manifest names (orphans); loading the manifest removes
//! them, before anything is uploaded again. While the manifest is not loaded (the tier
//! unreachable since the start) nothing is uploaded and nothing deleted.

use std::rc::Rc;

use crate::error::{EngineError, Result};
use crate::frame::{FrameHeader, FRAME_HEADER_LEN};
use crate::log::index::{offset_entry_follows, OffsetEntry, OffsetIndex};
use crate::log::index_file::{decode_entries, Entry};
use crate::log::partition::{PartitionLog, TierLink};
use crate::log::read::read_frames;
use crate::log::retention::{local_first, log_start};
use crate::log::segment;
use crate::tier::manifest::{manifest_key, manifest_version, segment_keys, segment_of_key};
use crate::tier::remote_file::RemoteFile;
use crate::tier::{Manifest, RemoteSegment, Tier};
use crate::ReadBatch;

/// The local copy of the newest manifest this partition wrote: the log's start and its
/// remote segments are known at open, before the tier is reached (or if it cannot be).
pub const MANIFEST_COPY: &str = "remote-manifest";

/// How many remote segments' offset indexes a partition keeps in memory.
const REMOTE_INDEXES: usize = 8;

/// Where a read goes, seen from the tier.
pub(crate) enum RemoteRead {
    /// Read from the tier.
    Served(Vec<ReadBatch>),
    /// Read locally, from this offset.
    Local(u64),
}

/// What a tier pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierProgress {
    pub uploaded: usize,
    pub deleted_local: usize,
    pub deleted_remote: usize,
}

/// See [`PartitionLog::tier_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierStatus {
    pub loaded: bool,
    pub remote_bytes: u64,
    pub remote_end: u64,
}

/// A step of retention on a tiered log.
enum Cut {
    /// The oldest remote segment, wholly below the local start, is past retention.
    Remote(u64),
    /// The oldest local segment is past retention (and goes from the tier too if there).
    Both(u64),
    /// The oldest local segment is uploaded and past local retention.
    Local(u64),
}

fn tier_error(what: &str, e: std::io::Error) -> EngineError {
    EngineError::Tier(format!("{what}: {e}"))
}

impl PartitionLog {
    /// Makes the log use `tier` from the next [`PartitionLog::tier_pass`], which loads its
    /// manifest. The log's config names its prefix there (`remote_key`).
    pub fn attach_tier(&self, tier: Tier) {
        let mut link = self.inner.tier.borrow_mut();
        if matches!(*link, TierLink::None) {
            *link = TierLink::Loading(tier);
        }
    }

    /// Whether this log uses a cold tier.
    pub fn has_tier(&self) -> bool {
        !matches!(*self.inner.tier.borrow(), TierLink::None)
    }

    /// The tier's manifest, once loaded.
    pub fn remote_manifest(&self) -> Option<Manifest> {
        match *self.inner.tier.borrow() {
            TierLink::Ready(_) => Some(self.inner.state.borrow().remote.clone()),
            _ => None,
        }
    }

    /// Where the partition stands with the tier, if it has one: whether its manifest is
    /// loaded, the bytes in the tier, and the offset after the last remote segment (known from
    /// the local copy before the load).
    pub fn tier_status(&self) -> Option<TierStatus> {
        let loaded = match *self.inner.tier.borrow() {
            TierLink::None => return None,
            TierLink::Loading(_) => false,
            TierLink::Ready(_) => true,
        };
        let st = self.inner.state.borrow();
        Some(TierStatus {
            loaded,
            remote_bytes: st.remote.size_bytes(),
            remote_end: st.remote.next_offset(),
        })
    }

    fn prefix(&self) -> String {
        self.inner.config.borrow().remote_key.clone()
    }

    /// Removes every object of this partition from the tier (its topic is deleted).
    pub async fn remove_remote(&self) -> Result<usize> {
        let tier = match self.inner.tier.borrow().clone() {
            TierLink::Loading(t) | TierLink::Ready(t) => t,
            TierLink::None => return Ok(0),
        };
        let prefix = self.prefix();
        if prefix.is_empty() {
            return Ok(0);
        }
        let keys = tier
            .list(format!("{prefix}/"))
            .await
            .map_err(|e| tier_error("list", e))?;
        // The manifests first: a half-removed partition must not look whole.
        let (manifests, objects): (Vec<String>, Vec<String>) = keys
            .into_iter()
            .partition(|k| manifest_version(k).is_some());
        for key in manifests.iter().chain(&objects) {
            tier.delete(key.clone())
                .await
                .map_err(|e| tier_error("delete", e))?;
        }
        Ok(manifests.len() + objects.len())
    }

    /// One pass: loads the manifest if it is not yet, uploads every closed segment below the
    /// high watermark not yet in the tier, then applies retention to the whole log (local
    /// and remote). A pass already running makes this one a no-op.
    pub async fn tier_pass(&self, now_ms: i64) -> Result<TierProgress> {
        if self.inner.tier_busy.replace(true) {
            return Ok(TierProgress::default());
        }
        struct Busy<'a>(&'a std::cell::Cell<bool>);
        impl Drop for Busy<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _busy = Busy(&self.inner.tier_busy);
        let link = self.inner.tier.borrow().clone();
        let tier = match link {
            TierLink::None => return Ok(TierProgress::default()),
            TierLink::Loading(tier) => {
                self.load_manifest(&tier).await?;
                *self.inner.tier.borrow_mut() = TierLink::Ready(tier.clone());
                tier
            }
            TierLink::Ready(tier) => tier,
        };
        let mut progress = TierProgress::default();
        let mut uploads = Ok(());
        while let Some(base) = self.next_upload() {
            if let Err(e) = self.upload(&tier, base).await {
                uploads = Err(e);
                break;
            }
            progress.uploaded += 1;
        }
        // Retention goes on while uploads fail: what is past retention goes, and local
        // retention takes only what is in the tier.
        let retention = self.tiered_retention(&tier, now_ms, &mut progress).await;
        uploads.and(retention).map(|()| progress)
    }

    /// Reads the newest readable manifest version and removes every object it does not
    /// name (orphans of an interrupted upload or deletion, older versions).
    async fn load_manifest(&self, tier: &Tier) -> Result<()> {
        let prefix = self.prefix();
        if prefix.is_empty() {
            return Err(EngineError::Tier(format!(
                "partition {} has no key in the cold tier",
                self.inner.name
            )));
        }
        let keys = tier
            .list(format!("{prefix}/"))
            .await
            .map_err(|e| tier_error("list", e))?;
        let mut versions: Vec<(u64, &String)> = keys
            .iter()
            .filter_map(|k| manifest_version(k).map(|v| (v, k)))
            .collect();
        versions.sort_unstable_by_key(|v| std::cmp::Reverse(v.0));
        let mut manifest = Manifest::default();
        for (version, key) in versions {
            match tier.get(key.clone()).await {
                Ok(bytes) => match Manifest::decode(&bytes) {
                    Ok(m) if m.version == version => {
                        manifest = m;
                        break;
                    }
                    Ok(m) => {
                        tracing::warn!(partition = %self.inner.name, key, "manifest names version {} under the key of {version}: skipped", m.version)
                    }
                    Err(e) => {
                        tracing::warn!(partition = %self.inner.name, key, "damaged manifest skipped: {e}")
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(tier_error("get manifest", e)),
            }
        }
        let current = manifest_key(&prefix, manifest.version);
        let mut orphans = 0;
        for key in &keys {
            let named = *key == current
                || segment_of_key(key).is_some_and(|b| manifest.segments.contains_key(&b));
            if named {
                continue;
            }
            match tier.delete(key.clone()).await {
                Ok(()) => orphans += 1,
                Err(e) => {
                    tracing::warn!(partition = %self.inner.name, key, "cannot remove an orphaned object (the next load tries again): {e}")
                }
            }
        }
        tracing::info!(
            partition = %self.inner.name,
            tier = tier.describe(),
            version = manifest.version,
            segments = manifest.segments.len(),
            bytes = manifest.size_bytes(),
            orphans_removed = orphans,
            "cold tier manifest loaded"
        );
        let copy = manifest.encode();
        self.inner.state.borrow_mut().remote = manifest;
        self.save_manifest_copy(&copy).await?;
        Ok(())
    }

    /// The oldest closed segment wholly below the high watermark that the tier lacks.
    fn next_upload(&self) -> Option<u64> {
        let st = self.inner.state.borrow();
        if st.truncating || st.segments.len() < 2 {
            return None;
        }
        let remote_end = st.remote.next_offset();
        let closed = st.segments.len() - 1;
        st.segments
            .values()
            .take(closed)
            .find(|s| {
                s.active.is_none()
                    && s.base_offset >= remote_end
                    && s.next_offset > s.base_offset
                    && s.next_offset <= st.high_watermark
            })
            .map(|s| s.base_offset)
    }

    /// Uploads one closed segment, then writes the manifest version that names it.
    async fn upload(&self, tier: &Tier, base: u64) -> Result<()> {
        let prefix = self.prefix();
        let (file, size, next, max_ts, index, time_index) = {
            let st = self.inner.state.borrow();
            let Some(s) = st.segments.get(&base) else {
                return Ok(());
            };
            let mut index = Vec::with_capacity(s.index.entries().len() * OffsetEntry::LEN);
            for e in s.index.entries() {
                e.encode(&mut index);
            }
            let mut time_index = Vec::new();
            for e in s.time_index.entries() {
                e.encode(&mut time_index);
            }
            (
                s.file.clone(),
                s.size_bytes,
                s.next_offset,
                s.max_timestamp_ms,
                index,
                time_index,
            )
        };
        let head = file.read_at(0, FRAME_HEADER_LEN).await?;
        let first = FrameHeader::decode(&head).map_err(|e| EngineError::Corrupt {
            path: file.path().to_path_buf(),
            position: 0,
            reason: e.to_string(),
        })?;
        let [log_key, index_key, time_key] = segment_keys(&prefix, base);
        let checksum = tier
            .put_file(log_key, segment::log_path(&self.inner.dir, base), size)
            .await
            .map_err(|e| tier_error("upload", e))?;
        crate::failpoint::hit("tier-after-log-object");
        tier.put(index_key, index.into())
            .await
            .map_err(|e| tier_error("upload index", e))?;
        tier.put(time_key, time_index.into())
            .await
            .map_err(|e| tier_error("upload time index", e))?;
        let mut manifest = self.inner.state.borrow().remote.clone();
        manifest.segments.insert(
            base,
            RemoteSegment {
                base_offset: base,
                next_offset: next,
                size_bytes: size,
                first_timestamp_ms: first.first_timestamp_ms,
                max_timestamp_ms: max_ts,
                leader_epoch: first.leader_epoch,
                checksum,
            },
        );
        crate::failpoint::hit("tier-before-manifest");
        self.write_manifest(tier, manifest).await?;
        crate::failpoint::hit("tier-after-manifest");
        tracing::info!(partition = %self.inner.name, base, next, size, "segment uploaded to the cold tier");
        Ok(())
    }

    /// Writes `next` as the next manifest version and makes it the partition's; the version
    /// before is removed afterwards.
    async fn write_manifest(&self, tier: &Tier, mut next: Manifest) -> Result<()> {
        let prefix = self.prefix();
        let old = self.inner.state.borrow().remote.version;
        next.version = old + 1;
        let bytes = next.encode();
        tier.put(manifest_key(&prefix, next.version), bytes.clone().into())
            .await
            .map_err(|e| tier_error("write manifest", e))?;
        self.save_manifest_copy(&bytes).await?;
        self.inner.state.borrow_mut().remote = next;
        if old > 0 {
            if let Err(e) = tier.delete(manifest_key(&prefix, old)).await {
                tracing::warn!(partition = %self.inner.name, "cannot remove manifest version {old} (the next load does): {e}");
            }
        }
        Ok(())
    }

    /// Saves the manifest's local copy (after the tier has the version: a copy is never
    /// newer than the tier's manifest).
    async fn save_manifest_copy(&self, bytes: &[u8]) -> Result<()> {
        let path = self.inner.dir.join(MANIFEST_COPY);
        let space = self.space();
        crate::atomic_file::write_reserved(&*self.inner.storage, &path, bytes, space.as_deref())
            .await
            .map_err(|e| EngineError::Metadata(format!("{}: {e}", path.display())))
    }

    /// Drops the remote segment at `base` from the manifest (the log then starts after it
    /// at the earliest), then removes its objects.
    async fn drop_remote(&self, tier: &Tier, base: u64) -> Result<()> {
        let mut manifest = self.inner.state.borrow().remote.clone();
        let Some(seg) = manifest.segments.remove(&base) else {
            return Ok(());
        };
        manifest.log_start = manifest.log_start.max(seg.next_offset);
        self.write_manifest(tier, manifest).await?;
        crate::failpoint::hit("tier-before-remote-delete");
        let start = log_start(&self.inner.state.borrow());
        self.inner
            .cache
            .borrow_mut()
            .evict_below(self.inner.cache_key, start);
        self.inner
            .remote_indexes
            .borrow_mut()
            .retain(|(b, _)| *b != base);
        for key in segment_keys(&self.prefix(), base) {
            if let Err(e) = tier.delete(key.clone()).await {
                tracing::warn!(partition = %self.inner.name, key, "cannot remove a dropped remote object (the next load does): {e}");
            }
        }
        tracing::info!(partition = %self.inner.name, base, next = seg.next_offset, "retention deleted a remote segment");
        Ok(())
    }

    /// Retention over local and remote segments, and local retention over uploaded ones.
    async fn tiered_retention(
        &self,
        tier: &Tier,
        now_ms: i64,
        progress: &mut TierProgress,
    ) -> Result<()> {
        loop {
            let Some(cut) = self.next_cut(now_ms) else {
                return Ok(());
            };
            match cut {
                Cut::Remote(base) => {
                    self.drop_remote(tier, base).await?;
                    progress.deleted_remote += 1;
                }
                Cut::Both(base) => {
                    let in_tier = self
                        .inner
                        .state
                        .borrow()
                        .remote
                        .segments
                        .contains_key(&base);
                    if in_tier {
                        self.drop_remote(tier, base).await?;
                        progress.deleted_remote += 1;
                    }
                    self.delete_segment(base).await?;
                    progress.deleted_local += 1;
                }
                Cut::Local(base) => {
                    self.delete_segment(base).await?;
                    crate::failpoint::hit("tier-after-local-delete");
                    progress.deleted_local += 1;
                }
            }
        }
    }

    fn next_cut(&self, now_ms: i64) -> Option<Cut> {
        let cfg = self.inner.config.borrow();
        let st = self.inner.state.borrow();
        if st.truncating {
            return None;
        }
        let start = log_start(&st);
        let local_start = local_first(&st);
        // Remote segments wholly below the log start (DeleteRecords) go first.
        if let Some(r) = st.remote.segments.values().next() {
            if r.next_offset <= start {
                return Some(Cut::Remote(r.base_offset));
            }
        }
        let local_bytes: u64 = st.segments.values().map(|s| s.size_bytes).sum();
        let remote_only: u64 = st
            .remote
            .segments
            .values()
            .filter(|r| r.next_offset <= local_start)
            .map(|r| r.size_bytes)
            .sum();
        let total = local_bytes + remote_only;
        let past = |size: u64, max_ts: i64, bytes_limit: i64, ms_limit: i64, total: u64| {
            (bytes_limit >= 0 && total.saturating_sub(size) >= bytes_limit as u64)
                || (ms_limit >= 0 && max_ts >= 0 && max_ts < now_ms.saturating_sub(ms_limit))
        };
        if let Some(r) = st
            .remote
            .segments
            .values()
            .next()
            .filter(|r| r.next_offset <= local_start)
        {
            if past(
                r.size_bytes,
                r.max_timestamp_ms,
                cfg.retention_bytes,
                cfg.retention_ms,
                total,
            ) {
                return Some(Cut::Remote(r.base_offset));
            }
        } else if st.segments.len() >= 2 {
            let o = st.segments.values().next()?;
            if past(
                o.size_bytes,
                o.max_timestamp_ms,
                cfg.retention_bytes,
                cfg.retention_ms,
                total,
            ) {
                return Some(Cut::Both(o.base_offset));
            }
        }
        if st.segments.len() < 2 {
            return None;
        }
        let o = st.segments.values().next()?;
        let local_past = past(
            o.size_bytes,
            o.max_timestamp_ms,
            cfg.local_retention_bytes,
            cfg.local_retention_ms,
            local_bytes,
        );
        if !local_past {
            return None;
        }
        let uploaded = st
            .remote
            .segments
            .get(&o.base_offset)
            .is_some_and(|r| r.next_offset == o.next_offset);
        if uploaded {
            return Some(Cut::Local(o.base_offset));
        }
        crate::warn_limited!(
            "local retention waits for uploads",
            partition = %self.inner.name,
            "the local copy is past local retention but segment {} is not in the cold tier yet: it stays until it is uploaded",
            o.base_offset
        );
        None
    }

    /// A read at `offset`: from the tier if it is below the local start and the tier holds
    /// it, else where the local read starts.
    pub(super) async fn read_remote(&self, offset: u64, max_bytes: usize) -> Result<RemoteRead> {
        let link = self.inner.tier.borrow().clone();
        let tier = match link {
            TierLink::Ready(tier) => tier,
            other => {
                let st = self.inner.state.borrow();
                if offset >= local_first(&st) || st.remote.segments.is_empty() {
                    return Ok(RemoteRead::Local(offset));
                }
                return Err(EngineError::Tier(match other {
                    TierLink::Loading(_) => format!(
                        "offset {offset} is in the cold tier, which has not been reached since the start; retry"
                    ),
                    _ => format!(
                        "offset {offset} is in a cold tier this broker has no settings for (add the [tier] table it had)"
                    ),
                }));
            }
        };
        let mut target = offset;
        loop {
            let seg = {
                let st = self.inner.state.borrow();
                let local_start = local_first(&st);
                if target >= local_start {
                    return Ok(RemoteRead::Local(target));
                }
                let seg = st.remote.segment_for(target).copied().or_else(|| {
                    // A gap below the local start: the next offset held anywhere.
                    st.remote
                        .segments
                        .range(target + 1..)
                        .next()
                        .map(|(_, s)| *s)
                });
                match seg {
                    Some(s) if s.base_offset < local_start => s,
                    _ => return Ok(RemoteRead::Local(local_start)),
                }
            };
            target = target.max(seg.base_offset);
            let [log_key, _, _] = segment_keys(&self.prefix(), seg.base_offset);
            let file: Rc<dyn crate::io::StorageFile> =
                Rc::new(RemoteFile::new(tier.clone(), log_key, seg.size_bytes));
            // A sequential reader continues where its last read left it, with the chunk after
            // it usually read ahead already (as on local disk, `readahead.rs`).
            let resume = self
                .inner
                .readahead
                .borrow_mut()
                .take(target)
                .filter(|r| r.segment_base == seg.base_offset && r.position < seg.size_bytes);
            let (position, scan_offset, first) = match resume {
                Some(r) => (r.position, target, r.chunk().await),
                None => {
                    let index = self.remote_index(&tier, &seg).await?;
                    let (rel, pos) = index.lookup((target - seg.base_offset) as u32);
                    (pos, seg.base_offset + u64::from(rel), None)
                }
            };
            let frames = read_frames(
                &*file,
                position,
                scan_offset,
                seg.size_bytes,
                target,
                max_bytes,
                first,
            )
            .await
            .map_err(|e| match e {
                EngineError::Io(e) => tier_error("read", e),
                other => other,
            })?;
            if !frames.batches.is_empty() {
                let batches =
                    self.leave_resume(file, seg.base_offset, seg.size_bytes, max_bytes, frames);
                return Ok(RemoteRead::Served(batches));
            }
            target = seg.next_offset;
        }
    }

    /// The first offset in the tier, below the local start, whose batch has a max timestamp
    /// at or after `timestamp_ms` (ListOffsets by time): the manifest names the first remote
    /// segment that reaches it, its time index where in it to look.
    pub(super) async fn remote_offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<(u64, i64)>> {
        let TierLink::Ready(tier) = self.inner.tier.borrow().clone() else {
            return Ok(None);
        };
        let candidates: Vec<RemoteSegment> = {
            let st = self.inner.state.borrow();
            let local_start = local_first(&st);
            let start = log_start(&st);
            st.remote
                .segments
                .values()
                .filter(|r| {
                    r.base_offset < local_start
                        && r.next_offset > start
                        && r.max_timestamp_ms >= timestamp_ms
                })
                .copied()
                .collect()
        };
        let start = self.offsets().log_start;
        for seg in candidates {
            let [log_key, _, time_key] = segment_keys(&self.prefix(), seg.base_offset);
            let times = tier
                .get(time_key)
                .await
                .map_err(|e| tier_error("get time index", e))?;
            let times = crate::log::time_index::TimeIndex::from_entries(decode_entries(
                &times,
                crate::log::time_index::time_entry_follows,
            ));
            let index = self.remote_index(&tier, &seg).await?;
            let (rel, pos) = index.lookup(times.scan_start(timestamp_ms));
            let file = RemoteFile::new(tier.clone(), log_key, seg.size_bytes);
            let mut found = None;
            crate::log::scan::scan_frames(
                &file,
                pos,
                seg.base_offset + u64::from(rel),
                seg.size_bytes,
                |h, _| {
                    if found.is_none()
                        && h.next_offset() > start
                        && h.max_timestamp_ms >= timestamp_ms
                    {
                        found = Some((h.base_offset.max(start), h.max_timestamp_ms));
                    }
                },
            )
            .await
            .map_err(|e| tier_error("read", e))?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// A remote segment's offset index, from memory or the tier.
    async fn remote_index(&self, tier: &Tier, seg: &RemoteSegment) -> Result<Rc<OffsetIndex>> {
        if let Some(hit) = self
            .inner
            .remote_indexes
            .borrow()
            .iter()
            .find(|(b, _)| *b == seg.base_offset)
        {
            return Ok(hit.1.clone());
        }
        let [_, index_key, _] = segment_keys(&self.prefix(), seg.base_offset);
        let bytes = tier
            .get(index_key)
            .await
            .map_err(|e| tier_error("get index", e))?;
        let entries = decode_entries::<OffsetEntry>(&bytes, offset_entry_follows);
        let interval = self.inner.config.borrow().index_interval_bytes;
        let index = Rc::new(OffsetIndex::from_entries(entries, interval));
        let mut cached = self.inner.remote_indexes.borrow_mut();
        cached.insert(0, (seg.base_offset, index.clone()));
        cached.truncate(REMOTE_INDEXES);
        Ok(index)
    }
}

/// The manifest's local copy in `dir`, or an empty manifest (none, or damaged: the tier's
/// is read at the first tier pass).
pub(super) async fn read_manifest_copy(
    storage: &dyn crate::io::Storage,
    dir: &std::path::Path,
) -> Manifest {
    let path = dir.join(MANIFEST_COPY);
    match crate::atomic_file::read(storage, &path).await {
        Ok(Some(bytes)) => Manifest::decode(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), "ignoring a damaged manifest copy: {e}");
            Manifest::default()
        }),
        Ok(None) => Manifest::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), "ignoring the manifest copy: {e}");
            Manifest::default()
        }
    }
}
