"""An independent, deliberately plain implementation of FRAMES.md for the tests: the gateway's
side (input encoder, output decoder), so the SDK is checked against the spec, not itself."""

import struct

NONE = 0xFFFFFFFF


def _blob(data):
    return struct.pack("<I", NONE) if data is None else struct.pack("<I", len(data))


def encode_input(records):
    """records: dicts with topic, partition, offset, timestamp_ms, key, value, headers."""
    topics = []
    for r in records:
        if r["topic"] not in topics:
            topics.append(r["topic"])
    out = struct.pack("<I", len(topics))
    for t in topics:
        out += struct.pack("<I", len(t.encode())) + t.encode()
    out += struct.pack("<I", len(records))
    for r in records:
        out += struct.pack("<Iiqq", topics.index(r["topic"]), r["partition"], r["offset"], r["timestamp_ms"])
        out += _blob(r["key"]) + _blob(r["value"]) + struct.pack("<I", len(r["headers"]))
        out += (r["key"] or b"") + (r["value"] or b"")
        for k, v in r["headers"]:
            out += struct.pack("<I", len(k.encode())) + _blob(v) + k.encode() + (v or b"")
    return out


def record(topic="t", partition=0, offset=0, timestamp_ms=-1, key=b"k", value=b"v", headers=()):
    return dict(topic=topic, partition=partition, offset=offset, timestamp_ms=timestamp_ms,
                key=key, value=value, headers=list(headers))


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        assert self.pos + n <= len(self.data), f"runs past the end at {self.pos}"
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def blob(self, length):
        return None if length == NONE else self.take(length)


def decode_output(data):
    """A list with, per outcome, ("ok", [(key, value, headers)]) or ("err", message)."""
    r = Reader(data)
    outcomes = []
    for _ in range(r.u32()):
        tag = r.take(1)[0]
        if tag == 1:
            outcomes.append(("err", r.take(r.u32()).decode()))
            continue
        assert tag == 0, f"tag {tag}"
        outputs = []
        for _ in range(r.u32()):
            key_len, value_len, header_count = r.u32(), r.u32(), r.u32()
            key, value = r.blob(key_len), r.blob(value_len)
            headers = []
            for _ in range(header_count):
                name_len, header_len = r.u32(), r.u32()
                headers.append((r.take(name_len).decode(), r.blob(header_len)))
            outputs.append((key, value, headers))
        outcomes.append(("ok", outputs))
    assert r.pos == len(data), f"{len(data) - r.pos} bytes left over"
    return outcomes
