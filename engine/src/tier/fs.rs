//! A cold tier in a directory, typically on another, slower disk: one file per object, written
//! so that a crash leaves either the old object or the new one (a temp file, fsync, rename,
//! fsync of the directory).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::store::{check_key, ColdStore};

/// Prefix of a file being written: listed (so that a sweep can remove one a crash left),
/// never read as an object.
pub const TEMP_PREFIX: &str = ".tmp-";

pub struct FsStore {
    root: PathBuf,
    next_temp: AtomicU64,
}

impl FsStore {
    /// A tier in `root`, created if missing. Fails if it cannot be created or written.
    pub fn open(root: &Path) -> io::Result<FsStore> {
        fs::create_dir_all(root)?;
        let probe = root.join(format!("{TEMP_PREFIX}probe"));
        fs::write(&probe, b"spate")?;
        fs::remove_file(&probe)?;
        Ok(FsStore {
            root: root.to_path_buf(),
            next_temp: AtomicU64::new(0),
        })
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Creates the directories of `path` below the root, each made durable in its parent.
    fn ensure_parent(&self, path: &Path) -> io::Result<PathBuf> {
        let parent = path
            .parent()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "key without a parent"))?
            .to_path_buf();
        if parent.is_dir() {
            return Ok(parent);
        }
        let rel = parent
            .strip_prefix(&self.root)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "key outside the tier"))?;
        let mut at = self.root.clone();
        for part in rel.components() {
            let next = at.join(part);
            match fs::create_dir(&next) {
                Ok(()) => sync_dir(&at)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            at = next;
        }
        Ok(parent)
    }

    /// Writes an object through a temp file: `fill` writes its bytes (given the file and its
    /// path, to open it again with other flags).
    fn write_object<T>(
        &self,
        key: &str,
        fill: impl FnOnce(&mut File, &Path) -> io::Result<T>,
    ) -> io::Result<T> {
        let path = self.path(key)?;
        let dir = self.ensure_parent(&path)?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "key without a name"))?;
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!("{TEMP_PREFIX}{}-{n}-{name}", std::process::id()));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&temp)?;
            let out = fill(&mut f, &temp)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&temp, &path)?;
            sync_dir(&dir)?;
            Ok(out)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// How much of a log object one read and one write of its copy move.
const COPY_CHUNK: usize = 1 << 20;
/// Alignment of O_DIRECT buffers, positions and lengths (the engine's block size).
const DIRECT_ALIGN: usize = crate::io::BLOCK_SIZE as usize;

/// Copies the first `len` bytes of `src` to the file at `dst` (empty, just created) with
/// O_DIRECT on both sides, returning their CRC32: the bytes go disk to buffer to disk, with no
/// copy into the page cache and out of it (which, buffered, was most of an upload's CPU).
/// `Ok(None)`: a file system without O_DIRECT (tmpfs), found before anything is written.
fn copy_direct(src: &Path, len: u64, dst: &Path) -> io::Result<Option<u32>> {
    use std::os::unix::fs::OpenOptionsExt;
    let direct = |o: &mut OpenOptions, path: &Path| match o.custom_flags(libc::O_DIRECT).open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    };
    let Some(from) = direct(OpenOptions::new().read(true), src)? else {
        return Ok(None);
    };
    let Some(to) = direct(OpenOptions::new().write(true), dst)? else {
        return Ok(None);
    };
    // An aligned window of a plain allocation: no unsafe code for an aligned buffer.
    let mut backing = vec![0u8; COPY_CHUNK + DIRECT_ALIGN];
    let at = backing.as_ptr().align_offset(DIRECT_ALIGN);
    let buf = &mut backing[at..at + COPY_CHUNK];
    let mut crc = crc32fast::Hasher::new();
    let mut copied = 0u64;
    while copied < len {
        let n = from.read_at(buf, copied)?;
        if n == 0 {
            break;
        }
        // The file may hold more than `len` (a segment is preallocated past its end).
        let take = n.min(usize::try_from(len - copied).unwrap_or(usize::MAX));
        crc.update(&buf[..take]);
        // The last piece is written padded to a block, and the file cut back to `len` below.
        let padded = take.next_multiple_of(DIRECT_ALIGN);
        buf[take..padded].fill(0);
        to.write_all_at(&buf[..padded], copied)?;
        copied += take as u64;
        if take % DIRECT_ALIGN != 0 {
            break;
        }
    }
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{} holds {copied} bytes, {len} expected", src.display()),
        ));
    }
    to.set_len(len)?;
    Ok(Some(crc.finalize()))
}

/// [`copy_direct`] through the page cache, for a file system without O_DIRECT.
fn copy_buffered(src: &Path, len: u64, dst: &mut File) -> io::Result<u32> {
    let mut from = File::open(src)?.take(len);
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut copied = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        copied += n as u64;
    }
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{} holds {copied} bytes, {len} expected", src.display()),
        ));
    }
    Ok(crc.finalize())
}

impl ColdStore for FsStore {
    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        self.write_object(key, |f, _| f.write_all(data))
    }

    fn put_file(&self, key: &str, path: &Path, len: u64) -> io::Result<u32> {
        self.write_object(key, |f, temp| match copy_direct(path, len, temp)? {
            Some(crc) => Ok(crc),
            None => copy_buffered(path, len, f),
        })
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> io::Result<Bytes> {
        let f = File::open(self.path(key)?)?;
        let size = f.metadata()?.len();
        let end = range.end.min(size);
        if range.start >= end {
            return Ok(Bytes::new());
        }
        let mut buf = vec![0u8; (end - range.start) as usize];
        f.read_exact_at(&mut buf, range.start)?;
        Ok(Bytes::from(buf))
    }

    fn get(&self, key: &str) -> io::Result<Bytes> {
        Ok(Bytes::from(fs::read(self.path(key)?)?))
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        // The directory the prefix names (up to its last `/`), walked below.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path(dir_part)?
        };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let Some(key) = rel.to_str() else { continue };
                if key.starts_with(prefix) {
                    out.push(key.to_string());
                }
            }
        }
        Ok(out)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => path.parent().map_or(Ok(()), sync_dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn describe(&self) -> String {
        format!("fs:{}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_put_read_by_range_listed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        store.put("t-1/0/manifest.1", b"hello world").unwrap();
        assert_eq!(&store.get("t-1/0/manifest.1").unwrap()[..], b"hello world");
        assert_eq!(
            &store.get_range("t-1/0/manifest.1", 6..100).unwrap()[..],
            b"world"
        );
        assert!(store
            .get_range("t-1/0/manifest.1", 50..60)
            .unwrap()
            .is_empty());
        let local = dir.path().join("local.log");
        fs::write(&local, b"0123456789").unwrap();
        let crc = store.put_file("t-1/0/1.log", &local, 4).unwrap();
        assert_eq!(crc, crc32fast::hash(b"0123"));
        assert_eq!(&store.get("t-1/0/1.log").unwrap()[..], b"0123");
        assert!(store.put_file("t-1/0/2.log", &local, 40).is_err());
        let mut keys = store.list("t-1/0/").unwrap();
        keys.sort();
        assert_eq!(keys, ["t-1/0/1.log", "t-1/0/manifest.1"]);
        assert_eq!(store.list("t-1/0/man").unwrap(), ["t-1/0/manifest.1"]);
        assert!(store.list("t-2/").unwrap().is_empty());
        store.delete("t-1/0/1.log").unwrap();
        store.delete("t-1/0/1.log").unwrap();
        assert_eq!(
            store.get("t-1/0/1.log").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    /// A segment-like file: `len` bytes of a pattern, preallocated (zeros) past them.
    fn segment_file(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let path = dir.join("segment.log");
        fs::write(&path, &data).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len as u64 + 3 * DIRECT_ALIGN as u64)
            .unwrap();
        (path, data)
    }

    #[test]
    fn a_log_object_is_copied_exactly_whatever_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(&dir.path().join("tier")).unwrap();
        for len in [
            0,
            1,
            4096,
            4097,
            COPY_CHUNK,
            COPY_CHUNK + 4096,
            3 * COPY_CHUNK + 123,
        ] {
            let (path, data) = segment_file(dir.path(), len);
            let key = format!("t/0/{len}.log");
            let crc = store.put_file(&key, &path, len as u64).unwrap();
            assert_eq!(crc, crc32fast::hash(&data), "{len}");
            assert_eq!(store.get(&key).unwrap(), data, "{len}");
            assert!(store
                .put_file("t/0/x.log", &path, len as u64 + (1 << 22))
                .is_err());
        }
        // The direct path is the one taken here (a file system with O_DIRECT).
        let (path, _) = segment_file(dir.path(), 10);
        let out = dir.path().join("out");
        File::create(&out).unwrap();
        assert!(copy_direct(&path, 10, &out).unwrap().is_some());
    }

    #[test]
    fn the_page_cache_copy_for_a_file_system_without_o_direct_gives_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let len = 2 * COPY_CHUNK + 5;
        let (path, data) = segment_file(dir.path(), len);
        let out = dir.path().join("out");
        let mut f = File::create(&out).unwrap();
        assert_eq!(
            copy_buffered(&path, len as u64, &mut f).unwrap(),
            crc32fast::hash(&data)
        );
        assert_eq!(fs::read(&out).unwrap(), data);
        let mut f = File::create(&out).unwrap();
        assert!(copy_buffered(&path, len as u64 + (1 << 22), &mut f).is_err());
    }

    #[test]
    fn keys_that_leave_the_tier_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        for key in ["", "/etc/passwd", "a/../../x", "a//b", "./a"] {
            assert_eq!(
                store.put(key, b"x").unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{key}"
            );
        }
    }
}
