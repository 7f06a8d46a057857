"""Translators, TLS and tokens, decoded error details, durable subscriptions, key and record filters."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import grpc
import pytest

from conftest import REPO, TRANSLATORS, Recorder, Running, sha256_file, wait_for, wait_ready
from tributary import (Change, FieldCondition, Follower, KeyFilter, MemoryStore, Position, RecordFilter, Translator,
                       TributaryError)
from tributary.errors import from_rpc_error
from tributary.v1 import gateway_pb2, subscriptions_pb2, translators_pb2


def rpc_error(call) -> TributaryError:  # type: ignore[no-untyped-def]
    """Runs a call (a stream is drained) that must fail; returns its decoded error."""
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        for _ in result:
            pass
    return from_rpc_error(info.value)


# ---- translators ------------------------------------------------------------------------------


def test_translator_upload_and_follow(kafka, gateway_factory, connect) -> None:
    topic = kafka.topic(partitions=1)
    value = lambda i, station: json.dumps({"id": i, "station": station, "status": "on-air", "version": 3}).encode()
    kafka.produce(topic, [(f"assignment/{i}".encode(), value(i, "north")) for i in range(5)])
    gateway = gateway_factory([topic])
    client = connect(gateway.address)
    wait_ready(client, [topic])

    wasm = TRANSLATORS / "field-mapper.wasm"
    name = f"py-fm-{uuid.uuid4().hex[:8]}"
    version = client.upload_translator(name, wasm)
    assert version.name == name and version.version == 1
    assert version.digest == sha256_file(wasm) and version.size == wasm.stat().st_size
    info = client.translators.Describe(translators_pb2.DescribeTranslatorRequest(name=name))
    assert [v.digest for v in info.versions] == [version.digest]
    # The same bytes uploaded from memory are the same version.
    assert client.upload_translator(name, wasm.read_bytes()).digest == version.digest

    config = json.dumps({"rename": {"station": "location", "id": "assignment_id"}, "drop": ["version"], "key_prefix": "b/"})
    recorder = Recorder()
    follower = Follower(client, [topic], recorder, translator=Translator(name, digest=version.digest, config=config))
    running = Running(follower)
    wait_for(lambda: running.reached(Position({(topic, 0): 5})), 20, "the snapshot")
    kafka.produce(topic, [(b"assignment/1", value(1, "south")), (b"assignment/2", None)])
    wait_for(lambda: running.reached(Position({(topic, 0): 7})), 20, "the stream")
    running.stop()

    mapped = lambda i, station: json.dumps(
        {"assignment_id": i, "location": station, "status": "on-air"}, separators=(",", ":"), sort_keys=True
    ).encode()
    assert recorder.snapshot_state() == {
        b"b/assignment/0": mapped(0, "north"),
        b"b/assignment/1": mapped(1, "south"),
        b"b/assignment/3": mapped(3, "north"),
        b"b/assignment/4": mapped(4, "north"),
    }
    assert len(recorder.snapshot_changes) == 5 and all(c.key.startswith(b"b/") for c in recorder.snapshot_changes)
    streamed = [(c.offset, c.key, c.value) for c in recorder.stream_changes]
    assert streamed == [(5, b"b/assignment/1", mapped(1, "south")), (6, b"b/assignment/2", None)]

    # An unknown translator is fatal: NOT_FOUND, raised by run().
    with pytest.raises(TributaryError) as info:
        Follower(client, [topic], Recorder(), translator=Translator("py-missing")).run()
    assert info.value.code == grpc.StatusCode.NOT_FOUND and info.value.reason == "UNKNOWN_TRANSLATOR"


# ---- TLS and tokens ---------------------------------------------------------------------------


def follow_once(client, topic: str, end: int) -> Recorder:  # type: ignore[no-untyped-def]
    recorder = Recorder()
    running = Running(Follower(client, [topic], recorder))
    wait_for(lambda: running.reached(Position({(topic, 0): end})), 20, "the end")
    running.stop()
    return recorder


def test_mutual_tls(kafka, gateway_factory, connect, tmp_path: Path) -> None:
    topic = kafka.topic(partitions=1)
    kafka.produce(topic, [(b"a", b"1"), (b"b", b"2")])
    certs = tmp_path / "certs"
    subprocess.run(["bash", str(REPO / "scripts" / "certs.sh"), str(certs), "alice"], check=True, capture_output=True)
    gateway = gateway_factory(
        [topic],
        "[tls]\n"
        f"cert_file = {json.dumps(str(certs / 'server.pem'))}\n"
        f"key_file = {json.dumps(str(certs / 'server.key'))}\n"
        f"client_ca_file = {json.dumps(str(certs / 'ca.pem'))}\n",
    )
    ca, cert, key = (certs / "ca.pem").read_bytes(), (certs / "alice.pem").read_bytes(), (certs / "alice.key").read_bytes()
    # Dialled by IP, verified as "localhost" (the certificate has both; server_name is honoured).
    client = connect(gateway.address, root_certificates=ca, certificate_chain=cert, private_key=key,
                     server_name="localhost")
    wait_ready(client, [topic])
    assert follow_once(client, topic, 2).snapshot_state() == {b"a": b"1", b"b": b"2"}

    request = gateway_pb2.DescribeTopicsRequest(topics=[topic])
    # Without a client certificate the handshake fails; a plaintext client gets nowhere either.
    for bad in (connect(gateway.address, root_certificates=ca), connect(gateway.address)):
        error = rpc_error(lambda: [bad.gateway.DescribeTopics(request, timeout=5)])
        assert error.code == grpc.StatusCode.UNAVAILABLE
    # A client that does not trust the CA refuses the server.
    other = tmp_path / "other"
    subprocess.run(["bash", str(REPO / "scripts" / "certs.sh"), str(other)], check=True, capture_output=True)
    untrusting = connect(gateway.address, root_certificates=(other / "ca.pem").read_bytes(),
                         certificate_chain=cert, private_key=key)
    assert rpc_error(lambda: [untrusting.gateway.DescribeTopics(request, timeout=5)]).code == grpc.StatusCode.UNAVAILABLE


def test_bearer_token(kafka, gateway_factory, connect, tmp_path: Path) -> None:
    topic = kafka.topic(partitions=1, prefix="py-auth")
    hidden = kafka.topic(partitions=1, prefix="py-hidden")
    kafka.produce(topic, [(b"x", b"1")])
    token = uuid.uuid4().hex
    (tmp_path / "tokens.toml").write_text(
        f'[[token]]\nidentity = "b-service"\nsha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
    )
    (tmp_path / "policy.toml").write_text('[[grant]]\nidentities = ["b-service"]\nread_topics = ["py-auth-*"]\n')
    gateway = gateway_factory(
        [topic, hidden],
        "[auth]\n"
        f"tokens_file = {json.dumps(str(tmp_path / 'tokens.toml'))}\n"
        f"policy_file = {json.dumps(str(tmp_path / 'policy.toml'))}\n",
    )
    client = connect(gateway.address, token=token)
    wait_ready(client, [topic])
    assert follow_once(client, topic, 1).snapshot_state() == {b"x": b"1"}

    # No token, a wrong token: UNAUTHENTICATED, fatal for a follower.
    for bad in (connect(gateway.address), connect(gateway.address, token="wrong")):
        with pytest.raises(TributaryError) as info:
            Follower(bad, [topic], Recorder()).run()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    # The token's identity may not read the other topic.
    with pytest.raises(TributaryError) as info:
        Follower(client, [hidden], Recorder()).run()
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED


# ---- error details ----------------------------------------------------------------------------


def test_error_details(kafka, gateway_factory, connect) -> None:
    topic = kafka.topic(partitions=1)
    kafka.produce(topic, [(f"k{i}".encode(), b"v") for i in range(10)])
    kafka.delete_records(topic, 0, 6)
    gateway = gateway_factory([topic])
    client = connect(gateway.address)
    wait_ready(client, [topic])
    wait_for(
        lambda: client.gateway.DescribeTopics(gateway_pb2.DescribeTopicsRequest(topics=[topic])).topics[0]
        .partitions[0].earliest_offset == 6,
        20,
        "the gateway to see the deletion",
    )

    unknown = rpc_error(lambda: client.gateway.GetSnapshot(gateway_pb2.GetSnapshotRequest(topics=["py-no-such-topic"])))
    assert unknown.code == grpc.StatusCode.NOT_FOUND
    assert (unknown.reason, unknown.domain) == ("UNKNOWN_TOPIC", "tributary.v1")
    assert "py-no-such-topic" in unknown.message

    def subscribe(offset: int):  # type: ignore[no-untyped-def]
        return lambda: client.gateway.Subscribe(gateway_pb2.SubscribeRequest(
            from_offsets=[gateway_pb2.PartitionOffset(topic=topic, partition=0, offset=offset)]), timeout=10)

    negative = rpc_error(subscribe(-1))
    assert negative.code == grpc.StatusCode.INVALID_ARGUMENT and negative.reason == "INVALID_ARGUMENT"
    assert [f for f, _ in negative.field_violations] == ["from_offsets[0].offset"]
    assert negative.field_violations[0][1]

    too_old = rpc_error(subscribe(2))
    assert (too_old.code, too_old.reason) == (grpc.StatusCode.OUT_OF_RANGE, "OFFSET_TOO_OLD")
    assert too_old.offsets_kind == "EARLIEST" and too_old.offsets == Position({(topic, 0): 6})

    beyond = rpc_error(subscribe(50))
    assert (beyond.code, beyond.reason) == (grpc.StatusCode.OUT_OF_RANGE, "OFFSET_BEYOND_END")
    assert beyond.offsets_kind == "LATEST" and beyond.offsets == Position({(topic, 0): 10})
    assert "OFFSET_BEYOND_END" in str(beyond)

    # The follower raises fatal errors decoded the same way.
    with pytest.raises(TributaryError) as info:
        Follower(client, ["py-no-such-topic"], Recorder()).run()
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_TOPIC")


def test_handler_error_stops_and_keeps_position(kafka, gateway_factory, connect) -> None:
    topic = kafka.topic(partitions=1)
    kafka.produce(topic, [(b"a", b"1")])
    gateway = gateway_factory([topic])
    client = connect(gateway.address)
    wait_ready(client, [topic])

    class Failing(Recorder):
        def apply(self, changes, position) -> None:  # type: ignore[no-untyped-def]
            if any(c.value == b"poison" for c in changes):
                raise RuntimeError("cannot apply")
            super().apply(changes, position)

    store = MemoryStore()
    running = Running(Follower(client, [topic], Failing(), store=store))
    wait_for(lambda: running.reached(Position({(topic, 0): 1})), 20, "the snapshot")
    kafka.produce(topic, [(b"b", b"poison")])
    error = running.join(20)
    assert isinstance(error, RuntimeError) and str(error) == "cannot apply"
    assert store.load() == Position({(topic, 0): 1}), "the failed batch is redone by the next run"


# ---- durable subscriptions --------------------------------------------------------------------


def committed(client, name: str) -> Optional[Position]:  # type: ignore[no-untyped-def]
    try:
        info = client.subscriptions.Describe(subscriptions_pb2.DescribeSubscriptionRequest(name=name), timeout=5)
    except grpc.RpcError:
        return None
    return Position({(p.topic, p.partition): p.committed_offset for p in info.partitions})


def test_durable_subscription(kafka, gateway_factory, connect) -> None:
    topic = kafka.topic(partitions=2)
    kafka.produce(topic, [(f"k{i % 10}".encode(), f"a{i}".encode()) for i in range(30)])
    gateway = gateway_factory([topic])
    client = connect(gateway.address)
    wait_ready(client, [topic])
    name = f"py-sub-{uuid.uuid4().hex[:8]}"

    # First run: nothing committed under the name, so a snapshot, then a stream that commits.
    first = Recorder()
    errors: List[BaseException] = []
    running = Running(Follower(client, [topic], first, subscription_name=name, commit_interval=0.2,
                               on_error=errors.append))
    end1 = kafka.high_watermarks(topic)
    wait_for(lambda: running.reached(end1), 20, "the first run's end")
    kafka.produce(topic, [(b"k1", b"streamed")])
    end2 = kafka.high_watermarks(topic)
    wait_for(lambda: running.reached(end2), 20, "a streamed record")
    wait_for(lambda: committed(client, name) == end2, 20, "the commit of the streamed position")
    running.stop()
    assert first.resets == 1 and len(first.stream_changes) == 1
    assert not errors, errors

    # While B is away.
    kafka.produce(topic, [(f"k{i}".encode(), None if i == 3 else f"b{i}".encode()) for i in range(20)])
    end3 = kafka.high_watermarks(topic)

    # Second run with an empty store: resumes by name from the committed position, no snapshot.
    # (Commits at most once a minute: after the first batch, then only at the clean stop.)
    second = Recorder()
    running = Running(Follower(client, [topic], second, store=MemoryStore(), subscription_name=name,
                               max_batch_records=5, commit_interval=60))
    wait_for(lambda: running.reached(end3), 20, "the second run's end")
    assert committed(client, name) != end3
    running.stop()  # a clean stop commits the last position
    assert second.resets == 0 and not second.snapshot_changes
    streamed = sorted((p, o) for _, p, o in second.streamed_offsets())
    expected = sorted((p, o) for (_, p), stop in end3.items() for o in range(end2[(topic, p)], stop))
    assert streamed == expected and len(streamed) == 20
    assert committed(client, name) == end3

    # Two followers of one name: the newer takes it over, the older stops with the error.
    older = Running(Follower(client, [topic], Recorder(), subscription_name=name))
    wait_for(lambda: older.reached(end3), 20, "the older follower")
    newer = Running(Follower(client, [topic], Recorder(), subscription_name=name))
    error = older.join(20)
    assert isinstance(error, TributaryError), error
    assert (error.code, error.reason) == (grpc.StatusCode.ABORTED, "SUBSCRIPTION_TAKEN_OVER")
    assert error.metadata.get("subscription") == name
    wait_for(lambda: newer.reached(end3), 20, "the newer follower")
    newer.stop()


def test_key_filter(kafka, gateway_factory, connect) -> None:
    topic = kafka.topic(partitions=1)
    kafka.produce(topic, [(b"keep/1", b"1"), (b"drop/1", b"2"), (b"exact", b"3")])
    gateway = gateway_factory([topic])
    client = connect(gateway.address)
    wait_ready(client, [topic])
    recorder = Recorder()
    running = Running(Follower(client, [topic], recorder, key_filter=KeyFilter(exact=[b"exact"], prefixes=["keep/"])))
    wait_for(lambda: running.reached(Position({(topic, 0): 3})), 20, "the snapshot")
    kafka.produce(topic, [(b"drop/2", b"4"), (b"keep/2", b"5"), (b"drop/3", b"6")])
    # Positions advance past filtered-out records too.
    wait_for(lambda: running.reached(Position({(topic, 0): 6})), 20, "the filtered stream")
    running.stop()
    assert recorder.snapshot_state() == {b"keep/1": b"1", b"exact": b"3", b"keep/2": b"5"}
    assert [c.offset for c in recorder.stream_changes] == [4]



class FirstSaveStore(MemoryStore):
    """A memory store that remembers its first save: a snapshot's position."""

    def __init__(self) -> None:
        super().__init__()
        self.first: Optional[Position] = None

    def save(self, position: Position) -> None:
        if self.first is None:
            self.first = Position(position)
        super().save(position)


def is_open(value: bytes) -> bool:
    """The record filter's condition, computed here: a JSON object whose "status" is "open"."""
    try:
        doc = json.loads(value)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("status") == "open"


def test_record_filter_tombstone_mismatches(kafka, gateway_factory, connect) -> None:
    """Keys move in and out of the selection before and during the follow: with
    tombstone_mismatches the model holds exactly the keys whose latest value is open."""
    topic = kafka.topic(partitions=2)
    keys = [f"item/{i}".encode() for i in range(50)]
    rng = random.Random(29)
    counter = [0]

    def value(status: str) -> bytes:
        counter[0] += 1
        return json.dumps({"status": status, "n": counter[0]}).encode()

    def batch(n: int, tombstones: bool) -> List[Tuple[Optional[bytes], Optional[bytes]]]:
        out: List[Tuple[Optional[bytes], Optional[bytes]]] = []
        for _ in range(n):
            roll = rng.random()
            if roll < 0.05:
                out.append((rng.choice(keys), b"not json"))  # fails: not JSON
            elif roll < 0.10:
                out.append((rng.choice(keys), b'{"state": "open"}'))  # fails: no /status
            elif tombstones and roll < 0.15:
                out.append((rng.choice(keys), None))  # a tombstone passes field conditions
            else:
                out.append((rng.choice(keys), value(rng.choice(["open", "closed"]))))
        return out

    kafka.produce(topic, [(k, value(rng.choice(["open", "closed"]))) for k in keys] + batch(200, True))
    gateway = gateway_factory([topic])
    client = connect(gateway.address)
    wait_ready(client, [topic])

    recorder, store = Recorder(), FirstSaveStore()
    record_filter = RecordFilter(fields=[FieldCondition("/status", ['"open"'])], tombstone_mismatches=True)
    follower = Follower(client, [topic], recorder, store=store, record_filter=record_filter, max_batch_records=20)
    snapshot_taken = threading.Event()

    def produce() -> None:
        # No tombstones from A while following: every streamed tombstone is a mismatch.
        for round_ in range(15):
            kafka.produce(topic, batch(20, False))
            if round_ == 3:
                snapshot_taken.wait(20)
            time.sleep(0.03)

    producer = threading.Thread(target=produce)
    producer.start()
    running = Running(follower)
    wait_for(lambda: follower.position is not None, 20, "the snapshot")
    snapshot_taken.set()
    producer.join(60)
    assert not producer.is_alive()
    end = kafka.high_watermarks(topic)
    wait_for(lambda: running.reached(end), 30, "the follower to reach the end")
    running.stop()

    expected: Dict[bytes, bytes] = {k: v for k, v in kafka.rebuild(topic).items() if is_open(v)}
    assert 0 < len(expected) < len(keys)
    assert recorder.resets == 1
    assert recorder.snapshot_state() == expected
    assert recorder.snapshot_changes and all(c.value is not None and is_open(c.value) for c in recorder.snapshot_changes)
    # Every keyed record after the snapshot comes: a match as it is, a mismatch as a tombstone.
    assert store.first is not None
    streamed: Dict[Tuple[str, int], List[int]] = {tp: [] for tp in end}
    for t, p, o in recorder.streamed_offsets():
        streamed[(t, p)].append(o)
    assert streamed == {tp: list(range(store.first[tp], stop)) for tp, stop in end.items()}
    assert any(c.value is None for c in recorder.stream_changes)
    assert all(c.value is None or is_open(c.value) for c in recorder.stream_changes)


class SlowRecorder(Recorder):
    """A Recorder that takes ~20 ms per batch: a B that falls behind."""

    def apply(self, changes: List[Change], position: Optional[Position]) -> None:
        time.sleep(0.02)
        super().apply(changes, position)


def test_conflate_latest_per_key(kafka, gateway_factory, connect) -> None:
    """A slow B with conflate=True: it ends with A's state, exactly, after fewer changes than A
    wrote (the records in between were left out), in offset order."""
    topic = kafka.topic(partitions=1)
    keys = [f"item/{i}".encode() for i in range(10)]
    kafka.produce(topic, [(k, b"0") for k in keys])
    gateway = gateway_factory([topic])
    client = connect(gateway.address)
    wait_ready(client, [topic])

    recorder = SlowRecorder()
    follower = Follower(client, [topic], recorder, max_batch_records=10, conflate=True)
    running = Running(follower)
    wait_for(lambda: follower.position is not None, 20, "the snapshot")

    written = 5000
    kafka.produce(topic, [(keys[n % len(keys)], str(n + 1).encode()) for n in range(written)])
    end = kafka.high_watermarks(topic)
    wait_for(lambda: running.reached(end), 60, "the follower to reach the end")
    running.stop()

    assert recorder.snapshot_state() == kafka.rebuild(topic)
    offsets = [o for _, _, o in recorder.streamed_offsets()]
    assert offsets == sorted(set(offsets))
    assert 0 < len(recorder.stream_changes) < written, len(recorder.stream_changes)


def test_bad_record_filter(kafka, gateway_factory, connect) -> None:
    topic = kafka.topic(partitions=1)
    kafka.produce(topic, [(b"k", b'{"status": "open"}')])
    gateway = gateway_factory([topic])
    client = connect(gateway.address)
    wait_ready(client, [topic])
    bad = RecordFilter(fields=[FieldCondition("status", ['"open"'])])  # no leading "/"

    recorder = Recorder()
    with pytest.raises(TributaryError) as info:
        Follower(client, [topic], recorder, record_filter=bad).run()
    error = info.value
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert [f for f, _ in error.field_violations] == ["record_filter.fields[0].pointer"]
    assert error.field_violations[0][1]
    assert recorder.resets == 0

    # Subscribe checks it the same way.
    sub = rpc_error(lambda: client.gateway.Subscribe(
        gateway_pb2.SubscribeRequest(topics=[topic], record_filter=bad.to_proto()), timeout=10))
    assert (sub.code, sub.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert [f for f, _ in sub.field_violations] == ["record_filter.fields[0].pointer"]


def test_durable_subscription_too_old(kafka, gateway_factory, connect) -> None:
    """A committed position that retention deleted: the follower re-snapshots instead of resuming
    by name again, and the new start becomes the committed position."""
    topic = kafka.topic(partitions=1)
    kafka.produce(topic, [(f"k{i}".encode(), f"a{i}".encode()) for i in range(10)])
    gateway = gateway_factory([topic])
    client = connect(gateway.address)
    wait_ready(client, [topic])
    name = f"py-old-{uuid.uuid4().hex[:8]}"
    running = Running(Follower(client, [topic], Recorder(), subscription_name=name))
    wait_for(lambda: running.reached(Position({(topic, 0): 10})), 20, "the first run")
    running.stop()
    assert committed(client, name) == Position({(topic, 0): 10})

    kafka.produce(topic, [(f"k{i}".encode(), f"b{i}".encode()) for i in range(10)])
    kafka.delete_records(topic, 0, 15)
    wait_for(
        lambda: client.gateway.DescribeTopics(gateway_pb2.DescribeTopicsRequest(topics=[topic])).topics[0]
        .partitions[0].earliest_offset == 15,
        20,
        "the gateway to see the deletion",
    )
    recorder, errors = Recorder(), []  # type: ignore[var-annotated]
    running = Running(Follower(client, [topic], recorder, store=MemoryStore(), subscription_name=name,
                               on_error=errors.append))
    wait_for(lambda: running.reached(Position({(topic, 0): 20})), 20, "the re-snapshot")
    running.stop()
    assert [(e.code, e.reason) for e in errors] == [(grpc.StatusCode.OUT_OF_RANGE, "OFFSET_TOO_OLD")]
    assert recorder.resets == 1 and recorder.snapshot_state() == {f"k{i}".encode(): f"b{i}".encode() for i in range(10)}
    assert committed(client, name) == Position({(topic, 0): 20})
