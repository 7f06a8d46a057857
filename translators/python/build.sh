#!/usr/bin/env bash
# Builds the Python translators into DIST (usage: build.sh DIST):
#
#   py-field-mapper.wasm      examples/field-mapper, contract v2 (batch-translator) via the SDK
#   py-field-mapper-v1.wasm   the same logic, contract v1 (world translator), to compare them
#   py-hostile.wasm           examples/hostile: the gateway's hostile fixtures, one mode per config
#
# componentize-py (pinned) runs from a virtualenv in translators/python/.venv, created on first
# use. Each component is rebuilt only when its inputs (its sources, the SDK, the WIT, this script,
# the pinned version) changed: componentize-py takes ~10 s and a second run ~1 s. Every component
# is built with --stub-wasi and checked to import nothing.
#
# Environment: WASM_TOOLS=/path/to/wasm-tools to use that binary instead of the pinned one (which
# scripts/build-translators.sh installs); TRIBUTARY_TOOLS_DIR to say where that one is.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIST" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
translators=$(dirname "$here")
mkdir -p "$1"
dist=$(cd "$1" && pwd)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'python/build.sh: %s\n' "$*" >&2; exit 1; }

componentize_py_version=0.25.1
wasm_tools_version=1.239.0
tools_dir="${TRIBUTARY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tributary/tools}"
wasm_tools="${WASM_TOOLS:-$tools_dir/wasm-tools-$wasm_tools_version/bin/wasm-tools}"
"$wasm_tools" --version >/dev/null 2>&1 ||
    die "wasm-tools not found at $wasm_tools: run scripts/build-translators.sh once, or set WASM_TOOLS"

venv="$here/.venv"
componentize_py="$venv/bin/componentize-py"
if [ "$("$componentize_py" --version 2>/dev/null)" != "componentize-py $componentize_py_version" ]; then
    command -v python3 >/dev/null || die "python3 not found"
    log "installing componentize-py $componentize_py_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$componentize_py_version"
fi

# build NAME WORLD APP_DIR MODULE: componentize APP_DIR/MODULE.py (with the SDK on its path) as
# DIST/NAME.wasm for WORLD, unless its inputs are those of the last build.
build() {
    local name=$1 world=$2 app=$3 module=$4 digest out="$dist/$1.wasm"
    digest=$( (
        echo "componentize-py $componentize_py_version $world $module"
        cd "$here" && find sdk "$app" -name '*.py' -not -path '*/__pycache__/*' | LC_ALL=C sort |
            xargs sha256sum
        sha256sum "$translators/wit/"*.wit "$here/build.sh" "$here/strip-exports.py"
    ) | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$dist/.$name.digest" 2>/dev/null)" = "$digest" ] && [ -s "$out" ]; then
        return
    fi
    log "building $name.wasm (componentize-py, ~10 s)"
    # --stub-wasi: CPython needs WASI while componentize-py pre-initializes it; the component
    # it writes has every WASI import replaced by a trapping stub, so it imports nothing (and
    # has no clock, no files, no randomness: Python's random module has a fixed seed).
    # (It leaves __pycache__ directories next to the sources: .gitignore has them.)
    "$componentize_py" --quiet -d "$translators/wit" -w "$world" componentize \
        --stub-wasi -p "$here/$app" -p "$here/sdk" "$module" -o "$out.raw"
    # componentize-py also exports its own pre-initialization hook (`exports`); the gateway
    # calls the world's exports only, so the component is wrapped to export nothing else.
    "$venv/bin/python" "$here/strip-exports.py" "$wasm_tools" "$out.raw" "$out.tmp"
    rm "$out.raw"
    mv "$out.tmp" "$out"
    echo "$digest" >"$dist/.$name.digest"
}

build py-field-mapper batch-translator examples/field-mapper app
build py-field-mapper-v1 translator examples/field-mapper app_v1
build py-hostile batch-translator examples/hostile hostile

# scripts/build-translators.sh checks them (valid, no import, the exports of their world).
