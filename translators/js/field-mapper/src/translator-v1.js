// The field mapper as a version 1 translator (world `translator`: exported functions, the batch
// as a list of records), with the same logic as translator.js (version 2). It exists to compare
// the two versions of the contract on the same work; new translators use the SDK (version 2).
import { parseConfig, mapKey, mapValue } from './field-mapper.js';

const encoder = new TextEncoder();

// The configuration; null until init succeeds.
let config = null;
// The last init's error, for translate's message.
let initError = null;

// componentize-js: throwing a string is `err(string)`; throwing anything else (an Error) traps.
export function init(text) {
  config = null;
  initError = null;
  try {
    config = parseConfig(text);
  } catch (e) {
    initError = messageOf(e);
    throw initError;
  }
}

export function translate(batch) {
  if (config === null) {
    throw initError === null ? 'init was not called' : `init failed: ${initError}`;
  }
  return batch.map(translateOne);
}

function translateOne(record) {
  let value;
  if (record.value !== undefined) {
    try {
      value = encoder.encode(mapValue(config, record.value));
    } catch (e) {
      return { tag: 'err', val: messageOf(e) };
    }
  }
  return { tag: 'ok', val: [{ key: mapKey(config, record.key), value, headers: record.headers }] };
}

/** The message of a thrown value, as the SDK makes it (field-mapper.js throws strings). */
function messageOf(e) {
  return e !== null && typeof e === 'object' && typeof e.message === 'string' ? e.message : String(e);
}
