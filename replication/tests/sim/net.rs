//! A simulated network between numbered nodes.

use super::Rng;

#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Per mille of messages lost.
    pub drop: u64,
    /// Per mille of messages delivered twice.
    pub duplicate: u64,
    /// Delivery delay, in steps, drawn in [1, max_delay].
    pub max_delay: u64,
}

impl Faults {
    pub const NONE: Faults = Faults {
        drop: 0,
        duplicate: 0,
        max_delay: 1,
    };
}

pub struct Network<M> {
    in_flight: Vec<(u64, u64, u64, M)>,
    /// When set, messages between the two sides are lost.
    cut: Option<Vec<u64>>,
    pub faults: Faults,
}

impl<M: Clone> Network<M> {
    pub fn new(faults: Faults) -> Self {
        Network {
            in_flight: Vec::new(),
            cut: None,
            faults,
        }
    }

    /// Cuts the network between `side` and everyone else.
    pub fn partition(&mut self, side: Vec<u64>) {
        self.cut = Some(side);
    }

    /// Cuts the network between a random half (each node with probability 1/2) of `nodes`
    /// and the rest.
    pub fn partition_at_random(&mut self, rng: &mut Rng, nodes: &[u64]) {
        let side = nodes.iter().copied().filter(|_| rng.chance(500)).collect();
        self.partition(side);
    }

    pub fn heal(&mut self) {
        self.cut = None;
    }

    pub fn connected(&self, a: u64, b: u64) -> bool {
        match &self.cut {
            Some(side) => side.contains(&a) == side.contains(&b),
            None => true,
        }
    }

    pub fn send(&mut self, rng: &mut Rng, now: u64, from: u64, to: u64, msg: M) {
        if !self.connected(from, to) || rng.chance(self.faults.drop) {
            return;
        }
        let copies = if rng.chance(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = now + 1 + rng.below(self.faults.max_delay.max(1));
            self.in_flight.push((at, from, to, msg.clone()));
        }
    }

    /// The messages due at `now`, in an order drawn from `rng`; a cut made while they were
    /// in flight loses them too.
    pub fn deliver(&mut self, rng: &mut Rng, now: u64) -> Vec<(u64, u64, M)> {
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].0 <= now {
                let (_, from, to, m) = self.in_flight.swap_remove(i);
                if self.connected(from, to) {
                    due.push((from, to, m));
                }
            } else {
                i += 1;
            }
        }
        for i in (1..due.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            due.swap(i, j);
        }
        due
    }

    /// Drops everything addressed to `node` (it crashed; its sockets are gone).
    pub fn drop_to(&mut self, node: u64) {
        self.in_flight.retain(|(_, _, to, _)| *to != node);
    }
}
