// Builds one JavaScript translator into a WebAssembly component:
//   node build.mjs <source.js> <world> <output.wasm>
// <world> is `batch-translator` (version 2, the SDK's) or `translator` (version 1), both in
// ../wit. All of componentize-js's optional engine features are disabled, so the component
// imports nothing (no WASI): the gateway links no host functions. Without `stdio`, console.log
// goes nowhere; without `clocks`, timers (setTimeout, Date.now) are unavailable; without
// `random`, Math.random is deterministic.
//
// The engine loads the source's imports at build time from the working directory (componentize-js
// maps it to the component's root when the source is inside it): this script works in its own
// directory, so a translator may import any module under translators/js/, such as ../../sdk/.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const [source, world, output] = process.argv.slice(2);
if (!source || !world || !output) {
  console.error('usage: node build.mjs <source.js> <world> <output.wasm>');
  process.exit(2);
}
const here = fileURLToPath(new URL('.', import.meta.url));
const sourcePath = resolve(source);
const outputPath = resolve(output);
if (relative(here, sourcePath).startsWith('..')) {
  console.error(`build.mjs: ${source} is not under ${here}: its imports could not be loaded`);
  process.exit(2);
}
process.chdir(here);

const { component } = await componentize({
  sourcePath,
  witPath: resolve(here, '../wit'),
  worldName: world,
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(outputPath, component);
