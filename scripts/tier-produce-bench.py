"""Produce throughput to a tiered topic while its segments are uploaded, against the same
produce to a topic that is not tiered, in one run, with 1 and 16 partitions.

One `spate serve` (release, 1 shard) with `[tier] kind = "fs"` on a directory of the same disk
(or `--tier-dir` elsewhere: a second disk is what a user would give it). For each partition
count P, two topics with 16 MiB segments: tiered-P (remote.storage.enable, local.retention.bytes
16 MiB: every closed segment is uploaded, then deleted locally, while the producer goes on) and
local-P (retention.bytes 16 MiB: the same local deletions, no uploads). Rounds alternate between
them (local first, then tiered first, ...), each once the tier has stopped growing (the last
round's uploads done); each round one confluent-kafka producer (acks=all)
sends `--mib` MiB of 64 KiB records as fast as the broker acknowledges. A tiered round counts
how much its uploads wrote to the tier meanwhile (the tier's bytes after the round, less before),
so that the comparison is one with uploads running. CPU is the broker's user + system seconds
per GiB produced (/proc).

    SPATE_BIN=target/release/spate target/test-venv/bin/python scripts/tier-produce-bench.py \
        [--mib 1024] [--rounds 5] [--partitions 1,16] [--tier-dir DIR]
"""

import argparse
import os
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
RECORD = 64 * 1024
MIB = 1 << 20
SEGMENT = 16 * MIB


def cpu_seconds(pid):
    """User + system CPU time of a process so far (/proc/PID/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tier_bytes(tier):
    total = 0
    for f in tier.rglob("*"):
        try:
            if f.is_file():
                total += f.stat().st_size
        except FileNotFoundError:  # a temp file renamed meanwhile
            pass
    return total


def settle(tier):
    """Waits until the tier has not grown for 3 s: the last round's uploads are done, so
    that a local round runs without any."""
    last, still_since = tier_bytes(tier), time.monotonic()
    deadline = time.monotonic() + 600
    while time.monotonic() - still_since < 3:
        assert time.monotonic() < deadline, "uploads did not settle"
        time.sleep(0.5)
        now = tier_bytes(tier)
        if now != last:
            last, still_since = now, time.monotonic()


def produce(bootstrap, topic, partitions, total):
    """Seconds to have `total` bytes acknowledged with acks=all."""
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 4 * MIB,
                     "message.max.bytes": 8 * MIB, "acks": "all",
                     "queue.buffering.max.kbytes": 256 * 1024})
    value = os.urandom(RECORD)
    failed = []

    def on_delivery(err, _msg):
        if err is not None:
            failed.append(err)

    start = time.monotonic()
    for i in range(total // RECORD):
        while True:
            try:
                p.produce(topic, value=value, partition=i % partitions, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.005)
        p.poll(0)
    assert p.flush(300) == 0, "not every record acknowledged"
    took = time.monotonic() - start
    assert not failed, failed[:3]
    return took


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024, help="produced per round, MiB")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per topic")
    ap.add_argument("--partitions", default="1,16")
    ap.add_argument("--tier-dir", help="the tier's directory [default: beside the data]")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="spate-tier-produce-"))
    data = root / "data"
    tier = Path(args.tier_dir) if args.tier_dir else root / "cold"
    cfg = root / "spate.toml"
    cfg.write_text(f'[tier]\nkind = "fs"\npath = "{tier}"\ninterval_ms = 200\n')
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    log = open(root / "spate.log", "wb")
    broker = subprocess.Popen([SPATE_BIN, "serve", "--data-dir", str(data), "--listen", bootstrap,
                               "--shards", "1", "--config", str(cfg)], stdout=log, stderr=log)
    results = {}  # (partitions, kind) -> [(MiB/s, broker CPU s per GiB, uploaded MiB)]
    try:
        time.sleep(2)
        admin = cka.AdminClient({"bootstrap.servers": bootstrap})
        for parts in (int(p) for p in args.partitions.split(",")):
            common = {"segment.bytes": str(SEGMENT), "max.message.bytes": str(8 * MIB)}
            topics = {
                "tiered": cka.NewTopic(f"tiered-{parts}", parts, 1, config=dict(
                    common, **{"remote.storage.enable": "true",
                               "local.retention.bytes": str(SEGMENT)})),
                "local": cka.NewTopic(f"local-{parts}", parts, 1, config=dict(
                    common, **{"retention.bytes": str(SEGMENT)})),
            }
            for f in admin.create_topics(list(topics.values())).values():
                f.result(30)
            for r in range(args.rounds):
                order = ["local", "tiered"] if r % 2 == 0 else ["tiered", "local"]
                for kind in order:
                    topic = topics[kind].topic
                    t0, c0 = tier_bytes(tier), cpu_seconds(broker.pid)
                    took = produce(bootstrap, topic, parts, args.mib * MIB)
                    cpu = (cpu_seconds(broker.pid) - c0) / (args.mib / 1024)
                    uploaded = (tier_bytes(tier) - t0) / MIB
                    rate = args.mib / took
                    results.setdefault((parts, kind), []).append((rate, cpu, uploaded))
                    print(f"{parts} partition(s), round {r}, {kind}: {args.mib} MiB in "
                          f"{took:.2f} s = {rate:.1f} MiB/s; broker CPU {cpu:.2f} s/GiB; "
                          f"uploaded meanwhile {uploaded:.0f} MiB", flush=True)
                    settle(tier)
    finally:
        broker.terminate()
        broker.wait(30)
        log.close()
    shutil.rmtree(root, ignore_errors=True)  # kept, with the broker's log, if the run failed
    print("\n| partitions | topic | MiB/s (median of rounds) | rounds | broker CPU s/GiB | "
          "uploaded during the rounds, MiB |\n|---|---|---|---|---|---|")
    for (parts, kind), rows in sorted(results.items()):
        med = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        up = sum(r[2] for r in rows)
        print(f"| {parts} | {kind} | {med:.1f} | {', '.join(f'{r[0]:.0f}' for r in rows)} | "
              f"{cpu:.2f} | {up:.0f} |")
    for parts in sorted({p for p, _ in results}):
        t = statistics.median(r[0] for r in results[(parts, "tiered")])
        lo = statistics.median(r[0] for r in results[(parts, "local")])
        print(f"{parts} partition(s): tiered / local = {t / lo:.1%}")


if __name__ == "__main__":
    main()
