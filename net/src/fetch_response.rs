//! The Fetch response, encoded by hand (v4 to v18) so that record batches go to the socket as
//! the engine's own `Bytes`: the response is a list of chunks, small encoded parts between
//! untouched batch payloads. Each batch's first 8 bytes (its base offset) are written here,
//! because a batch served from the cache still holds the producer's value there.
//!
//! From v12 the response is flexible (KIP-482): arrays, strings and the records field carry
//! unsigned-varint lengths plus one, and every struct ends with its tagged fields. Spate writes
//! two of them: a refused partition's current leader (v12+) and the endpoints of the leaders
//! named (v16+; KIP-951, `handlers::leader_hints`); a diverging epoch and a snapshot id are
//! for Kafka's replicas, which fetch over Spate's own protocol instead. Every other tag
//! buffer is a single zero byte. From v13 a topic is named by its id instead of its name.

use bytes::{BufMut, BytesMut};
use spate_engine::ReadBatch;

use crate::codec::ResponseChunks;
use crate::handlers::leader_hints::Endpoint;

/// The first flexible version.
const FLEXIBLE: i16 = 12;
/// The first version that names topics by id.
const TOPIC_IDS: i16 = 13;
/// The first version that carries node endpoints.
const NODE_ENDPOINTS: i16 = 16;

pub struct PartitionData {
    pub partition: i32,
    pub error: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub batches: Vec<ReadBatch>,
    /// A refused partition's current leader and leader epoch, if known (KIP-951).
    pub current_leader: Option<(i32, i32)>,
}

pub struct TopicData {
    /// What v4-v12 name the topic by.
    pub name: String,
    /// What v13+ name the topic by: the request's own id (echoed even when unknown).
    pub topic_id: [u8; 16],
    pub partitions: Vec<PartitionData>,
}

/// An unsigned varint (KIP-482), as flexible versions write lengths and tag counts.
fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// An array's length: an i32, or from v12 a compact length (`n + 1`).
fn put_array_len(buf: &mut BytesMut, version: i16, n: usize) {
    if version >= FLEXIBLE {
        put_uvarint(buf, n as u32 + 1);
    } else {
        buf.put_i32(n as i32);
    }
}

/// An empty tag buffer, from v12.
fn put_no_tags(buf: &mut BytesMut, version: i16) {
    if version >= FLEXIBLE {
        buf.put_u8(0);
    }
}

/// A compact string (`len + 1`, then the bytes).
fn put_compact_str(buf: &mut BytesMut, s: &str) {
    put_uvarint(buf, s.len() as u32 + 1);
    buf.put_slice(s.as_bytes());
}

/// Builds chunks on top of `head` (the size prefix and response header, already written);
/// `endpoints`: the brokers the partitions' current leaders name (v16+).
pub fn encode(
    version: i16,
    head: BytesMut,
    topics: &[TopicData],
    endpoints: &[Endpoint],
) -> ResponseChunks {
    encode_all(version, head, 0, topics, endpoints)
}

/// [`encode`] with a top-level error code (v7+; a fetch session's errors are answered there,
/// with no topics).
pub fn encode_with_error(
    version: i16,
    head: BytesMut,
    error_code: i16,
    topics: &[TopicData],
) -> ResponseChunks {
    encode_all(version, head, error_code, topics, &[])
}

fn encode_all(
    version: i16,
    mut head: BytesMut,
    error_code: i16,
    topics: &[TopicData],
    endpoints: &[Endpoint],
) -> ResponseChunks {
    let mut chunks = Vec::new();
    let buf = &mut head;
    buf.put_i32(0); // throttle_time_ms
    if version >= 7 {
        buf.put_i16(error_code);
        buf.put_i32(0); // session_id: no fetch session
    }
    put_array_len(buf, version, topics.len());
    for t in topics {
        if version >= TOPIC_IDS {
            buf.put_slice(&t.topic_id);
        } else if version >= FLEXIBLE {
            put_compact_str(buf, &t.name);
        } else {
            buf.put_i16(t.name.len() as i16);
            buf.put_slice(t.name.as_bytes());
        }
        put_array_len(buf, version, t.partitions.len());
        for p in &t.partitions {
            buf.put_i32(p.partition);
            buf.put_i16(p.error);
            buf.put_i64(p.high_watermark);
            buf.put_i64(p.high_watermark); // last_stable_offset: no transactions
            if version >= 5 {
                buf.put_i64(p.log_start_offset);
            }
            // aborted_transactions: null
            if version >= FLEXIBLE {
                buf.put_u8(0);
            } else {
                buf.put_i32(-1);
            }
            if version >= 11 {
                buf.put_i32(-1); // preferred_read_replica: none
            }
            let size: usize = p.batches.iter().map(|b| b.payload.len()).sum();
            // A fetch reads at most twice `fetch_max_bytes` (an i32 in Kafka's config).
            debug_assert!(size < i32::MAX as usize, "{size} bytes in one partition");
            if version >= FLEXIBLE {
                put_uvarint(buf, size as u32 + 1);
            } else {
                buf.put_i32(size as i32);
            }
            for b in &p.batches {
                if b.payload.len() < 16 {
                    buf.put_slice(&b.payload);
                    continue;
                }
                // The batch's base offset and partition leader epoch as the log holds them
                // (the stored bytes keep the producer's values there); neither is under the
                // batch's CRC, which starts at its attributes.
                buf.put_i64(b.base_offset as i64);
                buf.put_slice(&b.payload[8..12]);
                buf.put_i32(b.leader_epoch);
                chunks.push(buf.split().freeze());
                chunks.push(b.payload.slice(16..));
            }
            // The partition's tags: its current leader (tag 1), a LeaderIdAndEpoch of two
            // i32s and an empty tag buffer.
            match p.current_leader {
                Some((leader, epoch)) if version >= FLEXIBLE => {
                    put_uvarint(buf, 1);
                    put_uvarint(buf, 1);
                    put_uvarint(buf, 9);
                    buf.put_i32(leader);
                    buf.put_i32(epoch);
                    buf.put_u8(0);
                }
                _ => put_no_tags(buf, version),
            }
        }
        put_no_tags(buf, version); // the topic's
    }
    // The response's tags: the node endpoints (tag 0), a compact array of (node id, host,
    // port, rack: null), each with an empty tag buffer.
    if version >= NODE_ENDPOINTS && !endpoints.is_empty() {
        let mut field = BytesMut::new();
        put_array_len(&mut field, version, endpoints.len());
        for e in endpoints {
            field.put_i32(e.node_id);
            put_compact_str(&mut field, &e.host);
            field.put_i32(e.port);
            put_uvarint(&mut field, 0); // rack: null
            field.put_u8(0);
        }
        put_uvarint(buf, 1);
        put_uvarint(buf, 0);
        put_uvarint(buf, field.len() as u32);
        buf.put_slice(&field);
    } else {
        put_no_tags(buf, version);
    }
    chunks.push(buf.split().freeze());
    chunks.retain(|c| !c.is_empty());
    crate::codec::finish(chunks)
}

/// Whether `chunk` is `batch`'s own payload memory (after the base offset, length and leader
/// epoch), not a copy.
#[cfg(test)]
pub fn record_chunk_is_shared(chunk: &bytes::Bytes, batch: &ReadBatch) -> bool {
    let a = chunk.as_ptr() as usize;
    let b = batch.payload.as_ptr() as usize;
    a == b + 16 && chunk.len() + 16 == batch.payload.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_response as kp;
    use kafka_protocol::messages::{FetchResponse, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, StrBytes};

    /// Every version the codec knows, so a newer codec's Fetch is tested before it is served.
    const MAX_VERSION: i16 = <FetchResponse as Message>::VERSIONS.max;

    fn batch(base: u64, len: usize) -> ReadBatch {
        let mut p = vec![0xAB; len];
        p[..8].copy_from_slice(&[0xff; 8]); // as in the cache: not patched
        ReadBatch {
            base_offset: base,
            record_count: 1,
            first_timestamp_ms: 0,
            max_timestamp_ms: 0,
            leader_epoch: 9,
            payload: Bytes::from(p),
        }
    }

    fn topics(batches: &[ReadBatch]) -> Vec<TopicData> {
        vec![
            TopicData {
                name: "orders".into(),
                topic_id: [7; 16],
                partitions: vec![
                    PartitionData {
                        partition: 0,
                        error: 0,
                        high_watermark: 7,
                        log_start_offset: 3,
                        batches: batches.to_vec(),
                        current_leader: None,
                    },
                    PartitionData {
                        partition: 1,
                        error: 6,
                        high_watermark: -1,
                        log_start_offset: -1,
                        batches: vec![],
                        current_leader: Some((2, 5)),
                    },
                ],
            },
            TopicData {
                name: "t".repeat(200), // a compact length of two varint bytes
                topic_id: [0; 16],
                partitions: vec![PartitionData {
                    partition: 4,
                    error: 100,
                    high_watermark: -1,
                    log_start_offset: -1,
                    batches: vec![],
                    current_leader: None,
                }],
            },
        ]
    }

    /// The whole response (size prefix cut off) with the header decoded.
    fn decode(chunks: &[Bytes], version: i16) -> (Vec<u8>, FetchResponse) {
        let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let size = i32::from_be_bytes(whole[..4].try_into().unwrap()) as usize;
        assert_eq!(size, whole.len() - 4, "v{version}: size prefix");
        let mut body = Bytes::from(whole[4..].to_vec());
        let h = ResponseHeader::decode(&mut body, FetchResponse::header_version(version)).unwrap();
        assert_eq!(h.correlation_id, 77);
        let r = FetchResponse::decode(&mut body, version).unwrap();
        assert!(body.is_empty(), "v{version}: {} bytes left", body.len());
        (whole[4..].to_vec(), r)
    }

    fn head(version: i16) -> BytesMut {
        let mut head = BytesMut::new();
        head.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(77)
            .encode(&mut head, FetchResponse::header_version(version))
            .unwrap();
        head
    }

    /// What kafka-protocol's own encoder writes for the same response.
    fn reference(
        version: i16,
        error_code: i16,
        topics: &[TopicData],
        endpoints: &[Endpoint],
    ) -> Vec<u8> {
        let responses = topics
            .iter()
            .map(|t| {
                kp::FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(t.name.clone())))
                    .with_topic_id(uuid::Uuid::from_bytes(t.topic_id))
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let mut records = BytesMut::new();
                                for b in &p.batches {
                                    records.put_i64(b.base_offset as i64);
                                    records.put_slice(&b.payload[8..12]);
                                    records.put_i32(b.leader_epoch);
                                    records.put_slice(&b.payload[16..]);
                                }
                                kp::PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_error_code(p.error)
                                    .with_high_watermark(p.high_watermark)
                                    .with_last_stable_offset(p.high_watermark)
                                    .with_log_start_offset(p.log_start_offset)
                                    .with_aborted_transactions(None)
                                    .with_preferred_read_replica(
                                        kafka_protocol::messages::BrokerId(-1),
                                    )
                                    .with_records(Some(records.freeze()))
                                    .with_current_leader(p.current_leader.map_or_else(
                                        Default::default,
                                        |(leader, epoch)| {
                                            kp::LeaderIdAndEpoch::default()
                                                .with_leader_id(kafka_protocol::messages::BrokerId(
                                                    leader,
                                                ))
                                                .with_leader_epoch(epoch)
                                        },
                                    ))
                            })
                            .collect(),
                    )
            })
            .collect();
        let node_endpoints = endpoints
            .iter()
            .map(|e| {
                kp::NodeEndpoint::default()
                    .with_node_id(kafka_protocol::messages::BrokerId(e.node_id))
                    .with_host(StrBytes::from_string(e.host.clone()))
                    .with_port(e.port)
            })
            .collect();
        let r = FetchResponse::default()
            .with_error_code(error_code)
            .with_responses(responses)
            .with_node_endpoints(node_endpoints);
        let mut buf = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(77)
            .encode(&mut buf, FetchResponse::header_version(version))
            .unwrap();
        r.encode(&mut buf, version).unwrap();
        buf.to_vec()
    }

    #[test]
    fn decodes_with_the_reference_codec_at_every_version() {
        for version in 4..=MAX_VERSION {
            let batches = vec![batch(5, 100), batch(6, 70)];
            let topics = topics(&batches);
            let endpoints = [Endpoint {
                node_id: 2,
                host: "broker-2.example".into(),
                port: 9092,
            }];
            let chunks = encode(version, head(version), &topics, &endpoints);
            // Record payloads are the engine's memory, not copies.
            assert!(chunks
                .iter()
                .any(|c| record_chunk_is_shared(c, &batches[0])));
            assert!(chunks
                .iter()
                .any(|c| record_chunk_is_shared(c, &batches[1])));
            let (bytes, r) = decode(&chunks, version);
            assert_eq!(
                bytes,
                reference(version, 0, &topics, &endpoints),
                "v{version}: not what kafka-protocol encodes"
            );
            assert_eq!(r.throttle_time_ms, 0);
            assert_eq!((r.error_code, r.session_id), (0, 0));
            assert_eq!(r.responses.len(), 2);
            let t = &r.responses[0];
            if version >= 13 {
                assert_eq!(t.topic_id, uuid::Uuid::from_bytes([7; 16]), "v{version}");
                assert!(t.topic.is_empty(), "v{version}");
            } else {
                assert_eq!(t.topic.as_str(), "orders", "v{version}");
                assert_eq!(r.responses[1].topic.len(), 200, "v{version}");
            }
            let p = &t.partitions[0];
            assert_eq!(p.partition_index, 0);
            assert_eq!(p.error_code, 0);
            assert_eq!(p.high_watermark, 7);
            assert_eq!(p.last_stable_offset, 7);
            if version >= 5 {
                assert_eq!(p.log_start_offset, 3, "v{version}");
            }
            assert_eq!(p.aborted_transactions, None);
            assert_eq!(p.preferred_read_replica, -1);
            assert_eq!(p.diverging_epoch, Default::default());
            assert_eq!(p.current_leader, Default::default());
            assert_eq!(p.snapshot_id, Default::default());
            let records = p.records.clone().unwrap();
            assert_eq!(records.len(), 170);
            assert_eq!(&records[..8], &5i64.to_be_bytes());
            assert_eq!(&records[8..12], &[0xAB; 4][..]);
            // The partition leader epoch, from the log, whatever the stored bytes say.
            assert_eq!(&records[12..16], &9i32.to_be_bytes());
            assert_eq!(&records[16..100], &[0xAB; 84][..]);
            assert_eq!(&records[100..108], &6i64.to_be_bytes());
            let p = &t.partitions[1];
            assert_eq!((p.partition_index, p.error_code), (1, 6));
            if version >= 12 {
                assert_eq!(
                    (p.current_leader.leader_id.0, p.current_leader.leader_epoch),
                    (2, 5),
                    "v{version}"
                );
            }
            if version >= 16 {
                assert_eq!(r.node_endpoints.len(), 1, "v{version}");
                assert_eq!(r.node_endpoints[0].host.as_str(), "broker-2.example");
                assert_eq!(r.node_endpoints[0].port, 9092);
            } else {
                assert!(r.node_endpoints.is_empty(), "v{version}");
            }
            assert_eq!((p.high_watermark, p.log_start_offset), (-1, -1));
            assert_eq!(p.records.as_ref().map(Bytes::len), Some(0));
            let t = &r.responses[1];
            assert_eq!(t.partitions[0].partition_index, 4);
            assert_eq!(t.partitions[0].error_code, 100);
            if version >= 13 {
                assert_eq!(t.topic_id, uuid::Uuid::nil());
            }
        }
    }

    #[test]
    fn a_top_level_error_has_no_topics_at_every_version_that_carries_one() {
        for version in 7..=MAX_VERSION {
            let chunks = encode_with_error(version, head(version), 70, &[]);
            let (bytes, r) = decode(&chunks, version);
            assert_eq!(bytes, reference(version, 70, &[], &[]), "v{version}");
            assert_eq!((r.error_code, r.session_id), (70, 0));
            assert!(r.responses.is_empty());
        }
    }

    #[test]
    fn lengths_of_128_and_more_take_two_varint_bytes() {
        let mut buf = BytesMut::new();
        put_uvarint(&mut buf, 127);
        put_uvarint(&mut buf, 128);
        put_uvarint(&mut buf, 300);
        assert_eq!(&buf[..], &[0x7f, 0x80, 0x01, 0xac, 0x02]);
    }
}
