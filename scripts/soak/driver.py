#!/usr/bin/env python3
"""The soak test's driver (run by scripts/soak.sh; docs/soak.md explains what it checks).

One gateway process under a steady, churning load for SOAK_SECONDS:

- a producer writes JSON records over a fixed set of keys, with tombstones, in Kafka
  transactions of which some are aborted (so offsets skip over markers and aborted records);
- followers take a snapshot once, then loop: Subscribe from where they stand, follow for 1-10 s,
  cancel, sometimes wait (one of them, the laggard, sometimes long enough to fall behind the
  gateway's tail buffer), sometimes reconnect; each keeps its own model and checks every record
  (no gap, no duplicate, the first message a progress with the start offsets);
- periodic snapshots (checked on their own), and periodic translator activity (upload
  translators/dist/identity.wasm, a snapshot and a stream through it compared with plain ones,
  delete it);
- every SOAK_SAMPLE_SECONDS, the gateway's RSS, open files, threads and its stream gauges.

At the end, every follower's model must equal a raw rebuild from Kafka (read_committed, latest
value per key, tombstones delete), every follower must have received exactly the records Kafka
has after its snapshot, the gateway's own snapshot must equal the rebuild, its stream gauges
must fall back to zero, and no resource may grow without bound (a least-squares line over the
samples after the warm-up). Exits 0 when every check passed, 1 otherwise.

Fault injection (SOAK_INJECT_FAULT), to show that the soak can fail:
  model      follower 0's model is corrupted (one key's value) just before the comparison
  gap        follower 0 silently drops one record it received (not applied, not counted)
  duplicate  follower 0 resumes once from its last applied record instead of the one after it,
             so the gateway (correctly) sends that record again and the duplicate check fires
  fds        the driver opens a new connection to the gateway every 2 s and never closes it
             (the gateway's open files grow: the growth check fires)

Needs grpcio, protobuf and confluent-kafka (clients/python/requirements-test.txt); imports the
tributary package from clients/python/src. `driver.py --help` lists every knob.
"""

from __future__ import annotations

import argparse
import array
import bisect
import json
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import grpc
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "clients" / "python" / "src"))  # the client, as scripts/soak.sh sets it

from tributary import Client  # noqa: E402
from tributary.errors import from_rpc_error  # noqa: E402
from tributary.v1 import gateway_pb2, translators_pb2  # noqa: E402

IDENTITY_WASM = REPO / "translators" / "dist" / "identity.wasm"
FAULTS = ("model", "gap", "duplicate", "fds")

# (partition, offset, key, value, headers, output_index): one record or snapshot entry, comparable.
Item = Tuple[int, int, Optional[bytes], Optional[bytes], Tuple[Tuple[str, Optional[bytes]], ...], int]


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Soak test of a Tributary gateway (see docs/soak.md). Every option defaults to "
        "the environment variable named in brackets.",
    )
    p.add_argument("--bin", required=True, help="the gateway binary")
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    p.add_argument("--seconds", type=float, default=env_float("SOAK_SECONDS", 3600), help="run length [SOAK_SECONDS, 3600]")
    p.add_argument("--sample-seconds", type=float, default=env_float("SOAK_SAMPLE_SECONDS", 60), help="sample interval [SOAK_SAMPLE_SECONDS, 60]")
    p.add_argument("--rate", type=float, default=env_float("SOAK_RATE", 500), help="records/s produced [SOAK_RATE, 500]")
    p.add_argument("--keys", type=int, default=env_int("SOAK_KEYS", 2000), help="distinct keys [SOAK_KEYS, 2000]")
    p.add_argument("--partitions", type=int, default=env_int("SOAK_PARTITIONS", 4), help="topic partitions [SOAK_PARTITIONS, 4]")
    p.add_argument("--followers", type=int, default=env_int("SOAK_FOLLOWERS", 4), help="churning followers [SOAK_FOLLOWERS, 4]")
    p.add_argument("--tombstone-percent", type=float, default=env_float("SOAK_TOMBSTONE_PERCENT", 5), help="[SOAK_TOMBSTONE_PERCENT, 5]")
    p.add_argument("--transactions", type=int, default=env_int("SOAK_TRANSACTIONS", 1), help="1: produce in Kafka transactions, 0: plain idempotent producer [SOAK_TRANSACTIONS, 1]")
    p.add_argument("--abort-percent", type=float, default=env_float("SOAK_ABORT_PERCENT", 5), help="transactions aborted [SOAK_ABORT_PERCENT, 5]")
    p.add_argument("--snapshot-seconds", type=float, default=env_float("SOAK_SNAPSHOT_SECONDS", 5), help="[SOAK_SNAPSHOT_SECONDS, 5]")
    p.add_argument("--translator-seconds", type=float, default=env_float("SOAK_TRANSLATOR_SECONDS", 30), help="[SOAK_TRANSLATOR_SECONDS, 30]")
    p.add_argument("--lag-pause-seconds", type=float, default=env_float("SOAK_LAG_PAUSE_SECONDS", 150), help="the laggard's long pause, every 10 min from 5 min (or a quarter of the run) on; 0: never [SOAK_LAG_PAUSE_SECONDS, 150]")
    p.add_argument("--stall-seconds", type=float, default=env_float("SOAK_STALL_SECONDS", 30), help="a stream without any message this long fails [SOAK_STALL_SECONDS, 30]")
    p.add_argument("--warmup-percent", type=float, default=env_float("SOAK_WARMUP_PERCENT", 20), help="[SOAK_WARMUP_PERCENT, 20]")
    p.add_argument("--max-rss-growth-mib", type=float, default=env_float("SOAK_MAX_RSS_GROWTH_MIB", 64), help="[SOAK_MAX_RSS_GROWTH_MIB, 64]")
    p.add_argument("--max-rss-growth-percent", type=float, default=env_float("SOAK_MAX_RSS_GROWTH_PERCENT", 25), help="[SOAK_MAX_RSS_GROWTH_PERCENT, 25]")
    p.add_argument("--max-fd-growth", type=float, default=env_float("SOAK_MAX_FD_GROWTH", 20), help="[SOAK_MAX_FD_GROWTH, 20]")
    p.add_argument("--max-thread-growth", type=float, default=env_float("SOAK_MAX_THREAD_GROWTH", 20), help="[SOAK_MAX_THREAD_GROWTH, 20]")
    p.add_argument("--max-task-growth", type=float, default=env_float("SOAK_MAX_TASK_GROWTH", 100), help="[SOAK_MAX_TASK_GROWTH, 100]")
    p.add_argument("--inject-fault", default=os.environ.get("SOAK_INJECT_FAULT", ""), help=f"one of {', '.join(FAULTS)} [SOAK_INJECT_FAULT]")
    p.add_argument("--keep", type=int, default=env_int("SOAK_KEEP", 0), help="1: keep the work directory and the topic [SOAK_KEEP, 0]")
    p.add_argument("--seed", type=int, default=env_int("SOAK_SEED", 0), help="random seed, 0: from the clock [SOAK_SEED]")
    a = p.parse_args()
    if a.inject_fault and a.inject_fault not in FAULTS:
        p.error(f"SOAK_INJECT_FAULT must be one of {', '.join(FAULTS)}, not {a.inject_fault!r}")
    if a.seconds <= 0 or a.sample_seconds <= 0 or a.rate <= 0 or a.keys <= 0 or a.partitions <= 0 or a.followers <= 0:
        p.error("seconds, sample seconds, rate, keys, partitions and followers must be positive")
    return a


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- shared state ---------------------------------------------------------------------------------


class Verdict:
    """Violations seen during the run (each stops the run early) and the final checks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.violations: List[str] = []
        self.checks: List[Tuple[str, bool, str]] = []
        self.notes: List[str] = []
        self.abort = threading.Event()

    def violation(self, msg: str) -> None:
        with self.lock:
            self.violations.append(msg)
            first = len(self.violations) == 1
        if first:
            log(f"VIOLATION: {msg} (stopping the run early)")
        self.abort.set()

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        with self.lock:
            self.checks.append((name, ok, detail))

    def note(self, msg: str) -> None:
        with self.lock:
            self.notes.append(msg)
        log(f"note: {msg}")

    @property
    def passed(self) -> bool:
        with self.lock:
            return not self.violations and all(ok for _, ok, _ in self.checks)


class Watch:
    """One stream under the watchdog: cancelled at its deadline, or when no message came for too long."""

    def __init__(self, call: grpc.Call, deadline: Optional[float], stall: float, what: str) -> None:
        self.call = call
        self.deadline = deadline
        self.stall = stall
        self.what = what
        self.last = time.monotonic()
        self.expired = False  # cancelled at the deadline: a normal end
        self.finished = False  # cancelled by its owner: a normal end
        self.stalled = False

    def touch(self) -> None:
        self.last = time.monotonic()

    def finish(self) -> None:
        self.finished = True
        self.call.cancel()

    def ended_by_us(self) -> bool:
        return self.expired or self.finished


class Watchdog(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.lock = threading.Lock()
        self.watches: List[Watch] = []

    def watch(self, call: grpc.Call, deadline: Optional[float], stall: float, what: str) -> Watch:
        w = Watch(call, deadline, stall, what)
        with self.lock:
            self.watches.append(w)
        return w

    def unwatch(self, w: Watch) -> None:
        with self.lock:
            if w in self.watches:
                self.watches.remove(w)

    def run(self) -> None:
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            with self.lock:
                watches = list(self.watches)
            for w in watches:
                if w.ended_by_us() or w.stalled:
                    continue
                if w.deadline is not None and now >= w.deadline:
                    w.expired = True
                    w.call.cancel()
                elif now - w.last > w.stall:
                    w.stalled = True
                    w.call.cancel()


@dataclass
class Context:
    args: argparse.Namespace
    topic: str
    target: str
    verdict: Verdict
    watchdog: Watchdog
    run_started: float = 0.0
    churn_over: threading.Event = field(default_factory=threading.Event)
    end_ready: threading.Event = field(default_factory=threading.Event)
    end_offsets: Dict[int, int] = field(default_factory=dict)

    def client(self) -> Client:
        # A subchannel pool of its own: every client is its own TCP connection to the gateway.
        return Client(self.target, options=[("grpc.use_local_subchannel_pool", 1)])

    def offsets(self, position: Dict[int, int]) -> List[gateway_pb2.PartitionOffset]:
        return [gateway_pb2.PartitionOffset(topic=self.topic, partition=p, offset=o) for p, o in sorted(position.items())]


def rpc_text(e: BaseException) -> str:
    if isinstance(e, grpc.RpcError):
        return str(from_rpc_error(e))
    return repr(e)


def item_of(partition: int, offset: int, key: Optional[bytes], value: Optional[bytes], headers, output_index: int) -> Item:  # type: ignore[no-untyped-def]
    hs = tuple((h.key, h.value if h.HasField("value") else None) for h in headers)
    return (partition, offset, key, value, hs, output_index)


# ---- snapshots ------------------------------------------------------------------------------------


class SnapshotError(Exception):
    pass


def take_snapshot(
    ctx: Context,
    client: Client,
    translator: Optional[gateway_pb2.TranslatorRef] = None,
    as_of: Optional[Dict[int, int]] = None,
    timeout: float = 120.0,
) -> Tuple[Dict[int, int], List[Item]]:
    """A whole GetSnapshot: its offsets and entries, checked (every partition in the offsets, one
    last chunk, keys unique, every entry below its partition's offset). Raises SnapshotError on a
    broken answer, grpc.RpcError on an error status."""
    request = gateway_pb2.GetSnapshotRequest(topics=[ctx.topic])
    if translator is not None:
        request.translator.CopyFrom(translator)
    if as_of is not None:
        request.as_of_offsets.extend(ctx.offsets(as_of))
    offsets: Optional[Dict[int, int]] = None
    entries: List[Item] = []
    seen: set = set()
    last = False
    call = client.gateway.GetSnapshot(request, timeout=timeout)
    try:
        for chunk in call:
            if last:
                raise SnapshotError("a chunk after the last one")
            if offsets is None:
                offsets = {o.partition: o.offset for o in chunk.offsets if o.topic == ctx.topic}
                if sorted(offsets) != list(range(ctx.args.partitions)) or len(chunk.offsets) != ctx.args.partitions:
                    raise SnapshotError(f"the first chunk's offsets do not list every partition once: {list(chunk.offsets)}")
            elif chunk.offsets:
                raise SnapshotError("offsets in a chunk other than the first")
            for e in chunk.entries:
                if e.topic != ctx.topic or e.partition not in offsets:
                    raise SnapshotError(f"an entry of an unknown partition {e.topic}:{e.partition}")
                if e.offset >= offsets[e.partition]:
                    raise SnapshotError(f"entry at {e.partition}:{e.offset}, not below the snapshot's offset {offsets[e.partition]}")
                if (e.key, e.output_index) in seen:
                    raise SnapshotError(f"key {e.key!r} twice in one snapshot")
                seen.add((e.key, e.output_index))
                entries.append(item_of(e.partition, e.offset, e.key, e.value, e.headers, e.output_index))
            last = chunk.last
    finally:
        call.cancel()
    if not last or offsets is None:
        raise SnapshotError("the snapshot ended without its last chunk")
    return offsets, entries


# ---- the producer ---------------------------------------------------------------------------------


class Load(threading.Thread):
    """A steady producer: ``rate`` records/s over ``keys`` keys, JSON values, some tombstones; in
    transactions of about half a second, some of them aborted (SOAK_TRANSACTIONS=1)."""

    TXN_SECONDS = 0.5
    TICK = 0.05

    def __init__(self, ctx: Context) -> None:
        super().__init__(name="producer", daemon=True)
        self.ctx = ctx
        a = ctx.args
        conf = {
            "bootstrap.servers": a.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
        if a.transactions:
            conf["transactional.id"] = f"tributary-soak-{uuid.uuid4().hex[:12]}"
        self.producer = Producer(conf)
        self.stop_event = threading.Event()
        self.rng = random.Random(a.seed * 7 + 1 if a.seed else None)
        self.sent = 0  # handed to the producer (committed, aborted or not yet delivered)
        self.tombstones = 0
        self.committed_txns = 0
        self.aborted_txns = 0
        self.aborted_records = 0
        self.delivery_errors: List[str] = []
        self.done = threading.Event()

    def _delivered(self, err, _msg) -> None:  # type: ignore[no-untyped-def]
        if err is not None and not (self.ctx.args.transactions and err.code() == KafkaError._PURGE_QUEUE):
            self.delivery_errors.append(str(err))

    def _one(self) -> None:
        a = self.ctx.args
        n = self.sent
        key = f"key-{self.rng.randrange(a.keys):05d}".encode()
        if self.rng.random() * 100 < a.tombstone_percent:
            value = None
            self.tombstones += 1
        else:
            value = json.dumps(
                {
                    "key": key.decode(),
                    "seq": n,
                    "at_ms": int(time.time() * 1000),
                    "amount": self.rng.randrange(1_000_000),
                    "status": self.rng.choice(["open", "moving", "closed"]),
                    "note": "x" * self.rng.randrange(0, 240),
                },
                separators=(",", ":"),
            ).encode()
        self.producer.produce(self.ctx.topic, key=key, value=value, headers=[("seq", str(n).encode())], on_delivery=self._delivered)
        self.sent += 1

    def run(self) -> None:
        a = self.ctx.args
        txn = bool(a.transactions)
        in_txn = False
        txn_started = 0.0
        txn_records = 0
        try:
            if txn:
                self.producer.init_transactions(60)
            start = time.monotonic()
            while not self.stop_event.is_set():
                now = time.monotonic()
                if txn and not in_txn:
                    self.producer.begin_transaction()
                    in_txn, txn_started, txn_records = True, now, 0
                due = int((now - start) * a.rate) - self.sent
                if due > a.rate:  # fell far behind (a stall): do not burst, just go on
                    start += (due - a.rate) / a.rate
                    due = int(a.rate)
                for _ in range(max(0, due)):
                    try:
                        self._one()
                    except BufferError:
                        self.producer.poll(0.1)
                        break
                    txn_records += 1
                self.producer.poll(0)
                if txn and now - txn_started >= self.TXN_SECONDS:
                    self._end_txn(txn_records)
                    in_txn = False
                if self.delivery_errors:
                    raise RuntimeError(f"delivery failed: {self.delivery_errors[:3]}")
                self.stop_event.wait(self.TICK)
            if txn and in_txn:
                self._end_txn(txn_records, abort=False)
                in_txn = False
            if self.producer.flush(60) != 0:
                raise RuntimeError("records not delivered within 60 s")
            if self.delivery_errors:
                raise RuntimeError(f"delivery failed: {self.delivery_errors[:3]}")
        except Exception as e:  # noqa: BLE001
            self.ctx.verdict.violation(f"producer: {e!r} (Kafka, not the gateway)")
        finally:
            self.done.set()

    def _end_txn(self, records: int, abort: Optional[bool] = None) -> None:
        if abort is None:
            abort = self.rng.random() * 100 < self.ctx.args.abort_percent
        if abort:
            self.producer.abort_transaction(60)
            self.aborted_txns += 1
            self.aborted_records += records
        else:
            self.producer.commit_transaction(60)
            self.committed_txns += 1

    def stop(self) -> None:
        self.stop_event.set()
        self.done.wait(120)


# ---- followers --------------------------------------------------------------------------------------


class Follower(threading.Thread):
    """Takes a snapshot once, then churns: Subscribe, follow 1-10 s, cancel, maybe wait, resume.
    Keeps a model and checks every record against the offsets it stands at."""

    def __init__(self, ctx: Context, index: int) -> None:
        super().__init__(name=f"follower-{index}", daemon=True)
        self.ctx = ctx
        self.index = index
        a = ctx.args
        self.rng = random.Random(a.seed * 31 + index if a.seed else None)
        self.laggard = a.followers > 1 and index == a.followers - 1 and a.lag_pause_seconds > 0
        self.model: Dict[bytes, bytes] = {}
        self.lock = threading.Lock()
        # Per partition: the next offset to take (records applied and progress merged), and the
        # offset after the last record applied (the snapshot's offset before any).
        self.position: Dict[int, int] = {}
        self.applied: Dict[int, int] = {}
        self.snap_offsets: Dict[int, int] = {}  # the snapshot's offsets
        self.count = [0] * a.partitions  # records applied since the snapshot, per partition
        self.offset_sum = [0] * a.partitions
        self.snapshot_keys = 0
        self.sessions = 0
        self.records = 0
        self.from_progress = 0
        self.from_records = 0
        self.reconnects = 0
        self.long_pauses = 0
        self.caught_up = False
        self.fault_gap_done = False
        self.fault_dup_done = False
        self.client: Optional[Client] = None

    def _fail(self, msg: str) -> None:
        self.ctx.verdict.violation(f"follower {self.index}: {msg}")

    def run(self) -> None:
        ctx, a = self.ctx, self.ctx.args
        try:
            self.client = ctx.client()
            self._snapshot()
            next_long_pause = ctx.run_started + min(300.0, a.seconds / 4)
            while not ctx.churn_over.is_set() and not ctx.verdict.abort.is_set():
                self._session(until=time.monotonic() + self.rng.uniform(1, 10))
                if ctx.verdict.abort.is_set() or ctx.churn_over.is_set():
                    break
                now = time.monotonic()
                churn_left = ctx.run_started + a.seconds - now
                if self.laggard and now >= next_long_pause and churn_left > a.lag_pause_seconds + 60:
                    # Long enough to fall behind the tail buffer: the resume reads from Kafka.
                    self.long_pauses += 1
                    next_long_pause = now + 600
                    ctx.churn_over.wait(a.lag_pause_seconds)
                elif self.rng.random() < 0.3:
                    ctx.churn_over.wait(self.rng.uniform(0.1, 3))
                if self.rng.random() < 0.1:
                    self.client.close()
                    self.client = ctx.client()
                    self.reconnects += 1
            while not ctx.end_ready.wait(0.5):
                if ctx.verdict.abort.is_set():
                    return
            if not ctx.verdict.abort.is_set():
                self._session(until=time.monotonic() + 180, target=ctx.end_offsets)
                if not self.caught_up and not ctx.verdict.abort.is_set():
                    self._fail(f"did not reach the end offsets {ctx.end_offsets} within 180 s (at {self.position})")
        except Exception as e:  # noqa: BLE001
            self._fail(f"unexpected {rpc_text(e)}")
        finally:
            if self.client is not None:
                self.client.close()

    def _snapshot(self) -> None:
        assert self.client is not None
        try:
            offsets, entries = take_snapshot(self.ctx, self.client)
        except (grpc.RpcError, SnapshotError) as e:
            self._fail(f"snapshot: {rpc_text(e)}")
            return
        with self.lock:
            self.model = {key: value for (_p, _o, key, value, _h, _i) in entries if key is not None and value is not None}
        self.snapshot_keys = len(self.model)
        self.snap_offsets = dict(offsets)
        self.position = dict(offsets)
        self.applied = dict(offsets)

    def _session(self, until: float, target: Optional[Dict[int, int]] = None) -> None:
        ctx, a = self.ctx, self.ctx.args
        assert self.client is not None
        if not self.position:
            return
        if target is None and self.rng.random() < 0.5:
            resume = dict(self.applied)  # from the last records applied (offset + 1)
            self.from_records += 1
        else:
            resume = dict(self.position)  # from the last progress (or records, if later)
            self.from_progress += 1
        if a.inject_fault == "duplicate" and self.index == 0 and not self.fault_dup_done:
            moved = [p for p in resume if self.count[p] > 0]
            if moved:
                p = moved[0]
                resume[p] = self.applied[p] - 1  # the last record applied, once more
                self.fault_dup_done = True
                log(f"fault injected: follower 0 resumes partition {p} from {resume[p]}, its last applied record")
        if target is not None and all(self.position[p] >= target.get(p, 0) for p in self.position):
            self.caught_up = True
            return
        self.sessions += 1
        request = gateway_pb2.SubscribeRequest(topics=[ctx.topic], from_offsets=ctx.offsets(resume))
        call = self.client.gateway.Subscribe(request)
        w = ctx.watchdog.watch(call, until, a.stall_seconds, f"follower {self.index}")
        stream_next = dict(resume)  # per partition, the lowest offset this stream may deliver next
        first = True
        try:
            for msg in call:
                w.touch()
                kind = msg.WhichOneof("message")
                if first:
                    first = False
                    if kind != "progress":
                        self._fail(f"the first message of a stream from {resume} is {kind}, not a progress")
                        return
                    got = {o.partition: o.offset for o in msg.progress.offsets if o.topic == ctx.topic}
                    if got != resume or len(msg.progress.offsets) != len(resume):
                        self._fail(f"the first progress {got} is not the start offsets {resume}")
                        return
                if kind == "records":
                    if not self._apply(msg.records.records, stream_next):
                        return
                elif kind == "progress":
                    for o in msg.progress.offsets:
                        p = o.partition
                        if o.topic != ctx.topic or p not in stream_next:
                            self._fail(f"progress for an unknown partition {o.topic}:{p}")
                            return
                        if o.offset < stream_next[p]:
                            self._fail(f"progress {p}:{o.offset} is behind what the stream delivered (next {stream_next[p]})")
                            return
                        stream_next[p] = o.offset
                        if o.offset > self.position[p]:
                            self.position[p] = o.offset
                if target is not None and all(self.position[p] >= target.get(p, 0) for p in self.position):
                    self.caught_up = True
                    w.finish()
                    return
            self._fail(f"a Subscribe stream ended by itself with status OK (from {resume})")
        except grpc.RpcError as e:
            if w.stalled:
                self._fail(f"no message for {a.stall_seconds:.0f} s on a stream from {resume} (at {self.position})")
            elif not (w.ended_by_us() and e.code() == grpc.StatusCode.CANCELLED):
                self._fail(f"Subscribe from {resume}: {rpc_text(e)}")
        finally:
            ctx.watchdog.unwatch(w)
            call.cancel()

    def _apply(self, records, stream_next: Dict[int, int]) -> bool:  # type: ignore[no-untyped-def]
        a = self.ctx.args
        with self.lock:
            for r in records:
                p = r.partition
                if r.topic != self.ctx.topic or p not in stream_next:
                    self._fail(f"a record of an unknown partition {r.topic}:{p}")
                    return False
                if r.offset < stream_next[p]:
                    self._fail(f"record {p}:{r.offset} repeats or goes back: this stream's next offset is {stream_next[p]}")
                    return False
                if r.offset < self.position[p]:
                    self._fail(f"record {p}:{r.offset} duplicates one already applied or passed (position {self.position[p]})")
                    return False
                if not r.HasField("key"):
                    self._fail(f"record {p}:{r.offset} has no key (the producer writes none without)")
                    return False
                stream_next[p] = r.offset + 1
                self.position[p] = r.offset + 1
                self.applied[p] = r.offset + 1
                self.records += 1
                if a.inject_fault == "gap" and self.index == 0 and not self.fault_gap_done and self.records >= 1000:
                    self.fault_gap_done = True
                    log(f"fault injected: follower 0 drops record {p}:{r.offset}")
                    continue
                self.count[p] += 1
                self.offset_sum[p] += r.offset
                if r.HasField("value"):
                    self.model[r.key] = r.value
                else:
                    self.model.pop(r.key, None)
        return True


# ---- snapshots and translators -----------------------------------------------------------------


class Maintenance(threading.Thread):
    """A snapshot every SOAK_SNAPSHOT_SECONDS; a translator cycle every SOAK_TRANSLATOR_SECONDS."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(name="maintenance", daemon=True)
        self.ctx = ctx
        self.snapshots = 0
        self.max_entries = 0
        self.translator_cycles = 0
        self.translated_records = 0
        self.last_offsets: Optional[Dict[int, int]] = None
        self.translators = IDENTITY_WASM.is_file() and ctx.args.translator_seconds > 0

    def run(self) -> None:
        ctx, a = self.ctx, self.ctx.args
        client = ctx.client()
        try:
            next_snapshot = time.monotonic() + a.snapshot_seconds
            next_translator = time.monotonic() + min(10.0, a.translator_seconds)
            while not ctx.churn_over.is_set() and not ctx.verdict.abort.is_set():
                now = time.monotonic()
                if self.translators and now >= next_translator:
                    self._translator_cycle(client)
                    next_translator = time.monotonic() + a.translator_seconds
                elif now >= next_snapshot:
                    self._snapshot(client)
                    next_snapshot = time.monotonic() + a.snapshot_seconds
                ctx.churn_over.wait(max(0.05, min(next_snapshot, next_translator if self.translators else next_snapshot) - time.monotonic()))
        except Exception as e:  # noqa: BLE001
            ctx.verdict.violation(f"snapshots/translators: unexpected {rpc_text(e)}")
        finally:
            client.close()

    def _snapshot(self, client: Client) -> None:
        try:
            offsets, entries = take_snapshot(self.ctx, client)
        except (grpc.RpcError, SnapshotError) as e:
            self.ctx.verdict.violation(f"periodic snapshot: {rpc_text(e)}")
            return
        self.snapshots += 1
        self.max_entries = max(self.max_entries, len(entries))
        if self.last_offsets is not None:
            back = {p: (self.last_offsets[p], o) for p, o in offsets.items() if o < self.last_offsets[p]}
            if back:
                self.ctx.verdict.violation(f"a snapshot's offsets went back (partition: (before, now)): {back}")
        self.last_offsets = offsets

    def _translator_cycle(self, client: Client) -> None:
        """Upload identity.wasm, compare a translated snapshot with a plain one as of the same
        offsets and a translated stream with a plain one from there, delete the translator."""
        ctx, v = self.ctx, self.ctx.verdict
        n = self.translator_cycles + 1
        name = f"soak-identity-{n}"
        try:
            version = client.upload_translator(name, IDENTITY_WASM, timeout=300)
        except Exception as e:  # noqa: BLE001
            v.violation(f"translator cycle {n}: upload: {e}")
            return
        ref = gateway_pb2.TranslatorRef(name=name, digest=version.digest)
        try:
            t_offsets, t_entries = take_snapshot(ctx, client, translator=ref)
            p_offsets, p_entries = take_snapshot(ctx, client, as_of=t_offsets)
            if p_offsets != t_offsets:
                v.violation(f"translator cycle {n}: a snapshot as of {t_offsets} answered offsets {p_offsets}")
                return
            if sorted(t_entries, key=lambda i: i[2] or b"") != sorted(p_entries, key=lambda i: i[2] or b""):
                v.violation(f"translator cycle {n}: the identity translator's snapshot ({len(t_entries)} entries) differs from the plain one as of the same offsets ({len(p_entries)})")
                return
            translated = self._stream(client, t_offsets, ref, until=time.monotonic() + 2.0, upto=None)
            if translated is None:
                return
            upto = {p: items[-1][1] for p, items in translated.items() if items}
            plain = self._stream(client, t_offsets, None, until=time.monotonic() + 60.0, upto=upto)
            if plain is None:
                return
            for p, items in translated.items():
                plain_items = [i for i in plain.get(p, []) if i[1] <= upto.get(p, -1)]
                if items != plain_items:
                    v.violation(f"translator cycle {n}: partition {p}: {len(items)} translated records differ from the {len(plain_items)} plain ones")
                    return
            self.translated_records += sum(len(i) for i in translated.values())
        except (grpc.RpcError, SnapshotError) as e:
            v.violation(f"translator cycle {n}: {rpc_text(e)}")
            return
        finally:
            try:
                deleted = client.translators.Delete(translators_pb2.DeleteTranslatorRequest(name=name), timeout=60)
                if version.digest not in [d.digest for d in deleted.deleted]:
                    v.violation(f"translator cycle {n}: Delete({name}) did not list version {version.digest}")
                listed = client.translators.List(translators_pb2.ListTranslatorsRequest(), timeout=60)
                if name in [t.name for t in listed.translators]:
                    v.violation(f"translator cycle {n}: {name} is still listed after its deletion")
            except grpc.RpcError as e:
                v.violation(f"translator cycle {n}: Delete/List: {rpc_text(e)}")
        self.translator_cycles = n

    def _stream(
        self,
        client: Client,
        start: Dict[int, int],
        ref: Optional[gateway_pb2.TranslatorRef],
        until: float,
        upto: Optional[Dict[int, int]],
    ) -> Optional[Dict[int, List[Item]]]:
        """A Subscribe from ``start``: its records per partition, until ``until`` or (with ``upto``)
        until every partition passed its offset there. None after a violation."""
        ctx = self.ctx
        request = gateway_pb2.SubscribeRequest(topics=[ctx.topic], from_offsets=ctx.offsets(start))
        if ref is not None:
            request.translator.CopyFrom(ref)
        what = "translated" if ref is not None else "plain"
        out: Dict[int, List[Item]] = {p: [] for p in start}
        nxt = dict(start)
        call = client.gateway.Subscribe(request)
        w = ctx.watchdog.watch(call, until, ctx.args.stall_seconds, f"{what} stream")
        try:
            for msg in call:
                w.touch()
                if msg.WhichOneof("message") == "records":
                    for r in msg.records.records:
                        if r.offset < nxt[r.partition]:
                            ctx.verdict.violation(f"{what} stream: record {r.partition}:{r.offset} below {nxt[r.partition]}")
                            return None
                        nxt[r.partition] = r.offset + 1
                        out[r.partition].append(
                            item_of(r.partition, r.offset, r.key if r.HasField("key") else None,
                                    r.value if r.HasField("value") else None, r.headers, r.output_index)
                        )
                else:
                    for o in msg.progress.offsets:
                        nxt[o.partition] = max(nxt[o.partition], o.offset)
                if upto is not None and all(nxt[p] > o for p, o in upto.items()):
                    w.finish()
                    return out
            ctx.verdict.violation(f"{what} stream ended by itself with status OK")
            return None
        except grpc.RpcError as e:
            if w.stalled:
                ctx.verdict.violation(f"{what} stream: no message for {ctx.args.stall_seconds:.0f} s")
                return None
            if w.ended_by_us() and e.code() == grpc.StatusCode.CANCELLED:
                if upto is not None and not w.finished:
                    ctx.verdict.violation(f"{what} stream: did not reach {upto} in time (at {nxt})")
                    return None
                return out
            ctx.verdict.violation(f"{what} stream: {rpc_text(e)}")
            return None
        finally:
            ctx.watchdog.unwatch(w)
            call.cancel()


# ---- the gateway process --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def health_serving(channel: grpc.Channel) -> bool:
    """grpc.health.v1.Health/Check of the whole server, without the grpcio-health-checking package:
    the request is empty, and a SERVING answer is field 1 (status) = 1, encoded 08 01."""
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    try:
        return check(b"", timeout=2) == b"\x08\x01"
    except grpc.RpcError:
        return False


_METRIC = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(url: str) -> Dict[str, List[Tuple[Dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out: Dict[str, List[Tuple[Dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out.setdefault(m.group(1), []).append((dict(_LABEL.findall(m.group(2) or "")), value))
    return out


def metric_sum(metrics: Dict[str, List[Tuple[Dict[str, str], float]]], name: str) -> Optional[float]:
    if name not in metrics:
        return None
    return sum(v for _, v in metrics[name])


def metric_by(metrics: Dict[str, List[Tuple[Dict[str, str], float]]], name: str, label: str) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for labels, v in metrics.get(name, []):
        out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + v
    return out


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the gateway's text log is coloured


class Gateway:
    def __init__(self, binary: str, bootstrap: str, topic: str, workdir: Path) -> None:
        self.binary = binary
        self.bootstrap = bootstrap
        self.topic = topic
        self.dir = workdir
        self.log_path = workdir / "gateway.log"
        self.out_path = workdir / "gateway.out"
        self.proc: Optional[subprocess.Popen] = None
        self.address = ""
        self.metrics_url = ""
        self.exit_code: Optional[int] = None

    def start(self) -> None:
        port, metrics_port = free_port(), free_port()
        env = dict(os.environ)
        env["TRIBUTARY__TRANSLATORS__DATA_DIR"] = str(self.dir / "translators")
        env["TRIBUTARY__METRICS__LISTEN"] = f"127.0.0.1:{metrics_port}"
        cmd = [self.binary, "serve", "--listen", f"127.0.0.1:{port}", "--bootstrap-servers", self.bootstrap, "--topic", self.topic]
        with open(self.out_path, "wb") as out, open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)

        def listening() -> Optional[str]:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.proc.returncode} at start")
            lines = self.out_path.read_text(errors="replace").splitlines()
            if lines:
                if not lines[0].startswith("listening on "):
                    raise RuntimeError(f"unexpected first line of the gateway: {lines[0]!r}")
                return lines[0][len("listening on "):].strip()
            return None

        self.address = str(wait_for(listening, 60, "the gateway's 'listening on' line"))
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        channel = grpc.insecure_channel(self.address)
        try:
            wait_for(lambda: self.alive() and health_serving(channel), 120, "gRPC health SERVING", 0.1)
        finally:
            channel.close()

        def metrics_up() -> bool:
            try:
                return "tributary_view_ready" in scrape(self.metrics_url)
            except OSError:
                return False

        wait_for(metrics_up, 30, f"the metrics endpoint {self.metrics_url}", 0.2)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        if self.proc is None:
            return False
        if self.proc.poll() is not None:
            if self.exit_code is None:
                self.exit_code = self.proc.returncode
            return False
        return True

    def resources(self) -> Tuple[float, int, int, float]:
        """RSS (MiB), open files, threads, CPU seconds (user + system)."""
        rss_kib = 0
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss_kib = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        threads = len(os.listdir(f"/proc/{self.pid}/task"))
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        return rss_kib / 1024.0, fds, threads, cpu

    def stop(self, timeout: float = 30.0) -> Tuple[Optional[int], float, bool]:
        """SIGTERM, then SIGKILL after ``timeout``: (exit code, seconds to exit, killed)."""
        if self.proc is None:
            return None, 0.0, False
        if self.proc.poll() is not None:
            return self.proc.returncode, 0.0, False
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
            return code, time.monotonic() - started, False
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10), time.monotonic() - started, True

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(_ANSI.sub("", l) for l in self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_counts(self) -> Dict[str, int]:
        counts = {"WARN": 0, "ERROR": 0}
        try:
            with open(self.log_path, errors="replace") as f:
                for line in f:
                    line = _ANSI.sub("", line)
                    for level in counts:
                        if f" {level} " in line or f'"level":"{level}"' in line:
                            counts[level] += 1
        except OSError:
            pass
        return counts


# ---- Kafka ----------------------------------------------------------------------------------------


def consumer(bootstrap: str, eof: bool = False) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"tributary-soak-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": eof,
            "isolation.level": "read_committed",
        }
    )


def end_offsets(bootstrap: str, topic: str, partitions: int) -> Dict[int, int]:
    c = consumer(bootstrap)
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(partitions)}
    finally:
        c.close()


@dataclass
class Raw:
    state: Dict[bytes, bytes]
    offsets: Dict[int, "array.array[int]"]  # per partition, the offset of every committed record, ascending
    prefix: Dict[int, List[int]]  # per partition, prefix sums of offsets (prefix[i] = sum of the first i)


def rebuild(bootstrap: str, topic: str, end: Dict[int, int], timeout: float = 300) -> Raw:
    """A raw consumer's state, read_committed from offset 0 to ``end``: latest value per key,
    tombstones delete. Ends on partition EOF (the last offset may be a transaction marker)."""
    c = consumer(bootstrap, eof=True)
    state: Dict[bytes, bytes] = {}
    offsets = {p: array.array("q") for p in end}
    done = {p: end[p] == 0 for p in end}
    try:
        c.assign([TopicPartition(topic, p, 0) for p in end])
        deadline = time.monotonic() + timeout
        while not all(done.values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the raw rebuild did not reach {end} within {timeout:.0f} s")
            for msg in c.consume(1000, 0.5):
                p = msg.partition()
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        if msg.offset() >= end[p]:
                            done[p] = True
                        continue
                    raise KafkaException(msg.error())
                if msg.offset() >= end[p]:
                    done[p] = True
                    continue
                offsets[p].append(msg.offset())
                if msg.key() is None:
                    continue
                if msg.value() is None:
                    state.pop(msg.key(), None)
                else:
                    state[msg.key()] = msg.value()
    finally:
        c.close()
    prefix: Dict[int, List[int]] = {}
    for p, offs in offsets.items():
        s = [0]
        for o in offs:
            s.append(s[-1] + o)
        prefix[p] = s
    return Raw(state, offsets, prefix)


def diff_models(model: Dict[bytes, bytes], raw: Dict[bytes, bytes], limit: int = 5) -> List[str]:
    out: List[str] = []
    for k in sorted(set(model) | set(raw)):
        a, b = model.get(k), raw.get(k)
        if a != b:
            out.append(f"{k!r}: follower {a[:60] if a else a!r} / Kafka {b[:60] if b else b!r}")
            if len(out) >= limit:
                break
    return out


# ---- growth ---------------------------------------------------------------------------------------


def fit(points: List[Tuple[float, float]]) -> Tuple[float, float]:
    """Least-squares line through (t, y): (slope per second, intercept)."""
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return 0.0, my
    slope = sum((t - mt) * (y - my) for t, y in points) / var
    return slope, my - slope * mt


# ---- the run --------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    rss_mib: float
    fds: int
    threads: int
    cpu_seconds: float
    streams: Dict[str, float]
    catchup: Optional[float]
    buffer_bytes: Optional[float]
    translator_instances: Optional[float]
    tasks: Optional[float]


def main() -> int:
    a = parse_args()
    if a.seed:
        random.seed(a.seed)
    verdict = Verdict()
    workdir = Path(tempfile.mkdtemp(prefix="tributary-soak-"))
    topic = f"soak-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    gateway = Gateway(a.bin, a.bootstrap, topic, workdir)
    print(f"soak: {a.seconds:.0f} s, a sample every {a.sample_seconds:.0f} s, {a.rate:.0f} records/s over {a.keys} keys, "
          f"{a.partitions} partitions, {a.followers} followers; topic {topic}; work dir {workdir}", flush=True)
    if a.inject_fault:
        print(f"soak: FAULT INJECTED ({a.inject_fault}): this run must FAIL", flush=True)

    def on_term(_sig, _frame):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    samples: List[Sample] = []
    leaked_channels: List[grpc.Channel] = []
    ctx: Optional[Context] = None
    load: Optional[Load] = None
    followers: List[Follower] = []
    maintenance: Optional[Maintenance] = None
    last_metrics: Dict[str, List[Tuple[Dict[str, str], float]]] = {}
    stop_info: Tuple[Optional[int], float, bool] = (None, 0.0, False)
    run_seconds = 0.0
    topic_created = False
    try:
        futures = admin.create_topics([NewTopic(topic, num_partitions=a.partitions, replication_factor=1)])
        futures[topic].result(60)
        topic_created = True
        wait_for(lambda: len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == a.partitions, 60, "the topic's metadata")

        gateway.start()
        log(f"gateway pid {gateway.pid} on {gateway.address}, metrics {gateway.metrics_url}, log {gateway.log_path}")
        if not IDENTITY_WASM.is_file():
            verdict.note(f"{IDENTITY_WASM} does not exist: no translator activity (build it with scripts/build-translators.sh)")

        watchdog = Watchdog()
        watchdog.start()
        ctx = Context(a, topic, gateway.address, verdict, watchdog)
        ctx.run_started = time.monotonic()
        load = Load(ctx)
        load.start()
        maintenance = Maintenance(ctx)
        maintenance.start()
        # The followers start once there is some state to snapshot, one every half second.
        followers = [Follower(ctx, i) for i in range(a.followers)]
        starting = list(followers)

        # ---- sampling ----
        t0 = ctx.run_started
        end_at = t0 + a.seconds
        next_sample = t0
        next_leak = t0 + 2
        while True:
            now = time.monotonic()
            if not gateway.alive():
                verdict.violation(f"the gateway exited with {gateway.exit_code} during the run")
                break
            if verdict.abort.is_set():
                break
            if starting and now >= t0 + 3 + 0.5 * (len(followers) - len(starting)):
                starting.pop(0).start()
            if a.inject_fault == "fds" and now >= next_leak:
                ch = grpc.insecure_channel(gateway.address, options=[("grpc.use_local_subchannel_pool", 1)])
                health_serving(ch)
                leaked_channels.append(ch)
                next_leak = now + 2
            if now >= next_sample - 1e-6:
                s = take_sample(gateway, now - t0)
                if s is not None:
                    print_sample(s, samples[-1] if samples else None, load, followers)
                    samples.append(s)
                next_sample += a.sample_seconds
            if now >= end_at and next_sample > end_at + 1e-6:
                break
            time.sleep(max(0.01, min(0.25, next_sample - time.monotonic())))
        run_seconds = time.monotonic() - t0
        if not verdict.abort.is_set():
            for f in starting:  # a run too short to start them all
                f.start()
        followers = [f for f in followers if f.ident is not None]

        # ---- the end: stop the churn and the producer, let the followers catch up ----
        log("stopping the producer and the churn; followers catch up to the end offsets")
        ctx.churn_over.set()
        load.stop()
        maintenance.join(300)
        aborted = verdict.abort.is_set()
        if gateway.alive():
            end = end_offsets(a.bootstrap, topic, a.partitions)
            ctx.end_offsets = end
            ctx.end_ready.set()
            for f in followers:
                f.join(240)
                if f.is_alive():
                    verdict.violation(f"follower {f.index} did not finish catching up")
            if not aborted:
                final_checks(ctx, gateway, followers, end, verdict)
            else:
                for f in followers:
                    f.join(5)
        for ch in leaked_channels:
            ch.close()
        leaked_channels.clear()
        if gateway.alive():
            streams_back_to_zero(gateway, verdict)
            try:
                last_metrics = scrape(gateway.metrics_url)
            except OSError as e:
                verdict.check("the metrics endpoint answers at the end", False, str(e))
        stop_info = gateway.stop()
        if stop_info[0] is not None and not stop_info[2]:
            verdict.check("the gateway stops on SIGTERM within 30 s", True, f"exit code {stop_info[0]} after {stop_info[1]:.1f} s")
        elif stop_info[2]:
            verdict.check("the gateway stops on SIGTERM within 30 s", False, "killed with SIGKILL after 30 s")
        judge_growth(a, samples, verdict)
    except KeyboardInterrupt:
        verdict.violation("interrupted")
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        verdict.violation(f"the driver failed: {rpc_text(e)}")
    finally:
        if ctx is not None:
            ctx.churn_over.set()
            ctx.end_ready.set()
        if load is not None and load.is_alive():
            load.stop_event.set()
        for ch in leaked_channels:
            ch.close()
        if gateway.proc is not None and gateway.proc.poll() is None:
            stop_info = gateway.stop(10)
        if topic_created and not a.keep:
            try:
                admin.delete_topics([topic])[topic].result(30)
            except Exception:  # noqa: BLE001
                pass

    report(a, topic, workdir, gateway, verdict, samples, load, followers, maintenance, last_metrics, run_seconds)
    ok = verdict.passed
    if not ok:
        print(f"\n--- gateway log ({gateway.log_path}), last lines:\n{gateway.log_tail()}", flush=True)
    if ok and not a.keep:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    print(f"\nRESULT: {'PASS' if ok else 'FAIL'}" + ("" if ok and not a.keep else f" (work dir kept: {workdir})"), flush=True)
    return 0 if ok else 1


def take_sample(gateway: Gateway, t: float) -> Optional[Sample]:
    try:
        rss, fds, threads, cpu = gateway.resources()
    except OSError:
        return None  # the process just exited: the main loop reports it
    try:
        m = scrape(gateway.metrics_url)
    except OSError:
        m = {}
    return Sample(
        t=t,
        rss_mib=rss,
        fds=fds,
        threads=threads,
        cpu_seconds=cpu,
        streams=metric_by(m, "tributary_streams_open", "kind"),
        catchup=metric_sum(m, "tributary_catchup_readers_in_use"),
        buffer_bytes=metric_sum(m, "tributary_stream_buffer_bytes"),
        translator_instances=metric_sum(m, "tributary_translator_instances"),
        tasks=metric_sum(m, "tributary_runtime_tasks"),
    )


def fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.0f}"


def print_sample(s: Sample, prev: Optional[Sample], load: Optional[Load], followers: List[Follower]) -> None:
    cpu = f"{100 * (s.cpu_seconds - prev.cpu_seconds) / (s.t - prev.t):3.0f}%" if prev is not None and s.t > prev.t else "  -"
    streams = " ".join(f"{k}={v:.0f}" for k, v in sorted(s.streams.items())) or "-"
    produced = load.sent if load is not None else 0
    applied = sum(f.records for f in followers)
    sessions = sum(f.sessions for f in followers)
    log(
        f"sample t={s.t:6.0f}s rss={s.rss_mib:7.1f}MiB fds={s.fds:4d} threads={s.threads:3d} cpu={cpu} "
        f"streams_open[{streams}] catchup_readers={fmt(s.catchup)} stream_buffer={fmt(s.buffer_bytes)}B "
        f"translator_instances={fmt(s.translator_instances)} tasks={fmt(s.tasks)} produced={produced} applied={applied} sessions={sessions}"
    )


def final_checks(ctx: Context, gateway: Gateway, followers: List[Follower], end: Dict[int, int], verdict: Verdict) -> None:
    a = ctx.args
    log(f"end offsets {end}; rebuilding the state from Kafka (read_committed)")
    raw = rebuild(a.bootstrap, ctx.topic, end)
    committed = sum(len(o) for o in raw.offsets.values())
    log(f"raw rebuild: {committed} committed records, {len(raw.state)} keys")
    if a.inject_fault == "model" and followers:
        f = followers[0]
        with f.lock:
            key = next(iter(sorted(f.model)), b"key-corrupted")
            f.model[key] = b'{"corrupted":true}'
        log(f"fault injected: follower 0's model has {key!r} corrupted")

    bad_models, bad_counts, not_caught_up = [], [], []
    for f in followers:
        if not f.caught_up:
            not_caught_up.append(f"follower {f.index} at {f.position}")
            continue
        with f.lock:
            d = diff_models(f.model, raw.state)
        if d:
            differing = sum(1 for k in set(f.model) | set(raw.state) if f.model.get(k) != raw.state.get(k))
            bad_models.append(f"follower {f.index}: {differing} keys differ, e.g. {d}")
        for p in range(a.partitions):
            offs = raw.offsets[p]
            i = bisect.bisect_left(offs, f.snap_offsets[p])
            want_count = len(offs) - i
            want_sum = raw.prefix[p][-1] - raw.prefix[p][i]
            if f.count[p] != want_count or f.offset_sum[p] != want_sum:
                bad_counts.append(
                    f"follower {f.index} partition {p}: applied {f.count[p]} records after its snapshot at {f.snap_offsets[p]}, "
                    f"Kafka has {want_count} (offset sums {f.offset_sum[p]} / {want_sum})"
                )
    verdict.check("every follower caught up with the end offsets", not not_caught_up, "; ".join(not_caught_up))
    verdict.check(
        "every follower's model equals the raw rebuild from Kafka",
        not bad_models and not not_caught_up,
        "; ".join(bad_models) or f"{len(followers)} followers, {len(raw.state)} keys",
    )
    verdict.check(
        "every follower got exactly Kafka's committed records after its snapshot (count and offset sum per partition)",
        not bad_counts and not not_caught_up,
        "; ".join(bad_counts[:8]) or f"{sum(sum(f.count) for f in followers)} records over {len(followers)} followers",
    )

    # The gateway's own snapshot at the end offsets must be the rebuild.
    client = ctx.client()
    try:
        def at_end() -> Optional[Tuple[Dict[int, int], List[Item]]]:
            offsets, entries = take_snapshot(ctx, client)
            return (offsets, entries) if offsets == end else None

        try:
            offsets, entries = wait_for(at_end, 60, "a snapshot at the end offsets", 0.5)  # type: ignore[misc]
            state = {k: v for (_p, _o, k, v, _h, _i) in entries if k is not None and v is not None}
            d = diff_models(state, raw.state)
            verdict.check("a final snapshot at the end offsets equals the raw rebuild", not d, "; ".join(d) or f"{len(state)} keys")
        except (RuntimeError, SnapshotError, grpc.RpcError) as e:
            verdict.check("a final snapshot at the end offsets equals the raw rebuild", False, rpc_text(e))
    finally:
        client.close()


def streams_back_to_zero(gateway: Gateway, verdict: Verdict) -> None:
    """Every client is gone: open streams, catch-up readers and buffered bytes must drop to 0."""
    names = ("tributary_streams_open", "tributary_catchup_readers_in_use", "tributary_stream_buffer_bytes")
    last: Dict[str, Optional[float]] = {}

    def zero() -> bool:
        try:
            m = scrape(gateway.metrics_url)
        except OSError:
            return False
        for n in names:
            last[n] = metric_sum(m, n)
        return all(not v for v in last.values())

    try:
        wait_for(zero, 20, "the stream gauges to drop to 0", 0.5)
        verdict.check("open streams, catch-up readers and stream buffer bytes drop to 0 once clients are gone", True, "")
    except RuntimeError:
        verdict.check(
            "open streams, catch-up readers and stream buffer bytes drop to 0 once clients are gone",
            False,
            f"after 20 s: {last}",
        )


def judge_growth(a: argparse.Namespace, samples: List[Sample], verdict: Verdict) -> None:
    warmup = a.seconds * a.warmup_percent / 100.0
    after = [s for s in samples if s.t >= warmup - 1e-6]
    if len(after) < 4:
        verdict.note(f"too short to judge growth: {len(after)} samples after the warm-up of {warmup:.0f} s (need 4)")
        return
    series = [
        ("rss", "MiB", [(s.t, s.rss_mib) for s in after]),
        ("fds", "", [(s.t, float(s.fds)) for s in after]),
        ("threads", "", [(s.t, float(s.threads)) for s in after]),
    ]
    # The runtime's tasks (tributary_runtime_tasks): streams, connections and background work.
    tasks = [(s.t, s.tasks) for s in after if s.tasks is not None]
    if len(tasks) >= 4:
        series.append(("tasks", "", tasks))
    else:
        verdict.note("tributary_runtime_tasks was not scraped often enough to judge the tasks' growth")
    for name, unit, points in series:
        slope, intercept = fit(points)
        growth = slope * a.seconds
        start = points[0][1]
        per_hour = slope * 3600
        if name == "rss":
            limit = f"> {a.max_rss_growth_mib:g} MiB and > {a.max_rss_growth_percent:g}% of {start:.1f} MiB"
            bad = growth > a.max_rss_growth_mib and growth > start * a.max_rss_growth_percent / 100.0
        else:
            cap = {"fds": a.max_fd_growth, "threads": a.max_thread_growth, "tasks": a.max_task_growth}[name]
            limit = f"> {cap:g}"
            bad = growth > cap
        verdict.check(
            f"{name} does not grow without bound",
            not bad,
            f"slope {per_hour:+.2f}{unit}/h, fitted growth over {a.seconds:.0f} s {growth:+.2f}{unit} "
            f"(fails {limit}; {len(points)} samples after {warmup:.0f} s)",
        )


def report(
    a: argparse.Namespace,
    topic: str,
    workdir: Path,
    gateway: Gateway,
    verdict: Verdict,
    samples: List[Sample],
    load: Optional[Load],
    followers: List[Follower],
    maintenance: Optional[Maintenance],
    metrics: Dict[str, List[Tuple[Dict[str, str], float]]],
    run_seconds: float,
) -> None:
    print("\n===== soak report =====")
    print(f"run: {run_seconds:.0f} s of load (planned {a.seconds:.0f} s), samples every {a.sample_seconds:.0f} s; topic {topic} "
          f"({a.partitions} partitions); binary {a.bin}" + (f"; FAULT INJECTED: {a.inject_fault}" if a.inject_fault else ""))
    if load is not None:
        print(f"load: {load.sent} records produced ({load.tombstones} tombstones) at {a.rate:.0f}/s over {a.keys} keys; "
              + (f"{load.committed_txns} transactions committed, {load.aborted_txns} aborted ({load.aborted_records} records)"
                 if a.transactions else "no transactions"))
    if followers:
        print(f"followers: {len(followers)}; {sum(f.sessions for f in followers)} Subscribe streams "
              f"({sum(f.from_records for f in followers)} resumed from the last record applied, "
              f"{sum(f.from_progress for f in followers)} from the last progress), "
              f"{sum(f.records for f in followers)} records applied, {sum(f.reconnects for f in followers)} reconnects, "
              f"{sum(f.long_pauses for f in followers)} long pauses (behind the tail buffer)")
        for f in followers:
            print(f"  follower {f.index}{' (laggard)' if f.laggard else ''}: snapshot of {f.snapshot_keys} keys at {f.snap_offsets}, "
                  f"{f.sessions} streams, {f.records} records, {len(f.model)} keys at the end, caught up: {f.caught_up}")
    if maintenance is not None:
        print(f"snapshots: {maintenance.snapshots} periodic (up to {maintenance.max_entries} entries); translator cycles: "
              + (f"{maintenance.translator_cycles} (upload, translated snapshot and stream compared with plain ones, "
                 f"{maintenance.translated_records} records, delete)" if maintenance.translators else "none (skipped)"))
    if samples:
        first, last = samples[0], samples[-1]
        peak = max(samples, key=lambda s: s.rss_mib)
        print(f"samples: {len(samples)}; rss {first.rss_mib:.1f} -> {last.rss_mib:.1f} MiB (peak {peak.rss_mib:.1f} at {peak.t:.0f} s), "
              f"fds {first.fds} -> {last.fds} (max {max(s.fds for s in samples)}), "
              f"threads {first.threads} -> {last.threads} (max {max(s.threads for s in samples)}), "
              f"streams open max {max(sum(s.streams.values()) for s in samples):.0f}, "
              f"catch-up readers max {max((s.catchup or 0) for s in samples):.0f}; gateway CPU {last.cpu_seconds:.0f} s "
              f"({100 * (last.cpu_seconds - first.cpu_seconds) / max(1e-9, last.t - first.t):.0f}% of a core over the samples)")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"driver CPU: {usage.ru_utime + usage.ru_stime:.0f} s")
    counts = gateway.log_counts()
    print(f"gateway log: {counts['WARN']} WARN and {counts['ERROR']} ERROR lines ({gateway.log_path})")
    if metrics:
        events = {k: v for k, v in metric_by(metrics, "tributary_events_total", "event").items() if v}
        print(f"gateway events_total: {events or 'none'}")
        codes: Dict[str, float] = {}
        for labels, v in metrics.get("tributary_grpc_requests_total", []):
            key = f"{labels.get('method', '?').split('/')[-1]} {labels.get('code', '?')}"
            codes[key] = codes.get(key, 0.0) + v
        print("gateway gRPC calls: " + ", ".join(f"{k}: {v:.0f}" for k, v in sorted(codes.items())))
        errors = metric_by(metrics, "tributary_translator_errors_total", "reason")
        if any(errors.values()):
            print(f"translator errors: {errors}")
    for n in verdict.notes:
        print(f"note: {n}")
    print("checks:")
    for name, ok, detail in verdict.checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}" + (f": {detail}" if detail else ""))
    if verdict.violations:
        print(f"  FAIL  no violation during the run: {len(verdict.violations)}, the first ones:")
        for v in verdict.violations[:10]:
            print(f"          {v}")
    else:
        print("  PASS  no violation during the run (every record in order, no gap, no duplicate; snapshots, translators and streams as the contract says)")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
