//! Many members joining, heartbeating, revoking late, leaving and crashing, and topics
//! growing, in a seeded random order: after every step no partition is consumed by two
//! members at once (what the clients consume, not only what the coordinator believes), and in
//! the end every partition is consumed, by exactly one member, in balance.

use super::*;

/// A small deterministic generator (PCG-style LCG), so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

/// A client as a real consumer behaves: it consumes what it applied, applies a new
/// assignment when it gets round to it (revoking what is no longer there), and reports what
/// it consumes.
struct Client {
    id: String,
    epoch: i32,
    consuming: Assignment,
    pending: Option<Assignment>,
}

fn topics(n: u32) -> Vec<(&'static str, u8, u32)> {
    vec![("t", 1, n), ("u", 2, 3)]
}

fn heartbeat(b: &mut Bench, c: &mut Client, apply: bool) {
    if apply {
        if let Some(a) = c.pending.take() {
            c.consuming = a;
        }
    }
    match b.send(&beat(&c.id, c.epoch, &c.consuming)) {
        Ok(a) => {
            c.epoch = a.member_epoch;
            if let Some(asg) = a.assignment {
                c.pending = Some(asg);
            }
        }
        Err(e) => panic!("{} refused: {e:?}", c.id),
    }
}

fn check_disjoint(clients: &[Client], seed: u64, step: usize) {
    for (i, a) in clients.iter().enumerate() {
        for c in &clients[i + 1..] {
            assert!(
                !a.consuming.overlaps(&c.consuming),
                "seed {seed} step {step}: {} and {} both consume {}",
                a.id,
                c.id,
                a.consuming.intersection(&c.consuming)
            );
        }
    }
}

fn run(seed: u64) {
    let mut rng = Rng(seed);
    let mut partitions = 4;
    let mut b = Bench::new(&topics(partitions));
    let mut clients: Vec<Client> = Vec::new();
    let mut next_id = 0;
    for step in 0..300 {
        match rng.below(10) {
            0 | 1 if clients.len() < 5 => {
                let id = format!("m{next_id}");
                next_id += 1;
                let a = b.ok(&join(&id, &["t", "u"]));
                clients.push(Client {
                    id,
                    epoch: a.member_epoch,
                    consuming: Assignment::new(),
                    pending: a.assignment,
                });
            }
            2 if clients.len() > 1 => {
                // Leaves: stops consuming, then says so.
                let c = clients.remove(rng.below(clients.len()));
                b.ok(&HeartbeatRequest {
                    member_epoch: LEAVE_EPOCH,
                    ..beat(&c.id, c.epoch, &Assignment::new())
                });
            }
            3 if clients.len() > 1 => {
                // Crashes: it consumes nothing more; the coordinator finds out when its
                // session expires.
                let c = clients.remove(rng.below(clients.len()));
                b.g.fence(&c.id, &b.image, b.version);
                b.g.check_exclusive().unwrap();
            }
            4 if partitions < 12 => {
                partitions += 1;
                b.set_topics(&topics(partitions));
            }
            _ if !clients.is_empty() => {
                let i = rng.below(clients.len());
                let apply = rng.below(2) == 0;
                heartbeat(&mut b, &mut clients[i], apply);
            }
            _ => {}
        }
        check_disjoint(&clients, seed, step);
    }
    // Everyone catches up.
    for _ in 0..20 {
        for c in clients.iter_mut() {
            heartbeat(&mut b, c, true);
        }
        check_disjoint(&clients, seed, 300);
    }
    if clients.is_empty() {
        return;
    }
    assert_eq!(b.g.state(), ConsumerGroupState::Stable, "seed {seed}");
    let total: usize = clients.iter().map(|c| c.consuming.len()).sum();
    assert_eq!(
        total,
        partitions as usize + 3,
        "seed {seed}: every partition consumed"
    );
    let counts: Vec<usize> = clients.iter().map(|c| c.consuming.len()).collect();
    let (min, max) = (counts.iter().min(), counts.iter().max());
    assert!(
        max.zip(min).is_some_and(|(a, b)| a - b <= 1),
        "seed {seed}: {counts:?}"
    );
    for c in &clients {
        assert_eq!(c.consuming, b.g.members[&c.id].assigned, "seed {seed}");
    }
}

#[test]
fn no_partition_is_consumed_twice_during_rebalances() {
    for seed in 0..200 {
        run(seed);
    }
}
