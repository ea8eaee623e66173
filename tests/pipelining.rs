//! Several requests in flight on one connection: the broker starts a Produce's successor once
//! its batches are queued, so the answers must still come in request order, the offsets must
//! follow the order the requests were sent, and an idempotent producer's pipelined batches
//! must all be accepted in sequence.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use spate_client::{encode_batch, produce_request, Connection, OutRecord};

use common::start;

fn sb(s: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.to_string())
}

fn connect(addr: &str) -> Connection {
    Connection::connect(addr, "pipelining-test", Duration::from_secs(10)).unwrap()
}

fn create_topic(conn: &mut Connection, name: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(sb(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(1)]);
    let resp: CreateTopicsResponse = conn.call(req, 2, 5).unwrap();
    assert_eq!(resp.topics[0].error_code, 0, "create {name}");
}

fn records(count: usize, tag: &str) -> Bytes {
    let recs: Vec<OutRecord> = (0..count)
        .map(|i| OutRecord {
            key: None,
            value: Some(Bytes::from(format!("{tag}-{i}"))),
            headers: Vec::new(),
            timestamp_ms: 1_700_000_000_000,
        })
        .collect();
    encode_batch(&recs, Compression::None).unwrap()
}

/// A batch of an idempotent producer: `count` records from sequence `first_seq`.
fn idempotent_records(pid: i64, epoch: i16, first_seq: i32, count: usize) -> Bytes {
    let recs: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: first_seq + i as i32,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(format!("seq-{}", first_seq + i as i32))),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

enum Sent {
    Produce { corr: i32, counts: Vec<(i32, i64)> },
    Metadata { corr: i32 },
}

#[test]
fn pipelined_produce_requests_are_answered_in_order_with_offsets_in_request_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = start(&dir.path().join("data"), &["--shards", "2"]);
    let addr = b.listen_addr();
    let mut conn = connect(&addr);
    // Two partitions, so that with two shards one of them is appended on another shard.
    create_topic(&mut conn, "pipe", 2);

    let produce_v = conn.version_for::<ProduceRequest>(3, 9).unwrap();
    let metadata_v = conn.version_for::<MetadataRequest>(1, 9).unwrap();
    // 24 requests sent before any answer is read: produces of growing size to both
    // partitions, acks 1 and all alternating, and a Metadata request among them.
    let mut sent = Vec::new();
    for i in 0..24usize {
        if i == 11 {
            let corr = conn
                .send_only(
                    MetadataRequest::default()
                        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                        )
                        .with_name(Some(TopicName(sb("pipe"))))])),
                    metadata_v,
                )
                .unwrap();
            sent.push(Sent::Metadata { corr });
            continue;
        }
        let acks = if i % 2 == 0 { 1 } else { -1 };
        let (n0, n1) = (1 + i, 1 + (i * 7) % 5);
        let req = produce_request(
            "pipe",
            acks,
            vec![
                (0, records(n0, &format!("r{i}p0"))),
                (1, records(n1, &format!("r{i}p1"))),
            ],
        );
        let corr = conn.send_only(req, produce_v).unwrap();
        sent.push(Sent::Produce {
            corr,
            counts: vec![(0, n0 as i64), (1, n1 as i64)],
        });
    }

    // Answers in the order sent; each partition's offsets follow the request order.
    let mut next = [0i64, 0i64];
    for s in sent {
        match s {
            Sent::Metadata { corr } => {
                let resp = conn.receive::<MetadataRequest>(corr, metadata_v).unwrap();
                assert_eq!(resp.topics.len(), 1);
                assert_eq!(resp.topics[0].partitions.len(), 2);
            }
            Sent::Produce { corr, counts } => {
                let resp = conn.receive::<ProduceRequest>(corr, produce_v).unwrap();
                let parts = &resp.responses[0].partition_responses;
                assert_eq!(parts.len(), 2);
                for (p, count) in counts {
                    let r = parts.iter().find(|r| r.index == p).unwrap();
                    assert_eq!(r.error_code, 0, "partition {p}");
                    assert_eq!(
                        r.base_offset, next[p as usize],
                        "partition {p}: offsets follow the order the requests were sent"
                    );
                    next[p as usize] += count;
                }
            }
        }
    }
    assert!(next[0] > 0 && next[1] > 0);
    b.stop_cleanly();
}

#[test]
fn an_idempotent_producer_may_pipeline_its_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = start(&dir.path().join("data"), &["--shards", "2"]);
    let addr = b.listen_addr();
    let mut conn = connect(&addr);
    create_topic(&mut conn, "idem", 1);
    let init: InitProducerIdResponse = conn
        .call(
            InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
            0,
            4,
        )
        .unwrap();
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);

    // Twenty batches of 3 records, sequences 0, 3, 6, ..., all sent before any answer: each
    // is checked against the one before it, so each must be stored before the next starts.
    let v = conn.version_for::<ProduceRequest>(3, 9).unwrap();
    let corrs: Vec<i32> = (0..20)
        .map(|i| {
            let req = produce_request(
                "idem",
                -1,
                vec![(0, idempotent_records(pid, epoch, i * 3, 3))],
            );
            conn.send_only(req, v).unwrap()
        })
        .collect();
    for (i, corr) in corrs.into_iter().enumerate() {
        let resp = conn.receive::<ProduceRequest>(corr, v).unwrap();
        let r = &resp.responses[0].partition_responses[0];
        assert_eq!(r.error_code, 0, "batch {i} (sequence {})", i * 3);
        assert_eq!(r.base_offset, i as i64 * 3);
    }
    b.stop_cleanly();
}
