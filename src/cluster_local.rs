//! `spate cluster --nodes N`: a local cluster of N brokers as N `spate serve` processes on
//! 127.0.0.1 (Kafka ports from `--base-port`, cluster ports 100 above; data under
//! `--data-dir`), every one a voter. Prints the bootstrap list once all are ready, and stops
//! all of them (SIGTERM, then SIGKILL after 20 s) on Ctrl-C or SIGTERM, or when one exits.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct LocalClusterArgs {
    /// Brokers to start (each a voter of the metadata quorum)
    #[arg(long)]
    pub nodes: usize,
    /// Where their data directories go (node-1, node-2, ...)
    #[arg(long, default_value = "./spate-cluster")]
    pub data_dir: PathBuf,
    /// Kafka port of node 1; node i listens on base + i - 1 and for the cluster 100 above.
    /// 0: free ports, whatever they are
    #[arg(long, default_value_t = 9092)]
    pub base_port: u16,
    /// Shards of each broker
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Replicas of a topic created without a factor (auto-created, or CreateTopics with -1):
    /// the brokers' default.replication.factor [default: the node count, at most 3]
    #[arg(long)]
    pub replication_factor: Option<u32>,
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn ports(args: &LocalClusterArgs) -> Result<Vec<(u16, u16)>, String> {
    (0..args.nodes)
        .map(|i| {
            if args.base_port == 0 {
                Ok((free_port()?, free_port()?))
            } else {
                let kafka = u32::from(args.base_port) + i as u32;
                let cluster = kafka + 100;
                if cluster > u32::from(u16::MAX) {
                    return Err(format!(
                        "--base-port {} leaves no room for {} nodes' ports",
                        args.base_port, args.nodes
                    ));
                }
                Ok((kafka as u16, cluster as u16))
            }
        })
        .collect()
}

fn stop_all(children: &mut [(usize, Child)]) {
    for (_, c) in children.iter() {
        // SAFETY: kill(2) on a child's pid.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for (i, c) in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(status)) => {
                    eprintln!("node {i} stopped ({status})");
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    eprintln!("node {i} killed: it did not stop within 20 s");
                    break;
                }
            }
        }
    }
}

fn wait_listening(port: u16, child: &mut Child, node: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "node {node} exited at start ({status}); see its log above"
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "node {node} does not listen on 127.0.0.1:{port} after 30 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run(args: LocalClusterArgs) -> Result<(), String> {
    if args.nodes == 0 || args.nodes > 9 {
        return Err(format!("--nodes {}: between 1 and 9", args.nodes));
    }
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the spate binary: {e}"))?;
    let ports = ports(&args)?;
    let voters: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
        .collect();
    let voters = voters.join(",");
    let factor = args.replication_factor.unwrap_or(args.nodes.min(3) as u32);
    if factor == 0 || factor as usize > args.nodes {
        return Err(format!(
            "--replication-factor {factor}: between 1 and the {} nodes",
            args.nodes
        ));
    }
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", display(&args.data_dir)))?;
    // The brokers' shared settings, as a config file each is started with.
    let config = args.data_dir.join("cluster.toml");
    std::fs::write(
        &config,
        format!("# Written by `spate cluster`.\n[kafka]\ndefault_replication_factor = {factor}\n"),
    )
    .map_err(|e| format!("cannot write {}: {e}", display(&config)))?;
    let mut children: Vec<(usize, Child)> = Vec::new();
    for (i, (kafka, _)) in ports.iter().enumerate() {
        let node = i + 1;
        let dir = args.data_dir.join(format!("node-{node}"));
        let child = Command::new(&exe)
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", &format!("127.0.0.1:{kafka}")])
            .args(["--shards", &args.shards.to_string()])
            .args(["--node-id", &node.to_string(), "--voters", &voters])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start node {node}: {e}"));
        match child {
            Ok(c) => children.push((node, c)),
            Err(e) => {
                stop_all(&mut children);
                return Err(e);
            }
        }
    }
    for ((node, child), (kafka, _)) in children.iter_mut().zip(&ports) {
        if let Err(e) = wait_listening(*kafka, child, *node) {
            stop_all(&mut children);
            return Err(e);
        }
    }
    let bootstrap: Vec<String> = ports
        .iter()
        .map(|(k, _)| format!("127.0.0.1:{k}"))
        .collect();
    println!("bootstrap: {}", bootstrap.join(","));
    println!(
        "{} brokers (data in {}); the metadata quorum forms in a few seconds: spate cluster status -b {}. Topics get {factor} replicas unless created with another factor. Ctrl-C stops them all.",
        args.nodes,
        display(&args.data_dir),
        bootstrap[0]
    );
    let handle = signals.handle();
    let watcher = std::thread::spawn(move || {
        let mut signals = signals;
        signals.forever().next()
    });
    loop {
        if watcher.is_finished() {
            break;
        }
        if let Some(node) = children
            .iter_mut()
            .find_map(|(n, c)| matches!(c.try_wait(), Ok(Some(_))).then_some(*n))
        {
            eprintln!("node {node} exited: stopping the others");
            handle.close();
            stop_all(&mut children);
            return Err(format!("node {node} exited"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_all(&mut children);
    Ok(())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
