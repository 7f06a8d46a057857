"""The follow helper against the real gateway and Kafka: handoff, gateway restart, OUT_OF_RANGE."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import grpc

from conftest import Recorder, Running, wait_for, wait_ready
from tributary import FileStore, Follower, MemoryStore, Position, TributaryError
from tributary.v1 import gateway_pb2


def check_stream(recorder: Recorder, start: Position, end: Position) -> None:
    """Streamed records: per partition exactly the offsets start..end, once each, in order.

    The test topics are written by a plain (non-transactional) producer and never compacted, so
    their offsets are contiguous and a gap or a duplicate shows as a wrong list."""
    streamed: Dict[Tuple[str, int], List[int]] = defaultdict(list)
    for topic, partition, offset in recorder.streamed_offsets():
        streamed[(topic, partition)].append(offset)
    for tp, stop in end.items():
        assert streamed.get(tp, []) == list(range(start[tp], stop)), f"partition {tp}"
    assert set(streamed) <= set(end)


def earliest(client, topic: str) -> int:  # type: ignore[no-untyped-def]
    response = client.gateway.DescribeTopics(gateway_pb2.DescribeTopicsRequest(topics=[topic]), timeout=5)
    return response.topics[0].partitions[0].earliest_offset


class CountingStore(MemoryStore):
    """A memory store that remembers every save and counts clears."""

    def __init__(self) -> None:
        super().__init__()
        self.clears = 0
        self.saves: List[Position] = []

    def save(self, position: Position) -> None:
        self.saves.append(Position(position))
        super().save(position)

    def clear(self) -> None:
        self.clears += 1
        super().clear()


def test_handoff_while_producing(kafka, gateway_factory, connect) -> None:
    topic = kafka.topic(partitions=3)
    keys = [f"key-{i}".encode() for i in range(40)]
    rng = random.Random(7)

    def batch(n: int, start: int) -> List[Tuple[Optional[bytes], Optional[bytes]]]:
        out: List[Tuple[Optional[bytes], Optional[bytes]]] = []
        for i in range(start, start + n):
            key = rng.choice(keys)
            out.append((key, None if i % 7 == 3 else f"value-{i}".encode()))
        return out

    kafka.produce(topic, batch(300, 0))
    gateway = gateway_factory([topic])
    client = connect(gateway.address)
    wait_ready(client, [topic])

    recorder = Recorder()
    store = CountingStore()
    follower = Follower(client, [topic], recorder, store=store, max_batch_records=25)
    snapshot_taken = threading.Event()
    produced_during = [0]

    def produce() -> None:
        # Keep writing while the follower snapshots and hands off to its subscription.
        for round_ in range(20):
            kafka.produce(topic, batch(20, 1000 + round_ * 20))
            produced_during[0] += 20
            if round_ == 5:
                snapshot_taken.wait(20)
            time.sleep(0.03)

    producer = threading.Thread(target=produce)
    producer.start()
    running = Running(follower)
    wait_for(lambda: follower.position is not None, 20, "the snapshot")
    snapshot_taken.set()
    producer.join(60)
    assert produced_during[0] == 400

    end = kafka.high_watermarks(topic)
    assert sum(end.values()) == 700
    wait_for(lambda: running.reached(end), 30, "the follower to reach the end")
    running.stop()

    assert recorder.resets == 1 and store.clears == 1
    assert recorder.snapshot_state() == kafka.rebuild(topic)
    assert len(recorder.snapshot_changes) > 0 and len(recorder.stream_changes) > 0
    assert len({c.key for c in recorder.snapshot_changes}) == len(recorder.snapshot_changes)
    # The first save after the clear is the snapshot's position: every snapshot entry is before
    # it, and the stream went on from exactly there.
    snapshot_at = store.saves[0]
    assert set(snapshot_at) == set(end)
    for c in recorder.snapshot_changes:
        assert c.offset < snapshot_at[(c.topic, c.partition)]
    check_stream(recorder, snapshot_at, end)
    assert follower.position == end and store.load() == end


def test_resume_after_gateway_restart(kafka, gateway_factory, connect) -> None:
    topic = kafka.topic(partitions=2)
    kafka.produce(topic, [(f"k{i % 25}".encode(), f"a{i}".encode()) for i in range(100)])
    gateway = gateway_factory([topic])
    client = connect(gateway.address)
    wait_ready(client, [topic])

    recorder = Recorder()
    errors: List[BaseException] = []
    store = CountingStore()
    follower = Follower(client, [topic], recorder, store=store, backoff_initial=0.05, backoff_max=0.5,
                        on_error=errors.append)
    running = Running(follower)
    end1 = kafka.high_watermarks(topic)
    wait_for(lambda: running.reached(end1), 20, "the first end")
    kafka.produce(topic, [(b"k1", b"live")])
    end_live = kafka.high_watermarks(topic)
    wait_for(lambda: running.reached(end_live), 20, "a live record")
    snapshot_at = store.saves[0]
    assert snapshot_at == end1

    gateway.stop()
    # While the gateway is down: more changes, including tombstones.
    kafka.produce(topic, [(f"k{i % 30}".encode(), None if i % 5 == 0 else f"b{i}".encode()) for i in range(100)])
    wait_for(lambda: any(isinstance(e, TributaryError) and e.code == grpc.StatusCode.UNAVAILABLE for e in errors),
             20, "the follower to see the gateway go")
    gateway.start()
    assert gateway.runs == 2
    end2 = kafka.high_watermarks(topic)
    wait_for(lambda: running.reached(end2), 60, "the end after the restart")
    kafka.produce(topic, [(b"k2", b"after-restart")])
    end3 = kafka.high_watermarks(topic)
    wait_for(lambda: running.reached(end3), 20, "a record after the restart")
    running.stop()

    assert recorder.resets == 1 and store.clears == 1, "a gateway restart must not cause a new snapshot"
    check_stream(recorder, snapshot_at, end3)
    assert recorder.snapshot_state() == kafka.rebuild(topic)
    assert recorder.state[b"k2"] == b"after-restart"


def test_out_of_range_resnapshots(kafka, gateway_factory, connect, tmp_path: Path) -> None:
    topic = kafka.topic(partitions=1)
    produced: Dict[bytes, Optional[bytes]] = {}

    def write(records: List[Tuple[bytes, Optional[bytes]]]) -> None:
        kafka.produce(topic, records)
        produced.update(records)

    write([(f"k{i}".encode(), f"v{i}".encode()) for i in range(10)])
    gateway = gateway_factory([topic])
    client = connect(gateway.address)
    wait_ready(client, [topic])
    path = tmp_path / "position.json"

    # B's first run: snapshot and follow to offset 10, position saved in a file.
    first = Recorder()
    running = Running(Follower(client, [topic], first, store=FileStore(path)))
    wait_for(lambda: running.reached(Position({(topic, 0): 10})), 20, "the first run's end")
    running.stop()
    assert FileStore(path).load() == Position({(topic, 0): 10})

    # While B is away: more changes, then retention deletes everything before offset 15.
    write([(f"k{i}".encode(), f"w{i}".encode()) for i in range(5, 15)] + [(b"k0", None)])
    kafka.delete_records(topic, 0, 15)
    # The gateway picks up earliest offsets every metadata_refresh_ms (1 s in these tests).
    wait_for(lambda: earliest(client, topic) == 15, 20, "the gateway to see the deletion")

    class CountingFileStore(FileStore):
        clears = 0

        def clear(self) -> None:
            CountingFileStore.clears += 1
            super().clear()

    second = Recorder()
    errors: List[BaseException] = []
    follower = Follower(client, [topic], second, store=CountingFileStore(path), on_error=errors.append)
    running = Running(follower)
    wait_for(lambda: running.reached(Position({(topic, 0): 21})), 20, "the second run's end")
    running.stop()

    too_old = [e for e in errors if isinstance(e, TributaryError) and e.code == grpc.StatusCode.OUT_OF_RANGE]
    assert too_old, errors
    assert too_old[0].reason == "OFFSET_TOO_OLD"
    assert too_old[0].offsets_kind == "EARLIEST" and too_old[0].offsets == Position({(topic, 0): 15})
    # Cleared on OUT_OF_RANGE (step 5), then again as the snapshot starts (step 2).
    assert CountingFileStore.clears == 2 and second.resets == 1
    assert second.snapshot_changes, "the follower took a new snapshot"
    assert not second.stream_changes or min(c.offset for c in second.stream_changes) >= 15
    # The gateway's view keeps keys it saw before retention deleted them: the state is the
    # whole history's.
    assert second.snapshot_state() == {k: v for k, v in produced.items() if v is not None}
    assert FileStore(path).load() == Position({(topic, 0): 21})
