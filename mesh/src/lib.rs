//! spate-mesh: how one shard asks another to do something. A shard is a glommio executor
//! pinned to a core that owns its state outright (partitions, groups, producer state); work
//! for another shard travels to it as a closure, runs there with that shard's state, and its
//! result comes back. Record data inside a closure is `Bytes`, so nothing is copied.
//!
//! The mesh knows nothing of Kafka or of what a shard holds: it is generic over the shard's
//! state `S`, and used by spate-net (requests for partitions owned elsewhere) and, later, by
//! replication.
//!
//! # Shape
//! - [`Mesh<S>`] is built once for N shards, before they start, and shared by them (`Arc`).
//! - Each shard, on its own executor, takes its [`Endpoint`] with [`Mesh::join`] and starts
//!   serving its inboxes with [`Endpoint::serve`] once its state exists.
//! - [`Endpoint::call`] runs `f(Rc<S>)` on the owner shard and returns its result; on the
//!   calling shard itself it runs inline, without a message.
//! - [`Endpoint::home_channel`] gives a oneshot channel whose [`HomeSender`] may travel to
//!   another shard and delivers its value back on the home shard's thread.
//!
//! # Bounded inboxes, and why they cannot deadlock
//! Calls travel on one bounded single-producer single-consumer queue per (sender, receiver)
//! pair of shards (glommio's `shared_channel`, the Seastar layout), each holding at most the
//! mesh's `inbox_capacity` calls ([`DEFAULT_INBOX_CAPACITY`] unless told otherwise). A call to
//! a full queue waits, on the sender's own reactor, until the receiver takes one off.
//!
//! The receiver's loop for each queue waits for nothing but the next call: it spawns each call
//! as a task of its own and goes back to the queue. A full queue therefore waits only for the
//! receiver's reactor to run, never for the outcome of any call, so no chain of calls (shard A
//! calls B whose task calls shard 0 whose task calls A ...) can close a cycle of waits through
//! a queue: every queued call is eventually spawned. What is in flight on a shard is bounded by
//! the callers waiting for answers (connections times their requests in flight), not by the
//! queues, which bound only the calls not yet picked up.
//!
//! Answers do not use those queues: a [`HomeSender`] must deliver from synchronous code (and
//! from `Drop`), so it can never wait. Each shard has one unbounded reply queue, whose length
//! is bounded by the calls it has outstanding (each call has one answer; a [`HomeSender`] made
//! by [`Endpoint::home_channel`] is one more delivery at most). A bounded reply queue could
//! deadlock: A waiting for room at B while B waits for room at A to answer.
//!
//! # Threads
//! Every waker of a glommio task is woken on its own executor's thread: a bounded queue's
//! sender and receiver are woken by their own reactors (glommio notifies the peer's reactor
//! through its eventfd, and the peer wakes its tasks itself), and a reply is run by the home
//! shard's reply loop, the only task woken from another thread (it lives as long as the
//! shard). glommio keeps a task's state machine thread-local (glommio issue #194): a wake from
//! a foreign thread can race with the task being freed; a shard segfaulted that way under a
//! produce load before replies went home.

mod endpoint;
mod home;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};

pub use endpoint::Endpoint;
pub use home::HomeSender;

/// Calls one shard may have queued to another and not yet picked up (per pair of shards).
/// Seastar's cross-shard queues hold 128 items too. A call is a boxed closure (16 bytes in
/// the queue), so the bound is about waiting, not memory: a shard whose reactor is busy makes
/// its callers wait instead of piling work up behind it.
pub const DEFAULT_INBOX_CAPACITY: usize = 128;

/// A future that stays on its shard.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// A call in a queue: runs on the receiving shard with its state.
pub(crate) type Call<S> = Box<dyn FnOnce(Rc<S>) -> LocalFuture<()> + Send>;
/// A reply (a value or a drop) to run on its home shard.
pub(crate) type Delivery = Box<dyn FnOnce() + Send>;

/// The shard a call was sent to is not running (the broker is shutting down, or it never
/// started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shard {0} is not running")]
pub struct ShardGone(pub usize);

/// Why [`Mesh::join`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("shard {shard} is not in a mesh of {shard_count} shards")]
    NoSuchShard { shard: usize, shard_count: usize },
    #[error("shard {0} has already joined the mesh")]
    AlreadyJoined(usize),
}

/// What one shard has sent and received over the mesh, counted since the mesh was built.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MeshCounters {
    /// Calls this shard put in another shard's queue (inline calls to itself not counted).
    pub calls_sent: u64,
    /// Calls this shard took from its queues and spawned.
    pub calls_received: u64,
    /// Replies (values or drops of a [`HomeSender`]) delivered to this shard from another.
    pub replies_received: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    calls_sent: AtomicU64,
    calls_received: AtomicU64,
    replies_received: AtomicU64,
}

impl Counters {
    pub(crate) fn add_call_sent(&self) {
        self.calls_sent.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_call_received(&self) {
        self.calls_received.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_reply_received(&self) {
        self.replies_received.fetch_add(1, Ordering::Relaxed);
    }
    fn snapshot(&self) -> MeshCounters {
        MeshCounters {
            calls_sent: self.calls_sent.load(Ordering::Relaxed),
            calls_received: self.calls_received.load(Ordering::Relaxed),
            replies_received: self.replies_received.load(Ordering::Relaxed),
        }
    }
}

/// One shard's ends of the mesh, until it joins.
pub(crate) struct Ends<S> {
    /// `to[peer]`: the queue from this shard to `peer` (`None` for itself).
    pub(crate) to: Vec<Option<SharedSender<Call<S>>>>,
    /// `from[peer]`: the queue from `peer` to this shard (`None` for itself).
    pub(crate) from: Vec<Option<SharedReceiver<Call<S>>>>,
    pub(crate) replies: flume::Receiver<Delivery>,
}

/// The shard mesh: every queue between N shards, built once before they start. `Send + Sync`;
/// each shard takes its own ends with [`Mesh::join`].
pub struct Mesh<S> {
    shard_count: usize,
    inbox_capacity: usize,
    ends: Mutex<Vec<Option<Ends<S>>>>,
    /// Each shard's reply queue (unbounded: see the crate docs).
    replies: Vec<flume::Sender<Delivery>>,
    counters: Vec<Arc<Counters>>,
}

impl<S: 'static> Mesh<S> {
    /// A mesh for `shard_count` shards whose queues hold `inbox_capacity` calls each (at
    /// least 1).
    pub fn new(shard_count: usize, inbox_capacity: usize) -> Arc<Self> {
        let inbox_capacity = inbox_capacity.max(1);
        let mut to: Vec<Vec<Option<SharedSender<Call<S>>>>> = (0..shard_count)
            .map(|_| (0..shard_count).map(|_| None).collect())
            .collect();
        let mut from: Vec<Vec<Option<SharedReceiver<Call<S>>>>> = (0..shard_count)
            .map(|_| (0..shard_count).map(|_| None).collect())
            .collect();
        for sender in 0..shard_count {
            for receiver in (0..shard_count).filter(|r| *r != sender) {
                let (tx, rx) = shared_channel::new_bounded(inbox_capacity);
                to[sender][receiver] = Some(tx);
                from[receiver][sender] = Some(rx);
            }
        }
        let (replies, reply_receivers): (Vec<_>, Vec<_>) =
            (0..shard_count).map(|_| flume::unbounded()).unzip();
        let ends = to
            .into_iter()
            .zip(from)
            .zip(reply_receivers)
            .map(|((to, from), replies)| Some(Ends { to, from, replies }))
            .collect();
        Arc::new(Self {
            shard_count,
            inbox_capacity,
            ends: Mutex::new(ends),
            replies,
            counters: (0..shard_count).map(|_| Arc::default()).collect(),
        })
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// The most calls one shard may have queued to another.
    pub fn inbox_capacity(&self) -> usize {
        self.inbox_capacity
    }

    /// Takes shard `shard`'s ends of the mesh. Call it once, on that shard's executor: the
    /// endpoint's queues to its peers start connecting at once, and its calls run there.
    pub fn join(self: &Arc<Self>, shard: usize) -> Result<Endpoint<S>, JoinError> {
        let ends = {
            let mut all = match self.ends.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let slot = all.get_mut(shard).ok_or(JoinError::NoSuchShard {
                shard,
                shard_count: self.shard_count,
            })?;
            slot.take().ok_or(JoinError::AlreadyJoined(shard))?
        };
        Ok(Endpoint::new(shard, self.clone(), ends))
    }

    /// What shard `shard` has sent and received so far (zeros for a shard not in the mesh).
    pub fn counters(&self, shard: usize) -> MeshCounters {
        self.counters
            .get(shard)
            .map_or_else(MeshCounters::default, |c| c.snapshot())
    }

    pub(crate) fn counters_of(&self, shard: usize) -> Arc<Counters> {
        self.counters.get(shard).cloned().unwrap_or_default()
    }

    pub(crate) fn reply_queue(&self, shard: usize) -> Option<flume::Sender<Delivery>> {
        self.replies.get(shard).cloned()
    }
}
