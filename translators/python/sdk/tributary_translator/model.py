"""What a translator sees and returns: records, outputs, outcomes, and the translator itself."""

from __future__ import annotations

from typing import Optional, Union

#: A Kafka header: its key and its value (``None``: a null value, not the same as ``b""``).
Header = tuple[str, Optional[bytes]]


class Record:
    """One record of A, as written to Kafka.

    ``key`` is ``None`` for a keyless record (not the same as ``b""``); ``value`` is ``None``
    for a tombstone (A deleted the key). ``timestamp_ms`` is milliseconds since the Unix epoch,
    ``-1`` when unknown. ``headers`` is a list of ``(key, value)`` pairs, in Kafka's order.
    """

    # Slots: one object per input record, so no per-instance dict.
    __slots__ = ("topic", "partition", "offset", "timestamp_ms", "key", "value", "headers")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int,
        key: Optional[bytes],
        value: Optional[bytes],
        headers: list[Header],
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp_ms = timestamp_ms
        self.key = key
        self.value = value
        self.headers = headers

    @property
    def is_tombstone(self) -> bool:
        """Whether A deleted the key (the value is ``None``)."""
        return self.value is None

    def output(self) -> Output:
        """The output with this record's key, value (or tombstone) and headers, not copied."""
        return Output(self.key, self.value, self.headers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in Record.__slots__)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in Record.__slots__)
        return f"Record({fields})"


class Output:
    """One record in B's model. The gateway attaches the topic, partition and offset of the
    input it came from.

    ``key``: ``bytes`` (or ``bytearray``), or ``None`` for a keyless record. ``value``: the
    same, ``None`` being a tombstone (a deletion in B's model). ``headers``: ``(str, bytes or
    None)`` pairs. Nothing is copied before the batch ends: don't change a ``bytearray`` after
    returning it.
    """

    __slots__ = ("key", "value", "headers")

    def __init__(
        self,
        key: Optional[bytes],
        value: Optional[bytes],
        headers: Optional[list[Header]] = None,
    ) -> None:
        self.key = key
        self.value = value
        self.headers = [] if headers is None else headers

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Output):
            return NotImplemented
        return (self.key, self.value, list(self.headers)) == (other.key, other.value, list(other.headers))

    def __repr__(self) -> str:
        return f"Output(key={self.key!r}, value={self.value!r}, headers={self.headers!r})"


class Outcome:
    """What became of one input: outputs (``Outcome.ok``) or an error (``Outcome.err``).

    ``translate`` may also return ``None`` (no output), an ``Output`` (one) or a list of them;
    ``Outcome`` is needed only to return an error with exactly the given message (a raised
    exception reads ``"<ExceptionType>: <message>"``).
    """

    __slots__ = ("outputs", "error")

    def __init__(self, outputs: list[Output], error: Optional[str]) -> None:
        self.outputs = outputs
        self.error = error

    @classmethod
    def ok(cls, outputs: Union[list[Output], tuple[Output, ...]] = ()) -> Outcome:
        """Zero (filter), one (map) or many (flat-map) outputs, in order."""
        return cls(list(outputs), None)

    @classmethod
    def err(cls, message: str) -> Outcome:
        """This record can't be translated; the message says why (the gateway adds the record's
        topic, partition and offset)."""
        return cls([], str(message))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Outcome):
            return NotImplemented
        return (self.outputs, self.error) == (other.outputs, other.error)

    def __repr__(self) -> str:
        if self.error is not None:
            return f"Outcome.err({self.error!r})"
        return f"Outcome.ok({self.outputs!r})"


#: What ``Translator.translate`` may return.
Result = Union[Outcome, Output, list[Output], tuple[Output, ...], None]


class BatchError(Exception):
    """Fails the whole batch with this message when raised from ``translate`` (the gateway
    retries or stops the subscription; prefer an error outcome for one bad record)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Translator:
    """Base class of a translator: configured once, then called for every record.

    ``__init__(config)`` gets the subscriber's configuration string (JSON by convention);
    raising rejects it: the error is the message of a ``ValueError`` or ``BatchError``,
    ``"<ExceptionType>: <message>"`` for any other exception. ``translate(record)`` is called once per
    record, in order, and returns its outcome: ``None`` (filtered out), an ``Output``, a list
    of ``Output`` (flat-map), or an ``Outcome``. An exception raised by ``translate`` becomes
    that record's error, ``"<ExceptionType>: <message>"``; a ``BatchError`` or ``MemoryError``
    fails the whole batch instead.
    """

    def __init__(self, config: str) -> None:
        pass

    def translate(self, record: Record) -> Result:
        raise NotImplementedError(f"{type(self).__name__} does not implement translate")
