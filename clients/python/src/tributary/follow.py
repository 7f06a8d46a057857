"""The follow helper (clients/FOLLOW.md): A's state, then every change after it, with no gap and
no duplicate, across B's restarts, gateway restarts and retention."""

from __future__ import annotations

import logging
import random
import threading
import time
from contextlib import closing
from typing import Any, Callable, Iterator, List, Optional, Protocol, Sequence, runtime_checkable

import grpc

from tributary.client import Client
from tributary.errors import TributaryError, from_rpc_error
from tributary.store import MemoryStore, Store
from tributary.types import Change, KeyFilter, Position, RecordFilter, Translator
from tributary.v1 import gateway_pb2, subscriptions_pb2

__all__ = ["Follower", "Handler"]

log = logging.getLogger("tributary")

_RESUME_FALLBACK = {
    (grpc.StatusCode.FAILED_PRECONDITION, "NO_COMMITTED_POSITION"),
    (grpc.StatusCode.NOT_FOUND, "UNKNOWN_SUBSCRIPTION"),
}
_BACKOFF_MULTIPLIER = 2.0
_COMMIT_TIMEOUT_S = 10.0


@runtime_checkable
class Handler(Protocol):
    """The application that follows A's state."""

    def reset(self) -> None:
        """Forget all state: a snapshot follows."""
        ...

    def apply(self, changes: List[Change], position: Optional[Position]) -> None:
        """Apply ``changes`` in order. ``position`` is where the follow stands once they are
        applied (``None`` while a snapshot is still arriving)."""
        ...


class _Stopped(Exception):
    """Internal: stop() was called."""


class _StreamEnded(Exception):
    """Internal: a stream ended without a status."""


def _retryable(error: TributaryError) -> bool:
    code, reason = error.code, error.reason
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return True
    if code == grpc.StatusCode.ABORTED:
        return reason != "SUBSCRIPTION_TAKEN_OVER"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return reason == "LIMIT_REACHED"
    if code == grpc.StatusCode.INTERNAL:
        # A reset stream (no gateway details); the gateway's own INTERNAL errors are fatal.
        return not reason
    return False


class Follower:
    """Follows ``topics`` through a gateway into ``handler``, keeping its position in ``store``.

    ``run()`` blocks until ``stop()`` (then returns ``None``) or a fatal error (then raises
    ``TributaryError``; an exception raised by the handler or the store is raised as it is).
    Retryable errors (``UNAVAILABLE``, ``ABORTED``, ...) are passed to ``on_error`` and retried
    after a jittered exponential backoff (``backoff_initial`` to ``backoff_max`` seconds); so are
    failed commits of a named subscription, which are retried at the next save.
    """

    def __init__(
        self,
        client: Client,
        topics: Sequence[str],
        handler: Handler,
        store: Optional[Store] = None,
        translator: Optional[Translator] = None,
        key_filter: Optional[KeyFilter] = None,
        subscription_name: Optional[str] = None,
        max_batch_records: int = 0,
        commit_interval: float = 1.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 10.0,
        on_error: Optional[Callable[[BaseException], None]] = None,
        record_filter: Optional[RecordFilter] = None,
        conflate: bool = False,
    ) -> None:
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        self._client = client
        self._topics = list(topics)
        self._handler = handler
        self._store: Store = store if store is not None else MemoryStore()
        self._translator = translator
        self._key_filter = key_filter
        self._record_filter = record_filter
        self._conflate = conflate
        self._name = subscription_name or ""
        self._max_batch_records = max_batch_records
        self._commit_interval = commit_interval
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._on_error = on_error

        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._call: Optional[Any] = None  # the stream being read, cancelled by stop()
        self._running = False
        self._position: Optional[Position] = None  # the last saved position
        self._committed: Optional[Position] = None  # the last position the gateway holds for the name
        self._last_commit = float("-inf")
        self._got_message = False
        self._resnapshot = False  # after OUT_OF_RANGE: a snapshot, even with a name

    # ---- public ----------------------------------------------------------------------------

    @property
    def position(self) -> Optional[Position]:
        """The last saved position (a copy), or ``None``."""
        position = self._position
        return Position(position) if position is not None else None

    def stop(self) -> None:
        """Ends ``run()`` cleanly after the batch being applied (thread-safe, idempotent)."""
        self._stop.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()

    def run(self) -> None:
        """Follows until :meth:`stop` or a fatal error (see the class documentation)."""
        with self._lock:
            if self._running:
                raise RuntimeError("this follower is already running")
            self._running = True
        try:
            self._run()
        finally:
            with self._lock:
                self._running = False
                self._call = None

    # ---- the algorithm -----------------------------------------------------------------------

    def _run(self) -> None:
        self._position = self._store.load()  # step 1
        backoff = self._backoff_initial
        while not self._stop.is_set():
            self._got_message = False
            try:
                self._session()
            except _Stopped:
                break
            except TributaryError as error:
                if self._stop.is_set() and error.code == grpc.StatusCode.CANCELLED:
                    break
                if error.code == grpc.StatusCode.OUT_OF_RANGE:  # step 5: re-snapshot
                    self._report(error)
                    self._store.clear()
                    self._position = None
                    self._resnapshot = True
                    if self._got_message:
                        backoff = self._backoff_initial
                    else:  # no hot loop if the snapshot's offsets are already gone too
                        backoff = self._wait(backoff)
                    continue
                if not _retryable(error):
                    raise  # no final commit: e.g. a follower that took the name over owns it now
                self._report(error)
                if self._got_message:
                    backoff = self._backoff_initial
                backoff = self._wait(backoff)
            except _StreamEnded:
                self._report(TributaryError(grpc.StatusCode.UNAVAILABLE, "the stream ended without a status"))
                if self._got_message:
                    backoff = self._backoff_initial
                backoff = self._wait(backoff)
        self._final_commit()  # step 6

    def _session(self) -> None:
        """One try: steps 2 and 3-4 until an error (raised) or stop()."""
        if self._position is None and self._name and not self._resnapshot:
            try:
                self._subscribe(None)  # resume by name from the committed position
                return
            except TributaryError as error:
                if (error.code, error.reason) not in _RESUME_FALLBACK:
                    raise
                log.info("subscription %s has no committed position: taking a snapshot", self._name)
        if self._position is None:
            self._snapshot()
        self._subscribe(self._position)

    def _snapshot(self) -> None:
        """Step 2: the state, then its position saved."""
        request = gateway_pb2.GetSnapshotRequest(topics=self._topics)
        if self._key_filter is not None:
            request.key_filter.CopyFrom(self._key_filter.to_proto())
        if self._record_filter is not None:
            request.record_filter.CopyFrom(self._record_filter.to_proto())
        if self._translator is not None:
            request.translator.CopyFrom(self._translator.to_proto())
        first: Optional[Position] = None
        # closing(): a handler that raises must not leave the stream open until the traceback goes.
        with closing(self._stream(self._client.gateway.GetSnapshot(request))) as chunks:
            for chunk in chunks:
                if first is None:
                    first = Position.from_offsets(chunk.offsets)
                    self._handler.reset()
                    self._store.clear()
                self._handler.apply([Change.from_entry(e) for e in chunk.entries], None)
                if chunk.last:
                    self._save(first, commit=False)
                    self._resnapshot = False
                    return
                if self._stop.is_set():
                    raise _Stopped()
        raise _StreamEnded()

    def _subscribe(self, position: Optional[Position]) -> None:
        """Steps 3 and 4: every record after ``position`` (with a name and no position: after the
        committed one)."""
        request = gateway_pb2.SubscribeRequest(
            topics=self._topics,
            max_batch_records=self._max_batch_records,
            subscription_name=self._name,
            conflate=self._conflate,
        )
        if position is not None:
            request.from_offsets.extend(position.to_offsets())
        if self._key_filter is not None:
            request.key_filter.CopyFrom(self._key_filter.to_proto())
        if self._record_filter is not None:
            request.record_filter.CopyFrom(self._record_filter.to_proto())
        if self._translator is not None:
            request.translator.CopyFrom(self._translator.to_proto())
        with closing(self._stream(self._client.gateway.Subscribe(request))) as messages:
            self._follow(messages, position)
        raise _StreamEnded()

    def _follow(self, messages: Iterator[gateway_pb2.SubscribeResponse], position: Optional[Position]) -> None:
        """Step 4 for each message of a Subscribe stream that started at ``position``."""
        started = False
        for message in messages:
            if not started:
                started = True
                if self._name and position is not None:
                    # The gateway recorded these offsets as the subscription's committed start.
                    self._committed = Position(position)
            kind = message.WhichOneof("message")
            if kind == "records":
                records = message.records.records
                nxt = Position(self._position or {})
                for record in records:
                    nxt[(record.topic, record.partition)] = record.offset + 1
                self._handler.apply([Change.from_record(r) for r in records], nxt)
                self._save(nxt)
            elif kind == "progress":
                progress = Position.from_offsets(message.progress.offsets)
                if self._position is None and self._name and position is None:
                    # A resumed named stream's first progress is its committed start.
                    self._committed = Position(progress)
                nxt = Position(self._position or {}).merged(progress)
                if nxt != self._position:
                    self._save(nxt)
                else:
                    self._maybe_commit(force=False)
            if self._stop.is_set():
                raise _Stopped()

    def _stream(self, call: Any) -> Iterator[Any]:
        """Iterates a server stream, cancellable by stop(); errors become ``TributaryError``."""
        with self._lock:
            self._call = call
        if self._stop.is_set():
            call.cancel()
            raise _Stopped()
        try:
            for message in call:
                self._got_message = True
                yield message
        except grpc.RpcError as e:
            if self._stop.is_set() and e.code() == grpc.StatusCode.CANCELLED:
                raise _Stopped() from None
            raise from_rpc_error(e) from None
        finally:
            call.cancel()
            with self._lock:
                self._call = None

    def _save(self, position: Position, commit: bool = True) -> None:
        self._store.save(position)
        self._position = position
        if commit:
            self._maybe_commit(force=False)

    def _maybe_commit(self, force: bool) -> None:
        """Commits the saved position under the name, at most once per commit_interval."""
        position = self._position
        if not self._name or position is None or position == self._committed:
            return
        now = time.monotonic()
        if not force and now - self._last_commit < self._commit_interval:
            return
        self._last_commit = now
        request = subscriptions_pb2.CommitRequest(name=self._name, offsets=position.to_offsets())
        try:
            self._client.subscriptions.Commit(request, timeout=_COMMIT_TIMEOUT_S)
        except grpc.RpcError as e:
            error = from_rpc_error(e)
            log.warning("commit of subscription %s failed (retried at the next save): %s", self._name, error)
            self._report(error)
            return
        self._committed = Position(position)

    def _final_commit(self) -> None:
        try:
            self._maybe_commit(force=True)
        except Exception as e:  # never hide the error that stopped the follow
            log.warning("final commit failed: %s", e)

    def _wait(self, backoff: float) -> float:
        """Sleeps a full-jitter backoff (interrupted by stop()); returns the next one."""
        self._stop.wait(random.uniform(0, backoff))
        return min(self._backoff_max, backoff * _BACKOFF_MULTIPLIER)

    def _report(self, error: BaseException) -> None:
        log.info("follow: %s", error)
        if self._on_error is not None:
            try:
                self._on_error(error)
            except Exception:
                log.exception("on_error raised")
