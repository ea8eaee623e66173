//! Storing a group's commits on its coordinator. On a single broker: the append to the
//! coordinator's `__consumer_offsets` partition. In a cluster that partition is replicated
//! and the coordinator is its leader: the batch is appended in the leader's epoch and the
//! commit is answered once the high watermark passes it, so that a commit a consumer was told
//! of survives its coordinator's death (the next leader of the partition holds it).

use std::rc::Rc;
use std::time::Duration;

use spate_replication::pipeline::Leading;

use crate::groups::Committed;
use crate::handlers::code;
use crate::{Shard, OFFSETS_TOPIC};

/// How long a commit waits for the in-sync replicas.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

impl Shard {
    /// Appends `group`'s commits (a `None` value deletes) to offsets partition `partition`
    /// of this shard; the Kafka error code if they are not stored.
    pub(crate) async fn store_commits(
        self: &Rc<Self>,
        partition: u32,
        group: &str,
        entries: &[(String, i32, Option<Committed>)],
    ) -> Result<(), i16> {
        let Some(log) = self.logs.get(OFFSETS_TOPIC, partition) else {
            return Err(code::COORDINATOR_NOT_AVAILABLE);
        };
        let (epoch, replicated) = match self
            .replicas
            .as_ref()
            .map(|r| r.leading(OFFSETS_TOPIC, partition))
        {
            None => (crate::LEADER_EPOCH, false),
            Some(Leading::Yes {
                leader_epoch,
                replicated,
            }) => (leader_epoch, replicated),
            Some(Leading::No { .. } | Leading::Unknown) => return Err(code::NOT_COORDINATOR),
        };
        let appended = crate::commit_log::append(&log, group, entries, epoch)
            .await
            .map_err(|e| {
                spate_engine::warn_limited!("offset commit failed", group = %group, "offset commit failed: {e}");
                crate::handlers::engine_code(&e)
            })?;
        let (Some(replicas), Some(end)) = (self.replicas.as_ref(), appended) else {
            return Ok(());
        };
        if !replicated {
            return Ok(());
        }
        let wait = replicas.wait_acks_all(OFFSETS_TOPIC, partition, epoch, end);
        let timer = glommio::timer::sleep(COMMIT_TIMEOUT);
        match futures_util::future::select(Box::pin(wait), Box::pin(timer)).await {
            futures_util::future::Either::Left((Ok(()), _)) => Ok(()),
            futures_util::future::Either::Left((Err(e), _)) => {
                spate_engine::warn_limited!("offset commit not replicated", group = %group, "offset commit not acknowledged: {}", e.message);
                Err(if e.code == code::NOT_LEADER_OR_FOLLOWER {
                    code::NOT_COORDINATOR
                } else {
                    e.code
                })
            }
            futures_util::future::Either::Right(_) => Err(code::REQUEST_TIMED_OUT),
        }
    }
}
