"""The component's exports: the state of one instance (``Runner``) and the class that
componentize-py exports for the interface ``tributary:translator/batch@0.2.0``
(``batch_class``).

Only ``batch_class`` touches componentize-py's runtime (``componentize_py_types.Err``), and only
when called, so everything else runs natively, where its unit tests run.
"""

from __future__ import annotations

from typing import Any, Callable

from .frames import describe, translate_batch
from .model import BatchError


class Runner:
    """The configured translator of one instance (wasm instances are single-threaded).

    ``init`` and ``translate`` raise ``BatchError`` with the message the gateway gets.
    """

    def __init__(self, factory: Callable[[str], Any]) -> None:
        self._factory = factory
        self._translator: Any = None
        self._failure = "init was not called"

    def init(self, config: str) -> None:
        """Builds the translator; a second call replaces it.

        An exception from the factory rejects the configuration: a ``ValueError`` (which
        includes ``json.JSONDecodeError``) or ``BatchError`` with its message alone, which is
        how a translator says what is wrong with the configuration; any other exception, most
        likely a bug, as ``"<ExceptionType>: <message>"``.
        """
        # Drop the previous translator first: a failed init must not leave it in service.
        self._translator = None
        self._failure = "init was not called"
        try:
            translator = self._factory(config)
        except (ValueError, BatchError) as error:
            message = str(error) or describe(error)
        except BaseException as error:  # noqa: BLE001 - anything escaping would trap the instance
            message = describe(error)
        else:
            self._translator = translator
            return
        self._failure = f"init failed: {message}"
        raise BatchError(message)

    def translate(self, data: bytes) -> bytes:
        """The output buffer for the input buffer ``data`` (see ``frames.translate_batch``).

        Before a successful ``init``: ``BatchError("init was not called")``, or
        ``BatchError("init failed: <message>")`` after a failed one.
        """
        if self._translator is None:
            raise BatchError(self._failure)
        try:
            return translate_batch(self._translator, data)
        except BatchError:
            raise
        except BaseException as error:  # noqa: BLE001 - MemoryError, or a bug of the SDK itself
            raise BatchError(describe(error)) from None


class _NativeErr(Exception):
    """Stands in for ``componentize_py_types.Err`` outside a component (unit tests)."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


def batch_class(factory: Callable[[str], Any]) -> type:
    """The class to export as the interface ``batch``: in the app module, write
    ``Batch = batch_class(MyTranslator)``.

    ``factory(config)`` builds the translator (a ``Translator`` subclass, or any callable that
    returns an object with ``translate(record)``). componentize-py may create a ``Batch`` object
    per call, so the instance's state lives in the ``Runner`` shared by the class, also reachable
    as ``Batch.runner``. A result error is raised as ``componentize_py_types.Err(message)``.
    """
    try:
        from componentize_py_types import Err
    except ImportError:
        Err = _NativeErr

    runner = Runner(factory)

    class Batch:
        """``tributary:translator/batch@0.2.0``, backed by ``runner``."""

        def init(self, config: str) -> None:
            try:
                runner.init(config)
            except BatchError as error:
                raise Err(error.message) from None

        def translate(self, input: bytes) -> bytes:
            try:
                return runner.translate(input)
            except BatchError as error:
                raise Err(error.message) from None

    Batch.runner = runner
    return Batch
