#!/usr/bin/env bash
# Every test of the project: format and lints, unit tests, integration tests against a real Kafka
# broker (started here on loopback), and the quickstart demo as a smoke test.
# This is the README's test command; .ci/run calls it after installing what the machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

scripts/setup.sh
log=$(mktemp)
gopath=$(go env GOPATH 2>/dev/null || echo "$HOME/go")
export PATH="$PATH:$gopath/bin"

step "cargo fmt --check"
cargo fmt --all -- --check

step "Crate boundaries (scripts/check-deps.sh)"
scripts/check-deps.sh

step "shellcheck scripts/ .ci/run"
shellcheck scripts/*.sh .ci/run

step "buf lint and buf breaking (against the previous commit) on proto/"
(cd proto && buf lint)
if git rev-parse -q --verify 'HEAD~1:proto' >/dev/null 2>&1; then
  buf breaking proto --against '.git#ref=HEAD~1,subdir=proto'
  echo "proto/: no breaking change against $(git rev-parse --short HEAD~1)"
else
  echo "proto/: no previous commit with proto/ to compare against (shallow clone?); breaking check skipped"
fi

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "Building the translators (WebAssembly components the tests upload)"
scripts/build-translators.sh
step "Translator guest unit tests (native)"
(cd translators && cargo test --locked 2>&1) | tee -a "$log"

step "Starting Kafka"
bootstrap=$(scripts/kafka.sh start)
export TRIBUTARY_TEST_BOOTSTRAP="$bootstrap"

step "cargo test (unit and integration, against Kafka at $bootstrap)"
# Two test threads: the machine has 2 cores and every integration test runs gateways and Kafka
# clients of its own.
cargo test --workspace --lib --tests -- --test-threads 2 2>&1 | tee -a "$log"
# One closing line for the whole Rust suite (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1) } }
     END { printf "rust: %d passed, %d failed\n", p, f }' "$log"

step "Quickstart demo smoke test"
out=$(DEMO_SECONDS=8 TRIBUTARY_LISTEN=127.0.0.1:50151 scripts/demo.sh 2>&1) || { echo "$out"; exit 1; }
if ! grep -q '^B snapshot: ' <<<"$out" || ! grep -q '^B live: ' <<<"$out"; then
  echo "$out"
  echo "the demo did not show a snapshot followed by live changes" >&2
  exit 1
fi
echo "demo: $(grep -c '^B live: ' <<<"$out") live changes after the snapshot"
echo "all tests passed"
awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i) ~ /^passed/) p += $(i-1) } END { printf "%d passed, 0 failed\n", p + 1 }' "$log"
