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
use spate_replication::quorum::{Durable, Persist, Quorum, QuorumConfig, SnapshotData};

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
            ..Default::default()
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
            ..Default::default()
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
                    ..Default::default()
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

#[test]
fn a_snapshot_bounds_the_log_and_a_restart_replays_only_what_follows_it() {
    run(|| async {
        let mem = MemStorage::new();
        let config = QuorumConfig::new(1, vec![1], 7);
        let (store, durable) = open(&mem).await;
        let mut q = Quorum::start(&config, durable).expect("start");
        let mut committed: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut proposed = 0;
        let mut snapshot_at = None;
        for _ in 0..400 {
            q.tick();
            if q.is_leader() && proposed < 40 {
                q.propose(format!("record {proposed}").into_bytes())
                    .expect("propose");
                proposed += 1;
            }
            while let Some(out) = q.ready() {
                store.persist(&out.persist).await.expect("persist");
                committed.extend(out.committed);
            }
            if snapshot_at.is_none() && committed.len() >= 25 {
                let at = committed[24].0;
                let c = q
                    .compact(at, b"the image at 25".to_vec(), 5)
                    .expect("compact");
                assert_eq!(c.keep_from, at - 4);
                store.compact(&c).await.expect("save the snapshot");
                snapshot_at = Some(at);
            }
        }
        let at = snapshot_at.expect("a snapshot was taken");
        assert_eq!(committed.len(), 40);
        assert!(q.compact(at, vec![], 0).is_err(), "not twice at one index");
        drop(store);
        mem.crash(CrashMode::DropUnsynced);
        let (store, durable) = open(&mem).await;
        let snap = durable.snapshot.clone().expect("the snapshot survives");
        assert_eq!((snap.index, &snap.data[..]), (at, &b"the image at 25"[..]));
        assert!(
            durable.entries.iter().all(|e| e.index >= at - 4),
            "the log let go of what the snapshot covers but the last entries"
        );
        let mut q = Quorum::start(&config, durable).expect("restart");
        let mut replayed = Vec::new();
        for _ in 0..50 {
            q.tick();
            while let Some(out) = q.ready() {
                store.persist(&out.persist).await.expect("persist");
                replayed.extend(out.committed);
            }
        }
        let after: Vec<_> = committed.into_iter().filter(|(i, _)| *i > at).collect();
        assert_eq!(
            replayed, after,
            "only what follows the snapshot is replayed"
        );
        assert_eq!(q.snapshot_index(), at);
        assert!(
            q.snapshot_for(1).is_some(),
            "an observer from the start gets it"
        );
        assert!(q.snapshot_for(at + 1).is_none());
        store.close().await;
    });
}

/// Installing a snapshot from the leader (it replaces the log) and saving one's own (the log
/// lets go of its start): a power loss at every step leaves the old state or the new one.
#[test]
fn a_power_loss_while_a_snapshot_is_saved_leaves_the_old_state_or_the_new() {
    use spate_engine::io::fault::{FaultPlan, FaultyStorage};
    for own in [false, true] {
        run(move || async move {
            let mut crash_after = 0;
            loop {
                assert!(crash_after < 500, "the snapshot was never saved");
                let mem = MemStorage::new();
                let plan = FaultPlan::new();
                let storage: Rc<dyn Storage> =
                    Rc::new(FaultyStorage::new(Rc::new(mem.clone()), plan.clone()));
                let (store, _) = QuorumStore::open(storage, &dir()).await.expect("open");
                let mut old = Durable::default();
                for i in 1..=10u64 {
                    let p = Persist {
                        entries: vec![entry(i, 1, &[i as u8; 2000])],
                        hard_state: Some(hs(1, 1, i)),
                        ..Default::default()
                    };
                    store.persist(&p).await.expect("persist");
                    old.apply(&p);
                }
                let mut new = old.clone();
                plan.crash_after(crash_after);
                let done = if own {
                    let c = spate_replication::quorum::Compaction {
                        snapshot: SnapshotData {
                            index: 8,
                            term: 1,
                            data: b"image at 8".to_vec(),
                        },
                        keep_from: 6,
                    };
                    new.compact(&c);
                    store.compact(&c).await.is_ok()
                } else {
                    let p = Persist {
                        snapshot: Some(SnapshotData {
                            index: 50,
                            term: 3,
                            data: b"image at 50".to_vec(),
                        }),
                        entries: vec![entry(51, 3, b"fifty-one")],
                        hard_state: Some(hs(3, 2, 51)),
                    };
                    new.apply(&p);
                    store.persist(&p).await.is_ok()
                };
                drop(store);
                mem.crash(CrashMode::DropUnsynced);
                let storage: Rc<dyn Storage> = Rc::new(mem.clone());
                let (store, got) = QuorumStore::open(storage, &dir())
                    .await
                    .unwrap_or_else(|e| panic!("crash point {crash_after}: {e}"));
                let covered = got.snapshot.as_ref().map_or(0, |s| s.index);
                let strip = |d: &Durable| {
                    let mut d = d.clone();
                    d.entries.retain(|e| e.index > covered);
                    d
                };
                match &got.snapshot {
                    None => assert_eq!(got, old, "crash point {crash_after}"),
                    Some(_) if own => {
                        assert_eq!(strip(&got), strip(&new), "crash point {crash_after}")
                    }
                    Some(s) => {
                        // The new snapshot, the log emptied, and the entry after it and the
                        // hard state either saved or not yet.
                        assert_eq!(s.index, 50, "crash point {crash_after}");
                        assert!(got.entries.len() <= 1);
                        assert!(got.entries.iter().all(|e| e.index == 51));
                    }
                }
                // The log goes on after whatever survived.
                let next = got.entries.last().map_or(covered, |e| e.index) + 1;
                store
                    .persist(&Persist {
                        entries: vec![entry(next, 4, b"next")],
                        ..Default::default()
                    })
                    .await
                    .unwrap_or_else(|e| panic!("crash point {crash_after}: append {next}: {e}"));
                if done {
                    assert_eq!(strip(&got), strip(&new), "a saved snapshot is durable");
                    store.close().await;
                    break;
                }
                store.close().await;
                crash_after += 1;
            }
            assert!(crash_after > 3, "only {crash_after} crash points");
        });
    }
}
