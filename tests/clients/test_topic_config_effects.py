"""Issue 16: the effect of each honoured topic config that test_topic_configs.py does not
cover, end to end: a real broker, a real client, the files the broker wrote.

- flush.messages, flush.ms: the fdatasyncs each partition does, from the engine's debug line
  `fdatasync covered the log partition=T-P durable_offset=N` (written before the appends it
  covers are acked). A SIGKILL cannot show them: an acks=1 append is written (O_DIRECT)
  before it is acked, so it survives a process crash with or without an fdatasync.
- segment.bytes, segment.ms, segment.jitter.ms, segment.index.bytes, index.interval.bytes:
  the segment files and index files in the partition directory, parsed here.
- retention.bytes, retention.ms (changed on an open partition), file.delete.delay.ms: the
  log start, the segments left, the `*.deleted` files.
- min.insync.replicas: stored, validated and described (replication does not exist yet).
- cleanup.policy=compact: a record without a key is INVALID_RECORD, until the policy changes.
- DescribeConfigs v3+ with include_documentation and include_synonyms.
"""

import re
import struct
import time
import zlib

import confluent_kafka as ck
import confluent_kafka.admin as cka
import kafka as kp
import pytest
from kafka.protocol.admin import DescribeConfigsRequest

from kutil import ck_conf, now_ms, read_all, unique, wait_until

DYNAMIC = cka.ConfigSource.DYNAMIC_TOPIC_CONFIG.value
FRAME_MAGIC = int.from_bytes(b"SPF1", "little")
FRAME_HEADER_LEN = 52
HOUR_MS = 3_600_000
MIB = 1 << 20


# -- helpers -----------------------------------------------------------------------------------

def admin(broker):
    return cka.AdminClient(ck_conf(broker.bootstrap))


def create(broker, topic, config, partitions=1):
    a = admin(broker)
    fs = a.create_topics([cka.NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                       config=config)], request_timeout=15)
    fs[topic].result(15)


def incremental_set(broker, topic, config):
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic, incremental_configs=[
        cka.ConfigEntry(k, v, incremental_operation=cka.AlterConfigOpType.SET)
        for k, v in config.items()])
    a = admin(broker)
    a.incremental_alter_configs([res])[res].result(10)


def reconfigure(broker, text):
    """Adds `text` to the broker's config file and restarts it."""
    broker.config_path.write_text(broker.config_path.read_text() + text)
    broker.restart()


def produce_each(broker, topic, values, partition=0, timestamp=None, acks="1", pause_s=0.0):
    """One record per Produce request (each its own batch, so its own frame), each acked
    before the next is sent; returns the offsets."""
    p = ck.Producer(ck_conf(broker.bootstrap, **{"linger.ms": 0, "acks": acks,
                                                 "message.max.bytes": 10_000_000}))
    offsets = []
    for v in values:
        got = []
        kw = {"timestamp": timestamp} if timestamp is not None else {}
        p.produce(topic, value=v, partition=partition,
                  on_delivery=lambda err, msg: got.append((err, msg)), **kw)
        assert p.flush(15) == 0
        err, msg = got[0]
        assert err is None, err
        offsets.append(msg.offset())
        if pause_s:
            time.sleep(pause_s)
    return offsets


def watermarks(broker, topic, partition=0):
    c = ck.Consumer(ck_conf(broker.bootstrap, **{"group.id": unique("wm")}))
    try:
        return c.get_watermark_offsets(ck.TopicPartition(topic, partition), timeout=10)
    finally:
        c.close()


def partition_dir(broker, topic, partition=0):
    return broker.data_dir / "topics" / topic / str(partition)


def segment_bases(broker, topic, partition=0):
    return sorted(int(p.stem) for p in partition_dir(broker, topic, partition).glob("*.log"))


def frames(broker, topic, base, partition=0):
    """The frames of a segment file: (position, base_offset, record_count, length), up to
    the end of the written data (a preallocated tail is zeros)."""
    data = (partition_dir(broker, topic, partition) / f"{base:020}.log").read_bytes()
    out, pos = [], 0
    while pos + FRAME_HEADER_LEN <= len(data):
        magic, _version, _flags, offset, count, payload_len = struct.unpack_from(
            "<IHHQII", data, pos)
        if magic != FRAME_MAGIC:
            break
        out.append((pos, offset, count, FRAME_HEADER_LEN + payload_len))
        pos += FRAME_HEADER_LEN + payload_len
    return out


def segment_bytes(broker, topic, base, partition=0):
    return sum(f[3] for f in frames(broker, topic, base, partition))


def index_entries(broker, topic, base, partition=0):
    """A segment's offset index file: (relative offset, position) pairs, little-endian u32
    each, strictly increasing, up to the first that is not (padding)."""
    data = (partition_dir(broker, topic, partition) / f"{base:020}.index").read_bytes()
    out = []
    for at in range(0, len(data) - len(data) % 8, 8):
        rel, pos = struct.unpack_from("<II", data, at)
        if rel == 0 or pos == 0 or (out and (rel <= out[-1][0] or pos <= out[-1][1])):
            break
        out.append((rel, pos))
    return out


SYNC_LINE = re.compile(r"fdatasync covered the log partition=(\S+) durable_offset=(\d+)")


def synced(broker, topic, partition=0):
    """The durable offsets the broker's fdatasyncs of a partition reached, in order."""
    name = f"{topic}-{partition}"
    return [int(m.group(2)) for m in SYNC_LINE.finditer(broker.log()) if m.group(1) == name]


@pytest.fixture
def sync_logging(broker, monkeypatch):
    """The broker logs each fdatasync (the engine's debug line), and syncs appends without
    durability only after an hour unless a topic says otherwise: every sync seen comes from
    the config under test."""
    monkeypatch.setenv("SPATE_LOG", "info,spate_engine::log::write=debug")
    reconfigure(broker, "[log]\nflush_interval_ms = 3600000\n")
    return broker


# -- flush.messages, flush.ms --------------------------------------------------------------------

def test_flush_messages_makes_every_nth_append_wait_for_an_fdatasync(sync_logging):
    broker = sync_logging
    every, third, never = unique("flush-1"), unique("flush-3"), unique("flush-none")
    create(broker, every, {"flush.messages": "1"})
    create(broker, third, {"flush.messages": "3"})
    create(broker, never, {})
    for i in range(7):
        for topic in (every, third, never):
            assert produce_each(broker, topic, [f"r{i}".encode()]) == [i]
        # acks=1, yet each append to `every` was covered by an fdatasync before its ack
        assert synced(broker, every) == list(range(1, i + 2))
        # every third record: the fdatasync of the third covers the two before it
        assert synced(broker, third) == [3 * k for k in range(1, (i + 1) // 3 + 1)]
        assert synced(broker, never) == []
    # acks=all resets the count: the next two acks=1 records stay unsynced, the third syncs
    produce_each(broker, third, [b"all"], acks="all")
    assert synced(broker, third)[-1] == 8
    produce_each(broker, third, [b"a", b"b"])
    assert synced(broker, third)[-1] == 8
    produce_each(broker, third, [b"c"])
    assert synced(broker, third)[-1] == 11


def test_flush_ms_bounds_how_long_an_append_stays_without_an_fdatasync(sync_logging):
    broker = sync_logging
    fast, slow = unique("flush-ms-50"), unique("flush-ms-default")
    create(broker, fast, {"flush.ms": "50"})
    create(broker, slow, {})
    produce_each(broker, fast, [b"x"])
    produce_each(broker, slow, [b"x"])
    wait_until(lambda: synced(broker, fast) == [1], 20, "flush.ms=50 synced the append")
    # the broker's own interval (an hour here) still holds for the other topic
    assert synced(broker, slow) == []
    # changed on the open partition: it applies from the next append on
    incremental_set(broker, slow, {"flush.ms": "50"})
    produce_each(broker, slow, [b"y"])
    wait_until(lambda: synced(broker, slow) == [2], 20, "flush.ms=50 set by AlterConfigs")


# -- segment.bytes, segment.ms, segment.jitter.ms -----------------------------------------------

def test_segment_bytes_rolls_before_a_segment_would_pass_it(broker):
    topic = unique("seg-bytes")
    create(broker, topic, {"segment.bytes": str(MIB)})
    produce_each(broker, topic, [bytes([i]) * 200_000 for i in range(12)])
    bases = segment_bases(broker, topic)
    assert len(bases) >= 3, bases
    offsets = []
    for base, nxt in zip(bases, bases[1:] + [None]):
        fs = frames(broker, topic, base)
        offsets += [f[1] for f in fs]
        size = sum(f[3] for f in fs)
        assert size <= MIB, (base, size)
        if nxt is not None:
            # rolled because the next frame would not fit
            first_of_next = frames(broker, topic, nxt)[0]
            assert size + first_of_next[3] > MIB, (base, size, first_of_next)
    assert offsets == list(range(12))
    assert len(read_all("confluent", broker.bootstrap, topic)) == 12


def test_segment_ms_rolls_old_segments_and_applies_to_an_open_partition(broker):
    rolling, keeping = unique("seg-ms-1"), unique("seg-ms-default")
    create(broker, rolling, {"segment.ms": "1"})
    create(broker, keeping, {})
    for topic in (rolling, keeping):
        # the pause makes each segment older than 1 ms by the next append
        produce_each(broker, topic, [b"a", b"b", b"c", b"d"], pause_s=0.01)
    assert segment_bases(broker, rolling) == [0, 1, 2, 3]
    assert segment_bases(broker, keeping) == [0]
    incremental_set(broker, keeping, {"segment.ms": "1"})
    produce_each(broker, keeping, [b"e", b"f"], pause_s=0.01)
    assert segment_bases(broker, keeping) == [0, 4, 5]


def jittered_roll_ms(topic, partition, segment_ms, jitter_ms):
    """Spate's per-partition roll age (topic_configs.rs, TopicSettings::log_config):
    segment.ms less CRC-32 of "topic-partition" modulo segment.jitter.ms."""
    return segment_ms - zlib.crc32(f"{topic}-{partition}".encode()) % min(jitter_ms, segment_ms)


def test_segment_jitter_ms_gives_each_partition_its_own_roll_age(broker):
    # A topic whose partition 0 rolls after at most 100 ms and partition 1 after at least
    # ten minutes, with segment.ms = segment.jitter.ms = one hour.
    topic = next(t for t in (f"seg-jitter-{i}" for i in range(10_000_000))
                 if jittered_roll_ms(t, 0, HOUR_MS, HOUR_MS) <= 100
                 and jittered_roll_ms(t, 1, HOUR_MS, HOUR_MS) >= 600_000)
    create(broker, topic, {"segment.ms": str(HOUR_MS), "segment.jitter.ms": str(HOUR_MS)},
           partitions=2)
    for p in (0, 1):
        produce_each(broker, topic, [b"a", b"b", b"c"], partition=p, pause_s=0.2)
    assert segment_bases(broker, topic, 0) == [0, 1, 2]
    assert segment_bases(broker, topic, 1) == [0]


# -- segment.index.bytes, index.interval.bytes ---------------------------------------------------

def test_segment_index_bytes_rolls_a_segment_whose_index_is_full(broker):
    topic = unique("seg-index")
    # an index entry per frame after the first; 80 bytes hold ten 8-byte entries, so a
    # segment takes eleven frames
    create(broker, topic, {"index.interval.bytes": "0", "segment.index.bytes": "80"})
    produce_each(broker, topic, [f"{i}".encode() for i in range(25)])
    assert segment_bases(broker, topic) == [0, 11, 22]
    assert [r.value for r in read_all("confluent", broker.bootstrap, topic)] == \
        [f"{i}".encode() for i in range(25)]


@pytest.mark.parametrize("interval", [0, 4096, 20_000, 1_000_000])
def test_index_interval_bytes_spaces_the_offset_index(broker, interval):
    topic = unique("index-interval")
    create(broker, topic, {"index.interval.bytes": str(interval)})
    produce_each(broker, topic, [bytes([65 + i % 26]) * (300 + 37 * i) for i in range(60)])
    broker.stop()  # a clean stop writes the active segment's index
    (base,) = segment_bases(broker, topic)
    fs = frames(broker, topic, base)
    assert [f[1] for f in fs] == list(range(60))
    at = {pos: (offset, length) for pos, offset, _, length in fs}
    entries = index_entries(broker, topic, base)
    longest = max(f[3] for f in fs)
    total = fs[-1][0] + fs[-1][3]
    if interval == 0:
        # an entry for every frame but the first (position 0 is implicit)
        assert entries == [(f[1] - base, f[0]) for f in fs[1:]]
    elif interval > total:
        assert entries == []
    else:
        # each entry is the first frame at least `interval` bytes after the one before
        assert entries, "no index entry"
        last = 0
        for rel, pos in entries:
            assert pos in at and at[pos][0] == base + rel, (rel, pos)
            assert interval <= pos - last < interval + longest, (last, pos)
            last = pos
        assert fs[-1][0] < last + interval, "a frame past the interval was not indexed"
    broker.start()
    assert len(read_all("confluent", broker.bootstrap, topic)) == 60


# -- retention.bytes, retention.ms, file.delete.delay.ms -----------------------------------------

@pytest.fixture
def fast_retention(broker):
    """A retention pass every 100 ms."""
    reconfigure(broker, "[log]\nretention_check_ms = 100\n")
    return broker


def on_disk(broker, topic):
    """[(base, bytes)] of the partition's segments, or None while retention is deleting one."""
    try:
        return [(b, segment_bytes(broker, topic, b)) for b in segment_bases(broker, topic)]
    except FileNotFoundError:
        return None


def test_retention_bytes_keeps_the_newest_segments_within_the_limit(fast_retention):
    broker = fast_retention
    topic = unique("ret-bytes")
    create(broker, topic, {"segment.bytes": str(MIB), "retention.bytes": str(2 * MIB)})
    produce_each(broker, topic, [bytes([i]) * 200_000 for i in range(30)])

    def trimmed():
        segs = on_disk(broker, topic)
        # Kafka's rule: the oldest segment goes while the rest hold retention.bytes or more
        return segs if segs and sum(s for _, s in segs[1:]) < 2 * MIB else None

    segs = wait_until(trimmed, 30, "retention.bytes deleted the oldest segments")
    assert segs[0][0] > 0 and sum(s for _, s in segs) >= 2 * MIB, segs
    low, high = watermarks(broker, topic)
    assert (low, high) == (segs[0][0], 30)
    recs = read_all("confluent", broker.bootstrap, topic)
    assert [r.offset for r in recs] == list(range(low, 30))
    assert recs[-1].value == bytes([29]) * 200_000


def test_retention_ms_changed_on_an_open_partition_applies_at_the_next_pass(fast_retention):
    broker = fast_retention
    kept, trimmed = unique("ret-ms-kept"), unique("ret-ms-day")
    two_days_ago = now_ms() - 2 * 86_400_000
    create(broker, kept, {"retention.ms": "-1", "segment.ms": "1"})
    create(broker, trimmed, {"retention.ms": "86400000", "segment.ms": "1"})
    for topic in (kept, trimmed):
        produce_each(broker, topic, [b"a", b"b", b"c"], timestamp=two_days_ago, pause_s=0.01)
    # retention runs: the day-old limit deletes every segment but the active one
    wait_until(lambda: watermarks(broker, trimmed)[0] == 2, 30, "retention.ms=1 day applied")
    assert watermarks(broker, kept) == (0, 3)
    assert segment_bases(broker, kept) == [0, 1, 2]
    incremental_set(broker, kept, {"retention.ms": "86400000"})
    wait_until(lambda: watermarks(broker, kept)[0] == 2, 30, "retention.ms altered to a day")
    assert segment_bases(broker, kept) == [2]


def deleted_files(broker, topic):
    return sorted(p.name for p in partition_dir(broker, topic).glob("*.deleted"))


def test_file_delete_delay_ms_keeps_deleted_segment_files_until_the_delay(fast_retention):
    broker = fast_retention
    delays = {"fdd-long": 600_000, "fdd-short": 300, "fdd-none": 0}
    topics = {name: unique(name) for name in delays}
    two_days_ago = now_ms() - 2 * 86_400_000
    for name, topic in topics.items():
        create(broker, topic, {"retention.ms": "86400000", "segment.ms": "1",
                               "file.delete.delay.ms": str(delays[name])})
        produce_each(broker, topic, [b"a", b"b", b"c"], timestamp=two_days_ago, pause_s=0.01)
    for topic in topics.values():
        wait_until(lambda: watermarks(broker, topic)[0] == 2, 30, f"retention of {topic}")
        assert segment_bases(broker, topic) == [2]
    # ten minutes: segments 0 and 1 are out of the log, their files renamed *.deleted
    long = topics["fdd-long"]
    marked = deleted_files(broker, long)
    assert {n for n in marked if n.endswith(".log.deleted")} == \
        {f"{0:020}.log.deleted", f"{1:020}.log.deleted"}, marked
    # 300 ms: removed after the delay; 0: at once (no *.deleted left behind)
    wait_until(lambda: deleted_files(broker, topics["fdd-short"]) == [], 30,
               "the *.deleted files removed after 300 ms")
    assert deleted_files(broker, topics["fdd-none"]) == []
    assert deleted_files(broker, long) == marked
    # a restart meanwhile removes them
    broker.restart()
    assert deleted_files(broker, long) == []
    assert watermarks(broker, long) == (2, 3)


# -- min.insync.replicas --------------------------------------------------------------------------

def test_min_insync_replicas_is_stored_validated_and_described(broker):
    a = admin(broker)
    topic, plain = unique("misr"), unique("misr-default")
    create(broker, topic, {"min.insync.replicas": "2"})
    create(broker, plain, {})
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic)
    cfg = a.describe_configs([res], request_timeout=10)[res].result(10)
    assert (cfg["min.insync.replicas"].value, cfg["min.insync.replicas"].source) == ("2", DYNAMIC)
    res = cka.ConfigResource(cka.ResourceType.TOPIC, plain)
    cfg = a.describe_configs([res], request_timeout=10)[res].result(10)
    assert cfg["min.insync.replicas"].value == "1"
    assert cfg["min.insync.replicas"].source != DYNAMIC
    for bad in ("0", "-1", "two", "2147483648"):
        with pytest.raises(ck.KafkaException) as e:
            incremental_set(broker, topic, {"min.insync.replicas": bad})
        err = e.value.args[0]
        assert err.code() == ck.KafkaError.INVALID_CONFIG, (bad, err)
        assert "min.insync.replicas" in err.str() and "at least 1" in err.str(), err.str()
    broker.restart()
    a = admin(broker)
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic)
    cfg = a.describe_configs([res], request_timeout=10)[res].result(10)
    assert cfg["min.insync.replicas"].value == "2"
    # acks=all is acked on a single broker (its whole ISR) with the default
    produce_each(broker, plain, [b"x"], acks="all")


def test_a_compacted_topic_refuses_records_without_a_key(broker):
    topic = unique("compacted-keys")
    create(broker, topic, {"cleanup.policy": "compact"})
    p = ck.Producer(ck_conf(broker.bootstrap, **{"linger.ms": 0, "retries": 0}))
    got = []

    def send(**kw):
        got.clear()
        p.produce(topic, value=b"v", partition=0,
                  on_delivery=lambda err, msg: got.append(err), **kw)
        assert p.flush(15) == 0
        return got[0]

    assert send(key=b"k") is None
    err = send()
    assert err is not None and err.code() == ck.KafkaError.INVALID_RECORD, err
    assert watermarks(broker, topic) == (0, 1), "the keyless record is not stored"
    # The policy changed on the live topic: keyless records are taken again.
    incremental_set(broker, topic, {"cleanup.policy": "delete"})
    wait_until(lambda: send() is None, 10, "a keyless record taken after the change")


# -- DescribeConfigs with documentation and synonyms --------------------------------------------

def describe_raw(broker, topic, resource_type=2, **flags):
    """A DescribeConfigs v3+ request from kafka-python's protocol classes (no Python client's
    admin API asks for the documentation)."""
    k = kp.KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        req = DescribeConfigsRequest(resources=[(resource_type, topic, None)], min_version=3,
                                     **flags)

        async def send():
            return await k._manager.send(req)

        (result,) = k._manager.run(send).results
        assert result.error_code == 0, result
        return {c.name: c for c in result.configs}
    finally:
        k.close()


def test_describe_configs_answers_documentation_types_and_synonyms(broker):
    topic = unique("cfg-doc")
    create(broker, topic, {"retention.ms": "1000", "cleanup.policy": "compact,delete"})
    cfg = describe_raw(broker, topic, include_synonyms=True, include_documentation=True)
    assert len(cfg) == 33
    assert all(c.documentation for c in cfg.values()), \
        [n for n, c in cfg.items() if not c.documentation]
    assert "retain a log" in cfg["retention.ms"].documentation
    # ConfigType: 5 LONG, 7 LIST, 3 INT, 1 BOOLEAN, 6 DOUBLE, 2 STRING
    types = {n: cfg[n].config_type for n in ("retention.ms", "cleanup.policy", "segment.bytes",
                                            "preallocate", "min.cleanable.dirty.ratio",
                                            "compression.type")}
    assert types == {"retention.ms": 5, "cleanup.policy": 7, "segment.bytes": 3,
                     "preallocate": 1, "min.cleanable.dirty.ratio": 6, "compression.type": 2}
    syn = [(s.name, s.value, s.source) for s in cfg["retention.ms"].synonyms]
    assert syn == [("retention.ms", "1000", DYNAMIC),
                   ("log.retention.ms", "604800000", cka.ConfigSource.DEFAULT_CONFIG.value)]
    assert cfg["cleanup.policy"].value == "compact,delete"
    # without the flags: no documentation, no synonyms
    bare = describe_raw(broker, topic, include_synonyms=False, include_documentation=False)
    assert all(c.documentation is None for c in bare.values())
    assert all(not c.synonyms for c in bare.values())
    assert bare["retention.ms"].value == "1000"
    # the broker resource (type 4): its keys that are topic configs' defaults have their docs
    brk = describe_raw(broker, "0", resource_type=4, include_synonyms=True,
                       include_documentation=True)
    assert brk["log.retention.ms"].documentation == cfg["retention.ms"].documentation
    assert brk["log.retention.ms"].read_only
    brk = describe_raw(broker, "0", resource_type=4, include_documentation=False)
    assert all(c.documentation is None for c in brk.values())
