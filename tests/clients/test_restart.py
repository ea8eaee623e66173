"""Durability across broker restarts and crashes.

5. committed offsets and data survive a restart (and a crash);
6. the idempotent producer keeps exactly-once, in-order delivery across a restart;
9. acknowledged acks=all records survive a SIGKILL mid-stream, each exactly once, in order.
"""

import threading
import time

import confluent_kafka as ck
import confluent_kafka.admin  # noqa: F401  (ck.admin)
import kafka as kp
import pytest
from kafka.structs import OffsetAndMetadata

from kutil import CLIENTS, Deadline, KcatProcess, by_partition, ck_conf, kcat, read_all, unique


def create_topic(bootstrap, topic, partitions):
    a = ck.admin.AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([ck.admin.NewTopic(topic, num_partitions=partitions,
                                       replication_factor=1)])[topic].result(15)


def produce_simple(bootstrap, topic, partitions, per_partition):
    """Values f"{p}:{i:05d}" with keys, acks=all; returns {partition: [values]}."""
    p = ck.Producer(ck_conf(bootstrap, **{"acks": "all", "linger.ms": 5}))
    errs = []
    out = {}
    for i in range(per_partition):
        for part in range(partitions):
            v = f"{part}:{i:05d}".encode()
            out.setdefault(part, []).append(v)
            p.produce(topic, key=b"k" + v, value=v, partition=part,
                      on_delivery=lambda e, m: e and errs.append(e))
        p.poll(0)
    assert p.flush(30) == 0
    assert not errs, errs[:3]
    return out


# ---------------------------------------------------------------------------------------------
# 5. committed offsets survive a restart


def ck_group_consumer(bootstrap, group):
    return ck.Consumer(ck_conf(bootstrap, **{
        "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 200, "fetch.wait.max.ms": 100}))


def kp_group_consumer(bootstrap, group, topic):
    return kp.KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                            enable_auto_commit=False, auto_offset_reset="earliest",
                            session_timeout_ms=6000, heartbeat_interval_ms=200,
                            fetch_max_wait_ms=100)


def consume_and_commit(client, bootstrap, group, topic, count, seconds=30):
    """Consume `count` records through the group, committing after each; returns
    ([(partition, offset, value)], {partition: committed next offset})."""
    got, committed = [], {}
    d = Deadline(seconds, f"{client} consuming {count} records of {topic}")
    if client == "confluent":
        c = ck_group_consumer(bootstrap, group)
        c.subscribe([topic])
        try:
            while len(got) < count:
                d.check(f"got {len(got)}")
                m = c.poll(0.1)
                if m is None:
                    continue
                assert not m.error(), m.error()
                c.commit(message=m, asynchronous=False)
                got.append((m.partition(), m.offset(), m.value()))
                committed[m.partition()] = m.offset() + 1
        finally:
            c.close()
    else:
        c = kp_group_consumer(bootstrap, group, topic)
        try:
            while len(got) < count:
                d.check(f"got {len(got)}")
                for tp, rs in c.poll(timeout_ms=100, max_records=count - len(got)).items():
                    for r in rs:
                        got.append((r.partition, r.offset, r.value))
                    c.commit({tp: OffsetAndMetadata(rs[-1].offset + 1, "", -1)})
                    committed[tp.partition] = rs[-1].offset + 1
        finally:
            c.close()
    return got, committed


def fetch_committed(client, bootstrap, group, topic, partitions):
    if client == "confluent":
        c = ck_group_consumer(bootstrap, group)
        try:
            tps = c.committed([ck.TopicPartition(topic, p) for p in range(partitions)],
                              timeout=10)
            return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
        finally:
            c.close()
    a = kp.KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offs = a.list_group_offsets({group: None})[group]
        return {tp.partition: om.offset for tp, om in offs.items()
                if tp.topic == topic and om.offset >= 0}
    finally:
        a.close()


@pytest.mark.parametrize("client,how", [("confluent", "restart"), ("kafka-python", "restart"),
                                        ("confluent", "kill")])
def test_committed_offsets_and_data_survive(broker, client, how):
    topic = unique(f"off-{client}-{how}")
    group = unique("g-off")
    create_topic(broker.bootstrap, topic, 2)
    produced = produce_simple(broker.bootstrap, topic, 2, 50)
    got, committed = consume_and_commit(client, broker.bootstrap, group, topic, 60)
    # what was consumed is the head of each partition, in order
    for p in (0, 1):
        mine = [(o, v) for (pp, o, v) in got if pp == p]
        assert [o for o, _ in mine] == list(range(len(mine)))
        assert [v for _, v in mine] == produced[p][:len(mine)]
    assert fetch_committed(client, broker.bootstrap, group, topic, 2) == committed

    if how == "restart":
        broker.restart()
    else:
        time.sleep(0.2)
        broker.kill()
        broker.start()

    assert fetch_committed(client, broker.bootstrap, group, topic, 2) == committed
    # the group resumes at the committed position and reads the rest, intact
    rest, _ = consume_and_commit(client, broker.bootstrap, group, topic, 100 - 60)
    for p in (0, 1):
        offs = [o for (pp, o, _) in rest if pp == p]
        start = committed.get(p, 0)
        assert offs == list(range(start, 50)), (p, start, offs[:5])
        assert [v for (pp, _, v) in rest if pp == p] == produced[p][start:]
    # every record is still there, for every reader
    for reader in CLIENTS:
        recs = read_all(reader, broker.bootstrap, topic)
        assert {p: [r.value for r in rs] for p, rs in by_partition(recs).items()} == produced
        for r in recs:
            assert r.key == b"k" + r.value


def kcat_group_consume(bootstrap, group, topic, extra, timeout=30):
    """`kcat -G group` (librdkafka's high-level consumer, auto-commit on) until it exits on its
    own (-c N: after N messages; -e: at the end of every assigned partition), closing the
    consumer, which commits the offsets of what it printed. Returns [(partition, offset,
    value)] in the order printed."""
    p = kcat(["-b", bootstrap, "-G", group, "-f", "%p %o %s\\n", "-q",
              "-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=6000",
              "-X", "heartbeat.interval.ms=200", "-X", "fetch.wait.max.ms=100",
              *extra, topic], timeout=timeout)
    got = []
    for line in p.stdout.decode().splitlines():
        part, off, value = line.split(" ", 2)
        got.append((int(part), int(off), value.encode()))
    return got


@pytest.mark.parametrize("how", ["restart", "kill"])
def test_committed_offsets_and_data_survive_kcat(broker, how):
    topic = unique(f"off-kcat-{how}")
    group = unique("g-off-kcat")
    create_topic(broker.bootstrap, topic, 2)
    produced = produce_simple(broker.bootstrap, topic, 2, 50)
    # the group consumes 60 of the 100 records and commits them as kcat exits
    got = kcat_group_consume(broker.bootstrap, group, topic, ["-c", "60"])
    assert len(got) == 60, got[-5:]
    committed = {}
    for p in (0, 1):
        mine = [(o, v) for (pp, o, v) in got if pp == p]
        assert [o for o, _ in mine] == list(range(len(mine)))
        assert [v for _, v in mine] == produced[p][:len(mine)]
        if mine:
            committed[p] = len(mine)
    assert fetch_committed("confluent", broker.bootstrap, group, topic, 2) == committed

    if how == "restart":
        broker.restart()
    else:
        time.sleep(0.2)
        broker.kill()
        broker.start()

    assert fetch_committed("confluent", broker.bootstrap, group, topic, 2) == committed
    # the group resumes exactly at the committed position: no record again, none skipped,
    # and what it reads after the restart is intact
    rest = kcat_group_consume(broker.bootstrap, group, topic, ["-e"])
    for p in (0, 1):
        start = committed.get(p, 0)
        offs = [o for (pp, o, _) in rest if pp == p]
        assert offs == list(range(start, 50)), (p, start, offs[:5])
        assert [v for (pp, _, v) in rest if pp == p] == produced[p][start:]
    assert len(got) + len(rest) == 100
    assert fetch_committed("confluent", broker.bootstrap, group, topic, 2) == {0: 50, 1: 50}
    # every record is still there, for every reader
    for reader in CLIENTS:
        recs = read_all(reader, broker.bootstrap, topic)
        assert {p: [r.value for r in rs] for p, rs in by_partition(recs).items()} == produced
        for r in recs:
            assert r.key == b"k" + r.value


# ---------------------------------------------------------------------------------------------
# 6 and 9: a producer streaming through a restart or a crash


class StreamingProducer:
    """Produces f"{partition}:{seq:06d}" round-robin over the partitions from a thread."""

    def __init__(self, bootstrap, topic, partitions, conf):
        self.topic = topic
        self.partitions = partitions
        self.p = ck.Producer(ck_conf(bootstrap, **{
            "acks": "all", "linger.ms": 5, "message.timeout.ms": 60000,
            "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
            "retry.backoff.ms": 100, **conf}))
        self.sent = []  # values, in produce order
        self.acked = []  # values whose delivery report had no error
        self.failed = []  # (value, error)
        self.fatal = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error = None

    def _cb(self, err, msg):
        if err is None:
            self.acked.append(msg.value())
        else:
            self.failed.append((msg.value(), err))
            if err.fatal():
                self.fatal.append(err)

    def _run(self):
        try:
            i = 0
            while not self.stop_flag.is_set():
                part = i % self.partitions
                v = f"{part}:{i // self.partitions:06d}".encode()
                while True:
                    try:
                        self.p.produce(self.topic, value=v, partition=part, on_delivery=self._cb)
                        break
                    except BufferError:
                        self.p.poll(0.05)
                self.sent.append(v)
                i += 1
                self.p.poll(0)
                time.sleep(0.0005)
        except BaseException as e:  # reported by stop()
            self.error = e

    def start(self):
        self.thread.start()

    def wait_acked(self, n, seconds):
        d = Deadline(seconds, f"{n} acknowledged records")
        while len(self.acked) < n:
            d.check(f"acked {len(self.acked)} sent {len(self.sent)} failed {len(self.failed)} "
                    f"{self.failed[:2]}")
            assert self.error is None, self.error
            time.sleep(0.02)

    def stop(self, flush_s=60):
        self.stop_flag.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        assert self.error is None, self.error
        left = self.p.flush(flush_s)
        assert left == 0, f"{left} records still queued after {flush_s}s"
        assert len(self.acked) + len(self.failed) == len(self.sent)


class KpStreamingProducer(StreamingProducer):
    """The same stream from a kafka-python producer (idempotent by default)."""

    def __init__(self, bootstrap, topic, partitions, **cfg):
        self.topic = topic
        self.partitions = partitions
        self.p = kp.KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                  delivery_timeout_ms=60000, reconnect_backoff_ms=50,
                                  reconnect_backoff_max_ms=500, retry_backoff_ms=100, **cfg)
        self.sent, self.acked, self.failed, self.fatal = [], [], [], []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error = None

    def _run(self):
        try:
            i = 0
            while not self.stop_flag.is_set():
                part = i % self.partitions
                v = f"{part}:{i // self.partitions:06d}".encode()
                f = self.p.send(self.topic, value=v, partition=part)
                self.sent.append(v)
                f.add_callback(lambda md, v=v: self.acked.append(v))
                f.add_errback(lambda e, v=v: self.failed.append((v, e)))
                i += 1
                time.sleep(0.0005)
        except BaseException as e:
            self.error = e

    def stop(self, flush_s=60):
        self.stop_flag.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        assert self.error is None, self.error
        self.p.flush(timeout=flush_s)
        self.p.close(timeout=10)
        assert len(self.acked) + len(self.failed) == len(self.sent), \
            (len(self.acked), len(self.failed), len(self.sent))


def seqs_by_partition(values):
    out = {}
    for v in values:
        p, s = v.decode().split(":")
        out.setdefault(int(p), []).append(int(s))
    return out


def check_stream(recs, prod, exactly_all):
    """Acked records exactly once and in order; others at most once; nothing foreign."""
    got = seqs_by_partition([r.value for r in recs])
    acked = seqs_by_partition(prod.acked)
    sent = seqs_by_partition(prod.sent)
    for p in range(prod.partitions):
        g = got.get(p, [])
        dups = sorted({s for s in g if g.count(s) > 1})
        assert not dups, f"partition {p}: duplicated seqs {dups[:20]} (of {len(dups)})"
        assert g == sorted(g), f"partition {p}: out of order: " + str(
            [(a, b) for a, b in zip(g, g[1:]) if b < a][:10])
        missing = sorted(set(acked.get(p, [])) - set(g))
        assert not missing, f"partition {p}: acknowledged but missing {missing[:20]} " \
                            f"(of {len(missing)})"
        foreign = sorted(set(g) - set(sent.get(p, [])))
        assert not foreign, foreign[:10]
        if exactly_all:
            assert g == list(range(len(sent.get(p, [])))), \
                f"partition {p}: want seqs 0..{len(sent.get(p, [])) - 1}, got {len(g)}"


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_idempotent_producer_across_restart(broker, client):
    topic = unique(f"idem-restart-{client}")
    create_topic(broker.bootstrap, topic, 3)
    if client == "confluent":
        prod = StreamingProducer(broker.bootstrap, topic, 3, {"enable.idempotence": True})
    else:
        prod = KpStreamingProducer(broker.bootstrap, topic, 3, enable_idempotence=True)
    prod.start()
    try:
        prod.wait_acked(1500, 30)
        broker.restart()
        n = len(prod.acked)
        prod.wait_acked(n + 1500, 60)
    finally:
        prod.stop()
    assert not prod.failed, f"{len(prod.failed)} delivery failures: {prod.failed[:3]}"
    assert sorted(prod.acked) == sorted(prod.sent)
    for reader in ("confluent", "kafka-python"):
        recs = read_all(reader, broker.bootstrap, topic)
        check_stream(recs, prod, exactly_all=True)
        assert len(recs) == len(prod.sent)


@pytest.mark.parametrize("client,idempotent", [("confluent", True), ("confluent", False),
                                                ("kafka-python", True)],
                         ids=["confluent-idempotent", "confluent-retries0",
                              "kafka-python-idempotent"])
def test_acked_records_survive_crash(broker, client, idempotent):
    topic = unique("crash")
    create_topic(broker.bootstrap, topic, 3)
    if client == "kafka-python":
        prod = KpStreamingProducer(broker.bootstrap, topic, 3, enable_idempotence=True)
    elif idempotent:
        prod = StreamingProducer(broker.bootstrap, topic, 3, {"enable.idempotence": True})
    else:
        prod = StreamingProducer(broker.bootstrap, topic, 3,
                                 {"enable.idempotence": False, "retries": 0})
    prod.start()
    try:
        prod.wait_acked(1500, 30)
        acked_at_kill = len(prod.acked)
        broker.kill()
        time.sleep(0.3)
        broker.start()
        prod.wait_acked(acked_at_kill + 1500, 60)
    finally:
        prod.stop()
    print(f"sent {len(prod.sent)} acked {len(prod.acked)} failed {len(prod.failed)} "
          f"(acked at kill {acked_at_kill})")
    if idempotent:
        # the idempotent producer retries through the crash: everything is delivered
        assert not prod.failed, f"{len(prod.failed)} delivery failures: {prod.failed[:3]}"
    assert not prod.fatal, prod.fatal
    for reader in ("confluent", "kafka-python"):
        recs = read_all(reader, broker.bootstrap, topic)
        check_stream(recs, prod, exactly_all=idempotent)


# ---------------------------------------------------------------------------------------------
# 6 with kcat: `kcat -P -X enable.idempotence=true` fed numbered lines from the test, slowly,
# while the broker restarts. -E: kcat exits on "all brokers down" (the broker is away during
# the restart) unless told not to exit on non-fatal errors. librdkafka keeps the records queued
# and retries them (message.timeout.ms is 60 s); kcat exits 1 if any delivery failed.

KCAT_IDEM_KEYS = 3


def kcat_idem_line(i):
    return f"k{i % KCAT_IDEM_KEYS}:{i:06d}\n".encode()


def end_offsets(bootstrap, topic, partitions):
    c = ck.Consumer(ck_conf(bootstrap, **{"group.id": unique("wm"), "enable.auto.commit": False}))
    try:
        return sum(c.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10)[1]
                   for p in range(partitions))
    finally:
        c.close()


def test_idempotent_producer_across_restart_kcat(broker):
    topic = unique("idem-restart-kcat")
    create_topic(broker.bootstrap, topic, 3)
    k = KcatProcess(["-b", broker.bootstrap, "-P", "-t", topic, "-K", ":", "-E",
                     "-X", "enable.idempotence=true", "-X", "linger.ms=5",
                     "-X", "message.timeout.ms=60000", "-X", "reconnect.backoff.ms=50",
                     "-X", "reconnect.backoff.max.ms=500", "-X", "retry.backoff.ms=100"],
                    name="kcat-producer", stdin=True)
    stop = threading.Event()
    fed = [0]
    feed_error = []

    def feed():  # about 2000 lines a second, through the restart
        try:
            i = 0
            while not stop.is_set():
                k.write(b"".join(kcat_idem_line(j) for j in range(i, i + 10)))
                i += 10
                fed[0] = i
                time.sleep(0.005)
        except BaseException as e:
            feed_error.append(e)

    t = threading.Thread(target=feed, daemon=True)
    passed = False
    try:
        t.start()

        def wait_delivered(n, seconds):
            d = Deadline(seconds, f"{n} records in the topic")
            while True:
                got = end_offsets(broker.bootstrap, topic, 3)
                if got >= n:
                    return got
                k.check()
                assert not feed_error, feed_error
                d.check(f"{got} in the topic, {fed[0]} fed")
                time.sleep(0.05)

        wait_delivered(1500, 30)
        fed_before = fed[0]
        t0 = time.monotonic()
        broker.restart()
        restart_s = time.monotonic() - t0
        fed_after = fed[0]
        # lines went on arriving while the broker was away: kcat queued them
        assert fed_after > fed_before, (fed_before, fed_after)
        wait_delivered(fed_after + 1500, 60)
        stop.set()
        t.join(5)
        assert not t.is_alive()
        assert not feed_error, feed_error
        sent = fed[0]
        k.close_stdin()  # EOF: kcat waits for the delivery of everything queued, then exits
        code = k.wait(60)
        err = k.stderr_text(200)
        assert code == 0, f"kcat producer exited {code}:\n{err}"
        assert "Delivery failed" not in err, err
        assert "FATAL" not in err, err
        print(f"fed {sent} lines: {fed_before} before the restart, {fed_after - fed_before} "
              f"during it ({restart_s:.3f} s); kcat stderr:\n{err}")
        passed = True
    finally:
        stop.set()
        t.join(5)
        if not passed or k.running():
            k.kill()

    want = set(range(sent))
    for reader in ("kcat", "confluent"):
        recs = read_all(reader, broker.bootstrap, topic)
        seqs = [int(r.value) for r in recs]
        dups = sorted({s for s in seqs if seqs.count(s) > 1})
        assert not dups, f"{reader}: duplicated {dups[:20]} (of {len(dups)})"
        missing = sorted(want - set(seqs))
        assert not missing, f"{reader}: missing {missing[:20]} (of {len(missing)})"
        assert len(seqs) == sent
        for p, rs in by_partition(recs).items():
            # one key goes to one partition; each partition holds its keys' lines in the
            # order they were fed
            for r in rs:
                assert r.key == f"k{int(r.value) % KCAT_IDEM_KEYS}".encode(), r
            s = [int(r.value) for r in rs]
            assert s == sorted(s), f"{reader}: partition {p} out of order: " + str(
                [(x, y) for x, y in zip(s, s[1:]) if y < x][:10])
