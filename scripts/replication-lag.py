"""Replication lag under load: three `spate serve` processes on 127.0.0.1
(tests/clients/cluster_util.py), a partition of RF 3 and, on the same cluster, one of RF 1
(its leader's own durable end is its high watermark: the baseline of what the sampling
itself costs). For each, a producer writes 1 KiB records with acks=1 at a fixed rate (the
leader acknowledges once it has written a batch, before any follower has it), while a sampler
asks the leader for the high watermark (ListOffsets latest) as fast as it answers. Reported:

- lag in time: from a record's acknowledgement to the first sample whose high watermark is
  past it, i.e. until every in-sync replica has it durably and consumers may read it;
- lag in records: at each sample, the records acknowledged but not yet below the high
  watermark.

    SPATE_BIN=target/release/spate target/test-venv/bin/python scripts/replication-lag.py \
        [--rates 10,25] [--seconds 20]
"""

import argparse
import bisect
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "clients"))
os.environ.setdefault("SPATE_BIN", os.path.abspath("target/release/spate"))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from cluster_util import cluster_nodes, wait_for  # noqa: E402

RECORD = 1024


def leader_of(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000})
    p = admin.list_topics(topic, timeout=5).topics[topic].partitions[0]
    return p.leader, sorted(p.isrs)


def quantile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def measure(leader_bootstrap, topic, mb_per_s, seconds):
    """[(ack time, offset)] and [(sample time, high watermark)] of one run."""
    acks = []
    samples = []
    stop = threading.Event()

    def sampler():
        c = Consumer({"bootstrap.servers": leader_bootstrap, "group.id": "lag-sampler"})
        tp = TopicPartition(topic, 0)
        try:
            while not stop.is_set():
                _, high = c.get_watermark_offsets(tp, timeout=5, cached=False)
                samples.append((time.monotonic(), high))
        finally:
            c.close()

    def delivered(err, msg):
        if err is None:
            acks.append((time.monotonic(), msg.offset()))

    p = Producer({"bootstrap.servers": leader_bootstrap, "acks": "1", "linger.ms": 1,
                  "enable.idempotence": False})
    t = threading.Thread(target=sampler, daemon=True)
    t.start()
    value = b"x" * RECORD
    per_s = mb_per_s * 1_000_000 / RECORD
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < seconds:
        due = int((time.monotonic() - start) * per_s)
        while sent < due:
            try:
                p.produce(topic, value=value, partition=0, on_delivery=delivered)
                sent += 1
            except BufferError:
                p.poll(0.001)
        p.poll(0)
        time.sleep(0.0005)
    p.flush(30)
    time.sleep(1.0)  # the last records reach the high watermark
    stop.set()
    t.join(10)
    return acks, samples


def report(name, acks, samples, seconds):
    times = [s[0] for s in samples]
    lags = []
    for at, offset in acks:
        i = bisect.bisect_left(times, at)
        while i < len(samples) and samples[i][1] <= offset:
            i += 1
        if i < len(samples):
            lags.append((samples[i][0] - at) * 1000.0)
    lags.sort()
    # Records behind at each sample: acknowledged (by then) but not below the watermark.
    ack_times = [a[0] for a in acks]
    acked_offsets = [a[1] for a in acks]
    behind = []
    best = -1
    running_max = []
    for o in acked_offsets:
        best = max(best, o)
        running_max.append(best)
    for at, high in samples:
        j = bisect.bisect_right(ack_times, at)
        if j:
            behind.append(max(0, running_max[j - 1] + 1 - high))
    behind.sort()
    gaps = sorted((b[0] - a[0]) * 1000.0 for a, b in zip(samples, samples[1:]))
    print(f"{name}: {len(acks)} records acked in {seconds} s "
          f"({len(acks) * RECORD / seconds / 1e6:.1f} MB/s), {len(samples)} samples "
          f"(every {statistics.median(gaps) if gaps else float('nan'):.2f} ms median)")
    print(f"  lag ms   p50 {quantile(lags, 0.5):.1f}  p99 {quantile(lags, 0.99):.1f}  "
          f"p99.9 {quantile(lags, 0.999):.1f}  max {lags[-1] if lags else float('nan'):.1f}")
    print(f"  records  p50 {quantile(behind, 0.5)}  p99 {quantile(behind, 0.99)}  "
          f"max {behind[-1] if behind else 'nan'}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="10,25", help="MB/s of 1 KiB records, comma-separated")
    ap.add_argument("--seconds", type=int, default=20)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="spate-lag-")
    nodes = cluster_nodes(root)
    try:
        for n in nodes:
            n.start()
        everyone = ",".join(n.bootstrap for n in nodes)
        admin = AdminClient({"bootstrap.servers": everyone})
        wait_for("3 brokers", lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30)
        # Both led by broker 1, so one leader serves both runs.
        topics = [NewTopic("lag-rf1", num_partitions=1, replica_assignment=[[1]]),
                  NewTopic("lag-rf3", num_partitions=1, replica_assignment=[[1, 2, 3]])]
        for f in admin.create_topics(topics).values():
            f.result(30)
        wait_for("rf3 in sync", lambda: leader_of(everyone, "lag-rf3") == (1, [1, 2, 3]), 60)
        wait_for("rf1 led", lambda: leader_of(everyone, "lag-rf1")[0] == 1, 60)
        for rate in (float(r) for r in args.rates.split(",")):
            for topic in ("lag-rf1", "lag-rf3"):
                acks, samples = measure(nodes[0].bootstrap, topic, rate, args.seconds)
                report(f"{topic} at {rate:g} MB/s", acks, samples, args.seconds)
    finally:
        for n in nodes:
            n.stop()


if __name__ == "__main__":
    main()
