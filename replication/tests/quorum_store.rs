//! The quorum's durable store on the engine's storage: what `persist` returned for survives a
//! power loss, a replaced suffix stays replaced, and a node restarted from the store replays
//! exactly the committed entries it had.

use std::path::PathBuf;
use std::rc::Rc;

use glommio::{LocalExecutorBuilder, Placement};
use raft::eraftpb::{Entry, HardState};

use spate_engine::io::mem::{CrashMode, MemStorage};
use spate_engine::io::Storage;
use spate_replication::quorum::store::QuorumStore;
use spate_replication::quorum::{Durable, Persist, Quorum, QuorumConfig};

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(f)
        .expect("executor")
        .join()
        .expect("test body");
}

fn dir() -> PathBuf {
    PathBuf::from("/data/__cluster_metadata/0")
}

fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
    Entry {
        index,
        term,
        data: data.to_vec().into(),
        ..Default::default()
    }
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..Default::default()
    }
}

async fn open(mem: &MemStorage) -> (QuorumStore, Durable) {
    let storage: Rc<dyn Storage> = Rc::new(mem.clone());
    QuorumStore::open(storage, &dir()).await.expect("open")
}

#[test]
fn what_persist_returned_for_survives_a_power_loss_and_a_suffix_is_replaced() {
    run(|| async {
        let mem = MemStorage::new();
        let (store, durable) = open(&mem).await;
        assert_eq!(durable, Durable::default());
        let mut model = Durable::default();
        let first = Persist {
            entries: (1..=5).map(|i| entry(i, 1, &[i as u8; 40])).collect(),
            hard_state: Some(hs(1, 2, 3)),
        };
        store.persist(&first).await.expect("persist");
        model.apply(&first);
        // A new leader of term 2 replaces entries from 4 on.
        let second = Persist {
            entries: vec![
                entry(4, 2, b"four"),
                entry(5, 2, b"five"),
                entry(6, 2, b"six"),
            ],
            hard_state: Some(hs(2, 3, 4)),
        };
        store.persist(&second).await.expect("persist");
        model.apply(&second);
        drop(store);
        mem.crash(CrashMode::DropUnsynced);
        let (store, durable) = open(&mem).await;
        assert_eq!(durable, model);
        assert_eq!(durable.entries.len(), 6);
        assert_eq!(&durable.entries[3].data[..], b"four");
        store.close().await;
    });
}

#[test]
fn a_restarted_node_replays_what_it_had_committed() {
    run(|| async {
        let mem = MemStorage::new();
        let config = QuorumConfig::new(1, vec![1], 7);
        let (store, durable) = open(&mem).await;
        let mut q = Quorum::start(&config, durable).expect("start");
        let mut committed = Vec::new();
        let mut proposed = 0;
        for _ in 0..200 {
            q.tick();
            if q.is_leader() && proposed < 10 {
                q.propose(format!("record {proposed}").into_bytes())
                    .expect("propose");
                proposed += 1;
            }
            while let Some(out) = q.ready() {
                store.persist(&out.persist).await.expect("persist");
                committed.extend(out.committed);
            }
        }
        assert_eq!(
            committed.len(),
            10,
            "a single voter commits what it proposes"
        );
        drop(store);
        mem.crash(CrashMode::DropUnsynced);
        let (store, durable) = open(&mem).await;
        let mut q = Quorum::start(&config, durable).expect("restart");
        let mut replayed = Vec::new();
        for _ in 0..50 {
            q.tick();
            while let Some(out) = q.ready() {
                store.persist(&out.persist).await.expect("persist");
                replayed.extend(out.committed);
            }
        }
        assert_eq!(replayed, committed);
        store.close().await;
    });
}

#[test]
fn a_torn_power_loss_never_leaves_a_commit_past_the_log() {
    // Writes in flight when the power goes may land whole, partly or not at all; whatever
    // survives opens (or is refused with a message), and nothing persist returned for is
    // lost.
    for seed in 0..20u64 {
        run(move || async move {
            let mem = MemStorage::new();
            let (store, _) = open(&mem).await;
            let mut model = Durable::default();
            for i in 1..=8u64 {
                let p = Persist {
                    entries: vec![entry(i, 1, &[i as u8; 3000])],
                    hard_state: Some(hs(1, 1, i)),
                };
                store.persist(&p).await.expect("persist");
                model.apply(&p);
            }
            drop(store);
            mem.crash(CrashMode::Torn { seed });
            let (store, durable) = open(&mem).await;
            assert_eq!(durable, model, "seed {seed}");
            store.close().await;
        });
    }
}
