// Handoff (snapshot while A writes, then follow), and error details decoded.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code, follow, MemoryStore, toTributaryError, TributaryError } from "../src/index.js";
import { GatewayProcess, KafkaFixture, StateHandler, reached, startFollow, stopAll, waitFor } from "./fixtures.js";

let kafka: KafkaFixture;
let gateway: GatewayProcess;
let topic: string;

before(async () => {
  kafka = await KafkaFixture.connect();
  topic = await kafka.createTopic("ts-handoff", 3);
  gateway = await GatewayProcess.start({ topics: [topic] });
});

after(async () => {
  stopAll();
  await gateway?.close();
  await kafka?.close();
});

test("handoff: snapshot while A writes, then follow; equals a rebuild from offset 0, nothing applied twice", async () => {
  const keys = 40;
  const write = async (i: number) => {
    const key = `key/${i % keys}`;
    const partition = (i % keys) % 3; // a key lives in one partition, as with a key partitioner
    // Every 7th write of a key deletes it; the next one brings it back.
    await kafka.send(topic, partition, key, i % 7 === 3 ? null : `v${i}`);
  };
  let i = 0;
  for (; i < 200; i++) await write(i);

  // A keeps writing while B snapshots and follows.
  let stopWriting = false;
  const writer = (async () => {
    for (; !stopWriting && i < 2000; i++) await write(i);
  })();

  const handler = new StateHandler();
  const store = new MemoryStore();
  const errors: TributaryError[] = [];
  const following = startFollow(gateway.client(), { topics: [topic], store, maxBatchRecords: 17, onError: (e) => errors.push(e) }, handler);

  await waitFor("the follow to apply its snapshot and 100 live records", () => handler.log.filter((c) => !c.snapshot).length >= 100, 30_000);
  stopWriting = true;
  await writer;
  const written = i;
  const ends = await kafka.ends(topic);
  await waitFor("the follow to reach the end", () => reached(store, ends));
  await following.stop();

  assert.ok(written > 200, `A wrote while B followed (${written} records)`);
  assert.equal(handler.resets, 1);
  assert.ok(handler.log.some((c) => c.snapshot), "a snapshot was applied");
  assert.deepEqual(handler.duplicates, []);
  assert.deepEqual(errors, []);
  const rebuilt = await kafka.rebuild(topic);
  assert.ok(rebuilt.size > 0 && rebuilt.size < keys, `some keys are deleted at the end (${rebuilt.size})`);
  assert.deepEqual(new Map([...handler.state].sort()), new Map([...rebuilt].sort()));
  // Every offset after the snapshot came exactly once, in order per partition.
  for (const p of [0, 1, 2]) {
    const live = handler.log.filter((c) => !c.snapshot && c.partition === p).map((c) => c.offset);
    for (let k = 1; k < live.length; k++) assert.equal(live[k], live[k - 1]! + 1n, `partition ${p} has no gap`);
    assert.equal(live.at(-1)! + 1n, ends.get(topic, p));
  }
});

test("errors: unknown topic is NOT_FOUND with reason UNKNOWN_TOPIC", async () => {
  const client = gateway.client();
  try {
    const err = await collect(client.gateway.getSnapshot({ topics: ["no-such-topic-ts"] })).then(
      () => assert.fail("GetSnapshot of an unknown topic succeeded"),
      toTributaryError,
    );
    assert.equal(err.code, Code.NotFound);
    assert.equal(err.codeName, "NOT_FOUND");
    assert.equal(err.reason, "UNKNOWN_TOPIC");
    assert.ok(err.domain.length > 0, "ErrorInfo has a domain");
    assert.match(err.rawMessage, /no-such-topic-ts/);

    // The follow helper stops with the same decoded error.
    const followed = await follow(client, { topics: ["no-such-topic-ts"] }, new StateHandler()).then(
      () => assert.fail("follow of an unknown topic resolved"),
      (e: unknown) => e,
    );
    assert.ok(followed instanceof TributaryError);
    assert.equal(followed.reason, "UNKNOWN_TOPIC");
  } finally {
    client.close();
  }
});

test("errors: a negative offset is INVALID_ARGUMENT naming the field in a BadRequest", async () => {
  const client = gateway.client();
  try {
    const err = await collect(
      client.gateway.subscribe({ fromOffsets: [{ topic, partition: 0, offset: 0n }, { topic, partition: 1, offset: -5n }] }),
    ).then(() => assert.fail("Subscribe from a negative offset succeeded"), toTributaryError);
    assert.equal(err.code, Code.InvalidArgument);
    assert.deepEqual(
      err.fieldViolations.map((v) => v.field),
      ["from_offsets[1].offset"],
    );
    assert.ok(err.fieldViolations[0]!.description.length > 0);
  } finally {
    client.close();
  }
});

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const m of stream) out.push(m);
  return out;
}

test("a handler that throws stops the follow with its error; the position stays at the last save", async () => {
  const store = new MemoryStore();
  const boom = new Error("the handler failed");
  const handler = { reset() {}, apply() { throw boom; } };
  const result = await follow(gateway.client(), { topics: [topic], store }, handler).then(
    () => assert.fail("the follow resolved"),
    (e: unknown) => e,
  );
  assert.equal(result, boom);
  assert.equal(store.position, undefined, "the snapshot was never saved");
});
