"""What the tiered-storage tests share: a filesystem tier's view, moto's S3 server and an S3
tier's view, the manifest's format, and records whose value is their sequence number, produced
and read back through librdkafka."""

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import confluent_kafka as ck

from conftest import free_port

RECORD = 1024
MIB = 1 << 20


class FsTier:
    """A filesystem tier: a directory."""

    def __init__(self, root):
        self.root = Path(root)
        self.moved = self.root.with_name(self.root.name + "-away")

    def config(self):
        return f'[tier]\nkind = "fs"\npath = "{self.root}"\ninterval_ms = 200\n'

    def partition(self, topic):
        dirs = list(self.root.glob(f"{topic}-*/0"))
        assert len(dirs) == 1, dirs
        return dirs[0]

    def objects(self, topic):
        """{name: size} of a partition's objects (names below the partition's prefix)."""
        d = self.partition(topic)
        return {str(p.relative_to(d)): p.stat().st_size for p in d.rglob("*") if p.is_file()}

    def read(self, topic, name):
        return (self.partition(topic) / name).read_bytes()

    def write(self, topic, name, data):
        (self.partition(topic) / name).write_bytes(data)

    def cut(self):
        os.rename(self.root, self.moved)

    def restore(self):
        os.rename(self.moved, self.root)


class BucketView:
    """What an object-store tier's tests read: its keys are
    `{prefix}/{topic}-{topic id}/{partition}/{name}`; a subclass gives `prefix` and
    `_keys(topic)`, {key: size} of the topic's objects."""

    def partition(self, topic):
        depth = self.prefix.count("/") + 3  # prefix / topic-id / partition
        dirs = {"/".join(k.split("/")[:depth]) for k in self._keys(topic)}
        assert len(dirs) == 1, dirs
        return dirs.pop()

    def objects(self, topic):
        """{name: size} of a partition's objects (names below the partition's prefix)."""
        keys = self._keys(topic)
        if not keys:
            return {}
        d = self.partition(topic)
        return {k[len(d) + 1:]: size for k, size in keys.items()}


CREDENTIALS = {"AWS_ACCESS_KEY_ID": "spate-test", "AWS_SECRET_ACCESS_KEY": "spate-test"}


class Moto:
    """moto's S3 server on a free port of 127.0.0.1, stopped by PID."""

    def __init__(self, workdir):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        moto = Path(sys.executable).with_name("moto_server")
        self.log = open(Path(workdir) / "moto.log", "wb")
        self.proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None, "moto_server exited"
                assert time.monotonic() < deadline, "moto_server not listening"
                time.sleep(0.1)
        import boto3
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                               aws_access_key_id="spate-test",
                               aws_secret_access_key="spate-test")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


class S3Tier(BucketView):
    """An S3 tier: a bucket of its own on the module's moto server."""

    def __init__(self, moto):
        self.moto = moto
        self.bucket = f"spate-{uuid.uuid4().hex[:10]}"
        self.prefix = "brokers/a"
        moto.s3.create_bucket(Bucket=self.bucket)

    def config(self):
        return ('[tier]\nkind = "s3"\n'
                f'bucket = "{self.bucket}"\nprefix = "{self.prefix}"\n'
                f'endpoint = "{self.moto.endpoint}"\nregion = "us-east-1"\nallow_http = true\n'
                # A tier call may take 10 s: a fetch from a bucket that does not answer
                # is answered within the fetch's max wait all the same.
                'interval_ms = 200\ntimeout_ms = 10000\nretries = 1\n')

    def _keys(self, topic):
        pages = self.moto.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}/{topic}-")
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}

    def read(self, topic, name):
        key = f"{self.partition(topic)}/{name}"
        return self.moto.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def write(self, topic, name, data):
        key = f"{self.partition(topic)}/{name}"
        self.moto.s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    def cut(self):
        self.moto.proc.send_signal(signal.SIGSTOP)

    def restore(self):
        self.moto.proc.send_signal(signal.SIGCONT)


def value_of(i):
    return struct.pack(">Q", i) * (RECORD // 8)


def produce(b, topic, start, count, acked=None, idempotent=True):
    """Records start..start+count-1 (value = its sequence number), acks=all, idempotent
    unless told. Returns how many were acknowledged; `acked` collects their offsets."""
    p = ck.Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": idempotent,
                     "acks": "all",
                     "linger.ms": 5, "batch.size": 1000000, "message.timeout.ms": 10000})
    done = [0]

    def delivered(err, msg):
        if err is None:
            done[0] += 1
            if acked is not None:
                acked.append(msg.offset())

    for i in range(start, start + count):
        while True:
            try:
                p.produce(topic, value=value_of(i), partition=0, on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(30)
    return done[0]


def consume(b, topic, start, count, timeout=60):
    """Reads `count` records from `start`; each must sit at its offset with its value.
    Fetches of up to 8 MiB a partition: few, large remote reads."""
    c = ck.Consumer({"bootstrap.servers": b.bootstrap, "group.id": "tiered-reader",
                     "enable.auto.commit": False, "fetch.max.bytes": 16 * MIB,
                     "max.partition.fetch.bytes": 8 * MIB})
    c.assign([ck.TopicPartition(topic, 0, start)])
    want = start
    deadline = time.monotonic() + timeout
    try:
        while want < start + count:
            assert time.monotonic() < deadline, f"read {want - start} of {count} records"
            msgs = c.consume(1000, 1.0)
            for m in msgs:
                assert m.error() is None, m.error()
                assert m.offset() == want, (m.offset(), want)
                assert m.value() == value_of(want), f"record {want}: wrong content"
                want += 1
    finally:
        c.close()


def watermarks(b, topic):
    c = ck.Consumer({"bootstrap.servers": b.bootstrap, "group.id": "tiered-marks"})
    try:
        return c.get_watermark_offsets(ck.TopicPartition(topic, 0), timeout=10, cached=False)
    finally:
        c.close()


def read_manifest(raw):
    """(version, log start, [(base, next, size)]) of a manifest's bytes, its checksum checked."""
    assert raw[:4] == b"SPTM"
    assert zlib.crc32(raw[:-4]) == int.from_bytes(raw[-4:], "little"), "manifest checksum"
    (fmt,) = struct.unpack_from("<H", raw, 4)
    assert fmt == 2
    version, _epoch, log_start = struct.unpack_from("<QiQ", raw, 6)
    (count,) = struct.unpack_from("<I", raw, 26)
    segs = [struct.unpack_from("<QQQqqiI", raw, 30 + 48 * i)[:3] for i in range(count)]
    return version, log_start, segs


def segment_object(base, next_offset, ext=".log"):
    """The name of a remote segment's object below its partition's prefix."""
    return f"{base:020}-{next_offset:020}{ext}"


def assert_tier_holds_exactly_its_manifest(b, topic):
    names = sorted(b.tier.objects(topic))
    manifests = [n for n in names if n.startswith("manifests/")]
    assert len(manifests) == 1, names
    _, _, segs = read_manifest(b.tier.read(topic, manifests[0]))
    want = sorted(manifests + [segment_object(base, nxt, ext) for base, nxt, _ in segs
                               for ext in (".log", ".index", ".timeindex")])
    assert names == want, "objects beside the manifest's: " + str(sorted(set(names) ^ set(want)))
    return segs


def wait_until(what, check, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as e:  # e.g. the tier has no objects of the topic yet
            last = e
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")
