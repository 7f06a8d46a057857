#!/usr/bin/env bash
# The soak test: one gateway under a steady, churning load for an hour (by default), checked for
# correctness at the end and for resources that grow without bound (see docs/soak.md).
#
#   scripts/soak.sh                                         # an hour, a sample every minute
#   SOAK_SECONDS=600 SOAK_SAMPLE_SECONDS=15 scripts/soak.sh  # ten minutes
#   SOAK_INJECT_FAULT=model SOAK_SECONDS=120 SOAK_SAMPLE_SECONDS=10 scripts/soak.sh   # must FAIL
#
# A producer writes to a fresh topic (transactions, tombstones), followers churn (Subscribe,
# follow 1-10 s, cancel, resume from their offsets), snapshots and translator uploads come and go;
# every sample prints the gateway's RSS, open files, threads and stream gauges. At the end every
# follower's model must equal a raw rebuild from Kafka, and the fitted growth of RSS, files and
# threads must stay under the thresholds. Exits non-zero when any check fails.
#
# Environment: TRIBUTARY_BIN (default target/debug/tributary; build it with
# cargo build -p tributary-cli), TRIBUTARY_TEST_BOOTSTRAP (default: the broker of
# scripts/kafka.sh start), PYTHON (the interpreter for a new venv, default python3), and the
# SOAK_* knobs of scripts/soak/driver.py (`--help` lists them; docs/soak.md explains them):
# SOAK_SECONDS (3600), SOAK_SAMPLE_SECONDS (60), SOAK_RATE (500), SOAK_INJECT_FAULT, SOAK_KEEP...
# Uses the Python client's venv (clients/python/.venv), created as clients/python/test.sh does
# when missing. Leaves Kafka running (scripts/kafka.sh stop stops it); deletes its topic.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${TRIBUTARY_BIN:-target/debug/tributary}
if [[ ! -x $bin ]]; then
  echo "soak.sh: the gateway binary $bin is missing: build it with cargo build -p tributary-cli (or set TRIBUTARY_BIN)" >&2
  exit 1
fi

if [[ -n ${TRIBUTARY_TEST_BOOTSTRAP:-} ]]; then
  bootstrap=$TRIBUTARY_TEST_BOOTSTRAP
else
  bootstrap=$(scripts/kafka.sh start)
fi

# The Python client's venv, as clients/python/test.sh makes it; the client itself is imported from
# clients/python/src (not installed), with its generated modules made by generate.sh if missing.
# Absolute: generate.sh runs the interpreter from proto/.
venv=$PWD/clients/python/.venv
py=$venv/bin/python
if [[ ! -x $py ]]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
if ! "$py" -c 'import grpc, grpc_tools, google.protobuf, google.rpc, confluent_kafka' 2>/dev/null; then
  "$py" -m pip install --quiet --disable-pip-version-check -r clients/python/requirements-test.txt
fi
for module in gateway subscriptions translators; do
  if [[ ! -f clients/python/src/tributary/v1/${module}_pb2.py || ! -f clients/python/src/tributary/v1/${module}_pb2_grpc.py ]]; then
    PYTHON=$py clients/python/generate.sh
    break
  fi
done

export PYTHONPATH="clients/python/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" scripts/soak/driver.py --bin "$bin" --bootstrap "$bootstrap"
