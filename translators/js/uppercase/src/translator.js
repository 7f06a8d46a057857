// A translator in JavaScript: upper-cases each record's value, read as UTF-8 text.
//
// It implements version 1 of the contract (world `translator`) directly, without the SDK;
// new translators use the SDK (../../sdk/index.js, version 2; see ../../field-mapper/). Built
// by ../../build.sh into js-uppercase.wasm.
//
// Configuration: empty, or JSON {"key_prefix": "b/"} (prepended to every key; keyless records
// stay keyless). Tombstones stay tombstones; headers pass through. A value that is not valid
// UTF-8 is an error for that record.
//
// How the WIT world maps to JavaScript (componentize-js):
// - `init(config)` and `translate(batch)` are exported functions. Returning is `ok`; throwing
//   a *string* is `err(string)`. Throwing anything else (an Error object) cannot be turned into
//   a string by the bindings and traps, so the functions below convert what they throw.
// - Records are objects with camelCase fields: {topic, partition, offset (BigInt),
//   timestampMs (BigInt), key, value, headers: [{key, value}]}. `key`, `value` and header values
//   are Uint8Array, or undefined when absent (keyless, tombstone, null header).
// - An outcome is {tag: 'ok', val: [outputRecord, ...]} or {tag: 'err', val: 'message'}; an
//   output record is {key, value, headers}.

const decoder = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

// The configured state; null until init succeeds.
let state = null;

export function init(config) {
  state = null;
  try {
    state = parseConfig(config);
  } catch (e) {
    throw messageOf(e);
  }
}

export function translate(batch) {
  if (state === null) {
    throw 'init was not called';
  }
  try {
    return batch.map(translateOne);
  } catch (e) {
    throw messageOf(e);
  }
}

function parseConfig(config) {
  if (config.trim() === '') {
    return { keyPrefix: null };
  }
  let parsed;
  try {
    parsed = JSON.parse(config);
  } catch (e) {
    throw `invalid configuration: ${e.message}`;
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw 'invalid configuration: expected a JSON object';
  }
  for (const name of Object.keys(parsed)) {
    if (name !== 'key_prefix') {
      throw `invalid configuration: unknown field "${name}"`;
    }
  }
  if (parsed.key_prefix !== undefined && typeof parsed.key_prefix !== 'string') {
    throw 'invalid configuration: "key_prefix" must be a string';
  }
  return { keyPrefix: parsed.key_prefix ? encoder.encode(parsed.key_prefix) : null };
}

function translateOne(record) {
  let value = record.value;
  if (value !== undefined && value !== null) {
    let text;
    try {
      text = decoder.decode(value);
    } catch {
      return { tag: 'err', val: 'record value is not UTF-8 text' };
    }
    value = encoder.encode(text.toUpperCase());
  }
  return { tag: 'ok', val: [{ key: prefixed(record.key), value, headers: record.headers }] };
}

function prefixed(key) {
  if (key === undefined || key === null || state.keyPrefix === null) {
    return key;
  }
  const out = new Uint8Array(state.keyPrefix.length + key.length);
  out.set(state.keyPrefix, 0);
  out.set(key, state.keyPrefix.length);
  return out;
}

function messageOf(e) {
  if (typeof e === 'string') {
    return e;
  }
  return String(e && e.message !== undefined ? e.message : e);
}
