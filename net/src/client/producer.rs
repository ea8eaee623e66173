//! Producing: records encoded as one v2 batch per partition (any codec), sent to the leader.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::{murmur2_partition, sb, Client, ClientError};

/// Acknowledgement level of a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    None,
    Leader,
    All,
}

impl Acks {
    pub fn code(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct OutRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub timestamp_ms: i64,
}

/// Encodes records as one v2 record batch.
pub fn encode_batch(records: &[OutRecord], compression: Compression) -> Result<Bytes, ClientError> {
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut headers = IndexMap::new();
            for (k, v) in &r.headers {
                headers.insert(sb(k), v.clone());
            }
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // offset - sequence must be the same for every record, or the encoder
                // starts a new batch; base sequence -1 (no producer id) then follows.
                sequence: i as i32 - 1,
                timestamp: r.timestamp_ms,
                key: r.key.clone(),
                value: r.value.clone(),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| ClientError::Protocol(format!("encoding records: {e}")))?;
    Ok(buf.freeze())
}

impl Client {
    /// Sends records to `topic`, keyed records by murmur2 of the key, others round-robin from
    /// `next`. Returns (partition, base offset) per partition written (empty for acks=0).
    pub fn produce(
        &mut self,
        topic: &str,
        records: Vec<OutRecord>,
        acks: Acks,
        compression: Compression,
        next: &mut u32,
    ) -> Result<Vec<(i32, i64)>, ClientError> {
        let info = self.topic(topic, true)?;
        let n = info.partitions.len() as u32;
        let mut by_partition: BTreeMap<i32, Vec<OutRecord>> = BTreeMap::new();
        for r in records {
            let p = match &r.key {
                Some(k) => murmur2_partition(k, n),
                None => {
                    *next = next.wrapping_add(1);
                    (*next % n) as i32
                }
            };
            by_partition.entry(p).or_default().push(r);
        }
        let leaders: BTreeMap<i32, i32> = info.partitions.iter().copied().collect();
        let mut by_leader: BTreeMap<i32, Vec<(i32, Bytes)>> = BTreeMap::new();
        for (p, recs) in by_partition {
            let leader = leaders.get(&p).copied().unwrap_or(-1);
            by_leader
                .entry(leader)
                .or_default()
                .push((p, encode_batch(&recs, compression)?));
        }
        let mut out = Vec::new();
        for (leader, parts) in by_leader {
            let req = ProduceRequest::default()
                .with_acks(acks.code())
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(sb(topic)))
                    .with_partition_data(
                        parts
                            .into_iter()
                            .map(|(p, b)| {
                                PartitionProduceData::default()
                                    .with_index(p)
                                    .with_records(Some(b))
                            })
                            .collect(),
                    )]);
            let conn = self.broker(leader)?;
            if acks == Acks::None {
                let v = conn.version_for::<ProduceRequest>(3, 9)?;
                conn.send_only(req, v)?;
                continue;
            }
            let resp: ProduceResponse = conn.call(req, 3, 9)?;
            for t in resp.responses {
                for p in t.partition_responses {
                    if p.error_code != 0 {
                        let msg = p
                            .error_message
                            .as_ref()
                            .map(|m| format!(": {}", m.as_str()))
                            .unwrap_or_default();
                        return Err(ClientError::Kafka {
                            code: p.error_code,
                            context: format!("produce to {topic}-{}{msg}", p.index),
                        });
                    }
                    out.push((p.index, p.base_offset));
                }
            }
        }
        Ok(out)
    }
}
