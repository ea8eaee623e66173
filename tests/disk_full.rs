//! A full disk, for real: the `spate` binary on a 300 MiB ext4 filesystem loop-mounted for the
//! test (real O_DIRECT files, real ENOSPC), filled by produce and then by another file, as an
//! operator meets it. A full disk must pause writes, never need a restart: produce is refused
//! with a retriable, named error; a topic deleted with a Kafka admin client frees space; the
//! same partitions take writes again; SIGTERM on the full disk stops cleanly; every acked
//! record is readable after each step, and nothing refused ever appears.
//!
//! Needs root (mount, loop devices). Where that is impossible the tests fail saying so: a
//! skipped test would pass unnoticed.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use spate_client::{Acks, Client, ClientError, OutRecord};

use common::{field, start, Broker};

const DISK_MIB: u64 = 300;
/// Records of this size, this many to a produce request (1 MiB requests).
const VALUE_BYTES: usize = 16 * 1024;
const PER_REQUEST: usize = 64;

/// A loop-mounted ext4 of `DISK_MIB`, unmounted (and its image removed) when dropped, whatever
/// the test did. Declare it before the broker: locals drop in reverse order, so the broker is
/// stopped before the unmount.
struct LoopDisk {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
    mounted: bool,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl LoopDisk {
    fn new() -> LoopDisk {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mut disk = LoopDisk {
            _dir: dir,
            mnt,
            mounted: false,
        };
        let made = run(Command::new("truncate")
            .arg(format!("-s{DISK_MIB}M"))
            .arg(&img))
        // -m 0: no blocks kept for root (the broker runs as root here), so full is full.
        .and_then(|()| {
            run(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .arg(&img))
        })
        .and_then(|()| {
            run(Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&disk.mnt))
        });
        if let Err(e) = made {
            panic!(
                "the disk-full test needs a loop-mounted ext4 (root, mkfs.ext4, loop devices) and \
                 could not make one: {e}"
            );
        }
        disk.mounted = true;
        disk
    }

    fn data_dir(&self) -> PathBuf {
        self.mnt.join("data")
    }

    /// Whether the broker's space reserve holds its blocks.
    fn reserve_held(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let path = self.data_dir().join(spate_engine::space::RESERVE_FILE);
        std::fs::metadata(path)
            .is_ok_and(|m| m.blocks() * 512 >= spate_engine::space::RESERVE_BYTES)
    }

    fn free_bytes(&self) -> u64 {
        spate_engine::space::statvfs(&self.mnt).unwrap().1
    }

    /// Fills the filesystem with a file until ENOSPC, as another process would: writes, then
    /// fallocates in smaller and smaller steps, until a pass takes nothing (ext4 gives back
    /// some of what delayed allocation held once the writes are synced). Returns the bytes it
    /// took.
    fn fill(&self, name: &str) -> u64 {
        use std::os::fd::AsRawFd;
        let path = self.mnt.join(name);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut taken = 0u64;
        for _pass in 0..10 {
            let before = taken;
            for chunk in [1 << 20, 4096] {
                let zeros = vec![0u8; chunk];
                loop {
                    match f.write(&zeros) {
                        Ok(0) => break,
                        Ok(n) => taken += n as u64,
                        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                        Err(e) => panic!("filling {}: {e}", path.display()),
                    }
                }
            }
            let _ = f.sync_all();
            let mut size = f.metadata().unwrap().len();
            for step in [1u64 << 20, 64 << 10, 4 << 10] {
                // SAFETY: fallocate on a descriptor this function owns.
                while unsafe { libc::fallocate(f.as_raw_fd(), 0, size as i64, step as i64) } == 0 {
                    size += step;
                    taken += step;
                }
            }
            if taken == before {
                break;
            }
        }
        taken
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        // The broker's files may take a moment to close after it is killed.
        for _ in 0..50 {
            if run(Command::new("umount").arg(&self.mnt)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = run(Command::new("umount").arg("-l").arg(&self.mnt));
    }
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn value(topic: &str, i: u64) -> Bytes {
    let mut v = format!("{topic}:{i}:").into_bytes();
    v.resize(VALUE_BYTES, b'v');
    Bytes::from(v)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a topic (one partition) was acked: offset -> record index.
#[derive(Default)]
struct Acked {
    records: BTreeMap<i64, u64>,
    next_index: u64,
}

/// Produces one request of `count` records (acks=all) to partition 0 of `topic`.
fn produce(
    client: &mut Client,
    topic: &str,
    acked: &mut Acked,
    count: usize,
) -> Result<(), ClientError> {
    let first = acked.next_index;
    let records = (0..count as u64)
        .map(|i| OutRecord {
            key: None,
            value: Some(value(topic, first + i)),
            headers: Vec::new(),
            // Now: retention by age (7 days by default) must not free space behind the test.
            timestamp_ms: now_ms(),
        })
        .collect();
    let mut next = 0;
    let r = client.produce(topic, records, Acks::All, Compression::None, &mut next)?;
    let base = r.first().map(|(_, b)| *b).unwrap();
    for i in 0..count as u64 {
        acked.records.insert(base + i as i64, first + i);
    }
    acked.next_index += count as u64;
    Ok(())
}

/// Asserts that `err` is the refusal of a full disk: KAFKA_STORAGE_ERROR, which Kafka's
/// clients retry, with a message that says why.
fn assert_disk_full_refusal(err: &ClientError, says: &str) {
    let ClientError::Kafka { code, context } = err else {
        panic!("expected a Kafka error, got {err}");
    };
    let known = ResponseError::try_from_code(*code);
    assert_eq!(
        known,
        Some(ResponseError::KafkaStorageError),
        "a full disk is KAFKA_STORAGE_ERROR: {err}"
    );
    assert!(
        known.is_some_and(|e| e.is_retriable()),
        "Kafka's clients must retry it: {err}"
    );
    assert!(
        context.contains(says),
        "the answer should say why ({says}): {err}"
    );
}

/// Reads partition 0 of `topic` from its start and checks it holds exactly the acked records:
/// every acked one, intact, at its offset, and nothing refused.
fn check_readable(client: &mut Client, topic: &str, acked: &Acked) {
    let mut got: BTreeMap<i64, Bytes> = BTreeMap::new();
    let mut offset = 0i64;
    let end = acked.records.keys().next_back().map_or(0, |o| o + 1);
    let deadline = Instant::now() + Duration::from_secs(120);
    while offset < end {
        assert!(
            Instant::now() < deadline,
            "{topic}: reading stalled at {offset}"
        );
        let parts = client.fetch(0, topic, &[(0, offset)], 100).unwrap();
        for (_, records) in parts {
            let records = records.unwrap_or_else(|code| panic!("{topic}: fetch error {code}"));
            for r in records {
                offset = offset.max(r.offset + 1);
                got.insert(r.offset, r.value.unwrap_or_default());
            }
        }
    }
    assert_eq!(
        got.len(),
        acked.records.len(),
        "{topic}: {} records served, {} acked",
        got.len(),
        acked.records.len()
    );
    for (offset, index) in &acked.records {
        let v = got
            .get(offset)
            .unwrap_or_else(|| panic!("{topic}: acked offset {offset} is missing"));
        assert!(
            *v == value(topic, *index),
            "{topic}: offset {offset} does not hold record {index}"
        );
    }
}

fn create_topic(client: &mut Client, name: &str) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(sb(name)))
            .with_num_partitions(1)
            .with_replication_factor(1)]);
    let resp: CreateTopicsResponse = client.any().unwrap().call(req, 2, 5).unwrap();
    assert_eq!(resp.topics[0].error_code, 0, "create {name}");
}

/// Produces to `topic` until the broker refuses; returns the refusal.
fn produce_until_refused(client: &mut Client, topic: &str, acked: &mut Acked) -> ClientError {
    let limit = DISK_MIB as usize * 2;
    for _ in 0..limit {
        if let Err(e) = produce(client, topic, acked, PER_REQUEST) {
            return e;
        }
    }
    panic!("{limit} MiB produced to a {DISK_MIB} MiB disk without a refusal");
}

/// Python with confluent-kafka (librdkafka), the real Kafka admin client, if there is one:
/// the test virtualenv of scripts/test.sh.
fn python_with_confluent_kafka() -> Option<PathBuf> {
    let venv = std::env::var("SPATE_TEST_VENV").unwrap_or_else(|_| "target/test-venv".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(venv).join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import confluent_kafka"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

/// Deletes `topic` with confluent-kafka's AdminClient (or, without it, a DeleteTopics request
/// from spate's client) and checks that it succeeded.
fn delete_topic(client: &mut Client, addr: &str, topic: &str) {
    if let Some(python) = python_with_confluent_kafka() {
        let script = "import sys\n\
            from confluent_kafka.admin import AdminClient\n\
            a = AdminClient({'bootstrap.servers': sys.argv[1]})\n\
            for f in a.delete_topics([sys.argv[2]], operation_timeout=30).values():\n\
            \x20   f.result(timeout=60)\n\
            print('deleted')\n";
        let out = Command::new("timeout")
            .arg("90")
            .arg(&python)
            .args(["-c", script, addr, topic])
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("deleted"),
            "confluent-kafka's AdminClient could not delete {topic}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("deleted {topic} with confluent-kafka's AdminClient");
        return;
    }
    eprintln!(
        "confluent-kafka not found (scripts/test.sh installs it): DeleteTopics from spate's client"
    );
    let req = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(sb(topic))])
        .with_timeout_ms(30_000);
    let resp: DeleteTopicsResponse = client.any().unwrap().call(req, 1, 5).unwrap();
    let r = &resp.responses[0];
    assert_eq!(
        r.error_code,
        0,
        "DeleteTopics {topic}: {:?}",
        r.error_message.as_ref().map(|m| m.to_string())
    );
}

/// confluent-kafka's producer (librdkafka, acks=all, its default retries) sending records of
/// `value(topic, i)` to partition 0, started while the disk is full. Killed by pid if the test
/// ends first.
struct RetryingProducer {
    child: std::process::Child,
    stderr: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    first: u64,
    count: u64,
}

const PRODUCER_SCRIPT: &str = r#"
import sys
from confluent_kafka import Producer
addr, topic, first, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
# debug=msg: librdkafka logs each refused request ("encountered error ... actions ...Retry").
p = Producer({'bootstrap.servers': addr, 'acks': 'all', 'delivery.timeout.ms': 120000,
              'retry.backoff.ms': 200, 'linger.ms': 5, 'debug': 'msg'})
failed = []
def done(err, msg):
    if err is not None:
        failed.append(err)
        print('failed', err.name(), flush=True)
    else:
        print('acked', msg.offset(), msg.value()[:40].decode().split(':')[1], flush=True)
for i in range(first, first + count):
    v = ('%s:%d:' % (topic, i)).encode()
    p.produce(topic, v + b'v' * (size - len(v)), partition=0, on_delivery=done)
left = p.flush(150)
sys.exit(1 if failed or left else 0)
"#;

impl RetryingProducer {
    /// Starts it and waits (bounded) until librdkafka reports a refusal it will retry.
    fn start(python: &Path, addr: &str, topic: &str, first: u64, count: u64) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(python)
            .args(["-c", PRODUCER_SCRIPT, addr, topic])
            .arg(first.to_string())
            .arg(count.to_string())
            .arg(VALUE_BYTES.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = RetryingProducer {
            child,
            stderr: rx,
            seen: Vec::new(),
            first,
            count,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match p.stderr.recv_timeout(left) {
                // librdkafka's text for KAFKA_STORAGE_ERROR, and the retry it decided on.
                Ok(line) if line.contains("Disk error") && line.contains("Retry") => return p,
                Ok(line) => p.seen.push(line),
                Err(_) => panic!(
                    "librdkafka never reported a retriable refusal; its log:\n{}",
                    p.seen.join("\n")
                ),
            }
        }
    }

    /// Waits (bounded) for it to deliver everything, and records what was acked.
    fn finish(mut self, acked: &mut Acked) {
        let deadline = Instant::now() + Duration::from_secs(150);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the librdkafka producer did not finish"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
        }
        assert!(
            status.success(),
            "librdkafka gave up on records the broker refused for a full disk: {out}"
        );
        let mut delivered = 0;
        for line in out.lines() {
            let mut words = line.split_whitespace();
            if words.next() == Some("acked") {
                let offset: i64 = words.next().unwrap().parse().unwrap();
                let index: u64 = words.next().unwrap().parse().unwrap();
                acked.records.insert(offset, index);
                delivered += 1;
            }
        }
        assert_eq!(delivered, self.count, "{out}");
        acked.next_index = acked.next_index.max(self.first + self.count);
        eprintln!("librdkafka retried and delivered {delivered} records once space was freed");
    }
}

impl Drop for RetryingProducer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Retries produce until it is accepted (space came back), within a bound.
fn produce_once_accepted(client: &mut Client, topic: &str, acked: &mut Acked) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match produce(client, topic, acked, 8) {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                if let ClientError::Kafka { .. } = e {
                    std::thread::sleep(Duration::from_millis(100));
                } else {
                    panic!("{topic}: {e}");
                }
            }
            Err(e) => panic!("{topic}: produce still refused after space was freed: {e}"),
        }
    }
}

fn start_on(disk: &LoopDisk, config: &Path) -> (Broker, String) {
    let data = disk.data_dir();
    let mut broker = start(
        &data,
        &["--shards", "2", "--config", config.to_str().unwrap()],
    );
    let addr = broker.listen_addr();
    (broker, addr)
}

fn write_config(disk: &LoopDisk, text: &str) -> PathBuf {
    // Outside the mount, so it does not take space there.
    let path = disk._dir.path().join("spate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn recovered_bytes_scanned(broker: &Broker) -> u64 {
    broker
        .seen
        .iter()
        .filter(|l| l.contains("shard ready"))
        .map(|l| field(l, "recovered_bytes_scanned"))
        .sum()
}

/// With no floor (`storage.min_free_bytes = 0`), produce runs into ENOSPC itself: the
/// partition that hit it must take writes again once a deleted topic frees space.
#[test]
fn a_full_disk_refuses_produce_frees_space_by_delete_topics_and_takes_writes_again_without_a_restart(
) {
    let disk = LoopDisk::new();
    let config = write_config(
        &disk,
        "[log]\nsegment_bytes = 16777216\n[storage]\nmin_free_bytes = 0\n[kafka]\n# Batches of 1 MiB and more, above Kafka's default max.message.bytes.\nmessage_max_bytes = 16777216\n",
    );
    let (mut broker, addr) = start_on(&disk, &config);
    let mut client = Client::new(&addr, "disk-full-test", Duration::from_secs(30)).unwrap();
    create_topic(&mut client, "keep");
    create_topic(&mut client, "big");
    let mut keep = Acked::default();
    let mut big = Acked::default();
    produce(&mut client, "keep", &mut keep, 16).unwrap();

    // 1. Produce until the disk is full: the refusal is retriable and says so.
    let err = produce_until_refused(&mut client, "big", &mut big);
    assert_disk_full_refusal(&err, "disk full");
    assert!(
        big.records.len() as u64 * VALUE_BYTES as u64 > (DISK_MIB / 2) << 20,
        "refused after only {} records",
        big.records.len()
    );
    // Whatever room is left (less than a request) goes to another file: full is full. The
    // other partition writes on into the space it preallocated, then is refused too.
    disk.fill("filler-1");
    let err = produce_until_refused(&mut client, "keep", &mut keep);
    assert_disk_full_refusal(&err, "disk full");
    // A refused write gives back the preallocation it could not use: take that too.
    disk.fill("filler-1b");
    check_readable(&mut client, "keep", &keep);
    check_readable(&mut client, "big", &big);

    // DeleteRecords on the full disk: the new log start is a small file (the reserve gives the
    // room), and the segments below it are deleted. Filling the disk by produce (rolls
    // included) left the reserve alone.
    assert!(
        disk.reserve_held(),
        "the reserve was spent before anything freed space"
    );
    let middle = *big.records.keys().nth(big.records.len() / 2).unwrap();
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(TopicName(sb("big")))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(middle)])]);
    let resp: DeleteRecordsResponse = client.any().unwrap().call(req, 0, 2).unwrap();
    let r = &resp.topics[0].partitions[0];
    assert_eq!(r.error_code, 0, "DeleteRecords on a full disk");
    assert_eq!(r.low_watermark, middle);
    broker.wait_for("released the");
    big.records.retain(|o, _| *o >= middle);
    check_readable_tail(&mut client, "big", &big);
    // The reserve comes back by itself once there is room; then the disk is filled again.
    broker.wait_for("space reserve taken back");
    disk.fill("filler-1c");

    // 2. A Kafka admin client deletes the big topic on the full disk (its metadata write
    // needs space: the reserve), which frees space. Meanwhile a real Kafka producer
    // (librdkafka), refused, retries on its own and delivers once there is room.
    let producer = python_with_confluent_kafka()
        .map(|python| RetryingProducer::start(&python, &addr, "keep", keep.next_index, 40));
    delete_topic(&mut client, &addr, "big");
    assert!(disk.free_bytes() > 64 << 20, "deleting freed no space");
    match producer {
        Some(p) => p.finish(&mut keep),
        None => eprintln!("confluent-kafka not found: no librdkafka producer retried"),
    }

    // 3. The partition that was refused takes writes again, without a restart.
    produce_once_accepted(&mut client, "keep", &mut keep);
    for _ in 0..4 {
        produce(&mut client, "keep", &mut keep, PER_REQUEST).unwrap();
    }
    check_readable(&mut client, "keep", &keep);
    let lines = broker.drain_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("append refused") && l.contains("disk full")),
        "the refusals are logged with their cause"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("refuses writes until restart")),
        "no partition may fail for a full disk:\n{}",
        lines.join("\n")
    );

    // 4. Full again, and SIGTERM: a clean stop (exit 0), checkpoints written (the reserve).
    disk.fill("filler-2");
    let err = produce_until_refused(&mut client, "keep", &mut keep);
    assert_disk_full_refusal(&err, "disk full");
    disk.fill("filler-2b");
    drop(client);
    broker.stop_cleanly();
    let lines = broker.drain_lines();
    assert!(lines.iter().any(|l| l.contains("clean shutdown")));
    assert!(
        !lines.iter().any(|l| l.contains("closed without")),
        "every partition closed with its checkpoint:\n{}",
        lines.join("\n")
    );

    // 5. A start on the full disk, from the checkpoints: every acked record is there.
    drop(broker);
    let (mut broker, addr) = start_on(&disk, &config);
    assert_eq!(
        recovered_bytes_scanned(&broker),
        0,
        "the stop on a full disk was not clean: {:?}",
        broker.seen
    );
    let mut client = Client::new(&addr, "disk-full-test-2", Duration::from_secs(30)).unwrap();
    check_readable(&mut client, "keep", &keep);
    drop(client);
    broker.stop_cleanly();
}

/// With the default floor (5% of this disk), produce is refused before the disk is full, with
/// an error naming `storage.min_free_bytes`; auto-creation is refused without a warning per
/// request; a retention change frees space, and produce resumes by itself.
#[test]
fn below_the_floor_produce_is_refused_by_name_and_resumes_by_itself_when_retention_frees_space() {
    let disk = LoopDisk::new();
    let config = write_config(
        &disk,
        "[log]\nsegment_bytes = 8388608\nretention_check_ms = 200\n[kafka]\nmessage_max_bytes = 16777216\n",
    );
    let (mut broker, addr) = start_on(&disk, &config);
    let mut client = Client::new(&addr, "disk-floor-test", Duration::from_secs(30)).unwrap();
    create_topic(&mut client, "big");
    let mut big = Acked::default();

    let err = produce_until_refused(&mut client, "big", &mut big);
    assert_disk_full_refusal(&err, "storage.min_free_bytes");
    // Refused before the disk is full: what the floor keeps is still free, less at most the
    // request in flight and a preallocation step (not what a disk writes in 250 ms between two
    // looks at its free space).
    let floor = broker
        .seen
        .iter()
        .find(|l| l.contains("data disk:"))
        .map(|l| field(l, "min_free_bytes"))
        .unwrap();
    assert!(
        floor > 8 << 20,
        "the auto floor of a {DISK_MIB} MiB disk: {floor}"
    );
    let free = disk.free_bytes();
    assert!(
        free + (2 << 20) >= floor,
        "the floor ({floor} bytes) let the disk fill to {free} bytes free"
    );
    check_readable(&mut client, "big", &big);

    // Metadata asking again and again for a topic it may create: refused every time, logged
    // at a bounded rate (at most 10 lines per cause and shard in 10 s).
    let asks = 40;
    for _ in 0..asks {
        let info = client.metadata_creating(&["wanted"]).unwrap();
        assert_ne!(info[0].error, 0, "a topic was created below the floor");
    }
    let lines = broker.drain_lines();
    let warned = lines
        .iter()
        .filter(|l| l.contains("auto-creation failed"))
        .count();
    assert!(
        (1..=20).contains(&warned),
        "{warned} auto-creation warnings for {asks} requests"
    );

    // A retention change (IncrementalAlterConfigs) below the floor is accepted and frees
    // space; produce is accepted again with no restart and no other action.
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(sb("big"))
            .with_configs(vec![AlterableConfig::default()
                .with_name(sb("retention.bytes"))
                .with_config_operation(0)
                .with_value(Some(sb("16777216")))]),
    ]);
    let resp: IncrementalAlterConfigsResponse = client.any().unwrap().call(req, 0, 1).unwrap();
    assert_eq!(resp.responses[0].error_code, 0, "{:?}", resp.responses[0]);
    produce_once_accepted(&mut client, "big", &mut big);
    // Retention deleted the oldest records; what remains must be exactly the acked tail.
    check_readable_tail(&mut client, "big", &big);
    drop(client);
    broker.stop_cleanly();
}

/// [`check_readable`] for a topic whose oldest records retention deletes (perhaps while it is
/// read): every acked record at or above the final log start, and nothing else.
fn check_readable_tail(client: &mut Client, topic: &str, acked: &Acked) {
    let mut got = BTreeMap::new();
    let mut offset = client.list_offset(topic, 0, 0, -2).unwrap();
    let end = acked.records.keys().next_back().map_or(0, |o| o + 1);
    let deadline = Instant::now() + Duration::from_secs(120);
    while offset < end {
        assert!(
            Instant::now() < deadline,
            "{topic}: reading stalled at {offset}"
        );
        for (_, records) in client.fetch(0, topic, &[(0, offset)], 100).unwrap() {
            match records {
                Ok(records) => {
                    for r in records {
                        offset = offset.max(r.offset + 1);
                        got.insert(r.offset, r.value.unwrap_or_default());
                    }
                }
                // Retention moved the start past us.
                Err(1) => offset = offset.max(client.list_offset(topic, 0, 0, -2).unwrap()),
                Err(code) => panic!("{topic}: fetch error {code}"),
            }
        }
    }
    let start = client.list_offset(topic, 0, 0, -2).unwrap();
    for (offset, v) in &got {
        let index = acked
            .records
            .get(offset)
            .unwrap_or_else(|| panic!("{topic}: offset {offset} was never acked"));
        assert!(
            *v == value(topic, *index),
            "{topic}: offset {offset} is damaged"
        );
    }
    for offset in acked.records.keys().filter(|o| **o >= start) {
        assert!(
            got.contains_key(offset),
            "{topic}: acked offset {offset} is missing"
        );
    }
}
