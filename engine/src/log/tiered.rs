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
//!
//! On a cluster every replica of a partition shares one place in the tier ([`TierRole`]):
//! the leader uploads, writes the manifest (under its leader epoch, see `tier::manifest`)
//! and applies retention to the remote segments; a follower reads the newest manifest each
//! pass and deletes its local segments once the tier covers them and local retention has
//! passed, never touching the tier. A leader that finds a manifest of a later epoch stops:
//! another replica leads.

use std::rc::Rc;

use crate::error::{EngineError, Result};
use crate::frame::{FrameHeader, FRAME_HEADER_LEN};
use crate::log::index::{offset_entry_follows, OffsetEntry, OffsetIndex};
use crate::log::index_file::{decode_entries, Entry};
use crate::log::partition::{PartitionLog, TierLink};
use crate::log::read::read_frames;
use crate::log::retention::{local_first, log_start};
use crate::log::segment;
use crate::tier::manifest::{
    manifest_id, manifest_key, manifests_dir, segment_keys, segment_of_key, ManifestId,
};
use crate::tier::remote_file::RemoteFile;
use crate::tier::{Manifest, RemoteSegment, Tier};
use crate::ReadBatch;

/// The local copy of the newest manifest this partition wrote: the log's start and its
/// remote segments are known at open, before the tier is reached (or if it cannot be).
pub const MANIFEST_COPY: &str = "remote-manifest";

/// How often a leader looks for objects no manifest names (besides when it takes over).
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// How many remote segments' offset indexes a partition keeps in memory.
const REMOTE_INDEXES: usize = 8;

/// Where a read goes, seen from the tier.
pub(crate) enum RemoteRead {
    /// Read from the tier.
    Served(Vec<ReadBatch>),
    /// Read locally, from this offset.
    Local(u64),
}

/// What a replica does with the cold tier. A log starts as a follower; a single broker makes
/// its logs leaders in epoch 0, replication makes the partition's leader one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierRole {
    /// Uploads, writes the manifest under this leader epoch, applies remote retention.
    Leader { epoch: i32 },
    /// Reads the manifest; deletes local segments the tier covers, past local retention.
    Follower,
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

fn fenced(theirs: i32, mine: i32) -> EngineError {
    EngineError::Tier(format!(
        "the cold tier has a manifest of leader epoch {theirs}, past this replica's {mine}: another replica leads the partition, this one leaves the tier to it"
    ))
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

    /// Makes this replica the tier's writer (the partition's leader in `epoch`) or a reader
    /// of it. A new leader loads the manifest again (and removes orphans) before it writes.
    pub fn set_tier_role(&self, role: TierRole) {
        self.inner.tier_role.set(role);
    }

    pub fn tier_role(&self) -> TierRole {
        self.inner.tier_role.get()
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
        let (manifests, objects): (Vec<String>, Vec<String>) =
            keys.into_iter().partition(|k| manifest_id(k).is_some());
        for key in manifests.iter().chain(&objects) {
            tier.delete(key.clone())
                .await
                .map_err(|e| tier_error("delete", e))?;
        }
        Ok(manifests.len() + objects.len())
    }

    /// Tiering turned off on the topic (`remote.storage.enable=false` with
    /// `remote.log.delete.on.disable`, as in Kafka): the log starts at its local start from
    /// now on, the tier's writer removes the partition's objects (a follower leaves them to
    /// its leader), then the manifest's local copy goes and the log stops using the tier. A
    /// crash before the copy is gone leaves it, and the next start does this again (see
    /// [`PartitionLog::has_manifest_copy`]). Returns how many objects it removed; `None`
    /// while a tier pass is running (the next pass tries again).
    pub async fn leave_tier(&self) -> Result<Option<usize>> {
        if self.inner.tier_busy.replace(true) {
            return Ok(None);
        }
        let result = self.leave_tier_now().await;
        self.inner.tier_busy.set(false);
        result.map(Some)
    }

    async fn leave_tier_now(&self) -> Result<usize> {
        if !self.has_tier() {
            return Ok(0);
        }
        let start = {
            let mut st = self.inner.state.borrow_mut();
            st.remote = Manifest::default();
            log_start(&st)
        };
        self.inner.remote_indexes.borrow_mut().clear();
        self.inner
            .cache
            .borrow_mut()
            .evict_below(self.inner.cache_key, start);
        let removed = match self.tier_role() {
            TierRole::Leader { .. } => self.remove_remote().await?,
            TierRole::Follower => 0,
        };
        crate::log::retention::remove_if_present(
            &*self.inner.storage,
            &self.inner.dir.join(MANIFEST_COPY),
        )
        .await?;
        *self.inner.tier.borrow_mut() = TierLink::None;
        self.inner.tier_claimed.set(None);
        Ok(removed)
    }

    /// Whether the partition's directory holds a manifest copy: it was tiered (and, if its
    /// topic is no longer, has not finished leaving the tier).
    pub async fn has_manifest_copy(&self) -> bool {
        let path = self.inner.dir.join(MANIFEST_COPY);
        matches!(
            crate::atomic_file::read(&*self.inner.storage, &path).await,
            Ok(Some(_))
        )
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
            TierLink::Loading(tier) | TierLink::Ready(tier) => tier,
        };
        let epoch = match self.tier_role() {
            TierRole::Follower => return self.follow_tier(&tier, now_ms).await,
            TierRole::Leader { epoch } => epoch,
        };
        if self.inner.tier_claimed.get() != Some(epoch) {
            self.load_manifest(&tier, epoch).await?;
            self.inner.tier_claimed.set(Some(epoch));
            *self.inner.tier.borrow_mut() = TierLink::Ready(tier.clone());
        } else if self
            .inner
            .tier_swept
            .get()
            .is_some_and(|at| at.elapsed() >= SWEEP_EVERY)
        {
            self.sweep(&tier, epoch).await?;
        }
        let mut progress = TierProgress::default();
        let mut uploads = Ok(());
        let copying = !self.inner.config.borrow().remote_copy_disabled;
        while let Some(base) = self.next_upload().filter(|_| copying) {
            // A deposed leader stops before it puts objects no manifest will name.
            if let Err(e) = self.check_not_fenced(&tier, epoch).await {
                uploads = Err(e);
                break;
            }
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

    /// The newest readable manifest in the tier (an empty one if there is none).
    async fn read_newest_manifest(&self, tier: &Tier, prefix: &str) -> Result<Manifest> {
        let keys = tier
            .list(manifests_dir(prefix))
            .await
            .map_err(|e| tier_error("list manifests", e))?;
        let mut ids: Vec<(ManifestId, String)> = keys
            .into_iter()
            .filter_map(|k| manifest_id(&k).map(|id| (id, k)))
            .collect();
        ids.sort_unstable_by_key(|(id, _)| std::cmp::Reverse(*id));
        for (id, key) in ids {
            match tier.get(key.clone()).await {
                Ok(bytes) => match Manifest::decode(&bytes) {
                    Ok(m) if m.id() == id => return Ok(m),
                    Ok(m) => {
                        tracing::warn!(partition = %self.inner.name, key, "manifest names {:?} under the key of {id:?}: skipped", m.id())
                    }
                    Err(e) => {
                        tracing::warn!(partition = %self.inner.name, key, "damaged manifest skipped: {e}")
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(tier_error("get manifest", e)),
            }
        }
        Ok(Manifest::default())
    }

    fn prefix_or_error(&self) -> Result<String> {
        let prefix = self.prefix();
        if prefix.is_empty() {
            return Err(EngineError::Tier(format!(
                "partition {} has no key in the cold tier",
                self.inner.name
            )));
        }
        Ok(prefix)
    }

    /// A leader in `epoch` takes the tier over: reads the newest readable manifest and
    /// removes every object it does not name (orphans of an interrupted upload or deletion,
    /// older versions, an earlier leader's last uploads). A manifest of a later epoch means
    /// another replica leads now: nothing is touched.
    async fn load_manifest(&self, tier: &Tier, epoch: i32) -> Result<()> {
        let prefix = self.prefix_or_error()?;
        let manifest = self.read_newest_manifest(tier, &prefix).await?;
        if manifest.epoch > epoch {
            return Err(fenced(manifest.epoch, epoch));
        }
        let orphans = self.sweep_against(tier, &prefix, &manifest, epoch).await?;
        tracing::info!(
            partition = %self.inner.name,
            tier = tier.describe(),
            version = manifest.version,
            manifest_epoch = manifest.epoch,
            leader_epoch = epoch,
            segments = manifest.segments.len(),
            bytes = manifest.size_bytes(),
            orphans_removed = orphans,
            "cold tier manifest loaded"
        );
        self.take_manifest(manifest).await
    }

    /// The leader's periodic sweep: objects of an earlier leader's last uploads (it may not
    /// have known it was deposed yet when this one took over) are removed.
    async fn sweep(&self, tier: &Tier, epoch: i32) -> Result<()> {
        let prefix = self.prefix_or_error()?;
        let manifest = self.inner.state.borrow().remote.clone();
        let orphans = self.sweep_against(tier, &prefix, &manifest, epoch).await?;
        if orphans > 0 {
            tracing::info!(partition = %self.inner.name, orphans_removed = orphans, "removed objects no manifest names from the cold tier");
        }
        Ok(())
    }

    /// Removes every object under the partition's prefix that `manifest` does not name
    /// (manifests of a later epoch aside: their leader's). Returns how many went.
    async fn sweep_against(
        &self,
        tier: &Tier,
        prefix: &str,
        manifest: &Manifest,
        epoch: i32,
    ) -> Result<usize> {
        let keys = tier
            .list(format!("{prefix}/"))
            .await
            .map_err(|e| tier_error("list", e))?;
        let current = manifest_key(prefix, manifest.id());
        let mut orphans = 0;
        for key in &keys {
            let named =
                *key == current || segment_of_key(key).is_some_and(|(b, n)| manifest.names(b, n));
            if named || manifest_id(key).is_some_and(|id| id.epoch > epoch) {
                continue;
            }
            match tier.delete(key.clone()).await {
                Ok(()) => orphans += 1,
                Err(e) => {
                    tracing::warn!(partition = %self.inner.name, key, "cannot remove an orphaned object (the next sweep tries again): {e}")
                }
            }
        }
        self.inner.tier_swept.set(Some(std::time::Instant::now()));
        Ok(orphans)
    }

    /// Makes `manifest` the partition's view of the tier, and its local copy.
    async fn take_manifest(&self, manifest: Manifest) -> Result<()> {
        let copy = manifest.encode();
        let start = {
            let mut st = self.inner.state.borrow_mut();
            st.remote = manifest;
            log_start(&st)
        };
        self.inner
            .cache
            .borrow_mut()
            .evict_below(self.inner.cache_key, start);
        self.save_manifest_copy(&copy).await
    }

    /// A follower's pass: the newest manifest (the leader's), then local segments the tier
    /// covers deleted under local retention, and those past retention.
    async fn follow_tier(&self, tier: &Tier, now_ms: i64) -> Result<TierProgress> {
        self.inner.tier_claimed.set(None);
        let prefix = self.prefix_or_error()?;
        let manifest = self.read_newest_manifest(tier, &prefix).await?;
        let changed = manifest != self.inner.state.borrow().remote;
        if changed {
            let live: Vec<u64> = manifest.segments.keys().copied().collect();
            self.inner
                .remote_indexes
                .borrow_mut()
                .retain(|(b, _)| live.contains(b));
            self.take_manifest(manifest).await?;
        }
        *self.inner.tier.borrow_mut() = TierLink::Ready(tier.clone());
        let mut progress = TierProgress::default();
        while let Some(base) = self.follower_cut(now_ms) {
            self.delete_segment(base).await?;
            progress.deleted_local += 1;
        }
        Ok(progress)
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
                    && s.next_offset > remote_end
                    && s.next_offset > s.base_offset
                    && s.next_offset <= st.high_watermark
            })
            .map(|s| s.base_offset)
    }

    /// Uploads one closed segment, then writes the manifest version that names it (and
    /// removes the objects of the remote segments it contains).
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
        let mut seg = RemoteSegment {
            base_offset: base,
            next_offset: next,
            size_bytes: size,
            first_timestamp_ms: first.first_timestamp_ms,
            max_timestamp_ms: max_ts,
            leader_epoch: first.leader_epoch,
            checksum: 0,
        };
        let [log_key, index_key, time_key] = segment_keys(&prefix, &seg);
        seg.checksum = tier
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
        let replaced = manifest.add(seg);
        crate::failpoint::hit("tier-before-manifest");
        self.write_manifest(tier, manifest).await?;
        crate::failpoint::hit("tier-after-manifest");
        for old in &replaced {
            self.remove_objects(tier, old).await;
        }
        tracing::info!(partition = %self.inner.name, base, next, size, "segment uploaded to the cold tier");
        Ok(())
    }

    /// Writes `next` as the next manifest version, under this leader's epoch, and makes it
    /// the partition's; the version before is removed afterwards. Refused if this replica no
    /// longer leads, or a manifest of a later epoch is in the tier (its leader writes now).
    async fn write_manifest(&self, tier: &Tier, mut next: Manifest) -> Result<()> {
        let prefix = self.prefix();
        let TierRole::Leader { epoch } = self.tier_role() else {
            return Err(EngineError::Tier(
                "this replica no longer leads the partition: the manifest is not written".into(),
            ));
        };
        let newest = self.check_not_fenced(tier, epoch).await?;
        let old = self.inner.state.borrow().remote.id();
        next.version = old.version.max(newest.map_or(0, |n| n.version)) + 1;
        next.epoch = epoch;
        let bytes = next.encode();
        tier.put(manifest_key(&prefix, next.id()), bytes.clone().into())
            .await
            .map_err(|e| tier_error("write manifest", e))?;
        self.save_manifest_copy(&bytes).await?;
        self.inner.state.borrow_mut().remote = next;
        if old.version > 0 {
            if let Err(e) = tier.delete(manifest_key(&prefix, old)).await {
                tracing::warn!(partition = %self.inner.name, "cannot remove manifest {old:?} (the next load does): {e}");
            }
        }
        Ok(())
    }

    /// The newest manifest in the tier, refused if a later leader epoch wrote it.
    async fn check_not_fenced(&self, tier: &Tier, epoch: i32) -> Result<Option<ManifestId>> {
        let listed = tier
            .list(manifests_dir(&self.prefix()))
            .await
            .map_err(|e| tier_error("list manifests", e))?;
        let newest = listed.iter().filter_map(|k| manifest_id(k)).max();
        if let Some(newest) = newest.filter(|n| n.epoch > epoch) {
            self.inner.tier_claimed.set(None);
            return Err(fenced(newest.epoch, epoch));
        }
        Ok(newest)
    }

    /// Removes a remote segment's objects (a manifest no longer names them); what fails is
    /// an orphan the next load removes.
    async fn remove_objects(&self, tier: &Tier, seg: &RemoteSegment) {
        for key in segment_keys(&self.prefix(), seg) {
            if let Err(e) = tier.delete(key.clone()).await {
                tracing::warn!(partition = %self.inner.name, key, "cannot remove a dropped remote object (the next load does): {e}");
            }
        }
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
        self.remove_objects(tier, &seg).await;
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
                    // The remote segments within the local one go first.
                    loop {
                        let inside = {
                            let st = self.inner.state.borrow();
                            let end = st.segments.get(&base).map_or(base, |s| s.next_offset);
                            st.remote
                                .segments
                                .values()
                                .next()
                                .filter(|r| r.next_offset <= end)
                                .map(|r| r.base_offset)
                        };
                        let Some(remote) = inside else { break };
                        self.drop_remote(tier, remote).await?;
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
        let remote_only = st.remote.bytes_below(local_start);
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
        if st.remote.covers(o.base_offset, o.next_offset) {
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

    /// A follower's next local deletion: the oldest local segment if it is past retention
    /// (the leader drops it from the tier), or past local retention and covered by the
    /// tier. The tier itself is the leader's.
    fn follower_cut(&self, now_ms: i64) -> Option<u64> {
        let cfg = self.inner.config.borrow();
        let st = self.inner.state.borrow();
        if st.truncating || st.segments.len() < 2 {
            return None;
        }
        let o = st.segments.values().next()?;
        let local_start = o.base_offset;
        let local_bytes: u64 = st.segments.values().map(|s| s.size_bytes).sum();
        let remote_only = st.remote.bytes_below(local_start);
        let past = |bytes_limit: i64, ms_limit: i64, total: u64| {
            (bytes_limit >= 0 && total.saturating_sub(o.size_bytes) >= bytes_limit as u64)
                || (ms_limit >= 0
                    && o.max_timestamp_ms >= 0
                    && o.max_timestamp_ms < now_ms.saturating_sub(ms_limit))
        };
        if o.next_offset <= st.remote.log_start
            || past(
                cfg.retention_bytes,
                cfg.retention_ms,
                local_bytes + remote_only,
            )
        {
            return Some(o.base_offset);
        }
        if !past(
            cfg.local_retention_bytes,
            cfg.local_retention_ms,
            local_bytes,
        ) {
            return None;
        }
        if st.remote.covers(o.base_offset, o.next_offset) {
            return Some(o.base_offset);
        }
        crate::warn_limited!(
            "local retention waits for the leader's uploads",
            partition = %self.inner.name,
            "the local copy is past local retention but the cold tier does not hold offsets {} to {} yet (the leader uploads them): they stay until it does",
            o.base_offset,
            o.next_offset
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
            let [log_key, _, _] = segment_keys(&self.prefix(), &seg);
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
            let [log_key, _, time_key] = segment_keys(&self.prefix(), &seg);
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
        let [_, index_key, _] = segment_keys(&self.prefix(), seg);
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
