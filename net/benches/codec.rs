//! Criterion benches of the protocol's hot paths: decoding a Produce request (header, body
//! and the CRC32C check of its batch) and encoding a Fetch response (zero-copy chunks).
//! `cargo bench -p spate-net --bench codec`

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::Compression;
use spate_client::{encode_batch, OutRecord};
use spate_engine::ReadBatch;
use spate_net::fetch_response::{encode, PartitionData, TopicData};

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn produce_frame(batch: Bytes) -> Bytes {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(sb("bench")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(0)
        .with_request_api_version(9)
        .with_correlation_id(1)
        .with_client_id(Some(sb("bench")))
        .encode(&mut buf, ProduceRequest::header_version(9))
        .unwrap();
    req.encode(&mut buf, 9).unwrap();
    buf.freeze()
}

fn request_decode(c: &mut Criterion) {
    let records: Vec<OutRecord> = (0..16)
        .map(|_| OutRecord {
            key: None,
            value: Some(Bytes::from(vec![7u8; 1024])),
            headers: vec![],
            timestamp_ms: 1,
        })
        .collect();
    let batch = encode_batch(&records, Compression::None).unwrap();
    let frame = produce_frame(batch);
    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("decode Produce v9, 16 x 1 KiB, with CRC check", |b| {
        b.iter(|| {
            let mut f = black_box(frame.clone());
            let _ = RequestHeader::decode(&mut f, ProduceRequest::header_version(9)).unwrap();
            let req = ProduceRequest::decode(&mut f, 9).unwrap();
            let records = req.topic_data[0].partition_data[0].records.clone().unwrap();
            spate_net::batch::split(&records).unwrap().len()
        })
    });
    g.finish();
}

fn response_encode(c: &mut Criterion) {
    let batches: Vec<ReadBatch> = (0..64u64)
        .map(|i| ReadBatch {
            base_offset: i * 16,
            record_count: 16,
            first_timestamp_ms: 1,
            max_timestamp_ms: 1,
            leader_epoch: 0,
            payload: Bytes::from(vec![1u8; 16 * 1024]),
        })
        .collect();
    let bytes: usize = batches.iter().map(|b| b.payload.len()).sum();
    let mut g = c.benchmark_group("response");
    g.throughput(Throughput::Bytes(bytes as u64));
    // v11: the last non-flexible version; v16: what librdkafka 2.12 asks for (flexible, topics
    // by id).
    for version in [11i16, 16] {
        g.bench_function(
            format!("encode Fetch v{version}, 64 batches x 16 KiB"),
            |b| {
                b.iter(|| {
                    let topics = vec![TopicData {
                        name: "bench".into(),
                        topic_id: [9; 16],
                        partitions: vec![PartitionData {
                            partition: 0,
                            error: 0,
                            high_watermark: 1024,
                            log_start_offset: 0,
                            batches: batches.clone(),
                            current_leader: None,
                        }],
                    }];
                    let mut head = BytesMut::with_capacity(256);
                    head.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
                    encode(version, head, black_box(&topics), &[]).len()
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, request_decode, response_encode);
criterion_main!(benches);
