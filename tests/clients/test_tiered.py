"""Tiered storage through a real broker (`spate serve --config` with a `[tier]` table) and
unchanged clients (confluent-kafka/librdkafka), each test twice: with the filesystem tier, and
with the S3 tier against moto's S3 server (started on 127.0.0.1 by the module, stopped by PID):

- 200 MiB produced to a topic of 1 MiB segments with local.retention.bytes = 8 MiB: the
  local directory keeps about 8 MiB plus the active segment, the tier the rest, and a
  consumer from offset 0 reads every record in order with its content, before and after a
  restart; ListOffsets by time finds a record that is only in the tier;
- the broker SIGKILLed (by a failpoint) at each step of upload -> manifest -> local delete,
  and between a remote segment's manifest change and its deletion: after a restart every
  acknowledged record that retention keeps is served, and the tier holds exactly what its
  manifest names (no orphan, no temp file);
- a cold range read again comes from the local chunk cache (read while the tier is cut off),
  which a restart empties;
- the tier unreachable (its directory moved away; moto stopped with SIGSTOP): produce goes on,
  nothing local is deleted that the tier lacks, a Fetch of a remote offset gets
  KAFKA_STORAGE_ERROR within seconds; the tier back, uploads catch up;
- retention.bytes removes remote segments and moves ListOffsets earliest;
- a corrupted remote object is refused by its frame checksums and reported;
- refusals: remote.storage.enable without a tier, on a compacted topic, turned off again;
  a bad [tier] table at start.

Tiering on a cluster is in test_tiered_cluster.py.
"""

import subprocess
import time
import uuid

import confluent_kafka as ck
import confluent_kafka.admin as cka
import pytest

from conftest import SPATE_BIN, Broker, free_port
from tier_util import (CREDENTIALS, MIB, RECORD, FsTier, Moto, S3Tier,
                       assert_tier_holds_exactly_its_manifest, consume, produce, segment_object,
                       wait_until, watermarks)

BROKER_KAFKA = """\
[kafka]
group_initial_rebalance_delay_ms = 100

"""

@pytest.fixture(scope="module")
def moto(module_dir):
    m = Moto(module_dir)
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(params=["fs", "s3"])
def tiered(request, tmp_path):
    (tmp_path / "tiered").mkdir()
    b = Broker(tmp_path / "tiered")
    if request.param == "fs":
        b.tier = FsTier(tmp_path / "tiered" / "cold")
    else:
        b.tier = S3Tier(request.getfixturevalue("moto"))
        b.env.update(CREDENTIALS)
    b.config_path.write_text(BROKER_KAFKA + b.tier.config())
    request.node._spate_broker = b
    b.start()
    try:
        yield b
    finally:
        b.teardown()


def create(b, name, **configs):
    a = cka.AdminClient({"bootstrap.servers": b.bootstrap})
    conf = {"segment.bytes": str(MIB), "remote.storage.enable": "true"}
    conf.update({k.replace("_", "."): str(v) for k, v in configs.items()})
    for f in a.create_topics([cka.NewTopic(name, 1, 1, config=conf)]).values():
        f.result(15)


def local_log_bytes(b, topic):
    d = b.data_dir / "topics" / topic / "0"
    return sum(f.stat().st_size for f in d.glob("*.log"))


def remote_log_bytes(b, topic):
    return sum(size for name, size in b.tier.objects(topic).items() if name.endswith(".log"))


def topic_id(b, topic):
    from kafka.admin import KafkaAdminClient
    a = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    try:
        (d,) = a.describe_topics([topic])
    finally:
        a.close()
    return uuid.UUID(str(d["topic_id"])).bytes


def fetch_error(b, topic, offset):
    import wire
    conn = wire.Connection(b.bootstrap)
    try:
        error, _, _ = wire.fetch_v16(conn, topic_id(b, topic), 0, offset)
        return error
    finally:
        conn.close()


def tier_status(b, *args):
    r = subprocess.run([SPATE_BIN, "tier", "status", *args, "-b", b.bootstrap],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def status_row(b, topic):
    """(log start, local start, tier end, high watermark, local bytes, remote bytes, lag)."""
    for line in tier_status(b, topic).splitlines():
        fields = line.split()
        if fields and fields[0] == f"{topic}-0":
            return tuple(int(f) for f in fields[1:8])
    raise AssertionError(f"no row for {topic}-0")


def test_a_cold_backlog_is_read_back_from_the_tier_in_order_also_after_a_restart(tiered):
    b = tiered
    create(b, "cold", local_retention_bytes=8 * MIB)
    n = 200 * MIB // RECORD
    assert produce(b, "cold", 0, n) == n
    # The local copy shrinks to about local.retention.bytes plus the active segment.
    wait_until("the local copy at local retention",
               lambda: local_log_bytes(b, "cold") <= 10 * MIB, 60)
    remote = remote_log_bytes(b, "cold")
    assert remote + local_log_bytes(b, "cold") >= n * RECORD, (remote, n * RECORD)
    assert remote >= 180 * MIB, remote
    assert watermarks(b, "cold") == (0, n)
    consume(b, "cold", 0, n, timeout=240)
    segs = assert_tier_holds_exactly_its_manifest(b, "cold")
    assert segs[0][0] == 0
    # spate tier status says the same.
    assert "answering" in tier_status(b)
    start, local_start, tier_end, hw, local, remote_bytes, lag = status_row(b, "cold")
    assert (start, tier_end, hw, remote_bytes) == (0, segs[-1][1], n, remote)
    assert local_start <= tier_end and lag == n - tier_end and local <= 10 * MIB
    # By time: a record only in the tier.
    c = ck.Consumer({"bootstrap.servers": b.bootstrap, "group.id": "tiered-time"})
    try:
        first = c.offsets_for_times([ck.TopicPartition("cold", 0, 0)], timeout=10)[0]
        assert first.offset == 0, first
    finally:
        c.close()
    b.restart()
    assert watermarks(b, "cold") == (0, n)
    consume(b, "cold", 0, n, timeout=240)
    assert "cold tier manifest loaded" in b.log()


FAILPOINTS = ["tier-after-log-object", "tier-before-manifest", "tier-after-manifest",
              "tier-after-local-delete", "tier-before-remote-delete"]


def test_a_sigkill_at_each_step_of_tiering_loses_nothing_and_leaves_no_orphan(tiered):
    b = tiered
    create(b, "crashy", local_retention_bytes=2 * MIB, retention_bytes=12 * MIB)
    sent = 0
    for point in FAILPOINTS:
        b.stop()
        b.env["SPATE_FAILPOINT"] = f"{point}@2"
        b.start()
        # Produce until the failpoint kills the broker (bounded).
        deadline = time.monotonic() + 60
        while b.proc.poll() is None:
            assert time.monotonic() < deadline, f"{point} never reached"
            sent += produce(b, "crashy", sent, 2048)
            time.sleep(0.3)
        assert b.proc.returncode == -9, (point, b.proc.returncode)
        assert f'failpoint reached: the process kills itself failpoint="{point}"' in b.log()
        del b.env["SPATE_FAILPOINT"]
        b.start()
        # The first tier pass removes what the crash left half done, and retention (nothing
        # is produced meanwhile) settles.
        wait_until(f"after {point}: the tier holds only its manifest's objects",
                   lambda: _no_orphans(b, "crashy"), 20)
        time.sleep(1.0)
        low, high = watermarks(b, "crashy")
        # Every record retention keeps is there, at its offset, with its content.
        assert high >= sent, (point, high, sent)
        consume(b, "crashy", low, high - low)
        assert _no_orphans(b, "crashy")
        sent = high


def _no_orphans(b, topic):
    try:
        assert_tier_holds_exactly_its_manifest(b, topic)
        return True
    except Exception:  # a manifest listed may be replaced before it is read
        return False


def uploaded_backlog(b, topic, mib, **configs):
    """A tiered topic (local retention 2 MiB) given `mib` MiB of records, once the local copy
    is trimmed to about its local retention (the rest uploaded); the records' count."""
    create(b, topic, local_retention_bytes=2 * MIB, **configs)
    n = mib * MIB // RECORD
    assert produce(b, topic, 0, n) == n
    wait_until("uploaded", lambda: local_log_bytes(b, topic) <= 4 * MIB, 30)
    return n


def test_an_unreachable_tier_pauses_tiering_and_fails_remote_reads_at_once(tiered):
    b = tiered
    n = uploaded_backlog(b, "away", 8)
    segs = assert_tier_holds_exactly_its_manifest(b, "away")
    remote_end = segs[-1][1]
    b.tier.cut()
    try:
        # Produce goes on; nothing local is deleted that the tier does not have (no upload
        # can succeed, so the manifest still ends at `remote_end`).
        assert produce(b, "away", n, n) == n
        time.sleep(3)
        local_first = min(int(f.name[:20]) for f in
                          (b.data_dir / "topics" / "away" / "0").glob("*.log"))
        assert local_first <= remote_end, (local_first, remote_end)
        assert local_log_bytes(b, "away") >= 8 * MIB
        wait_until("tiering paused, said", lambda: "tiering paused" in b.log(), 10)
        # Within the fetch's max wait (100 ms, raised to the 500 ms floor), not the tier's
        # 10 s timeout: KAFKA_STORAGE_ERROR, retriable.
        started = time.monotonic()
        assert fetch_error(b, "away", 0) == 56
        assert time.monotonic() - started < 5
        consume(b, "away", 2 * n - 10, 10)  # the local tail still reads
        said = tier_status(b)
        assert "KafkaStorageError" in said and "in the last minute" in said, said
        assert status_row(b, "away")[6] > 0  # offsets not uploaded
    finally:
        b.tier.restore()
    wait_until("uploads caught up", lambda: local_log_bytes(b, "away") <= 4 * MIB, 30)
    consume(b, "away", 0, 2 * n)
    assert_tier_holds_exactly_its_manifest(b, "away")


def test_a_cold_range_read_again_comes_from_the_chunk_cache(tiered):
    b = tiered
    n = uploaded_backlog(b, "reread", 6)
    segs = assert_tier_holds_exactly_its_manifest(b, "reread")
    remote_end = segs[-1][1]
    local_start = min(int(f.name[:20]) for f in
                      (b.data_dir / "topics" / "reread" / "0").glob("*.log"))
    assert local_start > 0
    consume(b, "reread", 0, n)
    cache = b.data_dir / "tier-cache"
    cached = sum(f.stat().st_size for f in cache.iterdir())
    assert cached >= local_start * RECORD, (cached, local_start)
    # The tier gone, the range read before still reads: from the cache.
    b.tier.cut()
    try:
        consume(b, "reread", 0, min(local_start, remote_end))
    finally:
        b.tier.restore()
    # Emptied at a restart, and read from the tier again.
    b.restart()
    assert not any(cache.iterdir())
    consume(b, "reread", 0, n)


def test_retention_removes_remote_segments_and_moves_the_earliest_offset(tiered):
    b = tiered
    uploaded_backlog(b, "aging", 24)
    a = cka.AdminClient({"bootstrap.servers": b.bootstrap})
    res = cka.ConfigResource(cka.ResourceType.TOPIC, "aging", incremental_configs=[
        cka.ConfigEntry("retention.bytes", str(8 * MIB),
                        incremental_operation=cka.AlterConfigOpType.SET)])
    for f in a.incremental_alter_configs([res]).values():
        f.result(15)
    wait_until("earliest moved", lambda: watermarks(b, "aging")[0], 30)
    wait_until("remote segments removed", lambda: remote_log_bytes(b, "aging") <= 8 * MIB, 30)
    time.sleep(0.5)
    segs = assert_tier_holds_exactly_its_manifest(b, "aging")
    low = watermarks(b, "aging")[0]
    assert segs and segs[0][0] == low, (segs[:1], low)
    consume(b, "aging", low, 100)
    assert "retention deleted a remote segment" in b.log()


def test_a_corrupted_remote_object_is_detected_and_reported(tiered):
    b = tiered
    uploaded_backlog(b, "damaged", 6)
    first = assert_tier_holds_exactly_its_manifest(b, "damaged")[0]
    assert first[0] == 0
    name = segment_object(first[0], first[1])
    raw = bytearray(b.tier.read("damaged", name))
    raw[5000] ^= 0xFF
    b.tier.write("damaged", name, bytes(raw))
    assert fetch_error(b, "damaged", 0) == 56
    assert "corrupt" in b.log()


@pytest.mark.parametrize("tiered", ["fs"], indirect=True)
def test_tiering_refusals(tiered, broker):
    def refused(b, config, *needles):
        a = cka.AdminClient({"bootstrap.servers": b.bootstrap})
        f = a.create_topics([cka.NewTopic(f"bad-{uuid.uuid4().hex[:6]}", 1, 1,
                                          config=config)])
        with pytest.raises(ck.KafkaException) as e:
            list(f.values())[0].result(15)
        err = e.value.args[0]
        assert err.code() == ck.KafkaError.INVALID_CONFIG, err
        for needle in needles:
            assert needle in err.str(), (needle, err.str())

    refused(broker, {"remote.storage.enable": "true"}, "remote.storage.enable", "--tier-dir")
    refused(tiered, {"remote.storage.enable": "true", "cleanup.policy": "compact"},
            "compact")
    refused(tiered, {"remote.storage.enable": "true", "retention.bytes": "1000",
                     "local.retention.bytes": "5000"}, "local.retention.bytes")
    create(tiered, "on")
    a = cka.AdminClient({"bootstrap.servers": tiered.bootstrap})
    res = cka.ConfigResource(cka.ResourceType.TOPIC, "on", incremental_configs=[
        cka.ConfigEntry("remote.storage.enable", "false",
                        incremental_operation=cka.AlterConfigOpType.SET)])
    with pytest.raises(ck.KafkaException) as e:
        list(a.incremental_alter_configs([res]).values())[0].result(15)
    assert "without deleting remote data" in e.value.args[0].str()
    assert "remote.log.delete.on.disable=true" in e.value.args[0].str()


def alter(b, topic, configs):
    a = cka.AdminClient({"bootstrap.servers": b.bootstrap})
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic, incremental_configs=[
        cka.ConfigEntry(k, v, incremental_operation=cka.AlterConfigOpType.SET)
        for k, v in configs.items()])
    list(a.incremental_alter_configs([res]).values())[0].result(15)


def tier_objects(b, topic):
    """The partition's objects in the tier; none once its place there is gone."""
    try:
        return b.tier.objects(topic)
    except AssertionError:  # a filesystem tier whose partition directory went too
        return {}


def test_copy_disable_stops_uploads_and_turning_tiering_off_removes_the_remote_data(tiered):
    b = tiered
    create(b, "off", local_retention_bytes=2 * MIB)
    n = 12 * MIB // RECORD
    assert produce(b, "off", 0, n) == n
    wait_until("the older segments in the tier", lambda: remote_log_bytes(b, "off") >= 8 * MIB,
               60)
    wait_until("the local copy at local retention",
               lambda: local_log_bytes(b, "off") <= 4 * MIB + 256 * 1024, 30)
    # Read only (KIP-950): no more uploads, local retention follows retention.* (no limit
    # here), and the remote range still reads.
    alter(b, "off", {"remote.log.copy.disable": "true"})
    time.sleep(0.5)
    remote_before = tier_objects(b, "off")
    more = 6 * MIB // RECORD
    assert produce(b, "off", n, more) == more
    time.sleep(2)  # ten tier passes
    assert tier_objects(b, "off") == remote_before, "uploaded with remote.log.copy.disable"
    assert local_log_bytes(b, "off") >= 6 * MIB, "deleted locally what the tier lacks"
    assert watermarks(b, "off") == (0, n + more)
    consume(b, "off", 0, n + more)
    assert "local retention waits" not in b.log()
    # Off, with the remote data deleted: the log starts at its local start.
    alter(b, "off", {"remote.storage.enable": "false", "remote.log.delete.on.disable": "true"})
    wait_until("the tier emptied of the partition", lambda: not tier_objects(b, "off"), 30)
    pdir = b.data_dir / "topics" / "off" / "0"
    local_start = min(int(p.name[:20]) for p in pdir.glob("*.log"))
    assert local_start > 0
    wait_until("the log start at the local start",
               lambda: watermarks(b, "off") == (local_start, n + more), 10)
    consume(b, "off", local_start, n + more - local_start)
    assert not (pdir / "remote-manifest").exists()
    assert "tiering turned off" in b.log()
    b.restart()
    assert watermarks(b, "off") == (local_start, n + more)
    consume(b, "off", local_start, n + more - local_start)
    # Produce goes on, and nothing is uploaded.
    assert produce(b, "off", n + more, 1024) == 1024
    time.sleep(1)
    assert not tier_objects(b, "off")


@pytest.mark.parametrize("table,says", [
    ('kind = "fs"', "tier.path"),
    ('kind = "tape"\npath = "/tmp/x"', "not a tier Spate has"),
    ('kind = "s3"', "tier.bucket"),
])
def test_a_bad_tier_table_is_refused_at_start_naming_the_key(table, says, tmp_path):
    cfg = tmp_path / "spate.toml"
    cfg.write_text(f"[tier]\n{table}\n")
    r = subprocess.run([SPATE_BIN, "serve", "--data-dir", str(tmp_path / "d"), "--listen",
                        f"127.0.0.1:{free_port()}", "--shards", "1", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert says in r.stderr, r.stderr


def test_a_segment_larger_than_a_part_is_uploaded_whole_and_reads_back(tiered):
    # 20 MiB segments: S3 takes them as multipart uploads of 8 MiB parts.
    b = tiered
    create(b, "big", segment_bytes=20 * MIB, local_retention_bytes=MIB)
    n = 45 * MIB // RECORD
    assert produce(b, "big", 0, n) == n
    wait_until("two segments in the tier", lambda: remote_log_bytes(b, "big") >= 38 * MIB, 60)
    wait_until("the older manifest removed", lambda: _no_orphans(b, "big"), 20)
    segs = assert_tier_holds_exactly_its_manifest(b, "big")
    assert [size for _, _, size in segs] == [b.tier.objects("big")[segment_object(base, nxt)]
                                             for base, nxt, _ in segs]
    wait_until("the local copy trimmed", lambda: local_log_bytes(b, "big") <= 21 * MIB, 30)
    consume(b, "big", 0, n)
