//! The requests that name topics by id (KIP-516), against a real broker, built with
//! kafka-protocol as a client sends them: Produce v13, Fetch v13 to v18 and DeleteTopics v6,
//! with the flexible versions around them (Fetch v12, Produce v12); and what an id no topic
//! has, the zero id, a leader epoch from the future and an incremental fetch get: a Kafka
//! error on a connection that carries on.

mod common;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use spate_client::{decode_records, encode_batch, Connection, OutRecord};
use uuid::Uuid;

use common::start;

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REQUEST: i16 = 42;
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const UNKNOWN_LEADER_EPOCH: i16 = 75;
const UNKNOWN_TOPIC_ID: i16 = 100;

/// An id no topic has (ids are random version-4 UUIDs; this one is not of version 4).
const STRANGER: Uuid = Uuid::from_bytes([0x11; 16]);

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn connect(addr: &str) -> Connection {
    Connection::connect(addr, "topic-ids", Duration::from_secs(10)).unwrap()
}

fn batch(values: &[&str]) -> Bytes {
    let records: Vec<OutRecord> = values
        .iter()
        .map(|v| OutRecord {
            key: None,
            value: Some(Bytes::from(v.to_string())),
            headers: vec![],
            timestamp_ms: 1,
        })
        .collect();
    encode_batch(&records, Compression::None).unwrap()
}

/// Creates `topic` with `partitions` partitions; its id, from CreateTopics v7.
fn create(conn: &mut Connection, topic: &str, partitions: i32) -> Uuid {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let resp: CreateTopicsResponse = conn.call_at(req, 7).unwrap();
    assert_eq!(resp.topics[0].error_code, NONE);
    let id = resp.topics[0].topic_id;
    assert_ne!(id, Uuid::nil());
    id
}

/// Produce v13 of `values` to each (topic id, partition).
fn produce_by_id(conn: &mut Connection, parts: &[(Uuid, i32)], values: &[&str]) -> ProduceResponse {
    let topic_data = parts
        .iter()
        .map(|(id, p)| {
            TopicProduceData::default()
                .with_topic_id(*id)
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(*p)
                    .with_records(Some(batch(values)))])
        })
        .collect();
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(topic_data);
    conn.call_at(req, 13).unwrap()
}

fn fetch_partition(partition: i32, offset: i64) -> FetchPartition {
    FetchPartition::default()
        .with_partition(partition)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(1 << 20)
}

/// A full, sessionless fetch at `version` (topics named by id from v13, by name before).
fn fetch(
    conn: &mut Connection,
    version: i16,
    topics: Vec<(Uuid, &str, Vec<FetchPartition>)>,
) -> FetchResponse {
    let topics = topics
        .into_iter()
        .map(|(id, topic, partitions)| {
            let t = FetchTopic::default().with_partitions(partitions);
            if version >= 13 {
                t.with_topic_id(id)
            } else {
                t.with_topic(name(topic))
            }
        })
        .collect();
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    conn.call_at(req, version).unwrap()
}

fn values(records: &Option<Bytes>, partition: i32) -> Vec<String> {
    let records = records.clone().unwrap_or_default();
    decode_records(partition, &records, 0)
        .unwrap()
        .into_iter()
        .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
        .collect()
}

#[test]
fn produce_and_fetch_by_topic_id_at_every_version_and_unknown_ids_get_unknown_topic_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = start(&dir.path().join("data"), &["--shards", "2"]);
    let addr = b.listen_addr();
    let mut conn = connect(&addr);
    let id = create(&mut conn, "by-id", 2);

    // Produce v13 by id, to both partitions (on both shards).
    let resp = produce_by_id(&mut conn, &[(id, 0), (id, 1)], &["a", "b"]);
    assert_eq!(resp.responses.len(), 2);
    for (t, p) in resp.responses.iter().zip([0, 1]) {
        assert_eq!(t.topic_id, id, "v13 answers by id");
        let r = &t.partition_responses[0];
        assert_eq!((r.index, r.error_code, r.base_offset), (p, NONE, 0));
    }
    // An unknown id, the zero id and a partition the topic lacks, in one request with a good
    // partition: each gets its own error, the good one is stored.
    let resp = produce_by_id(
        &mut conn,
        &[(STRANGER, 0), (Uuid::nil(), 0), (id, 9), (id, 0)],
        &["c"],
    );
    let got: Vec<(Uuid, i16)> = resp
        .responses
        .iter()
        .map(|t| (t.topic_id, t.partition_responses[0].error_code))
        .collect();
    assert_eq!(
        got,
        vec![
            (STRANGER, UNKNOWN_TOPIC_ID),
            (Uuid::nil(), UNKNOWN_TOPIC_ID),
            (id, UNKNOWN_TOPIC_OR_PARTITION),
            (id, NONE),
        ]
    );
    assert_eq!(resp.responses[3].partition_responses[0].base_offset, 2);
    // Produce v12 (by name) still works: the flexible version before ids.
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name("by-id"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(1)
                .with_records(Some(batch(&["d"])))])]);
    let resp: ProduceResponse = conn.call_at(req, 12).unwrap();
    let r = &resp.responses[0].partition_responses[0];
    assert_eq!((r.error_code, r.base_offset), (NONE, 2));

    // Fetch at every version: by name to v12, by id from v13.
    for version in 4..=18 {
        let resp = fetch(
            &mut conn,
            version,
            vec![(
                id,
                "by-id",
                vec![fetch_partition(0, 0), fetch_partition(1, 0)],
            )],
        );
        assert_eq!(resp.error_code, NONE, "v{version}");
        assert_eq!(resp.session_id, 0, "v{version}");
        let t = &resp.responses[0];
        if version >= 13 {
            assert_eq!(t.topic_id, id, "v{version}");
        } else {
            assert_eq!(t.topic.0.as_str(), "by-id", "v{version}");
        }
        let p0 = &t.partitions[0];
        assert_eq!((p0.partition_index, p0.error_code), (0, NONE), "v{version}");
        assert_eq!(p0.high_watermark, 3, "v{version}");
        if version >= 5 {
            assert_eq!(p0.log_start_offset, 0, "v{version}");
        }
        assert_eq!(values(&p0.records, 0), ["a", "b", "c"], "v{version}");
        let p1 = &t.partitions[1];
        assert_eq!((p1.partition_index, p1.error_code), (1, NONE), "v{version}");
        assert_eq!(values(&p1.records, 1), ["a", "b", "d"], "v{version}");
    }

    // Fetch by an unknown id, the zero id and a missing partition, beside a good partition.
    for version in 13..=18 {
        let resp = fetch(
            &mut conn,
            version,
            vec![
                (
                    STRANGER,
                    "",
                    vec![fetch_partition(0, 0), fetch_partition(1, 0)],
                ),
                (Uuid::nil(), "", vec![fetch_partition(0, 0)]),
                (id, "", vec![fetch_partition(7, 0), fetch_partition(1, 2)]),
            ],
        );
        assert_eq!(resp.error_code, NONE);
        let got: Vec<(Uuid, i32, i16)> = resp
            .responses
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic_id, p.partition_index, p.error_code))
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (STRANGER, 0, UNKNOWN_TOPIC_ID),
                (STRANGER, 1, UNKNOWN_TOPIC_ID),
                (Uuid::nil(), 0, UNKNOWN_TOPIC_ID),
                (id, 7, UNKNOWN_TOPIC_OR_PARTITION),
                (id, 1, NONE),
            ],
            "v{version}"
        );
        let unknown = &resp.responses[0].partitions[0];
        assert_eq!((unknown.high_watermark, unknown.log_start_offset), (-1, -1));
        assert_eq!(values(&resp.responses[2].partitions[1].records, 1), ["d"]);
    }

    // current_leader_epoch: the partitions' epoch (0) and "not checked" (-1) are served, a
    // newer one is UNKNOWN_LEADER_EPOCH.
    for version in [9, 12, 16] {
        let resp = fetch(
            &mut conn,
            version,
            vec![(
                id,
                "by-id",
                vec![
                    fetch_partition(0, 0).with_current_leader_epoch(0),
                    fetch_partition(1, 0).with_current_leader_epoch(5),
                ],
            )],
        );
        let p = &resp.responses[0].partitions;
        assert_eq!(p[0].error_code, NONE, "v{version}");
        assert_eq!(p[1].error_code, UNKNOWN_LEADER_EPOCH, "v{version}");
        assert_eq!(p[1].records.as_ref().map_or(0, Bytes::len), 0);
    }

    // An incremental fetch (a session this broker never gave) is refused as a whole.
    for (session_id, epoch) in [(12345, 3), (0, 1), (12345, -2)] {
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_session_id(session_id)
            .with_session_epoch(epoch)
            .with_topics(vec![FetchTopic::default()
                .with_topic_id(id)
                .with_partitions(vec![fetch_partition(0, 0)])]);
        let resp: FetchResponse = conn.call_at(req, 16).unwrap();
        assert_eq!(resp.error_code, FETCH_SESSION_ID_NOT_FOUND);
        assert_eq!(resp.session_id, 0);
        assert!(resp.responses.is_empty());
    }
    // And a full request naming a session (a client closing one) is served.
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_session_id(12345)
        .with_session_epoch(0)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(id)
            .with_partitions(vec![fetch_partition(0, 0)])]);
    let resp: FetchResponse = conn.call_at(req, 16).unwrap();
    assert_eq!(resp.error_code, NONE);
    assert_eq!(values(&resp.responses[0].partitions[0].records, 0).len(), 3);

    // The same connection still serves after every refusal.
    let resp = produce_by_id(&mut conn, &[(id, 0)], &["e"]);
    assert_eq!(resp.responses[0].partition_responses[0].base_offset, 3);
    assert!(b.terminate().success());
}

fn delete(
    conn: &mut Connection,
    topics: Vec<DeleteTopicState>,
) -> Vec<(Option<String>, Uuid, i16)> {
    let req = DeleteTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(5000);
    let resp: DeleteTopicsResponse = conn.call_at(req, 6).unwrap();
    resp.responses
        .into_iter()
        .map(|r| {
            (
                r.name.map(|n| n.0.as_str().to_string()),
                r.topic_id,
                r.error_code,
            )
        })
        .collect()
}

fn by_id(id: Uuid) -> DeleteTopicState {
    DeleteTopicState::default().with_topic_id(id)
}

fn by_name(topic: &str) -> DeleteTopicState {
    DeleteTopicState::default().with_name(Some(name(topic)))
}

#[test]
fn delete_topics_v6_by_id_and_by_name_with_kafkas_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = start(&dir.path().join("data"), &["--shards", "2"]);
    let addr = b.listen_addr();
    let mut conn = connect(&addr);
    let a = create(&mut conn, "del-a", 2);
    let bb = create(&mut conn, "del-b", 1);
    let c = create(&mut conn, "del-c", 1);

    // Refused for their shape: neither name nor id, both, a duplicate; unknown ones.
    let got = delete(
        &mut conn,
        vec![
            DeleteTopicState::default(),
            by_name("del-a").with_topic_id(a),
            by_id(STRANGER),
            by_id(Uuid::nil()).with_name(Some(name("nope"))),
            by_id(c),
            by_id(c),
        ],
    );
    assert_eq!(
        got,
        vec![
            (None, Uuid::nil(), INVALID_REQUEST),
            (Some("del-a".into()), a, INVALID_REQUEST),
            (None, c, INVALID_REQUEST),
            (None, STRANGER, UNKNOWN_TOPIC_ID),
            (Some("nope".into()), Uuid::nil(), UNKNOWN_TOPIC_OR_PARTITION),
        ]
    );
    // Nothing was deleted.
    let mut client = spate_client::Client::new(&addr, "check", Duration::from_secs(5)).unwrap();
    let names = |client: &mut spate_client::Client| -> Vec<String> {
        let mut n: Vec<String> = client
            .metadata(None)
            .unwrap()
            .into_iter()
            .filter(|t| !t.internal)
            .map(|t| t.name)
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&mut client), ["del-a", "del-b", "del-c"]);

    // By id: answered with the name too. By name: answered with the id too.
    let got = delete(&mut conn, vec![by_id(a), by_name("del-b")]);
    assert_eq!(
        got,
        vec![
            (Some("del-a".into()), a, NONE),
            (Some("del-b".into()), bb, NONE),
        ]
    );
    assert_eq!(names(&mut client), ["del-c"]);
    // The deleted id is now unknown; the topic recreated under its name has another id.
    assert_eq!(
        delete(&mut conn, vec![by_id(a)]),
        vec![(None, a, UNKNOWN_TOPIC_ID)]
    );
    let a2 = create(&mut conn, "del-a", 1);
    assert_ne!(a2, a);
    // A name and the id it maps to: refused, and neither deleted.
    let got = delete(&mut conn, vec![by_id(c), by_name("del-c")]);
    assert_eq!(got, vec![(Some("del-c".into()), c, INVALID_REQUEST)]);
    assert_eq!(names(&mut client), ["del-a", "del-c"]);
    // The old versions still delete by name.
    let req = DeleteTopicsRequest::default()
        .with_topic_names(vec![name("del-c")])
        .with_timeout_ms(5000);
    let resp: DeleteTopicsResponse = conn.call_at(req, 5).unwrap();
    assert_eq!(resp.responses[0].error_code, NONE);
    assert_eq!(names(&mut client), ["del-a"]);
    assert!(b.terminate().success());
}
