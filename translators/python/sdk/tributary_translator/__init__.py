"""Write a Tributary translator in Python (contract v2, ``tributary:translator/batch@0.2.0``).

The SDK reads and writes the batch's frames (``translators/wit/FRAMES.md``); a translator sees
one ``Record`` at a time::

    from tributary_translator import Output, Record, Translator, batch_class

    class Upper(Translator):
        def __init__(self, config: str) -> None:  # raise ValueError("...") to reject it
            self.prefix = config.encode()

        def translate(self, record: Record) -> Output | None:
            if record.value is None:
                return record.output()  # a tombstone passes unchanged
            return Output(record.key, self.prefix + record.value.upper(), record.headers)

    Batch = batch_class(Upper)  # what componentize-py exports for the interface `batch`

See ``translators/python/README.md`` for the outcomes, the error semantics and the build.
"""

from .export import Runner, batch_class
from .frames import MalformedInput, decode, describe, translate_batch
from .model import BatchError, Header, Outcome, Output, Record, Result, Translator

__all__ = [
    "BatchError",
    "Header",
    "MalformedInput",
    "Outcome",
    "Output",
    "Record",
    "Result",
    "Runner",
    "Translator",
    "batch_class",
    "decode",
    "describe",
    "translate_batch",
]
