//! The interface of a cold tier.

use std::io;
use std::ops::Range;
use std::path::Path;

use bytes::Bytes;

/// A cold tier: a flat namespace of immutable objects named by `/`-separated keys. Calls
/// block (they run on the tier's own threads, never on a shard). A missing object is
/// `io::ErrorKind::NotFound`.
pub trait ColdStore: Send + Sync + 'static {
    /// Stores `data` under `key`, replacing any object there; durable once it returns.
    fn put(&self, key: &str, data: &[u8]) -> io::Result<()>;
    /// Stores the first `len` bytes of the local file `path` under `key`; returns their
    /// CRC32 (IEEE), computed while they were copied.
    fn put_file(&self, key: &str, path: &Path, len: u64) -> io::Result<u32>;
    /// The bytes of `key` in `range`, which lies within the object (the filesystem store
    /// answers fewer past its end; an object store may refuse such a range).
    fn get_range(&self, key: &str, range: Range<u64>) -> io::Result<Bytes>;
    /// The whole object.
    fn get(&self, key: &str) -> io::Result<Bytes>;
    /// Every key that starts with `prefix`, in no particular order.
    fn list(&self, prefix: &str) -> io::Result<Vec<String>>;
    /// Removes `key`; a missing object is not an error.
    fn delete(&self, key: &str) -> io::Result<()>;
    /// What this tier is, for messages (`fs:/mnt/cold`, `s3://bucket/prefix`).
    fn describe(&self) -> String;
}

/// Whether a failed call is worth retrying: a missing object or a refused argument will
/// fail the same way again.
pub fn retriable(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData
    )
}

/// Refuses a key that could leave the tier's namespace (an absolute path, `..`, empty parts).
pub fn check_key(key: &str) -> io::Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        || key.contains('\0');
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid cold-tier key {key:?}"),
        ));
    }
    Ok(())
}
