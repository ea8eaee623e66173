//! A remote segment's log object as a read-only [`StorageFile`]: the local read path (frame
//! validation, checksums, batches as `Bytes` slices) reads it unchanged, each `read_at` one
//! ranged get of the tier.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::client::Tier;
use crate::io::{IoBuffer, IoFuture, StorageFile};

pub struct RemoteFile {
    tier: Tier,
    key: String,
    size: u64,
    /// `tier-key`, for messages (a corrupt frame names it).
    path: PathBuf,
}

impl RemoteFile {
    pub fn new(tier: Tier, key: String, size: u64) -> Self {
        let path = PathBuf::from(format!("{}/{key}", tier.describe()));
        Self {
            tier,
            key,
            size,
            path,
        }
    }
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "a remote segment is read only",
    )
}

impl StorageFile for RemoteFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn alloc_buffer(&self, len: usize) -> IoBuffer {
        IoBuffer::heap(len)
    }

    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Bytes> {
        Box::pin(async move {
            let end = pos.saturating_add(len as u64).min(self.size);
            if pos >= end {
                return Ok(Bytes::new());
            }
            self.tier.get_range(self.key.clone(), pos..end).await
        })
    }

    fn write_at(&self, _buf: IoBuffer, _pos: u64) -> IoFuture<'_, usize> {
        Box::pin(async { Err(read_only()) })
    }

    fn fdatasync(&self) -> IoFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn sync_filesystem(&self) -> IoFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn allocate(&self, _size: u64) -> IoFuture<'_, ()> {
        Box::pin(async { Err(read_only()) })
    }

    fn truncate(&self, _size: u64) -> IoFuture<'_, ()> {
        Box::pin(async { Err(read_only()) })
    }

    fn size(&self) -> IoFuture<'_, u64> {
        let size = self.size;
        Box::pin(async move { Ok(size) })
    }
}
