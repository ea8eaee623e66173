"""A cluster of real `spate serve` processes on 127.0.0.1: the metadata quorum forms, every
broker registers, Metadata and DescribeCluster agree from any bootstrap broker, a SIGKILLed
controller is replaced and its broker fenced within broker.session.timeout.ms, and it rejoins
when it comes back. Plus the start-up errors of a misconfigured node.

The three brokers start once for the module and are stopped by PID however the tests end.
"""

import os
import signal
import subprocess
import time

import pytest
from confluent_kafka.admin import AdminClient

from cluster_util import SESSION_TIMEOUT_S, Node, wait_for
from conftest import SPATE_BIN, free_port, port_listening


def view(bootstrap):
    """(sorted broker ids, controller id, cluster id) as a fresh librdkafka client sees them."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000})
    md = admin.list_topics(timeout=5)
    described = admin.describe_cluster().result(timeout=5)
    assert sorted(n.id for n in described.nodes) == sorted(md.brokers)
    assert (described.controller.id if described.controller else -1) == md.controller_id
    return sorted(md.brokers), md.controller_id, md.cluster_id


@pytest.fixture(scope="module")
def cluster(module_dir):
    assert os.access(SPATE_BIN, os.X_OK), f"no broker binary at {SPATE_BIN}"
    root = module_dir
    ports = [free_port() for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(ports))
    nodes = [Node(root, i + 1, voters, ports[i]) for i in range(3)]
    try:
        for n in nodes:
            n.start()
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def converged(nodes, expect):
    views = [view(n.bootstrap) for n in nodes]
    ok = all(v[0] == expect and v[1] in expect for v in views) and len({v[1:] for v in views}) == 1
    return views if ok else None


def test_the_brokers_form_one_cluster_and_agree_on_it(cluster):
    views = wait_for("3 brokers and one controller seen from every broker",
                     lambda: converged(cluster, [1, 2, 3]), 30)
    cluster_id = views[0][2]
    assert cluster_id.startswith("cluster-")
    for n in cluster:
        assert (n.data_dir / "cluster-id").read_text() == cluster_id
    # `spate cluster status` says the same, from any broker.
    controller = views[0][1]
    out = subprocess.run([SPATE_BIN, "cluster", "status", "-b", cluster[2].bootstrap],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert f"cluster {cluster_id}" in out.stdout
    assert f"controller: broker {controller}" in out.stdout
    assert "brokers: 3" in out.stdout
    for n in cluster:
        assert f"  {n.node_id}\t127.0.0.1:{n.port}" in out.stdout, out.stdout


def test_a_killed_controller_is_replaced_and_its_broker_fenced_then_it_rejoins(cluster):
    views = wait_for("converged", lambda: converged(cluster, [1, 2, 3]), 30)
    controller = views[0][1]
    victim = next(n for n in cluster if n.node_id == controller)
    others = [n for n in cluster if n is not victim]
    killed_at = time.monotonic()
    victim.kill()
    # A new controller is elected among the other two, and the dead broker is fenced (gone
    # from Metadata) within the session timeout, plus 5 s.
    views = wait_for("a new controller and the killed broker fenced",
                     lambda: converged(others, sorted(n.node_id for n in others)),
                     SESSION_TIMEOUT_S + 5)
    assert views[0][1] != controller
    assert time.monotonic() - killed_at < SESSION_TIMEOUT_S + 5
    victim.start()
    wait_for("the restarted broker registered again",
             lambda: converged(cluster, [1, 2, 3]), 30)
    assert "broker registered" in victim.log()


def test_a_frame_of_another_cluster_is_refused_and_logged(cluster, tmp_path):
    # A node of another cluster (other voters) that names one of ours as a voter: its
    # quorum messages reach our node, which refuses them, says so, and is not disturbed.
    target = cluster[1]
    own = free_port()
    stranger = Node(tmp_path, 1, f"1@127.0.0.1:{own},2@127.0.0.1:{target.cluster_port}", own)
    offset = len(target.log().encode())
    stranger.start()
    try:
        wait_for("the refusal logged",
                 lambda: "refused a frame of another cluster" in target.log(offset), 20)
    finally:
        stranger.stop()
    wait_for("still converged", lambda: converged(cluster, [1, 2, 3]), 15)


def test_a_broker_that_is_no_voter_follows_as_an_observer(cluster, tmp_path):
    # A fourth broker, not among the voters: it fetches the metadata log from them, registers,
    # and is named by every broker; stopped, it is fenced.
    wait_for("converged", lambda: converged(cluster, [1, 2, 3]), 30)
    port = free_port()
    observer = Node(tmp_path, 4, cluster[0].voters, port)
    observer.start()
    try:
        assert "an observer" in observer.log()
        views = wait_for("four brokers seen from every broker, the observer too",
                         lambda: converged(cluster + [observer], [1, 2, 3, 4]), 30)
        assert views[-1][1] in (1, 2, 3), "the controller is a voter"
        assert not (observer.data_dir / "__cluster_metadata").exists(), \
            "an observer keeps no metadata log"
    finally:
        observer.stop()
    wait_for("the observer fenced once stopped",
             lambda: converged(cluster, [1, 2, 3]), SESSION_TIMEOUT_S + 5)


def run_serve(args, tmp_path):
    return subprocess.run([SPATE_BIN, "serve", "--data-dir", str(tmp_path / "d"),
                           "--listen", f"127.0.0.1:{free_port()}", "--shards", "1"] + args,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("voters,says", [
    ("", "empty"),
    ("1-127.0.0.1:9", "no '@'"),
    ("x@127.0.0.1:9", "not a node id"),
    ("1@127.0.0.1", "no port"),
    ("1@127.0.0.1:99999", "not a port"),
    ("1@127.0.0.1:9,1@127.0.0.1:10", "given twice"),
    ("1@127.0.0.1:9,2@127.0.0.1:9", "same address"),
])
def test_a_bad_voter_list_is_an_error_naming_it(voters, says, tmp_path):
    r = run_serve(["--node-id", "1", "--voters", voters], tmp_path)
    assert r.returncode != 0
    assert says in r.stderr, r.stderr


def test_a_node_missing_from_the_voters_or_without_an_id_is_refused(tmp_path):
    r = run_serve(["--node-id", "4", "--voters", "1@127.0.0.1:9"], tmp_path)
    assert r.returncode != 0 and "not among the voters" in r.stderr, r.stderr
    r = run_serve(["--voters", "1@127.0.0.1:9"], tmp_path)
    assert r.returncode != 0 and "--node-id" in r.stderr, r.stderr


def test_a_data_dir_of_another_cluster_is_refused(tmp_path):
    port = free_port()
    first = Node(tmp_path, 1, f"1@127.0.0.1:{port}", port)
    first.start()
    first.stop()
    other = free_port()
    r = subprocess.run(Node(tmp_path, 1, f"1@127.0.0.1:{other}", other).cmd(),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "belongs to cluster" in r.stderr, r.stderr


def test_a_node_whose_voters_are_unreachable_waits_and_says_for_whom(tmp_path):
    ports = [free_port() for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(ports))
    alone = Node(tmp_path, 1, voters, ports[0])
    alone.start()
    try:
        wait_for("a waiting line naming the unreachable voters",
                 lambda: f"not reachable yet: 2@127.0.0.1:{ports[1]}, 3@127.0.0.1:{ports[2]}"
                 in alone.log(), 15)
        assert alone.proc.poll() is None, "it must wait, not exit"
        # It still answers Kafka clients, naming itself and no controller (so DescribeCluster,
        # which librdkafka sends to the controller, is not asked here).
        md = AdminClient({"bootstrap.servers": alone.bootstrap}).list_topics(timeout=5)
        assert sorted(md.brokers) == [1] and md.controller_id == -1
    finally:
        alone.stop()


def test_spate_cluster_starts_a_local_cluster_and_stops_it_on_ctrl_c(tmp_path):
    proc = subprocess.Popen([SPATE_BIN, "cluster", "--nodes", "3", "--base-port", "0",
                             "--data-dir", str(tmp_path / "c")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("bootstrap: "), line + proc.stderr.read()
        bootstrap = line.split()[1].split(",")
        assert len(bootstrap) == 3
        wait_for("the three brokers of the local cluster agree",
                 lambda: all(view(b)[0] == [1, 2, 3] for b in bootstrap), 30)
        # Its topics get three replicas by default: an auto-created one has them.
        admin = AdminClient({"bootstrap.servers": bootstrap[0]})

        def replicas():
            t = admin.list_topics("auto-rf", timeout=5).topics["auto-rf"]
            return t.error is None and [sorted(p.replicas) for p in t.partitions.values()]
        assert wait_for("an auto-created topic", replicas, 30) == [[1, 2, 3]]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(40) == 0
        err = proc.stderr.read()
        for i in (1, 2, 3):
            assert f"node {i} stopped (exit status: 0)" in err, err
        for b in bootstrap:
            assert not port_listening(int(b.rsplit(":", 1)[1]))
        assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
            "cluster.toml", "node-1", "node-2", "node-3"]
        assert "default_replication_factor = 3" in (tmp_path / "c" / "cluster.toml").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
