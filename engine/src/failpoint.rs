//! Crash points for tests of a real process: `SPATE_FAILPOINT=NAME` (or `NAME@N`, the N-th
//! time) makes the process SIGKILL itself when it reaches `hit("NAME")`, as a power cut or
//! an OOM kill would stop it there. Unset (always, outside such tests), a hit costs one load
//! of a cached value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static PLAN: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn plan() -> &'static Option<(String, u64)> {
    PLAN.get_or_init(|| {
        let v = std::env::var("SPATE_FAILPOINT").ok()?;
        let (name, n) = match v.split_once('@') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some((name, n.max(1)))
    })
}

/// Kills the process here if the environment names this point (and its count is reached).
pub fn hit(name: &str) {
    let Some((want, n)) = plan() else { return };
    if want != name {
        return;
    }
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *n {
        tracing::error!(
            failpoint = name,
            "failpoint reached: the process kills itself"
        );
        // SAFETY: sending a signal to this process has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
