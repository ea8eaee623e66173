//! The data directory lock: one broker per data directory. An exclusive flock on
//! `DATA/.lock`, held for the life of the process (the kernel drops it if the process dies),
//! with the owner's pid written in it for the error message. The pid is written in place,
//! padded to a fixed width, so that the file keeps its one block and a start on a full disk
//! needs no space for it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

pub const LOCK_FILE: &str = ".lock";
/// The pid, padded with spaces: the file's size never changes once written.
const PID_WIDTH: usize = 20;

pub struct DataDirLock {
    _file: File,
}

pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, String> {
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open lock file {}: {e}", path.display()))?;
    // SAFETY: flock on a valid descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let mut owner = String::new();
        let _ = file.read_to_string(&mut owner);
        let owner = owner.trim();
        let who = if owner.is_empty() {
            String::new()
        } else {
            format!(" (pid {owner})")
        };
        return Err(format!(
            "data directory {} is in use by another running spate broker{who}; stop it, or start this one with a different --data-dir",
            dir.display()
        ));
    }
    let pid = format!("{:<width$}\n", std::process::id(), width = PID_WIDTH - 1);
    let written = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(pid.as_bytes()))
        .and_then(|()| file.set_len(PID_WIDTH as u64))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        // The lock holds without it; only the message to a second broker lacks the pid.
        tracing::warn!("cannot write the pid into {}: {e}", path.display());
    }
    Ok(DataDirLock { _file: file })
}
