// OUT_OF_RANGE recovery, a translator, a durable subscription.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Code, MemoryStore, Position, toTributaryError, type TributaryError } from "../src/index.js";
import { GatewayProcess, KafkaFixture, StateHandler, reached, repo, startFollow, stopAll, waitFor } from "./fixtures.js";

let kafka: KafkaFixture;
let gateway: GatewayProcess;
let oorTopic: string;
let translatedTopic: string;
let durableTopic: string;

before(async () => {
  kafka = await KafkaFixture.connect();
  oorTopic = await kafka.createTopic("ts-oor", 1);
  translatedTopic = await kafka.createTopic("ts-translated", 2);
  durableTopic = await kafka.createTopic("ts-durable", 2);
  gateway = await GatewayProcess.start({ topics: [oorTopic, translatedTopic, durableTopic] });
});

after(async () => {
  stopAll();
  await gateway?.close();
  await kafka?.close();
});

test("OUT_OF_RANGE: a position older than Kafka retains makes the follower re-snapshot and reset", async () => {
  const topic = oorTopic;
  for (let i = 0; i < 10; i++) await kafka.send(topic, 0, `k${i}`, `first-${i}`);
  const store = new MemoryStore();
  const handler = new StateHandler();
  const first = startFollow(gateway.client(), { topics: [topic], store }, handler);
  await waitFor("the first follow to reach offset 10", () => reached(store, Position.fromOffsets([{ topic, partition: 0, offset: 10n }])));
  await first.stop();
  assert.equal(store.position?.get(topic, 0), 10n);

  for (let i = 10; i < 20; i++) await kafka.send(topic, 0, `k${i}`, `second-${i}`);
  await kafka.admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: "15" }] });

  // The error itself, decoded: OUT_OF_RANGE, OFFSET_TOO_OLD, with the EARLIEST offsets.
  const client = gateway.client();
  const err = await waitFor("Subscribe from offset 10 to fail OUT_OF_RANGE", async () => {
    try {
      for await (const _ of client.gateway.subscribe({ fromOffsets: [{ topic, partition: 0, offset: 10n }] }, { timeoutMs: 2000 })) {
        // progress comes first when the offset is still valid: not yet deleted as seen by the gateway
      }
    } catch (e) {
      const decoded = toTributaryError(e);
      if (decoded.code === Code.OutOfRange) return decoded;
    }
    return undefined;
  });
  client.close();
  assert.equal(err.codeName, "OUT_OF_RANGE");
  assert.equal(err.reason, "OFFSET_TOO_OLD");
  assert.equal(err.offsetsKind, "EARLIEST");
  assert.equal(err.offsets?.get(topic, 0), 15n);

  // The follower: same store, position 10, which Kafka no longer has.
  const errors: TributaryError[] = [];
  const second = startFollow(gateway.client(), { topics: [topic], store, onError: (e) => errors.push(e) }, handler);
  const ends = Position.fromOffsets([{ topic, partition: 0, offset: 20n }]);
  await waitFor("the follow to re-snapshot to offset 20", () => reached(store, ends));
  await second.stop();
  assert.deepEqual(errors.map((e) => `${e.codeName} ${e.reason}`), ["OUT_OF_RANGE OFFSET_TOO_OLD"]);
  assert.equal(handler.resets, 2, "the handler was reset before the new snapshot");
  for (let i = 10; i < 20; i++) assert.equal(handler.state.get(`k${i}`), `second-${i}`);
  assert.deepEqual(handler.duplicates, []);
});

test("a translator: upload field-mapper.wasm, follow through it (snapshot and stream)", async () => {
  const topic = translatedTopic;
  const wasm = await readFile(join(repo, "translators/dist/field-mapper.wasm"));
  const client = gateway.client();
  const version = await client.uploadTranslator("b-model", wasm);
  assert.equal(version.name, "b-model");
  assert.equal(version.digest, createHash("sha256").update(wasm).digest("hex"));
  assert.equal(version.size, BigInt(wasm.length));
  const listed = await client.translators.list({});
  assert.deepEqual(listed.translators.map((t) => t.name), ["b-model"]);

  const value = (id: number, station: string) => JSON.stringify({ id, station, status: "on-air", version: 3 });
  for (let id = 0; id < 6; id++) await kafka.send(topic, id % 2, `assignment/${id}`, value(id, "north"));
  // The snapshot is exact at the view's offsets, which may still lag what Kafka acknowledged: wait
  // until the view holds the six, so the snapshot (not the stream) carries them.
  await waitFor("the view to hold the six records", async () => {
    const described = await client.gateway.describeTopics({ topics: [topic] }, { timeoutMs: 2000 });
    return described.topics[0]?.partitions.every((p) => p.viewOffset === 3n);
  });
  const store = new MemoryStore();
  const handler = new StateHandler();
  const config = JSON.stringify({ rename: { station: "location", id: "assignment_id" }, drop: ["version"], key_prefix: "b/" });
  const following = startFollow(client, { topics: [topic], store, translator: { name: "b-model", digest: version.digest, config } }, handler);
  await waitFor("the translated snapshot", () => handler.state.size === 6);
  await kafka.send(topic, 1, "assignment/1", value(1, "south"));
  await kafka.send(topic, 0, "assignment/2", null);
  await waitFor("the translated stream", () => reached(store, Position.fromOffsets([{ topic, partition: 0, offset: 4n }, { topic, partition: 1, offset: 4n }])));
  await following.stop();
  client.close();

  assert.equal(handler.state.get("b/assignment/0"), '{"assignment_id":0,"location":"north","status":"on-air"}');
  assert.equal(handler.state.get("b/assignment/1"), '{"assignment_id":1,"location":"south","status":"on-air"}');
  assert.equal(handler.state.has("b/assignment/2"), false, "the tombstone went through with the prefixed key");
  assert.deepEqual([...handler.state.keys()].sort(), ["b/assignment/0", "b/assignment/1", "b/assignment/3", "b/assignment/4", "b/assignment/5"]);
  assert.ok(handler.log.some((c) => !c.snapshot) && handler.log.some((c) => c.snapshot));
});

test("a durable subscription: follow by name, stop, follow again by name with an empty store", async () => {
  const topic = durableTopic;
  const name = `ts-durable-${Date.now().toString(36)}`;
  for (let i = 0; i < 20; i++) await kafka.send(topic, i % 2, `k${i}`, `v${i}`);
  const handler = new StateHandler();
  const firstStore = new MemoryStore();
  const errors: TributaryError[] = [];
  const opts = { topics: [topic], subscriptionName: name, commitIntervalMs: 100, onError: (e: TributaryError) => errors.push(e) };
  const first = startFollow(gateway.client(), { ...opts, store: firstStore }, handler);
  let ends = await kafka.ends(topic);
  await waitFor("the first follow to reach the end", () => reached(firstStore, ends));
  await first.stop();
  assert.equal(handler.resets, 1, "the first follow snapshotted");

  const client = gateway.client();
  const info = await client.subscriptions.describe({ name });
  assert.deepEqual(
    info.partitions.map((p) => [p.partition, p.committedOffset]),
    [[0, 10n], [1, 10n]],
    "the clean stop committed the last position",
  );

  for (let i = 20; i < 30; i++) await kafka.send(topic, i % 2, `k${i}`, `v${i}`);
  const logBefore = handler.log.length;
  const secondStore = new MemoryStore();
  const second = startFollow(gateway.client(), { ...opts, store: secondStore }, handler);
  ends = await kafka.ends(topic);
  await waitFor("the second follow to reach the end", () => reached(secondStore, ends));
  await second.stop();

  assert.equal(handler.resets, 1, "the second follow resumed by name: no snapshot, no reset");
  const resumed = handler.log.slice(logBefore);
  assert.deepEqual(
    resumed.map((c) => c.key).sort(),
    Array.from({ length: 10 }, (_, k) => `k${k + 20}`).sort(),
    "exactly the records after the committed position",
  );
  assert.deepEqual(handler.duplicates, []);
  assert.equal(handler.state.size, 30);
  assert.deepEqual(errors, []);
  const after = await client.subscriptions.describe({ name });
  assert.deepEqual(after.partitions.map((p) => p.committedOffset), [15n, 15n]);
  await client.subscriptions.delete({ name });
  client.close();
});
