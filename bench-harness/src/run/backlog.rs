//! OpenMessaging's backlog phase (`consumerBacklogSizeGB`): consumers stay paused until that
//! many bytes wait for them, then resume and drain the backlog while producers go on; the
//! report says when it was built and drained and how fast it drained.

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use super::shared::Shared;
use crate::workload::Workload;

/// OpenMessaging's backlog phase: consumers stay paused until the backlog (messages produced
/// for every subscription and not consumed) reaches consumerBacklogSizeGB, then resume and
/// drain it while producers go on.
pub(super) struct BacklogTracker {
    requested_bytes: f64,
    message_size: f64,
    subscriptions: u64,
    reached: Option<(f64, u64)>,
    /// The backlog reached its size (rather than the run ending first).
    built: bool,
    drained: Option<(f64, u64)>,
}

/// When the backlog was built and drained, and the consume rate while it drained.
#[derive(Debug, Clone, Serialize)]
pub struct BacklogResult {
    pub requested_bytes: f64,
    /// Whether the backlog reached its size before the producers stopped.
    pub built: bool,
    /// Seconds from the start until the consumers resumed (the backlog built, or the
    /// producers stopped first).
    pub reached_after_s: Option<f64>,
    /// Seconds from the start until the consumers had caught up.
    pub drained_after_s: Option<f64>,
    /// Consume throughput from resuming until caught up (MB/s, 10^6 bytes).
    pub drain_consume_mb_per_s: Option<f64>,
}

impl BacklogTracker {
    pub(super) fn new(w: &Workload) -> Self {
        Self {
            requested_bytes: w.consumer_backlog_size_gb * 1e9,
            message_size: w.message_size as f64,
            subscriptions: u64::from(w.subscriptions_per_topic),
            reached: None,
            built: false,
            drained: None,
        }
    }

    pub(super) fn check(&mut self, shared: &Shared, start: Instant) {
        let produced = shared.produced.load(Ordering::SeqCst) * self.subscriptions;
        let consumed = shared.consumed.load(Ordering::SeqCst);
        let t = start.elapsed().as_secs_f64();
        if self.reached.is_none() {
            let backlog = produced.saturating_sub(consumed) as f64 * self.message_size;
            self.built = backlog >= self.requested_bytes;
            if self.built || !shared.consumers_paused.load(Ordering::SeqCst) {
                self.reached = Some((t, consumed));
                shared.consumers_paused.store(false, Ordering::SeqCst);
            }
        } else if self.drained.is_none() && consumed >= produced {
            self.drained = Some((t, consumed));
        }
    }

    pub(super) fn result(&self) -> BacklogResult {
        let rate = match (self.reached, self.drained) {
            (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
                Some((c1 - c0) as f64 * self.message_size / (t1 - t0) / 1e6)
            }
            _ => None,
        };
        BacklogResult {
            requested_bytes: self.requested_bytes,
            built: self.built,
            reached_after_s: self.reached.map(|r| r.0),
            drained_after_s: self.drained.map(|d| d.0),
            drain_consume_mb_per_s: rate,
        }
    }
}
