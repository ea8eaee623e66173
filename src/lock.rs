//! The data directory lock: one broker per data directory. An exclusive flock on
//! `DATA/.lock`, held for the life of the process (the kernel drops it if the process dies),
//! with the owner's pid written in it for the error message.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

pub const LOCK_FILE: &str = ".lock";

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
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    let _ = file.sync_all();
    Ok(DataDirLock { _file: file })
}
