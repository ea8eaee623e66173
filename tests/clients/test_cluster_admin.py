"""Admin APIs that go through the controller of a cluster of three real `spate serve`
processes on 127.0.0.1, through unchanged clients (confluent-kafka/librdkafka and
kafka-python):

- ElectLeaders PREFERRED: ELECTION_NOT_NEEDED while the preferred replica leads; after its
  broker is killed and restarted (it comes back as a follower: a restart loses the
  leaderships, and the controller's own rebalance waits leader.imbalance.check.interval,
  300 s), an election gives it the leadership back, seen by every broker; an unknown
  partition is UNKNOWN_TOPIC_OR_PARTITION; UNCLEAN with a live leader is ELECTION_NOT_NEEDED;
- on a single broker every partition is ELECTION_NOT_NEEDED.

The three brokers start once for the module and are stopped by PID however the tests end;
each test leaves all three running.
"""

import pytest
from confluent_kafka import ElectionType, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cluster_util import SESSION_TIMEOUT_S, cluster_nodes, wait_for

ELECTION_NOT_NEEDED = 84
UNKNOWN_TOPIC_OR_PARTITION = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster_admin")
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
