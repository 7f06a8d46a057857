#!/usr/bin/env python3
"""System X of the background paper's scenario (section 6), the application of Tributary's demo.

System Y publishes its media assignments to Kafka (``examples/demo_producer.rs`` plays Y). X needs
Y's state and every change after it, without polling Y and without Y keeping any state for X. So
X keeps *its own model* of Y's assignments, in its own shape and its own database (SQLite here),
and follows Y's topic through Tributary:

- X's translator (``translators/examples/x-model``, uploaded by X at start) turns Y's records into
  X's shape inside the gateway: ``assignment/7`` = ``{"id":7,"station":"north","status":"on-air",
  "version":3}`` becomes ``7`` = ``{"assignment":7,"station":"north","on_air":true,
  "finished":false,"revision":3}``;
- the Python client's ``Follower`` takes a snapshot once, then streams every change, with no gap
  and no duplicate, across X's and the gateway's restarts;
- ``XModel`` is both the follower's Handler and its Store: the position (the next offset of every
  partition) is written in the same SQLite transaction as the rows it covers. Whatever moment X is
  killed at, the database holds rows and a position that agree, and X resumes from there (no
  second snapshot, nothing lost, nothing applied twice).

    python demo/x.py --gateway 127.0.0.1:50051 --topic media-assignments \\
        --db /tmp/tributary-demo/x.sqlite --translator-file translators/dist/x-model.wasm

On a terminal X shows a live table (assignments per station, the latest changes); otherwise it
prints one line per event: ``X snapshot: ...`` once, ``X resumed: ...`` when it starts again from
its saved position, ``X live: ... [p<partition>@<offset>]`` per applied change. SIGINT or SIGTERM
stops it cleanly; ``--seconds N`` stops it after N seconds.

Tables (X's model):
    assignments(assignment, station, on_air, finished, revision, source_topic, source_partition,
                source_offset)          one row per live assignment, with the Y record it reflects
    position(topic, partition, next_offset)        where the follow stands (the Store)
    changes(topic, partition, offset, ...)         X's journal of the live changes it applied
    snapshot_position(topic, partition, next_offset)  where its last snapshot stood
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import sys
import threading
import time

from tributary import Change, Client, Follower, Position, Translator, TributaryError

TRANSLATOR_NAME = "x-model"

SCHEMA = """
CREATE TABLE IF NOT EXISTS assignments (
    assignment       INTEGER PRIMARY KEY,
    station          TEXT    NOT NULL,
    on_air           INTEGER NOT NULL,
    finished         INTEGER NOT NULL,
    revision         INTEGER NOT NULL,
    source_topic     TEXT    NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS position (
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS snapshot_position (
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS changes (
    topic      TEXT    NOT NULL,
    partition  INTEGER NOT NULL,
    offset     INTEGER NOT NULL,
    assignment INTEGER NOT NULL,
    summary    TEXT    NOT NULL,
    applied_at REAL    NOT NULL,
    PRIMARY KEY (topic, partition, offset)
);
"""


def format_position(position) -> str:
    """``{p0=70 p1=64 p2=66}`` (the topic is named when there are several)."""
    if not position:
        return "{}"
    topics = {topic for topic, _ in position}
    parts = []
    for (topic, partition), offset in sorted(position.items()):
        name = f"p{partition}" if len(topics) == 1 else f"{topic}/p{partition}"
        parts.append(f"{name}={offset}")
    return "{" + " ".join(parts) + "}"


def describe(assignment: int, row: dict | None) -> str:
    """A change in words: ``assignment 7 at north, on air, revision 3`` or ``assignment 7 ended``."""
    if row is None:
        return f"assignment {assignment} ended (deleted)"
    state = "on air" if row["on_air"] else "finished" if row["finished"] else "scheduled"
    return f"assignment {assignment} at {row['station']}, {state}, revision {row['revision']}"


class XModel:
    """X's model in SQLite: the follower's Handler (reset, apply) and Store (load, save, clear).

    Every write is one transaction; ``apply`` writes the rows and the position they reach together.
    Called from the follower's thread; ``lock`` guards the connection and the in-memory counters.
    """

    def __init__(self, path: str, on_event) -> None:
        self.path = path
        # isolation_level=None: no implicit transactions, the BEGIN/COMMIT below are the ones.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()
        self.on_event = on_event  # (kind, text, change or None) -> None
        self.snapshotting = False
        self.saved: dict = {}
        self.loaded_once = False

    # --- transactions ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self):
        """One SQLite transaction: committed if the block ends normally, rolled back otherwise."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @staticmethod
    def _write_position(db, table: str, position) -> None:
        db.execute(f"DELETE FROM {table}")
        db.executemany(
            f"INSERT INTO {table} (topic, partition, next_offset) VALUES (?, ?, ?)",
            [(topic, partition, offset) for (topic, partition), offset in position.items()],
        )

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM assignments").fetchone()[0]

    # --- Store ----------------------------------------------------------------------------------

    def load(self) -> Position | None:
        with self.lock:
            rows = self.db.execute("SELECT topic, partition, next_offset FROM position").fetchall()
            if not rows:
                return None
            position = Position({(topic, partition): offset for topic, partition, offset in rows})
            self.saved = dict(position)
            if not self.loaded_once:
                self.loaded_once = True
                self.on_event(
                    "resumed",
                    f"X resumed: {self.count()} assignments at {format_position(position)} "
                    "(its saved position; no snapshot)",
                    None,
                )
            return position

    def save(self, position: Position) -> None:
        with self.lock:
            if not self.snapshotting and dict(position) == self.saved:
                return  # apply() already wrote it in its transaction
            with self._transaction() as db:
                self._write_position(db, "position", position)
                if self.snapshotting:
                    self._write_position(db, "snapshot_position", position)
            self.saved = dict(position)
            if self.snapshotting:
                self.snapshotting = False
                self.loaded_once = True
                self.on_event(
                    "snapshot",
                    f"X snapshot: {self.count()} assignments at {format_position(position)}",
                    None,
                )

    def clear(self) -> None:
        with self.lock:
            with self._transaction() as db:
                db.execute("DELETE FROM position")
            self.saved = {}

    # --- Handler --------------------------------------------------------------------------------

    def reset(self) -> None:
        with self.lock:
            with self._transaction() as db:
                for table in ("assignments", "position", "snapshot_position", "changes"):
                    db.execute(f"DELETE FROM {table}")
            self.saved = {}
            self.snapshotting = True

    def apply(self, changes: list[Change], position: Position | None) -> None:
        lines = []
        with self.lock:
            with self._transaction() as db:
                for change in changes:
                    line = self._apply_one(db, change)
                    if line is not None:
                        lines.append((line, change))
                if position is not None:
                    self._write_position(db, "position", position)
            if position is not None:
                self.saved = dict(position)
        for line, change in lines:
            self.on_event("live", line, change)

    def _apply_one(self, db, change: Change) -> str | None:
        assignment = int(change.key.decode())
        if change.value is None:
            db.execute("DELETE FROM assignments WHERE assignment = ?", (assignment,))
            row = None
        else:
            row = json.loads(change.value)
            db.execute(
                "INSERT OR REPLACE INTO assignments (assignment, station, on_air, finished, revision,"
                " source_topic, source_partition, source_offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    assignment,
                    row["station"],
                    int(row["on_air"]),
                    int(row["finished"]),
                    row["revision"],
                    change.topic,
                    change.partition,
                    change.offset,
                ),
            )
        if change.snapshot:
            return None
        summary = describe(assignment, row)
        # The journal's primary key is the source record: applying one twice fails the
        # transaction (and stops X) instead of passing unnoticed.
        db.execute(
            "INSERT INTO changes (topic, partition, offset, assignment, summary, applied_at) VALUES (?, ?, ?, ?, ?, ?)",
            (change.topic, change.partition, change.offset, assignment, summary, time.time()),
        )
        return summary


# --- Views ----------------------------------------------------------------------------------------


class PlainView:
    """One line per event, for logs and CI."""

    def __init__(self) -> None:
        self.out_lock = threading.Lock()
        self.reconnecting = False

    def event(self, kind: str, text: str, change: Change | None) -> None:
        if kind == "live":
            text = f"X live: {text} [p{change.partition}@{change.offset}]"
        with self.out_lock:
            if self.reconnecting and kind == "live":
                self.reconnecting = False
                print("X note: following again, from its saved position", flush=True)
            print(text, flush=True)

    def note(self, text: str, reconnecting: bool = False) -> None:
        self.event("note", f"X note: {text}", None)
        self.reconnecting = self.reconnecting or reconnecting

    def refresh(self, model: XModel, state: str) -> None:
        pass

    def close(self) -> None:
        pass


class TableView:
    """A terminal table refreshed in place: assignments per station and the latest changes."""

    def __init__(self, db_path: str, gateway: str, topics: list[str]) -> None:
        self.reader = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self.gateway = gateway
        self.topics = topics
        self.headline = "starting"
        self.last_note = ""
        self.flashes: collections.deque = collections.deque(maxlen=12)
        self.reconnecting = False
        self.lock = threading.Lock()
        sys.stdout.write("\x1b[?25l\x1b[2J")  # hide the cursor, clear the screen

    def event(self, kind: str, text: str, change: Change | None) -> None:
        with self.lock:
            if kind == "live":
                self.flashes.appendleft((time.strftime("%H:%M:%S"), text, change.partition, change.offset))
                if self.reconnecting:
                    self.reconnecting = False
                    self.last_note = f"{time.strftime('%H:%M:%S')} following again, from its saved position"
            else:
                self.headline = text

    def note(self, text: str, reconnecting: bool = False) -> None:
        with self.lock:
            self.last_note = f"{time.strftime('%H:%M:%S')} {text}"
            self.reconnecting = self.reconnecting or reconnecting

    def refresh(self, model: XModel, state: str) -> None:
        try:
            stations = self.reader.execute(
                "SELECT station, COUNT(*), SUM(on_air), SUM(finished) FROM assignments"
                " GROUP BY station ORDER BY station"
            ).fetchall()
            position = {
                (t, p): o for t, p, o in self.reader.execute("SELECT topic, partition, next_offset FROM position")
            }
            journal = self.reader.execute("SELECT COUNT(*) FROM changes").fetchone()[0]
        except sqlite3.Error as e:  # e.g. locked for a moment: try again at the next refresh
            self.note(f"view: {e}")
            return
        width = max(40, shutil.get_terminal_size().columns - 1)
        lines = [
            "\x1b[1mSystem X\x1b[0m: its own model of system Y's media assignments, followed through Tributary",
            f"gateway {self.gateway} · topic {', '.join(self.topics)} · {state}",
            f"database {model.path}",
            f"position {format_position(position)} · {journal} live changes in X's journal",
            "",
            f"  {'station':<12}{'assignments':>12}{'on air':>10}{'finished':>10}{'scheduled':>11}",
            "  " + "─" * 55,
        ]
        totals = [0, 0, 0]
        for station, count, on_air, finished in stations:
            on_air, finished = on_air or 0, finished or 0
            totals = [totals[0] + count, totals[1] + on_air, totals[2] + finished]
            scheduled = count - on_air - finished
            lines.append(f"  {station:<12}{count:>12}{on_air:>10}{finished:>10}{scheduled:>11}")
        lines.append("  " + "─" * 55)
        lines.append(
            f"  {'total':<12}{totals[0]:>12}{totals[1]:>10}{totals[2]:>10}{totals[0] - totals[1] - totals[2]:>11}"
        )
        lines += ["", "\x1b[1mlatest changes\x1b[0m (newest first)"]
        with self.lock:
            flashes = list(self.flashes)
            headline, note = self.headline, self.last_note
        for when, text, partition, offset in flashes:
            lines.append(f"  {when}  {text:<58} p{partition}@{offset}")
        lines += [""] * (12 - len(flashes))
        lines += ["", headline[:width]]
        if note:
            lines.append(f"\x1b[2m{note[:width]}\x1b[0m")
        lines.append("\x1b[2mCtrl-C stops X; started again, it resumes from its saved position.\x1b[0m")
        sys.stdout.write("\x1b[H" + "".join(line + "\x1b[K\n" for line in lines) + "\x1b[J")
        sys.stdout.flush()

    def close(self) -> None:
        sys.stdout.write("\x1b[?25h")
        sys.stdout.flush()


class NoteHandler(logging.Handler):
    """The client's log (reconnections, backoff) as notes of the view."""

    def __init__(self, view) -> None:
        super().__init__(logging.INFO)
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.view.note(record.getMessage())
        except Exception:  # a view that fails must not stop the follow
            pass


# --- Main -----------------------------------------------------------------------------------------


def upload(client: Client, path: str, deadline_s: float, view) -> str:
    """Uploads X's translator (same bytes, same digest: idempotent), retrying while the gateway
    starts. Returns the digest X pins."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            version = client.upload_translator(TRANSLATOR_NAME, path)
            return version.digest
        except TributaryError as e:
            if getattr(e.code, "name", "") != "UNAVAILABLE" or time.monotonic() > deadline:
                raise
            view.note(f"gateway not ready for the upload yet: {e}")
            time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", default=os.environ.get("TRIBUTARY_TARGET", "127.0.0.1:50051"))
    parser.add_argument("--topic", action="append", dest="topics", help="Y's topic (repeatable)")
    parser.add_argument("--db", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "tributary-demo", "x.sqlite"))
    parser.add_argument(
        "--translator-file", help="X's translator component to upload (default: use the latest uploaded)"
    )
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until a signal)")
    parser.add_argument("--view", choices=["auto", "table", "plain"], default="auto")
    args = parser.parse_args()
    topics = args.topics or ["media-assignments"]

    table = args.view == "table" or (args.view == "auto" and sys.stdout.isatty())
    os.makedirs(os.path.dirname(os.path.abspath(args.db)), exist_ok=True)
    view = TableView(args.db, args.gateway, topics) if table else PlainView()
    model = XModel(args.db, view.event)
    logging.basicConfig(level=logging.WARNING, handlers=[NoteHandler(view)])

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    client = Client(args.gateway)
    digest = ""
    if args.translator_file:
        digest = upload(client, args.translator_file, 60, view)
        view.note(f"uploaded {TRANSLATOR_NAME} {digest[:12]}")
    follower = Follower(
        client,
        topics=topics,
        handler=model,
        store=model,
        translator=Translator(TRANSLATOR_NAME, digest=digest),
        # Retried by the follower (gateway restarting, connection refused): shown, not fatal.
        on_error=lambda error: view.note(f"reconnecting after: {error}", reconnecting=True),
    )

    failure: list[BaseException] = []

    def follow() -> None:
        try:
            follower.run()
        except BaseException as e:  # reported by the main thread
            failure.append(e)
        finally:
            stop.set()

    thread = threading.Thread(target=follow, name="follow", daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        while not stop.wait(0.5 if table else 0.2):
            view.refresh(model, "following")
            if args.seconds and time.monotonic() - started >= args.seconds:
                break
    finally:
        follower.stop()
        thread.join(15)
        view.refresh(model, "stopped")
        view.close()
    with model.lock:
        rows, position = model.count(), dict(model.saved)
    if failure:
        print(f"X stopped on an error: {failure[0]!r}", file=sys.stderr, flush=True)
        return 1
    if thread.is_alive():
        print("X: the follow did not stop within 15 s", file=sys.stderr, flush=True)
        return 1
    print(f"X stopped: {rows} assignments at {format_position(position)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
