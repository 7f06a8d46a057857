"""Hostile translators for the gateway's tests, in one component (compiling a Python component
is slow), through the SDK (contract v2). ``init(config)`` picks the behaviour:

- ``"bad"`` or empty: a value containing ``bad`` is that record's error ``value contains "bad"``;
  other records pass unchanged.
- ``"raise"``: ``translate`` raises ``ValueError("boom")``: every record's error is
  ``ValueError: boom`` (the SDK's exception semantics).
- ``"crash"``: ``translate`` raises ``BatchError``: the whole batch fails with
  ``crash: the whole batch fails``.
- ``"malformed"``: the output buffer claims one outcome more than it holds: the gateway must
  refuse it as malformed.
- ``"loop"``: ``translate`` loops forever: the gateway's deadline must stop it.
- ``"memory"``: ``translate`` keeps 1 MiB blocks until memory runs out: the gateway's memory cap
  refuses a grow, CPython raises ``MemoryError`` and the SDK fails the batch with ``MemoryError``.
- ``"huge"`` or ``"huge <bytes per input> [<bytes per record>]"``: every input yields that many
  bytes of values (default 32 MiB as 32 records of 1 MiB, keys ``huge/0``...) that all share one
  buffer: the gateway's output cap (16 MiB by default) must refuse them. Not 64 MiB as the Rust
  ``huge-output``: a Python guest holds its output twice, the buffer the SDK joins and the copy
  the canonical ABI lowers, so 64 MiB can't fit 128 MiB of memory (the lowering's allocation
  fails, a trap). Send one record per batch for the same reason.
- ``"reject"``: ``init`` fails with ``configuration rejected: reject``.

Any other configuration fails ``init``, naming the modes.
"""

from tributary_translator import BatchError, Outcome, Output, Record, Translator, batch_class

_MODES = ("bad", "raise", "crash", "malformed", "loop", "memory", "huge", "reject")

# The mode of the instance's translator, which the exported class reads for "malformed".
_mode = None


class Hostile(Translator):
    def __init__(self, config: str) -> None:
        global _mode
        _mode = None
        words = config.split()
        mode = words[0] if words else "bad"
        if mode not in _MODES or len(words) > 1 and mode != "huge":
            raise ValueError(f"unknown hostile mode {config!r}: expected one of {', '.join(_MODES)}")
        if mode == "reject":
            raise ValueError("configuration rejected: reject")
        if mode == "huge":
            self._huge_setup(words[1:])
        _mode = mode
        # Bound once here rather than dispatched on every record.
        self.translate = getattr(self, f"_{mode}")

    def _bad(self, record: Record) -> Output | Outcome:
        if record.value is not None and b"bad" in record.value:
            return Outcome.err('value contains "bad"')
        return record.output()

    def _raise(self, record: Record) -> None:
        raise ValueError("boom")

    def _crash(self, record: Record) -> None:
        raise BatchError("crash: the whole batch fails")

    def _malformed(self, record: Record) -> Output:
        return record.output()

    def _loop(self, record: Record) -> None:
        while True:
            pass

    def _memory(self, record: Record) -> None:
        hoard = []
        while True:
            hoard.append(bytearray(1 << 20))

    def _huge_setup(self, numbers: list[str]) -> None:
        try:
            sizes = [int(n) for n in numbers]
        except ValueError:
            sizes = []
        total = sizes[0] if sizes else 32 << 20
        size = sizes[1] if len(sizes) > 1 else min(1 << 20, total)
        if numbers and not sizes or len(sizes) > 2 or not 0 < size <= total:
            raise ValueError(
                "huge: expected '<bytes per input> [<bytes per record>]' with 0 < record <= input, "
                f"got {' '.join(numbers)!r}"
            )
        # One buffer that every output refers to: the guest holds it once, the output has it
        # total // size times.
        chunk = b"h" * size
        self._outputs = [Output(b"huge/%d" % i, chunk) for i in range(total // size)]
        if total % size:
            self._outputs.append(Output(b"huge/%d" % len(self._outputs), chunk[: total % size]))

    def _huge(self, record: Record) -> list[Output]:
        return self._outputs


_Batch = batch_class(Hostile)


class Batch(_Batch):
    def translate(self, input: bytes) -> bytes:
        output = super().translate(input)
        if _mode != "malformed":
            return output
        # The outcome count is the first u32: one more than there are outcomes.
        return (int.from_bytes(output[:4], "little") + 1).to_bytes(4, "little") + output[4:]
