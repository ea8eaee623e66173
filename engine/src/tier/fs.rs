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

    /// Writes an object through a temp file: `fill` writes its bytes.
    fn write_object<T>(
        &self,
        key: &str,
        fill: impl FnOnce(&mut File) -> io::Result<T>,
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
            let out = fill(&mut f)?;
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

impl ColdStore for FsStore {
    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        self.write_object(key, |f| f.write_all(data))
    }

    fn put_file(&self, key: &str, path: &Path, len: u64) -> io::Result<u32> {
        let mut src = File::open(path)?.take(len);
        self.write_object(key, |f| {
            let mut crc = crc32fast::Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut copied = 0u64;
            loop {
                let n = src.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                crc.update(&buf[..n]);
                f.write_all(&buf[..n])?;
                copied += n as u64;
            }
            if copied != len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} holds {copied} bytes, {len} expected", path.display()),
                ));
            }
            Ok(crc.finalize())
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
