"""7. ListOffsets: by timestamp (exact record offsets, inside batches, compressed or not),
earliest and latest, with each client; and earliest after DeleteRecords."""

import re

import confluent_kafka as ck
import confluent_kafka.admin  # noqa: F401  (ck.admin)
import kafka as kp
import pytest

from kutil import Deadline, ck_conf, kcat, now_ms, read_all, unique

N = 20


def layout(t0):
    """Timestamps per partition; offsets are list indexes.

    p0: two uncompressed batches of 10, non-decreasing, with a repeated timestamp;
    p1: the same, lz4-compressed; p2: out of order.
    """
    mono = [t0 + 10 * i for i in range(N)]
    mono[5] = mono[4]  # offsets 4 and 5 share a timestamp
    return {0: mono, 1: list(mono), 2: [t0 + 50, t0 + 10, t0 + 60, t0 + 30, t0 + 70]}


def first_at_or_after(ts, t):
    for off, x in enumerate(ts):
        if x >= t:
            return off
    return None


def queries(t0):
    return [t0 - 100_000, t0 - 1, t0, t0 + 1, t0 + 39, t0 + 40, t0 + 41, t0 + 90, t0 + 95,
            t0 + 100, t0 + 101, t0 + 185, t0 + 190, t0 + 191, t0 + 10_000_000,
            t0 + 20, t0 + 55, t0 + 65]


@pytest.fixture
def ts_topic(broker):
    topic = unique("lo")
    a = ck.admin.AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([ck.admin.NewTopic(topic, num_partitions=3,
                                       replication_factor=1)])[topic].result(15)
    t0 = now_ms() - 600_000
    lay = layout(t0)
    for part, codec in ((0, "none"), (1, "lz4"), (2, "none")):
        p = ck.Producer(ck_conf(broker.bootstrap, **{"linger.ms": 50,
                                                     "compression.type": codec}))
        ts = lay[part]
        for i, t in enumerate(ts):
            p.produce(topic, value=f"{part}-{i}".encode(), partition=part, timestamp=t)
            if i == 9:
                assert p.flush(15) == 0  # batch boundary between offsets 9 and 10
        assert p.flush(15) == 0
    # the data is as laid out
    recs = read_all("confluent", broker.bootstrap, topic)
    for part, ts in lay.items():
        assert [(r.offset, r.timestamp) for r in recs if r.partition == part] == \
            list(enumerate(ts))
    return topic, t0, lay


def test_offsets_for_times_confluent(broker, ts_topic):
    topic, t0, lay = ts_topic
    c = ck.Consumer(ck_conf(broker.bootstrap, **{"group.id": unique("lo")}))
    try:
        for part, ts in lay.items():
            for t in queries(t0):
                (r,) = c.offsets_for_times([ck.TopicPartition(topic, part, t)], timeout=10)
                assert r.error is None, r.error
                want = first_at_or_after(ts, t)
                assert r.offset == (ck.OFFSET_END if want is None else want), \
                    f"p{part} t0{t - t0:+d}: got {r.offset}, want {want}"
            lo, hi = c.get_watermark_offsets(ck.TopicPartition(topic, part), timeout=10)
            assert (lo, hi) == (0, len(ts))
    finally:
        c.close()


def test_offsets_for_times_kafka_python(broker, ts_topic):
    topic, t0, lay = ts_topic
    c = kp.KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        for part, ts in lay.items():
            tp = kp.TopicPartition(topic, part)
            for t in queries(t0):
                r = c.offsets_for_times({tp: t})[tp]
                want = first_at_or_after(ts, t)
                if want is None:
                    assert r is None, f"p{part} t0{t - t0:+d}: got {r}, want none"
                else:
                    assert r is not None, f"p{part} t0{t - t0:+d}: got none, want {want}"
                    assert (r.offset, r.timestamp) == (want, ts[want]), \
                        f"p{part} t0{t - t0:+d}: got {r}, want {want}"
            assert c.beginning_offsets([tp]) == {tp: 0}
            assert c.end_offsets([tp]) == {tp: len(ts)}
    finally:
        c.close()


def kcat_query(bootstrap, topic, part, t):
    out = kcat(["-b", bootstrap, "-Q", "-t", f"{topic}:{part}:{t}", "-m", "10"]).stdout.decode()
    m = re.search(rf"{re.escape(topic)} \[{part}\] offset (-?\d+)", out)
    assert m, out
    return int(m.group(1))


def test_offsets_for_times_kcat(broker, ts_topic):
    topic, t0, lay = ts_topic
    for part, ts in lay.items():
        for t in (t0 - 1, t0 + 41, t0 + 95, t0 + 190, t0 + 55, t0 + 10_000_000):
            want = first_at_or_after(ts, t)
            assert kcat_query(broker.bootstrap, topic, part, t) == \
                (-1 if want is None else want), f"p{part} t0{t - t0:+d}"
        # -1: latest, -2: earliest
        assert kcat_query(broker.bootstrap, topic, part, -1) == len(ts)
        assert kcat_query(broker.bootstrap, topic, part, -2) == 0
    # consuming from a timestamp starts at the right record
    out = kcat(["-b", broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", f"s@{t0 + 95}",
                "-e", "-q", "-f", "%o %T\n"]).stdout.decode().split()
    assert [int(x) for x in out[0::2]] == list(range(10, N))
    # the last record (-o -1) and the first (beginning)
    out = kcat(["-b", broker.bootstrap, "-C", "-t", topic, "-p", "1", "-o", "-1", "-e", "-q",
                "-f", "%o %s\n"]).stdout.decode().split()
    assert out == [str(N - 1), f"1-{N - 1}"]
    out = kcat(["-b", broker.bootstrap, "-C", "-t", topic, "-p", "1", "-o", "beginning", "-c",
                "1", "-q", "-f", "%o %s\n"]).stdout.decode().split()
    assert out == ["0", "1-0"]


def test_earliest_after_delete_records(broker, ts_topic):
    topic, t0, lay = ts_topic
    a = ck.admin.AdminClient({"bootstrap.servers": broker.bootstrap})
    fs = a.delete_records([ck.TopicPartition(topic, 0, 7), ck.TopicPartition(topic, 1, 12)],
                          request_timeout=10)
    for tp, f in fs.items():
        r = f.result(10)
        assert r.low_watermark == {0: 7, 1: 12}[tp.partition], r
    want_lo = {0: 7, 1: 12, 2: 0}
    c = ck.Consumer(ck_conf(broker.bootstrap, **{"group.id": unique("lo")}))
    try:
        for part, ts in lay.items():
            lo, hi = c.get_watermark_offsets(ck.TopicPartition(topic, part), timeout=10)
            assert (lo, hi) == (want_lo[part], len(ts)), part
            # a timestamp before every remaining record maps to the log start
            (r,) = c.offsets_for_times([ck.TopicPartition(topic, part, t0 - 1)], timeout=10)
            assert r.offset == want_lo[part], part
    finally:
        c.close()
    kc = kp.KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        tps = [kp.TopicPartition(topic, p) for p in lay]
        assert kc.beginning_offsets(tps) == {tp: want_lo[tp.partition] for tp in tps}
    finally:
        kc.close()
    for part in lay:
        assert kcat_query(broker.bootstrap, topic, part, -2) == want_lo[part]
    # reading from the beginning starts at the new log start, for every reader
    for reader in ("kcat", "confluent", "kafka-python"):
        recs = read_all(reader, broker.bootstrap, topic)
        for part, ts in lay.items():
            assert [r.offset for r in recs if r.partition == part] == \
                list(range(want_lo[part], len(ts))), (reader, part)
    # and it survives a restart, which finds nothing amiss in the partition directories (the
    # persisted start was once taken for a foreign file)
    before = broker.log_path.stat().st_size
    broker.restart()
    assert "not part of the log" not in broker._read_from(before), broker.tail()
    d = Deadline(10, "watermarks after restart")
    c = ck.Consumer(ck_conf(broker.bootstrap, **{"group.id": unique("lo")}))
    try:
        for part, ts in lay.items():
            while True:
                try:
                    lo_hi = c.get_watermark_offsets(ck.TopicPartition(topic, part), timeout=5)
                    break
                except ck.KafkaException:
                    d.check()
            assert lo_hi == (want_lo[part], len(ts)), part
    finally:
        c.close()


def test_max_timestamp_earliest_and_latest_confluent(broker, ts_topic):
    """ListOffsets v7+ through confluent-kafka's AdminClient.list_offsets: max_timestamp
    (KIP-734) is the record with the largest timestamp, inside a batch, compressed or not, and
    out of timestamp order; earliest and latest as before."""
    topic, _, lay = ts_topic
    a = ck.admin.AdminClient({"bootstrap.servers": broker.bootstrap})
    for spec, want in (
        (ck.admin.OffsetSpec.max_timestamp(),
         {p: (ts.index(max(ts)), max(ts)) for p, ts in lay.items()}),
        (ck.admin.OffsetSpec.earliest(), {p: (0, -1) for p in lay}),
        (ck.admin.OffsetSpec.latest(), {p: (len(ts), -1) for p, ts in lay.items()}),
    ):
        req = {ck.TopicPartition(topic, p): spec for p in lay}
        got = {tp.partition: (r.offset, r.timestamp)
               for tp, f in a.list_offsets(req, request_timeout=10).items()
               for r in [f.result(10)]}
        assert got == want, (spec, got, want)
    # An empty partition has no largest timestamp.
    empty = unique("lo-empty")
    a.create_topics([ck.admin.NewTopic(empty, 1, 1)])[empty].result(15)
    (f,) = a.list_offsets({ck.TopicPartition(empty, 0): ck.admin.OffsetSpec.max_timestamp()},
                          request_timeout=10).values()
    assert f.result(10).offset == -1
