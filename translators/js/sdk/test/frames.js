// The frames of FRAMES.md written and read independently of the SDK, for tests and
// benchmarks: encodeInput builds what the gateway sends, decodeOutput checks what it gets back
// as strictly as the gateway does.

import assert from 'node:assert/strict';

const NONE = 0xffffffff;
const encoder = new TextEncoder();
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Bytes from a Uint8Array, a string (UTF-8) or undefined (absent). */
export function bytes(value) {
  return typeof value === 'string' ? encoder.encode(value) : value;
}

/**
 * The input frames of records {topic, partition, offset, timestampMs, key, value, headers}
 * (defaults: partition 0, offset 0n, timestampMs -1n, no headers; bytes as in bytes()).
 */
export function encodeInput(records) {
  const topics = [];
  for (const r of records) {
    if (!topics.includes(r.topic)) {
      topics.push(r.topic);
    }
  }
  const parts = [];
  const u32 = (n) => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, n, true);
    parts.push(b);
  };
  const optional = (value) => (value === undefined ? NONE : value.length);
  u32(topics.length);
  for (const topic of topics) {
    const name = encoder.encode(topic);
    u32(name.length);
    parts.push(name);
  }
  u32(records.length);
  for (const r of records) {
    const key = bytes(r.key);
    const value = bytes(r.value);
    const headers = (r.headers || []).map((h) => ({ key: encoder.encode(h.key), value: bytes(h.value) }));
    const fixed = new Uint8Array(36);
    const view = new DataView(fixed.buffer);
    view.setUint32(0, topics.indexOf(r.topic), true);
    view.setInt32(4, r.partition ?? 0, true);
    view.setBigInt64(8, r.offset ?? 0n, true);
    view.setBigInt64(16, r.timestampMs ?? -1n, true);
    view.setUint32(24, optional(key), true);
    view.setUint32(28, optional(value), true);
    view.setUint32(32, headers.length, true);
    parts.push(fixed);
    if (key !== undefined) parts.push(key);
    if (value !== undefined) parts.push(value);
    for (const h of headers) {
      u32(h.key.length);
      u32(optional(h.value));
      parts.push(h.key);
      if (h.value !== undefined) parts.push(h.value);
    }
  }
  return concat(parts);
}

export function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * The outcomes in output frames, as {tag: 'ok', val: [{key, value, headers}]} /
 * {tag: 'err', val: message}, with copies of the bytes. Throws on anything malformed.
 */
export function decodeOutput(output) {
  let at = 0;
  const take = (n) => {
    if (n > output.length - at) {
      throw new Error(`output malformed: ${n} bytes past the end at byte ${at}`);
    }
    const slice = output.slice(at, at + n);
    at += n;
    return slice;
  };
  const u32 = () => new DataView(take(4).buffer).getUint32(0, true);
  const optional = (len) => (len === NONE ? undefined : take(len));
  const outcomes = [];
  const count = u32();
  for (let i = 0; i < count; i++) {
    const tag = take(1)[0];
    if (tag === 1) {
      outcomes.push({ tag: 'err', val: utf8.decode(take(u32())) });
    } else if (tag === 0) {
      const records = [];
      const n = u32();
      for (let j = 0; j < n; j++) {
        const keyLen = u32();
        const valueLen = u32();
        const headerCount = u32();
        const key = optional(keyLen);
        const value = optional(valueLen);
        const headers = [];
        for (let h = 0; h < headerCount; h++) {
          const nameLen = u32();
          const headerValueLen = u32();
          headers.push({ key: utf8.decode(take(nameLen)), value: optional(headerValueLen) });
        }
        records.push({ key, value, headers });
      }
      outcomes.push({ tag: 'ok', val: records });
    } else {
      throw new Error(`output malformed: tag ${tag} at byte ${at - 1}`);
    }
  }
  if (at !== output.length) {
    throw new Error(`output malformed: ${output.length - at} bytes left over`);
  }
  return outcomes;
}

/** Hex of bytes without spaces, for comparing with FRAMES.md's examples. */
export function hex(value) {
  return Buffer.from(value).toString('hex');
}

/** What `fn` throws, which must be a string (what componentize-js turns into a `result` error). */
export function thrown(fn) {
  try {
    fn();
  } catch (e) {
    assert.equal(typeof e, 'string', `threw ${e}, not a string`);
    return e;
  }
  assert.fail('did not throw');
}
