//! Storage in memory, with a crash that keeps only what was made durable.
//!
//! [`MemStorage`] holds a tree of directories and files. Every file has its current bytes and
//! the bytes a completed sync covered; every directory has its current entries and the entries
//! a completed directory sync covered. [`MemStorage::crash`] then does what a power loss does:
//!
//! - a directory keeps only its synced entries: a file created (or renamed, or removed) and
//!   never followed by a sync of its directory (or a `syncfs`) is gone (or back);
//! - a file keeps its synced bytes; of the writes, truncations and preallocations issued
//!   after its last sync, [`CrashMode::DropUnsynced`] keeps none, and [`CrashMode::Torn`]
//!   keeps each write whole, not at all, or as a prefix of its blocks (a torn write), chosen
//!   by a seeded generator, and each size change or not;
//! - every file handle opened before the crash fails from then on (the process died).
//!
//! `fdatasync` covers one file's bytes (not its directory entry); `sync_dir` covers one
//! directory's entries; `syncfs` covers everything. Writes must be block aligned, as
//! O_DIRECT writes are. The tests that crash a log run against this storage, so an ack given
//! before the sync that covers it, or a file whose directory entry is never synced, loses
//! acknowledged data in a test as it would on a disk.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use super::{with_path, IoBuffer, IoFuture, OpenMode, Storage, StorageFile, BLOCK_SIZE};

/// What a crash keeps of the operations no sync covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing: the strictest disk.
    DropUnsynced,
    /// Each unsynced write whole, not at all, or a prefix of its blocks; each unsynced size
    /// change or not; chosen by a generator seeded with this value.
    Torn { seed: u64 },
}

/// Figures about what the storage was asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemStats {
    pub writes: u64,
    pub file_syncs: u64,
    pub dir_syncs: u64,
    pub fs_syncs: u64,
    pub crashes: u64,
}

/// An in-memory filesystem (see the module documentation). Cheap to clone: clones share it.
#[derive(Clone)]
pub struct MemStorage {
    fs: Rc<RefCell<Fs>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir,
}

#[derive(Default)]
struct DirNode {
    live: BTreeMap<String, Entry>,
    durable: BTreeMap<String, Entry>,
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Changes since the last sync of this file, in order.
    unsynced: Vec<Op>,
}

enum Op {
    Write { pos: u64, bytes: Vec<u8> },
    SetLen(u64),
}

struct Fs {
    dirs: BTreeMap<PathBuf, DirNode>,
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    /// Bumped by every crash: handles of an older generation fail.
    generation: u64,
    stats: MemStats,
}

fn error(kind: io::ErrorKind, what: &str, path: &Path) -> io::Error {
    with_path(io::Error::new(kind, what.to_string()), what, path)
}

fn not_found(path: &Path) -> io::Error {
    with_path(
        io::Error::from_raw_os_error(libc::ENOENT),
        "no such file or directory",
        path,
    )
}

/// The directory and name of `path`.
fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok((dir.to_path_buf(), name.to_string_lossy().into_owned())),
        _ => Err(error(io::ErrorKind::InvalidInput, "not a file path", path)),
    }
}

impl Default for MemStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStorage {
    /// An empty filesystem with a root directory `/`.
    pub fn new() -> Self {
        let mut dirs = BTreeMap::new();
        dirs.insert(PathBuf::from("/"), DirNode::default());
        MemStorage {
            fs: Rc::new(RefCell::new(Fs {
                dirs,
                inodes: HashMap::new(),
                next_ino: 1,
                generation: 0,
                stats: MemStats::default(),
            })),
        }
    }

    pub fn stats(&self) -> MemStats {
        self.fs.borrow().stats
    }

    /// The current bytes of the file at `path`, if it exists.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let fs = self.fs.borrow();
        let (dir, name) = split(path).ok()?;
        match fs.dirs.get(&dir)?.live.get(&name)? {
            Entry::File(ino) => fs.inodes.get(ino).map(|i| i.data.clone()),
            Entry::Dir => None,
        }
    }

    /// Simulates a power loss (see the module documentation). Handles opened before fail.
    pub fn crash(&self, mode: CrashMode) {
        let mut fs = self.fs.borrow_mut();
        let mut rng = match mode {
            CrashMode::DropUnsynced => None,
            CrashMode::Torn { seed } => Some(XorShift(seed | 1)),
        };
        // Directories: what their parents' synced entries reach from the root.
        let mut dirs: BTreeMap<PathBuf, DirNode> = BTreeMap::new();
        let mut reachable = Vec::new();
        let mut todo = vec![PathBuf::from("/")];
        while let Some(path) = todo.pop() {
            let durable = fs
                .dirs
                .get(&path)
                .map(|d| d.durable.clone())
                .unwrap_or_default();
            for (name, entry) in &durable {
                match entry {
                    Entry::Dir => todo.push(path.join(name)),
                    Entry::File(ino) => reachable.push(*ino),
                }
            }
            dirs.insert(
                path,
                DirNode {
                    live: durable.clone(),
                    durable,
                },
            );
        }
        // Files: their synced bytes, and what the mode keeps of the rest.
        let mut inodes = HashMap::new();
        for ino in reachable {
            let Some(old) = fs.inodes.remove(&ino) else {
                continue;
            };
            let mut data = old.durable;
            if let Some(rng) = rng.as_mut() {
                for op in old.unsynced {
                    match op {
                        Op::SetLen(len) => {
                            if rng.next() % 2 == 0 {
                                data.resize(len as usize, 0);
                            }
                        }
                        Op::Write { pos, bytes } => {
                            let blocks = bytes.len().div_ceil(BLOCK_SIZE as usize);
                            let keep = match rng.next() % 3 {
                                0 => 0,
                                1 => blocks,
                                _ => (rng.next() as usize) % (blocks + 1),
                            };
                            let keep = (keep * BLOCK_SIZE as usize).min(bytes.len());
                            write_into(&mut data, pos, &bytes[..keep]);
                        }
                    }
                }
            }
            inodes.insert(
                ino,
                Inode {
                    durable: data.clone(),
                    data,
                    unsynced: Vec::new(),
                },
            );
        }
        fs.dirs = dirs;
        fs.inodes = inodes;
        fs.generation += 1;
        fs.stats.crashes += 1;
    }
}

fn write_into(data: &mut Vec<u8>, pos: u64, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let pos = pos as usize;
    if data.len() < pos + bytes.len() {
        data.resize(pos + bytes.len(), 0);
    }
    data[pos..pos + bytes.len()].copy_from_slice(bytes);
}

/// A small deterministic generator (xorshift64): the crash a seed gives is the same each run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

impl Fs {
    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut DirNode> {
        self.dirs.get_mut(dir).ok_or_else(|| not_found(dir))
    }

    fn lookup(&self, path: &Path) -> io::Result<Option<Entry>> {
        let (dir, name) = split(path)?;
        let node = self.dirs.get(&dir).ok_or_else(|| not_found(&dir))?;
        Ok(node.live.get(&name).copied())
    }
}

impl Storage for MemStorage {
    fn create_dir_all<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            let mut fs = self.fs.borrow_mut();
            let mut chain: Vec<&Path> = dir.ancestors().collect();
            chain.reverse();
            for d in chain {
                if fs.dirs.contains_key(d) {
                    continue;
                }
                let (parent, name) = split(d)?;
                let node = fs.dir_mut(&parent)?;
                if let Some(Entry::File(_)) = node.live.get(&name) {
                    return Err(error(
                        io::ErrorKind::AlreadyExists,
                        "a file is in the way",
                        d,
                    ));
                }
                // Created durably: the new entry is synced in its parent at once.
                node.live.insert(name.clone(), Entry::Dir);
                node.durable.insert(name, Entry::Dir);
                fs.stats.dir_syncs += 1;
                fs.dirs.insert(d.to_path_buf(), DirNode::default());
            }
            Ok(())
        })
    }

    fn list_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, Vec<String>> {
        Box::pin(async move {
            let fs = self.fs.borrow();
            let node = fs.dirs.get(dir).ok_or_else(|| not_found(dir))?;
            Ok(node.live.keys().cloned().collect())
        })
    }

    fn open<'a>(&'a self, path: &'a Path, mode: OpenMode) -> IoFuture<'a, Rc<dyn StorageFile>> {
        Box::pin(async move {
            let mut fs = self.fs.borrow_mut();
            let ino = match fs.lookup(path)? {
                Some(Entry::File(ino)) => ino,
                Some(Entry::Dir) => {
                    return Err(error(io::ErrorKind::InvalidInput, "is a directory", path))
                }
                None if mode == OpenMode::Create => {
                    let ino = fs.next_ino;
                    fs.next_ino += 1;
                    fs.inodes.insert(ino, Inode::default());
                    let (dir, name) = split(path)?;
                    fs.dir_mut(&dir)?.live.insert(name, Entry::File(ino));
                    ino
                }
                None => return Err(not_found(path)),
            };
            let file: Rc<dyn StorageFile> = Rc::new(MemFile {
                fs: self.fs.clone(),
                ino,
                path: path.to_path_buf(),
                generation: fs.generation,
                writable: mode != OpenMode::Read,
            });
            Ok(file)
        })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            let mut fs = self.fs.borrow_mut();
            let (dir, name) = split(path)?;
            let node = fs.dir_mut(&dir)?;
            match node.live.get(&name) {
                Some(Entry::File(_)) => {
                    node.live.remove(&name);
                    Ok(())
                }
                Some(Entry::Dir) => Err(error(io::ErrorKind::InvalidInput, "is a directory", path)),
                None => Err(not_found(path)),
            }
        })
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            let mut fs = self.fs.borrow_mut();
            let (from_dir, from_name) = split(from)?;
            let (to_dir, to_name) = split(to)?;
            if !fs.dirs.contains_key(&to_dir) {
                return Err(not_found(&to_dir));
            }
            let entry = match fs.dir_mut(&from_dir)?.live.remove(&from_name) {
                Some(e @ Entry::File(_)) => e,
                Some(e) => {
                    fs.dir_mut(&from_dir)?.live.insert(from_name, e);
                    return Err(error(io::ErrorKind::InvalidInput, "is a directory", from));
                }
                None => return Err(not_found(from)),
            };
            fs.dir_mut(&to_dir)?.live.insert(to_name, entry);
            Ok(())
        })
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            let mut fs = self.fs.borrow_mut();
            let node = fs.dir_mut(dir)?;
            node.durable = node.live.clone();
            fs.stats.dir_syncs += 1;
            Ok(())
        })
    }
}

struct MemFile {
    fs: Rc<RefCell<Fs>>,
    ino: u64,
    path: PathBuf,
    generation: u64,
    writable: bool,
}

impl MemFile {
    /// Runs `f` on this file's inode, unless the storage crashed since it was opened.
    fn with_inode<T>(&self, f: impl FnOnce(&mut Fs, u64) -> io::Result<T>) -> io::Result<T> {
        let mut fs = self.fs.borrow_mut();
        if fs.generation != self.generation {
            return Err(with_path(
                io::Error::from_raw_os_error(libc::EIO),
                "file handle from before a crash",
                &self.path,
            ));
        }
        if !fs.inodes.contains_key(&self.ino) {
            return Err(not_found(&self.path));
        }
        f(&mut fs, self.ino)
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(with_path(
                io::Error::from_raw_os_error(libc::EBADF),
                "opened read only",
                &self.path,
            ))
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        self.with_inode(|fs, ino| {
            if let Some(inode) = fs.inodes.get_mut(&ino) {
                inode.data.resize(len as usize, 0);
                inode.unsynced.push(Op::SetLen(len));
            }
            Ok(())
        })
    }
}

impl StorageFile for MemFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn alloc_buffer(&self, len: usize) -> IoBuffer {
        IoBuffer::heap(super::align_up(len as u64) as usize)
    }

    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Bytes> {
        Box::pin(async move {
            self.with_inode(|fs, ino| {
                let data = fs.inodes.get(&ino).map_or(&[][..], |i| &i.data[..]);
                let start = (pos as usize).min(data.len());
                let end = start.saturating_add(len).min(data.len());
                Ok(Bytes::copy_from_slice(&data[start..end]))
            })
        })
    }

    fn write_at(&self, buf: IoBuffer, pos: u64) -> IoFuture<'_, usize> {
        Box::pin(async move {
            self.check_writable()?;
            if pos % BLOCK_SIZE != 0 || buf.len() as u64 % BLOCK_SIZE != 0 {
                return Err(with_path(
                    io::Error::from_raw_os_error(libc::EINVAL),
                    "unaligned direct write",
                    &self.path,
                ));
            }
            self.with_inode(|fs, ino| {
                fs.stats.writes += 1;
                if let Some(inode) = fs.inodes.get_mut(&ino) {
                    write_into(&mut inode.data, pos, buf.as_bytes());
                    inode.unsynced.push(Op::Write {
                        pos,
                        bytes: buf.as_bytes().to_vec(),
                    });
                }
                Ok(buf.len())
            })
        })
    }

    fn fdatasync(&self) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.with_inode(|fs, ino| {
                fs.stats.file_syncs += 1;
                if let Some(inode) = fs.inodes.get_mut(&ino) {
                    inode.durable = inode.data.clone();
                    inode.unsynced.clear();
                }
                Ok(())
            })
        })
    }

    fn sync_filesystem(&self) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.with_inode(|fs, _| {
                fs.stats.fs_syncs += 1;
                for inode in fs.inodes.values_mut() {
                    inode.durable = inode.data.clone();
                    inode.unsynced.clear();
                }
                for node in fs.dirs.values_mut() {
                    node.durable = node.live.clone();
                }
                Ok(())
            })
        })
    }

    fn allocate(&self, size: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            let current = self
                .with_inode(|fs, ino| Ok(fs.inodes.get(&ino).map_or(0, |i| i.data.len() as u64)))?;
            if size > current {
                self.set_len(size)?;
            }
            Ok(())
        })
    }

    fn truncate(&self, size: u64) -> IoFuture<'_, ()> {
        Box::pin(async move { self.set_len(size) })
    }

    fn size(&self) -> IoFuture<'_, u64> {
        Box::pin(async move {
            self.with_inode(|fs, ino| Ok(fs.inodes.get(&ino).map_or(0, |i| i.data.len() as u64)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        futures_lite::future::block_on(f)
    }

    async fn write_block(file: &Rc<dyn StorageFile>, pos: u64, byte: u8) {
        let mut buf = file.alloc_buffer(BLOCK_SIZE as usize);
        buf.as_bytes_mut().fill(byte);
        file.write_at(buf, pos).await.unwrap();
    }

    #[test]
    fn a_crash_keeps_synced_data_and_synced_entries_only() {
        run(async {
            let s = MemStorage::new();
            let dir = Path::new("/data/p");
            s.create_dir_all(dir).await.unwrap();
            let synced = dir.join("synced");
            let f = s.open(&synced, OpenMode::Create).await.unwrap();
            write_block(&f, 0, 1).await;
            f.fdatasync().await.unwrap();
            s.sync_dir(dir).await.unwrap();
            write_block(&f, BLOCK_SIZE, 2).await;
            // Data synced, entry never synced: the file is gone after a crash.
            let orphan = dir.join("orphan");
            let g = s.open(&orphan, OpenMode::Create).await.unwrap();
            write_block(&g, 0, 3).await;
            g.fdatasync().await.unwrap();

            s.crash(CrashMode::DropUnsynced);
            assert_eq!(s.file_bytes(&synced).unwrap(), vec![1; BLOCK_SIZE as usize]);
            assert!(s.file_bytes(&orphan).is_none());
            assert!(f.size().await.is_err(), "old handles fail after a crash");
            let names = s.list_dir(dir).await.unwrap();
            assert_eq!(names, vec!["synced".to_string()]);
        });
    }

    #[test]
    fn renames_and_removals_need_a_directory_sync() {
        run(async {
            let s = MemStorage::new();
            let dir = Path::new("/d");
            s.create_dir_all(dir).await.unwrap();
            let a = dir.join("a");
            let f = s.open(&a, OpenMode::Create).await.unwrap();
            write_block(&f, 0, 7).await;
            f.fdatasync().await.unwrap();
            s.sync_dir(dir).await.unwrap();
            s.rename(&a, &dir.join("b")).await.unwrap();
            s.crash(CrashMode::DropUnsynced);
            assert!(s.file_bytes(&a).is_some(), "an unsynced rename is undone");

            s.rename(&a, &dir.join("b")).await.unwrap();
            s.sync_dir(dir).await.unwrap();
            s.remove(&dir.join("b")).await.unwrap();
            s.crash(CrashMode::DropUnsynced);
            assert!(
                s.file_bytes(&dir.join("b")).is_some(),
                "an unsynced remove is undone"
            );
            assert!(s.file_bytes(&a).is_none());
        });
    }

    #[test]
    fn syncfs_covers_every_file_and_directory() {
        run(async {
            let s = MemStorage::new();
            s.create_dir_all(Path::new("/x")).await.unwrap();
            let f = s.open(Path::new("/x/f"), OpenMode::Create).await.unwrap();
            write_block(&f, 0, 9).await;
            f.sync_filesystem().await.unwrap();
            s.crash(CrashMode::DropUnsynced);
            assert_eq!(s.file_bytes(Path::new("/x/f")).unwrap()[0], 9);
        });
    }

    #[test]
    fn a_torn_crash_keeps_a_block_prefix_of_unsynced_writes() {
        run(async {
            let mut saw = std::collections::BTreeSet::new();
            for seed in 0..64 {
                let s = MemStorage::new();
                s.create_dir_all(Path::new("/t")).await.unwrap();
                let f = s.open(Path::new("/t/f"), OpenMode::Create).await.unwrap();
                f.sync_filesystem().await.unwrap();
                let mut buf = f.alloc_buffer(4 * BLOCK_SIZE as usize);
                buf.as_bytes_mut().fill(5);
                f.write_at(buf, 0).await.unwrap();
                s.crash(CrashMode::Torn { seed });
                let bytes = s.file_bytes(Path::new("/t/f")).unwrap();
                assert_eq!(bytes.len() as u64 % BLOCK_SIZE, 0);
                assert!(bytes.iter().all(|b| *b == 5));
                saw.insert(bytes.len() as u64 / BLOCK_SIZE);
            }
            assert!(
                saw.contains(&0) && saw.contains(&4) && saw.len() > 2,
                "{saw:?}"
            );
        });
    }

    #[test]
    fn unaligned_writes_are_refused() {
        run(async {
            let s = MemStorage::new();
            let f = s.open(Path::new("/f"), OpenMode::Create).await.unwrap();
            let mut buf = IoBuffer::heap(100);
            buf.as_bytes_mut().fill(1);
            assert!(f.write_at(buf, 0).await.is_err());
        });
    }
}
