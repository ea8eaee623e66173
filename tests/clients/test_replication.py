"""Replicated partitions on a cluster of three real `spate serve` processes on 127.0.0.1,
through unchanged clients (confluent-kafka/librdkafka and kafka-python):

- an RF 3 topic of 6 partitions converges (3 brokers, 3 in-sync replicas everywhere) and is
  produced to and consumed from through any one bootstrap broker;
- SIGKILL of a partition's leader under an idempotent acks=all producer: a new leader within
  broker.session.timeout.ms + 5 s, every acknowledged record exactly once and in order, and
  the killed broker back in the ISR once it returns;
- min.insync.replicas=2 with two of three brokers down: acks=all is refused with
  NOT_ENOUGH_REPLICAS and nothing is acknowledged; it succeeds again once a broker returns;
- a leader that wrote records no follower copied, then died, truncates them when it returns:
  no consumer ever reads them, even from it as leader again;
- DeleteRecords on a leader while a follower is down: the live follower follows the new log
  start, the returning one (its log ending below that start) starts its log again there, and
  either, leading after the leader dies, serves only what was not deleted; a Fetch to the new
  leader in the old leader epoch is FENCED_LEADER_EPOCH naming the new one, one past it
  UNKNOWN_LEADER_EPOCH;
- a reassignment that cannot finish (its new replica's broker is down) is listed, then
  cancelled: the partition is back on its replicas, and nothing is listed;
- a broker a reassignment moved a partition off removes its copy's files: at once when it is
  live, at its next start when the move finished while it was down;
- Produce v10 and Fetch v16 sent to a follower are refused NOT_LEADER_OR_FOLLOWER naming the
  current leader, its epoch and its endpoint (KIP-951); the leader's own answer names none.

The three brokers start once for the module and are stopped by PID however the tests end;
each test leaves all three running.
"""

import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cluster_util import SESSION_TIMEOUT_S, Node, cluster_nodes, wait_for
from conftest import free_port


@pytest.fixture(scope="module")
def cluster(module_dir):
    root = module_dir
    nodes = cluster_nodes(root)
    try:
        for n in nodes:
            n.start()
        admin = AdminClient({"bootstrap.servers": nodes[0].bootstrap})
        wait_for("three live brokers", lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30)
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def read(bootstrap, topic, partitions, expect, timeout=30):
    """Every record of `partitions` from offset 0, as librdkafka reads it: waits for
    `expect` records, then a second more for any beyond them. [(partition, value)]"""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "replication-reader",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, 0) for p in partitions])
    out = []
    deadline = time.monotonic() + timeout
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                if len(out) >= expect:
                    quiet_until = quiet_until or time.monotonic() + 1.0
                    if time.monotonic() > quiet_until:
                        break
                continue
            if m.error():
                continue
            out.append((m.partition(), m.value()))
    finally:
        c.close()
    return out


def everyone(nodes):
    return ",".join(n.bootstrap for n in nodes if n.proc and n.proc.poll() is None)


def create(nodes, name, partitions, rf=3, configs=None, assignment=None):
    admin = AdminClient({"bootstrap.servers": everyone(nodes)})
    if assignment:
        topic = NewTopic(name, num_partitions=len(assignment), replica_assignment=assignment,
                         config=configs or {})
    else:
        topic = NewTopic(name, num_partitions=partitions, replication_factor=rf,
                         config=configs or {})
    for f in admin.create_topics([topic], operation_timeout=20).values():
        f.result(30)


def partitions_of(bootstrap, topic):
    """{partition: (leader, replicas, isr)} as a fresh client sees them from `bootstrap`."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000})
    t = admin.list_topics(topic, timeout=5).topics[topic]
    if t.error is not None:
        return None
    return {i: (p.leader, tuple(sorted(p.replicas)), tuple(sorted(p.isrs)))
            for i, p in t.partitions.items()}


def in_sync(nodes, topic, partition, members):
    """The leader of `partition` once every node's metadata has exactly `members` in sync."""
    def check():
        views = [partitions_of(n.bootstrap, topic) for n in nodes
                 if n.proc and n.proc.poll() is None]
        if not views or any(v is None or partition not in v for v in views):
            return None
        states = {v[partition] for v in views}
        if len(states) != 1:
            return None
        leader, _, isr = states.pop()
        return leader if list(isr) == sorted(members) and leader in members else None
    return check


def test_an_rf3_topic_converges_and_serves_through_any_broker(cluster):
    create(cluster, "rf3", 6)
    for n in cluster:
        parts = wait_for(f"6 partitions with 3 in-sync replicas seen from broker {n.node_id}",
                         lambda n=n: (lambda v: v if v and len(v) == 6 and all(
                             len(isr) == 3 for _, _, isr in v.values()) else None)(
                                 partitions_of(n.bootstrap, "rf3")), 30)
        assert all(replicas == (1, 2, 3) for _, replicas, _ in parts.values()), parts
        # Leaders spread over the brokers.
        assert {leader for leader, _, _ in parts.values()} == {1, 2, 3}, parts
    # Produce through broker 2 alone, acks=all, with librdkafka...
    p = Producer({"bootstrap.servers": cluster[1].bootstrap, "acks": "all"})
    for i in range(600):
        p.produce("rf3", value=f"c{i}".encode(), partition=i % 6)
    assert p.flush(30) == 0
    # ...and with kafka-python through broker 3 alone.
    from kafka import KafkaProducer, KafkaConsumer
    kp = KafkaProducer(bootstrap_servers=cluster[2].bootstrap, acks="all")
    for i in range(300):
        kp.send("rf3", value=f"k{i}".encode(), partition=i % 6)
    kp.flush(30)
    kp.close()
    # Everything back through broker 1 alone, with each client.
    got = read(cluster[0].bootstrap, "rf3", range(6), 900)
    values = sorted(v for _, v in got)
    assert values == sorted([f"c{i}".encode() for i in range(600)] +
                            [f"k{i}".encode() for i in range(300)])
    kc = KafkaConsumer("rf3", bootstrap_servers=cluster[2].bootstrap,
                       auto_offset_reset="earliest", consumer_timeout_ms=10000,
                       enable_auto_commit=False, group_id=None)
    seen = [m.value for m in kc]
    kc.close()
    assert sorted(seen) == values


class SteadyProducer:
    """An idempotent acks=all producer writing 0, 1, 2, ... to partition 0 of `topic` on a
    thread of its own until stopped; `acked` and `errors` as the delivery reports come."""

    def __init__(self, bootstrap, topic):
        self.acked, self.errors = [], []
        self._stop = threading.Event()
        self._args = (bootstrap, topic)
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self):
        bootstrap, topic = self._args
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                      "enable.idempotence": True, "linger.ms": 5})

        def done(err, msg):
            (self.errors.append(err) if err else self.acked.append(int(msg.value())))
        i = 0
        while not self._stop.is_set():
            p.produce(topic, value=str(i).encode(), partition=0, on_delivery=done)
            i += 1
            p.poll(0.002)
        assert p.flush(60) == 0

    def stop(self):
        self._stop.set()
        self._thread.join(90)


def assert_every_acked_once_in_order(nodes, topic, producer):
    assert producer.errors == []
    got = [int(v) for _, v in read(everyone(nodes), topic, [0], len(producer.acked), 60)]
    assert got == sorted(got)
    assert len(got) == len(set(got))
    assert set(producer.acked) <= set(got)


def test_a_killed_leader_fails_over_and_loses_no_acknowledged_record(cluster):
    create(cluster, "failover", 1)
    leader = wait_for("3 in sync", in_sync(cluster, "failover", 0, [1, 2, 3]), 30)
    writer = SteadyProducer(everyone(cluster), "failover")
    acked = writer.acked
    try:
        wait_for("records acknowledged before the kill", lambda: len(acked) > 200, 30)
        victim = cluster[leader - 1]
        victim.kill()
        killed_at = time.monotonic()
        before = len(acked)
        survivors = [n for n in cluster if n is not victim]

        def new_leader():
            parts = partitions_of(survivors[0].bootstrap, "failover")
            return parts and parts[0][0] not in (-1, leader) and parts[0][0]
        wait_for("a new leader", new_leader, SESSION_TIMEOUT_S + 5)
        assert time.monotonic() - killed_at < SESSION_TIMEOUT_S + 5
        wait_for("acknowledgements from the new leader", lambda: len(acked) > before + 200, 30)
        victim.start()
        wait_for("the returning broker back in sync",
                 in_sync(cluster, "failover", 0, [1, 2, 3]), 60)
        wait_for("acknowledgements after its return", lambda: len(acked) > before + 400, 30)
    finally:
        writer.stop()
    assert_every_acked_once_in_order(cluster, "failover", writer)


def test_min_insync_replicas_refuses_acks_all_until_a_broker_returns(cluster, tmp_path):
    """Two of a partition's three replicas down while the metadata quorum lives on: the
    partition's replicas are the voter 1 and two brokers that are not voters (observers)."""
    observers = [Node(tmp_path, i, cluster[0].voters, free_port()) for i in (4, 5)]
    try:
        for o in observers:
            o.start()
        admin = AdminClient({"bootstrap.servers": everyone(cluster)})
        wait_for("five live brokers", lambda: len(admin.list_topics(timeout=5).brokers) == 5, 30)
        create(cluster, "minisr", 1, configs={"min.insync.replicas": "2"},
               assignment=[[1, 4, 5]])
        wait_for("3 in sync", in_sync(cluster, "minisr", 0, [1, 4, 5]), 30)
        p = Producer({"bootstrap.servers": everyone(cluster), "acks": "all"})
        p.produce("minisr", value=b"before", partition=0)
        assert p.flush(20) == 0
        for o in observers:
            o.kill()
        # Fenced once their sessions expire: the ISR is the leader alone.
        wait_for("the ISR down to the leader", in_sync(cluster, "minisr", 0, [1]),
                 SESSION_TIMEOUT_S + 10)
        results = []
        q = Producer({"bootstrap.servers": everyone(cluster), "acks": "all", "retries": 0,
                      "message.timeout.ms": 10000})
        for i in range(5):
            q.produce("minisr", value=f"refused{i}".encode(), partition=0,
                      on_delivery=lambda err, msg: results.append(err))
        q.flush(30)
        assert [e.code() if e else None for e in results] == [KafkaError.NOT_ENOUGH_REPLICAS] * 5
        # Nothing of them was acknowledged, nor stored.
        assert [v for _, v in read(everyone(cluster), "minisr", [0], 1, 10)] == [b"before"]
        # One replica back: the ISR has two members again and acks=all succeeds.
        observers[0].start()
        wait_for("two in sync again", in_sync(cluster, "minisr", 0, [1, 4]), 60)
        ok = []
        r = Producer({"bootstrap.servers": everyone(cluster), "acks": "all", "retries": 0})
        r.produce("minisr", value=b"after", partition=0,
                  on_delivery=lambda err, msg: ok.append(err))
        assert r.flush(30) == 0 and ok == [None], ok
        assert [v for _, v in read(everyone(cluster), "minisr", [0], 2, 10)] == [b"before",
                                                                               b"after"]
    finally:
        for o in observers:
            o.stop()


def test_a_diverged_former_leader_truncates_what_the_quorum_lost(cluster):
    create(cluster, "diverge", 1, assignment=[[1, 2, 3]])
    wait_for("broker 1 leads, 3 in sync",
             lambda: in_sync(cluster, "diverge", 0, [1, 2, 3])() == 1, 30)
    p = Producer({"bootstrap.servers": everyone(cluster), "acks": "all"})
    for i in range(10):
        p.produce("diverge", value=f"a{i}".encode(), partition=0)
    assert p.flush(20) == 0
    leader, followers = cluster[0], cluster[1:]
    log_mark = len(leader.log())
    # The followers stop; their last long poll (at most 500 ms) is answered empty and they
    # send no other, so what the leader writes now reaches no one.
    for f in followers:
        f.pause()
    try:
        time.sleep(1.5)
        lone = Producer({"bootstrap.servers": leader.bootstrap, "acks": 1, "retries": 0})
        for i in range(5):
            lone.produce("diverge", value=f"lost{i}".encode(), partition=0)
        assert lone.flush(10) == 0
        leader.kill()
    finally:
        for f in followers:
            f.resume()
    wait_for("a new leader among the followers",
             lambda: in_sync(followers, "diverge", 0, [2, 3])() in (2, 3), SESSION_TIMEOUT_S + 10)
    q = Producer({"bootstrap.servers": everyone(cluster), "acks": "all"})
    for i in range(10):
        q.produce("diverge", value=f"b{i}".encode(), partition=0)
    assert q.flush(30) == 0
    leader.start()
    wait_for("the former leader back in sync", in_sync(cluster, "diverge", 0, [1, 2, 3]), 60)
    assert "truncated the log's tail" in leader.log(log_mark), leader.log(log_mark)[-3000:]
    want = [f"a{i}".encode() for i in range(10)] + [f"b{i}".encode() for i in range(10)]
    assert [v for _, v in read(everyone(cluster), "diverge", [0], 20)] == want
    # Broker 1 leads again (the current leader is killed; 1 is first of the ISR left): what
    # it serves is the quorum's log, not what it wrote alone.
    current = in_sync(cluster, "diverge", 0, [1, 2, 3])()
    victim = cluster[current - 1]
    victim.kill()
    rest = [n for n in cluster if n is not victim]
    others = sorted(n.node_id for n in rest)
    wait_for("broker 1 leads", lambda: in_sync(rest, "diverge", 0, others)() == 1,
             SESSION_TIMEOUT_S + 10)
    assert [v for _, v in read(leader.bootstrap, "diverge", [0], 20)] == want
    victim.start()
    wait_for("3 in sync", in_sync(cluster, "diverge", 0, [1, 2, 3]), 60)


def test_a_group_keeps_its_committed_offsets_when_its_coordinator_dies(cluster):
    create(cluster, "grp", 3)
    for p in range(3):
        wait_for("3 in sync", in_sync(cluster, "grp", p, [1, 2, 3]), 30)
    prod = Producer({"bootstrap.servers": everyone(cluster), "acks": "all"})
    for i in range(30):
        prod.produce("grp", value=f"m{i}".encode(), partition=i % 3)
    assert prod.flush(20) == 0

    def consumer():
        return Consumer({"bootstrap.servers": everyone(cluster), "group.id": "survivors",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000})

    c = consumer()
    c.subscribe(["grp"])
    seen = []
    deadline = time.monotonic() + 60
    while len(seen) < 30 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            seen.append(m.value())
    assert len(seen) == 30
    c.commit(asynchronous=False)
    c.close()
    # The group's coordinator, as the cluster names it; and its offsets partition is RF 3.
    admin = AdminClient({"bootstrap.servers": everyone(cluster)})
    desc = admin.describe_consumer_groups(["survivors"])["survivors"].result(10)
    coordinator = desc.coordinator.id
    offsets = partitions_of(cluster[0].bootstrap, "__consumer_offsets")
    assert offsets and all(len(replicas) == 3 for _, replicas, _ in offsets.values()), offsets
    victim = cluster[coordinator - 1]
    victim.kill()
    try:
        rest = [n for n in cluster if n is not victim]
        c = Consumer({"bootstrap.servers": ",".join(n.bootstrap for n in rest),
                      "group.id": "survivors", "enable.auto.commit": False,
                      "auto.offset.reset": "earliest"})
        want = [TopicPartition("grp", p) for p in range(3)]

        def committed():
            got = c.committed(want, timeout=5)
            return got if all(tp.error is None and tp.offset >= 0 for tp in got) else None
        got = wait_for("the committed offsets from the new coordinator", committed,
                       SESSION_TIMEOUT_S + 20)
        assert sorted(tp.offset for tp in got) == [10, 10, 10]
        c.subscribe(["grp"])
        q = Producer({"bootstrap.servers": ",".join(n.bootstrap for n in rest), "acks": "all"})
        for i in range(30, 36):
            q.produce("grp", value=f"m{i}".encode(), partition=i % 3)
        assert q.flush(20) == 0
        more = []
        deadline = time.monotonic() + 60
        while len(more) < 6 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                more.append(m.value())
        # Only what was not committed: the group resumed where it was.
        assert sorted(more) == sorted(f"m{i}".encode() for i in range(30, 36))
        c.close()
    finally:
        victim.start()
        wait_for("3 in sync", in_sync(cluster, "grp", 0, [1, 2, 3]), 60)


def test_a_reassignment_moves_a_partition_under_load_and_loses_nothing(cluster):
    from kafka import TopicPartition as KTopicPartition
    from kafka.admin import KafkaAdminClient
    create(cluster, "moving", 1, assignment=[[1, 2]])
    wait_for("1 and 2 in sync", in_sync(cluster, "moving", 0, [1, 2]), 30)
    writer = SteadyProducer(everyone(cluster), "moving")
    acked = writer.acked
    try:
        wait_for("records acknowledged before the move", lambda: len(acked) > 300, 30)
        admin = KafkaAdminClient(bootstrap_servers=everyone(cluster))
        tp = KTopicPartition("moving", 0)
        answer = admin.alter_partition_reassignments({tp: [2, 3]})
        assert answer.get(tp) is None, answer
        # Broker 1 leads and is not in the target: it hands over once 3 has caught up.
        wait_for("the partition on brokers 2 and 3 only",
                 lambda: (lambda v: v and v[0][1] == (2, 3) and v[0][2] == (2, 3)
                          and v[0][0] in (2, 3))(partitions_of(cluster[1].bootstrap, "moving")),
                 60)
        assert admin.list_partition_reassignments() == {}
        admin.close()
        # Broker 1 is no replica any more: its copy is closed and its files removed; the
        # replicas keep theirs.
        wait_for("broker 1's copy removed",
                 lambda: not (cluster[0].data_dir / "topics" / "moving" / "0").exists(), 20)
        assert all((n.data_dir / "topics" / "moving" / "0").is_dir() for n in cluster[1:])
        moved = len(acked)
        wait_for("acknowledgements after the move", lambda: len(acked) > moved + 300, 30)
    finally:
        writer.stop()
    assert_every_acked_once_in_order(cluster, "moving", writer)


def test_a_replica_behind_the_leaders_log_start_starts_there_and_deleted_stays_deleted(cluster):
    from confluent_kafka import Consumer as CkConsumer
    # Broker 3 follows partition 0 first after broker 1, broker 2 partition 1: with 1 dead,
    # 3 (the one that was away) leads 0 and 2 (the one that stayed) leads 1.
    create(cluster, "behind", 2, assignment=[[1, 3, 2], [1, 2, 3]])
    for part in (0, 1):
        wait_for(f"broker 1 leads partition {part}, 3 in sync",
                 lambda part=part: in_sync(cluster, "behind", part, [1, 2, 3])() == 1, 30)
    leader, stayed, away = cluster
    p = Producer({"bootstrap.servers": everyone(cluster), "acks": "all"})
    for i in range(10):
        for part in (0, 1):
            p.produce("behind", value=f"a{i}".encode(), partition=part)
    assert p.flush(20) == 0
    away.kill()
    for part in (0, 1):
        wait_for(f"partition {part}: 1 and 2 in sync",
                 in_sync([leader, stayed], "behind", part, [1, 2]), SESSION_TIMEOUT_S + 10)
    for i in range(10):
        for part in (0, 1):
            p.produce("behind", value=f"b{i}".encode(), partition=part)
    assert p.flush(20) == 0
    admin = AdminClient({"bootstrap.servers": everyone(cluster)})
    fs = admin.delete_records([TopicPartition("behind", part, 15) for part in (0, 1)],
                              request_timeout=10)
    for f in fs.values():
        assert f.result(10).low_watermark == 15
    mark = len(away.log())
    away.start()
    for part in (0, 1):
        wait_for(f"partition {part}: broker 3 back in sync",
                 in_sync(cluster, "behind", part, [1, 2, 3]), 60)
    assert "started this log again there" in away.log(mark), away.log(mark)[-3000:]
    leader.kill()
    rest = [stayed, away]
    wait_for("broker 3 leads partition 0", lambda: in_sync(rest, "behind", 0, [2, 3])() == 3,
             SESSION_TIMEOUT_S + 10)
    wait_for("broker 2 leads partition 1", lambda: in_sync(rest, "behind", 1, [2, 3])() == 2,
             SESSION_TIMEOUT_S + 10)
    fenced_fetch_is_refused(away, "behind", 0, offset=15, old_epoch=0, leader_id=3)
    want = [f"b{i}".encode() for i in range(5, 10)]
    for part, via in ((0, away), (1, stayed)):
        assert [v for _, v in read(via.bootstrap, "behind", [part], 5)] == want, part
        c = CkConsumer({"bootstrap.servers": via.bootstrap, "group.id": "behind-marks"})
        try:
            assert c.get_watermark_offsets(TopicPartition("behind", part), timeout=10) == (15, 20)
        finally:
            c.close()
    leader.start()
    for part in (0, 1):
        wait_for(f"partition {part}: 3 in sync again",
                 in_sync(cluster, "behind", part, [1, 2, 3]), 60)


def topic_id_of(cluster, topic):
    import uuid
    from kafka.admin import KafkaAdminClient
    kadmin = KafkaAdminClient(bootstrap_servers=everyone(cluster))
    try:
        (d,) = kadmin.describe_topics([topic])
    finally:
        kadmin.close()
    return uuid.UUID(str(d["topic_id"])).bytes


def fenced_fetch_is_refused(node, topic, partition, offset, old_epoch, leader_id):
    """Fetch v16 to `node`, the partition's new leader, in `old_epoch`: FENCED_LEADER_EPOCH
    naming the leader and its newer epoch; in that epoch, served; one past it,
    UNKNOWN_LEADER_EPOCH."""
    import wire
    topic_id = topic_id_of([node], topic)
    conn = wire.Connection(node.bootstrap)
    try:
        error, part_tags, _ = wire.fetch_v16(conn, topic_id, partition, offset,
                                             current_leader_epoch=old_epoch)
        assert error == 74, error
        named, epoch = wire.leader_and_epoch(part_tags[1])
        assert named == leader_id and epoch > old_epoch, (named, epoch)
        error, _, _ = wire.fetch_v16(conn, topic_id, partition, offset,
                                     current_leader_epoch=epoch)
        assert error == 0, error
        error, _, _ = wire.fetch_v16(conn, topic_id, partition, offset,
                                     current_leader_epoch=epoch + 1)
        assert error == 75, error
    finally:
        conn.close()


def test_a_refusal_by_a_follower_names_the_leader_and_its_endpoint(cluster):
    import wire
    create(cluster, "hints", 1, assignment=[[1, 2, 3]])
    wait_for("broker 1 leads, 3 in sync", lambda: in_sync(cluster, "hints", 0, [1, 2, 3])() == 1, 30)
    topic_id = topic_id_of(cluster, "hints")
    leader = cluster[0]
    want_endpoint = {1: ("127.0.0.1", leader.port)}
    follower = wire.Connection(cluster[1].bootstrap)
    try:
        error, part_tags, tags = wire.produce_v10(follower, "hints", 0, b"to a follower")
        assert error == 6, error
        leader_id, epoch = wire.leader_and_epoch(part_tags[0])
        assert leader_id == 1 and epoch >= 0, (leader_id, epoch)
        assert wire.node_endpoints(tags[0]) == want_endpoint
        error, part_tags, tags = wire.fetch_v16(follower, topic_id, 0)
        assert error == 6, error
        assert wire.leader_and_epoch(part_tags[1]) == (1, epoch)
        assert wire.node_endpoints(tags[0]) == want_endpoint
    finally:
        follower.close()
    own = wire.Connection(leader.bootstrap)
    try:
        error, part_tags, tags = wire.produce_v10(own, "hints", 0, b"to the leader")
        assert (error, part_tags, tags) == (0, {}, {})
        error, part_tags, tags = wire.fetch_v16(own, topic_id, 0, current_leader_epoch=epoch)
        assert (error, part_tags, tags) == (0, {}, {})
    finally:
        own.close()


def test_a_reassignment_that_cannot_finish_is_cancelled(cluster):
    from kafka import TopicPartition as KTopicPartition
    from kafka.admin import KafkaAdminClient
    from kafka.errors import NoReassignmentInProgressError
    create(cluster, "cancelled", 1, assignment=[[1, 2]])
    wait_for("1 and 2 in sync", in_sync(cluster, "cancelled", 0, [1, 2]), 30)
    # A partition that moves off broker 3 while it is down: its files go when it returns.
    create(cluster, "left-behind", 1, assignment=[[1, 3]])
    wait_for("1 and 3 in sync", in_sync(cluster, "left-behind", 0, [1, 3]), 30)
    left_behind = cluster[2].data_dir / "topics" / "left-behind" / "0"
    wait_for("broker 3's copy opened", left_behind.is_dir, 20)
    down = cluster[2]
    down.kill()
    live = cluster[:2]
    try:
        wait_for("broker 3 fenced",
                 lambda: len(AdminClient({"bootstrap.servers": everyone(live)})
                             .list_topics(timeout=5).brokers) == 2, SESSION_TIMEOUT_S + 10)
        admin = KafkaAdminClient(bootstrap_servers=everyone(live))
        tp = KTopicPartition("cancelled", 0)
        try:
            assert admin.alter_partition_reassignments({tp: None}) == {
                tp: NoReassignmentInProgressError}
            # Broker 3 is down: its replica never catches up, the move never finishes.
            assert admin.alter_partition_reassignments({tp: [2, 3]}).get(tp) is None
            wait_for("the move listed", lambda: tp in admin.list_partition_reassignments(), 20)
            wait_for("replicas 1, 2 and 3 while moving",
                     lambda: partitions_of(live[0].bootstrap, "cancelled")[0][1] == (1, 2, 3), 20)
            assert admin.alter_partition_reassignments({tp: None}).get(tp) is None
            wait_for("back on 1 and 2",
                     lambda: (lambda v: v[0][1] == (1, 2) and v[0][2] == (1, 2))(
                         partitions_of(live[1].bootstrap, "cancelled")), 20)
            assert admin.list_partition_reassignments() == {}
            tp = KTopicPartition("left-behind", 0)
            assert admin.alter_partition_reassignments({tp: [1, 2]}).get(tp) is None
            wait_for("left-behind on 1 and 2 only",
                     lambda: (lambda v: v[0][1] == (1, 2) and v[0][2] == (1, 2))(
                         partitions_of(live[1].bootstrap, "left-behind")), 30)
        finally:
            admin.close()
    finally:
        down.start()
    wait_for("three live brokers",
             lambda: len(AdminClient({"bootstrap.servers": everyone(cluster)})
                         .list_topics(timeout=5).brokers) == 3, 30)
    wait_for("broker 3's stale copy removed after its restart",
             lambda: not left_behind.exists(), 20)
