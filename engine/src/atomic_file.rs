//! Small files replaced atomically: topic metadata and recovery checkpoints.
//!
//! Layout: magic "SPAF", format version (u32), payload length (u32), CRC32 of the payload,
//! then the payload. A file is written under a temporary name, fsynced, renamed over the old
//! one, and the directory fsynced: a reader sees the old file or the new one, never a mix.
//! A file that fails any check is reported as corrupt, never half-used.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::io::{align_up, OpenMode, Storage};

const MAGIC: &[u8; 4] = b"SPAF";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 16;
/// Largest payload accepted when reading, so a corrupt length cannot drive an allocation.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AtomicFileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

impl AtomicFileError {
    /// Whether the write failed for lack of space (ENOSPC).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, AtomicFileError::Io { source, .. } if crate::space::is_enospc(source))
    }
}

pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks a whole file image and returns its payload.
pub fn decode<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a [u8], AtomicFileError> {
    let corrupt = |reason: &str| AtomicFileError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() < HEADER_LEN {
        return Err(corrupt("shorter than its header"));
    }
    if &bytes[..4] != MAGIC {
        return Err(corrupt("not a Spate file (bad magic)"));
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if word(4) != VERSION {
        return Err(corrupt(&format!("unsupported format version {}", word(4))));
    }
    let len = word(8) as usize;
    if len > MAX_PAYLOAD_BYTES || bytes.len() < HEADER_LEN + len {
        return Err(corrupt("truncated"));
    }
    let payload = &bytes[HEADER_LEN..HEADER_LEN + len];
    if crc32fast::hash(payload) != word(12) {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(payload)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// [`write_sync`], and on a full disk once more after releasing `space`'s reserve.
pub fn write_sync_reserved(
    path: &Path,
    payload: &[u8],
    space: Option<&crate::space::DiskSpace>,
) -> Result<(), AtomicFileError> {
    match (write_sync(path, payload), space) {
        (Err(e), Some(space)) if e.is_disk_full() => {
            space.release_reserve(&format!("writing {}", path.display()));
            write_sync(path, payload)
        }
        (r, _) => r,
    }
}

/// Writes `payload` to `path` atomically with blocking std I/O (used off the data path).
pub fn write_sync(path: &Path, payload: &[u8]) -> Result<(), AtomicFileError> {
    let tmp = tmp_path(path);
    let r = write_sync_via(&tmp, path, payload);
    if r.is_err() {
        // Whatever the temporary file holds is given back (on a full disk, its blocks).
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

fn write_sync_via(tmp: &Path, path: &Path, payload: &[u8]) -> Result<(), AtomicFileError> {
    let io = |source| AtomicFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::create(tmp).map_err(io)?;
    f.write_all(&encode(payload)).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(tmp, path).map_err(io)?;
    std::fs::File::open(parent(path))
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

/// Reads the payload of `path`; `Ok(None)` if it does not exist.
pub fn read_sync(path: &Path) -> Result<Option<Vec<u8>>, AtomicFileError> {
    match std::fs::read(path) {
        Ok(bytes) => decode(&bytes, path).map(|p| Some(p.to_vec())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AtomicFileError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// [`write`], and on a full disk once more after releasing `space`'s reserve.
pub async fn write_reserved(
    storage: &dyn Storage,
    path: &Path,
    payload: &[u8],
    space: Option<&crate::space::DiskSpace>,
) -> Result<(), AtomicFileError> {
    match (write(storage, path, payload).await, space) {
        (Err(e), Some(space)) if e.is_disk_full() => {
            space.release_reserve(&format!("writing {}", path.display()));
            write(storage, path, payload).await
        }
        (r, _) => r,
    }
}

/// Writes `payload` to `path` atomically through the engine's storage (O_DIRECT).
pub async fn write(
    storage: &dyn Storage,
    path: &Path,
    payload: &[u8],
) -> Result<(), AtomicFileError> {
    let tmp = tmp_path(path);
    let r = write_via(storage, &tmp, path, payload).await;
    if r.is_err() {
        // Whatever the temporary file holds is given back (on a full disk, its blocks).
        let _ = storage.remove(&tmp).await;
    }
    r
}

async fn write_via(
    storage: &dyn Storage,
    tmp: &Path,
    path: &Path,
    payload: &[u8],
) -> Result<(), AtomicFileError> {
    let io = |source| AtomicFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let image = encode(payload);
    let file = storage.open(tmp, OpenMode::Create).await.map_err(io)?;
    file.truncate(0).await.map_err(io)?;
    let mut buf = file.alloc_buffer(align_up(image.len() as u64) as usize);
    buf.as_bytes_mut()[..image.len()].copy_from_slice(&image);
    file.write_at(buf, 0).await.map_err(io)?;
    file.truncate(image.len() as u64).await.map_err(io)?;
    file.fdatasync().await.map_err(io)?;
    drop(file);
    storage.rename(tmp, path).await.map_err(io)?;
    storage.sync_dir(parent(path)).await.map_err(io)?;
    Ok(())
}

/// Reads the payload of `path` through the engine's storage; `Ok(None)` if it does not exist.
pub async fn read(storage: &dyn Storage, path: &Path) -> Result<Option<Vec<u8>>, AtomicFileError> {
    let io = |source| AtomicFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match storage.open(path, OpenMode::Read).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let size = file.size().await.map_err(io)? as usize;
    if size > MAX_PAYLOAD_BYTES + HEADER_LEN {
        return Err(AtomicFileError::Corrupt {
            path: path.to_path_buf(),
            reason: "too large".into(),
        });
    }
    let bytes = file.read_at(0, size).await.map_err(io)?;
    decode(&bytes, path).map(|p| Some(p.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        assert!(read_sync(&path).unwrap().is_none());
        write_sync(&path, b"hello").unwrap();
        assert_eq!(read_sync(&path).unwrap().unwrap(), b"hello");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_sync(&path),
            Err(AtomicFileError::Corrupt { .. })
        ));
        std::fs::write(&path, &bytes[..10]).unwrap();
        assert!(matches!(
            read_sync(&path),
            Err(AtomicFileError::Corrupt { .. })
        ));
        std::fs::write(&path, b"something else entirely").unwrap();
        assert!(matches!(
            read_sync(&path),
            Err(AtomicFileError::Corrupt { .. })
        ));
    }
}
