//! A group's committed offsets: read at the start of a membership (OffsetFetch) to resume
//! where the group left off, and written from the consumer's positions (OffsetCommit).

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;

use super::GroupConsumer;
use crate::{sb, Client, ClientError};

impl GroupConsumer {
    pub(super) fn committed(
        &self,
        client: &mut Client,
        group: &str,
        parts: &[i32],
    ) -> Result<BTreeMap<i32, i64>, ClientError> {
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(sb(&self.topic)))
                .with_partition_indexes(parts.to_vec())]));
        let resp: OffsetFetchResponse = client.coordinator(group)?.call(req, 1, 7)?;
        if resp.error_code != 0 {
            return Err(ClientError::Kafka {
                code: resp.error_code,
                context: format!("committed offsets of group {group}"),
            });
        }
        Ok(resp
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (p.partition_index, p.committed_offset))
            })
            .collect())
    }

    /// Commits the current positions (a no-op without a group).
    pub fn commit(&mut self, client: &mut Client) -> Result<(), ClientError> {
        let Some(group) = self.group.clone() else {
            return Ok(());
        };
        self.settle(client)?;
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(sb(&group)))
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(sb(&self.member_id))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(sb(&self.topic)))
                .with_partitions(
                    self.positions
                        .iter()
                        .map(|(p, o)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*o)
                        })
                        .collect(),
                )]);
        let resp: OffsetCommitResponse = client.coordinator(&group)?.call(req, 2, 7)?;
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(ClientError::Kafka {
                        code: p.error_code,
                        context: format!("commit {}-{}", self.topic, p.partition_index),
                    });
                }
            }
        }
        Ok(())
    }
}
