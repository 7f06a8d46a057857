// Following a sharded fleet: each partition from the replica that holds it, merged into one
// follow (clients/FOLLOW.md, "Sharded fleets").
import { Code } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { GetTopologyResponse, SubscribeRequestSchema, SubscribeResponse } from "./gen/tributary/v1/gateway_pb.js";
import { createClient, type ClientOptions, type TributaryClient } from "./client.js";
import { TributaryError, toTributaryError } from "./errors.js";
import {
  Fatal,
  endedWithoutStatus,
  follow,
  fromEntry,
  fromRecord,
  guard,
  requestParts,
  retryable,
  sleep,
  type FollowOptions,
  type Handler,
} from "./follow.js";
import { Position } from "./position.js";
import { MemoryStore } from "./store.js";

/** The options of `follow`, and how to connect to every replica (TLS files, token). */
export interface FleetOptions extends FollowOptions {
  /** Given to every connection the fleet opens (seeds and the replicas they name). */
  connection?: Omit<ClientOptions, "target">;
}

const SEP = "\u0000";
const keyOf = (topic: string, partition: number): string => `${topic}${SEP}${partition}`;
function parseKey(key: string): { topic: string; partition: number } {
  const at = key.lastIndexOf(SEP);
  return { topic: key.slice(0, at), partition: Number(key.slice(at + 1)) };
}

/**
 * Groups the `wanted` partitions by their owner in `topology`; the ones no replica holds (moving,
 * or unknown to the topology) come back apart. Keys are `topic\0partition`.
 */
export function byOwner(topology: GetTopologyResponse, wanted: Set<string>): { owners: Map<string, Set<string>>; unowned: Set<string> } {
  const owners = new Map<string, Set<string>>();
  const unowned = new Set(wanted);
  for (const p of topology.partitions) {
    const key = keyOf(p.topic, p.partition);
    if (!p.moving && p.owner !== "" && unowned.delete(key)) {
      let group = owners.get(p.owner);
      if (!group) owners.set(p.owner, (group = new Set()));
      group.add(key);
    }
  }
  return { owners: new Map([...owners].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))), unowned };
}

/** A stream that ended because its partitions are elsewhere now: follow them there. */
function moved(err: TributaryError): boolean {
  return err.code === Code.FailedPrecondition && err.reason === "PARTITION_NOT_HELD";
}

function local(code: Code, message: string): TributaryError {
  return new TributaryError({ code, rawMessage: message });
}

/** The replicas known so far and a connection to each. */
class Fleet {
  readonly clients = new Map<string, TributaryClient>();

  constructor(
    readonly seeds: string[],
    readonly connection: Omit<ClientOptions, "target">,
  ) {}

  client(address: string): TributaryClient {
    let client = this.clients.get(address);
    if (!client) {
      // Lazy: a replica that is down is an UNAVAILABLE call later, not a failed follow now.
      client = createClient({ ...this.connection, target: address });
      this.clients.set(address, client);
    }
    return client;
  }

  /** The topology from the first seed or known replica that answers, with its address. */
  async topology(topics: string[], signal: AbortSignal | undefined): Promise<{ address: string; topology: GetTopologyResponse | undefined }> {
    const addresses = [...this.seeds, ...[...this.clients.keys()].filter((a) => !this.seeds.includes(a))];
    let last: TributaryError = local(Code.Unavailable, "no replica answered GetTopology");
    for (const address of addresses) {
      try {
        const topology = await this.client(address).gateway.getTopology({ topics }, { signal, timeoutMs: 10_000 });
        return { address, topology };
      } catch (err) {
        const e = toTributaryError(err);
        // A gateway older than sharding holds every partition.
        if (e.code === Code.Unimplemented) return { address, topology: undefined };
        last = e;
        if (signal?.aborted) break;
      }
    }
    throw last;
  }

  close(): void {
    for (const client of this.clients.values()) client.close();
  }
}

type Event = { id: number; message: SubscribeResponse; error?: undefined; end?: false } | { id: number; end: true; error: unknown };

interface Stream {
  owner: string;
  /** The partitions it follows for the follow; the replica's others are ignored. */
  partitions: Set<string>;
  controller: AbortController;
  /** Whether a message came: the replica is up and serves it. */
  delivered: boolean;
}

/**
 * Follows `options.topics` through the fleet reached at `seeds` (`host:port`; every connection
 * uses `options.connection`). A gateway without sharding (or older than sharding) is followed
 * exactly as `follow` does. On a sharded fleet: one snapshot per owner merged into one reset and
 * snapshot, then one stream per owner, applied one batch at a time with the whole merged
 * position; a partition that moves is followed to its new owner from its own offset. Resolves
 * once `options.signal` aborts; rejects with a `TributaryError` for an error that retrying cannot
 * fix (INVALID_ARGUMENT for a `subscriptionName` on a sharded fleet), or with the handler's or
 * store's own error.
 */
export async function followFleet(seeds: string[], options: FleetOptions, handler: Handler): Promise<void> {
  if (seeds.length === 0) throw local(Code.InvalidArgument, "a fleet needs at least one seed address");
  const fleet = new Fleet(seeds, options.connection ?? {});
  try {
    await run(fleet, options, handler);
  } finally {
    fleet.close();
  }
}

async function run(fleet: Fleet, options: FleetOptions, handler: Handler): Promise<void> {
  const store = options.store ?? new MemoryStore();
  const signal = options.signal;
  const initialDelay = options.backoffInitialMs ?? 100;
  const maxDelay = options.backoffMaxMs ?? 10_000;
  const onError = options.onError ?? (() => {});
  const { keyFilter, recordFilter, translator } = requestParts(options);
  let delay = initialDelay;
  const backoff = async (): Promise<void> => {
    await sleep(Math.random() * delay, signal);
    delay = Math.min(delay * 2, maxDelay);
  };

  // 1. The topology, from the first seed (or known replica) that answers.
  let first: { address: string; topology: GetTopologyResponse | undefined };
  for (;;) {
    if (signal?.aborted) return;
    try {
      first = await fleet.topology(options.topics, signal);
      break;
    } catch (err) {
      if (signal?.aborted) return;
      const e = toTributaryError(err);
      if (!retryable(e)) throw e;
      onError(e);
      await backoff();
    }
  }
  delay = initialDelay;
  if (!first.topology?.sharded) {
    // Not sharded: the plain follow, against the replica that answered.
    return follow(fleet.client(first.address), { ...options, store }, handler);
  }
  if (options.subscriptionName) {
    // Each replica keeps the committed positions of the names opened on it.
    throw local(Code.InvalidArgument, "a named subscription cannot follow a sharded fleet: the store keeps the position");
  }

  let saved: Position | undefined = await guard(() => store.load());

  /** 2. One snapshot per owner into one reset and snapshot. */
  const snapshot = async (topology: GetTopologyResponse): Promise<void> => {
    const wanted = new Set(topology.partitions.map((p) => keyOf(p.topic, p.partition)));
    const { owners, unowned } = byOwner(topology, wanted);
    if (unowned.size > 0) throw local(Code.Unavailable, `partitions ${[...unowned].map((k) => k.replace(SEP, "/")).join(", ")} have no owner yet`);
    const merged = new Map<string, bigint>();
    let resetDone = false;
    for (const owner of owners.keys()) {
      let start: Position | undefined;
      let complete = false;
      const call = fleet.client(owner).gateway.getSnapshot({ topics: options.topics, keyFilter, recordFilter, translator }, { signal });
      for await (const chunk of call) {
        delay = initialDelay;
        if (start === undefined) {
          start = Position.fromOffsets(chunk.offsets);
          if (!resetDone) {
            // One reset, before the first owner's first chunk: the owners' snapshots are one.
            resetDone = true;
            await guard(() => handler.reset());
            await guard(() => store.clear());
            saved = undefined;
          }
        }
        if (chunk.entries.length > 0) {
          const changes = chunk.entries.map(fromEntry);
          await guard(() => handler.apply(changes, undefined));
        }
        if (chunk.last) {
          complete = true;
          break;
        }
      }
      if (!complete || start === undefined) throw endedWithoutStatus("GetSnapshot");
      for (const { topic, partition, offset } of start) {
        const key = keyOf(topic, partition);
        if (merged.has(key)) throw local(Code.Unavailable, `partition ${topic}/${partition} moved during the snapshot`);
        merged.set(key, offset);
      }
    }
    if (merged.size !== wanted.size || [...wanted].some((k) => !merged.has(k))) {
      throw local(Code.Unavailable, "partitions moved during the snapshot: the owners' snapshots do not cover the topics");
    }
    const position = new Position([...merged].map(([key, offset]) => ({ ...parseKey(key), offset })));
    await guard(() => store.save(position));
    saved = position;
  };

  /** 3–5. One stream per owner from the position; returns when the follow is stopped. */
  const stream = async (initial: GetTopologyResponse | undefined): Promise<void> => {
    const queue: { event: Event; taken: () => void }[] = [];
    let wake: (() => void) | undefined;
    const push = (event: Event): Promise<void> =>
      new Promise((taken) => {
        queue.push({ event, taken });
        wake?.();
      });
    const live = new Map<number, Stream>();
    let pending = new Set([...saved!].map((o) => keyOf(o.topic, o.partition)));
    let topology = initial;
    let nextId = 0;
    let retryAt: number | undefined = Date.now();
    // The routing's own backoff: it grows until a stream it opened delivers.
    let routeDelay = initialDelay;
    const routeLater = () => {
      retryAt = Date.now() + Math.random() * routeDelay;
      routeDelay = Math.min(routeDelay * 2, maxDelay);
    };

    const read = async (id: number, client: TributaryClient, request: MessageInitShape<typeof SubscribeRequestSchema>, controller: AbortController) => {
      let error: unknown;
      try {
        for await (const message of client.gateway.subscribe(request, { signal: controller.signal })) {
          if (controller.signal.aborted) return;
          await push({ id, message });
        }
      } catch (err) {
        error = err ?? endedWithoutStatus("Subscribe");
      }
      if (!controller.signal.aborted) await push({ id, end: true, error: error ?? endedWithoutStatus("Subscribe") });
    };

    const route = async (): Promise<void> => {
      retryAt = undefined;
      let current: GetTopologyResponse | undefined = topology;
      topology = undefined;
      if (current === undefined) {
        try {
          current = (await fleet.topology(options.topics, signal)).topology;
        } catch (err) {
          const e = toTributaryError(err);
          if (!retryable(e)) throw e;
          onError(e);
        }
      }
      if (current !== undefined) {
        const { owners, unowned } = byOwner(current, pending);
        for (const [owner, group] of owners) {
          // One stream per replica: a Subscribe also reads the replica's partitions it does not
          // list (from their start), so the one there now ends and the new one takes its
          // partitions on at the position.
          for (const [id, s] of live) {
            if (s.owner !== owner) continue;
            live.delete(id);
            s.controller.abort();
            for (const k of s.partitions) group.add(k);
          }
          const position = saved!;
          const fromOffsets = [...group].map((k) => {
            const { topic, partition } = parseKey(k);
            return { topic, partition, offset: position.get(topic, partition) ?? 0n };
          });
          const controller = new AbortController();
          const id = nextId++;
          live.set(id, { owner, partitions: group, controller, delivered: false });
          void read(id, fleet.client(owner), { fromOffsets, keyFilter, recordFilter, translator, maxBatchRecords: options.maxBatchRecords ?? 0, conflate: options.conflate ?? false }, controller);
        }
        pending = unowned;
      }
      if (pending.size > 0) routeLater();
    };

    const handle = async (event: Event): Promise<void> => {
      const s = live.get(event.id);
      // A stream ended meanwhile: what it sent last is read again by its successor.
      if (!s) return;
      if (event.end) {
        live.delete(event.id);
        const e = toTributaryError(event.error);
        // OUT_OF_RANGE (a new snapshot) or a refusal: the caller decides.
        if (!(retryable(e) || moved(e))) throw e;
        onError(e);
        for (const k of s.partitions) pending.add(k);
        if (retryAt === undefined) routeLater();
        return;
      }
      if (!s.delivered) {
        s.delivered = true;
        routeDelay = initialDelay;
      }
      delay = initialDelay;
      const ours = (topic: string, partition: number) => s.partitions.has(keyOf(topic, partition));
      const base = saved!;
      let next: Position;
      const msg = event.message.message;
      if (msg.case === "records") {
        // Only this stream's partitions: the replica also sends the ones it holds that another
        // stream follows (or that just moved to it).
        const records = msg.value.records.filter((r) => ours(r.topic, r.partition));
        if (records.length === 0) return;
        next = base.merge(records.map((r) => ({ topic: r.topic, partition: r.partition, offset: r.offset + 1n })));
        const changes = records.map(fromRecord);
        await guard(() => handler.apply(changes, next));
      } else if (msg.case === "progress") {
        next = base.merge(msg.value.offsets.filter((o) => ours(o.topic, o.partition)));
      } else {
        return;
      }
      if (!next.equals(saved)) {
        await guard(() => store.save(next));
        saved = next;
      }
    };

    const onAbort = () => wake?.();
    signal?.addEventListener("abort", onAbort);
    try {
      for (;;) {
        if (signal?.aborted) return;
        if (retryAt !== undefined && Date.now() >= retryAt) {
          await route();
          continue;
        }
        const item = queue.shift();
        if (item) {
          item.taken();
          await handle(item.event);
          continue;
        }
        await new Promise<void>((resolve) => {
          const timer = retryAt === undefined ? undefined : setTimeout(done, Math.max(0, retryAt - Date.now()));
          function done() {
            if (timer !== undefined) clearTimeout(timer);
            wake = undefined;
            resolve();
          }
          wake = done;
        });
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      for (const s of live.values()) s.controller.abort();
      live.clear();
      // Let blocked readers finish (their messages are dropped).
      for (const item of queue.splice(0)) item.taken();
      wake = undefined;
    }
  };

  let topology: GetTopologyResponse | undefined = first.topology;
  while (!signal?.aborted) {
    try {
      const current = topology ?? (await fleet.topology(options.topics, signal)).topology;
      topology = undefined;
      if (current === undefined || !current.sharded) throw local(Code.Unavailable, "the fleet is not sharded any more");
      if (saved === undefined) await snapshot(current);
      await stream(current);
      return;
    } catch (err) {
      if (err instanceof Fatal) throw err.error;
      if (signal?.aborted) break;
      const e = toTributaryError(err);
      if (e.code === Code.OutOfRange) {
        // A partition's position cannot be continued: a new snapshot replaces the state.
        await guard(() => store.clear());
        saved = undefined;
      } else if (!retryable(e) && !moved(e)) {
        throw e;
      }
      onError(e);
      await backoff();
    }
  }
}
