//! A request that names many partitions costs one mesh call per owner shard, not one per
//! partition: two shards in this process, requests for the 16 partitions of a 32-partition
//! topic that shard 1 owns dispatched on shard 0, the mesh's counters read around each.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::Compression;
use spate_client::{encode_batch, OutRecord};
use spate_engine::registry::ShardLogs;
use spate_net::metadata::MetadataStore;
use spate_net::shard::ShardMesh;
use spate_net::{dispatch, Cluster, NetConfig, Outcome, Shard};

const TOPIC: &str = "spread";
const PARTITIONS: u32 = 32;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn frame<R: Encodable + HeaderVersion>(key: ApiKey, version: i16, req: &R) -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(sb("mesh-test")))
        .encode(&mut buf, R::header_version(version))
        .unwrap();
    req.encode(&mut buf, version).unwrap();
    buf.freeze()
}

fn decode<R: Decodable + HeaderVersion>(o: Outcome, version: i16) -> R {
    let chunks = match o {
        Outcome::Respond(c) => c,
        Outcome::Silent => panic!("no response"),
        Outcome::Close(why) => panic!("closed: {why}"),
    };
    let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let mut body = Bytes::from(whole[4..].to_vec());
    ResponseHeader::decode(&mut body, R::header_version(version)).unwrap();
    R::decode(&mut body, version).unwrap()
}

fn batch(partition: i32) -> Bytes {
    let records: Vec<OutRecord> = (0..3)
        .map(|i| OutRecord {
            key: None,
            value: Some(Bytes::from(format!("p{partition}-{i}"))),
            headers: Vec::new(),
            timestamp_ms: 1_700_000_000_000,
        })
        .collect();
    encode_batch(&records, Compression::None).unwrap()
}

/// Runs one shard of `cluster` on its own executor: `body` on it once it has started.
fn run_shard<F, Fut>(
    cluster: Arc<Cluster>,
    mesh: Arc<ShardMesh>,
    id: usize,
    data: std::path::PathBuf,
    body: F,
) -> glommio::ExecutorJoinHandle<()>
where
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name(&format!("mesh-test-{id}"))
        .io_memory(256 * 1024)
        .spawn(move || async move {
            let storage = Rc::new(spate_engine::io::dma::DmaStorage);
            spate_engine::shard::read_probe_file(&*storage, &data)
                .await
                .unwrap();
            let logs = Rc::new(ShardLogs::new(
                id,
                &data,
                storage,
                Default::default(),
                64 << 20,
            ));
            logs.open_assigned(cluster.metadata().assigned_to(id, &cluster.broker_defaults))
                .await
                .unwrap();
            let shard = Shard::start(id, cluster, &mesh, logs.clone(), None).unwrap();
            body(shard).await;
            logs.close_all().await;
        })
        .unwrap()
}

/// Mesh calls shard 0 sends, and replies it receives, while `f` runs.
async fn cost<T>(mesh: &ShardMesh, f: impl std::future::Future<Output = T>) -> (T, u64, u64) {
    let before = mesh.counters(0);
    let out = f.await;
    let after = mesh.counters(0);
    (
        out,
        after.calls_sent - before.calls_sent,
        after.replies_received - before.replies_received,
    )
}

#[test]
fn a_request_for_many_partitions_costs_one_mesh_call_per_owner_shard() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let mut store = MetadataStore::open(&data).unwrap();
    let topic = store
        .create_topic(TOPIC, PARTITIONS, Default::default(), 2)
        .unwrap();
    spate_engine::shard::write_probe_file(&data).unwrap();
    // The partitions shard 1 owns: 16 of them, spread over the topic.
    let remote: Vec<i32> = (0..PARTITIONS as i32)
        .filter(|p| topic.partition_shards[*p as usize] == 1)
        .collect();
    assert_eq!(remote.len(), 16);
    let cluster = Cluster::new(
        NetConfig::default(),
        2,
        store,
        data.clone(),
        Default::default(),
    );
    let mesh = Shard::mesh(2);
    let done = Arc::new(AtomicBool::new(false));

    let owner = {
        let done = done.clone();
        run_shard(
            cluster.clone(),
            mesh.clone(),
            1,
            data.clone(),
            move |shard| async move {
                // Held while it serves: the mesh keeps a shard's state only weakly.
                let _shard = shard;
                while !done.load(Ordering::SeqCst) {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
            },
        )
    };
    let asker_done = done.clone();
    let asker_mesh = mesh.clone();
    let asker = run_shard(cluster, mesh, 0, data, move |shard| async move {
        let mesh = asker_mesh;
        let done = asker_done;
        let topic_name = || TopicName(sb(TOPIC));

        // Produce: one call to shard 1 for all 16 partitions. Its task says once when every
        // batch is queued (the connection may start its next request) and once with the
        // answers: two replies.
        let produce = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(topic_name())
                .with_partition_data(
                    remote
                        .iter()
                        .map(|p| {
                            produce_request::PartitionProduceData::default()
                                .with_index(*p)
                                .with_records(Some(batch(*p)))
                        })
                        .collect(),
                )]);
        let (resp, calls, replies) = cost(
            &mesh,
            dispatch(&shard, frame(ApiKey::Produce, 9, &produce), "test"),
        )
        .await;
        let resp: ProduceResponse = decode(resp, 9);
        let parts = &resp.responses[0].partition_responses;
        assert_eq!(parts.len(), 16);
        for (p, r) in remote.iter().zip(parts) {
            assert_eq!(
                (r.index, r.error_code, r.base_offset),
                (*p, 0, 0),
                "{:?}",
                r.error_message
            );
        }
        assert_eq!(
            calls, 1,
            "Produce: mesh calls for 16 partitions on one owner"
        );
        assert_eq!(replies, 2, "Produce: queued, then the answers");

        // Fetch (no wait): one read call.
        let fetch = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(topic_name())
                .with_partitions(
                    remote
                        .iter()
                        .map(|p| {
                            fetch_request::FetchPartition::default()
                                .with_partition(*p)
                                .with_fetch_offset(0)
                                .with_partition_max_bytes(64 << 10)
                        })
                        .collect(),
                )]);
        let (resp, calls, _) = cost(
            &mesh,
            dispatch(&shard, frame(ApiKey::Fetch, 11, &fetch), "test"),
        )
        .await;
        let resp: FetchResponse = decode(resp, 11);
        let parts = &resp.responses[0].partitions;
        assert_eq!(parts.len(), 16);
        for (p, r) in remote.iter().zip(parts) {
            assert_eq!(
                (r.partition_index, r.error_code, r.high_watermark),
                (*p, 0, 3)
            );
            assert!(r.records.as_ref().is_some_and(|b| !b.is_empty()));
        }
        assert_eq!(calls, 1, "Fetch: mesh calls for 16 partitions on one owner");

        // ListOffsets (latest): one call.
        let list = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic_name())
                .with_partitions(
                    remote
                        .iter()
                        .map(|p| {
                            list_offsets_request::ListOffsetsPartition::default()
                                .with_partition_index(*p)
                                .with_timestamp(-1)
                        })
                        .collect(),
                )]);
        let (resp, calls, _) = cost(
            &mesh,
            dispatch(&shard, frame(ApiKey::ListOffsets, 7, &list), "test"),
        )
        .await;
        let resp: ListOffsetsResponse = decode(resp, 7);
        for (p, r) in remote.iter().zip(&resp.topics[0].partitions) {
            assert_eq!((r.partition_index, r.error_code, r.offset), (*p, 0, 3));
        }
        assert_eq!(
            calls, 1,
            "ListOffsets: mesh calls for 16 partitions on one owner"
        );

        // DescribeProducers: one call.
        let describe = DescribeProducersRequest::default().with_topics(vec![
            describe_producers_request::TopicRequest::default()
                .with_name(topic_name())
                .with_partition_indexes(remote.clone()),
        ]);
        let (resp, calls, _) = cost(
            &mesh,
            dispatch(
                &shard,
                frame(ApiKey::DescribeProducers, 0, &describe),
                "test",
            ),
        )
        .await;
        let resp: DescribeProducersResponse = decode(resp, 0);
        for (p, r) in remote.iter().zip(&resp.topics[0].partitions) {
            assert_eq!((r.partition_index, r.error_code), (*p, 0));
        }
        assert_eq!(calls, 1, "DescribeProducers: mesh calls for 16 partitions");

        // DescribeLogDirs of every partition (both shards): one call, to shard 1.
        let (resp, calls, _) = cost(
            &mesh,
            dispatch(
                &shard,
                frame(
                    ApiKey::DescribeLogDirs,
                    1,
                    &DescribeLogDirsRequest::default().with_topics(None),
                ),
                "test",
            ),
        )
        .await;
        let resp: DescribeLogDirsResponse = decode(resp, 1);
        assert_eq!(resp.results[0].topics[0].partitions.len(), 32);
        assert_eq!(
            calls, 1,
            "DescribeLogDirs: mesh calls for 16 remote partitions"
        );

        // DeleteRecords up to offset 1: one call.
        let delete = DeleteRecordsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                .with_name(topic_name())
                .with_partitions(
                    remote
                        .iter()
                        .map(|p| {
                            delete_records_request::DeleteRecordsPartition::default()
                                .with_partition_index(*p)
                                .with_offset(1)
                        })
                        .collect(),
                )]);
        let (resp, calls, _) = cost(
            &mesh,
            dispatch(&shard, frame(ApiKey::DeleteRecords, 2, &delete), "test"),
        )
        .await;
        let resp: DeleteRecordsResponse = decode(resp, 2);
        for (p, r) in remote.iter().zip(&resp.topics[0].partitions) {
            assert_eq!(
                (r.partition_index, r.error_code, r.low_watermark),
                (*p, 0, 1)
            );
        }
        assert_eq!(calls, 1, "DeleteRecords: mesh calls for 16 partitions");
        done.store(true, Ordering::SeqCst);
    });
    let asked = asker.join();
    done.store(true, Ordering::SeqCst);
    owner.join().unwrap();
    asked.unwrap();
}
