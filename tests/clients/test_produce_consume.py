"""Produce with each client, consume with each client: every field round-trips.

1. keys, null keys, headers, explicit timestamps;
2. the four compression codecs;
3. acks 0, 1 and all.
"""

import json
import logging
import time

import confluent_kafka as ck
import confluent_kafka.admin  # noqa: F401  (ck.admin)
import kafka as kp
import pytest

from kutil import (CLIENTS, CODECS, Deadline, assert_dense_offsets, ck_conf, kcat,
                   now_ms, read_all, read_all_confluent, unique)

# ---------------------------------------------------------------------------------------------
# producers: each takes specs (dicts with partition, key, value, headers, timestamp) and
# returns [(partition, offset)] in spec order (offset -1 when the client does not know it).


def produce_confluent(bootstrap, topic, specs, conf=None, flush_every=None):
    p = ck.Producer(ck_conf(bootstrap, **(conf or {})))
    results = [None] * len(specs)

    def cb_for(i):
        def cb(err, msg):
            results[i] = (err, msg.partition(), msg.offset())
        return cb

    for i, s in enumerate(specs):
        kw = {}
        if s.get("timestamp") is not None:
            kw["timestamp"] = s["timestamp"]
        if s.get("headers"):
            kw["headers"] = list(s["headers"])
        p.produce(topic, value=s["value"], key=s["key"], partition=s.get("partition", 0),
                  on_delivery=cb_for(i), **kw)
        p.poll(0)
        if flush_every and (i + 1) % flush_every == 0:
            assert p.flush(30) == 0
    assert p.flush(30) == 0, "messages still queued after 30 s"
    bad = [(i, r) for i, r in enumerate(results) if r is None or r[0] is not None]
    assert not bad, f"delivery failures: {bad[:5]}"
    return [(r[1], r[2]) for r in results]


def produce_kafka_python(bootstrap, topic, specs, flush_every=None, **cfg):
    p = kp.KafkaProducer(bootstrap_servers=bootstrap, **cfg)
    try:
        futs = []
        for i, s in enumerate(specs):
            futs.append(p.send(topic, value=s["value"], key=s["key"],
                               headers=list(s.get("headers") or ()),
                               partition=s.get("partition", 0),
                               timestamp_ms=s.get("timestamp")))
            if flush_every and (i + 1) % flush_every == 0:
                p.flush(timeout=30)
        p.flush(timeout=30)
        mds = [f.get(timeout=30) for f in futs]
        return [(m.partition, m.offset) for m in mds]
    finally:
        p.close(timeout=10)


def kcat_produce(bootstrap, topic, partition, lines, extra=()):
    kcat(["-b", bootstrap, "-P", "-t", topic, "-p", str(partition), "-m", "10", *extra],
         input="".join(line + "\n" for line in lines).encode())


# ---------------------------------------------------------------------------------------------
# 1. keys, null keys, headers, timestamps


def roundtrip_specs(producer):
    t0 = now_ms() - 3_600_000
    specs = [
        dict(partition=0, key=b"key-0", value=b"value-0",
             headers=(("h1", b"a"), ("h1", b"b"), ("empty", b"")), timestamp=t0),
        dict(partition=0, key=None, value=b"value-null-key", headers=(), timestamp=t0 + 5000),
        # out-of-order timestamp inside the partition
        dict(partition=0, key=b"", value=b"value-empty-key", headers=(("x", b"y"),),
             timestamp=t0 + 1000),
        dict(partition=0, key=b"key-3", value=None, headers=(("tomb", b"stone"),),
             timestamp=t0 + 2),
        dict(partition=1, key=b"key-4", value=b"", headers=(), timestamp=t0 - 86_400_000),
        dict(partition=1, key="ключ-5".encode(), value="значение ✓ 5".encode(),
             headers=(("ü", "ä".encode()),), timestamp=t0 + 3),
        dict(partition=1, key=b"key-6", value=b"v" * 3000, headers=(("big", b"z" * 500),),
             timestamp=t0 + 4),
    ]
    if producer == "confluent":
        # kafka-python's producer refuses null header values; librdkafka sends them.
        specs.append(dict(partition=1, key=b"key-7", value=b"value-7",
                          headers=(("nullh", None), ("after", b"x")), timestamp=t0 + 6))
    return specs


def expected_contents(specs):
    out = []
    for p in sorted({s["partition"] for s in specs}):
        out += [(p, s["key"], s["value"], tuple(s["headers"]), s["timestamp"])
                for s in specs if s["partition"] == p]
    return out


def create_topic_confluent(bootstrap, topic, partitions, config=None):
    a = ck.admin.AdminClient({"bootstrap.servers": bootstrap})
    fs = a.create_topics([ck.admin.NewTopic(topic, num_partitions=partitions,
                                            replication_factor=1, config=config or {})],
                         operation_timeout=10, request_timeout=15)
    fs[topic].result(timeout=15)


@pytest.mark.parametrize("producer", ["confluent", "kafka-python"])
def test_roundtrip_keys_headers_timestamps(broker, producer):
    topic = unique(f"rt-{producer}")
    create_topic_confluent(broker.bootstrap, topic, 2)
    specs = roundtrip_specs(producer)
    if producer == "confluent":
        # two produce calls per partition worth of batches: flush after every 3 records
        got = produce_confluent(broker.bootstrap, topic, specs, flush_every=3)
    else:
        got = produce_kafka_python(broker.bootstrap, topic, specs, flush_every=3)
    # delivery reports: the right partition, dense offsets in send order
    for p in (0, 1):
        offs = [o for (pp, o) in got if pp == p]
        assert offs == list(range(len(offs))), (p, got)
    want = expected_contents(specs)
    for reader in CLIENTS:
        recs = read_all(reader, broker.bootstrap, topic)
        assert_dense_offsets(recs)
        assert [r.content() for r in recs] == want, f"reader {reader}"


def test_roundtrip_kcat_producer(broker):
    topic = unique("rt-kcat")
    create_topic_confluent(broker.bootstrap, topic, 2)
    before = now_ms()
    # -K: key delimiter; -Z: empty key/value is sent as NULL.
    kcat_produce(broker.bootstrap, topic, 0, ["k1:v1", ":v-null-key", "k3:"],
                 extra=["-K", ":", "-Z", "-H", "h1=a", "-H", "h1=b", "-H", "e="])
    kcat_produce(broker.bootstrap, topic, 1, ["k4:v4", "k5:v5 with spaces", "ключ:значение"],
                 extra=["-K", ":"])
    after = now_ms()
    hdrs = (("h1", b"a"), ("h1", b"b"), ("e", b""))
    want = [
        (0, b"k1", b"v1", hdrs), (0, None, b"v-null-key", hdrs), (0, b"k3", None, hdrs),
        (1, b"k4", b"v4", ()), (1, b"k5", b"v5 with spaces", ()),
        (1, "ключ".encode(), "значение".encode(), ()),
    ]
    first = None
    for reader in CLIENTS:
        recs = read_all(reader, broker.bootstrap, topic)
        assert_dense_offsets(recs)
        assert [r.content()[:4] for r in recs] == want, f"reader {reader}"
        for r in recs:
            assert before - 1000 <= r.timestamp <= after + 1000, (reader, r)
        if first is None:
            first = recs
        else:
            assert recs == first, f"reader {reader} disagrees with kcat"


# ---------------------------------------------------------------------------------------------
# 2. compression codecs


def codec_values(codec, n):
    # compressible, distinct, with the codec in each value
    return [(f"k{i}".encode(), f"{codec}-{i:05d}-".encode() + b"abcdefgh" * 20) for i in range(n)]


@pytest.mark.parametrize("producer", CLIENTS)
def test_compression_codecs(broker, producer):
    n = 300
    topics = {}
    for codec in CODECS:
        topic = unique(f"cz-{codec}-{producer}")
        topics[codec] = topic
        kvs = codec_values(codec, n)
        if producer == "kcat":
            kcat_produce(broker.bootstrap, topic, 0, [f"{k.decode()}:{v.decode()}" for k, v in kvs],
                         extra=["-K", ":", "-z", codec, "-X", "linger.ms=20",
                                "-H", f"codec={codec}"])
        elif producer == "confluent":
            produce_confluent(broker.bootstrap, topic,
                              [dict(partition=0, key=k, value=v, headers=(("codec", codec.encode()),))
                               for k, v in kvs],
                              conf={"compression.type": codec, "linger.ms": 20})
        else:
            produce_kafka_python(broker.bootstrap, topic,
                                 [dict(partition=0, key=k, value=v,
                                       headers=(("codec", codec.encode()),)) for k, v in kvs],
                                 compression_type=codec, linger_ms=20)
    for codec, topic in topics.items():
        want = [(k, v, (("codec", codec.encode()),)) for k, v in codec_values(codec, n)]
        for reader in CLIENTS:
            recs = read_all(reader, broker.bootstrap, topic)
            assert_dense_offsets(recs)
            got = [(r.key, r.value, r.headers) for r in recs]
            assert len(got) == n, f"{codec} read by {reader}: {len(got)} records"
            assert got == want, f"{codec} read by {reader}"


# ---------------------------------------------------------------------------------------------
# 3. acks 0, 1, all


def wait_for_values(bootstrap, topic, want, seconds=15):
    """acks=0 gives no delivery guarantee in time: read until the topic holds `want`."""
    d = Deadline(seconds, f"records of {topic} to arrive")
    while True:
        got = [r.value for r in read_all_confluent(bootstrap, topic)]
        if len(got) >= len(want) or d.expired():
            assert got == want
            return
        time.sleep(0.2)


def ack_specs(tag, start, n):
    return [dict(partition=0, key=f"{i}".encode(), value=f"{tag}-{i}".encode())
            for i in range(start, start + n)]


@pytest.mark.parametrize("acks", ["1", "all"])
def test_acks_confluent(broker, acks):
    topic = unique(f"acks{acks}-ck")
    specs = ack_specs(topic, 0, 200)
    got = produce_confluent(broker.bootstrap, topic, specs,
                            conf={"acks": acks, "linger.ms": 5, "batch.num.messages": 20})
    assert got == [(0, i) for i in range(200)]
    for reader in CLIENTS:
        assert [r.value for r in read_all(reader, broker.bootstrap, topic)] == \
            [s["value"] for s in specs], reader


def test_acks0_confluent(broker):
    topic = unique("acks0-ck")
    stats = []
    p = ck.Producer(ck_conf(broker.bootstrap, **{
        "acks": "0", "linger.ms": 2, "batch.num.messages": 10,
        "statistics.interval.ms": 100, "stats_cb": lambda s: stats.append(json.loads(s))}))
    errs = []

    def cb(err, msg):
        if err is not None:
            errs.append(err)

    specs = ack_specs(topic, 0, 100)
    for s in specs[:50]:
        p.produce(topic, key=s["key"], value=s["value"], partition=0, on_delivery=cb)
        p.poll(0)
    assert p.flush(15) == 0
    # the same connection keeps working after acks=0 produce requests
    md = p.list_topics(timeout=10)
    assert topic in md.topics
    for s in specs[50:]:
        p.produce(topic, key=s["key"], value=s["value"], partition=0, on_delivery=cb)
        p.poll(0)
    assert p.flush(15) == 0
    assert not errs, errs
    wait_for_values(broker.bootstrap, topic, [s["value"] for s in specs])
    # A broker that answers acks=0 produce requests makes librdkafka count responses with
    # unknown correlation ids (rxcorriderrs); wait for a fresh statistics report.
    n = len(stats)
    d = Deadline(5, "a statistics callback")
    while len(stats) <= n + 1:
        d.check()
        p.poll(0.1)
    brokers = [b for b in stats[-1]["brokers"].values() if b["nodeid"] >= 0]
    assert brokers, stats[-1]["brokers"].keys()
    for b in brokers:
        assert b["rxcorriderrs"] == 0, b
        assert b["req_timeouts"] == 0, b
        assert b["txerrs"] == 0 and b["rxerrs"] == 0, b
        assert b["disconnects"] == 0, b


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_acks_kafka_python(broker, acks, caplog):
    caplog.set_level(logging.WARNING, logger="kafka")
    topic = unique(f"acks{acks}-kp")
    specs = ack_specs(topic, 0, 100)
    p = kp.KafkaProducer(bootstrap_servers=broker.bootstrap, acks=acks, linger_ms=2,
                         batch_size=400)
    try:
        futs = [p.send(topic, key=s["key"], value=s["value"], partition=0) for s in specs[:50]]
        p.flush(timeout=15)
        mds = [f.get(timeout=15) for f in futs]
        if acks != 0:  # with acks=0 kafka-python makes up the offsets
            assert [m.offset for m in mds] == list(range(50))
        # the connection keeps working: a metadata request and more produce requests
        other = unique("acks-other")
        assert p.partitions_for(other) == {0}
        futs = [p.send(topic, key=s["key"], value=s["value"], partition=0) for s in specs[50:]]
        p.flush(timeout=15)
        mds = [f.get(timeout=15) for f in futs]
        if acks != 0:
            assert [m.offset for m in mds] == list(range(50, 100))
    finally:
        p.close(timeout=10)
    wait_for_values(broker.bootstrap, topic, [s["value"] for s in specs])
    # kafka-python closes the connection (and logs) on a response it did not expect, e.g. a
    # response to an acks=0 produce request.
    noisy = [r.getMessage() for r in caplog.records if r.name.startswith("kafka")]
    assert not noisy, noisy


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_acks_kcat(broker, acks):
    topic = unique(f"acks{acks}-kcat")
    values = [f"{topic}-{i}" for i in range(500)]
    # many small batches on one connection
    kcat_produce(broker.bootstrap, topic, 0, values,
                 extra=["-X", f"acks={acks}", "-X", "batch.num.messages=10",
                        "-X", "linger.ms=1"])
    wait_for_values(broker.bootstrap, topic, [v.encode() for v in values])
    recs = read_all("kcat", broker.bootstrap, topic)
    assert [r.value.decode() for r in recs] == values
    assert_dense_offsets(recs)


# ---------------------------------------------------------------------------------------------
# Fetch long poll: a consumer waiting at the end of the log gets a new record as soon as it is
# written, not when its fetch wait (3 s here) runs out.


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_long_poll_wakes_on_produce(broker, client):
    topic = unique(f"lp-{client}")
    create_topic_confluent(broker.bootstrap, topic, 1)
    prod = ck.Producer(ck_conf(broker.bootstrap, **{"linger.ms": 0}))
    if client == "confluent":
        c = ck.Consumer(ck_conf(broker.bootstrap, **{
            "group.id": unique("lp"), "fetch.wait.max.ms": 3000, "enable.auto.commit": False}))
        c.assign([ck.TopicPartition(topic, 0, 0)])

        def poll():
            m = c.poll(0.05)
            return [m.value()] if m is not None and not m.error() else []
    else:
        c = kp.KafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=3000,
                             enable_auto_commit=False)
        c.assign([kp.TopicPartition(topic, 0)])
        c.seek(kp.TopicPartition(topic, 0), 0)

        def poll():
            return [r.value for rs in c.poll(timeout_ms=50).values() for r in rs]
    try:
        for round_ in range(3):
            # let the consumer park a fetch at the end of the log
            end = time.monotonic() + 0.7
            while time.monotonic() < end:
                assert poll() == []
            v = f"wake-{round_}".encode()
            prod.produce(topic, value=v, partition=0)
            assert prod.flush(10) == 0
            t0 = time.monotonic()
            d = Deadline(5, "the record to arrive")
            got = []
            while not got:
                d.check()
                got = poll()
            waited = time.monotonic() - t0
            assert got == [v]
            assert waited < 1.5, f"record arrived {waited:.2f}s after it was acknowledged: " \
                                 f"the parked fetch was not woken"
    finally:
        c.close()
