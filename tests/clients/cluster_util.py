"""What the cluster tests share: a `spate serve` process of a cluster, started, killed and
stopped by PID, a wait for a condition with what was last seen when it times out, and what the
live nodes say of a partition."""

import os
import signal
import subprocess
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from conftest import SPATE_BIN, free_port, port_listening

SESSION_TIMEOUT_S = 9.0


class Node:
    def __init__(self, root, node_id, voters, cluster_port, config=None):
        self.node_id = node_id
        self.data_dir = Path(root) / f"node{node_id}"
        self.log_path = Path(root) / f"node{node_id}.stderr.log"
        self.port = free_port()
        self.cluster_port = cluster_port
        self.voters = voters
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc = None
        # Extra environment of its starts (e.g. an object store's credentials).
        self.env = {}
        # A config file's text (TOML), if the node needs one.
        self.config_path = None
        if config is not None:
            self.config_path = Path(root) / f"node{node_id}.toml"
            self.config_path.write_text(config)

    def cmd(self):
        cmd = [SPATE_BIN, "serve", "--data-dir", str(self.data_dir),
               "--listen", self.bootstrap, "--shards", "1",
               "--node-id", str(self.node_id), "--voters", self.voters]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        if str(self.node_id) + "@" not in self.voters:
            # An observer says where the voters reach it.
            cmd += ["--cluster-listen", f"127.0.0.1:{self.cluster_port}"]
        return cmd

    def start(self):
        env = dict(os.environ)
        env.setdefault("SPATE_LOG", "info")
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            offset = log.tell()
            self.proc = subprocess.Popen(self.cmd(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + 20
        while "spate is ready" not in self.log(offset):
            assert self.proc.poll() is None, f"node {self.node_id} exited:\n{self.log(offset)}"
            assert time.monotonic() < deadline, f"node {self.node_id} not ready:\n{self.log(offset)}"
            time.sleep(0.02)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        deadline = time.monotonic() + 10
        while port_listening(self.port) or port_listening(self.cluster_port):
            assert time.monotonic() < deadline, "ports still listening after SIGKILL"
            time.sleep(0.01)

    def pause(self):
        """SIGSTOP: the process holds its sockets but answers nothing."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused node cannot stop
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(10)

    def log(self, offset=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


def wait_for(what, check, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # a broker may be between states
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def cluster_nodes(root, count=3, config=None):
    """`count` voters on free ports of 127.0.0.1, not started; `config`: the text of a config
    file every one of them reads."""
    ports = [free_port() for _ in range(count)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(ports))
    return [Node(root, i + 1, voters, ports[i], config) for i in range(count)]


def live(nodes):
    return [n for n in nodes if n.proc and n.proc.poll() is None]


def state(node, topic):
    """(leader, sorted replicas, sorted ISR) of partition 0, as `node` answers Metadata."""
    admin = AdminClient({"bootstrap.servers": node.bootstrap, "socket.timeout.ms": 3000})
    p = admin.list_topics(topic, timeout=5).topics[topic].partitions[0]
    return p.leader, tuple(sorted(p.replicas)), tuple(sorted(p.isrs))


def settled(nodes, topic, members):
    """The leader, once every live node sees exactly `members` in sync."""
    def check():
        states = {state(n, topic) for n in live(nodes)}
        if len(states) != 1:
            return None
        leader, replicas, isr = states.pop()
        return leader if isr == tuple(sorted(members)) == replicas else None
    return check


def local_bytes(node, topic):
    d = node.data_dir / "topics" / topic / "0"
    return sum(f.stat().st_size for f in d.glob("*.log"))
