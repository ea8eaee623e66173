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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => {
            let spate = args.with_broker.then(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|p| p.parent().map(|d| d.join("spate")))
                    .unwrap_or_else(|| "spate".into())
            });
            run_command(args, spate.as_deref())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
