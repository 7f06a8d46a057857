// The field mapper's logic (the Rust example's tests, and its JSON output), then both builds'
// entry points in Node: version 2 through the SDK's frames, version 1 as plain objects.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig, mapKey, mapValue } from '../src/field-mapper.js';
import { batch } from '../src/translator.js';
import * as v1 from '../src/translator-v1.js';
import { encodeInput, decodeOutput, bytes, thrown } from '../../sdk/test/frames.js';

const CONFIG = '{"rename": {"station": "location", "id": "assignment_id"}, "drop": ["version"], "key_prefix": "b/"}';
const text = (b) => (b === undefined ? undefined : new TextDecoder().decode(b));
const map = (config, value) => mapValue(parseConfig(config), bytes(value));


test('renames, drops and prefixes', () => {
  const config = parseConfig(CONFIG);
  assert.equal(text(mapKey(config, bytes('assignment/7'))), 'b/assignment/7');
  assert.equal(
    mapValue(config, bytes('{"id":7,"station":"north","status":"on-air","version":3}')),
    '{"assignment_id":7,"location":"north","status":"on-air"}',
  );
});

test('keyless stays keyless; an empty configuration keeps objects, sorted', () => {
  assert.equal(mapKey(parseConfig(CONFIG), undefined), undefined);
  assert.equal(text(mapKey(parseConfig(''), bytes('k'))), 'k');
  assert.equal(map('', '{"b":1,"a":2}'), '{"a":2,"b":1}');
  assert.equal(map('  ', '{}'), '{}');
});

test('non-objects are errors', () => {
  for (const [value, expected] of [
    ['[1,2]', 'record value is not a JSON object: found an array'],
    ['"x"', 'record value is not a JSON object: found a string'],
    ['3', 'record value is not a JSON object: found a number'],
    ['null', 'record value is not a JSON object: found null'],
    ['true', 'record value is not a JSON object: found a boolean'],
  ]) {
    assert.equal(thrown(() => map(CONFIG, value)), expected, value);
  }
  // Parse errors: the engine's message after the same prefix.
  for (const value of ['', '{', '\ufeff{}', '{"a":1}x']) {
    assert.match(thrown(() => map(CONFIG, value)), /^record value is not a JSON object: ./, JSON.stringify(value));
  }
  assert.equal(thrown(() => mapValue(parseConfig(''), new Uint8Array([0x7b, 0xff, 0x7d]))), 'record value is not a JSON object: invalid UTF-8');
});

test('swap is allowed, collision is an error', () => {
  assert.equal(map('{"rename": {"a": "b", "b": "a"}}', '{"a":1,"b":2}'), '{"a":2,"b":1}');
  assert.equal(
    thrown(() => map('{"rename": {"station": "location"}}', '{"location":1,"station":2}')),
    'field "location" would appear twice: the record has it and another field is renamed to it',
  );
  // Renamed onto a dropped field: no collision.
  assert.equal(map('{"rename": {"a": "b"}, "drop": ["b"]}', '{"a":1,"b":2}'), '{"b":1}');
  // Fields named in the configuration but missing from the record are ignored.
  assert.equal(map(CONFIG, '{"other":true}'), '{"other":true}');
});

test('bad configurations are rejected', () => {
  for (const [config, expected] of [
    ['{', /^invalid configuration: ./],
    ['{"renames": {}}', 'invalid configuration: unknown field `renames`, expected one of `rename`, `drop`, `key_prefix`'],
    ['{"rename": {"a": "x", "b": "x"}}', 'invalid configuration: fields "a" and "b" are both renamed to "x"'],
    ['{"rename": {"a": "x"}, "drop": ["a"]}', 'invalid configuration: field "a" is both renamed and dropped'],
    ['[]', 'invalid configuration: invalid type: sequence, expected struct Config'],
    ['{"rename": []}', 'invalid configuration: invalid type: sequence, expected a map'],
    ['{"rename": {"a": 1}}', 'invalid configuration: invalid type: integer `1`, expected a string'],
    ['{"drop": "a"}', 'invalid configuration: invalid type: string "a", expected a sequence'],
    ['{"drop": [null]}', 'invalid configuration: invalid type: null, expected a string'],
    ['{"key_prefix": 1.5}', 'invalid configuration: invalid type: floating point `1.5`, expected a string'],
  ]) {
    const message = thrown(() => parseConfig(config));
    if (expected instanceof RegExp) {
      assert.match(message, expected, config);
    } else {
      assert.equal(message, expected, config);
    }
  }
});

test('JSON output as serde_json writes it', () => {
  for (const [value, expected] of [
    // Nested objects sorted too; arrays keep their order; compact; escapes as serde_json's.
    ['{ "z": {"y": 1, "x": [3, 2, {"b": null, "a": false}]}, "a": "q\\"\\n\\u0001é" }', '{"a":"q\\"\\n\\u0001é","z":{"x":[3,2,{"a":false,"b":null}],"y":1}}'],
    // Integer-like names sort as strings (JavaScript objects would put them first, by value).
    ['{"b":1,"10":2,"9":3,"a":4}', '{"10":2,"9":3,"a":4,"b":1}'],
    // Numbers: integers exact to 64 bits, floats as zmij (".0"; exponents from 1e16 and below 1e-5).
    ['{"a":3.0,"b":-0,"c":1e2,"d":0.1,"e":1.5e300,"f":12345678901234567890,"g":-9223372036854775808}', '{"a":3.0,"b":-0.0,"c":100.0,"d":0.1,"e":1.5e+300,"f":12345678901234567890,"g":-9223372036854775808}'],
    ['{"a":18446744073709551616,"b":1e17,"c":1.2e16,"d":0.0001,"e":0.00001234,"f":-2.5E-7,"g":[1.0e0]}', '{"a":1.8446744073709552e+19,"b":1e+17,"c":1.2e+16,"d":0.0001,"e":0.00001234,"f":-2.5e-7,"g":[1.0]}'],
    ['{"a":1234567890123456.7,"b":9007199254740993.0,"c":-0.0,"d":5e-324,"e":0.000001}', '{"a":1234567890123456.8,"b":9007199254740992.0,"c":-0.0,"d":5e-324,"e":1e-6}'],
    // Names by the byte order of their UTF-8: U+FF5E before U+1F600 (UTF-16 order: after).
    ['{"\\ud83d\\ude00":1,"～":2,"a":3}', '{"a":3,"～":2,"😀":1}'],
    // A repeated name keeps its last value, on both paths.
    ['{"a":1,"a":2}', '{"a":2}'],
    ['{"a":1.5,"a":2.5}', '{"a":2.5}'],
  ]) {
    assert.equal(map('', value), expected, value);
  }
  assert.equal(thrown(() => map('', '{"a":1e400}')), 'record value is not a JSON object: number out of range');
  // New names by the byte order of their UTF-8 too, on both paths.
  const high = '{"rename": {"a": "\ud83d\ude00", "b": "～"}}';
  assert.equal(map(high, '{"a":1,"b":2}'), '{"～":2,"😀":1}');
  assert.equal(map(high, '{"a":1.5,"b":{"y":1,"x":2}}'), '{"～":{"x":2,"y":1},"😀":1.5}');
});

test('version 2 (SDK) and version 1 give the same outcomes', () => {
  const records = [
    { topic: 'assignments', key: 'assignment/7', value: '{"id":7,"station":"north","status":"on-air","version":3}', headers: [{ key: 'h', value: undefined }] },
    { topic: 'assignments', key: 'assignment/7', value: undefined },
    { topic: 'assignments', key: undefined, value: '{}' },
    { topic: 'assignments', key: 'k', value: '[1,2]' },
    { topic: 'assignments', key: 'k', value: '{"location":1,"station":2}' },
  ];
  const expected = [
    { tag: 'ok', val: [{ key: 'b/assignment/7', value: '{"assignment_id":7,"location":"north","status":"on-air"}', headers: [{ key: 'h', value: undefined }] }] },
    { tag: 'ok', val: [{ key: 'b/assignment/7', value: undefined, headers: [] }] },
    { tag: 'ok', val: [{ key: undefined, value: '{}', headers: [] }] },
    { tag: 'err', val: 'record value is not a JSON object: found an array' },
    { tag: 'err', val: 'field "location" would appear twice: the record has it and another field is renamed to it' },
  ];
  const readable = (outcomes) =>
    outcomes.map((o) =>
      o.tag === 'err' ? o : { tag: 'ok', val: o.val.map((r) => ({ key: text(r.key), value: text(r.value), headers: r.headers })) },
    );

  assert.equal(thrown(() => batch.translate(encodeInput(records))), 'init was not called');
  assert.equal(thrown(() => batch.init('{"renames": {}}')).startsWith('invalid configuration: unknown field'), true);
  batch.init(CONFIG);
  assert.deepEqual(readable(decodeOutput(batch.translate(encodeInput(records)))), expected);

  const v1Records = records.map((r) => ({
    ...r,
    partition: 0,
    offset: 0n,
    timestampMs: -1n,
    key: bytes(r.key),
    value: bytes(r.value),
    headers: r.headers || [],
  }));
  assert.equal(thrown(() => v1.translate(v1Records)), 'init was not called');
  thrown(() => v1.init('{"renames": {}}'));
  assert.match(thrown(() => v1.translate(v1Records)), /^init failed: invalid configuration: unknown field/);
  v1.init(CONFIG);
  assert.deepEqual(readable(v1.translate(v1Records)), expected);
});
