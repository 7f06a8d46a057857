// Record filters through the follow helper: a JSON field condition with tombstone_mismatches keeps
// B's model at exactly the keys whose latest value matches, while A writes before and during the
// follow; a malformed filter is INVALID_ARGUMENT naming the field.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code, follow, MemoryStore, toTributaryError, TributaryError, type RecordFilterOption } from "../src/index.js";
import { GatewayProcess, KafkaFixture, StateHandler, entries, reached, startFollow, stopAll, waitFor } from "./fixtures.js";

const PARTITIONS = 3;
const KEYS = 50;

let kafka: KafkaFixture;
let gateway: GatewayProcess;
let topic: string;

before(async () => {
  kafka = await KafkaFixture.connect();
  topic = await kafka.createTopic("ts-filter", PARTITIONS);
  gateway = await GatewayProcess.start({ topics: [topic] });
});

after(async () => {
  stopAll();
  await gateway?.close();
  await kafka?.close();
});

/** The i-th write: a key's status flips between open and closed; now and then a delete or a value that is not JSON. */
function write(i: number): { partition: number; key: string; value: string | null } {
  const k = i % KEYS;
  const key = `ticket/${k}`;
  const partition = k % PARTITIONS; // a key lives in one partition, as with a key partitioner
  if (i % 13 === 5) return { partition, key, value: null };
  if (i % 17 === 9) return { partition, key, value: "not json" };
  const status = (i * 31 + k * 7) % 5 < 2 ? "open" : "closed";
  return { partition, key, value: JSON.stringify({ id: k, status, n: i }) };
}

function isOpen(value: string): boolean {
  try {
    return (JSON.parse(value) as { status?: unknown }).status === "open";
  } catch {
    return false;
  }
}

test("recordFilter with tombstoneMismatches: the model is exactly the keys whose latest value is open", async () => {
  const total = 400;
  const half = total / 2;
  // Before the follow: the snapshot's part.
  for (let i = 0; i < half; i += 20) await kafka.sendBatch(topic, Array.from({ length: 20 }, (_, j) => write(i + j)));

  const store = new MemoryStore();
  const handler = new StateHandler();
  const errors: TributaryError[] = [];
  const recordFilter: RecordFilterOption = { fields: [{ pointer: "/status", anyOf: ['"open"'] }], tombstoneMismatches: true };
  const following = startFollow(gateway.client(), { topics: [topic], store, recordFilter, onError: (e) => errors.push(e) }, handler);
  // During the follow: the stream's part, one record at a time while the snapshot is taken and after.
  for (let i = half; i < total; i++) {
    const w = write(i);
    await kafka.send(topic, w.partition, w.key, w.value);
  }
  const ends = await kafka.ends(topic);
  await waitFor("the follow to reach the end", () => reached(store, ends), 30_000);
  await following.stop();

  // Independently: a raw rebuild of the topic, then the keys whose latest value has status "open".
  const raw = await kafka.rebuild(topic);
  const expected = new Map([...raw].filter(([, v]) => isOpen(v)));
  assert.ok(expected.size > 5 && expected.size < KEYS - 5, `a mix of open and closed keys (${expected.size} open)`);
  assert.deepEqual(entries(handler.state), entries(expected));
  assert.equal(handler.resets, 1);
  assert.deepEqual(handler.duplicates, []);
  assert.deepEqual(errors, []);
  assert.ok(handler.log.some((c) => c.snapshot), "the snapshot carried keys");
  assert.ok(handler.log.some((c) => !c.snapshot), "the stream carried records");
});

test("a bad record filter (a pointer without its leading /) is INVALID_ARGUMENT naming record_filter.fields[0].pointer", async () => {
  const recordFilter: RecordFilterOption = { fields: [{ pointer: "status", anyOf: ['"open"'] }] };

  // Through the follow helper: its snapshot call carries the filter, and the error is not retried.
  const client = gateway.client();
  try {
    const err = await follow(client, { topics: [topic], store: new MemoryStore(), recordFilter }, { reset() {}, apply() {} }).then(
      () => assert.fail("the follow resolved"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof TributaryError, String(err));
    assert.equal(err.code, Code.InvalidArgument, String(err));
    assert.deepEqual(
      err.fieldViolations.map((v) => v.field),
      ["record_filter.fields[0].pointer"],
    );
    assert.ok(err.fieldViolations[0]!.description.length > 0);

    // The Subscribe request names the same field.
    const sub = await (async () => {
      for await (const _ of client.gateway.subscribe({ topics: [topic], recordFilter: { fields: [{ pointer: "status" }] } }, { timeoutMs: 5000 })) {
        // no message comes before the error
      }
    })().then(() => assert.fail("Subscribe with a bad filter succeeded"), toTributaryError);
    assert.equal(sub.code, Code.InvalidArgument, String(sub));
    assert.deepEqual(
      sub.fieldViolations.map((v) => v.field),
      ["record_filter.fields[0].pointer"],
    );
  } finally {
    client.close();
  }
});
