//! Bad input on the Kafka port: each case gets a Kafka error or a clean close, a log line
//! says why, and the broker keeps serving every other connection.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::records::Compression;
use spate_client::{encode_batch, Client, Connection, OutRecord};

use common::{start, Broker};

fn sb(s: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.to_string())
}

/// A broker with a small request limit.
fn broker(dir: &std::path::Path) -> (Broker, String) {
    let cfg = dir.join("spate.toml");
    std::fs::write(&cfg, "[kafka]\nmax_request_bytes = 65536\n").unwrap();
    let data = dir.join("data");
    let mut b = start(&data, &["--shards", "2", "--config", cfg.to_str().unwrap()]);
    let addr = b.listen_addr();
    (b, addr)
}

fn raw(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// The broker closed the connection (EOF or reset), without sending anything.
fn assert_closed(mut s: TcpStream) {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("expected a close, got {n} bytes: {:?}", &buf[..n]),
    }
}

/// Another connection still gets answers.
fn assert_serves(addr: &str) {
    let mut c = Client::new(addr, "check", Duration::from_secs(5)).unwrap();
    c.metadata(None).unwrap();
}

fn assert_logged(b: &mut Broker, needle: &str) {
    b.wait_for(needle);
}

fn produce_raw(conn: &mut Connection, topic: &str, records: Bytes) -> i16 {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(sb(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let resp: ProduceResponse = conn.call(req, 3, 9).unwrap();
    resp.responses[0].partition_responses[0].error_code
}

#[test]
fn garbage_truncated_oversized_and_unknown_requests_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, addr) = broker(dir.path());
    // A connection that stays open through all of it, and works at the end.
    let mut bystander = Client::new(&addr, "bystander", Duration::from_secs(5)).unwrap();
    bystander.metadata(None).unwrap();

    // Garbage: a size, then bytes that are no request header.
    let mut s = raw(&addr);
    s.write_all(&[0, 0, 0, 12, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap();
    assert_closed(s);
    assert_logged(&mut b, "unsupported API key -8531");

    // Too short to hold a request header.
    let mut s = raw(&addr);
    s.write_all(&[0, 0, 0, 6, 0xde, 0xad, 0xbe, 0xef, 1, 2])
        .unwrap();
    assert_closed(s);
    assert_logged(&mut b, "request size 6 is below the minimum");

    // A size of zero.
    let mut s = raw(&addr);
    s.write_all(&[0, 0, 0, 0]).unwrap();
    assert_closed(s);
    assert_logged(&mut b, "request size 0 is below the minimum");

    // A frame cut mid-header: 12 bytes whose client id claims 100.
    let mut s = raw(&addr);
    s.write_all(&[0, 0, 0, 12, 0, 3, 0, 1, 0, 0, 0, 1, 0, 100, b'a', b'b'])
        .unwrap();
    assert_closed(s);
    assert_logged(&mut b, "request header");

    // A negative size.
    let mut s = raw(&addr);
    s.write_all(&[0xff, 0xff, 0xff, 0xf0]).unwrap();
    assert_closed(s);
    assert_logged(&mut b, "below the minimum");

    // Over max_request_bytes (64 KiB here).
    let mut s = raw(&addr);
    s.write_all(&(1_000_000i32).to_be_bytes()).unwrap();
    assert_closed(s);
    assert_logged(&mut b, "over max_request_bytes");

    // Truncated: the size promises 100 bytes, 10 arrive, then the client stops sending.
    let mut s = raw(&addr);
    s.write_all(&100i32.to_be_bytes()).unwrap();
    s.write_all(&[0, 3, 0, 1, 0, 0, 0, 1, 0, 0]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_closed(s);
    assert_logged(&mut b, "truncated request (10 of 100 bytes arrived)");

    // An API key Kafka does not have.
    let mut s = raw(&addr);
    s.write_all(&[0, 0, 0, 10, 0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0, 0])
        .unwrap();
    assert_closed(s);
    assert_logged(&mut b, "unsupported API key 999");

    // A known API at a version outside the advertised range.
    let mut s = raw(&addr);
    s.write_all(&[0, 0, 0, 10, 0, 0, 0, 99, 0, 0, 0, 1, 0, 0])
        .unwrap();
    assert_closed(s);
    assert_logged(&mut b, "Produce v99 is not supported");

    // A body that does not decode (Metadata v1 with a topic count of 1 and nothing after).
    let mut s = raw(&addr);
    s.write_all(&[0, 0, 0, 14, 0, 3, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1])
        .unwrap();
    assert_closed(s);
    assert_logged(&mut b, "Metadata v1");

    assert_serves(&addr);
    bystander.metadata(None).unwrap();
    assert!(!b.drain_lines().iter().any(|l| l.contains("panicked")));
    assert!(b.terminate().success());
}

#[test]
fn api_versions_above_the_range_gets_unsupported_version_at_v0_with_the_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, addr) = broker(dir.path());
    let mut s = raw(&addr);
    // ApiVersions v9 (header v2 would be flexible; the answer must be plain v0).
    s.write_all(&[0, 0, 0, 10, 0, 18, 0, 9, 0, 0, 0, 42, 0, 0])
        .unwrap();
    let mut size = [0u8; 4];
    s.read_exact(&mut size).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).unwrap();
    assert_eq!(
        &body[..4],
        &42i32.to_be_bytes(),
        "correlation id, no tag buffer"
    );
    let mut rest = Bytes::from(body[4..].to_vec());
    let r =
        <ApiVersionsResponse as kafka_protocol::protocol::Decodable>::decode(&mut rest, 0).unwrap();
    assert_eq!(r.error_code, 35);
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == 0 && k.max_version >= 3));
    assert!(rest.is_empty());
    // The connection stays usable: ask again at v0.
    s.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 43, 0, 0])
        .unwrap();
    s.read_exact(&mut size).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).unwrap();
    assert_eq!(&body[..4], &43i32.to_be_bytes());
    assert!(b.terminate().success());
}

#[test]
fn bad_batches_get_kafka_errors_and_the_connection_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, addr) = broker(dir.path());
    let mut client = Client::new(&addr, "t", Duration::from_secs(5)).unwrap();
    client.topic("crc", true).unwrap();
    let mut conn = Connection::connect(&addr, "raw", Duration::from_secs(5)).unwrap();
    let good = encode_batch(
        &[OutRecord {
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
            timestamp_ms: 1,
        }],
        Compression::None,
    )
    .unwrap();

    // A flipped byte in the records: CORRUPT_MESSAGE (2).
    let mut bad = good.to_vec();
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    assert_eq!(produce_raw(&mut conn, "crc", Bytes::from(bad)), 2);
    assert_logged(&mut b, "fails its CRC32C check");
    // Magic 1 (an old message format): UNSUPPORTED_FOR_MESSAGE_FORMAT (43).
    let mut old = good.to_vec();
    old[16] = 1;
    assert_eq!(produce_raw(&mut conn, "crc", Bytes::from(old)), 43);
    // A batch cut short: CORRUPT_MESSAGE.
    assert_eq!(
        produce_raw(&mut conn, "crc", good.slice(..good.len() - 4)),
        2
    );
    // An unknown topic: UNKNOWN_TOPIC_OR_PARTITION (3); produce does not create topics.
    assert_eq!(produce_raw(&mut conn, "no-such-topic", good.clone()), 3);
    // The internal offsets topic (made by the group below): INVALID_TOPIC_EXCEPTION (17), as
    // Kafka answers; only coordinators write there.
    client.coordinator("g").unwrap();
    assert_eq!(
        produce_raw(&mut conn, "__consumer_offsets", good.clone()),
        17
    );
    // The same connection still appends a good batch, at offset 0: nothing bad was stored.
    assert_eq!(produce_raw(&mut conn, "crc", good.clone()), 0);
    assert_eq!(client.list_offset("crc", 0, 0, -1).unwrap(), 1);

    // Fetch past the end: OFFSET_OUT_OF_RANGE (1).
    let r = client.fetch(0, "crc", &[(0, 5)], 0).unwrap();
    assert_eq!(r[0].1.as_ref().err(), Some(&1));
    // acks=7: INVALID_REQUIRED_ACKS (21).
    let req = ProduceRequest::default()
        .with_acks(7)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(sb("crc")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(good))])]);
    let resp: ProduceResponse = conn.call(req, 3, 9).unwrap();
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 21);
    assert!(b.terminate().success());
}

/// The broker process is still running.
fn assert_alive(b: &mut Broker, after: &str) {
    if let Ok(Some(status)) = b.child.try_wait() {
        panic!(
            "the broker exited ({status}) after {after}; its log:\n{}",
            b.drain_lines().join("\n")
        );
    }
}

#[test]
fn requests_that_claim_more_than_they_hold_close_their_connection_and_the_broker_lives() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, addr) = broker(dir.path());
    let mut client = Client::new(&addr, "check", Duration::from_secs(5)).unwrap();
    client.topic("alive", true).unwrap();

    // The report's 19 bytes: Metadata v1 whose topic array claims 2 147 483 647 entries. The
    // broker used to abort on a 154 GB allocation.
    let mut s = raw(&addr);
    s.write_all(&[
        0, 0, 0, 0x0f, 0, 3, 0, 1, 0, 0, 0, 2, 0, 1, 0x78, 0x7f, 0xff, 0xff, 0xff,
    ])
    .unwrap();
    assert_closed(s);
    assert_logged(&mut b, "2147483647 elements in 0 remaining bytes");
    assert_alive(&mut b, "the 19-byte Metadata request");

    // One crafted request per API the broker serves, each on its own connection.
    for &(api, _, _) in spate_net::versions::SUPPORTED {
        let (version, body) = spate_net::hostile::crafted(api).unwrap();
        let mut s = raw(&addr);
        s.write_all(&spate_net::hostile::frame(api, version, 7, &body))
            .unwrap();
        if api == ApiKey::ApiVersions {
            // Answered, as Kafka does, with INVALID_REQUEST (42) and the supported ranges.
            let mut head = [0u8; 10];
            s.read_exact(&mut head).unwrap();
            assert_eq!(&head[4..10], &[0, 0, 0, 7, 0, 42], "{head:?}");
        } else {
            assert_closed(s);
        }
        assert_alive(&mut b, &format!("a crafted {api:?} v{version} request"));
    }

    // The same bad request sent 200 times is logged at a bounded rate: at most 10 lines per
    // shard (2 here) in 10 s.
    for _ in 0..200 {
        let mut s = raw(&addr);
        s.write_all(&[
            0, 0, 0, 0x0f, 0, 3, 0, 1, 0, 0, 0, 2, 0, 1, 0x78, 0x7f, 0xff, 0xff, 0xff,
        ])
        .unwrap();
        assert_closed(s);
    }
    assert_alive(&mut b, "200 more of them");

    // A real client still produces and reads back.
    let mut producer = Connection::connect(&addr, "after", Duration::from_secs(5)).unwrap();
    let batch = encode_batch(
        &[OutRecord {
            key: None,
            value: Some(Bytes::from_static(b"still here")),
            headers: vec![],
            timestamp_ms: 1,
        }],
        Compression::None,
    )
    .unwrap();
    assert_eq!(produce_raw(&mut producer, "alive", batch), 0);
    let fetched = client.fetch(0, "alive", &[(0, 0)], 0).unwrap();
    let got = fetched[0].1.as_ref().unwrap();
    assert_eq!(got[0].value.as_deref(), Some(&b"still here"[..]));

    let lines = b.drain_lines();
    let logged = lines
        .iter()
        .filter(|l| l.contains("closing connection"))
        .count();
    // 1 + 24 + 200 requests, each closed; without the bound, every one is a line.
    assert!(
        logged <= 2 * 10 + 2,
        "{logged} close lines for 225 bad requests in a few seconds"
    );
    assert!(!lines.iter().any(|l| l.contains("panicked")));
    assert!(b.terminate().success());
}

#[test]
fn a_fetch_gets_at_most_twice_the_brokers_fetch_max_bytes_whatever_it_asks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("spate.toml");
    std::fs::write(&cfg, "[kafka]\nfetch_max_bytes = 65536\n").unwrap();
    let mut b = start(
        &dir.path().join("data"),
        &["--shards", "2", "--config", cfg.to_str().unwrap()],
    );
    let addr = b.listen_addr();
    let mut client = Client::new(&addr, "fetch-limit", Duration::from_secs(5)).unwrap();
    // Four partitions of 8 batches of 20 KiB each: 640 KiB in all.
    let req = CreateTopicsRequest::default()
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(TopicName(sb("big")))
            .with_num_partitions(4)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let resp: CreateTopicsResponse = client.any().unwrap().call(req, 2, 7).unwrap();
    assert_eq!(resp.topics[0].error_code, 0);
    let mut conn = Connection::connect(&addr, "producer", Duration::from_secs(5)).unwrap();
    for p in 0..4 {
        for _ in 0..8 {
            let batch = encode_batch(
                &[OutRecord {
                    key: None,
                    value: Some(Bytes::from(vec![b'x'; 20 << 10])),
                    headers: vec![],
                    timestamp_ms: 1,
                }],
                Compression::None,
            )
            .unwrap();
            let req = ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(5000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(sb("big")))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(p)
                        .with_records(Some(batch))])]);
            let resp: ProduceResponse = conn.call(req, 3, 9).unwrap();
            assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
        }
    }
    // The client asks for megabytes from each of the four.
    let got = client
        .fetch(0, "big", &[(0, 0), (1, 0), (2, 0), (3, 0)], 0)
        .unwrap();
    let bytes: usize = got
        .iter()
        .flat_map(|(_, r)| r.as_ref().unwrap().iter())
        .map(|r| r.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    // Every partition answered something (an equal share at least: its first batch whole).
    assert!(got.iter().all(|(_, r)| !r.as_ref().unwrap().is_empty()));
    assert!(
        bytes <= 2 * 65536 + 4 * (20 << 10),
        "{bytes} bytes of records for a limit of 65536"
    );
    assert!(bytes < 640 << 10);
    assert!(b.terminate().success());
}
