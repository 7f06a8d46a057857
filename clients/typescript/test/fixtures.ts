// Test fixtures: the real gateway binary and a real Kafka.
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, writeFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Kafka, logLevel, Partitioners, type Admin, type Producer } from "kafkajs";
import { createClient, follow, Position, type Change, type FollowOptions, type Handler, type Store, type ClientOptions, type TributaryClient } from "../src/index.js";

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const bin = process.env.TRIBUTARY_BIN ?? join(repo, "target/debug/tributary");
export const bootstrap = process.env.TRIBUTARY_TEST_BOOTSTRAP ?? "127.0.0.1:9092";

export function uniqueName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;
}

/** Polls `check` until it returns a truthy value, or fails after `timeoutMs` with `what`. */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, timeoutMs = 20_000, everyMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

// ---------------------------------------------------------------- Kafka

const kafka = new Kafka({ clientId: "tributary-ts-tests", brokers: [bootstrap], logLevel: logLevel.NOTHING });

export class KafkaFixture {
  private constructor(
    readonly admin: Admin,
    readonly producer: Producer,
  ) {}

  static async connect(): Promise<KafkaFixture> {
    const admin = kafka.admin();
    await admin.connect();
    const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: false });
    await producer.connect();
    return new KafkaFixture(admin, producer);
  }

  async createTopic(prefix: string, partitions: number): Promise<string> {
    const topic = uniqueName(prefix);
    await this.admin.createTopics({ topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }], waitForLeaders: true });
    return topic;
  }

  /** Writes one record (null value: a tombstone) to a partition; returns its offset. */
  async send(topic: string, partition: number, key: string, value: string | null): Promise<bigint> {
    const [meta] = await this.producer.send({ topic, acks: -1, messages: [{ key, value, partition }] });
    return BigInt(meta!.baseOffset!);
  }

  /** Writes records in one produce call (values `null`: tombstones); keys and values may be bytes. */
  async sendBatch(topic: string, records: { partition: number; key: string | Buffer; value: string | Buffer | null }[]): Promise<void> {
    await this.producer.send({ topic, acks: -1, messages: records.map((r) => ({ key: r.key, value: r.value, partition: r.partition })) });
  }

  /** High watermarks (the offset after the last record) of every partition. */
  async ends(topic: string): Promise<Position> {
    const offsets = await this.admin.fetchTopicOffsets(topic);
    return Position.fromOffsets(offsets.map((o) => ({ topic, partition: o.partition, offset: BigInt(o.high) })));
  }

  /** A raw consumer's rebuild of the topic from offset 0: the last value per key, tombstones removed. */
  async rebuild(topic: string): Promise<Map<string, string>> {
    const ends = await this.ends(topic);
    const state = new Map<string, string>();
    const reached = new Map<number, bigint>();
    const consumer = kafka.consumer({ groupId: uniqueName("ts-rebuild"), maxWaitTimeInMs: 100 });
    await consumer.connect();
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({
        eachMessage: async ({ partition, message }) => {
          const key = message.key!.toString();
          if (message.value === null) state.delete(key);
          else state.set(key, message.value.toString());
          reached.set(partition, BigInt(message.offset) + 1n);
        },
      });
      await waitFor("the raw consumer to read to the end", () =>
        [...ends].every((e) => e.offset === 0n || (reached.get(e.partition) ?? 0n) >= e.offset),
        30_000,
      );
    } finally {
      await consumer.disconnect();
    }
    return state;
  }

  async close(): Promise<void> {
    await this.producer.disconnect();
    await this.admin.disconnect();
  }
}

// ---------------------------------------------------------------- the gateway

export interface GatewayOptions {
  topics: string[];
  /** `scripts/certs.sh` output: serves TLS, requires client certificates of its CA. */
  certsDir?: string;
  /** Static bearer tokens accepted by the gateway: token → identity. */
  tokens?: Record<string, string>;
  /** More environment for the process (e.g. `TRIBUTARY__SHARDING__GROUP`). */
  env?: Record<string, string>;
  /** Serves the HTTP log (`[http]`) on a free loopback port too: `httpUrl`. */
  http?: HttpOptions;
}

/** The `[http]` section's settings a test may set; the rest are the gateway's defaults. */
export interface HttpOptions {
  /** Page origins allowed by CORS (`["*"]` for any). */
  corsOrigins?: string[];
  chunkOffsets?: number;
  longPollMs?: number;
}

/** A loopback port that was free a moment ago (the gateway binds it itself). */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolvePort(port));
    });
  });
}

export class GatewayProcess {
  port = 0;
  /** The HTTP log's port (with `options.http`), kept across restarts like `port`. */
  httpPort = 0;
  private child: ChildProcess | undefined;
  private output = "";

  private constructor(
    readonly dir: string,
    readonly options: GatewayOptions,
  ) {}

  static async start(options: GatewayOptions): Promise<GatewayProcess> {
    const dir = await mkdtemp(join(tmpdir(), "tributary-ts-"));
    const gateway = new GatewayProcess(dir, options);
    await gateway.launch();
    return gateway;
  }

  get target(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** The HTTP log's base URL (what comes before `/v1/`). */
  get httpUrl(): string {
    if (!this.options.http) throw new Error("this gateway was started without `http`");
    return `http://127.0.0.1:${this.httpPort}`;
  }

  /** A client with the TLS files and the first token, unless `overrides` say otherwise. */
  client(overrides: Partial<ClientOptions> = {}): TributaryClient {
    const base: ClientOptions = { target: this.target };
    if (this.options.tokens) base.token = Object.keys(this.options.tokens)[0];
    return createClient({ ...base, ...this.tlsOptions(), ...overrides });
  }

  tlsOptions(): Partial<ClientOptions> {
    const certs = this.options.certsDir;
    if (!certs) return {};
    return {
      ca: readFileSync(join(certs, "ca.pem")),
      cert: readFileSync(join(certs, "client.pem")),
      key: readFileSync(join(certs, "client.key")),
    };
  }

  private async writeConfig(): Promise<string> {
    const lines = [
      `listen = "127.0.0.1:${this.port}"`,
      "[kafka]",
      `bootstrap_servers = "${bootstrap}"`,
      `topics = [${this.options.topics.map((t) => JSON.stringify(t)).join(", ")}]`,
      "metadata_refresh_ms = 1000",
      "[translators]",
      `data_dir = "${join(this.dir, "translators")}"`,
      "[limits]",
      "progress_interval_ms = 200",
    ];
    const certs = this.options.certsDir;
    if (certs) {
      lines.push(
        "[tls]",
        `cert_file = "${join(certs, "server.pem")}"`,
        `key_file = "${join(certs, "server.key")}"`,
        `client_ca_file = "${join(certs, "ca.pem")}"`,
      );
    }
    if (this.options.tokens) {
      const tokens = Object.entries(this.options.tokens)
        .map(([token, identity]) => `[[token]]\nidentity = "${identity}"\nsha256 = "${createHash("sha256").update(token).digest("hex")}"\n`)
        .join("\n");
      await writeFile(join(this.dir, "tokens.toml"), tokens);
      lines.push("[auth]", `tokens_file = "${join(this.dir, "tokens.toml")}"`);
    }
    const http = this.options.http;
    if (http) {
      if (this.httpPort === 0) this.httpPort = await freePort();
      lines.push("[http]", `listen = "127.0.0.1:${this.httpPort}"`);
      if (http.corsOrigins) lines.push(`cors_origins = [${http.corsOrigins.map((o) => JSON.stringify(o)).join(", ")}]`);
      if (http.chunkOffsets !== undefined) lines.push(`chunk_offsets = ${http.chunkOffsets}`);
      if (http.longPollMs !== undefined) lines.push(`long_poll_ms = ${http.longPollMs}`);
    }
    const path = join(this.dir, "tributary.toml");
    await writeFile(path, lines.join("\n") + "\n");
    return path;
  }

  private async launch(): Promise<void> {
    const config = await this.writeConfig();
    const child = spawn(bin, ["serve", "--config", config], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn", ...this.options.env },
    });
    this.child = child;
    this.output = "";
    const listening = new Promise<number>((resolvePort, reject) => {
      let stdout = "";
      child.stdout!.on("data", (data: Buffer) => {
        stdout += data.toString();
        this.output += data.toString();
        const m = /listening on [^\s]+:(\d+)/.exec(stdout);
        if (m) resolvePort(Number(m[1]));
      });
      child.stderr!.on("data", (data: Buffer) => {
        this.output += data.toString();
      });
      child.on("error", reject);
      child.on("exit", (code, sig) => reject(new Error(`gateway exited (${code ?? sig}) before listening:\n${this.output}`)));
    });
    const timeout = setTimeout(() => child.kill("SIGKILL"), 30_000);
    try {
      this.port = await listening;
    } finally {
      clearTimeout(timeout);
    }
    const client = this.client();
    try {
      await waitFor(
        "the gateway's view to be ready",
        async () => (await client.gateway.describeTopics({}, { timeoutMs: 2000 })).ready,
        30_000,
        100,
      );
    } finally {
      client.close();
    }
  }

  /** Stops the process (SIGTERM, then SIGKILL after 15 s) and waits for it to exit. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((done) => {
      const kill = setTimeout(() => child.kill("SIGKILL"), 15_000);
      child.once("exit", () => {
        clearTimeout(kill);
        done();
      });
      child.kill("SIGTERM");
    });
  }

  /** Kills the process (SIGKILL: no clean shutdown) and waits for it to exit. */
  async kill(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((done) => {
      child.once("exit", () => done());
      child.kill("SIGKILL");
    });
  }

  /** Starts the gateway again on the same port with the same configuration. */
  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  async close(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- a handler that checks itself

/** A key-value state built by a follow, failing on any record applied twice. */
export class StateHandler {
  state = new Map<string, string>();
  resets = 0;
  position: Position | undefined;
  duplicates: string[] = [];
  /** Every (topic/partition@offset#output) applied since the last reset. */
  applied = new Set<string>();
  /** Every change applied, in order, since the handler was made. */
  log: { offset: bigint; partition: number; key: string; snapshot: boolean }[] = [];

  reset(): void {
    this.resets++;
    this.state.clear();
    this.applied.clear();
  }

  apply(changes: Change[], position: Position | undefined): void {
    for (const c of changes) {
      const id = `${c.topic}/${c.partition}@${c.offset}#${c.outputIndex}`;
      if (this.applied.has(id)) this.duplicates.push(id);
      this.applied.add(id);
      const key = Buffer.from(c.key ?? []).toString();
      if (c.value === undefined) this.state.delete(key);
      else this.state.set(key, Buffer.from(c.value).toString());
      this.log.push({ offset: c.offset, partition: c.partition, key, snapshot: c.snapshot });
    }
    if (position) this.position = position;
  }

}

/** Whether the position saved in `store` is at or past `ends` on every partition. */
export async function reached(store: Store, ends: Position): Promise<boolean> {
  const position = await store.load();
  return [...ends].every((e) => (position?.get(e.topic, e.partition) ?? -1n) >= e.offset);
}

const running: AbortController[] = [];

/** Starts a follow that `stopAll()` (in each file's `after`) stops should the test fail first. */
export function startFollow(client: TributaryClient, options: Omit<FollowOptions, "signal">, handler: Handler) {
  const controller = new AbortController();
  running.push(controller);
  const done = follow(client, { ...options, signal: controller.signal }, handler);
  done.catch(() => {}); // observed by the test through `done` or `stop()`
  return {
    done,
    /** Aborts the follow and waits for it to end (rejects if it failed). */
    async stop(): Promise<void> {
      controller.abort();
      await done;
    },
  };
}

export function stopAll(): void {
  for (const c of running) c.abort();
}

// ---------------------------------------------------------------- records and states

/** `n` records from the `from`-th on over `partitions` partitions: updates of 60 keys, one in seven a delete. */
export function changes(from: number, n: number, partitions: number): { partition: number; key: string; value: string | null }[] {
  return Array.from({ length: n }, (_, j) => {
    const i = from + j;
    return { partition: i % partitions, key: `k${i % 60}`, value: i % 7 === 3 ? null : `v${i}` };
  });
}

/** A state's entries sorted by key, to compare whole states (and see the difference when they differ). */
export function entries(state: Map<string, string> | Record<string, string>): [string, string][] {
  const list = state instanceof Map ? [...state] : Object.entries(state);
  return list.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}
