//! spate-bench: a load generator that speaks Kafka (through spate-client), so it
//! measures any Kafka-compatible broker. Workloads are OpenMessaging Benchmark YAML files;
//! producers and consumers run on their own pinned threads; publish and end-to-end latencies
//! go into HdrHistograms per interval and overall; the report is a table, a JSON file of every
//! figure and an SVG chart of latency percentiles over time.

pub mod broker;
pub mod cleanup;
pub mod cli;
pub mod cluster;
pub mod limits;
pub mod pin;
pub mod rate;
pub mod report;
pub mod run;
pub mod stats;
pub mod workload;

pub use run::{run, RunOptions};
pub use workload::Workload;
