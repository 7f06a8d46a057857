// The field mapper as a version 2 translator (world `batch-translator`), through the SDK.
// The logic and its configuration are in field-mapper.js; build: ../../build.sh.
import { translator } from '../../sdk/index.js';
import { parseConfig, mapKey, mapValue } from './field-mapper.js';

export const batch = translator({
  init: parseConfig,
  translate(record, config) {
    // mapValue throws its error message: the SDK makes it this record's error.
    const value = record.value === undefined ? undefined : mapValue(config, record.value);
    // The value is JSON text: the SDK writes it as UTF-8 straight into the output.
    return [{ key: mapKey(config, record.key), value, headers: record.headers }];
  },
});
