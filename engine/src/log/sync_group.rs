//! Group commit across a shard's partitions: one `syncfs` makes every partition's writes
//! durable at once, instead of one fdatasync per partition.
//!
//! With many partitions on a shard, their fdatasyncs queue behind each other in the kernel and
//! the device (each is a journal commit and a cache flush): eight at once take about ten times
//! as long as one, and a produce request waits for the slowest of its partitions. A sync group
//! runs one `syncfs` at a time; partitions that finish a write while it runs wait for the
//! next, which covers them all. A round starts only after the writes it covers completed, so a
//! resolved sync always covers the caller's writes.
//!
//! `syncfs` also writes out whatever else is dirty on the filesystem, so it suits a disk
//! dedicated to Spate's data (see [`SyncScope`]); and it reports writeback errors only since
//! Linux 5.8, so older kernels keep per-file fdatasyncs.

use std::cell::RefCell;
use std::io;
use std::path::Path;
use std::rc::Rc;

use futures_channel::oneshot;

pub use crate::config::SyncScope;
use crate::io::StorageFile;

impl SyncScope {
    /// What makes a durable append durable under this (resolved) scope.
    pub fn describe(self) -> &'static str {
        match self {
            SyncScope::Filesystem => "one syncfs per shard covers all its partitions",
            SyncScope::File => "an fdatasync per partition",
            SyncScope::Auto => "not decided yet",
        }
    }

    /// The scope to use for `data_dir`, with the reason, for the startup log.
    pub fn resolve(self, data_dir: &Path) -> (SyncScope, String) {
        match self {
            SyncScope::File => (SyncScope::File, "log.sync_scope = \"file\"".into()),
            SyncScope::Filesystem => match syncfs_reports_errors() {
                Ok(()) => (
                    SyncScope::Filesystem,
                    "log.sync_scope = \"filesystem\"".into(),
                ),
                Err(why) => (SyncScope::File, why),
            },
            SyncScope::Auto => {
                if let Err(why) = syncfs_reports_errors() {
                    return (SyncScope::File, why);
                }
                if is_mount_root(data_dir) {
                    (
                        SyncScope::Filesystem,
                        format!("{} is a filesystem of its own", data_dir.display()),
                    )
                } else {
                    (
                        SyncScope::File,
                        format!(
                            "{} shares its filesystem; set log.sync_scope = \"filesystem\" \
                             if nothing else writes much to it",
                            data_dir.display()
                        ),
                    )
                }
            }
        }
    }
}

/// Whether `dir` is the root of a mounted filesystem (its parent is on another device).
fn is_mount_root(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let Some(parent) = dir.parent() else {
        return true;
    };
    match (std::fs::metadata(&dir), std::fs::metadata(parent)) {
        (Ok(d), Ok(p)) => d.dev() != p.dev(),
        _ => false,
    }
}

/// syncfs returns writeback errors since Linux 5.8; before, it returned 0 regardless.
fn syncfs_reports_errors() -> Result<(), String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if kernel_at_least(&release, (5, 8)) {
        Ok(())
    } else {
        Err(format!(
            "kernel {:?} may not report syncfs errors (needs Linux 5.8 or later)",
            release.trim()
        ))
    }
}

/// Whether a kernel release string ("6.1.0-18-amd64") is at least `(major, minor)`.
fn kernel_at_least(release: &str, wanted: (u32, u32)) -> bool {
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= wanted,
        _ => false,
    }
}

type Waiter = (Rc<dyn StorageFile>, oneshot::Sender<io::Result<()>>);

/// A shard's group commit (one per shard and filesystem). Cheap to clone.
#[derive(Clone, Default)]
pub struct SyncGroup {
    state: Rc<RefCell<GroupState>>,
}

#[derive(Default)]
struct GroupState {
    running: bool,
    waiting: Vec<Waiter>,
    rounds: u64,
}

impl SyncGroup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resolves once a `syncfs` that started after this call covers `file`'s writes.
    pub async fn sync(&self, file: &Rc<dyn StorageFile>) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut st = self.state.borrow_mut();
            st.waiting.push((file.clone(), tx));
            !std::mem::replace(&mut st.running, true)
        };
        if start {
            glommio::spawn_local(self.clone().run()).detach();
        }
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("the shard's sync group stopped")))
    }

    /// Files waiting for the next round (those that arrived while one runs).
    pub fn waiting(&self) -> usize {
        self.state.borrow().waiting.len()
    }

    /// Rounds run so far (each one `syncfs`).
    pub fn rounds(&self) -> u64 {
        self.state.borrow().rounds
    }

    async fn run(self) {
        loop {
            let round = {
                let mut st = self.state.borrow_mut();
                if st.waiting.is_empty() {
                    st.running = false;
                    return;
                }
                st.rounds += 1;
                std::mem::take(&mut st.waiting)
            };
            let result = round[0].0.sync_filesystem().await;
            for (file, tx) in round {
                let _ = tx.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(shared_error(e, file.path())),
                });
            }
        }
    }
}

/// The round's error as each of its partitions reports it: the same OS error, on its own file.
fn shared_error(e: &io::Error, path: &Path) -> io::Error {
    let err = match crate::io::raw_os_error(e) {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    };
    crate::io::with_path(err, "syncfs", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(kernel_at_least("6.18.44-fc-v769\n", (5, 8)));
        assert!(kernel_at_least("5.8", (5, 8)));
        assert!(kernel_at_least("5.10.0-28-amd64", (5, 8)));
        assert!(!kernel_at_least("5.4.0-100-generic", (5, 8)));
        assert!(!kernel_at_least("4.19.0", (5, 8)));
        assert!(!kernel_at_least("", (5, 8)));
        assert!(!kernel_at_least("linux", (5, 8)));
    }

    #[test]
    fn auto_keeps_file_syncs_on_a_shared_filesystem() {
        // A temporary directory is a directory of its parent's filesystem.
        let dir = tempfile::tempdir().unwrap();
        let (scope, why) = SyncScope::Auto.resolve(dir.path());
        assert_eq!(scope, SyncScope::File, "{why}");
        assert_eq!(SyncScope::File.resolve(dir.path()).0, SyncScope::File);
    }

    #[test]
    fn auto_and_filesystem_use_syncfs_on_a_filesystem_root_when_the_kernel_reports_errors() {
        let expected = match syncfs_reports_errors() {
            Ok(()) => SyncScope::Filesystem,
            Err(_) => SyncScope::File,
        };
        let (scope, why) = SyncScope::Auto.resolve(Path::new("/"));
        assert_eq!(scope, expected, "{why}");
        let (scope, why) = SyncScope::Filesystem.resolve(Path::new("/"));
        assert_eq!(scope, expected, "{why}");
    }
}
