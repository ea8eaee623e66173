//! The data path of a cluster: per-core replication pipelines. A partition sits on the same
//! shard index on every replica (modulo a broker's own shard count), so shard s of a
//! follower keeps one session to shard s of each broker it follows, and carries every
//! partition it follows there in that one stream, with no hop to another shard on either
//! side. When shard counts differ, a follower shard has one session per leader shard its
//! partitions sit on; still no cross-shard hop, since each side's partition lives on the
//! shard that serves its end of the session.
//!
//! - [`wire`]: the frames, with the leader's batches passed verbatim as `Bytes`;
//! - [`replicas`]: the role of each partition of a shard and its state machine;
//! - `session`: the follower's side (divergence search, fetch, append, progress);
//! - `serve`: the leader's side (the shard's replication listener).

pub mod replicas;
mod serve;
mod session;
pub mod wire;

use std::rc::Rc;

pub use replicas::{AckError, Leading, PartitionKey, ShardReplicas, Transition};

/// Starts a shard's replication: the listener for followers' sessions and the tick.
pub fn start(replicas: &Rc<ShardReplicas>, listener: glommio::net::TcpListener) {
    glommio::spawn_local(serve::accept_loop(replicas.clone(), listener)).detach();
    glommio::spawn_local(replicas.clone().run_ticks()).detach();
}
