// Resume after a gateway restart: stop the process, start it again on the same port.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code, FileStore, type TributaryError } from "../src/index.js";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GatewayProcess, KafkaFixture, StateHandler, reached, startFollow, stopAll, waitFor } from "./fixtures.js";

let kafka: KafkaFixture;
let gateway: GatewayProcess;
let topic: string;
let dir: string;

before(async () => {
  kafka = await KafkaFixture.connect();
  topic = await kafka.createTopic("ts-restart", 2);
  gateway = await GatewayProcess.start({ topics: [topic] });
  dir = await mkdtemp(join(tmpdir(), "tributary-ts-store-"));
});

after(async () => {
  stopAll();
  await gateway?.close();
  await kafka?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("resume after a gateway restart: nothing lost, nothing applied twice, no second snapshot", async () => {
  const expected = new Map<string, string>();
  const write = async (i: number) => {
    const key = `k${i % 25}`;
    expected.set(key, `v${i}`);
    await kafka.send(topic, (i % 25) % 2, key, `v${i}`);
  };
  let i = 0;
  for (; i < 50; i++) await write(i);

  const store = new FileStore(join(dir, "position.json"));
  const handler = new StateHandler();
  const errors: TributaryError[] = [];
  const following = startFollow(
    gateway.client(),
    { topics: [topic], store, backoffInitialMs: 50, backoffMaxMs: 500, onError: (e) => errors.push(e) },
    handler,
  );
  let ends = await kafka.ends(topic);
  await waitFor("the follow to reach the end before the restart", () => reached(store, ends));
  for (; i < 80; i++) await write(i);
  ends = await kafka.ends(topic);
  await waitFor("the follow to apply live records", () => reached(store, ends));

  await gateway.stop();
  // A goes on writing while the gateway is down.
  for (; i < 120; i++) await write(i);
  await waitFor("the follow to notice the gateway is gone", () => errors.length > 0);
  await gateway.restart();
  for (; i < 150; i++) await write(i);
  ends = await kafka.ends(topic);
  await waitFor("the follow to reach the end after the restart", () => reached(store, ends), 30_000);
  await following.stop();

  assert.equal(handler.resets, 1, "the follow resumed from its position instead of re-snapshotting");
  assert.deepEqual(handler.duplicates, []);
  assert.deepEqual(handler.state, expected);
  assert.ok(errors.every((e) => e.code === Code.Unavailable || e.code === Code.Internal || e.code === Code.Canceled), errors.map(String).join("; "));
  assert.ok((await store.load())!.equals(ends), "the file store holds the end position");
  for (const p of [0, 1]) {
    const offsets = handler.log.filter((c) => c.partition === p && !c.snapshot).map((c) => c.offset);
    for (let k = 1; k < offsets.length; k++) assert.equal(offsets[k], offsets[k - 1]! + 1n, `partition ${p}: no gap, no repeat`);
  }
});
