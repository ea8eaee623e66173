"""Tiered storage on a cluster of three real `spate serve` processes on 127.0.0.1 that share
one tier, through librdkafka; every test twice: with a filesystem tier (a directory the three
share, as they would share a bucket), and with an S3 bucket on moto's S3 server (started on
127.0.0.1 for the module, stopped by PID):

- an RF 3 topic of 1 MiB segments with local.retention.bytes = 2 MiB: only the leader uploads
  (no follower logs an upload), every replica's local directory is trimmed to about local
  retention plus a segment against the leader's manifest, a consumer from offset 0 reads
  every record in order, and the tier holds exactly what the manifest names;
- the leader SIGKILLed: the new leader serves the cold range, uploads on under its own leader
  epoch (the manifest's key names it), and the killed broker, back, follows and trims; no
  orphan is left;
- a replica added by a reassignment starts at the leader's local log start, not at offset 0:
  it copies the local part only (the rest is in the tier), and the partition still serves
  every record from offset 0.

The brokers start once for the module and are stopped by PID however the tests end.
"""

import types

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from cluster_util import (SESSION_TIMEOUT_S, cluster_nodes, live, local_bytes, settled, state,
                          wait_for)
from tier_util import (CREDENTIALS, MIB, RECORD, FsTier, Moto, S3Tier,
                       assert_tier_holds_exactly_its_manifest, consume, produce, watermarks)

SEGMENT = MIB
LOCAL_RETENTION = 2 * MIB
# About local retention, the active segment and the one closed meanwhile.
LOCAL_BOUND = LOCAL_RETENTION + 2 * SEGMENT + 256 * 1024


@pytest.fixture(scope="module", params=["fs", "s3"])
def cluster(request, module_dir):
    root = module_dir / request.param
    root.mkdir()
    moto = None
    nodes = []
    try:
        if request.param == "fs":
            tier = FsTier(root / "cold")
        else:
            moto = Moto(root)
            tier = S3Tier(moto)
        config = "[kafka]\ngroup_initial_rebalance_delay_ms = 100\n\n" + tier.config()
        nodes = cluster_nodes(root, config=config)
        for n in nodes:
            if moto is not None:
                n.env.update(CREDENTIALS)
            n.start()
        admin = AdminClient({"bootstrap.servers": nodes[0].bootstrap})
        wait_for("three live brokers", lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30)
        yield types.SimpleNamespace(nodes=nodes, tier=tier)
    finally:
        for n in nodes:
            n.stop()
        if moto is not None:
            moto.stop()


def through(nodes):
    """What tier_util's clients need: a bootstrap list of the live brokers."""
    return types.SimpleNamespace(bootstrap=",".join(n.bootstrap for n in live(nodes)))


def create(nodes, name, rf=3, assignment=None):
    admin = AdminClient({"bootstrap.servers": through(nodes).bootstrap})
    config = {"segment.bytes": str(SEGMENT), "local.retention.bytes": str(LOCAL_RETENTION),
              "remote.storage.enable": "true"}
    if assignment:
        topic = NewTopic(name, num_partitions=1, replica_assignment=assignment, config=config)
    else:
        topic = NewTopic(name, num_partitions=1, replication_factor=rf, config=config)
    for f in admin.create_topics([topic], operation_timeout=20).values():
        f.result(30)


def remote_bytes(tier, topic):
    return sum(size for name, size in tier.objects(topic).items() if name.endswith(".log"))


def uploads_logged(node, topic):
    return sum(1 for line in node.log().splitlines()
               if "segment uploaded to the cold tier" in line and f"{topic}-0" in line)


def manifest_epoch(tier, topic):
    """The writer's leader epoch the one manifest's key names."""
    names = [n for n in tier.objects(topic) if n.startswith("manifests/")]
    assert len(names) == 1, names
    return int(names[0].split("/")[1].split("-")[0])


def exact(c, topic):
    try:
        assert_tier_holds_exactly_its_manifest(c, topic)
        return True
    except AssertionError:
        return False


def test_only_the_leader_uploads_and_every_replica_trims_against_its_manifest(cluster):
    nodes, tier = cluster.nodes, cluster.tier
    create(nodes, "shared")
    leader = wait_for("3 in sync", settled(nodes, "shared", [1, 2, 3]), 30)
    n = 16 * MIB // RECORD
    assert produce(through(nodes), "shared", 0, n) == n
    wait_for("the tier holds the older segments",
             lambda: remote_bytes(tier, "shared") >= 12 * MIB, 60)
    for node in nodes:
        wait_for(f"broker {node.node_id}'s copy trimmed",
                 lambda: local_bytes(node, "shared") <= LOCAL_BOUND, 30)
    assert uploads_logged(nodes[leader - 1], "shared") > 0
    for node in nodes:
        if node.node_id != leader:
            assert uploads_logged(node, "shared") == 0, f"follower {node.node_id} uploaded"
    wait_for("the tier holds exactly its manifest", lambda: exact(cluster, "shared"), 20)
    assert watermarks(through(nodes), "shared") == (0, n)
    consume(through(nodes), "shared", 0, n)


def test_a_new_leader_serves_the_cold_range_and_uploads_on_in_its_epoch(cluster):
    nodes, tier = cluster.nodes, cluster.tier
    leader = wait_for("3 in sync", settled(nodes, "shared", [1, 2, 3]), 30)
    _, sent = watermarks(through(nodes), "shared")
    assert sent > 0, "runs after the test above"
    epoch_before = manifest_epoch(tier, "shared")
    victim = nodes[leader - 1]
    victim.kill()
    try:
        survivors = [n for n in nodes if n is not victim]
        new_leader = wait_for(
            "a new leader",
            lambda: (lambda s: s[0] not in (-1, leader) and s[0])(state(survivors[0], "shared")),
            SESSION_TIMEOUT_S + 10)
        # The cold range from the new leader, then more records it uploads itself.
        consume(through(survivors), "shared", 0, sent)
        more = 6 * MIB // RECORD
        # A second idempotent producer, through another broker: its id is not the first
        # one's (the controller hands out the ids), so the partition's producer state,
        # moved to the new leader, does not refuse its sequence numbers.
        assert produce(through(survivors), "shared", sent, more) == more
        wait_for("the new leader uploads",
                 lambda: uploads_logged(nodes[new_leader - 1], "shared") > 0, 60)
        wait_for("a manifest of the new leader's epoch",
                 lambda: manifest_epoch(tier, "shared") > epoch_before, 30)
    finally:
        victim.start()
    wait_for("the returning broker back in sync", settled(nodes, "shared", [1, 2, 3]), 60)
    wait_for("its copy trimmed against the new manifest",
             lambda: local_bytes(victim, "shared") <= LOCAL_BOUND, 30)
    wait_for("the tier holds exactly its manifest", lambda: exact(cluster, "shared"), 20)
    assert watermarks(through(nodes), "shared") == (0, sent + more)
    consume(through(nodes), "shared", 0, sent + more)


def test_a_new_replica_copies_only_the_leaders_local_log(cluster):
    from kafka import TopicPartition as KTopicPartition
    from kafka.admin import KafkaAdminClient
    nodes, tier = cluster.nodes, cluster.tier
    create(nodes, "grown", assignment=[[1, 2]])
    wait_for("1 and 2 in sync", settled(nodes, "grown", [1, 2]), 30)
    n = 12 * MIB // RECORD
    assert produce(through(nodes), "grown", 0, n) == n
    wait_for("the tier holds the older segments",
             lambda: remote_bytes(tier, "grown") >= 8 * MIB, 60)
    for node in nodes[:2]:
        wait_for(f"broker {node.node_id}'s copy trimmed",
                 lambda: local_bytes(node, "grown") <= LOCAL_BOUND, 30)
    admin = KafkaAdminClient(bootstrap_servers=through(nodes).bootstrap)
    try:
        tp = KTopicPartition("grown", 0)
        assert admin.alter_partition_reassignments({tp: [1, 2, 3]}).get(tp) is None
        wait_for("1, 2 and 3 in sync", settled(nodes, "grown", [1, 2, 3]), 60)
    finally:
        admin.close()
    # Broker 3 started at the leader's local start: it never held the cold range.
    third = nodes[2]
    assert local_bytes(third, "grown") <= LOCAL_BOUND
    assert "the leader's log starts past this log's end" in third.log()
    assert watermarks(through(nodes), "grown") == (0, n)
    consume(through(nodes), "grown", 0, n)
