//! The real storage: glommio `DmaFile`s (O_DIRECT, io_uring) for files, std for directories.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};
use glommio::GlommioError;

use super::{with_path, IoBuffer, IoFuture, OpenMode, Storage, StorageFile};

/// Storage on the local filesystem through O_DIRECT files.
#[derive(Debug, Default, Clone, Copy)]
pub struct DmaStorage;

struct DmaStorageFile {
    file: DmaFile,
    path: PathBuf,
}

/// glommio's error, converted so that the OS error code survives (ENOSPC must be recognised).
fn to_io<T>(err: GlommioError<T>, op: &str, path: &Path) -> io::Error {
    let err = match err {
        GlommioError::IoError(e) => e,
        GlommioError::EnhancedIoError { source, .. } => source,
        other => io::Error::from(other),
    };
    with_path(err, op, path)
}

impl Storage for DmaStorage {
    fn create_dir_all<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            // The directories that do not exist yet, outermost first.
            let mut missing = Vec::new();
            let mut at = Some(dir);
            while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
                missing.push(d);
                at = d.parent();
            }
            std::fs::create_dir_all(dir).map_err(|e| with_path(e, "create dir", dir))?;
            for d in missing.into_iter().rev() {
                if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                    self.sync_dir(parent).await?;
                }
            }
            Ok(())
        })
    }

    fn list_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, Vec<String>> {
        Box::pin(async move {
            let io = |e| with_path(e, "list dir", dir);
            let mut names = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(io)? {
                names.push(
                    entry
                        .map_err(io)?
                        .file_name()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            Ok(names)
        })
    }

    fn open<'a>(&'a self, path: &'a Path, mode: OpenMode) -> IoFuture<'a, Rc<dyn StorageFile>> {
        Box::pin(async move {
            let mut options = OpenOptions::new();
            match mode {
                OpenMode::Read => options.read(true),
                OpenMode::ReadWrite => options.read(true).write(true),
                OpenMode::Create => options.read(true).write(true).create(true),
            };
            let file = options
                .dma_open(path)
                .await
                .map_err(|e| to_io(e, "open", path))?;
            let file: Rc<dyn StorageFile> = Rc::new(DmaStorageFile {
                file,
                path: path.to_path_buf(),
            });
            Ok(file)
        })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            let p = path.to_path_buf();
            let held = off_reactor(move || -> io::Result<Option<std::fs::File>> {
                let held = hold(&p);
                std::fs::remove_file(&p)?;
                Ok(held)
            })
            .await
            .map_err(|e| with_path(e, "remove", path))?;
            close_later(held);
            Ok(())
        })
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            let (f, t) = (from.to_path_buf(), to.to_path_buf());
            // A rename over a file unlinks that one (a cleaned segment replacing the old).
            let held = off_reactor(move || -> io::Result<Option<std::fs::File>> {
                let held = hold(&t);
                std::fs::rename(f, t)?;
                Ok(held)
            })
            .await
            .map_err(|e| with_path(e, "rename", from))?;
            close_later(held);
            Ok(())
        })
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            let d = std::fs::File::open(dir).map_err(|e| with_path(e, "open dir", dir))?;
            off_reactor(move || d.sync_all())
                .await
                .map_err(|e| with_path(e, "fsync dir", dir))
        })
    }
}

/// A file just unlinked (removed, or renamed over), held open: its blocks are freed (and, on
/// a filesystem mounted `discard`, trimmed: about 9 ms per 64 MiB, the thread waiting) at its
/// last close. The shard's own descriptors (a segment's, closed when the log lets go of it)
/// close on the reactor; this one, closed a while later on the helper thread, is meant to be
/// the last. Without it a cleaning pass that let go of 32 segments of 64 MiB stalled the shard
/// for 320 ms (docs/BENCHMARKS.md).
fn close_later(held: Option<std::fs::File>) {
    if let Some(file) = held {
        glommio::spawn_local(async move {
            glommio::timer::sleep(LAST_CLOSE_DELAY).await;
            off_reactor(move || drop(file)).await;
        })
        .detach();
    }
}

/// The file at `path` open, if it is one large enough for its last close to matter.
fn hold(path: &Path) -> Option<std::fs::File> {
    std::fs::File::open(path).ok().filter(|f| {
        f.metadata()
            .is_ok_and(|m| m.is_file() && m.len() >= HOLD_MIN_BYTES)
    })
}

/// Files smaller than this are let go at once (their close frees little).
const HOLD_MIN_BYTES: u64 = 1 << 20;

/// How long a removed file is held open before its (meant to be last) close: longer than a
/// read in flight holds the shard's descriptor.
const LAST_CLOSE_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a filesystem call that io_uring cannot make for us (glommio has no unlink, rename or
/// directory fsync) on the shard's helper thread, so that the reactor goes on meanwhile: on
/// ext4 mounted with `discard` an unlink of a 64 MiB segment blocks about 9 ms while its
/// blocks are trimmed, and a directory fsync waits for a journal commit. Run on the shard
/// thread, every produce and fetch of the shard waited for them.
async fn off_reactor<R: Send + 'static>(call: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(call).await
}

impl StorageFile for DmaStorageFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn alloc_buffer(&self, len: usize) -> IoBuffer {
        IoBuffer::dma(
            self.file
                .alloc_dma_buffer(super::align_up(len as u64) as usize),
        )
    }

    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Bytes> {
        Box::pin(async move {
            let result = self
                .file
                .read_at(pos, len)
                .await
                .map_err(|e| to_io(e, "read", &self.path))?;
            // The one copy of the read path: out of the DMA buffer into shareable memory.
            crate::copies::add(|c| c.read_bytes += result.len() as u64);
            Ok(Bytes::copy_from_slice(&result))
        })
    }

    fn write_at(&self, buf: IoBuffer, pos: u64) -> IoFuture<'_, usize> {
        Box::pin(async move {
            let len = buf.len();
            let buf = match buf.into_dma() {
                Ok(b) => b,
                // A buffer of another storage: copied into an aligned one.
                Err(bytes) => {
                    let mut b = self
                        .file
                        .alloc_dma_buffer(super::align_up(len as u64) as usize);
                    b.as_bytes_mut()[..len].copy_from_slice(&bytes);
                    b.trim_to_size(len);
                    b
                }
            };
            let written = self
                .file
                .write_at(buf, pos)
                .await
                .map_err(|e| to_io(e, "write", &self.path))?;
            if written != len {
                return Err(with_path(
                    io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write: {written} of {len} bytes"),
                    ),
                    "write",
                    &self.path,
                ));
            }
            Ok(written)
        })
    }

    fn fdatasync(&self) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.file
                .fdatasync()
                .await
                .map_err(|e| to_io(e, "fdatasync", &self.path))
        })
    }

    fn sync_filesystem(&self) -> IoFuture<'_, ()> {
        Box::pin(async move {
            // io_uring has no syncfs: it blocks on glommio's helper thread. The helper gets its
            // own descriptor, so the file may be closed while it runs.
            // SAFETY: the descriptor is open for as long as `self.file` is, and is only borrowed
            // to duplicate it.
            let fd = unsafe { BorrowedFd::borrow_raw(self.file.as_raw_fd()) }
                .try_clone_to_owned()
                .map_err(|e| with_path(e, "dup", &self.path))?;
            glommio::executor()
                .spawn_blocking(move || {
                    // SAFETY: `fd` is an open descriptor owned by this closure.
                    if unsafe { libc::syncfs(fd.as_raw_fd()) } == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                })
                .await
                .map_err(|e| with_path(e, "syncfs", &self.path))
        })
    }

    fn allocate(&self, size: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.file
                .pre_allocate(size, false)
                .await
                .map_err(|e| to_io(e, "fallocate", &self.path))
        })
    }

    fn truncate(&self, size: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.file
                .truncate(size)
                .await
                .map_err(|e| to_io(e, "truncate", &self.path))
        })
    }

    fn size(&self) -> IoFuture<'_, u64> {
        Box::pin(async move {
            self.file
                .file_size()
                .await
                .map_err(|e| to_io(e, "stat", &self.path))
        })
    }
}
