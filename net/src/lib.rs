//! spate-net: the Kafka face of Spate. Every shard listens on the same port (SO_REUSEPORT);
//! a connection stays on the shard that accepted it, and a request for a partition owned by
//! another shard runs on the owner (a closure sent over the shard mesh) and comes back as
//! `Bytes`, without copying record data. The Kafka client used by the command line and
//! spate-bench is its own crate, spate-client, which this one uses for the bounded decoding
//! of record batches (`spate_client::decompress`).
//!
//! Runtime-specific code (glommio) lives in `listener` and in the mesh crate (`spate_mesh`);
//! handlers read as plain async Rust.

pub mod batch;
pub mod cluster;
pub mod cluster_sync;
pub mod codec;
mod commit_log;
mod commit_store;
pub mod config;
mod conn;
pub mod fetch_response;
mod frame_read;
#[doc(hidden)]
pub mod fuzzing;
mod gather_write;
mod groups;
pub mod handlers;
#[doc(hidden)]
pub mod hostile;
pub mod listener;
pub mod metadata;
pub mod placement;
pub mod produce_policy;
mod producers;
pub mod record_keys;
pub mod shard;
pub mod topic_configs;
mod topic_controller;
pub mod versions;

pub use cluster::Cluster;
pub use config::NetConfig;
pub use handlers::{dispatch, Outcome};
pub use shard::Shard;
// The bounded record decoder is shared with the client and lives there; the broker's modules
// name it `crate::decompress`.
use spate_client::decompress;

/// The one broker of a single-node Spate.
pub const BROKER_ID: i32 = 0;
/// The leader epoch of every partition: one broker leads each partition from its creation and
/// no other ever does, so the epoch never moves. Metadata and DescribeTopicPartitions announce
/// it; a Fetch whose `current_leader_epoch` differs is refused with it.
pub const LEADER_EPOCH: i32 = 0;
/// Internal topic holding committed consumer group offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
