#!/usr/bin/env bash
# Tests of the Python client against the real gateway binary and a real Kafka.
#
#   clients/python/test.sh [PYTEST ARGS...]
#
# Environment: TRIBUTARY_BIN (default <repo>/target/debug/tributary), TRIBUTARY_TEST_BOOTSTRAP
# (default 127.0.0.1:9092), PYTHON (the interpreter for the venv, default python3).
# Creates or reuses clients/python/.venv, installs the pinned versions of requirements-test.txt and
# the package, checks that src/tributary/v1 is what generate.sh makes from ../../proto, then runs
# pytest.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
venv=$here/.venv

if [[ ! -x $venv/bin/python ]]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
py=$venv/bin/python
"$py" -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
# The package itself, built with the pinned setuptools above (no isolated build environment;
# a build/ left from an earlier run could carry modules since deleted).
rm -rf "$here/build"
"$py" -m pip install --quiet --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps .
"$py" -m pip check

# Stale check: regenerate into a temporary directory and compare with the committed modules.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
PYTHON=$py "$here/generate.sh" "$tmp"
if ! diff -r -x __pycache__ -x __init__.py "$tmp/tributary/v1" "$here/src/tributary/v1" >"$tmp/diff"; then
  head -40 "$tmp/diff" >&2
  echo "test.sh: src/tributary/v1 is stale: run clients/python/generate.sh and commit the result" >&2
  exit 1
fi

"$py" -m pytest -p no:cacheprovider "$@" tests
