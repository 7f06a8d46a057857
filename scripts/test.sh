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
(cd fuzz && cargo fmt -- --check)

step "Crate boundaries (scripts/check-deps.sh)"
scripts/check-deps.sh

step "shellcheck scripts/, the clients', the translators' and the demo's scripts, .ci/run"
shellcheck scripts/*.sh scripts/lib/*.sh clients/*/test.sh clients/*/generate.sh clients/typescript/scripts/*.sh \
    translators/js/*.sh translators/python/*.sh demo/*.sh .ci/run

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
# The fuzz targets are a workspace of their own: linted (and so type-checked) here, minutes
# before the fuzzing step builds them; in the workspace's target directory, whose checked
# dependencies they share.
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" cargo clippy --manifest-path fuzz/Cargo.toml --bins --quiet -- -D warnings

step "Building the translators (WebAssembly components the tests upload)"
scripts/build-translators.sh
step "Translator guest unit tests (native): the Rust, JavaScript and Python SDKs and examples"
(cd translators && cargo test --locked 2>&1) | tee -a "$log"
translators/js/test.sh 2>&1 | tee -a "$log"
translators/python/test.sh 2>&1 | tee -a "$log"

step "Starting the suite's own Kafka (fresh data)"
# Its own ports and a data directory emptied at every run: the tests create topics with unique
# names, and a cached data directory would pile them up run after run (a broker with thousands of
# partitions takes minutes to start). A Kafka of yours on 9092 is left alone. Exported, so the
# demo and demo-check below use this broker too; stopped when the suite ends.
export KAFKA_PORT="${TRIBUTARY_TEST_KAFKA_PORT:-19192}"
export KAFKA_CONTROLLER_PORT=$((KAFKA_PORT + 1))
export KAFKA_DATA_DIR="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}/kafka-test-data-$KAFKA_PORT"
scripts/kafka.sh reset
export REGISTRY_PORT="${TRIBUTARY_TEST_REGISTRY_PORT:-19181}"
trap 'scripts/kafka.sh stop || true; scripts/registry.sh stop || true' EXIT
bootstrap=$(scripts/kafka.sh start)
export TRIBUTARY_TEST_BOOTSTRAP="$bootstrap"

step "Starting the suite's own schema registry (Apicurio, in memory)"
registry=$(scripts/registry.sh restart)
export TRIBUTARY_TEST_REGISTRY="$registry/apis/ccompat/v7"

step "cargo test (unit and integration, against Kafka at $bootstrap)"
# Two test threads: the machine has 2 cores and every integration test runs gateways and Kafka
# clients of its own.
cargo test --workspace --lib --tests -- --test-threads 2 2>&1 | tee -a "$log"
# One closing line for the whole Rust suite (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1) } }
     END { printf "rust: %d passed, %d failed\n", p, f }' "$log"

step "Fuzzing: every target of fuzz/ for ${FUZZ_SECONDS:-60} s from its seed corpus (scripts/fuzz.sh)"
scripts/fuzz.sh 2>&1 | tee -a "$log"

# The clients run against the gateway binary cargo test just built, and the same Kafka.
export TRIBUTARY_BIN="$PWD/target/debug/tributary"
clients_log=$(mktemp)
for client in python go typescript; do
  step "Client: clients/$client/test.sh"
  "clients/$client/test.sh" 2>&1 | tee -a "$clients_log"
done
# One count per client suite, in the form each runner prints.
python_passed=$(grep -E '^=+ .*[0-9]+ passed' "$clients_log" | tail -1 | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
go_passed=$(sed -n 's/^go client: \([0-9]*\) passed.*/\1/p' "$clients_log" | tail -1)
ts_passed=$(sed -n 's/^. pass \([0-9]*\)$/\1/p' "$clients_log" | tail -1)
echo "clients: python ${python_passed:-?}, go ${go_passed:-?}, typescript ${ts_passed:-?} passed (rust: in the cargo run above)"

step "Soak, short: 120 s of churning followers, snapshots and translator uploads (scripts/soak.sh)"
# The hour-long run is SOAK_SECONDS=3600 scripts/soak.sh (docs/soak.md); this one checks the
# contract under churn and that nothing grows across two minutes.
SOAK_SECONDS=120 SOAK_SAMPLE_SECONDS=10 scripts/soak.sh

step "Quickstart demo smoke test (scripts/demo.sh, then scripts/demo-check.sh)"
# X's output when not on a terminal: one snapshot line, then a line per live change.
out=$(DEMO_FRESH=1 DEMO_SECONDS=8 TRIBUTARY_LISTEN=127.0.0.1:50151 scripts/demo.sh 2>&1) || { echo "$out"; exit 1; }
if [ "$(grep -c '^X snapshot: ' <<<"$out")" != 1 ] ||
  ! awk '/^X snapshot: /{s=1} s && /^X live: /{live=1} END{exit !live}' <<<"$out"; then
  echo "$out"
  echo "the demo did not show a snapshot followed by live changes" >&2
  exit 1
fi
echo "demo: $(grep -c '^X live: ' <<<"$out") live changes after the snapshot"
# The same scenario as a proof: X and the gateway restarted mid-stream, X's model equal to a
# rebuild from Kafka.
TRIBUTARY_LISTEN=127.0.0.1:50152 scripts/demo-check.sh
echo "all tests passed"
clients=$((${python_passed:-0} + ${go_passed:-0} + ${ts_passed:-0}))
awk -v clients="$clients" '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i) ~ /^passed/) p += $(i-1) }
  END { printf "%d passed, 0 failed\n", p + clients + 2 }' "$log"
