//! One shard: a glommio executor pinned to a core that reads the probe file, opens and
//! recovers the partitions placed on it, replays the group offsets it coordinates, serves
//! Kafka on the shared port and, at shutdown, closes its partitions cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use spate_engine::io::dma::DmaStorage;
use spate_engine::registry::ShardLogs;
use spate_engine::LogConfig;
use spate_net::{listener, Cluster, Shard};

pub struct ShardSpec {
    pub shard_id: usize,
    pub shard_count: usize,
    pub cpu: usize,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub io_memory_bytes: usize,
    pub cache_bytes: usize,
    pub log: LogConfig,
    pub cluster: Arc<Cluster>,
    /// In a cluster: this shard's listener for followers' replication sessions.
    pub replication_listener: Option<std::net::TcpListener>,
    /// The shard mesh, shared by every shard.
    pub mesh: Arc<spate_net::shard::ShardMesh>,
    /// The data disk's free space, shared by every shard.
    pub space: Arc<spate_engine::space::DiskSpace>,
    /// The cold tier, shared by every shard, if the broker has one.
    pub tier: Option<spate_engine::tier::Tier>,
    /// How often the shard's tier pass runs.
    pub tier_interval: Duration,
    pub shutdown: Arc<AtomicBool>,
    pub ready: mpsc::Sender<Result<usize, String>>,
}

/// How often a shard looks at the shutdown flag.
const SHUTDOWN_POLL: Duration = Duration::from_millis(20);

/// Starts the shard's thread. The thread reports on `spec.ready` once it serves (or why it
/// could not start), and returns the number of partitions it could not close cleanly.
pub fn run_shard(spec: ShardSpec) -> Result<glommio::ExecutorJoinHandle<usize>, String> {
    let name = format!("spate-shard-{}", spec.shard_id);
    LocalExecutorBuilder::new(Placement::Fixed(spec.cpu))
        .name(&name)
        .io_memory(spec.io_memory_bytes)
        .spawn(move || async move { shard_main(spec).await })
        .map_err(|e| format!("cannot start {name}: {e}"))
}

async fn shard_main(spec: ShardSpec) -> usize {
    let storage = Rc::new(DmaStorage);
    if let Err(e) = spate_engine::shard::read_probe_file(&*storage, &spec.data_dir).await {
        let _ = spec
            .ready
            .send(Err(format!("shard {}: probe file: {e}", spec.shard_id)));
        return 0;
    }
    let mut logs = ShardLogs::new(
        spec.shard_id,
        &spec.data_dir,
        storage,
        spec.log.clone(),
        spec.cache_bytes,
    )
    .with_disk_space(spec.space.clone());
    if let Some(tier) = &spec.tier {
        // On a cluster replication says which replica writes the tier (the leader).
        logs = if spec.cluster.node_handle().is_some() {
            logs.with_replicated_tier(tier.clone())
        } else {
            logs.with_tier(tier.clone())
        };
    }
    let logs = Rc::new(logs);
    let mut assigned = spec
        .cluster
        .metadata()
        .assigned_to(spec.shard_id, &spec.cluster.broker_defaults);
    if spec.cluster.node_handle().is_some() {
        // A cluster member opens the partitions it is a replica of once it has the
        // cluster's metadata (`cluster_sync`).
        assigned.clear();
    }
    let reports = match logs.open_assigned(assigned).await {
        Ok(r) => r,
        Err(e) => {
            let _ = spec
                .ready
                .send(Err(format!("shard {}: {e}", spec.shard_id)));
            return logs.close_all().await;
        }
    };
    let replicas = spec.cluster.node_handle().map(|node| {
        spate_replication::pipeline::ShardReplicas::new(
            spec.cluster.node_id(),
            spec.shard_id as u32,
            node.cluster_id(),
            node,
            spec.cluster
                .node_handle()
                .map_or(30_000, |n| n.replica_lag_time_max_ms()),
        )
    });
    let shard = match Shard::start(
        spec.shard_id,
        spec.cluster.clone(),
        &spec.mesh,
        logs.clone(),
        replicas.clone(),
    ) {
        Ok(s) => s,
        Err(e) => {
            let _ = spec
                .ready
                .send(Err(format!("shard {}: {e}", spec.shard_id)));
            return logs.close_all().await;
        }
    };
    let offsets_restored = listener::restore_groups(&shard).await;
    let listener = match listener::bind_reuseport(spec.listen) {
        Ok(l) => l,
        Err(e) => {
            let _ = spec.ready.send(Err(format!(
                "shard {}: cannot listen on {}: {e}",
                spec.shard_id, spec.listen
            )));
            return logs.close_all().await;
        }
    };
    let cut: u64 = reports.iter().map(|r| r.bytes_cut).sum();
    let scanned: u64 = reports.iter().map(|r| r.bytes_scanned).sum();
    tracing::info!(
        shard = spec.shard_id,
        of = spec.shard_count,
        cpu = spec.cpu,
        partitions = reports.len(),
        recovered_bytes_scanned = scanned,
        recovered_bytes_cut = cut,
        offsets_restored,
        io_memory_bytes = spec.io_memory_bytes,
        "shard ready"
    );
    if let (Some(replicas), Some(l)) = (&replicas, spec.replication_listener) {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: the descriptor is a bound, listening, non-blocking TCP socket handed over
        // whole.
        let l = unsafe { glommio::net::TcpListener::from_raw_fd(l.into_raw_fd()) };
        spate_replication::pipeline::start(replicas, l);
        if spec.shard_id == 0 {
            glommio::spawn_local(spate_net::cluster_sync::follow_image(shard.clone())).detach();
        }
    }
    let _ = spec.ready.send(Ok(spec.shard_id));

    let retention = {
        let logs = logs.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(logs.retention_interval()).await;
                logs.apply_retention().await;
            }
        })
    };
    // The log cleaner of the shard's compacted partitions: one pass at a time, the next at
    // once while a partition is due, else after the backoff.
    logs.use_record_keys(Rc::new(spate_net::record_keys::KafkaRecordKeys));
    // In a task queue of its own with a tenth of the default queue's shares: while produce,
    // fetch and replication have work, the cleaner gets little of the shard's CPU. Its
    // latency class sets the executor's preemption timer to 1 ms while it runs (else 100
    // ms): the cleaner offers the core back every 128 records and between frames, and takes
    // the offer up once the timer fired or a socket has data (glommio's latency ring), the
    // reactor then polling. 250 µs measured no better (docs/BENCHMARKS.md).
    let cleaner = {
        let logs = logs.clone();
        let queue = glommio::executor().create_task_queue(
            glommio::Shares::Static(100),
            glommio::Latency::Matters(Duration::from_millis(1)),
            "cleaner",
        );
        glommio::spawn_local_into(
            async move {
                loop {
                    if logs.clean_pass().await.is_none() {
                        glommio::timer::sleep(logs.cleaner_backoff()).await;
                    }
                }
            },
            queue,
        )
        .ok()
    };
    // Uploads to the cold tier, and retention of tiered partitions (local and remote).
    let tiering = spec.tier.as_ref().map(|_| {
        let logs = logs.clone();
        let every = spec.tier_interval;
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(every).await;
                logs.tier_pass().await;
            }
        })
    });
    // Free space is otherwise sampled only when something writes: the reserve must come
    // back after space is freed even if nothing is produced (every shard ticks; the samples
    // themselves stay one per interval for the broker).
    let space_ticker = {
        let space = spec.space.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(spate_engine::space::CHECK_INTERVAL).await;
                space.free_bytes();
            }
        })
    };
    let accept = listener::accept_loop(shard.clone(), listener);
    let stop = async {
        while !spec.shutdown.load(Ordering::SeqCst) {
            glommio::timer::sleep(SHUTDOWN_POLL).await;
        }
    };
    futures_lite::future::or(accept, stop).await;
    if let Some(r) = &replicas {
        r.stop();
    }
    drop(retention);
    drop(cleaner);
    drop(tiering);
    drop(space_ticker);
    let unclean = logs.close_all().await;
    tracing::info!(shard = spec.shard_id, "shard stopped");
    unclean
}
