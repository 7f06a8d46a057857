import { Code } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  KeyFilterSchema,
  Record as RecordMessage,
  RecordFilterSchema,
  SnapshotEntry,
  TranslatorRefSchema,
} from "./gen/tributary/v1/gateway_pb.js";
import type { TributaryClient } from "./client.js";
import { TributaryError, toTributaryError } from "./errors.js";
import { Position, type PartitionOffsetValue } from "./position.js";
import { MemoryStore, type Store } from "./store.js";

/** A header of a record; `value` absent is a null header (not the same as empty). */
export interface ChangeHeader {
  key: string;
  value: Uint8Array | undefined;
}

/** One snapshot entry or one streamed record, in one shape. */
export interface Change {
  topic: string;
  partition: number;
  offset: bigint;
  /** Milliseconds since the Unix epoch (-1 when unknown). */
  timestampMs: bigint;
  /** Absent for a keyless record. */
  key: Uint8Array | undefined;
  /** Absent for a tombstone: delete the key. */
  value: Uint8Array | undefined;
  headers: ChangeHeader[];
  /** With a translator: which output of the source record this is. */
  outputIndex: number;
  /** True for entries of a snapshot. */
  snapshot: boolean;
}

/** The application's side of a follow. */
export interface Handler {
  /** Forget all state: a snapshot follows. */
  reset(): Promise<void> | void;
  /**
   * Apply these changes in order. `position` is where the follow stands once they are applied
   * (absent while a snapshot is still arriving).
   */
  apply(changes: Change[], position: Position | undefined): Promise<void> | void;
}

export interface TranslatorOption {
  name: string;
  /** SHA-256 (lowercase hex) of the version to pin; empty or absent takes the latest. */
  digest?: string;
  config?: string;
  skipErrors?: boolean;
}

/** Keys equal to one of `exact` or starting with one of `prefixes` (strings are UTF-8). */
export interface KeyFilterOption {
  exact?: (Uint8Array | string)[];
  prefixes?: (Uint8Array | string)[];
}

/**
 * Conditions on A's records beyond their keys, all of which must hold (clients/FOLLOW.md,
 * docs/contract.md "Selecting records"). `headers`: a header of `key` is present (any value) when
 * `anyOf` is empty or absent, else one occurrence has one of these values (strings are UTF-8).
 * `fields`: the value read as JSON has a field at this JSON Pointer ("/status"), equal to one of
 * these JSON texts when `anyOf` is given (`'"open"'`, with its quotes; `"42"`, `"true"`).
 * `tombstoneMismatches`: a streamed record that fails comes as a tombstone of its key, so the
 * model holds exactly the keys whose latest record matches (else it is left out).
 */
export interface RecordFilterOption {
  headers?: { key: string; anyOf?: (Uint8Array | string)[] }[];
  fields?: { pointer: string; anyOf?: string[] }[];
  tombstoneMismatches?: boolean;
}

export interface FollowOptions {
  topics: string[];
  translator?: TranslatorOption;
  keyFilter?: KeyFilterOption;
  /** Conditions on headers and JSON fields of A's records; see `RecordFilterOption`. */
  recordFilter?: RecordFilterOption;
  /** A durable subscription: resume by name, commit what was applied. */
  subscriptionName?: string;
  /** Upper bound on records per batch; 0 or absent takes the gateway's default. */
  maxBatchRecords?: number;
  /**
   * While B falls behind, the gateway sends only the latest record per key (docs/contract.md
   * "Conflation"); offsets still resume exactly. Subscribe only; a named subscription does not keep it.
   */
  conflate?: boolean;
  /** Where the position is kept; default a `MemoryStore`. */
  store?: Store;
  /** At most one commit per this many milliseconds (default 1000). */
  commitIntervalMs?: number;
  /** First retry delay (default 100 ms), doubled up to `backoffMaxMs` (default 10 s), full jitter. */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Errors the follow goes on after: retried calls, re-snapshots, failed commits. */
  onError?: (err: TributaryError) => void;
  /** Aborting it ends the follow cleanly after the batch being applied. */
  signal?: AbortSignal;
}

/** A handler's or store's error, which stops the follow as it is. */
export class Fatal {
  constructor(readonly error: unknown) {}
}

export async function guard<T>(fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new Fatal(err);
  }
}

const encoder = new TextEncoder();
export const bytes = (v: Uint8Array | string): Uint8Array => (typeof v === "string" ? encoder.encode(v) : v);

export function endedWithoutStatus(call: string): TributaryError {
  return new TributaryError({ code: Code.Unavailable, rawMessage: `${call} ended without a status` });
}

/** OUT_OF_RANGE that says the position cannot be continued: re-snapshot. */
function positionLost(err: TributaryError): boolean {
  return err.code === Code.OutOfRange && (err.reason === "OFFSET_TOO_OLD" || err.reason === "OFFSET_BEYOND_END");
}

const TLS_FAILURE = /CERT|SSL|TLS|SIGNATURE|ISSUER|HOSTNAME|ALTNAME/;

function tlsFailure(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && TLS_FAILURE.test(code)) return true;
  }
  return false;
}

/** Whether to wait and subscribe again from the last saved position. */
export function retryable(err: TributaryError): boolean {
  switch (err.code) {
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return true;
    case Code.Aborted:
      return err.reason !== "SUBSCRIPTION_TAKEN_OVER";
    case Code.ResourceExhausted:
      return err.reason === "LIMIT_REACHED";
    case Code.Internal:
    case Code.Canceled:
      // Without an ErrorInfo this is the transport's: a reset stream, a stream that ended
      // without a status, a dropped connection. Not a certificate that does not verify.
      return err.reason === "" && !tlsFailure(err.cause);
    default:
      return false;
  }
}

export function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

export function fromEntry(e: SnapshotEntry): Change {
  return {
    topic: e.topic,
    partition: e.partition,
    offset: e.offset,
    timestampMs: e.timestampMs,
    key: e.key,
    value: e.value,
    headers: e.headers.map((h) => ({ key: h.key, value: h.value })),
    outputIndex: e.outputIndex,
    snapshot: true,
  };
}

export function fromRecord(r: RecordMessage): Change {
  return {
    topic: r.topic,
    partition: r.partition,
    offset: r.offset,
    timestampMs: r.timestampMs,
    key: r.key,
    value: r.value,
    headers: r.headers.map((h) => ({ key: h.key, value: h.value })),
    outputIndex: r.outputIndex,
    snapshot: false,
  };
}

/** The key filter, record filter and translator of `options` as the gateway's requests carry them. */
export function requestParts(options: FollowOptions): {
  keyFilter: MessageInitShape<typeof KeyFilterSchema> | undefined;
  recordFilter: MessageInitShape<typeof RecordFilterSchema> | undefined;
  translator: MessageInitShape<typeof TranslatorRefSchema> | undefined;
} {
  const keyFilter: MessageInitShape<typeof KeyFilterSchema> | undefined = options.keyFilter && {
    exact: (options.keyFilter.exact ?? []).map(bytes),
    prefixes: (options.keyFilter.prefixes ?? []).map(bytes),
  };
  const recordFilter: MessageInitShape<typeof RecordFilterSchema> | undefined = options.recordFilter && {
    headers: (options.recordFilter.headers ?? []).map((h) => ({ key: h.key, anyOf: (h.anyOf ?? []).map(bytes) })),
    fields: (options.recordFilter.fields ?? []).map((f) => ({ pointer: f.pointer, anyOf: f.anyOf ?? [] })),
    tombstoneMismatches: options.recordFilter.tombstoneMismatches ?? false,
  };
  const translator: MessageInitShape<typeof TranslatorRefSchema> | undefined = options.translator && {
    name: options.translator.name,
    digest: options.translator.digest ?? "",
    config: options.translator.config ?? "",
    skipErrors: options.translator.skipErrors ?? false,
  };
  return { keyFilter, recordFilter, translator };
}

/**
 * Follows A's state: a snapshot, then every change after it, with no gap and no duplicate across
 * restarts of B and of the gateway and across retention (see clients/FOLLOW.md). Resolves once
 * `signal` aborts (the last position saved and committed); rejects with a `TributaryError` for
 * an error that retrying cannot fix, or with the handler's or store's own error.
 */
export async function follow(client: TributaryClient, options: FollowOptions, handler: Handler): Promise<void> {
  const store = options.store ?? new MemoryStore();
  const signal = options.signal;
  const name = options.subscriptionName ?? "";
  const initialDelay = options.backoffInitialMs ?? 100;
  const maxDelay = options.backoffMaxMs ?? 10_000;
  const commitInterval = options.commitIntervalMs ?? 1000;
  const onError = options.onError ?? (() => {});
  const { keyFilter, recordFilter, translator } = requestParts(options);

  let saved: Position | undefined = await guard(() => store.load());
  let committed: Position | undefined;
  let lastCommitAt = 0;
  let delay = initialDelay;
  let resumeByName = name !== "";

  const commit = async (force: boolean): Promise<void> => {
    if (name === "" || saved === undefined || saved.equals(committed)) return;
    if (!force && Date.now() - lastCommitAt < commitInterval) return;
    lastCommitAt = Date.now();
    const position = saved;
    try {
      await client.subscriptions.commit({ name, offsets: position.toOffsets() }, { timeoutMs: 10_000 });
      committed = position;
    } catch (err) {
      onError(toTributaryError(err));
    }
  };

  /** The follow now stands at `position`: save it (when it moved) and maybe commit. */
  const advance = async (position: Position): Promise<void> => {
    if (!position.equals(saved)) {
      await guard(() => store.save(position));
      saved = position;
    }
    await commit(false);
  };

  const snapshot = async (): Promise<void> => {
    let start: Position | undefined;
    const call = client.gateway.getSnapshot({ topics: options.topics, keyFilter, recordFilter, translator }, { signal });
    for await (const chunk of call) {
      delay = initialDelay;
      if (start === undefined) {
        start = Position.fromOffsets(chunk.offsets);
        await guard(() => handler.reset());
        await guard(() => store.clear());
        saved = undefined;
      }
      if (chunk.entries.length > 0) {
        const changes = chunk.entries.map(fromEntry);
        await guard(() => handler.apply(changes, undefined));
      }
      if (chunk.last) {
        await guard(() => store.save(start!));
        saved = start;
        // Subscribe with these offsets and the name records them as the committed start.
        if (name !== "") committed = start;
        return;
      }
    }
    throw endedWithoutStatus("GetSnapshot");
  };

  /** Subscribe from `from` (by name alone when undefined) and apply until the stream ends. */
  const subscribe = async (from: Position | undefined): Promise<never> => {
    const call = client.gateway.subscribe(
      {
        topics: options.topics,
        fromOffsets: from?.toOffsets() ?? [],
        keyFilter,
        recordFilter,
        maxBatchRecords: options.maxBatchRecords ?? 0,
        translator,
        subscriptionName: name,
        conflate: options.conflate ?? false,
      },
      { signal },
    );
    for await (const msg of call) {
      delay = initialDelay;
      const base: Iterable<PartitionOffsetValue> = saved ?? [];
      if (msg.message.case === "records") {
        const records = msg.message.value.records;
        if (records.length === 0) continue;
        const changes = records.map(fromRecord);
        const next = new Position([
          ...base,
          ...records.map((r) => ({ topic: r.topic, partition: r.partition, offset: r.offset + 1n })),
        ]);
        await guard(() => handler.apply(changes, next));
        await advance(next);
      } else if (msg.message.case === "progress") {
        await advance(new Position([...base, ...Position.fromOffsets(msg.message.value.offsets)]));
      }
    }
    throw endedWithoutStatus("Subscribe");
  };

  while (!signal?.aborted) {
    try {
      if (saved === undefined && resumeByName) {
        try {
          await subscribe(undefined);
        } catch (err) {
          if (err instanceof Fatal || signal?.aborted) throw err;
          const e = toTributaryError(err);
          const nothingCommitted =
            (e.code === Code.FailedPrecondition && e.reason === "NO_COMMITTED_POSITION") ||
            (e.code === Code.NotFound && e.reason === "UNKNOWN_SUBSCRIPTION");
          if (!nothingCommitted || saved !== undefined) throw e;
          resumeByName = false;
        }
      }
      if (saved === undefined) await snapshot();
      await subscribe(saved);
    } catch (err) {
      if (err instanceof Fatal) throw err.error;
      if (signal?.aborted) break;
      const e = toTributaryError(err);
      if (positionLost(e)) {
        onError(e);
        await guard(() => store.clear());
        saved = undefined;
        resumeByName = false;
        continue;
      }
      if (!retryable(e)) throw e;
      onError(e);
      await sleep(Math.random() * delay, signal);
      delay = Math.min(delay * 2, maxDelay);
    }
  }
  await commit(true);
}

