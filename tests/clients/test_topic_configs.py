"""Issue 16: every Kafka topic config, with real clients. Created with configs, altered
(AlterConfigs, IncrementalAlterConfigs with SET, DELETE, APPEND, SUBTRACT), described with
sources, synonyms and documentation, refused with INVALID_CONFIG when wrong (nothing
half-applied), and the honoured ones' effects end to end: max.message.bytes,
message.timestamp.type=LogAppendTime, message.timestamp.before/after.max.ms,
compression.type, cleanup.policy=compact (never cut by retention; test_compaction.py
covers the cleaner)."""

import time

import confluent_kafka as ck
import confluent_kafka.admin as cka
import pytest
import socket
import struct

from kutil import ck_conf, now_ms, read_all, unique, wait_until

DYNAMIC = cka.ConfigSource.DYNAMIC_TOPIC_CONFIG.value
DEFAULT = cka.ConfigSource.DEFAULT_CONFIG.value

# Kafka 4's topic configs (TopicConfig.java, LogConfig.java; 4.0 removed three).
ALL_TOPIC_CONFIGS = {
    "cleanup.policy", "compression.gzip.level", "compression.lz4.level", "compression.type",
    "compression.zstd.level", "delete.retention.ms", "file.delete.delay.ms", "flush.messages",
    "flush.ms", "follower.replication.throttled.replicas", "index.interval.bytes",
    "leader.replication.throttled.replicas", "local.retention.bytes", "local.retention.ms",
    "max.compaction.lag.ms", "max.message.bytes", "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms", "message.timestamp.type", "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms", "min.insync.replicas", "preallocate", "remote.log.copy.disable",
    "remote.log.delete.on.disable", "remote.storage.enable", "retention.bytes", "retention.ms",
    "segment.bytes", "segment.index.bytes", "segment.jitter.ms", "segment.ms",
    "unclean.leader.election.enable",
}

# What Kafka Streams (changelog and repartition topics) and Connect (internal topics) set.
COMMON = {
    "cleanup.policy": "compact",
    "min.insync.replicas": "1",
    "compression.type": "producer",
    "max.message.bytes": "2097152",
    "message.timestamp.type": "CreateTime",
    "retention.ms": "-1",
    "segment.bytes": "52428800",
    "segment.ms": "600000",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "86400000",
    "min.cleanable.dirty.ratio": "0.01",
    "segment.index.bytes": "1048576",
    "unclean.leader.election.enable": "false",
    "message.timestamp.after.max.ms": "3600000",
}


def admin(broker):
    return cka.AdminClient({"bootstrap.servers": broker.bootstrap})


def create(a, topic, config, partitions=1, validate_only=False):
    fs = a.create_topics([cka.NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                       config=config)],
                         validate_only=validate_only, request_timeout=15)
    return fs[topic].result(15)


def describe(a, topic, **kw):
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic)
    return a.describe_configs([res], request_timeout=10, **kw)[res].result(10)


def incremental(a, topic, entries, validate_only=False):
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic, incremental_configs=[
        cka.ConfigEntry(k, v, incremental_operation=op) for k, v, op in entries])
    return a.incremental_alter_configs([res], validate_only=validate_only)[res].result(10)


def config_error(excinfo):
    err = excinfo.value.args[0]
    return err.code(), err.str()


def test_a_dozen_common_configs_describe_back_as_dynamic_and_survive_a_restart(broker):
    a = admin(broker)
    topic = unique("cfg-common")
    create(a, topic, COMMON)
    cfg = describe(a, topic)
    assert set(cfg) == ALL_TOPIC_CONFIGS
    for k, v in COMMON.items():
        assert (cfg[k].value, cfg[k].source) == (v, DYNAMIC), k
    assert cfg["flush.messages"].source == DEFAULT
    assert cfg["flush.messages"].value == "9223372036854775807"
    # synonyms (librdkafka always asks for them; no Python client here asks for the
    # documentation)
    syn = [(s.name, s.source) for s in cfg["retention.ms"].synonyms.values()]
    assert syn[0] == ("retention.ms", DYNAMIC)
    assert ("log.retention.ms", DEFAULT) in syn
    assert not cfg["segment.ms"].is_read_only
    broker.restart()
    cfg = describe(admin(broker), topic)
    for k, v in COMMON.items():
        assert (cfg[k].value, cfg[k].source) == (v, DYNAMIC), k


def test_bad_configs_are_invalid_config_naming_the_key_and_change_nothing(broker):
    a = admin(broker)
    topic = unique("cfg-bad")
    bad = [
        ({"retention.ms": "soon"}, "retention.ms"),                 # wrong type
        ({"retention.ms": "-7"}, "at least -1"),                    # out of range
        ({"segment.bytes": "65536"}, "1048576"),                    # Kafka 4's minimum
        ({"cleanup.policy": "compact,shred"}, "compact, delete"),   # not in the enum
        ({"no.such.config": "1"}, "no.such.config"),                # unknown
        ({"message.format.version": "3.0"}, "message.format.version"),  # gone in Kafka 4
        ({"retention.ms": "1000", "local.retention.ms": "5000"}, "local.retention.ms"),
        ({"min.insync.replicas": "0"}, "min.insync.replicas"),
    ]
    for config, needle in bad:
        with pytest.raises(ck.KafkaException) as e:
            create(a, topic, config)
        code, msg = config_error(e)
        assert code == ck.KafkaError.INVALID_CONFIG, (config, code, msg)
        assert needle in msg, (config, msg)
    assert topic not in a.list_topics(timeout=10).topics
    # validate_only creates nothing
    create(a, topic, {"retention.ms": "1000"}, validate_only=True)
    assert topic not in a.list_topics(timeout=10).topics
    create(a, topic, {"retention.ms": "1000"})
    S = cka.AlterConfigOpType.SET
    # one bad key among good ones: nothing applied
    with pytest.raises(ck.KafkaException) as e:
        incremental(a, topic, [("retention.ms", "2000", S), ("segment.ms", "0", S)])
    assert config_error(e)[0] == ck.KafkaError.INVALID_CONFIG
    assert describe(a, topic)["retention.ms"].value == "1000"
    # APPEND on a non-list key
    with pytest.raises(ck.KafkaException) as e:
        incremental(a, topic, [("retention.ms", "5", cka.AlterConfigOpType.APPEND)])
    assert config_error(e)[0] == ck.KafkaError.INVALID_CONFIG
    # validate_only changes nothing
    incremental(a, topic, [("retention.ms", "3000", S)], validate_only=True)
    assert describe(a, topic)["retention.ms"].value == "1000"


def test_incremental_set_delete_append_subtract_and_alter_configs_replaces(broker):
    a = admin(broker)
    topic = unique("cfg-ops")
    create(a, topic, {"retention.ms": "1000", "segment.ms": "60000"})
    op = cka.AlterConfigOpType
    incremental(a, topic, [("cleanup.policy", "compact", op.APPEND),
                           ("retention.ms", None, op.DELETE)])
    cfg = describe(a, topic)
    assert (cfg["cleanup.policy"].value, cfg["cleanup.policy"].source) == ("delete,compact", DYNAMIC)
    assert cfg["retention.ms"].source != DYNAMIC
    incremental(a, topic, [("cleanup.policy", "delete", op.SUBTRACT)])
    assert describe(a, topic)["cleanup.policy"].value == "compact"
    # AlterConfigs (not incremental) replaces the whole set
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic, set_config={"retention.ms": "5000"})
    a.alter_configs([res])[res].result(10)
    cfg = describe(a, topic)
    assert (cfg["retention.ms"].value, cfg["retention.ms"].source) == ("5000", DYNAMIC)
    assert cfg["segment.ms"].source != DYNAMIC
    assert cfg["cleanup.policy"].value == "delete"


def test_the_broker_resource_shows_its_defaults(broker):
    a = admin(broker)
    res = cka.ConfigResource(cka.ResourceType.BROKER, "0")
    cfg = a.describe_configs([res], request_timeout=10)[res].result(10)
    for key in ("log.retention.ms", "log.segment.bytes", "num.partitions",
                "default.replication.factor", "min.insync.replicas", "message.max.bytes"):
        assert key in cfg, key
        assert cfg[key].is_read_only
    assert cfg["message.max.bytes"].value == "1048588"


def produce_one(broker, topic, value, **kw):
    """Produces one record and returns its delivery report's (error, message)."""
    got = []
    p = ck.Producer(ck_conf(broker.bootstrap, **{"linger.ms": 0, "retries": 0,
                                                 "message.max.bytes": 10_000_000}))
    p.produce(topic, value=value, on_delivery=lambda err, msg: got.append((err, msg)), **kw)
    p.flush(15)
    assert len(got) == 1
    return got[0]


def test_max_message_bytes_refuses_larger_batches(broker):
    a = admin(broker)
    topic = unique("cfg-max")
    create(a, topic, {"max.message.bytes": "2000"})
    err, _ = produce_one(broker, topic, b"x" * 5000)
    assert err is not None and err.code() == ck.KafkaError.MSG_SIZE_TOO_LARGE, err
    err, _ = produce_one(broker, topic, b"x" * 500)
    assert err is None, err
    # raised above the broker's message.max.bytes, a larger batch passes
    incremental(a, topic, [("max.message.bytes", "20000", cka.AlterConfigOpType.SET)])
    err, _ = produce_one(broker, topic, b"x" * 5000)
    assert err is None, err


class StoredBatch:
    def __init__(self, attributes, max_timestamp):
        self.compression_type = attributes & 0x7
        self.timestamp_type = (attributes >> 3) & 1
        self.max_timestamp = max_timestamp


def fetch_batches(broker, topic, partition=0):
    """The stored record batch headers of a partition, from a plain Fetch v4 on a socket:
    what the broker wrote, not what a client makes of it."""
    name = topic.encode()
    body = struct.pack(">iiiib", -1, 500, 1, 10_000_000, 0)
    body += struct.pack(">ih", 1, len(name)) + name
    body += struct.pack(">iiqi", 1, partition, 0, 10_000_000)
    client = b"cfg-test"
    header = struct.pack(">hhih", 1, 4, 7, len(client)) + client
    host, port = broker.bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        frame = header + body
        sock.sendall(struct.pack(">i", len(frame)) + frame)

        def read(n):
            out = b""
            while len(out) < n:
                chunk = sock.recv(n - len(out))
                assert chunk, "connection closed"
                out += chunk
            return out

        (size,) = struct.unpack(">i", read(4))
        resp = read(size)
    at = 4 + 4  # correlation id, throttle time
    (topics,) = struct.unpack_from(">i", resp, at)
    assert topics == 1
    (tlen,) = struct.unpack_from(">h", resp, at + 4)
    at += 6 + tlen
    (parts,) = struct.unpack_from(">i", resp, at)
    assert parts == 1
    _, error, _, _, aborted = struct.unpack_from(">ihqqi", resp, at + 4)
    assert error == 0, error
    at += 4 + 4 + 2 + 8 + 8 + 4 + max(aborted, 0) * 16
    (rlen,) = struct.unpack_from(">i", resp, at)
    records = resp[at + 4:at + 4 + rlen]
    out, pos = [], 0
    while pos + 61 <= len(records):
        (blen,) = struct.unpack_from(">i", records, pos + 8)
        (attributes,) = struct.unpack_from(">h", records, pos + 21)
        (max_ts,) = struct.unpack_from(">q", records, pos + 35)
        out.append(StoredBatch(attributes, max_ts))
        pos += 12 + blen
    return out


def test_log_append_time_stamps_the_broker_time_into_the_batch(broker):
    a = admin(broker)
    topic = unique("cfg-lat")
    create(a, topic, {"message.timestamp.type": "LogAppendTime"})
    old = now_ms() - 86_400_000
    before = now_ms()
    err, msg = produce_one(broker, topic, b"v", timestamp=old)
    after = now_ms()
    assert err is None, err
    # the produce response's log_append_time_ms reaches the delivery report
    ts_type, ts = msg.timestamp()
    assert ts_type == ck.TIMESTAMP_LOG_APPEND_TIME and before <= ts <= after, (ts_type, ts)
    c = ck.Consumer(ck_conf(broker.bootstrap, **{"group.id": unique("g"),
                                                  "auto.offset.reset": "earliest",
                                                  "check.crcs": True}))
    c.assign([ck.TopicPartition(topic, 0, 0)])
    got = None
    for _ in range(100):
        got = c.poll(0.2)
        if got is not None:
            break
    c.close()
    assert got is not None and got.error() is None, got and got.error()
    assert got.timestamp() == (ck.TIMESTAMP_LOG_APPEND_TIME, ts) and got.value() == b"v"
    (batch,) = fetch_batches(broker, topic)
    assert batch.timestamp_type == 1 and batch.max_timestamp == ts


def test_timestamps_outside_the_window_are_invalid_timestamp(broker):
    a = admin(broker)
    topic = unique("cfg-ts")
    create(a, topic, {"message.timestamp.before.max.ms": "60000"})
    err, _ = produce_one(broker, topic, b"old", timestamp=now_ms() - 3_600_000)
    assert err is not None and err.code() == ck.KafkaError.INVALID_TIMESTAMP, err
    err, _ = produce_one(broker, topic, b"recent", timestamp=now_ms() - 1_000)
    assert err is None, err
    # Kafka 4's default after.max.ms: an hour
    err, _ = produce_one(broker, topic, b"future", timestamp=now_ms() + 7_200_000)
    assert err is not None and err.code() == ck.KafkaError.INVALID_TIMESTAMP, err
    assert [r.value for r in read_all("confluent", broker.bootstrap, topic)] == [b"recent"]


@pytest.mark.parametrize("target,codec_id", [("gzip", 1), ("snappy", 2), ("zstd", 4),
                                             ("uncompressed", 0), ("producer", 3),
                                             ("lz4", 3)])
def test_compression_type_recompresses_batches(broker, target, codec_id):
    a = admin(broker)
    topic = unique("cfg-comp")
    create(a, topic, {"compression.type": target})
    p = ck.Producer(ck_conf(broker.bootstrap, **{"linger.ms": 100, "compression.type": "lz4"}))
    for i in range(20):
        p.produce(topic, key=f"k{i}".encode(), value=f"value {i} ".encode() * 20)
    assert p.flush(15) == 0
    batches = fetch_batches(broker, topic)
    assert batches and all(b.compression_type == codec_id for b in batches), \
        [b.compression_type for b in batches]
    recs = read_all("confluent", broker.bootstrap, topic)
    assert [r.key for r in recs] == [f"k{i}".encode() for i in range(20)]
    assert recs[7].value == b"value 7 " * 20


def test_compact_topics_are_compacted_not_cut_by_retention(broker):
    # retention every 100 ms, so that the delete topic below shows it ran
    broker.config_path.write_text(broker.config_path.read_text() + "[log]\nretention_check_ms = 100\n")
    broker.restart()
    a = admin(broker)
    compact, delete = unique("cfg-compact"), unique("cfg-delete")
    short = {"retention.ms": "1", "segment.ms": "1"}
    create(a, compact, dict(short, **{"cleanup.policy": "compact"}))
    create(a, delete, dict(short, **{"cleanup.policy": "delete"}))
    p = ck.Producer(ck_conf(broker.bootstrap))
    for i in range(5):
        for topic in (compact, delete):
            p.produce(topic, key=b"same", value=f"{i}".encode(), timestamp=now_ms() - 1000)
        p.flush(15)
        time.sleep(0.01)  # each record in a segment of its own (segment.ms = 1)
    c = ck.Consumer(ck_conf(broker.bootstrap, **{"group.id": unique("g")}))
    low = lambda t: c.get_watermark_offsets(ck.TopicPartition(t, 0), timeout=10)[0]
    wait_until(lambda: low(delete) > 0, 30, "retention deleted the delete topic's old segments")
    # compact alone: retention deletes nothing (the log still starts at 0); the cleaner may
    # have dropped older values of the key, never the last one, never reordered them.
    assert low(compact) == 0
    c.close()
    for _ in range(2):
        values = [r.value for r in read_all("confluent", broker.bootstrap, compact)]
        assert values[-1] == b"4" and values == sorted(set(values)), values
        broker.restart()


def assert_invalid_config(excinfo, *needles):
    """INVALID_CONFIG whose message names the key, the value and what is allowed."""
    code, msg = config_error(excinfo)
    assert code == ck.KafkaError.INVALID_CONFIG, (code, msg)
    for needle in needles:
        assert needle in msg, (needle, msg)


# (config, what the message names besides "allowed"): wrong types, out of range, unknown
# keys, contradictions between keys.
BAD_CHANGES = [
    ({"segment.bytes": "12"}, ["segment.bytes", '"12"', "allowed: a INT of at least 1048576"]),
    ({"preallocate": "yes"}, ["preallocate", '"yes"', "allowed: a BOOLEAN"]),
    ({"min.cleanable.dirty.ratio": "1.5"}, ["min.cleanable.dirty.ratio", '"1.5"',
                                            "allowed: a DOUBLE from 0 to 1"]),
    ({"max.message.bytes": "3000000000"}, ["max.message.bytes", '"3000000000"', "INT"]),
    ({"compression.type": "brotli"}, ["compression.type", '"brotli"', "allowed: one of"]),
    ({"compression.gzip.level": "10"}, ["compression.gzip.level", '"10"', "allowed:"]),
    ({"message.timestamp.type": "createtime"}, ["message.timestamp.type", "CreateTime"]),
    ({"leader.replication.throttled.replicas": "0:x"},
     ["leader.replication.throttled.replicas", "partition:broker"]),
    ({"segmnet.bytes": "1048576"}, ["segmnet.bytes"]),
    ({"message.downconversion.enable": "true"}, ["message.downconversion.enable"]),
    ({"retention.bytes": "1000", "local.retention.bytes": "5000"},
     ["local.retention.bytes", "5000", "retention.bytes = 1000", "allowed:"]),
    ({"min.compaction.lag.ms": "10", "max.compaction.lag.ms": "5"},
     ["min.compaction.lag.ms", "max.compaction.lag.ms = 5"]),
    ({"remote.storage.enable": "true"}, ["remote.storage.enable", "allowed: false"]),
]


def test_create_topics_refuses_each_bad_config_and_creates_the_good_topics_beside_it(broker):
    a = admin(broker)
    for config, needles in BAD_CHANGES:
        bad, good = unique("cfg-bad"), unique("cfg-good")
        fs = a.create_topics([
            cka.NewTopic(bad, 1, 1, config=dict(config, **{"retention.ms": "1234"})),
            cka.NewTopic(good, 1, 1, config={"retention.ms": "1234"}),
        ], request_timeout=15)
        with pytest.raises(ck.KafkaException) as e:
            fs[bad].result(15)
        assert_invalid_config(e, *needles)
        fs[good].result(15)  # results are per topic, as in Kafka
        topics = a.list_topics(timeout=10).topics
        assert bad not in topics and good in topics, config
        assert describe(a, good)["retention.ms"].value == "1234"


def test_alter_configs_with_one_bad_config_among_good_ones_changes_nothing(broker):
    a = admin(broker)
    topic = unique("cfg-alter")
    before = {"retention.ms": "1000", "segment.ms": "60000", "cleanup.policy": "delete,compact"}
    create(a, topic, before)

    def unchanged():
        cfg = describe(a, topic)
        for k, v in before.items():
            assert (cfg[k].value, cfg[k].source) == (v, DYNAMIC), (k, cfg[k].value)
        assert cfg["max.message.bytes"].source == DEFAULT

    S = cka.AlterConfigOpType.SET
    for config, needles in BAD_CHANGES:
        good = {"retention.ms": "2000", "max.message.bytes": "5000"}
        # AlterConfigs: replaces the whole set, so a refusal must leave even the keys it
        # would have reset
        res = cka.ConfigResource(cka.ResourceType.TOPIC, topic, set_config=dict(good, **config))
        with pytest.raises(ck.KafkaException) as e:
            a.alter_configs([res])[res].result(10)
        assert_invalid_config(e, *needles)
        unchanged()
        # IncrementalAlterConfigs
        with pytest.raises(ck.KafkaException) as e:
            incremental(a, topic, [(k, v, S) for k, v in dict(good, **config).items()])
        assert_invalid_config(e, *needles)
        unchanged()
    # and the incremental operations' own mistakes
    op = cka.AlterConfigOpType
    mistakes = [
        ([("retention.ms", "2000", S), ("no.such.key", None, op.DELETE)], ["no.such.key"]),
        ([("retention.ms", "2000", S), ("cleanup.policy", "shred", op.APPEND)],
         ["cleanup.policy", "shred", "allowed:"]),
        ([("retention.ms", "2000", S), ("cleanup.policy", "delete,compact", op.SUBTRACT)],
         ["cleanup.policy", "the list is empty"]),
        ([("retention.ms", "2000", S), ("segment.ms", "5", op.APPEND)],
         ["segment.ms", "LIST configs only"]),
    ]
    for entries, needles in mistakes:
        with pytest.raises(ck.KafkaException) as e:
            incremental(a, topic, entries)
        assert_invalid_config(e, *needles)
        unchanged()
    # a good request after all that still applies
    incremental(a, topic, [("retention.ms", "2000", S)])
    assert describe(a, topic)["retention.ms"].value == "2000"


def test_read_only_configs_are_refused_and_change_nothing(broker):
    a = admin(broker)
    # the broker's settings live in its config file
    res = cka.ConfigResource(cka.ResourceType.BROKER, "0",
                             set_config={"log.retention.ms": "1000"})
    with pytest.raises(ck.KafkaException) as e:
        a.alter_configs([res])[res].result(10)
    err = e.value.args[0]
    assert err.code() == ck.KafkaError.INVALID_REQUEST, err
    assert "log.retention.ms" in err.str() and "config file" in err.str(), err.str()
    res = cka.ConfigResource(cka.ResourceType.BROKER, "0", incremental_configs=[
        cka.ConfigEntry("log.retention.ms", "1000",
                        incremental_operation=cka.AlterConfigOpType.SET)])
    with pytest.raises(ck.KafkaException) as e:
        a.incremental_alter_configs([res])[res].result(10)
    assert e.value.args[0].code() == ck.KafkaError.INVALID_REQUEST
    res = cka.ConfigResource(cka.ResourceType.BROKER, "0")
    cfg = a.describe_configs([res], request_timeout=10)[res].result(10)
    assert cfg["log.retention.ms"].value == "604800000"
    # __consumer_offsets is compacted by the broker: its cleanup.policy is read-only
    p = ck.Consumer(ck_conf(broker.bootstrap, **{"group.id": unique("g")}))
    p.list_topics(timeout=10)
    p.close()
    wait_until(lambda: "__consumer_offsets" in a.list_topics(timeout=10).topics, 10,
               "__consumer_offsets exists")
    cfg = describe(a, "__consumer_offsets")
    assert cfg["cleanup.policy"].value == "compact" and cfg["cleanup.policy"].is_read_only
    with pytest.raises(ck.KafkaException) as e:
        incremental(a, "__consumer_offsets",
                    [("cleanup.policy", "delete", cka.AlterConfigOpType.SET)])
    assert_invalid_config(e, "cleanup.policy", "read-only", "allowed: compact")
    # nor reset to delete by an AlterConfigs that leaves it out
    res = cka.ConfigResource(cka.ResourceType.TOPIC, "__consumer_offsets",
                             set_config={"segment.ms": "600000"})
    with pytest.raises(ck.KafkaException) as e:
        a.alter_configs([res])[res].result(10)
    assert_invalid_config(e, "cleanup.policy", "read-only")
    cfg = describe(a, "__consumer_offsets")
    assert cfg["cleanup.policy"].value == "compact"
    assert cfg["segment.ms"].source != DYNAMIC
    assert (cfg["retention.ms"].value, cfg["retention.ms"].source) == ("-1", DYNAMIC)
    # what keeps it compact may change
    incremental(a, "__consumer_offsets", [("segment.ms", "600000", cka.AlterConfigOpType.SET)])
    assert describe(a, "__consumer_offsets")["segment.ms"].value == "600000"
