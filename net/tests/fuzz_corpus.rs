//! The fuzz targets' corpora (`fuzz/corpus/<target>/`) and every input that ever crashed one
//! (`fuzz/regressions/<target>/`), replayed through the same checks the targets run
//! (`spate_net::fuzzing`), as ordinary tests. A target with no corpus files fails: an empty
//! directory would make the replay pass without checking anything.
//!
//! `cargo test -p spate-net --test fuzz_corpus -- --ignored write_seeds` writes the seed
//! inputs (real requests of every supported API and version, real record batches) to
//! `fuzz/seeds/<target>/`, from which `scripts/fuzz.sh --seed` rebuilds the corpora.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use spate_engine::atomic_file;
use spate_engine::fuzzing::CountingAlloc;
use spate_net::fuzzing;
use spate_net::metadata::{self, v1, Metadata, TopicConfigs, TopicMeta};
use uuid::Uuid;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Replays the target's corpus and regressions (see `fuzzing::replay_corpus`).
fn replay(target: &str, check: fn(&[u8])) {
    spate_engine::fuzzing::replay_corpus(&fuzz_dir(), target, check);
}

#[test]
fn request() {
    replay("request", fuzzing::check_request);
}

#[test]
fn batch() {
    replay("batch", fuzzing::check_batches);
}

#[test]
fn records() {
    replay("records", fuzzing::check_record_batches);
}

#[test]
fn offsets() {
    replay("offsets", fuzzing::check_offsets_record);
}

#[test]
fn client_records() {
    replay("client_records", fuzzing::check_client_records);
}

#[test]
fn atomic_file() {
    replay("atomic_file", fuzzing::check_atomic_file);
}

#[test]
fn decompress() {
    replay("decompress", fuzzing::check_decompress);
}

#[test]
fn every_supported_api_has_a_fuzz_decoder_and_a_seed() {
    for (key, min, max) in spate_net::versions::SUPPORTED {
        assert!(
            fuzzing::knows_api(*key),
            "{key:?} has no decoder in the fuzz checks"
        );
        for v in *min..=*max {
            let frame = request_frame(*key, v);
            assert!(
                fuzzing::request_decodes(&frame),
                "{key:?} v{v}: seed does not decode"
            );
            fuzzing::check_request(&frame);
        }
    }
}

/// A v2 batch header (base offset 0, no compression, no producer) for `count` records of
/// `records` bytes, with its CRC32C.
fn raw_batch(count: i32, records: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(count - 1).to_be_bytes());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Record batches built to cost the most memory per byte: many minimal records (7 bytes
/// each), and one record with many minimal headers (distinct one-letter keys, null values).
#[test]
fn densest_records_stay_within_the_allocation_bound() {
    let n = 100_000;
    // length 6, attributes, timestamp delta 0, offset delta (zigzag), null key, null value,
    // no headers. Offset deltas past 63 take two bytes.
    let mut records = Vec::new();
    for i in 0..n {
        let z = (i as u64) << 1;
        let delta: Vec<u8> = if z < 0x80 {
            vec![z as u8]
        } else if z < 0x4000 {
            vec![(z as u8) | 0x80, (z >> 7) as u8]
        } else {
            vec![(z as u8) | 0x80, ((z >> 7) as u8) | 0x80, (z >> 14) as u8]
        };
        records.push(((5 + delta.len()) as u8) << 1);
        records.extend_from_slice(&[0, 0]);
        records.extend_from_slice(&delta);
        records.extend_from_slice(&[1, 1, 0]);
    }
    let many_records = raw_batch(n, &records);
    // One record with 8 000 headers: distinct keys of two ASCII characters, null values.
    let h = 8_000u32;
    let mut body = vec![0u8, 0, 0, 1, 1];
    let mut zz = u64::from(h) << 1;
    while zz >= 0x80 {
        body.push((zz as u8) | 0x80);
        zz >>= 7;
    }
    body.push(zz as u8);
    for i in 0..h {
        // Key length 2 (zigzag 4), two characters, value length -1 (zigzag 1).
        body.extend_from_slice(&[4, 33 + (i / 94) as u8, 33 + (i % 94) as u8, 1]);
    }
    let mut record = Vec::new();
    let mut len = (body.len() as u64) << 1;
    while len >= 0x80 {
        record.push((len as u8) | 0x80);
        len >>= 7;
    }
    record.push(len as u8);
    record.extend_from_slice(&body);
    let many_headers = raw_batch(1, &record);
    for (what, batch) in [("records", &many_records), ("headers", &many_headers)] {
        let batch: &Vec<u8> = batch;
        let bytes = Bytes::from(batch.clone());
        let (decoded, peak) = spate_engine::fuzzing::measure(|| {
            kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes.clone())
        });
        let set = decoded.unwrap_or_else(|e| panic!("{what}: {e}"));
        eprintln!(
            "many {what} ({} records): {} bytes held {peak} bytes at once ({:.1} x)",
            set.records.len(),
            batch.len(),
            peak as f64 / batch.len() as f64
        );
        fuzzing::check_record_batches(batch);
        fuzzing::check_client_records(batch);
    }
}

/// Requests built to cost the most memory per byte: long arrays of the largest elements that
/// encode in the fewest bytes. They must stay within the bound the fuzz checks use; the
/// ratios are printed (docs/TESTING.md quotes them).
#[test]
fn densest_arrays_stay_within_the_allocation_bound() {
    fn varint(mut v: u32, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    // api key, version, correlation id, client id "c", and (flexible) an empty tag buffer.
    fn header(key: ApiKey, v: i16) -> Vec<u8> {
        let mut h = [
            &(key as i16).to_be_bytes()[..],
            &v.to_be_bytes(),
            &[0, 0, 0, 1, 0, 1, b'c'],
        ]
        .concat();
        if key.request_header_version(v) >= 2 {
            h.push(0);
        }
        h
    }
    let n = 100_000;
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // LeaveGroup v4: members of (empty member id, null instance id, no tags): 3 bytes each.
    let mut f = header(ApiKey::LeaveGroup, 4);
    f.extend_from_slice(&[2, b'g']);
    varint(n + 1, &mut f);
    for _ in 0..n {
        f.extend_from_slice(&[1, 0, 0]);
    }
    f.push(0);
    cases.push(("LeaveGroup v4 members", f));
    // ListGroups v4: states of one byte each (an empty compact string).
    let mut f = header(ApiKey::ListGroups, 4);
    varint(n + 1, &mut f);
    f.extend(std::iter::repeat_n(1u8, n as usize));
    f.push(0);
    cases.push(("ListGroups v4 states", f));
    // Metadata v9: topics of (empty name, no tags): 2 bytes each.
    let mut f = header(ApiKey::Metadata, 9);
    varint(n + 1, &mut f);
    for _ in 0..n {
        f.extend_from_slice(&[1, 0]);
    }
    f.extend_from_slice(&[1, 0, 0, 0]);
    cases.push(("Metadata v9 topics", f));
    // Metadata v1: topics of an empty name: 2 bytes each.
    let mut f = header(ApiKey::Metadata, 1);
    f.extend_from_slice(&(n as i32).to_be_bytes());
    f.extend(std::iter::repeat_n(0u8, 2 * n as usize));
    cases.push(("Metadata v1 topics", f));
    // IncrementalAlterConfigs v1: one resource of configs (empty name, op, null value, no
    // tags): 4 bytes each.
    let mut f = header(ApiKey::IncrementalAlterConfigs, 1);
    f.extend_from_slice(&[2, 2, 1]);
    varint(n + 1, &mut f);
    for _ in 0..n {
        f.extend_from_slice(&[1, 0, 0, 0]);
    }
    f.extend_from_slice(&[0, 0, 0]);
    cases.push(("IncrementalAlterConfigs v1 configs", f));
    for (what, frame) in &cases {
        assert!(fuzzing::request_decodes(frame), "{what}: does not decode");
        let (_, peak) = spate_engine::fuzzing::measure(|| fuzzing::request_decodes(frame));
        eprintln!(
            "{what}: {} bytes held {peak} bytes at once ({:.1} x)",
            frame.len(),
            peak as f64 / frame.len() as f64
        );
        fuzzing::check_request(frame);
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds: real requests and record batches, encoded with kafka-protocol as clients send them

/// A topic id for the requests that name topics by id.
const TOPIC_ID: Uuid = Uuid::from_bytes([0x5a; 16]);

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic(s: &str) -> TopicName {
    TopicName(sb(s))
}

fn group(s: &str) -> GroupId {
    GroupId(sb(s))
}

/// A v2 record batch of `n` records (keys, values, a header on every other one).
fn record_batch(n: usize, compression: Compression, base_offset: i64) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: if i % 2 == 0 { -1 } else { 7 },
            producer_epoch: if i % 2 == 0 { -1 } else { 0 },
            timestamp_type: TimestampType::Creation,
            offset: base_offset + i as i64,
            sequence: if i % 2 == 0 { -1 } else { i as i32 },
            timestamp: 1_700_000_000_000 + i as i64,
            key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("value {i} {}", "x".repeat(i * 7)))),
            headers: if i % 2 == 0 {
                [(sb("trace"), Some(Bytes::from_static(b"abc")))]
                    .into_iter()
                    .collect()
            } else {
                Default::default()
            },
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// A populated request body of `key` for version `v` (fields a version does not have left at
/// their defaults, as the encoder requires).
fn request_body(key: ApiKey, v: i16) -> BytesMut {
    use kafka_protocol::messages::create_topics_request::*;
    use kafka_protocol::messages::fetch_request::*;
    use kafka_protocol::messages::list_offsets_request::*;
    use kafka_protocol::messages::offset_commit_request::*;
    use kafka_protocol::messages::produce_request::*;
    let mut buf = BytesMut::new();
    macro_rules! enc {
        ($req:expr) => {
            $req.encode(&mut buf, v)
                .unwrap_or_else(|e| panic!("{key:?} v{v}: {e}"))
        };
    }
    match key {
        ApiKey::Produce => enc!(ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(if v <= 12 { topic("orders") } else { topic("") })
                .with_topic_id(if v >= 13 { TOPIC_ID } else { Uuid::nil() })
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(record_batch(3, Compression::None, 0))),
                    PartitionProduceData::default()
                        .with_index(1)
                        .with_records(Some(record_batch(2, Compression::Lz4, 0))),
                ])])),
        ApiKey::Fetch => enc!(FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_cluster_id(if v >= 12 { Some(sb("spate-1")) } else { None })
            // A consumer leaves it at its default; a follower's (v15+) is tagged.
            .with_replica_state(if v >= 15 {
                ReplicaState::default()
                    .with_replica_id(BrokerId(-1))
                    .with_replica_epoch(7)
            } else {
                ReplicaState::default()
            })
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(52_428_800)
            .with_isolation_level(1)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(if v <= 12 { topic("orders") } else { topic("") })
                .with_topic_id(if v >= 13 { TOPIC_ID } else { Uuid::nil() })
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(42)
                        .with_last_fetched_epoch(if v >= 12 { 2 } else { -1 })
                        .with_replica_directory_id(if v >= 17 { TOPIC_ID } else { Uuid::nil() })
                        .with_high_watermark(if v >= 18 { 40 } else { i64::MAX })
                        .with_partition_max_bytes(1 << 20),
                    FetchPartition::default()
                        .with_partition(1)
                        .with_current_leader_epoch(if v >= 9 { 3 } else { -1 })
                        .with_partition_max_bytes(1 << 20),
                ])])
            .with_forgotten_topics_data(if v >= 7 {
                vec![ForgottenTopic::default()
                    .with_topic(if v <= 12 { topic("old") } else { topic("") })
                    .with_topic_id(if v >= 13 { TOPIC_ID } else { Uuid::nil() })
                    .with_partitions(vec![0, 2])]
            } else {
                vec![]
            })
            .with_rack_id(if v >= 11 { sb("rack-a") } else { sb("") })),
        ApiKey::ListOffsets => enc!(ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(if v >= 2 { 1 } else { 0 })
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic("orders"))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                    ListOffsetsPartition::default()
                        .with_partition_index(1)
                        .with_timestamp(1_700_000_000_000),
                ])])),
        ApiKey::Metadata => enc!(MetadataRequest::default()
            .with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic("orders"))),
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic("x"))),
            ]))
            .with_allow_auto_topic_creation(true)),
        ApiKey::OffsetCommit => enc!(OffsetCommitRequest::default()
            .with_group_id(group("g1"))
            .with_generation_id_or_member_epoch(if v >= 1 { 3 } else { -1 })
            .with_member_id(sb("member-1"))
            .with_retention_time_ms(if (2..=4).contains(&v) { 86_400_000 } else { -1 })
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(topic("orders"))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(42)
                    .with_committed_leader_epoch(if v >= 6 { 2 } else { -1 })
                    .with_committed_metadata(Some(sb("meta")))])])),
        // v8 and later ask for several groups (v9 with a member id and epoch).
        ApiKey::OffsetFetch if v >= 8 => enc!(OffsetFetchRequest::default()
            .with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(group("g1"))
                    .with_member_id(if v >= 9 { Some(sb("member-1")) } else { None })
                    .with_member_epoch(if v >= 9 { 3 } else { -1 })
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(topic("orders"))
                            .with_partition_indexes(vec![0, 1, 2])
                    ])),
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(group("g2"))
                    .with_member_epoch(-1)
            ])
            .with_require_stable(true)),
        ApiKey::OffsetFetch => enc!(OffsetFetchRequest::default()
            .with_group_id(group("g1"))
            .with_topics(Some(vec![offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(topic("orders"))
                .with_partition_indexes(vec![0, 1, 2])]))
            .with_require_stable(v >= 7)),
        ApiKey::FindCoordinator => enc!(if v >= 4 {
            FindCoordinatorRequest::default()
                .with_key_type(0)
                .with_coordinator_keys(vec![sb("g1"), sb("g2")])
        } else {
            FindCoordinatorRequest::default().with_key(sb("g1"))
        }),
        ApiKey::JoinGroup => enc!(JoinGroupRequest::default()
            .with_group_id(group("g1"))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(if v >= 1 { 30_000 } else { -1 })
            .with_protocol_type(sb("consumer"))
            .with_protocols(vec![
                join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(sb("range"))
                    .with_metadata(Bytes::from_static(b"\x00\x01\x00\x00\x00\x01\x00\x06orders")),
                join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(sb("roundrobin"))
                    .with_metadata(Bytes::from_static(b"\x00\x00")),
            ])),
        ApiKey::Heartbeat => enc!(HeartbeatRequest::default()
            .with_group_id(group("g1"))
            .with_generation_id(3)
            .with_member_id(sb("member-1"))),
        ApiKey::LeaveGroup => enc!(if v >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(group("g1"))
                .with_members(vec![leave_group_request::MemberIdentity::default()
                    .with_member_id(sb("member-1"))])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(group("g1"))
                .with_member_id(sb("member-1"))
        }),
        ApiKey::SyncGroup => enc!(SyncGroupRequest::default()
            .with_group_id(group("g1"))
            .with_generation_id(3)
            .with_member_id(sb("member-1"))
            .with_protocol_type(if v >= 5 { Some(sb("consumer")) } else { None })
            .with_protocol_name(if v >= 5 { Some(sb("range")) } else { None })
            .with_assignments(vec![sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(sb("member-1"))
                .with_assignment(Bytes::from_static(
                    b"\x00\x01\x00\x00\x00\x01\x00\x06orders\x00\x00\x00\x01\x00\x00\x00\x00\xff\xff\xff\xff",
                ))])),
        ApiKey::DescribeGroups => enc!(DescribeGroupsRequest::default()
            .with_groups(vec![group("g1"), group("g2")])
            .with_include_authorized_operations(v >= 3)),
        ApiKey::ListGroups => enc!(ListGroupsRequest::default().with_states_filter(if v >= 4 {
            vec![sb("Stable")]
        } else {
            vec![]
        })),
        ApiKey::ApiVersions => enc!(ApiVersionsRequest::default()
            .with_client_software_name(if v >= 3 { sb("librdkafka") } else { sb("") })
            .with_client_software_version(if v >= 3 { sb("2.0.2") } else { sb("") })),
        ApiKey::CreateTopics => enc!(CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_validate_only(v >= 1)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(topic("orders"))
                    .with_num_partitions(3)
                    .with_replication_factor(1)
                    .with_configs(vec![CreatableTopicConfig::default()
                        .with_name(sb("retention.ms"))
                        .with_value(Some(sb("86400000")))]),
                CreatableTopic::default()
                    .with_name(topic("placed"))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_assignments(vec![CreatableReplicaAssignment::default()
                        .with_partition_index(0)
                        .with_broker_ids(vec![BrokerId(0)])]),
            ])),
        ApiKey::DeleteTopics if v >= 6 => enc!(DeleteTopicsRequest::default()
            .with_topics(vec![
                delete_topics_request::DeleteTopicState::default().with_name(Some(topic("orders"))),
                delete_topics_request::DeleteTopicState::default().with_topic_id(TOPIC_ID),
            ])
            .with_timeout_ms(30_000)),
        ApiKey::DeleteTopics => enc!(DeleteTopicsRequest::default()
            .with_topic_names(vec![topic("orders"), topic("x")])
            .with_timeout_ms(30_000)),
        ApiKey::DeleteRecords => enc!(DeleteRecordsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                .with_name(topic("orders"))
                .with_partitions(vec![delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(10)])])),
        ApiKey::InitProducerId => enc!(InitProducerIdRequest::default()
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)),
        ApiKey::DescribeConfigs => enc!(DescribeConfigsRequest::default()
            .with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(sb("orders"))
                    .with_configuration_keys(Some(vec![sb("retention.ms")])),
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(sb("0"))
                    .with_configuration_keys(None),
            ])
            .with_include_synonyms(true)
            .with_include_documentation(v >= 3)),
        ApiKey::AlterConfigs => enc!(AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(sb("orders"))
                .with_configs(vec![alter_configs_request::AlterableConfig::default()
                    .with_name(sb("retention.bytes"))
                    .with_value(Some(sb("1048576")))])
        ])),
        ApiKey::CreatePartitions => enc!(CreatePartitionsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![create_partitions_request::CreatePartitionsTopic::default()
                .with_name(topic("orders"))
                .with_count(6)
                .with_assignments(Some(vec![
                    create_partitions_request::CreatePartitionsAssignment::default()
                        .with_broker_ids(vec![BrokerId(0)])
                ]))])),
        ApiKey::DeleteGroups => {
            enc!(DeleteGroupsRequest::default().with_groups_names(vec![group("g1"), group("g2")]))
        }
        ApiKey::IncrementalAlterConfigs => enc!(IncrementalAlterConfigsRequest::default()
            .with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(sb("orders"))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(sb("retention.ms"))
                            .with_config_operation(0)
                            .with_value(Some(sb("1000"))),
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(sb("retention.bytes"))
                            .with_config_operation(1)
                            .with_value(None),
                    ])
            ])),
        ApiKey::DescribeCluster => enc!(DescribeClusterRequest::default()
            .with_include_cluster_authorized_operations(true)),
        ApiKey::OffsetDelete => enc!(OffsetDeleteRequest::default()
            .with_group_id(group("g1"))
            .with_topics(vec![offset_delete_request::OffsetDeleteRequestTopic::default()
                .with_name(topic("orders"))
                .with_partitions(vec![
                    offset_delete_request::OffsetDeleteRequestPartition::default()
                        .with_partition_index(0),
                    offset_delete_request::OffsetDeleteRequestPartition::default()
                        .with_partition_index(2),
                ])])),
        ApiKey::DescribeLogDirs => enc!(DescribeLogDirsRequest::default().with_topics(Some(vec![
            describe_log_dirs_request::DescribableLogDirTopic::default()
                .with_topic(topic("orders"))
                .with_partitions(vec![0, 1])
        ]))),
        ApiKey::DescribeProducers => enc!(DescribeProducersRequest::default().with_topics(vec![
            describe_producers_request::TopicRequest::default()
                .with_name(topic("orders"))
                .with_partition_indexes(vec![0, 1, 2])
        ])),
        ApiKey::DescribeTopicPartitions => enc!(DescribeTopicPartitionsRequest::default()
            .with_topics(vec![
                describe_topic_partitions_request::TopicRequest::default()
                    .with_name(topic("orders")),
                describe_topic_partitions_request::TopicRequest::default().with_name(topic("x")),
            ])
            .with_response_partition_limit(2)
            .with_cursor(Some(
                describe_topic_partitions_request::Cursor::default()
                    .with_topic_name(topic("orders"))
                    .with_partition_index(1)
            ))),
        ApiKey::ConsumerGroupHeartbeat => enc!(ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group("g1"))
            .with_member_id(sb("member-1"))
            .with_member_epoch(3)
            .with_instance_id(Some(sb("instance-1")))
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(vec![topic("orders")]))
            .with_subscribed_topic_regex(if v >= 1 { Some(sb("orders-.*")) } else { None })
            .with_server_assignor(Some(sb("uniform")))
            .with_topic_partitions(Some(vec![
                consumer_group_heartbeat_request::TopicPartitions::default()
                    .with_topic_id(uuid::Uuid::from_bytes([7; 16]))
                    .with_partitions(vec![0, 2])
            ]))),
        ApiKey::ConsumerGroupDescribe => enc!(ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![group("g1"), group("g2")])
            .with_include_authorized_operations(true)),
        ApiKey::OffsetForLeaderEpoch => enc!(OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(topic("orders"))
                    .with_partitions(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(3)
                            .with_leader_epoch(2)
                    ])
            ])),
        ApiKey::AlterPartitionReassignments => enc!(AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![
                alter_partition_reassignments_request::ReassignableTopic::default()
                    .with_name(topic("orders"))
                    .with_partitions(vec![
                        alter_partition_reassignments_request::ReassignablePartition::default()
                            .with_partition_index(0)
                            .with_replicas(Some(vec![BrokerId(2), BrokerId(3)])),
                        alter_partition_reassignments_request::ReassignablePartition::default()
                            .with_partition_index(1)
                            .with_replicas(None),
                    ])
            ])),
        ApiKey::ListPartitionReassignments => enc!(ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(Some(vec![
                list_partition_reassignments_request::ListPartitionReassignmentsTopics::default()
                    .with_name(topic("orders"))
                    .with_partition_indexes(vec![0, 1])
            ]))),
        ApiKey::ElectLeaders => enc!(ElectLeadersRequest::default()
            .with_election_type(if v >= 1 { 1 } else { 0 })
            .with_timeout_ms(30_000)
            .with_topic_partitions(Some(vec![
                elect_leaders_request::TopicPartitions::default()
                    .with_topic(topic("orders"))
                    .with_partitions(vec![0, 1, 2])
            ]))),
        other => panic!("no seed request for {other:?}"),
    }
    buf
}

/// A whole request frame (header and body, without the size prefix) as a client sends it.
pub fn request_frame(key: ApiKey, v: i16) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(v)
        .with_correlation_id(7)
        .with_client_id(Some(sb("fuzz-seed")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(v))
        .unwrap();
    buf.extend_from_slice(&request_body(key, v));
    buf.to_vec()
}

/// Writes the seed inputs of the net targets to `fuzz/seeds/<target>/`.
#[test]
#[ignore = "writes fuzz/seeds; run by scripts/fuzz.sh --seed"]
fn write_seeds() {
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };
    for (key, min, max) in spate_net::versions::SUPPORTED {
        for v in *min..=*max {
            write("request", &format!("{key:?}-v{v}"), &request_frame(*key, v));
        }
    }
    for v in 0..=3 {
        write(
            "request",
            &format!("ApiVersions-v{v}"),
            &request_frame(ApiKey::ApiVersions, v),
        );
    }
    // The crafted over-claiming requests of issue 14 (spate_net::hostile), one per API,
    // without their size prefix.
    for (key, _, _) in spate_net::versions::SUPPORTED {
        if let Some((v, body)) = spate_net::hostile::crafted(*key) {
            let frame = spate_net::hostile::frame(*key, v, 9, &body);
            write("request", &format!("{key:?}-v{v}-hostile"), &frame[4..]);
        }
    }
    // atomic_file: topic metadata files as the broker writes them (the engine's test writes
    // the checkpoint seeds of the same target).
    let metadata = Metadata {
        topics: vec![
            TopicMeta {
                name: "orders".into(),
                topic_id: *b"\x8e\x1c\x52\x0a\x3f\x64\x4b\x2d\x9a\x07\x11\xc4\x5e\x90\x3b\x62",
                partition_shards: vec![0, 1, 0],
                config: TopicConfigs::from_pairs([
                    ("cleanup.policy", "compact,delete".to_string()),
                    ("retention.bytes", "1073741824".to_string()),
                ]),
            },
            TopicMeta {
                name: "__consumer_offsets".into(),
                topic_id: [7; 16],
                partition_shards: vec![1; 8],
                config: TopicConfigs::default(),
            },
        ],
        producer_id_block_end: 2000,
    };
    let bytes = metadata::encode(&metadata).unwrap();
    write("atomic_file", "metadata-v2", &atomic_file::encode(&bytes));
    write("atomic_file", "metadata-v2-bare", &bytes);
    let empty = metadata::encode(&Metadata::default()).unwrap();
    write(
        "atomic_file",
        "metadata-v2-empty",
        &atomic_file::encode(&empty),
    );
    // Format 1, as brokers before topic configs wrote it (still read).
    let old = v1::Metadata {
        topics: vec![v1::TopicMeta {
            name: "orders".into(),
            partition_shards: vec![0, 1, 0],
            config: v1::TopicConfig {
                retention_bytes: Some(1 << 30),
                ..v1::TopicConfig::default()
            },
        }],
        producer_id_block_end: 2000,
    };
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&old).unwrap();
    write("atomic_file", "metadata", &atomic_file::encode(&bytes));
    write("atomic_file", "metadata-bare", &bytes);
    // decompress: codec byte, limit byte (2^(b % 21)), then the codec's stream.
    let text = b"the quick brown fox jumps over the lazy dog; the quick brown fox again".repeat(4);
    for (i, codec) in CODECS.into_iter().enumerate() {
        let stream = fuzzing::compress(codec, &text);
        write(
            "decompress",
            &format!("{codec:?}"),
            &[&[i as u8, 16][..], &stream].concat(),
        );
        let zeros = fuzzing::compress(codec, &[0u8; 4096]);
        write(
            "decompress",
            &format!("{codec:?}-bomb"),
            &[&[i as u8, 10][..], &zeros].concat(),
        );
    }
    for codec in CODECS {
        let one = record_batch(3, codec, 0);
        let two = [record_batch(1, codec, 0), record_batch(4, codec, 1)].concat();
        for target in ["batch", "records", "client_records"] {
            write(target, &format!("{codec:?}-one"), &one);
            write(target, &format!("{codec:?}-two"), &two);
        }
        // client_records: the first byte picks the codec of the round trip, the rest
        // describes records (flags, key length, value length, bytes).
        let spec = [
            &[codec as u8][..],
            &[0, 3, 5],
            b"keyvalue",
            &[6, 0, 4],
            b"abcd",
            &[0x51, 2, 0],
            b"k2",
        ]
        .concat();
        write("client_records", &format!("{codec:?}-spec"), &spec);
    }
    // __consumer_offsets: key and value as the broker writes them (first byte: key length),
    // and a whole batch of them as stored.
    let key = [&[0, 1, 0, 2][..], b"g1", &[0, 6], b"orders", &[0, 0, 0, 3]].concat();
    let value = [
        &[0, 3][..],
        &42i64.to_be_bytes(),
        &2i32.to_be_bytes(),
        &[0, 4],
        b"meta",
        &1_700_000_000_000i64.to_be_bytes(),
    ]
    .concat();
    write(
        "offsets",
        "commit",
        &[&[key.len() as u8][..], &key, &value].concat(),
    );
    write(
        "offsets",
        "tombstone",
        &[&[key.len() as u8][..], &key].concat(),
    );
    let batch = {
        let mut buf = BytesMut::new();
        let records: Vec<Record> = [Some(value.clone()), None]
            .into_iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp: 1_700_000_000_000,
                key: Some(Bytes::from(key.clone())),
                value: v.map(Bytes::from),
                headers: Default::default(),
            })
            .collect();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf
    };
    write("offsets", "batch", &batch);
    write("records", "offsets-batch", &batch);
}
