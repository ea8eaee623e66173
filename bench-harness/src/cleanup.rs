//! What an embedded broker leaves behind: its process and its temporary data directory (the
//! set's runs write gigabytes). A run stopped by SIGINT or SIGTERM stops the broker and removes
//! the directory before it exits; directories of runs killed outright (SIGKILL, a crash) are
//! removed by the next run, once nothing holds them.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};

/// How long a stopped broker has to shut down cleanly before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Prefix of the embedded broker's temporary data directories: `spate-bench-<pid>-<nanos>`.
pub const TEMP_PREFIX: &str = "spate-bench-";

/// A new temporary data directory for an embedded broker, named after this process.
pub fn temp_data_dir() -> Result<PathBuf, String> {
    let base = std::env::temp_dir().join(format!(
        "{TEMP_PREFIX}{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    Ok(base)
}

/// Removes the temporary data directories of earlier runs that are gone: the process named in
/// the directory's name no longer exists and no broker holds the directory's lock. Returns
/// the directories removed.
pub fn remove_stale_data_dirs(temp: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(pid) = owner_pid(&path) else {
            continue;
        };
        if pid == std::process::id() || process_exists(pid) || lock_held(&path) {
            continue;
        }
        if std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// The pid in a `spate-bench-<pid>-<nanos>` directory name.
fn owner_pid(path: &Path) -> Option<u32> {
    if !path.is_dir() {
        return None;
    }
    let name = path.file_name()?.to_str()?;
    let (pid, nanos) = name.strip_prefix(TEMP_PREFIX)?.split_once('-')?;
    if nanos.is_empty() || !nanos.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Whether a broker holds the data directory's lock (`spate serve` flocks `DATA/.lock`).
fn lock_held(dir: &Path) -> bool {
    let Ok(file) = std::fs::File::open(dir.join(".lock")) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; dropping the file releases it.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    rc != 0
}

/// On SIGINT or SIGTERM: stops the broker `pid` (see [`stop_broker`]), removes `data_dir`,
/// says so, and exits with 128 + the signal. Runs on a thread of its own for the rest of the
/// process.
pub fn stop_on_signal(pid: u32, data_dir: PathBuf) -> Result<(), String> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("bench-signals".into())
        .spawn(move || {
            let Some(signal) = signals.forever().next() else {
                return;
            };
            stop_broker(pid, STOP_GRACE);
            let removed = std::fs::remove_dir_all(&data_dir);
            eprintln!(
                "spate-bench: interrupted: stopped the embedded broker{}",
                match removed {
                    Ok(()) => format!(" and removed {}", data_dir.display()),
                    Err(e) => format!("; could not remove {}: {e}", data_dir.display()),
                }
            );
            std::process::exit(128 + signal);
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// Has the kernel send the child SIGTERM if this process dies first (SIGKILL included), so a
/// broker or a local cluster never outlives the harness.
pub fn die_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// SIGTERM, then SIGKILL if the child `pid` has not exited after `grace`; reaps it.
pub fn stop_broker(pid: u32, grace: Duration) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    // SAFETY: signalling and reaping our own child by pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    loop {
        let mut status = 0;
        // SAFETY: as above.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc != 0 {
            return; // reaped, or not our child any more
        }
        if Instant::now() >= deadline {
            // SAFETY: as above.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_of_gone_runs_are_stale() {
        let temp = tempfile::tempdir().unwrap();
        // A pid that existed and is gone: a child that has exited and been reaped.
        let gone = std::process::Command::new("true")
            .spawn()
            .and_then(|mut c| c.wait().map(|_| c.id()))
            .unwrap();
        let stale = temp.path().join(format!("{TEMP_PREFIX}{gone}-123"));
        std::fs::create_dir_all(stale.join("topics")).unwrap();
        let ours = temp
            .path()
            .join(format!("{TEMP_PREFIX}{}-456", std::process::id()));
        std::fs::create_dir(&ours).unwrap();
        // A live process other than this one: the parent (the test harness's launcher).
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        let alive = temp.path().join(format!("{TEMP_PREFIX}{parent}-789"));
        std::fs::create_dir(&alive).unwrap();
        // A gone pid, but a broker (here: this test) holds the lock.
        let locked = temp.path().join(format!("{TEMP_PREFIX}{gone}-999"));
        std::fs::create_dir(&locked).unwrap();
        let lock = std::fs::File::create(locked.join(".lock")).unwrap();
        // SAFETY: flock on a descriptor we own.
        assert_eq!(
            unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
            0
        );
        let other = temp.path().join("spate-bench-results");
        std::fs::create_dir(&other).unwrap();

        let removed = remove_stale_data_dirs(temp.path());
        assert_eq!(removed, vec![stale.clone()]);
        assert!(!stale.exists());
        for kept in [&ours, &alive, &locked, &other] {
            assert!(kept.exists(), "{} was removed", kept.display());
        }
    }
}
