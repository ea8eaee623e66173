//! The Fetch response, encoded by hand (v4 to v11) so that record batches go to the socket as
//! the engine's own `Bytes`: the response is a list of chunks, small encoded parts between
//! untouched batch payloads. Each batch's first 8 bytes (its base offset) are written here,
//! because a batch served from the cache still holds the producer's value there.

use bytes::{BufMut, BytesMut};
use spate_engine::ReadBatch;

use crate::codec::ResponseChunks;

pub struct PartitionData {
    pub partition: i32,
    pub error: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub batches: Vec<ReadBatch>,
}

pub struct TopicData {
    pub name: String,
    pub partitions: Vec<PartitionData>,
}

/// Builds chunks on top of `head` (the size prefix and response header, already written).
pub fn encode(version: i16, mut head: BytesMut, topics: &[TopicData]) -> ResponseChunks {
    let mut chunks = Vec::new();
    let buf = &mut head;
    buf.put_i32(0); // throttle_time_ms
    if version >= 7 {
        buf.put_i16(0); // error_code
        buf.put_i32(0); // session_id: no fetch session
    }
    buf.put_i32(topics.len() as i32);
    for t in topics {
        buf.put_i16(t.name.len() as i16);
        buf.put_slice(t.name.as_bytes());
        buf.put_i32(t.partitions.len() as i32);
        for p in &t.partitions {
            buf.put_i32(p.partition);
            buf.put_i16(p.error);
            buf.put_i64(p.high_watermark);
            buf.put_i64(p.high_watermark); // last_stable_offset: no transactions
            if version >= 5 {
                buf.put_i64(p.log_start_offset);
            }
            buf.put_i32(-1); // aborted_transactions: null
            if version >= 11 {
                buf.put_i32(-1); // preferred_read_replica: none
            }
            let size: usize = p.batches.iter().map(|b| b.payload.len()).sum();
            buf.put_i32(size as i32);
            for b in &p.batches {
                if b.payload.len() < 8 {
                    buf.put_slice(&b.payload);
                    continue;
                }
                buf.put_i64(b.base_offset as i64);
                chunks.push(buf.split().freeze());
                chunks.push(b.payload.slice(8..));
            }
        }
    }
    chunks.push(buf.split().freeze());
    chunks.retain(|c| !c.is_empty());
    crate::codec::finish(chunks)
}

/// Whether `chunk` is `batch`'s own payload memory (after the base offset), not a copy.
#[cfg(test)]
pub fn record_chunk_is_shared(chunk: &bytes::Bytes, batch: &ReadBatch) -> bool {
    let a = chunk.as_ptr() as usize;
    let b = batch.payload.as_ptr() as usize;
    a == b + 8 && chunk.len() + 8 == batch.payload.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::{FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;

    fn batch(base: u64, len: usize) -> ReadBatch {
        let mut p = vec![0xAB; len];
        p[..8].copy_from_slice(&[0xff; 8]); // as in the cache: not patched
        ReadBatch {
            base_offset: base,
            record_count: 1,
            first_timestamp_ms: 0,
            max_timestamp_ms: 0,
            leader_epoch: 0,
            payload: Bytes::from(p),
        }
    }

    #[test]
    fn decodes_with_the_reference_codec_at_every_version() {
        for version in 4..=11i16 {
            let mut head = BytesMut::new();
            head.put_i32(0);
            head.put_i32(77); // correlation id (header v0)
            let batches = vec![batch(5, 100), batch(6, 70)];
            let topics = vec![TopicData {
                name: "orders".into(),
                partitions: vec![
                    PartitionData {
                        partition: 0,
                        error: 0,
                        high_watermark: 7,
                        log_start_offset: 0,
                        batches: batches.clone(),
                    },
                    PartitionData {
                        partition: 1,
                        error: 1,
                        high_watermark: 0,
                        log_start_offset: 0,
                        batches: vec![],
                    },
                ],
            }];
            let chunks = encode(version, head, &topics);
            // Record payloads are the engine's memory, not copies.
            assert!(chunks
                .iter()
                .any(|c| record_chunk_is_shared(c, &batches[0])));
            assert!(chunks
                .iter()
                .any(|c| record_chunk_is_shared(c, &batches[1])));
            let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            let size = i32::from_be_bytes(whole[..4].try_into().unwrap()) as usize;
            assert_eq!(size, whole.len() - 4);
            let mut body = Bytes::from(whole[4..].to_vec());
            let h = ResponseHeader::decode(&mut body, 0).unwrap();
            assert_eq!(h.correlation_id, 77);
            let r = FetchResponse::decode(&mut body, version).unwrap();
            assert!(body.is_empty(), "v{version}: {} bytes left", body.len());
            let p = &r.responses[0].partitions[0];
            assert_eq!(p.high_watermark, 7);
            let records = p.records.clone().unwrap();
            assert_eq!(records.len(), 170);
            assert_eq!(&records[..8], &5i64.to_be_bytes());
            assert_eq!(&records[100..108], &6i64.to_be_bytes());
            assert_eq!(r.responses[0].partitions[1].error_code, 1);
        }
    }
}
