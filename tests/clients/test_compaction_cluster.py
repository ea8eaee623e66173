"""Issue 19 on a cluster of three real `spate serve` processes on 127.0.0.1, through librdkafka
and kafka-python:

- a compacted topic of RF 2: the leader and the follower each compact their own copy (each
  logs its own passes; the follower's files shrink too), and a consumer reads each key's last
  value at the offset it was produced at;
- the partition reassigned to the third broker alone: the new replica copies the leader's
  compacted log across its gaps (offsets unchanged, nothing the leader kept missing), then
  leads it; produce goes on at the log end.

The brokers start once for the module, with the cleaner's idle back-off at 200 ms, and are
stopped by PID however the tests end.
"""

import types

import confluent_kafka as ck
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from cluster_util import cluster_nodes, live, local_bytes, settled, wait_for
from kutil import ck_conf, read_all_confluent

KEYS = 100
UPDATES = 300
MIB = 1 << 20
TOPIC = "table"


@pytest.fixture(scope="module")
def cluster(module_dir):
    root = module_dir
    config = "[log.cleaner]\nbackoff_ms = 200\n"
    nodes = cluster_nodes(root, config=config)
    try:
        for n in nodes:
            n.start()
        admin = AdminClient({"bootstrap.servers": nodes[0].bootstrap})
        wait_for("three live brokers", lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30)
        yield types.SimpleNamespace(nodes=nodes, pairs=[])
    finally:
        for n in nodes:
            n.stop()


def bootstrap(nodes):
    return ",".join(n.bootstrap for n in live(nodes))


def passes_logged(node, topic):
    return sum(1 for line in node.log().splitlines()
               if " compacted " in line and f"partition={topic}-0 " in line)


def value(key, update):
    return f"{key}:{update}:".encode() + b"v" * 100


def produce(nodes, topic, pairs):
    p = ck.Producer(ck_conf(bootstrap(nodes), **{
        "linger.ms": 5, "acks": "all", "enable.idempotence": True}))
    for k, v in pairs:
        while True:
            try:
                p.produce(topic, key=k, value=v)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0


def check_compacted(recs, pairs):
    """Each live key's last value, every record at the offset it was produced at."""
    last = {}
    for k, v in pairs:
        last[k] = v
    want = {k: v for k, v in last.items() if v is not None}
    got = {}
    for r in recs:
        got[r.key] = r.value
    assert {k: v for k, v in got.items() if v is not None} == want
    offsets = [r.offset for r in recs]
    assert offsets == sorted(set(offsets)), "offsets not strictly increasing"
    for r in recs:
        assert pairs[r.offset] == (r.key, r.value), f"offset {r.offset} moved"
    return len(recs)


def test_every_replica_compacts_its_own_copy(cluster):
    nodes = cluster.nodes
    admin = AdminClient({"bootstrap.servers": bootstrap(nodes)})
    config = {"cleanup.policy": "compact", "segment.bytes": str(MIB),
              "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "1000"}
    fs = admin.create_topics([NewTopic(TOPIC, num_partitions=1, replica_assignment=[[1, 2]],
                                       config=config)], operation_timeout=20)
    fs[TOPIC].result(30)
    leader = wait_for("1 and 2 in sync", settled(nodes, TOPIC, [1, 2]), 30)
    pairs = [(f"k{k:03}".encode(), value(k, u)) for u in range(UPDATES) for k in range(KEYS)]
    pairs += [(f"k{k:03}".encode(), None) for k in range(10)]
    pairs += [(f"k{k:03}".encode(), value(k, UPDATES + u)) for u in range(100)
              for k in range(10, KEYS)]
    produce(nodes, TOPIC, pairs)
    cluster.pairs[:] = pairs
    produced = sum(len(k) + len(v or b"") for k, v in pairs)
    for node in nodes[:2]:
        role = "leader" if node.node_id == leader else "follower"
        wait_for(f"broker {node.node_id} ({role}) compacts its copy",
                 lambda: passes_logged(node, TOPIC) > 0 and local_bytes(node, TOPIC) < produced / 3,
                 90)
    assert local_bytes(nodes[2], TOPIC) == 0, "broker 3 holds no replica"

    def compacted():
        recs = read_all_confluent(bootstrap(nodes), TOPIC, timeout=60)
        return len(recs) < len(pairs) / 3 and recs
    recs = wait_for("a consumer reads the compacted log", compacted, 60)
    check_compacted(recs, pairs)


def test_a_new_replica_copies_the_compacted_log_across_its_gaps(cluster):
    from kafka import TopicPartition as KTopicPartition
    from kafka.admin import KafkaAdminClient
    nodes, pairs = cluster.nodes, cluster.pairs
    assert pairs, "runs after the test above"
    before = read_all_confluent(bootstrap(nodes), TOPIC, timeout=60)
    kept = check_compacted(before, pairs)
    assert kept < len(pairs) / 3
    admin = KafkaAdminClient(bootstrap_servers=bootstrap(nodes))
    try:
        tp = KTopicPartition(TOPIC, 0)
        assert admin.alter_partition_reassignments({tp: [3]}).get(tp) is None
        wait_for("broker 3 alone leads the partition", settled(nodes, TOPIC, [3]), 90)
    finally:
        admin.close()
    third = nodes[2]
    # It copied the compacted log, not the records the cleaner removed.
    assert 0 < local_bytes(third, TOPIC) < sum(len(k) + len(v or b"") for k, v in pairs) / 3
    for node in nodes[:2]:
        wait_for(f"broker {node.node_id}'s dropped copy removed",
                 lambda: not (node.data_dir / "topics" / TOPIC / "0").exists(), 30)
    after = read_all_confluent(third.bootstrap, TOPIC, timeout=60)
    # Everything the leader had kept is on the new replica, at the same offsets (the new
    # replica's own cleaner may only have removed more of what later records replace).
    assert {r.offset for r in after} <= {r.offset for r in before}
    check_compacted(after, pairs)
    more = [(b"k050", b"after the move")]
    produce(nodes, TOPIC, more)
    recs = read_all_confluent(bootstrap(nodes), TOPIC, timeout=60)
    assert (recs[-1].offset, recs[-1].key, recs[-1].value) == (len(pairs), b"k050",
                                                               b"after the move")
    check_compacted(recs, pairs + more)
