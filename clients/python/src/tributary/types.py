"""The follow helper's values: positions, changes, translator references, key and record filters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from tributary.v1 import gateway_pb2

__all__ = ["Position", "Change", "Header", "Translator", "KeyFilter", "RecordFilter", "HeaderCondition", "FieldCondition"]

#: One header of a record: its key and its value (``None`` for a null header, not the same as b"").
Header = Tuple[str, Optional[bytes]]


class Position(Dict[Tuple[str, int], int]):
    """For every ``(topic, partition)``, the *next* offset to apply.

    Exactly what ``SubscribeRequest.from_offsets``, ``SnapshotChunk.offsets`` and ``Progress``
    carry. Offsets are not contiguous: use the offsets the gateway gives, never ``offset + 1``
    except for the record just applied.
    """

    def to_offsets(self) -> List[gateway_pb2.PartitionOffset]:
        """The position as ``PartitionOffset`` messages, sorted by topic and partition."""
        return [
            gateway_pb2.PartitionOffset(topic=topic, partition=partition, offset=offset)
            for (topic, partition), offset in sorted(self.items())
        ]

    @classmethod
    def from_offsets(cls, offsets: Iterable[gateway_pb2.PartitionOffset]) -> "Position":
        """A position from ``PartitionOffset`` messages (a later entry for a partition wins)."""
        return cls(((o.topic, o.partition), o.offset) for o in offsets)

    def merged(self, other: Mapping[Tuple[str, int], int]) -> "Position":
        """A new position: this one with every partition of ``other`` set to ``other``'s offset."""
        out = Position(self)
        out.update(other)
        return out

    def to_json(self) -> List[Dict[str, Union[str, int]]]:
        """A JSON-friendly list of ``{"topic", "partition", "offset"}`` objects."""
        return [
            {"topic": topic, "partition": partition, "offset": offset}
            for (topic, partition), offset in sorted(self.items())
        ]

    @classmethod
    def from_json(cls, items: Iterable[Mapping[str, object]]) -> "Position":
        """The inverse of :meth:`to_json`."""
        out = cls()
        for item in items:
            topic, partition, offset = item["topic"], item["partition"], item["offset"]
            if not isinstance(topic, str) or not isinstance(partition, int) or not isinstance(offset, int):
                raise ValueError(f"not a partition offset: {item!r}")
            out[(topic, partition)] = offset
        return out

    def __repr__(self) -> str:
        inner = ", ".join(f"{t}:{p}={o}" for (t, p), o in sorted(self.items()))
        return f"Position({{{inner}}})"


@dataclass(frozen=True)
class Change:
    """One snapshot entry or one streamed record.

    ``key`` is ``None`` for a keyless record; ``value`` is ``None`` for a tombstone (delete the
    key). ``output_index`` tells several outputs of one translated record apart. ``snapshot`` is
    true for entries of a snapshot.
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: List[Header] = field(default_factory=list)
    output_index: int = 0
    snapshot: bool = False

    @classmethod
    def from_record(cls, record: gateway_pb2.Record) -> "Change":
        """A change from a streamed ``Record``."""
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp_ms,
            key=record.key if record.HasField("key") else None,
            value=record.value if record.HasField("value") else None,
            headers=_headers(record.headers),
            output_index=record.output_index,
            snapshot=False,
        )

    @classmethod
    def from_entry(cls, entry: gateway_pb2.SnapshotEntry) -> "Change":
        """A change from a ``SnapshotEntry`` (always keyed, never a tombstone)."""
        return cls(
            topic=entry.topic,
            partition=entry.partition,
            offset=entry.offset,
            timestamp_ms=entry.timestamp_ms,
            key=entry.key,
            value=entry.value,
            headers=_headers(entry.headers),
            output_index=entry.output_index,
            snapshot=True,
        )


def _headers(headers: Iterable[gateway_pb2.Header]) -> List[Header]:
    return [(h.key, h.value if h.HasField("value") else None) for h in headers]


@dataclass(frozen=True)
class Translator:
    """Which of B's translators to apply, and its configuration (``TranslatorRef``).

    ``digest`` pins a version (empty: the latest); ``config`` is passed to the translator's
    ``init``; with ``skip_errors`` records whose translation returns an error are skipped.
    """

    name: str
    digest: str = ""
    config: str = ""
    skip_errors: bool = False

    def to_proto(self) -> gateway_pb2.TranslatorRef:
        return gateway_pb2.TranslatorRef(
            name=self.name, digest=self.digest, config=self.config, skip_errors=self.skip_errors
        )


def _as_bytes(value: Union[bytes, str]) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


@dataclass(frozen=True)
class KeyFilter:
    """Only keys equal to one of ``exact`` or starting with one of ``prefixes`` (str is UTF-8)."""

    exact: Sequence[Union[bytes, str]] = ()
    prefixes: Sequence[Union[bytes, str]] = ()

    def to_proto(self) -> gateway_pb2.KeyFilter:
        return gateway_pb2.KeyFilter(
            exact=[_as_bytes(k) for k in self.exact], prefixes=[_as_bytes(p) for p in self.prefixes]
        )


def _values(name: str, values: object) -> None:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} takes a list of values, not one value: {values!r}")


@dataclass(frozen=True)
class HeaderCondition:
    """A header ``key`` is present (any value, null included) when ``any_of`` is empty, else one
    occurrence of it has one of these values, byte for byte (str is UTF-8)."""

    key: str
    any_of: Sequence[Union[bytes, str]] = ()

    def __post_init__(self) -> None:
        _values("HeaderCondition.any_of", self.any_of)

    def to_proto(self) -> gateway_pb2.HeaderCondition:
        return gateway_pb2.HeaderCondition(key=self.key, any_of=[_as_bytes(v) for v in self.any_of])


@dataclass(frozen=True)
class FieldCondition:
    """The value read as JSON has a field at ``pointer`` (a JSON Pointer: ``"/status"``,
    ``"/owner/id"``; ``""`` is the whole value), present (null included) when ``any_of`` is empty,
    else equal to one of these JSON texts: ``['"open"']`` (a string, with its quotes), ``["42"]``,
    ``["true"]``, ``["null"]``."""

    pointer: str
    any_of: Sequence[str] = ()

    def __post_init__(self) -> None:
        _values("FieldCondition.any_of", self.any_of)

    def to_proto(self) -> gateway_pb2.FieldCondition:
        return gateway_pb2.FieldCondition(pointer=self.pointer, any_of=list(self.any_of))


@dataclass(frozen=True)
class RecordFilter:
    """Only records that meet every condition (``RecordFilter`` in the proto, docs/contract.md).

    With ``tombstone_mismatches`` a streamed keyed record that fails is delivered as a tombstone of
    its key, so the model holds exactly the keys whose latest record matches; without it, it is
    left out and a key whose value leaves the selection keeps its last matching value.
    """

    headers: Sequence[HeaderCondition] = ()
    fields: Sequence[FieldCondition] = ()
    tombstone_mismatches: bool = False

    def to_proto(self) -> gateway_pb2.RecordFilter:
        return gateway_pb2.RecordFilter(
            headers=[h.to_proto() for h in self.headers],
            fields=[f.to_proto() for f in self.fields],
            tombstone_mismatches=self.tombstone_mismatches,
        )
