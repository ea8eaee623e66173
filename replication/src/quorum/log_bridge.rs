//! raft-rs logs through slog; Spate logs through tracing. This drain forwards raft's records
//! to tracing (target `spate::raft`), with their key-value pairs, at the matching level.

use std::fmt::Write as _;

use slog::{Drain, Level, OwnedKVList, Record, KV};

pub struct TracingDrain;

struct Pairs(String);

impl slog::Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut pairs = Pairs(String::new());
        let _ = record.kv().serialize(record, &mut pairs);
        let _ = values.serialize(record, &mut pairs);
        let msg = record.msg();
        let kv = pairs.0;
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "spate::raft", "{msg}{kv}"),
            Level::Warning => tracing::warn!(target: "spate::raft", "{msg}{kv}"),
            // raft-rs reports every vote and term change at info: debug here; the node logs
            // what an operator needs (leadership, registrations) itself.
            Level::Info | Level::Debug => tracing::debug!(target: "spate::raft", "{msg}{kv}"),
            Level::Trace => tracing::trace!(target: "spate::raft", "{msg}{kv}"),
        }
        Ok(())
    }
}

/// A logger for one quorum node.
pub fn logger(node: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("raft_node" => node))
}
