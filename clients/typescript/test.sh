#!/usr/bin/env bash
# Installs (when needed), checks the generated code is current, type-checks and runs the tests of
# the TypeScript client against the real gateway binary and a real Kafka.
#
#   TRIBUTARY_BIN=target/debug/tributary TRIBUTARY_TEST_BOOTSTRAP=127.0.0.1:9092 clients/typescript/test.sh
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)
repo=$(cd ../.. && pwd)

# npm ci only when node_modules is missing or was installed from another package-lock.json.
stamp=node_modules/.tributary-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  npm ci --no-audit --no-fund
  echo "$want" > "$stamp"
fi

# The committed src/gen must be what the protos generate.
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
bash scripts/generate.sh "$gen"
if ! diff -r "$gen" src/gen > "$gen.diff" 2>&1; then
  cat "$gen.diff" >&2
  rm -f "$gen.diff"
  echo "test.sh: src/gen is stale: the protos changed; run 'npm run generate' in clients/typescript and commit src/gen" >&2
  exit 1
fi
rm -f "$gen.diff"

npx --no-install tsc --noEmit
# The package as it installs (dist/, what README's install uses), and that it loads.
npm run --silent build
node --input-type=module -e "import('$here/dist/index.js').then((m) => { if (typeof m.follow !== 'function' || typeof m.createClient !== 'function') { throw new Error('dist/index.js lacks follow or createClient'); } })"
# dist/web.js is what pages import as it is: it must load, and import nothing (no node: module).
node --input-type=module -e "import('$here/dist/web.js').then((m) => { if (typeof m.followLog !== 'function' || typeof m.LogState !== 'function') { throw new Error('dist/web.js lacks followLog or LogState'); } })"
if grep -nE '^\s*(import|export) .* from |import\(' dist/web.js; then
  echo "test.sh: dist/web.js imports a module; browsers load it alone: keep src/web.ts free of imports" >&2
  exit 1
fi

export TRIBUTARY_BIN=${TRIBUTARY_BIN:-$repo/target/debug/tributary}
if [[ ! -x $TRIBUTARY_BIN ]]; then
  echo "test.sh: no gateway binary at $TRIBUTARY_BIN (build it, or set TRIBUTARY_BIN)" >&2
  exit 1
fi
export TRIBUTARY_TEST_BOOTSTRAP=${TRIBUTARY_TEST_BOOTSTRAP:-127.0.0.1:9092}
# test/browser.test.ts drives the system's Chromium (scripts/setup.sh installs it).
export TRIBUTARY_CHROMIUM=${TRIBUTARY_CHROMIUM:-/usr/bin/chromium}
if [[ ! -x $TRIBUTARY_CHROMIUM ]]; then
  echo "test.sh: no Chromium at $TRIBUTARY_CHROMIUM (apt-get install chromium, or set TRIBUTARY_CHROMIUM)" >&2
  exit 1
fi
if [[ ! -f $repo/translators/dist/field-mapper.wasm ]]; then
  echo "test.sh: translators/dist/field-mapper.wasm is missing: run scripts/build-translators.sh" >&2
  exit 1
fi

cd "$here"
node --import tsx --test --test-concurrency=1 --test-timeout=120000 test/*.test.ts
