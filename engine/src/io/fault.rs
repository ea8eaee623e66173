//! Fault injection for storage: EIO, ENOSPC, torn writes and crashes on demand.
//!
//! [`FaultyStorage`] wraps another [`Storage`] and consults a shared [`FaultPlan`] before every
//! operation. A test arms the plan ("the next fdatasync fails with EIO", "tear the next write
//! after 4 KiB", "after 10 operations nothing reaches the disk") and then drives the log
//! through its public API, so the code under test is the code that runs in production.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use futures_channel::oneshot;

use super::{IoBuffer, IoFuture, OpenMode, Storage, StorageFile};

/// What to break, and when. Shared by every file the storage opens.
#[derive(Debug, Default)]
pub struct FaultPlan {
    state: RefCell<PlanState>,
}

#[derive(Debug, Default)]
struct PlanState {
    /// Only files whose name ends with this are affected (e.g. ".log"); `None`: all files.
    path_suffix: Option<String>,
    write_errno: Option<i32>,
    writes_before_failure: u64,
    sync_errno: Option<i32>,
    /// Syncs to let through before the single one that fails (see `fail_one_sync`).
    one_sync_failure_after: Option<u64>,
    allocate_errno: Option<i32>,
    /// Opens that create a file fail with this (ENOSPC: no room for a new file).
    create_errno: Option<i32>,
    tear_next_write_at: Option<u64>,
    /// Operations left before the simulated crash; after it every operation fails.
    ops_before_crash: Option<u64>,
    crashed: bool,
    writes: u64,
    syncs: u64,
    /// Bytes asked for by reads (of the files the plan applies to).
    read_bytes: u64,
    /// Writes that started while an injected fdatasync failure was running.
    writes_during_failed_syncs: u64,
    /// While set, syncs wait at the gate until `release_syncs`.
    holding_syncs: bool,
    /// The syncs waiting at the gate.
    held_syncs: Vec<oneshot::Sender<()>>,
}

impl FaultPlan {
    pub fn new() -> Rc<Self> {
        Rc::new(Self::default())
    }

    /// Restricts faults to files whose name ends with `suffix`.
    pub fn only_files_ending_with(&self, suffix: &str) {
        self.state.borrow_mut().path_suffix = Some(suffix.to_string());
    }

    /// Every write fails with `errno` once `after` more writes have succeeded.
    pub fn fail_writes(&self, errno: i32, after: u64) {
        let mut s = self.state.borrow_mut();
        s.write_errno = Some(errno);
        s.writes_before_failure = after;
    }

    /// Every fdatasync fails with `errno`.
    pub fn fail_syncs(&self, errno: i32) {
        self.state.borrow_mut().sync_errno = Some(errno);
    }

    /// After `after` more successful fdatasyncs, exactly one fails with EIO and the later
    /// ones succeed again: Linux's behaviour after a writeback error, where the next fsync
    /// reports success although the data of the failed one was dropped.
    pub fn fail_one_sync(&self, after: u64) {
        self.state.borrow_mut().one_sync_failure_after = Some(after);
    }

    /// Every preallocation fails with `errno`.
    pub fn fail_allocations(&self, errno: i32) {
        self.state.borrow_mut().allocate_errno = Some(errno);
    }

    /// Every open that may create a file ([`OpenMode::Create`]) fails with `errno`.
    pub fn fail_creates(&self, errno: i32) {
        self.state.borrow_mut().create_errno = Some(errno);
    }

    /// The next write puts only its first `keep_bytes` (rounded down to a block) on disk,
    /// then the storage crashes: it and every later operation fail with EIO.
    pub fn tear_next_write(&self, keep_bytes: u64) {
        self.state.borrow_mut().tear_next_write_at = Some(keep_bytes);
    }

    /// After `ops` more operations, the storage crashes (every operation fails with EIO).
    pub fn crash_after(&self, ops: u64) {
        self.state.borrow_mut().ops_before_crash = Some(ops);
    }

    /// Syncs from now on wait (without starting) until [`FaultPlan::release_syncs`]: a test
    /// can line up what arrives while a sync runs.
    pub fn hold_syncs(&self) {
        self.state.borrow_mut().holding_syncs = true;
    }

    /// Lets the held syncs run and stops holding new ones.
    pub fn release_syncs(&self) {
        let held = {
            let mut s = self.state.borrow_mut();
            s.holding_syncs = false;
            std::mem::take(&mut s.held_syncs)
        };
        for gate in held {
            let _ = gate.send(());
        }
    }

    /// Syncs waiting at the gate of [`FaultPlan::hold_syncs`].
    pub fn held_syncs(&self) -> usize {
        self.state.borrow().held_syncs.len()
    }

    /// Removes every armed fault (a "restart" on a healthy disk).
    pub fn heal(&self) {
        let mut s = self.state.borrow_mut();
        let suffix = s.path_suffix.take();
        *s = PlanState {
            path_suffix: suffix,
            ..PlanState::default()
        };
    }

    pub fn writes(&self) -> u64 {
        self.state.borrow().writes
    }

    pub fn syncs(&self) -> u64 {
        self.state.borrow().syncs
    }

    /// Bytes the reads of the affected files asked for, in all.
    pub fn read_bytes(&self) -> u64 {
        self.state.borrow().read_bytes
    }

    /// Writes that started while a failing fdatasync ran: the rounds a pipelined log wrote
    /// behind it.
    pub fn writes_during_failed_syncs(&self) -> u64 {
        self.state.borrow().writes_during_failed_syncs
    }

    fn applies_to(&self, path: &Path) -> bool {
        match &self.state.borrow().path_suffix {
            None => true,
            Some(suffix) => path.to_string_lossy().ends_with(suffix.as_str()),
        }
    }

    /// Counts one operation towards the crash point; errors if the storage has crashed.
    fn tick(&self, path: &Path) -> io::Result<()> {
        if !self.applies_to(path) {
            return Ok(());
        }
        let mut s = self.state.borrow_mut();
        if let Some(left) = s.ops_before_crash {
            if left == 0 {
                s.crashed = true;
            } else {
                s.ops_before_crash = Some(left - 1);
            }
        }
        if s.crashed {
            return Err(errno_error(libc::EIO, "injected crash", path));
        }
        Ok(())
    }
}

fn errno_error(errno: i32, what: &str, path: &Path) -> io::Error {
    super::with_path(io::Error::from_raw_os_error(errno), what, path)
}

/// A [`Storage`] that injects the faults armed in its [`FaultPlan`].
pub struct FaultyStorage {
    inner: Rc<dyn Storage>,
    plan: Rc<FaultPlan>,
}

impl FaultyStorage {
    pub fn new(inner: Rc<dyn Storage>, plan: Rc<FaultPlan>) -> Self {
        Self { inner, plan }
    }
}

impl Storage for FaultyStorage {
    fn create_dir_all<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.plan.tick(dir)?;
            self.inner.create_dir_all(dir).await
        })
    }

    fn list_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, Vec<String>> {
        Box::pin(async move {
            self.plan.tick(dir)?;
            self.inner.list_dir(dir).await
        })
    }

    fn open<'a>(&'a self, path: &'a Path, mode: OpenMode) -> IoFuture<'a, Rc<dyn StorageFile>> {
        Box::pin(async move {
            self.plan.tick(path)?;
            if mode == OpenMode::Create && self.plan.applies_to(path) {
                if let Some(errno) = self.plan.state.borrow().create_errno {
                    return Err(errno_error(errno, "injected create failure", path));
                }
            }
            let inner = self.inner.open(path, mode).await?;
            let file: Rc<dyn StorageFile> = Rc::new(FaultyFile {
                inner,
                plan: self.plan.clone(),
                path: path.to_path_buf(),
            });
            Ok(file)
        })
    }

    fn remove<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.plan.tick(path)?;
            self.inner.remove(path).await
        })
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.plan.tick(from)?;
            self.inner.rename(from, to).await
        })
    }

    fn sync_dir<'a>(&'a self, dir: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.plan.tick(dir)?;
            self.inner.sync_dir(dir).await
        })
    }
}

struct FaultyFile {
    inner: Rc<dyn StorageFile>,
    plan: Rc<FaultPlan>,
    path: PathBuf,
}

impl FaultyFile {
    /// Runs a sync of this file (`fdatasync` or `syncfs`) through the plan: both count as a
    /// sync and fail alike.
    async fn sync_with_faults(&self, sync: IoFuture<'_, ()>) -> io::Result<()> {
        self.plan.tick(&self.path)?;
        if self.plan.applies_to(&self.path) {
            let gate = {
                let mut s = self.plan.state.borrow_mut();
                s.holding_syncs.then(|| {
                    let (tx, rx) = oneshot::channel();
                    s.held_syncs.push(tx);
                    rx
                })
            };
            if let Some(gate) = gate {
                // A dropped plan releases the sync as well.
                let _ = gate.await;
            }
            let errno = {
                let mut s = self.plan.state.borrow_mut();
                s.syncs += 1;
                let once = match s.one_sync_failure_after {
                    Some(0) => {
                        s.one_sync_failure_after = None;
                        Some(libc::EIO)
                    }
                    Some(n) => {
                        s.one_sync_failure_after = Some(n - 1);
                        None
                    }
                    None => None,
                };
                s.sync_errno.or(once)
            };
            if let Some(errno) = errno {
                // A failing sync takes as long as one that works (the device tried): appends
                // keep arriving while it runs.
                let writes_before = self.plan.writes();
                let _ = sync.await;
                let mut s = self.plan.state.borrow_mut();
                s.writes_during_failed_syncs += s.writes - writes_before;
                return Err(errno_error(errno, "injected fdatasync failure", &self.path));
            }
        }
        sync.await
    }
}

impl StorageFile for FaultyFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn alloc_buffer(&self, len: usize) -> IoBuffer {
        self.inner.alloc_buffer(len)
    }

    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Bytes> {
        Box::pin(async move {
            self.plan.tick(&self.path)?;
            if self.plan.applies_to(&self.path) {
                self.plan.state.borrow_mut().read_bytes += len as u64;
            }
            self.inner.read_at(pos, len).await
        })
    }

    fn write_at(&self, mut buf: IoBuffer, pos: u64) -> IoFuture<'_, usize> {
        Box::pin(async move {
            self.plan.tick(&self.path)?;
            if self.plan.applies_to(&self.path) {
                let (errno, tear) = {
                    let mut s = self.plan.state.borrow_mut();
                    s.writes += 1;
                    let errno = match s.write_errno {
                        Some(e) if s.writes_before_failure == 0 => Some(e),
                        Some(_) => {
                            s.writes_before_failure -= 1;
                            None
                        }
                        None => None,
                    };
                    (errno, s.tear_next_write_at.take())
                };
                if let Some(errno) = errno {
                    return Err(errno_error(errno, "injected write failure", &self.path));
                }
                if let Some(keep) = tear {
                    let keep = super::align_down(keep.min(buf.len() as u64)) as usize;
                    if keep > 0 {
                        buf.trim_to_size(keep);
                        self.inner.write_at(buf, pos).await?;
                    }
                    self.plan.state.borrow_mut().crashed = true;
                    return Err(errno_error(libc::EIO, "injected torn write", &self.path));
                }
            }
            self.inner.write_at(buf, pos).await
        })
    }

    fn fdatasync(&self) -> IoFuture<'_, ()> {
        Box::pin(self.sync_with_faults(self.inner.fdatasync()))
    }

    fn sync_filesystem(&self) -> IoFuture<'_, ()> {
        Box::pin(self.sync_with_faults(self.inner.sync_filesystem()))
    }

    fn allocate(&self, size: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.plan.tick(&self.path)?;
            if self.plan.applies_to(&self.path) {
                if let Some(errno) = self.plan.state.borrow().allocate_errno {
                    return Err(errno_error(errno, "injected fallocate failure", &self.path));
                }
            }
            self.inner.allocate(size).await
        })
    }

    fn truncate(&self, size: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.plan.tick(&self.path)?;
            self.inner.truncate(size).await
        })
    }

    fn size(&self) -> IoFuture<'_, u64> {
        Box::pin(async move {
            self.plan.tick(&self.path)?;
            self.inner.size().await
        })
    }
}
