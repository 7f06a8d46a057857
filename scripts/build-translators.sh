#!/usr/bin/env bash
# Builds B's example translators and the gateway's test fixtures into translators/dist/:
#
#   identity.wasm field-mapper.wasm filter.wasm                        examples, version 2 of the
#   x-model.wasm (the main demo's)                                     contract (batch-translator)
#   js-field-mapper.wasm py-field-mapper.wasm                          (the Rust, JS, Python SDKs)
#   identity-v1.wasm field-mapper-v1.wasm js-field-mapper-v1.wasm      the same, version 1
#   py-field-mapper-v1.wasm js-uppercase.wasm                          (translator), for comparisons
#   busy-loop.wasm memory-bomb.wasm panic.wasm huge-output.wasm        fixtures (components;
#   error-value.wasm huge-output-v1.wasm wrong-world.wasm              version 2 but the -v1 one;
#   wrong-batch.wasm                                                   the wrong-* ones: neither)
#   py-hostile.wasm                                                    (Python: one per mode)
#   core-module.wasm garbage.bin                                       fixtures (not components)
#   limit-memory.wasm limit-memories.wasm limit-tables.wasm            fixtures over a limit of
#   limit-table-elements.wasm limit-component-memories.wasm            the instance pool, and one
#   limit-component-tables.wasm limit-core-instances.wasm              at its limits (components
#   limit-core-instance-size.wasm limit-component-instance-size.wasm   of the hand-written
#   at-limits.wasm                                                     fixtures/limits/translator.wat)
#
# Installs what is missing (the wasm32 target, a pinned wasm-tools, the JS translators' npm
# packages), builds in release, checks that every component imports nothing and exports its
# translator world (wrong-world: neither), and prints each artifact's size. Idempotent:
# a second run only re-checks (a few seconds).
#
# Environment: WASM_TOOLS=/path/to/wasm-tools to use that binary instead of the pinned one;
# TRIBUTARY_TOOLS_DIR to change where the pinned one is installed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
translators="$root/translators"
dist="$translators/dist"
target=wasm32-unknown-unknown
# The translators' own workspace has its own target directory; pin it so a CARGO_TARGET_DIR in
# the environment (e.g. set for the gateway) does not move the core modules elsewhere.
export CARGO_TARGET_DIR="$translators/target"
release="$CARGO_TARGET_DIR/$target/release"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-translators: %s\n' "$*" >&2; exit 1; }

# rustup installs put cargo in ~/.cargo/bin, which a non-login shell (CI) may not have on PATH.
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup"
command -v rustup >/dev/null || die "rustup not found: the wasm32 target is installed with rustup"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    die "node and npm not found: they build the JavaScript translators (componentize-js)"
fi

# --- Tools -------------------------------------------------------------------------------------

# Guests are built for wasm32-unknown-unknown, not wasm32-wasip2: a wasip2 cdylib imports
# wasi:cli/wasi:io even when it uses none of them, and the gateway links nothing.
if ! rustup target list --installed | grep -qx "$target"; then
    log "installing the Rust target $target"
    rustup target add "$target"
fi

# wasm-tools turns core modules into components (`component new`) and shows their worlds
# (`component wit`). 1.239 matches wit-bindgen 0.46 (both on wit-parser 0.239). Built from
# crates.io with only the subcommands used here (~4 min on 2 cores, once per machine: it goes
# to a per-user cache shared by every clone, and by CI runs on the same machine).
wasm_tools_version=1.239.0
tools_dir="${TRIBUTARY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tributary/tools}"
if [ -n "${WASM_TOOLS:-}" ]; then
    wasm_tools="$WASM_TOOLS"
else
    wasm_tools="$tools_dir/wasm-tools-$wasm_tools_version/bin/wasm-tools"
    if ! "$wasm_tools" --version 2>/dev/null | grep -qF " $wasm_tools_version"; then
        log "installing wasm-tools $wasm_tools_version into $tools_dir (once per machine)"
        cargo install "wasm-tools@$wasm_tools_version" --locked --no-default-features \
            --features component,validate,print \
            --root "$tools_dir/wasm-tools-$wasm_tools_version"
    fi
fi
"$wasm_tools" --version >/dev/null || die "wasm-tools does not run: $wasm_tools"

# --- Rust guests -------------------------------------------------------------------------------

# crate (library) name -> artifact name. The SDK is a library, not a translator.
rust_artifacts=(
    translator_identity:identity
    translator_field_mapper:field-mapper
    translator_filter:filter
    translator_x_model:x-model
    fixture_busy_loop:busy-loop
    fixture_memory_bomb:memory-bomb
    fixture_panic:panic
    fixture_huge_output:huge-output
    fixture_error_value:error-value
    fixture_wrong_world:wrong-world
    fixture_wrong_batch:wrong-batch
)

# The same crates built with the SDK's feature `world-v1`: version 1 of the contract (records
# through the canonical ABI), for the benchmark that compares the two versions and the tests
# that keep version 1 working. Built first: the build below leaves the default (version 2) core
# modules in $release.
rust_v1_artifacts=(
    translator-identity:translator_identity:identity-v1
    translator-field-mapper:translator_field_mapper:field-mapper-v1
    fixture-huge-output:fixture_huge_output:huge-output-v1
)

# component_new CRATE NAME: the core module of CRATE as the component dist/NAME.wasm. The core
# module carries its world in a custom section (wit-bindgen's `component-type`); `component
# new` makes the component from it. No adapter: the module imports nothing.
component_new() {
    "$wasm_tools" component new "$release/$1.wasm" -o "$dist/$2.wasm.tmp"
    mv "$dist/$2.wasm.tmp" "$dist/$2.wasm"
}

mkdir -p "$dist"
log "building the Rust translators of version 1 (release, $target, feature world-v1)"
packages=()
for triple in "${rust_v1_artifacts[@]}"; do
    packages+=(-p "${triple%%:*}")
done
# --locked: the committed Cargo.lock is what CI and every developer build.
cargo build --manifest-path "$translators/Cargo.toml" --release --target "$target" --locked \
    "${packages[@]}" --features tributary-translator-sdk/world-v1
for triple in "${rust_v1_artifacts[@]}"; do
    rest=${triple#*:}
    component_new "${rest%%:*}" "${rest#*:}"
done

log "building the Rust translators and fixtures (release, $target)"
cargo build --manifest-path "$translators/Cargo.toml" --release --target "$target" --workspace --locked
for pair in "${rust_artifacts[@]}"; do
    component_new "${pair%%:*}" "${pair#*:}"
done

# A core module where a component is expected: identity before `component new`.
cp "$release/translator_identity.wasm" "$dist/core-module.wasm"
# Bytes that are not WebAssembly at all.
printf 'This is not WebAssembly: a test fixture of Tributary.\n\000\001\002\377\376\375' >"$dist/garbage.bin"

# --- Components over the limits of the gateway's instance pool ---------------------------------

# Each is the hand-written translator of fixtures/limits/translator.wat with more declared than one
# limit allows (crates/wasm/src/limits.rs has the numbers); at-limits.wasm has exactly as much as
# they allow. Memory is in 64 KiB pages: 3000 are 187.5 MiB, above the default 128 MiB
# (translators.memory_bytes); 2048 are 128 MiB.
limits_src="$translators/fixtures/limits/translator.wat"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# limit_module NAME PAGES [EXTRA_FILE]: the translator with PAGES pages of memory and the
# declarations of EXTRA_FILE, as a component in $work/NAME.wasm.
limit_module() {
    local name=$1 pages=$2 extra=${3:-/dev/null}
    sed -e "s/@PAGES@/$pages/" -e "/;; @EXTRA@/r $extra" "$limits_src" >"$work/$name.wat"
    "$wasm_tools" component embed "$translators/wit" --world translator "$work/$name.wat" -o "$work/$name.core.wasm"
    "$wasm_tools" component new "$work/$name.core.wasm" -o "$work/$name.wasm"
}

# limit_component NAME FILLER_FILE COUNT: the translator's component with COUNT more core
# instances of the module in FILLER_FILE, in $work/NAME.wasm.
limit_component() {
    local name=$1 filler=$2 count=$3
    limit_module "$name.base" 1
    {
        # The component's text without its closing parenthesis, then the filler and its instances.
        "$wasm_tools" print "$work/$name.base.wasm" | sed '$d'
        # $filler is a WAT identifier, not a shell variable.
        echo "  (core module \$filler"
        cat "$filler"
        echo '  )'
        for _ in $(seq "$count"); do echo "  (core instance (instantiate \$filler))"; done
        echo ')'
    } >"$work/$name.wat"
    # The pinned wasm-tools encodes component text only inside its subcommands: `unbundle` with a
    # threshold no module reaches writes the component back unchanged, as a binary.
    "$wasm_tools" component unbundle --threshold 4294967295 --module-dir "$work" "$work/$name.wat" \
        -o "$work/$name.wasm"
}

# declarations LINE COUNT: COUNT copies of LINE, in a file whose path it prints.
declarations() {
    local file
    file=$(mktemp -p "$work")
    awk -v line="  $1" -v n="$2" 'BEGIN { for (i = 0; i < n; i++) print line }' >"$file"
    echo "$file"
}

log "building the components over the instance pool's limits"
limit_module limit-memory 3000
limit_module limit-memories 1 "$(declarations '(memory 1)' 1)"
limit_module limit-tables 1 "$(declarations '(table 1 funcref)' 2)"
limit_module limit-table-elements 1 "$(declarations '(table 1048577 funcref)' 1)"
# Every defined global takes 16 bytes of an instance's runtime state: 70,000 need ~1.1 MiB, above
# the 1 MiB of one core instance; 40,000 fit one, but two such instances are above the 1 MiB of
# a component.
limit_module limit-core-instance-size 1 "$(declarations '(global i32 (i32.const 0))' 70000)"
limit_component limit-component-instance-size "$(declarations '(global i32 (i32.const 0))' 40000)" 2
# With the translator's own: 5 memories (4 allowed), 9 tables (8), 65 core instances (64).
limit_component limit-component-memories "$(declarations '(memory 1)' 1)" 4
limit_component limit-component-tables "$(declarations '(table 1 funcref)' 1)" 9
limit_component limit-core-instances "$(declarations '' 0)" 64
limit_module at-limits 2048 "$(declarations '(table 1048576 funcref)' 1)"
limit_fixtures=(limit-memory limit-memories limit-tables limit-table-elements limit-core-instance-size
    limit-component-instance-size limit-component-memories limit-component-tables limit-core-instances
    at-limits)
for name in "${limit_fixtures[@]}"; do
    mv "$work/$name.wasm" "$dist/$name.wasm"
done

# --- JavaScript guests -------------------------------------------------------------------------

# js-uppercase.wasm (version 1), js-field-mapper.wasm (version 2, through the JavaScript SDK) and
# js-field-mapper-v1.wasm (version 1): `npm ci` when translators/js/package-lock.json changed,
# then each component whose inputs changed (componentize-js takes ~10 s each).
"$translators/js/build.sh" "$dist"

# --- Python guests -----------------------------------------------------------------------------

# py-field-mapper.wasm (version 2, through the Python SDK), py-field-mapper-v1.wasm (version 1)
# and py-hostile.wasm (hostile fixtures, one mode per init configuration): componentize-py
# (pinned, in translators/python/.venv) for each component whose inputs changed, ~10 s each.
command -v python3 >/dev/null || die "python3 not found: it builds the Python translators (componentize-py)"
WASM_TOOLS="$wasm_tools" "$translators/python/build.sh" "$dist"

# --- Checks ------------------------------------------------------------------------------------

# The exports a translator must have, as `wasm-tools component wit` prints them: version 2
# exports one interface, version 1 two functions.
v2_exports='export tributary:translator/batch@0.2.0;'
v1_exports='export init: func(config: string) -> result<_, string>;
export translate: func(batch: list<source-record>) -> result<list<outcome>, string>;'

v2_components=(identity field-mapper filter x-model busy-loop memory-bomb panic huge-output error-value
    js-field-mapper py-field-mapper py-hostile)
v1_components=(identity-v1 field-mapper-v1 huge-output-v1 js-uppercase js-field-mapper-v1 py-field-mapper-v1
    "${limit_fixtures[@]}")
components=("${v2_components[@]}" "${v1_components[@]}" wrong-world wrong-batch)
for name in "${components[@]}"; do
    file="$dist/$name.wasm"
    # Bytes 4..8 are 0d 00 01 00 for a component (01 00 00 00 for a core module).
    [ "$(head -c 8 "$file" | od -An -tx1 | tr -d ' \n')" = 0061736d0d000100 ] ||
        die "$name.wasm is not a component"
    "$wasm_tools" validate "$file" || die "$name.wasm is not valid"
    wit=$("$wasm_tools" component wit "$file")
    # "Imports nothing", at two levels. The world: no `import` (nor `use` of an imported
    # interface). The binary: every top-level import is a plain type (`(type (eq N))`, how a
    # component names the records of its own world; hosts need not provide those), never a
    # function, instance, resource or module.
    if grep -qE '^\s*(import|use) ' <<<"$wit"; then
        die "$name.wasm has imports; translators must import nothing:
$(grep -E '^\s*(import|use) ' <<<"$wit")"
    fi
    bad_imports=$("$wasm_tools" print --skeleton "$file" | grep -E '^  \(import ' |
        grep -vE '^  \(import "[^"]+" \(type (\$[^ ]+ )?\(;[0-9]+;\) \(eq [0-9]+\)\)\)$' || true)
    [ -z "$bad_imports" ] || die "$name.wasm imports more than types:
$bad_imports"
    exports=$(grep -E '^\s*export ' <<<"$wit" | sed -E 's/^\s+//')
    if [ "$name" = wrong-world ]; then
        if [ "$exports" = "$v1_exports" ] || [ "$exports" = "$v2_exports" ]; then
            die "wrong-world.wasm implements a translator world"
        fi
    elif [ "$name" = wrong-batch ]; then
        # The right export name with the wrong types: the interface's text must differ.
        grep -qF 'translate: func(input: string) -> result<string, string>;' <<<"$wit" ||
            die "wrong-batch.wasm does not export the wrong translate it is meant to"
    elif [[ " ${v2_components[*]} " == *" $name "* ]]; then
        [ "$exports" = "$v2_exports" ] || die "$name.wasm does not export the batch-translator world:
$exports"
    else
        [ "$exports" = "$v1_exports" ] || die "$name.wasm does not export the translator world:
$exports"
    fi
done
[ "$(head -c 8 "$dist/core-module.wasm" | od -An -tx1 | tr -d ' \n')" = 0061736d01000000 ] ||
    die "core-module.wasm is not a core module"
"$wasm_tools" validate "$dist/core-module.wasm" || die "core-module.wasm is not valid"
[ "$(head -c 4 "$dist/garbage.bin" | od -An -tx1 | tr -d ' \n')" != 0061736d ] ||
    die "garbage.bin looks like WebAssembly"

log "translators/dist (all components import nothing):"
for name in "${components[@]}" core-module; do
    printf '%10d  %s\n' "$(stat -c %s "$dist/$name.wasm")" "$name.wasm"
done
printf '%10d  %s\n' "$(stat -c %s "$dist/garbage.bin")" garbage.bin
