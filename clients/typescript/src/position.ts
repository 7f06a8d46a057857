import type { MessageInitShape } from "@bufbuild/protobuf";
import type { PartitionOffsetSchema } from "./gen/tributary/v1/gateway_pb.js";

/** One (topic, partition) and the next offset to read there. */
export interface PartitionOffsetValue {
  topic: string;
  partition: number;
  offset: bigint;
}

/** What `toOffsets()` gives and the gateway's messages carry (`PartitionOffset`). */
export type PartitionOffsetInit = MessageInitShape<typeof PartitionOffsetSchema>;

const SEP = "\u0000";

function keyOf(topic: string, partition: number): string {
  return `${topic}${SEP}${partition}`;
}

/**
 * Where a follow stands: for every (topic, partition), the *next* offset to apply, exactly what
 * `SubscribeRequest.from_offsets` and `SnapshotChunk.offsets` carry. Immutable: `with` and
 * `merge` return new positions.
 */
export class Position implements Iterable<PartitionOffsetValue> {
  readonly #offsets: ReadonlyMap<string, PartitionOffsetValue>;

  constructor(entries: Iterable<PartitionOffsetValue> = []) {
    const map = new Map<string, PartitionOffsetValue>();
    for (const { topic, partition, offset } of entries) {
      map.set(keyOf(topic, partition), { topic, partition, offset: BigInt(offset) });
    }
    this.#offsets = map;
  }

  /** From the gateway's `PartitionOffset`s (or anything of that shape; number offsets are fine). */
  static fromOffsets(offsets: Iterable<{ topic?: string; partition?: number; offset?: bigint | number | string }>): Position {
    const entries: PartitionOffsetValue[] = [];
    for (const o of offsets) {
      entries.push({ topic: o.topic ?? "", partition: o.partition ?? 0, offset: BigInt(o.offset ?? 0) });
    }
    return new Position(entries);
  }

  /** The `PartitionOffset`s for `SubscribeRequest.fromOffsets` or `CommitRequest.offsets`, sorted. */
  toOffsets(): PartitionOffsetInit[] {
    return [...this].map(({ topic, partition, offset }) => ({ topic, partition, offset }));
  }

  /** The next offset of (topic, partition), if the position has it. */
  get(topic: string, partition: number): bigint | undefined {
    return this.#offsets.get(keyOf(topic, partition))?.offset;
  }

  has(topic: string, partition: number): boolean {
    return this.#offsets.has(keyOf(topic, partition));
  }

  get size(): number {
    return this.#offsets.size;
  }

  /** A copy with (topic, partition) at `offset`. */
  with(topic: string, partition: number, offset: bigint): Position {
    return new Position([...this.#offsets.values(), { topic, partition, offset }]);
  }

  /** This position with `offsets` laid over it (theirs win): `position ∪ progress.offsets`. */
  merge(offsets: Iterable<{ topic?: string; partition?: number; offset?: bigint | number | string }> | Position): Position {
    const other = offsets instanceof Position ? offsets : Position.fromOffsets(offsets);
    return new Position([...this.#offsets.values(), ...other]);
  }

  equals(other: Position | undefined): boolean {
    if (!other || other.size !== this.size) return false;
    for (const { topic, partition, offset } of this) {
      if (other.get(topic, partition) !== offset) return false;
    }
    return true;
  }

  /** Entries sorted by topic, then partition. */
  *[Symbol.iterator](): Iterator<PartitionOffsetValue> {
    const sorted = [...this.#offsets.values()].sort((a, b) =>
      a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition,
    );
    for (const e of sorted) yield { ...e };
  }

  /** JSON-friendly form: `[{topic, partition, offset: "123"}]` (offsets as decimal strings). */
  toJSON(): { topic: string; partition: number; offset: string }[] {
    return [...this].map(({ topic, partition, offset }) => ({ topic, partition, offset: offset.toString() }));
  }

  static fromJSON(json: unknown): Position {
    if (!Array.isArray(json)) throw new TypeError("a position is a JSON array of {topic, partition, offset}");
    return Position.fromOffsets(
      json.map((e: { topic: unknown; partition: unknown; offset: unknown }) => {
        if (typeof e?.topic !== "string" || typeof e.partition !== "number" || (typeof e.offset !== "string" && typeof e.offset !== "number")) {
          throw new TypeError(`not a partition offset: ${JSON.stringify(e)}`);
        }
        return { topic: e.topic, partition: e.partition, offset: BigInt(e.offset) };
      }),
    );
  }

  toString(): string {
    return [...this].map(({ topic, partition, offset }) => `${topic}/${partition}@${offset}`).join(",");
  }
}
