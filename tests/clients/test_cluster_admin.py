"""Admin APIs that go through the controller of a cluster of three real `spate serve`
processes on 127.0.0.1, through unchanged clients (confluent-kafka/librdkafka and
kafka-python):

- ElectLeaders PREFERRED: ELECTION_NOT_NEEDED while the preferred replica leads; after its
  broker is killed and restarted (it comes back as a follower: a restart loses the
  leaderships, and the controller's own rebalance waits leader.imbalance.check.interval,
  300 s), an election gives it the leadership back, seen by every broker; an unknown
  partition is UNKNOWN_TOPIC_OR_PARTITION; UNCLEAN with a live leader is ELECTION_NOT_NEEDED;
- on a single broker every partition is ELECTION_NOT_NEEDED;
- IncrementalAlterConfigs of an RF 3 topic through one broker (confluent-kafka) is seen by
  DescribeConfigs through every broker, and applied to every broker's open logs: retention.ms
  lowered on partitions led by each of the three brokers trims the leader's and the
  followers' logs; a bad value is INVALID_CONFIG naming the key and changes nothing;
  validate_only changes nothing; AlterConfigs (kafka-python) replaces the whole set;
  broker configs stay refused;
- InitProducerId through each of the three brokers, and again after one restarts, never
  gives two producers the same id (the controller hands out blocks of ids);
- CreatePartitions through one broker grows an RF 3 topic on every broker: the new
  partitions have three replicas in sync and serve produce and fetch; a count not above the
  current one is INVALID_PARTITIONS.

The three brokers start once for the module and are stopped by PID however the tests end;
each test leaves all three running.
"""

import struct
import time

import pytest
from confluent_kafka import (Consumer, ElectionType, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewPartitions, NewTopic, ResourceType)

import wire
from cluster_util import SESSION_TIMEOUT_S, cluster_nodes, wait_for

ELECTION_NOT_NEEDED = 84
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_PARTITIONS = 37
INVALID_CONFIG = 40
INVALID_REQUEST = 42
DAY_MS = 86_400_000
INIT_PRODUCER_ID = 22

# Retention passes every 200 ms, so that a retention change shows within the test.
NODE_CONFIG = """\
[log]
retention_check_ms = 200
"""


@pytest.fixture(scope="module")
def cluster(module_dir):
    root = module_dir
    nodes = cluster_nodes(root, config=NODE_CONFIG)
    try:
        for n in nodes:
            n.start()
        admin = AdminClient({"bootstrap.servers": nodes[0].bootstrap})
        wait_for("three live brokers", lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30)
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def running(nodes):
    return [n for n in nodes if n.proc and n.proc.poll() is None]


def everyone(nodes):
    return ",".join(n.bootstrap for n in running(nodes))


def admin_of(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000})


def create(nodes, name, assignment=None, partitions=1, configs=None):
    admin = admin_of(everyone(nodes))
    if assignment:
        topic = NewTopic(name, num_partitions=len(assignment), replica_assignment=assignment,
                         config=configs or {})
    else:
        topic = NewTopic(name, num_partitions=partitions, replication_factor=3,
                         config=configs or {})
    for f in admin.create_topics([topic], operation_timeout=20).values():
        f.result(30)


def state_of(bootstrap, topic, partition):
    """(leader, replicas in order, sorted ISR) as a fresh client sees it from `bootstrap`."""
    t = admin_of(bootstrap).list_topics(topic, timeout=5).topics[topic]
    if t.error is not None or partition not in t.partitions:
        return None
    p = t.partitions[partition]
    return p.leader, tuple(p.replicas), tuple(sorted(p.isrs))


def agreed(nodes, topic, partition, check):
    """The state every running broker shows, once they all show the same one and `check`
    holds for it."""
    def look():
        states = {state_of(n.bootstrap, topic, partition) for n in running(nodes)}
        if len(states) != 1:
            return None
        s = states.pop()
        return s if s is not None and check(s) else None
    return look


def elect(bootstrap, election_type, partitions):
    """{TopicPartition: error code (0: elected)} from confluent-kafka's elect_leaders."""
    admin = admin_of(bootstrap)  # kept until the future is done
    result = admin.elect_leaders(election_type, partitions).result(30)
    return {(tp.topic, tp.partition): (0 if e is None else e.code())
            for tp, e in result.items()}


def test_a_preferred_election_gives_the_leadership_back_to_a_restarted_broker(cluster):
    # Broker 2 is the preferred leader (first replica).
    create(cluster, "elect", assignment=[[2, 3, 1]])
    wait_for("broker 2 leads with 3 in sync",
             agreed(cluster, "elect", 0, lambda s: s[0] == 2 and s[2] == (1, 2, 3)), 30)
    tp = ("elect", 0)
    assert elect(cluster[0].bootstrap, ElectionType.PREFERRED,
                 [TopicPartition(*tp)]) == {tp: ELECTION_NOT_NEEDED}
    # A live leader: an unclean election is not needed either.
    assert elect(cluster[0].bootstrap, ElectionType.UNCLEAN,
                 [TopicPartition(*tp)]) == {tp: ELECTION_NOT_NEEDED}
    assert elect(cluster[0].bootstrap, ElectionType.PREFERRED,
                 [TopicPartition("elect", 5)]) == {("elect", 5): UNKNOWN_TOPIC_OR_PARTITION}

    victim = cluster[1]
    victim.kill()
    survivors = [n for n in cluster if n is not victim]
    wait_for("a new leader", lambda: (lambda s: s and s[0] in (1, 3) and s)(
        state_of(survivors[0].bootstrap, "elect", 0)), SESSION_TIMEOUT_S + 10)
    victim.start()
    # Back in the ISR, but not leading: a restart loses the leaderships.
    before = wait_for("broker 2 back in sync as a follower",
                      agreed(cluster, "elect", 0,
                             lambda s: s[2] == (1, 2, 3) and s[0] in (1, 3)), 40)
    assert before[1] == (2, 3, 1)
    # Asked through a broker that is neither the old leader nor the preferred one (the
    # request may be forwarded to the controller).
    asked = next(n for n in cluster if n.node_id not in (2, before[0]))
    assert elect(asked.bootstrap, ElectionType.PREFERRED, [TopicPartition(*tp)]) == {tp: 0}
    wait_for("broker 2 leads again, seen by every broker",
             agreed(cluster, "elect", 0, lambda s: s[0] == 2 and s[2] == (1, 2, 3)), 15)
    # kafka-python: every partition (null) asks nothing more of this one.
    from kafka.admin import KafkaAdminClient
    ka = KafkaAdminClient(bootstrap_servers=everyone(cluster))
    try:
        r = ka.elect_leaders(0, {"elect": [0]}, raise_errors=False)
        codes = [p.error_code for t in r.replica_election_results for p in t.partition_result]
        assert codes == [ELECTION_NOT_NEEDED], r
    finally:
        ka.close()


def test_a_single_broker_needs_no_election(broker):
    admin = admin_of(broker.bootstrap)
    for f in admin.create_topics([NewTopic("solo", num_partitions=2,
                                           replication_factor=1)]).values():
        f.result(30)
    got = elect(broker.bootstrap, ElectionType.PREFERRED,
                [TopicPartition("solo", 0), TopicPartition("solo", 1),
                 TopicPartition("solo", 2)])
    assert got == {("solo", 0): ELECTION_NOT_NEEDED, ("solo", 1): ELECTION_NOT_NEEDED,
                   ("solo", 2): UNKNOWN_TOPIC_OR_PARTITION}
    # Every partition: none needs an election, so none is reported.
    assert elect(broker.bootstrap, ElectionType.PREFERRED, None) == {}


def incremental_set(bootstrap, topic, configs, validate_only=False):
    """IncrementalAlterConfigs SET through confluent-kafka; raises KafkaException if refused."""
    admin = admin_of(bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
        for k, v in configs.items()])
    for f in admin.incremental_alter_configs([res], validate_only=validate_only).values():
        f.result(30)


def described(bootstrap, topic):
    """{name: (value, source)} of the topic's configs as DescribeConfigs answers them."""
    admin = admin_of(bootstrap)
    (f,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    return {k: (e.value, e.source) for k, e in f.result(30).items()}


def dynamic(nodes, topic, key):
    """{node id: value of `key`} where every broker describes it as a topic override."""
    out = {}
    for n in running(nodes):
        value, source = described(n.bootstrap, topic)[key]
        out[n.node_id] = value if source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value else None
    return out


def segment_bases(node, topic, partition):
    d = node.data_dir / "topics" / topic / str(partition)
    return sorted(int(p.stem) for p in d.glob("*.log"))


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")
def test_a_topic_config_change_reaches_every_broker_and_its_logs(cluster):
    topic = "configs"
    # Partition p led by broker p+1, so that every broker leads one and follows two; each
    # record its own segment (segment.ms=1), nothing deleted yet (retention.ms=-1).
    create(cluster, topic, assignment=[[1, 2, 3], [2, 3, 1], [3, 1, 2]],
           configs={"retention.ms": "-1", "segment.ms": "1"})
    for p in range(3):
        wait_for(f"partition {p} led by {p + 1} with 3 in sync",
                 agreed(cluster, topic, p, lambda s, p=p: s[0] == p + 1 and s[2] == (1, 2, 3)),
                 30)
    two_days_ago = int(time.time() * 1000) - 2 * DAY_MS
    producer = Producer({"bootstrap.servers": everyone(cluster), "acks": "all",
                         "linger.ms": 0})
    for p in range(3):
        for i in range(3):
            got = []
            producer.produce(topic, value=f"{p}-{i}".encode(), partition=p,
                             timestamp=two_days_ago, on_delivery=lambda e, m: got.append(e))
            assert producer.flush(15) == 0 and got == [None], got
            time.sleep(0.05)
    # Every replica rolled a segment per record.
    for n in cluster:
        for p in range(3):
            bases = wait_for(f"three segments of partition {p} on broker {n.node_id}",
                             lambda n=n, p=p: (lambda b: b if b == [0, 1, 2] else None)(
                                 segment_bases(n, topic, p)), 15)
            assert bases == [0, 1, 2]

    # A bad value is refused before anything is proposed, naming the key.
    with pytest.raises(KafkaException) as refused:
        incremental_set(cluster[0].bootstrap, topic, {"retention.ms": "soon"})
    assert refused.value.args[0].code() == INVALID_CONFIG
    assert "retention.ms" in refused.value.args[0].str()
    # validate_only proposes nothing.
    incremental_set(cluster[0].bootstrap, topic, {"retention.ms": str(DAY_MS)},
                    validate_only=True)
    assert dynamic(cluster, topic, "retention.ms") == {1: "-1", 2: "-1", 3: "-1"}

    # Through broker 2, which may not be the controller: every broker describes it...
    incremental_set(cluster[1].bootstrap, topic, {"retention.ms": str(DAY_MS)})
    assert described(cluster[1].bootstrap, topic)["retention.ms"][0] == str(DAY_MS), \
        "the broker that answered shows the change at once"
    wait_for("every broker describes retention.ms=1 day",
             lambda: dynamic(cluster, topic, "retention.ms") ==
             {1: str(DAY_MS), 2: str(DAY_MS), 3: str(DAY_MS)}, 10)
    # ...and applies it to its open logs, leader or follower: the two-day-old segments go
    # but the active one.
    for n in cluster:
        for p in range(3):
            wait_for(f"retention on partition {p} of broker {n.node_id}",
                     lambda n=n, p=p: segment_bases(n, topic, p) == [2], 15)
    assert dynamic(cluster, topic, "segment.ms") == {1: "1", 2: "1", 3: "1"}

    # AlterConfigs through kafka-python (which sends the other overrides along, as
    # AlterConfigs replaces the whole set)...
    from kafka.admin import KafkaAdminClient
    from kafka.admin import ConfigResource as KConfigResource, ConfigResourceType
    ka = KafkaAdminClient(bootstrap_servers=cluster[2].bootstrap)
    try:
        ka.alter_configs([KConfigResource(ConfigResourceType.TOPIC, topic,
                                          configs={"retention.ms": "3600000"})],
                         incremental=False, raise_on_unknown=False)
        # Broker configs stay read-only, in a cluster as on one broker.
        r = ka.alter_configs([KConfigResource(ConfigResourceType.BROKER, "1",
                                              configs={"log.retention.ms": "1000"})],
                             incremental=False, raise_on_unknown=False)
        assert "InvalidRequest" in repr(r) or "INVALID_REQUEST" in repr(r), r
    finally:
        ka.close()
    wait_for("every broker describes retention.ms=1 hour",
             lambda: dynamic(cluster, topic, "retention.ms") ==
             {1: "3600000", 2: "3600000", 3: "3600000"}, 10)
    assert dynamic(cluster, topic, "segment.ms") == {1: "1", 2: "1", 3: "1"}
    # ...and through librdkafka, which sends only what it is given: segment.ms is gone.
    admin = admin_of(cluster[0].bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "7200000"})
    for f in admin.alter_configs([res]).values():
        f.result(30)
    wait_for("every broker describes the replaced set",
             lambda: dynamic(cluster, topic, "retention.ms") ==
             {1: "7200000", 2: "7200000", 3: "7200000"} and
             set(dynamic(cluster, topic, "segment.ms").values()) == {None}, 10)


def init_producer_id(bootstrap):
    """InitProducerId v2 (flexible) for an idempotent producer: (error code, producer id)."""
    conn = wire.Connection(bootstrap)
    try:
        body = wire.cstr(None) + struct.pack(">i", 60_000) + b"\x00"
        r = conn.call(INIT_PRODUCER_ID, 2, body)
    finally:
        conn.close()
    _throttle, error, producer_id, _epoch = struct.unpack(">ihqh", r[:16])
    return error, producer_id


def test_no_two_brokers_hand_out_the_same_producer_id(cluster):
    # Each broker takes blocks of ids from the controller; a broker restarted takes a new
    # block, never one it or another broker had.
    def ids_from_each():
        got = []
        for n in cluster:
            for _ in range(3):
                error, pid = wait_for(f"a producer id from broker {n.node_id}",
                                      lambda: (lambda r: r if r[0] == 0 else None)(
                                          init_producer_id(n.bootstrap)), 30)
                got.append(pid)
        return got

    first = ids_from_each()
    assert len(set(first)) == len(first), first
    assert all(pid >= 0 for pid in first), first
    victim = cluster[1]
    victim.kill()
    victim.start()
    wait_for("the restarted broker answers InitProducerId",
             lambda: init_producer_id(victim.bootstrap)[0] == 0, 60)
    again = ids_from_each()
    assert len(set(first + again)) == len(first) + len(again), (first, again)


def test_partitions_added_through_one_broker_serve_on_every_broker(cluster):
    topic = "grown"
    create(cluster, topic, partitions=2)
    for p in range(2):
        wait_for(f"partition {p} with 3 in sync",
                 agreed(cluster, topic, p, lambda s: s[2] == (1, 2, 3)), 30)
    admin = admin_of(cluster[2].bootstrap)
    for f in admin.create_partitions([NewPartitions(topic, 4)]).values():
        f.result(30)
    states = {}
    for p in range(4):
        states[p] = wait_for(f"partition {p} with 3 in sync on every broker",
                             agreed(cluster, topic, p,
                                    lambda s: s[0] in (1, 2, 3) and s[2] == (1, 2, 3)), 30)
    # The new partitions' leaders spread as a new topic's would.
    assert len({states[2][0], states[3][0]}) == 2, states
    with pytest.raises(KafkaException) as refused:
        for f in admin.create_partitions([NewPartitions(topic, 3)]).values():
            f.result(30)
    assert refused.value.args[0].code() == INVALID_PARTITIONS
    # The new partitions take records and give them back, through any broker.
    producer = Producer({"bootstrap.servers": cluster[0].bootstrap, "acks": "all"})
    for p in range(4):
        producer.produce(topic, value=f"to-{p}".encode(), partition=p)
    assert producer.flush(30) == 0
    c = Consumer({"bootstrap.servers": cluster[1].bootstrap, "group.id": "grown-reader",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, 0) for p in range(4)])
    got = {}
    deadline = time.monotonic() + 30
    try:
        while len(got) < 4 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got[m.partition()] = m.value()
    finally:
        c.close()
    assert got == {p: f"to-{p}".encode() for p in range(4)}
