//! Shard start-up helpers: the probe file that keeps glommio from misdetecting IOPOLL, and the
//! sizing of glommio's registered I/O memory to RLIMIT_MEMLOCK.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::io::{OpenMode, Storage, BLOCK_SIZE};

pub const PROBE_FILE: &str = ".shard-probe";
/// glommio registers `io_memory` in each of its three rings.
pub const RINGS_PER_SHARD: u64 = 3;
/// glommio's default io_memory, used when the limit allows it.
pub const IO_MEMORY_DEFAULT_BYTES: u64 = 10 * 1024 * 1024;
/// glommio never registers less than this.
pub const IO_MEMORY_MIN_BYTES: u64 = 64 * 1024;

/// Writes and fsyncs the non-empty probe file (before any shard starts).
pub fn write_probe_file(data_dir: &Path) -> std::io::Result<PathBuf> {
    let path = data_dir.join(PROBE_FILE);
    let content = vec![0x5a; BLOCK_SIZE as usize];
    // Left as it is when a start before wrote it, and otherwise written in place: a start on
    // a full disk must not need a block for it.
    if std::fs::read(&path).is_ok_and(|b| b == content) {
        return Ok(path);
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    f.write_all(&content)?;
    f.set_len(BLOCK_SIZE)?;
    f.sync_all()?;
    Ok(path)
}

/// Opens and reads the probe file through the shard's storage. glommio decides whether the
/// device supports IOPOLL on the executor's first DmaFile by reading its first block; an empty
/// file reads 0 bytes and glommio wrongly marks the device pollable (glommio issues 605, 670),
/// after which reads fail with EOPNOTSUPP. A non-empty first file avoids that.
pub async fn read_probe_file(storage: &dyn Storage, data_dir: &Path) -> std::io::Result<()> {
    let path = data_dir.join(PROBE_FILE);
    let file = storage.open(&path, OpenMode::Read).await?;
    let bytes = file.read_at(0, BLOCK_SIZE as usize).await?;
    if bytes.is_empty() {
        return Err(std::io::Error::other(format!(
            "probe file {} reads empty",
            path.display()
        )));
    }
    Ok(())
}

/// The soft RLIMIT_MEMLOCK in bytes (`None`: unlimited).
pub fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(lim.rlim_cur)
    }
}

/// How much io_memory each shard's rings get, and a warning if the limit is too low for
/// glommio's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoMemoryPlan {
    pub io_memory_bytes: u64,
    pub warning: Option<String>,
}

pub fn plan_io_memory(memlock_bytes: Option<u64>, shards: usize) -> IoMemoryPlan {
    let shards = shards.max(1) as u64;
    let wanted = IO_MEMORY_DEFAULT_BYTES * RINGS_PER_SHARD * shards;
    match memlock_bytes {
        None => IoMemoryPlan {
            io_memory_bytes: IO_MEMORY_DEFAULT_BYTES,
            warning: None,
        },
        Some(limit) if limit >= wanted => IoMemoryPlan {
            io_memory_bytes: IO_MEMORY_DEFAULT_BYTES,
            warning: None,
        },
        Some(limit) => {
            // Leave a quarter of the limit for everything else that locks memory.
            let share = (limit / 4 * 3) / (RINGS_PER_SHARD * shards);
            let share = share - share % 4096;
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            if share >= IO_MEMORY_MIN_BYTES {
                IoMemoryPlan {
                    io_memory_bytes: share,
                    warning: Some(format!(
                        "RLIMIT_MEMLOCK is {:.1} MiB, below the {:.0} MiB that {} shard(s) x 3 io_uring rings x 10 MiB want: using io_memory={:.2} MiB per ring; raise it (ulimit -l unlimited, or LimitMEMLOCK=infinity in the systemd unit; `spate tune` does it) for full speed",
                        mib(limit), mib(wanted), shards, mib(share)
                    )),
                }
            } else {
                IoMemoryPlan {
                    io_memory_bytes: IO_MEMORY_MIN_BYTES,
                    warning: Some(format!(
                        "RLIMIT_MEMLOCK is {:.2} MiB, too low to register io_uring buffers for {} shard(s): starting with unregistered buffers (slower); raise it (ulimit -l unlimited, or LimitMEMLOCK=infinity in the systemd unit; `spate tune` does it)",
                        mib(limit), shards
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_memory_fits_the_limit() {
        assert_eq!(
            plan_io_memory(None, 8).io_memory_bytes,
            IO_MEMORY_DEFAULT_BYTES
        );
        assert!(plan_io_memory(Some(1 << 40), 8).warning.is_none());
        let p = plan_io_memory(Some(8 << 20), 2);
        assert!(p.io_memory_bytes * 3 * 2 <= 8 << 20);
        assert!(p.io_memory_bytes >= IO_MEMORY_MIN_BYTES);
        assert!(p.warning.unwrap().contains("RLIMIT_MEMLOCK is 8.0 MiB"));
        let tiny = plan_io_memory(Some(64 << 10), 2);
        assert!(tiny.warning.unwrap().contains("unregistered"));
    }
}
