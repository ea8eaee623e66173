//! The command line of the harness, shared by `spate-bench` and `spate bench`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kafka_protocol::records::Compression;
use spate_client::Acks;

use crate::broker::EmbeddedBroker;
use crate::report;
use crate::run::{run, RunOptions};
use crate::workload::Workload;

/// The workload `spate bench` runs when none is given.
pub const DEFAULT_WORKLOAD: &str = include_str!("../workloads/simple-workload.yaml");

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// OpenMessaging Benchmark workload file (YAML) [default: the simple workload]
    pub workload: Option<PathBuf>,
    /// Broker to measure (host:port) [default: 127.0.0.1:9092; `spate bench` without it
    /// starts its own broker]
    #[arg(long, short = 'b')]
    pub bootstrap: Option<String>,
    /// Override a workload field: --set producerRate=10000 (repeatable; OMB field names)
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub overrides: Vec<String>,
    /// Acknowledgements: 0, 1 or all
    #[arg(long, default_value = "all", value_parser = ["0", "1", "all"])]
    pub acks: String,
    /// Most bytes of records per produce request
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_bytes: usize,
    /// How long a producer waits for more messages before sending a request (ms)
    #[arg(long, default_value_t = 1)]
    pub linger_ms: u64,
    /// Produce requests each producer keeps in flight at most (as Kafka's
    /// max.in.flight.requests.per.connection)
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// none, gzip, snappy, lz4, zstd
    #[arg(long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    pub compression: String,
    /// Ignore the workload's rate and send as fast as the broker acknowledges
    #[arg(long)]
    pub max_rate: bool,
    /// Run for this many seconds instead of testDurationMinutes
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Run this many seconds before measuring, instead of warmupDurationMinutes (OMB's
    /// default is 1 minute; absent from the workload: no warm-up)
    #[arg(long)]
    pub warmup_s: Option<f64>,
    /// Where results.json and latency.svg go
    #[arg(long, default_value = "spate-bench-results")]
    pub out: PathBuf,
    /// Start a broker on a temporary data directory and measure it (stopped, and the directory
    /// removed, when the run ends or is interrupted by Ctrl-C or SIGTERM)
    #[arg(long)]
    pub with_broker: bool,
    /// Start a local cluster of this many brokers (`spate cluster --nodes N` on free ports
    /// and a temporary data directory; topics get min(N, 3) replicas) and measure it
    #[arg(long, conflicts_with = "with_broker")]
    pub with_cluster: Option<usize>,
    /// The embedded broker's TOML configuration file (`spate serve --config`)
    #[arg(long)]
    pub broker_config: Option<PathBuf>,
    /// No progress line
    #[arg(long)]
    pub quiet: bool,
}

/// Runs a workload; with `spate` given, against an embedded broker started from it.
pub fn run_command(args: RunArgs, spate: Option<&Path>) -> Result<(), String> {
    spate_tuning::alloc::keep_freed_memory();
    let mut w = match &args.workload {
        Some(p) => Workload::load(p).map_err(|e| e.to_string())?,
        None => Workload::parse(DEFAULT_WORKLOAD).map_err(|e| format!("built-in workload: {e}"))?,
    };
    w.apply_overrides(&args.overrides)
        .map_err(|e| e.to_string())?;
    w.validate().map_err(|e| e.to_string())?;
    if let Some(d) = args.duration_s {
        if d.is_nan() || d <= 0.0 {
            return Err(format!("--duration-s {d}: must be positive"));
        }
    }
    if let Some(d) = args.warmup_s {
        if d.is_nan() || d < 0.0 {
            return Err(format!("--warmup-s {d}: must be zero or more"));
        }
    }
    if args.max_in_flight == 0 {
        return Err("--max-in-flight 0: a producer needs at least 1 request in flight".into());
    }
    if args.broker_config.is_some() && spate.is_none() {
        return Err(
            "--broker-config configures the embedded broker: add --with-broker, or configure \
             the broker at --bootstrap itself"
                .into(),
        );
    }
    let cluster = match (spate, args.with_cluster) {
        (Some(bin), Some(nodes)) => {
            let tmp = crate::cleanup::temp_data_dir()?;
            let c = match crate::cluster::LocalCluster::start(bin, &tmp, nodes) {
                Ok(c) => c,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(e);
                }
            };
            crate::cleanup::stop_on_signal(c.pid(), tmp.clone())?;
            eprintln!(
                "spate-bench: local cluster of {nodes} brokers at {} (data in {})",
                c.bootstrap,
                c.data_dir.display()
            );
            Some(c)
        }
        _ => None,
    };
    let broker = match spate.filter(|_| cluster.is_none()) {
        Some(bin) => {
            let temp = std::env::temp_dir();
            for dir in crate::cleanup::remove_stale_data_dirs(&temp) {
                eprintln!(
                    "spate-bench: removed {}, left by an earlier run that was killed",
                    dir.display()
                );
            }
            let tmp = crate::cleanup::temp_data_dir()?;
            let b = match EmbeddedBroker::start(bin, &tmp, args.broker_config.as_deref()) {
                Ok(b) => b,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(e);
                }
            };
            crate::cleanup::stop_on_signal(b.pid(), tmp.clone())?;
            eprintln!(
                "spate-bench: embedded broker at {} (data in {}; durable appends: {})",
                b.bootstrap,
                b.data_dir.display(),
                b.durability.as_deref().unwrap_or("not reported")
            );
            Some(b)
        }
        None => None,
    };
    let o = RunOptions {
        bootstrap: match (&broker, &cluster) {
            (Some(b), _) => b.bootstrap.clone(),
            (None, Some(c)) => c.bootstrap.clone(),
            (None, None) => args
                .bootstrap
                .clone()
                .unwrap_or_else(|| "127.0.0.1:9092".into()),
        },
        acks: match args.acks.as_str() {
            "0" => Acks::None,
            "1" => Acks::Leader,
            _ => Acks::All,
        },
        batch_bytes: args.batch_bytes.max(1),
        linger: Duration::from_millis(args.linger_ms),
        max_in_flight: args.max_in_flight,
        compression: match args.compression.as_str() {
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => Compression::None,
        },
        max_rate: args.max_rate,
        duration: args.duration_s.map(Duration::from_secs_f64),
        warmup: args.warmup_s.map(Duration::from_secs_f64),
        progress: !args.quiet,
        ..RunOptions::default()
    };
    let results = run(&w, &o).map_err(|e| e.to_string());
    if let Some(b) = broker {
        let dir = b.data_dir.clone();
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let Some(c) = cluster {
        let dir = c.data_dir.clone();
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let results = results?;
    println!("{}", report::table(&results));
    let (json, chart) = report::write_all(&results, &args.out)?;
    println!("figures: {}  chart: {}", json.display(), chart.display());
    let o = &results.overall;
    if o.publish_errors > 0 || o.consume_errors > 0 || o.duplicates > 0 {
        return Err(format!(
            "{} publish and {} consume errors, {} records consumed twice",
            o.publish_errors, o.consume_errors, o.duplicates
        ));
    }
    Ok(())
}

/// `spate-bench limits`: the machine's limits, and a run's figures as ratios of them.
pub fn limits_command(dir: &Path, write_size: usize, results: Option<&Path>) -> Result<(), String> {
    let l = crate::limits::measure(dir, write_size)?;
    println!("| limit | value |");
    println!("|---|---|");
    println!(
        "| fio durable writes, {} B + fdatasync each | {:.1} MB/s |",
        l.write_size_bytes, l.durable_write_mb_per_s
    );
    println!(
        "| fdatasync latency (4 KiB writes) p50 / p99 | {:.3} / {:.3} ms |",
        l.fdatasync_p50_ms, l.fdatasync_p99_ms
    );
    println!(
        "| iperf3 loopback, 1 stream | {:.1} MB/s |",
        l.loopback_mb_per_s
    );
    if let Some(path) = results {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let r: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let o = &r["overall"];
        let publish = o["publish_mb_per_s"].as_f64().unwrap_or(0.0);
        let consume = o["consume_mb_per_s"].as_f64().unwrap_or(0.0);
        println!();
        println!(
            "| {} (acks={}) | MB/s | ratio |",
            r["workload"]["name"].as_str().unwrap_or("run"),
            r["acks"].as_str().unwrap_or("?")
        );
        println!("|---|---|---|");
        println!(
            "| publish / durable-write limit | {publish:.1} | {:.0}% |",
            100.0 * publish / l.durable_write_mb_per_s.max(1e-9)
        );
        println!(
            "| publish / loopback | {publish:.1} | {:.0}% |",
            100.0 * publish / l.loopback_mb_per_s.max(1e-9)
        );
        println!(
            "| consume / loopback | {consume:.1} | {:.0}% |",
            100.0 * consume / l.loopback_mb_per_s.max(1e-9)
        );
    }
    let json = serde_json::to_string_pretty(&l).map_err(|e| e.to_string())?;
    println!();
    println!("{json}");
    Ok(())
}
