"""A long poll sleeps: a consumer whose fetch.min.bytes is far above what a slow topic
receives costs the broker about what a consumer with fetch.min.bytes=1 costs.

The broker once woke such a fetch at every append and then re-read every partition in a loop
until fetch.wait.max.ms passed (3.3 CPU-seconds in 14 s against 0.25 s). The broker's CPU
time is read from /proc/PID/stat around each run, and the two runs are compared as a ratio.
"""

import os
import threading
import time

import confluent_kafka as ck

from kutil import unique

RUN_S = 10.0
RECORDS_PER_S = 10
# CPU-seconds added to the fetch.min.bytes=1 run before taking the ratio, so that the noise of
# a nearly idle broker (timers, retention checks) does not decide it.
NOISE_S = 0.1


def cpu_seconds(pid):
    """User + system time of every thread of the process so far."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces: fields after the closing parenthesis.
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def consume_while_producing(broker, topic, min_bytes):
    """Returns (broker CPU-seconds, records consumed) for RUN_S of a slow producer and one
    consumer with fetch.min.bytes = min_bytes."""
    stop = threading.Event()
    produced = []

    def produce():
        p = ck.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
        n = 0
        while not stop.is_set():
            p.produce(topic, value=b"%010d" % n)
            p.flush(5)
            produced.append(n)
            n += 1
            stop.wait(1.0 / RECORDS_PER_S)
        p.flush(5)

    c = ck.Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": unique("g"),
        "enable.auto.commit": False,
        "auto.offset.reset": "latest",
        "fetch.min.bytes": min_bytes,
        "fetch.wait.max.ms": 500,
    })
    c.assign([ck.TopicPartition(topic, 0, ck.OFFSET_END)])
    # Let the consumer settle on its position before measuring.
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        c.poll(0.1)
    t = threading.Thread(target=produce)
    got = 0
    before = cpu_seconds(broker.proc.pid)
    t.start()
    try:
        end = time.monotonic() + RUN_S
        while time.monotonic() < end:
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                got += 1
    finally:
        stop.set()
        t.join(10)
    used = cpu_seconds(broker.proc.pid) - before
    c.close()
    return used, got, len(produced)


def test_a_long_poll_above_what_arrives_does_not_spin(broker):
    topic = unique("slow")
    admin = ck.admin.AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([ck.admin.NewTopic(topic, 1, 1)]).values():
        f.result(10)

    cpu_eager, got_eager, sent_eager = consume_while_producing(broker, topic, 1)
    cpu_patient, got_patient, sent_patient = consume_while_producing(broker, topic, 1_000_000)
    detail = (f"fetch.min.bytes=1: {cpu_eager:.2f} CPU-s, {got_eager} of {sent_eager} records; "
              f"fetch.min.bytes=1000000: {cpu_patient:.2f} CPU-s, {got_patient} of "
              f"{sent_patient} records")
    print(detail)
    # Both consumers kept up (the patient one gets its records when each wait ends).
    assert got_eager >= sent_eager // 2, detail
    assert got_patient >= sent_patient // 2, detail
    assert cpu_patient <= 3 * (cpu_eager + NOISE_S), detail
