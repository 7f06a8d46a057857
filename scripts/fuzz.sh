#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer): the targets of fuzz/ (see docs/fuzzing.md), each from its
# checked-in seed corpus (fuzz/corpus/<target>) for FUZZ_SECONDS (default 60; CI's short run).
# New inputs go to a scratch directory, so a run leaves the repository as it was; a crash stops
# the script with the input that caused it (fuzz/artifacts/<target>/), which becomes a test.
#
#   scripts/fuzz.sh                                   # every target, 60 s each
#   FUZZ_SECONDS=3600 scripts/fuzz.sh requests        # one target for an hour
#   FUZZ_KEEP=1 scripts/fuzz.sh                       # add what the run found to the seed corpora
#                                                     # (libFuzzer's merge: only what adds coverage)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
# The instrumented build is a world of its own (every crate built with coverage counters): it is
# kept beside the other tools, so that only the gateway's crates rebuild from one run to the next.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${TRIBUTARY_CACHE:-$HOME/.cache/tributary}/fuzz-target}"
fuzz_version=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q " $fuzz_version"; then
  cargo install cargo-fuzz --locked --version "$fuzz_version"
fi
cd fuzz
# No sanitizer: the targets run safe Rust (the gateway's unsafe code is librdkafka's FFI, which
# no target reaches); debug assertions and overflow checks are on, as cargo fuzz builds them.
if [ "$#" -gt 0 ]; then
  targets=("$@")
  for target in "${targets[@]}"; do cargo fuzz build --sanitizer none "$target"; done
else
  mapfile -t targets < <(cargo fuzz list)
  cargo fuzz build --sanitizer none
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target" "corpus/$target"
  printf '\n==> fuzz %s for %s s (seeds: %s)\n' "$target" "$seconds" "$(find "corpus/$target" -type f | wc -l)" >&2
  status=0
  cargo fuzz run --sanitizer none "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    >"$scratch/$target.log" 2>&1 || status=$?
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|INFO: seed corpus)' "$scratch/$target.log" || true
  if [ "$status" -ne 0 ] || [ -n "$(find "artifacts/$target" -type f 2>/dev/null)" ]; then
    tail -60 "$scratch/$target.log" >&2
    echo "fuzz: $target failed (exit $status); the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  if [ -n "${FUZZ_KEEP:-}" ]; then
    # libFuzzer's merge: the new inputs that add coverage join the seeds.
    cargo fuzz run --sanitizer none "$target" "corpus/$target" "$scratch/$target" -- -merge=1 >/dev/null 2>&1
  fi
done
echo "fuzz: ${#targets[@]} targets, ${seconds} s each, no failing input"
