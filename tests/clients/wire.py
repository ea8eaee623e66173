"""A few Kafka requests written by hand, for what no client library sends: malformed or
out-of-order consumer protocol heartbeats (ConsumerGroupHeartbeat v1), and Produce v10 and
Fetch v16 read down to their tagged fields (KIP-951 leader hints). Flexible versions
only (compact strings and arrays, tagged fields).
"""

import socket
import struct
import time
import uuid

CONSUMER_GROUP_HEARTBEAT = 68
API_VERSIONS = 18


def uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_uvarint(buf, at):
    shift = n = 0
    while True:
        b = buf[at]
        at += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, at
        shift += 7


def cstr(s):
    """A compact (nullable) string."""
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


def carray(items, enc):
    if items is None:
        return uvarint(0)
    return uvarint(len(items) + 1) + b"".join(enc(i) for i in items)


def read_cstr(buf, at):
    n, at = read_uvarint(buf, at)
    if n == 0:
        return None, at
    return buf[at:at + n - 1].decode(), at + n - 1


class Connection:
    def __init__(self, bootstrap, timeout=10):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.correlation = 0

    def close(self):
        self.sock.close()

    def _recv_exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            out += chunk
        return out

    def call(self, api_key, version, body, flexible_header=True):
        """Sends a request (header v2: client id and tagged fields) and returns the response
        body after its header (v1 for flexible responses, v0 for ApiVersions)."""
        self.correlation += 1
        header = struct.pack(">hhi", api_key, version, self.correlation)
        header += struct.pack(">h", 4) + b"wire" + b"\x00"
        msg = header + body
        self.sock.sendall(struct.pack(">i", len(msg)) + msg)
        size = struct.unpack(">i", self._recv_exact(4))[0]
        resp = self._recv_exact(size)
        corr = struct.unpack(">i", resp[:4])[0]
        assert corr == self.correlation, (corr, self.correlation)
        at = 4
        if flexible_header:
            _tags, at = read_uvarint(resp, at)
        return resp[at:]

    def api_versions(self):
        """ApiVersions v0: the error code (the connection is alive if this answers)."""
        self.correlation += 1
        header = struct.pack(">hhi", API_VERSIONS, 0, self.correlation) + struct.pack(">h", -1)
        self.sock.sendall(struct.pack(">i", len(header)) + header)
        size = struct.unpack(">i", self._recv_exact(4))[0]
        resp = self._recv_exact(size)
        return struct.unpack(">h", resp[4:6])[0]

    def heartbeat(self, group, member_id, epoch, topics=None, regex=None, owned=None,
                  rebalance_timeout_ms=-1, instance_id=None, assignor=None):
        """ConsumerGroupHeartbeat v1; `owned` is [(topic uuid, [partitions])]. Returns a dict
        of the response's fields."""

        def tp(item):
            tid, parts = item
            return (tid.bytes + carray(parts, lambda p: struct.pack(">i", p)) + b"\x00")

        body = cstr(group) + cstr(member_id) + struct.pack(">i", epoch)
        body += cstr(instance_id) + cstr(None) + struct.pack(">i", rebalance_timeout_ms)
        body += carray(topics, cstr) + cstr(regex) + cstr(assignor)
        body += carray(owned, tp) + b"\x00"
        r = self.call(CONSUMER_GROUP_HEARTBEAT, 1, body)
        _throttle, error = struct.unpack(">ih", r[:6])
        message, at = read_cstr(r, 6)
        member, at = read_cstr(r, at)
        member_epoch, interval = struct.unpack(">ii", r[at:at + 8])
        at += 8
        assignment = None
        present = struct.unpack(">b", r[at:at + 1])[0]
        at += 1
        if present == 1:
            assignment = {}
            n, at = read_uvarint(r, at)
            for _ in range(n - 1):
                tid = uuid.UUID(bytes=r[at:at + 16])
                at += 16
                k, at = read_uvarint(r, at)
                parts = [struct.unpack(">i", r[at + 4 * i:at + 4 * i + 4])[0] for i in range(k - 1)]
                at += 4 * (k - 1)
                _tags, at = read_uvarint(r, at)
                assignment[tid] = sorted(parts)
        return {"error": error, "message": message, "member_id": member, "epoch": member_epoch,
                "interval": interval, "assignment": assignment}


OFFSET_COMMIT = 8


def offset_commit(conn, group, member_id, epoch, topic, offsets, version=9):
    """OffsetCommit (v8 or v9, both flexible) of {partition: offset}; returns
    {partition: error code}."""

    def part(item):
        p, o = item
        return struct.pack(">iqi", p, o, -1) + cstr("") + b"\x00"

    body = cstr(group) + struct.pack(">i", epoch) + cstr(member_id) + cstr(None)
    body += carray([topic], lambda t: cstr(t) + carray(sorted(offsets.items()), part) + b"\x00")
    body += b"\x00"
    r = conn.call(OFFSET_COMMIT, version, body)
    at = 4
    errors = {}
    n, at = read_uvarint(r, at)
    for _ in range(n - 1):
        _name, at = read_cstr(r, at)
        k, at = read_uvarint(r, at)
        for _ in range(k - 1):
            p, e = struct.unpack(">ih", r[at:at + 6])
            at += 6
            _tags, at = read_uvarint(r, at)
            errors[p] = e
        _tags, at = read_uvarint(r, at)
    return errors


PRODUCE = 0
FETCH = 1


def read_tags(buf, at):
    """A tag buffer: {tag: bytes}."""
    count, at = read_uvarint(buf, at)
    tags = {}
    for _ in range(count):
        tag, at = read_uvarint(buf, at)
        size, at = read_uvarint(buf, at)
        tags[tag] = buf[at:at + size]
        at += size
    return tags, at


def read_carray(buf, at, dec):
    n, at = read_uvarint(buf, at)
    out = []
    for _ in range(max(n - 1, 0)):
        item, at = dec(buf, at)
        out.append(item)
    return out, at


def leader_and_epoch(b):
    """A LeaderIdAndEpoch tagged field: (leader id, leader epoch)."""
    return struct.unpack(">ii", b[:8])


def node_endpoints(b):
    """A node endpoints tagged field: {node id: (host, port)}."""
    def endpoint(buf, at):
        (node_id,) = struct.unpack(">i", buf[at:at + 4])
        host, at = read_cstr(buf, at + 4)
        (port,) = struct.unpack(">i", buf[at:at + 4])
        _rack, at = read_cstr(buf, at + 4)
        _tags, at = read_tags(buf, at)
        return (node_id, (host, port)), at
    items, _ = read_carray(b, 0, endpoint)
    return dict(items)


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def zigzag(n):
    return uvarint((n << 1) ^ (n >> 63))


def record_batch(value):
    """A v2 record batch of one record (no key, no headers)."""
    record = b"\x00" + zigzag(0) + zigzag(0) + zigzag(-1) + zigzag(len(value)) + value + zigzag(0)
    record = zigzag(len(record)) + record
    now = int(time.time() * 1000)
    after_crc = struct.pack(">hiqqqhii", 0, 0, now, now, -1, -1, -1, 1) + record
    body = struct.pack(">ib", -1, 2) + struct.pack(">I", crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(body)) + body


def produce_v10(conn, topic, partition, value):
    """Produce v10 (acks 1) of one record: (error code, {tag: bytes} of the partition,
    {tag: bytes} of the response)."""
    batch = record_batch(value)
    body = (cstr(None) + struct.pack(">hi", 1, 10000)
            + uvarint(2) + cstr(topic)
            + uvarint(2) + struct.pack(">i", partition) + uvarint(len(batch) + 1) + batch
            + b"\x00" + b"\x00" + b"\x00")
    r = conn.call(PRODUCE, 10, body)
    topics, at = read_uvarint(r, 0)
    assert topics == 2, topics
    _name, at = read_cstr(r, at)
    parts, at = read_uvarint(r, at)
    assert parts == 2, parts
    _index, error = struct.unpack(">ih", r[at:at + 6])
    at += 6 + 24  # base offset, log append time, log start offset
    _record_errors, at = read_carray(r, at, lambda b, a: (None, a))
    assert _record_errors == [], "no record errors expected"
    _message, at = read_cstr(r, at)
    part_tags, at = read_tags(r, at)
    _topic_tags, at = read_tags(r, at)
    at += 4  # throttle time
    tags, at = read_tags(r, at)
    return error, part_tags, tags


def fetch_v16(conn, topic_id, partition, offset=0, current_leader_epoch=-1):
    """Fetch v16 of one partition (by topic id, no session): (error code, {tag: bytes} of the
    partition, {tag: bytes} of the response)."""
    body = (struct.pack(">iiibii", 100, 1, 1 << 20, 0, 0, -1)
            + uvarint(2) + topic_id
            + uvarint(2)
            + struct.pack(">iiqiqi", partition, current_leader_epoch, offset, -1, -1, 1 << 20)
            + b"\x00"
            + b"\x00"
            + uvarint(1) + cstr("") + b"\x00")
    r = conn.call(FETCH, 16, body)
    at = 4 + 2 + 4  # throttle time, error code, session id
    topics, at = read_uvarint(r, at)
    assert topics == 2, topics
    at += 16
    parts, at = read_uvarint(r, at)
    assert parts == 2, parts
    _index, error = struct.unpack(">ih", r[at:at + 6])
    at += 6 + 24  # high watermark, last stable offset, log start offset
    aborted, at = read_uvarint(r, at)
    assert aborted == 0, "aborted transactions: null expected"
    at += 4  # preferred read replica
    size, at = read_uvarint(r, at)
    at += max(size - 1, 0)
    part_tags, at = read_tags(r, at)
    _topic_tags, at = read_tags(r, at)
    tags, at = read_tags(r, at)
    return error, part_tags, tags
