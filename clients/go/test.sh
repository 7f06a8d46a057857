#!/usr/bin/env bash
# The Go client's checks: the generated code is up to date, gofmt, go vet, and the tests against
# the real gateway binary and a real Kafka.
#
#   TRIBUTARY_BIN=target/debug/tributary TRIBUTARY_TEST_BOOTSTRAP=127.0.0.1:9092 clients/go/test.sh
#
# Needs protoc, Go, the gateway binary (default <repo>/target/debug/tributary), the translators
# in <repo>/translators/dist and Kafka (scripts/kafka.sh start).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v "${PROTOC:-protoc}" >/dev/null; then
  echo "clients/go/test.sh: protoc is missing (scripts/setup.sh installs it)" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Stale check: regenerate (installing the pinned plugins into .bin if missing) and compare. The
# protoc version in the files' header comment is ignored.
./generate.sh "$tmp/tributaryv1"
if ! diff -r -I '^//[[:space:]]*protoc[[:space:]]' tributaryv1 "$tmp/tributaryv1" >"$tmp/diff"; then
  echo "clients/go/test.sh: clients/go/tributaryv1 is stale: run clients/go/generate.sh and commit the result" >&2
  head -50 "$tmp/diff" >&2
  exit 1
fi

unformatted=$(gofmt -l .)
if [[ -n $unformatted ]]; then
  echo "clients/go/test.sh: not gofmt-clean (run gofmt -w):" >&2
  echo "$unformatted" >&2
  exit 1
fi

go vet ./...
go test -count=1 -timeout 5m -v ./... 2>&1 | tee "$tmp/test.log"
echo "go client: $(grep -c '^--- PASS' "$tmp/test.log") passed, $(grep -c '^--- FAIL' "$tmp/test.log") failed"
