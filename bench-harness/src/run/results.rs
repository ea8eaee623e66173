//! The figures a run returns: one [`Interval`] per second, the [`Overall`] figures of the
//! measured time, and the [`Results`] that hold them with the run's settings (what the report
//! prints and writes to `results.json`).

use serde::Serialize;

use super::BacklogResult;
use crate::stats::Percentiles;
use crate::workload::Workload;

#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    pub t_s: f64,
    pub publish_msgs_per_s: f64,
    pub publish_mb_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
    pub publish_errors: u64,
    pub publish_latency: Percentiles,
    pub end_to_end_latency: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overall {
    /// The measured time (after the warm-up); throughputs and latencies are over it.
    pub duration_s: f64,
    /// Messages produced and consumed over the whole run, warm-up included (every message
    /// produced must be consumed).
    pub produced: u64,
    pub consumed: u64,
    /// Messages each subscription should have read: produced x subscriptions per topic.
    pub expected_consumed: u64,
    pub publish_errors: u64,
    pub consume_errors: u64,
    /// Records consumed more than once (at-least-once redelivery, or a broker bug).
    pub duplicates: u64,
    pub publish_msgs_per_s: f64,
    pub publish_mb_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
    pub publish_latency: Percentiles,
    pub end_to_end_latency: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub workload: Workload,
    pub bootstrap: String,
    pub acks: String,
    pub compression: String,
    pub batch_bytes: usize,
    pub linger_ms: u64,
    pub max_in_flight: usize,
    pub max_rate: bool,
    pub target_rate_msgs_per_s: Option<f64>,
    /// Seconds run before measuring (their intervals are in `intervals` too).
    pub warmup_s: f64,
    /// With consumerBacklogSizeGB: when the backlog was built and how fast it drained.
    pub backlog: Option<BacklogResult>,
    pub topics: Vec<String>,
    pub intervals: Vec<Interval>,
    pub overall: Overall,
}
