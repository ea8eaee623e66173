//! `spate`: the broker and its command line.

mod cluster_local;
mod cmd;
mod config;
mod lock;
mod serve;
mod shard;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "spate",
    version,
    about = "Spate: a Kafka-compatible event log, thread-per-core on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the broker.
    Serve(ServeArgs),
    /// Create, list, describe or delete topics (on any Kafka-compatible broker).
    Topic {
        #[command(flatten)]
        conn: cmd::Conn,
        #[command(subcommand)]
        command: cmd::topic::TopicCommand,
    },
    /// Write lines from standard input to a topic, one record per line.
    Produce {
        #[command(flatten)]
        conn: cmd::Conn,
        #[command(flatten)]
        args: cmd::produce::ProduceArgs,
    },
    /// Print a topic's records, one per line.
    Consume {
        #[command(flatten)]
        conn: cmd::Conn,
        #[command(flatten)]
        args: cmd::consume::ConsumeArgs,
    },
    /// Run a short benchmark (10 s of the OMB simple workload unless told otherwise) against
    /// a broker started on a temporary data directory, or against --bootstrap.
    Bench(spate_bench::cli::RunArgs),
    /// Check this host against a tuning profile (--check), or tune it (--apply, as root).
    Tune(TuneArgs),
    /// Start a local cluster (--nodes N), or show a cluster's brokers, controller and
    /// under-replicated partitions (status).
    ///
    /// `spate cluster --nodes 3` starts a local cluster of three brokers on 127.0.0.1 (ports
    /// 9092-9094, data under ./spate-cluster) until Ctrl-C.
    #[command(args_conflicts_with_subcommands = true)]
    Cluster {
        #[command(flatten)]
        conn: cmd::Conn,
        #[command(subcommand)]
        command: Option<cmd::cluster::ClusterCommand>,
        #[command(flatten)]
        local: Option<cluster_local::LocalClusterArgs>,
    },
    /// The cold tier: each tiered partition's local and remote bytes and offsets (status).
    Tier {
        #[command(flatten)]
        conn: cmd::Conn,
        #[command(subcommand)]
        command: cmd::tier::TierCommand,
    },
    /// List or describe consumer groups.
    Group {
        #[command(flatten)]
        conn: cmd::Conn,
        #[command(subcommand)]
        command: cmd::group::GroupCommand,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Data directory [default: ./spate-data, or `data_dir` in the config file]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9092, or `listen` in the config file]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address clients are told to connect to (host:port) [default: the listen address, or
    /// `kafka.advertise` in the config file]
    #[arg(long)]
    advertise: Option<String>,
    /// Number of shards, one per core [default: every available core]
    #[arg(long)]
    shards: Option<usize>,
    /// TOML configuration file; every key is documented in docs/OPERATIONS.md
    #[arg(long)]
    config: Option<PathBuf>,
    /// This broker's node id in a cluster (one of the ids in --voters) [default:
    /// `cluster.node_id`; none: a single node]
    #[arg(long)]
    node_id: Option<i32>,
    /// Where this broker listens for the other brokers [default: its address in --voters]
    #[arg(long)]
    cluster_listen: Option<SocketAddr>,
    /// The metadata quorum's voters, ID@HOST:PORT,... (e.g. 1@10.0.0.1:9192,2@10.0.0.2:9192,
    /// 3@10.0.0.3:9192) [default: `cluster.voters`; none: a single node]
    #[arg(long)]
    voters: Option<String>,
    /// A directory for the cold tier (typically on another, slower disk): closed segments of
    /// topics with remote.storage.enable=true go there; on a cluster every broker names the
    /// same one [default: `tier.path` with `tier.kind = "fs"`; none: no tier]
    #[arg(long)]
    tier_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
#[group(required = true, multiple = false, id = "mode")]
struct TuneMode {
    /// Report each check: what the host has, what the profile wants, how to fix it
    #[arg(long)]
    check: bool,
    /// Write the sysctl file, udev rule, systemd drop-in and boot unit, and apply them
    #[arg(long)]
    apply: bool,
}

#[derive(clap::Args)]
struct TuneArgs {
    #[command(flatten)]
    mode: TuneMode,
    /// production, benchmark, or a profile file (see tuning/profiles/)
    #[arg(long, default_value = "production")]
    profile: String,
    /// The broker's data directory (its disk and file system are checked)
    #[arg(long, default_value = "./spate-data")]
    data_dir: PathBuf,
    /// Shards the broker will run (for the memlock check) [default: every core]
    #[arg(long)]
    shards: Option<usize>,
    /// Read /proc and /sys under this directory instead of / (tests)
    #[arg(long, hide = true)]
    root: Option<PathBuf>,
}

fn tune_command(args: TuneArgs) -> Result<bool, String> {
    let host = match &args.root {
        Some(r) => spate_tuning::Host::at(r),
        None => spate_tuning::Host::real(),
    };
    let profile = spate_tuning::Profile::load(&args.profile)?;
    if args.mode.apply {
        let changes = spate_tuning::apply::apply(&host, &profile, &args.data_dir)?;
        for c in changes {
            println!(
                "{} {}",
                if c.changed { "changed  " } else { "unchanged" },
                c.path
            );
        }
        return Ok(true);
    }
    let shards = args
        .shards
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let ctx = spate_tuning::checks::Context {
        data_dir: &args.data_dir,
        shards,
        quick: false,
    };
    let results = spate_tuning::run_checks(&host, &profile, &ctx);
    print!("{}", spate_tuning::checks::table(&results));
    let all_pass = results
        .iter()
        .all(|r| r.status == spate_tuning::Status::Pass);
    println!(
        "profile {}: {} of {} checks pass",
        profile.name,
        results
            .iter()
            .filter(|r| r.status == spate_tuning::Status::Pass)
            .count(),
        results.len()
    );
    Ok(all_pass)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve_command(args),
        Command::Topic { conn, command } => cmd::topic::run(&conn, command),
        Command::Produce { conn, args } => cmd::produce::run(&conn, args),
        Command::Consume { conn, args } => cmd::consume::run(&conn, args),
        Command::Group { conn, command } => cmd::group::run(&conn, command),
        Command::Tier { conn, command } => cmd::tier::run(&conn, command),
        Command::Cluster {
            conn,
            command,
            local,
        } => match (command, local) {
            (Some(command), _) => cmd::cluster::run(&conn, command),
            (None, Some(local)) => cluster_local::run(local),
            (None, None) => Err(
                "say what to do: spate cluster --nodes 3 (a local cluster), or spate cluster status"
                    .into(),
            ),
        },
        Command::Tune(args) => match tune_command(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Bench(mut args) => {
            args.duration_s.get_or_insert(10.0);
            if args.bootstrap.is_some() {
                spate_bench::cli::run_command(args, None)
            } else {
                match std::env::current_exe() {
                    Ok(me) => spate_bench::cli::run_command(args, Some(&me)),
                    Err(e) => Err(format!(
                        "cannot find the spate binary to start a broker: {e}"
                    )),
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn serve_command(args: ServeArgs) -> Result<(), String> {
    let mut config = match &args.config {
        Some(path) => config::BrokerConfig::load(path)?,
        None => config::BrokerConfig::default(),
    };
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(a) = args.advertise {
        config.kafka.advertise = a;
    }
    if let Some(n) = args.node_id {
        config.cluster.node_id = Some(n);
    }
    if let Some(l) = args.cluster_listen {
        config.cluster.listen = Some(l);
    }
    if let Some(v) = args.voters {
        config.cluster.voters = v;
    }
    if let Some(s) = args.shards {
        if s == 0 {
            return Err("--shards must be at least 1 (leave it out to use every core)".into());
        }
        config.shards = s;
    }
    if let Some(d) = args.tier_dir {
        config.tier.kind = "fs".into();
        config.tier.path = Some(d);
    }
    config.validate()?;
    spate_tuning::alloc::keep_freed_memory();
    serve::serve(config)
}
