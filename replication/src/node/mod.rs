//! The running cluster node: the state machines of this crate driven for real, on a thread
//! of its own (a glommio executor, `spate-cluster`): the metadata quorum with its store in
//! `DATA/__cluster_metadata/0`, the cluster listener and connections to the other voters, the
//! controller while this node leads the quorum, and the broker's registration and heartbeats.
//! What it knows is published as a [`ClusterView`] that the Kafka side reads without waiting.
//!
//! A thread rather than a shard: the quorum's fdatasyncs and ticks stay off the shards'
//! produce path, and metadata traffic is small.

pub(crate) mod frame;
pub mod identity;
pub mod requests;
mod run;
mod transport;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::metadata::{BrokerId, ClusterImage};
use crate::voters::Voter;

pub use frame::{Body, Frame, MAX_FRAME_BYTES};
pub use requests::{Reply, Request, RequestError};

/// A request from the Kafka side and where its answer goes.
pub(crate) type LocalRequest = (Request, futures_channel::oneshot::Sender<Reply>);

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: BrokerId,
    /// Where this node listens for other brokers.
    pub cluster_listen: SocketAddr,
    pub voters: Vec<Voter>,
    pub data_dir: PathBuf,
    /// Where Kafka clients reach this broker (registered with the controller).
    pub advertised_host: String,
    pub advertised_port: u16,
    pub shards: u32,
    /// The port of each shard's replication listener, registered for followers to reach.
    pub replication_ports: Vec<u16>,
    /// `replica.lag.time.max.ms`: how long an in-sync follower may go without catching up.
    pub replica_lag_time_max_ms: u64,
    /// `broker.session.timeout.ms`.
    pub broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval_ms: u64,
    /// Milliseconds per quorum tick (elections after 10 to 20 ticks without a leader).
    pub tick_ms: u64,
    /// A voter snapshots the cluster image after this many metadata log entries (then lets
    /// go of the log before it, but for the last quarter of them).
    pub metadata_snapshot_entries: u64,
}

impl NodeConfig {
    /// Checks the settings against each other: a voter listens at the address the list gives
    /// it.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(me) = self.voters.iter().find(|v| v.id == self.node_id) {
            if me.port != self.cluster_listen.port() {
                return Err(format!(
                    "--voters gives node {} the address {}:{}, but --cluster-listen is {}: they must name the same port",
                    self.node_id, me.host, me.port, self.cluster_listen
                ));
            }
        }
        if self.broker_heartbeat_interval_ms == 0
            || self.broker_heartbeat_interval_ms >= self.broker_session_timeout_ms
        {
            return Err(format!(
                "cluster.broker_heartbeat_interval_ms = {} must be above 0 and below cluster.broker_session_timeout_ms = {}",
                self.broker_heartbeat_interval_ms, self.broker_session_timeout_ms
            ));
        }
        Ok(())
    }

    /// Whether this node votes in the metadata quorum; a broker that does not is an
    /// observer, which follows the voters' log (KRaft's broker-only role).
    pub fn is_voter(&self) -> bool {
        self.voters.iter().any(|v| v.id == self.node_id)
    }

    pub fn cluster_id(&self) -> [u8; 16] {
        identity::cluster_id(&self.voters)
    }
}

/// What this node knows of the cluster, as of its last applied metadata record.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub node_id: BrokerId,
    /// The quorum's leader (the controller), if known.
    pub controller: Option<BrokerId>,
    /// The image holds this process's own registration: it has caught up with the
    /// metadata log at least that far (what it mirrors from the image is current).
    pub registered: bool,
    pub image: ClusterImage,
}

/// The Kafka side's handle on the running node.
#[derive(Clone)]
pub struct NodeHandle {
    view: Arc<RwLock<Arc<ClusterView>>>,
    stop: Arc<AtomicBool>,
    requests: futures_channel::mpsc::Sender<LocalRequest>,
    cluster_id: [u8; 16],
    replica_lag_time_max_ms: u64,
}

impl NodeHandle {
    /// The cluster's id, which every broker-to-broker session names.
    pub fn cluster_id(&self) -> [u8; 16] {
        self.cluster_id
    }

    /// `replica.lag.time.max.ms`.
    pub fn replica_lag_time_max_ms(&self) -> u64 {
        self.replica_lag_time_max_ms
    }

    pub fn view(&self) -> Arc<ClusterView> {
        match self.view.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Asks the controller (through this node) and waits for the answer, which comes once
    /// the change is committed and applied here, or as a refusal.
    pub async fn call(&self, request: Request) -> Reply {
        let (tx, rx) = futures_channel::oneshot::channel();
        if self.requests.clone().try_send((request, tx)).is_err() {
            return Reply::Refused(RequestError::Other(
                "the cluster node is not running or is overloaded".into(),
            ));
        }
        rx.await.unwrap_or_else(|_| {
            Reply::Refused(RequestError::Other("the cluster node stopped".into()))
        })
    }
}

/// Starts the node's thread; it runs until [`NodeHandle::stop`].
pub fn start(
    config: NodeConfig,
) -> Result<(NodeHandle, glommio::ExecutorJoinHandle<Result<(), String>>), String> {
    config.validate()?;
    let view = Arc::new(RwLock::new(Arc::new(ClusterView {
        node_id: config.node_id,
        ..ClusterView::default()
    })));
    let stop = Arc::new(AtomicBool::new(false));
    let (requests, requests_rx) = futures_channel::mpsc::channel(1024);
    let handle = NodeHandle {
        view: view.clone(),
        stop: stop.clone(),
        requests,
        cluster_id: config.cluster_id(),
        replica_lag_time_max_ms: config.replica_lag_time_max_ms,
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let join = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("spate-cluster")
        .io_memory(1 << 20)
        .spawn(move || async move { run::run(config, view, stop, ready_tx, requests_rx).await })
        .map_err(|e| format!("cannot start the cluster thread: {e}"))?;
    // Its store opened and its listener bound, or why not.
    match ready_rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(Ok(())) => Ok((handle, join)),
        Ok(Err(e)) => {
            let _ = join.join();
            Err(e)
        }
        Err(_) => {
            handle.stop();
            Err("the cluster thread did not start within 60 s".into())
        }
    }
}
