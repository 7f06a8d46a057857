// Builds src/translator.js into a WebAssembly component of the translator world:
//   node build.mjs <output.wasm>
// All of componentize-js's optional engine features are disabled, so the component imports
// nothing (no WASI): the gateway links no host functions. Without `stdio`, console.log goes
// nowhere; without `clocks`, timers (setTimeout, Date.now) are unavailable; without `random`,
// Math.random is deterministic.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const output = process.argv[2];
if (!output) {
  console.error('usage: node build.mjs <output.wasm>');
  process.exit(2);
}
const here = (path) => fileURLToPath(new URL(path, import.meta.url));

const { component } = await componentize({
  sourcePath: here('src/translator.js'),
  witPath: here('../../wit'),
  worldName: 'translator',
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(output, component);
