"""A few Kafka requests written by hand, for what no client library sends: malformed or
out-of-order consumer protocol heartbeats (ConsumerGroupHeartbeat v1). Flexible versions
only (compact strings and arrays, tagged fields), as that API has no other.
"""

import socket
import struct
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
