//! Membership timers: one ticker per shard, every 100 ms, ends join phases (everyone rejoined,
//! the initial delay passed, or the rebalance timeout) and expires members silent for longer
//! than their session timeout; for consumer protocol groups, it fences members whose session
//! expired or that did not revoke within their rebalance timeout.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Coordinator;

impl Coordinator {
    /// Starts the timer that ends join phases and expires silent members.
    pub fn start_ticking(self: &Rc<Self>) {
        if self.ticking.replace(true) {
            return;
        }
        let me = Rc::downgrade(self);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(100)).await;
                let Some(c) = me.upgrade() else { break };
                c.tick(Instant::now());
            }
        })
        .detach();
    }

    pub(super) fn tick(&self, now: Instant) {
        let mut groups = self.groups.borrow_mut();
        for (name, g) in groups.iter_mut() {
            // Members waiting in a join are alive; the rest must have been seen lately.
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| {
                    !g.join_waiters.contains_key(&m.id)
                        && now.duration_since(m.last_seen) > m.session_timeout
                })
                .map(|m| m.id.clone())
                .collect();
            if !expired.is_empty() {
                for id in &expired {
                    tracing::info!(group = %name, member = %id, "member session expired");
                    g.members.remove(id);
                    g.sync_waiters.remove(id);
                }
                self.after_departure(g);
            }
            self.maybe_complete_join(g, now);
        }
        drop(groups);
        self.tick_consumer_groups(now);
    }
}
