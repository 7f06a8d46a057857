"""Pieces that need no gateway: positions, the file store, error decoding, retry rules."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from tributary import (Change, Client, FieldCondition, FileStore, HeaderCondition, KeyFilter, MemoryStore, Position,
                       RecordFilter, Store, Translator, TributaryError)
from tributary.errors import from_status
from tributary.follow import _retryable
from tributary.v1 import gateway_pb2


def test_position_round_trips() -> None:
    p = Position({("b", 1): 7, ("a", 0): 3})
    offsets = p.to_offsets()
    assert [(o.topic, o.partition, o.offset) for o in offsets] == [("a", 0, 3), ("b", 1, 7)]
    assert Position.from_offsets(offsets) == p
    assert Position.from_json(p.to_json()) == p
    assert p.merged({("a", 0): 5, ("c", 2): 1}) == Position({("a", 0): 5, ("b", 1): 7, ("c", 2): 1})
    assert p == Position({("b", 1): 7, ("a", 0): 3}), "merged does not change the position"
    with pytest.raises(ValueError):
        Position.from_json([{"topic": "a", "partition": "0", "offset": 1}])


def test_file_store(tmp_path: Path) -> None:
    path = tmp_path / "pos.json"
    store = FileStore(path)
    assert isinstance(store, Store) and isinstance(MemoryStore(), Store)
    assert store.load() is None
    store.save(Position({("t", 0): 5}))
    store.save(Position({("t", 0): 6, ("t", 1): 2}))
    assert FileStore(str(path)).load() == Position({("t", 0): 6, ("t", 1): 2})
    assert os.listdir(tmp_path) == ["pos.json"], "no temporary file is left behind"
    store.clear()
    store.clear()
    assert store.load() is None and not path.exists()
    path.write_text('{"version": 2}')
    with pytest.raises(ValueError):
        store.load()


def test_memory_store_copies() -> None:
    store = MemoryStore()
    p = Position({("t", 0): 1})
    store.save(p)
    p[("t", 0)] = 99
    assert store.load() == Position({("t", 0): 1})


def _any(message) -> any_pb2.Any:  # type: ignore[no-untyped-def]
    a = any_pb2.Any()
    a.Pack(message)
    return a


def test_error_decoding() -> None:
    status = status_pb2.Status(code=11, message="too old")
    status.details.extend([
        _any(error_details_pb2.ErrorInfo(reason="OFFSET_TOO_OLD", domain="tributary.v1", metadata={"k": "v"})),
        _any(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="from_offsets[0].offset", description="negative")])),
        _any(gateway_pb2.OffsetsDetail(kind=gateway_pb2.OffsetsDetail.EARLIEST, offsets=[
            gateway_pb2.PartitionOffset(topic="t", partition=0, offset=15)])),
        _any(error_details_pb2.RetryInfo()),  # an unknown detail is ignored
    ])
    e = from_status(grpc.StatusCode.OUT_OF_RANGE, "too old", status)
    assert isinstance(e, TributaryError) and isinstance(e, Exception)
    assert (e.code, e.message, e.reason, e.domain, e.metadata) == (
        grpc.StatusCode.OUT_OF_RANGE, "too old", "OFFSET_TOO_OLD", "tributary.v1", {"k": "v"})
    assert e.field_violations == [("from_offsets[0].offset", "negative")]
    assert e.offsets_kind == "EARLIEST" and e.offsets == Position({("t", 0): 15})
    assert str(e).startswith("OUT_OF_RANGE: too old [OFFSET_TOO_OLD]")
    bare = from_status(grpc.StatusCode.UNAVAILABLE, "down", None)
    assert (bare.reason, bare.offsets_kind, bare.offsets, bare.field_violations) == ("", None, None, [])


@pytest.mark.parametrize(
    "code, reason, retry",
    [
        (grpc.StatusCode.UNAVAILABLE, "", True),
        (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN", True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", True),
        (grpc.StatusCode.ABORTED, "", True),
        (grpc.StatusCode.ABORTED, "SUBSCRIPTION_TAKEN_OVER", False),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "LIMIT_REACHED", True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "TRANSLATOR_MEMORY", False),
        (grpc.StatusCode.INTERNAL, "", True),
        (grpc.StatusCode.INTERNAL, "INTERNAL", False),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", False),
        (grpc.StatusCode.NOT_FOUND, "UNKNOWN_TOPIC", False),
        (grpc.StatusCode.PERMISSION_DENIED, "", False),
        (grpc.StatusCode.UNAUTHENTICATED, "", False),
        (grpc.StatusCode.FAILED_PRECONDITION, "TRANSLATOR_TRAP", False),
    ],
)
def test_retry_rules(code: grpc.StatusCode, reason: str, retry: bool) -> None:
    assert _retryable(TributaryError(code, "m", reason=reason)) is retry


def test_values() -> None:
    record = gateway_pb2.Record(topic="t", partition=1, offset=2, timestamp_ms=3,
                                headers=[gateway_pb2.Header(key="h"), gateway_pb2.Header(key="e", value=b"")])
    c = Change.from_record(record)
    assert (c.key, c.value, c.headers, c.snapshot) == (None, None, [("h", None), ("e", b"")], False)
    record.key, record.value = b"", b"v"
    assert (Change.from_record(record).key, Change.from_record(record).value) == (b"", b"v")
    with pytest.raises(Exception):
        c.offset = 5  # type: ignore[misc]
    ref = Translator("x", config="{}", skip_errors=True).to_proto()
    assert (ref.name, ref.digest, ref.config, ref.skip_errors) == ("x", "", "{}", True)
    kf = KeyFilter(exact=[b"a"], prefixes=["p/"]).to_proto()
    assert (list(kf.exact), list(kf.prefixes)) == ([b"a"], [b"p/"])
    rf = RecordFilter(headers=[HeaderCondition("type", ["a", b"\xff"]), HeaderCondition("present")],
                      fields=[FieldCondition("/status", ['"open"', "null"])], tombstone_mismatches=True).to_proto()
    assert [(h.key, list(h.any_of)) for h in rf.headers] == [("type", [b"a", b"\xff"]), ("present", [])]
    assert [(f.pointer, list(f.any_of)) for f in rf.fields] == [("/status", ['"open"', "null"])]
    assert rf.tombstone_mismatches and not RecordFilter().to_proto().tombstone_mismatches
    with pytest.raises(TypeError):
        FieldCondition("/status", '"open"')  # type: ignore[arg-type]  # one value, not a list


def test_client_arguments() -> None:
    with pytest.raises(ValueError):
        Client("127.0.0.1:1", certificate_chain=b"x")
    with pytest.raises(ValueError):
        Client("127.0.0.1:1", server_name="localhost")
    with Client("http://127.0.0.1:1") as c:
        assert c.target == "127.0.0.1:1"
