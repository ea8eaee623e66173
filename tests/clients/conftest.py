"""Fixtures for the real-client acceptance tests: a real `spate serve` process per test.

The broker binary comes from env SPATE_BIN (default: <repo>/target/debug/spate). Each test
gets a fresh data directory and a free loopback port; the process is stopped by PID at
teardown (SIGTERM, then SIGKILL after a timeout) however the test ends, and the tail of its
stderr is attached to the report of a failing test.

Disk: a passing test's tmp_path is removed at its teardown (pytest.ini's
tmp_path_retention_policy = failed), and the brokers a module's tests share live in
`module_dir`, removed at the module's end unless one of its tests failed (docs/TESTING.md,
"The suite's disk"). A failing test's directory stays, with its broker's log.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPATE_BIN = os.environ.get("SPATE_BIN", str(REPO / "target" / "debug" / "spate"))
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 60

# Small rebalance delay so group tests do not wait 300 ms per fresh group.
BROKER_CONFIG = """\
[kafka]
group_initial_rebalance_delay_ms = 100
"""


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_listening(port):
    """Whether some socket listens on 127.0.0.1:port (from /proc/net/tcp; state 0A)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                return True
    return False


class BrokerError(AssertionError):
    pass


class Broker:
    """One broker process at a time on a fixed data dir and port."""

    def __init__(self, workdir, shards=None):
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "spate.stderr.log"
        self.config_path = self.workdir / "spate.toml"
        self.config_path.write_text(BROKER_CONFIG)
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.shards = shards
        self.proc = None
        self.starts = 0
        # Extra environment of the next start (e.g. SPATE_FAILPOINT).
        self.env = {}

    # -- process control ------------------------------------------------------------------

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        self.starts += 1
        cmd = [
            SPATE_BIN, "serve",
            "--data-dir", str(self.data_dir),
            "--listen", self.bootstrap,
            "--config", str(self.config_path),
        ]
        if self.shards is not None:
            cmd += ["--shards", str(self.shards)]
        env = dict(os.environ)
        env.setdefault("SPATE_LOG", "info")
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            log.write(f"===== start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            offset = log.tell()
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env,
                start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            text = self._read_from(offset)
            if "spate is ready" in text:
                assert f"listen={self.bootstrap}" in text, text
                return
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"broker exited with {self.proc.returncode} before it was ready:\n{text}")
            if time.monotonic() > deadline:
                self._force_stop()
                raise BrokerError(f"broker not ready after {READY_TIMEOUT_S}s:\n{text}")
            time.sleep(0.02)

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM and wait; returns the exit code (SIGKILL after `timeout`, then raises)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._force_stop()
            raise BrokerError(f"broker did not stop within {timeout}s of SIGTERM")

    def restart(self):
        """Clean stop (asserting a clean shutdown), then start again on the same dir/port."""
        offset = self.log_path.stat().st_size
        code = self.stop()
        assert code == 0, f"broker exit code {code} on SIGTERM:\n{self.tail()}"
        assert "clean shutdown" in self._read_from(offset), self.tail()
        self.start()

    def kill(self):
        """Crash: SIGKILL, reap, and wait until the kernel has let go of the listen port.

        The listening sockets of a SIGKILLed io_uring process outlive it by ~15 ms (the ring
        is torn down asynchronously); a start within that window fails with "cannot listen
        ... Address already in use". A supervisor restarts later than that, so we wait too.
        """
        assert self.proc is not None and self.proc.poll() is None, "broker not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        deadline = time.monotonic() + 10
        while port_listening(self.port):
            if time.monotonic() > deadline:
                raise BrokerError(f"port {self.port} still listening 10 s after SIGKILL")
            time.sleep(0.005)

    def _force_stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def teardown(self):
        try:
            self.stop()
        finally:
            self._force_stop()

    # -- logs -------------------------------------------------------------------------------

    def _read_from(self, offset):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log(self):
        return self._read_from(0)

    def tail(self, n=LOG_TAIL_LINES):
        return "\n".join(self.log().splitlines()[-n:])


@pytest.fixture
def broker(request, tmp_path):
    assert os.access(SPATE_BIN, os.X_OK), f"no broker binary at {SPATE_BIN} (set SPATE_BIN)"
    b = Broker(tmp_path)
    request.node._spate_broker = b
    b.start()
    try:
        yield b
    finally:
        b.teardown()


# Modules (by name) with a failed test: their `module_dir` is kept.
FAILED_MODULES = set()


@pytest.fixture(scope="module")
def module_dir(request, tmp_path_factory):
    """A directory for the brokers (and object stores) a module's fixtures share; removed
    when the module is done unless one of its tests failed. Fixtures that stop processes in it
    depend on it, so they are torn down first."""
    path = tmp_path_factory.mktemp(request.module.__name__)
    yield path
    if request.module.__name__ not in FAILED_MODULES:
        shutil.rmtree(path, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        FAILED_MODULES.add(item.module.__name__)
    b = getattr(item, "_spate_broker", None)
    if b is not None and rep.failed:
        rep.sections.append(
            (f"spate broker stderr, last {LOG_TAIL_LINES} lines ({b.log_path})", b.tail()))
