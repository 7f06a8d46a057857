// web/demo.html in a real Chromium (playwright-core driving the system's /usr/bin/chromium): a
// page served from another origin follows a topic through the gateway's HTTP log with
// dist/web.js, across CORS, while records (deletes among them) are written; its state must equal
// a raw rebuild of the topic. From an origin the gateway does not allow, the page reads nothing
// and says so. Needs `npm run build` (test.sh does it) for dist/web.js.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { changes, entries, GatewayProcess, KafkaFixture, waitFor } from "./fixtures.js";

const root = resolve(fileURLToPath(import.meta.url), "../..");
const chromiumPath = process.env.TRIBUTARY_CHROMIUM ?? "/usr/bin/chromium";

let kafka: KafkaFixture;
let gateway: GatewayProcess;
let topic: string;
let allowed: Server;
let refused: Server;
let userDataDir: string;
let browser: BrowserContext;

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".map": "application/json",
  ".css": "text/css",
};

/** Serves web/ and dist/ of the package, nothing else, on a loopback port of its own (an origin). */
async function staticServer(): Promise<Server> {
  const server = createServer(async (req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const file = resolve(root, "." + path);
    if (!/^\/(web|dist)\/[\w.-]+$/.test(path) || !file.startsWith(root + "/")) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  return server;
}

const origin = (server: Server) => `http://127.0.0.1:${(server.address() as { port: number }).port}`;

before(async () => {
  assert.ok(existsSync(join(root, "dist/web.js")), "dist/web.js is missing: run `npm run build` (test.sh does)");
  assert.ok(existsSync(chromiumPath), `no Chromium at ${chromiumPath} (apt-get install chromium, or set TRIBUTARY_CHROMIUM)`);
  kafka = await KafkaFixture.connect();
  topic = await kafka.createTopic("ts-browser", 3);
  await kafka.sendBatch(topic, changes(0, 300, 3));
  allowed = await staticServer();
  refused = await staticServer();
  gateway = await GatewayProcess.start({
    topics: [topic],
    http: { corsOrigins: [origin(allowed)], chunkOffsets: 100, longPollMs: 2000 },
  });
  userDataDir = await mkdtemp(join(tmpdir(), "tributary-chromium-"));
  browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
  allowed?.close();
  refused?.close();
  await gateway?.close();
  await kafka?.close();
});

interface PageStatus {
  position: string | null;
  upToDate: boolean;
  kind: string | null;
  restarts: number;
  answers: Record<"snapshot" | "chunk" | "live", number>;
  error: { status: number; reason: string; message: string } | null;
  retrying: boolean;
  stopped: boolean;
}

// The page's globals (this package type-checks without the DOM's types).
const pageStatus = (page: Page) => page.evaluate(() => (globalThis as unknown as { tributaryStatus: PageStatus }).tributaryStatus);
const pageState = (page: Page) =>
  page.evaluate(() => (globalThis as unknown as { tributaryState: () => Record<string, string> }).tributaryState());

/** Opens the demo from `server`'s origin on this test's topic; collects the page's errors. */
async function open(server: Server): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()} (${m.location().url})`);
  });
  const url = `${origin(server)}/web/demo.html?gateway=${encodeURIComponent(gateway.httpUrl)}&topic=${encodeURIComponent(topic)}`;
  await page.goto(url);
  return { page, problems };
}

test("Chromium: a page on another origin follows the topic live; its state equals a raw rebuild", async () => {
  const { page, problems } = await open(allowed);
  await waitFor("the page's snapshot", async () => (await pageStatus(page)).answers.snapshot === 1);
  // Bursts of 100 records while the page follows: chunks when it falls behind, long-polls at the head.
  for (let i = 300; i < 3300; i += 100) {
    await kafka.sendBatch(topic, changes(i, 100, 3));
    await new Promise((r) => setTimeout(r, 20));
  }
  const want = entries(await kafka.rebuild(topic));
  const wanted = JSON.stringify(want);
  try {
    await waitFor(
      "the page to be up to date with the rebuilt state",
      async () => (await pageStatus(page)).upToDate && JSON.stringify(entries(await pageState(page))) === wanted,
      60_000,
      200,
    );
  } finally {
    assert.deepEqual(entries(await pageState(page)), want, "the page's whole state"); // shows the difference
  }
  const status = await pageStatus(page);
  assert.equal(status.error, null);
  assert.equal(status.restarts, 0);
  assert.ok(status.answers.chunk + status.answers.live > 0, JSON.stringify(status.answers));
  // The table shows the state too, once redrawn.
  await waitFor("the table to show every key", async () => (await page.locator("#rows tr").count()) === want.length);
  const first = await page.locator("#rows tr").first().locator("td").allTextContents();
  assert.deepEqual(first.slice(0, 2), want[0]);
  assert.deepEqual(problems, []);
  await page.close();
});

test("Chromium: from an origin the gateway does not allow, the page reads nothing and reports it", async () => {
  const { page } = await open(refused);
  const status = await waitFor("the page to report the refusal", async () => {
    const s = await pageStatus(page);
    return s.error ? s : undefined;
  });
  assert.equal(status.error!.reason, "NETWORK", JSON.stringify(status.error));
  assert.equal(status.retrying, true);
  assert.equal(status.answers.snapshot, 0);
  assert.deepEqual(await pageState(page), {});
  await page.close();
});
