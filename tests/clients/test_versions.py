"""Each client speaks the newest Produce and Fetch it knows to Spate (issue 16: new clients
never fall back), and records round-trip through those versions.

What the clients of tests/clients/requirements.txt pick, read from their own debug logs:
- confluent-kafka 2.16.1 (librdkafka 2.16): Produce v10 and Fetch v16 (flexible, topics by id);
- kafka-python 3.0: Produce v9 and Fetch v12 (flexible, topics by name).
Before Spate served Fetch v12+, both asked for Fetch v11.
A transactional producer still never starts: transactions are not built.
"""

import logging
import re

import confluent_kafka as ck
import confluent_kafka.admin  # noqa: F401  (ck.admin)
import kafka as kp
import pytest

from kutil import Deadline, ck_conf, unique


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def versions_sent(lines, api):
    """The versions of `api` requests the client says it sent."""
    return {int(v) for v in re.findall(rf"Sent {api}Request \(v(\d+)", "\n".join(lines))}


def create(bootstrap, topic, partitions):
    a = ck.admin.AdminClient(ck_conf(bootstrap))
    for f in a.create_topics([ck.admin.NewTopic(topic, partitions, 1)]).values():
        f.result(15)


def test_confluent_produces_at_v10_and_fetches_at_v16_by_topic_id(broker):
    topic = unique("v16")
    create(broker.bootstrap, topic, 2)
    log = logging.getLogger(unique("rdkafka"))
    log.setLevel(logging.DEBUG)
    lines = Lines()
    log.addHandler(lines)
    debug = {"debug": "protocol", "logger": log}
    p = ck.Producer(ck_conf(broker.bootstrap, **debug))
    want = [(i % 2, f"value-{i}".encode()) for i in range(20)]
    for part, value in want:
        p.produce(topic, value=value, partition=part)
    assert p.flush(30) == 0
    c = ck.Consumer(ck_conf(broker.bootstrap, **debug, **{
        "group.id": unique("g"), "auto.offset.reset": "earliest",
        "enable.partition.eof": True, "fetch.wait.max.ms": 100}))
    try:
        c.subscribe([topic])
        got, eof = [], set()
        d = Deadline(30, f"reading {topic}")
        while len(eof) < 2 or len(got) < len(want):
            d.check(f"got {len(got)}")
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == ck.KafkaError._PARTITION_EOF, m.error()
                eof.add(m.partition())
                continue
            got.append((m.partition(), m.value()))
    finally:
        c.close()
    assert sorted(got) == sorted(want)
    assert versions_sent(lines.lines, "Produce") == {10}
    # Every fetch at librdkafka's newest, and none refused (a refusal shows as a lower retry).
    assert versions_sent(lines.lines, "Fetch") == {16}


def test_kafka_python_fetches_at_v12(broker, caplog):
    topic = unique("v12")
    create(broker.bootstrap, topic, 1)
    caplog.set_level(logging.DEBUG, logger="kafka")
    p = kp.KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(10):
        p.send(topic, value=b"k%d" % i, partition=0)
    p.flush(timeout=30)
    p.close(timeout=10)
    c = kp.KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=unique("g"),
                         auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        got = []
        d = Deadline(30, f"reading {topic}")
        while len(got) < 10:
            d.check(f"got {len(got)}")
            got.extend(m.value for m in c)
    finally:
        c.close()
    assert got == [b"k%d" % i for i in range(10)]
    text = caplog.text
    assert set(re.findall(r"\bProduceRequest\(version=(\d+)", text)) == {"9"}
    assert set(re.findall(r"\bFetchRequest\(version=(\d+)", text)) == {"12"}


def test_a_transactional_producer_still_never_starts(broker):
    """As before Produce v12: FindCoordinator for a transactional id answers
    COORDINATOR_NOT_AVAILABLE (and InitProducerId with one TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
    so librdkafka's init_transactions times out and nothing is produced."""
    log = logging.getLogger(unique("rdkafka"))
    log.setLevel(logging.DEBUG)
    lines = Lines()
    log.addHandler(lines)
    p = ck.Producer(ck_conf(broker.bootstrap, **{
        "transactional.id": unique("tx"), "debug": "protocol", "logger": log}))
    with pytest.raises(ck.KafkaException) as e:
        p.init_transactions(5)
    assert e.value.args[0].code() == ck.KafkaError._TIMED_OUT
    p.poll(1)  # delivers the queued log lines to `log`
    assert versions_sent(lines.lines, "FindCoordinator")
    assert not versions_sent(lines.lines, "Produce")
