"""Time to a new leader after a SIGKILL of the leader, median of N: three `spate serve`
processes on 127.0.0.1 (tests/clients/cluster_util.py), one RF 3 partition; each round
SIGKILLs its leader and measures, from the kill, until a fresh client's Metadata from a
surviving broker names another live leader and an acks=all produce to it succeeds; then
restarts the killed broker and waits for the ISR to be whole again.

    SPATE_BIN=target/release/spate target/test-venv/bin/python scripts/failover-time.py [N]
"""

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "clients"))
os.environ.setdefault("SPATE_BIN", os.path.abspath("target/release/spate"))

from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from cluster_util import cluster_nodes, wait_for  # noqa: E402


def leader_and_isr(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000})
    p = admin.list_topics("failover-time", timeout=3).topics["failover-time"].partitions[0]
    return p.leader, sorted(p.isrs)


def main(rounds):
    root = tempfile.mkdtemp(prefix="spate-failover-")
    nodes = cluster_nodes(root)
    times = []
    try:
        for n in nodes:
            n.start()
        everyone = ",".join(n.bootstrap for n in nodes)
        admin = AdminClient({"bootstrap.servers": everyone})
        wait_for("3 brokers", lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30)
        for f in admin.create_topics([NewTopic("failover-time", 1, 3)]).values():
            f.result(30)
        def settled():
            # Every broker names the same leader and a whole ISR (a broker just restarted
            # names no leader until it has caught up).
            views = {leader_and_isr(n.bootstrap)[0] for n in nodes
                     if leader_and_isr(n.bootstrap)[1] == [1, 2, 3]}
            return len(views) == 1 and min(views) > 0 and views.pop()

        for r in range(rounds):
            leader = wait_for("3 in sync everywhere", settled, 60)
            victim = nodes[leader - 1]
            rest = ",".join(n.bootstrap for n in nodes if n is not victim)
            victim.kill()
            killed = time.monotonic()
            wait_for("a new leader", lambda: leader_and_isr(rest)[0] not in (-1, leader), 60)
            p = Producer({"bootstrap.servers": rest, "acks": "all"})
            p.produce("failover-time", value=b"x", partition=0)
            assert p.flush(30) == 0
            took = time.monotonic() - killed
            times.append(took)
            print(f"round {r + 1}: leader {leader} killed, new leader serving after {took:.2f} s",
                  flush=True)
            victim.start()
        print(f"median {statistics.median(times):.2f} s, min {min(times):.2f} s, "
              f"max {max(times):.2f} s over {len(times)} kills "
              f"(broker.session.timeout.ms 9000)")
    finally:
        for n in nodes:
            n.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
