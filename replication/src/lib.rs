//! spate-replication: what makes several Spate brokers one cluster.
//!
//! Everything here but the quorum's store and [`node`] is a sans-I/O state machine, driven by messages and
//! ticks and answering with what to send, persist and apply (as raft-rs itself is), so that
//! one test process can run a whole cluster on a simulated network and clock
//! (`tests/*_sim.rs`):
//! - [`metadata`]: the records of the cluster metadata log and the image they build;
//! - [`controller`]: what the quorum's leader decides (registration, fencing, elections,
//!   placement, ISR changes);
//! - [`isr`]: a partition leader's in-sync set and high watermark;
//! - [`follower`]: a follower of one partition: divergence search, then fetching;
//! - [`divergence`]: where a returning follower's log parts from its leader's (KIP-101/279);
//! - [`quorum`]: one node of the metadata quorum, on raft-rs, and its durable store;
//! - [`voters`]: the voter list as operators write it;
//! - [`node`]: all of it driven for real: the cluster thread of a broker;
//! - [`pipeline`]: the data path, per shard: leaders serve follower sessions, followers
//!   fetch, append and report what they made durable.

pub mod controller;
pub mod divergence;
pub mod follower;
pub mod fuzzing;
pub mod isr;
pub mod metadata;
pub mod node;
pub mod pipeline;
pub mod quorum;
pub mod voters;
