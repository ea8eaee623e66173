//! `spate serve`: lock the data directory, load metadata, start one pinned shard per core,
//! wait for SIGINT/SIGTERM, then shut every shard down cleanly.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use spate_engine::shard::{memlock_limit, plan_io_memory, write_probe_file};
use spate_engine::space::DiskSpace;
use spate_engine::LogConfig;
use spate_net::metadata::MetadataStore;
use spate_net::Cluster;

use crate::config::BrokerConfig;
use crate::lock::lock_data_dir;
use crate::shard::{run_shard, ShardSpec};

/// CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the set we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|c| libc::CPU_ISSET(*c, &set))
            .collect()
    }
}

/// Checks that nothing else listens on `addr` (SO_REUSEPORT would otherwise let a second
/// broker share the port silently) and resolves port 0 to a real port.
fn claim_listen_address(addr: SocketAddr) -> Result<SocketAddr, String> {
    // A broker killed a moment ago releases its sockets only when its io_uring rings are torn
    // down, a few milliseconds later: retry briefly before calling the port taken.
    let deadline = Instant::now() + std::time::Duration::from_secs(2);
    let probe = loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => break l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => {
                return Err(format!("cannot listen on {addr}: {e}; another process (perhaps another broker) uses it; pick another with --listen"));
            }
        }
    };
    probe
        .local_addr()
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

pub fn serve(config: BrokerConfig) -> Result<(), String> {
    let started = Instant::now();
    // Handlers first: a SIGINT or SIGTERM that arrives while starting is kept and acted on
    // once the shards are up (a clean stop), instead of killing the process half-started.
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    let _lock = lock_data_dir(&data_dir)?;

    let cpus = allowed_cpus();
    let shards = if config.shards == 0 {
        cpus.len().max(1)
    } else {
        config.shards
    };
    if shards > cpus.len() {
        return Err(format!(
            "--shards {shards} is more than the {} cores this process may use; use at most {}",
            cpus.len(),
            cpus.len()
        ));
    }

    let space = Arc::new(
        DiskSpace::open(&data_dir, config.storage.min_free_bytes).map_err(|e| {
            format!(
                "cannot read the free space of the data disk {}: {e}",
                data_dir.display()
            )
        })?,
    );
    tracing::info!(
        min_free_bytes = space.min_free_bytes(),
        free_bytes = space.free_bytes(),
        disk_bytes = space.disk_bytes(),
        reserve_held = space.reserve_held(),
        "data disk: produce is refused below storage.min_free_bytes"
    );

    let mut store = MetadataStore::open(&data_dir).map_err(|e| e.to_string())?;
    store.use_disk_space(space.clone());
    let moved = store.fit_to_shards(shards).map_err(|e| e.to_string())?;
    if moved > 0 {
        tracing::warn!(
            moved,
            shards,
            "partitions placed on shards that no longer exist were moved"
        );
    }
    // A cluster member's offsets topic is the cluster's, created through its controller.
    if store.topic(spate_net::OFFSETS_TOPIC).is_none() && !config.cluster.is_set() {
        store
            .create_topic(
                spate_net::OFFSETS_TOPIC,
                config.kafka.offsets_topic_partitions,
                spate_net::metadata::offsets_topic_configs(config.kafka.offsets_segment_bytes),
                shards,
            )
            .map_err(|e| e.to_string())?;
    }

    let listen = claim_listen_address(config.listen)?;
    let mut net_config = config.kafka.net_config(listen)?;
    net_config.broker_keys_set = config.kafka_keys_set.clone();
    let tier = config.tier.open(&data_dir)?;
    if let Some(t) = &tier {
        tracing::info!(
            tier = t.describe(),
            "cold tier: closed segments of topics with remote.storage.enable go there"
        );
    }
    net_config.tiered = tier.is_some();
    let mut node_config = config
        .cluster
        .node_config(&data_dir, &net_config, shards, Vec::new())?;
    let mut replication_listeners: Vec<Option<std::net::TcpListener>> =
        (0..shards).map(|_| None).collect();
    if let Some(nc) = &mut node_config {
        let base = config.cluster.replication_port;
        for (s, slot) in replication_listeners.iter_mut().enumerate() {
            let port = if base == 0 {
                0
            } else {
                u16::try_from(usize::from(base) + s).map_err(|_| {
                    format!(
                        "cluster.replication_port {base} plus {shards} shards runs past port 65535"
                    )
                })?
            };
            let addr = std::net::SocketAddr::new(nc.cluster_listen.ip(), port);
            let l = std::net::TcpListener::bind(addr).map_err(|e| {
                format!("cannot listen for replication (shard {s}) on {addr}: {e}; free the port or set cluster.replication_port")
            })?;
            l.set_nonblocking(true)
                .map_err(|e| format!("replication listener {addr}: {e}"))?;
            let bound = l
                .local_addr()
                .map_err(|e| format!("replication listener {addr}: {e}"))?;
            nc.replication_ports.push(bound.port());
            *slot = Some(l);
        }
        tracing::info!(ports = ?nc.replication_ports, "replication listeners bound, one per shard");
        let user_topics = store
            .metadata()
            .topics
            .iter()
            .filter(|t| t.name != spate_net::OFFSETS_TOPIC)
            .count();
        spate_replication::node::identity::stamp(&data_dir, &nc.cluster_id(), user_topics)?;
    }
    let cluster = Cluster::new(
        net_config,
        shards,
        store,
        data_dir.clone(),
        config.log.clone(),
    );
    write_probe_file(&data_dir).map_err(|e| {
        format!(
            "cannot write the shard probe file in {}: {e}",
            data_dir.display()
        )
    })?;
    host_checks(&data_dir, shards);
    let (sync_scope, why) = config.log.sync_scope.resolve(&data_dir);
    tracing::info!("durable appends: {} ({why})", sync_scope.describe());
    let io_plan = plan_io_memory(memlock_limit(), shards);
    if let Some(w) = &io_plan.warning {
        tracing::warn!("{w}");
    }

    // The cluster node first: Metadata names the cluster's brokers from the first request.
    let node = match node_config {
        Some(nc) => {
            let (handle, join) = spate_replication::node::start(nc)?;
            cluster.attach_node(handle.clone());
            Some((handle, join))
        }
        None => None,
    };

    let mesh = spate_net::Shard::mesh(shards);
    let shutdown = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<usize, String>>();
    let mut handles = Vec::with_capacity(shards);
    for (shard_id, cpu) in cpus.iter().take(shards).enumerate() {
        let spec = ShardSpec {
            shard_id,
            shard_count: shards,
            cpu: *cpu,
            data_dir: data_dir.clone(),
            listen,
            io_memory_bytes: io_plan.io_memory_bytes as usize,
            cache_bytes: config.batch_cache_bytes as usize,
            log: LogConfig {
                sync_scope,
                ..config.log.clone()
            },
            cluster: cluster.clone(),
            replication_listener: replication_listeners
                .get_mut(shard_id)
                .and_then(Option::take),
            mesh: mesh.clone(),
            space: space.clone(),
            tier: tier.clone(),
            tier_interval: std::time::Duration::from_millis(config.tier.interval_ms),
            shutdown: shutdown.clone(),
            ready: ready_tx.clone(),
        };
        match run_shard(spec) {
            Ok(h) => handles.push(h),
            Err(e) => {
                shutdown.store(true, Ordering::SeqCst);
                for h in handles {
                    let _ = h.join();
                }
                return Err(e);
            }
        }
    }
    drop(ready_tx);

    let mut failure = None;
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert_with(|| "a shard stopped during start-up".to_string());
            }
        }
    }
    if failure.is_none() {
        tracing::info!(
            shards,
            listen = %listen,
            data_dir = %data_dir.display(),
            startup_ms = started.elapsed().as_millis() as u64,
            "spate is ready"
        );
        wait_for_signal(signals, &shutdown);
        tracing::info!("shutting down: flushing and checkpointing every partition");
    }
    shutdown.store(true, Ordering::SeqCst);
    if let Some((handle, join)) = node {
        handle.stop();
        match join.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert_with(|| format!("the cluster thread failed: {e}"));
            }
        }
    }
    let mut unclean = 0;
    for h in handles {
        match h.join() {
            Ok(n) => unclean += n,
            Err(e) => {
                failure.get_or_insert_with(|| format!("a shard failed: {e}"));
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if unclean > 0 {
        return Err(format!("{unclean} partition(s) could not be closed cleanly; they will be recovered at the next start"));
    }
    tracing::info!("clean shutdown");
    Ok(())
}

/// The quick host checks of the production profile: one warning line per failing check.
fn host_checks(data_dir: &std::path::Path, shards: usize) {
    let Ok(profile) = spate_tuning::Profile::load("production") else {
        return;
    };
    let ctx = spate_tuning::checks::Context {
        data_dir,
        shards,
        quick: true,
    };
    for r in spate_tuning::run_checks(&spate_tuning::Host::real(), &profile, &ctx) {
        match &r.status {
            spate_tuning::Status::Fail => tracing::warn!(
                check = %r.name,
                have = %r.have,
                want = %r.want,
                "host check failed: {}; fix: {}",
                r.why,
                r.fix.as_deref().unwrap_or("see spate tune --check")
            ),
            spate_tuning::Status::Unknown(why) => {
                tracing::debug!(check = %r.name, "host check unknown: {why}")
            }
            spate_tuning::Status::Pass => {}
        }
    }
}

fn wait_for_signal(mut signals: signal_hook::iterator::Signals, shutdown: &Arc<AtomicBool>) {
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "signal received");
    }
    shutdown.store(true, Ordering::SeqCst);
}
