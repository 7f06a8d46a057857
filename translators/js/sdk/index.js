// Tributary's translator SDK for JavaScript, version 2 of the contract: the world
// `batch-translator`, whose interface `tributary:translator/batch@0.2.0` passes a batch as one
// buffer of frames each way (../../wit/batch.wit, ../../wit/FRAMES.md). The SDK reads and writes
// the frames, so a translator is written record by record, as in version 1:
//
//   import { translator, ok, err, none } from '../../sdk/index.js';
//
//   export const batch = translator({
//     init(config) {            // optional; its return value is the state given to translate
//       return JSON.parse(config || '{}');
//     },
//     translate(record, state) {
//       return [{ key: record.key, value: record.value, headers: record.headers }];
//     },
//   });
//
// componentize-js binds an exported interface to the module export named after it in camelCase,
// so the export must be called `batch`.
//
// A record is {topic, partition, offset, timestampMs, key, value, headers: [{key, value}]}:
// `offset` and `timestampMs` (-1n when unknown) are BigInt; `key`, `value` and header values are
// Uint8Array views into the batch's buffer (no copy; valid during the call; copy them to keep
// them), or undefined when absent (keyless record, tombstone, null header value). Topics and
// header keys are strings.
//
// translate(record, state) returns the record's outcome:
// - an array of output records: ok (empty: the record is filtered out; several: flat-map);
// - ok(...outputs), none(), err(message), or an outcome object {tag: 'ok', val: [outputs]} /
//   {tag: 'err', val: 'message'} (version 1's shape).
// An output record is {key, value, headers}: key and value are Uint8Array, string (written as
// UTF-8) or undefined/null (keyless, tombstone); headers (optional) is [{key: string, value}].
// The input record itself is a valid output record: `ok(record)` passes it through unchanged.
//
// Errors:
// - An exception thrown by translate(record) becomes that record's `err` outcome, with the
//   exception's message (a thrown string is the message itself); the rest of the batch goes on.
//   So does a return value that is not an outcome, with a message saying what is wrong with it.
// - An exception thrown by init(config) rejects the configuration with its message.
// - translate before a successful init fails the whole batch with "init was not called", or
//   "init failed: <message>" after an init that threw (as the Rust SDK does). A second init
//   replaces the state.
// - A malformed input buffer fails the whole batch with "the input is malformed: ...": every
//   read is bounds-checked.
// componentize-js turns a *thrown string* into a `result` error and traps on anything else, so
// the functions returned by translator() only ever throw strings.

const NONE = 0xffffffff;
// topic_index, partition, offset, timestamp_ms, key_len, value_len, header_count.
const RECORD_FIXED_BYTES = 36;
// The output buffer starts at this size, doubles when full, and is kept for the next batch (so
// a steady stream of batches allocates nothing for it) unless it grew beyond KEEP_BYTES: one
// huge batch must not pin its memory for the life of the instance.
const INITIAL_BYTES = 64 * 1024;
const KEEP_BYTES = 8 * 1024 * 1024;

// ignoreBOM: a leading U+FEFF in a topic or header key is part of the name, not dropped.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

/** The outcome with these output records (none: the record is filtered out). */
export function ok(...outputs) {
  return { tag: 'ok', val: outputs };
}

/** The outcome that filters the record out (no output). */
export function none() {
  return { tag: 'ok', val: [] };
}

/** The outcome that reports this record as an error with this message. */
export function err(message) {
  return { tag: 'err', val: String(message) };
}

/**
 * The interface `tributary:translator/batch@0.2.0` for a translator written record by record:
 * export the result as `batch`. `definition.translate(record, state)` is required;
 * `definition.init(config)` is optional (without it every configuration is accepted and the
 * state is undefined). Both are called as plain functions (`this` is undefined): keep what they
 * share in the state.
 */
export function translator(definition) {
  const translateRecord = definition && definition.translate;
  if (typeof translateRecord !== 'function') {
    throw new TypeError('translator(): translate(record, state) is required');
  }
  const initState = definition.init || (() => undefined);
  if (typeof initState !== 'function') {
    throw new TypeError('translator(): init must be a function');
  }

  let ready = false;
  let state;
  // The message of the last init's error; null when init was never called or succeeded.
  let initError = null;

  return {
    init(config) {
      // Drop the previous state first: a failed init leaves no usable translator.
      ready = false;
      state = undefined;
      initError = null;
      try {
        state = initState(config);
      } catch (e) {
        initError = messageOf(e);
        throw initError;
      }
      ready = true;
    },

    translate(input) {
      if (!ready) {
        throw initError === null ? 'init was not called' : `init failed: ${initError}`;
      }
      try {
        return translateBatch(input, translateRecord, state);
      } catch (e) {
        // Malformed input (already a string) or a failure of the SDK itself (e.g. out of
        // memory while growing the output): the whole batch fails.
        throw messageOf(e);
      }
    },
  };
}

/** The message of a thrown value: the string itself, an Error's message, or its String(). */
function messageOf(e) {
  if (typeof e === 'string') {
    return e;
  }
  try {
    // Duck-typed rather than `instanceof Error`, which fails for errors of another realm.
    return e !== null && typeof e === 'object' && typeof e.message === 'string' ? e.message : String(e);
  } catch {
    return 'an exception that cannot be turned into a string';
  }
}

// --- Output ----------------------------------------------------------------------------------
// One buffer for the instance (instances are single-threaded and translate is not re-entered).
// `pos` is where the next byte goes.

let out = new Uint8Array(INITIAL_BYTES);
let outView = new DataView(out.buffer);
let pos = 0;

// Translators run interpreted, where every call counts: the hot paths below check the room
// left themselves and call grow() only when it is short.

/** Grows the buffer so that n more bytes fit at `pos`. */
function grow(n) {
  let size = out.length * 2;
  while (size - pos < n) {
    size *= 2;
  }
  const bigger = new Uint8Array(size);
  bigger.set(out.subarray(0, pos));
  out = bigger;
  outView = new DataView(bigger.buffer);
}

/** Writes s as UTF-8 at `pos` and its byte length at `lenAt` (a lone surrogate becomes U+FFFD). */
function putString(lenAt, s) {
  // A UTF-16 code unit takes at most 3 bytes of UTF-8.
  if (s.length * 3 > out.length - pos) {
    grow(s.length * 3);
  }
  const { written } = encoder.encodeInto(s, new Uint8Array(out.buffer, pos));
  outView.setUint32(lenAt, written, true);
  pos += written;
}

/**
 * Writes an optional byte field's bytes at `pos` and its length (NONE when absent) at `lenAt`.
 * Returns null, or what is wrong with the value.
 */
function putOptional(lenAt, value, what) {
  if (value === undefined || value === null) {
    outView.setUint32(lenAt, NONE, true);
  } else if (typeof value === 'string') {
    putString(lenAt, value);
  } else if (isBytes(value)) {
    const n = value.length;
    if (n > out.length - pos) {
      grow(n);
    }
    out.set(value, pos);
    outView.setUint32(lenAt, n, true);
    pos += n;
  } else {
    return `${what} is ${describe(value)}, not a Uint8Array, a string or undefined`;
  }
  return null;
}

/** Writes one output record; returns null, or what is wrong with it. */
function putRecord(record) {
  if (record === null || typeof record !== 'object') {
    return `it is ${describe(record)}, not an object {key, value, headers}`;
  }
  if (12 > out.length - pos) {
    grow(12);
  }
  const head = pos;
  pos += 12;
  const problem = putOptional(head, record.key, 'its key') || putOptional(head + 4, record.value, 'its value');
  if (problem !== null) {
    return problem;
  }
  const headers = record.headers;
  if (headers === undefined || headers === null) {
    outView.setUint32(head + 8, 0, true);
    return null;
  }
  if (!Array.isArray(headers)) {
    return `its headers are ${describe(headers)}, not an array`;
  }
  outView.setUint32(head + 8, headers.length, true);
  for (let i = 0; i < headers.length; i++) {
    const header = headers[i];
    if (header === null || typeof header !== 'object' || typeof header.key !== 'string') {
      return `its header ${i} is not an object {key: string, value}`;
    }
    if (8 > out.length - pos) {
      grow(8);
    }
    const lengths = pos;
    pos += 8;
    putString(lengths, header.key);
    const valueProblem = putOptional(lengths + 4, header.value, `the value of its header ${i}`);
    if (valueProblem !== null) {
      return valueProblem;
    }
  }
  return null;
}

function putErr(message) {
  if (5 > out.length - pos) {
    grow(5);
  }
  out[pos] = 1;
  pos += 5;
  putString(pos - 4, message);
}

/** Writes a record's outcome from what translate returned (see the top of this file). */
function putOutcome(result) {
  let outputs = result;
  if (!Array.isArray(result)) {
    if (result !== null && typeof result === 'object' && result.tag === 'err') {
      putErr(typeof result.val === 'string' ? result.val : messageOf(result.val));
      return;
    }
    if (result === null || typeof result !== 'object' || result.tag !== 'ok' || !Array.isArray(result.val)) {
      putErr(`translate returned ${describe(result)}, not an array of output records or an outcome`);
      return;
    }
    outputs = result.val;
  }
  const start = pos;
  if (5 > out.length - pos) {
    grow(5);
  }
  out[pos] = 0;
  outView.setUint32(pos + 1, outputs.length, true);
  pos += 5;
  for (let i = 0; i < outputs.length; i++) {
    const problem = putRecord(outputs[i]);
    if (problem !== null) {
      // Take back the partly written outcome: the record gets an error instead.
      pos = start;
      putErr(`translate returned an invalid output record ${i}: ${problem}`);
      return;
    }
  }
}

/**
 * Whether a value is a Uint8Array (or another array of bytes). Not `instanceof`: in a
 * componentize-js component the bindings live in another realm than the translator, so the
 * input is a Uint8Array of another global's class.
 */
function isBytes(value) {
  return ArrayBuffer.isView(value) && value.BYTES_PER_ELEMENT === 1;
}

function describe(value) {
  if (value === null || value === undefined) {
    return String(value);
  }
  if (Array.isArray(value)) {
    return 'an array';
  }
  const type = typeof value;
  return type === 'object' ? `an object (${Object.prototype.toString.call(value).slice(8, -1)})` : `a ${type}`;
}

// --- Input -----------------------------------------------------------------------------------

function malformed(what, at) {
  return `the input is malformed: ${what} at byte ${at}`;
}

function translateBatch(input, translateRecord, state) {
  if (!isBytes(input)) {
    throw `the input is ${describe(input)}, not a Uint8Array`;
  }
  const buffer = input.buffer;
  const base = input.byteOffset;
  const view = new DataView(buffer, base, input.byteLength);
  const end = input.length;
  let at = 0;

  // Every read is checked against `end` first, so a length that runs past the end fails the
  // batch instead of yielding a short view; counts are never trusted to size anything.
  if (end - at < 4) {
    throw malformed('the topic count runs past the end', at);
  }
  const topicCount = view.getUint32(at, true);
  at += 4;
  // Topic names are decoded once per batch; records refer to them by index.
  const topics = [];
  for (let i = 0; i < topicCount; i++) {
    if (end - at < 4) {
      throw malformed(`the length of topic ${i} runs past the end`, at);
    }
    const len = view.getUint32(at, true);
    if (len > end - at - 4) {
      throw malformed(`topic ${i} runs past the end`, at);
    }
    at += 4;
    topics.push(decodeUtf8(input, at, len, `topic ${i}`));
    at += len;
  }
  if (end - at < 4) {
    throw malformed('the record count runs past the end', at);
  }
  const recordCount = view.getUint32(at, true);
  at += 4;

  // The buffer always has room for the outcome count (INITIAL_BYTES).
  outView.setUint32(0, recordCount, true);
  pos = 4;
  for (let i = 0; i < recordCount; i++) {
    const recordAt = at;
    if (end - at < RECORD_FIXED_BYTES) {
      throw malformed(`record ${i} runs past the end`, at);
    }
    const topicIndex = view.getUint32(at, true);
    if (topicIndex >= topics.length) {
      throw malformed(`record ${i} has topic index ${topicIndex} of ${topics.length} topics`, at);
    }
    const partition = view.getInt32(at + 4, true);
    const offset = view.getBigInt64(at + 8, true);
    const timestampMs = view.getBigInt64(at + 16, true);
    const keyLen = view.getUint32(at + 24, true);
    const valueLen = view.getUint32(at + 28, true);
    const headerCount = view.getUint32(at + 32, true);
    at += RECORD_FIXED_BYTES;

    let key;
    if (keyLen !== NONE) {
      if (keyLen > end - at) {
        throw malformed(`the key of record ${i} runs past the end`, recordAt);
      }
      key = new Uint8Array(buffer, base + at, keyLen);
      at += keyLen;
    }
    let value;
    if (valueLen !== NONE) {
      if (valueLen > end - at) {
        throw malformed(`the value of record ${i} runs past the end`, recordAt);
      }
      value = new Uint8Array(buffer, base + at, valueLen);
      at += valueLen;
    }
    const headers = [];
    for (let h = 0; h < headerCount; h++) {
      if (end - at < 8) {
        throw malformed(`header ${h} of record ${i} runs past the end`, at);
      }
      const nameLen = view.getUint32(at, true);
      const headerValueLen = view.getUint32(at + 4, true);
      // NONE is not a valid name length, and is larger than any remainder.
      if (nameLen > end - at - 8) {
        throw malformed(`the key of header ${h} of record ${i} runs past the end`, at);
      }
      const headerAt = at;
      at += 8;
      const name = decodeUtf8(input, at, nameLen, `the key of header ${h} of record ${i}`);
      at += nameLen;
      let headerValue;
      if (headerValueLen !== NONE) {
        if (headerValueLen > end - at) {
          throw malformed(`the value of header ${h} of record ${i} runs past the end`, headerAt);
        }
        headerValue = new Uint8Array(buffer, base + at, headerValueLen);
        at += headerValueLen;
      }
      headers.push({ key: name, value: headerValue });
    }

    const record = { topic: topics[topicIndex], partition, offset, timestampMs, key, value, headers };
    let result;
    try {
      result = translateRecord(record, state);
    } catch (e) {
      putErr(messageOf(e));
      continue;
    }
    putOutcome(result);
  }
  if (at !== end) {
    throw malformed(`${end - at} bytes are left over after the last record`, at);
  }

  const output = out.subarray(0, pos);
  if (out.length > KEEP_BYTES) {
    // `output` keeps the big buffer alive until the bindings have copied it.
    out = new Uint8Array(INITIAL_BYTES);
    outView = new DataView(out.buffer);
  }
  // A view, not a copy: the bindings copy the bytes into the component's result at once, before
  // the next call can overwrite them (so a caller outside a component must read it before then).
  return output;
}

function decodeUtf8(bytes, at, len, what) {
  try {
    return utf8.decode(bytes.subarray(at, at + len));
  } catch {
    throw malformed(`${what} is not UTF-8`, at);
  }
}
