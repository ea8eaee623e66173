//! A cluster member's topics follow the cluster's metadata image. Shard 0 watches the image
//! the cluster node publishes and, once the image holds this process's own registration (so
//! it has caught up with the metadata log that far), mirrors it: topics the controller
//! created are recorded in the local metadata with the controller's topic id, partitions and
//! shard indexes, deleted ones are removed with their files, changed configs applied. Then
//! each shard opens the partitions this broker is a replica of (closing and removing with
//! their files those it no longer is, after a reassignment) and tells its
//! [`ShardReplicas`](spate_replication::pipeline::ShardReplicas) each partition's state
//! (leader, epoch, ISR), which makes it a leader or a follower.
//!
//! `__consumer_offsets` is a replicated topic like any other, created by the controller when
//! a group first needs a coordinator; the broker that leads one of its partitions
//! coordinates the groups stored there, loaded from the partition's log when it becomes the
//! leader (`coordinate`).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use spate_engine::EngineError;
use spate_replication::metadata::ClusterImage;
use spate_replication::node::ClusterView;
use spate_replication::pipeline::Transition;

use crate::commit_log;
use crate::metadata::{TopicConfigs, TopicMeta};
use crate::{Shard, OFFSETS_TOPIC};

/// How often shard 0 looks for a new image.
const POLL: Duration = Duration::from_millis(20);

/// Runs on shard 0 of a cluster member until the shard stops.
pub async fn follow_image(shard: Rc<Shard>) {
    let Some(node) = shard.cluster.node_handle() else {
        return;
    };
    let mut applied: Option<(u64, Option<i32>)> = None;
    loop {
        glommio::timer::sleep(POLL).await;
        let view = node.view();
        if !view.registered {
            continue;
        }
        let at = (view.image.applied_index, view.controller);
        if applied == Some(at) {
            continue;
        }
        match mirror(&shard, &view).await {
            Ok(()) => {
                if applied.is_none() {
                    sweep_dropped_replicas(&shard, &view).await;
                }
                applied = Some(at);
            }
            Err(e) => {
                spate_engine::warn_limited!(
                    "cluster metadata not applied",
                    "cannot apply the cluster's metadata here yet: {e}; retrying"
                );
                glommio::timer::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The topics of the image as the local metadata records them.
pub fn topics_of(image: &ClusterImage, shards: usize) -> Vec<TopicMeta> {
    image
        .topics
        .values()
        .map(|t| TopicMeta {
            name: t.name.clone(),
            topic_id: t.id,
            partition_shards: t
                .partitions
                .iter()
                .map(|p| p.assignment.shard % shards.max(1) as u32)
                .collect(),
            config: TopicConfigs::from_pairs(
                t.configs.iter().map(|(k, v)| (k.as_str(), v.clone())),
            ),
        })
        .collect()
}

async fn mirror(shard: &Rc<Shard>, view: &Arc<ClusterView>) -> Result<(), EngineError> {
    let shards = shard.cluster.shard_count();
    let wanted = topics_of(&view.image, shards);
    let local = shard.cluster.metadata();
    // Gone from the image, or recreated under a new id: removed here with their files.
    for t in &local.topics {
        if !wanted
            .iter()
            .any(|w| w.name == t.name && w.topic_id == t.topic_id)
        {
            shard.delete_topic(t.name.clone()).await?;
        }
    }
    for w in &wanted {
        let local = shard.cluster.topic(&w.name);
        let same = local
            .as_ref()
            .is_some_and(|l| l.topic_id == w.topic_id && l.partition_shards == w.partition_shards);
        if !same {
            let topic = w.clone();
            shard.change_metadata(move |st| st.put_topic(topic)).await?;
        } else if local.as_ref().is_some_and(|l| l.config != w.config) {
            shard
                .set_topic_config(w.name.clone(), w.config.clone())
                .await?;
        }
    }
    for s in 0..shards {
        let view = view.clone();
        shard
            .call(s, move |s| {
                Box::pin(async move { host_partitions(&s, &view).await })
            })
            .await
            .map_err(|_| EngineError::Closed)??;
    }
    Ok(())
}

/// On each shard: opens the partitions of this shard that this broker is a replica of and
/// gives their state to the shard's replicas.
async fn host_partitions(shard: &Rc<Shard>, view: &ClusterView) -> Result<(), EngineError> {
    let Some(replicas) = shard.replicas.clone() else {
        return Ok(());
    };
    let me = view.node_id;
    let shards = shard.cluster.shard_count() as u32;
    let mut hosted = std::collections::BTreeSet::new();
    for t in view.image.topics.values() {
        let settings = shard.cluster.settings_of(&TopicConfigs::from_pairs(
            t.configs.iter().map(|(k, v)| (k.as_str(), v.clone())),
        ));
        for (i, p) in t.partitions.iter().enumerate() {
            let i = i as u32;
            if p.assignment.shard % shards != shard.id as u32
                || !p.assignment.replicas.contains(&me)
            {
                continue;
            }
            let log = match shard.logs.get(&t.name, i) {
                Some(log) => log,
                None => {
                    shard
                        .logs
                        .open_partition(&t.name, i, settings.log_config(&t.name, t.id, i))
                        .await?;
                    shard.logs.get(&t.name, i).ok_or(EngineError::Closed)?
                }
            };
            hosted.insert((t.id, i));
            let min_isr = settings.min_insync_replicas.max(1) as usize;
            let transition = replicas.apply((t.id, i), &t.name, log.clone(), p, min_isr);
            if transition == Transition::BecameLeader {
                shard.producers.forget_partition(&t.name, i);
            }
            if t.name == OFFSETS_TOPIC && transition != Transition::Unchanged {
                let parts = t.partitions.len() as u32;
                coordinate(
                    shard,
                    &log,
                    i,
                    parts,
                    transition == Transition::BecameLeader,
                )
                .await;
            }
        }
    }
    let offsets = view.image.topic_by_name(OFFSETS_TOPIC);
    for key in replicas.keys() {
        if !hosted.contains(&key) {
            replicas.remove(key);
            let moved_away = view.image.topics.get(&key.0).filter(|t| {
                t.partitions
                    .get(key.1 as usize)
                    .is_some_and(|p| !p.assignment.replicas.contains(&me))
            });
            if let Some(t) = moved_away {
                drop_replica(shard, &t.name, key.1).await;
            }
            if let Some(t) = offsets.filter(|t| t.id == key.0) {
                shard.cluster.set_coordinating(key.1, false);
                let parts = t.partitions.len() as u32;
                shard
                    .groups
                    .forget_groups(|g| commit_log::partition_for(g, parts) == key.1);
            }
        }
    }
    Ok(())
}

/// This broker is no longer a replica of `topic`'s partition `p` (a reassignment moved it
/// away, or was cancelled): the log is closed and its files removed. Safe as soon as the
/// committed image says so: a broker outside the replica set is never in the ISR, so its copy
/// can never be needed to keep an acknowledged record.
async fn drop_replica(shard: &Rc<Shard>, topic: &str, p: u32) {
    shard.logs.remove_partition(topic, p).await;
    shard.producers.forget_partition(topic, p);
    shard
        .unflushed_records
        .borrow_mut()
        .remove(&(topic.to_string(), p));
    let data_dir = shard.cluster.data_dir.clone();
    let name = topic.to_string();
    let removed = glommio::executor()
        .spawn_blocking(move || spate_engine::registry::remove_partition_files(&data_dir, &name, p))
        .await;
    match removed {
        Ok(()) => tracing::info!(
            topic,
            partition = p,
            "replica removed: this broker is no longer one of the partition's replicas"
        ),
        Err(e) => tracing::warn!(
            topic,
            partition = p,
            "cannot remove the replica's files: {e}"
        ),
    }
}

/// Once, after the first image is mirrored: the files of partitions of the image's topics
/// that this broker is not a replica of (moved away while it was down) are removed. Topics the
/// image does not hold were removed by `mirror` already.
async fn sweep_dropped_replicas(shard: &Rc<Shard>, view: &ClusterView) {
    let root = shard.cluster.data_dir.join("topics");
    let on_disk = glommio::executor()
        .spawn_blocking(move || partition_dirs(&root))
        .await;
    for (topic, p) in on_disk {
        let stale = view.image.topic_by_name(&topic).is_some_and(|t| {
            t.partitions
                .get(p as usize)
                .is_some_and(|part| !part.assignment.replicas.contains(&view.node_id))
        });
        if stale {
            let shards = shard.cluster.shard_count();
            let owner = shard
                .cluster
                .topic(&topic)
                .and_then(|t| t.partition_shards.get(p as usize).copied())
                .map_or(0, |s| s as usize % shards.max(1));
            let _ = shard
                .call(owner, move |s| {
                    Box::pin(async move { drop_replica(&s, &topic, p).await })
                })
                .await;
        }
    }
}

/// `(topic, partition)` of every partition directory under `root` (`topics/`).
fn partition_dirs(root: &std::path::Path) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let Ok(topics) = std::fs::read_dir(root) else {
        return out;
    };
    for topic in topics.flatten() {
        let Some(name) = topic.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(parts) = std::fs::read_dir(topic.path()) else {
            continue;
        };
        for part in parts.flatten() {
            if let Some(p) = part
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            {
                out.push((name.clone(), p));
            }
        }
    }
    out
}

/// This broker now leads offsets partition `p` (`leads`), or no longer does: its groups are
/// loaded from the partition's log (a new coordinator knows every commit the last one
/// acknowledged: they are below the high watermark it inherits), or forgotten.
async fn coordinate(
    shard: &Rc<Shard>,
    log: &spate_engine::PartitionLog,
    p: u32,
    parts: u32,
    leads: bool,
) {
    shard.cluster.set_coordinating(p, false);
    shard
        .groups
        .forget_groups(|g| commit_log::partition_for(g, parts) == p);
    if !leads {
        return;
    }
    match commit_log::replay(log, &shard.groups).await {
        Ok(applied) => {
            tracing::info!(
                partition = p,
                commits = applied,
                "coordinating the groups of this offsets partition"
            );
            shard.groups.start_ticking();
            shard.cluster.set_coordinating(p, true);
        }
        Err(e) => tracing::error!(
            partition = p,
            "cannot load the groups of this offsets partition: {e}"
        ),
    }
}
