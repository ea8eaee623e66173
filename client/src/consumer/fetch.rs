//! The Fetch request: one fetch from a partition leader for a set of positions, sent and
//! received in two steps so a consumer can keep one in flight (its fetch ahead), and the
//! answer decoded per partition. No consumer state: the positions come from the caller.

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;

use super::records::{decode_records, Consumed};
use crate::{sb, Client, ClientError};

/// A partition's records from one fetch, or its Kafka error code.
pub type PartitionFetch = (i32, Result<Vec<Consumed>, i16>);

/// A fetch sent and not yet answered: the consumer's fetch ahead.
pub struct InFlightFetch {
    pub(super) leader: i32,
    pub(super) correlation: i32,
    pub(super) version: i16,
    /// The positions it was sent for.
    pub(super) positions: Vec<(i32, i64)>,
    /// The client's connection epoch when it was sent (a reset since loses it).
    pub(super) epoch: u64,
}

impl Client {
    /// One fetch from `leader` for `(partition, offset)` pairs of `topic`. Returns the records
    /// per partition, or the partition's error code.
    pub fn fetch(
        &mut self,
        leader: i32,
        topic: &str,
        positions: &[(i32, i64)],
        max_wait_ms: i32,
    ) -> Result<Vec<PartitionFetch>, ClientError> {
        let sent = self.fetch_send(leader, topic, positions, max_wait_ms)?;
        let resp = self.fetch_receive(&sent)?;
        decode_fetch(resp, positions)
    }

    /// Sends a fetch without waiting for its response ([`Client::fetch_receive`] reads it;
    /// nothing else may be sent to that broker meanwhile).
    pub fn fetch_send(
        &mut self,
        leader: i32,
        topic: &str,
        positions: &[(i32, i64)],
        max_wait_ms: i32,
    ) -> Result<InFlightFetch, ClientError> {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(64 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(sb(topic)))
                .with_partitions(
                    positions
                        .iter()
                        .map(|(p, o)| {
                            FetchPartition::default()
                                .with_partition(*p)
                                .with_fetch_offset(*o)
                                .with_partition_max_bytes(PARTITION_MAX_BYTES)
                        })
                        .collect(),
                )]);
        let epoch = self.epoch();
        let conn = self.broker(leader)?;
        let version = conn.version_for::<FetchRequest>(4, 11)?;
        let correlation = conn.send_only(req, version)?;
        Ok(InFlightFetch {
            leader,
            correlation,
            version,
            positions: positions.to_vec(),
            epoch,
        })
    }

    /// The response to a fetch sent with [`Client::fetch_send`].
    pub fn fetch_receive(&mut self, sent: &InFlightFetch) -> Result<FetchResponse, ClientError> {
        if sent.epoch != self.epoch() {
            return Err(ClientError::Protocol(
                "the connection a fetch was sent on was reset".into(),
            ));
        }
        self.broker(sent.leader)?
            .receive::<FetchRequest>(sent.correlation, sent.version)
    }
}

/// Bytes asked per partition in a fetch.
const PARTITION_MAX_BYTES: i32 = 4 << 20;

/// Decodes every partition of a fetch response sent for `positions`.
pub(super) fn decode_fetch(
    resp: FetchResponse,
    positions: &[(i32, i64)],
) -> Result<Vec<PartitionFetch>, ClientError> {
    let mut out = Vec::new();
    for t in resp.responses {
        for p in t.partitions {
            if p.error_code != 0 {
                out.push((p.partition_index, Err(p.error_code)));
                continue;
            }
            let from = positions
                .iter()
                .find(|(i, _)| *i == p.partition_index)
                .map_or(0, |(_, o)| *o);
            let recs = match &p.records {
                Some(r) => decode_records(p.partition_index, r, from)?,
                None => Vec::new(),
            };
            out.push((p.partition_index, Ok(recs)));
        }
    }
    Ok(out)
}
