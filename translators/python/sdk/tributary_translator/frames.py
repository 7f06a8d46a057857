"""The frames of ``tributary:translator/batch@0.2.0`` (``translators/wit/FRAMES.md``): input
buffer to ``Record`` objects, outcomes to the output buffer.

Written for CPython's speed: precompiled ``struct.Struct`` objects read and write each fixed part
in one call, the topic table is decoded once per batch, and the output is a list of byte strings
joined once at the end (one copy; an output value that many records share is not copied until
then, and never twice).
"""

from __future__ import annotations

import struct

from .model import BatchError, Outcome, Output, Record

#: A length meaning "absent": a keyless record, a tombstone, a null header value.
NONE = 0xFFFF_FFFF

_U32 = struct.Struct("<I")
# topic_index, partition, offset, timestamp_ms, key_len, value_len, header_count: 36 bytes.
_RECORD = struct.Struct("<IiqqIII")
# A header's key_len, value_len.
_HEADER = struct.Struct("<II")
# An ok outcome's tag and output_count.
_OK = struct.Struct("<BI")
# An out_record's key_len, value_len, header_count.
_OUT = struct.Struct("<III")
# The commonest outcome, ok with exactly one record, in a single pack: tag, count, out_record's
# fixed part.
_OK_ONE = struct.Struct("<BIIII")
_ERR = struct.Struct("<BI")

_OK_NONE = _OK.pack(0, 0)


class MalformedInput(BatchError):
    """The input buffer does not follow FRAMES.md: the batch fails rather than misreading it."""

    def __init__(self, what: str, at: int) -> None:
        super().__init__(f"the translator's input is malformed: {what}, at byte {at}")


def decode(data: bytes) -> list[Record]:
    """The records of an input buffer, all checked before the first is translated.

    Raises ``MalformedInput`` naming what is wrong and where.
    """
    if type(data) is not bytes:
        data = bytes(data)
    size = len(data)
    unpack_u32 = _U32.unpack_from
    unpack_record = _RECORD.unpack_from
    unpack_header = _HEADER.unpack_from
    # What is being read, for the error message: a constant per stage (formatting a name per
    # record would cost more than reading it), with the indices below.
    stage = "the topic count"
    pos = index = h = 0
    topics: list[str] = []
    try:
        (topic_count,) = unpack_u32(data, 0)
        pos = 4
        for _ in range(topic_count):
            stage = "topic"
            (length,) = unpack_u32(data, pos)
            end = pos + 4 + length
            if end > size:
                raise _malformed("runs past the end", stage, topics, index, h, pos)
            topics.append(data[pos + 4 : end].decode())
            pos = end
        topic_count = len(topics)

        stage = "the record count"
        (record_count,) = unpack_u32(data, pos)
        pos += 4
        records: list[Record] = []
        append = records.append
        for index in range(record_count):
            stage = "record"
            start = pos
            topic, partition, offset, timestamp, key_len, value_len, header_count = unpack_record(data, pos)
            pos += 36
            if topic >= topic_count:
                raise _malformed(f"names topic {topic} of {topic_count}", stage, topics, index, h, start)
            if key_len == NONE:
                key = None
            else:
                end = pos + key_len
                if end > size:
                    raise _malformed("has a key that runs past the end", stage, topics, index, h, start)
                key = data[pos:end]
                pos = end
            if value_len == NONE:
                value = None
            else:
                end = pos + value_len
                if end > size:
                    raise _malformed("has a value that runs past the end", stage, topics, index, h, start)
                value = data[pos:end]
                pos = end
            headers = []
            for h in range(header_count):
                stage = "header"
                name_len, header_len = unpack_header(data, pos)
                end = pos + 8 + name_len
                # NONE (no key) is also past the end of any buffer a u32 can measure.
                if end > size:
                    raise _malformed("has a key that runs past the end", stage, topics, index, h, pos)
                name = data[pos + 8 : end].decode()
                pos = end
                if header_len == NONE:
                    headers.append((name, None))
                else:
                    end = pos + header_len
                    if end > size:
                        raise _malformed("has a value that runs past the end", stage, topics, index, h, pos)
                    headers.append((name, data[pos:end]))
                    pos = end
            append(Record(topics[topic], partition, offset, timestamp, key, value, headers))
    except struct.error:
        raise _malformed("is cut short", stage, topics, index, h, pos) from None
    except UnicodeDecodeError:
        raise _malformed("has a name that is not UTF-8", stage, topics, index, h, pos) from None
    if pos != size:
        raise MalformedInput(f"{size - pos} bytes left over after the last record", pos)
    return records


def _malformed(problem: str, stage: str, topics: list, index: int, h: int, at: int) -> MalformedInput:
    if stage == "topic":
        stage = f"topic {len(topics)}"
    elif stage == "record":
        stage = f"record {index}"
    elif stage == "header":
        stage = f"header {h} of record {index}"
    return MalformedInput(f"{stage} {problem}", at)


def describe(error: BaseException) -> str:
    """``"<ExceptionType>: <message>"``, or the type alone when the message is empty."""
    message = str(error)
    name = type(error).__name__
    return f"{name}: {message}" if message else name


def translate_batch(translator, data: bytes) -> bytes:
    """Decodes ``data``, calls ``translator.translate`` on each record in order, and returns the
    outcomes as an output buffer.

    An exception from ``translate`` (or a result of the wrong type) becomes that record's error
    outcome, ``describe(exception)``. ``BatchError`` and ``MemoryError`` are not caught: they
    fail the batch.
    """
    records = decode(data)
    parts = [_U32.pack(len(records))]
    append = parts.append
    translate = translator.translate
    pack_ok_one = _OK_ONE.pack
    pack_ok = _OK.pack
    pack_out = _OUT.pack
    for record in records:
        # Where this record's outcome starts: an error half-way through its outputs removes them.
        mark = len(parts)
        try:
            result = translate(record)
            if result is None:
                append(_OK_NONE)
                continue
            if type(result) is Output:
                outputs = (result,)
            elif type(result) is list or type(result) is tuple:
                outputs = result
            elif isinstance(result, Outcome):
                if result.error is not None:
                    _append_error(append, result.error)
                    continue
                outputs = result.outputs
            elif isinstance(result, Output):
                outputs = (result,)
            else:
                raise TypeError(
                    f"translate returned {type(result).__name__}; expected None, an Output, "
                    "a list of Output or an Outcome"
                )
            single = len(outputs) == 1
            if not single:
                append(pack_ok(0, len(outputs)))
            for output in outputs:
                if not isinstance(output, Output):
                    raise TypeError(f"translate returned {type(output).__name__} among its outputs; expected Output")
                key = output.key
                value = output.value
                headers = output.headers
                if key is None:
                    key_len = NONE
                elif type(key) is bytes:
                    key_len = len(key)
                else:
                    key_len = _other_len(key, "an output key")
                if value is None:
                    value_len = NONE
                elif type(value) is bytes:
                    value_len = len(value)
                else:
                    value_len = _other_len(value, "an output value")
                if single:
                    append(pack_ok_one(0, 1, key_len, value_len, len(headers)))
                else:
                    append(pack_out(key_len, value_len, len(headers)))
                if key is not None:
                    append(key)
                if value is not None:
                    append(value)
                if headers:
                    _append_headers(append, headers)
        except (BatchError, MemoryError):
            raise
        except Exception as error:
            del parts[mark:]
            _append_error(append, describe(error))
    return b"".join(parts)


def _other_len(data: object, what: str) -> int:
    if isinstance(data, bytearray):
        return len(data)
    raise TypeError(f"{what} is {type(data).__name__}; expected bytes, bytearray or None")


def _append_headers(append, headers) -> None:
    pack = _HEADER.pack
    for name, value in headers:
        if type(name) is not str:
            raise TypeError(f"a header key is {type(name).__name__}; expected str")
        encoded = name.encode()
        if value is None:
            append(pack(len(encoded), NONE))
            append(encoded)
        else:
            value_len = len(value) if type(value) is bytes else _other_len(value, "a header value")
            append(pack(len(encoded), value_len))
            append(encoded)
            append(value)


def _append_error(append, message: str) -> None:
    # "replace": a message holding lone surrogates (possible in Python strings) must still be
    # valid UTF-8, or the gateway fails the whole batch as malformed.
    encoded = str(message).encode("utf-8", "replace")
    append(_ERR.pack(1, len(encoded)))
    append(encoded)
