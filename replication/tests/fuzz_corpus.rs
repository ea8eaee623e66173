//! The `cluster_frame` fuzz target's corpus (`fuzz/corpus/cluster_frame/`) and regressions,
//! replayed through the same check (`spate_replication::fuzzing`). `cargo test -p
//! spate-replication --test fuzz_corpus -- --ignored write_seeds` writes seed inputs (frames
//! of every kind, a quorum message, a batch of records) to `fuzz/seeds/cluster_frame/`.

use std::path::{Path, PathBuf};

use spate_engine::fuzzing::CountingAlloc;
use spate_replication::metadata::{encode_batch, MetadataRecord, PartitionAssignment};
use spate_replication::node::{Body, Frame, Request};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

#[test]
fn cluster_frame() {
    spate_engine::fuzzing::replay_corpus(
        &fuzz_dir(),
        "cluster_frame",
        spate_replication::fuzzing::check_cluster_frame,
    );
}

#[test]
#[ignore]
fn write_seeds() {
    let dir = fuzz_dir().join("seeds").join("cluster_frame");
    std::fs::create_dir_all(&dir).unwrap();
    let bodies = vec![
        Body::Heartbeat {
            broker_id: 2,
            broker_epoch: 7,
            applied: 9,
        },
        Body::Request {
            id: 3,
            request: Request::CreateTopic {
                name: "t".into(),
                partitions: 3,
                replication_factor: 3,
                assignment: Some(vec![vec![1, 2, 3]]),
                configs: vec![("retention.ms".into(), "1".into())],
            },
        },
        Body::FetchMetadata {
            from_index: 4,
            reply_addr: "127.0.0.1:9192".into(),
        },
        Body::MetadataEntries {
            entries: vec![(5, vec![1, 2, 3])],
            controller: Some(1),
            commit: 5,
        },
        Body::MetadataSnapshot {
            index: 9,
            image: spate_replication::metadata::ClusterImage::default().encode(),
            controller: Some(2),
        },
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        let f = Frame {
            cluster_id: [0x5a; 16],
            from: 1,
            body,
        };
        std::fs::write(dir.join(format!("frame-{i}")), &f.encode()[4..]).unwrap();
    }
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
    m.to = 2;
    m.from = 1;
    m.term = 3;
    m.entries = vec![raft::eraftpb::Entry {
        index: 4,
        term: 3,
        data: vec![9; 10].into(),
        ..Default::default()
    }]
    .into();
    let q = spate_replication::quorum::wire::encode(&[0x5a; 16], &m);
    std::fs::write(dir.join("quorum-append"), &q[21..]).unwrap();
    let batch = encode_batch(&[MetadataRecord::CreateTopic {
        name: "t".into(),
        topic_id: [1; 16],
        configs: vec![],
        partitions: vec![PartitionAssignment {
            replicas: vec![1, 2],
            shard: 0,
        }],
    }]);
    std::fs::write(dir.join("records"), batch).unwrap();
}
