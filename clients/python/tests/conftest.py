"""Fixtures: a real gateway binary, a real Kafka, random topics, and a recording handler."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tributary import Change, Client, Position
from tributary.v1 import gateway_pb2

REPO = Path(__file__).resolve().parents[3]
BIN = os.environ.get("TRIBUTARY_BIN") or str(REPO / "target" / "debug" / "tributary")
BOOTSTRAP = os.environ.get("TRIBUTARY_TEST_BOOTSTRAP") or "127.0.0.1:9092"
TRANSLATORS = REPO / "translators" / "dist"


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """Polls ``condition`` until it returns something truthy; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---- Kafka -------------------------------------------------------------------------------------


class Kafka:
    def __init__(self) -> None:
        self.admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        self.producer = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "linger.ms": 5})
        self.created: List[str] = []

    def topic(self, partitions: int = 1, prefix: str = "py") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        futures = self.admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        futures[name].result(30)
        self.created.append(name)
        wait_for(
            lambda: len(self.admin.list_topics(name, timeout=5).topics[name].partitions) == partitions,
            20,
            f"topic {name} metadata",
        )
        return name

    def produce(
        self,
        topic: str,
        records: Sequence[Tuple[Optional[bytes], Optional[bytes]]],
        partition: Optional[int] = None,
    ) -> None:
        errors: List[object] = []

        def delivered(err: object, _msg: object) -> None:
            if err is not None:
                errors.append(err)

        for key, value in records:
            kwargs = {} if partition is None else {"partition": partition}
            self.producer.produce(topic, key=key, value=value, on_delivery=delivered, **kwargs)
            self.producer.poll(0)
        assert self.producer.flush(30) == 0, "records not delivered"
        assert not errors, errors

    def high_watermarks(self, topic: str) -> Position:
        consumer = self._consumer()
        try:
            partitions = self.admin.list_topics(topic, timeout=10).topics[topic].partitions
            out = Position()
            for p in partitions:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                out[(topic, p)] = high
            return out
        finally:
            consumer.close()

    def rebuild(self, topic: str) -> Dict[bytes, bytes]:
        """A raw consumer's state, read from offset 0: last value per key, tombstones removed."""
        end = self.high_watermarks(topic)
        consumer = self._consumer()
        state: Dict[bytes, bytes] = {}
        try:
            consumer.assign([TopicPartition(t, p, 0) for (t, p) in end])
            at = {tp: 0 for tp in end}
            deadline = time.monotonic() + 30
            while any(at[tp] < end[tp] for tp in end):
                assert time.monotonic() < deadline, "rebuild timed out"
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                assert msg.error() is None, msg.error()
                at[(msg.topic(), msg.partition())] = msg.offset() + 1
                if msg.key() is None:
                    continue
                if msg.value() is None:
                    state.pop(msg.key(), None)
                else:
                    state[msg.key()] = msg.value()
        finally:
            consumer.close()
        return state

    def delete_records(self, topic: str, partition: int, before: int) -> None:
        futures = self.admin.delete_records([TopicPartition(topic, partition, before)])
        for f in futures.values():
            f.result(30)

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": BOOTSTRAP,
                "group.id": f"py-test-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )

    def cleanup(self) -> None:
        if self.created:
            for f in self.admin.delete_topics(self.created).values():
                try:
                    f.result(30)
                except Exception:
                    pass


@pytest.fixture(scope="session")
def kafka() -> Iterator[Kafka]:
    k = Kafka()
    try:
        k.admin.list_topics(timeout=10)
    except Exception as e:  # pragma: no cover
        pytest.fail(f"Kafka at {BOOTSTRAP} is not reachable ({e}); start it with scripts/kafka.sh start")
    yield k
    k.cleanup()


# ---- the gateway --------------------------------------------------------------------------------


def toml_str(value: str) -> str:
    return json.dumps(value)


class Gateway:
    """The real gateway binary with a temporary configuration."""

    def __init__(
        self,
        topics: Sequence[str],
        extra: str = "",
        workdir: Optional[Path] = None,
        env: Optional[Dict[str, str]] = None,
    ) -> None:
        assert Path(BIN).is_file(), f"gateway binary {BIN} not found: build it or set TRIBUTARY_BIN"
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="trib-py-"))
        self.topics = list(topics)
        self.extra = extra
        self.env = dict(env or {})
        self.port = 0
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.runs = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Gateway":
        config = self.dir / "tributary.toml"
        config.write_text(
            "\n".join(
                [
                    f"listen = {toml_str(f'127.0.0.1:{self.port}')}",
                    "[kafka]",
                    f"bootstrap_servers = {toml_str(BOOTSTRAP)}",
                    f"topics = {json.dumps(self.topics)}",
                    "metadata_refresh_ms = 1000",
                    "[translators]",
                    f"data_dir = {toml_str(str(self.dir / 'translators'))}",
                    "[limits]",
                    "progress_interval_ms = 200",
                    self.extra,
                    "",
                ]
            )
        )
        self.runs += 1
        out = self.dir / f"stdout.{self.runs}"
        err = self.dir / f"stderr.{self.runs}"
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        env.update(self.env)
        with open(out, "wb") as o, open(err, "wb") as e:
            self.proc = subprocess.Popen([BIN, "serve", "--config", str(config)], stdout=o, stderr=e, env=env)

        def listening() -> Optional[str]:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}: {err.read_text()[-3000:]}")
            for line in out.read_text().splitlines():
                if line.startswith("listening on "):
                    return line[len("listening on ") :].strip()
            return None

        address = str(wait_for(listening, 30, "the gateway to listen"))
        self.port = int(address.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """kill -9: no goodbye to Kafka's group coordinator or to the clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stderr(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(self.dir.glob("stderr.*")))


def wait_ready(client: Client, topics: Sequence[str], timeout: float = 30.0) -> gateway_pb2.DescribeTopicsResponse:
    def ready() -> Optional[gateway_pb2.DescribeTopicsResponse]:
        try:
            r = client.gateway.DescribeTopics(gateway_pb2.DescribeTopicsRequest(topics=list(topics)), timeout=5)
        except Exception:
            return None
        return r if r.ready else None

    return wait_for(ready, timeout, f"the gateway to be ready for {list(topics)}", 0.1)  # type: ignore[return-value]


@pytest.fixture
def gateway_factory() -> Iterator[Callable[..., Gateway]]:
    """Starts gateways; stops them at the end of the test."""
    started: List[Gateway] = []

    def make(topics: Sequence[str], extra: str = "", env: Optional[Dict[str, str]] = None) -> Gateway:
        g = Gateway(topics, extra, env=env).start()
        started.append(g)
        return g

    yield make
    for g in started:
        g.stop()


@pytest.fixture
def connect(gateway_factory: Callable[..., Gateway]) -> Iterator[Callable[..., Client]]:
    """Opens clients; closes them before the gateways stop (an open connection slows a stop)."""
    opened: List[Client] = []

    def make(target: str, **kwargs: object) -> Client:
        c = Client(target, **kwargs)  # type: ignore[arg-type]
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


# ---- a handler that records everything ---------------------------------------------------------


class Recorder:
    """A handler keeping A's state as a dict and every call it got."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state: Dict[bytes, bytes] = {}
        self.resets = 0
        self.snapshot_changes: List[Change] = []
        self.stream_changes: List[Change] = []
        self.positions: List[Optional[Position]] = []

    def reset(self) -> None:
        with self.lock:
            self.resets += 1
            self.state.clear()

    def apply(self, changes: List[Change], position: Optional[Position]) -> None:
        with self.lock:
            for c in changes:
                (self.snapshot_changes if c.snapshot else self.stream_changes).append(c)
                if c.key is None:
                    continue
                if c.value is None:
                    self.state.pop(c.key, None)
                else:
                    self.state[c.key] = c.value
            self.positions.append(Position(position) if position is not None else None)

    def snapshot_state(self) -> Dict[bytes, bytes]:
        with self.lock:
            return dict(self.state)

    def streamed_offsets(self) -> List[Tuple[str, int, int]]:
        with self.lock:
            return [(c.topic, c.partition, c.offset) for c in self.stream_changes]


class Running:
    """A follower running in a thread."""

    def __init__(self, follower) -> None:  # type: ignore[no-untyped-def]
        self.follower = follower
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.follower.run()
        except BaseException as e:  # noqa: BLE001 - reported by stop()/join()
            self.error = e

    def reached(self, end: Position) -> bool:
        if self.error is not None:
            raise AssertionError(f"the follower failed: {self.error!r}")
        position = self.follower.position
        return position is not None and all(position.get(tp, -1) >= o for tp, o in end.items())

    def stop(self, timeout: float = 20.0) -> None:
        self.follower.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the follower did not stop"
        if self.error is not None:
            raise self.error

    def join(self, timeout: float = 20.0) -> Optional[BaseException]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the follower did not end"
        return self.error


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
