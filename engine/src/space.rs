//! Free space on the data disk: the `storage.min_free_bytes` floor below which appends are
//! refused, the reserve file that the small writes which free space (metadata, checkpoints,
//! the log start of DeleteRecords, index tails at close) fall back on when the disk is full,
//! and the preallocation step, which shrinks as free space runs out.
//!
//! One [`DiskSpace`] per broker, shared by every shard (`Send + Sync`, atomics and one
//! mutex taken only to release or restore the reserve). Free space is sampled with statvfs at
//! most once per [`CHECK_INTERVAL`] by whichever shard asks first, never once per append, and
//! the appends admitted since are subtracted from it; below the floor a refusal samples again,
//! at most once per 10 ms for the broker, however fast refused producers retry. Writes resume
//! by themselves within an interval of space coming back.
//!
//! Why a reserve file rather than writing those files in place: the atomic replacement
//! (temporary file, fsync, rename) of `atomic_file` stays as it is, with its format, and one
//! mechanism covers every small write of the engine, including the index entries a clean close
//! appends. The reserve is released (truncated, its blocks freed) by the first write that hits
//! ENOSPC, which then retries once; it is taken back once the disk has room again.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{MinFreeBytes, MIB};
use crate::error::EngineError;
use crate::io::BLOCK_SIZE;

/// The reserve file, in the data directory.
pub const RESERVE_FILE: &str = ".space-reserve";
/// Size of the reserve: room for the metadata file, a checkpoint and an index tail of every
/// partition of a shard several times over.
pub const RESERVE_BYTES: u64 = 16 * MIB;
/// Free space is sampled (statvfs) at most this often...
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// ...and, once the estimate (the last sample less what was admitted since) is below the
/// floor, at most this often: a refusal looks again, so the estimate cannot refuse for long
/// what the disk has room for (writes into preallocated space take none).
const CHECK_INTERVAL_WHEN_LOW: Duration = Duration::from_millis(10);
/// A segment's preallocation step is at most this fraction of the space above the floor, so
/// that a few partitions growing at once cannot take it all.
const PREALLOCATE_SHARE: u64 = 16;

pub use crate::io::is_enospc;

/// Size and free space of the filesystem holding `path` (statvfs; free as `df` counts it,
/// without the blocks reserved for root).
pub fn statvfs(path: &Path) -> io::Result<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: `c` is a valid C string; `st` is a plain struct the call fills.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        st
    };
    let unit = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * unit, st.f_bavail as u64 * unit))
}

/// The preallocation step with `free_bytes` free above a floor of `min_free_bytes`.
fn preallocate_step(free_bytes: u64, min_free_bytes: u64, configured: u64) -> u64 {
    let headroom = free_bytes.saturating_sub(min_free_bytes);
    let step = configured.min(headroom / PREALLOCATE_SHARE);
    step - step % BLOCK_SIZE
}

struct Reserve {
    file: Option<File>,
    held: bool,
}

/// Free space of the data disk, shared by all shards. See the module.
pub struct DiskSpace {
    dir: PathBuf,
    min_free_bytes: u64,
    disk_bytes: u64,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last sample, plus one (0: never sampled).
    sampled_at_ms: AtomicU64,
    free_bytes: AtomicU64,
    /// Bytes of appends admitted since the last sample: between two samples a fast disk can
    /// take far more than the floor, and the estimate must not wait for the next statvfs.
    admitted_bytes: AtomicU64,
    reserve: Mutex<Reserve>,
}

impl DiskSpace {
    /// Samples the disk of `dir`, resolves the floor and takes the reserve (if there is room
    /// for it; a full disk at start leaves it out, with a warning, until room comes back).
    pub fn open(dir: &Path, min_free: MinFreeBytes) -> io::Result<DiskSpace> {
        let (disk_bytes, free) = statvfs(dir)?;
        let space = DiskSpace {
            dir: dir.to_path_buf(),
            min_free_bytes: min_free.resolve(disk_bytes),
            disk_bytes,
            epoch: Instant::now(),
            sampled_at_ms: AtomicU64::new(0),
            free_bytes: AtomicU64::new(free),
            admitted_bytes: AtomicU64::new(0),
            reserve: Mutex::new(Reserve {
                file: None,
                held: false,
            }),
        };
        let path = dir.join(RESERVE_FILE);
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .and_then(|f| f.metadata().map(|m| (f, m.blocks() * 512 >= RESERVE_BYTES)));
        match opened {
            Ok((file, held)) => {
                if let Ok(mut r) = space.reserve.lock() {
                    r.file = Some(file);
                    r.held = held;
                }
                if !held && !space.take_reserve() {
                    tracing::warn!(
                        path = %path.display(),
                        free_bytes = free,
                        "no room for the {RESERVE_BYTES}-byte space reserve; it is taken once the disk has room"
                    );
                }
            }
            // Not a reason to refuse to start (a disk without a free inode, say): the broker
            // runs without a reserve, as before there was one.
            Err(e) => tracing::warn!(
                path = %path.display(),
                "cannot open the space reserve, running without one: {e}"
            ),
        }
        space.sample();
        Ok(space)
    }

    /// The floor below which appends are refused.
    pub fn min_free_bytes(&self) -> u64 {
        self.min_free_bytes
    }

    /// Size of the data disk.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Whether the reserve is held (not released).
    pub fn reserve_held(&self) -> bool {
        self.reserve.lock().map(|r| r.held).unwrap_or(false)
    }

    /// Free bytes, estimated: the last sample (taken again if older than [`CHECK_INTERVAL`])
    /// less the appends admitted since.
    pub fn free_bytes(&self) -> u64 {
        self.estimate(CHECK_INTERVAL)
    }

    fn estimate(&self, max_age: Duration) -> u64 {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let at = self.sampled_at_ms.load(Ordering::Acquire);
        if (at == 0 || now.saturating_sub(at) >= max_age.as_millis() as u64)
            && self
                .sampled_at_ms
                .compare_exchange(at, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.sample();
        }
        self.free_bytes
            .load(Ordering::Acquire)
            .saturating_sub(self.admitted_bytes.load(Ordering::Relaxed))
    }

    /// Ok if an append of `bytes` may go ahead (and counts them); else the refusal, naming the
    /// disk, what is free and the floor (a `DiskFull` error: retriable, nothing was written).
    pub fn admit_append(&self, bytes: u64) -> Result<(), EngineError> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let mut free = self.free_bytes();
        if free < self.min_free_bytes {
            free = self.estimate(CHECK_INTERVAL_WHEN_LOW);
        }
        if free >= self.min_free_bytes {
            self.admitted_bytes.fetch_add(bytes, Ordering::Relaxed);
            return Ok(());
        }
        Err(EngineError::DiskFull {
            path: self.dir.clone(),
            detail: format!(
                "{free} bytes free, below storage.min_free_bytes = {}; writes are refused \
                 until space is freed (delete topics or records, lower retention) and resume \
                 by themselves",
                self.min_free_bytes
            ),
        })
    }

    /// How far a segment may preallocate at once: `configured`, or less when the space above
    /// the floor is short (a share of it, in whole blocks; 0 below the floor).
    pub fn preallocate_step(&self, configured: u64) -> u64 {
        preallocate_step(self.free_bytes(), self.min_free_bytes, configured)
    }

    /// Frees the reserve for a write that hit ENOSPC (`why` names it, for the log); the caller
    /// retries once. Returns whether the reserve was held until now.
    pub fn release_reserve(&self, why: &str) -> bool {
        let released = match self.reserve.lock() {
            Ok(mut r) if r.held => {
                let freed = r.file.as_ref().map(|f| f.set_len(0));
                match freed {
                    Some(Ok(())) => {
                        r.held = false;
                        true
                    }
                    Some(Err(e)) => {
                        tracing::error!("cannot release the space reserve: {e}");
                        false
                    }
                    None => false,
                }
            }
            _ => false,
        };
        if released {
            tracing::warn!(
                dir = %self.dir.display(),
                "disk full: released the {RESERVE_BYTES}-byte space reserve for {why}; it is taken back once the disk has room"
            );
            // The next look at free space samples again.
            self.sampled_at_ms.store(0, Ordering::Release);
        }
        released
    }

    fn sample(&self) {
        match statvfs(&self.dir) {
            Ok((_, free)) => {
                // What was admitted before this sample is in it (written, or about to be: a
                // little is counted twice at worst, never left out for long).
                self.admitted_bytes.store(0, Ordering::Relaxed);
                self.free_bytes.store(free, Ordering::Release);
                // Taken back only with room to spare, so that it does not flap.
                if free >= self.min_free_bytes.saturating_add(2 * RESERVE_BYTES)
                    && !self.reserve_held()
                    && self.take_reserve()
                {
                    self.free_bytes
                        .store(free.saturating_sub(RESERVE_BYTES), Ordering::Release);
                    tracing::info!(dir = %self.dir.display(), "space reserve taken back");
                }
            }
            Err(e) => crate::warn_limited!(
                "statvfs failed",
                dir = %self.dir.display(),
                "cannot read the free space of the data disk: {e}"
            ),
        }
    }

    /// Allocates the reserve's blocks. Returns whether it is held.
    fn take_reserve(&self) -> bool {
        let Ok(mut r) = self.reserve.lock() else {
            return false;
        };
        if r.held {
            return true;
        }
        let Some(file) = r.file.as_ref() else {
            return false;
        };
        // SAFETY: fallocate on a descriptor we own.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, RESERVE_BYTES as libc::off_t) };
        if rc == 0 {
            r.held = true;
        } else {
            // A partial allocation is given back: the reserve is all or nothing.
            let _ = file.set_len(0);
        }
        r.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GIB;

    #[test]
    fn reserve_is_taken_released_and_taken_back() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::open(dir.path(), MinFreeBytes::Bytes(0)).unwrap();
        assert!(space.reserve_held());
        let path = dir.path().join(RESERVE_FILE);
        assert!(std::fs::metadata(&path).unwrap().blocks() * 512 >= RESERVE_BYTES);
        assert!(space.release_reserve("a test"));
        assert!(!space.reserve_held());
        assert_eq!(std::fs::metadata(&path).unwrap().blocks(), 0);
        // Released only once; the next sample (forced by the release) takes it back, as this
        // disk has room.
        assert!(!space.release_reserve("a test"));
        space.free_bytes();
        assert!(space.reserve_held());
        // A second broker start finds it held.
        drop(space);
        let again = DiskSpace::open(dir.path(), MinFreeBytes::Bytes(0)).unwrap();
        assert!(again.reserve_held());
    }

    #[test]
    fn the_floor_refuses_and_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::open(dir.path(), MinFreeBytes::Bytes(u64::MAX)).unwrap();
        let err = space.admit_append(1).unwrap_err();
        assert!(err.is_disk_full());
        let msg = err.to_string();
        assert!(
            msg.contains("storage.min_free_bytes") && msg.contains("resume"),
            "{msg}"
        );
        assert_eq!(space.preallocate_step(32 * MIB), 0);
        let open = DiskSpace::open(dir.path(), MinFreeBytes::Bytes(0)).unwrap();
        assert!(open.admit_append(1).is_ok());
        // What is admitted counts against the free space until the next sample.
        let floor = open.free_bytes() / 2;
        let near = DiskSpace::open(dir.path(), MinFreeBytes::Bytes(floor)).unwrap();
        near.admit_append(0).unwrap();
        near.admitted_bytes
            .fetch_add(u64::MAX / 2, Ordering::Relaxed);
        assert!(near.free_bytes() < floor);
        // A refusal looks at the disk again (after CHECK_INTERVAL_WHEN_LOW) rather than trust
        // the estimate: the disk still has its room.
        std::thread::sleep(CHECK_INTERVAL_WHEN_LOW * 2);
        near.admit_append(1).unwrap();
    }

    #[test]
    fn preallocation_shrinks_with_the_space_above_the_floor() {
        let configured = 32 * MIB;
        // Plenty of room: the configured step.
        assert_eq!(
            preallocate_step(100 * 1024 * MIB, GIB, configured),
            configured
        );
        // 40 MiB above the floor (what freeing a little gives): a new partition takes 2.5 MiB,
        // not 32, and sixteen of them still leave room.
        assert_eq!(
            preallocate_step(GIB + 40 * MIB, GIB, configured),
            40 * MIB / 16
        );
        // Whole blocks only, and nothing at or below the floor.
        assert_eq!(
            preallocate_step(GIB + 16 * BLOCK_SIZE + 100, GIB, configured),
            BLOCK_SIZE
        );
        assert_eq!(preallocate_step(GIB, GIB, configured), 0);
        assert_eq!(preallocate_step(MIB, GIB, configured), 0);
    }

    #[test]
    fn auto_is_the_smaller_of_a_gib_and_five_percent() {
        assert_eq!(MinFreeBytes::Auto.resolve(300 * MIB), 15 * MIB);
        assert_eq!(MinFreeBytes::Auto.resolve(1 << 40), 1 << 30);
        assert_eq!(MinFreeBytes::Bytes(7).resolve(1 << 40), 7);
    }
}
