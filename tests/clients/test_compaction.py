"""Issue 19: a user topic with cleanup.policy=compact is compacted by the shard's cleaner, end
to end: a real broker, real clients (confluent-kafka and kafka-python), the files it wrote.

One broker for the module; its cleaner backs off 200 ms between idle passes (the default is
15 s, Kafka's log.cleaner.backoff.ms) so that the test waits seconds, not minutes. The SIGKILL
test has a broker of its own, its cleaner throttled so that a pass lasts seconds.
"""

import re
import subprocess
import time
from pathlib import Path

import confluent_kafka as ck
import confluent_kafka.admin as cka
import kafka as kp
import pytest

from conftest import SPATE_BIN, Broker
from kutil import ck_conf, read_all_confluent, unique, wait_until

KEYS = 100
UPDATES = 500
MIB = 1 << 20


@pytest.fixture(scope="module")
def broker(module_dir):
    b = Broker(module_dir)
    b.config_path.write_text(b.config_path.read_text() + "\n[log.cleaner]\nbackoff_ms = 200\n")
    b.start()
    try:
        yield b
    finally:
        b.teardown()


def create(broker, topic, config):
    a = cka.AdminClient(ck_conf(broker.bootstrap))
    fs = a.create_topics([cka.NewTopic(topic, num_partitions=1, replication_factor=1,
                                       config=config)], request_timeout=15)
    fs[topic].result(15)


def produce(broker, topic, pairs):
    """(key, value) pairs in order, value None a tombstone; batched by the producer."""
    p = ck.Producer(ck_conf(broker.bootstrap, **{"linger.ms": 5, "acks": "all"}))
    for k, v in pairs:
        while True:
            try:
                p.produce(topic, key=k, value=v)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(30) == 0


def value(key, update):
    return f"{key}:{update}:".encode() + b"v" * 100


def partition_dir(broker, topic):
    return Path(broker.data_dir) / "topics" / topic / "0"


def active_base(broker, topic):
    """The base offset of the partition's active (last) segment, from its file names."""
    bases = sorted(int(p.name[:20]) for p in partition_dir(broker, topic).glob("*.log"))
    return bases[-1]


def latest(pairs):
    out = {}
    for k, v in pairs:
        out[k] = v
    return {k: v for k, v in out.items() if v is not None}


def compacted_view(broker, topic):
    """Records from the beginning, and those below the active segment."""
    recs = read_all_confluent(broker.bootstrap, topic, timeout=60)
    base = active_base(broker, topic)
    return recs, [r for r in recs if r.offset < base], base


def check_latest(recs, want, what):
    last = {}
    for r in recs:
        last[r.key] = r.value
    live = {k: v for k, v in last.items() if v is not None}
    assert live == want, f"{what}: {len(live)} live keys, want {len(want)}"
    offsets = [r.offset for r in recs]
    assert offsets == sorted(set(offsets)), f"{what}: offsets not increasing"


@pytest.fixture(scope="module")
def table(broker):
    """100 keys x 500 updates on 1 MiB segments, then tombstones for keys 0-9 and another
    round for the others (so the tombstones' segment closes), compacted."""
    topic = unique("table")
    create(broker, topic, {"cleanup.policy": "compact", "segment.bytes": str(MIB),
                           "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "1000"})
    pairs = [(f"k{k:03}".encode(), value(k, u)) for u in range(UPDATES) for k in range(KEYS)]
    pairs += [(f"k{k:03}".encode(), None) for k in range(10)]
    pairs += [(f"k{k:03}".encode(), value(k, UPDATES + u)) for u in range(150)
              for k in range(10, KEYS)]
    produce(broker, topic, pairs)
    return topic, pairs


def test_the_cleaner_keeps_each_keys_last_value_at_its_offset(broker, table):
    topic, pairs = table
    want = latest(pairs)
    assert len(want) == KEYS - 10

    def compacted():
        recs, below, base = compacted_view(broker, topic)
        keys_below = [r.key for r in below]
        return len(keys_below) <= KEYS and len(set(keys_below)) == len(keys_below) and \
            all(r.value is not None for r in below) and (recs, below, base)

    recs, below, base = wait_until(compacted, 90, "the closed segments compacted", interval=1)
    check_latest(recs, want, "after compaction")
    assert len(recs) < len(pairs) / 5, (len(recs), len(pairs))
    # The tombstoned keys are gone below the active segment (their delete.retention.ms has
    # passed), and every key there is there once, with its last value if the active segment
    # does not hold a later one.
    assert not any(r.key < b"k010" for r in below), "tombstoned keys remain"
    active_keys = {r.key for r in recs if r.offset >= base}
    for r in below:
        if r.key not in active_keys:
            assert r.value == want[r.key], r.key
    # Offsets keep their gaps: a kept record is at the offset it was produced at.
    produced_at = {}
    for i, (k, v) in enumerate(pairs):
        produced_at[i] = (k, v)
    for r in recs:
        assert produced_at[r.offset] == (r.key, r.value), r.offset
    assert "compacted" in broker.log()


def test_topic_describe_shows_each_partitions_dirty_ratio_and_last_compaction(broker, table):
    topic, _ = table

    def cleaner_row():
        r = subprocess.run([SPATE_BIN, "topic", "describe", topic, "-b", broker.bootstrap],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert "partition\tdirty ratio\tlast compaction" in lines, r.stdout
        row = lines[lines.index("partition\tdirty ratio\tlast compaction") + 1]
        m = re.fullmatch(r"0\t(\d\.\d{3})\t([\d.]+) s ago", row)
        assert m, row
        return m

    # Once compacted, nothing closed is dirty any more.
    wait_until(lambda: float(cleaner_row()[1]) < 0.01, 90, "a dirty ratio of 0")
    # A topic that is not compacted shows no cleaner section.
    plain = unique("plain")
    create(broker, plain, {})
    r = subprocess.run([SPATE_BIN, "topic", "describe", plain, "-b", broker.bootstrap],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "dirty ratio" not in r.stdout, r.stdout


def test_kafka_python_reads_the_compacted_log_across_its_gaps(broker, table):
    topic, pairs = table
    c = kp.KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                         enable_auto_commit=False, consumer_timeout_ms=5000)
    try:
        c.assign([kp.TopicPartition(topic, 0)])
        recs = list(c)
    finally:
        c.close()
    assert recs, "nothing read"
    offsets = [m.offset for m in recs]
    assert offsets == sorted(set(offsets))
    assert offsets[-1] == len(pairs) - 1
    last = {}
    for m in recs:
        last[m.key] = m.value
    assert {k: v for k, v in last.items() if v is not None} == latest(pairs)


def test_a_restart_keeps_the_compacted_log(broker, table):
    topic, pairs = table
    before, _, _ = compacted_view(broker, topic)
    broker.restart()
    after, _, _ = compacted_view(broker, topic)
    assert [(r.offset, r.key, r.value) for r in after] == \
        [(r.offset, r.key, r.value) for r in before]
    assert not list(partition_dir(broker, topic).glob("*.swap"))
    assert not list(partition_dir(broker, topic).glob("*.cleaned"))
    # Produce goes on at the log end after the compacted range.
    produce(broker, topic, [(b"k050", b"after restart")])
    recs, _, _ = compacted_view(broker, topic)
    assert recs[-1].offset == len(pairs) and recs[-1].value == b"after restart"


def test_compaction_settings_out_of_range_are_invalid_config_naming_the_key(broker):
    a = cka.AdminClient(ck_conf(broker.bootstrap))
    for key, bad in [("min.cleanable.dirty.ratio", "1.5"), ("delete.retention.ms", "-1"),
                     ("min.compaction.lag.ms", "-5"), ("max.compaction.lag.ms", "0")]:
        topic = unique("badcfg")
        fs = a.create_topics([cka.NewTopic(topic, 1, 1, config={
            "cleanup.policy": "compact", key: bad})], request_timeout=15)
        with pytest.raises(ck.KafkaException) as e:
            fs[topic].result(15)
        err = e.value.args[0]
        assert err.code() == ck.KafkaError.INVALID_CONFIG, (key, err)
        assert key in err.str(), (key, err.str())


@pytest.fixture
def slow_cleaner(tmp_path):
    """A broker of its own whose cleaner moves 4 MiB/s, so that a pass lasts seconds."""
    b = Broker(tmp_path)
    b.config_path.write_text(b.config_path.read_text() + "\n[log.cleaner]\nbackoff_ms = 100\n"
                             "io_max_bytes_per_second = 4194304\n")
    b.start()
    try:
        yield b
    finally:
        b.teardown()


def test_a_sigkill_during_a_pass_loses_nothing_and_the_next_pass_finishes(slow_cleaner):
    """SIGKILL while the cleaner writes a pass's segments, three times, at different points:
    after each restart a consumer from the beginning reads every key's last value at its
    produced offset; then the pass completes and leaves no work file behind."""
    b = slow_cleaner
    topic = unique("killed")
    create(b, topic, {"cleanup.policy": "compact", "segment.bytes": str(MIB),
                      "min.cleanable.dirty.ratio": "0.01",
                      "min.compaction.lag.ms": str(86_400_000)})
    pairs = [(f"k{k:03}".encode(), f"{k}:{u}:".encode() + b"w" * 1000)
             for u in range(100) for k in range(KEYS)]
    # Then 3 MiB of ten other keys: the last values of the first hundred are in closed
    # segments, which the pass rewrites.
    pairs += [(f"f{k}".encode(), f"{k}:{u}:".encode() + b"f" * 1000)
              for u in range(300) for k in range(10)]
    produce(b, topic, pairs)
    want = latest(pairs)
    # Nothing cleaned yet (the lag keeps it dirty); then the lag goes to 0 and a pass begins.
    assert "compacted" not in b.log()
    a = cka.AdminClient(ck_conf(b.bootstrap))
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic, incremental_configs=[
        cka.ConfigEntry("min.compaction.lag.ms", "0",
                        incremental_operation=cka.AlterConfigOpType.SET)])
    a.incremental_alter_configs([res])[res].result(30)
    pdir = partition_dir(b, topic)

    def work_files():
        return [p.name for p in pdir.iterdir() if p.suffix in (".cleaned", ".swap")]

    mid_pass = 0
    for delay in (0.0, 0.7, 1.6):
        wait_until(lambda: work_files() or None, 60, "a pass writing its segments", interval=0.01)
        time.sleep(delay)
        b.kill()
        mid_pass += bool(work_files())
        b.start()
        recs = read_all_confluent(b.bootstrap, topic, timeout=60)
        check_latest(recs, want, f"after a SIGKILL {delay} s into writing")
        for r in recs:
            assert pairs[r.offset] == (r.key, r.value), f"offset {r.offset} moved"
        assert recs[-1].offset == len(pairs) - 1
    assert mid_pass >= 1, "no SIGKILL landed while a pass had work files"

    def done():
        recs, below, _ = compacted_view(b, topic)
        keys = [r.key for r in below]
        return len(set(keys)) == len(keys) and not work_files() and recs
    recs = wait_until(done, 90, "the pass completed after the crashes", interval=0.5)
    check_latest(recs, want, "after the last pass")
    assert len(recs) < len(pairs) / 5
