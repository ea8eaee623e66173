"""Shared helpers: unique names, deadlines, and "read a whole topic" for each client.

Every reader returns a list of `Rec` sorted by (partition, offset), read from the beginning
of every partition up to the end offset the broker reported when the read started.
"""

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass

import confluent_kafka as ck
import confluent_kafka.admin  # noqa: F401  (ck.admin)
import kafka as kp

KCAT = "/usr/bin/kcat"
CLIENTS = ("kcat", "confluent", "kafka-python")
CODECS = ("gzip", "snappy", "lz4", "zstd")


@dataclass(frozen=True)
class Rec:
    partition: int
    offset: int
    key: object  # bytes or None
    value: object  # bytes or None
    headers: tuple  # ((str, bytes or None), ...)
    timestamp: int

    def content(self):
        """Everything but the offset."""
        return (self.partition, self.key, self.value, self.headers, self.timestamp)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def now_ms():
    return int(time.time() * 1000)


class Deadline:
    def __init__(self, seconds, what):
        self.end = time.monotonic() + seconds
        self.what = what

    def left(self):
        return max(0.0, self.end - time.monotonic())

    def expired(self):
        return time.monotonic() >= self.end

    def check(self, detail=""):
        if self.expired():
            raise AssertionError(f"timed out: {self.what} {detail}")


def wait_until(fn, seconds, what, interval=0.1):
    d = Deadline(seconds, what)
    while True:
        v = fn()
        if v:
            return v
        d.check()
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# kcat


def kcat(args, input=None, timeout=30, check=True):
    p = subprocess.run([KCAT] + args, input=input, capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(
            f"kcat {' '.join(args)} exited {p.returncode}:\n{p.stderr.decode(errors='replace')}")
    return p


class KcatProcess:
    """A long-running kcat (a -G balanced consumer, a -P producer) whose stdout and stderr are
    read line by line on two threads, so neither pipe fills up and the test sees each line as
    kcat writes it (consumers should pass -u: unbuffered output).

    The process is in a session of its own and is only ever signalled by its PID. `stop()`
    sends a signal and waits (SIGKILL and a failed assertion when it does not exit in time);
    `kill()` is for teardown: SIGKILL if still running, then reap and join the readers.
    """

    def __init__(self, args, name="kcat", stdin=False, on_stdout=None, on_stderr=None):
        self.name = name
        self.args = list(args)
        self._lock = threading.Lock()
        self._out = []
        self._err = []
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self.reader_error = None
        self.proc = subprocess.Popen(
            [KCAT] + self.args, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self._out, on_stdout),
                             name=f"{name}-stdout", daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self._err, on_stderr),
                             name=f"{name}-stderr", daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read(self, pipe, sink, callback):
        try:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                with self._lock:
                    sink.append(line)
                if callback is not None:
                    callback(line)
        except BaseException as e:  # reported by check()
            self.reader_error = e
        finally:
            pipe.close()

    @property
    def pid(self):
        return self.proc.pid

    def stdout_lines(self):
        with self._lock:
            return list(self._out)

    def stderr_lines(self):
        with self._lock:
            return list(self._err)

    def stderr_text(self, last=40):
        return "\n".join(self.stderr_lines()[-last:])

    def running(self):
        return self.proc.poll() is None

    def check(self):
        """Fail if a reader thread failed or kcat has exited on its own."""
        if self.reader_error is not None:
            raise AssertionError(f"{self.name}: reading its output failed: "
                                 f"{self.reader_error!r}") from self.reader_error
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} (pid {self.pid}) exited with "
                                 f"{self.proc.returncode}:\n{self.stderr_text()}")

    def write(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close_stdin(self):
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def wait(self, timeout):
        """Wait for kcat to exit on its own; SIGKILL and fail after `timeout`. Returns the exit
        code once both output pipes have been read to the end."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} (pid {self.pid}) still running after "
                                 f"{timeout}s:\n{self.stderr_text()}")
        self._join_readers(10)
        return code

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Send `sig` (kcat's handler ends its main loop: a -G consumer then closes, which
        commits and leaves the group) and wait; returns the exit code."""
        if self.proc.poll() is None:
            os.kill(self.pid, sig)
        return self.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.close_stdin_quietly()
        self._join_readers(5)

    def close_stdin_quietly(self):
        try:
            self.close_stdin()
        except OSError:  # broken pipe: kcat is gone
            pass

    def _join_readers(self, timeout):
        for t in self._readers:
            t.join(timeout)
            if t.is_alive():
                raise AssertionError(f"{self.name}: {t.name} still reading {timeout}s after "
                                     f"the process exited")


def _kcat_str(s):
    return None if s is None else s.encode()


def read_all_kcat(bootstrap, topic, timeout=30, extra=()):
    """kcat -C -e -J from the beginning of every partition."""
    p = kcat(["-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q",
              "-m", "10", *extra], timeout=timeout)
    recs = []
    for line in p.stdout.decode().splitlines():
        if not line.strip():
            continue
        j = json.loads(line)
        assert j["topic"] == topic, j
        assert j["tstype"] == "create", j
        h = j.get("headers") or []
        headers = tuple((h[i], _kcat_str(h[i + 1])) for i in range(0, len(h), 2))
        recs.append(Rec(j["partition"], j["offset"], _kcat_str(j["key"]),
                        _kcat_str(j["payload"]), headers, j["ts"]))
    return sorted(recs, key=lambda r: (r.partition, r.offset))


# ---------------------------------------------------------------------------------------------
# confluent-kafka


def ck_conf(bootstrap, **extra):
    c = {"bootstrap.servers": bootstrap}
    c.update(extra)
    return c


def ck_partitions(client, topic, timeout=10):
    """Partition ids of `topic` from a metadata request (auto-creates the topic)."""
    d = Deadline(timeout, f"metadata for {topic}")
    while True:
        md = client.list_topics(topic, timeout=d.left() or 0.1)
        t = md.topics.get(topic)
        if t is not None and t.error is None and t.partitions:
            return sorted(t.partitions)
        d.check(str(t.error if t else "missing"))
        time.sleep(0.1)


def ck_rec(m):
    ts_type, ts = m.timestamp()
    assert ts_type == ck.TIMESTAMP_CREATE_TIME, (ts_type, m.partition(), m.offset())
    return Rec(m.partition(), m.offset(), m.key(), m.value(),
               tuple(m.headers() or ()), ts)


def read_all_confluent(bootstrap, topic, timeout=30):
    c = ck.Consumer(ck_conf(bootstrap, **{
        "group.id": unique("reader"), "enable.auto.commit": False,
        "enable.partition.eof": True, "fetch.wait.max.ms": 100}))
    try:
        parts = ck_partitions(c, topic)
        c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in parts])
        d = Deadline(timeout, f"confluent read of {topic}")
        recs, eof = [], set()
        while len(eof) < len(parts):
            d.check(f"eof for {sorted(eof)} of {parts}, {len(recs)} records")
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == ck.KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                raise AssertionError(f"consume error: {m.error()}")
            eof.discard(m.partition())
            recs.append(ck_rec(m))
        return sorted(recs, key=lambda r: (r.partition, r.offset))
    finally:
        c.close()


# ---------------------------------------------------------------------------------------------
# kafka-python


def kp_partitions(client, topic, timeout=10):
    """Partition ids of `topic` from a KafkaConsumer or KafkaProducer."""
    d = Deadline(timeout, f"kafka-python metadata for {topic}")
    while True:
        if isinstance(client, kp.KafkaProducer):
            parts = client.partitions_for(topic)
        else:
            parts = client.partitions_for_topic(topic)
            if not parts:
                client.topics()  # forces a metadata request
                parts = client.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        d.check()
        time.sleep(0.1)


def kp_rec(r):
    assert r.timestamp_type == 0, r  # CreateTime
    return Rec(r.partition, r.offset, r.key, r.value, tuple(r.headers or ()), r.timestamp)


def read_all_kafka_python(bootstrap, topic, timeout=30):
    c = kp.KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", fetch_max_wait_ms=100)
    try:
        parts = kp_partitions(c, topic)
        tps = [kp.TopicPartition(topic, p) for p in parts]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        d = Deadline(timeout, f"kafka-python read of {topic}")
        recs = []
        while any(c.position(tp) < end[tp] for tp in tps):
            d.check(f"positions {[c.position(tp) for tp in tps]} ends {end}")
            for tp, rs in c.poll(timeout_ms=200).items():
                recs.extend(kp_rec(r) for r in rs)
        return sorted(recs, key=lambda r: (r.partition, r.offset))
    finally:
        c.close()


READERS = {
    "kcat": read_all_kcat,
    "confluent": read_all_confluent,
    "kafka-python": read_all_kafka_python,
}


def read_all(client, bootstrap, topic, timeout=30):
    return READERS[client](bootstrap, topic, timeout=timeout)


def by_partition(recs):
    out = {}
    for r in recs:
        out.setdefault(r.partition, []).append(r)
    return out


def assert_dense_offsets(recs, start=0):
    """Per partition, offsets are start, start+1, ... with no gap and no repeat."""
    for p, rs in by_partition(recs).items():
        offs = [r.offset for r in rs]
        assert offs == list(range(start, start + len(offs))), (p, offs[:20])
