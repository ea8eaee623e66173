//! Producing: records encoded as one v2 batch per partition (any codec), sent to the leader.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::{murmur2_partition, sb, Client, ClientError};

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
    if compression == Compression::None && !records.is_empty() {
        return Ok(crate::plain_batch::encode_plain(records));
    }
    encode_general(records, compression)
}

/// Encodes records as one v2 record batch with kafka_protocol's encoder (any codec).
/// [`encode_batch`] writes the same bytes in one pass for uncompressed records; this one is
/// public so that tests and fuzz checks can compare the two.
pub fn encode_general(
    records: &[OutRecord],
    compression: Compression,
) -> Result<Bytes, ClientError> {
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
    // Room for the records and their framing (varints, batch header), so the encoder does
    // not grow (and copy) the buffer as it goes.
    let data: usize = records
        .iter()
        .map(|r| {
            r.key.as_ref().map_or(0, |k| k.len())
                + r.value.as_ref().map_or(0, |v| v.len())
                + r.headers
                    .iter()
                    .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + 10)
                    .sum::<usize>()
                + 32
        })
        .sum();
    let mut buf = BytesMut::with_capacity(data + 128);
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

/// A Produce request for `topic`: `parts` are (partition, encoded record batches).
pub fn produce_request(topic: &str, acks: i16, parts: Vec<(i32, Bytes)>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
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
            )])
}

/// Highest Produce version [`produce_body`] encodes (the last before flexible versions; every
/// Kafka broker since 2.1 takes it).
pub const PRODUCE_ENCODED_MAX: i16 = 8;

/// A Produce request body (versions 3 to 8) as chunks: the fields around each batch, and the
/// batches themselves, not copied.
pub fn produce_body(topic: &str, acks: i16, timeout_ms: i32, parts: &[(i32, Bytes)]) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(2 * parts.len() + 1);
    let mut head = BytesMut::with_capacity(32 + topic.len());
    head.put_i16(-1); // transactional id: null
    head.put_i16(acks);
    head.put_i32(timeout_ms);
    head.put_i32(1); // one topic
    head.put_i16(topic.len() as i16);
    head.put_slice(topic.as_bytes());
    head.put_i32(parts.len() as i32);
    for (partition, batch) in parts {
        head.put_i32(*partition);
        head.put_i32(batch.len() as i32);
        out.push(head.split().freeze());
        out.push(batch.clone());
    }
    if !head.is_empty() {
        out.push(head.freeze());
    }
    out
}

/// A produce request sent and not yet answered: [`Client::produce_wait`] reads its
/// responses. Requests on one connection are answered in the order they were sent.
#[derive(Debug)]
pub struct InFlightProduce {
    topic: String,
    /// (broker id, correlation id, version) of each request sent, one per leader.
    requests: Vec<(i32, i32, i16)>,
}

impl Client {
    /// Sends records to `topic` and waits for the acknowledgement; see
    /// [`Client::produce_send`].
    pub fn produce(
        &mut self,
        topic: &str,
        records: Vec<OutRecord>,
        acks: Acks,
        compression: Compression,
        next: &mut u32,
    ) -> Result<Vec<(i32, i64)>, ClientError> {
        let sent = self.produce_send(topic, records, acks, compression, next)?;
        self.produce_wait(sent)
    }

    /// Sends records to `topic`, keyed records by murmur2 of the key, others round-robin from
    /// `next`, without waiting for the answer: several requests can be in flight on a
    /// connection (as Kafka's `max.in.flight.requests.per.connection`). With acks=0 nothing
    /// is answered and the result waits for nothing.
    pub fn produce_send(
        &mut self,
        topic: &str,
        records: Vec<OutRecord>,
        acks: Acks,
        compression: Compression,
        next: &mut u32,
    ) -> Result<InFlightProduce, ClientError> {
        let info = self.producing_topic(topic)?;
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
        let mut sent = InFlightProduce {
            topic: topic.to_string(),
            requests: Vec::new(),
        };
        if topic.len() > i16::MAX as usize {
            return Err(ClientError::Protocol(format!(
                "topic name of {} bytes is too long",
                topic.len()
            )));
        }
        for (leader, parts) in by_leader {
            let body = produce_body(topic, acks.code(), 30_000, &parts);
            let conn = self.broker(leader)?;
            let v = conn.version_for::<ProduceRequest>(3, PRODUCE_ENCODED_MAX)?;
            let correlation = conn.send_encoded::<ProduceRequest>(v, &body)?;
            if acks != Acks::None {
                sent.requests.push((leader, correlation, v));
                self.in_flight += 1;
            }
        }
        Ok(sent)
    }

    /// Waits for the answers to a request sent by [`Client::produce_send`]. Returns
    /// (partition, base offset) per partition written (empty for acks=0).
    pub fn produce_wait(&mut self, sent: InFlightProduce) -> Result<Vec<(i32, i64)>, ClientError> {
        let mut out = Vec::new();
        let topic = sent.topic;
        let mut failed = None;
        for (leader, correlation, version) in sent.requests {
            self.in_flight = self.in_flight.saturating_sub(1);
            if failed.is_some() {
                // Still read the answer, so the connection stays in step.
                let _ = self
                    .broker(leader)
                    .and_then(|c| c.receive::<ProduceRequest>(correlation, version));
                continue;
            }
            let resp = match self
                .broker(leader)
                .and_then(|c| c.receive::<ProduceRequest>(correlation, version))
            {
                Ok(r) => r,
                Err(e) => {
                    failed = Some(e);
                    continue;
                }
            };
            for t in resp.responses {
                for p in t.partition_responses {
                    if p.error_code != 0 && failed.is_none() {
                        // Unknown partition, not the leader: the metadata is stale.
                        if matches!(p.error_code, 3 | 6) {
                            self.forget_topic(&topic);
                        }
                        let msg = p
                            .error_message
                            .as_ref()
                            .map(|m| format!(": {}", m.as_str()))
                            .unwrap_or_default();
                        failed = Some(ClientError::Kafka {
                            code: p.error_code,
                            context: format!("produce to {topic}-{}{msg}", p.index),
                        });
                    }
                    out.push((p.index, p.base_offset));
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn produce_body_is_what_the_general_encoder_writes() {
        let parts = vec![
            (0, Bytes::from_static(b"first batch")),
            (7, Bytes::from_static(b"second")),
        ];
        for version in 3..=PRODUCE_ENCODED_MAX {
            let mut want = BytesMut::new();
            produce_request("topic-a", -1, parts.clone())
                .encode(&mut want, version)
                .unwrap();
            let chunks = produce_body("topic-a", -1, 30_000, &parts);
            let got: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(got, want.to_vec(), "version {version}");
            assert!(
                chunks.iter().any(|c| c.as_ptr() == parts[0].1.as_ptr()),
                "batches are passed on, not copied"
            );
        }
    }
}
