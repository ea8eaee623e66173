//! The partition log and its parts, one concept a file.

pub mod appender;
pub mod checkpoint;
pub mod clean;
mod enqueue;
pub mod epochs;
mod failure;
pub mod index;
pub mod index_file;
pub mod partition;
mod pending;
pub mod read;
pub mod readahead;
pub mod recovery;
mod retention;
mod roll;
pub mod scan;
pub mod segment;
pub mod swap;
pub mod sync_group;
pub(crate) mod tiered;
pub mod time_index;
mod timestamps;
mod truncate;
mod write;
