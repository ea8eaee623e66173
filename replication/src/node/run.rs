//! The node's loop: frames in, ticks, the controller while leading, the broker's own
//! registration and heartbeats, and the quorum's outputs (send, persist, then send what waited
//! and apply what is committed), one at a time as the quorum's contract asks.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_channel::mpsc;
use futures_util::StreamExt;
use glommio::net::TcpListener;

use spate_engine::io::dma::DmaStorage;
use spate_engine::io::Storage;

mod serving;

use serving::Serving;

use super::frame::{Body, Frame};
use super::requests::Reply;
use super::transport::Transport;
use super::{identity, ClusterView, LocalRequest, NodeConfig};
use crate::controller::{Controller, ControllerConfig};
use crate::metadata::{
    decode_batch, encode_batch, BrokerId, BrokerRegistration, ClusterImage, Endpoint,
    MetadataRecord,
};
use crate::quorum::store::QuorumStore;
use crate::quorum::{wire, Quorum, QuorumConfig};

/// raft-rs reserves id 0; node ids start at 0.
fn raft_id(node: BrokerId) -> u64 {
    node as u64 + 1
}

fn node_of(raft: u64) -> BrokerId {
    raft.saturating_sub(1) as BrokerId
}

fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

type Forwarded = (
    futures_channel::oneshot::Sender<Reply>,
    Instant,
    String,
    Option<super::requests::Request>,
);

struct Node {
    config: NodeConfig,
    /// Requests forwarded to the controller: id -> (answer, deadline, topic name, the
    /// request if it is an AlterPartition).
    forwarded: std::collections::BTreeMap<u64, Forwarded>,
    next_request_id: u64,
    serving: Vec<Serving>,
    /// Producer id blocks applied from the log while this node runs: start -> the broker it
    /// went to (the image keeps only where the last one ended). Entries leave as the
    /// requests waiting for them are answered, and the oldest past a bound.
    producer_id_blocks: std::collections::BTreeMap<i64, BrokerId>,
    cluster_id: [u8; 16],
    incarnation: [u8; 16],
    started: Instant,
    /// None on an observer (a broker that is not a voter).
    quorum: Option<Quorum>,
    /// What an observer learned of the controller from the voters it fetches from.
    observed_controller: Option<BrokerId>,
    observed_changed: bool,
    /// Entries up to this index were committed before this start: replayed quietly.
    replay_until: u64,
    /// An observer's next fetch of committed records.
    next_fetch: Instant,
    fetch_from: usize,
    transport: Transport,
    image: ClusterImage,
    controller: Option<Controller>,
    proposals: Vec<Vec<MetadataRecord>>,
    last_bootstrap: Option<Instant>,
    view: Arc<RwLock<Arc<ClusterView>>>,
    published_leader: Option<BrokerId>,
}

pub async fn run(
    config: NodeConfig,
    view: Arc<RwLock<Arc<ClusterView>>>,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
    requests: mpsc::Receiver<LocalRequest>,
) -> Result<(), String> {
    let started = start(&config).await;
    let _ = ready.send(started.as_ref().map(|_| ()).map_err(|e| e.clone()));
    let (quorum, listener) = started?;
    serve(config, view, stop, quorum, listener, requests).await
}

type Started = (Option<(QuorumStore, Quorum, ClusterImage)>, TcpListener);

async fn start(config: &NodeConfig) -> Result<Started, String> {
    let listener = TcpListener::bind(config.cluster_listen).map_err(|e| {
        format!(
            "cannot listen for the cluster on {}: {e}; pick another with --cluster-listen",
            config.cluster_listen
        )
    })?;
    if !config.is_voter() {
        // An observer keeps no metadata log of its own: it fetches the committed records
        // from the voters at every start.
        return Ok((None, listener));
    }
    let storage: Rc<dyn Storage> = Rc::new(DmaStorage);
    let dir = config.data_dir.join("__cluster_metadata").join("0");
    let (store, durable) = QuorumStore::open(storage, &dir)
        .await
        .map_err(|e| format!("the metadata quorum's store: {e}"))?;
    // The image starts from the latest snapshot; the entries after it are replayed.
    let image = match &durable.snapshot {
        Some(snap) => {
            let mut image = ClusterImage::decode(&snap.data).map_err(|e| {
                format!(
                    "the metadata snapshot in {} does not decode: {e}",
                    dir.display()
                )
            })?;
            image.applied_index = snap.index;
            image
        }
        None => ClusterImage::default(),
    };
    let quorum_config = QuorumConfig {
        node_id: raft_id(config.node_id),
        voters: config.voters.iter().map(|v| raft_id(v.id)).collect(),
        election_ticks: 10,
        heartbeat_ticks: 2,
        seed: random_u64(),
    };
    let quorum = Quorum::start(&quorum_config, durable).map_err(|e| e.to_string())?;
    Ok((Some((store, quorum, image)), listener))
}

async fn serve(
    config: NodeConfig,
    view: Arc<RwLock<Arc<ClusterView>>>,
    stop: Arc<AtomicBool>,
    quorum: Option<(QuorumStore, Quorum, ClusterImage)>,
    listener: TcpListener,
    mut requests: mpsc::Receiver<LocalRequest>,
) -> Result<(), String> {
    let cluster_id = config.cluster_id();
    let dir = config.data_dir.join("__cluster_metadata").join("0");
    let (inbox_tx, mut inbox) = mpsc::channel::<Frame>(4096);
    let transport = Transport::start(
        config.node_id,
        cluster_id,
        &config.voters,
        listener,
        inbox_tx,
    );
    let mut incarnation = [0u8; 16];
    incarnation[..8].copy_from_slice(&random_u64().to_le_bytes());
    incarnation[8..].copy_from_slice(&random_u64().to_le_bytes());
    tracing::info!(
        node_id = config.node_id,
        cluster_listen = %config.cluster_listen,
        cluster = %identity::hex(&cluster_id),
        voters = config.voters.len(),
        "cluster node starting: {}",
        if quorum.is_some() {
            format!("a voter, metadata quorum in {}", dir.display())
        } else {
            "an observer (not a voter): it follows the voters' metadata log".to_string()
        }
    );
    let (store, quorum, image) = match quorum {
        Some((store, quorum, image)) => (Some(store), Some(quorum), image),
        None => (None, None, ClusterImage::default()),
    };
    let replay_until = quorum.as_ref().map_or(0, |q| q.commit_index());
    let mut node = Node {
        cluster_id,
        incarnation,
        started: Instant::now(),
        quorum,
        observed_controller: None,
        observed_changed: false,
        replay_until,
        next_fetch: Instant::now(),
        fetch_from: 0,
        transport,
        image,
        controller: None,
        proposals: Vec::new(),
        last_bootstrap: None,
        view,
        published_leader: None,
        forwarded: Default::default(),
        next_request_id: 1,
        serving: Vec::new(),
        producer_id_blocks: Default::default(),
        config,
    };
    let tick = Duration::from_millis(node.config.tick_ms.max(1));
    let heartbeat = Duration::from_millis(node.config.broker_heartbeat_interval_ms);
    let mut next_tick = Instant::now() + tick;
    let mut next_heartbeat = Instant::now();
    let mut next_wait_log = Instant::now() + Duration::from_secs(3);
    let result = loop {
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        let wait = next_tick.saturating_duration_since(Instant::now());
        enum Woken {
            Frame(Frame),
            Local(LocalRequest),
            Tick,
        }
        let woken = futures_lite::future::or(
            async {
                match inbox.next().await {
                    Some(f) => Woken::Frame(f),
                    None => Woken::Tick,
                }
            },
            futures_lite::future::or(
                async {
                    match requests.next().await {
                        Some(r) => Woken::Local(r),
                        None => futures_lite::future::pending().await,
                    }
                },
                async {
                    glommio::timer::sleep(wait).await;
                    Woken::Tick
                },
            ),
        )
        .await;
        match woken {
            Woken::Frame(f) => node.on_frame(f),
            Woken::Local((request, reply)) => node.on_local(request, reply),
            Woken::Tick => {}
        }
        while let Ok(f) = inbox.try_recv() {
            node.on_frame(f);
        }
        while let Ok((request, reply)) = requests.try_recv() {
            node.on_local(request, reply);
        }
        let now = Instant::now();
        if now >= next_tick {
            next_tick = (next_tick + tick).max(now);
            node.on_tick();
        }
        if now >= next_heartbeat {
            next_heartbeat = now + heartbeat;
            node.heartbeat();
        }
        if now >= next_wait_log {
            next_wait_log = now + Duration::from_secs(5);
            node.log_waiting();
        }
        if let Err(e) = node.drive(store.as_ref()).await {
            break Err(e);
        }
    };
    if let Some(store) = store {
        store.close().await;
    }
    if let Err(e) = &result {
        tracing::error!("the cluster node stopped: {e}");
    }
    result
}

impl Node {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn on_frame(&mut self, frame: Frame) {
        let now_ms = self.now_ms();
        match frame.body {
            Body::Raft(bytes) => {
                match wire::decode(&bytes, &self.cluster_id, raft_id(self.config.node_id)) {
                    Ok(m) => {
                        if let Some(Err(e)) = self.quorum.as_mut().map(|q| q.step(m)) {
                            tracing::debug!(from = frame.from, "quorum message ignored: {e}");
                        }
                    }
                    Err(e) => tracing::warn!(from = frame.from, "quorum message refused: {e}"),
                }
            }
            Body::Register(reg) => {
                if let Some(c) = self.controller.as_mut() {
                    match c.register(&self.image, reg, now_ms) {
                        Ok(r) => self.proposals.push(r),
                        Err(e) => tracing::info!(from = frame.from, "registration refused: {e}"),
                    }
                }
            }
            Body::Heartbeat {
                broker_id,
                broker_epoch,
                applied,
            } => self.on_heartbeat(broker_id, broker_epoch, applied),
            Body::Request { id, request } => self.on_remote_request(frame.from, id, request),
            Body::Reply { id, reply } => self.on_reply(id, reply),
            Body::FetchMetadata {
                from_index,
                reply_addr,
            } => {
                let Some(q) = self.quorum.as_ref() else {
                    return;
                };
                if let Some(snap) = q.snapshot_for(from_index) {
                    let body = Body::MetadataSnapshot {
                        index: snap.index,
                        image: snap.data,
                        controller: q.leader().map(node_of),
                    };
                    self.transport.send_to(frame.from, &reply_addr, body);
                    return;
                }
                let entries = q.committed_entries(from_index, 1 << 20);
                let body = Body::MetadataEntries {
                    entries,
                    controller: q.leader().map(node_of),
                    commit: q.commit_index(),
                };
                self.transport.send_to(frame.from, &reply_addr, body);
            }
            Body::MetadataEntries {
                entries,
                controller,
                commit: _,
            } => {
                if self.quorum.is_some() {
                    return;
                }
                self.observed_controller = controller;
                // A fetch answered: the next one at once if this one brought records.
                self.next_fetch = if entries.is_empty() {
                    Instant::now() + Duration::from_millis(200)
                } else {
                    Instant::now()
                };
                for (index, data) in entries {
                    if index > self.image.applied_index {
                        self.apply(index, &data);
                        self.observed_changed = true;
                    }
                }
            }
            Body::MetadataSnapshot {
                index,
                image,
                controller,
            } => {
                if self.quorum.is_some() || index <= self.image.applied_index {
                    return;
                }
                self.observed_controller = controller;
                self.next_fetch = Instant::now();
                match ClusterImage::decode(&image) {
                    Ok(mut image) => {
                        tracing::info!(index, "the cluster image replaced by a voter's snapshot");
                        image.applied_index = index;
                        self.image = image;
                        self.observed_changed = true;
                    }
                    Err(e) => tracing::warn!(from = frame.from, "metadata snapshot refused: {e}"),
                }
            }
        }
    }

    /// The controller, as this node knows it.
    pub(super) fn controller_id(&self) -> Option<BrokerId> {
        match &self.quorum {
            Some(q) => q.leader().map(node_of),
            None => self.observed_controller,
        }
    }

    /// An observer asks a voter (in turn) for the records after what it has applied.
    fn fetch_metadata(&mut self) {
        if self.quorum.is_some() || Instant::now() < self.next_fetch {
            return;
        }
        let voters = &self.config.voters;
        if voters.is_empty() {
            return;
        }
        // The controller first; another voter in turn while it does not answer.
        let target = match self.observed_controller {
            Some(c) if self.fetch_from == 0 => c,
            _ => voters[self.fetch_from % voters.len()].id,
        };
        self.fetch_from = (self.fetch_from + 1) % (voters.len() * 4);
        self.next_fetch = Instant::now() + Duration::from_millis(500);
        let body = Body::FetchMetadata {
            from_index: self.image.applied_index + 1,
            reply_addr: self.config.cluster_listen.to_string(),
        };
        self.transport.send(target, body);
    }

    fn on_heartbeat(&mut self, broker_id: BrokerId, broker_epoch: u64, applied: u64) {
        let now_ms = self.now_ms();
        if let Some(c) = self.controller.as_mut() {
            match c.heartbeat(&self.image, broker_id, broker_epoch, applied, now_ms) {
                Ok(reply) if !reply.records.is_empty() => self.proposals.push(reply.records),
                Ok(_) => {}
                Err(e) => tracing::debug!(broker_id, "heartbeat refused: {e}"),
            }
        }
    }

    fn on_tick(&mut self) {
        self.fetch_metadata();
        let Some(q) = self.quorum.as_mut() else {
            return;
        };
        q.tick();
        if !q.is_leader() {
            self.controller = None;
            return;
        }
        let term = q.term();
        let now_ms = self.now_ms();
        let config = ControllerConfig {
            broker_session_timeout_ms: self.config.broker_session_timeout_ms,
            ..ControllerConfig::default()
        };
        if self.controller.is_none() {
            tracing::info!(
                node_id = self.config.node_id,
                term,
                "this node is the controller"
            );
        }
        let c = self
            .controller
            .get_or_insert_with(|| Controller::new(config, now_ms));
        if self.image.cluster_id.is_none()
            && self
                .last_bootstrap
                .is_none_or(|t| t.elapsed() > Duration::from_secs(2))
        {
            self.last_bootstrap = Some(Instant::now());
            self.proposals.push(vec![MetadataRecord::Bootstrap {
                cluster_id: self.cluster_id,
            }]);
        }
        let records = c.tick(&self.image, now_ms);
        if !records.is_empty() {
            self.proposals.push(records);
        }
    }

    /// The broker side: register with the controller, then heartbeat.
    fn heartbeat(&mut self) {
        if self.image.cluster_id.is_none() {
            return;
        }
        let Some(leader) = self.controller_id() else {
            return;
        };
        let me = self.config.node_id;
        let mine = self
            .image
            .brokers
            .get(&me)
            .filter(|b| b.registration.incarnation == self.incarnation)
            .map(|b| b.epoch);
        let body = match mine {
            None => Body::Register(BrokerRegistration {
                broker_id: me,
                incarnation: self.incarnation,
                listener: Endpoint {
                    host: self.config.advertised_host.clone(),
                    port: self.config.advertised_port,
                },
                cluster_addr: self.config.cluster_listen.to_string(),
                shards: self.config.shards,
                replication_ports: self.config.replication_ports.clone(),
                rack: None,
            }),
            Some(epoch) => Body::Heartbeat {
                broker_id: me,
                broker_epoch: epoch,
                applied: self.image.applied_index,
            },
        };
        if leader == me {
            self.on_frame(Frame {
                cluster_id: self.cluster_id,
                from: me,
                body,
            });
        } else {
            self.transport.send(leader, body);
        }
    }

    fn log_waiting(&self) {
        if self.controller_id().is_some() {
            return;
        }
        let unreachable: Vec<String> = self
            .transport
            .states
            .iter()
            .filter(|(_, s)| !s.borrow().connected)
            .filter_map(|(id, _)| self.config.voters.iter().find(|v| v.id == *id))
            .map(|v| v.to_string())
            .collect();
        tracing::info!(
            "waiting for the metadata quorum to elect a leader (a majority of {} voters must be up); not reachable yet: {}",
            self.config.voters.len(),
            if unreachable.is_empty() {
                "none".to_string()
            } else {
                unreachable.join(", ")
            }
        );
    }

    /// Proposes what was decided, then works through the quorum's outputs.
    async fn drive(&mut self, store: Option<&QuorumStore>) -> Result<(), String> {
        let mut changed = std::mem::take(&mut self.observed_changed);
        let (Some(store), Some(_)) = (store, self.quorum.as_ref()) else {
            // An observer: what it applied from the voters is published.
            self.proposals.clear();
            self.settle_requests();
            let leader = self.controller_id();
            if changed || leader != self.published_leader {
                self.published_leader = leader;
                self.publish();
            }
            return Ok(());
        };
        for batch in std::mem::take(&mut self.proposals) {
            if let Some(Err(e)) = self
                .quorum
                .as_mut()
                .map(|q| q.propose(encode_batch(&batch)))
            {
                tracing::debug!("proposal dropped: {e}");
            }
        }
        while let Some(out) = self.quorum.as_mut().and_then(|q| q.ready()) {
            for m in out.send {
                let to = node_of(m.to);
                self.transport
                    .send(to, Body::Raft(wire::encode(&self.cluster_id, &m)));
            }
            store
                .persist(&out.persist)
                .await
                .map_err(|e| format!("cannot persist the metadata log: {e}"))?;
            if let Some(snap) = &out.persist.snapshot {
                // The leader's snapshot replaces what this node had applied.
                let mut image = ClusterImage::decode(&snap.data)
                    .map_err(|e| format!("the leader's metadata snapshot does not decode: {e}"))?;
                image.applied_index = snap.index;
                tracing::info!(
                    index = snap.index,
                    "the cluster image replaced by the controller's snapshot"
                );
                self.image = image;
                changed = true;
            }
            for m in out.send_after_persist {
                let to = node_of(m.to);
                self.transport
                    .send(to, Body::Raft(wire::encode(&self.cluster_id, &m)));
            }
            for (index, data) in out.committed {
                self.apply(index, &data);
                changed = true;
            }
        }
        self.snapshot_if_due(store).await?;
        self.settle_requests();
        let leader = self.controller_id();
        if changed || leader != self.published_leader {
            self.published_leader = leader;
            self.publish();
        }
        Ok(())
    }

    /// After `metadata_snapshot_entries` entries since the last snapshot, the image becomes
    /// the new snapshot and the log lets go of what it covers but the last quarter.
    async fn snapshot_if_due(&mut self, store: &QuorumStore) -> Result<(), String> {
        let every = self.config.metadata_snapshot_entries.max(1);
        let Some(q) = self.quorum.as_mut() else {
            return Ok(());
        };
        let index = self.image.applied_index;
        if index < q.snapshot_index() + every {
            return Ok(());
        }
        let compaction = match q.compact(index, self.image.encode(), every / 4) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("no metadata snapshot yet: {e}");
                return Ok(());
            }
        };
        store
            .compact(&compaction)
            .await
            .map_err(|e| format!("cannot save the metadata snapshot: {e}"))?;
        tracing::debug!(
            index,
            bytes = compaction.snapshot.data.len(),
            "metadata snapshot saved"
        );
        Ok(())
    }

    fn apply(&mut self, index: u64, data: &[u8]) {
        let batch = match decode_batch(data) {
            Ok(b) => b,
            Err(e) => {
                // Every node skips it alike: the image stays the same everywhere.
                tracing::error!(index, "metadata entry skipped: {e}");
                self.image.applied_index = index;
                return;
            }
        };
        for r in &batch {
            match self.image.apply(index, r) {
                Ok(()) => {
                    if let MetadataRecord::Bootstrap { cluster_id } = r {
                        if *cluster_id != self.cluster_id {
                            tracing::error!(
                                "the metadata log names cluster {}, this node is configured for {}",
                                identity::hex(cluster_id),
                                identity::hex(&self.cluster_id)
                            );
                        }
                    }
                    if let MetadataRecord::ProducerIdBlock {
                        broker_id, start, ..
                    } = r
                    {
                        self.producer_id_blocks.insert(*start, *broker_id);
                        while self.producer_id_blocks.len() > 1024 {
                            self.producer_id_blocks.pop_first();
                        }
                    }
                    match r {
                        _ if index <= self.replay_until => {}
                        MetadataRecord::RegisterBroker(reg) => {
                            tracing::info!(broker_id = reg.broker_id, index, "broker registered")
                        }
                        MetadataRecord::FenceBroker { broker_id, .. } => {
                            tracing::info!(broker_id, index, "broker fenced")
                        }
                        MetadataRecord::UnfenceBroker { broker_id, .. } => {
                            tracing::info!(broker_id, index, "broker unfenced")
                        }
                        MetadataRecord::CreateTopic { name, .. } => {
                            tracing::info!(topic = %name, index, "topic created in the cluster")
                        }
                        MetadataRecord::DeleteTopic { .. } => {
                            tracing::info!(index, "topic deleted in the cluster")
                        }
                        _ => {}
                    }
                }
                Err(e) => tracing::debug!(index, "metadata record refused: {e}"),
            }
        }
    }

    fn publish(&self) {
        let v = Arc::new(ClusterView {
            node_id: self.config.node_id,
            controller: self.published_leader,
            registered: self
                .image
                .brokers
                .get(&self.config.node_id)
                .is_some_and(|b| b.registration.incarnation == self.incarnation),
            image: self.image.clone(),
        });
        match self.view.write() {
            Ok(mut slot) => *slot = v,
            Err(poisoned) => *poisoned.into_inner() = v,
        }
    }
}
