#!/usr/bin/env bash
# Builds Tributary's JavaScript translators into <dist-dir> (componentize-js):
#
#   js-uppercase.wasm         uppercase/               version 1 (world `translator`)
#   js-field-mapper.wasm      field-mapper/ + sdk/     version 2 (world `batch-translator`)
#   js-field-mapper-v1.wasm   field-mapper/            version 1, the same logic (benchmarks)
#
#   translators/js/build.sh <dist-dir>
#
# Installs the locked npm packages (`npm ci`) when package-lock.json changed, and builds each
# component only when its inputs changed (componentize-js takes 10-20 s per component): a run
# with nothing to do takes well under a second. The components import nothing (build.mjs);
# scripts/build-translators.sh checks their worlds.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 <dist-dir>" >&2
    exit 2
fi
js=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wit="$js/../wit"
mkdir -p "$1"
dist=$(cd "$1" && pwd)

log() { printf '==> %s\n' "$*" >&2; }
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "build.sh: node and npm not found: they build the JavaScript translators" >&2
    exit 1
fi

# npm ci installs exactly package-lock.json, from scratch: only when the lock changed since the
# last install, which the digest stored in node_modules records.
lock_digest=$(sha256sum <"$js/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$js/node_modules/.tributary-lock" 2>/dev/null)" != "$lock_digest" ]; then
    log "installing the JavaScript translators' packages (npm ci)"
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_digest" >"$js/node_modules/.tributary-lock"
fi

# component NAME WORLD SOURCE INPUT...: builds $dist/NAME.wasm from SOURCE for WORLD unless the
# digest of its inputs (the INPUT files, the build script, the locked packages and the WIT) is
# the one of the last build.
component() {
    local name=$1 world=$2 source=$3
    shift 3
    local digest
    digest=$({ printf '%s %s\n' "$world" "$source"; cat "$@" "$js/build.mjs" "$js/package-lock.json" "$wit"/*.wit; } |
        sha256sum | cut -d' ' -f1)
    if [ "$(cat "$dist/.$name.digest" 2>/dev/null)" = "$digest" ] && [ -s "$dist/$name.wasm" ]; then
        return
    fi
    log "building $name.wasm (componentize-js, world $world)"
    (cd "$js" && node build.mjs "$source" "$world" "$dist/$name.wasm.tmp")
    mv "$dist/$name.wasm.tmp" "$dist/$name.wasm"
    echo "$digest" >"$dist/.$name.digest"
}

cd "$js"
component js-uppercase translator uppercase/src/translator.js uppercase/src/*.js
component js-field-mapper batch-translator field-mapper/src/translator.js field-mapper/src/*.js sdk/index.js
component js-field-mapper-v1 translator field-mapper/src/translator-v1.js field-mapper/src/*.js
