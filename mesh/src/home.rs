//! The sending half of a oneshot channel whose receiver waits on another shard (its home).
//! Sent or dropped on another shard's thread, the value (or the drop) travels to the home
//! shard's reply queue and is delivered there: a glommio task must be woken only from its own
//! thread (see the crate docs). Sending never waits, so it works from `Drop` and from
//! synchronous code.

use std::sync::Arc;

use futures_channel::oneshot;

use crate::{Counters, Delivery};

pub struct HomeSender<T: Send + 'static> {
    tx: Option<oneshot::Sender<T>>,
    home_thread: std::thread::ThreadId,
    /// `None` when the home shard is not in the mesh: the receiver then only sees a drop.
    home: Option<flume::Sender<Delivery>>,
    home_counters: Arc<Counters>,
}

impl<T: Send + 'static> HomeSender<T> {
    pub(crate) fn channel(
        home_thread: std::thread::ThreadId,
        home: Option<flume::Sender<Delivery>>,
        home_counters: Arc<Counters>,
    ) -> (Self, oneshot::Receiver<T>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                tx: Some(tx),
                home_thread,
                home,
                home_counters,
            },
            rx,
        )
    }

    /// Delivers `value` to the receiver on the home shard (directly when called there).
    pub fn send(mut self, value: T) {
        if let Some(tx) = self.tx.take() {
            self.deliver(move || {
                let _ = tx.send(value);
            });
        }
    }

    fn deliver(&self, f: impl FnOnce() + Send + 'static) {
        if std::thread::current().id() == self.home_thread {
            f();
            return;
        }
        if let Some(home) = &self.home {
            self.home_counters.add_reply_received();
            // Unbounded: never waits. If the home shard is gone, so is the receiver, and the
            // value is dropped with the queue.
            let _ = home.send(Box::new(f));
        }
    }
}

impl<T: Send + 'static> Drop for HomeSender<T> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            self.deliver(move || drop(tx));
        }
    }
}
