// followLog (src/web.ts) in Node, with its global fetch, against the real gateway's HTTP log and a
// real Kafka: snapshot then long-polls equal a raw rebuild; 409s restart from the snapshot;
// permanent errors stop it; transient ones are retried; an answer for another position stops it;
// binary keys and values and key filters.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { followLog, LogError, LogState, type Fetch, type FollowLogOptions, type LogInfo } from "../src/web.js";
import { changes, entries, GatewayProcess, KafkaFixture, waitFor } from "./fixtures.js";

let kafka: KafkaFixture;
let gateway: GatewayProcess;
let topic: string;
let binaryTopic: string;
const running: AbortController[] = [];

before(async () => {
  kafka = await KafkaFixture.connect();
  topic = await kafka.createTopic("ts-web", 3);
  binaryTopic = await kafka.createTopic("ts-web-binary", 1);
  await kafka.sendBatch(topic, changes(0, 300, 3));
  gateway = await GatewayProcess.start({ topics: [topic, binaryTopic], http: { chunkOffsets: 100, longPollMs: 1000 } });
});

after(async () => {
  for (const c of running) c.abort();
  await gateway?.close();
  await kafka?.close();
});

/** Starts a follow that `after` stops should the test fail first, recording what it reports. */
function start(options: Omit<FollowLogOptions, "baseUrl" | "signal">) {
  const controller = new AbortController();
  running.push(controller);
  const infos: LogInfo[] = [];
  const errors: { error: LogError; retryInMs: number | undefined }[] = [];
  const follow = followLog({
    baseUrl: gateway.httpUrl,
    signal: controller.signal,
    backoffInitialMs: 20,
    ...options,
    onState: (state, info) => {
      infos.push(info);
      options.onState?.(state, info);
    },
    onError: (error, retryInMs) => errors.push({ error, retryInMs }),
  });
  follow.done.catch(() => {}); // observed by the tests through `done`
  return {
    ...follow,
    infos,
    errors,
    last: () => infos.at(-1),
    async stop(): Promise<void> {
      controller.abort();
      await follow.done;
    },
  };
}

/** Waits until the follow is up to date with exactly `want` (the whole state, not a count). */
async function converges(follow: ReturnType<typeof start>, want: Map<string, string>, what: string): Promise<void> {
  const wanted = JSON.stringify(entries(want));
  try {
    await waitFor(what, () => follow.last()?.upToDate && JSON.stringify(entries(follow.state.toObject())) === wanted, 30_000);
  } finally {
    assert.deepEqual(entries(follow.state.toObject()), entries(want), "the whole state"); // shows the difference
  }
}

test("followLog: the snapshot, then chunks and long-polls while the topic is written, rebuild it exactly", async () => {
  const follow = start({ topic });
  await waitFor("the snapshot", () => follow.infos.length > 0);
  assert.equal(follow.infos[0]!.kind, "snapshot");
  for (let i = 300; i < 2300; i += 100) await kafka.sendBatch(topic, changes(i, 100, 3));
  await converges(follow, await kafka.rebuild(topic), "the follow to equal a raw rebuild");
  const kinds = new Set(follow.infos.map((i) => i.kind));
  assert.ok(kinds.has("chunk") && kinds.has("live"), `chunks and live answers: ${[...kinds]}`);
  assert.deepEqual(follow.errors, []);
  assert.equal(follow.last()!.restarts, 0);
  await follow.stop();
});

test("a 409 (another epoch, another partition count, beyond the end) restarts from the snapshot", async () => {
  const want = await kafka.rebuild(topic);
  for (const [from, reason] of [
    ["0_0.0.0", "EPOCH_CHANGED"],
    ["1_0", "PARTITIONS_CHANGED"],
    ["1_0.0.99999999", "OFFSET_BEYOND_END"],
  ] as const) {
    // A state that the snapshot must replace, not merge with.
    const state = new LogState();
    state.apply({ partition: 0, offset: 0, timestampMs: 0, key: "stale", value: "x", headers: [], index: undefined, snapshot: false });
    const follow = start({ topic, from, state });
    await converges(follow, want, `the follow from ${from} to restart`);
    assert.deepEqual(follow.errors.map((e) => [e.error.status, e.error.reason, e.retryInMs]), [[409, reason, 0]], from);
    assert.match(String(follow.errors[0]!.error.details.restart), /^\/v1\/topics\/.*from=-1&epoch=1$/);
    assert.equal(follow.infos[0]!.kind, "snapshot");
    assert.equal(follow.last()!.restarts, 1);
    await follow.stop();
  }
});

test("an unknown topic is an error with its reason, and the follow stops without retrying", async () => {
  let requests = 0;
  const counting: Fetch = (url, init) => {
    requests++;
    return fetch(url, init);
  };
  const follow = start({ topic: "no-such-topic-here", fetch: counting });
  const err = await follow.done.then(() => assert.fail("the follow ended without an error"), (e: unknown) => e);
  assert.ok(err instanceof LogError, String(err));
  assert.equal(err.status, 404);
  assert.equal(err.reason, "UNKNOWN_TOPIC");
  assert.match(err.message, /no-such-topic-here/);
  assert.equal(requests, 1);
  assert.deepEqual(follow.errors.map((e) => [e.error.reason, e.retryInMs]), [["UNKNOWN_TOPIC", undefined]]);
});

test("a network error and a 503 with Retry-After are retried; the follow still rebuilds the topic", async () => {
  let calls = 0;
  const faulty: Fetch = async (url, init) => {
    calls++;
    if (calls === 2) throw new TypeError("fetch failed");
    if (calls === 3) {
      const body = { error: { status: 503, code: "Unavailable", reason: "NOT_READY", message: "warming up", details: {} } };
      return new Response(JSON.stringify(body), { status: 503, headers: { "retry-after": "0", "content-type": "application/json" } });
    }
    if (calls === 4) return new Response("<html>bad gateway</html>", { status: 502 });
    return fetch(url, init);
  };
  const follow = start({ topic, fetch: faulty });
  await kafka.sendBatch(topic, changes(2300, 150, 3));
  await converges(follow, await kafka.rebuild(topic), "the follow to get past the faults");
  assert.deepEqual(
    follow.errors.map((e) => [e.error.status, e.error.reason, e.retryInMs !== undefined]),
    [
      [0, "NETWORK", true],
      [503, "NOT_READY", true],
      [502, "HTTP_502", true],
    ],
  );
  assert.equal(follow.last()!.restarts, 0);
  await follow.stop();
});

test("an answer for another position than asked (a CDN that drops the query string) stops the follow", async () => {
  // After the snapshot, every request is sent as the snapshot's URL.
  const pathOnly: Fetch = (url, init) => fetch(url.replace(/from=[^&]*/, "from=-1").replace("&live=1", ""), init);
  const follow = start({ topic, fetch: pathOnly });
  const err = await follow.done.then(() => assert.fail("the follow ended without an error"), (e: unknown) => e);
  assert.ok(err instanceof LogError, String(err));
  assert.equal(err.reason, "WRONG_POSITION");
  assert.match(err.message, /from '-1'/);
  assert.equal(follow.infos.length, 1, "only the snapshot was applied");
});

test("binary keys and values are decoded; deletes of binary keys apply", async () => {
  const k1 = Buffer.from([0xff, 0x00, 0x01]);
  const k2 = Buffer.from([0xfe]);
  await kafka.sendBatch(binaryTopic, [
    { partition: 0, key: k1, value: Buffer.from([0xc3, 0x28]) },
    { partition: 0, key: k2, value: "text" },
    { partition: 0, key: "text-key", value: Buffer.from([0x80]) },
    { partition: 0, key: "é", value: "ü" },
  ]);
  const follow = start({ topic: binaryTopic });
  await waitFor("the snapshot", () => follow.state.size === 4);
  assert.deepEqual(follow.state.get(new Uint8Array(k1)), new Uint8Array([0xc3, 0x28]));
  assert.equal(follow.state.get(new Uint8Array(k2)), "text");
  assert.deepEqual(follow.state.get("text-key"), new Uint8Array([0x80]));
  assert.equal(follow.state.get("é"), "ü");
  await kafka.sendBatch(binaryTopic, [{ partition: 0, key: k1, value: null }]);
  await waitFor("the delete", () => follow.state.size === 3);
  assert.equal(follow.state.get(new Uint8Array(k1)), undefined);
  await follow.stop();
});

test("key filters: only the keys asked for, exact and by prefix", async () => {
  const all = await kafka.rebuild(topic);
  const want = new Map([...all].filter(([k]) => k === "k7" || k.startsWith("k1")));
  assert.ok(want.size > 5);
  const follow = start({ topic, keys: ["k7"], keyPrefixes: ["k1"] });
  await converges(follow, want, "the filtered follow");
  await follow.stop();
});
