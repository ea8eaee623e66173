//! Remote chunks cached on local disk (`tier.cache_bytes`): a consumer that reads the same cold
//! range again (another group replaying, a consumer restarted) reads it from the data disk
//! instead of the tier. An object is cached in blocks of [`BLOCK`] bytes at block-aligned
//! positions, one file each, whatever ranges the readers ask for; a read takes the blocks it
//! covers from the cache and the missing ones from the tier in one ranged get per run of
//! missing blocks, and keeps those. The least recently used blocks go once the cache holds
//! more than its capacity.
//!
//! Remote objects never change under a key (a segment's key names its offsets; a re-upload of
//! the same range after a crash writes the same bytes), so a cached block stays true until
//! this broker deletes the object ([`ChunkCache::forget`]). The cache is emptied at start:
//! its files are written without fsync (a crash can tear one), and what they hold is cheap to
//! fetch again. Every call runs on the tier's threads (its file I/O blocks), never on a shard.
//! A cache file that cannot be written (a full disk) is skipped: the read is served anyway.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

use super::store::ColdStore;

/// The unit of caching: a block-aligned piece of an object.
pub const BLOCK: u64 = 1 << 20;

type BlockId = (String, u64);

#[derive(Default)]
struct Index {
    /// Cached blocks: their length (the last block of an object may be short) and their
    /// place in `lru`.
    blocks: HashMap<BlockId, (u64, u64)>,
    /// Use order: tick -> block, oldest first.
    lru: BTreeMap<u64, BlockId>,
    bytes: u64,
    tick: u64,
}

pub struct ChunkCache {
    dir: PathBuf,
    capacity: u64,
    index: Mutex<Index>,
    next_temp: AtomicU64,
}

/// What a cached read did: the bytes, and how many of them came from the tier.
pub struct CachedRead {
    pub bytes: Bytes,
    pub fetched: u64,
}

impl ChunkCache {
    /// A cache of at most `capacity` bytes in `dir`, created if missing and emptied.
    pub fn open(dir: &Path, capacity: u64) -> io::Result<ChunkCache> {
        match fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::create_dir_all(dir)?;
        Ok(ChunkCache {
            dir: dir.to_path_buf(),
            capacity,
            index: Mutex::new(Index::default()),
            next_temp: AtomicU64::new(0),
        })
    }

    /// Bytes cached now.
    pub fn cached_bytes(&self) -> u64 {
        self.index.lock().map_or(0, |i| i.bytes)
    }

    fn file(&self, id: &BlockId) -> PathBuf {
        // Keys are checked (no `..`, no absolute path); flattened into one file name, `%`
        // and `/` escaped so that two keys never share a name.
        let flat = id.0.replace('%', "%25").replace('/', "%2F");
        self.dir.join(format!("{flat}.{}", id.1))
    }

    /// The cached block's bytes, if it is cached and its file reads back whole.
    fn lookup(&self, id: &BlockId) -> Option<Bytes> {
        let len = {
            let mut index = self.index.lock().ok()?;
            let (len, at) = *index.blocks.get(id)?;
            index.tick += 1;
            let tick = index.tick;
            index.lru.remove(&at);
            index.lru.insert(tick, id.clone());
            index.blocks.insert(id.clone(), (len, tick));
            len
        };
        // Evicted meanwhile, or damaged: a miss.
        match fs::read(self.file(id)) {
            Ok(data) if data.len() as u64 == len => Some(Bytes::from(data)),
            _ => {
                self.remove(id);
                None
            }
        }
    }

    fn remove(&self, id: &BlockId) {
        if let Ok(mut index) = self.index.lock() {
            if let Some((len, at)) = index.blocks.remove(id) {
                index.lru.remove(&at);
                index.bytes -= len;
            }
        }
        let _ = fs::remove_file(self.file(id));
    }

    /// Keeps a block fetched from the tier (skipped if it cannot be written), then evicts the
    /// least recently used blocks past the capacity.
    fn insert(&self, id: BlockId, data: &[u8]) {
        let len = data.len() as u64;
        if len > self.capacity {
            return;
        }
        let path = self.file(&id);
        // A temp name of this write alone: two threads may cache blocks of one object at once.
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let mut temp = path.clone().into_os_string();
        temp.push(format!(".tmp-{n}"));
        let temp = PathBuf::from(temp);
        if fs::write(&temp, data)
            .and_then(|()| fs::rename(&temp, &path))
            .is_err()
        {
            let _ = fs::remove_file(&temp);
            return;
        }
        let evict = {
            let Ok(mut index) = self.index.lock() else {
                return;
            };
            index.tick += 1;
            let tick = index.tick;
            if let Some((old, at)) = index.blocks.insert(id.clone(), (len, tick)) {
                index.lru.remove(&at);
                index.bytes -= old;
            }
            index.lru.insert(tick, id);
            index.bytes += len;
            let mut evict = Vec::new();
            while index.bytes > self.capacity {
                let Some((_, oldest)) = index.lru.pop_first() else {
                    break;
                };
                if let Some((l, _)) = index.blocks.remove(&oldest) {
                    index.bytes -= l;
                }
                evict.push(oldest);
            }
            evict
        };
        for id in evict {
            let _ = fs::remove_file(self.file(&id));
        }
    }

    /// Drops every cached block of `key` (the object is deleted from the tier).
    pub fn forget(&self, key: &str) {
        let ids: Vec<BlockId> = match self.index.lock() {
            Ok(index) => index
                .blocks
                .keys()
                .filter(|(k, _)| k == key)
                .cloned()
                .collect(),
            Err(_) => return,
        };
        for id in ids {
            self.remove(&id);
        }
    }

    /// Bytes `range` of object `key` (fewer at the object's end), from the cache where it
    /// has them and from `store` for the rest.
    pub fn get_range(
        &self,
        store: &dyn ColdStore,
        key: &str,
        range: Range<u64>,
    ) -> io::Result<CachedRead> {
        if range.start >= range.end {
            return Ok(CachedRead {
                bytes: Bytes::new(),
                fetched: 0,
            });
        }
        let first = range.start / BLOCK;
        let last = (range.end - 1) / BLOCK;
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        let mut fetched = 0u64;
        let mut block = first;
        while block <= last {
            let id = (key.to_string(), block);
            let data = match self.lookup(&id) {
                Some(data) => data,
                None => {
                    // This block and the missing ones after it, in one ranged get.
                    let mut end = block + 1;
                    while end <= last && !self.has(&(key.to_string(), end)) {
                        end += 1;
                    }
                    let got = store.get_range(key, block * BLOCK..end * BLOCK)?;
                    fetched += got.len() as u64;
                    for (i, piece) in got.chunks(BLOCK as usize).enumerate() {
                        self.insert((key.to_string(), block + i as u64), piece);
                    }
                    let whole = got.len() as u64 == (end - block) * BLOCK;
                    let start_in = range.start.saturating_sub(block * BLOCK) as usize;
                    let stop = ((range.end - block * BLOCK) as usize).min(got.len());
                    if start_in < stop {
                        out.extend_from_slice(&got[start_in..stop]);
                    }
                    if !whole {
                        break; // the object ends here
                    }
                    block = end;
                    continue;
                }
            };
            let start_in = range.start.saturating_sub(block * BLOCK) as usize;
            let stop = ((range.end - block * BLOCK) as usize).min(data.len());
            if start_in < stop {
                out.extend_from_slice(&data[start_in..stop]);
            }
            if (data.len() as u64) < BLOCK {
                break; // the object's last block
            }
            block += 1;
        }
        Ok(CachedRead {
            bytes: out.freeze(),
            fetched,
        })
    }

    fn has(&self, id: &BlockId) -> bool {
        self.index
            .lock()
            .is_ok_and(|index| index.blocks.contains_key(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::fs::FsStore;

    /// A store that counts the bytes it serves.
    struct Counting {
        inner: FsStore,
        served: AtomicU64,
    }

    impl ColdStore for Counting {
        fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
            self.inner.put(key, data)
        }
        fn put_file(&self, key: &str, path: &Path, len: u64) -> io::Result<u32> {
            self.inner.put_file(key, path, len)
        }
        fn get_range(&self, key: &str, range: Range<u64>) -> io::Result<Bytes> {
            let b = self.inner.get_range(key, range)?;
            self.served.fetch_add(b.len() as u64, Ordering::Relaxed);
            Ok(b)
        }
        fn get(&self, key: &str) -> io::Result<Bytes> {
            self.inner.get(key)
        }
        fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
            self.inner.list(prefix)
        }
        fn delete(&self, key: &str) -> io::Result<()> {
            self.inner.delete(key)
        }
        fn describe(&self) -> String {
            "counting".into()
        }
    }

    fn setup(capacity: u64) -> (tempfile::TempDir, Counting, ChunkCache, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Counting {
            inner: FsStore::open(&dir.path().join("tier")).unwrap(),
            served: AtomicU64::new(0),
        };
        let data: Vec<u8> = (0..(3 * BLOCK + 1000)).map(|i| (i % 253) as u8).collect();
        store.put("t/0/a.log", &data).unwrap();
        let cache = ChunkCache::open(&dir.path().join("cache"), capacity).unwrap();
        (dir, store, cache, data)
    }

    #[test]
    fn a_range_read_twice_comes_from_the_tier_once() {
        let (_dir, store, cache, data) = setup(64 * BLOCK);
        for range in [
            100..BLOCK + 5,
            0..10,
            BLOCK - 1..3 * BLOCK + 1000,
            3 * BLOCK + 999..9 * BLOCK,
        ] {
            let want = &data[range.start as usize..(range.end as usize).min(data.len())];
            let r = cache.get_range(&store, "t/0/a.log", range.clone()).unwrap();
            assert_eq!(&r.bytes[..], want, "{range:?}");
        }
        // Every block fetched once, whatever the ranges.
        assert_eq!(store.served.load(Ordering::Relaxed), data.len() as u64);
        assert_eq!(cache.cached_bytes(), data.len() as u64);
        let again = cache.get_range(&store, "t/0/a.log", 0..4 * BLOCK).unwrap();
        assert_eq!(&again.bytes[..], &data[..]);
        assert_eq!(again.fetched, 0);
        assert_eq!(store.served.load(Ordering::Relaxed), data.len() as u64);
        // A deleted object's blocks leave the cache.
        cache.forget("t/0/a.log");
        assert_eq!(cache.cached_bytes(), 0);
        let after = cache.get_range(&store, "t/0/a.log", 0..10).unwrap();
        assert_eq!(after.fetched, BLOCK);
    }

    #[test]
    fn threads_caching_blocks_of_one_object_at_once_keep_each_block_its_own_bytes() {
        let (_dir, store, cache, data) = setup(64 * BLOCK);
        let (store, cache, data) = (
            std::sync::Arc::new(store),
            std::sync::Arc::new(cache),
            std::sync::Arc::new(data),
        );
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let (store, cache, data) = (store.clone(), cache.clone(), data.clone());
                std::thread::spawn(move || {
                    for round in 0..4u64 {
                        let block = (t + round) % 4;
                        let range = block * BLOCK..block * BLOCK + 100;
                        let r = cache
                            .get_range(&*store, "t/0/a.log", range.clone())
                            .unwrap();
                        let end = (range.end as usize).min(data.len());
                        assert_eq!(&r.bytes[..], &data[range.start as usize..end]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for block in 0..4u64 {
            let r = cache
                .get_range(&*store, "t/0/a.log", block * BLOCK..(block + 1) * BLOCK)
                .unwrap();
            assert_eq!(r.fetched, 0, "block {block} cached");
            let end = (((block + 1) * BLOCK) as usize).min(data.len());
            assert_eq!(
                &r.bytes[..],
                &data[(block * BLOCK) as usize..end],
                "block {block}"
            );
        }
    }

    #[test]
    fn the_cache_stays_within_its_capacity_dropping_the_least_recently_used() {
        let (dir, store, cache, data) = setup(2 * BLOCK);
        cache.get_range(&store, "t/0/a.log", 0..10).unwrap(); // block 0
        cache
            .get_range(&store, "t/0/a.log", BLOCK..BLOCK + 10)
            .unwrap(); // block 1
        cache.get_range(&store, "t/0/a.log", 0..10).unwrap(); // block 0 used again
        cache
            .get_range(&store, "t/0/a.log", 2 * BLOCK..2 * BLOCK + 10)
            .unwrap(); // evicts 1
        assert_eq!(cache.cached_bytes(), 2 * BLOCK);
        let files = fs::read_dir(dir.path().join("cache")).unwrap().count();
        assert_eq!(files, 2);
        let served = store.served.load(Ordering::Relaxed);
        let r = cache.get_range(&store, "t/0/a.log", 5..15).unwrap();
        assert_eq!((r.fetched, &r.bytes[..]), (0, &data[5..15]));
        let r = cache
            .get_range(&store, "t/0/a.log", BLOCK..BLOCK + 10)
            .unwrap();
        assert_eq!(r.fetched, BLOCK, "block 1 was evicted");
        assert!(store.served.load(Ordering::Relaxed) > served);
        // A damaged cache file is a miss, never wrong bytes.
        for e in fs::read_dir(dir.path().join("cache")).unwrap() {
            fs::write(e.unwrap().path(), b"torn").unwrap();
        }
        let r = cache.get_range(&store, "t/0/a.log", 5..15).unwrap();
        assert_eq!((r.fetched, &r.bytes[..]), (BLOCK, &data[5..15]));
        // Emptied at the next start.
        let reopened = ChunkCache::open(&dir.path().join("cache"), 2 * BLOCK).unwrap();
        assert_eq!(reopened.cached_bytes(), 0);
        assert_eq!(fs::read_dir(dir.path().join("cache")).unwrap().count(), 0);
    }
}
