//! Storage I/O: the one narrow interface through which the engine touches files.
//!
//! Everything the log does to disk goes through [`Storage`] and [`StorageFile`]: directory
//! creation and listing, open, read_at, write_at, fdatasync (or syncfs), allocate, truncate,
//! remove (plus rename and directory sync for atomic replacement), with buffers of the
//! storage's own type ([`IoBuffer`]). [`dma::DmaStorage`] is the real implementation on
//! glommio's O_DIRECT files; [`fault::FaultyStorage`] wraps any storage and injects EIO,
//! ENOSPC, torn writes and crashes; [`mem::MemStorage`] keeps files in memory and, at a
//! simulated crash, keeps only what a completed sync covered (data, and directory entries), so
//! the layers above are tested against the failures disks really have.
//!
//! This module and `dma.rs` are the only places in the engine that name glommio's file types.

pub mod dma;
pub mod fault;
pub mod mem;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;

/// Alignment (and granularity) of every O_DIRECT write position and length.
pub const BLOCK_SIZE: u64 = 4096;

/// A buffer that a write hands to its storage: block aligned for O_DIRECT on the real disk,
/// plain memory for the in-memory storage. Made by [`StorageFile::alloc_buffer`].
pub struct IoBuffer(BufferRepr);

enum BufferRepr {
    Dma(glommio::io::DmaBuffer),
    Heap(Vec<u8>),
}

impl IoBuffer {
    /// A buffer in ordinary memory (storages that do no direct I/O).
    pub fn heap(len: usize) -> Self {
        IoBuffer(BufferRepr::Heap(vec![0; len]))
    }

    pub(crate) fn dma(buf: glommio::io::DmaBuffer) -> Self {
        IoBuffer(BufferRepr::Dma(buf))
    }

    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            BufferRepr::Dma(b) => b.as_bytes(),
            BufferRepr::Heap(v) => v,
        }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            BufferRepr::Dma(b) => b.as_bytes_mut(),
            BufferRepr::Heap(v) => v,
        }
    }

    /// Keeps only the first `len` bytes (a torn write).
    pub fn trim_to_size(&mut self, len: usize) {
        match &mut self.0 {
            BufferRepr::Dma(b) => b.trim_to_size(len),
            BufferRepr::Heap(v) => v.truncate(len),
        }
    }

    /// The DMA buffer, if this is one (else the bytes, for the caller to copy).
    pub(crate) fn into_dma(self) -> std::result::Result<glommio::io::DmaBuffer, Vec<u8>> {
        match self.0 {
            BufferRepr::Dma(b) => Ok(b),
            BufferRepr::Heap(v) => Err(v),
        }
    }
}

/// A boxed future of an I/O result; storage is used from one shard, so nothing is `Send`.
pub type IoFuture<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + 'a>>;

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Existing file, read only.
    Read,
    /// Existing file, read and write.
    ReadWrite,
    /// Create (or open) for read and write.
    Create,
}

/// A filesystem as the engine sees it.
pub trait Storage {
    /// Creates `dir` and its missing parents, durably: each new directory's entry is synced
    /// in its parent before this returns.
    fn create_dir_all<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()>;
    /// The names of the entries of `dir` (files and directories), in no particular order.
    fn list_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, Vec<String>>;
    fn open<'a>(&'a self, path: &'a Path, mode: OpenMode) -> IoFuture<'a, Rc<dyn StorageFile>>;
    fn remove<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()>;
    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()>;
    /// Makes entries created, renamed or removed in `dir` durable.
    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()>;
}

/// An open file. Positions and lengths of writes must be multiples of [`BLOCK_SIZE`].
pub trait StorageFile {
    fn path(&self) -> &Path;
    /// An aligned buffer of `len` bytes rounded up to the block size; its contents are
    /// undefined (callers fill every byte they write).
    fn alloc_buffer(&self, len: usize) -> IoBuffer;
    /// Reads up to `len` bytes at `pos`; fewer only at the end of the file.
    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Bytes>;
    /// Writes the whole buffer at `pos`; returns the bytes written.
    fn write_at(&self, buf: IoBuffer, pos: u64) -> IoFuture<'_, usize>;
    fn fdatasync(&self) -> IoFuture<'_, ()>;
    /// Makes every write to any file of this file's filesystem durable, this file's included
    /// (Linux `syncfs`): one call covers all of a shard's partitions. See
    /// [`crate::log::sync_group`].
    fn sync_filesystem(&self) -> IoFuture<'_, ()>;
    /// Preallocates blocks up to `size` bytes; the file size becomes at least `size`.
    fn allocate(&self, size: u64) -> IoFuture<'_, ()>;
    fn truncate(&self, size: u64) -> IoFuture<'_, ()>;
    fn size(&self) -> IoFuture<'_, u64>;
}

/// Rounds `v` up to a multiple of [`BLOCK_SIZE`].
pub fn align_up(v: u64) -> u64 {
    v.div_ceil(BLOCK_SIZE) * BLOCK_SIZE
}

/// Rounds `v` down to a multiple of [`BLOCK_SIZE`].
pub fn align_down(v: u64) -> u64 {
    v - v % BLOCK_SIZE
}

/// An I/O error with the path it happened on, keeping the OS error code.
pub fn with_path(err: io::Error, op: &str, path: &Path) -> io::Error {
    io::Error::new(
        err.kind(),
        PathError {
            op: op.to_string(),
            path: path.to_path_buf(),
            source: err,
        },
    )
}

#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
struct PathError {
    op: String,
    path: PathBuf,
    source: io::Error,
}

/// The OS error code of `err`, looking through the path context added by [`with_path`].
pub fn raw_os_error(err: &io::Error) -> Option<i32> {
    if let Some(code) = err.raw_os_error() {
        return Some(code);
    }
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<PathError>())
        .and_then(|p| raw_os_error(&p.source))
}

/// Whether `err` is ENOSPC (or Rust's StorageFull), looking through the path context.
pub fn is_enospc(err: &io::Error) -> bool {
    raw_os_error(err) == Some(libc::ENOSPC) || err.kind() == io::ErrorKind::StorageFull
}
