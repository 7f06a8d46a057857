"""Following a sharded fleet (clients/FOLLOW.md, "Sharded fleets"): each partition from the
replica that holds it, merged into one follow with one handler and one store."""

from __future__ import annotations

import queue
import random
import threading
import time
from contextlib import closing
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import grpc

from tributary.client import Client
from tributary.errors import TributaryError, from_rpc_error
from tributary.follow import Follower, Handler, _retryable, _Stopped, _StreamEnded
from tributary.store import Store
from tributary.types import Change, Position
from tributary.v1 import gateway_pb2

__all__ = ["FleetFollower"]

Partition = Tuple[str, int]

_TOPOLOGY_TIMEOUT_S = 10.0
_POLL_S = 0.2
_QUEUE_SIZE = 64


def _by_owner(
    topology: gateway_pb2.GetTopologyResponse, wanted: Set[Partition]
) -> Tuple[Dict[str, Set[Partition]], Set[Partition]]:
    """Groups ``wanted`` by owner; those no replica holds (moving, or unknown) come back apart."""
    owners: Dict[str, Set[Partition]] = {}
    unowned = set(wanted)
    for p in topology.partitions:
        key = (p.topic, p.partition)
        if not p.moving and p.owner and key in unowned:
            unowned.discard(key)
            owners.setdefault(p.owner, set()).add(key)
    return owners, unowned


def _merge_disjoint(merged: Position, part: Position) -> Optional[Partition]:
    """Adds one owner's snapshot offsets; returns a partition already there (it moved) instead."""
    for key in part:
        if key in merged:
            return key
    merged.update(part)
    return None


def _moved(error: TributaryError) -> bool:
    return error.code == grpc.StatusCode.FAILED_PRECONDITION and error.reason == "PARTITION_NOT_HELD"


class _FleetStream:
    """One Subscribe open on one replica, read by a thread into the follow's queue."""

    def __init__(self, sid: int, owner: str, partitions: Set[Partition]) -> None:
        self.sid = sid
        self.owner = owner
        self.partitions = partitions
        self.call: Optional[Any] = None
        self.dead = threading.Event()
        self.delivered = False

    def cancel(self) -> None:
        self.dead.set()
        call = self.call
        if call is not None:
            call.cancel()


class FleetFollower(Follower):
    """Follows ``topics`` through the fleet reached at ``seeds`` (``host:port`` addresses).

    Same handler, store and options as :class:`Follower`; ``token``, ``root_certificates``,
    ``certificate_chain``, ``private_key``, ``server_name`` and ``tls`` apply to every connection
    (or give ``connect``, a function from an address to a :class:`Client`). A gateway without
    sharding is followed exactly as :class:`Follower` does. On a sharded fleet: one snapshot per
    owner merged into one reset, then one stream per owner, applied one batch at a time with the
    whole merged position; a partition that moves is followed to its new owner from its own
    offset, with no reset. A ``subscription_name`` on a sharded fleet raises ``INVALID_ARGUMENT``.
    Call :meth:`close` (or use it as a context manager) to close the connections.
    """

    def __init__(
        self,
        seeds: Sequence[str],
        topics: Sequence[str],
        handler: Handler,
        store: Optional[Store] = None,
        *,
        connect: Optional[Callable[[str], Client]] = None,
        token: Optional[str] = None,
        root_certificates: Optional[bytes] = None,
        certificate_chain: Optional[bytes] = None,
        private_key: Optional[bytes] = None,
        server_name: Optional[str] = None,
        tls: Optional[bool] = None,
        **options: Any,
    ) -> None:
        seeds = [seeds] if isinstance(seeds, str) else list(seeds)
        if not seeds:
            raise ValueError("a fleet needs at least one seed address")
        super().__init__(None, topics, handler, store, **options)  # type: ignore[arg-type]
        self._seeds: List[str] = seeds
        if connect is None:

            def connect(address: str) -> Client:
                return Client(
                    address,
                    token=token,
                    root_certificates=root_certificates,
                    certificate_chain=certificate_chain,
                    private_key=private_key,
                    server_name=server_name,
                    tls=tls,
                )

        self._connect = connect
        self._clients: Dict[str, Client] = {}
        self._live: Dict[int, _FleetStream] = {}

    # ---- public ----------------------------------------------------------------------------

    def stop(self) -> None:
        super().stop()
        with self._lock:
            streams = list(self._live.values())
        for s in streams:
            s.cancel()

    def close(self) -> None:
        """Closes every connection the follow opened (after :meth:`run` returned)."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> "FleetFollower":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the fleet -------------------------------------------------------------------------

    def _client_for(self, address: str) -> Client:
        client = self._clients.get(address)
        if client is None:
            # Channels connect lazily: a replica that is down is an UNAVAILABLE call later.
            client = self._connect(address)
            self._clients[address] = client
        return client

    def _topology(self) -> Tuple[str, gateway_pb2.GetTopologyResponse]:
        """The topology from the first seed or known replica that answers, with its address."""
        addresses = list(self._seeds) + [a for a in self._clients if a not in self._seeds]
        last = TributaryError(grpc.StatusCode.UNAVAILABLE, "no replica answered GetTopology")
        request = gateway_pb2.GetTopologyRequest(topics=self._topics)
        for address in addresses:
            if self._stop.is_set():
                raise _Stopped()
            try:
                return address, self._client_for(address).gateway.GetTopology(request, timeout=_TOPOLOGY_TIMEOUT_S)
            except grpc.RpcError as e:
                error = from_rpc_error(e)
                if error.code == grpc.StatusCode.UNIMPLEMENTED:
                    # A gateway older than sharding holds every partition.
                    return address, gateway_pb2.GetTopologyResponse()
                last = error
        raise last

    # ---- the algorithm -----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self._backoff_initial
        while True:  # step 1: the topology, from any replica
            if self._stop.is_set():
                return
            try:
                address, topology = self._topology()
                break
            except _Stopped:
                return
            except TributaryError as error:
                if not _retryable(error):
                    raise
                self._report(error)
                backoff = self._wait(backoff)
        if not topology.sharded:
            self._client = self._client_for(address)
            super()._run()  # exactly the follow of one gateway
            return
        if self._name:
            raise TributaryError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "a named subscription cannot follow a sharded fleet: the store keeps the position",
            )
        self._position = self._store.load()
        self._run_sharded(topology)

    def _run_sharded(self, topology: Optional[gateway_pb2.GetTopologyResponse]) -> None:
        backoff = self._backoff_initial
        while not self._stop.is_set():
            self._got_message = False
            try:
                if topology is None:
                    topology = self._topology()[1]
                if self._position is None:
                    self._fleet_snapshot(topology)
                self._fleet_stream(topology)
                return
            except _Stopped:
                return
            except TributaryError as error:
                if self._stop.is_set() and error.code == grpc.StatusCode.CANCELLED:
                    return
                if error.code == grpc.StatusCode.OUT_OF_RANGE:  # a new snapshot replaces the state
                    self._store.clear()
                    self._position = None
                elif not (_retryable(error) or _moved(error)):
                    raise
                self._report(error)
            except _StreamEnded:
                self._report(TributaryError(grpc.StatusCode.UNAVAILABLE, "a stream ended without a status"))
            if self._got_message:
                backoff = self._backoff_initial
            backoff = self._wait(backoff)
            topology = None

    def _fleet_snapshot(self, topology: gateway_pb2.GetTopologyResponse) -> None:
        """Step 2: one snapshot per owner into one reset; the position is the union of their
        offsets, which must name every partition of the topology exactly once."""
        wanted = {(p.topic, p.partition) for p in topology.partitions}
        owners, unowned = _by_owner(topology, wanted)
        if unowned:
            raise TributaryError(grpc.StatusCode.UNAVAILABLE, f"partitions {sorted(unowned)} have no owner yet")
        request = gateway_pb2.GetSnapshotRequest(topics=self._topics)
        if self._key_filter is not None:
            request.key_filter.CopyFrom(self._key_filter.to_proto())
        if self._record_filter is not None:
            request.record_filter.CopyFrom(self._record_filter.to_proto())
        if self._translator is not None:
            request.translator.CopyFrom(self._translator.to_proto())
        merged = Position()
        first = True
        for owner in sorted(owners):
            offsets: Optional[Position] = None
            client = self._client_for(owner)
            with closing(self._stream(client.gateway.GetSnapshot(request))) as chunks:
                for chunk in chunks:
                    if offsets is None:
                        offsets = Position.from_offsets(chunk.offsets)
                        if first:  # one reset, before the first owner's first chunk
                            first = False
                            self._position = None
                            self._handler.reset()
                            self._store.clear()
                    self._handler.apply([Change.from_entry(e) for e in chunk.entries], None)
                    if chunk.last:
                        break
                    if self._stop.is_set():
                        raise _Stopped()
                else:
                    raise _StreamEnded()
            assert offsets is not None
            twice = _merge_disjoint(merged, offsets)
            if twice is not None:
                raise TributaryError(grpc.StatusCode.UNAVAILABLE, f"partition {twice} moved during the snapshot")
        if set(merged) != wanted:
            raise TributaryError(
                grpc.StatusCode.UNAVAILABLE,
                "partitions moved during the snapshot: the owners' snapshots do not cover the topics",
            )
        self._save(merged, commit=False)

    def _subscribe_request(self, group: Set[Partition]) -> gateway_pb2.SubscribeRequest:
        position = self._position or Position()
        request = gateway_pb2.SubscribeRequest(max_batch_records=self._max_batch_records, conflate=self._conflate)
        request.from_offsets.extend(
            gateway_pb2.PartitionOffset(topic=t, partition=p, offset=position.get((t, p), 0))
            for (t, p) in sorted(group)
        )
        if self._key_filter is not None:
            request.key_filter.CopyFrom(self._key_filter.to_proto())
        if self._record_filter is not None:
            request.record_filter.CopyFrom(self._record_filter.to_proto())
        if self._translator is not None:
            request.translator.CopyFrom(self._translator.to_proto())
        return request

    def _read(self, stream: _FleetStream, client: Client, request: gateway_pb2.SubscribeRequest, events: "queue.Queue[Any]") -> None:
        """A stream's thread: its messages into ``events``, then how it ended."""

        def put(event: Tuple[str, int, Any]) -> bool:
            while not stream.dead.is_set():
                try:
                    events.put(event, timeout=_POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        end: Optional[TributaryError] = None
        try:
            call = client.gateway.Subscribe(request)
            stream.call = call
            if stream.dead.is_set():
                call.cancel()
                return
            for message in call:
                if not put(("message", stream.sid, message)):
                    call.cancel()
                    return
        except grpc.RpcError as e:
            end = from_rpc_error(e)
        except Exception as e:  # never lose a stream silently
            end = TributaryError(grpc.StatusCode.UNAVAILABLE, f"stream failed: {e!r}")
        put(("end", stream.sid, end))

    def _route_wait(self, delay: float) -> Tuple[float, float]:
        """(seconds to wait, next delay): full jitter, growing."""
        return random.uniform(0, delay), min(self._backoff_max, delay * 2.0)

    def _fleet_stream(self, topology: gateway_pb2.GetTopologyResponse) -> None:
        """Steps 3 to 5: one stream per owner from the position; the partitions of a stream that
        ends are routed again (after a backoff) to whoever holds them then. Returns on stop();
        raises OUT_OF_RANGE and fatal errors."""
        assert self._position is not None
        events: "queue.Queue[Any]" = queue.Queue(maxsize=_QUEUE_SIZE)
        pending: Set[Partition] = set(self._position)
        current: Optional[gateway_pb2.GetTopologyResponse] = topology
        next_id = 0
        retry_at: Optional[float] = time.monotonic()
        route_delay = self._backoff_initial
        try:
            while True:
                if self._stop.is_set():
                    raise _Stopped()
                now = time.monotonic()
                if retry_at is not None and now >= retry_at:
                    retry_at = None
                    if current is None:
                        try:
                            current = self._topology()[1]
                        except TributaryError as error:
                            if not _retryable(error):
                                raise
                            self._report(error)
                    if current is not None:
                        owners, unowned = _by_owner(current, pending)
                        for owner, group in owners.items():
                            # One stream per replica: a Subscribe also reads the replica's
                            # partitions it does not list (from their start), so the one there
                            # now ends and the new one takes its partitions on at the position.
                            with self._lock:
                                there = [s for s in self._live.values() if s.owner == owner]
                                for s in there:
                                    del self._live[s.sid]
                            for s in there:
                                s.cancel()
                                group |= s.partitions
                            stream = _FleetStream(next_id, owner, group)
                            next_id += 1
                            request = self._subscribe_request(group)
                            client = self._client_for(owner)
                            with self._lock:
                                self._live[stream.sid] = stream
                            threading.Thread(
                                target=self._read,
                                args=(stream, client, request, events),
                                name=f"tributary-fleet-{owner}",
                                daemon=True,
                            ).start()
                        pending = unowned
                    current = None
                    if pending:
                        wait, route_delay = self._route_wait(route_delay)
                        retry_at = time.monotonic() + wait
                timeout = _POLL_S if retry_at is None else max(0.0, min(_POLL_S, retry_at - time.monotonic()))
                try:
                    kind, sid, payload = events.get(timeout=timeout)
                except queue.Empty:
                    continue
                with self._lock:
                    stream = self._live.get(sid)
                if stream is None:
                    continue  # a stream ended meanwhile: its successor reads it again
                if kind == "message":
                    if not stream.delivered:
                        stream.delivered = True
                        route_delay = self._backoff_initial
                    self._got_message = True
                    self._apply(stream.partitions, payload)
                else:
                    with self._lock:
                        del self._live[sid]
                    error = payload or TributaryError(grpc.StatusCode.UNAVAILABLE, "a stream ended without a status")
                    if not (_retryable(error) or _moved(error)):
                        raise error  # OUT_OF_RANGE (a new snapshot) or a refusal: the caller decides
                    self._report(error)
                    pending |= stream.partitions
                    if retry_at is None:
                        wait, route_delay = self._route_wait(route_delay)
                        retry_at = time.monotonic() + wait
        finally:
            with self._lock:
                streams = list(self._live.values())
                self._live.clear()
            for s in streams:
                s.cancel()

    def _apply(self, held: Set[Partition], message: gateway_pb2.SubscribeResponse) -> None:
        """Step 4: one message of a stream following ``held``; other partitions are dropped."""
        nxt = Position(self._position or {})
        kind = message.WhichOneof("message")
        if kind == "records":
            records = [r for r in message.records.records if (r.topic, r.partition) in held]
            if not records:
                return
            for r in records:
                nxt[(r.topic, r.partition)] = r.offset + 1
            self._handler.apply([Change.from_record(r) for r in records], nxt)
        elif kind == "progress":
            for o in message.progress.offsets:
                if (o.topic, o.partition) in held:
                    nxt[(o.topic, o.partition)] = o.offset
        else:
            return
        if nxt != self._position:
            self._save(nxt, commit=False)

