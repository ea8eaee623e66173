"""4. A consumer group of three members across rebalances: nothing lost, nothing twice.

kcat members (`kcat -G`, librdkafka 2.0.2's high-level consumer with auto-commit) are separate
processes; see test_group_of_three_rebalances_kcat.

confluent-kafka members are polled in turn from the test thread. Each kafka-python member runs
on its own thread (see ConsumerThread), as a kafka-python application would. Every member
commits synchronously after each message (confluent-kafka) or each poll batch (kafka-python). A
message counts as consumed only once its commit succeeded; when a commit fails (a rebalance
raced it) the member seeks back, so a correct broker redelivers it (to this member or the
partition's new owner), and it is counted then. So, with a correct broker, the
committed-and-processed (partition, offset) pairs are exactly the produced ones, each once.
"""

import concurrent.futures
import queue
import re
import signal
import sys
import threading
import time
import traceback

import confluent_kafka as ck
import confluent_kafka.admin  # noqa: F401  (ck.admin)
import kafka as kp
import kafka.errors as kerr
import pytest
from kafka.structs import OffsetAndMetadata

from kutil import Deadline, KcatProcess, ck_conf, unique

PARTITIONS = 6
BATCH = 240  # records per produce phase, spread over the partitions


class Producer:
    """confluent-kafka producer that records the (partition, offset) of every record."""

    def __init__(self, bootstrap, topic):
        self.topic = topic
        self.p = ck.Producer(ck_conf(bootstrap, **{"acks": "all", "linger.ms": 5}))
        self.produced = {}  # (partition, offset) -> value
        self.n = 0

    def produce(self, count):
        errors = []

        def cb(err, msg):
            if err is not None:
                errors.append(err)
            else:
                self.produced[(msg.partition(), msg.offset())] = msg.value()

        for _ in range(count):
            v = f"m-{self.n:06d}".encode()
            self.p.produce(self.topic, value=v, key=v, partition=self.n % PARTITIONS,
                           on_delivery=cb)
            self.n += 1
            self.p.poll(0)
        assert self.p.flush(30) == 0
        assert not errors, errors[:3]


class CkMember:
    def __init__(self, name, bootstrap, group, topic):
        self.name = name
        self.topic = topic
        self.consumed = []  # (partition, offset, value), commit succeeded
        self.commit_failures = 0
        self.assignment = set()
        self.c = ck.Consumer(ck_conf(bootstrap, **{
            "group.id": group, "client.id": name, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 200, "max.poll.interval.ms": 30000,
            "fetch.wait.max.ms": 100}))
        self.c.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer, parts):
        self.assignment = {p.partition for p in parts}

    def _on_revoke(self, consumer, parts):
        self.assignment = set()

    def step(self):
        m = self.c.poll(0.05)
        if m is None:
            return
        if m.error():
            raise AssertionError(f"{self.name}: consume error {m.error()}")
        try:
            self.c.commit(message=m, asynchronous=False)
        except ck.KafkaException as e:
            self.commit_failures += 1
            try:
                self.c.seek(ck.TopicPartition(self.topic, m.partition(), m.offset()))
            except ck.KafkaException:
                pass  # no longer ours: the new owner starts at the committed offset
            print(f"{self.name}: commit of {m.partition()}@{m.offset()} failed: {e}")
            return
        self.consumed.append((m.partition(), m.offset(), m.value()))

    def committed(self):
        tps = [ck.TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in self.c.committed(tps, timeout=10)}

    def close(self):
        self.c.close()


# ---------------------------------------------------------------------------------------------
# kafka-python consumers, one thread each
#
# Why not poll several kafka-python consumers in turn from one thread with short timeouts, as
# above for confluent-kafka: kafka-python 3.0.12 (BaseCoordinator.join_group_async) leaves its
# JoinGroup/SyncGroup task running when poll(timeout_ms) times out, and if the task completes
# before the next poll, that poll discards the result and sends a new JoinGroup. A leader's
# JoinGroup in a Stable group starts a rebalance (as in Apache Kafka), so a group driven that
# way rebalances over and over. An application polls each consumer from its own thread with a
# timeout longer than a join round trip, so the next poll follows at once and sees the result.

KP_POLL_MS = 1000  # longer than a JoinGroup + SyncGroup round trip
KP_STOP_S = 15  # a consumer thread finishes its poll (KP_POLL_MS) and closes within this
# Time a group member spends processing each record before committing. Without it, members
# on their own threads clear every backlog in a few milliseconds per batch, so a rebalance
# would find nothing pending (and the member that joins would get nothing to consume).
KP_PROCESS_S = 0.005


class ConsumerThread:
    """A kafka-python KafkaConsumer that lives on a thread of its own.

    KafkaConsumer is not thread-safe, so it is created, polled and closed on this thread only:
    the thread calls `step(consumer)` (one poll with a timeout of about KP_POLL_MS, and whatever
    the member does with the records) until `close()`; between two steps it runs the functions
    other threads hand it with `call()`. `make(listener)` creates the consumer, subscribed with
    `listener`, which records the assignment and calls `on_assigned(consumer, partitions)`
    (kafka-python runs listeners inside that consumer's poll). `assignment` is a snapshot of the
    assigned partition numbers. An exception on the thread ends it (closing the consumer) and
    is raised again in the calling thread by `check()`, `call()` and `close()`.
    """

    def __init__(self, name, make, step, on_assigned=None, close_kwargs=None):
        self.name = name
        self._make = make
        self._step = step
        self._on_assigned = on_assigned
        self._close_kwargs = close_kwargs or {}
        self._calls = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._assignment = frozenset()
        self._consumer = None
        self.error = None
        self._thread = threading.Thread(target=self._run, name=f"consumer-{name}", daemon=True)
        self._thread.start()

    # -- on the consumer's thread -----------------------------------------------------------

    class _Listener(kp.ConsumerRebalanceListener):
        def __init__(self, owner):
            self.owner = owner

        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, assigned):
            o = self.owner
            o._set_assignment(o._consumer.assignment())
            if o._on_assigned is not None:
                o._on_assigned(o._consumer, assigned)

    def _set_assignment(self, tps):
        with self._lock:
            self._assignment = frozenset(tp.partition for tp in tps)

    def _run_calls(self, c):
        while True:
            try:
                fn, fut = self._calls.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(c))
                except BaseException as e:
                    fut.set_exception(e)

    def _run(self):
        try:
            self._consumer = self._make(self._Listener(self))
            while not self._stop.is_set():
                self._run_calls(self._consumer)
                self._step(self._consumer)
                self._set_assignment(self._consumer.assignment())
        except BaseException as e:
            self.error = e
        finally:
            if self._consumer is not None:
                try:
                    self._consumer.close(**self._close_kwargs)
                except BaseException as e:
                    if self.error is None:
                        self.error = e
            while True:  # calls that came too late
                try:
                    _, fut = self._calls.get_nowait()
                except queue.Empty:
                    break
                if fut.set_running_or_notify_cancel():
                    e = AssertionError(f"{self.name}: consumer thread has ended"
                                       + ("" if self.error is None else f": {self.error!r}"))
                    e.__cause__ = self.error
                    fut.set_exception(e)

    # -- on any other thread ----------------------------------------------------------------

    @property
    def assignment(self):
        with self._lock:
            return set(self._assignment)

    def check(self):
        """Raise what ended the consumer's thread, if something did."""
        if self.error is not None:
            raise AssertionError(f"{self.name}: consumer thread failed: {self.error!r}") \
                from self.error

    def call(self, fn, timeout=15):
        """fn(consumer), run on the consumer's thread between two polls; returns its result."""
        fut = concurrent.futures.Future()
        self._calls.put((fn, fut))
        d = Deadline(timeout, f"{self.name}: call {getattr(fn, '__name__', fn)}")
        while True:
            try:
                return fut.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                pass
            self.check()
            if not self._thread.is_alive() and not fut.done():
                raise AssertionError(f"{self.name}: consumer thread has ended")
            d.check(self._stack())

    def _stack(self):
        frame = sys._current_frames().get(self._thread.ident)
        return "" if frame is None else "\n" + "".join(traceback.format_stack(frame))

    def close(self, timeout=KP_STOP_S):
        """Stop the thread (it closes the consumer) and join it; raise what went wrong."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(
                f"{self.name}: consumer thread still running {timeout}s after stop:"
                f"{self._stack()}")
        self.check()


class KpMember:
    """kafka-python member on its own ConsumerThread; the test thread only watches it."""

    def __init__(self, name, bootstrap, group, topic):
        self.name = name
        self.topic = topic
        self._lock = threading.Lock()
        self._consumed = []  # (partition, offset, value), commit succeeded
        self._commit_failures = 0

        def make(listener):
            c = kp.KafkaConsumer(
                bootstrap_servers=bootstrap, group_id=group, client_id=name,
                enable_auto_commit=False, auto_offset_reset="earliest",
                session_timeout_ms=6000, heartbeat_interval_ms=200, max_poll_interval_ms=30000,
                max_poll_records=5, fetch_max_wait_ms=100)
            c.subscribe([topic], listener=listener)
            return c

        self.t = ConsumerThread(name, make, self._step)

    def _step(self, c):  # on the consumer's thread
        batch = c.poll(timeout_ms=KP_POLL_MS, max_records=5)
        if not batch:
            return
        time.sleep(KP_PROCESS_S * sum(len(rs) for rs in batch.values()))  # processing
        offsets = {tp: OffsetAndMetadata(rs[-1].offset + 1, "", -1) for tp, rs in batch.items()}
        try:
            c.commit(offsets)
        except kerr.KafkaError as e:
            with self._lock:
                self._commit_failures += 1
            for tp, rs in batch.items():
                try:
                    c.seek(tp, rs[0].offset)
                except (kerr.KafkaError, AssertionError):
                    pass  # no longer ours
            print(f"{self.name}: commit of {offsets} failed: {e!r}")
            return
        with self._lock:
            for tp, rs in batch.items():
                self._consumed.extend((r.partition, r.offset, r.value) for r in rs)

    @property
    def consumed(self):
        with self._lock:
            return list(self._consumed)

    @property
    def commit_failures(self):
        with self._lock:
            return self._commit_failures

    @property
    def assignment(self):
        return self.t.assignment

    def step(self):
        """The consumer's thread does the work; here: fail if it failed, else wait a little."""
        self.t.check()
        time.sleep(0.02)

    def committed(self):
        topic = self.topic

        def committed(c):
            return {p: c.committed(kp.TopicPartition(topic, p), timeout_ms=10000)
                    for p in range(PARTITIONS)}
        return self.t.call(committed)

    def close(self):
        self.t.close()


MEMBERS = {"confluent": CkMember, "kafka-python": KpMember}


def drive(members, until, seconds, what):
    d = Deadline(seconds, what)
    while not until():
        d.check(" / ".join(f"{m.name}: assigned {sorted(m.assignment)} consumed "
                           f"{len(m.consumed)}" for m in members))
        for m in members:
            try:
                m.step()
            except AssertionError:
                raise
            except Exception as e:
                raise AssertionError(f"{m.name}: poll/commit raised {e!r}") from e


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_group_of_three_rebalances_without_loss_or_duplicates(broker, client):
    topic = unique(f"grp-{client}")
    group = unique(f"g-{client}")
    admin = ck.admin.AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([ck.admin.NewTopic(topic, num_partitions=PARTITIONS,
                                           replication_factor=1)])[topic].result(15)
    prod = Producer(broker.bootstrap, topic)
    Member = MEMBERS[client]
    all_members = []
    closed = []
    passed = False

    def close(m):
        closed.append(m)
        m.close()

    def total():
        return len({(p, o) for m in all_members for (p, o, _) in m.consumed})

    try:
        a = Member(f"{client}-a", broker.bootstrap, group, topic)
        b = Member(f"{client}-b", broker.bootstrap, group, topic)
        all_members += [a, b]
        prod.produce(BATCH)
        # two members share the six partitions and consume part of the first batch
        drive([a, b], lambda: a.assignment and b.assignment and total() >= BATCH // 2,
              30, "two members assigned and consuming")
        assert a.assignment | b.assignment == set(range(PARTITIONS))
        assert not a.assignment & b.assignment

        # a third member joins: rebalance while records are pending
        c = Member(f"{client}-c", broker.bootstrap, group, topic)
        all_members.append(c)
        prod.produce(BATCH)
        drive([a, b, c],
              lambda: (c.assignment and len(c.consumed) >= 10 and total() >= BATCH + BATCH // 2
                       and len(a.assignment) + len(b.assignment) + len(c.assignment)
                       == PARTITIONS),
              30, "third member assigned and consuming")
        assert a.assignment | b.assignment | c.assignment == set(range(PARTITIONS))
        assert all(len(m.assignment) == 2 for m in (a, b, c)), \
            [sorted(m.assignment) for m in (a, b, c)]

        # more records, then one member leaves (close: LeaveGroup) with records pending
        prod.produce(BATCH)
        drive([a, b, c], lambda: total() >= 2 * BATCH, 30, "consuming the third batch")
        close(b)
        prod.produce(BATCH)
        drive([a, c],
              lambda: (len(a.assignment) + len(c.assignment) == PARTITIONS
                       and total() >= len(prod.produced)),
              40, f"consuming all {4 * BATCH} records with two members")
        assert a.assignment | c.assignment == set(range(PARTITIONS))
        # give stragglers a chance to show up as duplicates
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            a.step()
            c.step()

        consumed = [(p, o, v) for m in all_members for (p, o, v) in m.consumed]
        keys = [(p, o) for (p, o, _) in consumed]
        dups = sorted({k for k in keys if keys.count(k) > 1})
        assert not dups, f"consumed twice: {dups[:20]} (of {len(dups)})"
        assert len(prod.produced) == 4 * BATCH
        missing = sorted(set(prod.produced) - set(keys))
        assert not missing, f"never consumed: {missing[:20]} (of {len(missing)})"
        assert set(keys) == set(prod.produced)
        assert {(p, o): v for (p, o, v) in consumed} == prod.produced
        # every member got work, and the committed offsets are the end of every partition
        for m in all_members:
            assert m.consumed, f"{m.name} consumed nothing"
        ends = {}
        for (p, o) in prod.produced:
            ends[p] = max(ends.get(p, -1), o + 1)
        assert a.committed() == ends
        print("commit failures:", {m.name: m.commit_failures for m in all_members})
        passed = True
    finally:
        # close every member (joining kafka-python consumer threads) however the test ends
        errors = []
        for m in all_members:
            if any(m is x for x in closed):
                continue
            try:
                close(m)
            except Exception as e:
                errors.append(e)
        if passed and errors:
            raise errors[0]


# ---------------------------------------------------------------------------------------------
# Committing in the revoke step of a rebalance. Until a member rejoins, its generation is still
# the group's current one and Kafka accepts its commits while the group is PreparingRebalance:
# that is how consumers hand over their position without duplicates (commitSync in
# onPartitionsRevoked, or the auto-commit before rejoining).


def two_partition_topic(broker, per_partition=20):
    topic = unique("rvk")
    admin = ck.admin.AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([ck.admin.NewTopic(topic, num_partitions=2,
                                           replication_factor=1)])[topic].result(15)
    p = ck.Producer(ck_conf(broker.bootstrap))
    for i in range(per_partition * 2):
        p.produce(topic, value=f"v{i}".encode(), partition=i % 2)
    assert p.flush(15) == 0
    return topic


def test_commit_in_revoke_callback_confluent(broker):
    topic = two_partition_topic(broker)
    group = unique("g-rvk")
    conf = ck_conf(broker.bootstrap, **{
        "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 200, "fetch.wait.max.ms": 100})
    next_offset = {}
    revoke_results = []
    assigned = {"a": set(), "b": set()}

    def on_revoke(consumer, parts):
        offs = [ck.TopicPartition(topic, p, o) for p, o in sorted(next_offset.items())]
        if not offs:
            return
        try:
            consumer.commit(offsets=offs, asynchronous=False)
            revoke_results.append(("ok", dict(next_offset)))
        except ck.KafkaException as e:
            revoke_results.append(("error", str(e.args[0])))

    def on_assign_for(name):
        def f(consumer, parts):
            assigned[name] = {p.partition for p in parts}
        return f

    a = ck.Consumer(conf)
    b = None
    try:
        a.subscribe([topic], on_assign=on_assign_for("a"), on_revoke=on_revoke)
        d = Deadline(20, "member a consuming")
        while sum(next_offset.values()) < 10 or len(next_offset) < 2:
            d.check(str(next_offset))
            m = a.poll(0.1)
            if m is not None and not m.error():
                next_offset[m.partition()] = m.offset() + 1  # processed, not committed
        b = ck.Consumer(conf)
        b.subscribe([topic], on_assign=on_assign_for("b"))
        d = Deadline(20, "rebalance to two members")
        while not (revoke_results and assigned["a"] and assigned["b"]):
            d.check(f"{revoke_results} {assigned}")
            for c in (a, b):
                m = c.poll(0.05)
                if m is not None and c is a and not m.error():
                    next_offset[m.partition()] = m.offset() + 1
        assert revoke_results[0][0] == "ok", \
            f"commit from the revoke callback (PreparingRebalance, current generation) " \
            f"failed: {revoke_results[0][1]}"
        # b's partition starts where a committed
        committed = {tp.partition: tp.offset for tp in b.committed(
            [ck.TopicPartition(topic, 0), ck.TopicPartition(topic, 1)], timeout=10)}
        assert committed == revoke_results[0][1], committed
    finally:
        a.close()
        if b is not None:
            b.close()


def test_auto_commit_before_rejoin_kafka_python(broker):
    """Member a consumes 10 records (not committed: the auto-commit interval is 10 minutes),
    then pauses and keeps polling; b joins. Before a rejoins it auto-commits its positions,
    and the group's committed offsets after the rebalance must be exactly those. Both members
    stay paused from then on (b pauses whatever it is assigned before fetching), so no later
    commit can move the committed offsets away from what a committed: b's own auto-commits
    before any later rejoin commit the position it got from them."""
    topic = two_partition_topic(broker)
    group = unique("g-rvk")
    a_positions = queue.Queue()
    a_state = {"got": 0, "positions": None}

    def make(name):
        def f(listener):
            c = kp.KafkaConsumer(
                bootstrap_servers=broker.bootstrap, group_id=group, client_id=name,
                enable_auto_commit=True, auto_commit_interval_ms=600000,
                auto_offset_reset="earliest", session_timeout_ms=6000,
                heartbeat_interval_ms=200, fetch_max_wait_ms=100)
            c.subscribe([topic], listener=listener)
            return c
        return f

    def a_step(c):  # on a's thread
        if a_state["positions"] is not None:
            # paused: keeps its membership (heartbeats, rejoins) and must fetch nothing
            batch = c.poll(timeout_ms=KP_POLL_MS)
            assert not batch, f"a got records while paused: {batch}"
            return
        batch = c.poll(timeout_ms=KP_POLL_MS, max_records=10 - a_state["got"])
        a_state["got"] += sum(len(rs) for rs in batch.values())
        if a_state["got"] >= 10:
            positions = {tp.partition: c.position(tp) for tp in c.assignment()}
            c.pause(*c.assignment())  # processed, not committed
            a_state["positions"] = positions
            a_positions.put(positions)

    def a_assigned(c, parts):  # in a's poll
        if a_state["positions"] is not None:
            c.pause(*parts)

    def b_step(c):  # on b's thread
        batch = c.poll(timeout_ms=KP_POLL_MS)
        assert not batch, f"b got records while paused: {batch}"

    def b_assigned(c, parts):  # in b's poll, before it fetches anything
        c.pause(*parts)

    members = []
    passed = False
    try:
        a = ConsumerThread("a", make("a"), a_step, on_assigned=a_assigned,
                           close_kwargs={"autocommit": False})
        members.append(a)
        d = Deadline(20, "member a consuming 10 records")
        while True:
            try:
                positions = a_positions.get(timeout=0.05)
                break
            except queue.Empty:
                a.check()
                d.check(f"a {a.assignment} got {a_state['got']}")
        assert len(positions) == 2, positions

        b = ConsumerThread("b", make("b"), b_step, on_assigned=b_assigned,
                           close_kwargs={"autocommit": False})
        members.append(b)
        d = Deadline(20, "rebalance to two members")
        while not (len(a.assignment) == 1 and len(b.assignment) == 1):
            a.check()
            b.check()
            d.check(f"a {a.assignment} b {b.assignment}")
            time.sleep(0.02)
        adm = kp.KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            offs = adm.list_group_offsets({group: None})[group]
        finally:
            adm.close()
        committed = {tp.partition: om.offset for tp, om in offs.items() if om.offset >= 0}
        assert committed == positions, \
            f"the auto-commit before rejoining was lost: committed {committed}, " \
            f"positions {positions}"

        # b starts its partition where a committed
        def position(c):
            return {tp.partition: c.position(tp, timeout_ms=10000) for tp in c.assignment()}
        b_positions = b.call(position)
        assert len(b_positions) == 1 and b_positions.items() <= positions.items(), \
            (b_positions, positions)
        a.check()
        b.check()
        passed = True
    finally:
        # close both (joining their threads) however the test ends
        errors = []
        for m in members:
            try:
                m.close()
            except Exception as e:
                errors.append(e)
        if passed and errors:
            raise errors[0]


# ---------------------------------------------------------------------------------------------
# The same group of three with kcat's balanced consumer: `kcat -G group topic` runs librdkafka's
# high-level consumer (eager protocol, range assignor, auto-commit on). librdkafka stores the
# offset of each message as it hands it to kcat, which prints it at once (-u: unbuffered), and
# commits the stored offsets: every auto.commit.interval.ms, when partitions are revoked (it
# does not rejoin before that commit is answered) and when the consumer closes, which kcat
# does on SIGTERM before the consumer leaves the group. So a partition's new owner starts
# exactly after the last record its previous owner printed: nothing twice, nothing skipped.
#
# auto.commit.interval.ms stays at librdkafka's 5 s: `kcat -X name=value` sets a property on
# the topic configuration when the name is one (auto.commit.interval.ms and enable.auto.commit
# are also legacy topic properties), and the high-level consumer reads the global one. The
# test does not rely on the periodic commit: only on the commits on revoke and on close.
#
# Records are being produced while the third member joins. The member that leaves is stopped
# only once every record produced so far has been consumed: kcat 1.7.1 does not print a message
# that poll returns after the signal arrived, but librdkafka has already stored its offset and
# commits it on close, so a leave with records in flight could lose one on the client's side.

KCAT_POLL_S = 0.02
_ASSIGN_RE = re.compile(r"rebalanced \(memberid [^)]*\): (assigned|revoked): ?(.*)$")


class KcatMember:
    """One `kcat -G` process; stdout lines "partition offset value", stderr rebalance lines."""

    def __init__(self, name, bootstrap, group, topic):
        self.name = name
        self.topic = topic
        self._lock = threading.Lock()
        self._consumed = []  # (partition, offset, value)
        self._assignment = set()
        self.rebalances = []  # ("assigned" | "revoked", [partitions])
        self.bad_lines = []
        self.k = KcatProcess(
            ["-b", bootstrap, "-G", group, "-u", "-f", "%p %o %s\\n",
             "-X", f"client.id={name}", "-X", "auto.offset.reset=earliest",
             "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=200",
             "-X", "fetch.wait.max.ms=100", topic],
            name=name, on_stdout=self._on_stdout, on_stderr=self._on_stderr)

    def _on_stdout(self, line):  # on a reader thread
        parts = line.split(" ", 2)
        with self._lock:
            if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
                self._consumed.append((int(parts[0]), int(parts[1]), parts[2].encode()))
            else:
                self.bad_lines.append(line)

    def _on_stderr(self, line):  # on a reader thread
        m = _ASSIGN_RE.search(line)
        if m is None:
            return
        parts = [int(x) for x in re.findall(r"\[(\d+)\]", m.group(2))]
        with self._lock:
            self.rebalances.append((m.group(1), parts))
            self._assignment = set(parts) if m.group(1) == "assigned" else set()

    @property
    def consumed(self):
        with self._lock:
            return list(self._consumed)

    @property
    def assignment(self):
        with self._lock:
            return set(self._assignment)

    def step(self):
        """kcat does the work; here: fail if it exited or printed something unexpected."""
        self.k.check()
        assert not self.bad_lines, f"{self.name}: unexpected output {self.bad_lines[:5]}"
        time.sleep(KCAT_POLL_S)

    def close(self, sig=signal.SIGTERM):
        code = self.k.stop(sig, timeout=20)
        assert code == 0, f"{self.name} exited {code} on {sig!r}:\n{self.k.stderr_text()}"

    def kill(self):
        self.k.kill()


def group_committed(bootstrap, group, topic, partitions):
    """The group's committed offsets, from a consumer that only asks (it never joins)."""
    c = ck.Consumer(ck_conf(bootstrap, **{"group.id": group, "enable.auto.commit": False}))
    try:
        tps = c.committed([ck.TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    finally:
        c.close()


def test_group_of_three_rebalances_kcat(broker):
    topic = unique("grp-kcat")
    group = unique("g-kcat")
    admin = ck.admin.AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([ck.admin.NewTopic(topic, num_partitions=PARTITIONS,
                                           replication_factor=1)])[topic].result(15)
    prod = Producer(broker.bootstrap, topic)
    members = []

    def ends():
        out = {}
        for (p, o) in prod.produced:
            out[p] = max(out.get(p, -1), o + 1)
        return out

    def balanced(ms):
        sets = [m.assignment for m in ms]
        return (all(len(s) == PARTITIONS // len(ms) for s in sets)
                and set().union(*sets) == set(range(PARTITIONS)))

    def drive_until(ms, cond, seconds, what):
        d = Deadline(seconds, what)
        while not cond():
            d.check(" / ".join(f"{m.name}: assigned {sorted(m.assignment)} consumed "
                               f"{len(m.consumed)}" for m in ms)
                    + f"; produced {len(prod.produced)}")
            for m in ms:
                m.step()

    def consumed_all(ms, seconds, what):
        """Every record produced so far has been printed by some member."""
        drive_until(ms, lambda: {(p, o) for m in members for (p, o, _) in m.consumed}
                    >= set(prod.produced), seconds,
                    f"{what}: consuming all {len(prod.produced)} records")

    passed = False
    try:
        a = KcatMember("kcat-a", broker.bootstrap, group, topic)
        members.append(a)
        b = KcatMember("kcat-b", broker.bootstrap, group, topic)
        members.append(b)
        drive_until([a, b], lambda: balanced([a, b]), 30, "two members sharing six partitions")

        # 1. two members consume the first batch
        prod.produce(BATCH)
        consumed_all([a, b], 30, "two members")
        assert a.consumed and b.consumed, "a member got nothing"

        # 2. a third member joins while records are being produced: the producer runs on a
        # thread, ten records every 20 ms, until c has partitions and for 0.2 s more
        c = None
        joining = {}
        background = []

        def produce_while_c_joins():
            try:
                d = Deadline(30, "c assigned")
                after = None
                while after is None or time.monotonic() < after:
                    prod.produce(10)
                    if "c_started" in joining and "c_assigned" not in joining \
                            and c.assignment:
                        joining["c_assigned"] = prod.n
                        after = time.monotonic() + 0.2
                    d.check()
                    time.sleep(0.02)
            except BaseException as e:
                background.append(e)

        t = threading.Thread(target=produce_while_c_joins, daemon=True)
        t.start()
        time.sleep(0.1)
        c = KcatMember("kcat-c", broker.bootstrap, group, topic)
        members.append(c)
        joining["c_started"] = prod.n
        drive_until([a, b, c], lambda: balanced([a, b, c]) and not t.is_alive(), 40,
                    "three members sharing six partitions, production stopped")
        t.join(1)
        assert not background, background
        print("records produced before c started, before c had partitions, in all:",
              joining, prod.n)
        assert joining["c_assigned"] > joining["c_started"], \
            f"nothing produced while c joined: {joining}"
        consumed_all([a, b, c], 30, "three members")

        # 3. three members consume a batch; each gets its share
        before = {m.name: len(m.consumed) for m in members}
        prod.produce(BATCH)
        consumed_all([a, b, c], 30, "three members, third batch")
        for m in (a, b, c):
            assert len(m.consumed) > before[m.name], f"{m.name} consumed none of batch 3"
            assert len(m.assignment) == 2, (m.name, m.assignment)

        # 4. b leaves cleanly (SIGTERM: kcat closes the consumer, which commits and sends
        # LeaveGroup); a and c take over its partitions, committing theirs on revoke first
        b_had = b.assignment
        b.close()
        assert b.rebalances[-1] == ("revoked", sorted(b_had)), b.rebalances
        drive_until([a, c], lambda: balanced([a, c]), 30, "two members after b left")
        # nothing was produced since everything was consumed: the commits on close and on
        # revoke have put the group's offsets at the end of every partition
        assert group_committed(broker.bootstrap, group, topic, PARTITIONS) == ends()
        prod.produce(BATCH)
        consumed_all([a, c], 30, "two members after the leave")
        assert {p for (p, o, _) in a.consumed + c.consumed if o >= ends()[p] - BATCH // 6} \
            >= b_had

        # stragglers would show up as duplicates
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            a.step()
            c.step()
        a.close()
        c.close()

        consumed = [(p, o, v) for m in members for (p, o, v) in m.consumed]
        seen, dups = set(), set()
        for (p, o, _) in consumed:
            (dups if (p, o) in seen else seen).add((p, o))
        assert not dups, f"consumed twice: {sorted(dups)[:20]} (of {len(dups)})"
        assert len(prod.produced) == prod.n
        missing = sorted(set(prod.produced) - seen)
        assert not missing, f"never consumed: {missing[:20]} (of {len(missing)})"
        assert seen == set(prod.produced)
        assert {(p, o): v for (p, o, v) in consumed} == prod.produced
        # every member printed each partition in offset order
        for m in members:
            for p in range(PARTITIONS):
                offs = [o for (pp, o, _) in m.consumed if pp == p]
                assert offs == sorted(offs), (m.name, p, offs[:20])
        # the commits on close put the group's offsets at the end of every partition
        assert group_committed(broker.bootstrap, group, topic, PARTITIONS) == ends()
        print("rebalances:", {m.name: m.rebalances for m in members})
        passed = True
    finally:
        # stop every kcat by its PID however the test ends
        errors = []
        for m in members:
            if m.k.running() or not passed:
                try:
                    m.kill()
                except Exception as e:
                    errors.append(e)
        if passed and errors:
            raise errors[0]
