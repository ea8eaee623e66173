//! Tiered storage: closed segments of a partition move to a cold tier (a second, slower disk
//! or an object store) and stay readable there.
//!
//! - [`store::ColdStore`] is the one small interface a cold tier implements (put, ranged get,
//!   list, delete; blocking, called off the shards), with [`fs::FsStore`], a directory on
//!   another disk written safely (temp file, fsync, rename, fsync of the directory).
//! - [`client::Tier`] is what a shard holds: the store runs on a few threads of its own, a
//!   shard sends it requests through a channel and awaits the answer, so a slow tier delays
//!   only the work that needs it; every call has a timeout and bounded retries.
//! - [`manifest::Manifest`] lists a partition's remote segments; a new version is written
//!   after a segment's objects, and only then may the local copy go.
//! - [`remote_file::RemoteFile`] reads a remote segment through the same frame validation as
//!   a local one (every frame's checksums checked).
//! - [`cache::ChunkCache`] keeps remote chunks on local disk within `tier.cache_bytes`.
//!
//! The partition log's side (upload, local retention, reads below the local start) is in
//! `log/tiered.rs`.

pub mod cache;
pub mod client;
pub mod fs;
pub mod manifest;
pub mod remote_file;
pub mod store;

pub use client::{Tier, TierSettings, TrafficSummary};
pub use manifest::{Manifest, RemoteSegment};
pub use store::ColdStore;
