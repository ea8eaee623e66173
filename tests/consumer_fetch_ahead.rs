//! A consumer that is behind sends its next fetch before returning the records of the last
//! one. Nothing may be lost or repeated for it: records come in order, a commit covers only
//! what was returned (a new member of the group resumes right after it), and a rewind or a
//! commit while a fetch is ahead leaves the connection in step.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use spate_client::{encode_batch, produce_request, Client, GroupConsumer, OutRecord, StartAt};

use common::start;

const TOPIC: &str = "ahead";
const PER_PARTITION: usize = 6_000;
const VALUE: usize = 1_000;

fn value(partition: i32, i: usize) -> Bytes {
    let mut v = format!("{partition}:{i}:").into_bytes();
    v.resize(VALUE, b'x');
    Bytes::from(v)
}

/// `i` of a value written by `value`.
fn index_of(v: &[u8]) -> (i32, usize) {
    let s = std::str::from_utf8(&v[..20.min(v.len())]).unwrap();
    let mut it = s.split(':');
    let p = it.next().unwrap().parse().unwrap();
    let i = it.next().unwrap().parse().unwrap();
    (p, i)
}

#[test]
fn fetching_ahead_loses_and_repeats_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = start(tmp.path(), &["--shards", "2"]);
    let addr = broker.listen_addr();
    let mut client = Client::new(&addr, "fetch-ahead-test", Duration::from_secs(10)).unwrap();
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_num_partitions(2)
            .with_replication_factor(1)]);
    let resp: CreateTopicsResponse = client.any().unwrap().call(req, 2, 5).unwrap();
    assert_eq!(resp.topics[0].error_code, 0);

    // 6 000 records of 1 KB per partition, 500 to a batch.
    for chunk in 0..PER_PARTITION / 500 {
        let parts = (0..2)
            .map(|partition| {
                let records: Vec<OutRecord> = (0..500)
                    .map(|j| OutRecord {
                        key: None,
                        value: Some(value(partition, chunk * 500 + j)),
                        headers: Vec::new(),
                        timestamp_ms: 1_700_000_000_000,
                    })
                    .collect();
                (
                    partition,
                    encode_batch(&records, Compression::None).unwrap(),
                )
            })
            .collect();
        let resp: ProduceResponse = client
            .any()
            .unwrap()
            .call(produce_request(TOPIC, -1, parts), 3, 9)
            .unwrap();
        for p in resp
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
        {
            assert_eq!(p.error_code, 0, "produce to partition {}", p.index);
        }
    }

    // First member: polls, commits after each poll (with a fetch ahead in flight), rewinds
    // partition 1 once, then stops part-way and leaves.
    let mut c1 = Client::new(&addr, "fetch-ahead-1", Duration::from_secs(10)).unwrap();
    let mut g1 = GroupConsumer::new(TOPIC, Some("g"), StartAt::Earliest);
    g1.start(&mut c1).unwrap();
    let mut expect: BTreeMap<i32, i64> = BTreeMap::from([(0, 0), (1, 0)]);
    let mut rewound = false;
    let mut polls = 0;
    while expect.values().sum::<i64>() < PER_PARTITION as i64 {
        polls += 1;
        assert!(polls < 500, "no progress: {expect:?}");
        let records = g1.poll(&mut c1, Duration::from_millis(200)).unwrap();
        for r in &records {
            let e = expect.get_mut(&r.partition).unwrap();
            assert_eq!(r.offset, *e, "partition {} in order, once", r.partition);
            assert_eq!(
                index_of(r.value.as_deref().unwrap()),
                (r.partition, r.offset as usize)
            );
            *e += 1;
        }
        if !rewound && expect[&1] > 1_000 {
            // Give back everything after offset 500 of partition 1 (as `spate consume`
            // does with what it does not print): the fetch ahead no longer matches.
            g1.rewind(1, 500);
            expect.insert(1, 500);
            rewound = true;
        }
        g1.commit(&mut c1).unwrap();
    }
    assert!(rewound);
    assert!(
        g1.fetches_ahead() > 0,
        "the consumer was behind and fetched ahead"
    );
    g1.leave(&mut c1).unwrap();

    // Second member of the group: resumes exactly after what the first returned, and reads
    // the rest of both partitions.
    let mut c2 = Client::new(&addr, "fetch-ahead-2", Duration::from_secs(10)).unwrap();
    let mut g2 = GroupConsumer::new(TOPIC, Some("g"), StartAt::Earliest);
    g2.start(&mut c2).unwrap();
    let mut polls = 0;
    while expect.values().any(|e| *e < PER_PARTITION as i64) {
        polls += 1;
        assert!(polls < 500, "no progress: {expect:?}");
        for r in g2.poll(&mut c2, Duration::from_millis(200)).unwrap() {
            let e = expect.get_mut(&r.partition).unwrap();
            assert_eq!(
                r.offset, *e,
                "partition {} resumes at its commit",
                r.partition
            );
            *e += 1;
        }
    }
    g2.commit(&mut c2).unwrap();
    assert!(g1.resets().is_empty(), "{:?}", g1.resets());
    assert!(g2.resets().is_empty(), "{:?}", g2.resets());

    // Records deleted below where the consumer is rewound to: the broker answers
    // OFFSET_OUT_OF_RANGE, and the consumer starts over at the earliest offset and says why
    // (so a caller can tell why records come again).
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(1_000)])]);
    let resp: DeleteRecordsResponse = c2.any().unwrap().call(req, 0, 2).unwrap();
    assert_eq!(resp.topics[0].partitions[0].error_code, 0);
    g2.rewind(0, 10);
    let mut polls = 0;
    while g2.resets().is_empty() {
        polls += 1;
        assert!(polls < 50, "no reset after an offset below the log start");
        g2.poll(&mut c2, Duration::from_millis(200)).unwrap();
    }
    let why = &g2.resets()[0];
    assert!(
        why.contains("partition 0: offset Some(10) out of range, restarted at 1000"),
        "{why}"
    );
    broker.stop_cleanly();
}
