"""KIP-848: consumer groups of the consumer protocol (`group.protocol=consumer`), where the
broker assigns the partitions (ConsumerGroupHeartbeat), with confluent-kafka (librdkafka).

Members are polled in turn from the test thread and commit synchronously after each message;
a message counts as consumed only once its commit succeeded (on a failed commit the member
seeks back, so a correct broker delivers it again). With revoke-before-assign, at no point do
two members hold the same partition, and every produced record is consumed exactly once.

Heartbeats and requests no client sends (stale epochs, unknown members, bad subscriptions)
are written by hand (wire.py) and must get Kafka error codes on a connection that stays up.
"""

import uuid

import confluent_kafka as ck
import confluent_kafka.admin  # noqa: F401  (ck.admin)
import pytest
from confluent_kafka import ConsumerGroupType

import wire
from conftest import BROKER_CONFIG, Broker
from kutil import Deadline, ck_conf, unique

PARTITIONS = 4
ALL = set(range(PARTITIONS))

# Heartbeats every 200 ms instead of Kafka's 5 s, so rebalances take a fraction of a second.
CONFIG = BROKER_CONFIG + "group_consumer_heartbeat_interval_ms = 200\n"

INVALID_REQUEST = 42
GROUP_ID_NOT_FOUND = 69
UNKNOWN_MEMBER_ID = 25
FENCED_MEMBER_EPOCH = 110
UNSUPPORTED_ASSIGNOR = 112
STALE_MEMBER_EPOCH = 113
UNSUPPORTED_VERSION = 35
INVALID_REGULAR_EXPRESSION = 128


@pytest.fixture
def broker(request, tmp_path):
    b = Broker(tmp_path)
    b.config_path.write_text(CONFIG)
    request.node._spate_broker = b
    b.start()
    try:
        yield b
    finally:
        b.teardown()


def create_topic(bootstrap, topic, partitions=PARTITIONS):
    a = ck.admin.AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([ck.admin.NewTopic(topic, num_partitions=partitions,
                                       replication_factor=1)])[topic].result(15)


class Producer:
    """Records the (partition, offset) of every record it produced."""

    def __init__(self, bootstrap, topic):
        self.topic = topic
        self.p = ck.Producer(ck_conf(bootstrap, **{"acks": "all", "linger.ms": 5}))
        self.produced = set()
        self.n = 0

    def produce(self, count):
        errors = []

        def cb(err, msg):
            if err is not None:
                errors.append(err)
            else:
                self.produced.add((msg.partition(), msg.offset()))

        for _ in range(count):
            v = f"m-{self.n:06d}".encode()
            self.p.produce(self.topic, value=v, partition=self.n % PARTITIONS, on_delivery=cb)
            self.n += 1
            self.p.poll(0)
        assert self.p.flush(30) == 0
        assert not errors, errors[:3]


class Member:
    """A consumer protocol member that commits after each message."""

    def __init__(self, name, bootstrap, group, topic):
        self.name = name
        self.topic = topic
        self.consumed = []  # (partition, offset) whose commit succeeded
        self.commit_failures = 0
        self.c = ck.Consumer(ck_conf(bootstrap, **{
            "group.id": group, "group.protocol": "consumer", "client.id": name,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100}))
        self.c.subscribe([topic])

    def assigned(self):
        return {tp.partition for tp in self.c.assignment()}

    def step(self):
        m = self.c.poll(0.05)
        if m is None:
            return
        if m.error():
            raise AssertionError(f"{self.name}: consume error {m.error()}")
        try:
            self.c.commit(message=m, asynchronous=False)
        except ck.KafkaException as e:
            self.commit_failures += 1
            try:
                self.c.seek(ck.TopicPartition(self.topic, m.partition(), m.offset()))
            except ck.KafkaException:
                pass  # no longer ours: the new owner starts at the committed offset
            print(f"{self.name}: commit of {m.partition()}@{m.offset()} failed: {e}")
            return
        self.consumed.append((m.partition(), m.offset()))

    def close(self):
        self.c.close()


def assert_disjoint(members):
    for i, a in enumerate(members):
        for b in members[i + 1:]:
            both = a.assigned() & b.assigned()
            assert not both, f"{a.name} and {b.name} both hold partitions {sorted(both)}"


def poll_until(members, done, seconds, what):
    d = Deadline(seconds, what)
    while not done():
        for m in members:
            m.step()
        assert_disjoint(members)
        d.check(" ".join(f"{m.name}={sorted(m.assigned())}" for m in members))


def consumed_once(members, produced):
    got = [r for m in members for r in m.consumed]
    dups = {r for r in got if got.count(r) > 1}
    assert not dups, f"consumed twice: {sorted(dups)[:10]}"
    assert set(got) == produced, (
        f"missing {sorted(produced - set(got))[:10]}, extra {sorted(set(got) - produced)[:10]}")


def test_members_split_the_partitions_and_hand_them_over(broker):
    topic, group = unique("kip848"), unique("g")
    create_topic(broker.bootstrap, topic)
    prod = Producer(broker.bootstrap, topic)
    prod.produce(80)

    # One member: every partition; it consumes and commits.
    a = Member("a", broker.bootstrap, group, topic)
    members = [a]
    try:
        poll_until(members, lambda: a.assigned() == ALL, 30, "a gets all four partitions")
        poll_until(members, lambda: len(a.consumed) >= 40, 30, "a consumes half")

        # A second member: two each, never a partition held by both, nothing consumed twice.
        b = Member("b", broker.bootstrap, group, topic)
        members.append(b)
        # While a is not polled it cannot give anything up (librdkafka revokes in poll, and
        # its heartbeats report what it still owns): b gets nothing, however many heartbeats
        # it sends (ten intervals here), since every partition is still a's.
        quiet = Deadline(2.0, "b heartbeats while a holds everything")
        while not quiet.expired():
            b.step()
            assert_disjoint(members)
        assert b.assigned() == set() and a.assigned() == ALL
        poll_until(members, lambda: len(a.assigned()) == 2 and len(b.assigned()) == 2
                   and a.assigned() | b.assigned() == ALL, 30, "a and b get two each")
        prod.produce(80)
        poll_until(members, lambda: {r for m in members for r in m.consumed} == prod.produced,
                   30, "a and b consume everything")
        consumed_once(members, prod.produced)
        assert a.consumed and b.consumed

        # The group as ConsumerGroupDescribe and ListGroups show it.
        admin = ck.admin.AdminClient({"bootstrap.servers": broker.bootstrap})
        desc = admin.describe_consumer_groups([group])[group].result(10)
        assert desc.type == ConsumerGroupType.CONSUMER
        assert sorted(len(m.assignment.topic_partitions) for m in desc.members) == [2, 2]
        listed = admin.list_consumer_groups(types={ConsumerGroupType.CONSUMER}).result(10)
        assert group in {g.group_id for g in listed.valid}
        classic = admin.list_consumer_groups(types={ConsumerGroupType.CLASSIC}).result(10)
        assert group not in {g.group_id for g in classic.valid}

        # The first member leaves: the second gets everything and consumes the rest.
        a.close()
        members.remove(a)
        poll_until(members, lambda: b.assigned() == ALL, 30, "b gets all four partitions")
        prod.produce(40)
        everyone = [a, b]
        poll_until(members, lambda: {r for m in everyone for r in m.consumed} == prod.produced,
                   30, "b consumes the rest")
        consumed_once(everyone, prod.produced)
        print(f"commit failures: a={a.commit_failures} b={b.commit_failures}")
    finally:
        for m in members:
            m.close()


def committed(bootstrap, group, topic, partitions=PARTITIONS):
    """The group's committed offsets (OffsetFetch), -1001 where there are none."""
    c = ck.Consumer(ck_conf(bootstrap, **{"group.id": group}))
    try:
        tps = [ck.TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
    finally:
        c.close()


def test_committed_offsets_survive_a_restart(broker):
    topic, group = unique("kip848"), unique("g")
    create_topic(broker.bootstrap, topic)
    prod = Producer(broker.bootstrap, topic)
    prod.produce(40)
    a = Member("a", broker.bootstrap, group, topic)
    try:
        poll_until([a], lambda: len(a.consumed) >= 20, 30, "a consumes half")
    finally:
        a.close()
    before = committed(broker.bootstrap, group, topic)
    want = {p: 1 + max((o for q, o in a.consumed if q == p), default=-1001) for p in ALL}
    assert before == {p: (o if o > 0 else -1001) for p, o in want.items()}, (before, want)

    broker.restart()
    assert committed(broker.bootstrap, group, topic) == before
    # A new member of the group resumes where the first stopped.
    b = Member("b", broker.bootstrap, group, topic)
    try:
        poll_until([b], lambda: set(a.consumed) | set(b.consumed) == prod.produced, 30,
                   "b consumes the rest")
        consumed_once([a, b], prod.produced)
    finally:
        b.close()


def test_a_member_rejoins_after_a_restart(broker):
    # Consumer group state is in memory: after a restart the broker answers the member's next
    # heartbeat with UNKNOWN_MEMBER_ID, it rejoins, and it resumes from its commits.
    topic, group = unique("kip848"), unique("g")
    create_topic(broker.bootstrap, topic)
    prod = Producer(broker.bootstrap, topic)
    prod.produce(40)
    a = Member("a", broker.bootstrap, group, topic)
    try:
        poll_until([a], lambda: len(a.consumed) >= 20, 30, "a consumes half")
        broker.restart()
        prod.produce(40)
        poll_until([a], lambda: set(a.consumed) == prod.produced, 60,
                   "a consumes the rest after the restart")
        consumed_once([a], prod.produced)
        assert a.assigned() == ALL
    finally:
        a.close()


def test_new_topics_and_partitions_reach_the_members(broker):
    prefix, group = unique("kip848re"), unique("g")
    admin = ck.admin.AdminClient({"bootstrap.servers": broker.bootstrap})
    create_topic(broker.bootstrap, f"{prefix}-a", partitions=2)
    c = ck.Consumer(ck_conf(broker.bootstrap, **{
        "group.id": group, "group.protocol": "consumer", "auto.offset.reset": "earliest"}))
    # A regex subscription: the broker resolves it (ConsumerGroupHeartbeat v1).
    c.subscribe([f"^{prefix}-.*"])

    def assigned():
        return sorted((tp.topic, tp.partition) for tp in c.assignment())

    def wait_for(want, what):
        d = Deadline(30, what)
        while assigned() != want:
            c.poll(0.1)
            d.check(str(assigned()))

    try:
        wait_for([(f"{prefix}-a", 0), (f"{prefix}-a", 1)], "the first topic's partitions")
        create_topic(broker.bootstrap, f"{prefix}-b", partitions=1)
        wait_for([(f"{prefix}-a", 0), (f"{prefix}-a", 1), (f"{prefix}-b", 0)],
                 "the new topic's partition")
        admin.create_partitions([ck.admin.NewPartitions(f"{prefix}-a", 3)])[
            f"{prefix}-a"].result(15)
        wait_for([(f"{prefix}-a", 0), (f"{prefix}-a", 1), (f"{prefix}-a", 2),
                  (f"{prefix}-b", 0)], "the added partition")
    finally:
        c.close()


def error_of(consumer, others, seconds, what):
    """Polls `consumer` (and keeps `others` alive) until it reports an error."""
    d = Deadline(seconds, what)
    while True:
        m = consumer.poll(0.2)
        for o in others:
            o.step()
        if m is not None and m.error():
            return m.error()
        d.check()


def test_one_protocol_per_group(broker):
    topic, group = unique("kip848"), unique("g")
    create_topic(broker.bootstrap, topic)
    a = Member("a", broker.bootstrap, group, topic)
    try:
        poll_until([a], lambda: a.assigned() == ALL, 30, "a gets all four partitions")
        # A classic consumer in the consumer group: INCONSISTENT_GROUP_PROTOCOL.
        k = ck.Consumer(ck_conf(broker.bootstrap, **{"group.id": group}))
        k.subscribe([topic])
        try:
            e = error_of(k, [a], 20, "the classic consumer's JoinGroup error")
            assert e.code() == ck.KafkaError.INCONSISTENT_GROUP_PROTOCOL, e
            assert not k.assignment()
        finally:
            k.close()
        assert a.assigned() == ALL

        # A consumer protocol member in a classic group: GROUP_ID_NOT_FOUND (fatal, as Kafka's
        # "not a consumer group").
        classic_group = unique("classic")
        k = ck.Consumer(ck_conf(broker.bootstrap, **{"group.id": classic_group}))
        k.subscribe([topic])
        d = Deadline(30, "the classic consumer's assignment")
        while not k.assignment():
            k.poll(0.1)
            d.check()
        c = Member("c", broker.bootstrap, classic_group, topic)
        try:
            e = error_of(c.c, [], 20, "the consumer protocol member's heartbeat error")
            assert e.code() == ck.KafkaError._FATAL, e
            assert "The group id does not exist" in e.str(), e
            assert {tp.partition for tp in k.assignment()} == ALL
        finally:
            c.close()
            k.close()
    finally:
        a.close()


def test_bad_heartbeats_get_kafka_errors(broker):
    topic, group = unique("kip848"), unique("g")
    create_topic(broker.bootstrap, topic, partitions=2)
    conn = wire.Connection(broker.bootstrap)
    try:
        def hb(**kw):
            kw.setdefault("group", group)
            return conn.heartbeat(**kw)

        # Joining without a subscription.
        r = hb(member_id="m0", epoch=0, topics=[], owned=[], rebalance_timeout_ms=30000)
        assert r["error"] == INVALID_REQUEST, r
        # Joining a topic that does not exist: accepted, nothing assigned.
        r = hb(member_id="m0", epoch=0, topics=["no-such-topic"], owned=[],
               rebalance_timeout_ms=30000)
        assert (r["error"], r["assignment"]) == (0, {}), r
        # A member that joins gets both partitions.
        r = hb(member_id="m1", epoch=0, topics=[topic], owned=[], rebalance_timeout_ms=30000)
        assert r["error"] == 0, r
        epoch = r["epoch"]
        assert epoch > 0 and r["interval"] == 200
        (tid, parts), = r["assignment"].items()
        assert parts == [0, 1]
        owned = [(tid, parts)]
        # An epoch ahead of the coordinator's, and an unknown member.
        r = hb(member_id="m1", epoch=epoch + 5, owned=owned)
        assert r["error"] == FENCED_MEMBER_EPOCH, r
        r = hb(member_id="ghost", epoch=3, owned=owned)
        assert r["error"] == UNKNOWN_MEMBER_ID, r
        # A bad regex, an assignor that does not exist, an epoch that means nothing.
        r = hb(member_id="m2", epoch=0, regex="orders-(", owned=[], rebalance_timeout_ms=1000)
        assert r["error"] == INVALID_REGULAR_EXPRESSION, r
        r = hb(member_id="m2", epoch=0, topics=[topic], owned=[], rebalance_timeout_ms=1000,
               assignor="sticky")
        assert r["error"] == UNSUPPORTED_ASSIGNOR, r
        r = hb(member_id="m2", epoch=-7, owned=[])
        assert r["error"] == INVALID_REQUEST, r
        # Partitions owned by a topic id nobody knows, at join: refused.
        r = hb(member_id="m2", epoch=0, topics=[topic], owned=[(uuid.uuid4(), [0])],
               rebalance_timeout_ms=1000)
        assert r["error"] == INVALID_REQUEST, r
        # m1 is still a member at its epoch. Its commits: at its epoch (v9) they count; at
        # another epoch, from another member, or with v8, they do not.
        r = hb(member_id="m1", epoch=epoch, owned=owned)
        assert (r["error"], r["epoch"]) == (0, epoch), r
        commit = wire.offset_commit
        assert commit(conn, group, "m1", epoch, topic, {0: 5, 1: 7}) == {0: 0, 1: 0}
        assert commit(conn, group, "m1", epoch + 1, topic, {0: 6}) == {0: STALE_MEMBER_EPOCH}
        assert commit(conn, group, "ghost", epoch, topic, {0: 6}) == {0: UNKNOWN_MEMBER_ID}
        assert commit(conn, group, "m1", epoch, topic, {0: 6}, version=8) == {
            0: UNSUPPORTED_VERSION}
        assert committed(broker.bootstrap, group, topic, partitions=2) == {0: 5, 1: 7}
        r = hb(member_id="m1", epoch=-1)
        assert (r["error"], r["epoch"]) == (0, -1), r

        # A heartbeat for a classic group with a member: not a consumer group.
        classic_group = unique("classic")
        k = ck.Consumer(ck_conf(broker.bootstrap, **{"group.id": classic_group}))
        k.subscribe([topic])
        try:
            d = Deadline(30, "the classic consumer's assignment")
            while not k.assignment():
                k.poll(0.1)
                d.check()
            r = hb(group=classic_group, member_id="m3", epoch=0, topics=[topic], owned=[],
                   rebalance_timeout_ms=1000)
            assert r["error"] == GROUP_ID_NOT_FOUND, r
            r = hb(group=classic_group, member_id="m3", epoch=4, owned=[])
            assert r["error"] == GROUP_ID_NOT_FOUND, r
        finally:
            k.close()

        # Every answer came back on the same connection, which still works.
        assert conn.api_versions() == 0
    finally:
        conn.close()
    assert broker.proc.poll() is None, "the broker is still running"
