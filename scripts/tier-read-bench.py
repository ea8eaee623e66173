"""Consume throughput of a cold backlog from the filesystem tier, against the same backlog read
from local disk and against fio's sequential reads of the tier's directory, in one run, with 1
and 16 partitions read at once.

One `spate serve` (release, 1 shard) with `[tier] kind = "fs"` on a directory of the same disk
(or `--tier-dir` elsewhere). For each partition count P: topic cold-P (remote.storage.enable,
64 MiB segments, local.retention.bytes 1 byte: everything closed goes to the tier) and topic
warm-P (local only), each given the same backlog of 64 KiB records. The page cache is dropped
before each read (the tier is read through it; local reads are O_DIRECT). Then a confluent-kafka
consumer reads each topic from offset 0 to its end, and fio reads the tier's files of cold-P
(one job per partition directory, 1 MiB buffered reads, the way the tier reads them).

    SPATE_BIN=target/release/spate target/test-venv/bin/python scripts/tier-read-bench.py \
        [--mib 1024] [--partitions 1,16] [--tier-dir DIR]

Needs root (drop_caches) and fio (apt-get install -y fio).
"""

import argparse
import json
import os
import shutil
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


def cpu_seconds(pid):
    """User + system CPU time of a process so far (/proc/PID/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def drop_caches():
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def produce(bootstrap, topic, partitions, total):
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 4 * MIB,
                     "message.max.bytes": 8 * MIB, "acks": "1",
                     "queue.buffering.max.kbytes": 512 * 1024})
    value = os.urandom(RECORD)
    for i in range(total // RECORD):
        while True:
            try:
                p.produce(topic, value=value, partition=i % partitions)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    assert p.flush(120) == 0


FETCH_MAX_MIB = 32
PARTITION_FETCH_MIB = 8


def consume_all(bootstrap, topic, partitions, ends):
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}",
                     "enable.auto.commit": False, "fetch.max.bytes": FETCH_MAX_MIB * MIB,
                     "max.partition.fetch.bytes": PARTITION_FETCH_MIB * MIB,
                     "fetch.wait.max.ms": 100, "receive.message.max.bytes": 2 * FETCH_MAX_MIB * MIB,
                     "queued.max.messages.kbytes": 256 * 1024})
    c.assign([ck.TopicPartition(topic, p, 0) for p in range(partitions)])
    left = dict(ends)
    got = 0
    start = time.monotonic()
    while any(v > 0 for v in left.values()):
        for m in c.consume(10000, 1.0):
            if m.error():
                raise RuntimeError(m.error())
            got += len(m.value())
            left[m.partition()] = ends[m.partition()] - m.offset() - 1
        assert time.monotonic() - start < 600, "read too slow"
    took = time.monotonic() - start
    c.close()
    return got, took


def ends_of(bootstrap, topic, partitions):
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-marks"})
    try:
        return {p: c.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10,
                                           cached=False)[1] for p in range(partitions)}
    finally:
        c.close()


def local_bytes(data, topic, partitions):
    return sum(f.stat().st_size for p in range(partitions)
               for f in (data / "topics" / topic / str(p)).glob("*.log"))


def fio_read(dirs):
    cmd = ["fio", "--output-format=json", "--group_reporting", "--rw=read", "--bs=1M",
           "--ioengine=psync", "--direct=0", "--readonly"]
    for i, d in enumerate(dirs):
        cmd += [f"--name=p{i}", f"--opendir={d}"]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    out = json.loads(text[text.index("{"):])  # after fio's "opendir added N files"
    job = out["jobs"][0]["read"]
    return job["io_bytes"], job["runtime"] / 1000.0


def main():
    global FETCH_MAX_MIB, PARTITION_FETCH_MIB
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024, help="backlog per topic, MiB")
    ap.add_argument("--partitions", default="1,16")
    ap.add_argument("--tier-dir", help="the tier's directory [default: beside the data]")
    ap.add_argument("--cache-mib", type=int, default=1024,
                    help="tier.cache_bytes, MiB (0: no chunk cache)")
    ap.add_argument("--fetch-max-mib", type=int, default=FETCH_MAX_MIB,
                    help="the consumer's fetch.max.bytes, MiB")
    ap.add_argument("--partition-fetch-mib", type=int, default=PARTITION_FETCH_MIB,
                    help="the consumer's max.partition.fetch.bytes, MiB")
    args = ap.parse_args()
    FETCH_MAX_MIB, PARTITION_FETCH_MIB = args.fetch_max_mib, args.partition_fetch_mib
    root = Path(tempfile.mkdtemp(prefix="spate-tier-bench-"))
    data = root / "data"
    tier = Path(args.tier_dir) if args.tier_dir else root / "cold"
    cfg = root / "spate.toml"
    cfg.write_text(f'[tier]\nkind = "fs"\npath = "{tier}"\ninterval_ms = 200\n'
                   f'cache_bytes = {args.cache_mib * MIB}\n')
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    log = open(root / "spate.log", "wb")
    broker = subprocess.Popen([SPATE_BIN, "serve", "--data-dir", str(data), "--listen", bootstrap,
                               "--shards", "1", "--config", str(cfg)], stdout=log, stderr=log)
    rows = []
    try:
        time.sleep(2)
        admin = cka.AdminClient({"bootstrap.servers": bootstrap})
        for parts in (int(p) for p in args.partitions.split(",")):
            cold, warm = f"cold-{parts}", f"warm-{parts}"
            common = {"segment.bytes": str(64 * MIB), "max.message.bytes": str(8 * MIB)}
            topics = [cka.NewTopic(cold, parts, 1, config=dict(
                          common, **{"remote.storage.enable": "true",
                                     "local.retention.bytes": "1"})),
                      cka.NewTopic(warm, parts, 1, config=common)]
            for f in admin.create_topics(topics).values():
                f.result(30)
            total = args.mib * MIB
            produce(bootstrap, cold, parts, total)
            produce(bootstrap, warm, parts, total)
            # Wait until only the active segments are local.
            deadline = time.monotonic() + 600
            while local_bytes(data, cold, parts) > parts * 64 * MIB:
                assert time.monotonic() < deadline, "uploads did not finish"
                time.sleep(0.5)
            time.sleep(1)
            remote_dirs = sorted(tier.glob(f"{cold}-*/*"))
            remote = sum(f.stat().st_size for d in remote_dirs for f in d.glob("*.log"))
            for name in (cold, warm):
                drop_caches()
                ends = ends_of(bootstrap, name, parts)
                b0, c0 = cpu_seconds(broker.pid), own_cpu_seconds()
                got, took = consume_all(bootstrap, name, parts, ends)
                bcpu = (cpu_seconds(broker.pid) - b0) / (got / (1 << 30))
                ccpu = (own_cpu_seconds() - c0) / (got / (1 << 30))
                rows.append((parts, name.split("-")[0], got, took, bcpu, ccpu))
                print(f"{parts} partition(s), {name}: {got / MIB:.0f} MiB in {took:.2f} s = "
                      f"{got / MIB / took:.1f} MiB/s; CPU s per GiB: broker {bcpu:.2f}, "
                      f"client {ccpu:.2f}", flush=True)
            drop_caches()
            got, took = fio_read(remote_dirs)
            rows.append((parts, "fio", got, took, None, None))
            print(f"{parts} partition(s), fio over the tier's {remote / MIB:.0f} MiB: "
                  f"{got / MIB:.0f} MiB in {took:.2f} s = {got / MIB / took:.1f} MiB/s",
                  flush=True)
    finally:
        broker.terminate()
        broker.wait(30)
        log.close()
    shutil.rmtree(root, ignore_errors=True)  # kept, with the broker's log, if the run failed
    print("\n| partitions | read | MiB/s | broker CPU s/GiB | client CPU s/GiB |\n"
          "|---|---|---|---|---|")
    for parts, what, got, took, bcpu, ccpu in rows:
        cpu = "| |" if bcpu is None else f"| {bcpu:.2f} | {ccpu:.2f} |"
        print(f"| {parts} | {what} | {got / MIB / took:.1f} {cpu}")


if __name__ == "__main__":
    main()
