"""Issue 16: quixstreams (3.x) against Spate. A stateful word count (quix_wordcount.py: split,
group_by through a repartition topic, a count per word in RocksDB state backed by a
changelog topic, both topics created by quixstreams itself) produces exact counts; after a
clean stop, an emptied state directory and more input, the restarted application restores
its state from the changelog and the counts continue to the exact totals. Before that
restore the changelog is compacted by the broker's cleaner (issue 19): the state comes back
from each key's last value, not from its whole history.

quixstreams pins confluent-kafka below the 2.16.1 the other tests use, so the application
runs as a subprocess in its own virtualenv: $SPATE_QUIX_PYTHON, else target/quix-venv
(scripts/test.sh makes it from requirements-quix.txt).
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import confluent_kafka as ck
import confluent_kafka.admin as cka
import pytest

from conftest import REPO
from kutil import Deadline, ck_conf, unique

QUIX_PYTHON = os.environ.get(
    "SPATE_QUIX_PYTHON", str(REPO / "target" / "quix-venv" / "bin" / "python"))
APP = Path(__file__).with_name("quix_wordcount.py")
COUNT_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
VOCABULARY = ("spate", "kafka", "log", "segment", "shard", "offset", "batch", "topic",
              "stream", "state", "changelog", "count")


class WordCountApp:
    """The word count as a subprocess in a session of its own, its output in a log file;
    stopped by its PID (SIGTERM, which quixstreams takes as a clean stop; SIGKILL after a
    timeout, and the test fails)."""

    def __init__(self, workdir, bootstrap, group, input_topic, output_topic, state_dir):
        self.args = [QUIX_PYTHON, str(APP), bootstrap, group, input_topic, output_topic,
                     str(state_dir)]
        self.log_path = Path(workdir) / "quix-app.log"
        self.proc = None
        self.starts = 0

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "app already running"
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"===== start #{self.starts}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def check_running(self):
        code = self.proc.poll()
        assert code is None, f"the word count exited with {code}:\n{self.tail()}"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the word count did not stop within {STOP_TIMEOUT_S}s of "
                                 f"SIGTERM:\n{self.tail()}")

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, n=60):
        return "\n".join(self.log().splitlines()[-n:])


@pytest.fixture
def quix_app(broker, tmp_path):
    assert os.access(QUIX_PYTHON, os.X_OK), \
        f"no quixstreams virtualenv at {QUIX_PYTHON} (bash scripts/test.sh makes it)"
    apps = []

    def make(*args, **kw):
        app = WordCountApp(tmp_path, broker.bootstrap, *args, **kw)
        apps.append(app)
        return app

    try:
        yield make
    finally:
        for app in apps:
            app.kill()


class LatestCounts:
    """The output topic read from the beginning, as it grows: the latest count per word."""

    def __init__(self, bootstrap, topic):
        self.topic = topic
        self.admin = cka.AdminClient(ck_conf(bootstrap))
        self.consumer = ck.Consumer(ck_conf(bootstrap, **{
            "group.id": unique("reader"), "enable.auto.commit": False}))
        self.assigned = False
        self.latest = {}

    def poll(self):
        """Reads what has arrived; returns the latest counts so far."""
        if not self.assigned:
            # All topics, not this one: a metadata request for it could auto-create it, and
            # the output topic is quixstreams' to create.
            t = self.admin.list_topics(timeout=10).topics.get(self.topic)
            if t is None or t.error is not None or not t.partitions:
                return self.latest
            self.consumer.assign([ck.TopicPartition(self.topic, p, ck.OFFSET_BEGINNING)
                                  for p in t.partitions])
            self.assigned = True
        for m in self.consumer.consume(1000, 0.2):
            assert m.error() is None, m.error()
            row = json.loads(m.value())
            assert m.key().decode() == row["word"], (m.key(), row)
            self.latest[row["word"]] = row["count"]
        return self.latest

    def wait_for(self, expected, app, what):
        d = Deadline(COUNT_TIMEOUT_S, what)
        while self.poll() != expected:
            app.check_running()
            d.check(f"\nlatest: {sorted(self.latest.items())}\n"
                    f"expected: {sorted(expected.items())}\napp log:\n{app.tail()}")

    def close(self):
        self.consumer.close()


def produce_lines(bootstrap, topic, lines):
    p = ck.Producer(ck_conf(bootstrap, **{"acks": "all", "enable.idempotence": True}))
    for i, line in enumerate(lines):
        p.produce(topic, key=f"line-{i}".encode(), value=line.encode())
    assert p.flush(30) == 0


def lines_of(rng, n, vocabulary):
    return [" ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 8))) for _ in range(n)]


def test_stateful_word_count_is_exact_and_restores_from_its_changelog(broker, quix_app, tmp_path):
    # The cleaner's idle pause down from 15 s, so the changelog is compacted within seconds.
    broker.config_path.write_text(broker.config_path.read_text() + "[log.cleaner]\nbackoff_ms = 200\n")
    broker.restart()
    admin = cka.AdminClient(ck_conf(broker.bootstrap))
    words, counts, group = unique("words"), unique("counts"), unique("wordcount")
    admin.create_topics([cka.NewTopic(words, num_partitions=3, replication_factor=1)])[words] \
        .result(15)
    rng = random.Random(16)
    first = lines_of(rng, 300, VOCABULARY[:8])
    produce_lines(broker.bootstrap, words, first)
    expected = Counter(w for line in first for w in line.split())

    state_dir = tmp_path / "quix-state"
    app = quix_app(group, words, counts, state_dir)
    out = LatestCounts(broker.bootstrap, counts)
    try:
        app.start()
        out.wait_for(dict(expected), app, "the first run's counts")

        # The changelog topic quixstreams created for the count's state: compact.
        topics = admin.list_topics(timeout=10).topics
        changelogs = [t for t in topics if t.startswith("changelog__") and group in t]
        assert len(changelogs) == 1, sorted(topics)
        (changelog,) = changelogs
        assert len(topics[changelog].partitions) == 3
        res = cka.ConfigResource(cka.ResourceType.TOPIC, changelog)
        cfg = admin.describe_configs([res], request_timeout=10)[res].result(10)
        assert cfg["cleanup.policy"].value == "compact"
        assert cfg["cleanup.policy"].source == cka.ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        assert any(t.startswith("repartition__") and group in t for t in topics), sorted(topics)

        assert app.stop() == 0, app.tail()
        assert out.poll() == dict(expected)

        # A run with the state kept, the changelog now rolling a segment per append and
        # cleaned at the least dirt, so that it is compacted before the restore below.
        res = cka.ConfigResource(cka.ResourceType.TOPIC, changelog, incremental_configs=[
            cka.ConfigEntry(k, v, incremental_operation=cka.AlterConfigOpType.SET)
            for k, v in {"segment.ms": "1", "min.cleanable.dirty.ratio": "0.01"}.items()])
        admin.incremental_alter_configs([res])[res].result(10)
        # Two runs: the second's changelog appends roll the segment the first's went to (a
        # segment rolls at an append), which the cleaner may then compact.
        for run in range(2):
            middle = lines_of(rng, 50, VOCABULARY[:8])
            produce_lines(broker.bootstrap, words, middle)
            expected.update(w for line in middle for w in line.split())
            app.start()
            out.wait_for(dict(expected), app, f"the counts of run {run} before compaction")
            assert app.stop() == 0, app.tail()
        # A pass over the changelog that dropped records (older counts of a word).
        passes = re.compile(rf"compacted partition={re.escape(changelog)}-\d+ .*"
                            r"records_read=(\d+) records_kept=(\d+)")
        d = Deadline(60, f"the cleaner dropped old values from {changelog}")
        while not any(int(m[1]) > int(m[2]) for m in passes.finditer(broker.log())):
            d.check()
            time.sleep(0.2)
        assert state_dir.exists()
        shutil.rmtree(state_dir)

        # More input: words counted before and words never seen.
        second = lines_of(rng, 200, VOCABULARY[4:])
        produce_lines(broker.bootstrap, words, second)
        expected.update(w for line in second for w in line.split())
        offset = len(app.log())
        app.start()
        out.wait_for(dict(expected), app, "the counts after a restart with an empty state dir")
        # The totals above can only come from the restored state; quixstreams says so too.
        assert "Recovery successful" in app.log()[offset:], app.tail()
        assert app.stop() == 0, app.tail()
    finally:
        out.close()
