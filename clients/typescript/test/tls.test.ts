// TLS with client certificates (mutual TLS) from scripts/certs.sh, and bearer tokens.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Code, follow, MemoryStore, Position, TributaryError, toTributaryError } from "../src/index.js";
import { GatewayProcess, KafkaFixture, StateHandler, reached, repo, startFollow, stopAll, waitFor } from "./fixtures.js";

let kafka: KafkaFixture;
let gateway: GatewayProcess;
let topic: string;
let certs: string;
const token = "s3cret-token-for-b";

before(async () => {
  kafka = await KafkaFixture.connect();
  topic = await kafka.createTopic("ts-tls", 1);
  certs = await mkdtemp(join(tmpdir(), "tributary-ts-certs-"));
  execFileSync("bash", [join(repo, "scripts/certs.sh"), certs, "client"], { stdio: "ignore" });
  gateway = await GatewayProcess.start({ topics: [topic], certsDir: certs, tokens: { [token]: "b-service" } });
});

after(async () => {
  stopAll();
  await gateway?.close();
  await kafka?.close();
  if (certs) await rm(certs, { recursive: true, force: true });
});

test("TLS + mTLS + bearer token: the follow works over TLS", async () => {
  for (let i = 0; i < 5; i++) await kafka.send(topic, 0, `k${i}`, `v${i}`);
  const store = new MemoryStore();
  const handler = new StateHandler();
  // Verified against the CA; `localhost` is in the server certificate, as is 127.0.0.1.
  const client = gateway.client({ serverName: "localhost" });
  assert.ok(gateway.target.startsWith("127.0.0.1:"));
  const following = startFollow(client, { topics: [topic], store }, handler);
  await waitFor("the snapshot over TLS", () => handler.state.size === 5);
  await kafka.send(topic, 0, "k5", "v5");
  await waitFor("a live record over TLS", () => reached(store, Position.fromOffsets([{ topic, partition: 0, offset: 6n }])));
  await following.stop();
  client.close();
  assert.equal(handler.state.get("k5"), "v5");
});

test("an unknown bearer token is UNAUTHENTICATED, and the follow stops with it", async () => {
  const client = gateway.client({ token: "not-a-known-token" });
  try {
    const err = await client.gateway.describeTopics({}).then(() => assert.fail("an unknown token was accepted"), toTributaryError);
    assert.equal(err.code, Code.Unauthenticated);
    const stopped = await follow(client, { topics: [topic] }, new StateHandler()).then(
      () => assert.fail("the follow resolved"),
      (e: unknown) => e,
    );
    assert.ok(stopped instanceof TributaryError);
    assert.equal(stopped.codeName, "UNAUTHENTICATED");
  } finally {
    client.close();
  }
});

test("without a client certificate the handshake fails, and the follow stops; plain HTTP/2 is refused", async () => {
  const noCert = gateway.client({ cert: undefined, key: undefined });
  const plain = gateway.client({ ca: undefined, cert: undefined, key: undefined });
  try {
    const err = await noCert.gateway.describeTopics({}, { timeoutMs: 5000 }).then(() => assert.fail("the call succeeded"), toTributaryError);
    assert.match(err.rawMessage, /certificate required/);
    const stopped = await follow(noCert, { topics: [topic] }, new StateHandler()).then(
      () => assert.fail("the follow resolved"),
      (e: unknown) => e,
    );
    assert.ok(stopped instanceof TributaryError, "a TLS failure is not retried");
    assert.match(stopped.rawMessage, /certificate required/);

    const refused = await plain.gateway.describeTopics({}, { timeoutMs: 5000 }).then(() => assert.fail("plain HTTP/2 was served"), toTributaryError);
    assert.ok(refused instanceof TributaryError);
  } finally {
    noCert.close();
    plain.close();
  }
});
