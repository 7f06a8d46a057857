"""Where a follower keeps its position: the ``Store`` protocol and two stores."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from typing import Optional, Protocol, Union, runtime_checkable


from tributary.types import Position

__all__ = ["Store", "MemoryStore", "FileStore"]


@runtime_checkable
class Store(Protocol):
    """Keeps a follower's position.

    An application that keeps its position in the same transaction as its rows implements this
    itself: it writes the position inside ``Handler.apply``'s transaction, ``save`` writes the same
    position again (idempotent) and ``clear`` deletes it.
    """

    def load(self) -> Optional[Position]:
        """The saved position, or ``None`` if there is none (a snapshot follows)."""
        ...

    def save(self, position: Position) -> None:
        """Saves ``position`` durably (replacing the previous one)."""
        ...

    def clear(self) -> None:
        """Forgets the saved position."""
        ...


class MemoryStore:
    """A position in memory: lost when the process ends (every start takes a snapshot)."""

    def __init__(self, position: Optional[Position] = None) -> None:
        self._lock = threading.Lock()
        self._position = Position(position) if position is not None else None

    def load(self) -> Optional[Position]:
        with self._lock:
            return Position(self._position) if self._position is not None else None

    def save(self, position: Position) -> None:
        with self._lock:
            self._position = Position(position)

    def clear(self) -> None:
        with self._lock:
            self._position = None


class FileStore:
    """A position in a JSON file, replaced atomically: written to a temporary file in the same
    directory, fsynced, renamed over the file, and the directory fsynced."""

    def __init__(self, path: Union[str, "os.PathLike[str]"]) -> None:
        self.path = os.fspath(path)

    def load(self) -> Optional[Position]:
        try:
            with open(self.path, "r", encoding="utf-8") as f:
                document = json.load(f)
        except FileNotFoundError:
            return None
        if not isinstance(document, dict) or document.get("version") != 1:
            raise ValueError(f"{self.path}: not a tributary position file (version 1)")
        return Position.from_json(document["offsets"])

    def save(self, position: Position) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        document = {"version": 1, "offsets": Position(position).to_json()}
        fd, tmp = tempfile.mkstemp(prefix=".position-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(document, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(directory)

    def clear(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        _fsync_dir(os.path.dirname(os.path.abspath(self.path)))


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
