//! One shard's end of the mesh: its queues to every peer (each connected once, at join), its
//! queues from every peer (served by one loop each, which only spawns), its reply queue, and
//! the calls out. An `Endpoint` lives on its shard's thread and is never sent elsewhere.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use futures_util::future::{join_all, FutureExt, Shared};
use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver};

use crate::{Call, Counters, Delivery, Ends, HomeSender, LocalFuture, Mesh, ShardGone};

type Connected<S> = Rc<ConnectedSender<Call<S>>>;

/// The queue to one peer: connecting (glommio connects both ends once each has started), then
/// connected. The connection runs in a task of its own, so a caller that gives up while it
/// waits loses nothing.
struct Peer<S: 'static> {
    connecting: Shared<LocalFuture<Connected<S>>>,
    connected: RefCell<Option<Connected<S>>>,
}

/// A shard's end of the [`Mesh`]: see the crate docs.
pub struct Endpoint<S: 'static> {
    id: usize,
    mesh: Arc<Mesh<S>>,
    home_thread: std::thread::ThreadId,
    /// Indexed by shard; `None` for this shard itself.
    peers: Vec<Option<Peer<S>>>,
    /// Taken by `serve`.
    inboxes: RefCell<Vec<(usize, SharedReceiver<Call<S>>)>>,
    replies: RefCell<Option<flume::Receiver<Delivery>>>,
    counters: Arc<Counters>,
    /// The shard's state, for calls to itself; set by `serve`.
    state: RefCell<Weak<S>>,
}

impl<S: 'static> Endpoint<S> {
    pub(crate) fn new(id: usize, mesh: Arc<Mesh<S>>, ends: Ends<S>) -> Self {
        let peers = ends
            .to
            .into_iter()
            .map(|sender| {
                let sender = sender?;
                let task = glommio::spawn_local(async move { Rc::new(sender.connect().await) });
                let connecting: LocalFuture<Connected<S>> = Box::pin(task);
                Some(Peer {
                    connecting: connecting.shared(),
                    connected: RefCell::new(None),
                })
            })
            .collect();
        let inboxes = ends
            .from
            .into_iter()
            .enumerate()
            .filter_map(|(peer, r)| Some((peer, r?)))
            .collect();
        Self {
            id,
            counters: mesh.counters_of(id),
            mesh,
            home_thread: std::thread::current().id(),
            peers,
            inboxes: RefCell::new(inboxes),
            replies: RefCell::new(Some(ends.replies)),
            state: RefCell::new(Weak::new()),
        }
    }

    /// This shard's index in the mesh.
    pub fn id(&self) -> usize {
        self.id
    }

    pub fn mesh(&self) -> &Arc<Mesh<S>> {
        &self.mesh
    }

    /// Starts serving this shard's queues with `state`: one loop per peer's queue, which takes
    /// each call off and spawns it with the state (and waits for nothing else), and one loop
    /// that runs the replies sent home. Calls that arrive before this wait in their queues
    /// (their senders wait once a queue is full). A second call only replaces the state.
    /// The endpoint holds the state weakly (the state holds the endpoint): once its owner drops
    /// it, calls that arrive are dropped and their callers get [`ShardGone`].
    pub fn serve(&self, state: &Rc<S>) {
        *self.state.borrow_mut() = Rc::downgrade(state);
        for (_peer, inbox) in self.inboxes.borrow_mut().drain(..) {
            let state = Rc::downgrade(state);
            let counters = self.counters.clone();
            glommio::spawn_local(async move {
                let inbox = inbox.connect().await;
                while let Some(call) = inbox.recv().await {
                    counters.add_call_received();
                    // A shard whose state is gone drops the call: its answer's sender goes
                    // with it, and the caller sees ShardGone.
                    let Some(state) = state.upgrade() else {
                        continue;
                    };
                    glommio::spawn_local(call(state)).detach();
                }
            })
            .detach();
        }
        if let Some(replies) = self.replies.borrow_mut().take() {
            glommio::spawn_local(async move {
                while let Ok(deliver) = replies.recv_async().await {
                    deliver();
                }
            })
            .detach();
        }
    }

    /// Runs `f` on shard `owner` with that shard's state and returns its result. On this
    /// shard it runs inline; elsewhere it waits for room in the queue to `owner` (see the
    /// crate docs on the bound) and then for the answer.
    pub async fn call<R, F, Fut>(&self, owner: usize, f: F) -> Result<R, ShardGone>
    where
        R: Send + 'static,
        F: FnOnce(Rc<S>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        if owner == self.id {
            let state = self.state.borrow().upgrade().ok_or(ShardGone(owner))?;
            return Ok(f(state).await);
        }
        let sender = self.sender(owner).await?;
        let (tx, rx) = self.home_channel();
        let call: Call<S> = Box::new(move |s| {
            Box::pin(async move {
                tx.send(f(s).await);
            })
        });
        // Refused (the owner has stopped): the call, and the answer's sender in it, are
        // dropped here on the home thread.
        sender.send(call).await.map_err(|_| ShardGone(owner))?;
        self.counters.add_call_sent();
        rx.await.map_err(|_| ShardGone(owner))
    }

    /// Runs `f(state, item)` for every item on the shard that owns it (`(owner, item)`), with
    /// one call per owner shard carrying all of that owner's items, whose runs it awaits
    /// together. The answers come back in the order of `items`. This is how a request that
    /// names many partitions costs one message per owner shard rather than one per partition.
    pub async fn call_each<T, R, F, Fut>(
        &self,
        items: Vec<(usize, T)>,
        f: F,
    ) -> Vec<Result<R, ShardGone>>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(Rc<S>, T) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        let count = items.len();
        let mut by_owner: BTreeMap<usize, (Vec<usize>, Vec<T>)> = BTreeMap::new();
        for (slot, (owner, item)) in items.into_iter().enumerate() {
            let entry = by_owner.entry(owner).or_default();
            entry.0.push(slot);
            entry.1.push(item);
        }
        let calls = by_owner.into_iter().map(|(owner, (slots, items))| {
            let f = f.clone();
            async move {
                let answers = self
                    .call(owner, move |s| async move {
                        join_all(items.into_iter().map(|item| f(s.clone(), item))).await
                    })
                    .await;
                (slots, answers)
            }
        });
        let mut out: Vec<Option<Result<R, ShardGone>>> = (0..count).map(|_| None).collect();
        for (slots, answers) in join_all(calls).await {
            match answers {
                Ok(answers) => {
                    for (slot, answer) in slots.into_iter().zip(answers) {
                        out[slot] = Some(Ok(answer));
                    }
                }
                Err(gone) => {
                    for slot in slots {
                        out[slot] = Some(Err(gone));
                    }
                }
            }
        }
        // Every slot is filled above (an owner's run answers once per item); the fallback is
        // never taken.
        out.into_iter()
            .map(|answer| answer.unwrap_or(Err(ShardGone(self.id))))
            .collect()
    }

    async fn sender(&self, owner: usize) -> Result<Connected<S>, ShardGone> {
        let peer = self
            .peers
            .get(owner)
            .and_then(Option::as_ref)
            .ok_or(ShardGone(owner))?;
        if let Some(s) = peer.connected.borrow().as_ref() {
            return Ok(s.clone());
        }
        let s = peer.connecting.clone().await;
        *peer.connected.borrow_mut() = Some(s.clone());
        Ok(s)
    }

    /// A oneshot channel whose receiver is on this shard and whose sender may travel to
    /// another shard: see [`HomeSender`].
    pub fn home_channel<T: Send + 'static>(
        &self,
    ) -> (HomeSender<T>, futures_channel::oneshot::Receiver<T>) {
        HomeSender::channel(
            self.home_thread,
            self.mesh.reply_queue(self.id),
            self.counters.clone(),
        )
    }
}
