//! `spate-bench`: run OpenMessaging Benchmark workloads against any Kafka-compatible broker.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spate_bench::cli::{run_command, RunArgs};

#[derive(Parser)]
#[command(
    name = "spate-bench",
    version,
    about = "Kafka load generator: OMB workloads, HdrHistogram latencies, JSON and SVG reports"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workload against a broker (or, with --with-broker, against a new local Spate).
    Run(RunArgs),
    /// Measure this machine's limits (fio durable writes, fdatasync latency, iperf3 loopback)
    /// and, given a results.json, print its figures as ratios of them.
    Limits {
        /// Directory on the disk to measure (the broker's data disk)
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
        /// Write size for fio, in bytes (the broker's write size under the workload)
        #[arg(long, default_value_t = 1 << 20)]
        write_size: usize,
        /// A results.json from `spate-bench run` to compare
        #[arg(long)]
        results: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => {
            let spate = (args.with_broker || args.with_cluster.is_some()).then(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|p| p.parent().map(|d| d.join("spate")))
                    .unwrap_or_else(|| "spate".into())
            });
            run_command(args, spate.as_deref())
        }
        Command::Limits {
            dir,
            write_size,
            results,
        } => spate_bench::cli::limits_command(&dir, write_size, results.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
