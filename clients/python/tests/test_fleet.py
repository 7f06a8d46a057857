"""FleetFollower: following a sharded fleet (clients/FOLLOW.md, "Sharded fleets") against three
replicas of the real gateway binary and a real Kafka; and the fleet follow of a gateway without
sharding, and the refusal of a named subscription on a sharded fleet."""

from __future__ import annotations

import random
import socket
import threading
import time
import uuid
from collections import defaultdict
from typing import Dict, List, Optional, Set, Tuple

import grpc
import pytest

from conftest import Recorder, Running, wait_for, wait_ready
from tributary import Client, FleetFollower, MemoryStore, Position, TributaryError
from tributary.fleet import _by_owner, _merge_disjoint
from tributary.v1 import gateway_pb2

PARTITIONS = 6
SESSION_MS = 6000
WAIT = 90.0


class SnapshotStore(MemoryStore):
    """A memory store remembering where the last snapshot ended (the first save after a clear)."""

    def __init__(self) -> None:
        super().__init__()
        self.clears = 0
        self.snapshot_at: Optional[Position] = None
        self._after_clear = False

    def clear(self) -> None:
        self.clears += 1
        self._after_clear = True
        super().clear()

    def save(self, position: Position) -> None:
        if self._after_clear:
            self.snapshot_at = Position(position)
            self._after_clear = False
        super().save(position)


def sharding_env(group: str, instance: str) -> Dict[str, str]:
    return {
        "TRIBUTARY__SHARDING__GROUP": group,
        "TRIBUTARY__SHARDING__INSTANCE_ID": instance,
        "TRIBUTARY__SHARDING__SESSION_TIMEOUT_MS": str(SESSION_MS),
    }


def owners(client: Client, topic: str) -> Optional[Dict[int, str]]:
    """Each partition's owner, or None while the group rebalances or a partition is moving."""
    try:
        t = client.gateway.GetTopology(gateway_pb2.GetTopologyRequest(topics=[topic]), timeout=5)
    except grpc.RpcError:
        return None
    if t.group_state != "Stable" or len(t.partitions) != PARTITIONS:
        return None
    if any(p.moving or not p.owner for p in t.partitions):
        return None
    return {p.partition: p.owner for p in t.partitions}


def check_stream(recorder: Recorder, start: Position, end: Position) -> None:
    """Per partition: the streamed offsets are exactly start..end, once each, in order."""
    streamed: Dict[Tuple[str, int], List[int]] = defaultdict(list)
    for topic, partition, offset in recorder.streamed_offsets():
        streamed[(topic, partition)].append(offset)
    assert set(streamed) <= set(end)
    for tp, stop in end.items():
        got = streamed.get(tp, [])
        want = list(range(start[tp], stop))
        assert got == want, f"partition {tp}: {len(got)} streamed, {len(want)} expected; first diff at " + str(
            next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        )


# ---- units ----------------------------------------------------------------------------------


def test_partitions_are_grouped_by_owner_and_the_unheld_kept_apart() -> None:
    topology = gateway_pb2.GetTopologyResponse(
        sharded=True,
        partitions=[
            gateway_pb2.PartitionOwner(topic="t", partition=0, owner="a:1"),
            gateway_pb2.PartitionOwner(topic="t", partition=1, owner="b:1"),
            gateway_pb2.PartitionOwner(topic="t", partition=2, owner="a:1"),
            gateway_pb2.PartitionOwner(topic="t", partition=3, moving=True),
            gateway_pb2.PartitionOwner(topic="u", partition=0, owner="b:1"),
        ],
    )
    grouped, unowned = _by_owner(topology, {("t", 0), ("t", 1), ("t", 2), ("t", 3), ("t", 9)})
    assert grouped == {"a:1": {("t", 0), ("t", 2)}, "b:1": {("t", 1)}}
    assert unowned == {("t", 3), ("t", 9)}


def test_owners_snapshot_offsets_merge_each_partition_once() -> None:
    merged = Position()
    assert _merge_disjoint(merged, Position({("t", 0): 10, ("t", 2): 30})) is None
    assert _merge_disjoint(merged, Position({("t", 1): 20})) is None
    assert merged == {("t", 0): 10, ("t", 1): 20, ("t", 2): 30}
    assert _merge_disjoint(merged, Position({("t", 3): 1, ("t", 1): 25})) == ("t", 1)
    assert merged == {("t", 0): 10, ("t", 1): 20, ("t", 2): 30}, "untouched"


# ---- against the real binary ------------------------------------------------------------------


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_unsharded_gateway_is_followed_like_follower(kafka, gateway_factory, connect) -> None:
    topic = kafka.topic(partitions=2)
    kafka.produce(topic, [(f"k{i % 15}".encode(), None if i % 9 == 4 else f"v{i}".encode()) for i in range(120)])
    gateway = gateway_factory([topic])
    wait_ready(connect(gateway.address), [topic])
    recorder = Recorder()
    store = SnapshotStore()
    # The first seed is unreachable: the topology comes from the next one.
    follower = FleetFollower([closed_port(), gateway.address], [topic], recorder, store=store, backoff_max=0.5)
    running = Running(follower)
    try:
        end = kafka.high_watermarks(topic)
        wait_for(lambda: running.reached(end), 30, "the snapshot")
        kafka.produce(topic, [(f"k{i % 15}".encode(), f"w{i}".encode()) for i in range(40)])
        end = kafka.high_watermarks(topic)
        wait_for(lambda: running.reached(end), 30, "the new records")
    finally:
        running.stop()
        follower.close()
    assert recorder.resets == 1
    assert recorder.snapshot_state() == kafka.rebuild(topic)
    assert store.snapshot_at is not None
    check_stream(recorder, store.snapshot_at, end)
    assert store.load() == end


def test_named_subscription_on_sharded_fleet_is_refused(kafka, gateway_factory) -> None:
    topic = kafka.topic(partitions=1)
    replica = gateway_factory([topic], env=sharding_env(f"py-fleet-{uuid.uuid4().hex[:10]}", "r1"))
    recorder = Recorder()
    follower = FleetFollower([replica.address], [topic], recorder, subscription_name="py-fleet-name")
    try:
        with pytest.raises(TributaryError) as raised:
            follower.run()
    finally:
        follower.close()
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "sharded" in raised.value.message
    assert recorder.resets == 0 and not recorder.positions


def test_sharded_fleet_kill_and_join_while_producing(kafka, gateway_factory, connect) -> None:
    topic = kafka.topic(partitions=PARTITIONS)
    keys = [f"key-{i}".encode() for i in range(60)]
    rng = random.Random(11)
    counter = [0]

    def batch(n: int) -> List[Tuple[Optional[bytes], Optional[bytes]]]:
        out: List[Tuple[Optional[bytes], Optional[bytes]]] = []
        for _ in range(n):
            i = counter[0]
            counter[0] += 1
            out.append((rng.choice(keys), None if i % 7 == 3 else f"value-{i}".encode()))
        return out

    kafka.produce(topic, batch(300))
    group = f"py-fleet-{uuid.uuid4().hex[:10]}"
    replicas = [gateway_factory([topic], env=sharding_env(group, f"r{i}")) for i in (1, 2, 3)]
    r1, r2, r3 = replicas
    probe = connect(r2.address)
    before = wait_for(lambda: owners(probe, topic), 60, "the fleet to share the partitions")
    print(f"\nowners: {before}")

    stop_producing = threading.Event()
    produce_error: List[BaseException] = []

    def produce() -> None:
        try:
            while not stop_producing.is_set():
                kafka.produce(topic, batch(12))
                time.sleep(0.05)
        except BaseException as e:  # noqa: BLE001
            produce_error.append(e)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()

    recorder = Recorder()
    store = SnapshotStore()
    errors: List[BaseException] = []
    # r1 is the first seed and gets killed: the topology then comes from the others.
    follower = FleetFollower(
        [r1.address, r2.address],
        [topic],
        recorder,
        store=store,
        max_batch_records=50,
        backoff_max=1.0,
        on_error=errors.append,
    )
    running = Running(follower)
    try:
        wait_for(lambda: running.reached(kafka.high_watermarks(topic)), WAIT, "the follower to catch up", 0.2)

        # kill -9 one replica: its partitions move to the survivors after the session timeout.
        killed = {(topic, p) for p, o in before.items() if o == r1.address}
        assert killed, f"r1 ({r1.address}) holds nothing: {before}"
        r1.kill()
        killed_at = time.monotonic()
        mark = kafka.high_watermarks(topic)
        wait_for(
            lambda: all((follower.position or {}).get(tp, -1) > mark[tp] for tp in killed),
            WAIT,
            "the killed replica's partitions to be followed on the survivors",
            0.05,
        )
        moved_after = time.monotonic() - killed_at
        print(f"killed replica's partitions {sorted(p for _, p in killed)} applied again {moved_after:.2f}s after kill -9")
        after_kill = wait_for(lambda: owners(probe, topic), WAIT, "a stable fleet of two")
        assert r1.address not in after_kill.values()

        # A replica joins again (same instance id, same address) and takes partitions back.
        r1.start()
        joined_at = time.monotonic()
        rejoined = wait_for(
            lambda: (lambda o: o if o and r1.address in o.values() else None)(owners(probe, topic)),
            WAIT,
            "the joined replica to hold partitions",
            0.1,
        )
        taken = {(topic, p) for p, o in rejoined.items() if o == r1.address}
        held_at = time.monotonic()
        mark = kafka.high_watermarks(topic)
        wait_for(
            lambda: all((follower.position or {}).get(tp, -1) > mark[tp] for tp in taken),
            WAIT,
            "the partitions taken by the joined replica to be followed there",
            0.05,
        )
        now = time.monotonic()
        print(
            f"joined replica holds {sorted(p for _, p in taken)} {held_at - joined_at:.2f}s after its start; "
            f"applied again {now - held_at:.2f}s after that"
        )
        time.sleep(1.0)  # keep producing a little on the new layout
    finally:
        stop_producing.set()
        producer.join(30)
    assert not produce_error, produce_error
    try:
        end = kafka.high_watermarks(topic)
        wait_for(lambda: running.reached(end), WAIT, "the follower to reach the end", 0.1)
    finally:
        running.stop()
        follower.close()

    total = sum(end.values())
    print(f"{total} records in {PARTITIONS} partitions; {len(recorder.stream_changes)} streamed; errors seen: "
          f"{sorted({(type(e).__name__, getattr(getattr(e, 'code', None), 'name', ''), getattr(e, 'reason', '')) for e in errors})}")
    assert recorder.resets == 1, "no reset after the first snapshot: a moved partition keeps its position"
    assert store.clears == 1
    assert store.snapshot_at is not None and set(store.snapshot_at) == set(end)
    assert recorder.snapshot_state() == kafka.rebuild(topic)
    check_stream(recorder, store.snapshot_at, end)
    # Every position handed to apply (after the snapshot) names every partition.
    assert all(p is None or set(p) == set(end) for p in recorder.positions)
    assert store.load() == end
