"""The log cleaner's throughput against fio's sequential read and write rates on the same disk,
and produce latency on the cleaner's shard with a pass running against without, in one run.

One `spate serve` (release, 1 shard: the cleaner and the produce share it). Part 1: a compacted
topic (1 partition, 64 MiB segments, `min.compaction.lag.ms` a day so that nothing is cleaned
while it fills) gets `--mib` MiB of 1 KiB records over `--keys` keys; then the lag goes to 0
and the cleaner compacts the backlog. Its throughput is the log bytes it cleaned over the
passes' own time, from the broker's `compacted` log lines; the broker's CPU seconds meanwhile
per GiB cleaned. fio then reads and writes a 1 GiB file with O_DIRECT in 1 MiB blocks in the
same data directory. A pass reads the dirty log twice (the key map, then the rewrite) and
writes what it keeps, so the rate the disk allows is bytes / (2 x bytes / read + kept / write):
the cleaner's rate is given as a share of that. Then the raw disk alone answers the same
question as part 2: an appending 16 KiB write + fdatasync at 300/s (fio), alone and beside fio
reading and appending at the pass's measured read and write rates.

Part 2: rounds of spate-bench (open loop, `--rate` records/s of 1 KiB, acks=all, one partition)
on the same shard, alternately with a fresh backlog being cleaned meanwhile and without; p50,
p99 and p99.9 publish latency of each, and the median of the rounds; for each cleaning round
the longest step the passes reported (`longest_step_us`: the shard's CPU time the cleaner held
in one go). `--backlog-mib N` skips part 1 and cleans backlogs of N MiB; `--rounds 0` runs
part 1 only.

    SPATE_BIN=target/release/spate SPATE_BENCH=target/release/spate-bench \\
        target/test-venv/bin/python scripts/compaction-bench.py [--mib 1024] [--keys 100000] \\
        [--rounds 3] [--rate 5000] [--duration-s 10] [--io-mib 0] [--backlog-mib 0]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "clients"))

import confluent_kafka as ck  # noqa: E402
import confluent_kafka.admin as cka  # noqa: E402

from conftest import free_port  # noqa: E402

SPATE_BIN = os.environ.get("SPATE_BIN", "target/release/spate")
SPATE_BENCH = os.environ.get("SPATE_BENCH", "target/release/spate-bench")
MIB = 1 << 20
RECORD = 1024
SEGMENT = 64 * MIB
PASS = re.compile(r"compacted partition=(\S+) .*bytes_in=(\d+) bytes_out=(\d+) "
                  r"records_read=(\d+) records_kept=(\d+) .*elapsed_ms=(\d+)")
STEP = re.compile(r"compacted partition=(\S+) .*longest_step_us=(\d+)")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fio(directory, rw):
    """MiB/s of fio's sequential O_DIRECT `rw` (read or write) of 1 GiB in 1 MiB blocks."""
    out = subprocess.run(
        ["fio", "--name=seq", f"--directory={directory}", f"--rw={rw}", "--bs=1M",
         "--size=1G", "--direct=1", "--ioengine=io_uring", "--iodepth=8",
         "--output-format=json"], check=True, capture_output=True, text=True).stdout
    job = json.loads(out)["jobs"][0][rw]
    return job["bw_bytes"] / MIB


def disk_sync_latency(directory, read_mib_s=0.0, write_mib_s=0.0, seconds=8):
    """The raw disk's share of the question: p50/p99/p99.9 ms of an appending 16 KiB write +
    fdatasync at 300/s (produce's pattern, without the broker), alone or beside fio doing
    what a pass does: 256 KiB O_DIRECT reads of an existing file and appends to a new one,
    each at the given rate (0: no such job)."""
    for f in Path(directory).glob("probe-*"):
        f.unlink()
    background = []
    if read_mib_s:
        background.append(["--name=probe-bgr", "--rw=read", "--size=1G",
                           f"--rate={int(read_mib_s * MIB)}"])
    if write_mib_s:
        background.append(["--name=probe-bgw", "--rw=write", "--size=4G", "--fallocate=none",
                           f"--rate=,{int(write_mib_s * MIB)}"])
    procs = [subprocess.Popen(
        ["fio", f"--directory={directory}", "--bs=256k", "--direct=1", "--ioengine=io_uring",
         "--iodepth=1", "--time_based", f"--runtime={seconds + 6}", *job],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for job in background]
    try:
        if procs:
            time.sleep(4)  # the read job lays out its file first
        out = subprocess.run(
            ["fio", "--name=probe-fg", f"--directory={directory}", "--rw=write", "--bs=16k",
             "--size=512M", "--direct=1", "--ioengine=sync", "--fdatasync=1",
             "--fallocate=none", "--rate_iops=300", "--time_based", f"--runtime={seconds}",
             "--output-format=json"], check=True, capture_output=True, text=True).stdout
    finally:
        for p in procs:
            p.wait(60)
        for f in Path(directory).glob("probe-*"):
            f.unlink()
    pct = json.loads(out)["jobs"][0]["sync"]["lat_ns"]["percentile"]
    return tuple(pct.get(k, 0) / 1e6 for k in ("50.000000", "99.000000", "99.900000"))


def fill(bootstrap, topic, mib, keys):
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": MIB,
                     "acks": "1", "queue.buffering.max.kbytes": 256 * 1024})
    value = os.urandom(RECORD - 16)
    for i in range(mib * MIB // RECORD):
        key = f"key-{(i * 7919) % keys:09}".encode()
        while True:
            try:
                p.produce(topic, key=key, value=value)
                break
            except BufferError:
                p.poll(0.005)
        p.poll(0)
    assert p.flush(300) == 0


def set_config(admin, topic, **kv):
    res = cka.ConfigResource(cka.ResourceType.TOPIC, topic, incremental_configs=[
        cka.ConfigEntry(k.replace("_", "."), v, incremental_operation=cka.AlterConfigOpType.SET)
        for k, v in kv.items()])
    admin.incremental_alter_configs([res])[res].result(30)


def create_backlog(admin, bootstrap, topic, mib, keys):
    admin.create_topics([cka.NewTopic(topic, 1, 1, config={
        "cleanup.policy": "compact", "segment.bytes": str(SEGMENT),
        "min.compaction.lag.ms": str(86_400_000), "min.cleanable.dirty.ratio": "0.01"})]
    )[topic].result(30)
    fill(bootstrap, topic, mib, keys)


def passes(log_path, topic):
    text = Path(log_path).read_text(errors="replace")
    return [m for m in PASS.finditer(text) if m[1].startswith(f"{topic}-")]


def wait_clean(log_path, topic, mib, timeout=900):
    """Waits until the passes over `topic` have read its whole backlog once (but the active
    segment, which is never cleaned)."""
    deadline = time.monotonic() + timeout
    while True:
        got = passes(log_path, topic)
        if sum(int(m[2]) for m in got) >= (mib * MIB - SEGMENT) * 0.95:
            return got
        assert time.monotonic() < deadline, f"{topic} not cleaned in {timeout} s"
        time.sleep(0.2)


class Pinger:
    """ApiVersions round trips to the broker every 5 ms while it runs, on its own connection:
    they touch no disk, so the longest one is how long the broker's shard stopped answering."""

    def __init__(self, bootstrap):
        import threading
        import wire
        self.conn = wire.Connection(bootstrap)
        self.longest = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            self.conn.api_versions()
            self.longest = max(self.longest, time.monotonic() - t)
            time.sleep(0.005)

    def finish(self):
        self.stop.set()
        self.thread.join()
        self.conn.close()
        return self.longest * 1000


def bench(bootstrap, root, rate, duration, name):
    work = root / f"{name}.yaml"
    work.write_text(f"name: {name}\ntopics: 1\npartitionsPerTopic: 1\nmessageSize: {RECORD}\n"
                    "subscriptionsPerTopic: 0\nconsumerPerSubscription: 0\nproducersPerTopic: 1\n"
                    f"producerRate: {rate}\ntestDurationMinutes: 1\n")
    out = root / name
    subprocess.run([SPATE_BENCH, "run", str(work), "-b", bootstrap, "--duration-s", str(duration),
                    "--warmup-s", "2", "--batch-bytes", str(512 * 1024), "--out", str(out),
                    "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    lat = json.loads((out / "results.json").read_text())["overall"]["publish_latency"]
    return lat["p50_ms"], lat["p99_ms"], lat["p999_ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024, help="backlog to clean, MiB")
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=int, default=5000, help="records/s of the latency rounds")
    ap.add_argument("--duration-s", type=float, default=10)
    ap.add_argument("--io-mib", type=int, default=0,
                    help="[log.cleaner] io_max_bytes_per_second, MiB/s (0: unthrottled)")
    ap.add_argument("--backlog-mib", type=int, default=0,
                    help="part 2 only, on backlogs of this size (skips part 1, the throughput "
                         "and raw-disk figures; 0: both parts, backlogs sized by part 1)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="spate-compaction-bench-"))
    data = root / "data"
    cfg = root / "spate.toml"
    cfg.write_text(f"[log.cleaner]\nbackoff_ms = 100\n"
                   f"io_max_bytes_per_second = {args.io_mib * MIB}\n")
    bootstrap = f"127.0.0.1:{free_port()}"
    log_path = root / "spate.log"
    log = open(log_path, "wb")
    broker = subprocess.Popen([SPATE_BIN, "serve", "--data-dir", str(data), "--listen", bootstrap,
                               "--shards", "1", "--config", str(cfg)], stdout=log, stderr=log)
    try:
        time.sleep(2)
        admin = cka.AdminClient({"bootstrap.servers": bootstrap})
        if args.backlog_mib:
            backlog = args.backlog_mib
        else:
            backlog = part1(args, admin, bootstrap, broker, data, log_path)
        results = {"cleaning": [], "idle": []}
        for r in range(args.rounds):
            order = ["idle", "cleaning"] if r % 2 == 0 else ["cleaning", "idle"]
            for kind in order:
                if kind == "cleaning":
                    topic = f"backlog-{r}"
                    create_backlog(admin, bootstrap, topic, backlog, args.keys)
                    set_config(admin, topic, min_compaction_lag_ms="0")
                    time.sleep(0.5)
                pinger = Pinger(bootstrap)
                lat = bench(bootstrap, root, args.rate, args.duration_s, f"{kind}-{r}")
                longest = pinger.finish()
                if kind == "cleaning":
                    done = passes(log_path, topic)
                    overlap = sum(int(m[2]) for m in done) / MIB
                    print(f"round {r}, cleaning: passes read {overlap:.0f} MiB of the "
                          f"{backlog} MiB backlog by the round's end", flush=True)
                    wait_clean(log_path, topic, backlog)
                    text = Path(log_path).read_text(errors="replace")
                    steps = [int(m[2]) for m in STEP.finditer(text) if m[1] == f"{topic}-0"]
                    print(f"round {r}, cleaning: the passes' longest step on the shard "
                          f"{max(steps, default=0) / 1000:.2f} ms", flush=True)
                results[kind].append(lat)
                print(f"round {r}, {kind}: p50 {lat[0]:.2f} ms, p99 {lat[1]:.2f} ms, "
                      f"p99.9 {lat[2]:.2f} ms; longest ApiVersions round trip {longest:.1f} ms",
                      flush=True)
    finally:
        broker.terminate()
        broker.wait(60)
        log.close()
    shutil.rmtree(root, ignore_errors=True)
    if not args.rounds:
        return
    print("\n| produce beside | p50 ms | p99 ms (median; rounds) | p99.9 ms |\n|---|---|---|---|")
    for kind, rows in results.items():
        p99s = [x[1] for x in rows]
        print(f"| {kind} | {statistics.median(x[0] for x in rows):.2f} | "
              f"{statistics.median(p99s):.2f}; {', '.join(f'{x:.2f}' for x in p99s)} | "
              f"{statistics.median(x[2] for x in rows):.2f} |")
    c = statistics.median(x[1] for x in results["cleaning"])
    i = statistics.median(x[1] for x in results["idle"])
    print(f"p99 with a pass running / without = {c / i:.2f}")


def part1(args, admin, bootstrap, broker, data, log_path):
    """Cleaner throughput against fio, and the raw disk's append+fdatasync beside I/O of the
    pass's shape; returns the backlog size for part 2 (enough for a pass to run through a
    whole round, warm-up included)."""
    create_backlog(admin, bootstrap, "table", args.mib, args.keys)
    c0, t0 = cpu_seconds(broker.pid), time.monotonic()
    set_config(admin, "table", min_compaction_lag_ms="0")
    got = wait_clean(log_path, "table", args.mib)
    wall = time.monotonic() - t0
    cpu = cpu_seconds(broker.pid) - c0
    bytes_in = sum(int(m[2]) for m in got)
    bytes_out = sum(int(m[3]) for m in got)
    busy = sum(int(m[6]) for m in got) / 1000
    rate = bytes_in / MIB / busy
    read, write = fio(data, "read"), fio(data, "write")
    disk_s = 2 * bytes_in / MIB / read + bytes_out / MIB / write
    print(f"cleaned {bytes_in / MIB:.0f} MiB to {bytes_out / MIB:.1f} MiB in {len(got)} "
          f"pass(es): {busy:.2f} s of passes ({wall:.2f} s wall from the config change) = "
          f"{rate:.0f} MiB/s of log; broker CPU {cpu / (bytes_in / (1 << 30)):.2f} s/GiB")
    print(f"fio on the data disk: read {read:.0f} MiB/s, write {write:.0f} MiB/s; "
          f"the disk allows {bytes_in / MIB / disk_s:.0f} MiB/s of log for a pass "
          f"(read twice, write the kept): the cleaner ran at {bytes_in / MIB / disk_s and rate / (bytes_in / MIB / disk_s):.1%} of it")
    # The raw disk beside I/O of the pass's shape and rate, against alone.
    read_rate, write_rate = 2 * bytes_in / MIB / busy, bytes_out / MIB / busy
    for kind, rates in [("alone", (0, 0)), ("beside", (read_rate, write_rate)),
                        ("alone", (0, 0)), ("beside", (read_rate, write_rate))]:
        lat = disk_sync_latency(data, *rates)
        print(f"raw disk, append+fdatasync {kind} fio at the pass's rates "
              f"(read {read_rate:.0f}, write {write_rate:.0f} MiB/s): p50 {lat[0]:.2f} ms, "
              f"p99 {lat[1]:.2f} ms, p99.9 {lat[2]:.2f} ms", flush=True)
    return max(64, int(rate * (args.duration_s + 2) * 1.2))


if __name__ == "__main__":
    main()
