//! Tiered storage on real files: segments uploaded to a filesystem tier, deleted locally past
//! local retention, read back through the tier; restarts, a tier that fails at every step of
//! a pass (then the process "dies"), a tier that is down, retention of remote segments, and a
//! corrupted remote object.

mod common;

use std::collections::BTreeSet;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{batch, open, partition_dir, payload, read_all, run};
use spate_engine::tier::fs::FsStore;
use spate_engine::tier::manifest::{manifest_key, segment_keys};
use spate_engine::tier::{ColdStore, Tier, TierSettings};
use spate_engine::TierRole;
use spate_engine::{Durability, EngineError, LogConfig, PartitionLog};

const PREFIX: &str = "t-00/0";
const BATCH: usize = 1000;

fn config(local_retention_bytes: i64) -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        preallocate_bytes: 64 * 1024,
        index_interval_bytes: 4096,
        remote_storage: true,
        remote_key: PREFIX.into(),
        local_retention_bytes,
        ..LogConfig::default()
    }
}

/// A store that can be made to fail: every call after `fail_after` more calls, or all of
/// them while `down`.
struct Flaky {
    inner: FsStore,
    calls_left: AtomicUsize,
    down: AtomicBool,
}

impl Flaky {
    fn new(root: &Path) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner: FsStore::open(root).unwrap(),
            calls_left: AtomicUsize::new(usize::MAX),
            down: AtomicBool::new(false),
        })
    }

    fn check(&self) -> io::Result<()> {
        let left = self
            .calls_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if self.down.load(Ordering::SeqCst) || !left {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "tier down",
            ));
        }
        Ok(())
    }
}

impl ColdStore for Flaky {
    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.inner.put(key, data)
    }
    fn put_file(&self, key: &str, path: &Path, len: u64) -> io::Result<u32> {
        self.check()?;
        self.inner.put_file(key, path, len)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> io::Result<Bytes> {
        self.check()?;
        self.inner.get_range(key, range)
    }
    fn get(&self, key: &str) -> io::Result<Bytes> {
        self.check()?;
        self.inner.get(key)
    }
    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        self.check()?;
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> io::Result<()> {
        self.check()?;
        self.inner.delete(key)
    }
    fn describe(&self) -> String {
        "flaky".into()
    }
}

fn tier(store: Arc<Flaky>) -> Tier {
    Tier::start(
        store,
        TierSettings {
            threads: 2,
            timeout: Duration::from_secs(5),
            retries: 0,
        },
    )
    .unwrap()
}

/// The log writes the tier (a single broker's partition).
fn attach(log: &PartitionLog, tier: Tier) {
    log.attach_tier(tier);
    log.set_tier_role(TierRole::Leader { epoch: 0 });
}

async fn append_n(log: &PartitionLog, from: u64, n: u64) {
    for seq in from..from + n {
        log.append(vec![batch(seq, BATCH, seq as i64)], Durability::Durable)
            .await
            .unwrap();
    }
}

/// Every batch from offset 0, in order, with its payload: (seq of each batch).
async fn check_everything(log: &PartitionLog, n: u64) {
    let batches = read_all(log, 0).await;
    assert_eq!(batches.len() as u64, n, "batches read from offset 0");
    let mut expect_offset = 0;
    for (seq, b) in batches.iter().enumerate() {
        assert_eq!(b.base_offset, expect_offset, "batch {seq}");
        assert_eq!(
            &b.payload[..],
            &payload(seq as u64, BATCH)[..],
            "batch {seq}"
        );
        expect_offset = b.next_offset();
    }
}

fn local_bytes(root: &Path) -> u64 {
    std::fs::read_dir(partition_dir(root))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| {
            // Sealed segments are cut to their frames; the active one is preallocated.
            e.metadata().unwrap().len()
        })
        .sum()
}

/// The tier holds exactly the current manifest and the objects of its segments.
fn assert_no_orphans(store: &FsStore, log: &PartitionLog) {
    let m = log.remote_manifest().expect("manifest loaded");
    let mut want: BTreeSet<String> = BTreeSet::new();
    if m.version > 0 {
        want.insert(manifest_key(PREFIX, m.id()));
    }
    for seg in m.segments.values() {
        want.extend(segment_keys(PREFIX, seg));
    }
    let have: BTreeSet<String> = store
        .list(&format!("{PREFIX}/"))
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(have, want);
}

fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cold = tmp.path().join("cold");
    std::fs::create_dir_all(&data).unwrap();
    (tmp, data, cold)
}

#[test]
fn uploaded_segments_leave_the_local_disk_and_read_back_from_the_tier() {
    let (_tmp, data, cold) = dirs();
    let root = data.clone();
    run(&data, move || async move {
        let store = Flaky::new(&cold);
        let (log, _) = open(&root, config(128 * 1024)).await;
        let t = tier(store.clone());
        attach(&log, t.clone());
        append_n(&log, 0, 600).await;
        let progress = log.tier_pass(0).await.unwrap();
        assert!(progress.uploaded >= 8, "{progress:?}");
        // The traffic summary counts what went up (every remote segment's log object at
        // least) and what came back, once per period.
        let uploaded: u64 = log
            .remote_manifest()
            .unwrap()
            .segments
            .values()
            .map(|s| s.size_bytes)
            .sum();
        let up = t.take_traffic(Duration::ZERO).unwrap();
        assert!(up.uploaded_bytes >= uploaded, "{up:?}, {uploaded}");
        assert_eq!((up.read_bytes, up.failed_calls), (0, 0), "{up:?}");
        assert_eq!(t.take_traffic(Duration::from_secs(3600)), None);
        assert!(progress.deleted_local >= 6, "{progress:?}");
        let offsets = log.offsets();
        assert_eq!(offsets.log_start, 0);
        assert!(offsets.local_start > 0, "{offsets:?}");
        // At most local retention plus the active segment (preallocated) and one more.
        assert!(
            local_bytes(&root) <= 128 * 1024 + 2 * 64 * 1024,
            "{}",
            local_bytes(&root)
        );
        let m = log.remote_manifest().unwrap();
        assert_eq!(m.segments.values().next().unwrap().base_offset, 0);
        assert!(m.next_offset() >= offsets.local_start);
        check_everything(&log, 600).await;
        // Read back from the tier: at least the segments no longer on local disk.
        let local_start = log.offsets().local_start;
        let remote_only: u64 = log
            .remote_manifest()
            .unwrap()
            .segments
            .values()
            .filter(|s| s.next_offset <= local_start)
            .map(|s| s.size_bytes)
            .sum();
        let read = t.take_traffic(Duration::ZERO).unwrap();
        assert!(remote_only > 0);
        assert!(read.read_bytes >= remote_only, "{read:?}, {remote_only}");
        assert_no_orphans(&store.inner, &log);
        // By time: remote batches (5, 123) through the remote time index, local ones (599).
        let all = read_all(&log, 0).await;
        assert!(all[123].base_offset < log.offsets().local_start);
        for seq in [0usize, 5, 123, 599] {
            assert_eq!(
                log.offset_for_timestamp(seq as i64).await.unwrap(),
                Some((all[seq].base_offset, seq as i64)),
                "batch {seq}"
            );
        }
        // The same after a restart.
        log.close().await.unwrap();
        let (log, _) = open(&root, config(128 * 1024)).await;
        attach(&log, tier(store.clone()));
        // Before the tier is reached: the local copy of the manifest says where the log
        // starts, and a remote offset is a retriable error, never out of range.
        assert_eq!(log.offsets().log_start, 0);
        assert!(matches!(log.read(0, 4096).await, Err(EngineError::Tier(_))));
        log.tier_pass(0).await.unwrap();
        assert_eq!(log.offsets().log_start, 0);
        check_everything(&log, 600).await;
        append_n(&log, 600, 200).await;
        log.tier_pass(0).await.unwrap();
        check_everything(&log, 800).await;
        assert_no_orphans(&store.inner, &log);
        log.close().await.unwrap();
    });
}

#[test]
fn a_pass_cut_short_at_any_tier_call_loses_nothing_and_leaves_no_orphan() {
    let (_tmp, data, cold) = dirs();
    let root = data.clone();
    run(&data, move || async move {
        let store = Flaky::new(&cold);
        let mut appended = 0;
        let mut cut_short = 0;
        // Each round: append, then a pass whose tier fails after `calls` calls (0 to 6: each
        // step of an upload, its manifest and the old manifest's removal); the log is dropped
        // there (the process dies), reopened with a working tier, and checked.
        for round in 0..21usize {
            let calls = round % 7;
            let (log, _) = open(&root, config(96 * 1024)).await;
            attach(&log, tier(store.clone()));
            store.calls_left.store(usize::MAX, Ordering::SeqCst);
            log.tier_pass(0).await.unwrap();
            check_everything(&log, appended).await;
            assert_no_orphans(&store.inner, &log);
            append_n(&log, appended, 90).await;
            appended += 90;
            store.calls_left.store(calls, Ordering::SeqCst);
            if log.tier_pass(0).await.is_err() {
                cut_short += 1;
            }
            drop(log);
        }
        assert!(cut_short >= 15, "only {cut_short} passes were cut short");
        let (log, _) = open(&root, config(96 * 1024)).await;
        store.calls_left.store(usize::MAX, Ordering::SeqCst);
        attach(&log, tier(store.clone()));
        log.tier_pass(0).await.unwrap();
        check_everything(&log, appended).await;
        assert_no_orphans(&store.inner, &log);
        assert!(log.offsets().local_start > 0);
        log.close().await.unwrap();
    });
}

#[test]
fn a_tier_that_is_down_pauses_uploads_and_local_deletion_until_it_returns() {
    let (_tmp, data, cold) = dirs();
    let root = data.clone();
    run(&data, move || async move {
        let store = Flaky::new(&cold);
        store.down.store(true, Ordering::SeqCst);
        let (log, _) = open(&root, config(64 * 1024)).await;
        attach(&log, tier(store.clone()));
        append_n(&log, 0, 400).await;
        let segments = log.stats().segments;
        assert!(matches!(log.tier_pass(0).await, Err(EngineError::Tier(_))));
        // Appends go on; nothing local is deleted.
        append_n(&log, 400, 100).await;
        assert!(log.tier_pass(0).await.is_err());
        assert!(log.stats().segments > segments);
        assert_eq!(log.offsets().local_start, 0);
        assert!(log.remote_manifest().is_none());
        check_everything(&log, 500).await;
        store.down.store(false, Ordering::SeqCst);
        let p = log.tier_pass(0).await.unwrap();
        assert!(p.uploaded > 0 && p.deleted_local > 0, "{p:?}");
        assert!(log.offsets().local_start > 0);
        // Down again: reads from the tier fail with a tier error, local reads go on.
        store.down.store(true, Ordering::SeqCst);
        assert!(matches!(log.read(0, 4096).await, Err(EngineError::Tier(_))));
        let local = log.offsets().local_start;
        assert!(!log.read(local, 4096).await.unwrap().is_empty());
        store.down.store(false, Ordering::SeqCst);
        check_everything(&log, 500).await;
        // Down once more with the manifest loaded: new segments are not uploaded, and none of
        // them is deleted locally although local retention is exceeded.
        store.down.store(true, Ordering::SeqCst);
        append_n(&log, 500, 300).await;
        assert!(log.tier_pass(0).await.is_err());
        assert!(log.stats().size_bytes > 3 * 64 * 1024);
        let remote_end = log.remote_manifest().unwrap().next_offset();
        assert!(log.offsets().local_start <= remote_end);
        store.down.store(false, Ordering::SeqCst);
        check_everything(&log, 800).await;
        log.tier_pass(0).await.unwrap();
        check_everything(&log, 800).await;
        log.close().await.unwrap();
    });
}

#[test]
fn retention_and_delete_records_remove_remote_segments_and_move_the_log_start() {
    let (_tmp, data, cold) = dirs();
    let root = data.clone();
    run(&data, move || async move {
        let store = Flaky::new(&cold);
        let (log, _) = open(&root, config(64 * 1024)).await;
        attach(&log, tier(store.clone()));
        append_n(&log, 0, 600).await;
        log.tier_pass(0).await.unwrap();
        let before = log.remote_manifest().unwrap();
        assert!(before.segments.len() >= 8);
        // DeleteRecords past the first remote segments.
        let cut = before.segments.values().nth(2).unwrap().base_offset + 1;
        log.delete_records(cut).await.unwrap();
        let p = log.tier_pass(0).await.unwrap();
        assert_eq!(p.deleted_remote, 2, "{p:?}");
        assert_eq!(log.offsets().log_start, cut);
        assert!(matches!(
            log.read(0, 4096).await,
            Err(EngineError::OffsetOutOfRange { .. })
        ));
        assert!(log.read(cut, 1).await.unwrap()[0].base_offset <= cut);
        assert_no_orphans(&store.inner, &log);
        // Retention by size over the whole log: remote segments go first.
        let mut cfg = config(64 * 1024);
        cfg.retention_bytes = 256 * 1024;
        log.set_config(cfg);
        let p = log.tier_pass(0).await.unwrap();
        assert!(p.deleted_remote > 0, "{p:?}");
        let m = log.remote_manifest().unwrap();
        let remote: u64 = m.segments.values().map(|s| s.size_bytes).sum();
        let start = log.offsets().log_start;
        assert_eq!(
            start,
            m.segments
                .values()
                .next()
                .map_or(log.offsets().local_start, |s| s.base_offset)
        );
        assert!(remote + log.stats().size_bytes <= 256 * 1024 + 64 * 1024 + 64 * 1024);
        assert_no_orphans(&store.inner, &log);
        // After a restart the log still starts there.
        log.close().await.unwrap();
        let (log, _) = open(&root, config(64 * 1024)).await;
        attach(&log, tier(store.clone()));
        log.tier_pass(0).await.unwrap();
        assert_eq!(log.offsets().log_start, start);
        log.close().await.unwrap();
    });
}

#[test]
fn a_corrupted_remote_object_is_an_error_never_data() {
    let (_tmp, data, cold) = dirs();
    let root = data.clone();
    let cold2 = cold.clone();
    run(&data, move || async move {
        let store = Flaky::new(&cold);
        let (log, _) = open(&root, config(64 * 1024)).await;
        attach(&log, tier(store.clone()));
        append_n(&log, 0, 300).await;
        log.tier_pass(0).await.unwrap();
        assert!(log.offsets().local_start > 0);
        let first = *log
            .remote_manifest()
            .unwrap()
            .segments
            .values()
            .next()
            .unwrap();
        let [log_key, _, _] = segment_keys(PREFIX, &first);
        let path = cold2.join(&log_key);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[200] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        match log.read(0, 1 << 20).await {
            Err(EngineError::Corrupt { path, .. }) => {
                assert!(
                    path.to_string_lossy().contains(&log_key),
                    "{}",
                    path.display()
                )
            }
            other => panic!("expected a corrupt-data error, got {other:?}"),
        }
        log.close().await.unwrap();
    });
}

/// Two replicas of one partition share the tier, as on a cluster: the leader uploads, the
/// follower trims against the leader's manifest without writing to the tier; after a
/// failover the new leader (whose segments end elsewhere) uploads from where the tier ends,
/// the deposed one is fenced by the newer epoch's manifest, and both read everything.
#[test]
fn replicas_share_the_tier_and_a_deposed_leader_is_fenced() {
    let (_tmp, data, cold) = dirs();
    let root = data.clone();
    run(&data, move || async move {
        let store = Flaky::new(&cold);
        let (a_root, b_root) = (root.join("a"), root.join("b"));
        let (a, _) = open(&a_root, config(128 * 1024)).await;
        let b_config = LogConfig {
            segment_bytes: 40 * 1024,
            preallocate_bytes: 40 * 1024,
            ..config(128 * 1024)
        };
        let (b, _) = open(&b_root, b_config).await;
        a.attach_tier(tier(store.clone()));
        b.attach_tier(tier(store.clone()));
        a.set_tier_role(TierRole::Leader { epoch: 1 });
        b.set_tier_role(TierRole::Follower);
        append_n(&a, 0, 600).await;
        append_n(&b, 0, 600).await;
        let listed = |s: &Flaky| -> BTreeSet<String> {
            s.inner
                .list(&format!("{PREFIX}/"))
                .unwrap()
                .into_iter()
                .collect()
        };

        // A follower before the leader's first upload: nothing in the tier, nothing deleted.
        assert_eq!(b.tier_pass(0).await.unwrap().deleted_local, 0);
        assert!(listed(&store).is_empty(), "a follower wrote to the tier");
        let progress = a.tier_pass(0).await.unwrap();
        assert!(progress.uploaded >= 8, "{progress:?}");
        let before = listed(&store);
        let progress = b.tier_pass(0).await.unwrap();
        assert!(progress.deleted_local >= 6, "{progress:?}");
        assert_eq!(progress.uploaded + progress.deleted_remote, 0);
        assert_eq!(listed(&store), before, "a follower wrote to the tier");
        assert!(local_bytes(&b_root) <= 128 * 1024 + 2 * 40 * 1024);
        assert_eq!(b.offsets().log_start, 0);
        check_everything(&b, 600).await;

        // Failover: b leads in epoch 2; its segments start inside the tier's last one.
        b.set_tier_role(TierRole::Leader { epoch: 2 });
        append_n(&a, 600, 300).await;
        append_n(&b, 600, 300).await;
        let progress = b.tier_pass(0).await.unwrap();
        assert!(progress.uploaded >= 1, "{progress:?}");
        let m = b.remote_manifest().unwrap();
        assert_eq!(m.epoch, 2);
        assert!(m.next_offset() > a.remote_manifest().unwrap().next_offset());
        assert_no_orphans(&store.inner, &b);
        // The deposed leader still thinks it leads: the newer epoch stops it.
        let before = listed(&store);
        match a.tier_pass(0).await {
            Err(EngineError::Tier(e)) => assert!(e.contains("leader epoch 2"), "{e}"),
            other => panic!("a deposed leader's pass: {other:?}"),
        }
        assert_eq!(listed(&store), before, "a deposed leader wrote to the tier");
        // Once told, it follows, trims, and reads the new leader's uploads.
        a.set_tier_role(TierRole::Follower);
        a.tier_pass(0).await.unwrap();
        assert_eq!(a.remote_manifest().unwrap(), m);
        check_everything(&a, 900).await;
        check_everything(&b, 900).await;
        assert!(local_bytes(&b_root) <= 128 * 1024 + 2 * 40 * 1024);
        a.close().await.unwrap();
        b.close().await.unwrap();
    });
}
