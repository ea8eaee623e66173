"""8. Admin APIs with confluent-kafka, kafka-python and kcat: topics (create with configs,
describe/alter configs, create partitions, delete), cluster description, and consumer groups
(list, describe, delete once empty)."""

import json

import confluent_kafka as ck
import confluent_kafka.admin as cka
import kafka as kp
import kafka.admin as kpa
import kafka.errors as kerr
import pytest

from kutil import Deadline, ck_conf, kcat, read_all, unique, wait_until

RETENTION_MS_DEFAULT = "604800000"  # docs/OPERATIONS.md: [log] retention_ms
SEGMENT_BYTES_DEFAULT = "1073741824"  # docs/OPERATIONS.md: [log] segment_bytes


def ck_admin(broker):
    return cka.AdminClient({"bootstrap.servers": broker.bootstrap})


def ck_describe(a, topic):
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic)
    return a.describe_configs([res], request_timeout=10)[res].result(10)


def ck_topics(a):
    return a.list_topics(timeout=10).topics


def kcat_metadata(broker):
    return json.loads(kcat(["-b", broker.bootstrap, "-L", "-J", "-m", "10"]).stdout)


def test_topic_admin_confluent(broker):
    a = ck_admin(broker)
    topic = unique("adm-ck")
    fs = a.create_topics([cka.NewTopic(topic, num_partitions=2, replication_factor=1,
                                       config={"retention.ms": "123456",
                                               "segment.bytes": "1048576"})],
                         operation_timeout=10, request_timeout=15)
    fs[topic].result(15)
    # creating it again is an error
    fs = a.create_topics([cka.NewTopic(topic, num_partitions=2, replication_factor=1)],
                         request_timeout=15)
    with pytest.raises(ck.KafkaException) as e:
        fs[topic].result(15)
    assert e.value.args[0].code() == ck.KafkaError.TOPIC_ALREADY_EXISTS, e.value

    md = ck_topics(a)
    assert topic in md and len(md[topic].partitions) == 2
    assert all(p.leader == 0 for p in md[topic].partitions.values())

    # describe: set values are dynamic topic configs, others defaults
    cfg = ck_describe(a, topic)
    for key in ("retention.ms", "retention.bytes", "segment.bytes", "segment.ms"):
        assert key in cfg, sorted(cfg)
    assert cfg["retention.ms"].value == "123456"
    assert cfg["segment.bytes"].value == "1048576"
    assert cfg["retention.ms"].source == cka.ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert not cfg["retention.ms"].is_default
    assert cfg["retention.bytes"].value == "-1"
    assert cfg["retention.bytes"].is_default

    # incremental alter: SET one key, the other set key is kept
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic, incremental_configs=[
        cka.ConfigEntry("retention.ms", "654321",
                        incremental_operation=cka.AlterConfigOpType.SET)])
    a.incremental_alter_configs([res])[res].result(10)
    cfg = ck_describe(a, topic)
    assert cfg["retention.ms"].value == "654321"
    assert cfg["segment.bytes"].value == "1048576"
    # DELETE: back to the default
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic, incremental_configs=[
        cka.ConfigEntry("segment.bytes", None,
                        incremental_operation=cka.AlterConfigOpType.DELETE)])
    a.incremental_alter_configs([res])[res].result(10)
    cfg = ck_describe(a, topic)
    assert cfg["segment.bytes"].value == SEGMENT_BYTES_DEFAULT
    assert cfg["segment.bytes"].is_default
    assert cfg["retention.ms"].value == "654321"
    # an unknown key is refused and changes nothing
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic, incremental_configs=[
        cka.ConfigEntry("no.such.key", "1", incremental_operation=cka.AlterConfigOpType.SET)])
    with pytest.raises(ck.KafkaException):
        a.incremental_alter_configs([res])[res].result(10)
    assert ck_describe(a, topic)["retention.ms"].value == "654321"

    # the altered config survives a restart
    broker.restart()
    a = ck_admin(broker)
    assert ck_describe(a, topic)["retention.ms"].value == "654321"

    # create partitions: 2 -> 5, and the new ones take records
    a.create_partitions([cka.NewPartitions(topic, 5)], request_timeout=15)[topic].result(15)
    wait_until(lambda: len(ck_topics(a)[topic].partitions) == 5, 10, "5 partitions")
    p = ck.Producer(ck_conf(broker.bootstrap))
    for part in range(5):
        p.produce(topic, value=f"v{part}".encode(), partition=part)
    assert p.flush(15) == 0
    recs = read_all("confluent", broker.bootstrap, topic)
    assert sorted((r.partition, r.value) for r in recs) == \
        [(i, f"v{i}".encode()) for i in range(5)]
    # fewer partitions is refused
    with pytest.raises(ck.KafkaException) as e:
        a.create_partitions([cka.NewPartitions(topic, 3)],
                            request_timeout=15)[topic].result(15)
    assert e.value.args[0].code() == ck.KafkaError.INVALID_PARTITIONS, e.value

    # delete: gone from metadata (all-topics metadata does not auto-create)
    a.delete_topics([topic], operation_timeout=10, request_timeout=15)[topic].result(15)
    wait_until(lambda: topic not in ck_topics(a), 10, f"{topic} gone from metadata")
    assert topic not in [t["topic"] for t in kcat_metadata(broker)["topics"]]
    # deleting it again: unknown topic
    with pytest.raises(ck.KafkaException) as e:
        a.delete_topics([topic], request_timeout=15)[topic].result(15)
    assert e.value.args[0].code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART, e.value


def test_topic_admin_kafka_python(broker):
    a = kp.KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    try:
        topic = unique("adm-kp")
        a.create_topics({topic: {"num_partitions": 2, "replication_factor": 1,
                                 "configs": {"retention.ms": "222222"}}})
        with pytest.raises(kerr.TopicAlreadyExistsError):
            a.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}})
        assert topic in a.list_topics()
        (desc,) = [t for t in a.describe_topics([topic])]
        assert len(desc["partitions"]) == 2

        def describe():
            r = a.describe_configs([kpa.ConfigResource("TOPIC", topic)], config_filter="all")
            return {k: v["value"] for k, v in r["topic"][topic].items()}

        cfg = describe()
        assert cfg["retention.ms"] == "222222"
        assert cfg["retention.bytes"] == "-1"
        # non-incremental AlterConfigs (the client carries over other modified keys)
        r = a.alter_configs([kpa.ConfigResource("TOPIC", topic, {"retention.ms": "333333"})],
                            incremental=False)
        assert r == {"topic": {topic: "OK"}}, r
        assert describe()["retention.ms"] == "333333"
        # IncrementalAlterConfigs
        r = a.alter_configs([kpa.ConfigResource("TOPIC", topic, {"retention.ms": "444444",
                                                                 "segment.ms": "3600000"})],
                            incremental=True)
        assert r == {"topic": {topic: "OK"}}, r
        cfg = describe()
        assert (cfg["retention.ms"], cfg["segment.ms"]) == ("444444", "3600000")

        a.create_partitions({topic: 3})
        wait_until(lambda: len(a.describe_topics([topic])[0]["partitions"]) == 3, 10,
                   "3 partitions")
        a.delete_topics([topic])
        wait_until(lambda: topic not in a.list_topics(), 10, f"{topic} gone")

        cl = a.describe_cluster()
        assert [b["broker_id"] for b in cl["brokers"]] == [0], cl
        assert cl["brokers"][0]["host"] == "127.0.0.1"
        assert cl["brokers"][0]["port"] == broker.port
        assert cl["controller_id"] == 0, cl
        assert cl["cluster_id"], cl
    finally:
        a.close()


def test_cluster_and_topic_listing(broker):
    a = ck_admin(broker)
    topics = [unique("ls") for _ in range(3)]
    fs = a.create_topics([cka.NewTopic(t, num_partitions=i + 1, replication_factor=1)
                          for i, t in enumerate(topics)], request_timeout=15)
    for f in fs.values():
        f.result(15)
    d = a.describe_cluster(request_timeout=10).result(10)
    assert [n.id for n in d.nodes] == [0], d.nodes
    assert (d.nodes[0].host, d.nodes[0].port) == ("127.0.0.1", broker.port)
    assert d.controller is not None and d.controller.id == 0
    assert d.cluster_id
    md = ck_topics(a)
    for i, t in enumerate(topics):
        assert len(md[t].partitions) == i + 1
    kmd = kcat_metadata(broker)
    assert [b["id"] for b in kmd["brokers"]] == [0]
    assert kmd["brokers"][0]["name"] == broker.bootstrap
    kt = {t["topic"]: len(t["partitions"]) for t in kmd["topics"]}
    for i, t in enumerate(topics):
        assert kt[t] == i + 1
    # the cluster id is stable across a restart
    broker.restart()
    a = ck_admin(broker)
    assert a.describe_cluster(request_timeout=10).result(10).cluster_id == d.cluster_id
    assert set(topics) <= set(ck_topics(a))


# ---------------------------------------------------------------------------------------------
# groups


def run_member(broker, group, topic, count):
    """A confluent consumer in `group` that consumed and committed `count` records (open)."""
    c = ck.Consumer(ck_conf(broker.bootstrap, **{
        "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 200, "client.id": "member-1"}))
    c.subscribe([topic])
    got = 0
    d = Deadline(20, f"consuming {count} in {group}")
    while got < count:
        d.check()
        m = c.poll(0.1)
        if m is None:
            continue
        assert not m.error(), m.error()
        c.commit(message=m, asynchronous=False)
        got += 1
    return c


def setup_group_topic(broker, topic):
    a = ck_admin(broker)
    a.create_topics([cka.NewTopic(topic, num_partitions=2, replication_factor=1)])[topic] \
        .result(15)
    p = ck.Producer(ck_conf(broker.bootstrap))
    for i in range(20):
        p.produce(topic, value=f"v{i}".encode(), partition=i % 2)
    assert p.flush(15) == 0
    return a


def test_groups_confluent(broker):
    topic, group = unique("gadm-ck"), unique("gadm-ck")
    a = setup_group_topic(broker, topic)
    c = run_member(broker, group, topic, 10)
    try:
        # active: Stable, one member holding both partitions
        (g,) = a.describe_consumer_groups([group], request_timeout=10).values()
        g = g.result(10)
        assert g.group_id == group
        assert g.state == ck.ConsumerGroupState.STABLE, g.state
        assert g.partition_assignor == "range" or g.partition_assignor == "roundrobin"
        assert len(g.members) == 1 and g.members[0].client_id == "member-1"
        assert sorted(tp.partition for tp in g.members[0].assignment.topic_partitions) == [0, 1]
        assert g.coordinator.id == 0
        # a group with members cannot be deleted
        with pytest.raises(ck.KafkaException) as e:
            a.delete_consumer_groups([group], request_timeout=10)[group].result(10)
        assert e.value.args[0].code() == ck.KafkaError.NON_EMPTY_GROUP, e.value
    finally:
        c.close()
    listed = a.list_consumer_groups(request_timeout=10).result(10)
    assert not listed.errors, listed.errors
    mine = [x for x in listed.valid if x.group_id == group]
    assert len(mine) == 1 and mine[0].state == ck.ConsumerGroupState.EMPTY, mine
    (g,) = a.describe_consumer_groups([group], request_timeout=10).values()
    g = g.result(10)
    assert g.state == ck.ConsumerGroupState.EMPTY and g.members == [], g
    # committed offsets are there until the group is deleted
    offs = a.list_consumer_group_offsets([ck.ConsumerGroupTopicPartitions(group)])
    tps = offs[group].result(10).topic_partitions
    assert sum(tp.offset for tp in tps if tp.topic == topic) == 10, tps

    a.delete_consumer_groups([group], request_timeout=10)[group].result(10)
    listed = a.list_consumer_groups(request_timeout=10).result(10)
    assert group not in [x.group_id for x in listed.valid]
    c2 = ck.Consumer(ck_conf(broker.bootstrap, **{"group.id": group}))
    try:
        tps = c2.committed([ck.TopicPartition(topic, 0), ck.TopicPartition(topic, 1)],
                           timeout=10)
        assert [tp.offset for tp in tps] == [ck.OFFSET_INVALID] * 2, tps
    finally:
        c2.close()


def test_groups_kafka_python(broker):
    topic, group = unique("gadm-kp"), unique("gadm-kp")
    setup_group_topic(broker, topic)
    a = kp.KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    try:
        c = run_member(broker, group, topic, 10)
        try:
            g = a.describe_groups([group])
            g = g[group] if isinstance(g, dict) else g[0]
            assert g["group_state"] == "Stable", g
            assert len(g["members"]) == 1, g
            r = dict(a.delete_groups([group]))
            assert r[group] == "NonEmptyGroupError", r
        finally:
            c.close()
        groups = {x["group_id"]: x for x in a.list_groups()}
        assert group in groups, groups
        assert groups[group]["protocol_type"] == "consumer"
        g = a.describe_groups([group])
        g = g[group] if isinstance(g, dict) else g[0]
        assert g["group_state"] == "Empty" and g["members"] == [], g
        offs = a.list_group_offsets({group: None})[group]
        assert sum(om.offset for tp, om in offs.items() if tp.topic == topic) == 10, offs
        r = dict(a.delete_groups([group]))
        assert r == {group: "OK"}, r
        wait_until(lambda: group not in [x["group_id"] for x in a.list_groups()], 5,
                   "group gone from ListGroups")
        offs = a.list_group_offsets({group: None})[group]
        assert not {tp: om for tp, om in offs.items() if om.offset >= 0}, offs
    finally:
        a.close()



def test_offset_delete_kafka_python(broker):
    """OffsetDelete (kafka-python's delete_group_offsets; confluent-kafka's Python API has no
    call for it) removes one partition's committed offset, and it stays removed after a
    restart; while a member subscribes to the topic, the offset is kept with
    GROUP_SUBSCRIBED_TO_TOPIC."""
    topic, group = unique("odel"), unique("odel")
    a = setup_group_topic(broker, topic)
    tp0 = kp.TopicPartition(topic, 0)

    def committed():
        offs = a.list_consumer_group_offsets([ck.ConsumerGroupTopicPartitions(
            group, [ck.TopicPartition(topic, 0), ck.TopicPartition(topic, 1)])])
        return {tp.partition: tp.offset for tp in offs[group].result(10).topic_partitions}

    def delete_partition_0():
        adm = kpa.KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            return adm.delete_group_offsets(group, [tp0])
        finally:
            adm.close()

    c = run_member(broker, group, topic, 10)
    try:
        assert delete_partition_0() == {tp0: kerr.GroupSubscribedToTopicError}
    finally:
        c.close()
    # Both partitions get a committed offset (the member may have read only one of them).
    a.alter_consumer_group_offsets([ck.ConsumerGroupTopicPartitions(
        group, [ck.TopicPartition(topic, 0, 3), ck.TopicPartition(topic, 1, 4)])])[group] \
        .result(10)
    assert committed() == {0: 3, 1: 4}

    assert delete_partition_0() == {tp0: kerr.NoError}
    assert committed() == {0: ck.OFFSET_INVALID, 1: 4}
    broker.restart()
    a = ck_admin(broker)
    assert committed() == {0: ck.OFFSET_INVALID, 1: 4}
    # A group that does not exist: GROUP_ID_NOT_FOUND for the whole request.
    adm = kpa.KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        with pytest.raises(kerr.GroupIdNotFoundError):
            adm.delete_group_offsets(unique("nope"), [tp0])
    finally:
        adm.close()


def test_describe_topic_partitions_log_dirs_and_producers_kafka_python(broker):
    """DescribeTopicPartitions pages through partitions with its cursor; DescribeLogDirs gives
    the data directory, its disk and each partition's size; DescribeProducers shows the
    idempotent producer that wrote a partition."""
    a_topic, b_topic = "dtp-a-" + unique("t"), "dtp-b-" + unique("t")
    a = ck_admin(broker)
    for t, n in ((a_topic, 3), (b_topic, 2)):
        a.create_topics([cka.NewTopic(t, num_partitions=n, replication_factor=1)])[t].result(15)
    p = ck.Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for i in range(10):
        p.produce(a_topic, value=b"x" * 1000, partition=1)
    assert p.flush(15) == 0

    adm = kpa.KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        # Pages of two partitions: a0 a1 | a2 b0 | b1, and an unknown topic flagged.
        seen, cursor, pages = [], None, 0
        while True:
            r = adm.describe_topic_partitions([b_topic, a_topic, "no-such-topic"],
                                              response_partition_limit=2, cursor=cursor)
            pages += 1
            for t in r["topics"]:
                if t["name"] == "no-such-topic":
                    assert t["error_code"] == 3, t
                    continue
                assert t["error_code"] == 0, t
                for part in t["partitions"]:
                    assert part["leader_id"] == 0 and part["isr_nodes"] == [0], part
                    seen.append((t["name"], part["partition_index"]))
            cursor = r["next_cursor"]
            if cursor is None:
                break
            assert pages < 10, r
        assert seen == [(a_topic, 0), (a_topic, 1), (a_topic, 2), (b_topic, 0), (b_topic, 1)]
        assert pages == 3, pages

        (dirs,) = adm.describe_log_dirs()
        (d,) = dirs["log_dirs"]
        assert d["error_code"] == 0 and d["log_dir"] == str(broker.data_dir), d
        assert d["total_bytes"] > 0 and 0 <= d["usable_bytes"] <= d["total_bytes"], d
        sizes = {(t["name"], q["partition_index"]): q["partition_size"]
                 for t in d["topics"] for q in t["partitions"]}
        assert sizes[(a_topic, 1)] >= 10 * 1000, sizes
        assert sizes[(a_topic, 0)] == 0 and (b_topic, 1) in sizes, sizes

        states = adm.describe_producers([kp.TopicPartition(a_topic, 1),
                                         kp.TopicPartition(a_topic, 0)])
        (producer,) = states[kp.TopicPartition(a_topic, 1)].active_producers
        assert producer.producer_id >= 0 and producer.producer_epoch >= 0, producer
        assert producer.last_sequence == 9, producer
        assert producer.last_timestamp > 0, producer
        assert states[kp.TopicPartition(a_topic, 0)].active_producers == []
    finally:
        adm.close()


def test_group_type_filter_and_unknown_group_kafka_python(broker):
    """ListGroups v5 filters by group type (every group here is classic); DescribeGroups v6
    answers an unknown group with GROUP_ID_NOT_FOUND (KIP-1043)."""
    topic, group = unique("gtype"), unique("gtype")
    setup_group_topic(broker, topic)
    c = run_member(broker, group, topic, 4)
    adm = kpa.KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        def listed(**kw):
            return [g for g in adm.list_groups(**kw) if g["group_id"] == group]

        assert len(listed(types_filter=["classic"])) == 1, adm.list_groups()
        assert listed(types_filter=["consumer"]) == []
        assert len(listed()) == 1
        missing = unique("nope")
        desc = adm.describe_groups([group, missing])
        assert desc[group]["error"] is None and desc[group]["group_state"] == "Stable", desc
        assert "GroupIdNotFound" in desc[missing]["error"], desc[missing]
    finally:
        adm.close()
        c.close()


def test_topic_ids_are_real_stable_across_a_restart_and_new_for_a_recreated_topic(broker):
    """Kafka's topic ids: confluent-kafka reads them from DescribeTopicPartitions (KIP-966),
    kafka-python from Metadata v10+. A zero id (what Spate answered before) breaks clients that
    track topics by id (KIP-848 consumers, topic-id Fetch)."""
    topic = unique("ids")
    a = cka.AdminClient(ck_conf(broker.bootstrap))
    a.create_topics([cka.NewTopic(topic, 2, 1)])[topic].result(15)

    def ck_id():
        d = a.describe_topics(ck.TopicCollection([topic]))[topic].result(15)
        return str(d.topic_id)

    def kp_id():
        c = kp.KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
        try:
            (d,) = c.describe_topics([topic])
            return d.get("topic_id")
        finally:
            c.close()

    first = ck_id()
    assert first and first != "AAAAAAAAAAAAAAAAAAAAAA" and first.strip("0-") != "", first
    kp_first = kp_id()
    assert kp_first not in (None, "", "00000000-0000-0000-0000-000000000000"), kp_first
    broker.restart()
    a = cka.AdminClient(ck_conf(broker.bootstrap))
    assert ck_id() == first, "an id must not change across a restart"
    assert kp_id() == kp_first
    a.delete_topics([topic])[topic].result(15)
    wait_until(lambda: topic not in a.list_topics(timeout=10).topics, 15, "topic deleted")
    a.create_topics([cka.NewTopic(topic, 1, 1)])[topic].result(15)
    wait_until(lambda: topic in a.list_topics(timeout=10).topics, 15, "topic recreated")
    assert ck_id() != first, "a topic created again is another topic"
