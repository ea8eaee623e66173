//! The pieces of a deterministic cluster simulation: a seeded generator and a network that
//! delays, drops, duplicates and reorders messages and can be cut in two.

pub mod net;

use spate_replication::metadata::{BrokerId, BrokerRegistration, Endpoint};

/// A simulated broker's registration.
pub fn registration(id: u64, incarnation: [u8; 16], shards: u32) -> BrokerRegistration {
    BrokerRegistration {
        broker_id: id as BrokerId,
        incarnation,
        listener: Endpoint {
            host: "127.0.0.1".into(),
            port: 9090 + id as u16,
        },
        cluster_addr: format!("127.0.0.1:{}", 19090 + id),
        shards,
        replication_ports: vec![],
        rack: None,
    }
}

/// SplitMix64: small, seeded, reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    pub fn bytes16(&mut self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.next().to_le_bytes());
        out[8..].copy_from_slice(&self.next().to_le_bytes());
        out
    }
}

/// The seeds a test runs: `SPATE_SIM_SEEDS` of them (default `default`) from `SPATE_SIM_SEED`
/// on (default 1), so a failing seed can be replayed alone.
pub fn seeds(default: u64) -> std::ops::Range<u64> {
    let count = std::env::var("SPATE_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let first = std::env::var("SPATE_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    first..first + count
}
