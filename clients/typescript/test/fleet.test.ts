// The follow helper on a sharded fleet: three replicas (the real binary, `[sharding] group`) share
// a topic's six partitions while A keeps writing; a follower follows every partition through the
// fleet, one replica is killed (SIGKILL) and started again, and the follower ends at the raw
// rebuild with every record after its snapshot applied once, in offset order per partition.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code, MemoryStore, TributaryError, createClient, followFleet, type Change, type FleetOptions, type Handler, type Position, type Store } from "../src/index.js";
import { byOwner } from "../src/fleet.js";
import { create } from "@bufbuild/protobuf";
import { GetTopologyResponseSchema } from "../src/gen/tributary/v1/gateway_pb.js";
import { GatewayProcess, KafkaFixture, reached, uniqueName, waitFor } from "./fixtures.js";

const PARTITIONS = 6;
const SESSION_MS = 6000;

let kafka: KafkaFixture;
let topic: string;
let group: string;
const replicas: GatewayProcess[] = [];
const controllers: AbortController[] = [];

function replica(id: string): Promise<GatewayProcess> {
  return GatewayProcess.start({
    topics: [topic],
    env: {
      TRIBUTARY__SHARDING__GROUP: group,
      TRIBUTARY__SHARDING__INSTANCE_ID: id,
      TRIBUTARY__SHARDING__SESSION_TIMEOUT_MS: String(SESSION_MS),
    },
  });
}

before(async () => {
  kafka = await KafkaFixture.connect();
  topic = await kafka.createTopic("ts-fleet", PARTITIONS);
  group = uniqueName("ts-fleet-group");
  for (const id of ["r1", "r2", "r3"]) replicas.push(await replica(id));
});

after(async () => {
  for (const c of controllers) c.abort();
  for (const r of replicas) await r.close();
  await kafka?.close();
});

/** B's model, and what the test checks about how it was built. */
class FleetModel implements Handler, Store {
  state = new Map<string, string>();
  resets = 0;
  /** The position the snapshot ended at (the first save after a reset). */
  snapshotAt: Position | undefined;
  /** Streamed offsets per partition, in the order applied. */
  streamed = new Map<number, bigint[]>();
  /** Positions given to `apply` that did not name every partition. */
  partialPositions = 0;
  readonly inner = new MemoryStore();

  reset(): void {
    this.resets++;
    this.state.clear();
    this.streamed.clear();
    this.snapshotAt = undefined;
  }

  apply(changes: Change[], position: Position | undefined): void {
    for (const c of changes) {
      if (!c.snapshot) {
        const list = this.streamed.get(c.partition) ?? [];
        list.push(c.offset);
        this.streamed.set(c.partition, list);
      }
      const key = Buffer.from(c.key ?? []).toString();
      if (c.value === undefined) this.state.delete(key);
      else this.state.set(key, Buffer.from(c.value).toString());
    }
    if (position && position.size !== PARTITIONS) this.partialPositions++;
  }

  load(): Position | undefined {
    return this.inner.load();
  }

  save(position: Position): void {
    this.inner.save(position);
    this.snapshotAt ??= position;
  }

  clear(): void {
    this.inner.clear();
  }
}

function startFleet(seeds: string[], options: Omit<FleetOptions, "signal">, handler: Handler) {
  const controller = new AbortController();
  controllers.push(controller);
  const done = followFleet(seeds, { ...options, signal: controller.signal }, handler);
  done.catch(() => {});
  return {
    done,
    async stop(): Promise<void> {
      controller.abort();
      await done;
    },
  };
}

/** Each partition's owner as `replica` reports it; undefined while one moves or the group is not stable. */
async function owners(replica: GatewayProcess): Promise<Map<number, string> | undefined> {
  const client = replica.client();
  try {
    const topology = await client.gateway.getTopology({ topics: [topic] }, { timeoutMs: 2000 });
    assert.ok(topology.sharded);
    if (topology.groupState !== "Stable" || topology.partitions.some((p) => p.moving || p.owner === "")) return undefined;
    return new Map(topology.partitions.map((p) => [p.partition, p.owner]));
  } finally {
    client.close();
  }
}

/** The topology once every one of `live` reports the same stable one and `done` holds for it. */
async function settled(live: GatewayProcess[], done: (o: Map<number, string>) => boolean): Promise<Map<number, string>> {
  return waitFor(
    "the fleet to settle",
    async () => {
      const seen = await Promise.all(live.map(owners));
      const [a] = seen;
      if (!a || !done(a)) return undefined;
      const same = seen.every((s) => s && [...a].every(([p, o]) => s.get(p) === o));
      return same ? a : undefined;
    },
    90_000,
    250,
  );
}

test("byOwner groups partitions by owner and keeps the unheld apart", () => {
  const topology = create(GetTopologyResponseSchema, {
    sharded: true,
    partitions: [
      { topic: "t", partition: 0, owner: "a:1" },
      { topic: "t", partition: 1, owner: "b:1" },
      { topic: "t", partition: 2, owner: "a:1" },
      { topic: "t", partition: 3, owner: "", moving: true },
      { topic: "u", partition: 0, owner: "b:1" },
    ],
  });
  const k = (t: string, p: number) => `${t}\u0000${p}`;
  const { owners: byAddr, unowned } = byOwner(topology, new Set([k("t", 0), k("t", 1), k("t", 2), k("t", 3), k("t", 9)]));
  assert.deepEqual([...byAddr.keys()], ["a:1", "b:1"]);
  assert.deepEqual([...byAddr.get("a:1")!], [k("t", 0), k("t", 2)]);
  assert.deepEqual([...byAddr.get("b:1")!], [k("t", 1)], "only the partitions asked for");
  assert.deepEqual([...unowned].sort(), [k("t", 3), k("t", 9)], "moving, and unknown to the topology");
});

test("a named subscription on a sharded fleet is refused with INVALID_ARGUMENT", async () => {
  const err = await followFleet([replicas[0]!.target], { topics: [topic], subscriptionName: "ts-fleet-sub" }, new FleetModel()).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(err instanceof TributaryError, String(err));
  assert.equal(err.code, Code.InvalidArgument, String(err));
});

test("a non-sharded gateway is followed as `follow` does (an unreachable seed is skipped)", async () => {
  const plainTopic = await kafka.createTopic("ts-fleet-plain", 2);
  const plain = await GatewayProcess.start({ topics: [plainTopic] });
  try {
    for (let i = 0; i < 40; i++) await kafka.send(plainTopic, i % 2, `k${i % 10}`, i % 7 === 0 ? null : `v${i}`);
    const model = new FleetModel();
    const following = startFleet(["127.0.0.1:1", plain.target], { topics: [plainTopic], store: model, backoffInitialMs: 50, backoffMaxMs: 500 }, model);
    let ends = await kafka.ends(plainTopic);
    await waitFor("the follow to reach the end", () => reached(model, ends));
    for (let i = 40; i < 60; i++) await kafka.send(plainTopic, i % 2, `k${i % 10}`, `v${i}`);
    ends = await kafka.ends(plainTopic);
    await waitFor("the follow to apply live records", () => reached(model, ends));
    await following.stop();
    assert.equal(model.resets, 1);
    assert.deepEqual(model.state, await kafka.rebuild(plainTopic));
    // The named subscription is allowed here: the plain follow takes it.
    const named = new FleetModel();
    const byName = startFleet([plain.target], { topics: [plainTopic], store: named, subscriptionName: uniqueName("ts-fleet-plain-sub") }, named);
    await waitFor("the named follow to reach the end", () => reached(named, ends));
    await byName.stop();
    assert.deepEqual(named.state, model.state);
  } finally {
    await plain.close();
  }
});

test("a sharded fleet: a replica killed and started again, nothing lost, nothing applied twice", async () => {
  const [r1, r2, r3] = replicas as [GatewayProcess, GatewayProcess, GatewayProcess];
  // Each key stays on one partition (key j on partition j % 6) so the rebuild is well defined.
  let i = 0;
  const write = (n: number) => kafka.send(topic, n % PARTITIONS, `k${n % 60}`, n % 11 === 0 ? null : `v${n}`);
  for (; i < 120; i++) await write(i);

  const initial = await settled([r1, r2, r3], (o) => new Set(o.values()).size === 3);
  console.log(`fleet settled: ${[...initial].map(([p, o]) => `${p}->${o}`).join(" ")}`);
  // Replicas advertise their listen address.
  assert.ok([...initial.values()].every((o) => [r1, r2, r3].some((r) => r.target === o)), "owners are the replicas' addresses");

  const model = new FleetModel();
  const errors: TributaryError[] = [];
  const following = startFleet(
    [r1.target, r2.target],
    { topics: [topic], store: model, maxBatchRecords: 100, backoffInitialMs: 100, backoffMaxMs: 1000, onError: (e) => errors.push(e) },
    model,
  );

  // A keeps writing throughout.
  let producing = true;
  const producer = (async () => {
    while (producing) {
      await write(i++);
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  try {
    await waitFor("the follower to reach the end of what was there", async () => reached(model, await kafka.ends(topic)), 60_000);

    const victim = r3;
    const moved = [...initial].filter(([, o]) => o === victim.target).map(([p]) => p);
    assert.ok(moved.length > 0, "the killed replica held partitions");
    const endsAtKill = await kafka.ends(topic);
    const killedAt = Date.now();
    await victim.kill();
    console.log(`killed ${victim.target} (partitions ${moved.join(",")})`);

    // Its partitions move to the survivors (after the session timeout) and are followed there.
    const servedAfter = new Map<number, number>();
    await waitFor(
      "the killed replica's partitions to be followed on the survivors",
      async () => {
        const position = await model.load();
        for (const p of moved) {
          if (!servedAfter.has(p) && (position?.get(topic, p) ?? 0n) > endsAtKill.get(topic, p)!) servedAfter.set(p, Date.now() - killedAt);
        }
        return servedAfter.size === moved.length;
      },
      90_000,
      50,
    );
    for (const [p, ms] of servedAfter) console.log(`partition ${p} moved and was served again ${ms} ms after the kill (session timeout ${SESSION_MS} ms)`);
    // The other partitions went on meanwhile.
    await waitFor("every partition to pass the kill", async () => {
      const position = await model.load();
      return [...endsAtKill].every((e) => (position?.get(e.topic, e.partition) ?? 0n) > e.offset);
    }, 60_000);

    // The replica comes back (same instance id, same port) and takes partitions again.
    const restartedAt = Date.now();
    await victim.restart();
    await settled([r1, r2, r3], (o) => new Set(o.values()).size === 3);
    console.log(`${victim.target} is back and owns partitions again after ${Date.now() - restartedAt} ms`);
    const endsAtReturn = await kafka.ends(topic);
    await waitFor("the follower to pass the return", async () => {
      const position = await model.load();
      return [...endsAtReturn].every((e) => (position?.get(e.topic, e.partition) ?? 0n) > e.offset);
    }, 60_000);
  } finally {
    producing = false;
    await producer;
  }

  const ends = await kafka.ends(topic);
  await waitFor("the follower to reach the end", () => reached(model, ends), 60_000);
  await following.stop();

  console.log(`errors seen by the follow: ${errors.map((e) => `${e.codeName}${e.reason ? `/${e.reason}` : ""}`).join(", ")}`);
  assert.equal(model.resets, 1, "one snapshot: a move continues from the position");
  assert.equal(model.partialPositions, 0, "every position names every partition");
  assert.ok(model.inner.load()!.equals(ends), "the store holds the end position");
  assert.deepEqual(model.state, await kafka.rebuild(topic), "the follower's state is the raw rebuild");
  const start = model.snapshotAt!;
  let streamedTotal = 0;
  for (let p = 0; p < PARTITIONS; p++) {
    const from = start.get(topic, p)!;
    const end = ends.get(topic, p)!;
    const want: bigint[] = [];
    for (let o = from; o < end; o++) want.push(o);
    const got = model.streamed.get(p) ?? [];
    streamedTotal += got.length;
    assert.deepEqual(got, want, `partition ${p}: every record after the snapshot once, in order`);
  }
  console.log(`streamed ${streamedTotal} records after the snapshot, ${i} written`);
  assert.ok(errors.every((e) => e.code !== Code.OutOfRange), "no re-snapshot");
});
