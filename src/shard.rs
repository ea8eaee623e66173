//! One shard: a glommio executor pinned to a core that reads the probe file, opens and
//! recovers the partitions placed on it, listens on the shared port and, at shutdown, closes
//! its partitions cleanly. This and `spate_engine::io::dma` are where glommio is named.

use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::os::unix::io::FromRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use spate_engine::io::dma::DmaStorage;
use spate_engine::metadata::Metadata;
use spate_engine::registry::ShardLogs;
use spate_engine::LogConfig;

pub struct ShardSpec {
    pub shard_id: usize,
    pub shard_count: usize,
    pub cpu: usize,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub io_memory_bytes: usize,
    pub cache_bytes: usize,
    pub log: LogConfig,
    pub metadata: Arc<Metadata>,
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

fn bind_reuseport(addr: SocketAddr) -> std::io::Result<glommio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    // SAFETY: the descriptor is a bound, listening TCP socket that we hand over whole.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

async fn shard_main(spec: ShardSpec) -> usize {
    let storage = Rc::new(DmaStorage);
    if let Err(e) = spate_engine::shard::read_probe_file(&*storage, &spec.data_dir).await {
        let _ = spec
            .ready
            .send(Err(format!("shard {}: probe file: {e}", spec.shard_id)));
        return 0;
    }
    let logs = Rc::new(ShardLogs::new(
        spec.shard_id,
        &spec.data_dir,
        storage,
        spec.log.clone(),
        spec.cache_bytes,
    ));
    let reports = match logs.open_assigned(&spec.metadata).await {
        Ok(r) => r,
        Err(e) => {
            let _ = spec
                .ready
                .send(Err(format!("shard {}: {e}", spec.shard_id)));
            return logs.close_all().await;
        }
    };
    let listener = match bind_reuseport(spec.listen) {
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
        io_memory_bytes = spec.io_memory_bytes,
        "shard ready"
    );
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
    let accept = async {
        // The Kafka protocol is not served yet: accept and close, so clients fail fast.
        loop {
            match listener.accept().await {
                Ok(stream) => drop(stream),
                Err(e) => {
                    tracing::warn!(shard = spec.shard_id, "accept failed: {e}");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    };
    let stop = async {
        while !spec.shutdown.load(Ordering::SeqCst) {
            glommio::timer::sleep(SHUTDOWN_POLL).await;
        }
    };
    futures_lite::future::or(accept, stop).await;
    drop(retention);
    let unclean = logs.close_all().await;
    tracing::info!(shard = spec.shard_id, "shard stopped");
    unclean
}
