//! What the run's threads share: the stop and pause flags the main thread sets, the counts of
//! messages produced, consumed and consumed again, and the first error any thread met (the
//! one the run reports). Atomics and one mutex, never held across a call.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;

pub(super) struct Shared {
    pub(super) stop_producing: AtomicBool,
    pub(super) stop_consuming: AtomicBool,
    pub(super) first_error: Mutex<Option<String>>,
    pub(super) produced: AtomicU64,
    /// Messages consumed, all consumers together.
    pub(super) consumed: AtomicU64,
    /// Records a consumer received again (an offset at or below one it had).
    pub(super) duplicates: AtomicU64,
    /// Consumers hold off (keeping their group membership) while the backlog builds.
    pub(super) consumers_paused: AtomicBool,
}

impl Shared {
    /// Consumers start paused when the workload builds a backlog first.
    pub(super) fn new(consumers_paused: bool) -> Self {
        Self {
            stop_producing: AtomicBool::new(false),
            stop_consuming: AtomicBool::new(false),
            first_error: Mutex::new(None),
            produced: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            consumers_paused: AtomicBool::new(consumers_paused),
        }
    }

    pub(super) fn note_error(&self, e: String) {
        let mut g = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(e);
        }
    }

    /// The first error noted, if any.
    pub(super) fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
