// The SDK's framing, run in Node (node --test): frames in, the exported interface's translate,
// frames out, decoded by an independent reader (frames.js).
import { test } from 'node:test';
import { runInNewContext } from 'node:vm';
import assert from 'node:assert/strict';
import { translator, ok, err, none } from '../index.js';
import { encodeInput, decodeOutput, bytes, concat, hex, thrown } from './frames.js';

// ignoreBOM: keep a leading U+FEFF (a topic in the unicode test starts with one).
const utf8 = new TextDecoder('utf-8', { ignoreBOM: true });
const text = (b) => (b === undefined ? undefined : utf8.decode(b));

/** A translator's interface, initialised with config. */
function make(definition, config = '') {
  const batch = translator(definition);
  batch.init(config);
  return batch;
}

/** translate(input frames of records), decoded. */
function run(batch, records) {
  return decodeOutput(batch.translate(encodeInput(records)));
}


const identity = { translate: (record) => [record] };

test("FRAMES.md's example, byte for byte", () => {
  const input = Buffer.from(
    '01000000' + '01000000' + '74' + '01000000' + '00000000' + '00000000' + '0500000000000000' +
      'ffffffffffffffff' + '01000000' + '01000000' + '00000000' + '6b' + '76',
    'hex',
  );
  const seen = [];
  const batch = make({ translate: (r) => (seen.push(r), [r]) });
  const output = batch.translate(new Uint8Array(input));
  assert.equal(hex(output), '01000000' + '00' + '01000000' + '01000000' + '01000000' + '00000000' + '6b' + '76');
  assert.deepEqual(
    { ...seen[0], key: text(seen[0].key), value: text(seen[0].value) },
    { topic: 't', partition: 0, offset: 5n, timestampMs: -1n, key: 'k', value: 'v', headers: [] },
  );
});

test('records: coordinates, absent versus empty keys, values and header values', () => {
  const seen = [];
  const batch = make({ translate: (r) => (seen.push(r), [r]) });
  const records = [
    { topic: 'a', partition: 3, offset: 9007199254740993n, timestampMs: 1700000000123n, key: 'k', value: 'v' },
    { topic: 'b', partition: -1, offset: -2n, key: undefined, value: 'keyless' },
    { topic: 'a', key: '', value: '' },
    { topic: 'c', key: 'gone', value: undefined },
    {
      topic: 'b',
      key: new Uint8Array([0, 255, 1]),
      value: new Uint8Array([0xc3, 0x28]),
      headers: [
        { key: 'null', value: undefined },
        { key: 'empty', value: '' },
        { key: 'bytes', value: new Uint8Array([1, 2, 3]) },
        { key: '', value: 'nameless' },
      ],
    },
  ];
  const input = encodeInput(records);
  const outcomes = decodeOutput(batch.translate(input));

  assert.deepEqual(
    seen.map((r) => [r.topic, r.partition, r.offset, r.timestampMs]),
    [['a', 3, 9007199254740993n, 1700000000123n], ['b', -1, -2n, -1n], ['a', 0, 0n, -1n], ['c', 0, 0n, -1n], ['b', 0, 0n, -1n]],
  );
  // Views of the input, not copies.
  assert.equal(seen[0].key.buffer, input.buffer);
  assert.equal(seen[4].headers[2].value.buffer, input.buffer);

  assert.equal(outcomes.length, records.length);
  outcomes.forEach((outcome, i) => {
    assert.equal(outcome.tag, 'ok');
    assert.equal(outcome.val.length, 1);
    const [out] = outcome.val;
    assert.deepEqual(out.key, bytes(records[i].key), `key ${i}`);
    assert.deepEqual(out.value, bytes(records[i].value), `value ${i}`);
    assert.deepEqual(
      out.headers,
      (records[i].headers || []).map((h) => ({ key: h.key, value: bytes(h.value) })),
      `headers ${i}`,
    );
  });
  // Absent is not empty, both ways.
  assert.equal(outcomes[1].val[0].key, undefined);
  assert.deepEqual(outcomes[2].val[0].key, new Uint8Array(0));
  assert.equal(outcomes[3].val[0].value, undefined);
  assert.equal(outcomes[4].val[0].headers[0].value, undefined);
  assert.deepEqual(outcomes[4].val[0].headers[1].value, new Uint8Array(0));
});

test('outcomes: filter, flat-map, helpers and version 1 objects', () => {
  const batch = make({
    translate(r) {
      switch (text(r.value)) {
        case 'drop':
          return [];
        case 'none':
          return none();
        case 'two':
          return ok({ key: 'a', value: 'first' }, { key: undefined, value: undefined, headers: [{ key: 'h', value: 'x' }] });
        case 'v1':
          return { tag: 'ok', val: [{ key: r.key, value: 'object', headers: [] }] };
        case 'v1-err':
          return { tag: 'err', val: 'as an object' };
        case 'err':
          return err('as a helper');
        default:
          return ok(r);
      }
    },
  });
  const outcomes = run(
    batch,
    ['drop', 'none', 'two', 'v1', 'v1-err', 'err', 'pass'].map((value) => ({ topic: 't', key: 'k', value })),
  );
  assert.deepEqual(
    outcomes.map((o) =>
      o.tag === 'err' ? o : { tag: 'ok', val: o.val.map((r) => [text(r.key), text(r.value), r.headers.length]) },
    ),
    [
      { tag: 'ok', val: [] },
      { tag: 'ok', val: [] },
      { tag: 'ok', val: [['a', 'first', 0], [undefined, undefined, 1]] },
      { tag: 'ok', val: [['k', 'object', 0]] },
      { tag: 'err', val: 'as an object' },
      { tag: 'err', val: 'as a helper' },
      { tag: 'ok', val: [['k', 'pass', 0]] },
    ],
  );
  assert.deepEqual(outcomes[2].val[1].headers, [{ key: 'h', value: bytes('x') }]);
});

test('exceptions and invalid results are errors of their record only', () => {
  const batch = make({
    translate(r) {
      switch (text(r.value)) {
        case 'string':
          throw 'thrown string';
        case 'error':
          throw new RangeError('thrown error');
        case 'number':
          throw 42;
        case 'undefined':
          return undefined;
        case 'bad-value':
          // The first output is written before the second turns out invalid: both are taken back.
          return [{ key: 'k', value: 'fine' }, { key: 'k', value: 12 }];
        case 'bad-header':
          return [{ key: 'k', value: 'v', headers: [{ key: 1, value: 'x' }] }];
        default:
          return [r];
      }
    },
  });
  const outcomes = run(
    batch,
    ['string', 'ok', 'error', 'number', 'undefined', 'bad-value', 'bad-header', 'last'].map((value) => ({ topic: 't', value })),
  );
  assert.deepEqual(outcomes[0], { tag: 'err', val: 'thrown string' });
  assert.equal(text(outcomes[1].val[0].value), 'ok');
  assert.deepEqual(outcomes[2], { tag: 'err', val: 'thrown error' });
  assert.deepEqual(outcomes[3], { tag: 'err', val: '42' });
  assert.deepEqual(outcomes[4], {
    tag: 'err',
    val: 'translate returned undefined, not an array of output records or an outcome',
  });
  assert.deepEqual(outcomes[5], {
    tag: 'err',
    val: 'translate returned an invalid output record 1: its value is a number, not a Uint8Array, a string or undefined',
  });
  assert.deepEqual(outcomes[6], {
    tag: 'err',
    val: 'translate returned an invalid output record 0: its header 0 is not an object {key: string, value}',
  });
  assert.equal(text(outcomes[7].val[0].value), 'last');
});

test('init: not called, failed, replaced; the state reaches translate', () => {
  const definition = {
    init(config) {
      if (config === 'string') throw 'rejected as a string';
      if (config === 'error') throw new Error('rejected as an Error');
      return { suffix: config };
    },
    translate: (r, state) => [{ key: r.key, value: text(r.value) + state.suffix }],
  };
  const batch = translator(definition);
  const input = encodeInput([{ topic: 't', value: 'v' }]);
  assert.equal(thrown(() => batch.translate(input)), 'init was not called');

  assert.equal(thrown(() => batch.init('string')), 'rejected as a string');
  assert.equal(thrown(() => batch.translate(input)), 'init failed: rejected as a string');
  assert.equal(thrown(() => batch.init('error')), 'rejected as an Error');
  assert.equal(thrown(() => batch.translate(input)), 'init failed: rejected as an Error');

  batch.init('!');
  assert.equal(text(decodeOutput(batch.translate(input))[0].val[0].value), 'v!');
  batch.init('?');
  assert.equal(text(decodeOutput(batch.translate(input))[0].val[0].value), 'v?');
  // A failed init drops the previous state.
  thrown(() => batch.init('string'));
  assert.equal(thrown(() => batch.translate(input)), 'init failed: rejected as a string');

  // Without init in the definition, every configuration is accepted.
  const plain = translator(identity);
  assert.equal(thrown(() => plain.translate(input)), 'init was not called');
  plain.init('anything');
  assert.equal(decodeOutput(plain.translate(input)).length, 1);

  assert.throws(() => translator({}), TypeError);
});

test('unicode topics, header keys and string values', () => {
  const seen = [];
  const batch = make({
    translate: (r) => (seen.push(r.topic), [{ key: r.key, value: `${r.topic}→${r.headers[0].key}`, headers: r.headers }]),
  });
  const topics = ['zürich', '東京', 'emoji-🚀', '\ufeffbom'];
  const outcomes = run(
    batch,
    topics.map((topic) => ({ topic, key: 'k', value: 'v', headers: [{ key: `ключ-${topic}`, value: '🙂' }] })),
  );
  assert.deepEqual(seen, topics);
  outcomes.forEach((o, i) => {
    assert.equal(text(o.val[0].value), `${topics[i]}→ключ-${topics[i]}`);
    assert.deepEqual(o.val[0].headers, [{ key: `ключ-${topics[i]}`, value: bytes('🙂') }]);
  });
  // A lone surrogate cannot be UTF-8: it is written as U+FFFD.
  const [lone] = run(make({ translate: () => [{ value: 'a\ud800b' }] }), [{ topic: 't' }]);
  assert.equal(text(lone.val[0].value), 'a\ufffdb');
});

test('a large batch, and a huge one that grows the output buffer past what is kept', () => {
  const batch = make({
    translate: (r) => (r.partition % 7 === 0 ? err(`no ${r.offset}`) : r.partition % 5 === 0 ? [] : [r, r]),
  });
  const records = Array.from({ length: 20000 }, (_, i) => ({
    topic: `topic-${i % 3}`,
    partition: i,
    offset: BigInt(i),
    key: `key-${i}`,
    value: 'x'.repeat(i % 200),
    headers: i % 2 ? [{ key: 'n', value: String(i) }] : [],
  }));
  const outcomes = run(batch, records);
  assert.equal(outcomes.length, records.length);
  outcomes.forEach((o, i) => {
    if (i % 7 === 0) {
      assert.deepEqual(o, { tag: 'err', val: `no ${i}` });
    } else if (i % 5 === 0) {
      assert.deepEqual(o, { tag: 'ok', val: [] });
    } else {
      assert.equal(o.val.length, 2);
      assert.equal(text(o.val[1].key), `key-${i}`);
      assert.equal(text(o.val[1].value), 'x'.repeat(i % 200));
      assert.equal(o.val[1].headers.length, i % 2);
    }
  });

  const huge = new Uint8Array(12 * 1024 * 1024).fill(7);
  const [big] = run(make({ translate: () => [{ value: huge }] }), [{ topic: 't' }]);
  assert.deepEqual(big.val[0].value, huge);
  // The next batch is written correctly into a fresh, small buffer.
  assert.equal(run(batch, records.slice(1, 3)).length, 2);
});

test("bytes of another realm (componentize-js's bindings live in another global)", () => {
  const input = encodeInput([{ topic: 't', key: 'k', value: 'v', headers: [{ key: 'h', value: 'x' }] }]);
  const foreign = runInNewContext('(bytes) => { const copy = new Uint8Array(bytes.length); copy.set(bytes); return copy; }');
  const foreignInput = foreign(input);
  assert.equal(foreignInput instanceof Uint8Array, false);
  const [outcome] = decodeOutput(
    make({ translate: (r) => [r, { key: foreign(bytes('k2')), value: foreign(bytes('v2')), headers: [{ key: 'h2', value: foreign(bytes('y')) }] }] })
      .translate(foreignInput),
  );
  assert.deepEqual(
    outcome.val.map((r) => [text(r.key), text(r.value), r.headers.map((h) => [h.key, text(h.value)])]),
    [['k', 'v', [['h', 'x']]], ['k2', 'v2', [['h2', 'y']]]],
  );
});

test('an empty batch', () => {
  // No topics, no records in; no outcomes out.
  assert.equal(hex(make(identity).translate(encodeInput([]))), '00000000');
});

test('malformed input fails the batch, never reads past the end', () => {
  const batch = make(identity);
  const input = encodeInput([
    { topic: 't', key: 'k', value: 'v', headers: [{ key: 'h', value: 'x' }, { key: 'n', value: undefined }] },
    { topic: 'u', key: undefined, value: 'w' },
  ]);
  // Every truncation of a valid input is malformed.
  for (let n = 0; n < input.length; n++) {
    assert.match(thrown(() => batch.translate(input.subarray(0, n))), /^the input is malformed: .* at byte \d+$/, `${n} bytes`);
  }
  assert.equal(
    thrown(() => batch.translate(concat([input, new Uint8Array([0])]))),
    `the input is malformed: 1 bytes are left over after the last record at byte ${input.length}`,
  );
  const patched = (at, u32) => {
    const copy = input.slice();
    new DataView(copy.buffer).setUint32(at, u32, true);
    return copy;
  };
  // Topic table: 2 topics of 1 byte: records start at 4 + 5 + 5 + 4 = 18.
  assert.equal(thrown(() => batch.translate(patched(18, 2))), 'the input is malformed: record 0 has topic index 2 of 2 topics at byte 18');
  assert.match(thrown(() => batch.translate(patched(4, 0xffffffff))), /topic 0 runs past the end/);
  assert.match(thrown(() => batch.translate(patched(18 + 24, 1000))), /the key of record 0 runs past the end/);
  // The first header's key length NONE.
  assert.match(thrown(() => batch.translate(patched(18 + 36 + 2, 0xffffffff))), /the key of header 0 of record 0 runs past the end/);
  const badTopic = input.slice();
  badTopic[8] = 0xff;
  assert.equal(thrown(() => batch.translate(badTopic)), 'the input is malformed: topic 0 is not UTF-8 at byte 8');
  assert.equal(thrown(() => batch.translate('not bytes')), 'the input is a string, not a Uint8Array');
  // The translator still works after a failed batch.
  assert.equal(decodeOutput(batch.translate(input)).length, 2);
});
