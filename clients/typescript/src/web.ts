// The browser client of the HTTP log (`GET /v1/topics/{topic}/log`, docs/http.md): A's state from
// a snapshot, then every record after it by long-polls, with no gap and no duplicate.
//
// Browser-safe on purpose: no import at all, only `fetch`, `AbortController`, `setTimeout`,
// `atob` and `btoa`, so `dist/web.js` loads as it is in a page (`import { followLog } from
// "@tributary/client/web"`, or the file itself) and in Node 20+ (its global `fetch`). It is a
// package entry of its own because `index.ts` pulls in the Node-only gRPC transport.

/** A key, value or header value: text when the gateway sent UTF-8, else the bytes. */
export type Data = string | Uint8Array;

/** One record of the log (or one translator output), decoded. */
export interface LogChange {
  partition: number;
  offset: number;
  /** Milliseconds since the Unix epoch (-1 when unknown). */
  timestampMs: number;
  /** Absent for a keyless record (it does not change the state). */
  key: Data | undefined;
  /** `null` is a delete of the key. */
  value: Data | null;
  headers: [name: string, value: Data | null][];
  /** With a translator: which output of the source record this is. */
  index: number | undefined;
  /** True for the entries of a snapshot. */
  snapshot: boolean;
}

/** What the state holds for a key: its value and the record that last set it. */
export interface LogEntry {
  key: Data;
  value: Data;
  partition: number;
  offset: number;
  timestampMs: number;
}

/**
 * A's state as the log builds it: for each key, the last record's value; a `null` value deletes
 * the key; keyless records change nothing.
 *
 * Text keys are the map's keys as they are. A binary key (not UTF-8) is stored under
 * `"\uDFFF" + base64`: a lone surrogate never occurs in a string decoded from UTF-8, so it cannot
 * collide with a text key ({@link stateKey}).
 */
export class LogState {
  readonly entries = new Map<string, LogEntry>();

  get size(): number {
    return this.entries.size;
  }

  get(key: Data): Data | undefined {
    return this.entries.get(stateKey(key))?.value;
  }

  /** Applies one record; returns whether the state changed. */
  apply(change: LogChange): boolean {
    if (change.key === undefined) return false;
    const id = stateKey(change.key);
    if (change.value === null) return this.entries.delete(id);
    const { key, value, partition, offset, timestampMs } = change;
    this.entries.set(id, { key, value, partition, offset, timestampMs });
    return true;
  }

  clear(): void {
    this.entries.clear();
  }

  /** Text keys → text values; binary ones as `base64:…` (for display and tests, not for lookups). */
  toObject(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const e of this.entries.values()) out[display(e.key)] = display(e.value);
    return out;
  }
}

/** The map key of `key` in a {@link LogState}. */
export function stateKey(key: Data): string {
  return typeof key === "string" ? key : "\uDFFF" + toBase64(key);
}

/** Text as it is, bytes as `base64:…`. */
export function display(data: Data): string {
  return typeof data === "string" ? data : `base64:${toBase64(data)}`;
}

/** A translator to read A through (the log's `translator*` and `skip_errors` parameters). */
export interface LogTranslator {
  name: string;
  /** SHA-256 (lowercase hex) of the version to pin; absent takes the latest. */
  digest?: string;
  config?: string;
  skipErrors?: boolean;
}

/** Where a follow stands after an answer, for `onState`. */
export interface LogInfo {
  /** What the last answer was. */
  kind: "snapshot" | "chunk" | "live";
  /** The position after it (opaque: pass it back as `from` to resume with the same state). */
  position: string;
  epoch: string;
  /** Whether the state is at the log's head as the gateway saw it. */
  upToDate: boolean;
  /** Records the answer carried, and those a translator skipped (`skipErrors`). */
  records: number;
  skipped: number;
  /** Snapshots taken after the first one (409: the position could not be continued). */
  restarts: number;
}

export interface FollowLogOptions {
  /** Where the gateway's HTTP log is, e.g. `https://gateway.example.com` (what comes before `/v1/`). */
  baseUrl: string;
  topic: string;
  /** Default: the global `fetch` (a wrapper can add credentials, logging, a test's faults). */
  fetch?: Fetch;
  /** Sent with every request (e.g. `Authorization`); a function is called for each request, so a token can be renewed. */
  headers?: Record<string, string> | (() => Record<string, string>);
  translator?: LogTranslator;
  /** Only records whose key is one of these (`key=`) or starts with one of `keyPrefixes` (`key_prefix=`). */
  keys?: string[];
  keyPrefixes?: string[];
  /** Resume from a position an earlier follow reached; `state` must then hold the state at it. */
  from?: string;
  /** The state to build (default: a new one); a snapshot replaces its contents. */
  state?: LogState;
  /** Aborting ends the follow: `done` resolves. */
  signal?: AbortSignal;
  /** Each record as it is applied (keyless ones too), after the state changed. */
  onChange?: (change: LogChange, state: LogState) => void;
  /** After each answer is applied. */
  onState?: (state: LogState, info: LogInfo) => void;
  /** Errors the follow goes on after (`retryInMs` set), and the one that stops it (`retryInMs` undefined). */
  onError?: (error: LogError, retryInMs: number | undefined) => void;
  /** First retry delay (default 250 ms), doubled up to `backoffMaxMs` (default 15 s); `Retry-After` when longer. */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** A request that has not answered by then is dropped and retried (default 60 s: over the gateway's long-poll wait). */
  requestTimeoutMs?: number;
}

/** What the follow calls to GET a URL: `fetch` or a wrapper of it. */
export type Fetch = (url: string, init: RequestInit) => Promise<Response>;

/** A running follow. */
export interface LogFollow {
  state: LogState;
  /** Resolves when the follow is stopped; rejects with a {@link LogError} it cannot get past. */
  done: Promise<void>;
  stop(): void;
}

/**
 * An error of the log: the gateway's `{"error": {status, code, reason, message, details}}`, or
 * one of the client's (`NETWORK`, `TIMEOUT`, `BAD_RESPONSE`, `WRONG_POSITION`, `HTTP_<status>`
 * for a body that is not the gateway's).
 */
export class LogError extends Error {
  override readonly name = "LogError";

  constructor(
    /** HTTP status; 0 when there was no response. */
    readonly status: number,
    /** A stable name, e.g. `UNKNOWN_TOPIC`, `OFFSET_TOO_OLD`, `NETWORK`. */
    readonly reason: string,
    message: string,
    readonly details: Record<string, unknown> = {},
    /** `Retry-After` in milliseconds, when the response had it. */
    readonly retryAfterMs?: number,
  ) {
    super(`${reason} (${status}): ${message}`);
  }

  /** Whether waiting and asking again can succeed: overload, a proxy's hiccup, the network. */
  get transient(): boolean {
    return this.status === 0 || this.status === 429 || this.status === 502 || this.status === 503 || this.status === 504;
  }

  /** 409: the position cannot be continued (retention, a new epoch, new partitions): snapshot again. */
  get conflict(): boolean {
    return this.status === 409;
  }
}

/** The body of an answer (`format=json`). */
interface Answer {
  topic: string;
  kind: "snapshot" | "chunk" | "live";
  from: string;
  next: string;
  epoch: string;
  up_to_date: boolean;
  records: WireRecord[];
  skipped_records: number;
}

interface WireRecord {
  partition: number;
  offset: number;
  timestamp_ms: number;
  index?: number;
  key?: string | null;
  key_b64?: string;
  value?: string | null;
  value_b64?: string;
  headers?: [string, string | { b64: string } | null][];
}

/**
 * Follows the topic: GET `from=-1` (the snapshot: it replaces the state), then `from=<next>&live=1`
 * again and again, applying each answer's records. A 409 takes the snapshot at `details.restart`;
 * 503, 429, a proxy's 502/504, a network error or a timeout are retried after a capped, jittered
 * exponential backoff (at least `Retry-After`); any other error stops the follow (`done` rejects).
 */
export function followLog(options: FollowLogOptions): LogFollow {
  const state = options.state ?? new LogState();
  const stopper = new AbortController();
  const signal = options.signal;
  const stop = () => stopper.abort();
  if (signal?.aborted) stop();
  else signal?.addEventListener("abort", stop, { once: true });
  const done = run(options, state, stopper.signal).finally(() => signal?.removeEventListener("abort", stop));
  return { state, done, stop };
}

async function run(options: FollowLogOptions, state: LogState, signal: AbortSignal): Promise<void> {
  const doFetch = options.fetch ?? ((url: string, init: RequestInit) => fetch(url, init));
  const base = options.baseUrl.replace(/\/+$/, "");
  const path = `/v1/topics/${encodeURIComponent(options.topic)}/log`;
  const query = readingQuery(options);
  const initial = Math.max(1, options.backoffInitialMs ?? 250);
  const cap = Math.max(initial, options.backoffMaxMs ?? 15_000);
  const timeoutMs = options.requestTimeoutMs ?? 60_000;

  // The request to make next: a path and query (the gateway's `details.restart` is one too), and
  // the position it asks for, which the answer must repeat as its `from`.
  let from = options.from ?? "-1";
  let target = logPath(path, query, from);
  let failures = 0;
  let snapshots = 0;
  const fail = (error: LogError): never => {
    options.onError?.(error, undefined);
    throw error;
  };

  while (!signal.aborted) {
    let answer: Answer;
    try {
      answer = await get(doFetch, base + target, options, signal, timeoutMs);
    } catch (err) {
      if (signal.aborted) return;
      const error = err instanceof LogError ? err : new LogError(0, "BAD_RESPONSE", String(err));
      if (!error.transient && !error.conflict) fail(error);
      // A first 409 restarts at once; one that repeats (a cache or replica on another epoch)
      // waits like any failure, so a disagreement cannot turn into a request loop.
      const delay = error.conflict && failures === 0 ? 0 : backoff(failures, initial, cap, error.retryAfterMs);
      failures++;
      if (error.conflict) {
        const restart = typeof error.details.restart === "string" ? error.details.restart : undefined;
        from = "-1";
        target = restart?.startsWith("/v1/") ? restart : logPath(path, query, from);
      }
      options.onError?.(error, delay);
      await sleep(delay, signal);
      continue;
    }
    // An answer for another position (a CDN or proxy that drops or rewrites the query string,
    // or caches by path alone) would silently corrupt the state: stop instead.
    if (answer.from !== from || answer.topic !== options.topic || (from === "-1") !== (answer.kind === "snapshot")) {
      fail(
        new LogError(
          0,
          "WRONG_POSITION",
          `asked ${base + target} for topic '${options.topic}' from '${from}' and the answer is a ${answer.kind} of '${answer.topic}' from '${answer.from}': ` +
            "something between this client and the gateway (a CDN or proxy) does not pass the query string or caches by path alone",
        ),
      );
    }
    failures = 0;
    const snapshot = answer.kind === "snapshot";
    // The snapshot replaces the state in the same task as it is applied, so no one sees it empty.
    if (snapshot) {
      state.clear();
      snapshots++;
    }
    for (const r of answer.records) {
      const change = decode(r, snapshot);
      state.apply(change);
      options.onChange?.(change, state);
    }
    from = answer.next;
    target = logPath(path, query, from) + "&live=1";
    options.onState?.(state, {
      kind: answer.kind,
      position: answer.next,
      epoch: answer.epoch,
      upToDate: answer.up_to_date,
      records: answer.records.length,
      skipped: answer.skipped_records ?? 0,
      restarts: Math.max(0, snapshots - (options.from === undefined ? 1 : 0)),
    });
  }
}

/** The query parameters of what is read (translator, key filters), the same on every request. */
function readingQuery(options: FollowLogOptions): string {
  const q = new URLSearchParams();
  const t = options.translator;
  if (t) {
    q.append("translator", t.name);
    if (t.digest) q.append("translator_digest", t.digest);
    if (t.config) q.append("translator_config", t.config);
    if (t.skipErrors) q.append("skip_errors", "1");
  }
  for (const k of options.keys ?? []) q.append("key", k);
  for (const p of options.keyPrefixes ?? []) q.append("key_prefix", p);
  return q.toString();
}

function logPath(path: string, query: string, from: string): string {
  return `${path}?${query ? query + "&" : ""}from=${encodeURIComponent(from)}`;
}

/** One GET: the answer's JSON, or a {@link LogError}. */
async function get(
  doFetch: Fetch,
  url: string,
  options: FollowLogOptions,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<Answer> {
  // Our own controller: the follow's signal and the timeout both abort the request.
  const request = new AbortController();
  const abort = () => request.abort();
  signal.addEventListener("abort", abort, { once: true });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    request.abort();
  }, timeoutMs);
  try {
    const headers = typeof options.headers === "function" ? options.headers() : options.headers;
    let response: Response;
    let text: string;
    try {
      response = await doFetch(url, { headers, signal: request.signal });
      // The body too is read under the timeout: a snapshot cut in the middle is an error here.
      text = await response.text();
    } catch (err) {
      if (timedOut) throw new LogError(0, "TIMEOUT", `no answer from ${url} within ${timeoutMs} ms`);
      // fetch's TypeError: no connection, a CORS refusal (the browser does not say which), a reset.
      throw new LogError(0, "NETWORK", `${url}: ${err instanceof Error ? err.message : String(err)}`);
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    if (response.ok) {
      if (!isAnswer(body)) throw new LogError(response.status, "BAD_RESPONSE", `${url} answered ${response.status} without a log answer: ${text.slice(0, 200)}`);
      return body;
    }
    // Retry-After in seconds (the gateway's form; an HTTP date is ignored).
    const retryAfter = response.headers.get("retry-after");
    const retryAfterMs = retryAfter !== null && /^\d+$/.test(retryAfter.trim()) ? Number(retryAfter) * 1000 : undefined;
    const e = (body as { error?: { reason?: unknown; message?: unknown; details?: unknown } } | undefined)?.error;
    if (e && typeof e.reason === "string") {
      const details = typeof e.details === "object" && e.details !== null ? (e.details as Record<string, unknown>) : {};
      throw new LogError(response.status, e.reason, String(e.message ?? ""), details, retryAfterMs);
    }
    // Not the gateway's error (a proxy's page, say).
    throw new LogError(response.status, `HTTP_${response.status}`, `${url}: ${response.statusText} ${text.slice(0, 200)}`.trim(), {}, retryAfterMs);
  } finally {
    clearTimeout(timer);
    signal.removeEventListener("abort", abort);
  }
}

function isAnswer(body: unknown): body is Answer {
  const b = body as Answer | undefined;
  return typeof b === "object" && b !== null && typeof b.from === "string" && typeof b.next === "string" && Array.isArray(b.records);
}

function decode(r: WireRecord, snapshot: boolean): LogChange {
  return {
    partition: r.partition,
    offset: r.offset,
    timestampMs: r.timestamp_ms,
    key: r.key_b64 !== undefined ? fromBase64(r.key_b64) : (r.key ?? undefined),
    value: r.value_b64 !== undefined ? fromBase64(r.value_b64) : (r.value ?? null),
    headers: (r.headers ?? []).map(([name, v]) => [name, v === null ? null : typeof v === "string" ? v : fromBase64(v.b64)]),
    index: r.index,
    snapshot,
  };
}

function fromBase64(b64: string): Uint8Array {
  const binary = atob(b64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** Full jitter over a doubling delay, never under the server's `Retry-After`. */
function backoff(failures: number, initial: number, cap: number, retryAfterMs: number | undefined): number {
  const ceiling = Math.min(cap, initial * 2 ** Math.min(failures, 30));
  const jittered = ceiling / 2 + Math.random() * (ceiling / 2);
  return Math.max(Math.round(jittered), retryAfterMs ?? 0);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (ms <= 0 || signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
