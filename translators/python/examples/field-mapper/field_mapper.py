"""Renames and drops fields of JSON-object values, and prefixes keys: the Python twin of
``translators/examples/field-mapper`` (same configuration, same outputs, same errors).

Configuration (JSON; every field optional, unknown fields rejected; an empty string is ``{}``)::

    {"rename": {"station": "location", "id": "assignment_id"}, "drop": ["version"], "key_prefix": "b/"}

- ``rename``: old field name -> new field name. Two fields may not get the same new name.
  Swapping names (``{"a": "b", "b": "a"}``) is fine.
- ``drop``: fields to remove (by their name in A's record). A field can't be both renamed and
  dropped.
- ``key_prefix``: prepended to every key; a keyless record stays keyless.

Each value must be a JSON object; the output is that object with the fields renamed and dropped,
as compact JSON with its fields in name order, every value written again as serde_json writes
it. The Rust example copies each field's value as A wrote it instead (faster), so the two agree
byte for byte when A writes its values that way (compact, as serde_json does). A tombstone stays a tombstone (with the prefixed key); headers pass through. A value that
is not a JSON object, or in which a new name collides with a field kept under its own name, is
an error for that record. Only the text of JSON parse errors differs from Rust's (Python's
parser words them differently); the prefix ``record value is not a JSON object: `` is the same.

This module holds the logic; ``app.py`` (contract v2, through the SDK) and ``app_v1.py`` (the
``translator`` world) export it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Optional

from tributary_translator import Outcome, Output, Record, Translator

_FIELDS = ("rename", "drop", "key_prefix")


class FieldMapper(Translator):
    def __init__(self, config: str) -> None:
        rename, drop, key_prefix = _parse_config(config)
        targets: dict[str, str] = {}
        # Sorted like Rust's BTreeMap, so that both name the same pair in their errors.
        for old in sorted(rename):
            new = rename[old]
            if old in drop:
                raise ValueError(f"invalid configuration: field {_quote(old)} is both renamed and dropped")
            if new in targets:
                raise ValueError(
                    f"invalid configuration: fields {_quote(targets[new])} and {_quote(old)} "
                    f"are both renamed to {_quote(new)}"
                )
            targets[new] = old
        self.rename = rename
        self.drop = drop
        self.key_prefix = key_prefix.encode()

    def translate(self, record: Record) -> Output | Outcome:
        value = record.value
        if value is not None:
            try:
                value = self.map_value(value)
            except MappingError as error:
                return Outcome.err(str(error))
        return Output(self.map_key(record.key), value, record.headers)

    def map_key(self, key: Optional[bytes]) -> Optional[bytes]:
        if key is None or not self.key_prefix:
            return key
        return self.key_prefix + key

    def map_value(self, value: bytes) -> bytes:
        """The mapped JSON object; ``MappingError`` with the record's error message otherwise."""
        global _exponent_floats
        _exponent_floats = False
        if value.count(b"[") + value.count(b"{") > _MAX_DEPTH and _too_deep(value):
            raise MappingError("record value is not a JSON object: recursion limit exceeded")
        try:
            # Decoded first: json.loads would also guess UTF-16 and UTF-32, serde_json reads
            # UTF-8 only.
            parsed = _DECODER.decode(value.decode())
        except (ValueError, RecursionError) as error:
            raise MappingError(f"record value is not a JSON object: {error}") from None
        if type(parsed) is not dict:
            raise MappingError(f"record value is not a JSON object: found {_kind(parsed)}")
        drop = self.drop
        rename = self.rename
        out = {}
        # In name order, as serde_json's map iterates, so a collision names the same field.
        for name in sorted(parsed):
            if name in drop:
                continue
            new_name = rename.get(name, name)
            if new_name in out:
                # Rename targets are distinct (checked by __init__), so one of the two is a field
                # renamed to the name of a field that is kept.
                raise MappingError(
                    f"field {_quote(new_name)} would appear twice: the record has it and another "
                    "field is renamed to it"
                )
            out[new_name] = parsed[name]
        if _exponent_floats:
            return _dump_serde(out).encode()
        try:
            return _ENCODER.encode(out).encode()
        except UnicodeEncodeError as error:
            # A lone surrogate written as an escape (\ud800) parses in Python, not in serde_json.
            raise MappingError(f"record value is not a JSON object: {error}") from None


# serde_json's nesting limit (its remaining_depth of 128 reaches 0 on the 128th level). It also
# protects the instance: CPython's C parser recurses once per level and, in wasm, a few thousand
# levels exhaust the stack, a trap that kills the instance (no RecursionError there).
_MAX_DEPTH = 127
# A JSON string (skipped whole: brackets inside it don't nest) or a bracket.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _too_deep(value: bytes) -> bool:
    """Whether brackets nest deeper than ``_MAX_DEPTH`` (called only when there are enough
    brackets for that: counting them is much cheaper than this scan)."""
    depth = 0
    for token in _TOKENS.finditer(value):
        bracket = token[0]
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > _MAX_DEPTH:
                return True
        elif bracket in (b"]", b"}"):
            depth -= 1
    return False


class MappingError(ValueError):
    """A record the mapper can't map; the message is the record's error."""


def _parse_config(config: str) -> tuple[dict[str, str], frozenset[str], str]:
    if not config.strip():
        return {}, frozenset(), ""
    try:
        parsed = json.loads(config)
    except ValueError as error:
        raise ValueError(f"invalid configuration: {error}") from None
    if type(parsed) is not dict:
        raise ValueError(f"invalid configuration: expected a JSON object, found {_kind(parsed)}")
    for name in parsed:
        if name not in _FIELDS:
            raise ValueError(
                f"invalid configuration: unknown field `{name}`, expected one of `rename`, `drop`, `key_prefix`"
            )
    rename = parsed.get("rename", {})
    if type(rename) is not dict or not all(type(v) is str for v in rename.values()):
        raise ValueError("invalid configuration: `rename` must be an object of strings")
    drop = parsed.get("drop", [])
    if type(drop) is not list or not all(type(v) is str for v in drop):
        raise ValueError("invalid configuration: `drop` must be an array of strings")
    key_prefix = parsed.get("key_prefix", "")
    if type(key_prefix) is not str:
        raise ValueError("invalid configuration: `key_prefix` must be a string")
    return rename, frozenset(drop), key_prefix


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if type(value) is bool:
        return "a boolean"
    if type(value) in (int, float):
        return "a number"
    if type(value) is str:
        return "a string"
    if type(value) is list:
        return "an array"
    return "an object"


def _quote(name: str) -> str:
    """A name as Rust's ``{:?}`` shows it (for the names configurations use)."""
    return json.dumps(name, ensure_ascii=False)


# Number handling, as serde_json (default features) does it: integers that fit an i64 or a u64
# stay integers, others become floats; a number out of the f64 range is an error; NaN and
# Infinity are not JSON. Floats are written by serde_json (ryu) in another layout than Python's
# repr when the exponent is large or small (1e+16 vs 1e16, 1e-05 vs 0.00001): the parser flags
# such floats so that only those values take the slower serde-compatible writer.
_exponent_floats = False


def _parse_int(text: str) -> int | float:
    number = int(text)
    if -(1 << 63) <= number < (1 << 64):
        return number
    return _parse_float(text)


def _parse_float(text: str) -> float:
    global _exponent_floats
    number = float(text)
    if math.isinf(number):
        raise ValueError("number out of range")
    if "e" in repr(number):
        _exponent_floats = True
    return number


def _reject_constant(name: str) -> None:
    raise ValueError(f"expected value, found {name}")


# Made once: json.loads and json.dumps with options build a decoder or encoder on every call.
_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float, parse_constant=_reject_constant)
# serde_json's compact output: UTF-8 (not \u escapes), no spaces, names sorted (BTreeMap).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _dump_serde(value: object) -> str:
    """Compact JSON as serde_json writes it: keys sorted, floats in ryu's layout."""
    if type(value) is float:
        return _ryu(value)
    if type(value) is dict:
        return "{" + ",".join(f"{_quote(k)}:{_dump_serde(value[k])}" for k in sorted(value)) + "}"
    if type(value) is list:
        return "[" + ",".join(_dump_serde(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _ryu(number: float) -> str:
    """The shortest round-trip digits (Python's repr has the same) in ryu's layout."""
    text = repr(number)
    if "e" not in text:
        return text
    sign = "-" if text.startswith("-") else ""
    mantissa, exponent = text.lstrip("-").split("e")
    digits = mantissa.replace(".", "")
    point = int(exponent) + 1  # digits before the decimal point ("kk" in ryu)
    k = point - len(digits)  # exponent of the last digit
    if 0 <= k and point <= 16:
        return f"{sign}{digits}{'0' * k}.0"
    if 0 < point <= 16:
        return f"{sign}{digits[:point]}.{digits[point:]}"
    if -5 < point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if len(digits) == 1:
        return f"{sign}{digits}e{point - 1}"
    return f"{sign}{digits[0]}.{digits[1:]}e{point - 1}"
