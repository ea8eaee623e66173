//! spate-replication: what makes several Spate brokers one cluster.
//!
//! Everything here is a sans-I/O state machine, driven by messages and ticks and answering
//! with what to send, persist and apply (as raft-rs itself is), so that one test process can
//! run a whole cluster on a simulated network and clock:
//! - [`divergence`]: where a returning follower's log parts from its leader's (KIP-101/279);
//! - [`isr`]: the leader's in-sync set and high watermark.

pub mod divergence;
pub mod isr;
