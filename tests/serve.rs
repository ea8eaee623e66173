//! End-to-end tests of `spate serve`: a real process on a real socket and data directory.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{field, spate, start};

#[test]
fn starts_logs_one_line_per_shard_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start(dir.path(), &["--shards", "2"]);
    let addr = broker.listen_addr();
    let shard_lines = broker
        .seen
        .iter()
        .filter(|l| l.contains("shard ready"))
        .count();
    assert_eq!(shard_lines, 2, "{:?}", broker.seen);
    // The listener speaks Kafka: ApiVersions v0 (key 18, correlation id 7) is answered.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 7, 0, 0])
        .unwrap();
    let mut head = [0u8; 8];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head[4..8], &[0, 0, 0, 7], "correlation id echoed");
    let status = broker.terminate();
    assert!(status.success());
    broker.wait_for("clean shutdown");
}

#[test]
fn refuses_a_data_dir_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start(dir.path(), &["--shards", "1"]);
    first.listen_addr();
    let out = spate()
        .args([
            "serve",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is in use by another running spate broker")
            && err.contains(&format!("pid {}", first.child.id())),
        "{err}"
    );
    assert!(first.terminate().success());
}

#[test]
fn refuses_a_port_in_use_and_bad_flags_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = spate()
        .args([
            "serve",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            &addr,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {addr}")));

    // A config file the start refuses: it exits, and says this on stderr.
    let cfg = dir.path().join("spate.toml");
    let refused = |text: &str| -> String {
        std::fs::write(&cfg, text).unwrap();
        let out = spate()
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{text}: {err}");
        err
    };
    let err = refused("shardz = 3\n");
    assert!(
        err.contains("unknown field") && err.contains("shardz"),
        "{err}"
    );
    assert!(refused("[log]\nsegment_bytes = 10\n").contains("log.segment_bytes"));
    // A cleaner key map smaller than 1 MiB would hold too few keys for a pass to progress.
    let err = refused("[log.cleaner]\ndedupe_buffer_bytes = 4096\n");
    assert!(
        err.contains("log.cleaner.dedupe_buffer_bytes must be at least 1048576"),
        "{err}"
    );
    let err = refused("[log.cleaner]\ndedupe_buffer = 1048576\n");
    assert!(
        err.contains("unknown field") && err.contains("dedupe_buffer"),
        "{err}"
    );

    let out = spate().args(["serve", "--shards", "0"]).output().unwrap();
    assert!(!out.status.success());
    let out = spate()
        .args([
            "serve",
            "--shards",
            "4096",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than the"));
}

#[test]
fn corrupt_metadata_stops_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("metadata.spate"),
        b"SPAF garbage that is not metadata",
    )
    .unwrap();
    let out = spate()
        .args([
            "serve",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metadata.spate") && err.contains("move it aside"),
        "{err}"
    );
}

/// Topics written through the engine, a torn tail added by hand, then the broker: it
/// recovers (cutting the tail, logging how much), and after a clean stop restarts without
/// scanning anything.
#[test]
fn recovers_partitions_and_restarts_fast_after_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    {
        let mut store = spate_net::metadata::MetadataStore::open(&data).unwrap();
        store
            .create_topic("orders", 3, Default::default(), 2)
            .unwrap();
    }
    spate_engine::shard::write_probe_file(&data).unwrap();
    let d = data.clone();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(256 * 1024)
        .spawn(move || async move {
            spate_engine::shard::read_probe_file(&spate_engine::io::dma::DmaStorage, &d)
                .await
                .unwrap();
            let logs = spate_engine::registry::ShardLogs::new(
                0,
                &d,
                std::rc::Rc::new(spate_engine::io::dma::DmaStorage),
                Default::default(),
                1 << 20,
            );
            for p in 0..3 {
                logs.open_partition("orders", p, Default::default())
                    .await
                    .unwrap();
                let log = logs.get("orders", p).unwrap();
                for i in 0..20u8 {
                    let batch =
                        spate_engine::AppendBatch::opaque(bytes::Bytes::from(vec![i; 3000]), 1);
                    log.append(vec![batch], spate_engine::Durability::Durable)
                        .await
                        .unwrap();
                }
            }
            // No close: as after a crash.
        })
        .unwrap()
        .join()
        .unwrap();
    // A torn frame at the end of partition 1: a plausible header start and garbage.
    let seg = data.join("topics/orders/1/00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    bytes.truncate(end);
    bytes.extend_from_slice(b"SPF1 this is a torn frame, not a valid one");
    std::fs::write(&seg, &bytes).unwrap();

    let mut broker = start(&data, &["--shards", "2"]);
    broker.listen_addr();
    let shard_lines: Vec<String> = broker
        .seen
        .iter()
        .filter(|l| l.contains("shard ready"))
        .cloned()
        .collect();
    assert_eq!(
        shard_lines
            .iter()
            .map(|l| field(l, "partitions"))
            .sum::<u64>(),
        3 + 4,
        "the 3 partitions of orders and the 4 of __consumer_offsets"
    );
    assert!(
        shard_lines
            .iter()
            .map(|l| field(l, "recovered_bytes_cut"))
            .sum::<u64>()
            > 0,
        "{shard_lines:?}"
    );
    assert!(
        broker
            .seen
            .iter()
            .any(|l| l.contains("recovery cut a torn or corrupt tail") && l.contains("orders-1")),
        "{:?}",
        broker.seen
    );
    broker.stop_cleanly();

    let mut broker = start(&data, &["--shards", "2"]);
    broker.listen_addr();
    let scanned: u64 = broker
        .seen
        .iter()
        .filter(|l| l.contains("shard ready"))
        .map(|l| field(l, "recovered_bytes_scanned"))
        .sum();
    assert_eq!(
        scanned, 0,
        "a clean stop leaves nothing to scan: {:?}",
        broker.seen
    );
    broker.stop_cleanly();
}
