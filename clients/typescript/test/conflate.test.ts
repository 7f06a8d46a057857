// Conflation through the follow helper: a B whose handler is slow, following with `conflate`
// while A rewrites a few keys many times at full speed, applies far fewer changes than A wrote,
// and its model at the end is exactly a raw rebuild of the topic (docs/contract.md "Conflation").
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { MemoryStore, TributaryError, type Change, type Position } from "../src/index.js";
import { GatewayProcess, KafkaFixture, StateHandler, entries, reached, startFollow, stopAll, waitFor } from "./fixtures.js";

const KEYS = 10;
const WRITES = 5000;
const PAD = "x".repeat(500); // values large enough that HTTP/2's windows do not hold them all

let kafka: KafkaFixture;
let gateway: GatewayProcess;
let topic: string;

before(async () => {
  kafka = await KafkaFixture.connect();
  topic = await kafka.createTopic("ts-conflate", 1);
  // A one-message stream buffer: the gateway holds records back as soon as B is behind.
  gateway = await GatewayProcess.start({ topics: [topic], env: { TRIBUTARY__LIMITS__STREAM_BUFFER_MESSAGES: "1" } });
});

after(async () => {
  stopAll();
  await gateway?.close();
  await kafka?.close();
});

/** A `StateHandler` whose apply takes ~20 ms per batch: a B that falls behind. */
class SlowHandler extends StateHandler {
  override async apply(changes: Change[], position: Position | undefined): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, 20));
    super.apply(changes, position);
  }
}

test("conflate: a slow follower applies fewer changes than A wrote, and its model equals a raw rebuild", async () => {
  const store = new MemoryStore();
  const handler = new SlowHandler();
  const errors: TributaryError[] = [];
  const following = startFollow(
    gateway.client(),
    { topics: [topic], store, conflate: true, maxBatchRecords: 50, onError: (e) => errors.push(e) },
    handler,
  );
  // The (empty) snapshot is taken and the stream is open before A writes.
  await waitFor("the follow to start", () => store.load(), 20_000);

  // A rewrites 10 keys 5000 times in total, as fast as it can; now and then a delete.
  for (let i = 0; i < WRITES; i += 500) {
    await kafka.sendBatch(
      topic,
      Array.from({ length: 500 }, (_, j) => {
        const n = i + j;
        return { partition: 0, key: `k${n % KEYS}`, value: n % 97 === 13 ? null : `${n} ${PAD}` };
      }),
    );
  }
  const ends = await kafka.ends(topic);
  assert.equal([...ends][0]!.offset, BigInt(WRITES));
  await waitFor("the follow to reach the end", () => reached(store, ends), 60_000);
  await following.stop();

  const raw = await kafka.rebuild(topic);
  assert.equal(raw.size, KEYS);
  assert.deepEqual(entries(handler.state), entries(raw));
  assert.equal(handler.resets, 1);
  assert.deepEqual(handler.duplicates, []);
  assert.deepEqual(errors, []);
  const applied = handler.log.filter((c) => !c.snapshot).length;
  assert.ok(applied > 0, "the stream carried records");
  assert.ok(applied < WRITES, `${applied} of ${WRITES} changes applied: conflation left out intermediate values`);
});
