#!/usr/bin/env python3
"""The proof behind scripts/demo-check.sh: X's SQLite model against a raw rebuild from Kafka.

    check.py create|delete --bootstrap B --topic T     the check's own topic (3 partitions)
    check.py wait    --db X.sqlite --bootstrap B --topic T [--timeout S]
        waits until X's saved position equals the topic's end offsets (Kafka's high watermarks)
    check.py compare --db X.sqlite --bootstrap B --topic T
        reads the topic from offset 0 straight from Kafka (no Tributary), keeps the last value per
        key, drops the keys whose last record is a tombstone, maps Y's records to X's shape with
        the same mapping as X's translator (written again here, in Python), and requires:
        - X's `assignments` table equals that rebuild, row for row (source offsets included);
        - X's journal of live changes holds every record after its snapshot's position exactly
          once (nothing lost, nothing twice).

Needs confluent-kafka (demo/requirements-check.txt).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

STATUS = {"scheduled": (False, False), "on-air": (True, False), "done": (False, True)}


def y_to_x(key: bytes, value: bytes) -> tuple:
    """Y's `assignment/N` = {"id","station","status","version"} → X's row, as the translator."""
    text = key.decode()
    assert text.startswith("assignment/"), text
    assignment = int(text[len("assignment/") :])
    y = json.loads(value)
    assert y["id"] == assignment, (key, value)
    on_air, finished = STATUS[y["status"]]
    return (assignment, y["station"], int(on_air), int(finished), y["version"])


def consumer(bootstrap: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "tributary-demo-check",  # never committed (assign, no subscribe)
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )


def end_offsets(c: Consumer, topic: str) -> dict:
    metadata = c.list_topics(topic, timeout=10)
    partitions = sorted(metadata.topics[topic].partitions)
    return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}


def read_all(c: Consumer, topic: str, ends: dict) -> list:
    """Every record of the topic from offset 0 to `ends`: (partition, offset, key, value)."""
    todo = {p for p, end in ends.items() if end > 0}
    c.assign([TopicPartition(topic, p, 0) for p in todo])
    records = []
    deadline = time.monotonic() + 60
    while todo:
        if time.monotonic() > deadline:
            raise SystemExit(f"check: reading {topic} from Kafka timed out; partitions left: {todo}")
        message = c.poll(1.0)
        if message is None:
            continue
        if message.error():
            if message.error().code() == -191:  # _PARTITION_EOF
                continue
            raise SystemExit(f"check: Kafka error: {message.error()}")
        p, offset = message.partition(), message.offset()
        if offset < ends[p]:
            records.append((p, offset, message.key(), message.value()))
        if offset + 1 >= ends[p]:
            todo.discard(p)
    return records


def saved_position(db: sqlite3.Connection, table: str, topic: str) -> dict:
    return {p: o for p, o in db.execute(f"SELECT partition, next_offset FROM {table} WHERE topic = ?", (topic,))}


def wait(args) -> int:
    c = consumer(args.bootstrap)
    ends = end_offsets(c, args.topic)
    c.close()
    db = sqlite3.connect(args.db)
    deadline = time.monotonic() + args.timeout
    while True:
        position = saved_position(db, "position", args.topic)
        if position == ends:
            print(f"check: X caught up: its saved position {position} is the topic's end")
            return 0
        if time.monotonic() > deadline:
            print(f"check: X did not catch up in {args.timeout:.0f} s: at {position}, end {ends}", file=sys.stderr)
            return 1
        time.sleep(0.2)


def compare(args) -> int:
    c = consumer(args.bootstrap)
    ends = end_offsets(c, args.topic)
    records = read_all(c, args.topic, ends)
    c.close()

    last: dict = {}
    for p, offset, key, value in records:
        last[key] = (p, offset, value)
    rebuild = {}
    for key, (p, offset, value) in last.items():
        if value is not None:
            row = y_to_x(key, value)
            rebuild[row[0]] = row + (args.topic, p, offset)

    db = sqlite3.connect(args.db)
    x_rows = {
        row[0]: row
        for row in db.execute(
            "SELECT assignment, station, on_air, finished, revision, source_topic, source_partition,"
            " source_offset FROM assignments"
        )
    }
    failures = []
    position = saved_position(db, "position", args.topic)
    if position != ends:
        failures.append(f"X's position {position} is not the topic's end {ends}")
    missing = sorted(rebuild.keys() - x_rows.keys())
    extra = sorted(x_rows.keys() - rebuild.keys())
    differ = sorted(k for k in rebuild.keys() & x_rows.keys() if rebuild[k] != x_rows[k])
    if missing:
        failures.append(f"{len(missing)} assignments missing from X: {missing[:10]}")
    if extra:
        failures.append(f"{len(extra)} assignments in X that Y ended or never had: {extra[:10]}")
    for k in differ[:10]:
        failures.append(f"assignment {k}: X has {x_rows[k]}, the rebuild {rebuild[k]}")

    # The journal: every record after the snapshot's position, exactly once.
    snapshot = saved_position(db, "snapshot_position", args.topic)
    expected = sorted((p, o) for p, o, _, _ in records if o >= snapshot.get(p, 0))
    journal = sorted(db.execute("SELECT partition, offset FROM changes WHERE topic = ?", (args.topic,)))
    if journal != expected:
        lost = sorted(set(expected) - set(journal))
        twice = len(journal) - len(set(journal))
        failures.append(f"X's journal: {len(lost)} records lost {lost[:10]}, {twice} applied twice")

    deleted = sum(1 for _, (_, _, value) in last.items() if value is None)
    print(
        f"check: raw rebuild from Kafka: {len(records)} records, {len(last)} keys, {deleted} ended,"
        f" {len(rebuild)} assignments; X: {len(x_rows)} rows, {len(journal)} live changes after its"
        f" snapshot at {snapshot}"
    )
    for failure in failures:
        print(f"check: MISMATCH: {failure}", file=sys.stderr)
    print(f"check: equal: {'yes' if not failures else 'no'}")
    return 0 if not failures else 1


def topic_admin(args) -> int:
    """create: a topic of 3 partitions; delete: the topic (the check's own, fresh each run)."""
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    if args.command == "create":
        futures = admin.create_topics([NewTopic(args.topic, num_partitions=3, replication_factor=1)])
    else:
        futures = admin.delete_topics([args.topic])
    futures[args.topic].result(timeout=30)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["create", "delete", "wait", "compare"])
    parser.add_argument("--db")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    if args.command in ("create", "delete"):
        return topic_admin(args)
    return wait(args) if args.command == "wait" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
