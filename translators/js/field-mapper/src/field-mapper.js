// The field mapper's logic, shared by its two builds (translator.js: version 2 through the SDK;
// translator-v1.js: version 1's world directly). It behaves as the Rust example
// (../../../examples/field-mapper/src/lib.rs, README "field-mapper"), except that it writes
// every value again as serde_json would, where the Rust one copies each value as A wrote it:
// the two agree byte for byte when A writes its values compactly, as serde_json does.
//
// Configuration (JSON; every field optional, unknown fields rejected; an empty string is `{}`):
//   {"rename": {"station": "location", "id": "assignment_id"}, "drop": ["version"], "key_prefix": "b/"}
// - rename: old field name -> new field name; two fields may not get the same new name
//   (swapping names is fine); a field can't be both renamed and dropped.
// - drop: fields to remove, by their name in A's record.
// - key_prefix: prepended to every key; a keyless record stays keyless.
//
// Each value must be a JSON object; the output is that object with the fields renamed and
// dropped, as compact JSON with the fields of every object in name order (the byte order of
// their UTF-8, as serde_json's map). Numbers are written as serde_json writes them: integers
// exactly (up to 64 bits), other numbers as the shortest decimal that reads back as the same
// double, with ".0" when integral ("3.0"), exponents from 1e16 on and below 1e-5 ("1e+16",
// "1.5e-7"). A tombstone stays a tombstone (with the prefixed key); headers pass through.
//
// Errors are thrown as strings. Where the Rust example quotes serde_json's message (a value or
// a configuration that is not valid JSON), this one quotes the JavaScript engine's, so the
// wording after "record value is not a JSON object: " / "invalid configuration: " differs.
// Also unlike serde_json, JSON.parse accepts unpaired surrogate escapes ("\ud800", written back
// escaped) and nesting deeper than 128 levels; and it reads every decimal exactly, where
// serde_json's default parser is best effort past 17 significant digits (the last digit of such
// a number may differ).

const CONFIG_FIELDS = ['rename', 'drop', 'key_prefix'];

// ignoreBOM: a leading U+FEFF stays in the text, so JSON.parse rejects it as serde_json does.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

/**
 * Parses and checks a configuration; throws the error message as a string.
 * Returns {rename, drop, keyPrefix, highNames}: `rename` maps old names to new ones and `drop`
 * names to true, as objects without prototype (a property lookup costs less than a Map's method
 * call in an interpreter, and no name is inherited); keyPrefix is a Uint8Array or null;
 * highNames tells whether a new name has a character above U+D7FF (see byCodePoint).
 */
export function parseConfig(text) {
  let parsed = {};
  if (text.trim() !== '') {
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      throw `invalid configuration: ${e.message}`;
    }
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw `invalid configuration: invalid type: ${serdeKind(parsed)}, expected struct Config`;
  }
  for (const name of Object.keys(parsed)) {
    if (!CONFIG_FIELDS.includes(name)) {
      throw `invalid configuration: unknown field \`${name}\`, expected one of \`rename\`, \`drop\`, \`key_prefix\``;
    }
  }

  const rename = Object.create(null);
  if (parsed.rename !== undefined) {
    const map = parsed.rename;
    if (map === null || typeof map !== 'object' || Array.isArray(map)) {
      throw `invalid configuration: invalid type: ${serdeKind(map)}, expected a map`;
    }
    for (const from of Object.keys(map)) {
      if (typeof map[from] !== 'string') {
        throw `invalid configuration: invalid type: ${serdeKind(map[from])}, expected a string`;
      }
      rename[from] = map[from];
    }
  }
  const drop = Object.create(null);
  if (parsed.drop !== undefined) {
    if (!Array.isArray(parsed.drop)) {
      throw `invalid configuration: invalid type: ${serdeKind(parsed.drop)}, expected a sequence`;
    }
    for (const name of parsed.drop) {
      if (typeof name !== 'string') {
        throw `invalid configuration: invalid type: ${serdeKind(name)}, expected a string`;
      }
      drop[name] = true;
    }
  }
  let keyPrefix = '';
  if (parsed.key_prefix !== undefined) {
    if (typeof parsed.key_prefix !== 'string') {
      throw `invalid configuration: invalid type: ${serdeKind(parsed.key_prefix)}, expected a string`;
    }
    keyPrefix = parsed.key_prefix;
  }

  // Checked in name order, as the Rust example's BTreeMap, so the same pair is reported.
  const targets = new Map();
  for (const from of sortNames(Object.keys(rename), true)) {
    const to = rename[from];
    if (from in drop) {
      throw `invalid configuration: field ${JSON.stringify(from)} is both renamed and dropped`;
    }
    if (targets.has(to)) {
      throw `invalid configuration: fields ${JSON.stringify(targets.get(to))} and ${JSON.stringify(from)} are both renamed to ${JSON.stringify(to)}`;
    }
    targets.set(to, from);
  }
  return {
    rename,
    drop,
    keyPrefix: keyPrefix === '' ? null : encoder.encode(keyPrefix),
    highNames: Object.keys(rename).some((from) => MAY_HAVE_HIGH_CHARS.test(rename[from])),
  };
}

/** The key with the configured prefix; undefined (keyless) stays undefined. */
export function mapKey(config, key) {
  if (key === undefined || key === null || config.keyPrefix === null) {
    return key;
  }
  const prefixed = new Uint8Array(config.keyPrefix.length + key.length);
  prefixed.set(config.keyPrefix, 0);
  prefixed.set(key, config.keyPrefix.length);
  return prefixed;
}

/** The mapped value as JSON text (the caller writes it as UTF-8); throws the error as a string. */
export function mapValue(config, bytes) {
  let text;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw 'record value is not a JSON object: invalid UTF-8';
  }
  let object;
  try {
    object = JSON.parse(text);
  } catch (e) {
    throw `record value is not a JSON object: ${e.message}`;
  }
  if (object === null || typeof object !== 'object' || Array.isArray(object)) {
    throw `record value is not a JSON object: found ${kind(object)}`;
  }
  if (!NEEDS_EXACT_PATH.test(text)) {
    const json = mapFlat(config, object);
    if (json !== null) {
      return json;
    }
  }
  return mapExact(config, text, object);
}

/**
 * The common case, with a few native calls per record (translators run interpreted: every
 * JavaScript operation counts): an object whose values are all strings, booleans, null or
 * integers of at most 15 digits, whose names are ASCII-sortable and cannot be array indices.
 * Its fields go into a new object in name order and JSON.stringify writes them in that order.
 * Returns null when the object is not such a case (mapExact then does the work).
 */
function mapFlat(config, object) {
  // NEEDS_EXACT_PATH did not match: no name above U+D7FF, so UTF-16 order is UTF-8 order.
  const names = Object.keys(object).sort();
  // No prototype: a field named "__proto__" is a field like any other.
  const mapped = Object.create(null);
  let renamed = false;
  for (let i = 0; i < names.length; i++) {
    const name = names[i];
    const value = object[name];
    if (typeof value === 'object' && value !== null) {
      return null; // nested objects need their fields sorted too
    }
    if (name in config.drop) {
      continue;
    }
    let newName = config.rename[name];
    if (newName === undefined) {
      newName = name;
    } else {
      renamed = true;
    }
    // Objects list names that are array indices ("7") first, whatever the insertion order:
    // leave names that start with a digit (or anything before ':', or empty) to mapExact.
    if (newName < ':') {
      return null;
    }
    if (newName in mapped) {
      throw collision(newName);
    }
    mapped[newName] = value;
  }
  if (!renamed) {
    return JSON.stringify(mapped);
  }
  const sorted = Object.create(null);
  const newNames = sortNames(Object.keys(mapped), config.highNames);
  for (let i = 0; i < newNames.length; i++) {
    sorted[newNames[i]] = mapped[newNames[i]];
  }
  return JSON.stringify(sorted);
}

/** Any value, any names, any numbers: see the top of this file. */
function mapExact(config, text, object) {
  // Names above U+D7FF sort differently in UTF-16 (JavaScript's order) and UTF-8 (serde_json's);
  // only values that may have such a name pay for the exact comparison.
  const codePointOrder = config.highNames || MAY_HAVE_HIGH_CHARS.test(text);
  if (NUMBERS_NEED_SOURCE.test(text)) {
    // JSON.parse has checked the text; parse it again keeping the numbers' source text.
    object = parseKeepingNumbers(text);
  }
  const mapped = new Map();
  for (const name of sortNames(names(object), codePointOrder)) {
    if (name in config.drop) {
      continue;
    }
    const to = config.rename[name];
    const newName = to === undefined ? name : to;
    if (mapped.has(newName)) {
      throw collision(newName);
    }
    mapped.set(newName, field(object, name));
  }
  return writeJson(mapped, codePointOrder);
}

function collision(name) {
  // Rename targets are distinct (checked by parseConfig), so one of the two is a field renamed
  // to the name of a field that is kept.
  return `field ${JSON.stringify(name)} would appear twice: the record has it and another field is renamed to it`;
}

// --- JSON as serde_json writes it ------------------------------------------------------------

// A literal character or an escape at or above U+D000 (a superset of what needs the exact order).
const MAY_HAVE_HIGH_CHARS = /[\ud800-\uffff]|\\u[d-fD-F]/;
// A number JSON.parse would not give back as serde_json writes it: a fraction or an exponent
// (serde_json keeps "3.0" a float), 16 digits or more (past 2^53: serde_json keeps 64-bit
// integers exact) or -0 (serde_json: "-0.0"). Strings may match too; they then take the exact
// path for nothing.
const NUMBERS_NEED_SOURCE = /\d[.eE]|\d{16}|-0(?!\d)/;
// Either of the two, in one pass over the text: what keeps a value off mapFlat.
const NEEDS_EXACT_PATH = /\d[.eE]|\d{16}|-0(?!\d)|[\ud800-\uffff]|\\u[d-fD-F]/;

/** A number as written in the source text (the exact path only). */
class RawNumber {
  constructor(text) {
    this.text = text;
  }
}

// One token after optional whitespace: a string, a number, punctuation or a literal.
const TOKEN = /[ \t\n\r]*(?:("(?:[^"\\]|\\.)*")|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|([{}[\],:])|(true|false|null))/y;

/** Parses JSON that JSON.parse accepted, with objects as Maps and numbers as RawNumber. */
function parseKeepingNumbers(text) {
  TOKEN.lastIndex = 0;
  const next = () => {
    const match = TOKEN.exec(text);
    if (match === null) {
      // Unreachable for a text JSON.parse accepted; guards the loops below all the same.
      throw `record value is not a JSON object: unexpected text at ${TOKEN.lastIndex}`;
    }
    return match;
  };
  const value = (token) => {
    if (token[1] !== undefined) {
      return JSON.parse(token[1]);
    }
    if (token[2] !== undefined) {
      return new RawNumber(token[2]);
    }
    if (token[4] !== undefined) {
      return token[4] === 'true' ? true : token[4] === 'false' ? false : null;
    }
    if (token[3] === '[') {
      const array = [];
      let t = next();
      while (t[3] !== ']') {
        array.push(value(t));
        t = next();
        if (t[3] === ',') {
          t = next();
        }
      }
      return array;
    }
    const object = new Map();
    let t = next();
    while (t[3] !== '}') {
      const name = JSON.parse(t[1]);
      next(); // ':'
      // A repeated name keeps its last value, as with JSON.parse and serde_json.
      object.set(name, value(next()));
      t = next();
      if (t[3] === ',') {
        t = next();
      }
    }
    return object;
  };
  return value(next());
}

function names(object) {
  return object instanceof Map ? [...object.keys()] : Object.keys(object);
}

function field(object, name) {
  return object instanceof Map ? object.get(name) : object[name];
}

function sortNames(list, codePointOrder) {
  return codePointOrder ? list.sort(byCodePoint) : list.sort();
}

/** Compares strings by code point, which is the byte order of their UTF-8. */
function byCodePoint(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x !== y) {
      // Surrogates (code points above U+FFFF) come after U+E000..U+FFFF in code point order.
      if (x >= 0xd800 && y >= 0xd800) {
        x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
        y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
      }
      return x - y;
    }
  }
  return a.length - b.length;
}

/** Compact JSON of a value, objects with their fields in name order. */
function writeJson(value, codePointOrder) {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') {
    return JSON.stringify(value);
  }
  if (typeof value === 'number') {
    // The fast path's numbers are integers of at most 15 digits: exact, written as such.
    return String(value);
  }
  if (value instanceof RawNumber) {
    return writeNumber(value.text);
  }
  if (Array.isArray(value)) {
    let json = '[';
    for (let i = 0; i < value.length; i++) {
      json += (i === 0 ? '' : ',') + writeJson(value[i], codePointOrder);
    }
    return json + ']';
  }
  let json = '{';
  let first = true;
  for (const name of sortNames(names(value), codePointOrder)) {
    json += (first ? '' : ',') + JSON.stringify(name) + ':' + writeJson(field(value, name), codePointOrder);
    first = false;
  }
  return json + '}';
}

const U64_MAX = 18446744073709551615n;
const I64_MIN = -9223372036854775808n;

/** A number's source text as serde_json writes it back (its Number handling, then zmij). */
function writeNumber(source) {
  if (!/[.eE]/.test(source)) {
    if (source === '-0') {
      return '-0.0';
    }
    const integer = BigInt(source);
    if (integer <= U64_MAX && integer >= I64_MIN) {
      return source;
    }
  }
  const x = Number(source);
  if (!Number.isFinite(x)) {
    throw 'record value is not a JSON object: number out of range';
  }
  return formatDouble(x);
}

/**
 * How serde_json (1.0.154, through zmij 1.0.23) writes a finite double, from JavaScript's
 * shortest round-trip digits (both pick the even digit of a tie).
 */
function formatDouble(x) {
  if (x === 0) {
    return Object.is(x, -0) ? '-0.0' : '0.0';
  }
  // "-1.2345e+21": the shortest digits that read back as x, and the exponent of the first.
  const [mantissa, exponent] = x.toExponential().split('e');
  const sign = x < 0 ? '-' : '';
  const digits = mantissa.replace('-', '').replace('.', '');
  const length = digits.length;
  const kk = Number(exponent) + 1; // 10^(kk-1) <= |x| < 10^kk
  if (length <= kk && kk <= 16) {
    return `${sign}${digits}${'0'.repeat(kk - length)}.0`;
  }
  if (0 < kk && kk <= 16) {
    return `${sign}${digits.slice(0, kk)}.${digits.slice(kk)}`;
  }
  if (-5 < kk && kk <= 0) {
    return `${sign}0.${'0'.repeat(-kk)}${digits}`;
  }
  const fraction = length === 1 ? '' : `.${digits.slice(1)}`;
  return `${sign}${digits[0]}${fraction}e${kk > 1 ? '+' : ''}${kk - 1}`;
}

/** How serde_json's messages name a JSON value's kind ("found an array"). */
function kind(value) {
  if (value === null) {
    return 'null';
  }
  if (Array.isArray(value)) {
    return 'an array';
  }
  switch (typeof value) {
    case 'boolean':
      return 'a boolean';
    case 'number':
      return 'a number';
    case 'string':
      return 'a string';
    default:
      return 'an object';
  }
}

/** How serde's "invalid type" messages name a JSON value. */
function serdeKind(value) {
  if (value === null) {
    return 'null';
  }
  if (Array.isArray(value)) {
    return 'sequence';
  }
  switch (typeof value) {
    case 'boolean':
      return `boolean \`${value}\``;
    case 'number':
      return Number.isInteger(value) ? `integer \`${value}\`` : `floating point \`${value}\``;
    case 'string':
      return `string ${JSON.stringify(value)}`;
    default:
      return 'map';
  }
}
