//! The topic controller: the admin operations on shard 0, which owns the metadata file.
//! Create a topic, add partitions, delete a topic, change a topic's settings, allocate
//! producer ids. Each change runs on a scratch copy of the store, is saved off the reactor,
//! then published to every shard (`Cluster::publish`); then the partitions are opened, closed
//! or reconfigured on their owners (one mesh call per owner shard) before the answer.

use std::rc::Rc;

use spate_engine::EngineError;

use crate::metadata::{MetadataStore, TopicConfigs, TopicMeta};
use crate::shard::Shard;
use spate_replication::node::{Reply, Request, RequestError};

impl Shard {
    /// Changes the metadata file (on shard 0, its owner): `change` runs on a scratch copy of
    /// the store, the copy is saved on glommio's blocking thread (the write, fsync, rename
    /// and directory fsync would stall every request of this shard), then made current and
    /// published. A change that fails, or whose save fails, leaves the metadata as it was.
    /// Changes run one at a time, in the order they were asked for.
    pub(crate) async fn change_metadata<T>(
        &self,
        change: impl FnOnce(&mut MetadataStore) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let store = self.store.as_ref().ok_or(EngineError::Closed)?;
        let _turn = self
            .metadata_turn
            .acquire_permit(1)
            .await
            .map_err(|_| EngineError::Closed)?;
        let mut scratch = store.borrow().scratch();
        let out = change(&mut scratch)?;
        if scratch.metadata() != store.borrow().metadata() {
            let save = scratch.save_job()?;
            glommio::executor().spawn_blocking(save).await?;
        }
        let mut st = store.borrow_mut();
        st.install(scratch);
        self.cluster.publish(st.metadata().clone());
        Ok(out)
    }

    /// Creates a topic (on shard 0, which owns the metadata file) and opens its partitions on
    /// their owners before returning.
    pub async fn create_topic(
        self: &Rc<Self>,
        name: String,
        partitions: u32,
        config: TopicConfigs,
    ) -> Result<TopicMeta, EngineError> {
        self.call(0, move |s| {
            Box::pin(async move { s.create_topic_here(name, partitions, config).await })
        })
        .await
        .map_err(|_| EngineError::Closed)?
    }

    async fn create_topic_here(
        self: &Rc<Self>,
        name: String,
        partitions: u32,
        config: TopicConfigs,
    ) -> Result<TopicMeta, EngineError> {
        let store = self.store.as_ref().ok_or(EngineError::Closed)?;
        // A new topic on a disk below its floor could take nothing, and would spend the
        // reserve that deleting topics needs.
        if let Some(space) = self.logs.disk_space() {
            if store.borrow().topic(&name).is_none() {
                space.admit_append(0)?;
            }
        }
        let shards = self.cluster.shard_count();
        let topic = self
            .change_metadata(|st| st.create_topic(&name, partitions, config, shards))
            .await?;
        tracing::info!(topic = %name, partitions, "topic created");
        self.open_partitions(&topic, 0).await?;
        Ok(topic)
    }

    /// Opens partitions `from..` of `topic` on their owner shards.
    async fn open_partitions(
        self: &Rc<Self>,
        topic: &TopicMeta,
        from: u32,
    ) -> Result<(), EngineError> {
        let mut by_shard: std::collections::BTreeMap<usize, Vec<u32>> = Default::default();
        for (p, s) in topic
            .partition_shards
            .iter()
            .enumerate()
            .skip(from as usize)
        {
            by_shard.entry(*s as usize).or_default().push(p as u32);
        }
        let settings = self.cluster.settings_of(&topic.config);
        for (shard, parts) in by_shard {
            let name = topic.name.clone();
            let id = topic.topic_id;
            let settings = settings.clone();
            self.call(shard, move |s| {
                Box::pin(async move {
                    for p in parts {
                        if s.logs.get(&name, p).is_none() {
                            let config = settings.log_config(&name, id, p);
                            s.logs.open_partition(&name, p, config).await?;
                        }
                    }
                    Ok::<(), EngineError>(())
                })
            })
            .await
            .map_err(|_| EngineError::Closed)??;
        }
        Ok(())
    }

    /// Adds partitions to a topic, up to `total`.
    pub async fn add_partitions(
        self: &Rc<Self>,
        name: String,
        total: u32,
    ) -> Result<TopicMeta, EngineError> {
        self.call(0, move |s| {
            Box::pin(async move {
                if let Some(space) = s.logs.disk_space() {
                    space.admit_append(0)?;
                }
                let shards = s.cluster.shard_count();
                let (topic, before) = s
                    .change_metadata(|st| {
                        let before = st
                            .topic(&name)
                            .map(|t| t.partitions())
                            .ok_or_else(|| EngineError::UnknownPartition(name.clone()))?;
                        Ok((st.add_partitions(&name, total, shards)?, before))
                    })
                    .await?;
                tracing::info!(topic = %name, from = before, to = total, "partitions added");
                s.open_partitions(&topic, before).await?;
                Ok(topic)
            })
        })
        .await
        .map_err(|_| EngineError::Closed)?
    }

    /// Deletes a topic: forgets it in the metadata, then closes and removes its partitions.
    pub async fn delete_topic(self: &Rc<Self>, name: String) -> Result<(), EngineError> {
        self.call(0, move |s| {
            Box::pin(async move {
                let topic = s.change_metadata(|st| st.delete_topic(&name)).await?;
                let shards: std::collections::BTreeSet<usize> =
                    topic.partition_shards.iter().map(|s| *s as usize).collect();
                for shard in shards {
                    let name = name.clone();
                    let _ = s
                        .call(shard, move |s| {
                            Box::pin(async move {
                                s.logs.remove_topic(&name).await;
                                s.producers.forget_topic(&name);
                                s.unflushed_records
                                    .borrow_mut()
                                    .retain(|(t, _), _| *t != name);
                            })
                        })
                        .await;
                }
                // Thousands of files for a large topic: not on this shard's reactor.
                let data_dir = s.cluster.data_dir.clone();
                let removed = glommio::executor()
                    .spawn_blocking({
                        let name = name.clone();
                        move || spate_engine::registry::remove_topic_files(&data_dir, &name)
                    })
                    .await;
                if let Err(e) = removed {
                    tracing::warn!(topic = %name, "cannot remove the topic's files: {e}");
                }
                tracing::info!(topic = %name, "topic deleted");
                Ok(())
            })
        })
        .await
        .map_err(|_| EngineError::Closed)?
    }

    /// Replaces a topic's settings and applies them to its open partitions.
    pub async fn set_topic_config(
        self: &Rc<Self>,
        name: String,
        config: TopicConfigs,
    ) -> Result<(), EngineError> {
        self.call(0, move |s| {
            Box::pin(async move {
                let topic = s
                    .change_metadata(|st| {
                        st.set_topic_config(&name, config)?;
                        st.topic(&name)
                            .cloned()
                            .ok_or_else(|| EngineError::UnknownPartition(name.clone()))
                    })
                    .await?;
                let settings = s.cluster.settings_of(&topic.config);
                let shards: std::collections::BTreeSet<usize> =
                    topic.partition_shards.iter().map(|s| *s as usize).collect();
                for shard in shards {
                    let name = name.clone();
                    let settings = settings.clone();
                    let n = topic.partitions();
                    let id = topic.topic_id;
                    let _ = s
                        .call(shard, move |s| {
                            Box::pin(async move {
                                for p in 0..n {
                                    if let Some(log) = s.logs.get(&name, p) {
                                        log.set_config(settings.log_config(&name, id, p));
                                    }
                                }
                            })
                        })
                        .await;
                }
                Ok(())
            })
        })
        .await
        .map_err(|_| EngineError::Closed)?
    }

    /// Allocates a producer id (InitProducerId) that no producer had before. A single
    /// broker persists its ids in blocks so that they never repeat across restarts; a
    /// broker of a cluster takes blocks from the controller (Kafka's AllocateProducerIds),
    /// so that no two brokers hand out the same id (a partition's producer states move
    /// between brokers with its leadership).
    pub async fn allocate_producer_id(self: &Rc<Self>) -> Result<i64, ControllerRefusal> {
        self.call(0, |s| {
            Box::pin(async move {
                if s.cluster.node_handle().is_some() {
                    return s.producer_id_from_cluster().await;
                }
                // A new block of ids is saved once per 1000; the rest change nothing on disk.
                s.change_metadata(|st| st.next_producer_id())
                    .await
                    .map_err(|e| ControllerRefusal {
                        code: -1,
                        message: e.to_string(),
                    })
            })
        })
        .await
        .map_err(|_| ControllerRefusal {
            code: -1,
            message: EngineError::Closed.to_string(),
        })?
    }

    /// The next id of this broker's block from the controller, asking for a new block when
    /// it is used up (on shard 0, one request at a time). A block is not persisted here: a
    /// restarted broker asks for a new one, and the rest of the old one is never used.
    async fn producer_id_from_cluster(self: &Rc<Self>) -> Result<i64, ControllerRefusal> {
        let _turn =
            self.producer_id_turn
                .acquire_permit(1)
                .await
                .map_err(|_| ControllerRefusal {
                    code: -1,
                    message: EngineError::Closed.to_string(),
                })?;
        let (next, end) = self.producer_id_block.get();
        if next < end {
            self.producer_id_block.set((next + 1, end));
            return Ok(next);
        }
        let node = self.cluster_node()?;
        match node
            .call(Request::AllocateProducerIds { broker_id: -1 })
            .await
        {
            Reply::ProducerIds { start, len } if len > 0 => {
                self.producer_id_block
                    .set((start + 1, start.saturating_add(len)));
                Ok(start)
            }
            // No controller, or it did not answer in time: the client retries.
            Reply::Refused(e @ (RequestError::NotController | RequestError::Timeout(_))) => {
                Err(ControllerRefusal {
                    code: 15, // COORDINATOR_NOT_AVAILABLE
                    message: e.to_string(),
                })
            }
            Reply::Refused(e) => Err(refusal(e)),
            other => Err(unexpected(other)),
        }
    }
}

/// A refusal from the cluster's controller: a Kafka error code and what to say.
pub struct ControllerRefusal {
    pub code: i16,
    pub message: String,
}

impl Shard {
    /// The cluster node that forwards requests to the controller.
    fn cluster_node(&self) -> Result<spate_replication::node::NodeHandle, ControllerRefusal> {
        self.cluster.node_handle().ok_or_else(|| ControllerRefusal {
            code: -1,
            message: "this broker is not a cluster member".into(),
        })
    }

    /// Creates a topic through the cluster's controller (a broker of a cluster): answered
    /// once the topic is committed to the metadata log and this broker has applied it and
    /// recorded it locally (so that its next Produce and Metadata see it).
    pub async fn create_topic_in_cluster(
        self: &Rc<Self>,
        name: String,
        partitions: i32,
        replication_factor: i32,
        assignment: Option<Vec<Vec<i32>>>,
        config: &TopicConfigs,
    ) -> Result<[u8; 16], ControllerRefusal> {
        let node = self.cluster_node()?;
        let reply = node
            .call(Request::CreateTopic {
                name: name.clone(),
                partitions,
                replication_factor,
                assignment,
                configs: config
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .await;
        match reply {
            Reply::TopicCreated { topic_id } => {
                self.await_mirrored(&name, Some(topic_id)).await;
                tracing::info!(topic = %name, partitions, replication_factor, "topic created in the cluster");
                Ok(topic_id)
            }
            Reply::Refused(e) => Err(refusal(e)),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a topic through the cluster's controller.
    pub async fn delete_topic_in_cluster(
        self: &Rc<Self>,
        name: String,
    ) -> Result<(), ControllerRefusal> {
        let node = self.cluster_node()?;
        match node.call(Request::DeleteTopic { name: name.clone() }).await {
            Reply::TopicDeleted { .. } => {
                self.await_mirrored(&name, None).await;
                tracing::info!(topic = %name, "topic deleted in the cluster");
                Ok(())
            }
            Reply::Refused(e) => Err(refusal(e)),
            other => Err(unexpected(other)),
        }
    }

    /// Grows a topic to `total` partitions through the cluster's controller (CreatePartitions;
    /// `assignment`: a replica list per new partition, or the controller places them):
    /// answered once the change is committed and this broker has the new partitions in its
    /// local metadata (so that its next Metadata and Produce see them).
    pub async fn add_partitions_in_cluster(
        self: &Rc<Self>,
        name: String,
        total: i32,
        assignment: Option<Vec<Vec<i32>>>,
    ) -> Result<(), ControllerRefusal> {
        let node = self.cluster_node()?;
        let reply = node
            .call(Request::AddPartitions {
                topic: name.clone(),
                total,
                assignment,
            })
            .await;
        match reply {
            Reply::PartitionsAdded { .. } => {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while std::time::Instant::now() < deadline
                    && self
                        .cluster
                        .topic(&name)
                        .is_some_and(|t| t.partitions() < total as u32)
                {
                    glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                }
                tracing::info!(topic = %name, to = total, "partitions added in the cluster");
                Ok(())
            }
            Reply::Refused(e) => Err(refusal(e)),
            other => Err(unexpected(other)),
        }
    }

    /// Replaces a topic's configs through the cluster's controller (`config`: the whole set,
    /// validated already): answered once the change is committed and this broker has it in
    /// its local metadata and open logs (so that its DescribeConfigs shows it).
    pub async fn set_topic_config_in_cluster(
        self: &Rc<Self>,
        name: String,
        config: TopicConfigs,
    ) -> Result<(), ControllerRefusal> {
        let node = self.cluster_node()?;
        let reply = node
            .call(Request::SetTopicConfigs {
                topic: name.clone(),
                configs: config
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .await;
        match reply {
            Reply::TopicConfigsSet { .. } => {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while std::time::Instant::now() < deadline
                    && self
                        .cluster
                        .topic(&name)
                        .is_some_and(|t| t.config != config)
                {
                    glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                }
                tracing::info!(topic = %name, "topic settings changed in the cluster");
                Ok(())
            }
            Reply::Refused(e) => Err(refusal(e)),
            other => Err(unexpected(other)),
        }
    }

    /// Waits (up to 5 s) until the local metadata has the topic with this id, or (`None`)
    /// no longer has it.
    async fn await_mirrored(&self, name: &str, id: Option<[u8; 16]>) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if self.cluster.topic_id_of(name) == id {
                return;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

fn unexpected(reply: Reply) -> ControllerRefusal {
    ControllerRefusal {
        code: -1,
        message: format!("unexpected answer from the controller: {reply:?}"),
    }
}

fn refusal(e: RequestError) -> ControllerRefusal {
    ControllerRefusal {
        code: e.kafka_code(),
        message: e.to_string(),
    }
}
