//! The mesh's queues are bounded and cannot deadlock: a full queue holds its sender until the
//! receiver takes a call off (the queue never holds more than its capacity), and calls nested
//! across shards (A calls B, whose task calls shard 0, whose task calls C) all complete under a
//! capacity of 1.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use spate_mesh::{Endpoint, LocalFuture, Mesh, ShardGone};

/// A shard's state in these tests: its id and its end of the mesh.
struct Node {
    id: usize,
    mesh: Endpoint<Node>,
}

fn join(mesh: &Arc<Mesh<Node>>, id: usize) -> Rc<Node> {
    let node = Rc::new(Node {
        id,
        mesh: mesh.join(id).expect("join"),
    });
    node.mesh.serve(&node);
    node
}

fn executor<T, F, Fut>(name: &str, f: F) -> glommio::ExecutorJoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        .io_memory(256 * 1024)
        .spawn(f)
        .expect("executor")
}

async fn until(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// Joins the threads, failing the test (instead of hanging it) if they do not finish.
fn join_within<T: Send + 'static>(handles: Vec<glommio::ExecutorJoinHandle<T>>, what: &str) {
    let count = handles.len();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for h in handles {
            let _ = tx.send(h.join().is_ok());
        }
    });
    for _ in 0..count {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(ok) => assert!(ok, "{what}: a shard panicked"),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: stuck (deadlock)"),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: lost a shard"),
        }
    }
}

#[test]
fn a_full_queue_holds_its_sender_until_the_receiver_takes_a_call() {
    const CAPACITY: usize = 2;
    const CALLS: usize = 10;
    let mesh: Arc<Mesh<Node>> = Mesh::new(2, CAPACITY);
    let block = Arc::new(AtomicBool::new(false));
    let blocked = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let (release_tx, release_rx) = mpsc::channel::<()>();

    let receiver = {
        let (mesh, block, blocked, done) =
            (mesh.clone(), block.clone(), blocked.clone(), done.clone());
        executor("receiver", move || async move {
            let _node = join(&mesh, 1);
            until(&block).await;
            // The reactor stops here: nothing is taken off the queue until released.
            blocked.store(true, Ordering::SeqCst);
            let _ = release_rx.recv();
            until(&done).await;
        })
    };

    let sender = {
        let (mesh, block, blocked, done) =
            (mesh.clone(), block.clone(), blocked.clone(), done.clone());
        executor("sender", move || async move {
            let node = join(&mesh, 0);
            // Connected, and the receiver's loop running.
            assert_eq!(node.mesh.call(1, |s| async move { s.id }).await, Ok(1));
            block.store(true, Ordering::SeqCst);
            until(&blocked).await;
            let sent_before = mesh.counters(0).calls_sent;
            let received_before = mesh.counters(1).calls_received;
            let calls: Vec<_> = (0..CALLS)
                .map(|i| {
                    let node = node.clone();
                    glommio::spawn_local(async move {
                        node.mesh
                            .call(1, move |s| async move { s.id * 100 + i })
                            .await
                    })
                })
                .collect();
            // Let every call get as far as it can while the receiver is stopped.
            for _ in 0..1000 {
                futures_lite_yield().await;
            }
            glommio::timer::sleep(Duration::from_millis(50)).await;
            let queued = mesh.counters(0).calls_sent - sent_before;
            assert_eq!(mesh.counters(1).calls_received, received_before);
            assert_eq!(
                queued, CAPACITY as u64,
                "a stopped receiver's queue holds exactly its capacity"
            );
            let _ = release_tx.send(());
            let mut answers = Vec::new();
            for c in calls {
                answers.push(c.await);
            }
            let want: Vec<_> = (0..CALLS).map(|i| Ok(100 + i)).collect();
            assert_eq!(answers, want);
            assert_eq!(
                mesh.counters(0).calls_sent - sent_before,
                CALLS as u64,
                "every call went once the receiver ran again"
            );
            done.store(true, Ordering::SeqCst);
        })
    };
    join_within(vec![sender, receiver], "back-pressure");
}

async fn futures_lite_yield() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// Runs the rest of `path` from `node`: one call per hop, each made from inside the last.
fn hop(node: Rc<Node>, path: Vec<usize>, tag: usize) -> LocalFuture<Result<usize, ShardGone>> {
    Box::pin(async move {
        let Some((&next, rest)) = path.split_first() else {
            return Ok(node.id * 1000 + tag);
        };
        let rest = rest.to_vec();
        node.mesh
            .call(next, move |s| hop(s, rest, tag))
            .await
            .and_then(|r| r)
    })
}

#[test]
fn calls_nested_across_shards_complete_with_queues_of_one() {
    // Every shard starts TASKS calls at once along a path of four hops that comes back on
    // itself (a -> next -> 0 -> a -> next, as admin paths call shard 0 from inside calls),
    // every queue of capacity 1, every shard both waiting for room and being waited on. A
    // receiver that ran each call before taking the next would stop here: the last hop
    // waits behind the first in the same queue.
    const SHARDS: usize = 3;
    const TASKS: usize = 64;
    let mesh: Arc<Mesh<Node>> = Mesh::new(SHARDS, 1);
    let finished = Arc::new(AtomicUsize::new(0));
    let handles = (0..SHARDS)
        .map(|id| {
            let (mesh, finished) = (mesh.clone(), finished.clone());
            executor(&format!("nested-{id}"), move || async move {
                let node = join(&mesh, id);
                let next = (id + 1) % SHARDS;
                let tasks: Vec<_> = (0..TASKS)
                    .map(|i| glommio::spawn_local(hop(node.clone(), vec![next, 0, id, next], i)))
                    .collect();
                for (i, t) in tasks.into_iter().enumerate() {
                    assert_eq!(t.await, Ok(next * 1000 + i));
                }
                finished.fetch_add(1, Ordering::SeqCst);
                // Keep serving the others until every shard has its answers.
                while finished.load(Ordering::SeqCst) < SHARDS {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    join_within(handles, "nested calls");
    let sent: u64 = (0..SHARDS).map(|s| mesh.counters(s).calls_sent).sum();
    let received: u64 = (0..SHARDS).map(|s| mesh.counters(s).calls_received).sum();
    // Hops to the calling shard itself run inline and are not messages.
    assert_eq!(sent, received);
    assert!(sent >= (SHARDS * TASKS * 2) as u64, "{sent}");
}
