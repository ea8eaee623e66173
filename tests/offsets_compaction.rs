//! `__consumer_offsets` is compacted by the shard's log cleaner on a real broker: after
//! thousands of commits its closed segments hold about one commit per key, and after a restart
//! every group resumes at its last commit (a deleted group stays deleted).

mod common;

use std::path::Path;
use std::time::Duration;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use spate_client::Client;

use common::start;

const GROUPS: i64 = 10;
const COMMITS: i64 = 3_000;
const PARTITIONS: i32 = 4;

fn group_name(g: i64) -> GroupId {
    GroupId(StrBytes::from_string(format!("g{g}")))
}

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str("t"))
}

/// A commit from outside any group membership (as `kafka-consumer-groups --reset-offsets`).
fn commit(client: &mut Client, g: i64, offset: i64) {
    let req = OffsetCommitRequest::default()
        .with_group_id(group_name(g))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name())
            .with_partitions(
                (0..PARTITIONS)
                    .map(|p| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(offset)
                    })
                    .collect(),
            )]);
    let resp: OffsetCommitResponse = client
        .coordinator(&format!("g{g}"))
        .unwrap()
        .call(req, 2, 8)
        .unwrap();
    for p in resp.topics.iter().flat_map(|t| t.partitions.iter()) {
        assert_eq!(p.error_code, 0, "commit {offset} of g{g}");
    }
}

/// The committed offsets of group `g` for partitions 0..PARTITIONS (-1: none).
fn committed(client: &mut Client, g: i64) -> Vec<i64> {
    let req = OffsetFetchRequest::default()
        .with_group_id(group_name(g))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name())
            .with_partition_indexes((0..PARTITIONS).collect())]));
    let resp: OffsetFetchResponse = client
        .coordinator(&format!("g{g}"))
        .unwrap()
        .call(req, 1, 7)
        .unwrap();
    assert_eq!(resp.error_code, 0);
    let mut out = vec![-2; PARTITIONS as usize];
    for p in resp.topics.iter().flat_map(|t| t.partitions.iter()) {
        assert_eq!(p.error_code, 0);
        out[p.partition_index as usize] = p.committed_offset;
    }
    out
}

fn offsets_bytes(data: &Path) -> u64 {
    std::fs::read_dir(data.join("topics/__consumer_offsets/0"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

fn offsets_segments(data: &Path) -> usize {
    std::fs::read_dir(data.join("topics/__consumer_offsets/0"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
        })
        .count()
}

#[test]
fn committed_offsets_are_compacted_and_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("spate.toml");
    std::fs::write(
        &cfg,
        "[kafka]\noffsets_topic_partitions = 1\noffsets_segment_bytes = 65536\n\n[log.cleaner]\nbackoff_ms = 200\n",
    )
    .unwrap();
    let args = ["--config", cfg.to_str().unwrap()];
    let mut broker = start(&data, &args);
    let addr = broker.listen_addr();
    let mut client = Client::new(&addr, "offsets-compaction", Duration::from_secs(10)).unwrap();
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name())
            .with_num_partitions(PARTITIONS)
            .with_replication_factor(1)]);
    let resp: CreateTopicsResponse = client.any().unwrap().call(req, 2, 5).unwrap();
    assert_eq!(resp.topics[0].error_code, 0);

    // About 900 KB of commits into 64 KiB segments: fourteen segments without compaction.
    for i in 0..COMMITS {
        commit(&mut client, i % GROUPS, i);
    }
    let req = DeleteGroupsRequest::default().with_groups_names(vec![group_name(GROUPS - 1)]);
    let resp: DeleteGroupsResponse = client
        .coordinator(&format!("g{}", GROUPS - 1))
        .unwrap()
        .call(req, 0, 2)
        .unwrap();
    assert_eq!(resp.results[0].error_code, 0);
    // The cleaner compacted the partition: its files hold far less than the commits written
    // (about 900 KB; each of the 40 keys' last commits is about 100 bytes).
    broker.wait_for("compacted partition=__consumer_offsets-0");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while offsets_bytes(&data) > 300_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} bytes of __consumer_offsets after compaction",
            offsets_bytes(&data)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let segments = offsets_segments(&data);

    let last = |g: i64| COMMITS - GROUPS + g;
    let check = |client: &mut Client| {
        for g in 0..GROUPS - 1 {
            assert_eq!(
                committed(client, g),
                vec![last(g); PARTITIONS as usize],
                "g{g}"
            );
        }
        assert_eq!(
            committed(client, GROUPS - 1),
            vec![-1; PARTITIONS as usize],
            "deleted"
        );
    };
    check(&mut client);

    broker.stop_cleanly();
    let mut broker = start(&data, &args);
    let addr = broker.listen_addr();
    let mut client = Client::new(&addr, "offsets-compaction", Duration::from_secs(10)).unwrap();
    check(&mut client);
    // The start replayed the compacted partition, not every commit ever made.
    let restored: u64 = broker
        .seen
        .iter()
        .filter(|l| l.contains("shard ready"))
        .map(|l| common::field(l, "offsets_restored"))
        .sum();
    let written = (COMMITS * PARTITIONS as i64) as u64;
    assert!(
        restored < written,
        "{restored} of {written} commits replayed ({segments} segments)"
    );
    broker.stop_cleanly();
}
